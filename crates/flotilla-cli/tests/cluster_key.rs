//! Real `flotilla agent` processes over libp2p on loopback with a cluster key: `flotilla
//! keygen`, a sealed 3-node cluster that encrypts at rest, writes through a follower, a fourth
//! agent with another key that is refused with the reason on both sides, and data directories
//! that do not contain the values.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flotilla_http::Client;
use serde_json::Value;
use support::{free_port, until};

const NS: &str = "default";
const MARKER: &str = "AT-REST-PLAINTEXT-MARKER";

struct Agent {
    http: String,
    p2p: String,
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn flotilla() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
}

fn spawn(dir: &Path, key: &Path, bootstrap: Option<&str>) -> Agent {
    let (http, p2p) = (format!("127.0.0.1:{}", free_port()), format!("/ip4/127.0.0.1/tcp/{}", free_port()));
    let log = std::fs::File::create(dir.with_extension("log")).expect("log file");
    let mut cmd = flotilla();
    cmd.args(["agent", "--no-mdns", "--encrypt-at-rest", "--data-dir"])
        .arg(dir)
        .args(["--listen", &p2p, "--http", &http, "--cluster-key-file"])
        .arg(key);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let child = cmd
        .env("RUST_LOG", "info,openraft=warn")
        .stdout(Stdio::from(log.try_clone().expect("clone log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("agent starts");
    Agent { http, p2p, child }
}

async fn get(http: &str, path: &str) -> Option<Value> {
    Client::new(http, Duration::from_secs(2)).get_json(path).await.ok()
}

fn keygen(path: &Path) {
    let out = flotilla().arg("keygen").arg(path).output().expect("keygen runs");
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn keygen_writes_a_private_key_file_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cluster.key");
    keygen(&path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let again = flotilla().arg("keygen").arg(&path).output().expect("keygen runs");
    assert!(!again.status.success(), "keygen overwrote an existing key file");
    let show = flotilla().args(["keyring", "show"]).arg(&path).output().expect("keyring show runs");
    let shown: Value = serde_json::from_slice(&show.stdout).expect("json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(shown["accepted_keys"].as_array().map(Vec::len), Some(1));
    assert!(!String::from_utf8_lossy(&show.stdout).contains(text.lines().last().unwrap()), "secret printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_agents_form_serve_and_refuse_a_foreign_key() {
    let root = tempfile::tempdir().expect("tempdir");
    let (key, foreign) = (root.path().join("cluster.key"), root.path().join("foreign.key"));
    keygen(&key);
    keygen(&foreign);
    let dirs: Vec<PathBuf> = (0..4).map(|i| root.path().join(format!("node{i}"))).collect();
    let first = spawn(&dirs[0], &key, None);
    until("the founder to lead", || async {
        get(&first.http, &format!("/v1/ns/{NS}/status")).await.filter(|s| s["role"] == "leader")
    })
    .await;
    let mut agents = vec![first];
    for dir in &dirs[1..3] {
        let bootstrap = agents[0].p2p.clone();
        agents.push(spawn(dir, &key, Some(&bootstrap)));
    }
    let voters = |s: &Value| s["members"].as_array().map(|m| m.iter().filter(|x| x["role"] == "voter").count());
    until("three voters", || async {
        get(&agents[0].http, &format!("/v1/ns/{NS}/status")).await.filter(|s| voters(s) == Some(3))
    })
    .await;

    // Writes through every node (followers forward, sealed), read back linearizably.
    for (i, agent) in agents.iter().enumerate() {
        let client = Client::new(&agent.http, Duration::from_secs(10));
        client.put(NS, &format!("k{i}"), format!("{MARKER}-{i}").into_bytes()).await.expect("sealed write");
    }
    let reader = Client::new(&agents[2].http, Duration::from_secs(10));
    let read = reader.get(NS, "k0", "linearizable").await.expect("read");
    assert_eq!(read.value.as_deref(), Some(format!("{MARKER}-0").as_bytes()));

    // An agent with another key is refused, and both sides say why.
    let outsider = spawn(&dirs[3], &foreign, Some(&agents[0].p2p));
    let mismatch = |s: &Value| {
        s["sealing"]["refusals"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["reason"].as_str().is_some_and(|t| t.contains("cluster key mismatch"))))
    };
    until("the outsider to report the key mismatch", || async {
        get(&outsider.http, "/v1/status").await.filter(|s| mismatch(s))
    })
    .await;
    until("a member to report the outsider", || async {
        for agent in &agents {
            if let Some(s) = get(&agent.http, "/v1/status").await.filter(|s| mismatch(s)) {
                return Some(s);
            }
        }
        None
    })
    .await;
    let status = get(&agents[0].http, &format!("/v1/ns/{NS}/status")).await.expect("status");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3), "{status}");
    let outside = Client::new(&outsider.http, Duration::from_secs(5));
    assert!(outside.get(NS, "k0", "stale").await.map(|r| r.value.is_none()).unwrap_or(true), "outsider has data");

    // At rest: nothing in the data directories shows the values.
    drop(outsider);
    drop(agents);
    for dir in &dirs[..3] {
        for file in files_under(dir) {
            let bytes = std::fs::read(&file).expect("read data file");
            assert!(
                !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
                "{} holds a value in plain",
                file.display()
            );
        }
    }
}
