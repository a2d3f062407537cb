//! Three real `flotilla agent` processes over libp2p on loopback: write through a follower,
//! `kill -9` the leader, keep writing through a survivor, restart the killed node on its data
//! directory and check it serves every acknowledged value.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_http::Client;
use serde_json::Value;
use support::{free_port, until};

const NS: &str = "default";

struct Agent {
    http: String,
    p2p: String,
    child: Option<Child>,
}

fn spawn(dir: &Path, http: &str, p2p: &str, bootstrap: Option<&str>) -> Child {
    let log = std::fs::File::create(dir.with_extension("log")).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    // mDNS stays off: this test runs outside a network namespace, and its traffic must stay
    // on loopback.
    cmd.args(["agent", "--no-mdns", "--data-dir"]).arg(dir).args(["--listen", p2p, "--http", http]);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    cmd.env("RUST_LOG", "info,openraft=warn")
        .stdout(Stdio::from(log.try_clone().expect("clone log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("agent starts")
}

async fn status(http: &str) -> Option<Value> {
    Client::new(http, Duration::from_secs(2)).get_json(&format!("/v1/ns/{NS}/status")).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_survive_kill_9_of_the_leader() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut agents: Vec<Agent> = (0..3)
        .map(|_| Agent {
            http: format!("127.0.0.1:{}", free_port()),
            p2p: format!("/ip4/127.0.0.1/tcp/{}", free_port()),
            child: None,
        })
        .collect();
    let dirs: Vec<_> = (0..3).map(|i| root.path().join(format!("node{i}"))).collect();
    agents[0].child = Some(spawn(&dirs[0], &agents[0].http, &agents[0].p2p, None));
    let first_http = agents[0].http.clone();
    until("the founder to lead", || async { status(&first_http).await.filter(|s| s["role"] == "leader") }).await;
    let bootstrap = agents[0].p2p.clone();
    for i in 1..3 {
        agents[i].child = Some(spawn(&dirs[i], &agents[i].http, &agents[i].p2p, Some(&bootstrap)));
    }
    until("three voters", || async {
        status(&first_http)
            .await
            .filter(|s| s["members"].as_array().map(|m| m.iter().filter(|x| x["role"] == "voter").count()) == Some(3))
    })
    .await;

    let leader_id = status(&first_http).await.expect("status")["leader"].as_str().expect("leader").to_string();
    let mut leader = 0;
    for (i, a) in agents.iter().enumerate() {
        let s = status(&a.http).await.expect("status");
        if s["node_id"].as_str() == Some(&leader_id) {
            leader = i;
        }
    }
    let follower = (leader + 1) % 3;
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    let through_follower = Client::new(&agents[follower].http, Duration::from_secs(10));
    for i in 0..20 {
        let (k, v) = (format!("before/{i}"), format!("value-{i}"));
        through_follower.put(NS, &k, v.clone().into_bytes()).await.expect("write through a follower");
        acknowledged.push((k, v));
    }

    // kill -9 the leader.
    agents[leader].child.as_mut().expect("running").kill().expect("kill -9");
    agents[leader].child.as_mut().expect("running").wait().expect("reaped");
    let survivor = Client::new(&agents[follower].http, Duration::from_secs(3));
    let started = Instant::now();
    until("writes to resume through a survivor", || async {
        survivor.put(NS, "after/0", b"resumed".to_vec()).await.ok()
    })
    .await;
    eprintln!("writes resumed {:?} after kill -9 of the leader", started.elapsed());
    acknowledged.push(("after/0".into(), "resumed".into()));
    for i in 1..20 {
        let (k, v) = (format!("after/{i}"), format!("value-{i}"));
        survivor.put(NS, &k, v.clone().into_bytes()).await.expect("write after failover");
        acknowledged.push((k, v));
    }

    // Restart the killed node on its data directory; it must serve every acknowledged value.
    agents[leader].child = Some(spawn(&dirs[leader], &agents[leader].http, &agents[leader].p2p, Some(&bootstrap)));
    let restarted = Client::new(&agents[leader].http, Duration::from_secs(5));
    until("the restarted node to serve", || async {
        restarted.get(NS, "after/19", "linearizable").await.ok().filter(|r| r.value.is_some())
    })
    .await;
    for (k, v) in &acknowledged {
        let read = restarted.get(NS, k, "linearizable").await.expect("read from the restarted node");
        assert_eq!(read.value.as_deref(), Some(v.as_bytes()), "{k}");
    }
    let s = status(&agents[leader].http).await.expect("status");
    assert_eq!(s["members"].as_array().map(|m| m.len()), Some(3), "no re-founding: {s}");

    for a in &mut agents {
        if let Some(c) = a.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
