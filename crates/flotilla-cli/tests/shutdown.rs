//! SIGTERM of real `flotilla agent` processes serving many namespaces, all at once (the whole
//! cluster stops): every agent hands off what it can within one deadline, flushes and exits 0,
//! within a bound, instead of waiting a request timeout per namespace it leads.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_http::Client;
use serde_json::Value;
use support::free_port;

/// As many namespaces as three agents form quickly on this machine: 20 formed in 5 s, 40 in
/// 15 s, 50 in 49 s (forming many namespaces is slow, a separate issue).
const NAMESPACES: usize = 30;
/// Each agent must have exited by then after SIGTERM: hand-offs take at most 3 s together,
/// the rest (stopping groups, flushing, closing HTTP and libp2p) well under a second; the
/// margin is for a loaded 2-core CI machine. One hand-off per led namespace after another
/// took far longer.
const BOUND: Duration = Duration::from_secs(8);

/// The tests of this file each run a cluster that keeps both cores of a CI machine busy; run
/// side by side they starved each other's heartbeats into elections and lost-quorum refusals
/// that no user setup would see. They take turns instead (a tokio mutex: not poisoned when one
/// fails, and shared by the tests' separate runtimes).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn namespaces() -> Vec<String> {
    (0..NAMESPACES).map(|i| format!("ns{i:02}")).collect()
}

