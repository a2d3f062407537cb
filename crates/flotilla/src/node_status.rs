//! What a node reports about itself to operators: the body of `GET /v1/status`, read by the
//! CLI's status table and by `flotilla doctor` ([`crate::doctor`]).
//!
//! Every field a newer node added is `#[serde(default)]`, so a CLI reads the status of an
//! older node (during a rolling upgrade) and shows what it has.

use flotilla_core::types::NodeId;
use serde::{Deserialize, Serialize};

use crate::status::{MemberRole, Role};

/// A node's identity, storage, peers and namespaces.
///
/// ```
/// use flotilla::doctor::{diagnose, worst, Thresholds, Verdict};
/// use flotilla::{NodeStatus, StorageStatus};
///
/// // A node with 10 GiB free over a 64 MiB reserve, no peers and no namespace yet.
/// let storage = StorageStatus { free_bytes: Some(10 << 30), reserve_bytes: 64 << 20, ..Default::default() };
/// let status = NodeStatus { storage, ..Default::default() };
/// assert_eq!(worst(&diagnose(&status, &Thresholds::for_status(&status))), Verdict::Ok);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's PeerId (its Raft node id in every namespace).
    pub peer_id: String,
    /// The cluster-plane addresses it listens on.
    pub addrs: Vec<String>,
    /// The maximum election timeout of the node's timing preset, in milliseconds: how long a
    /// silent leader or peer takes to be noticed.
    #[serde(default)]
    pub election_timeout_ms: u64,
    /// Disk and store health.
    pub storage: StorageStatus,
    /// The other members of this node's namespaces, and when each was last heard from.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    /// One row per namespace this node serves.
    pub namespaces: Vec<NamespaceSummary>,
}

/// The store's disk: whether client writes are refused, free space, fsync latency.
///
/// ```
/// use flotilla::doctor::{diagnose, worst, Thresholds, Verdict};
/// use flotilla::{NodeStatus, StorageStatus};
///
/// let storage = StorageStatus { write_blocked: Some("disk full".into()), free_bytes: Some(0), ..Default::default() };
/// let status = NodeStatus { storage, ..Default::default() };
/// assert_eq!(worst(&diagnose(&status, &Thresholds::for_status(&status))), Verdict::Fail);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStatus {
    /// Why client writes are refused (full or failing disk, free space below the reserve, the
    /// store stopped after a failed fsync); `None` when they are taken.
    pub write_blocked: Option<String>,
    /// Free bytes on the data directory's file system; `None` when it cannot be measured.
    #[serde(default)]
    pub free_bytes: Option<u64>,
    /// Free space below which client writes are refused (64 MiB unless the embedder changed
    /// it; 0: the check is off).
    #[serde(default)]
    pub reserve_bytes: u64,
    /// Latency of the store's fsyncs since the node started.
    #[serde(default)]
    pub fsync: FsyncSummary,
}

/// The store's fsync latency since start, from the same histogram as the
/// `flotilla_store_fsync_duration_seconds` metric: every durable commit and flush.
///
/// ```no_run
/// # fn example(node: std::sync::Arc<flotilla::Node>) {
/// let fsync = node.status().storage.fsync;
/// match fsync.p99_le_us {
///     Some(p99) => println!("{} fsyncs, 99% within {p99} µs", fsync.count),
///     None => println!("no fsync yet"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsyncSummary {
    /// Fsyncs measured.
    pub count: u64,
    /// Their mean latency in microseconds (0 without any).
    pub mean_us: u64,
    /// The bucket bound, in microseconds, at or below which 99% of them finished: `None`
    /// without any; `u64::MAX` when that is above the highest bound (1 s).
    pub p99_le_us: Option<u64>,
}

