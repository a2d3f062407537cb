//! Issue 11, point 2, reproduced with real agents on loopback: three agents form through
//! `--bootstrap`, `PUT k=a`, `kill -9` node C, delete everything in C's data directory but
//! `node.key`, stop A and B, start C alone. C must not found a second cluster: it says it lost
//! its data and waits, refuses `--force-bootstrap`, acknowledges no write, and once A and B are
//! back it rejoins their cluster and reads `a`, with no split anywhere.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_http::Client;
use serde_json::Value;
use support::{free_port, until};

const NS: &str = "default";
/// The local preset's discovery window (1.5 s) times the three windows after which a lone
/// coordinator founds, plus margin: a node that would found alone has done so by then.
const FOUNDING_GRACE: Duration = Duration::from_millis(3 * 1_500 + 2_500);

struct Agent {
    dir: std::path::PathBuf,
    http: String,
    p2p: String,
    child: Option<Child>,
}

impl Agent {
    fn command(&self, bootstrap: Option<&str>, extra: &[&str]) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        // mDNS stays off: this test runs outside a network namespace and stays on loopback.
        cmd.args(["agent", "--no-mdns", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen", &self.p2p, "--http", &self.http]);
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        cmd.args(extra)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log));
        cmd
    }

    fn start(&mut self, bootstrap: Option<&str>) {
        self.child = Some(self.command(bootstrap, &[]).spawn().expect("agent starts"));
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn client(&self, timeout: Duration) -> Client {
        Client::new(&self.http, timeout)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn status(http: &str) -> Option<Value> {
    Client::new(http, Duration::from_secs(2)).get_json(&format!("/v1/ns/{NS}/status")).await.ok()
}

fn voters(s: &Value) -> usize {
    s["members"].as_array().map(|m| m.iter().filter(|x| x["role"] == "voter").count()).unwrap_or(0)
}

fn splits(s: &Value) -> usize {
    s["formation"]["splits"].as_array().map(Vec::len).unwrap_or(0)
}

/// Delete everything in `dir` except `node.key`.
fn wipe_all_but_the_key(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read data dir") {
        let entry = entry.expect("entry");
        if entry.file_name() == "node.key" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove dir");
        } else {
            std::fs::remove_file(&path).expect("remove file");
        }
    }
}

/// Start `agent` with `--force-bootstrap` and wait for it to exit; fail at once if it founds
/// (answers as a leader) and after the patience bound if it neither exits nor founds.
async fn refused_start(agent: &Agent, bootstrap: &str) -> std::process::ExitStatus {
    let mut child = agent.command(Some(bootstrap), &["--force-bootstrap"]).spawn().expect("agent runs");
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        if let Some(exit) = child.try_wait().expect("try_wait") {
            return exit;
        }
        let founded = status(&agent.http).await.filter(|s| s["role"] == "leader");
        if founded.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("--force-bootstrap did not refuse: {founded:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_store_rejoins_instead_of_founding() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut agents: Vec<Agent> = (0..3)
        .map(|i| Agent {
            dir: root.path().join(format!("node{i}")),
            http: format!("127.0.0.1:{}", free_port()),
            p2p: format!("/ip4/127.0.0.1/tcp/{}", free_port()),
            child: None,
        })
        .collect();
    let bootstrap = agents[0].p2p.clone();
    agents[0].start(None);
    let a_http = agents[0].http.clone();
    until("A to found and lead", || async { status(&a_http).await.filter(|s| s["role"] == "leader") }).await;
    agents[1].start(Some(&bootstrap));
    agents[2].start(Some(&bootstrap));
    until("three voters", || async { status(&a_http).await.filter(|s| voters(s) == 3) }).await;
    agents[0].client(Duration::from_secs(10)).put(NS, "k", b"a".to_vec()).await.expect("PUT k=a");
    // C holds the write before it is killed (a quorum is enough for the ack).
    let c = agents[2].client(Duration::from_secs(5));
    until("C to read a", || async {
        c.get(NS, "k", "linearizable").await.ok().filter(|r| r.value.as_deref() == Some(&b"a"[..]))
    })
    .await;
    // A's reason reads "member of cluster <id>; leader <id>".
    let a_reason = status(&a_http).await.expect("status")["formation"]["reason"].as_str().unwrap_or("").to_string();
    let cluster = a_reason.trim_start_matches("member of cluster ").split(';').next().unwrap_or("").to_string();
    assert!(!cluster.is_empty(), "no cluster id in {a_reason:?}");

    // kill -9 C, wipe all but its key; stop A and B; start C alone.
    agents[2].kill();
    wipe_all_but_the_key(&agents[2].dir);
    agents[0].kill();
    agents[1].kill();

    let c_started = Instant::now();
    agents[2].start(Some(&bootstrap));
    let c_http = agents[2].http.clone();
    let waiting = until("C to say it lost its data", || async {
        let s = status(&c_http).await?;
        assert_ne!(s["formation"]["phase"], "member", "C founded a cluster of its own: {s}");
        s["formation"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("lost its data: waiting to rejoin cluster"))
            .then_some(s)
    })
    .await;
    let reason = waiting["formation"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains(&cluster), "C names the cluster it lost ({cluster}): {reason}");
    // Past the window and grace in which a lone node founds, C is still not a member and
    // acknowledges no write.
    while c_started.elapsed() < FOUNDING_GRACE {
        let s = status(&c_http).await.expect("C answers status");
        assert_ne!(s["formation"]["phase"], "member", "C founded a cluster of its own: {s}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let short = agents[2].client(Duration::from_millis(500));
    assert!(short.put(NS, "k", b"c".to_vec()).await.is_err(), "C acknowledged a write alone");
    let s = status(&c_http).await.expect("status");
    assert_ne!(s["formation"]["phase"], "member", "C founded a cluster of its own: {s}");

    // --force-bootstrap refuses to start it, and says how to reset explicitly.
    agents[2].kill();
    let exit = refused_start(&agents[2], &bootstrap).await;
    assert!(!exit.success(), "--force-bootstrap on a node that lost its data must refuse to start");
    let log = std::fs::read_to_string(agents[2].dir.with_extension("log")).expect("log");
    assert!(log.contains("--force-bootstrap refused") && log.contains("move node.key"), "refusal message: {log}");
    agents[2].start(Some(&bootstrap));

    // A and B come back: C rejoins their cluster and converges to a; nobody reports a split.
    agents[0].start(None);
    agents[1].start(Some(&bootstrap));
    let c = agents[2].client(Duration::from_secs(5));
    until("C to rejoin and read a", || async {
        c.get(NS, "k", "linearizable").await.ok().filter(|r| r.value.as_deref() == Some(&b"a"[..]))
    })
    .await;
    until("three voters again", || async { status(&a_http).await.filter(|s| voters(s) == 3) }).await;
    // Formation notices on its next tick that the log arrived: poll each node's phase.
    for agent in &agents {
        until("every node a member", || async {
            status(&agent.http).await.filter(|s| s["formation"]["phase"] == "member")
        })
        .await;
    }
    for agent in &agents {
        let read = agent.client(Duration::from_secs(5)).get(NS, "k", "linearizable").await.expect("read");
        assert_eq!(read.value.as_deref(), Some(&b"a"[..]), "{}", agent.http);
        let s = status(&agent.http).await.expect("status");
        assert_eq!(splits(&s), 0, "a split was reported: {s}");
        assert_eq!(s["formation"]["phase"], "member", "{s}");
        assert!(s["formation"]["reason"].as_str().is_some_and(|r| r.contains(&cluster)), "not in {cluster}: {s}");
    }
}
