//! The built-in key/value state machine, with etcd's revision model.
//!
//! Keys and values are opaque bytes: no key is a path, so no key can reach another namespace
//! or the Raft state. Every command is one log entry ([`KvCommand`]): a transaction (a plain
//! put, delete or batch is one without compares), applied all-or-nothing and creating at most
//! one revision, or a compaction step. How the state is laid out in the namespace's table is
//! in [`layout`](self) (see `layout.rs`); reads of it, for any [`StateView`](crate::StateView), in [`read`].

mod compact;
mod layout;
mod lease;
mod queue;
pub mod read;
pub mod restore;
mod txn;
mod types;

use std::io;

use serde::{Deserialize, Serialize};

pub use compact::MAX_COMPACT_EVENTS;
pub use lease::{attached_keys, lease_ttl, leases, MAX_LEASE_TTL_SECS};
pub use queue::{counts as queue_counts, first as queue_first, MAX_QUEUE_NAME};
pub use read::{changes, range, revisions, Changes, ChangesRequest, Revisions, FIRST_REVISION};
pub use txn::{MAX_DELETE_KEYS, MAX_TXN_DEPTH, MAX_TXN_OPS};
pub use types::{
    CompactReply, Compare, CompareOp, CompareTarget, EventKind, KeyValue, KvCommand, KvRefusal, KvReply, LeaseReply,
    OpResult, QueueReply, RangeEnd, RangeRequest, RangeResult, RestoreReply, Txn, TxnOp, TxnReply, WatchEvent,
    MAX_RANGE_BYTES, MAX_RANGE_LIMIT,
};

use crate::state_machine::{ApplyContext, StateMachine, StateTable};

/// Largest payload the KV state machine decodes, a guard against hostile log entries.
const MAX_PAYLOAD_BYTES: u64 = 64 * 1024 * 1024;

/// One operation of a KV command.
///
/// ```
/// use flotilla_core::KvOp;
///
/// let ops = vec![
///     KvOp::Set { key: b"order/42".to_vec(), value: b"shipped".to_vec() },
///     KvOp::Delete { key: b"pending/42".to_vec() },
/// ];
/// assert_eq!(ops[1].key(), b"pending/42");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Store `value` under `key`.
    Set {
        /// The key, opaque bytes.
        #[serde(with = "crate::byte_vec")]
        key: Vec<u8>,
        /// The value, opaque bytes.
        #[serde(with = "crate::byte_vec")]
        value: Vec<u8>,
    },
    /// Remove `key` if present.
    Delete {
        /// The key, opaque bytes.
        #[serde(with = "crate::byte_vec")]
        key: Vec<u8>,
    },
}

impl KvOp {
    /// The key this operation touches.
    ///
    /// ```
    /// let op = flotilla_core::KvOp::Delete { key: b"k".to_vec() };
    /// assert_eq!(op.key(), b"k");
    /// ```
    pub fn key(&self) -> &[u8] {
        match self {
            KvOp::Set { key, .. } | KvOp::Delete { key } => key,
        }
    }
}

impl From<KvOp> for TxnOp {
    fn from(op: KvOp) -> Self {
        match op {
            KvOp::Set { key, value } => TxnOp::put(key, value),
            KvOp::Delete { key } => TxnOp::delete(key),
        }
    }
}

/// Encode a list of sets and deletes as one transaction without compares.
pub fn encode_ops(ops: &[KvOp]) -> Vec<u8> {
    let success = ops.iter().cloned().map(TxnOp::from).collect();
    encode_command(&KvCommand::Txn(Txn { compares: Vec::new(), success, failure: Vec::new() }))
}

/// Encode a command as a payload for [`KvStateMachine`].
pub fn encode_command(command: &KvCommand) -> Vec<u8> {
    crate::encode(command).expect("encoding plain data cannot fail")
}

/// Decode a [`KvCommand`] from a payload (as a change subscriber receives it); `None` if it
/// is not one.
pub fn decode_command(bytes: &[u8]) -> Option<KvCommand> {
    crate::decode(bytes, MAX_PAYLOAD_BYTES).ok()
}

/// Decode a [`KvReply`] from a command's output bytes.
pub fn decode_reply(bytes: &[u8]) -> Option<KvReply> {
    crate::decode(bytes, MAX_PAYLOAD_BYTES).ok()
}

/// The key/value state machine every namespace runs unless an embedder supplies another.
#[derive(Debug, Default, Clone, Copy)]
pub struct KvStateMachine;

impl StateMachine for KvStateMachine {
    fn apply(
        &self,
        _context: &ApplyContext,
        table: &mut dyn StateTable,
        payload: &[u8],
    ) -> io::Result<Result<Vec<u8>, String>> {
        let command: KvCommand = match crate::decode(payload, MAX_PAYLOAD_BYTES) {
            Ok(command) => command,
            Err(e) => return Ok(Err(format!("malformed kv command: {e}"))),
        };
        // While a restore runs, only its own steps are applied (one more lookup per command).
        let restoring = match &command {
            KvCommand::Restore(_) => None,
            _ => restore::in_progress(table)?,
        };
        let reply = match restoring {
            Some(id) => KvReply::Refused(KvRefusal::Restoring(id)),
            None => serve(table, &command)?,
        };
        Ok(Ok(crate::encode(&reply).expect("encoding plain data cannot fail")))
    }

    fn serves_leases(&self) -> bool {
        true
    }
}

/// Apply `command` to `table`.
fn serve(table: &mut dyn StateTable, command: &KvCommand) -> io::Result<KvReply> {
    let reply = match command {
        KvCommand::Txn(t) => txn::apply(table, t)?.map_or_else(KvReply::Refused, KvReply::Txn),
        KvCommand::Compact { revision } => {
            compact::apply(table, *revision)?.map_or_else(KvReply::Refused, KvReply::Compact)
        }
        KvCommand::LeaseGrant { id, ttl_secs } => {
            lease::grant(table, *id, *ttl_secs)?.map_or_else(KvReply::Refused, KvReply::Lease)
        }
        KvCommand::LeaseRevoke { id } => lease::revoke(table, *id)?.map_or_else(KvReply::Refused, KvReply::Lease),
        KvCommand::QueuePush { name, value } => {
            queue::push(table, name, value)?.map_or_else(KvReply::Refused, KvReply::Queue)
        }
        KvCommand::QueuePop { name, lease } => {
            queue::pop(table, name, *lease)?.map_or_else(KvReply::Refused, KvReply::Queue)
        }
        KvCommand::QueueAck { name, id, lease } => {
            queue::ack(table, name, *id, *lease)?.map_or_else(KvReply::Refused, KvReply::Queue)
        }
        KvCommand::Restore(step) => restore::apply(table, step)?.map_or_else(KvReply::Refused, KvReply::Restore),
    };
    Ok(reply)
}

#[cfg(test)]
mod tests;
