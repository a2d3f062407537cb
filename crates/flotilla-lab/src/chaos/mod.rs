//! Chaos runs: real agents in a [`Lab`], concurrent clients, seeded faults, and a
//! linearizability check of everything the clients saw.
//!
//! [`run_scenario`] runs one [`Scenario`]:
//!
//! 1. a fresh lab of 3 or 5 hosts, one `flotilla agent --expect N` per host; wait for one
//!    cluster of N voters;
//! 2. [`ChaosConfig::clients`] client workers (threads) start: each operation goes to a random
//!    agent, a fifth are compare-and-sets (a linearizable get learns the value and its `ETag`,
//!    then a put of a unique value with `If-Match`, or `If-None-Match: *`), of the rest half
//!    puts of unique values, half linearizable gets, over [`ChaosConfig::keys`] keys, each with a
//!    short client-side timeout, all recorded in one [`flotilla_check::Recorder`] (the driver's
//!    monotonic clock; see `client.rs` for how outcomes are classified: a write is only
//!    *failed* when it certainly never reached Raft, a compare-and-set only when the agent
//!    answered 412);
//! 3. after a warm-up, the scenario's nemesis injects faults for the fault phase
//!    ([`ChaosConfig::fault_duration`]), then everything is healed (nft rules removed, ports up,
//!    killed agents restarted) and the clients run on through a short settle phase;
//! 4. the clients stop; the driver waits (bounded) for one cluster of N voters, then reads every
//!    key linearizably, retrying until one read of each succeeds, and records those reads: an
//!    acknowledged write that was lost makes them impossible;
//! 5. [`flotilla_check::check_all`] checks the history key by key within
//!    [`ChaosConfig::check_budget`], under a watchdog.
//!
//! Every random choice (fault targets, fault lengths, the clients' nodes, keys and operations)
//! comes from the scenario seed, derived from [`ChaosConfig::seed`] and the scenario name, so
//! `--scenario NAME --seed N` replays the same choices (thread timing still varies).
//!
//! Teardown is by ownership: the lab, its agents (killed with SIGKILL, also when the driving
//! thread dies) and the nft table (in the lab's switch namespace) go away when dropped, also
//! while unwinding from a panic.

mod client;
mod firewall;
mod nemesis;
mod result;
mod scenario;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flotilla_check::{check_all, Budget, History, Recorder, Report};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{wait, Agent, Lab};
use client::{StopOnDrop, Workload};
use nemesis::{Nemesis, Timeline};

pub use firewall::{nft_unavailable, TABLE as NFT_TABLE};
pub use result::{CasCounts, ChaosVerdict, ScenarioResult};
pub use scenario::{scenario, scenarios, smoke_scenarios, Scenario, SMOKE};

/// Everything a chaos run can be tuned by. [`ChaosConfig::new`] gives the defaults of
/// `flotilla-lab chaos`; [`ChaosConfig::smoke`] those of the CI smoke test.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// The `flotilla` binary the agents run.
    pub flotilla_bin: PathBuf,
    /// The run's seed; each scenario derives its own from it and its name.
    pub seed: u64,
    /// Length of the fault phase.
    pub fault_duration: Duration,
    /// Clients operating before the first fault.
    pub warmup: Duration,
    /// Clients keep operating this long after the heal, across the recovery.
    pub settle: Duration,
    /// Number of client workers.
    pub clients: usize,
    /// Number of keys (`k0`, `k1`, ...).
    pub keys: usize,
    /// Client-side timeout of one operation.
    pub op_timeout: Duration,
    /// Longest think time between two operations of one worker (drawn uniformly up to it).
    pub think_max: Duration,
    /// Longest wait for the first cluster to form.
    pub formation_timeout: Duration,
    /// Longest wait, after the heal, for one cluster of all voters, and then again for one
    /// successful linearizable read of every key.
    pub recovery_timeout: Duration,
    /// Search budget of the check, per key.
    pub check_budget: Budget,
    /// Namespace the clients use.
    pub namespace: String,
    /// The agents' own request deadline (`--request-timeout-ms`), unless
    /// [`ChaosConfig::agent_args`] sets one. Below [`ChaosConfig::op_timeout`], so that agents
    /// answer (503, 504) before clients give up, and those answers get exercised too.
    pub agent_request_timeout: Duration,
    /// Extra arguments for every agent (`--expect N` is always added).
    pub agent_args: Vec<String>,
    /// Keep the data directories and logs of failed runs (always kept on a violation).
    pub keep_failed: bool,
    /// Lines of each agent's log in the report of a failed run.
    pub log_tail_lines: usize,
    /// Print the timeline (faults, heals) to stderr as it happens.
    pub echo: bool,
    /// Clients read with `?consistency=stale` (final reads too). Only for checking the
    /// harness: under a partition, stale reads are expected to be caught as violations.
    pub stale_reads: bool,
}

