//! The leader's membership lifecycle as a pure decision: promote caught-up learners up to the
//! voter target, replace or remove members that stay unreachable, never below the minimum
//! quorum, one change at a time.
//!
//! [`decide`] sees only an [`Observed`] configuration (who votes, who learns, how each member
//! is doing) and answers one [`Decision`]; it holds no Raft handle and reads no clock (how long
//! a member has been silent comes in as a duration, see [`health`]). The node-level task that
//! observes every led namespace, calls it and carries the change out is
//! `autopilot_loop.rs`. The shell acts only where the node leads the namespace, the group is
//! not quiesced and no membership change is in progress; since each decision is a single
//! change, every step is one committed configuration before the next is considered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A learner within this many entries of the leader's log counts as caught up.
pub const CAUGHT_UP_ENTRIES: u64 = 64;

/// How one member (not the leader itself) is doing, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    /// Its log is within [`CAUGHT_UP_ENTRIES`] of the leader's.
    pub caught_up: bool,
    /// It has not acknowledged a heartbeat for longer than the dead-member timeout.
    pub dead: bool,
}

/// What the leader knows of one member at a tick, before it is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberFacts {
    /// How long the member has not acknowledged the leader (since its last acknowledgement,
    /// or since the leader first saw it without one: a member that never answered is as dead
    /// as one that stopped).
    pub silence: Duration,
    /// The last log index replicated to it, if any.
    pub matched: Option<u64>,
    /// The leader's last log index.
    pub leader_last: u64,
}

/// Judge one member: dead past `dead_after` of silence (never, when `None`: the timeout is
/// off), caught up within [`CAUGHT_UP_ENTRIES`] of the leader's log.
pub fn health(facts: MemberFacts, dead_after: Option<Duration>) -> Health {
    Health {
        caught_up: facts.matched.is_some_and(|i| i.saturating_add(CAUGHT_UP_ENTRIES) >= facts.leader_last),
        dead: dead_after.is_some_and(|limit| facts.silence > limit),
    }
}

/// The configuration of one namespace as its leader sees it, with the node's targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed<Id> {
    /// The leader (this node); never judged, never removed.
    pub me: Id,
    /// Voters of the committed configuration.
    pub voters: BTreeSet<Id>,
    /// Learners of the committed configuration.
    pub learners: BTreeSet<Id>,
    /// How every member but `me` is doing; a member missing here counts as alive and behind.
    pub health: BTreeMap<Id, Health>,
    /// Voters wanted (`--voters`).
    pub voter_target: usize,
    /// Never fewer voters than this (`--min-quorum`).
    pub min_quorum: usize,
}

/// The one change the leader makes at this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<Id> {
    /// Nothing to change.
    Idle,
    /// Swap the dead voter `dead` for the caught-up learner `fresh` in one configuration.
    Replace {
        /// The unreachable voter taken out.
        dead: Id,
        /// The caught-up learner made a voter.
        fresh: Id,
    },
    /// Make the caught-up learner a voter (fewer voters than the target).
    Promote(Id),
    /// Remove the dead voter (no learner can replace it, and enough voters stay).
    RemoveVoter(Id),
    /// Remove the dead learner.
    RemoveLearner(Id),
    /// A voter is dead but removing it would leave fewer than the minimum quorum: keep it and
    /// say why in status.
    Blocked {
        /// The unreachable voter kept.
        dead: Id,
    },
}

impl<Id: Copy + std::fmt::Display> Decision<Id> {
    /// The member this decision makes a voter, if any.
    pub fn promoted(&self) -> Option<Id> {
        match self {
            Decision::Replace { fresh, .. } | Decision::Promote(fresh) => Some(*fresh),
            _ => None,
        }
    }

    /// The member this decision removes, if any.
    pub fn removed(&self) -> Option<Id> {
        match self {
            Decision::Replace { dead, .. } | Decision::RemoveVoter(dead) | Decision::RemoveLearner(dead) => Some(*dead),
            _ => None,
        }
    }

    /// The line the formation timeline (or status reason, for [`Decision::Blocked`]) shows.
    pub fn describe(&self, observed: &Observed<Id>) -> Option<String> {
        match self {
            Decision::Idle => None,
            Decision::Replace { dead, fresh } => {
                Some(format!("replacing unreachable voter {dead} with caught-up learner {fresh}"))
            }
            Decision::Promote(fresh) => Some(format!(
                "promoting caught-up learner {fresh} ({} of {} voters)",
                observed.voters.len() + 1,
                observed.voter_target
            )),
            Decision::RemoveVoter(dead) => {
                Some(format!("removing unreachable voter {dead}; no learner can replace it"))
            }
            Decision::RemoveLearner(dead) => Some(format!("removing unreachable learner {dead}")),
            Decision::Blocked { dead } => Some(format!(
                "voter {dead} is unreachable but removing it would leave fewer than {} voters",
                observed.min_quorum
            )),
        }
    }
}

