//! The vocabulary of the KV state machine: what a client asks ([`KvCommand`], [`Txn`],
//! [`RangeRequest`]) and what it is answered ([`KvReply`], [`KeyValue`]).
//!
//! The model is etcd's v3 one, so that its API can be served on top later: a revision counter
//! per namespace that every changing transaction increments, and per key the revision that
//! created it, the revision that last changed it and the number of changes since its creation.

use serde::{Deserialize, Serialize};

/// One key with its value and its revisions, as of some revision of the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key, opaque bytes.
    #[serde(with = "crate::byte_vec")]
    pub key: Vec<u8>,
    /// The value (empty in a keys-only listing).
    #[serde(with = "crate::byte_vec")]
    pub value: Vec<u8>,
    /// The revision of the write that created the key (since its last deletion).
    pub create_revision: u64,
    /// The revision of the write that last changed it.
    pub mod_revision: u64,
    /// How many times it was written since it was created: 1 after the creation.
    pub version: u64,
    /// The lease it is attached to; 0 for none.
    pub lease: u64,
}

/// The end of a range of keys that starts at a given key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeEnd {
    /// Only the start key itself.
    Key,
    /// Every key that starts with the start key.
    Prefix,
    /// Every key from the start key up to this key, excluded.
    Before(#[serde(with = "crate::byte_vec")] Vec<u8>),
    /// Every key from the start key on.
    All,
}

impl RangeEnd {
    /// Whether `candidate` lies in the range that starts at `start` and ends here.
    pub fn contains(&self, start: &[u8], candidate: &[u8]) -> bool {
        match self {
            RangeEnd::Key => candidate == start,
            RangeEnd::Prefix => candidate.starts_with(start),
            RangeEnd::Before(end) => candidate >= start && candidate < end.as_slice(),
            RangeEnd::All => candidate >= start,
        }
    }
}

/// A read of one key or a range of keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    /// The first key (included).
    #[serde(with = "crate::byte_vec")]
    pub key: Vec<u8>,
    /// Where the range ends.
    pub end: RangeEnd,
    /// Only keys strictly after this one (a listing's continuation); `None` from `key` on.
    pub after: Option<Vec<u8>>,
    /// At most this many keys (bounded by [`MAX_RANGE_LIMIT`]); 0 means that bound.
    pub limit: u64,
    /// Read as of this revision; 0 means the current one.
    pub revision: u64,
    /// Leave the values out.
    pub keys_only: bool,
}

impl RangeRequest {
    /// A read of the single key `key` at the current revision.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), end: RangeEnd::Key, after: None, limit: 0, revision: 0, keys_only: false }
    }

    /// A read of every key starting with `prefix` at the current revision.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self { end: RangeEnd::Prefix, ..Self::key(prefix) }
    }
}

/// Largest number of keys one range answers; a longer range says `more` and is read on with
/// [`RangeRequest::after`].
pub const MAX_RANGE_LIMIT: u64 = 10_000;

/// Largest number of value bytes one range answers (the keys that do not fit are left for the
/// continuation; one key is always answered, whatever its size).
pub const MAX_RANGE_BYTES: u64 = 4 * 1024 * 1024;

/// The answer to a [`RangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResult {
    /// The keys found, in key order.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys lie in the range after the last one answered.
    pub more: bool,
}

/// What happened to a key in a [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The key was created or changed.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change of one key, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key's state after the change; for a delete, only the key and the mod revision (the
    /// revision of the delete).
    pub kv: KeyValue,
    /// The key's state before the change, when asked for and the key existed.
    pub prev: Option<KeyValue>,
}

/// What a [`Compare`] compares a key's state against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The value (an absent key compares as never equal, like etcd).
    Value(#[serde(with = "crate::byte_vec")] Vec<u8>),
    /// The version; 0 for an absent key, so `Version(0)` with `Equal` tests absence.
    Version(u64),
    /// The create revision; 0 for an absent key.
    CreateRevision(u64),
    /// The mod revision; 0 for an absent key.
    ModRevision(u64),
    /// The lease id; 0 for none or an absent key.
    Lease(u64),
}

