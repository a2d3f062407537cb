//! Whether a replica handles a Raft message: the rule as a pure function of what the receiver
//! knows, so every case (sender cluster against mine, known or unknown, fresh or admitted) is
//! unit-tested. [`super::state::Formation::admits`] gathers the inputs.

/// What the receiving replica knows when a Raft message arrives.
#[derive(Debug, Clone)]
pub struct Receiver<'a, Id> {
    /// The replica has Raft state (a log) for the namespace.
    pub has_state: bool,
    /// The sender is in the replica's configuration.
    pub in_config: bool,
    /// The replica's configuration has no members yet.
    pub config_empty: bool,
    /// A fresh replica was admitted (as a founder, or by a join).
    pub admitted: bool,
    /// The leader that admitted the replica by a join.
    pub admitted_by: Option<Id>,
    /// The coordinator whose ballot the replica is bound to or founded with.
    pub coordinator: Option<Id>,
    /// The replica's cluster: from its configuration, else from the join that admitted it or
    /// the ballot it is bound to; empty when unknown (a fresh replica that is neither, or a
    /// configuration without cluster ids).
    pub cluster: &'a str,
}

/// A Raft message as far as admission is concerned.
#[derive(Debug, Clone)]
pub struct Incoming<'a, Id> {
    /// The authenticated sender.
    pub from: Id,
    /// A vote or pre-vote request.
    pub vote: bool,
    /// The cluster the sender says it belongs to (empty: it names none).
    pub cluster: &'a str,
}

/// Why a Raft message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The sender belongs to another cluster of the same namespace, or names none while the
    /// receiver knows its own.
    #[error("the sender is in cluster {theirs:?}, this node in cluster {mine:?}")]
    OtherCluster {
        /// The sender's cluster.
        theirs: String,
        /// The receiver's cluster.
        mine: String,
    },
    /// The receiver has no Raft state and was not admitted by, or founded with, the sender.
    #[error("this node has not been admitted to the sender's cluster")]
    NotAdmitted,
    /// The receiver has Raft state and the sender is not in its configuration.
    #[error("the sender is not a member of this node's configuration")]
    NotMember,
}

/// Decide whether `message` may be handled by `receiver`.
///
/// - A receiver that knows its cluster takes Raft traffic only from senders naming the same
///   cluster: two clusters of one namespace never exchange appends, snapshots or votes.
/// - A receiver without state takes Raft traffic only once admitted, or from the coordinator
///   it is bound to; it grants votes only to that coordinator (an empty log would grant any
///   candidate its vote).
/// - A receiver with state takes it from members of its configuration (any sender while the
///   configuration is empty) and from the leader that admitted it.
pub fn admit<Id: Copy + Eq>(receiver: &Receiver<'_, Id>, message: &Incoming<'_, Id>) -> Result<(), Refusal> {
    if !receiver.cluster.is_empty() && receiver.cluster != message.cluster {
        return Err(Refusal::OtherCluster { theirs: message.cluster.to_string(), mine: receiver.cluster.to_string() });
    }
    let from = Some(message.from);
    let admitted = if !receiver.has_state {
        if message.vote {
            receiver.coordinator == from
        } else {
            receiver.admitted || receiver.coordinator == from || receiver.admitted_by == from
        }
    } else {
        receiver.in_config || receiver.config_empty || receiver.admitted_by == from
    };
    match (admitted, receiver.has_state) {
        (true, _) => Ok(()),
        (false, false) => Err(Refusal::NotAdmitted),
        (false, true) => Err(Refusal::NotMember),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINE: &str = "c1/0000000000000001";
    const OTHER: &str = "c9/0000000000000009";

    fn fresh() -> Receiver<'static, u64> {
        Receiver {
            has_state: false,
            in_config: false,
            config_empty: true,
            admitted: false,
            admitted_by: None,
            coordinator: None,
            cluster: "",
        }
    }

    fn member() -> Receiver<'static, u64> {
        Receiver { has_state: true, in_config: true, config_empty: false, cluster: MINE, ..fresh() }
    }

    fn append(from: u64, cluster: &str) -> Incoming<'_, u64> {
        Incoming { from, vote: false, cluster }
    }

    fn vote(from: u64, cluster: &str) -> Incoming<'_, u64> {
        Incoming { from, vote: true, cluster }
    }

    #[test]
    fn a_member_takes_its_own_clusters_traffic_only() {
        assert_eq!(admit(&member(), &append(2, MINE)), Ok(()));
        assert_eq!(admit(&member(), &vote(2, MINE)), Ok(()));
        for m in [append(2, OTHER), vote(2, OTHER), append(2, "")] {
            assert!(matches!(admit(&member(), &m), Err(Refusal::OtherCluster { .. })), "{m:?}");
        }
        // Not in the configuration: refused even when it names the right cluster.
        let outside = Receiver { in_config: false, ..member() };
        assert_eq!(admit(&outside, &append(2, MINE)), Err(Refusal::NotMember));
        // The leader that admitted it, before the configuration naming it arrived.
        let joined = Receiver { in_config: false, admitted_by: Some(2), ..member() };
        assert_eq!(admit(&joined, &append(2, MINE)), Ok(()));
        assert!(admit(&joined, &append(2, OTHER)).is_err());
    }

    #[test]
    fn a_member_of_an_unnamed_cluster_keeps_the_membership_rule() {
        let unnamed = Receiver { cluster: "", ..member() };
        assert_eq!(admit(&unnamed, &append(2, OTHER)), Ok(()));
        assert_eq!(admit(&Receiver { in_config: false, ..unnamed }, &append(2, "")), Err(Refusal::NotMember));
    }

    #[test]
    fn an_admitted_fresh_node_takes_appends_from_its_cluster_only() {
        // Admitted by a join: it knows the cluster from the `Joined` answer.
        let joined = Receiver { admitted: true, admitted_by: Some(7), cluster: MINE, ..fresh() };
        assert_eq!(admit(&joined, &append(7, MINE)), Ok(()));
        assert_eq!(admit(&joined, &append(3, MINE)), Ok(()), "another member of its cluster after a leader change");
        assert!(matches!(admit(&joined, &append(3, OTHER)), Err(Refusal::OtherCluster { .. })));
        assert!(matches!(admit(&joined, &append(3, "")), Err(Refusal::OtherCluster { .. })));
        // Without state it grants no vote but its coordinator's, whatever the cluster.
        assert_eq!(admit(&joined, &vote(7, MINE)), Err(Refusal::NotAdmitted));
    }

    #[test]
    fn a_bound_or_founding_node_takes_its_coordinators_cluster() {
        let bound = Receiver { coordinator: Some(5), cluster: MINE, ..fresh() };
        assert_eq!(admit(&bound, &vote(5, MINE)), Ok(()));
        assert_eq!(admit(&bound, &append(5, MINE)), Ok(()));
        assert_eq!(admit(&bound, &append(6, MINE)), Err(Refusal::NotAdmitted), "not admitted yet");
        assert!(matches!(admit(&bound, &vote(5, OTHER)), Err(Refusal::OtherCluster { .. })));
        let founder = Receiver { admitted: true, ..bound };
        assert_eq!(admit(&founder, &append(6, MINE)), Ok(()));
        assert!(admit(&founder, &append(6, OTHER)).is_err());
    }

    #[test]
    fn a_fresh_node_not_admitted_takes_nothing() {
        for m in [append(2, MINE), append(2, ""), vote(2, ""), vote(2, OTHER)] {
            assert_eq!(admit(&fresh(), &m), Err(Refusal::NotAdmitted), "{m:?}");
        }
    }
}
