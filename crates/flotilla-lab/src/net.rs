//! The namespaces, links and addresses of a lab.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::agent::Agent;

/// TCP port every agent's libp2p host listens on (each host has its own address).
pub const AGENT_P2P_PORT: u16 = 7000;
/// TCP port every agent's HTTP API listens on.
pub const AGENT_HTTP_PORT: u16 = 8080;

/// Prefix of every namespace a lab creates: `flab-<pid>x<n>-sw`, `flab-<pid>x<n>-h<i>`.
const NETNS_PREFIX: &str = "flab-";
/// Prefix of the probe link in the caller's namespace: `flp<pid>x<n>`.
const PROBE_PREFIX: &str = "flp";
/// Prefix of the label of the probe address on `lo`: `lo:f<pid>x<n>`.
const LABEL_PREFIX: &str = "lo:f";
/// Last octet of the probe address.
const PROBE_OCTET: u8 = 254;

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// Several hosts in Linux network namespaces joined by a bridge, with a probe from the caller's
/// namespace.
///
/// Layout, for a lab with tag `T` (`<pid>x<counter>`, unique per lab) on subnet `10.a.b.0/24`:
///
/// - namespace `flab-T-sw` (the switch): bridge `br0`, one port `p<i>` per host and the port
///   `probe`;
/// - namespace `flab-T-h<i>` per host: `lo` up, `eth0` (the other end of `p<i>`) with
///   `10.a.b.<i+1>/24` and `default dev eth0` without a gateway, so multicast (mDNS) has a route;
/// - in the caller's namespace: link `flpT` (the other end of `probe`) with no address of its
///   own, IPv6 and forwarding off, a route `10.a.b.0/24 dev flpT src 10.a.b.254`, and the
///   address `10.a.b.254/32` on `lo` (label `lo:fT`).
///
/// Keeping the probe address off the probe link keeps mDNS inside the lab: mDNS senders in the
/// caller's namespace (say, agents of another test on loopback) send per address, and
/// `10.a.b.254` on `lo` only reaches `lo`; in the other direction the bridge port `probe` has
/// `mcast_flood off`, so the hosts' multicast never leaves the bridge. Unicast TCP and ARP flow
/// normally, which is all the probe is for. Nothing is forwarded: the hosts can reach each other
/// and `10.a.b.254`, and nothing else.
///
/// Dropping the lab deletes all of it. Agents hold the lab's network alive: it is deleted
/// once the [`Lab`] and every [`Agent`] spawned in it are dropped (agents kill their process
/// first). Leftovers of a process killed before it could clean up are removed by
/// [`cleanup_stale`], which [`Lab::new`] runs once per process.
pub struct Lab {
    net: Arc<Net>,
}

/// One host of a lab.
pub(crate) struct HostNet {
    /// Namespace name.
    pub(crate) netns: String,
    /// Current address.
    pub(crate) ip: Mutex<Ipv4Addr>,
}

/// What a lab owns; deleted on drop.
pub(crate) struct Net {
    tag: String,
    switch: String,
    pub(crate) hosts: Vec<HostNet>,
    prefix: [u8; 2],
    probe_link: String,
    probe_label: String,
    /// The cluster key every agent of the lab gets (agents listen on lab addresses, which are
    /// not loopback, so they need one); removed with the lab.
    pub(crate) cluster_key_file: PathBuf,
    _keys: tempfile::TempDir,
}

impl Lab {
    /// Whether labs can be built here: running as root with a working `ip netns`. The answer is
    /// computed once per process.
    pub fn available() -> bool {
        Self::unavailable_reason().is_none()
    }

    /// Why labs cannot be built here, if they cannot (for a skip message).
    pub fn unavailable_reason() -> Option<String> {
        static REASON: OnceLock<Option<String>> = OnceLock::new();
        REASON
            .get_or_init(|| {
                // SAFETY: geteuid has no preconditions and cannot fail.
                if unsafe { libc::geteuid() } != 0 {
                    return Some("not running as root (network namespaces need root)".into());
                }
                let probe = format!("{NETNS_PREFIX}{}x-check", std::process::id());
                if let Err(e) = ip(&["netns", "add", &probe]) {
                    return Some(format!("`ip netns add` does not work here: {e:#}"));
                }
                if let Err(e) = ip(&["netns", "del", &probe]) {
                    return Some(format!("`ip netns del` does not work here: {e:#}"));
                }
                None
            })
            .clone()
    }

