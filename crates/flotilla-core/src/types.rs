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

openraft::declare_raft_types!(
    /// The Raft type configuration of every Flotilla group.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = MemberInfo,
);

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
