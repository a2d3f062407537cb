//! Flotilla: operable Raft.
//!
//! A [`Node`] runs many independent Raft groups (namespaces) over one [`Transport`] and one
//! [`Store`](flotilla_store::Store). Each namespace is used through a [`Cluster`] handle whose
//! methods work on any node: writes and membership changes are forwarded to the leader, and
//! reads choose their [`Consistency`].
//!
//! [`Transport`]: flotilla_core::Transport
//! [`Consistency`]: flotilla_core::Consistency

#![deny(missing_docs)]

/// Declares an internal module: public with the `internals` feature (for the workspace's own
/// tests and tools, hidden from the documentation, no stability promise), private otherwise.
macro_rules! internal_mod {
    ($name:ident) => {
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        mod $name;
    };
}

pub mod at_rest;
mod auto_compact;
mod backup_schedule;
mod builder;
mod checked_file;
mod cluster;
mod cluster_header;
mod cluster_kv;
mod cluster_lease;
mod cluster_query;
mod cluster_queue;
mod cluster_typed;
mod command;
mod crash_point;
pub mod doctor;
mod error;
mod execute;
mod failover;
internal_mod!(formation);
internal_mod!(group);
mod handoff_targets;
#[cfg(feature = "in-process")]
pub mod in_process;
mod inbound;
internal_mod!(leader_changes);
mod lease_clock;
mod lease_expiry;
mod live_restore;
mod liveness;
mod lock;
mod namespace_lifecycle;
pub mod namespace_set;
mod namespaces;
internal_mod!(network);
mod node;
mod node_loop;
mod node_status;
mod quiesce;
mod quorum;
mod read_index_batch;
internal_mod!(raft_config);
pub mod recovery;
mod request_ids;
mod request_trace;
internal_mod!(sealing);
mod shutdown;
internal_mod!(snapshot_inbox);
mod status;
mod status_report;
mod subscription;
mod transfer_watch;
mod watch;
internal_mod!(wire_budget);
mod write_gate;

pub use backup_schedule::BACKUP_EXTENSION;
pub use builder::{BuildError, NodeBuilder, RunningNode};
pub use cluster::Cluster;
pub use cluster_kv::{
    KeyRevisions, KeysOutcome, Precondition, RangeOutcome, ReadOutcome, TxnOutcome, WriteOutcome, MAX_LIST_KEYS,
};
pub use cluster_lease::{LeaseStatus, MAX_LEASES_LISTED, MAX_LEASE_KEYS_LISTED};
pub use cluster_query::{Queried, QueryError};
pub use cluster_queue::Popped;
pub use cluster_typed::{Applied, ProposeError, TypedCluster};
pub use error::{NamespaceError, StartError};
/// The KV state machine's vocabulary: transactions, ranges, revisions, watch events.
pub use flotilla_core::kv;
pub use flotilla_core::{
    ApiError, ApplyContext, Config, Consistency, IdempotencyKey, KvOp, Limit, Namespace, Outcome, Preset, Scan,
    StateMachine, StateTable, StateView, Typed, TypedRefusal, TypedStateMachine,
};
/// Change notifications: what a [`Subscription`] yields and its bounds.
pub use flotilla_store::{
    AppliedEntry, SubscribeError, SubscriptionCounts, SubscriptionEnded, MAX_SUBSCRIBERS, SUBSCRIPTION_BUFFER,
    SUBSCRIPTION_BUFFER_BYTES,
};
pub use formation::{FormationPhase, FormationStatus, KnownPeer, SplitReport, TimelineEvent};
pub use live_restore::ReplacedState;
pub use lock::{Held, Holder, ELECTION_PREFIX, LOCK_PREFIX};
pub use namespace_lifecycle::MAX_OPEN_NAMESPACES;
pub use namespaces::CloseOptions;
pub use node::{Node, NodeServices, StateMachineFactory};
pub use node_status::{
    FsyncSummary, LeadershipHistory, MemberProgress, NamespaceSummary, NodeStatus, PeerStatus, StorageStatus,
};
pub use sealing::{Refusal as SealingRefusal, SealingStatus, Side as SealingSide};
pub use shutdown::HandOffReport;
pub use status::{GroupStatus, Member, MemberRole, Role};
pub use subscription::Subscription;
pub use watch::{Watch, WatchCounters, WatchMessage, WatchRequest, MAX_WATCHERS, SLOW_GRACE, WATCH_BUFFER};

/// The README's library example, compiled (not run) as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The embedding guide's examples, compiled (not run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/EMBEDDING.md")]
pub struct EmbeddingDoctests;
