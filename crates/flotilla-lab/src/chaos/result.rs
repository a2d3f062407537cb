//! What a chaos run found, for people (a line, and details on failure) and for machines (JSON).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_check::{Counts, History, Outcome, Report};
use serde_json::{json, Value};

use super::scenario::Scenario;

/// The verdict on one scenario run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChaosVerdict {
    /// Every key's history is linearizable and the cluster recovered.
    Linearizable,
    /// Some key's history is not linearizable: a bug (or a lost acknowledged write).
    Violation,
    /// The checker's budget ran out on some key; nothing was found on the others.
    Undetermined,
    /// The run could not be completed or checked: setup failed, the cluster did not recover
    /// within the deadline (a liveness failure), or the final reads did not succeed.
    Error,
}

impl ChaosVerdict {
    /// Whether the run should fail a test or the command: a violation or an error.
    pub fn is_failure(self) -> bool {
        matches!(self, ChaosVerdict::Violation | ChaosVerdict::Error)
    }

    /// `linearizable`, `VIOLATION`, `undetermined` or `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChaosVerdict::Linearizable => "linearizable",
            ChaosVerdict::Violation => "VIOLATION",
            ChaosVerdict::Undetermined => "undetermined",
            ChaosVerdict::Error => "ERROR",
        }
    }
}

impl fmt::Display for ChaosVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of [`super::run_scenario`].
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Number of agents.
    pub nodes: usize,
    /// The scenario's own seed (derived from the run's seed and the name).
    pub seed: u64,
    /// The verdict.
    pub verdict: ChaosVerdict,
    /// Wall-clock time of the whole run, lab setup to teardown.
    pub duration: Duration,
    /// Time from the end of the settle phase to one cluster of all voters, if it came.
    pub recovery: Option<Duration>,
    /// Number of keys.
    pub keys: usize,
    /// The checker's report, if the check ran.
    pub report: Option<Report>,
    /// What went wrong besides the history: setup, fault injection, liveness.
    pub errors: Vec<String>,
    /// Operations that did not succeed, by reason (`write 503 no_leader`, `read timeout`, ...).
    pub reasons: BTreeMap<String, u64>,
    /// Writes whose client saw an error (by reason) but whose value a read returned later:
    /// errors that did not mean "not applied".
    pub observed_despite_error: BTreeMap<String, u64>,
    /// A few of those in full (`key=value: answer`), leaving out timeouts and lost connections.
    pub observed_despite_error_examples: Vec<String>,
    /// How the compare-and-sets ended.
    pub cas: CasCounts,
    /// Latency of successful writes (compare-and-sets included): median and 99th percentile.
    pub write_latency: Option<(Duration, Duration)>,
    /// Latency of successful reads: median and 99th percentile.
    pub read_latency: Option<(Duration, Duration)>,
    /// Faults and heals, on the history's clock.
    pub timeline: Vec<(Duration, String)>,
    /// On failure: the end of each agent's log, by host.
    pub log_tails: Vec<(usize, String)>,
    /// Data directories (with logs) kept for inspection.
    pub kept: Vec<PathBuf>,
    /// On a violation: the whole history, written to this file.
    pub history_file: Option<PathBuf>,
}

impl ScenarioResult {
    pub(crate) fn new(scenario: &Scenario, seed: u64) -> ScenarioResult {
        ScenarioResult {
            scenario: scenario.name(),
            nodes: scenario.nodes(),
            seed,
            verdict: ChaosVerdict::Error,
            duration: Duration::ZERO,
            recovery: None,
            keys: 0,
            report: None,
            errors: Vec::new(),
            reasons: BTreeMap::new(),
            observed_despite_error: BTreeMap::new(),
            observed_despite_error_examples: Vec::new(),
            cas: CasCounts::default(),
            write_latency: None,
            read_latency: None,
            timeline: Vec::new(),
            log_tails: Vec::new(),
            kept: Vec::new(),
            history_file: None,
        }
    }

