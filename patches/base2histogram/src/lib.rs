//! Flotilla's lean stand-in for the `base2histogram` crate, which openraft uses for its runtime
//! statistics (see README.md for why it exists and when to drop it).
//!
//! A [`Histogram`] counts `u64` samples in log-linear buckets: every value below
//! [`EXACT_BELOW`] has a bucket of its own, and each power of two above is split into
//! [`BUCKETS_PER_OCTAVE`] equal buckets, so a bucket's width is at most a quarter of its lower
//! bound. Bucket indices are computed arithmetically (no lookup table), and the counts live in a
//! vector that grows only as far as the largest bucket used.

use std::fmt;
use std::marker::PhantomData;

/// Values below this have a bucket of their own.
pub const EXACT_BELOW: u64 = 8;

/// Buckets each power of two at or above [`EXACT_BELOW`] is split into.
pub const BUCKETS_PER_OCTAVE: usize = 4;

/// Bits of a value, after its leading one, that select its bucket within its octave.
const SUB_BITS: u32 = BUCKETS_PER_OCTAVE.trailing_zeros();

/// The bit position of [`EXACT_BELOW`]: the first octave split into buckets.
const FIRST_OCTAVE: u32 = EXACT_BELOW.trailing_zeros();

/// The number of buckets that cover every `u64`.
pub const BUCKETS: usize = EXACT_BELOW as usize + (64 - FIRST_OCTAVE as usize) * BUCKETS_PER_OCTAVE;

/// The index of the bucket holding `value`.
pub fn bucket_of(value: u64) -> usize {
    if value < EXACT_BELOW {
        return value as usize;
    }
    let octave = 63 - value.leading_zeros(); // at least FIRST_OCTAVE
    let within = (value >> (octave - SUB_BITS)) as usize & (BUCKETS_PER_OCTAVE - 1);
    EXACT_BELOW as usize + (octave - FIRST_OCTAVE) as usize * BUCKETS_PER_OCTAVE + within
}

/// The smallest value of bucket `index` (`index` below [`BUCKETS`]).
pub fn bucket_floor(index: usize) -> u64 {
    if index < EXACT_BELOW as usize {
        return index as u64;
    }
    let above = index - EXACT_BELOW as usize;
    let octave = FIRST_OCTAVE + (above / BUCKETS_PER_OCTAVE) as u32;
    let within = (above % BUCKETS_PER_OCTAVE) as u64;
    ((BUCKETS_PER_OCTAVE as u64) | within) << (octave - SUB_BITS)
}

/// A histogram of `u64` samples. `T` is a label type kept for API compatibility with
/// `base2histogram` (which can tag time slots with it); this histogram has a single slot.
pub struct Histogram<T = ()> {
    /// Samples per bucket, up to the largest bucket used.
    counts: Vec<u64>,
    /// All samples recorded.
    total: u64,
    label: PhantomData<fn() -> T>,
}

impl<T> Histogram<T> {
    /// An empty histogram.
    pub fn new() -> Self {
        Self { counts: Vec::new(), total: 0, label: PhantomData }
    }

    /// An empty histogram. `base2histogram` keeps up to `slot_limit` time slots; this one keeps
    /// one, whatever the limit.
    pub fn with_slots(_slot_limit: usize) -> Self {
        Self::new()
    }

    /// Count one sample of `value`.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Count `count` samples of `value`.
    pub fn record_n(&mut self, value: u64, count: u64) {
        if count == 0 {
            return;
        }
        let index = bucket_of(value);
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] = self.counts[index].saturating_add(count);
        self.total = self.total.saturating_add(count);
    }

    /// Samples recorded so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Forget every sample.
    pub fn clear(&mut self) {
        self.counts.clear();
        self.total = 0;
    }

    /// Add `other`'s samples to this histogram.
    pub fn merge(&mut self, other: &Histogram<T>) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total = self.total.saturating_add(other.total);
    }

    /// The lower bound of the bucket holding the sample at fraction `p` (0.0 to 1.0, clamped)
    /// of the samples in ascending order; 0 when the histogram is empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        // The 1-based rank of the sample asked for.
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (index, count) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(*count);
            if seen >= rank {
                return bucket_floor(index);
            }
        }
        // Unreachable while `total` is the sum of `counts`.
        bucket_floor(self.counts.len().saturating_sub(1))
    }

    /// The usual percentiles, with the sample count.
    pub fn percentile_stats(&self) -> PercentileStats {
        PercentileStats {
            samples: self.total,
            p0_1: self.percentile(0.001),
            p1: self.percentile(0.01),
            p5: self.percentile(0.05),
            p10: self.percentile(0.10),
            p50: self.percentile(0.50),
            p90: self.percentile(0.90),
            p99: self.percentile(0.99),
            p99_9: self.percentile(0.999),
        }
    }
}

impl<T> Default for Histogram<T> {
    fn default() -> Self {
        Self::new()
    }
}

// Written out rather than derived: derives would require `T` itself to implement each trait,
// and `T` is only a label.
impl<T> Clone for Histogram<T> {
    fn clone(&self) -> Self {
        Self { counts: self.counts.clone(), total: self.total, label: PhantomData }
    }
}

impl<T> PartialEq for Histogram<T> {
    fn eq(&self, other: &Self) -> bool {
        // Trailing empty buckets do not make two histograms differ.
        let used = |counts: &[u64]| counts.len() - counts.iter().rev().take_while(|c| **c == 0).count();
        self.total == other.total && self.counts[..used(&self.counts)] == other.counts[..used(&other.counts)]
    }
}

