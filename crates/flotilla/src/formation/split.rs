//! Detecting another cluster of the same namespace.
//!
//! Two clusters of one namespace can exist when formation ran on both sides of a partition
//! (or with `--expect` set too low for the nodes started). When a member hears from a member
//! of another cluster, the split is recorded in status, counted in metrics and logged loudly
//! once per cluster met. What happens next is decided by [`decide`], a pure function of the
//! [`Meeting`] (both clusters' ids, data and voters, whether this node leads, what is already
//! recorded): a side that never acknowledged a write ([`absorbable`]) dissolves into the other
//! when the other survives ([`survivor_is_other`]); otherwise both keep serving and an operator
//! chooses (see docs/OPERATIONS.md, "Two clusters of one namespace"). The shell,
//! `Node::watch_for_splits`, observes, records and acts.

use std::sync::Arc;

use flotilla_core::formation::{ClusterId, PeerPhase, PeerView};
use flotilla_core::types::NodeId;
use tracing::warn;

use super::driver::Views;
use super::state::{Formation, FormationCounters, SplitReport};
use crate::group::Group;
use crate::node::Node;

/// Most other clusters remembered per namespace (a hostile peer could invent any number).
pub const MAX_SPLITS: usize = 16;

/// Which of two clusters should survive a merge: the one holding data, then the larger, then
/// the lower id. Both sides compute the same answer from the same facts.
pub fn survivor_is_other(mine: (&ClusterId, bool, u32), other: (&ClusterId, bool, u32)) -> bool {
    let key = |c: (&ClusterId, bool, u32)| (c.1, c.2, std::cmp::Reverse(c.0.clone()));
    key(other) > key(mine)
}

/// Whether a cluster may dissolve into another without losing an acknowledged write: it holds
/// no client data at all.
pub fn absorbable(holds_data: bool) -> bool {
    !holds_data
}

/// Two clusters of one namespace meeting, as one member of the first sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meeting<'a> {
    /// This node's cluster (empty: unnamed).
    pub mine: &'a str,
    /// This node's state machine holds client data (or that could not be read).
    pub my_data: bool,
    /// Voters of this node's configuration.
    pub my_voters: u32,
    /// The cluster a peer reported (empty: it names none).
    pub other: &'a str,
    /// The other cluster holds client data.
    pub other_data: bool,
    /// Voters of the other cluster.
    pub other_voters: u32,
    /// This node leads its cluster.
    pub leading: bool,
    /// The other cluster is already recorded in this namespace's split reports.
    pub recorded: bool,
    /// How many other clusters are recorded.
    pub reports: usize,
}

/// How a split resolves, as status and the log say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// This cluster holds no data and the other survives: this one dissolves into it.
    DissolveMine,
    /// The other cluster holds no data and this one survives: it dissolves into this one.
    AbsorbOther,
    /// Both hold data: both keep serving until an operator dissolves one.
    Operator,
}

impl Resolution {
    /// The sentence status and the log show.
    pub fn describe(self) -> &'static str {
        match self {
            Resolution::DissolveMine => "this cluster holds no data and will dissolve into the other",
            Resolution::AbsorbOther => "the other cluster holds no data and will dissolve into this one",
            Resolution::Operator => {
                "both clusters hold data: both keep serving; an operator must choose \
                 (flotilla ns dissolve on the losing side, see docs/OPERATIONS.md)"
            }
        }
    }
}

/// What to do about one meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitDecision {
    /// Not a split (same cluster, or a side without a name), or one more cluster past
    /// [`MAX_SPLITS`]: nothing to record or do.
    Ignore,
    /// Record (or refresh) the split report with its resolution.
    Record {
        /// How the split resolves.
        resolution: Resolution,
        /// First meeting with this cluster: count it, log it loudly, note it in the timeline.
        announce: bool,
        /// This node leads the losing, absorbable side: dissolve its cluster now.
        dissolve: bool,
    },
}

/// Decide what a meeting means. Both sides compute the same resolution from the same facts,
/// so at most one side dissolves, and only one that holds no data.
pub fn decide(m: &Meeting<'_>) -> SplitDecision {
    if m.mine.is_empty() || m.other.is_empty() || m.mine == m.other || (!m.recorded && m.reports >= MAX_SPLITS) {
        return SplitDecision::Ignore;
    }
    let mine = m.mine.to_string();
    let other = m.other.to_string();
    let other_wins = survivor_is_other((&mine, m.my_data, m.my_voters), (&other, m.other_data, m.other_voters));
    let resolution = match (other_wins, absorbable(m.my_data), absorbable(m.other_data)) {
        (true, true, _) => Resolution::DissolveMine,
        (false, _, true) => Resolution::AbsorbOther,
        _ => Resolution::Operator,
    };
    SplitDecision::Record {
        resolution,
        announce: !m.recorded,
        dissolve: resolution == Resolution::DissolveMine && m.leading,
    }
}

