//! A `flotilla agent` process running in a lab host.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::http::{self, Consistency};
use crate::net::{Net, AGENT_HTTP_PORT, AGENT_P2P_PORT};

/// Lines of each log printed when a test panics with the agent alive.
const TAIL_ON_PANIC: usize = 60;

/// A `flotilla agent` process in one host of a [`crate::Lab`], with its own data directory.
///
/// The process runs as `ip netns exec <host netns> <flotilla> agent --data-dir <dir>
/// --listen /ip4/<ip>/tcp/7000 --http <ip>:8080 --admin-token-file <dir>/admin.token
/// --cluster-key-file <lab key> <extra args>`, with stdout and stderr appended to
/// `<dir>/agent.log`. The HTTP API listens on a non-loopback address, so the agent needs an
/// admin token: each agent gets a fresh random one in `<dir>/admin.token` (mode 0600; not
/// passed when `extra` has its own `--admin-token-file`), sent by [`Agent::admin_post_json`].
/// The cluster plane does too, so it needs a cluster key: every agent of a lab gets the lab's
/// one key (not passed when `extra` has its own `--cluster-key-file` or
/// `--insecure-no-cluster-key`). `RUST_LOG` is
/// `info,openraft=warn` unless `FLOTILLA_LAB_RUST_LOG` is set; `NO_COLOR=1` keeps the log free
/// of escape codes.
/// The process gets SIGKILL if the thread that started it exits, so a crashed test leaves no
/// agents behind.
///
/// Dropping the handle kills the process and deletes the data directory, unless the thread is
/// panicking (a failed test) or [`Agent::keep_data`] was called: then the directory is kept
/// and, when panicking, the end of the log is printed to stderr.
pub struct Agent {
    net: Arc<Net>,
    host: usize,
    bin: PathBuf,
    args: Vec<String>,
    dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    log_path: PathBuf,
    admin_token_file: PathBuf,
    child: Option<Child>,
    ip: Ipv4Addr,
    keep: bool,
}

