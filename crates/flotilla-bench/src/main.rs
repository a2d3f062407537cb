//! `flotilla-bench vs-etcd`: a 3-member etcd and a 3-node Flotilla cluster, both real processes
//! on loopback, driven with the same workloads in one interleaved run. See README.md.

mod ab;
mod cluster;
mod failover;
mod load;
mod namespaces;
mod ns_load;
mod procs;
mod report;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use cluster::{Binaries, Cluster, FlotillaApi, System};
use load::{reference_cases, scaled, Case, Keys, Op, PRELOAD_KEYS, PUT_KEY_BASE};
use report::{CaseReport, PerSystem, Report};

/// Benchmarks of Flotilla against other systems.
#[derive(Debug, Parser)]
#[command(name = "flotilla-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Flotilla against etcd: same workloads, same machine, interleaved, medians and ratios.
    VsEtcd(VsEtcdArgs),
    /// What many namespaces cost: formation, idle CPU and RSS, leader spread, failover and
    /// throughput per namespace count.
    Namespaces(namespaces::NamespacesArgs),
    /// Two Flotilla builds against each other: many short alternating rounds of the put cases,
    /// the median of the per-pair ratios (resolves a few percent on a drifting machine).
    Ab(ab::AbArgs),
}

/// Options of `vs-etcd`.
#[derive(Debug, clap::Args)]
struct VsEtcdArgs {
    /// The etcd binary (default: `etcd` on PATH).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// The flotilla binary (default: `flotilla` next to this executable).
    #[arg(long)]
    flotilla_bin: Option<PathBuf>,
    /// The API the load uses against Flotilla: `http` (its own) or `etcd` (the agents'
    /// `--etcd-listen` endpoint through the same etcd client and load code as etcd).
    #[arg(long, value_enum, default_value_t = FlotillaApi::Http)]
    flotilla_api: FlotillaApi,
    /// Rounds of each case (each round runs both systems, the first one alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Scale every op count and the preload by this factor (e.g. 0.1 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Cases to run, from a,b,c,d,e (the read cases d and e use the preloaded keys).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e")]
    cases: Vec<String>,
    /// Fresh clusters started per system to time formation.
    #[arg(long, default_value_t = 3)]
    formation_runs: usize,
    /// Leader kills per system (0: skip failover).
    #[arg(long, default_value_t = 5)]
    failover_runs: usize,
    /// Timeout of each benchmark operation, ms (a timed-out operation counts as an error).
    #[arg(long, default_value_t = 10_000)]
    op_timeout_ms: u64,
    /// Directory for the clusters' temporary data directories (default: the system temp dir).
    /// Must be on a real disk: fsync on tmpfs costs nothing.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl VsEtcdArgs {
    /// The selected cases, scaled, in a..e order; an error for bad input.
    fn selected_cases(&self) -> anyhow::Result<Vec<Case>> {
        if !(self.scale.is_finite() && self.scale > 0.0 && self.scale <= 10.0) {
            bail!("--scale must be in (0, 10], got {}", self.scale);
        }
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if self.op_timeout_ms == 0 {
            bail!("--op-timeout-ms must be positive");
        }
        let all = reference_cases();
        let mut wanted = Vec::new();
        for id in &self.cases {
            let id = id.trim().to_ascii_lowercase();
            if !all.iter().any(|c| c.id == id) {
                bail!("unknown case {id:?} (cases are a, b, c, d, e)");
            }
            wanted.push(id);
        }
        if wanted.is_empty() {
            bail!("no case selected");
        }
        Ok(all
            .into_iter()
            .filter(|c| wanted.iter().any(|w| w == c.id))
            .map(|mut c| {
                c.ops = scaled(c.ops, self.scale);
                c
            })
            .collect())
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        // Ctrl-C or SIGTERM drops the run, whose clusters kill their members and remove their
        // directories on drop.
        let run = async move {
            match cli.command {
                Command::VsEtcd(args) => vs_etcd(args).await,
                Command::Namespaces(args) => namespaces::run(args).await,
                Command::Ab(args) => ab::run(args).await,
            }
        };
        tokio::select! {
            r = run => r,
            () = interrupted() => bail!("interrupted; members killed, temporary directories removed"),
        }
    })
}

async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[vs-etcd] {}", msg.as_ref());
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Whether `dir` is on tmpfs (where fsync is free and the comparison meaningless).
fn on_tmpfs(dir: &std::path::Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return false };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, fs) = (f.next()?, f.next()?, f.next()?);
            Some((PathBuf::from(mount), fs.to_string()))
        })
        .filter(|(mount, _)| dir.starts_with(mount))
        .max_by_key(|(mount, _)| mount.as_os_str().len())
        .is_some_and(|(_, fs)| fs == "tmpfs" || fs == "ramfs")
}

