//! `flotilla-bench namespaces`: what many namespaces cost. Per count, three (or `--nodes`)
//! agents on loopback serve the same namespaces; the run reports the time until every
//! namespace has a leader and all its voters, idle CPU and RSS per node over a quiet window,
//! how leaders spread over the nodes, the failover after `kill -9` of one node, and put
//! throughput of 256 clients spread over many namespaces next to one namespace.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::procs::{free_port, ChildProc};

mod bad_day;

/// Options of `namespaces`.
#[derive(Debug, Clone, clap::Args)]
pub struct NamespacesArgs {
    /// The flotilla binary (default: `flotilla` next to this executable).
    #[arg(long)]
    pub flotilla_bin: Option<PathBuf>,
    /// Agents per cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Namespace counts to measure, one fresh cluster each.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub count: Vec<usize>,
    /// Longest wait for every namespace to have a leader and all voters, seconds.
    #[arg(long, default_value_t = 240)]
    pub form_timeout_s: u64,
    /// Pause after formation before the quiet window, seconds (lets idle groups settle).
    #[arg(long, default_value_t = 10)]
    pub settle_s: u64,
    /// Length of the quiet window over which idle CPU is measured, seconds.
    #[arg(long, default_value_t = 20)]
    pub quiet_s: u64,
    /// Duration of each throughput run (0: skip throughput), seconds.
    #[arg(long, default_value_t = 10)]
    pub throughput_s: u64,
    /// Clients of the throughput runs.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Namespaces the clients spread over in the second throughput run (at most the count).
    #[arg(long, default_value_t = 100)]
    pub spread: usize,
    /// Skip the `kill -9` failover measurement (and with it the restart and SIGTERM ones).
    #[arg(long)]
    pub no_failover: bool,
    /// After the failover, skip restarting the killed node (catch-up) and the SIGTERM of
    /// another one.
    #[arg(long)]
    pub no_bad_day: bool,
    /// Measure only formation, failover, restart and SIGTERM (no quiet window, first puts or
    /// throughput).
    #[arg(long)]
    pub bad_day_only: bool,
    /// Directory for the clusters' temporary data directories (a real disk).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Extra arguments passed to every agent (e.g. `--extra=--preset=regional`).
    #[arg(long, allow_hyphen_values = true)]
    pub extra: Vec<String>,
    /// Duration of each isolation run (0: skip isolation), seconds: a light writer into one
    /// namespace alone, then while `--clients` write into another namespace.
    #[arg(long, default_value_t = 10)]
    pub isolation_s: u64,
    /// Clients of the light writer of the isolation runs.
    #[arg(long, default_value_t = 4)]
    pub light_clients: usize,
    /// Clients of throughput and isolation runs enter through their namespace's leader
    /// (default: client `c` through node `c % nodes`, so most are forwarded).
    #[arg(long)]
    pub to_leader: bool,
}

/// The figures of one namespace count.
#[derive(Debug, Default, Serialize)]
pub struct CountReport {
    /// Namespaces per node.
    pub count: usize,
    /// Seconds from the first spawn until every namespace had a leader all nodes agree on.
    pub all_leaders_s: Option<f64>,
    /// Seconds until every namespace also counted all nodes as voters.
    pub all_voters_s: Option<f64>,
    /// Namespaces with a leader when formation ended or timed out.
    pub with_leader: usize,
    /// Idle CPU per node over the quiet window, % of one core.
    pub idle_cpu_pct: Vec<f64>,
    /// VmRSS per node at the end of the quiet window, MiB.
    pub rss_mib: Vec<f64>,
    /// Namespaces each node leads.
    pub leaders_per_node: Vec<usize>,
    /// Load average (1, 5, 15 min) at the start and end of the quiet window.
    pub loadavg: (String, String),
    /// Namespaces the killed node led, and per namespace the time until a write to it was
    /// acknowledged again: median and max, ms.
    pub failover: Option<Failover>,
    /// Puts per second of `clients` clients into one namespace, then spread over `spread`.
    pub throughput: Option<(f64, f64)>,
    /// Latency of the first put into each of up to 20 namespaces after the quiet window, one
    /// after another through the first node: median and max, ms (what waking costs when
    /// namespaces are quiesced).
    pub first_put_ms: Option<(f64, f64)>,
    /// The throughput runs in detail (latency, leaders, forwarded clients).
    pub load: Option<crate::ns_load::Throughput>,
    /// A light writer alone and next to a heavy one (issue 12, point 7).
    pub isolation: Option<crate::ns_load::Isolation>,
    /// Restart of the node the failover killed: serving, catch-up on every namespace.
    pub restart: Option<bad_day::Restart>,
    /// SIGTERM of the node leading the most namespaces: exit, hand-offs, writes again.
    pub sigterm: Option<bad_day::Sigterm>,
}

