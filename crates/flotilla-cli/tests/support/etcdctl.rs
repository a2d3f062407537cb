//! Running etcd's command-line client, `etcdctl` (Debian's `etcd-client` package), for the
//! tests that drive an etcd endpoint with it.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::PATIENCE;

/// Run `etcdctl --endpoints ENDPOINT ARGS` with `stdin`; returns (success, stdout, stderr).
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout", "30s", "--dial-timeout", "30s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl starts");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or("").as_bytes()).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("etcdctl runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `etcdctl ARGS` that must succeed: its stdout.
pub fn ok(endpoint: &str, args: &[&str]) -> String {
    let (success, out, err) = etcdctl(endpoint, args, None);
    assert!(success, "etcdctl {args:?} failed: {err}");
    out
}

/// The first `count` lines `etcdctl ARGS` (a watch or an election, which run until stopped)
/// prints, within [`PATIENCE`]; the process is killed then (so an elected candidate does not
/// resign: its key stays until its lease ends).
pub fn watched_lines(endpoint: &str, args: &[&str], count: usize) -> Vec<String> {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl starts");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().take(count) {
            if lines.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    while seen.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

/// Whether `program --version`-like `probe` runs: the tool is installed.
fn runs(program: &str, probe: &str) -> bool {
    Command::new(program).arg(probe).output().is_ok_and(|o| o.status.success())
}

/// Whether the test may run: `true` when every one of `programs` (probed with `probe`) is
/// installed. Otherwise it fails as root, since CI runs as root and installs them (a skip
/// there would hide the test), and else says why it skips and returns `false`.
pub fn installed_or_skip(programs: &[(&str, &str)], packages: &str) -> bool {
    let missing: Vec<&str> = programs.iter().filter(|(p, probe)| !runs(p, probe)).map(|(p, _)| *p).collect();
    if missing.is_empty() {
        return true;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(!root, "{missing:?} not installed: as root (CI) this test must run; apt-get install {packages}");
    eprintln!("skipped: {missing:?} not installed (Debian: apt-get install {packages})");
    false
}