async fn vs_etcd(args: VsEtcdArgs) -> anyhow::Result<()> {
    let cases = args.selected_cases()?;
    let bins = Binaries {
        etcd: procs::find_etcd(args.etcd_bin.as_deref())?,
        flotilla: procs::find_flotilla(args.flotilla_bin.as_deref())?,
    };
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    if !parent.is_dir() {
        bail!("--dir {}: not a directory", parent.display());
    }
    if on_tmpfs(&parent) {
        progress(format!("warning: {} is on tmpfs; fsync costs nothing there (use --dir on a disk)", parent.display()));
    }
    let op_timeout = Duration::from_millis(args.op_timeout_ms);
    let preload_keys = scaled(PRELOAD_KEYS, args.scale);
    let run_started = Instant::now();
    let mut report = Report {
        setup: report::Setup {
            etcd_version: procs::version_line(&bins.etcd),
            etcd_bin: bins.etcd.display().to_string(),
            flotilla_bin: bins.flotilla.display().to_string(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            loadavg_start: loadavg(),
            started_unix: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            scale: args.scale,
            rounds: args.rounds,
            preload_keys,
            value_bytes: load::VALUE_SIZE,
            flotilla_api: args.flotilla_api,
            ..Default::default()
        },
        ..Default::default()
    };
    progress(format!(
        "{} | flotilla {} through its {} API",
        report.setup.etcd_version,
        bins.flotilla.display(),
        args.flotilla_api.name()
    ));

    // 1. Formation: fresh clusters, one system at a time, torn down after each sample.
    for run in 0..args.formation_runs {
        for system in System::order(run) {
            let mut c = Cluster::start_with_api(system, args.flotilla_api, &bins, &parent)?;
            let t = load::first_write(&mut c, Duration::from_secs(60)).await?;
            progress(format!("formation {} run {}: {:.0} ms", system.name(), run + 1, stats::ms(t)));
            per(&mut report.formation_ms, system).push(stats::ms(t));
        }
    }

    // 2. The benchmark clusters, both running for the rest of the run.
    let mut etcd = Cluster::start(System::Etcd, &bins, &parent)?;
    let mut flotilla = Cluster::start_with_api(System::Flotilla, args.flotilla_api, &bins, &parent)?;
    for c in [&mut etcd, &mut flotilla] {
        load::first_write(c, Duration::from_secs(60)).await?;
        c.wait_healthy(Duration::from_secs(60)).await?;
    }
    report.rss_idle_kib = PerSystem { etcd: etcd.rss_kib(), flotilla: flotilla.rss_kib() };

    // 3. Preload the keys the read cases read (64 clients over 8 connections).
    for c in [&etcd, &flotilla] {
        let out = load::run(c, Op::Put, 64, 8, preload_keys, Keys::Sequential { base: 0 }, op_timeout).await?;
        progress(format!(
            "preload {} keys into {}: {:.0} ops/s, {} errors",
            preload_keys,
            c.label(),
            out.figures.throughput,
            out.figures.errors
        ));
        if out.figures.errors > 0 {
            bail!("preloading {} failed: {}", c.system.name(), out.first_error.unwrap_or_default());
        }
        *per(&mut report.preload, c.system) = Some(out.figures);
    }
    report.rss_preloaded_kib = PerSystem { etcd: etcd.rss_kib(), flotilla: flotilla.rss_kib() };

    // 4. The cases: for each case, `rounds` rounds, each round both systems (alternating which
    //    goes first). Puts always write new keys.
    let mut put_next = PerSystem { etcd: PUT_KEY_BASE, flotilla: PUT_KEY_BASE };
    for case in &cases {
        let mut rounds: PerSystem<Vec<stats::RunFigures>> = PerSystem::default();
        let mut first_error: PerSystem<Option<String>> = PerSystem::default();
        for round in 0..args.rounds {
            for system in System::order(round) {
                let c = match system {
                    System::Etcd => &mut etcd,
                    System::Flotilla => &mut flotilla,
                };
                c.check_running()?;
                let keys = match case.op {
                    Op::Put => Keys::Sequential { base: *per(&mut put_next, system) },
                    Op::Get(_) => Keys::Cycle { count: preload_keys },
                };
                let cpu_before = c.cpu_seconds();
                let mut out = load::run(c, case.op, case.clients, case.conns, case.ops, keys, op_timeout).await?;
                let cpu = c.cpu_seconds() - cpu_before;
                if out.figures.ops_ok > 0 {
                    out.figures.server_cpu_ms_per_op = Some(cpu * 1e3 / out.figures.ops_ok as f64);
                }
                if case.op == Op::Put {
                    *per(&mut put_next, system) += case.ops;
                }
                let f = &out.figures;
                progress(format!(
                    "({}) {} round {} {:>8}: {:>7.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.1} ms  errors {}  server CPU {:.3} ms/op",
                    case.id,
                    case.title,
                    round + 1,
                    c.label(),
                    f.throughput,
                    f.p50_ms,
                    f.p99_ms,
                    f.max_ms,
                    f.errors,
                    f.server_cpu_ms_per_op.unwrap_or(0.0)
                ));
                if let Some(e) = &out.first_error {
                    progress(format!("  first error: {e}"));
                    per(&mut first_error, system).get_or_insert_with(|| e.clone());
                }
                per(&mut rounds, system).push(out.figures);
            }
        }
        report.cases.push(CaseReport::new(case.clone(), rounds, first_error));
    }
    report.rss_end_kib = PerSystem { etcd: etcd.rss_kib(), flotilla: flotilla.rss_kib() };

    // 5. Failover, alternating systems run by run.
    for run in 0..args.failover_runs {
        for system in System::order(run) {
            let c = match system {
                System::Etcd => &mut etcd,
                System::Flotilla => &mut flotilla,
            };
            let s = failover::run_once(c, 0xe000_0000 + (run as u64) * 0x10_0000).await?;
            progress(format!(
                "failover {} run {}: {:.0} ms (killed member {}, {} failed writes), restarted member serving after {:.0} ms",
                system.name(),
                run + 1,
                s.failover_ms,
                s.killed + 1,
                s.failed_writes,
                s.restart_to_serving_ms
            ));
            per(&mut report.failover, system).push(s);
        }
    }

    report.setup.loadavg_end = loadavg();
    report.setup.duration_s = run_started.elapsed().as_secs_f64();
    drop(etcd);
    drop(flotilla);
    println!("{}", report.to_markdown());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        progress(format!("JSON report written to {}", path.display()));
    }
    Ok(())
}