/// Failover after `kill -9` of one node.
#[derive(Debug, Default, Serialize)]
pub struct Failover {
    /// The killed node (0-based).
    pub victim: usize,
    /// Namespaces the killed node led.
    pub affected: usize,
    /// Median over them of the time until a write was acknowledged, ms.
    pub median_ms: f64,
    /// Largest such time, ms.
    pub max_ms: f64,
    /// Namespaces that accepted no write within the patience.
    pub never: usize,
}

/// Run the benchmark for every count and print a Markdown table.
pub async fn run(args: NamespacesArgs) -> anyhow::Result<()> {
    if args.nodes < 2 || args.count.is_empty() || args.count.contains(&0) || args.clients == 0 {
        bail!("need --nodes >= 2, counts >= 1 and --clients >= 1");
    }
    let bin = crate::procs::find_flotilla(args.flotilla_bin.as_deref())?;
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut reports = Vec::new();
    for &count in &args.count {
        let r = one_count(&args, &bin, &parent, count).await?;
        eprintln!("[namespaces] {}", serde_json::to_string(&r).unwrap_or_default());
        reports.push(r);
    }
    println!("{}{}", markdown(&args, &reports), bad_day::markdown(&reports));
    Ok(())
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[namespaces] {}", msg.as_ref());
}

/// Agents serving `count` namespaces, killed and removed on drop.
struct Agents {
    procs: Vec<Option<ChildProc>>,
    http: Vec<String>,
    ids: Vec<String>,
    /// How each agent was spawned (arguments, log), to restart it.
    spawned: Vec<(Vec<OsString>, PathBuf)>,
    bin: PathBuf,
    // Dropped after the processes.
    _dir: tempfile::TempDir,
}

fn ns_name(i: usize) -> String {
    format!("ns{i:04}")
}

impl Agents {
    fn start(args: &NamespacesArgs, bin: &Path, parent: &Path, count: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("bench-ns-").tempdir_in(parent)?;
        let ports: Vec<(u16, u16)> =
            (0..args.nodes).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
        let mut procs = Vec::new();
        let mut spawned = Vec::new();
        for i in 0..args.nodes {
            let mut a = crate::cluster::flotilla_args(i, &ports, dir.path(), None);
            a.push("--namespace".into());
            a.extend((0..count).map(|n| OsString::from(ns_name(n))));
            a.extend(args.extra.iter().map(OsString::from));
            let log = dir.path().join(format!("agent{}.log", i + 1));
            procs.push(Some(ChildProc::spawn(&format!("agent {}", i + 1), bin, &a, &log)?));
            spawned.push((a, log));
        }
        let http = ports.iter().map(|(h, _)| format!("127.0.0.1:{h}")).collect();
        Ok(Self { procs, http, ids: Vec::new(), spawned, bin: bin.to_path_buf(), _dir: dir })
    }

    /// Start agent `i` again, as it was started first (same data directory, ports, log).
    fn respawn(&mut self, i: usize) -> anyhow::Result<()> {
        let (a, log) = &self.spawned[i];
        self.procs[i] = Some(ChildProc::spawn(&format!("agent {}", i + 1), &self.bin, a, log)?);
        Ok(())
    }

