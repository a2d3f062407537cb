//! The report: what was measured, as JSON and as Markdown tables.

use std::fmt::Write as _;

use serde::Serialize;

use crate::failover::FailoverSample;
use crate::load::Case;
use crate::stats::{median, ratio, RunFigures};

/// Everything one `vs-etcd` run measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// Where and how it ran.
    pub setup: Setup,
    /// Formation: processes started to first acknowledged write, ms, one sample per run.
    pub formation_ms: PerSystem<Vec<f64>>,
    /// Idle VmRSS per member (KiB), right after the benchmark clusters were healthy.
    pub rss_idle_kib: PerSystem<Vec<Option<u64>>>,
    /// VmRSS per member (KiB) after the preload.
    pub rss_preloaded_kib: PerSystem<Vec<Option<u64>>>,
    /// VmRSS per member (KiB) after every case.
    pub rss_end_kib: PerSystem<Vec<Option<u64>>>,
    /// The untimed-for-comparison preload (its figures, for the record).
    pub preload: PerSystem<Option<RunFigures>>,
    /// The workload cases.
    pub cases: Vec<CaseReport>,
    /// Failover runs.
    pub failover: PerSystem<Vec<FailoverSample>>,
}

/// Where and how the run happened.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Setup {
    /// `etcd --version`, first line.
    pub etcd_version: String,
    /// The etcd binary.
    pub etcd_bin: String,
    /// The flotilla binary.
    pub flotilla_bin: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// `/proc/loadavg` when the run started and when it ended.
    pub loadavg_start: String,
    /// See `loadavg_start`.
    pub loadavg_end: String,
    /// Unix time the run started.
    pub started_unix: u64,
    /// Wall time of the whole run, seconds.
    pub duration_s: f64,
    /// Op-count scale factor.
    pub scale: f64,
    /// Rounds per case.
    pub rounds: usize,
    /// Keys preloaded for the read cases.
    pub preload_keys: u64,
    /// Value size, bytes.
    pub value_bytes: usize,
    /// The API the load used against Flotilla.
    pub flotilla_api: crate::cluster::FlotillaApi,
}

/// A value for each system.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PerSystem<T> {
    /// etcd's.
    pub etcd: T,
    /// Flotilla's.
    pub flotilla: T,
}

/// One case: every round of both systems, the medians and the ratios.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// The shape (with the scaled op count).
    pub case: Case,
    /// Each round's figures.
    pub rounds: PerSystem<Vec<RunFigures>>,
    /// The median of each figure over the rounds.
    pub median: PerSystem<Option<RunFigures>>,
    /// Flotilla / etcd of the medians: throughput (>1: Flotilla faster), latencies (<1:
    /// Flotilla faster).
    pub ratio: Ratios,
    /// First error message seen per system, if any operation failed.
    pub first_error: PerSystem<Option<String>>,
}

/// Flotilla / etcd ratios of the median figures.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Ratios {
    /// Throughput ratio.
    pub throughput: Option<f64>,
    /// p50 latency ratio.
    pub p50: Option<f64>,
    /// p99 latency ratio.
    pub p99: Option<f64>,
    /// Max latency ratio.
    pub max: Option<f64>,
}

impl CaseReport {
    /// A report of `case` from its rounds.
    pub fn new(case: Case, rounds: PerSystem<Vec<RunFigures>>, first_error: PerSystem<Option<String>>) -> Self {
        let median =
            PerSystem { etcd: RunFigures::median_of(&rounds.etcd), flotilla: RunFigures::median_of(&rounds.flotilla) };
        let ratio = ratios(median.etcd.as_ref(), median.flotilla.as_ref());
        Self { case, rounds, median, ratio, first_error }
    }
}