impl Agent {
    pub(crate) fn start(net: Arc<Net>, host: usize, bin: &Path, args: Vec<String>) -> Result<Agent> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("flotilla-lab-{}-", net.hosts[host].netns))
            .tempdir()
            .context("creating the agent's data directory")?;
        let data_dir = dir.path().to_path_buf();
        let admin_token_file = write_admin_token(&data_dir)?;
        let ip = *net.hosts[host].ip.lock().expect("host address lock");
        let mut agent = Agent {
            net,
            host,
            bin: bin.to_path_buf(),
            args,
            log_path: data_dir.join("agent.log"),
            admin_token_file,
            data_dir,
            dir: Some(dir),
            child: None,
            ip,
            keep: false,
        };
        agent.launch()?;
        Ok(agent)
    }

    fn launch(&mut self) -> Result<()> {
        if !self.bin.exists() {
            bail!("flotilla binary {} does not exist", self.bin.display());
        }
        self.ip = *self.net.hosts[self.host].ip.lock().expect("host address lock");
        let netns = self.net.hosts[self.host].netns.clone();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let mut cmd = Command::new("ip");
        let (listen, http) = (self.listen_addr(), self.http_addr().to_string());
        cmd.args(["netns", "exec", &netns]).arg(&self.bin).arg("agent").arg("--data-dir").arg(&self.data_dir);
        cmd.args(["--listen", &listen, "--http", &http]);
        let own_token = self.args.iter().any(|a| a == "--admin-token-file" || a.starts_with("--admin-token-file="));
        if !own_token {
            cmd.arg("--admin-token-file").arg(&self.admin_token_file);
        }
        let own_key = self.args.iter().any(|a| {
            a == "--insecure-no-cluster-key" || a == "--cluster-key-file" || a.starts_with("--cluster-key-file=")
        });
        if !own_key {
            cmd.arg("--cluster-key-file").arg(&self.net.cluster_key_file);
        }
        cmd.args(&self.args);
        writeln!(log, "=== flotilla-lab: {:?}", cmd)?;
        let filter = std::env::var("FLOTILLA_LAB_RUST_LOG").unwrap_or_else(|_| "info,openraft=warn".into());
        cmd.env("RUST_LOG", filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        // `ip netns exec` execs the agent, so the child's pid is the agent's.
        self.child = Some(cmd.spawn().with_context(|| format!("starting {} in {netns}", self.bin.display()))?);
        Ok(())
    }

    /// The lab host the agent runs on.
    pub fn host(&self) -> usize {
        self.host
    }

    /// The address the current (or last) process listens on.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The HTTP API address, `<ip>:8080`.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, AGENT_HTTP_PORT))
    }

    /// Base URL of the HTTP API, `http://<ip>:8080`.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.http_addr())
    }

    /// The libp2p listen address, `/ip4/<ip>/tcp/7000`.
    pub fn listen_addr(&self) -> String {
        format!("/ip4/{}/tcp/{AGENT_P2P_PORT}", self.ip)
    }

    /// The process id of the running agent, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// The extra arguments of the current (or last) run.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The data directory (also holding `agent.log`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file holding the agent's admin token (`<data dir>/admin.token`, mode 0600).
    pub fn admin_token_file(&self) -> &Path {
        &self.admin_token_file
    }

    /// The agent's admin token (the content of [`Agent::admin_token_file`], trimmed).
    pub fn admin_token(&self) -> Result<String> {
        let text = std::fs::read_to_string(&self.admin_token_file)
            .with_context(|| format!("reading {}", self.admin_token_file.display()))?;
        Ok(text.trim().to_string())
    }

    /// `POST {path}` with the JSON `body` and the agent's admin token, as the membership and
    /// admin routes (`/v1/ns/{ns}/members`, `.../transfer-leader`, `.../dissolve`) require.
    pub fn admin_post_json(&self, path: &str, body: &Value) -> Result<Value> {
        http::post_json(&self.http_base(), path, body, Some(&self.admin_token()?), http::REQUEST_TIMEOUT)
    }

    /// The log file: stdout and stderr of every run, appended.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no log: {e})"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Keep the data directory (and log) when the handle is dropped.
    pub fn keep_data(&mut self) {
        self.keep = true;
    }

    /// `kill -9` the process and reap it. Does nothing if it is not running.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: kill fails, wait reaps.
            let _ = child.kill();
            child.wait().context("reaping the agent")?;
        }
        Ok(())
    }

    /// Start the agent again on the same data directory, at its host's current address (see
    /// [`crate::Lab::set_address`]), with `extra` arguments replacing the previous ones (pass
    /// [`Agent::args`] to keep them). A running process is killed with SIGKILL first.
    pub fn restart<S: AsRef<str>>(&mut self, extra: &[S]) -> Result<()> {
        self.kill9()?;
        self.args = extra.iter().map(|s| s.as_ref().to_string()).collect();
        self.launch()
    }

    /// `GET /v1/ns/{ns}/status`.
    pub fn status(&self, ns: &str) -> Result<Value> {
        http::get_json(&self.http_base(), &format!("/v1/ns/{ns}/status"), http::STATUS_TIMEOUT)
    }

    /// `GET /v1/status`: peer id, addresses, namespaces.
    pub fn node_status(&self) -> Result<Value> {
        http::get_json(&self.http_base(), "/v1/status", http::STATUS_TIMEOUT)
    }

    /// The agent's PeerId (its node id), from `GET /v1/status`.
    pub fn peer_id(&self) -> Result<String> {
        let status = self.node_status()?;
        match status["peer_id"].as_str() {
            Some(id) => Ok(id.to_string()),
            None => bail!("no peer_id in {status}"),
        }
    }

    /// The full multiaddress to join through, `/ip4/<ip>/tcp/7000/p2p/<peer id>`.
    pub fn p2p_addr(&self) -> Result<String> {
        Ok(format!("{}/p2p/{}", self.listen_addr(), self.peer_id()?))
    }

    /// `PUT /v1/kv/{ns}/{key}` with the raw `value`; returns the log index.
    pub fn put(&self, ns: &str, key: &str, value: &[u8]) -> Result<u64> {
        http::put(&self.http_base(), ns, key, value, http::REQUEST_TIMEOUT)
    }

    /// [`Agent::put`] with a client-side timeout of `timeout`.
    pub fn put_within(&self, ns: &str, key: &str, value: &[u8], timeout: Duration) -> Result<u64> {
        http::put(&self.http_base(), ns, key, value, timeout)
    }

    /// `GET /v1/kv/{ns}/{key}?consistency=...`: the value, `None` when the key is absent.
    pub fn get(&self, ns: &str, key: &str, consistency: Consistency) -> Result<Option<Vec<u8>>> {
        http::get(&self.http_base(), ns, key, consistency, http::REQUEST_TIMEOUT)
    }
}

/// Write a fresh random admin token (64 hex digits) to `<dir>/admin.token`, mode 0600.
fn write_admin_token(dir: &Path) -> Result<PathBuf> {
    crate::net::write_secret(&dir.join("admin.token"))
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("host", &self.host)
            .field("ip", &self.ip)
            .field("pid", &self.pid())
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.kill9();
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!(
                "---- flotilla-lab: host {} ({}), last {TAIL_ON_PANIC} lines of {} ----\n{}\n---- end of host {} log ----",
                self.host,
                self.ip,
                self.log_path.display(),
                self.log_tail(TAIL_ON_PANIC),
                self.host
            );
        }
        if panicking || self.keep {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("flotilla-lab: kept the data directory of host {} at {}", self.host, kept.display());
            }
        }
    }
}
