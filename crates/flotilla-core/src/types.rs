//! The openraft type configuration used by every Raft group of a node.

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResult};

/// A node's identity: its libp2p PeerId, which is also its Raft node id.
pub type NodeId = libp2p_identity::PeerId;

/// What the membership configuration records about a member besides its id: where it was
/// last reachable, so a restarted node can dial its peers before discovery finds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Multiaddresses (as text) the member listens on.
    pub addrs: Vec<String>,
    /// The cluster that admitted the member, stamped by the leader (or the founder) that added
    /// it. Every entry of one configuration carries the same id, so any member can tell which
    /// cluster it is in, and two clusters of one namespace that meet can tell each other apart.
    pub cluster: crate::formation::ClusterId,
}

impl MemberInfo {
    /// A member reachable at `addrs`, not yet stamped with a cluster.
    pub fn new(addrs: Vec<String>) -> Self {
        Self { addrs, cluster: String::new() }
    }
}

/// The Raft type configuration of every Flotilla group.
///
/// Written out rather than with `openraft::declare_raft_types!`, whose syntax cannot set the
/// generic `Responder<T>`: every type is the macro's default but the data (`D`, `R`), the
/// node id and info, and the responder, which notes when a write committed
/// ([`TimedResponder`](crate::timed_responder::TimedResponder)).
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
pub struct TypeConfig {}

impl openraft::RaftTypeConfig for TypeConfig {
    type D = Command;
    type R = CommandResult;
    type NodeId = NodeId;
    type Node = MemberInfo;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_adv::LeaderId<Self::Term, Self::NodeId>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<Self::D, Self::NodeId, Self::Node>;
    type Entry = openraft::Entry<<Self::LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>;
    type Responder<T>
        = crate::timed_responder::TimedResponder<Self, T>
    where
        T: openraft::OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: openraft::OptionalSend + 'static;
    type AsyncRuntime = openraft::impls::TokioRuntime;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

/// Log id as used by Flotilla groups.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// Log entry as used by Flotilla groups.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// Vote as used by Flotilla groups.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// Stored membership as used by Flotilla groups.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata as used by Flotilla groups.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