/// How a [`Compare`] compares: the key's state on the left, the target on the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// The key's state is greater.
    Greater,
    /// The key's state is less.
    Less,
}

/// One condition of a transaction, on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The key compared.
    #[serde(with = "crate::byte_vec")]
    pub key: Vec<u8>,
    /// How.
    pub op: CompareOp,
    /// Against what.
    pub target: CompareTarget,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// Store a value under a key.
    Put {
        /// The key.
        #[serde(with = "crate::byte_vec")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "crate::byte_vec")]
        value: Vec<u8>,
        /// Attach the key to this lease (0: none).
        lease: u64,
        /// Answer the key's previous state.
        prev_kv: bool,
    },
    /// Delete a key or a range of keys.
    Delete {
        /// The first key.
        #[serde(with = "crate::byte_vec")]
        key: Vec<u8>,
        /// Where the range ends.
        end: RangeEnd,
        /// Answer the deleted keys' previous states.
        prev_kv: bool,
    },
    /// Read a key or a range, seeing the branch's earlier writes.
    Range(RangeRequest),
    /// A transaction inside the branch (etcd's nested `Txn`). Its compares, as every compare
    /// of the outer transaction, are evaluated against the state before the outer one starts;
    /// the branch it picks runs in its place among the outer branch's operations, in the same
    /// revision.
    Txn(Box<Txn>),
}

impl TxnOp {
    /// A put of `value` under `key`, without lease.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        TxnOp::Put { key: key.into(), value: value.into(), lease: 0, prev_kv: false }
    }

    /// A delete of the single key `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        TxnOp::Delete { key: key.into(), end: RangeEnd::Key, prev_kv: false }
    }

    /// The (first) key the operation touches; empty for a nested transaction, whose
    /// operations each have their own.
    pub fn key(&self) -> &[u8] {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key, .. } => key,
            TxnOp::Range(r) => &r.key,
            TxnOp::Txn(_) => &[],
        }
    }
}

/// A transaction: if every compare holds, the success branch runs, otherwise the failure
/// branch; atomically, in one log entry, creating at most one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// The conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Run when they hold.
    pub success: Vec<TxnOp>,
    /// Run when one does not.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// The branch that runs when the compares hold (`succeeded`) or not.
    pub fn branch(&self, succeeded: bool) -> &[TxnOp] {
        if succeeded {
            &self.success
        } else {
            &self.failure
        }
    }
}

/// Result of one [`TxnOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// A put: the key's previous state, when asked for and present.
    Put {
        /// The previous state.
        prev: Option<KeyValue>,
        /// Whether the key existed before.
        existed: bool,
    },
    /// A delete: how many keys it removed and, when asked for, their previous states.
    Delete {
        /// Number of keys removed.
        deleted: u64,
        /// Their previous states, when asked for.
        prev: Vec<KeyValue>,
    },
    /// A read.
    Range(RangeResult),
    /// A nested transaction: whether its compares held, and one result per operation of the
    /// branch that ran.
    Txn {
        /// Whether its compares held (its success branch ran).
        succeeded: bool,
        /// The results of the branch that ran.
        results: Vec<OpResult>,
    },
}

/// The answer to a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnReply {
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// The namespace's revision after the transaction: the one it created if it changed
    /// anything, the current one otherwise.
    pub revision: u64,
    /// One result per operation of the branch that ran.
    pub results: Vec<OpResult>,
}

