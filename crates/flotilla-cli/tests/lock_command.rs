//! `flotilla lock NAME -- COMMAND` against a real agent: commands holding the same lock never
//! overlap, each sees a larger fencing token, and the command's exit status comes back.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flotilla_http::Client;
use support::{free_port, until};

fn agent(dir: &std::path::Path, http: &str) -> Child {
    let log = std::fs::File::create(dir.with_extension("log")).expect("log file");
    let p2p = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["agent", "--no-mdns", "--expect", "1", "--data-dir"])
        .arg(dir)
        .args(["--listen", &p2p, "--http", http])
        .env("RUST_LOG", "info,openraft=warn")
        .stdout(Stdio::from(log.try_clone().expect("clone log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("agent starts")
}

/// `flotilla lock job -- sh -c SCRIPT`, as a child process.
fn lock(http: &str, script: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["lock", "--addr", http, "--ttl", "3", "--wait", "60", "job", "--", "sh", "-c", script])
        .stderr(Stdio::null())
        .spawn()
        .expect("flotilla lock starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_under_one_lock_run_one_at_a_time_with_increasing_tokens() {
    let root = tempfile::tempdir().expect("tempdir");
    let http = format!("127.0.0.1:{}", free_port());
    let mut node = agent(&root.path().join("node"), &http);
    let client = Client::new(&http, Duration::from_secs(2));
    until("the agent to lead", || async {
        client.get_json("/v1/ns/default/status").await.ok().filter(|s| s["role"] == "leader")
    })
    .await;
    let log = root.path().join("holders.log");
    // Each holder appends "start TOKEN", waits, appends "end TOKEN": overlaps would interleave.
    let script = format!(
        "echo start $FLOTILLA_FENCING_TOKEN >> {0}; sleep 0.3; echo end $FLOTILLA_FENCING_TOKEN >> {0}",
        log.display()
    );
    let mut holders: Vec<Child> = (0..4).map(|_| lock(&http, &script)).collect();
    for h in &mut holders {
        assert!(h.wait().expect("lock exits").success());
    }
    let lines = std::fs::read_to_string(&log).expect("holders wrote");
    let lines: Vec<(&str, u64)> = lines
        .lines()
        .map(|l| l.split_once(' ').map(|(what, t)| (what, t.parse::<u64>().expect("a token"))).expect("a line"))
        .collect();
    assert_eq!(lines.len(), 8, "{lines:?}");
    for pair in lines.chunks(2) {
        assert_eq!((pair[0].0, pair[1].0), ("start", "end"), "holders overlapped: {lines:?}");
        assert_eq!(pair[0].1, pair[1].1, "{lines:?}");
    }
    let tokens: Vec<u64> = lines.iter().step_by(2).map(|(_, t)| *t).collect();
    assert!(tokens.windows(2).all(|w| w[1] > w[0]), "tokens increase: {tokens:?}");

    // The command's own exit status comes back; the lock is free afterwards.
    let status = lock(&http, "exit 7").wait().expect("lock exits");
    assert_eq!(status.code(), Some(7));
    let free = client.get_json("/v1/lock/default/job").await;
    assert!(matches!(free, Err(flotilla_http::ClientError::Api { status: 404, .. })), "{free:?}");
    node.kill().expect("kill the agent");
    let _ = node.wait();
}