/// Flotilla / etcd of each figure, where both exist.
pub fn ratios(etcd: Option<&RunFigures>, flotilla: Option<&RunFigures>) -> Ratios {
    match (etcd, flotilla) {
        (Some(e), Some(f)) => Ratios {
            throughput: ratio(f.throughput, e.throughput),
            p50: ratio(f.p50_ms, e.p50_ms),
            p99: ratio(f.p99_ms, e.p99_ms),
            max: ratio(f.max_ms, e.max_ms),
        },
        _ => Ratios::default(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "–".into())
}

/// An integer with thousands separators.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib_list(v: &[Option<u64>]) -> String {
    v.iter()
        .map(|k| k.map(|k| format!("{:.1}", k as f64 / 1024.0)).unwrap_or_else(|| "–".into()))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn samples(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
}

impl Report {
    /// The report as Markdown tables.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let s = &self.setup;
        let _ = writeln!(
            out,
            "etcd: {} | flotilla: {} through its {} API | {} CPUs | scale {} | {} round(s), median shown | loadavg {} -> {}\n",
            s.etcd_version,
            s.flotilla_bin,
            s.flotilla_api.name(),
            s.cpus,
            s.scale,
            s.rounds,
            s.loadavg_start,
            s.loadavg_end
        );
        let _ = writeln!(
            out,
            "| case | ops | etcd ops/s | etcd p50 / p99 / max ms | Flotilla ops/s | Flotilla p50 / p99 / max ms | Flotilla/etcd ops/s | p50 | p99 | server CPU ms/op etcd / Flotilla |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
        for c in &self.cases {
            let fig = |f: &Option<RunFigures>| match f {
                Some(f) => (
                    thousands(f.throughput.round() as u64),
                    format!("{:.2} / {:.2} / {:.1}", f.p50_ms, f.p99_ms, f.max_ms)
                        + &if f.errors > 0 { format!(" ({} errors)", f.errors) } else { String::new() },
                ),
                None => ("–".into(), "–".into()),
            };
            let (et, el) = fig(&c.median.etcd);
            let (ft, fl) = fig(&c.median.flotilla);
            let _ = writeln!(
                out,
                "| ({}) {} | {} | {et} | {el} | {ft} | {fl} | {} | {} | {} | {} / {} |",
                c.case.id,
                c.case.title,
                thousands(c.case.ops),
                opt(c.ratio.throughput, 2),
                opt(c.ratio.p50, 2),
                opt(c.ratio.p99, 2),
                opt(c.median.etcd.as_ref().and_then(|f| f.server_cpu_ms_per_op), 3),
                opt(c.median.flotilla.as_ref().and_then(|f| f.server_cpu_ms_per_op), 3),
            );
        }
        out.push('\n');
        let _ = writeln!(out, "| measure | etcd | Flotilla | Flotilla/etcd |");
        let _ = writeln!(out, "|---|---|---|---|");
        let f = &self.formation_ms;
        let (fe, ff) = (median(&f.etcd), median(&f.flotilla));
        let _ = writeln!(
            out,
            "| formation: start to first acknowledged write, median ms (runs) | {} ({}) | {} ({}) | {} |",
            opt(fe, 0),
            samples(&f.etcd),
            opt(ff, 0),
            samples(&f.flotilla),
            opt(fe.zip(ff).and_then(|(e, f)| ratio(f, e)), 2)
        );
        let fo = |v: &[FailoverSample]| v.iter().map(|s| s.failover_ms).collect::<Vec<_>>();
        let (fo_e, fo_f) = (fo(&self.failover.etcd), fo(&self.failover.flotilla));
        let (me, mf) = (median(&fo_e), median(&fo_f));
        let _ = writeln!(
            out,
            "| failover after kill -9 of the leader, median ms (runs) | {} ({}) | {} ({}) | {} |",
            opt(me, 0),
            samples(&fo_e),
            opt(mf, 0),
            samples(&fo_f),
            opt(me.zip(mf).and_then(|(e, f)| ratio(f, e)), 2)
        );
        let rs = |v: &[FailoverSample]| median(&v.iter().map(|s| s.restart_to_serving_ms).collect::<Vec<_>>());
        let (re, rf) = (rs(&self.failover.etcd), rs(&self.failover.flotilla));
        let _ = writeln!(
            out,
            "| killed member restarted to serving a linearizable read, median ms | {} | {} | {} |",
            opt(re, 0),
            opt(rf, 0),
            opt(re.zip(rf).and_then(|(e, f)| ratio(f, e)), 2)
        );
        let total = |v: &[Option<u64>]| v.iter().flatten().sum::<u64>() as f64;
        for (label, r) in [
            ("idle RSS per member, MiB", &self.rss_idle_kib),
            (&*format!("RSS after {} keys, MiB", thousands(s.preload_keys)), &self.rss_preloaded_kib),
            ("RSS after all cases, MiB", &self.rss_end_kib),
        ] {
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} |",
                mib_list(&r.etcd),
                mib_list(&r.flotilla),
                opt(ratio(total(&r.flotilla), total(&r.etcd)), 2)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(t: f64, p50: f64) -> RunFigures {
        RunFigures {
            ops_ok: 1,
            errors: 0,
            elapsed_s: 1.0,
            throughput: t,
            p50_ms: p50,
            p99_ms: 2.0 * p50,
            max_ms: 3.0,
            server_cpu_ms_per_op: None,
        }
    }

    #[test]
    fn ratios_are_flotilla_over_etcd() {
        let r = ratios(Some(&fig(100.0, 2.0)), Some(&fig(150.0, 1.0)));
        assert_eq!(r.throughput, Some(1.5));
        assert_eq!(r.p50, Some(0.5));
        assert_eq!(ratios(None, Some(&fig(1.0, 1.0))), Ratios::default());
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn markdown_has_a_row_per_case_and_survives_missing_figures() {
        let case = crate::load::reference_cases().remove(0);
        let rounds = PerSystem { etcd: vec![fig(500.0, 2.0)], flotilla: vec![] };
        let report = Report { cases: vec![CaseReport::new(case, rounds, PerSystem::default())], ..Default::default() };
        let md = report.to_markdown();
        assert!(md.contains("| (a) put, 1 client | 10,000 | 500 |"), "{md}");
        assert!(md.contains("formation"));
        // And it serializes.
        serde_json::to_string(&report).expect("json");
    }
}