    /// Build a lab of `hosts` hosts (1 to 200) on a fresh subnet.
    pub fn new(hosts: usize) -> Result<Lab> {
        if !(1..=200).contains(&hosts) {
            bail!("a lab holds 1 to 200 hosts, not {hosts}");
        }
        if let Some(reason) = Self::unavailable_reason() {
            bail!("network namespaces unavailable: {reason}");
        }
        static CLEANUP: Once = Once::new();
        CLEANUP.call_once(|| {
            if let Err(e) = cleanup_stale() {
                eprintln!("flotilla-lab: cleaning up stale labs failed: {e:#}");
            }
        });
        let pid = std::process::id();
        let mut last_error = None;
        for _ in 0..16 {
            let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed) % 1000;
            let tag = format!("{pid}x{n}");
            let Some(prefix) = free_prefix(pid, n)? else {
                bail!("no free 10.a.b.0/24 subnet found for a lab");
            };
            let net = Net::empty(&tag, prefix, hosts)?;
            match net.build() {
                Ok(()) => return Ok(Lab { net: Arc::new(net) }),
                // Dropping `net` removes whatever was built; another subnet or tag may work.
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("could not build a lab")))
    }

    /// Number of hosts.
    pub fn hosts(&self) -> usize {
        self.net.hosts.len()
    }

    /// The lab's unique tag (`<pid>x<counter>`), part of every name it creates.
    pub fn tag(&self) -> &str {
        &self.net.tag
    }

    /// The lab's subnet, e.g. `10.137.42.0/24`.
    pub fn subnet(&self) -> String {
        let [a, b] = self.net.prefix;
        format!("10.{a}.{b}.0/24")
    }

    /// The address the calling process talks to the hosts from (`.254`).
    pub fn probe_addr(&self) -> Ipv4Addr {
        self.net.addr(PROBE_OCTET)
    }

    /// Name of the network namespace of `host`.
    pub fn netns(&self, host: usize) -> &str {
        &self.net.hosts[host].netns
    }

    /// Name of the switch namespace (holding the bridge `br0`).
    pub fn switch_netns(&self) -> &str {
        &self.net.switch
    }

    /// Current address of `host`.
    pub fn ip(&self, host: usize) -> Ipv4Addr {
        *self.net.hosts[host].ip.lock().expect("host address lock")
    }

    /// Move `host` to `10.a.b.<octet>` (its old address is removed). A running agent keeps
    /// listening on the old address; kill it first and [`Agent::restart`] it, which picks up the
    /// new address.
    pub fn set_address(&self, host: usize, octet: u8) -> Result<Ipv4Addr> {
        if octet == 0 || octet >= PROBE_OCTET {
            bail!("host octet must be 1..=253, not {octet}");
        }
        let new = self.net.addr(octet);
        for (i, h) in self.net.hosts.iter().enumerate() {
            if i != host && *h.ip.lock().expect("host address lock") == new {
                bail!("{new} is already host {i}'s address");
            }
        }
        let h = &self.net.hosts[host];
        let mut ip_slot = h.ip.lock().expect("host address lock");
        let batch =
            format!("addr flush dev eth0 scope global\naddr add {new}/24 dev eth0\nroute replace default dev eth0\n",);
        ip_batch(Some(&h.netns), &batch).with_context(|| format!("moving host {host} to {new}"))?;
        *ip_slot = new;
        Ok(new)
    }

    /// Cut `host` off: take its switch-side link down. The host keeps its address and routes;
    /// its packets go nowhere until [`Lab::heal`].
    pub fn isolate(&self, host: usize) -> Result<()> {
        ip(&["-n", &self.net.switch, "link", "set", &format!("p{host}"), "down"])
    }

    /// Reconnect a host cut off by [`Lab::isolate`].
    pub fn heal(&self, host: usize) -> Result<()> {
        ip(&["-n", &self.net.switch, "link", "set", &format!("p{host}"), "up"])
    }

    /// Start `flotilla agent` (the binary `flotilla_bin`) on `host`: a fresh temporary data
    /// directory, `--listen /ip4/<ip>/tcp/7000 --http <ip>:8080`, then `extra` arguments.
    pub fn spawn<S: AsRef<str>>(&self, host: usize, flotilla_bin: &Path, extra: &[S]) -> Result<Agent> {
        if host >= self.hosts() {
            bail!("host {host} out of range (lab has {})", self.hosts());
        }
        Agent::start(self.net.clone(), host, flotilla_bin, extra.iter().map(|s| s.as_ref().to_string()).collect())
    }

    /// Start an agent on every host, in a random order, with a random pause of up to `max_gap`
    /// between two starts, all with the same `extra` arguments.
    pub fn spawn_all_shuffled<S: AsRef<str>>(
        &self,
        flotilla_bin: &Path,
        extra: &[S],
        max_gap: Duration,
    ) -> Result<Started> {
        let mut rng = rand::thread_rng();
        let mut order: Vec<usize> = (0..self.hosts()).collect();
        order.shuffle(&mut rng);
        let mut slots: Vec<Option<Agent>> = (0..self.hosts()).map(|_| None).collect();
        for (k, &host) in order.iter().enumerate() {
            if k > 0 && !max_gap.is_zero() {
                // The gap between starts is the scenario (staggered arrival), not synchronisation.
                std::thread::sleep(rng.gen_range(Duration::ZERO..=max_gap));
            }
            slots[host] = Some(self.spawn(host, flotilla_bin, extra)?);
        }
        let last_started = Instant::now();
        let agents = slots.into_iter().map(|a| a.expect("every host started")).collect();
        Ok(Started { agents, order, last_started })
    }
}