impl Node {
    /// Look at what the peers of a member reported: record every other cluster of the
    /// namespace met, and dissolve this node's cluster where [`decide`] says so.
    pub(crate) async fn watch_for_splits(
        &self,
        group: &Arc<Group>,
        formation: &Formation,
        mine: &ClusterId,
        views: &Views,
    ) {
        let foreign = |v: &(NodeId, PeerView)| matches!(&v.1.phase, PeerPhase::Member(o) if !o.cluster.is_empty() && o.cluster != *mine);
        // The store is read only when another cluster is actually in view: this runs every tick.
        if mine.is_empty() || !views.iter().any(foreign) {
            return;
        }
        let my_data = self.store.holds_data(&formation.namespace).unwrap_or(true);
        let my_voters = group.raft.voter_ids().count() as u32;
        for (peer, view) in views {
            let PeerPhase::Member(other) = &view.phase else { continue };
            let decision = {
                let mut inner = formation.lock();
                let meeting = Meeting {
                    mine,
                    my_data,
                    my_voters,
                    other: &other.cluster,
                    other_data: other.holds_data,
                    other_voters: other.voters,
                    leading: group.is_leader(),
                    recorded: inner.splits.contains_key(&other.cluster),
                    reports: inner.splits.len(),
                };
                let decision = decide(&meeting);
                if let SplitDecision::Record { resolution, .. } = decision {
                    inner.splits.insert(
                        other.cluster.clone(),
                        SplitReport {
                            cluster: other.cluster.clone(),
                            seen_via: *peer,
                            voters: other.voters,
                            holds_data: other.holds_data,
                            resolution: resolution.describe().to_string(),
                        },
                    );
                }
                decision
            };
            let SplitDecision::Record { resolution, announce, dissolve } = decision else { continue };
            if announce {
                let resolution = resolution.describe();
                FormationCounters::bump(&formation.counters.splits);
                warn!(
                    other_cluster = %other.cluster, via = %peer, other_voters = other.voters,
                    "SPLIT: another cluster of this namespace exists; {resolution}"
                );
                formation.note(format!("split detected: cluster {} via {peer}; {resolution}", other.cluster));
            }
            if dissolve {
                self.dissolve_into(group, formation, *peer).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a/01";
    const B: &str = "b/02";

    fn meeting(my_data: bool, other_data: bool) -> Meeting<'static> {
        Meeting {
            mine: A,
            my_data,
            my_voters: 3,
            other: B,
            other_data,
            other_voters: 3,
            leading: true,
            recorded: false,
            reports: 0,
        }
    }

    fn record(resolution: Resolution, announce: bool, dissolve: bool) -> SplitDecision {
        SplitDecision::Record { resolution, announce, dissolve }
    }

    #[test]
    fn table() {
        use Resolution::*;
        let cases: Vec<(&str, Meeting<'static>, SplitDecision)> = vec![
            ("same cluster", Meeting { other: A, ..meeting(false, false) }, SplitDecision::Ignore),
            ("peer names no cluster", Meeting { other: "", ..meeting(false, false) }, SplitDecision::Ignore),
            ("this node's cluster unnamed", Meeting { mine: "", ..meeting(false, false) }, SplitDecision::Ignore),
            ("both hold data", meeting(true, true), record(Operator, true, false)),
            ("only the other holds data: dissolve mine", meeting(false, true), record(DissolveMine, true, true)),
            (
                "a follower records but does not dissolve",
                Meeting { leading: false, ..meeting(false, true) },
                record(DissolveMine, true, false),
            ),
            ("only mine holds data: the other dissolves", meeting(true, false), record(AbsorbOther, true, false)),
            // Neither holds data: the larger survives, then the lower id.
            (
                "no data, the other larger",
                Meeting { other_voters: 5, ..meeting(false, false) },
                record(DissolveMine, true, true),
            ),
            (
                "no data, mine larger",
                Meeting { my_voters: 5, ..meeting(false, false) },
                record(AbsorbOther, true, false),
            ),
            ("no data, same size, mine lower id survives", meeting(false, false), record(AbsorbOther, true, false)),
            (
                "already recorded: refresh, no announcement",
                Meeting { recorded: true, reports: MAX_SPLITS, ..meeting(true, true) },
                record(Operator, false, false),
            ),
            ("one cluster too many", Meeting { reports: MAX_SPLITS, ..meeting(false, true) }, SplitDecision::Ignore),
        ];
        for (name, m, want) in cases {
            assert_eq!(decide(&m), want, "{name}");
        }
    }

    /// Over every pair of sides (data or not, 1-3 voters, either id order, either leading):
    /// at most one side dissolves, never one holding data, and both agree on the resolution.
    #[test]
    fn exhaustive_at_most_one_side_dissolves_and_never_with_data() {
        for (a_data, b_data) in [(false, false), (false, true), (true, false), (true, true)] {
            for (a_voters, b_voters) in (1..=3).flat_map(|a| (1..=3).map(move |b| (a, b))) {
                let a = Meeting {
                    my_data: a_data,
                    other_data: b_data,
                    my_voters: a_voters,
                    other_voters: b_voters,
                    ..meeting(a_data, b_data)
                };
                let b = Meeting {
                    mine: B,
                    other: A,
                    my_data: b_data,
                    other_data: a_data,
                    my_voters: b_voters,
                    other_voters: a_voters,
                    ..a
                };
                let (
                    SplitDecision::Record { resolution: ra, dissolve: da, .. },
                    SplitDecision::Record { resolution: rb, dissolve: db, .. },
                ) = (decide(&a), decide(&b))
                else {
                    panic!("a split must be recorded on both sides");
                };
                assert!(!(da && db), "both sides dissolve: {a:?}");
                assert!(!(da && a_data || db && b_data), "a side with data dissolves: {a:?}");
                let mirrored = match rb {
                    Resolution::DissolveMine => Resolution::AbsorbOther,
                    Resolution::AbsorbOther => Resolution::DissolveMine,
                    Resolution::Operator => Resolution::Operator,
                };
                assert_eq!(ra, mirrored, "the sides disagree: {a:?}");
                assert_eq!(ra == Resolution::Operator, a_data && b_data, "{a:?}");
            }
        }
    }
}
