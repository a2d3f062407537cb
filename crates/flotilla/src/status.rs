//! What a node reports about a namespace.

use flotilla_core::types::NodeId;
use serde::{Deserialize, Serialize};

/// A member of a namespace's configuration.
///
/// ```no_run
/// # fn example(cluster: flotilla::Cluster) {
/// let voters = cluster.members().into_iter().filter(|m| m.role == flotilla::MemberRole::Voter).count();
/// println!("{voters} voters");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The member's PeerId.
    pub id: NodeId,
    /// Where it was last known to listen.
    pub addrs: Vec<String>,
    /// `voter` or `learner`.
    pub role: MemberRole,
}

/// Whether a member votes.
///
/// ```
/// use flotilla::MemberRole;
///
/// assert_eq!(MemberRole::Voter.name(), "voter");
/// assert_eq!(MemberRole::Learner.name(), "learner");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// Counts towards quorum.
    Voter,
    /// Replicates but does not vote.
    Learner,
}

impl MemberRole {
    /// The role as shown in status.
    ///
    /// ```
    /// assert_eq!(flotilla::MemberRole::Learner.name(), "learner");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
        }
    }
}

/// This node's role in a namespace.
///
/// ```no_run
/// # fn example(cluster: flotilla::Cluster) {
/// use flotilla::Role;
///
/// match cluster.state().role {
///     Role::Leader => println!("takes writes"),
///     Role::Follower | Role::Learner => println!("forwards writes to {:?}", cluster.leader()),
///     Role::Candidate => println!("electing"),
///     Role::Shutdown => println!("stopped"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Leads the group.
    Leader,
    /// Follows a leader, voting.
    Follower,
    /// Campaigning.
    Candidate,
    /// Replicates without voting.
    Learner,
    /// Stopped.
    Shutdown,
}

impl Role {
    /// The role as shown in status.
    ///
    /// ```
    /// assert_eq!(flotilla::Role::Candidate.name(), "candidate");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// A namespace's state as seen from this node.
///
/// ```no_run
/// # fn example(cluster: flotilla::Cluster) {
/// let status = cluster.status();
/// let behind = status.commit_index.saturating_sub(status.applied_index);
/// println!("{} ({}): {behind} committed entries not applied yet", status.namespace, status.role.name());
/// # }
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// The namespace.
    pub namespace: String,
    /// This node.
    pub node_id: NodeId,
    /// This node's role.
    pub role: Role,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Index of the last log entry.
    pub last_log_index: u64,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index applied to the state machine.
    pub applied_index: u64,
    /// The KV revision of the applied state; `None` for another state machine, while a
    /// snapshot is being installed, or from `Cluster::state` (which reads no store).
    pub revision: Option<u64>,
    /// Index of the last snapshot.
    pub snapshot_index: u64,
    /// The membership configuration.
    pub members: Vec<Member>,
    /// Whether a membership change is under way: the configuration is joint (old and new
    /// voter sets both need a quorum) or not yet committed.
    pub membership_changing: bool,
    /// The cluster this node belongs to (empty before it has one).
    pub cluster: String,
    /// Whether the group is quiesced (idle: no heartbeats, no election timer).
    pub quiesced: bool,
    /// When the known leader changed.
    pub leadership: crate::node_status::LeadershipHistory,
    /// On the leader: each other member's matched index, lag and last acknowledgement.
    pub progress: Vec<crate::node_status::MemberProgress>,
    /// Formation phase, reason, peers, timeline, splits and counters.
    pub formation: Option<crate::formation::FormationStatus>,
}
