//! Wire vocabulary of cluster formation.
//!
//! Nodes exchange [`PeerView`]s per namespace ([`FormationRequest::Hello`]): what phase the
//! sender is in, which cluster it belongs to, and which other peers it knows (peer exchange and
//! the namespace's rendezvous record). A fresh node that must found a cluster does so through
//! a coordinator: it *promises* itself to the coordinator's [`Ballot`] and keeps that promise
//! until the coordinator releases it or founds. The protocol and its safety argument are in
//! `crates/flotilla/DESIGN-formation.md`.

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// Most peers listed in one [`PeerView`].
pub const MAX_VIEW_PEERS: usize = 64;
/// Most addresses listed per peer.
pub const MAX_PEER_ADDRS: usize = 8;
/// Longest address accepted, in bytes.
pub const MAX_ADDR_BYTES: usize = 256;

/// A coordinator's founding attempt: the coordinator and a round number it never reuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot<Id = NodeId> {
    /// The node that would found the cluster.
    pub coordinator: Id,
    /// Distinguishes the coordinator's attempts (random, so a restart never reuses one).
    pub round: u64,
}

/// What a node without Raft state is doing about founding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FreshPhase<Id = NodeId> {
    /// Not committed to anything.
    Free,
    /// Promised to be founded by `0.coordinator`; persisted.
    Bound(Ballot<Id>),
    /// Collecting promises for a ballot of its own.
    Coordinating {
        /// The round being collected.
        round: u64,
        /// Promises held so far.
        promisers: u32,
    },
    /// Decided to found with this ballot; persisted before Raft is initialized.
    Founded(Ballot<Id>),
    /// Its identity was admitted to the namespace before, but it has no Raft state (it lost
    /// its store): it never founds or promises, it only joins a formed cluster.
    Rejoining,
}

/// Identity of a founded cluster: the founding ballot, written as `<coordinator>/<round>`.
pub type ClusterId = String;

/// What a node reports about itself for one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerPhase {
    /// The node does not serve the namespace (it may still hold a rendezvous record for it).
    NotServed,
    /// The node has no Raft state for the namespace.
    Fresh {
        /// Its `--expect` setting.
        expect: Option<u32>,
        /// Its founding state.
        phase: FreshPhase,
    },
    /// The node has Raft state for the namespace.
    Member(MemberView),
}

/// A member's view of its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// The cluster it belongs to (empty when not known yet).
    pub cluster: ClusterId,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Voters in its membership configuration.
    pub voters: u32,
    /// Voters and learners.
    pub members: u32,
    /// Log index of its membership configuration.
    pub config_index: u64,
    /// Whether the *requester* is a member of that configuration.
    pub includes_you: bool,
    /// Whether its state machine holds any client data (keys or applied writes).
    pub holds_data: bool,
}

/// A peer and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddrs {
    /// The peer.
    pub peer: NodeId,
    /// Its addresses.
    pub addrs: Vec<String>,
}

/// The answer to a [`FormationRequest::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// The responder's phase for the namespace.
    pub phase: PeerPhase,
    /// The responder's own addresses.
    pub addrs: Vec<String>,
    /// Peers known to serve the namespace (its rendezvous record), bounded.
    pub members: Vec<PeerAddrs>,
    /// Other peers the responder knows (peer exchange), bounded.
    pub known: Vec<PeerAddrs>,
}

impl PeerView {
    /// The view cut to the protocol's bounds: at most [`MAX_VIEW_PEERS`] entries per list,
    /// [`MAX_PEER_ADDRS`] addresses per peer, each at most [`MAX_ADDR_BYTES`] long. Applied to
    /// every view received, so a peer cannot make this node hold more than that per view.
    pub fn bounded(mut self) -> PeerView {
        fn cut(addrs: &mut Vec<String>) {
            addrs.retain(|a| a.len() <= MAX_ADDR_BYTES);
            addrs.truncate(MAX_PEER_ADDRS);
        }
        cut(&mut self.addrs);
        for list in [&mut self.members, &mut self.known] {
            list.truncate(MAX_VIEW_PEERS);
            list.iter_mut().for_each(|p| cut(&mut p.addrs));
        }
        // An over-long cluster id is not cut (a cut could split a character): it is dropped,
        // which reads as "cluster unknown".
        if let PeerPhase::Member(m) = &mut self.phase {
            if m.cluster.len() > MAX_ADDR_BYTES {
                m.cluster.clear();
            }
        }
        self
    }
}

/// Requests of the formation plane.
// A hello is the common case and is built once per peer per tick; boxing it would add an
// allocation for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FormationRequest {
    /// Register the sender for the namespace and exchange views.
    Hello(PeerView),
    /// The sender promises itself to the receiver's ballot.
    Promise(Ballot),
    /// The sender asks what became of the ballot it promised itself to.
    PromiseStatus(Ballot),
    /// The sender, leader of the receiver's cluster, orders the receiver to drop its state for
    /// the namespace and join the cluster that survives a split.
    Dissolve {
        /// The cluster being dissolved; the receiver must belong to it.
        cluster: ClusterId,
        /// Set by an operator's explicit command: dissolve even if the receiver holds data.
        force: bool,
    },
}

/// What became of a promised ballot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromiseState {
    /// The coordinator is still collecting; stay bound.
    Pending,
    /// The coordinator founded; the promiser is a voter or a learner of the new cluster.
    Founded {
        /// Whether the promiser is a founding voter.
        voter: bool,
    },
    /// The ballot is void; the promiser is free again.
    Released,
}

/// Replies of the formation plane.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FormationResponse {
    /// Reply to [`FormationRequest::Hello`].
    View(PeerView),
    /// Reply to [`FormationRequest::Promise`]: whether the promise was counted.
    Promised(bool),
    /// Reply to [`FormationRequest::PromiseStatus`].
    Status(PromiseState),
    /// Reply to [`FormationRequest::Dissolve`]: whether the order was accepted.
    Dissolving(bool),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_views_are_cut_to_the_protocol_bounds() {
        let peer = libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32]).expect("key").public().to_peer_id();
        let addrs: Vec<String> =
            (0..100).map(|i| format!("/ip4/10.0.0.{i}/tcp/7000")).chain(["x".repeat(10_000)]).collect();
        let entry = PeerAddrs { peer, addrs: addrs.clone() };
        let view = PeerView {
            phase: PeerPhase::NotServed,
            addrs: addrs.clone(),
            members: vec![entry.clone(); 1000],
            known: vec![entry; 1000],
        }
        .bounded();
        assert_eq!(view.addrs.len(), MAX_PEER_ADDRS);
        assert_eq!(view.members.len(), MAX_VIEW_PEERS);
        assert_eq!(view.known.len(), MAX_VIEW_PEERS);
        for p in view.members.iter().chain(view.known.iter()) {
            assert!(p.addrs.len() <= MAX_PEER_ADDRS && p.addrs.iter().all(|a| a.len() <= MAX_ADDR_BYTES));
        }
    }
}
