//! Checking a whole history, key by key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::budget::Budget;
use crate::entry::{Entry, Millis};
use crate::history::History;
use crate::key_check::{check_entries, KeyReport};
use crate::op::{Key, Outcome};
use crate::verdict::Verdict;

/// Most threads [`check_all`] uses.
pub const MAX_THREADS: usize = 4;

/// How the operations of a history ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Operations that took effect.
    pub ok: usize,
    /// Operations that definitely did not.
    pub fail: usize,
    /// Operations whose outcome is unknown (pending ones included).
    pub unknown: usize,
}

impl Counts {
    /// Every operation.
    pub fn total(&self) -> usize {
        self.ok + self.fail + self.unknown
    }
}

/// The result of [`check_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// How the operations ended.
    pub counts: Counts,
    /// The check of each key.
    pub keys: BTreeMap<Key, KeyReport>,
    /// Wall-clock time of the whole check.
    pub elapsed: Duration,
}

impl Report {
    /// Whether every key is linearizable (none undetermined).
    pub fn is_linearizable(&self) -> bool {
        self.keys.values().all(|k| k.verdict.is_linearizable())
    }

    /// The keys found not linearizable.
    pub fn violations(&self) -> Vec<&KeyReport> {
        self.keys.values().filter(|k| k.verdict.is_violation()).collect()
    }

    /// The keys the budget did not suffice for.
    pub fn undetermined(&self) -> Vec<&KeyReport> {
        self.keys.values().filter(|k| k.verdict.is_undetermined()).collect()
    }

    /// One verdict for the whole history: the first violation, else the first undetermined
    /// key, else linearizable.
    pub fn verdict(&self) -> Verdict {
        let first = self.violations().into_iter().next().or_else(|| self.undetermined().into_iter().next());
        first.map(|k| k.verdict.clone()).unwrap_or(Verdict::Linearizable)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        let bad = self.violations();
        let unsure = self.undetermined();
        writeln!(
            f,
            "{} keys, {} ops ({} ok, {} fail, {} unknown): {} linearizable, {} not linearizable, {} undetermined, checked in {}",
            self.keys.len(),
            c.total(),
            c.ok,
            c.fail,
            c.unknown,
            self.keys.len() - bad.len() - unsure.len(),
            bad.len(),
            unsure.len(),
            Millis(self.elapsed),
        )?;
        for k in bad.iter().chain(&unsure) {
            write!(f, "key {:?} ({} ops, {} searched, {} steps): {}", k.key, k.ops, k.searched, k.steps, k.verdict)?;
            if k.verdict.is_undetermined() {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// Check every key of `history` independently (in up to [`MAX_THREADS`] threads), each within
/// `budget`.
pub fn check_all(history: &History, budget: Budget) -> Report {
    let started = Instant::now();
    let mut counts = Counts::default();
    let mut by_key: HashMap<&Key, Vec<&Entry>> = HashMap::new();
    for e in history.entries() {
        match e.effective_outcome() {
            Outcome::Ok => counts.ok += 1,
            Outcome::Fail => counts.fail += 1,
            Outcome::Unknown => counts.unknown += 1,
        }
        by_key.entry(&e.key).or_default().push(e);
    }
    let work: Vec<(&Key, Vec<&Entry>)> = by_key.into_iter().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS).min(work.len());
    let next = AtomicUsize::new(0);
    let results = Mutex::new(BTreeMap::new());
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some((key, entries)) = work.get(i) else {
            return;
        };
        let report = check_entries(key, entries, budget);
        results.lock().unwrap_or_else(|p| p.into_inner()).insert((*key).clone(), report);
    };
    if threads <= 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(worker);
            }
        });
    }
    let keys = results.into_inner().unwrap_or_else(|p| p.into_inner());
    Report { counts, keys, elapsed: started.elapsed() }
}
