//! A 3-member cluster of either system on loopback: real processes, started together, each in
//! its own data directory under one temporary directory that is removed on drop.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use crate::procs::{free_port, ChildProc};

/// Members per cluster.
pub const MEMBERS: usize = 3;
/// Flotilla namespace the benchmark uses.
pub const NS: &str = "default";

/// Which system a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// etcd 3.x, gRPC API through the `etcd-client` crate.
    Etcd,
    /// Flotilla agents, HTTP API through `flotilla_http::Client`.
    Flotilla,
}

impl System {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            System::Etcd => "etcd",
            System::Flotilla => "flotilla",
        }
    }

    /// The two systems in the order of round `round`: etcd first in even rounds, Flotilla first
    /// in odd ones, so neither always runs on a machine the other has just warmed up or loaded.
    pub fn order(round: usize) -> [System; 2] {
        if round.is_multiple_of(2) {
            [System::Etcd, System::Flotilla]
        } else {
            [System::Flotilla, System::Etcd]
        }
    }
}

/// The API the benchmark's load uses against Flotilla.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FlotillaApi {
    /// Flotilla's own HTTP API through `flotilla_http::Client`.
    #[default]
    Http,
    /// The agents' etcd endpoint (`--etcd-listen`) through the `etcd-client` crate: the same
    /// client, protocol and load code as against etcd.
    Etcd,
}

impl FlotillaApi {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FlotillaApi::Http => "http",
            FlotillaApi::Etcd => "etcd",
        }
    }
}

/// The wire protocol a load handle speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// etcd's v3 gRPC API (etcd itself, or Flotilla's etcd endpoint).
    EtcdGrpc,
    /// Flotilla's HTTP API.
    FlotillaHttp,
}

/// The binaries to run.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `etcd`.
    pub etcd: PathBuf,
    /// `flotilla`.
    pub flotilla: PathBuf,
}

/// One member: its ports and, while it runs, its process.
#[derive(Debug)]
pub struct Member {
    /// Client port (etcd gRPC, Flotilla HTTP).
    pub client_port: u16,
    /// Peer port (etcd peer, Flotilla libp2p).
    pub peer_port: u16,
    /// Flotilla's etcd endpoint port (used only when the load speaks etcd's API to Flotilla).
    pub etcd_port: u16,
    /// The running process, `None` while killed.
    pub proc: Option<ChildProc>,
}

impl Member {
    /// The client address: `http://127.0.0.1:PORT` for etcd, `127.0.0.1:PORT` for Flotilla.
    pub fn client_addr(&self, system: System) -> String {
        match system {
            System::Etcd => format!("http://127.0.0.1:{}", self.client_port),
            System::Flotilla => format!("127.0.0.1:{}", self.client_port),
        }
    }

    /// The running process's VmRSS in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.proc.as_ref().and_then(ChildProc::rss_kib)
    }
}

/// A running 3-member cluster. Dropping it kills every member, then removes its directory.
#[derive(Debug)]
pub struct Cluster {
    /// The system it runs.
    pub system: System,
    /// Members in start order.
    pub members: Vec<Member>,
    /// When the first member was started.
    pub started: Instant,
    /// The API the load uses (Flotilla only; etcd always speaks its own).
    pub flotilla_api: FlotillaApi,
    program: PathBuf,
    // Declared last: dropped after the members (so after their processes are killed).
    dir: tempfile::TempDir,
}

/// The command line of etcd member `i` (0-based) of a cluster whose ports are `ports`
/// (client, peer); the flags of the reference setup, defaults otherwise (fsync on,
/// heartbeat 100 ms, election timeout 1000 ms).
pub fn etcd_args(i: usize, ports: &[(u16, u16)], data_root: &Path) -> Vec<OsString> {
    let name = |i: usize| format!("m{}", i + 1);
    let (client, peer) = ports[i];
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(j, (_, p))| format!("{}=http://127.0.0.1:{p}", name(j))).collect();
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |a: &str, b: String| {
        args.push(a.into());
        args.push(b.into());
    };
    push("--name", name(i));
    push("--data-dir", data_root.join(name(i)).display().to_string());
    push("--listen-client-urls", format!("http://127.0.0.1:{client}"));
    push("--advertise-client-urls", format!("http://127.0.0.1:{client}"));
    push("--listen-peer-urls", format!("http://127.0.0.1:{peer}"));
    push("--initial-advertise-peer-urls", format!("http://127.0.0.1:{peer}"));
    push("--initial-cluster", initial.join(","));
    push("--initial-cluster-token", "bench".into());
    push("--initial-cluster-state", "new".into());
    args
}