impl ChaosConfig {
    /// Defaults for `flotilla-lab chaos`: 10 s of faults, 5 clients over 8 keys, 1.5 s per
    /// operation, 30 s of search per key.
    pub fn new(flotilla_bin: impl Into<PathBuf>, seed: u64) -> ChaosConfig {
        ChaosConfig {
            flotilla_bin: flotilla_bin.into(),
            seed,
            fault_duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            settle: Duration::from_secs(2),
            clients: 5,
            keys: 8,
            op_timeout: Duration::from_millis(1_500),
            think_max: Duration::from_millis(40),
            formation_timeout: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(60),
            check_budget: Budget { max_steps: 50_000_000, max_time: Duration::from_secs(30) },
            namespace: "default".into(),
            agent_request_timeout: Duration::from_millis(1_000),
            agent_args: Vec::new(),
            keep_failed: false,
            log_tail_lines: 40,
            echo: true,
            stale_reads: false,
        }
    }

    /// Defaults of the CI smoke test: as [`ChaosConfig::new`] with 8 clients (the test runs
    /// debug builds of the agents, which answer several times slower) and 10 s of search per
    /// key.
    pub fn smoke(flotilla_bin: impl Into<PathBuf>, seed: u64) -> ChaosConfig {
        ChaosConfig {
            clients: 8,
            check_budget: Budget { max_steps: 20_000_000, max_time: Duration::from_secs(10) },
            ..ChaosConfig::new(flotilla_bin, seed)
        }
    }
}

/// The seed of `scenario` in a run seeded `seed` (FNV-1a of the name mixed into the seed).
pub fn scenario_seed(seed: u64, scenario: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scenario.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    seed ^ h
}

/// Run `scenario` (see the module docs). Never panics on a failed run: what went wrong is in
/// the result's [`ScenarioResult::errors`] and its verdict.
pub fn run_scenario(scenario: &Scenario, config: &ChaosConfig) -> ScenarioResult {
    let started = Instant::now();
    let seed = scenario_seed(config.seed, scenario.name());
    let mut result = ScenarioResult::new(scenario, seed);
    if scenario.needs_nft() {
        if let Some(reason) = nft_unavailable() {
            result.errors.push(format!("this scenario needs nftables: {reason}"));
            result.finish(started.elapsed());
            return result;
        }
    }
    if let Err(e) = execute(scenario, config, seed, &mut result) {
        result.errors.push(format!("{e:#}"));
    }
    result.finish(started.elapsed());
    result
}

