//! Pure figures: percentiles of latency samples, medians over rounds, ratios.

use std::time::Duration;

use serde::Serialize;

/// Nearest-rank percentile (`p` in 0..=100) of samples sorted in ascending order.
///
/// `None` for no samples. `p` outside 0..=100 is clamped, so `0` gives the minimum and `100`
/// the maximum.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
    // Nearest rank: the smallest sample with at least p% of all samples at or below it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median of `values` (mean of the two middle values for an even count); `None` when empty.
/// NaNs are ignored.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

/// `a / b`, `None` when `b` is zero or either is not finite.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b != 0.0).then(|| a / b)
}

/// Milliseconds as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The figures of one timed run of one workload against one system.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunFigures {
    /// Operations acknowledged.
    pub ops_ok: u64,
    /// Operations that failed or timed out (reads: also a missing or wrong value).
    pub errors: u64,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
    /// Acknowledged operations per second of wall time.
    pub throughput: f64,
    /// Latency percentiles of acknowledged operations, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest acknowledged operation, milliseconds.
    pub max_ms: f64,
    /// CPU time the three server processes used during the run per acknowledged operation,
    /// milliseconds (the load generator's own CPU is not included).
    pub server_cpu_ms_per_op: Option<f64>,
}

impl RunFigures {
    /// Figures from latency samples (nanoseconds, any order), the error count and the wall time.
    pub fn from_samples(mut latencies_ns: Vec<u64>, errors: u64, elapsed: Duration) -> Self {
        latencies_ns.sort_unstable();
        let to_ms = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e6).unwrap_or(0.0);
        let secs = elapsed.as_secs_f64();
        let ops_ok = latencies_ns.len() as u64;
        Self {
            ops_ok,
            errors,
            elapsed_s: secs,
            throughput: if secs > 0.0 { ops_ok as f64 / secs } else { 0.0 },
            p50_ms: to_ms(percentile(&latencies_ns, 50.0)),
            p99_ms: to_ms(percentile(&latencies_ns, 99.0)),
            max_ms: to_ms(latencies_ns.last().copied()),
            server_cpu_ms_per_op: None,
        }
    }

    /// The median of each figure over `runs`, taken figure by figure (so the median throughput
    /// and the median p99 may come from different rounds); `None` when there are no runs.
    pub fn median_of(runs: &[RunFigures]) -> Option<RunFigures> {
        let m = |f: fn(&RunFigures) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Some(RunFigures {
            ops_ok: m(|r| r.ops_ok as f64)?.round() as u64,
            errors: runs.iter().map(|r| r.errors).sum(),
            elapsed_s: m(|r| r.elapsed_s)?,
            throughput: m(|r| r.throughput)?,
            p50_ms: m(|r| r.p50_ms)?,
            p99_ms: m(|r| r.p99_ms)?,
            max_ms: m(|r| r.max_ms)?,
            server_cpu_ms_per_op: median(&runs.iter().filter_map(|r| r.server_cpu_ms_per_op).collect::<Vec<_>>()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 250.0), Some(100));
        assert_eq!(percentile(&v, -3.0), Some(1));
        assert_eq!(percentile(&v, f64::NAN), Some(1));
        let empty: [u64; 0] = [];
        assert_eq!(percentile(&empty, 50.0), None);
        assert_eq!(percentile(&[7u64], 99.0), Some(7));
        // 10 samples: p99 is the 10th (ceil(9.9)), p50 the 5th.
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 99.0), Some(10));
        assert_eq!(percentile(&ten, 50.0), Some(5));
    }

    #[test]
    fn median_handles_odd_even_empty_and_nan() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn ratio_refuses_division_by_zero() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::INFINITY, 1.0), None);
    }

    #[test]
    fn run_figures_from_samples() {
        // 1..=1000 ms, shuffled order does not matter.
        let mut samples: Vec<u64> = (1..=1000).map(|ms| ms * 1_000_000).collect();
        samples.reverse();
        let f = RunFigures::from_samples(samples, 2, Duration::from_secs(2));
        assert_eq!(f.ops_ok, 1000);
        assert_eq!(f.errors, 2);
        assert!((f.throughput - 500.0).abs() < 1e-9);
        assert!((f.p50_ms - 500.0).abs() < 1e-9);
        assert!((f.p99_ms - 990.0).abs() < 1e-9);
        assert!((f.max_ms - 1000.0).abs() < 1e-9);

        let none = RunFigures::from_samples(Vec::new(), 5, Duration::ZERO);
        assert_eq!((none.ops_ok, none.throughput, none.p99_ms), (0, 0.0, 0.0));
    }

    #[test]
    fn median_of_runs_is_per_figure() {
        let run = |t: f64, p99: f64, errors: u64| RunFigures {
            ops_ok: 10,
            errors,
            elapsed_s: 1.0,
            throughput: t,
            p50_ms: 1.0,
            p99_ms: p99,
            max_ms: 9.0,
            server_cpu_ms_per_op: Some(p99),
        };
        let m = RunFigures::median_of(&[run(100.0, 9.0, 1), run(300.0, 3.0, 0), run(200.0, 5.0, 2)]).expect("runs");
        assert_eq!(m.throughput, 200.0);
        assert_eq!(m.p99_ms, 5.0);
        assert_eq!(m.server_cpu_ms_per_op, Some(5.0));
        assert_eq!(m.errors, 3, "errors are summed over the rounds");
        assert_eq!(RunFigures::median_of(&[]), None);
    }
}