    /// The verdict from what is known so far: a violation wins over everything, then errors,
    /// then undetermined keys.
    pub(crate) fn verdict_now(&self) -> ChaosVerdict {
        match &self.report {
            Some(r) if !r.violations().is_empty() => ChaosVerdict::Violation,
            _ if !self.errors.is_empty() => ChaosVerdict::Error,
            None => ChaosVerdict::Error,
            Some(r) if !r.undetermined().is_empty() => ChaosVerdict::Undetermined,
            Some(_) => ChaosVerdict::Linearizable,
        }
    }

    pub(crate) fn finish(&mut self, duration: Duration) {
        self.duration = duration;
        self.verdict = self.verdict_now();
    }

    /// How the operations ended (final reads included); zero if nothing was checked.
    pub fn counts(&self) -> Counts {
        self.report.as_ref().map(|r| r.counts).unwrap_or_default()
    }

    /// One line: scenario, verdict, operation counts, durations.
    pub fn line(&self) -> String {
        let c = self.counts();
        let check = self.report.as_ref().map_or("-".into(), |r| format!("{:.2}s", r.elapsed.as_secs_f64()));
        let recovery = self.recovery.map_or("-".into(), |d| format!("{:.1}s", d.as_secs_f64()));
        let latency = |l: Option<(Duration, Duration)>| {
            l.map_or("-".into(), |(p50, p99)| {
                format!("{:.0}/{:.0}ms", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3)
            })
        };
        format!(
            "{:<22} {:<13} nodes {} ops {:>5} (ok {:>5}, fail {:>4}, unknown {:>4})  cas {}  keys {:>2}  \
             put p50/p99 {:>11}  get {:>11}  recovery {:>5}  check {:>6}  took {:>5.1}s  seed {}",
            self.scenario,
            self.verdict.as_str(),
            self.nodes,
            c.total(),
            c.ok,
            c.fail,
            c.unknown,
            self.cas.short(),
            self.keys,
            latency(self.write_latency),
            latency(self.read_latency),
            recovery,
            check,
            self.duration.as_secs_f64(),
            self.seed
        )
    }

    /// The result as JSON.
    pub fn to_json(&self) -> Value {
        let c = self.counts();
        json!({
            "scenario": self.scenario,
            "nodes": self.nodes,
            "seed": self.seed,
            "verdict": self.verdict.as_str(),
            "ok": c.ok,
            "fail": c.fail,
            "unknown": c.unknown,
            "keys": self.keys,
            "cas": self.cas.to_json(),
            "duration_ms": ms(self.duration),
            "recovery_ms": self.recovery.map(ms),
            "check_ms": self.report.as_ref().map(|r| ms(r.elapsed)),
            "errors": self.errors,
            "reasons": self.reasons,
            "observed_despite_error": self.observed_despite_error,
            "observed_despite_error_examples": self.observed_despite_error_examples,
            "write_latency_ms": self.write_latency.map(|(p50, p99)| json!({ "p50": ms(p50), "p99": ms(p99) })),
            "read_latency_ms": self.read_latency.map(|(p50, p99)| json!({ "p50": ms(p50), "p99": ms(p99) })),
            "report": self.report.as_ref().filter(|r| !r.is_linearizable()).map(|r| r.to_string()),
            "history_file": self.history_file,
            "kept": self.kept,
            "timeline": self.timeline.iter().map(|(t, e)| json!({ "t_ms": ms(*t), "event": e })).collect::<Vec<_>>(),
        })
    }
}

/// How the compare-and-sets of a history ended (as the in-process suite counts them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CasCounts {
    /// Applied: the key held the value read.
    pub ok: usize,
    /// The comparison failed (412 `precondition_failed`).
    pub failed: usize,
    /// Outcome unknown, refused ones included.
    pub unknown: usize,
    /// Refused before being proposed (no connection, or a "not applied" status other than
    /// 412); recorded as unknown, so among [`CasCounts::unknown`].
    pub refused: u64,
}