/// Set up the lab, drive the run, and collect logs if it failed.
fn execute(scenario: &Scenario, config: &ChaosConfig, seed: u64, out: &mut ScenarioResult) -> Result<()> {
    let n = scenario.nodes();
    let lab = Lab::new(n).context("building the lab")?;
    let mut args = config.agent_args.clone();
    args.extend(["--expect".to_string(), n.to_string()]);
    if !args.iter().any(|a| a.starts_with("--request-timeout-ms")) {
        args.extend(["--request-timeout-ms".to_string(), config.agent_request_timeout.as_millis().to_string()]);
    }
    let mut agents = Vec::with_capacity(n);
    for host in 0..n {
        agents.push(lab.spawn(host, &config.flotilla_bin, &args)?);
    }
    let driven = drive(&lab, &mut agents, scenario, config, seed, out);
    if let Err(e) = driven {
        out.errors.push(format!("{e:#}"));
    }
    let verdict = out.verdict_now();
    if verdict.is_failure() {
        out.log_tails = agents.iter().map(|a| (a.host(), log_tail(a, config.log_tail_lines))).collect();
        if verdict == ChaosVerdict::Violation || config.keep_failed {
            for a in &mut agents {
                a.keep_data();
                out.kept.push(a.data_dir().to_path_buf());
            }
        }
    }
    Ok(())
}

/// Formation, workload and faults, recovery, final reads, check.
fn drive(
    lab: &Lab,
    agents: &mut [Agent],
    scenario: &Scenario,
    config: &ChaosConfig,
    seed: u64,
    out: &mut ScenarioResult,
) -> Result<()> {
    let n = scenario.nodes();
    let ns = config.namespace.as_str();
    let view =
        wait::wait_cluster(agents.iter(), ns, &format!("one cluster of {n} voters"), config.formation_timeout, |v| {
            anyhow::ensure!(v.members.len() == n && v.voters() == n, "members {:?}", v.members);
            Ok(())
        })
        .context("forming the cluster")?;

    let recorder = Recorder::new();
    let timeline = Timeline::new(recorder.clone(), scenario.name(), config.echo);
    timeline.note(format!("one cluster of {n}, leader h{}", view.leader_index.map_or("?".into(), |i| i.to_string())));
    let workload = Workload {
        recorder: recorder.clone(),
        bases: agents.iter().map(Agent::http_base).collect(),
        keys: (0..config.keys.max(1)).map(|k| format!("k{k}")).collect(),
        ns: ns.to_string(),
        stop: AtomicBool::new(false),
        op_timeout: config.op_timeout,
        think_max: config.think_max,
        reasons: Mutex::new(Default::default()),
        failed_writes: Mutex::new(Default::default()),
        stale_reads: config.stale_reads,
        cas_refused: AtomicU64::new(0),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let worker_seeds: Vec<u64> = (0..config.clients.max(1)).map(|_| rng.gen()).collect();

    let faults = std::thread::scope(|s| -> Result<()> {
        // Stops the workers when this closure ends, however it ends.
        let _stop = StopOnDrop(&workload.stop);
        for (index, &worker_seed) in worker_seeds.iter().enumerate() {
            let workload = &workload;
            std::thread::Builder::new()
                .name(format!("chaos-client-{index}"))
                .spawn_scoped(s, move || client::worker(workload, index, worker_seed))
                .context("starting a client worker")?;
        }
        // Phase lengths below define the run, nothing is synchronised by them.
        std::thread::sleep(config.warmup);
        timeline.note(format!("fault phase: {} for {:?}", scenario.name(), config.fault_duration));
        let mut nemesis = Nemesis::new(lab, agents, ns, rng, &timeline, config.fault_duration);
        let planned = scenario.run_plan(&mut nemesis);
        let healed = nemesis.heal_all();
        timeline.note("fault phase over, everything healed");
        drop(nemesis);
        std::thread::sleep(config.settle);
        workload.stop.store(true, Ordering::SeqCst);
        timeline.note("clients stopping (each finishes its operation)");
        planned.context("injecting faults")?;
        healed.context("healing")
    });
    timeline.note("clients stopped");
    if let Err(e) = faults {
        out.errors.push(format!("{e:#}"));
    }

    let recovery_started = Instant::now();
    let converged =
        wait::wait_cluster(agents.iter(), ns, &format!("one cluster of {n} voters"), config.recovery_timeout, |v| {
            anyhow::ensure!(v.members.len() == n && v.voters() == n, "members {:?}", v.members);
            Ok(())
        });
    let first = match converged {
        Ok(view) => {
            out.recovery = Some(recovery_started.elapsed());
            timeline.note(format!("recovered: one cluster of {n} voters, leader h{}", view.leader_index.unwrap_or(0)));
            view.leader_index.unwrap_or(0)
        }
        Err(e) => {
            out.errors.push(format!("no single cluster of {n} voters after the heal (liveness): {e:#}"));
            0
        }
    };
    let missing = client::final_reads(&workload, first, config.recovery_timeout);
    if !missing.is_empty() {
        out.errors.push(format!(
            "no linearizable read of {missing:?} succeeded within {:?} after the heal (liveness)",
            config.recovery_timeout
        ));
    }
    timeline.note("final reads done");

    let history = recorder.history();
    out.keys = workload.keys.len();
    out.reasons = workload.reasons();
    (out.observed_despite_error, out.observed_despite_error_examples) = workload.observed_despite_error(&history);
    out.cas = CasCounts::of(&history, workload.cas_refused.load(Ordering::Relaxed));
    out.write_latency = latency(&history, false);
    out.read_latency = latency(&history, true);
    match check(&history, config.check_budget, workload.keys.len()) {
        Ok(report) => {
            if !report.violations().is_empty() {
                out.history_file = save_history(&history, scenario.name(), seed);
            }
            out.report = Some(report);
        }
        Err(e) => out.errors.push(e),
    }
    out.timeline = timeline.events();
    Ok(())
}

/// [`check_all`] on its own thread, given up after the longest the budget allows (verdict and
/// shrinking, key after key over the checker's threads) plus a margin.
fn check(history: &History, budget: Budget, keys: usize) -> Result<Report, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, flotilla_check::MAX_THREADS);
    let rounds = keys.div_ceil(threads).max(1) as u32;
    let limit = budget.max_time * 2 * rounds + Duration::from_secs(10);
    let (tx, rx) = std::sync::mpsc::channel();
    let history = history.clone();
    std::thread::Builder::new()
        .name("chaos-check".into())
        .spawn(move || {
            let _ = tx.send(check_all(&history, budget));
        })
        .map_err(|e| format!("starting the checker: {e}"))?;
    rx.recv_timeout(limit).map_err(|_| format!("the check did not finish within its watchdog of {limit:?}"))
}

