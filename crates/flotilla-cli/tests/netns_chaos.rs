//! Chaos smoke test: real `flotilla agent` processes in network namespaces (see `flotilla-lab`)
//! under concurrent clients (puts, linearizable gets and compare-and-sets) while the smoke set
//! of fault scenarios runs (a partition with the leader in the minority, one-way loss, `kill -9`
//! of the leader, a wiped data directory, a partition plus a killed leader), 10 s of faults
//! each; every history is checked for
//! linearizability (`flotilla-check`), including a final linearizable read of every key after
//! the heal, so a lost acknowledged write fails the test. Also fails if the cluster does not
//! recover within a minute of the heal.
//!
//! Needs root; skipped with a `SKIPPED` line otherwise. Scenarios that inject network faults
//! need `nft` (nftables) and are skipped, each with a `SKIPPED` line, when it is missing.
//!
//! - `FLOTILLA_CHAOS_SEED=n`: the seed (default [`DEFAULT_SEED`]; printed on failure);
//! - `FLOTILLA_CHAOS_SCENARIOS=a,b`: other scenarios than the smoke set (`all` for every one);
//! - `FLOTILLA_CHAOS_DURATION_SECS=n`: the fault phase of each scenario (default 10).
//!
//! The longer soak runs through the binary:
//! `flotilla-lab chaos --scenario all --duration-secs 60 --seed N` (see docs/CHAOS.md).

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_lab::chaos::{self, ChaosConfig, Scenario};
use flotilla_lab::Lab;

/// Seed when `FLOTILLA_CHAOS_SEED` is not set: fixed, so CI replays the same fault schedule.
const DEFAULT_SEED: u64 = 20_251_122;

fn flotilla() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_flotilla"))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

fn selected() -> Vec<&'static Scenario> {
    match std::env::var("FLOTILLA_CHAOS_SCENARIOS") {
        Err(_) => chaos::smoke_scenarios(),
        Ok(list) if list.trim() == "all" => chaos::scenarios().iter().collect(),
        Ok(list) => list
            .split(',')
            .map(|name| chaos::scenario(name.trim()).unwrap_or_else(|| panic!("no chaos scenario {name:?}")))
            .collect(),
    }
}

#[test]
fn chaos_smoke_set_stays_linearizable() {
    if let Some(reason) = Lab::unavailable_reason() {
        eprintln!("SKIPPED chaos_smoke_set_stays_linearizable: needs Linux network namespaces: {reason}");
        return;
    }
    let seed = env_u64("FLOTILLA_CHAOS_SEED").unwrap_or(DEFAULT_SEED);
    let mut config = ChaosConfig::smoke(flotilla(), seed);
    if let Some(secs) = env_u64("FLOTILLA_CHAOS_DURATION_SECS") {
        config.fault_duration = Duration::from_secs(secs);
    }
    let nft = chaos::nft_unavailable();
    let started = Instant::now();
    let mut results = Vec::new();
    for scenario in selected() {
        if let (true, Some(reason)) = (scenario.needs_nft(), &nft) {
            eprintln!("SKIPPED chaos scenario {}: {reason}", scenario.name());
            continue;
        }
        let result = chaos::run_scenario(scenario, &config);
        eprint!("{result}");
        results.push(result);
    }
    eprintln!("chaos smoke, seed {seed}, {:.0} s:", started.elapsed().as_secs_f64());
    let mut cas = chaos::CasCounts::default();
    for r in &results {
        eprintln!("  {}", r.line());
        cas.add(r.cas);
    }
    eprintln!("  compare-and-sets: {cas}");
    let failed: Vec<String> = results.iter().filter(|r| r.verdict.is_failure()).map(|r| r.to_string()).collect();
    assert!(
        failed.is_empty(),
        "{} chaos scenario(s) failed (seed {seed}; replay one with `flotilla-lab chaos --smoke --scenario NAME \
         --seed {seed} --duration-secs {}`):\n{}",
        failed.len(),
        config.fault_duration.as_secs(),
        failed.join("\n")
    );
}