/// The field of `p` for `system`.
fn per<T>(p: &mut PerSystem<T>, system: System) -> &mut T {
    match system {
        System::Etcd => &mut p.etcd,
        System::Flotilla => &mut p.flotilla,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<VsEtcdArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("flotilla-bench").chain(args.iter().copied()))?;
        match cli.command {
            Command::VsEtcd(a) => Ok(a),
            Command::Namespaces(_) | Command::Ab(_) => Err(clap::Error::new(clap::error::ErrorKind::InvalidSubcommand)),
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_reference_shapes() {
        let a = parse(&["vs-etcd"]).expect("parses");
        assert_eq!((a.rounds, a.failover_runs, a.formation_runs), (3, 5, 3));
        assert_eq!(a.flotilla_api, FlotillaApi::Http);
        let cases = a.selected_cases().expect("valid");
        assert_eq!(
            cases.iter().map(|c| (c.id, c.clients, c.conns, c.ops)).collect::<Vec<_>>(),
            [
                ("a", 1, 1, 10_000),
                ("b", 64, 8, 100_000),
                ("c", 256, 32, 200_000),
                ("d", 64, 8, 100_000),
                ("e", 64, 8, 100_000)
            ]
        );
    }

    #[test]
    fn scale_and_case_selection() {
        let a = parse(&["vs-etcd", "--scale", "0.1", "--cases", "c,A", "--json", "/tmp/x.json"]).expect("parses");
        let cases = a.selected_cases().expect("valid");
        assert_eq!(cases.iter().map(|c| (c.id, c.ops)).collect::<Vec<_>>(), [("a", 1_000), ("c", 20_000)]);
        assert_eq!(a.json.as_deref(), Some(std::path::Path::new("/tmp/x.json")));
    }

    #[test]
    fn flotilla_api_selection() {
        assert_eq!(parse(&["vs-etcd", "--flotilla-api", "etcd"]).expect("parses").flotilla_api, FlotillaApi::Etcd);
        assert_eq!(parse(&["vs-etcd", "--flotilla-api", "http"]).expect("parses").flotilla_api, FlotillaApi::Http);
        assert!(parse(&["vs-etcd", "--flotilla-api", "grpc"]).is_err());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            &["vs-etcd", "--scale", "0"][..],
            &["vs-etcd", "--scale=-1"],
            &["vs-etcd", "--scale", "NaN"],
            &["vs-etcd", "--scale", "inf"],
            &["vs-etcd", "--rounds", "0"],
            &["vs-etcd", "--cases", "a,z"],
            &["vs-etcd", "--op-timeout-ms", "0"],
        ] {
            let parsed = parse(bad).expect("clap accepts the syntax");
            assert!(parsed.selected_cases().is_err(), "{bad:?}");
        }
        assert!(parse(&["vs-etcd", "--scale", "fast"]).is_err());
        assert!(parse(&["vs-etcd", "--rounds", "-2"]).is_err());
        assert!(parse(&["nonsense"]).is_err());
    }

    #[test]
    fn tmpfs_detection_does_not_fail_on_odd_paths() {
        // Whatever the machine, these must not panic.
        let _ = on_tmpfs(std::path::Path::new("/"));
        let _ = on_tmpfs(std::path::Path::new("/no/such/dir"));
    }
}
