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

pub mod at_rest;
mod auto_compact;
mod backup_schedule;
mod builder;
mod checked_file;
pub mod cluster;
mod cluster_kv;
mod cluster_lease;
mod cluster_query;
mod cluster_queue;
mod cluster_typed;
mod command;
pub mod doctor;
pub mod error;
mod execute;
mod failover;
pub mod formation;
pub mod group;
mod handoff_targets;
mod inbound;
pub mod leader_changes;
mod lease_clock;
mod lease_expiry;
mod live_restore;
mod liveness;
mod lock;
mod namespace_lifecycle;
pub mod namespace_set;
pub mod namespaces;
pub mod network;
pub mod node;
pub mod node_status;
mod quiesce;
mod quorum;
pub mod raft_config;
pub mod recovery;
mod request_ids;
mod request_trace;
pub mod sealing;
mod shutdown;
pub mod snapshot_inbox;
pub mod status;
mod status_report;
mod subscription;
pub mod testing;
mod watch;
pub mod wire_budget;
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
pub use live_restore::ReplacedState;
pub use lock::{Held, Holder, ELECTION_PREFIX, LOCK_PREFIX};
pub use namespace_lifecycle::MAX_OPEN_NAMESPACES;
pub use namespaces::CloseOptions;
pub use node::{Node, NodeServices, StateMachineFactory};
pub use node_status::{
    FsyncSummary, LeadershipHistory, MemberProgress, NamespaceSummary, NodeStatus, PeerStatus, StorageStatus,
};
pub use shutdown::HandOffReport;
pub use status::{GroupStatus, Member, MemberRole, Role};
pub use subscription::Subscription;
pub use watch::{Watch, WatchCounters, WatchMessage, WatchRequest, MAX_WATCHERS, SLOW_GRACE, WATCH_BUFFER};

/// The README's library example, compiled (not run) as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
