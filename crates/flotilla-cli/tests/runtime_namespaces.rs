//! Namespaces opened and closed at runtime on three real `flotilla agent` processes over
//! libp2p on loopback, through the CLI: `flotilla ns open` on all three, write, read
//! linearizably elsewhere, `flotilla ns close` on one (the other two keep serving, the closed
//! node's data and membership are gone), and restarts reopen exactly the persisted set.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use flotilla_core::Namespace;
use flotilla_http::Client;
use serde_json::Value;
use support::{flotilla, free_port, until};

const RT: &str = "runtime";

struct Agent {
    http: String,
    p2p: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn start(&mut self, bootstrap: &str) {
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("log file");
        let child = flotilla()
            .args(["agent", "--no-mdns", "--expect", "3", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen", &self.p2p, "--http", &self.http, "--bootstrap", bootstrap])
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("agent starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.http, Duration::from_secs(10))
    }

    /// `flotilla ns ARGS --addr <this agent>`, which must succeed; its JSON output.
    fn ns(&self, args: &[&str]) -> Value {
        let out = flotilla().arg("ns").args(args).args(["--addr", &self.http]).output().expect("cli runs");
        assert!(out.status.success(), "flotilla ns {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    fn listed(&self) -> Vec<String> {
        let list = self.ns(&["list"]);
        let names = list["namespaces"].as_array().expect("namespaces");
        names.iter().filter_map(|n| n["namespace"].as_str().map(str::to_string)).collect()
    }
}

async fn status(http: &str, ns: &str) -> Option<Value> {
    Client::new(http, Duration::from_secs(2)).get_json(&format!("/v1/ns/{ns}/status")).await.ok()
}

fn voters(s: &Value) -> usize {
    s["members"].as_array().map(|m| m.iter().filter(|x| x["role"] == "voter").count()).unwrap_or(0)
}

/// What a stopped agent's data directory still holds of `ns`: tables or snapshot, the
/// formation record, the membership in `node.key`.
fn leftovers(dir: &Path, ns: &str) -> (bool, bool, bool) {
    let ns = Namespace::new(ns).expect("ns");
    let store = flotilla_store::Store::open(dir).expect("store opens");
    let stored = store.stored_namespaces().expect("list").contains(&ns);
    store.shutdown();
    let record = dir.join("formation").join(format!("{}.rec", ns.as_str())).exists();
    let key = flotilla_net::load_or_create_keypair(dir).expect("key").public().to_peer_id();
    let ledger = flotilla_net::load_memberships(dir, &key).expect("memberships").unwrap_or_default();
    (stored, record, ledger.contains_key(ns.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_open_and_close_at_runtime_on_real_agents() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut agents: Vec<Agent> = (0..3)
        .map(|i| Agent {
            http: format!("127.0.0.1:{}", free_port()),
            p2p: format!("/ip4/127.0.0.1/tcp/{}", free_port()),
            dir: root.path().join(format!("node{i}")),
            child: None,
        })
        .collect();
    let bootstrap = agents[0].p2p.clone();
    for a in &mut agents {
        a.start(&bootstrap);
    }
    for a in &agents {
        until("the default namespace to form", || async {
            status(&a.http, "default").await.filter(|s| voters(s) == 3)
        })
        .await;
    }

    // Open at runtime on all three, through the CLI; again is a no-op.
    for a in &agents {
        assert_eq!(a.ns(&["open", RT])["open"], true);
    }
    agents[0].ns(&["open", RT]);
    for a in &agents {
        until("the runtime namespace to form with three voters", || async {
            status(&a.http, RT).await.filter(|s| voters(s) == 3 && s["leader"].is_string())
        })
        .await;
    }
    agents[0].client().put(RT, "k", b"v1".to_vec()).await.expect("write");
    let read = agents[1].client().get(RT, "k", "linearizable").await.expect("linearizable read elsewhere");
    assert_eq!(read.value.as_deref(), Some(&b"v1"[..]));
    assert!(agents[2].listed().contains(&RT.to_string()));

    // Close on one node: the other two keep serving.
    let closed = agents[2].ns(&["close", RT]);
    assert_eq!(closed["open"], false);
    assert!(!agents[2].listed().contains(&RT.to_string()));
    for a in &agents[..2] {
        until("two voters left", || async { status(&a.http, RT).await.filter(|s| voters(s) == 2) }).await;
    }
    agents[1].client().put(RT, "k", b"v2".to_vec()).await.expect("write after the close");
    let read = agents[0].client().get(RT, "k", "linearizable").await.expect("read after the close");
    assert_eq!(read.value.as_deref(), Some(&b"v2"[..]));
    let refused = agents[2].client().get(RT, "k", "stale").await.expect_err("closed here");
    assert!(
        matches!(refused, flotilla_http::ClientError::Api { status: 404, ref code, .. } if code == "unknown_namespace"),
        "{refused:?}"
    );

    // The closed node's data is gone: tables, formation record, membership in node.key.
    agents[2].kill();
    assert_eq!(leftovers(&agents[2].dir, RT), (false, false, false), "nothing of {RT} left on the closed node");
    assert_eq!(leftovers(&agents[2].dir, "default"), (true, true, true), "default untouched");

    // Restarts reopen exactly the persisted set, whatever the flags say (they name only default).
    agents[2].start(&bootstrap);
    agents[0].kill();
    let via = agents[1].p2p.clone();
    agents[0].start(&via);
    until("the restarted node to serve default", || async { status(&agents[2].http, "default").await }).await;
    assert!(!agents[2].listed().contains(&RT.to_string()), "closed stays closed after a restart");
    let reopened = until("the restarted member to serve the runtime namespace", || async {
        agents[0].client().get(RT, "k", "linearizable").await.ok()
    })
    .await;
    assert_eq!(reopened.value.as_deref(), Some(&b"v2"[..]));

    for a in &mut agents {
        a.kill();
    }
}
