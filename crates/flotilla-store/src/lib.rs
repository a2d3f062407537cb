//! Durable storage of a Flotilla node.
//!
//! One redb file per node (`<data_dir>/flotilla.redb`) holds, for every namespace, the Raft
//! log, vote, committed and purged log ids, the state machine's key/value table, the applied
//! log id and membership, the dedup table and the current snapshot's metadata. Current
//! snapshots are files under `<data_dir>/snapshots/<ns>/current.snap`; a snapshot
//! ([`SnapshotData`]) is a handle on such a file, built, sent, received ([`SnapshotSink`]) and
//! installed as a stream, never held whole in memory.
//!
//! All writes of all namespaces go through ONE writer thread that groups whatever is queued
//! into a single fsync'd transaction (redb has no group commit of its own, and a commit costs
//! ~0.3 ms however little it holds), and acknowledges nothing before that commit is durable.
//! Reads use redb read transactions (MVCC) and never wait for the writer.
//!
//! A full or failing disk never reaches Raft as an error (openraft would stop the group):
//! writes wait until they can be made durable, and [`Store::write_blocked`] tells the node to
//! refuse new client writes meanwhile (see the `disk` module).
//!
//! Entry points: [`Store::open`], then per namespace [`Store::log_store`] (openraft
//! `RaftLogStorage`) and [`Store::state_machine`] (openraft `RaftStateMachine`).
//!
//! Change notifications: [`Store::subscribe_applied`] hands the entries a namespace applies on
//! this node to bounded subscribers ([`AppliedReceiver`]); one that does not keep up falls
//! behind instead of slowing the apply path.
//!
//! Online backups of a namespace ([`Store::backup`], [`verify_backup`]) stream the same
//! plaintext snapshot from a read transaction, behind a metadata header; see [`Backup`].
//! [`Store::restore_backup`] installs one into a namespace as a snapshot.
//!
//! Recovery from a lost quorum rewrites a survivor's log offline: [`Store::force_membership`]
//! appends a membership entry and its vote in one durable commit (see [`ForcedMembership`]).
//!
//! Encryption at rest is optional: [`Store::open_with`] and a [`StoreOptions::at_rest`]
//! cipher seal log entries, kv values, dedup records and snapshot files with XChaCha20-Poly1305 (kv
//! keys and Raft metadata stay plaintext); see [`at_rest`] for what is sealed and its limits,
//! and [`Store::reseal`] for key rotation.

#![deny(missing_docs)]

mod applied_feed;
mod apply;
pub mod at_rest;
mod backup;
mod backup_file;
mod backup_meta;
mod backup_restore;
mod backup_rows;
mod backup_verify;
mod codec;
pub mod crash_points;
mod dedup;
mod disk;
mod error;
mod forced_membership;
mod format;
mod in_use;
mod log_store;
mod metrics;
mod namespace_ids;
mod overlay;
mod sealing;
mod snapshot;
mod snapshot_builder;
mod snapshot_data;
mod snapshot_file;
mod snapshot_install;
mod snapshot_segments;
mod snapshot_sink;
mod snapshot_writer;
mod state_machine_store;
mod store;
mod tables;
mod view;
// The write-ahead log of DESIGN-log.md: a store opened with `LogKind::Wal` keeps its Raft
// logs there instead of in `log/<ns>` tables.
mod wal;
mod wal_batch;
mod wal_convert;
mod wal_filler;
mod wal_log_index;
mod wal_reader;
mod wal_record;
mod wal_sealing;
mod wal_segment;
mod writer;
mod writer_wal;

use flotilla_core::{Command, CommandResult, TypeConfig};
use openraft::{EntryPayload, RaftTypeConfig};

pub use applied_feed::{
    AppliedEntry, AppliedReceiver, SubscribeError, SubscriptionCounts, SubscriptionEnded, MAX_SUBSCRIBERS,
    SUBSCRIPTION_BUFFER, SUBSCRIPTION_BUFFER_BYTES,
};
pub use at_rest::{AtRestCipher, AtRestKey};
pub use backup::{Backup, BACKUP_FORMAT_VERSION};
pub use backup_file::{BackupFile, BACKUP_TEMP_SUFFIX};
pub use backup_meta::{BackupMeta, BackupSource};
pub use backup_restore::RestoredBackup;
pub use backup_rows::BackupRows;
pub use backup_verify::{verify_backup, BackupSummary};
pub use disk::{DiskSpace, DEFAULT_FREE_SPACE_RESERVE, RELAXED_COMMIT_MIN_FREE};
pub use error::StoreError;
pub use forced_membership::ForcedMembership;
pub use format::{FORMAT_VERSION, FORMAT_VERSION_WAL};
pub use log_store::{LogStore, LIMITED_READ_BYTES};
pub use metrics::{Histogram, StoreMetrics, COMMIT_LATENCY_BOUNDS_US, OPS_PER_COMMIT_BOUNDS};
pub use sealing::ResealReport;
pub use snapshot_builder::SnapshotBuilder;
pub use snapshot_data::{SnapshotData, SnapshotReader};
pub use snapshot_sink::SnapshotSink;
pub use state_machine_store::StateMachineStore;
pub use store::{LogKind, Store, StoreOptions, DB_FILE, DEFAULT_WAL_SEGMENT_BYTES, WAL_DIR};
pub use view::NamespaceView;

/// The openraft type configurations the store can persist: the application data is a Flotilla
/// [`Command`] and the response a [`CommandResult`].
///
/// Implemented for Flotilla's [`TypeConfig`]. It exists so that openraft's storage conformance
/// suite, which needs integer node ids (`NodeId: From<u64>`, impossible for libp2p's `PeerId`),
/// can run against the real store with a test configuration.
pub trait StoreConfig: RaftTypeConfig<D = Command, R = CommandResult> {
    /// The command carried by `entry`, or `None` for blank and membership entries.
    fn command(entry: &Self::Entry) -> Option<&Command>;
}

impl StoreConfig for TypeConfig {
    fn command(entry: &Self::Entry) -> Option<&Command> {
        match &entry.payload {
            EntryPayload::Normal(command) => Some(command),
            EntryPayload::Blank | EntryPayload::Membership(_) => None,
        }
    }
}
