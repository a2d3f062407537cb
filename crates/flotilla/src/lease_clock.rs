//! The leader's clock of a namespace's leases.
//!
//! A lease's time to live is in the replicated state; when it runs out is not. Only the
//! leader keeps deadlines, in memory: a keep-alive renews one without a log entry, and the
//! leader proposes the revoke of an expired lease (`lease_expiry.rs`). The clock belongs to one
//! term: a leader of a new term starts it afresh and gives every lease its full time to live
//! again (etcd's rule: after a leader change a lease may live longer, never shorter).
//!
//! [`reconcile`] is the decision, a pure function of the stored leases, the deadlines and the
//! time, tested table-style.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Lease deadlines of one term.
#[derive(Debug, Default)]
struct Deadlines {
    term: u64,
    by_lease: HashMap<u64, Instant>,
}

/// The lease clock of one namespace's group.
#[derive(Debug, Default)]
pub(crate) struct LeaseClock {
    state: Mutex<Deadlines>,
}

impl LeaseClock {
    /// The deadlines of `term`, started afresh when the clock held another term's.
    fn of_term(&self, term: u64) -> std::sync::MutexGuard<'_, Deadlines> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.term != term {
            *state = Deadlines { term, by_lease: HashMap::new() };
        }
        state
    }

    /// Renew lease `id` (time to live `ttl`) at `now`, as the leader of `term`.
    pub(crate) fn keep_alive(&self, term: u64, id: u64, ttl: Duration, now: Instant) {
        self.of_term(term).by_lease.insert(id, now + ttl);
    }

    /// What is left of lease `id` at `now`; a lease the clock has not seen yet has its whole
    /// time to live.
    pub(crate) fn remaining(&self, term: u64, id: u64, ttl: Duration, now: Instant) -> Duration {
        let mut state = self.of_term(term);
        let deadline = *state.by_lease.entry(id).or_insert(now + ttl);
        deadline.saturating_duration_since(now)
    }

    /// Bring the clock up to date with `stored` leases (`(id, ttl_secs)`) at `now`, as the
    /// leader of `term`; the expired ones, at most `max`.
    pub(crate) fn expired(&self, term: u64, stored: &[(u64, u64)], now: Instant, max: usize) -> Vec<u64> {
        reconcile(&mut self.of_term(term).by_lease, stored, now, max)
    }

    /// Whether the clock tracks any lease.
    pub(crate) fn is_empty(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).by_lease.is_empty()
    }

    /// Forget everything (this node no longer leads).
    pub(crate) fn clear(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Deadlines::default();
    }
}

/// Leases first seen get their full time to live from `now`; leases no longer stored are
/// forgotten; the ones whose deadline has passed are returned (earliest deadline first, at
/// most `max`) and stay until their revoke removes them from the store.
pub(crate) fn reconcile(
    deadlines: &mut HashMap<u64, Instant>,
    stored: &[(u64, u64)],
    now: Instant,
    max: usize,
) -> Vec<u64> {
    let live: HashMap<u64, u64> = stored.iter().copied().collect();
    deadlines.retain(|id, _| live.contains_key(id));
    for (id, ttl_secs) in stored {
        deadlines.entry(*id).or_insert(now + Duration::from_secs(*ttl_secs));
    }
    let mut expired: Vec<(Instant, u64)> =
        deadlines.iter().filter(|(_, deadline)| **deadline <= now).map(|(id, deadline)| (*deadline, *id)).collect();
    expired.sort();
    expired.into_iter().take(max).map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        struct Case {
            name: &'static str,
            deadlines: Vec<(u64, Duration)>,
            stored: Vec<(u64, u64)>,
            at: Duration,
            expired: Vec<u64>,
            after: Vec<(u64, Duration)>,
        }
        let cases = [
            Case {
                name: "a lease first seen gets its whole time to live",
                deadlines: vec![],
                stored: vec![(1, 10)],
                at: s(100),
                expired: vec![],
                after: vec![(1, s(110))],
            },
            Case {
                name: "a passed deadline expires, earliest first",
                deadlines: vec![(1, s(5)), (2, s(3)), (3, s(50))],
                stored: vec![(1, 10), (2, 10), (3, 10)],
                at: s(6),
                expired: vec![2, 1],
                after: vec![(1, s(5)), (2, s(3)), (3, s(50))],
            },
            Case {
                name: "a lease revoked elsewhere is forgotten",
                deadlines: vec![(1, s(5)), (2, s(3))],
                stored: vec![(2, 10)],
                at: s(4),
                expired: vec![2],
                after: vec![(2, s(3))],
            },
            Case {
                name: "a deadline exactly now has expired",
                deadlines: vec![(7, s(4))],
                stored: vec![(7, 1)],
                at: s(4),
                expired: vec![7],
                after: vec![(7, s(4))],
            },
        ];
        for case in cases {
            let mut deadlines: HashMap<u64, Instant> = case.deadlines.iter().map(|(id, d)| (*id, t0 + *d)).collect();
            let expired = reconcile(&mut deadlines, &case.stored, t0 + case.at, 10);
            assert_eq!(expired, case.expired, "{}", case.name);
            let after: HashMap<u64, Instant> = case.after.iter().map(|(id, d)| (*id, t0 + *d)).collect();
            assert_eq!(deadlines, after, "{}", case.name);
        }
    }

    #[test]
    fn a_new_term_gives_every_lease_its_whole_time_again() {
        let clock = LeaseClock::default();
        let t0 = Instant::now();
        clock.keep_alive(3, 1, Duration::from_secs(10), t0);
        assert_eq!(clock.expired(3, &[(1, 10)], t0 + Duration::from_secs(11), 10), vec![1]);
        // The next leader (term 4) starts afresh: nothing expires before a full TTL.
        assert!(clock.expired(4, &[(1, 10)], t0 + Duration::from_secs(11), 10).is_empty());
        assert_eq!(
            clock.remaining(4, 1, Duration::from_secs(10), t0 + Duration::from_secs(12)),
            Duration::from_secs(9)
        );
        assert_eq!(clock.expired(4, &[(1, 10)], t0 + Duration::from_secs(21), 10), vec![1]);
        clock.clear();
        assert!(clock.is_empty());
    }
}
