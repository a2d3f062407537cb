//! Automatic compaction: the leader of each namespace keeps the history its retention
//! settings ask for (`Config::compact_keep_revisions`, `compact_keep_secs`) and compacts the
//! rest, so history on disk stays bounded.
//!
//! [`target`] decides, a pure function of the revisions, the retention and the samples of
//! (time, revision) this loop took; the loop reads a namespace only when its applied index
//! moved since the last look, so idle namespaces cost nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use flotilla_core::kv::{self, Revisions};
use flotilla_core::Namespace;
use tokio::time::Instant;
use tracing::{info, warn, Instrument};

use crate::node::Node;

/// How often the loop runs.
const TICK: Duration = Duration::from_secs(1);
/// Samples of (time, revision) kept per namespace for age-based retention.
const MAX_SAMPLES: usize = 64;
/// Most revisions one automatic compaction leaves for the next (a batch, not one per write).
const MAX_BATCH: u64 = 1_000;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retention {
    /// Revisions kept behind the current one; 0: no rule by count.
    pub(crate) revisions: u64,
    /// History kept by age; `None`: no rule by age.
    pub(crate) age: Option<Duration>,
}

impl Retention {
    fn is_off(&self) -> bool {
        self.revisions == 0 && self.age.is_none()
    }

    /// Revisions to gain before compacting again.
    fn batch(&self) -> u64 {
        match self.revisions {
            0 => 1,
            n => (n / 10).clamp(1, MAX_BATCH),
        }
    }
}

/// The revision to compact to now, if any: the oldest revision either rule still needs, once
/// that is a batch past the compacted one.
pub(crate) fn target(
    retention: Retention,
    revs: Revisions,
    samples: &VecDeque<(Instant, u64)>,
    now: Instant,
) -> Option<u64> {
    let by_count = (retention.revisions > 0).then(|| revs.current.saturating_sub(retention.revisions));
    let by_age = retention.age.map(|age| {
        // The revision current `age` ago: the newest sample at least that old.
        samples.iter().rev().find(|(at, _)| now.saturating_duration_since(*at) >= age).map_or(0, |(_, r)| *r)
    });
    let keep_from = [by_count, by_age].into_iter().flatten().min()?;
    (keep_from >= revs.compacted.max(1) + retention.batch()).then_some(keep_from)
}

pub(crate) fn spawn(node: &Arc<Node>) {
    let retention = Retention {
        revisions: node.config.compact_keep_revisions,
        age: (node.config.compact_keep_secs > 0).then(|| Duration::from_secs(node.config.compact_keep_secs)),
    };
    if retention.is_off() {
        return;
    }
    let weak = Arc::downgrade(node);
    tokio::spawn(run(weak, retention).instrument(tracing::info_span!("auto_compact")));
}

/// What the loop remembers of one namespace.
#[derive(Debug, Default)]
struct Seen {
    applied: u64,
    samples: VecDeque<(Instant, u64)>,
}

async fn run(weak: Weak<Node>, retention: Retention) {
    let sample_every = retention.age.map_or(Duration::MAX, |age| (age / 16).max(TICK));
    let mut seen: HashMap<Namespace, Seen> = HashMap::new();
    loop {
        tokio::time::sleep(TICK).await;
        let Some((node, groups)) = Node::kv_groups_for_loop(&weak, |open| seen.retain(|ns, _| open(ns))) else {
            return;
        };
        for group in &groups {
            let state = seen.entry(group.namespace.clone()).or_default();
            let applied = group.applied_index();
            let now = Instant::now();
            let sample_due = state.samples.back().is_none_or(|(at, _)| now.duration_since(*at) >= sample_every);
            if applied == state.applied && !sample_due {
                continue;
            }
            state.applied = applied;
            let Ok(Ok(revs)) = node.store.view(&group.namespace).map(|view| kv::revisions(&view)) else { continue };
            if sample_due && retention.age.is_some() {
                state.samples.push_back((now, revs.current));
                if state.samples.len() > MAX_SAMPLES {
                    state.samples.pop_front();
                }
            }
            if !group.is_leader() {
                continue;
            }
            let Some(to) = target(retention, revs, &state.samples, now) else { continue };
            let Ok(cluster) = node.cluster(group.namespace.as_str()) else { continue };
            match cluster.compact(to).await {
                Ok(_) => info!(namespace = %group.namespace, revision = to, "compacted the history"),
                Err(e) => warn!(namespace = %group.namespace, revision = to, error = %e, "automatic compaction failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let samples: VecDeque<(Instant, u64)> = [(t0, 100), (t0 + s(60), 500), (t0 + s(120), 900)].into();
        let revs = |current, compacted| Revisions { current, compacted };
        let count = |n| Retention { revisions: n, age: None };
        let age = |secs| Retention { revisions: 0, age: Some(s(secs)) };
        let cases = [
            ("too little history yet", count(1_000), revs(900, 0), t0, None),
            ("a batch past the compacted revision", count(100), revs(1_000, 0), t0, Some(900)),
            ("not yet a batch further", count(100), revs(1_000, 895), t0, None),
            ("the batch is a tenth of the kept revisions", count(100), revs(1_010, 900), t0, Some(910)),
            ("by age: the revision current that long ago", age(60), revs(1_000, 0), t0 + s(125), Some(500)),
            ("by age: nothing old enough", age(600), revs(1_000, 0), t0 + s(125), None),
            (
                "both rules: the older revision wins (more history kept)",
                Retention { revisions: 50, age: Some(s(60)) },
                revs(1_000, 0),
                t0 + s(125),
                Some(500),
            ),
        ];
        for (name, retention, revs, now, expected) in cases {
            assert_eq!(target(retention, revs, &samples, now), expected, "{name}");
        }
    }
}
