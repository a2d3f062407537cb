//! Checking one key.

use std::time::{Duration, Instant};

use crate::budget::Budget;
use crate::entry::Entry;
use crate::history::History;
use crate::op::Key;
use crate::prepare::prepare;
use crate::shrink::shrink;
use crate::verdict::Verdict;
use crate::wgl::linearizable;

/// The check of one key: its verdict and what it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReport {
    /// The key.
    pub key: Key,
    /// Entries of the key in the history.
    pub ops: usize,
    /// Operations the search had to place (after dropping failed operations, unknown reads and
    /// unknown writes nobody observed).
    pub searched: usize,
    /// Search steps taken, shrinking included.
    pub steps: u64,
    /// Wall-clock time taken, shrinking included.
    pub elapsed: Duration,
    /// The verdict.
    pub verdict: Verdict,
}

/// Check the operations of `key` in `history` as one register that starts absent.
///
/// `budget` bounds the search; when it finds a violation, shrinking it gets the same budget
/// again.
pub fn check_key(history: &History, key: &str, budget: Budget) -> KeyReport {
    let entries: Vec<&Entry> = history.entries().iter().filter(|e| e.key == key).collect();
    check_entries(key, &entries, budget)
}

pub(crate) fn check_entries(key: &str, entries: &[&Entry], budget: Budget) -> KeyReport {
    let started = Instant::now();
    let prepared = prepare(entries);
    let mut meter = budget.meter();
    let verdict = match linearizable(&prepared.ops, &mut meter) {
        Ok(true) => Verdict::Linearizable,
        Err(exhausted) => Verdict::Undetermined { reason: exhausted.0 },
        Ok(false) => {
            let mut shrink_meter = budget.meter();
            let (kept, shrunk) = shrink(&prepared.ops, &mut shrink_meter);
            meter.steps += shrink_meter.steps;
            let minimal = kept.iter().map(|&i| entries[prepared.origin[i]].clone()).collect();
            Verdict::NotLinearizable { key: key.to_string(), minimal: History::from_entries(minimal), shrunk }
        }
    };
    KeyReport {
        key: key.to_string(),
        ops: entries.len(),
        searched: prepared.ops.len(),
        steps: meter.steps,
        elapsed: started.elapsed(),
        verdict,
    }
}
