//! Counters of the group-commit writer, shaped for Prometheus.
//!
//! The writer updates plain atomics (it is the only writer, readers only load), and
//! [`crate::Store::metrics`] copies them into a [`StoreMetrics`] value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (µs, inclusive) of the commit-latency histogram buckets; one more bucket counts
/// everything above the last bound.
pub const COMMIT_LATENCY_BOUNDS_US: [u64; 10] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000];

/// Upper bounds (inclusive) of the operations-per-commit histogram buckets; one more bucket
/// counts everything above the last bound.
pub const OPS_PER_COMMIT_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A fixed-bucket histogram, as copied out of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Inclusive upper bound of each bucket but the last.
    pub bounds: Vec<u64>,
    /// Observations per bucket (not cumulative); `counts.len() == bounds.len() + 1`, the last
    /// bucket being everything above the last bound.
    pub counts: Vec<u64>,
    /// Sum of all observations.
    pub sum: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// The upper bound of the bucket holding the `q`-quantile (`0.0..=1.0`) of the observations:
    /// `None` without observations, `Some(None)` when it falls above the last bound. A bucket
    /// bound, not an interpolation: "99% of fsyncs took at most this long".
    pub fn quantile_bound(&self, q: f64) -> Option<Option<u64>> {
        if self.count == 0 {
            return None;
        }
        // The rank of the quantile, at least the first observation.
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        self.cumulative().into_iter().find(|(_, total)| *total >= rank).map(|(bound, _)| bound)
    }

    /// Cumulative counts per upper bound (`None` is `+Inf`), the form Prometheus exposes.
    pub fn cumulative(&self) -> Vec<(Option<u64>, u64)> {
        let mut total = 0;
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                total += c;
                (self.bounds.get(i).copied(), total)
            })
            .collect()
    }
}

/// A point-in-time copy of the store's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreMetrics {
    /// Commits of operations that succeeded, durable or not.
    pub commits: u64,
    /// Durable commits (one fsync each) that succeeded: commits of durable operations, and
    /// flushes making earlier non-durable commits durable.
    pub fsyncs: u64,
    /// Commits that failed: with an I/O error (the batch is then retried, nothing refused), or
    /// for another reason (every operation in them was refused).
    pub failed_commits: u64,
    /// Operations acknowledged after a successful commit.
    pub ops: u64,
    /// Operations that failed, on their own or with their commit.
    pub failed_ops: u64,
    /// Times a batch was rolled back and re-run without an operation that failed after it had
    /// started writing.
    pub batch_retries: u64,
    /// Sum of commit latencies (the `commit()` call, fsync included), in microseconds.
    pub commit_latency_us_sum: u64,
    /// Commit latency in microseconds, bounds [`COMMIT_LATENCY_BOUNDS_US`].
    pub commit_latency_us: Histogram,
    /// Operations per successful commit, bounds [`OPS_PER_COMMIT_BOUNDS`].
    pub ops_per_commit: Histogram,
    /// Latency in microseconds of each durable commit and flush (the time redb's commit with
    /// its fsync took), bounds [`COMMIT_LATENCY_BOUNDS_US`]: the disk's fsync latency as the
    /// store sees it, without the faster commits that skip the fsync.
    pub fsync_latency_us: Histogram,
    /// Largest number of operations grouped in one commit.
    pub max_ops_per_commit: u64,
    /// Operations waiting in the writer's queue when the metrics were taken.
    pub queue_depth: u64,
    /// The last error the writer saw, if any.
    pub last_error: Option<String>,
}