/// What [`Lab::spawn_all_shuffled`] started.
#[derive(Debug)]
pub struct Started {
    /// The agents, indexed by host.
    pub agents: Vec<Agent>,
    /// The hosts in the order their agents were started.
    pub order: Vec<usize>,
    /// When the last agent was started.
    pub last_started: Instant,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("tag", &self.net.tag).field("subnet", &self.subnet()).finish()
    }
}

impl Net {
    fn empty(tag: &str, prefix: [u8; 2], hosts: usize) -> Result<Net> {
        let [a, b] = prefix;
        let keys = tempfile::Builder::new().prefix(&format!("flotilla-lab-{tag}-key-")).tempdir()?;
        let cluster_key_file = write_secret(&keys.path().join("cluster.key"))?;
        Ok(Net {
            tag: tag.to_string(),
            switch: format!("{NETNS_PREFIX}{tag}-sw"),
            hosts: (0..hosts)
                .map(|i| HostNet {
                    netns: format!("{NETNS_PREFIX}{tag}-h{i}"),
                    ip: Mutex::new(Ipv4Addr::new(10, a, b, i as u8 + 1)),
                })
                .collect(),
            prefix,
            probe_link: format!("{PROBE_PREFIX}{tag}"),
            probe_label: format!("{LABEL_PREFIX}{tag}"),
            cluster_key_file,
            _keys: keys,
        })
    }

    pub(crate) fn addr(&self, octet: u8) -> Ipv4Addr {
        let [a, b] = self.prefix;
        Ipv4Addr::new(10, a, b, octet)
    }

    fn build(&self) -> Result<()> {
        let sw = &self.switch;
        ip(&["netns", "add", sw])?;
        ip_batch(Some(sw), "link set lo up\nlink add br0 type bridge\nlink set br0 up\n")?;
        let mut ports = String::new();
        for (i, h) in self.hosts.iter().enumerate() {
            ip(&["netns", "add", &h.netns])?;
            ports.push_str(&format!("link add p{i} type veth peer name eth0 netns {}\n", h.netns));
            ports.push_str(&format!("link set p{i} master br0 up\n"));
        }
        ip_batch(Some(sw), &ports)?;
        for h in &self.hosts {
            let ip = *h.ip.lock().expect("host address lock");
            let batch =
                format!("link set lo up\naddr add {ip}/24 dev eth0\nlink set eth0 up\nroute add default dev eth0\n");
            ip_batch(Some(&h.netns), &batch)?;
        }

        // The probe: a link without an address of its own (see the type's docs).
        let probe = &self.probe_link;
        ip(&["link", "add", probe, "type", "veth", "peer", "name", "probe", "netns", sw])?;
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{probe}/disable_ipv6"), "1")?;
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{probe}/forwarding"), "0")?;
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{probe}/proxy_arp"), "0")?;
        ip_batch(
            Some(sw),
            "link set probe master br0\nlink set probe type bridge_slave mcast_flood off\nlink set probe up\n",
        )?;
        let probe_addr = self.addr(PROBE_OCTET);
        ip(&["addr", "add", &format!("{probe_addr}/32"), "dev", "lo", "label", &self.probe_label])?;
        ip(&["link", "set", probe, "up"])?;
        let [a, b] = self.prefix;
        // Fails if another lab (or anything else) already routes this subnet: the caller retries.
        ip(&["route", "add", &format!("10.{a}.{b}.0/24"), "dev", probe, "src", &probe_addr.to_string()])?;
        Ok(())
    }

    fn teardown(&self) {
        // Any process still inside a host namespace (agents are gone by now) would keep it alive.
        for h in &self.hosts {
            kill_netns_pids(&h.netns);
            let _ = ip_quiet(&["netns", "del", &h.netns]);
        }
        let _ = ip_quiet(&["netns", "del", &self.switch]);
        // Deleting the switch namespace deletes the probe pair with it; this is in case it did not.
        let _ = ip_quiet(&["link", "del", &self.probe_link]);
        // By label: another lab that picked the same subnet may hold the same address.
        let addr = format!("{}/32", self.addr(PROBE_OCTET));
        let _ = ip_quiet(&["addr", "del", &addr, "dev", "lo", "label", &self.probe_label]);
    }
}

