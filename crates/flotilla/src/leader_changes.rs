//! When a group's known leader last changed, for status and `flotilla doctor`.
//!
//! The group's leader watch (`group.rs`) records each change here: a count since the group
//! started and the times of the most recent ones, so status can say how often leadership
//! moved in the last minutes (a flapping leader is the usual sign of a slow disk, an
//! overloaded node or a lossy link). Recorded off the request path, on the watch task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

use crate::node_status::LeadershipHistory;

/// Most recent changes whose times are kept.
pub const RECENT_LEADER_CHANGES: usize = 16;

/// The leader changes of one group.
#[derive(Debug, Default)]
pub struct LeaderChangeLog {
    /// Changes since the group started (also `flotilla_leader_changes_total`).
    total: AtomicU64,
    /// Times of the last [`RECENT_LEADER_CHANGES`] changes, oldest first.
    recent: Mutex<VecDeque<Instant>>,
}

impl LeaderChangeLog {
    /// The known leader changed now.
    pub fn record(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= RECENT_LEADER_CHANGES {
            recent.pop_front();
        }
        recent.push_back(Instant::now());
    }

    /// Changes since the group started.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The changes as status shows them, ages taken now.
    pub fn history(&self) -> LeadershipHistory {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let recent_ms_ago: Vec<u64> = recent.iter().rev().map(|at| millis(at.elapsed())).collect();
        LeadershipHistory { changes: self.total(), last_change_ms_ago: recent_ms_ago.first().copied(), recent_ms_ago }
    }
}

/// Milliseconds of `d`, saturating.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_changes_newest_first() {
        let log = LeaderChangeLog::default();
        assert_eq!(log.history(), LeadershipHistory::default());
        for _ in 0..RECENT_LEADER_CHANGES + 3 {
            log.record();
        }
        let h = log.history();
        assert_eq!(h.changes, RECENT_LEADER_CHANGES as u64 + 3);
        assert_eq!(h.recent_ms_ago.len(), RECENT_LEADER_CHANGES);
        assert!(h.recent_ms_ago.windows(2).all(|w| w[0] <= w[1]), "newest first: {:?}", h.recent_ms_ago);
        assert_eq!(h.last_change_ms_ago, h.recent_ms_ago.first().copied());
    }
}