/// A command of the KV state machine: one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// A transaction (a plain put or delete is a transaction without compares).
    Txn(Txn),
    /// Forget the history before `revision`: reads and watches below it fail from then on.
    /// A large compaction is done in bounded steps; repeat the command until `done`.
    Compact {
        /// The oldest revision that stays readable.
        revision: u64,
    },
    /// Create a lease of `ttl_secs` seconds; `id` 0 takes the next free id.
    LeaseGrant {
        /// The id asked for, or 0.
        id: u64,
        /// Time to live, in seconds (at least 1).
        ttl_secs: u64,
    },
    /// End a lease (revoked by a client, or expired by the leader): its keys are deleted, in
    /// one revision, and its in-flight queue items go back to their queues.
    LeaseRevoke {
        /// The lease.
        id: u64,
    },
    /// Append an item to a queue.
    QueuePush {
        /// The queue.
        #[serde(with = "crate::byte_vec")]
        name: Vec<u8>,
        /// The item.
        #[serde(with = "crate::byte_vec")]
        value: Vec<u8>,
    },
    /// Take a queue's first item; with a lease (not 0), keep it in flight until acknowledged.
    QueuePop {
        /// The queue.
        #[serde(with = "crate::byte_vec")]
        name: Vec<u8>,
        /// The visibility lease, or 0.
        lease: u64,
    },
    /// Acknowledge an in-flight item, taken under `lease` (a late consumer whose item went
    /// back and was taken again under another lease acknowledges nothing).
    QueueAck {
        /// The queue.
        #[serde(with = "crate::byte_vec")]
        name: Vec<u8>,
        /// The item.
        id: u64,
        /// The visibility lease it was taken with.
        lease: u64,
    },
    /// A step of restoring a backup into the running namespace (an operator's admin operation,
    /// see `kv::restore`).
    Restore(super::restore::RestoreStep),
}

/// The answer to a [`KvCommand::Restore`] step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReply {
    /// After a clear step: whether rows of the old state remain (clear again).
    pub more: bool,
    /// After the finish step: the namespace's revision, above every earlier one. After the
    /// begin step: the revision the old state had.
    pub revision: u64,
}

/// The answer to a lease grant or revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReply {
    /// The lease.
    pub id: u64,
    /// Its time to live, in seconds.
    pub ttl_secs: u64,
    /// The namespace's revision after the command (a revoke that deleted keys creates one).
    pub revision: u64,
    /// Keys deleted with the lease (a revoke).
    pub deleted: u64,
}

/// The answer to a queue command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueReply {
    /// The item was appended with this id.
    Pushed {
        /// The item's id (ids grow in push order).
        id: u64,
    },
    /// The first item, now taken by this consumer.
    Popped {
        /// The item's id.
        id: u64,
        /// Its value.
        #[serde(with = "crate::byte_vec")]
        value: Vec<u8>,
    },
    /// The queue had no waiting item.
    Empty,
    /// The acknowledgement: whether the item was in flight.
    Acked {
        /// False when it was not in flight (acknowledged already, or its lease ended first).
        found: bool,
    },
}

/// The answer to a compaction step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactReply {
    /// The compacted revision: the oldest one still readable.
    pub compacted: u64,
    /// Whether the history below it is entirely gone (otherwise send the command again).
    pub done: bool,
}

/// Why the KV state machine refused a command, the same on every replica; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KvRefusal {
    /// The revision asked for was compacted.
    #[error("revision {requested} has been compacted; the oldest available is {compacted}")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still available.
        compacted: u64,
    },
    /// The revision asked for does not exist yet.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The namespace's current revision.
        current: u64,
    },
    /// A branch writes one key twice, or puts a key that it also deletes (etcd refuses it).
    #[error("a transaction branch writes key {0:?} more than once")]
    DuplicateKey(String),
    /// A part of the command is invalid.
    #[error("invalid command: {0}")]
    Invalid(String),
    /// The lease named does not exist (never granted, revoked or expired).
    #[error("lease {0} not found")]
    LeaseNotFound(u64),
    /// A grant asked for an id that is taken.
    #[error("lease {0} exists already")]
    LeaseExists(u64),
    /// A backup is being restored into the namespace: nothing else is served until it ends.
    #[error("namespace is being restored from a backup (restore {0:016x}); retry when it has finished")]
    Restoring(u64),
}

/// The reply of the KV state machine to a [`KvCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// The transaction ran.
    Txn(TxnReply),
    /// The compaction step ran.
    Compact(CompactReply),
    /// The lease grant or revoke ran.
    Lease(LeaseReply),
    /// The queue command ran.
    Queue(QueueReply),
    /// The command was refused.
    Refused(KvRefusal),
    /// The restore step ran.
    Restore(RestoreReply),
}
