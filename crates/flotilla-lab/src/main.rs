//! `flotilla-lab`: measure cluster formation and run chaos scenarios with real `flotilla agent`
//! processes in network namespaces (needs root).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use flotilla_lab::chaos::{self, ChaosConfig};
use flotilla_lab::{wait, Agent, Lab};
use rand::Rng;
use serde_json::{json, Value};

/// Formation benchmarks and chaos runs on real agents in Linux network namespaces (needs root).
#[derive(Debug, Parser)]
#[command(name = "flotilla-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Time from starting the last of N agents (mDNS only, no --bootstrap) to the first
    /// acknowledged write, and check that exactly one cluster formed.
    FormationTime(FormationArgs),
    /// Form a 3-node cluster, start many agents at once, time until all are members.
    JoinStorm(StormArgs),
    /// Fault scenarios under concurrent clients, with a linearizability check of the history.
    Chaos(ChaosArgs),
    /// Remove namespaces, links and addresses left behind by labs of dead processes.
    Cleanup,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// The flotilla binary (default: target/release/flotilla of this workspace).
    #[arg(long)]
    flotilla_bin: Option<PathBuf>,
    /// Namespace to write to and check.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Extra argument for every agent (repeatable), e.g. `--agent-arg=--mdns-query-interval-ms=500`.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    agent_args: Vec<String>,
    /// Give up on a run after this long.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Keep the data directories and logs of failed runs.
    #[arg(long)]
    keep_failed: bool,
    /// Print the results as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct FormationArgs {
    /// Cluster sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "3,5,7")]
    nodes: Vec<usize>,
    /// Runs per cluster size.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Pass `--expect N` to every agent (safe formation).
    #[arg(long)]
    expect: bool,
    /// Largest random gap between two agent starts, in ms.
    #[arg(long, default_value_t = 300)]
    max_gap_ms: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Via {
    /// Every agent finds the others by mDNS.
    Mdns,
    /// The first agent founds (`--force-bootstrap`), the others `--bootstrap` to it, no mDNS.
    Bootstrap,
}

