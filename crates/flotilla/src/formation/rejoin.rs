//! Rejoining, as pure decisions: what a node that was a member may do when it comes back.
//!
//! Three situations, each a function of plain facts (no Raft handle, no store, no clock), so
//! every case is table-tested and the small state spaces are checked exhaustively:
//!
//! - [`identity_standing`]: at start (or open), a node whose identity was admitted to the
//!   namespace before, and whose disk holds no founding step of that very cluster, may only
//!   rejoin: should its store be empty, it lost its data and must never found again.
//! - [`dropped_from`]: a member with state hears from members of its cluster; if one with a
//!   leader and a configuration at least as new as its own says it is not in it (removed while
//!   away, or replaced as dead), it asks to join again through that peer. A node returning
//!   with stale data (an older configuration that still lists it) waits to hear of a newer one
//!   rather than trust its own.
//! - [`admit_joiner`]: the leader's side of a join: a member that reports no state lost its
//!   data; if it was a voter it is removed before it is re-added as a learner, so it never
//!   votes with an empty log.
//!
//! The I/O shells are `formation/state.rs` (standing), `formation/driver.rs` (dropped) and
//! `execute.rs` (joins).

/// What the founding record on disk says, as far as rejoining is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFacts<'a> {
    /// Nothing: never bound, or released.
    Free,
    /// The node was a member with Raft state.
    Member,
    /// A binding to, or a decision of, a founding ballot that names this cluster.
    Founding {
        /// The cluster id the ballot founds.
        cluster: &'a str,
    },
}

/// Whether a node without Raft state may take part in founding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A new identity (or one continuing its own interrupted founding): it may found.
    MayFound,
    /// The identity was admitted before: it only joins, whatever it sees or however long it
    /// waits.
    RejoinOnly,
}

/// The standing of a node from its founding record and the cluster its identity was admitted
/// to (`node.key`), if any. A binding or decision for the very cluster the identity was
/// admitted to is that founding, interrupted before Raft state existed: it may go on.
pub fn identity_standing(record: RecordFacts<'_>, admitted_to: Option<&str>) -> Standing {
    let rejoin = match (record, admitted_to) {
        (RecordFacts::Member, _) => true,
        (RecordFacts::Founding { cluster }, Some(admitted)) => cluster != admitted,
        (_, admitted) => admitted.is_some(),
    };
    if rejoin {
        Standing::RejoinOnly
    } else {
        Standing::MayFound
    }
}

/// A member's own view of its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnConfig<'a> {
    /// Its cluster id (empty: unnamed).
    pub cluster: &'a str,
    /// Log index of its membership configuration.
    pub config_index: u64,
    /// Whether its own configuration lists it.
    pub listed: bool,
}

/// What a peer that is a member of some cluster answered about its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig<'a, Id> {
    /// The peer.
    pub peer: Id,
    /// Its cluster id.
    pub cluster: &'a str,
    /// It knows a leader.
    pub has_leader: bool,
    /// Its configuration lists the asking node.
    pub includes_me: bool,
    /// Log index of its membership configuration.
    pub config_index: u64,
}

/// The first peer through which the member should ask to join again, if any: a member of the
/// same cluster, knowing a leader, whose configuration leaves this node out and is at least as
/// new as this node's own (or this node's own does not list it either). A peer of another
/// cluster, or with an older configuration, proves nothing.
pub fn dropped_from<'a, Id: Copy>(
    own: &OwnConfig<'_>,
    replies: impl IntoIterator<Item = PeerConfig<'a, Id>>,
) -> Option<Id> {
    replies
        .into_iter()
        .find(|p| {
            p.cluster == own.cluster
                && p.has_leader
                && !p.includes_me
                && (p.config_index >= own.config_index || !own.listed)
        })
        .map(|p| p.peer)
}

/// The joiner's place in the leader's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Not a member.
    Outside,
    /// A learner.
    Learner,
    /// A voter.
    Voter,
}

/// A join as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinFacts {
    /// The joiner is the leader itself (a restarted leader that still believes it leads).
    pub from_self: bool,
    /// The joiner's place in the configuration.
    pub place: Place,
    /// The joiner reports no Raft state.
    pub fresh: bool,
}

/// What the leader does with a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinDecision {
    /// Refuse: a node cannot admit itself.
    RefuseSelf,
    /// Already a member, nothing to do (a learner without state simply catches up again).
    AlreadyMember,
    /// A voter that lost its data: remove it, then add it back as a learner.
    RemoveThenAdd,
    /// Add it as a learner.
    AddLearner,
}