/// Live histogram of atomics.
struct AtomicHistogram {
    bounds: &'static [u64],
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: u64) {
        let bucket = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(bucket) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        Histogram {
            bounds: self.bounds.to_vec(),
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum: self.sum.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// The live counters, shared by the writer thread and the store.
pub(crate) struct Metrics {
    commits: AtomicU64,
    fsyncs: AtomicU64,
    failed_commits: AtomicU64,
    ops: AtomicU64,
    failed_ops: AtomicU64,
    batch_retries: AtomicU64,
    max_ops_per_commit: AtomicU64,
    commit_latency_us: AtomicHistogram,
    ops_per_commit: AtomicHistogram,
    fsync_latency_us: AtomicHistogram,
    last_error: Mutex<Option<String>>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            commits: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            failed_ops: AtomicU64::new(0),
            batch_retries: AtomicU64::new(0),
            max_ops_per_commit: AtomicU64::new(0),
            commit_latency_us: AtomicHistogram::new(&COMMIT_LATENCY_BOUNDS_US),
            ops_per_commit: AtomicHistogram::new(&OPS_PER_COMMIT_BOUNDS),
            fsync_latency_us: AtomicHistogram::new(&COMMIT_LATENCY_BOUNDS_US),
            last_error: Mutex::new(None),
        }
    }

    /// A successful commit of `ops` operations that took `latency` (fsynced when `durable`).
    pub(crate) fn record_commit(&self, ops: u64, latency: Duration, durable: bool) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if durable {
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.fsync_latency_us.observe(duration_us(latency));
        }
        self.ops.fetch_add(ops, Ordering::Relaxed);
        self.max_ops_per_commit.fetch_max(ops, Ordering::Relaxed);
        self.commit_latency_us.observe(duration_us(latency));
        self.ops_per_commit.observe(ops);
    }

    /// A flush: an empty durable commit that took `latency`. Not a commit of operations, so it
    /// only counts as an fsync.
    pub(crate) fn record_flush(&self, latency: Duration) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_latency_us.observe(duration_us(latency));
    }

    /// A failed commit of `ops` operations.
    pub(crate) fn record_failed_commit(&self, ops: u64, latency: Duration, error: &str) {
        self.failed_commits.fetch_add(1, Ordering::Relaxed);
        self.failed_ops.fetch_add(ops, Ordering::Relaxed);
        self.commit_latency_us.observe(duration_us(latency));
        self.set_error(error);
    }

    /// A commit failed with an I/O error; its batch will be retried, so no operation failed.
    pub(crate) fn record_stalled_commit(&self, error: &str) {
        self.failed_commits.fetch_add(1, Ordering::Relaxed);
        self.set_error(error);
    }

    /// One operation failed on its own.
    pub(crate) fn record_failed_op(&self, error: &str) {
        self.failed_ops.fetch_add(1, Ordering::Relaxed);
        self.set_error(error);
    }

    /// A batch was rolled back and re-run.
    pub(crate) fn record_retry(&self) {
        self.batch_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Remember `error` as the last one.
    pub(crate) fn set_error(&self, error: &str) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(error.to_string());
    }

    /// Copy the counters out.
    pub(crate) fn snapshot(&self, queue_depth: u64) -> StoreMetrics {
        let commit_latency_us = self.commit_latency_us.snapshot();
        StoreMetrics {
            commits: self.commits.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
            failed_ops: self.failed_ops.load(Ordering::Relaxed),
            batch_retries: self.batch_retries.load(Ordering::Relaxed),
            commit_latency_us_sum: commit_latency_us.sum,
            commit_latency_us,
            ops_per_commit: self.ops_per_commit.snapshot(),
            fsync_latency_us: self.fsync_latency_us.snapshot(),
            max_ops_per_commit: self.max_ops_per_commit.load(Ordering::Relaxed),
            queue_depth,
            last_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_cumulative() {
        let m = Metrics::new();
        m.record_commit(1, Duration::from_micros(90), true);
        m.record_commit(3, Duration::from_micros(300), false);
        m.record_commit(2000, Duration::from_secs(2), true);
        m.record_flush(Duration::from_millis(20));
        let s = m.snapshot(0);
        assert_eq!(s.commits, 3);
        assert_eq!(s.fsyncs, 3, "two durable commits and a flush");
        assert_eq!(s.ops, 2004);
        assert_eq!(s.max_ops_per_commit, 2000);
        assert_eq!(s.commit_latency_us.counts[0], 1);
        assert_eq!(s.commit_latency_us.counts[2], 1);
        assert_eq!(*s.commit_latency_us.counts.last().unwrap(), 1);
        let cum = s.ops_per_commit.cumulative();
        assert_eq!(cum.first(), Some(&(Some(1), 1)));
        assert_eq!(cum.last(), Some(&(None, 3)));
        // Only the durable commits and the flush count as fsyncs: 90 µs, 20 ms and 2 s.
        assert_eq!(s.fsync_latency_us.count, 3);
        assert_eq!(s.fsync_latency_us.counts[0], 1);
        assert_eq!(s.fsync_latency_us.counts[7], 1, "20 ms is in the 25 ms bucket");
    }

    #[test]
    fn quantile_bound_is_the_bucket_holding_the_rank() {
        let h = |counts: [u64; 11]| Histogram {
            bounds: COMMIT_LATENCY_BOUNDS_US.to_vec(),
            counts: counts.to_vec(),
            sum: 0,
            count: counts.iter().sum(),
        };
        type Case = (&'static str, [u64; 11], f64, Option<Option<u64>>);
        let cases: [Case; 6] = [
            ("empty", [0; 11], 0.99, None),
            ("all in the first bucket", [5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0.99, Some(Some(100))),
            ("one slow of 100 is the 1%", [99, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], 0.99, Some(Some(100))),
            ("two slow of 100 reach p99", [98, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0], 0.99, Some(Some(25_000))),
            ("above the last bound", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3], 0.5, Some(None)),
            ("median", [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], 0.5, Some(Some(250))),
        ];
        for (name, counts, q, want) in cases {
            assert_eq!(h(counts).quantile_bound(q), want, "{name}");
        }
    }
}