/// The one change to make, in this order of preference:
///
/// 1. a dead voter and a caught-up live learner: replace the one by the other (the voter count
///    stays, so the minimum quorum is never at stake);
/// 2. fewer voters than the target and a caught-up live learner: promote it;
/// 3. a dead voter: remove it if more than the minimum quorum of voters stay, else keep it
///    ([`Decision::Blocked`]);
/// 4. a dead learner: remove it.
///
/// Among candidates the lowest id is chosen, so the answer depends on the facts only.
pub fn decide<Id: Copy + Ord>(observed: &Observed<Id>) -> Decision<Id> {
    let health = |id: &Id| (*id != observed.me).then(|| observed.health.get(id).copied().unwrap_or_default());
    let ready_learner = observed.learners.iter().find(|id| health(id).is_some_and(|h| h.caught_up && !h.dead));
    let dead_voter = observed.voters.iter().find(|id| health(id).is_some_and(|h| h.dead));
    let dead_learner = observed.learners.iter().find(|id| health(id).is_some_and(|h| h.dead));
    match (dead_voter, ready_learner) {
        (Some(dead), Some(fresh)) => Decision::Replace { dead: *dead, fresh: *fresh },
        (_, Some(fresh)) if observed.voters.len() < observed.voter_target => Decision::Promote(*fresh),
        (Some(dead), _) if observed.voters.len() > observed.min_quorum => Decision::RemoveVoter(*dead),
        (Some(dead), _) => Decision::Blocked { dead: *dead },
        (None, _) => dead_learner.map_or(Decision::Idle, |dead| Decision::RemoveLearner(*dead)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIVE: Health = Health { caught_up: true, dead: false };
    const BEHIND: Health = Health { caught_up: false, dead: false };
    const DEAD: Health = Health { caught_up: false, dead: true };

    fn observed(voters: &[u64], learners: &[u64], health: &[(u64, Health)]) -> Observed<u64> {
        Observed {
            me: 1,
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            health: health.iter().copied().collect(),
            voter_target: 3,
            min_quorum: 2,
        }
    }

    #[test]
    fn table() {
        use Decision::*;
        let cases: Vec<(&str, Observed<u64>, Decision<u64>)> = vec![
            ("all well", observed(&[1, 2, 3], &[], &[(2, ALIVE), (3, ALIVE)]), Idle),
            (
                "dead voter, ready learner: replace",
                observed(&[1, 2, 3], &[4], &[(2, DEAD), (3, ALIVE), (4, ALIVE)]),
                Replace { dead: 2, fresh: 4 },
            ),
            (
                "dead voter, learner behind: remove (3 > 2)",
                observed(&[1, 2, 3], &[4], &[(2, DEAD), (3, ALIVE), (4, BEHIND)]),
                RemoveVoter(2),
            ),
            ("dead voter at the minimum quorum: blocked", observed(&[1, 2], &[], &[(2, DEAD)]), Blocked { dead: 2 }),
            ("below target, ready learner: promote", observed(&[1, 2], &[3], &[(2, ALIVE), (3, ALIVE)]), Promote(3)),
            ("below target, learner behind: wait", observed(&[1, 2], &[3], &[(2, ALIVE), (3, BEHIND)]), Idle),
            (
                "at target, ready learner: stays a learner",
                observed(&[1, 2, 3], &[4], &[(2, ALIVE), (3, ALIVE), (4, ALIVE)]),
                Idle,
            ),
            (
                "dead learner: remove",
                observed(&[1, 2, 3], &[4], &[(2, ALIVE), (3, ALIVE), (4, DEAD)]),
                RemoveLearner(4),
            ),
            (
                "a dead caught-up learner is not promoted",
                observed(&[1, 2], &[3], &[(2, ALIVE), (3, Health { caught_up: true, dead: true })]),
                RemoveLearner(3),
            ),
            (
                "promotion before removing a dead learner",
                observed(&[1, 2], &[3, 4], &[(2, ALIVE), (3, DEAD), (4, ALIVE)]),
                Promote(4),
            ),
            (
                "a dead voter blocked is reported before a dead learner",
                observed(&[1, 2], &[3], &[(2, DEAD), (3, DEAD)]),
                Blocked { dead: 2 },
            ),
            (
                "lowest id first",
                observed(&[1, 5, 6, 7], &[8, 9], &[(5, ALIVE), (6, DEAD), (7, DEAD), (8, ALIVE), (9, ALIVE)]),
                Replace { dead: 6, fresh: 8 },
            ),
            ("unknown health: alive and behind", observed(&[1, 2], &[3], &[]), Idle),
            (
                "the leader itself is never judged",
                observed(&[1, 2, 3], &[], &[(1, DEAD), (2, ALIVE), (3, ALIVE)]),
                Idle,
            ),
        ];
        for (name, o, want) in cases {
            assert_eq!(decide(&o), want, "{name}");
        }
    }

    #[test]
    fn health_table() {
        let s = Duration::from_secs;
        let facts = |silence, matched, leader_last| MemberFacts { silence, matched, leader_last };
        assert_eq!(health(facts(s(31), Some(100), 100), Some(s(30))), Health { caught_up: true, dead: true });
        assert_eq!(health(facts(s(30), Some(36), 100), Some(s(30))), Health { caught_up: true, dead: false });
        assert_eq!(health(facts(s(1), Some(35), 100), Some(s(30))), Health { caught_up: false, dead: false });
        assert_eq!(health(facts(s(1), None, 0), Some(s(30))), Health { caught_up: false, dead: false });
        assert_eq!(health(facts(s(9_999), Some(0), 0), None), Health { caught_up: true, dead: false }, "timeout off");
        assert!(health(facts(s(0), Some(u64::MAX), u64::MAX), None).caught_up, "no overflow");
    }

    /// Every configuration of up to four other nodes (each absent, voter or learner, in each of
    /// the four health states) under every target and minimum quorum up to four: the decision
    /// is one legal change.
    #[test]
    fn exhaustive_every_decision_is_one_safe_change() {
        let healths = [ALIVE, BEHIND, DEAD, Health { caught_up: true, dead: true }];
        let others = [2u64, 3, 4, 5];
        let mut checked = 0u64;
        for roles in 0..3u32.pow(4) {
            for hs in 0..4u32.pow(4) {
                let mut o = observed(&[1], &[], &[]);
                for (i, id) in others.iter().enumerate() {
                    match (roles / 3u32.pow(i as u32)) % 3 {
                        1 => o.voters.insert(*id),
                        2 => o.learners.insert(*id),
                        _ => continue,
                    };
                    o.health.insert(*id, healths[((hs / 4u32.pow(i as u32)) % 4) as usize]);
                }
                for target in 1..=4 {
                    for min_quorum in 1..=target {
                        let o = Observed { voter_target: target, min_quorum, ..o.clone() };
                        check(&o, decide(&o));
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100_000);
    }

    fn check(o: &Observed<u64>, d: Decision<u64>) {
        let h = |id: u64| o.health[&id];
        let any_dead_voter = o.voters.iter().any(|v| *v != o.me && h(*v).dead);
        match d {
            Decision::Idle => {
                assert!(!any_dead_voter, "{o:?}: a dead voter ignored");
                assert!(o.learners.iter().all(|l| !h(*l).dead), "{o:?}: a dead learner ignored");
                if o.voters.len() < o.voter_target {
                    assert!(o.learners.iter().all(|l| !h(*l).caught_up), "{o:?}: a ready learner not promoted");
                }
            }
            Decision::Replace { dead, fresh } => {
                assert!(o.voters.contains(&dead) && h(dead).dead && dead != o.me);
                assert!(o.learners.contains(&fresh) && h(fresh).caught_up && !h(fresh).dead);
            }
            Decision::Promote(fresh) => {
                assert!(o.voters.len() < o.voter_target, "{o:?}: promoted past the target");
                assert!(o.learners.contains(&fresh) && h(fresh).caught_up && !h(fresh).dead);
                assert!(!any_dead_voter, "{o:?}: promoted instead of replacing");
            }
            Decision::RemoveVoter(dead) => {
                assert!(o.voters.len() > o.min_quorum, "{o:?}: below the minimum quorum");
                assert!(o.voters.contains(&dead) && h(dead).dead && dead != o.me);
            }
            Decision::Blocked { dead } => {
                assert!(o.voters.len() <= o.min_quorum && o.voters.contains(&dead) && h(dead).dead);
            }
            Decision::RemoveLearner(dead) => {
                assert!(o.learners.contains(&dead) && h(dead).dead && !any_dead_voter);
            }
        }
    }
}