/// Write the whole history of a violating run to a file in the temporary directory; its path.
fn save_history(history: &History, scenario: &str, seed: u64) -> Option<PathBuf> {
    let path = std::env::temp_dir().join(format!("flotilla-chaos-{scenario}-{seed}-{}.history", std::process::id()));
    match std::fs::write(&path, history.to_string()) {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!("flotilla-lab chaos: writing {}: {e}", path.display());
            None
        }
    }
}

/// Log lines that repeat every heartbeat interval while a peer is unreachable: left out of the
/// log tails of a report, where they would crowd out everything else.
const LOG_NOISE: [&str; 3] = ["failed to send a heartbeat", "ReplicationCore recv RPCError", "update progress error"];

/// The last `lines` lines of the agent's log, without [`LOG_NOISE`].
fn log_tail(agent: &Agent, lines: usize) -> String {
    let text = std::fs::read_to_string(agent.log_path()).unwrap_or_else(|e| format!("(no log: {e})"));
    let kept: Vec<&str> = text.lines().filter(|l| !LOG_NOISE.iter().any(|n| l.contains(n))).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// Median and 99th percentile of the successful reads (or writes) of `history`.
fn latency(history: &History, reads: bool) -> Option<(Duration, Duration)> {
    let mut samples: Vec<Duration> = history
        .entries()
        .iter()
        .filter(|e| e.op.is_read() == reads && e.effective_outcome() == flotilla_check::Outcome::Ok)
        .filter_map(|e| e.completed.map(|c| c.saturating_sub(e.invoked)))
        .collect();
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    Some((at(0.50), at(0.99)))
}