/// The command line of Flotilla agent `i` (0-based): loopback only (`--no-mdns`), every other
/// member given as a `--bootstrap` contact (the counterpart of etcd's static member list) and
/// `--expect 3` (found only once all three agree), defaults otherwise (fsync on, local preset).
/// `etcd_port` turns on the agent's etcd endpoint on that loopback port.
pub fn flotilla_args(i: usize, ports: &[(u16, u16)], data_root: &Path, etcd_port: Option<u16>) -> Vec<OsString> {
    let (http, p2p) = ports[i];
    let mut args: Vec<OsString> = vec!["agent".into(), "--no-mdns".into()];
    args.push("--data-dir".into());
    args.push(data_root.join(format!("n{}", i + 1)).into_os_string());
    args.push("--listen".into());
    args.push(format!("/ip4/127.0.0.1/tcp/{p2p}").into());
    args.push("--http".into());
    args.push(format!("127.0.0.1:{http}").into());
    args.push("--expect".into());
    args.push(ports.len().to_string().into());
    args.push("--bootstrap".into());
    for (j, (_, p)) in ports.iter().enumerate() {
        if j != i {
            args.push(format!("/ip4/127.0.0.1/tcp/{p}").into());
        }
    }
    if let Some(port) = etcd_port {
        args.push("--etcd-listen".into());
        args.push(format!("127.0.0.1:{port}").into());
    }
    args
}

impl Cluster {
    /// Start all members at once, in a new temporary directory under `parent`. Returns as soon
    /// as the processes are spawned; readiness is the caller's to wait for. Flotilla is loaded
    /// through its HTTP API.
    pub fn start(system: System, bins: &Binaries, parent: &Path) -> anyhow::Result<Self> {
        Self::start_with_api(system, FlotillaApi::Http, bins, parent)
    }

    /// [`Cluster::start`], with the API the load uses against Flotilla (`flotilla_api` is
    /// ignored for etcd).
    pub fn start_with_api(
        system: System,
        flotilla_api: FlotillaApi,
        bins: &Binaries,
        parent: &Path,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vs-etcd-{}-", system.name()))
            .tempdir_in(parent)
            .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
        let mut members = Vec::with_capacity(MEMBERS);
        for _ in 0..MEMBERS {
            members.push(Member {
                client_port: free_port()?,
                peer_port: free_port()?,
                etcd_port: free_port()?,
                proc: None,
            });
        }
        let program = match system {
            System::Etcd => bins.etcd.clone(),
            System::Flotilla => bins.flotilla.clone(),
        };
        let mut cluster = Cluster { system, members, started: Instant::now(), flotilla_api, program, dir };
        cluster.started = Instant::now();
        for i in 0..MEMBERS {
            cluster.spawn_member(i)?;
        }
        Ok(cluster)
    }

    fn ports(&self) -> Vec<(u16, u16)> {
        self.members.iter().map(|m| (m.client_port, m.peer_port)).collect()
    }

    fn spawn_member(&mut self, i: usize) -> anyhow::Result<()> {
        let ports = self.ports();
        let root = self.dir.path();
        let args = match self.system {
            System::Etcd => etcd_args(i, &ports, root),
            System::Flotilla => {
                let etcd_port = (self.flotilla_api == FlotillaApi::Etcd).then_some(self.members[i].etcd_port);
                flotilla_args(i, &ports, root, etcd_port)
            }
        };
        let what = format!("{} member {}", self.system.name(), i + 1);
        let log = root.join(format!("member{}.log", i + 1));
        self.members[i].proc = Some(ChildProc::spawn(&what, &self.program, &args, &log)?);
        Ok(())
    }