/// Another member of this node's namespaces, as this node hears it.
///
/// ```no_run
/// # fn example(node: std::sync::Arc<flotilla::Node>) {
/// for peer in node.status().peers.iter().filter(|p| p.down) {
///     println!("{} is down ({} shared namespaces)", peer.id, peer.namespaces);
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// How many of this node's namespaces it is a member of.
    pub namespaces: u32,
    /// Milliseconds since it was last heard from: its latest acknowledgement to a namespace
    /// this node leads, or the liveness probe of quiesced namespaces. `None` when this node
    /// has no such observation (it leads no namespace with it and none is quiesced).
    pub last_heard_ms_ago: Option<u64>,
    /// Declared down by the liveness probe (silent for an election timeout).
    #[serde(default)]
    pub down: bool,
}

/// One namespace on this node, in a row.
///
/// ```
/// use flotilla::doctor::{diagnose, Thresholds, Verdict};
/// use flotilla::{NamespaceSummary, NodeStatus, Role};
///
/// let orders = NamespaceSummary {
///     namespace: "orders".into(), role: Role::Follower, leader: None, term: 7, commit_index: 10,
///     applied_index: 10, revision: Some(4), last_log_index: 10, voters: 3, learners: 0, quiesced: false,
///     leadership: Default::default(), splits: 0, progress: Vec::new(),
/// };
/// let status = NodeStatus { namespaces: vec![orders], ..Default::default() };
/// let findings = diagnose(&status, &Thresholds::for_status(&status));
/// assert!(findings.iter().any(|f| f.check == "leaders" && f.verdict == Verdict::Fail)); // no leader known
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceSummary {
    /// The namespace.
    pub namespace: String,
    /// This node's role.
    pub role: Role,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index applied to the state machine.
    pub applied_index: u64,
    /// The KV revision of the applied state (one read of the namespace's table); `None` for
    /// a namespace that does not run the KV state machine, or while it installs a snapshot.
    #[serde(default)]
    pub revision: Option<u64>,
    /// Index of the last log entry.
    #[serde(default)]
    pub last_log_index: u64,
    /// Voters in the configuration.
    #[serde(default)]
    pub voters: u32,
    /// Learners in the configuration.
    #[serde(default)]
    pub learners: u32,
    /// Whether the group is quiesced (idle: no heartbeats, no election timer).
    #[serde(default)]
    pub quiesced: bool,
    /// When the known leader changed.
    #[serde(default)]
    pub leadership: LeadershipHistory,
    /// Other clusters of this namespace met (a split; see `flotilla ns status`).
    #[serde(default)]
    pub splits: u32,
    /// On the leader: how far each other member's log matches. Empty elsewhere.
    #[serde(default)]
    pub progress: Vec<MemberProgress>,
}

/// When a namespace's known leader changed, as seen from this node.
///
/// ```no_run
/// # fn example(cluster: flotilla::Cluster) {
/// let history = cluster.state().leadership;
/// let last_minute = history.recent_ms_ago.iter().filter(|ms| **ms < 60_000).count();
/// println!("{} leader changes since start, {last_minute} in the last minute", history.changes);
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadershipHistory {
    /// Changes since the namespace's group started on this node (its first leader counts).
    pub changes: u64,
    /// Milliseconds since the last change; `None` before any.
    pub last_change_ms_ago: Option<u64>,
    /// Milliseconds since each of the most recent changes (at most 16), newest first.
    #[serde(default)]
    pub recent_ms_ago: Vec<u64>,
}

/// A member's replication progress, as its leader sees it.
///
/// ```no_run
/// # fn example(cluster: flotilla::Cluster) {
/// // Filled on the leader only.
/// for member in cluster.state().progress {
///     println!("{} is {} entries behind", member.id, member.lag);
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberProgress {
    /// The member.
    pub id: NodeId,
    /// Voter or learner.
    pub role: MemberRole,
    /// The last index known to match the leader's log; `None` before the first match.
    pub matched_index: Option<u64>,
    /// Entries the member is behind the leader's last log index (all of them before a match).
    pub lag: u64,
    /// Milliseconds since it last acknowledged the leader; `None` before any acknowledgement.
    pub last_ack_ms_ago: Option<u64>,
}