#[derive(Debug, clap::Args)]
struct StormArgs {
    /// Agents started at once after the 3-node cluster formed.
    #[arg(long, default_value_t = 20)]
    joiners: usize,
    /// Number of runs.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// How agents find the cluster.
    #[arg(long, value_enum, default_value = "mdns")]
    via: Via,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
struct ChaosArgs {
    /// Scenarios to run (repeatable, or comma-separated): names, `all`, or `smoke` (default:
    /// `all`, or `smoke` with --smoke). `--list` shows them.
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Seed of every random choice (default: drawn from the clock and printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Length of each scenario's fault phase, in seconds (default 10).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Run the CI smoke set with its defaults (8 clients, 10 s of search per key).
    #[arg(long)]
    smoke: bool,
    /// Client workers (default 5; 8 with --smoke).
    #[arg(long)]
    clients: Option<usize>,
    /// Keys the clients use (default: 8, one more per 2 s of faults beyond 16 s).
    #[arg(long)]
    keys: Option<usize>,
    /// Client-side timeout of one operation, in ms.
    #[arg(long, default_value_t = 1_500)]
    op_timeout_ms: u64,
    /// The agents' request deadline (`--request-timeout-ms`), in ms: below the client's, so
    /// agents answer before clients give up.
    #[arg(long, default_value_t = 1_000)]
    agent_timeout_ms: u64,
    /// Search budget of the linearizability check per key, in seconds (default 30; 10 with
    /// --smoke).
    #[arg(long)]
    check_secs: Option<u64>,
    /// Do not print faults and heals as they happen.
    #[arg(long)]
    quiet: bool,
    /// Read with `?consistency=stale` instead of `linearizable`: checks the harness itself,
    /// which should then report violations under partitions.
    #[arg(long)]
    stale_reads: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    common: Common,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::Chaos(args) = &cli.command {
        if args.list {
            list_scenarios();
            return Ok(());
        }
    }
    if let Some(reason) = Lab::unavailable_reason() {
        bail!("flotilla-lab needs network namespaces: {reason}");
    }
    match cli.command {
        Cmd::FormationTime(args) => formation_time(args),
        Cmd::JoinStorm(args) => join_storm(args),
        Cmd::Chaos(args) => chaos_command(args),
        Cmd::Cleanup => flotilla_lab::cleanup_stale(),
    }
}

fn flotilla_bin(explicit: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.exists(), "{} does not exist", p.display());
        return Ok(p.clone());
    }
    let mut candidates = Vec::new();
    // target/<profile>/flotilla-lab -> target/release/flotilla
    if let Some(profile_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(|p| p.to_path_buf())) {
        if let Some(target) = profile_dir.parent() {
            candidates.push(target.join("release").join("flotilla"));
        }
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/flotilla"));
    candidates
        .into_iter()
        .find(|p| p.exists())
        .context("no target/release/flotilla found: run `cargo build --release -p flotilla-cli` or pass --flotilla-bin")
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct FormationRun {
    formation: Duration,
    converged: Duration,
    voters: usize,
    learners: usize,
}

fn formation_time(args: FormationArgs) -> Result<()> {
    let bin = flotilla_bin(&args.common.flotilla_bin)?;
    let mut results = Vec::new();
    for &n in &args.nodes {
        anyhow::ensure!(n >= 1, "--nodes must be positive");
        let mut samples = Vec::new();
        let mut converged = Vec::new();
        let mut failures = Vec::new();
        for run in 0..args.runs {
            match formation_run(&bin, n, &args) {
                Ok(r) => {
                    eprintln!(
                        "nodes={n} run={run}: first write {:.0} ms, one cluster at {:.0} ms ({} voters, {} learners)",
                        ms(r.formation),
                        ms(r.converged),
                        r.voters,
                        r.learners
                    );
                    samples.push(ms(r.formation));
                    converged.push(ms(r.converged));
                }
                Err(e) => {
                    eprintln!("nodes={n} run={run}: FAILED: {e:#}");
                    failures.push(format!("{e:#}"));
                }
            }
        }
        samples.sort_by(f64::total_cmp);
        converged.sort_by(f64::total_cmp);
        results.push(json!({
            "nodes": n,
            "runs": args.runs,
            "ok": samples.len(),
            "failed": failures.len(),
            "p50_ms": percentile(&samples, 0.50),
            "p99_ms": percentile(&samples, 0.99),
            "max_ms": samples.last().copied().unwrap_or(f64::NAN),
            "converged_p50_ms": percentile(&converged, 0.50),
            "samples_ms": samples,
            "failures": failures,
        }));
    }
    let failed: u64 = results.iter().map(|r| r["failed"].as_u64().unwrap_or(0)).sum();
    if args.common.json {
        let out = json!({ "benchmark": "formation-time", "expect": args.expect, "agent_args": args.common.agent_args, "results": results });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_formation_table(&results, args.expect);
    }
    if failed > 0 {
        bail!("{failed} runs failed (see above)");
    }
    Ok(())
}

fn print_formation_table(results: &[Value], expect: bool) {
    println!(
        "formation time: start of the last agent -> first acknowledged write (mDNS only{})",
        if expect { ", --expect N" } else { "" }
    );
    println!(
        "{:>5} {:>5} {:>4} {:>6} {:>9} {:>9} {:>9} {:>14}",
        "nodes", "runs", "ok", "failed", "p50 ms", "p99 ms", "max ms", "converged p50"
    );
    for r in results {
        let f = |k: &str| r[k].as_f64().map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
        let u = |k: &str| r[k].as_u64().unwrap_or(0);
        println!(
            "{:>5} {:>5} {:>4} {:>6} {:>9} {:>9} {:>9} {:>14}",
            u("nodes"),
            u("runs"),
            u("ok"),
            u("failed"),
            f("p50_ms"),
            f("p99_ms"),
            f("max_ms"),
            f("converged_p50_ms")
        );
    }
}

fn formation_run(bin: &std::path::Path, n: usize, args: &FormationArgs) -> Result<FormationRun> {
    let ns = &args.common.namespace;
    let timeout = Duration::from_secs(args.common.timeout_secs);
    let lab = Lab::new(n)?;
    let mut agent_args = args.common.agent_args.clone();
    if args.expect {
        agent_args.extend(["--expect".to_string(), n.to_string()]);
    }
    let started = lab.spawn_all_shuffled(bin, &agent_args, Duration::from_millis(args.max_gap_ms))?;
    let (mut agents, last_started) = (started.agents, started.last_started);
    let mut rng = rand::thread_rng();

    let outcome = (|| -> Result<FormationRun> {
        // The first acknowledged write, through any agent: retry every ~20 ms.
        let formation = loop {
            let agent = &agents[rng.gen_range(0..n)];
            if agent.put_within(ns, "flotilla-lab/formation", b"formed", Duration::from_secs(1)).is_ok() {
                break last_started.elapsed();
            }
            if last_started.elapsed() > timeout {
                bail!("no write acknowledged within {timeout:?}\n{}", wait::summary(&agents, ns));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let view = wait::wait_one_cluster(&agents, ns, n, timeout.saturating_sub(last_started.elapsed()))
            .context("exactly one cluster of all agents")?;
        Ok(FormationRun {
            formation,
            converged: last_started.elapsed(),
            voters: view.voters(),
            learners: view.learners(),
        })
    })();
    if outcome.is_err() && args.common.keep_failed {
        agents.iter_mut().for_each(Agent::keep_data);
    }
    outcome
}

struct StormRun {
    spawn: Duration,
    first: Duration,
    last: Duration,
    all: Duration,
    voters: usize,
    learners: usize,
}

fn join_storm(args: StormArgs) -> Result<()> {
    let bin = flotilla_bin(&args.common.flotilla_bin)?;
    let mut runs = Vec::new();
    for run in 0..args.runs {
        match storm_run(&bin, &args) {
            Ok(r) => {
                let line = json!({
                    "run": run,
                    "joiners": args.joiners,
                    "spawn_ms": ms(r.spawn),
                    "first_member_ms": ms(r.first),
                    "last_member_ms": ms(r.last),
                    "all_one_cluster_ms": ms(r.all),
                    "voters": r.voters,
                    "learners": r.learners,
                });
                if !args.common.json {
                    println!(
                        "run {run}: {} joiners started in {:.0} ms; first member after {:.0} ms, last after {:.0} ms, \
                         all {} in one cluster after {:.0} ms ({} voters, {} learners)",
                        args.joiners,
                        ms(r.spawn),
                        ms(r.first),
                        ms(r.last),
                        args.joiners + 3,
                        ms(r.all),
                        r.voters,
                        r.learners
                    );
                }
                runs.push(line);
            }
            Err(e) => {
                eprintln!("run {run}: FAILED: {e:#}");
                runs.push(json!({ "run": run, "joiners": args.joiners, "error": format!("{e:#}") }));
            }
        }
    }
    if args.common.json {
        let via = format!("{:?}", args.via).to_lowercase();
        println!("{}", serde_json::to_string_pretty(&json!({ "benchmark": "join-storm", "via": via, "runs": runs }))?);
    }
    if runs.iter().any(|r| r.get("error").is_some()) {
        bail!("some runs failed");
    }
    Ok(())
}

fn storm_run(bin: &std::path::Path, args: &StormArgs) -> Result<StormRun> {
    let ns = &args.common.namespace;
    let timeout = Duration::from_secs(args.common.timeout_secs);
    let total = 3 + args.joiners;
    let lab = Lab::new(total)?;
    let mut base = args.common.agent_args.clone();
    let mut agents: Vec<Agent> = Vec::with_capacity(total);
    let outcome = (|| -> Result<StormRun> {
        let mut joiner_args = base.clone();
        match args.via {
            Via::Mdns => {
                for host in 0..3 {
                    agents.push(lab.spawn(host, bin, &base)?);
                }
            }
            Via::Bootstrap => {
                base.push("--no-mdns".into());
                let mut founder = base.clone();
                founder.push("--force-bootstrap".into());
                agents.push(lab.spawn(0, bin, &founder)?);
                let entry =
                    wait::wait_for("the founder to serve", timeout, wait::POLL_INTERVAL, || agents[0].p2p_addr())?;
                for host in 1..3 {
                    agents.push(lab.spawn(
                        host,
                        bin,
                        &[base.clone(), vec!["--bootstrap".into(), entry.clone()]].concat(),
                    )?);
                }
                joiner_args = [base.clone(), vec!["--bootstrap".into(), entry]].concat();
            }
        }
        wait::wait_one_cluster(&agents, ns, 3, timeout).context("the 3-node seed cluster")?;

        let started = Instant::now();
        for host in 3..total {
            agents.push(lab.spawn(host, bin, &joiner_args)?);
        }
        let spawn = started.elapsed();
        let deadline = started + timeout;
        let mut ids: Vec<Option<String>> = agents.iter().map(|a| a.peer_id().ok()).collect();
        let mut member_since: Vec<Option<Duration>> = vec![None; total];
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} of {} joiners members after {timeout:?}\n{}",
                member_since[3..].iter().filter(|s| s.is_some()).count(),
                args.joiners,
                wait::summary(&agents, ns)
            );
            for (i, id) in ids.iter_mut().enumerate() {
                if id.is_none() {
                    *id = agents[i].peer_id().ok();
                }
            }
            if let Some(members) = leader_members(&agents, &ids, ns) {
                let now = started.elapsed();
                for i in 3..total {
                    if member_since[i].is_none() && ids[i].as_ref().is_some_and(|id| members.contains(id)) {
                        member_since[i] = Some(now);
                    }
                }
            }
            if member_since[3..].iter().all(Option::is_some) {
                if let Ok(view) = wait::observe_cluster(&agents, ns) {
                    if view.members.len() == total {
                        let times: Vec<Duration> = member_since[3..].iter().flatten().copied().collect();
                        return Ok(StormRun {
                            spawn,
                            first: times.iter().min().copied().unwrap_or_default(),
                            last: times.iter().max().copied().unwrap_or_default(),
                            all: started.elapsed(),
                            voters: view.voters(),
                            learners: view.learners(),
                        });
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })();
    if outcome.is_err() && args.common.keep_failed {
        agents.iter_mut().for_each(Agent::keep_data);
    }
    outcome
}

/// The member ids in the configuration of the leader, as the leader reports it.
fn leader_members(agents: &[Agent], ids: &[Option<String>], ns: &str) -> Option<Vec<String>> {
    let leader = agents[..3].iter().find_map(|a| a.status(ns).ok()?["leader"].as_str().map(str::to_string))?;
    let index = ids.iter().position(|id| id.as_deref() == Some(leader.as_str()))?;
    let status: Value = agents[index].status(ns).ok()?;
    let members = status["members"].as_array()?;
    Some(members.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
}

fn list_scenarios() {
    for s in chaos::scenarios() {
        let smoke = if chaos::SMOKE.contains(&s.name()) { " (smoke)" } else { "" };
        println!("{:<22} {} nodes{smoke}: {}", s.name(), s.nodes(), s.summary());
    }
}

/// The scenarios `names` selects, in order, each once.
fn select_scenarios(names: &[String], smoke: bool) -> Result<Vec<&'static chaos::Scenario>> {
    let default = if smoke { "smoke" } else { "all" };
    let names: Vec<&str> = if names.is_empty() { vec![default] } else { names.iter().map(String::as_str).collect() };
    let mut picked: Vec<&'static chaos::Scenario> = Vec::new();
    for name in names {
        let more: Vec<&'static chaos::Scenario> = match name {
            "all" => chaos::scenarios().iter().collect(),
            "smoke" => chaos::smoke_scenarios(),
            other => vec![chaos::scenario(other).with_context(|| {
                let known: Vec<&str> = chaos::scenarios().iter().map(|s| s.name()).collect();
                format!("no scenario {other:?}; known: all, smoke, {}", known.join(", "))
            })?],
        };
        for s in more {
            if !picked.iter().any(|p| p.name() == s.name()) {
                picked.push(s);
            }
        }
    }
    Ok(picked)
}

fn chaos_command(args: ChaosArgs) -> Result<()> {
    let bin = flotilla_bin(&args.common.flotilla_bin)?;
    let scenarios = select_scenarios(&args.scenario, args.smoke)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    let mut config = if args.smoke { ChaosConfig::smoke(bin, seed) } else { ChaosConfig::new(bin, seed) };
    if let Some(secs) = args.duration_secs {
        config.fault_duration = Duration::from_secs(secs);
    }
    config.keys = args.keys.unwrap_or_else(|| 8 + (config.fault_duration.as_secs().saturating_sub(16) / 2) as usize);
    if let Some(secs) = args.check_secs {
        config.check_budget.max_time = Duration::from_secs(secs);
    }
    if let Some(clients) = args.clients {
        config.clients = clients;
    }
    config.op_timeout = Duration::from_millis(args.op_timeout_ms);
    config.agent_request_timeout = Duration::from_millis(args.agent_timeout_ms);
    config.formation_timeout = Duration::from_secs(args.common.timeout_secs);
    config.recovery_timeout = Duration::from_secs(args.common.timeout_secs);
    config.namespace = args.common.namespace.clone();
    config.agent_args = args.common.agent_args.clone();
    config.keep_failed = args.common.keep_failed;
    config.echo = !args.quiet;
    config.stale_reads = args.stale_reads;
    let names: Vec<&str> = scenarios.iter().map(|s| s.name()).collect();
    eprintln!(
        "flotilla-lab chaos: seed {seed}, {} s of faults per scenario, {} clients, {} keys: {}",
        config.fault_duration.as_secs_f64(),
        config.clients,
        config.keys,
        names.join(", ")
    );
    let started = Instant::now();
    let mut results = Vec::new();
    for scenario in scenarios {
        let result = chaos::run_scenario(scenario, &config);
        // Details only for runs that did not pass; the line for all of them.
        if args.common.json {
            eprint!("{result}");
        } else {
            print!("{result}");
        }
        results.push(result);
    }
    let failed: Vec<&str> = results.iter().filter(|r| r.verdict.is_failure()).map(|r| r.scenario).collect();
    if args.common.json {
        let out = json!({
            "command": "chaos",
            "seed": seed,
            "fault_duration_secs": config.fault_duration.as_secs_f64(),
            "clients": config.clients,
            "keys": config.keys,
            "duration_ms": ms(started.elapsed()),
            "passed": failed.is_empty(),
            "scenarios": results.iter().map(chaos::ScenarioResult::to_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("\nsummary (seed {seed}, {:.0} s):", started.elapsed().as_secs_f64());
        let mut cas = chaos::CasCounts::default();
        for r in &results {
            println!("  {}", r.line());
            cas.add(r.cas);
        }
        println!("  compare-and-sets: {cas}");
    }
    if !failed.is_empty() {
        eprintln!("flotilla-lab chaos: {} of {} scenarios failed: {}", failed.len(), results.len(), failed.join(", "));
        // Every lab is gone by now (dropped with its result's run): nothing left to clean up.
        std::process::exit(1);
    }
    Ok(())
}
