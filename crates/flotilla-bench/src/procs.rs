//! Child processes (etcd members, flotilla agents): spawning, `kill -9`, RSS, free ports,
//! finding the binaries.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context};

/// A child process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildProc {
    child: Child,
    log: PathBuf,
    what: String,
}

impl ChildProc {
    /// Start `program args...` with stdout and stderr appended to `log`; the child is killed by
    /// the kernel if this process dies (`PR_SET_PDEATHSIG`), so no member outlives a crashed
    /// or `kill -9`ed benchmark.
    pub fn spawn(what: &str, program: &Path, args: &[OsString], log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err));
        // Each side runs with its defaults: no inherited log filter.
        cmd.env_remove("RUST_LOG");
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {what} ({})", program.display()))?;
        Ok(Self { child, log: log.to_path_buf(), what: what.to_string() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` the process and reap it; returns the instant the signal had been sent (from
    /// then on the process runs no more code of its own).
    pub fn kill(&mut self) -> anyhow::Result<Instant> {
        // An error here means it already exited; wait() reaps it either way.
        let _ = self.child.kill();
        let signalled = Instant::now();
        self.child.wait().with_context(|| format!("reaping {}", self.what))?;
        Ok(signalled)
    }

    /// Send SIGTERM (a graceful stop); returns the instant it was sent.
    pub fn terminate(&self) -> anyhow::Result<Instant> {
        let pid = i32::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: kill(2) on a child this process spawned and has not reaped (it is reaped only
        // by `kill`, `try_exit` or drop, all of which take `self`).
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("SIGTERM to {}: {}", self.what, std::io::Error::last_os_error());
        }
        Ok(Instant::now())
    }

    /// The exit status, if the process has exited (reaping it).
    pub fn try_exit(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// The file its stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// An error (with the end of its log) if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited ({status}); end of its log:\n{}", self.what, log_tail(&self.log, 2000)),
        }
    }

    /// CPU time used so far, seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid())
    }

    /// Resident set size (VmRSS) in KiB, `None` when it cannot be read.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) `pid` has used, seconds, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_s <= 0 {
        return None;
    }
    Some(parse_stat_cpu_ticks(&stat)? as f64 / ticks_per_s as f64)
}

/// utime + stime (clock ticks) of a `/proc/PID/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of `pid` in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmrss(&status)
}

/// The `VmRSS:` line of a `/proc/PID/status` text, in KiB.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The last `max` bytes of a file, lossily decoded; a note when it cannot be read.
pub fn log_tail(path: &Path, max: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
        let mut buf = Vec::new();
        f.take(max).read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// Hands out loopback ports that are free now and never the same one twice in this process.
/// (Another process may still take one between this check and the member's bind; the
/// member then fails to start and says so.)
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if given.insert(port) {
            return Ok(port);
        }
    }
    bail!("no free loopback port found")
}

/// `name` on `PATH`, if there is an executable file of that name.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

/// Whether `path` is a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The etcd binary: `explicit`, or `etcd` on `PATH`.
pub fn find_etcd(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(p) if is_executable(p) => Ok(p.to_path_buf()),
        Some(p) => bail!("--etcd-bin {}: not an executable file", p.display()),
        None => which("etcd").context(
            "etcd not found on PATH: install it with `apt-get install -y etcd-server` \
             (Debian 12 ships etcd 3.4), or pass --etcd-bin PATH",
        ),
    }
}

/// The flotilla binary: `explicit`, or `flotilla` next to this executable (target/release
/// when run with `cargo run --release -p flotilla-bench`).
pub fn find_flotilla(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if is_executable(p) {
            return Ok(p.to_path_buf());
        }
        bail!("--flotilla-bin {}: not an executable file", p.display());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let beside = exe.with_file_name("flotilla");
    if is_executable(&beside) {
        return Ok(beside);
    }
    bail!(
        "no flotilla binary at {}: build it with `cargo build --release -p flotilla-cli` \
         (or pass --flotilla-bin PATH)",
        beside.display()
    )
}

/// First line of `program --version`, for the report.
pub fn version_line(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss_is_parsed_from_proc_status() {
        let text = "Name:\tetcd\nVmPeak:\t  999 kB\nVmRSS:\t   27648 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vmrss(text), Some(27648));
        assert_eq!(parse_vmrss("Name: x\n"), None);
        assert_eq!(parse_vmrss("VmRSS: lots kB\n"), None);
        // Our own process has one.
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn cpu_ticks_are_parsed_from_proc_stat() {
        let line = "1234 (we ird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn ports_are_never_handed_out_twice() {
        let a = free_port().expect("port");
        let b = free_port().expect("port");
        assert_ne!(a, b);
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let err = find_etcd(Some(Path::new("/nonexistent/etcd"))).expect_err("missing");
        assert!(err.to_string().contains("--etcd-bin"), "{err}");
        let err = find_flotilla(Some(Path::new("/nonexistent/flotilla"))).expect_err("missing");
        assert!(err.to_string().contains("--flotilla-bin"), "{err}");
    }
}