    fn client(&self, i: usize) -> flotilla_http::Client {
        flotilla_http::Client::new(&self.http[i], Duration::from_secs(5))
    }

    /// Per running node: its peer id and, per namespace, the leader it knows.
    async fn leaders(&self) -> Vec<Option<(String, BTreeMap<String, String>)>> {
        let mut out = Vec::new();
        for (i, p) in self.procs.iter().enumerate() {
            if p.is_none() {
                out.push(None);
                continue;
            }
            let Ok(s) = self.client(i).get_json("/v1/status").await else {
                out.push(None);
                continue;
            };
            let id = s["peer_id"].as_str().unwrap_or_default().to_string();
            let map = s["namespaces"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| Some((n["namespace"].as_str()?.to_string(), n["leader"].as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Some((id, map)));
        }
        out
    }

    /// Namespaces whose leader every running node agrees on, with that leader.
    async fn agreed(&self) -> BTreeMap<String, String> {
        let views = self.leaders().await;
        let mut agreed = BTreeMap::new();
        let Some(Some((_, first))) = views.iter().find(|v| v.is_some()) else { return agreed };
        for (ns, leader) in first {
            if views.iter().flatten().all(|(_, m)| m.get(ns) == Some(leader)) {
                agreed.insert(ns.clone(), leader.clone());
            }
        }
        agreed
    }

    async fn voters_of(&self, node: usize, ns: &str) -> usize {
        let Ok(s) = self.client(node).get_json(&format!("/v1/ns/{ns}/status")).await else { return 0 };
        s["members"].as_array().map(|m| m.iter().filter(|x| x["role"] == "voter").count()).unwrap_or(0)
    }

    /// CPU seconds each agent used so far (0 for a stopped one).
    fn cpu_seconds(&self) -> Vec<f64> {
        self.procs.iter().map(|p| p.as_ref().and_then(ChildProc::cpu_seconds).unwrap_or(0.0)).collect()
    }

    /// CPU each agent used since `before` was taken at `t0`, % of one core.
    fn cpu_pct_since(&self, before: &[f64], t0: Instant) -> Vec<f64> {
        let secs = t0.elapsed().as_secs_f64().max(1e-3);
        self.cpu_seconds().iter().zip(before).map(|(a, b)| (a - b) / secs * 100.0).collect()
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|x| x == id)
    }
}

async fn one_count(args: &NamespacesArgs, bin: &Path, parent: &Path, count: usize) -> anyhow::Result<CountReport> {
    progress(format!("{count} namespaces: starting {} agents", args.nodes));
    let mut agents = Agents::start(args, bin, parent, count)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.form_timeout_s);
    let mut report = CountReport { count, ..Default::default() };
    // Leaders first: every node agrees on one for every namespace.
    loop {
        let agreed = agents.agreed().await;
        report.with_leader = agreed.len();
        if agreed.len() == count {
            report.all_leaders_s = Some(started.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() > deadline {
            progress(format!(
                "only {} of {count} namespaces have a leader after {:?}",
                agreed.len(),
                started.elapsed()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    agents.ids = agents.leaders().await.into_iter().map(|v| v.map(|(id, _)| id).unwrap_or_default()).collect();
    // Then voters: asked of the node each namespace's leader is.
    if report.all_leaders_s.is_some() {
        let mut pending: Vec<usize> = (0..count).collect();
        while !pending.is_empty() && Instant::now() < deadline {
            let agreed = agents.agreed().await;
            let mut still = Vec::new();
            for n in pending {
                let ns = ns_name(n);
                let node = agreed.get(&ns).and_then(|l| agents.index_of(l)).unwrap_or(0);
                if agents.voters_of(node, &ns).await < args.nodes {
                    still.push(n);
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        if pending.is_empty() {
            report.all_voters_s = Some(started.elapsed().as_secs_f64());
        }
    }
    progress(format!(
        "{count}: leaders after {:?} s, voters after {:?} s; settling {} s",
        report.all_leaders_s, report.all_voters_s, args.settle_s
    ));
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    if args.quiet_s > 0 && !args.bad_day_only {
        quiet_window(args, &agents, &mut report).await?;
        report.first_put_ms = first_puts(&agents, count).await;
    }
    let agreed = agents.agreed().await;
    report.leaders_per_node =
        (0..args.nodes).map(|i| agreed.values().filter(|l| agents.ids.get(i) == Some(*l)).count()).collect();
    if args.throughput_s > 0 && !args.bad_day_only {
        let one = throughput(&agents, args, 1).await;
        let many = throughput(&agents, args, args.spread.min(count)).await;
        report.throughput = Some((one.rate, many.rate));
        report.load = Some(crate::ns_load::Throughput { one, many });
    }
    if args.isolation_s > 0 && count >= 2 && !args.bad_day_only {
        report.isolation = Some(isolation(&agents, args).await);
    }
    if !args.no_failover {
        let load_before = loadavg();
        let f = failover(&mut agents, &agreed).await?;
        let victim = f.victim;
        report.failover = Some(f);
        if !args.no_bad_day {
            bad_day::run(&mut agents, victim, &mut report).await?;
        }
        if args.bad_day_only {
            report.loadavg = (load_before, loadavg());
        }
    }
    Ok(report)
}

async fn quiet_window(args: &NamespacesArgs, agents: &Agents, report: &mut CountReport) -> anyhow::Result<()> {
    let load_start = loadavg();
    let cpu = |a: &Agents| {
        a.procs.iter().map(|p| p.as_ref().and_then(ChildProc::cpu_seconds).unwrap_or(0.0)).collect::<Vec<_>>()
    };
    let before = cpu(agents);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.quiet_s)).await;
    let after = cpu(agents);
    let secs = t0.elapsed().as_secs_f64();
    report.idle_cpu_pct = before.iter().zip(&after).map(|(b, a)| (a - b) / secs * 100.0).collect();
    report.rss_mib =
        agents.procs.iter().map(|p| p.as_ref().and_then(ChildProc::rss_kib).unwrap_or(0) as f64 / 1024.0).collect();
    report.loadavg = (load_start, loadavg());
    progress(format!(
        "{}: idle CPU % {:.1?}, RSS MiB {:.0?}, load {} -> {}",
        report.count, report.idle_cpu_pct, report.rss_mib, report.loadavg.0, report.loadavg.1
    ));
    Ok(())
}

/// One put into each of the first (up to) 20 namespaces, one after another, through node 0.
async fn first_puts(agents: &Agents, count: usize) -> Option<(f64, f64)> {
    let client = agents.client(0);
    let mut times = Vec::new();
    for n in 0..count.min(20) {
        let t0 = Instant::now();
        client.put(&ns_name(n), "first", b"x".to_vec()).await.ok()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let r = (times.get(times.len() / 2).copied()?, times.last().copied()?);
    progress(format!("first put after the quiet window: median {:.1} ms, max {:.1} ms", r.0, r.1));
    Some(r)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Node index of each namespace's leader, as every running node agrees.
async fn leader_map(agents: &Agents) -> crate::ns_load::LeaderMap {
    agents.agreed().await.into_iter().filter_map(|(ns, l)| Some((ns, agents.index_of(&l)?))).collect()
}

fn http_clients(agents: &Agents) -> Vec<flotilla_http::Client> {
    (0..agents.http.len()).map(|i| agents.client(i)).collect()
}

/// `args.clients` clients writing for `args.throughput_s` seconds, client `c` into namespace
/// `c % spread` (see [`crate::ns_load::spread_targets`]), after one warm-up put per namespace.
async fn throughput(agents: &Agents, args: &NamespacesArgs, spread: usize) -> crate::ns_load::LoadRun {
    let leaders = leader_map(agents).await;
    let targets =
        crate::ns_load::spread_targets(args.clients, spread, agents.http.len(), args.to_leader, &leaders, ns_name);
    let nodes = http_clients(agents);
    crate::ns_load::warm_up(&nodes, &targets).await;
    let (cpu0, t0) = (agents.cpu_seconds(), Instant::now());
    let mut run =
        crate::ns_load::drive(&nodes, &targets, &leaders, Duration::from_secs(args.throughput_s), "tp-").await;
    run.cpu_pct = agents.cpu_pct_since(&cpu0, t0);
    progress(format!(
        "throughput, {} clients over {spread} namespaces: {:.0} puts/s, p50 {:.1} ms, p99 {:.1} ms, {} errors {:?}; \
         leaders per node {:?}, {} clients direct to the leader; load {}",
        args.clients,
        run.rate,
        run.p50_ms,
        run.p99_ms,
        run.errors,
        run.error_codes,
        run.leaders_per_node,
        run.to_leader,
        run.load1
    ));
    run
}

/// `args.light_clients` into the first namespace, alone, then while `args.clients` write into
/// another one, led by the same node where possible (the harder case).
async fn isolation(agents: &Agents, args: &NamespacesArgs) -> crate::ns_load::Isolation {
    let leaders = leader_map(agents).await;
    let light_ns = ns_name(0);
    let heavy_ns = leaders
        .iter()
        .find(|(ns, l)| **ns != light_ns && leaders.get(&light_ns) == Some(*l))
        .map(|(ns, _)| ns.clone())
        .unwrap_or_else(|| ns_name(1));
    let nodes = agents.http.len();
    let light =
        crate::ns_load::spread_targets(args.light_clients, 1, nodes, args.to_leader, &leaders, |_| light_ns.clone());
    let heavy = crate::ns_load::spread_targets(args.clients, 1, nodes, args.to_leader, &leaders, |_| heavy_ns.clone());
    let iso = crate::ns_load::isolation(
        &http_clients(agents),
        &light,
        &heavy,
        &leaders,
        Duration::from_secs(args.isolation_s),
    )
    .await;
    progress(format!(
        "isolation: {} clients into {:?} alone p50/p99 {:.1}/{:.1} ms, next to {} clients into {:?} ({:.0} puts/s) \
         {:.1}/{:.1} ms: p99 ratio {:.2?}; load {}",
        args.light_clients,
        iso.light_ns,
        iso.alone.p50_ms,
        iso.alone.p99_ms,
        args.clients,
        iso.heavy_ns,
        iso.heavy.rate,
        iso.loaded.p50_ms,
        iso.loaded.p99_ms,
        iso.p99_ratio,
        iso.loaded.load1
    ));
    iso
}

/// `kill -9` the node leading the most namespaces; per namespace it led, the time until a
/// write through a surviving node is acknowledged.
async fn failover(agents: &mut Agents, agreed: &BTreeMap<String, String>) -> anyhow::Result<Failover> {
    let victim = (0..agents.procs.len())
        .max_by_key(|&i| agreed.values().filter(|l| agents.ids.get(i) == Some(*l)).count())
        .context("no node")?;
    let led: Vec<String> =
        agreed.iter().filter(|(_, l)| agents.ids.get(victim) == Some(*l)).map(|(ns, _)| ns.clone()).collect();
    let survivors: Vec<flotilla_http::Client> = (0..agents.procs.len())
        .filter(|&i| i != victim)
        .map(|i| flotilla_http::Client::new(&agents.http[i], Duration::from_millis(500)))
        .collect();
    let mut proc = agents.procs[victim].take().context("victim not running")?;
    let killed = proc.kill()?;
    let (times, never) = writes_again(led.clone(), survivors, killed, Duration::from_secs(60)).await;
    let f = Failover {
        victim,
        affected: led.len(),
        median_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
        max_ms: times.last().copied().unwrap_or(0.0),
        never,
    };
    progress(format!("failover: {f:?}"));
    Ok(f)
}

/// Per namespace in `namespaces`, the time from `from` until a write through one of `via` (in
/// turn) was acknowledged, in ms and sorted; and how many accepted none within `patience`.
async fn writes_again(
    namespaces: Vec<String>,
    via: Vec<flotilla_http::Client>,
    from: Instant,
    patience: Duration,
) -> (Vec<f64>, usize) {
    let mut tasks = Vec::new();
    for (k, ns) in namespaces.into_iter().enumerate() {
        let via = via.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while from.elapsed() < patience {
                let c = &via[(k + n) % via.len()];
                if c.put(&ns, "failover", b"x".to_vec()).await.is_ok() {
                    return Some(from.elapsed());
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        }));
    }
    let mut times = Vec::new();
    let mut never = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(d) => times.push(d.as_secs_f64() * 1e3),
            None => never += 1,
        }
    }
    times.sort_by(f64::total_cmp);
    (times, never)
}

fn markdown(args: &NamespacesArgs, reports: &[CountReport]) -> String {
    let fmt = |v: &[f64], p: usize| v.iter().map(|x| format!("{x:.p$}")).collect::<Vec<_>>().join(" / ");
    let mut s = format!(
        "{} agents on loopback, {} CPUs; idle window {} s after {} s settling\n\n\
         | namespaces | all leaders (s) | all voters (s) | idle CPU % per node | RSS MiB per node | leaders per node | load (start -> end) | first put after quiet, median / max ms | failover median / max ms (affected) | puts/s 1 ns / {} ns |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        args.nodes,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        args.quiet_s,
        args.settle_s,
        args.spread
    );
    for r in reports {
        let t =
            |x: Option<f64>| x.map_or(format!("not formed ({} with a leader)", r.with_leader), |v| format!("{v:.1}"));
        let leaders = r.leaders_per_node.iter().map(usize::to_string).collect::<Vec<_>>().join(" / ");
        let failover = r.failover.as_ref().map_or("-".into(), |f| {
            format!("{:.0} / {:.0} ({}, {} never)", f.median_ms, f.max_ms, f.affected, f.never)
        });
        let tp = r.throughput.map_or("-".into(), |(a, b)| format!("{a:.0} / {b:.0}"));
        let first = r.first_put_ms.map_or("-".into(), |(a, b)| format!("{a:.1} / {b:.1}"));
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} -> {} | {} | {} | {} |\n",
            r.count,
            t(r.all_leaders_s),
            t(r.all_voters_s),
            fmt(&r.idle_cpu_pct, 1),
            fmt(&r.rss_mib, 0),
            leaders,
            r.loadavg.0,
            r.loadavg.1,
            first,
            failover,
            tp
        );
    }
    s += &load_markdown(reports);
    s
}

/// The throughput and isolation runs in detail, one line each.
fn load_markdown(reports: &[CountReport]) -> String {
    let run = |r: &crate::ns_load::LoadRun| {
        format!(
            "{} clients, {} ns | {:.0} | {:.1} / {:.1} / {:.1} | {} | {} | {:?} | {:.1} |",
            r.clients,
            r.namespaces,
            r.rate,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.errors,
            r.to_leader,
            r.leaders_per_node,
            r.load1
        )
    };
    let mut s = String::from(
        "\n| namespaces | run | writers | puts/s | p50 / p99 / max ms | errors | clients direct to leader | leaders per node | load (1 min) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        if let Some(l) = &r.load {
            s += &format!("| {} | throughput, one namespace | {}\n", r.count, run(&l.one));
            s += &format!("| {} | throughput, spread | {}\n", r.count, run(&l.many));
        }
        if let Some(i) = &r.isolation {
            s += &format!("| {} | isolation: light alone ({}) | {}\n", r.count, i.light_ns.0, run(&i.alone));
            s += &format!("| {} | isolation: light, loaded | {}\n", r.count, run(&i.loaded));
            s += &format!("| {} | isolation: heavy ({}) | {}\n", r.count, i.heavy_ns.0, run(&i.heavy));
            s += &format!("| {} | isolation: p99 loaded / alone | {:.2?} |||||||\n", r.count, i.p99_ratio);
        }
    }
    s
}