impl CasCounts {
    /// Count the compare-and-sets of `history`; `refused` comes from the clients, which alone
    /// know why an unknown one ended.
    pub fn of(history: &History, refused: u64) -> CasCounts {
        let mut counts = CasCounts { refused, ..CasCounts::default() };
        for e in history.entries().iter().filter(|e| e.op.is_cas()) {
            match e.effective_outcome() {
                Outcome::Ok => counts.ok += 1,
                Outcome::Fail => counts.failed += 1,
                Outcome::Unknown => counts.unknown += 1,
            }
        }
        counts
    }

    /// Add `other`'s counts to these (totals over scenarios).
    pub fn add(&mut self, other: CasCounts) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.unknown += other.unknown;
        self.refused += other.refused;
    }

    /// Every compare-and-set.
    pub fn total(&self) -> usize {
        self.ok + self.failed + self.unknown
    }

    /// `total (ok/failed/unknown, refused r)`, for the one-line summary.
    pub fn short(&self) -> String {
        format!("{:>4} ({}/{}/{}, refused {})", self.total(), self.ok, self.failed, self.unknown, self.refused)
    }

    /// The counts as JSON.
    pub fn to_json(&self) -> Value {
        json!({ "ok": self.ok, "failed": self.failed, "unknown": self.unknown, "refused": self.refused })
    }
}

impl fmt::Display for CasCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ok, {} failed comparison, {} unknown ({} of them refused before being proposed)",
            self.ok, self.failed, self.unknown, self.refused
        )
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl fmt::Display for ScenarioResult {
    /// The line, then for anything but a clean pass: errors, the checker's report (minimal
    /// history of each violating key), the timeline, and the end of each agent's log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.line())?;
        if !self.observed_despite_error.is_empty() {
            let seen: Vec<String> = self.observed_despite_error.iter().map(|(r, n)| format!("{r}: {n}")).collect();
            writeln!(f, "  writes answered with an error that took effect anyway: {}", seen.join(", "))?;
            for example in &self.observed_despite_error_examples {
                writeln!(f, "    {example}")?;
            }
        }
        if self.verdict == ChaosVerdict::Linearizable {
            return Ok(());
        }
        for e in &self.errors {
            writeln!(f, "  error: {e}")?;
        }
        if let Some(report) = &self.report {
            for line in report.to_string().lines() {
                writeln!(f, "  {line}")?;
            }
        }
        if let Some(path) = &self.history_file {
            writeln!(f, "  full history: {}", path.display())?;
        }
        if !self.reasons.is_empty() {
            let reasons: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{r}: {n}")).collect();
            writeln!(f, "  unsuccessful operations: {}", reasons.join(", "))?;
        }
        writeln!(f, "  timeline:")?;
        for (t, e) in &self.timeline {
            writeln!(f, "    {:>8.3}s {e}", t.as_secs_f64())?;
        }
        for (host, tail) in &self.log_tails {
            writeln!(f, "  ---- end of the log of h{host} ----")?;
            for line in tail.lines() {
                writeln!(f, "    {line}")?;
            }
        }
        for dir in &self.kept {
            writeln!(f, "  kept {}", dir.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use flotilla_check::{Op, Outcome, Recorder};

    use super::CasCounts;

    #[test]
    fn cas_counts_count_only_compare_and_sets_by_outcome() {
        let r = Recorder::new();
        let c = r.new_client();
        let write = r.invoke(c, "k", Op::write("a"));
        r.complete(write, Outcome::Ok).unwrap();
        for (new, outcome) in [("b", Outcome::Ok), ("c", Outcome::Fail), ("d", Outcome::Unknown)] {
            let t = r.invoke(c, "k", Op::cas(Some("a"), new));
            r.complete(t, outcome).unwrap();
        }
        r.invoke(c, "k", Op::create("e"));
        let counts = CasCounts::of(&r.history(), 1);
        assert_eq!(counts, CasCounts { ok: 1, failed: 1, unknown: 2, refused: 1 });
        assert_eq!(counts.total(), 4);
        assert_eq!(counts.short(), "   4 (1/1/2, refused 1)");
    }
}