/// Write 32 random bytes as hex to a new file of mode 0600 at `path`: the format of a cluster
/// key (`flotilla keygen`) and accepted as an admin token.
pub(crate) fn write_secret(path: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Remove what labs of processes that no longer exist left behind (namespaces and the
/// processes in them, probe links, probe addresses): a test killed with SIGKILL cannot clean up.
/// Labs of live processes are never touched.
pub fn cleanup_stale() -> Result<()> {
    let dead = |tag: &str| -> bool {
        match tag.split('x').next().and_then(|p| p.parse::<u32>().ok()) {
            Some(pid) => !process_alive(pid),
            None => false,
        }
    };
    let list = ip_output(&["netns", "list"])?;
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(rest) = name.strip_prefix(NETNS_PREFIX) {
            let tag = rest.split('-').next().unwrap_or("");
            if dead(tag) {
                kill_netns_pids(name);
                let _ = ip_quiet(&["netns", "del", name]);
            }
        }
    }
    let links = ip_output(&["-o", "link", "show"])?;
    for line in links.lines() {
        // "12: flp123x0@if11: <...>"
        let name = line.split(':').nth(1).map(str::trim).unwrap_or("");
        let name = name.split('@').next().unwrap_or("");
        if let Some(tag) = name.strip_prefix(PROBE_PREFIX) {
            if dead(tag) {
                let _ = ip_quiet(&["link", "del", name]);
            }
        }
    }
    let addrs = ip_output(&["-4", "-o", "addr", "show", "dev", "lo"])?;
    for line in addrs.lines() {
        // "1: lo    inet 10.1.2.254/32 scope global lo:f123x0\  valid_lft ..."
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(addr) = words.iter().position(|w| *w == "inet").and_then(|i| words.get(i + 1)) else {
            continue;
        };
        let label = words.iter().map(|w| w.trim_end_matches('\\')).find(|w| w.starts_with(LABEL_PREFIX));
        if let Some(label) = label {
            if dead(&label[LABEL_PREFIX.len()..]) {
                let _ = ip_quiet(&["addr", "del", addr, "dev", "lo", "label", label]);
            }
        }
    }
    Ok(())
}

/// Whether process `pid` exists and is not a zombie (a killed test whose parent does not reap
/// it stays a zombie).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|s| s != 'Z' && s != 'X'),
        Err(_) => false,
    }
}

/// A `10.a.b` prefix no route of the calling namespace overlaps, derived from the pid and lab
/// counter so that concurrent processes start from different places.
fn free_prefix(pid: u32, n: usize) -> Result<Option<[u8; 2]>> {
    let routes = ip_output(&["-4", "route", "show", "table", "all"])?;
    let taken: Vec<(u32, u32)> = routes
        .lines()
        .filter_map(|l| {
            let first = l.split_whitespace().find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
            let (addr, len) = match first.split_once('/') {
                Some((a, l)) => (a, l.parse::<u32>().ok()?),
                None => (first, 32),
            };
            let addr: Ipv4Addr = addr.parse().ok()?;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len.min(32)) };
            (len > 0).then_some((u32::from(addr) & mask, mask))
        })
        .collect();
    // 120 * 256 candidate /24s in 10.100.0.0 - 10.219.255.0.
    const SPAN: usize = 120 * 256;
    let start = (pid as usize).wrapping_mul(1000).wrapping_add(n * 7919) % SPAN;
    for k in 0..SPAN {
        let c = (start + k * 613) % SPAN;
        let (a, b) = (100 + (c / 256) as u8, (c % 256) as u8);
        let net = u32::from(Ipv4Addr::new(10, a, b, 0));
        let overlaps = taken.iter().any(|&(addr, mask)| {
            let common = mask & 0xffff_ff00;
            (net & common) == (addr & common)
        });
        if !overlaps {
            return Ok(Some([a, b]));
        }
    }
    Ok(None)
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value} to {path}"))
}

fn kill_netns_pids(netns: &str) {
    if let Ok(pids) = ip_output(&["netns", "pids", netns]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Run `ip ARGS`, failing with its stderr.
pub(crate) fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(|_| ())
}

fn ip_quiet(args: &[&str]) -> Result<()> {
    let status = Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    if !status.success() {
        bail!("ip {} failed", args.join(" "));
    }
    Ok(())
}

fn ip_output(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `ip [-n NETNS] -batch -` with `commands`, one per line; stops at the first failure.
fn ip_batch(netns: Option<&str>, commands: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `ip` (iproute2)")?;
    child.stdin.take().expect("piped stdin").write_all(commands.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "ip{} -batch failed: {}\ncommands:\n{commands}",
            netns.map(|n| format!(" -n {n}")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