/// The leader's decision on a join: only a voter's lost log is dangerous (its votes and
/// acknowledgements counted), so only a voter reporting no state is removed first.
pub fn admit_joiner(facts: JoinFacts) -> JoinDecision {
    match facts {
        JoinFacts { from_self: true, .. } => JoinDecision::RefuseSelf,
        JoinFacts { place: Place::Outside, .. } => JoinDecision::AddLearner,
        JoinFacts { place: Place::Voter, fresh: true, .. } => JoinDecision::RemoveThenAdd,
        JoinFacts { place: Place::Learner | Place::Voter, .. } => JoinDecision::AlreadyMember,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "c1/01";
    const C2: &str = "c2/02";

    #[test]
    fn standing_table() {
        use RecordFacts::*;
        use Standing::*;
        let cases = [
            (Free, None, MayFound, "a new identity"),
            (Free, Some(C1), RejoinOnly, "admitted before, everything but the key lost"),
            (Member, None, RejoinOnly, "the record says member, the key lost"),
            (Member, Some(C1), RejoinOnly, "a member that lost its store"),
            (Founding { cluster: C1 }, None, MayFound, "an interrupted founding of an unknown identity"),
            (Founding { cluster: C1 }, Some(C1), MayFound, "its own founding, interrupted before Raft state"),
            (Founding { cluster: C2 }, Some(C1), RejoinOnly, "a founding of another cluster than the one admitted to"),
        ];
        for (record, admitted, want, name) in cases {
            assert_eq!(identity_standing(record, admitted), want, "{name}");
        }
    }

    #[test]
    fn an_admitted_identity_founds_only_its_own_interrupted_founding() {
        for admitted in [None, Some(C1), Some(C2)] {
            for record in [RecordFacts::Free, RecordFacts::Member, RecordFacts::Founding { cluster: C1 }] {
                let may_found = identity_standing(record, admitted) == Standing::MayFound;
                if let Some(c) = admitted {
                    assert_eq!(may_found, record == RecordFacts::Founding { cluster: c }, "{record:?} {admitted:?}");
                }
                if record == RecordFacts::Member {
                    assert!(!may_found);
                }
            }
        }
    }

    fn peer(peer: u64, cluster: &str, includes_me: bool, config_index: u64) -> PeerConfig<'_, u64> {
        PeerConfig { peer, cluster, has_leader: true, includes_me, config_index }
    }

    #[test]
    fn dropped_table() {
        let own = OwnConfig { cluster: C1, config_index: 10, listed: true };
        let stale_unlisted = OwnConfig { listed: false, ..own };
        type Case<'a> = (&'a str, OwnConfig<'a>, Vec<PeerConfig<'a, u64>>, Option<u64>);
        let cases: Vec<Case<'_>> = vec![
            ("nobody answered", own, vec![], None),
            ("listed by everyone", own, vec![peer(2, C1, true, 12)], None),
            ("removed in a newer configuration", own, vec![peer(2, C1, false, 12)], Some(2)),
            ("removed in the same configuration", own, vec![peer(2, C1, false, 10)], Some(2)),
            ("a peer with an older configuration proves nothing", own, vec![peer(2, C1, false, 9)], None),
            ("older, but my own does not list me either", stale_unlisted, vec![peer(2, C1, false, 9)], Some(2)),
            ("another cluster proves nothing", own, vec![peer(2, C2, false, 99)], None),
            (
                "a peer without a leader proves nothing",
                own,
                vec![PeerConfig { has_leader: false, ..peer(2, C1, false, 12) }],
                None,
            ),
            (
                "first qualifying peer",
                own,
                vec![peer(2, C1, true, 12), peer(3, C1, false, 12), peer(4, C1, false, 13)],
                Some(3),
            ),
        ];
        for (name, own, replies, want) in cases {
            assert_eq!(dropped_from(&own, replies), want, "{name}");
        }
    }

    /// Every combination of one peer's answer against this node's configuration: a rejoin is
    /// asked only on evidence from its own cluster at least as new as what it holds.
    #[test]
    fn exhaustive_dropped_needs_evidence_from_the_own_cluster() {
        for (listed, cluster, has_leader, includes_me, index) in combinations(&[C1, C2]) {
            let own = OwnConfig { cluster: C1, config_index: 1, listed };
            let p = PeerConfig { peer: 7u64, cluster, has_leader, includes_me, config_index: index };
            let rejoin = dropped_from(&own, [p]).is_some();
            let evidence = cluster == C1 && has_leader && !includes_me && (index >= 1 || !listed);
            assert_eq!(rejoin, evidence, "{own:?} {p:?}");
        }
    }

    fn combinations<'a>(clusters: &'a [&'a str]) -> impl Iterator<Item = (bool, &'a str, bool, bool, u64)> + 'a {
        let b = [false, true];
        b.into_iter().flat_map(move |listed| {
            clusters.iter().flat_map(move |c| {
                b.into_iter()
                    .flat_map(move |l| b.into_iter().flat_map(move |i| (0..3).map(move |idx| (listed, *c, l, i, idx))))
            })
        })
    }

    #[test]
    fn joiner_table_and_exhaustive() {
        use JoinDecision::*;
        for from_self in [false, true] {
            for place in [Place::Outside, Place::Learner, Place::Voter] {
                for fresh in [false, true] {
                    let d = admit_joiner(JoinFacts { from_self, place, fresh });
                    let want = match (from_self, place, fresh) {
                        (true, _, _) => RefuseSelf,
                        (false, Place::Outside, _) => AddLearner,
                        (false, Place::Voter, true) => RemoveThenAdd,
                        (false, _, _) => AlreadyMember,
                    };
                    assert_eq!(d, want, "{from_self} {place:?} {fresh}");
                    // The safety property: a voter without its log never stays a voter.
                    if place == Place::Voter && fresh && !from_self {
                        assert_eq!(d, RemoveThenAdd);
                    }
                }
            }
        }
    }
}
