//! Helpers shared by the tests that run real agents on loopback.

// Each test binary includes this module and uses only some of its helpers.
#![allow(dead_code)]

pub mod agent;
pub mod etcdctl;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous bound for anything cluster-wide on a loaded 2-core CI machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Poll `attempt` every 100 ms until it yields a value, for at most [`PATIENCE`].
pub async fn until<T, F, Fut>(what: &str, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll(what, None, attempt).await
}

/// [`until`], failing with the agent's `log` when the time runs out.
pub async fn until_or_log<T, F, Fut>(what: &str, log: &Path, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll(what, Some(log), attempt).await
}

async fn poll<T, F, Fut>(what: &str, log: Option<&Path>, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        if Instant::now() >= deadline {
            let text = log.map(|l| std::fs::read_to_string(l).unwrap_or_default()).unwrap_or_default();
            panic!("timed out waiting for {what}; the agent's log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `flotilla` binary under test, with none of the operator's environment that would
/// change what an agent does (key and token files, the CLI's default address).
pub fn flotilla() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.env_remove("FLOTILLA_CLUSTER_KEY_FILE")
        .env_remove("FLOTILLA_ADMIN_TOKEN_FILE")
        .env_remove("FLOTILLA_ADDR")
        .env("RUST_BACKTRACE", "0");
    cmd
}

/// Run the CLI with `args` against `http`, with the admin token file `token` in the
/// environment if given; returns (success, stdout, stderr).
pub fn cli(http: &str, args: &[&str], token: Option<&Path>) -> (bool, String, String) {
    let mut cmd = flotilla();
    cmd.args(args).args(["--addr", http]);
    if let Some(path) = token {
        cmd.env("FLOTILLA_ADMIN_TOKEN_FILE", path);
    }
    let out = cmd.output().expect("cli runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Wait for `child` to exit within `within`; kills it and fails otherwise.
pub fn exits_within(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Run `flotilla agent --no-mdns --data-dir DATA ARGS` and expect it to refuse to start within
/// 30 s; returns what it wrote to stderr.
pub fn refused_start(data: &Path, args: &[&str]) -> String {
    let child = flotilla()
        .args(["agent", "--no-mdns", "--data-dir"])
        .arg(data)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent starts");
    let out = exits_within(child, Duration::from_secs(30));
    assert!(!out.status.success(), "the agent must refuse to start with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Wait for an agent started with `--http 127.0.0.1:0` and logging to `log` to report the HTTP
/// address the OS gave it, for at most [`PATIENCE`]; fails with the log if the agent exits
/// first. Letting the OS pick the port avoids the race of [`free_port`], whose port another
/// listener (such as an agent's own `/tcp/0` cluster plane) can take before the agent binds it.
pub async fn bound_http_addr(child: &mut Child, log: &Path) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = running_field(&text, "http") {
            return addr;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("the agent exited ({status}) before serving HTTP; its log:\n{text}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for the agent to serve HTTP; its log:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of field `name` in the agent's "flotilla agent running" line of `log_text`, if
/// logged yet (`http`: the HTTP address; `etcd`: the etcd endpoint, or `off`).
pub fn running_field(log_text: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    log_text
        .lines()
        .filter(|l| l.contains("flotilla agent running"))
        .find_map(|l| l.split_whitespace().find_map(|field| field.strip_prefix(prefix.as_str())))
        .map(str::to_owned)
}

/// A single-node agent on loopback (`--force-bootstrap`, the OS picks the ports), killed when
/// dropped.
pub struct LocalAgent {
    /// The agent process.
    pub child: Child,
    /// The HTTP address it serves.
    pub http: String,
    /// Its log (stdout and stderr).
    pub log: std::path::PathBuf,
}

impl LocalAgent {
    /// Start `flotilla agent` with its data and log under `dir` and `args` added, its cluster
    /// plane on loopback; returns once it serves HTTP.
    pub async fn start(dir: &Path, args: &[&str]) -> LocalAgent {
        Self::start_listening(dir, "/ip4/127.0.0.1/tcp/0", args).await
    }

    /// [`LocalAgent::start`] with the cluster plane on `listen`.
    pub async fn start_listening(dir: &Path, listen: &str, args: &[&str]) -> LocalAgent {
        let log = dir.join("agent.log");
        let data = dir.join("data");
        let base = ["--force-bootstrap", "--data-dir", path_str(&data), "--listen", listen];
        let (child, http) = spawn_agent(&[&base[..], args].concat(), &log).await;
        LocalAgent { child, http, log }
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A path as a command-line argument (the tests' temporary paths are UTF-8).
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Spawn `flotilla agent --no-mdns ARGS --http 127.0.0.1:0`, logging to `log` (created anew);
/// returns the process and the HTTP address it serves once it does.
pub async fn spawn_agent(args: &[&str], log: &Path) -> (Child, String) {
    let out = std::fs::File::create(log).expect("log file");
    let mut child = flotilla()
        .args(["agent", "--no-mdns", "--http", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info,openraft=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(out.try_clone().expect("clone log")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("agent starts");
    let http = bound_http_addr(&mut child, log).await;
    (child, http)
}