    /// `kill -9` member `i` and reap it; returns the instant the signal had been sent.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<Instant> {
        match self.members[i].proc.take() {
            Some(mut p) => p.kill(),
            None => Ok(Instant::now()),
        }
    }

    /// Start member `i` again on its data directory and ports.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i)?;
        self.spawn_member(i)
    }

    /// An error (with the member's log) if any member that should run has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            if let Some(p) = m.proc.as_mut() {
                p.check_running()?;
            }
        }
        Ok(())
    }

    /// Client addresses of all members.
    pub fn addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_addr(self.system)).collect()
    }

    /// The protocol the load speaks to this cluster.
    pub fn protocol(&self) -> Protocol {
        load_protocol(self.system, self.flotilla_api)
    }

    /// The addresses the load sends to, one per member in member order: the client addresses,
    /// or Flotilla's etcd endpoints when the load speaks etcd's API to Flotilla.
    pub fn load_addrs(&self) -> Vec<String> {
        match self.protocol() {
            Protocol::FlotillaHttp => self.addrs(),
            Protocol::EtcdGrpc if self.system == System::Etcd => self.addrs(),
            Protocol::EtcdGrpc => self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.etcd_port)).collect(),
        }
    }

    /// The name of this cluster's system and, for Flotilla through etcd's API, of that API.
    pub fn label(&self) -> String {
        match (self.system, self.flotilla_api) {
            (System::Flotilla, FlotillaApi::Etcd) => "flotilla (etcd API)".into(),
            (system, _) => system.name().into(),
        }
    }

    /// VmRSS of each member in KiB (`None` for a member not running).
    pub fn rss_kib(&self) -> Vec<Option<u64>> {
        self.members.iter().map(Member::rss_kib).collect()
    }

    /// CPU seconds used so far by the running members together.
    pub fn cpu_seconds(&self) -> f64 {
        self.members.iter().filter_map(|m| m.proc.as_ref().and_then(ChildProc::cpu_seconds)).sum()
    }

    /// The data directory root (for logs in error messages).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The index of the member that leads, as every running member reports it; an error if
    /// they do not agree yet or a member does not answer.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let mut seen = None;
        for (i, m) in self.members.iter().enumerate() {
            if m.proc.is_none() {
                continue;
            }
            let leader = match self.system {
                System::Etcd => etcd_leader(&self.members, i).await?,
                System::Flotilla => flotilla_leader(&self.members, i).await?,
            };
            match seen {
                None => seen = Some(leader),
                Some(l) if l == leader => {}
                Some(l) => bail!("members disagree on the leader ({l} vs {leader})"),
            }
        }
        seen.ok_or_else(|| anyhow!("no member running"))
    }

    /// Wait until every running member reports the same leader and (Flotilla) every agent is
    /// ready and counts three voters; polls every 50 ms until `timeout`.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let last = match self.healthy_once().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(last.context(format!(
                    "{} cluster not healthy within {timeout:?} (logs in {})",
                    self.system.name(),
                    self.dir().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn healthy_once(&self) -> anyhow::Result<()> {
        self.leader().await?;
        if self.system == System::Flotilla {
            for m in self.members.iter().filter(|m| m.proc.is_some()) {
                let client = flotilla_http::Client::new(&m.client_addr(System::Flotilla), Duration::from_secs(2));
                client.get_json("/ready").await.map_err(|e| anyhow!("{}: not ready: {e}", m.client_port))?;
                let s = client.get_json(&format!("/v1/ns/{NS}/status")).await?;
                let voters =
                    s["members"].as_array().map(|ms| ms.iter().filter(|x| x["role"] == "voter").count()).unwrap_or(0);
                if voters != MEMBERS {
                    bail!("{voters} voters, want {MEMBERS}");
                }
            }
        }
        Ok(())
    }
}

async fn etcd_client(addr: &str, timeout: Duration) -> anyhow::Result<etcd_client::Client> {
    let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2)).with_timeout(timeout);
    Ok(etcd_client::Client::connect([addr], Some(options)).await?)
}

/// The index of the member etcd member `i` names as leader: the running member whose own
/// member id (in its status header) is that leader id.
async fn etcd_leader(members: &[Member], i: usize) -> anyhow::Result<usize> {
    let status_of = |m: &Member| {
        let addr = m.client_addr(System::Etcd);
        async move {
            let mut client = etcd_client(&addr, Duration::from_secs(2)).await?;
            let status = client.status().await.with_context(|| format!("etcd status of {addr}"))?;
            let own = status.header().map(|h| h.member_id()).unwrap_or(0);
            anyhow::Ok((own, status.leader()))
        }
    };
    let (_, leader_id) = status_of(&members[i]).await?;
    if leader_id == 0 {
        bail!("{}: no leader", members[i].client_addr(System::Etcd));
    }
    for (j, m) in members.iter().enumerate() {
        if m.proc.is_some() && status_of(m).await?.0 == leader_id {
            return Ok(j);
        }
    }
    bail!("leader {leader_id:x} is not a running member")
}