impl<T> Eq for Histogram<T> {}

impl<T> fmt::Debug for Histogram<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram").field("total", &self.total).field("percentiles", &self.percentile_stats()).finish()
    }
}

/// Percentiles of a [`Histogram`] (each the lower bound of its bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PercentileStats {
    /// Samples recorded.
    pub samples: u64,
    /// 0.1th percentile.
    pub p0_1: u64,
    /// 1st percentile.
    pub p1: u64,
    /// 5th percentile.
    pub p5: u64,
    /// 10th percentile.
    pub p10: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
}

impl fmt::Display for PercentileStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[samples: {}, P0.1: {}, P1: {}, P5: {}, P10: {}, P50: {}, P90: {}, P99: {}, P99.9: {}]",
            self.samples, self.p0_1, self.p1, self.p5, self.p10, self.p50, self.p90, self.p99, self.p99_9
        )
    }
}

/// Named histograms shown together, a line each (openraft prints its per-stage latencies
/// with it).
pub struct AsciiChart<T = ()> {
    series: Vec<(String, Histogram<T>)>,
}

impl<T> AsciiChart<T> {
    /// A chart without series.
    pub fn new() -> Self {
        Self { series: Vec::new() }
    }

    /// Add `hist` under `name`.
    pub fn add(mut self, name: &str, hist: Histogram<T>) -> Self {
        self.series.push((name.to_string(), hist));
        self
    }

    /// A display of each series' sample count and median.
    pub fn compact(&self) -> ChartDisplay<'_, T> {
        ChartDisplay { chart: self, detailed: false }
    }

    /// A display of each series' sample count and percentiles.
    pub fn detailed(&self) -> ChartDisplay<'_, T> {
        ChartDisplay { chart: self, detailed: true }
    }
}

impl<T> Default for AsciiChart<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// How an [`AsciiChart`] prints (see [`AsciiChart::compact`] and [`AsciiChart::detailed`]).
pub struct ChartDisplay<'a, T> {
    chart: &'a AsciiChart<T>,
    detailed: bool,
}

impl<T> fmt::Display for ChartDisplay<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, hist) in &self.chart.series {
            let s = hist.percentile_stats();
            if self.detailed {
                writeln!(f, "{name}: n={} p50={} p90={} p99={} p99.9={}", s.samples, s.p50, s.p90, s.p99, s.p99_9)?;
            } else {
                writeln!(f, "{name}: n={} p50={}", s.samples, s.p50)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_in_the_bucket_whose_range_holds_it() {
        let mut probes: Vec<u64> = (0..4096).collect();
        for shift in 0..64 {
            let p = 1u64 << shift;
            probes.extend([p, p - 1, p + 1, p | (p >> 1), p | (p >> 2)]);
        }
        probes.push(u64::MAX);
        for v in probes {
            let i = bucket_of(v);
            assert!(i < BUCKETS, "{v} -> {i}");
            assert!(bucket_floor(i) <= v, "{v} below the floor of its bucket {i}");
            if i + 1 < BUCKETS {
                assert!(v < bucket_floor(i + 1), "{v} reaches the next bucket after {i}");
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn buckets_are_exact_below_eight_then_a_quarter_octave_wide() {
        for v in 0..EXACT_BELOW {
            assert_eq!(bucket_floor(bucket_of(v)), v);
        }
        let floors: Vec<u64> = (8..20).map(bucket_floor).collect();
        assert_eq!(floors, vec![8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56]);
    }

    #[test]
    fn percentiles_of_known_samples() {
        let mut h: Histogram = Histogram::new();
        assert_eq!(h.percentile_stats(), PercentileStats::default());
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.total(), 100);
        let s = h.percentile_stats();
        assert_eq!(s.samples, 100);
        assert_eq!(s.p1, 1);
        assert_eq!(s.p50, 48, "the 50th sample is 50, in the bucket 48..56");
        assert_eq!(s.p99, 96, "the 99th sample is 99, in the bucket 96..112");
        h.record_n(5, 0);
        assert_eq!(h.total(), 100, "zero samples record nothing");
    }

    #[test]
    fn merge_and_equality_ignore_unused_buckets() {
        let mut a: Histogram = Histogram::new();
        let mut b: Histogram = Histogram::new();
        a.record_n(3, 2);
        b.record(3);
        assert_ne!(a, b);
        b.record(3);
        assert_eq!(a, b);
        let mut big: Histogram = Histogram::new();
        big.record(1 << 40);
        big.clear();
        big.record_n(3, 2);
        assert_eq!(big, a, "a cleared histogram equals one that never grew");
        a.merge(&b);
        assert_eq!(a.total(), 4);
        assert_eq!(a.percentile(1.0), 3);
    }

    #[test]
    fn a_histogram_stays_small() {
        let mut h: Histogram = Histogram::new();
        for v in 0..1000 {
            h.record(v);
        }
        assert!(h.counts.len() <= bucket_of(999) + 1);
        assert!(h.counts.len() * 8 < 512, "{} bytes of counts", h.counts.len() * 8);
    }

    #[test]
    fn the_chart_prints_a_line_per_series() {
        let mut h: Histogram = Histogram::new();
        h.record(4);
        let chart = AsciiChart::new().add("one", h.clone()).add("two", h);
        assert_eq!(chart.compact().to_string(), "one: n=1 p50=4\ntwo: n=1 p50=4\n");
        assert!(chart.detailed().to_string().contains("p99.9=4"));
    }
}
