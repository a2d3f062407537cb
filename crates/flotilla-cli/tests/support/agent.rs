//! [`Agent`]: a real `flotilla agent` on loopback, the OS picking its ports, started with any
//! flags (no `--force-bootstrap` unless given), killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use flotilla_http::Client;
use serde_json::Value;

use super::{exits_within, flotilla, path_str, spawn_agent};

/// The namespace the agents serve.
pub const NS: &str = "default";

/// One agent process on loopback, the OS picking its ports.
pub struct Agent {
    /// Its data directory.
    pub dir: PathBuf,
    /// Its log (stdout and stderr), new at each start.
    pub log: PathBuf,
    /// The HTTP address it serves.
    pub http: String,
    /// The process, until killed or stopped.
    pub child: Option<Child>,
}

impl Agent {
    /// Start `flotilla agent` on `dir` (a fresh log each time) with `args` added.
    pub async fn start(dir: &Path, args: &[&str]) -> Agent {
        let log = dir.with_extension("log");
        let base = ["--data-dir", path_str(dir), "--listen", "/ip4/127.0.0.1/tcp/0"];
        let (child, http) = spawn_agent(&[&base[..], args].concat(), &log).await;
        Agent { dir: dir.to_path_buf(), log, http, child: Some(child) }
    }

    /// The cluster-plane address the agent logged at start.
    pub fn p2p(&self) -> String {
        let text = std::fs::read_to_string(&self.log).expect("log");
        let line = text.lines().find(|l| l.contains("flotilla agent running")).expect("the start line");
        let start = line.find("addrs=[\"").expect("addrs in the start line") + "addrs=[\"".len();
        line[start..].split('"').next().expect("an address").to_string()
    }

    /// A client of its HTTP API (10 s timeout).
    pub fn client(&self) -> Client {
        Client::new(&self.http, Duration::from_secs(10))
    }

    /// Its status of [`NS`], if it answers within 2 s.
    pub async fn status(&self) -> Option<Value> {
        Client::new(&self.http, Duration::from_secs(2)).get_json(&format!("/v1/ns/{NS}/status")).await.ok()
    }

    pub fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self) {
        let child = self.child.take().expect("running");
        let pid = i32::try_from(child.id()).expect("pid");
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM sent");
        let out = exits_within(child, super::PATIENCE);
        assert!(out.status.success(), "{} did not stop cleanly: {}", self.dir.display(), out.status);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Voters in a namespace status.
pub fn voters(s: &Value) -> usize {
    s["members"].as_array().map(|m| m.iter().filter(|x| x["role"] == "voter").count()).unwrap_or(0)
}

/// Run `flotilla ARGS` (a CLI command, not an agent) and wait for it, at most 30 s.
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    let child = flotilla().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("flotilla runs");
    exits_within(child, Duration::from_secs(30))
}

/// The JSON a CLI command printed, expecting it to have succeeded.
pub fn json_of(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