/// The index of the member agent `i` names as leader.
async fn flotilla_leader(members: &[Member], i: usize) -> anyhow::Result<usize> {
    let status_of = |m: &Member| {
        let client = flotilla_http::Client::new(&m.client_addr(System::Flotilla), Duration::from_secs(2));
        async move { client.get_json(&format!("/v1/ns/{NS}/status")).await }
    };
    let s = status_of(&members[i]).await?;
    let leader = s["leader"].as_str().filter(|l| !l.is_empty()).ok_or_else(|| anyhow!("no leader"))?.to_string();
    for (j, m) in members.iter().enumerate() {
        if m.proc.is_none() {
            continue;
        }
        let own = if j == i { s.clone() } else { status_of(m).await? };
        if own["node_id"].as_str() == Some(leader.as_str()) {
            return Ok(j);
        }
    }
    bail!("leader {leader} is not a running member")
}

/// The protocol the load speaks to `system` when Flotilla is loaded through `flotilla_api`:
/// etcd always through its own API.
pub fn load_protocol(system: System, flotilla_api: FlotillaApi) -> Protocol {
    match (system, flotilla_api) {
        (System::Etcd, _) | (System::Flotilla, FlotillaApi::Etcd) => Protocol::EtcdGrpc,
        (System::Flotilla, FlotillaApi::Http) => Protocol::FlotillaHttp,
    }
}

/// Connect an etcd client to `addr` (lazily: the connection is made by the first request).
pub async fn connect_etcd(addr: &str, timeout: Duration) -> anyhow::Result<etcd_client::Client> {
    etcd_client(addr, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn etcd_command_line_is_the_reference_one() {
        let ports = [(12379, 12380), (22379, 22380), (32379, 32380)];
        let args = strings(&etcd_args(1, &ports, Path::new("/d")));
        let expected = "--name m2 --data-dir /d/m2 --listen-client-urls http://127.0.0.1:22379 \
            --advertise-client-urls http://127.0.0.1:22379 --listen-peer-urls http://127.0.0.1:22380 \
            --initial-advertise-peer-urls http://127.0.0.1:22380 \
            --initial-cluster m1=http://127.0.0.1:12380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380 \
            --initial-cluster-token bench --initial-cluster-state new";
        assert_eq!(args.join(" "), expected.split_whitespace().collect::<Vec<_>>().join(" "));
    }

    #[test]
    fn flotilla_agents_know_every_other_member() {
        let ports = [(7070, 7000), (7071, 7001), (7072, 7002)];
        let args = strings(&flotilla_args(0, &ports, Path::new("/d"), None));
        assert_eq!(
            args.join(" "),
            "agent --no-mdns --data-dir /d/n1 --listen /ip4/127.0.0.1/tcp/7000 --http 127.0.0.1:7070 \
             --expect 3 --bootstrap /ip4/127.0.0.1/tcp/7001 /ip4/127.0.0.1/tcp/7002"
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
    }

    #[test]
    fn flotilla_through_etcd_api_opens_the_etcd_endpoint() {
        let ports = [(7070, 7000), (7071, 7001), (7072, 7002)];
        let args = strings(&flotilla_args(2, &ports, Path::new("/d"), Some(2379)));
        assert_eq!(args[args.len() - 2..], ["--etcd-listen", "127.0.0.1:2379"]);
    }

    #[test]
    fn the_load_protocol_follows_the_system_and_the_flotilla_api() {
        use FlotillaApi::*;
        for (system, api, want) in [
            (System::Etcd, Http, Protocol::EtcdGrpc),
            (System::Etcd, Etcd, Protocol::EtcdGrpc),
            (System::Flotilla, Http, Protocol::FlotillaHttp),
            (System::Flotilla, Etcd, Protocol::EtcdGrpc),
        ] {
            assert_eq!(load_protocol(system, api), want, "{system:?} {api:?}");
        }
    }

    #[test]
    fn rounds_alternate_which_system_goes_first() {
        assert_eq!(System::order(0), [System::Etcd, System::Flotilla]);
        assert_eq!(System::order(1), [System::Flotilla, System::Etcd]);
    }
}