/// The agents, killed (`kill -9`) when the test ends, also when it fails.
struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(dir: &Path, http: &str, p2p: &str, bootstrap: Option<&str>, names: &[String]) -> Child {
    let log = std::fs::File::create(dir.with_extension("log")).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    // mDNS stays off: this test runs outside a network namespace, on loopback only.
    cmd.args(["agent", "--no-mdns", "--data-dir"]).arg(dir).args(["--listen", p2p, "--http", http]);
    cmd.args(["--expect", "3", "--namespace"]).args(names);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    cmd.env("RUST_LOG", "info,openraft=warn")
        .stdout(Stdio::from(log.try_clone().expect("clone log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("agent starts")
}

async fn status(http: &str, ns: &str) -> Option<Value> {
    Client::new(http, Duration::from_secs(2)).get_json(&format!("/v1/ns/{ns}/status")).await.ok()
}

fn voters(s: &Value) -> usize {
    s["members"].as_array().map_or(0, |m| m.iter().filter(|x| x["role"] == "voter").count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_a_whole_cluster_with_many_namespaces_exits_0_within_the_bound() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let root = tempfile::tempdir().expect("tempdir");
    let http: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let p2p: Vec<String> = (0..3).map(|_| format!("/ip4/127.0.0.1/tcp/{}", free_port())).collect();
    let dirs: Vec<_> = (0..3).map(|i| root.path().join(format!("node{i}"))).collect();
    // All three at once with `--expect 3`: every namespace forms with three voters directly.
    let formed = Instant::now();
    let mut agents = Agents(vec![spawn(&dirs[0], &http[0], &p2p[0], None, &namespaces())]);
    for i in 1..3 {
        agents.0.push(spawn(&dirs[i], &http[i], &p2p[i], Some(&p2p[0]), &namespaces()));
    }
    for ns in namespaces() {
        for (i, h) in http.iter().enumerate() {
            let deadline = Instant::now() + support::PATIENCE;
            loop {
                let s = status(h, &ns).await;
                if s.as_ref().is_some_and(|s| voters(s) == 3) {
                    break;
                }
                if Instant::now() > deadline {
                    let log = std::fs::read_to_string(dirs[i].with_extension("log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    panic!("{ns} on agent {i} never had three voters: {s:?}\n{tail:#?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!("{NAMESPACES} namespaces on three agents formed in {:?}", formed.elapsed());
    let mut led = [0usize; 3];
    for ns in namespaces() {
        for (i, h) in http.iter().enumerate() {
            if status(h, &ns).await.is_some_and(|s| s["role"] == "leader") {
                led[i] += 1;
            }
        }
    }
    eprintln!("namespaces led per agent: {led:?}");

    let sent = Instant::now();
    for child in &agents.0 {
        let pid = i32::try_from(child.id()).expect("pid fits");
        // SAFETY: kill(2) with a pid of a child this test spawned and has not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM sent");
    }
    let mut outcomes = Vec::new();
    for (i, child) in agents.0.iter_mut().enumerate() {
        let exited = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some((status, sent.elapsed()));
            }
            if sent.elapsed() > BOUND * 4 {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        outcomes.push((i, exited));
    }
    drop(agents);
    for (i, exited) in outcomes {
        let log = std::fs::read_to_string(dirs[i].with_extension("log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let (status, took) = exited.unwrap_or_else(|| panic!("agent {i} did not exit after SIGTERM: {tail:#?}"));
        eprintln!("agent {i} (led {}) exited with {status} {took:?} after SIGTERM", led[i]);
        assert!(status.success(), "agent {i} exited with {status}: {tail:#?}");
        assert!(took < BOUND, "agent {i} leading {} namespaces took {took:?} to exit: {tail:#?}", led[i]);
    }
}

/// Per namespace, the leader every agent in `http` agrees on (only namespaces with one).
async fn agreed_leaders(http: &[&String]) -> std::collections::BTreeMap<String, String> {
    let mut views = Vec::new();
    for h in http {
        let Ok(s) = Client::new(h, Duration::from_secs(5)).get_json("/v1/status").await else {
            return Default::default();
        };
        let leaders: std::collections::BTreeMap<String, String> = s["namespaces"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| Some((n["namespace"].as_str()?.to_string(), n["leader"].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        views.push((s["peer_id"].as_str().unwrap_or_default().to_string(), leaders));
    }
    let mut agreed = views.first().map(|(_, l)| l.clone()).unwrap_or_default();
    agreed.retain(|ns, l| views.iter().all(|(_, v)| v.get(ns) == Some(l)));
    agreed
}

/// Issue 12 point 5 with real agents: SIGTERM of one agent of three serving 100 namespaces
/// exits 0 within the bound, and every namespace it led accepts writes through the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_one_agent_with_100_namespaces_exits_0_and_the_others_keep_serving() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let names: Vec<String> = (0..100).map(|i| format!("h{i:03}")).collect();
    let root = tempfile::tempdir().expect("tempdir");
    let http: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let p2p: Vec<String> = (0..3).map(|_| format!("/ip4/127.0.0.1/tcp/{}", free_port())).collect();
    let dirs: Vec<_> = (0..3).map(|i| root.path().join(format!("node{i}"))).collect();
    let mut agents = Agents(vec![spawn(&dirs[0], &http[0], &p2p[0], None, &names)]);
    for i in 1..3 {
        agents.0.push(spawn(&dirs[i], &http[i], &p2p[i], Some(&p2p[0]), &names));
    }
    let all: Vec<&String> = http.iter().collect();
    let (all, count) = (&all, names.len());
    let agreed = support::until("every namespace has a leader all agents agree on", || async move {
        let agreed = agreed_leaders(all).await;
        (agreed.len() == count).then_some(agreed)
    })
    .await;
    let mut ids = Vec::new();
    for h in &http {
        let s = Client::new(h, Duration::from_secs(5)).get_json("/v1/status").await.expect("status");
        ids.push(s["peer_id"].as_str().expect("peer id").to_string());
    }
    let leaving = (0..3).max_by_key(|i| agreed.values().filter(|l| **l == ids[*i]).count()).expect("three agents");
    let led: Vec<&String> = agreed.iter().filter(|(_, l)| **l == ids[leaving]).map(|(ns, _)| ns).collect();

    let sent = Instant::now();
    let pid = i32::try_from(agents.0[leaving].id()).expect("pid fits");
    // SAFETY: kill(2) with a pid of a child this test spawned and has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM sent");
    let status = loop {
        if let Some(status) = agents.0[leaving].try_wait().expect("wait") {
            break status;
        }
        assert!(sent.elapsed() < BOUND * 4, "agent leading {} namespaces did not exit", led.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = sent.elapsed();
    let log = std::fs::read_to_string(dirs[leaving].with_extension("log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(15).collect();
    eprintln!("agent leading {} of 100 namespaces exited with {status} {took:?} after SIGTERM", led.len());
    assert!(status.success(), "exited with {status}: {tail:#?}");
    assert!(took < BOUND, "took {took:?} to exit: {tail:#?}");
    assert!(log.contains("leadership hand-offs done"), "no hand-off summary: {tail:#?}");
    let others: Vec<usize> = (0..3).filter(|i| *i != leaving).collect();
    let client = &Client::new(&http[others[0]], Duration::from_secs(5));
    for ns in led {
        let deadline = Instant::now() + support::PATIENCE;
        while client.put(ns, "after", b"sigterm".to_vec()).await.is_err() {
            if Instant::now() >= deadline {
                panic!("no write to {ns} through another agent: {}", survivors_view(ns, &others, &http, &dirs).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What the surviving agents say about `ns`, and what they logged about it, for a failure.
async fn survivors_view(ns: &str, others: &[usize], http: &[String], dirs: &[std::path::PathBuf]) -> String {
    let mut text = String::new();
    for i in others {
        let log = std::fs::read_to_string(dirs[*i].with_extension("log")).unwrap_or_default();
        let mentions: Vec<&str> = log.lines().filter(|l| l.contains(ns) || !l.contains("namespace")).collect();
        text += &format!("\n--- agent {i}: status {:#?}\n--- its log about {ns}:\n", status(&http[*i], ns).await);
        text += &mentions.join("\n");
    }
    text
}
