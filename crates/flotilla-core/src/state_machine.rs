//! The seam an embedder implements to replicate its own commands.
//!
//! Flotilla owns durability, snapshots and replication; a [`StateMachine`] only decides what a
//! committed command does to the namespace's key/value table. Because all state lives in that
//! table, snapshots, restores and crash recovery work for every state machine alike.

use std::io;
use std::ops::Bound;

/// What a [`StateView::scan`] visitor tells the scan: go on to the next row or stop.
///
/// ```
/// # use std::{io, ops::Bound};
/// # use flotilla_core::{Scan, StateView};
/// /// The first `n` keys of `view`.
/// fn first_keys(view: &dyn StateView, n: usize) -> io::Result<Vec<Vec<u8>>> {
///     let mut keys = Vec::new();
///     view.scan(Bound::Unbounded, Bound::Unbounded, &mut |key, _| {
///         keys.push(key.to_vec());
///         Ok(if keys.len() < n { Scan::Continue } else { Scan::Stop })
///     })?;
///     Ok(keys)
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Visit the next row.
    Continue,
    /// Stop here.
    Stop,
}

/// What [`StateView::scan`] calls for each row: the key and the value, answering whether to
/// go on.
pub type ScanVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> io::Result<Scan> + 'a;

/// A read-only view of a namespace's table: what readers see as of one commit, and what
/// [`StateMachine::apply`] sees (with the command's own writes) while it runs.
///
/// ```
/// use std::io;
/// use flotilla_core::StateView;
///
/// /// A counter stored big-endian under `n` (0 when absent).
/// fn counter(view: &dyn StateView) -> io::Result<u64> {
///     Ok(view.get(b"n")?.and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes))
/// }
/// ```
pub trait StateView {
    /// Read the value stored under `key`.
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>>;

    /// Visit the rows whose keys lie between `start` and `end`, in ascending key order, until
    /// `visit` answers [`Scan::Stop`] or the range ends.
    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, visit: &mut ScanVisitor<'_>) -> io::Result<()>;
}

/// The namespace's table as seen by [`StateMachine::apply`]: opaque byte keys and values,
/// written in the same transaction that records the applied log index.
///
/// ```
/// use std::io;
/// use flotilla_core::StateTable;
///
/// /// Move `key`'s value to `to`; false when `key` is absent.
/// fn rename(table: &mut dyn StateTable, key: &[u8], to: &[u8]) -> io::Result<bool> {
///     let Some(value) = table.get(key)? else { return Ok(false) };
///     table.put(to, &value)?;
///     table.delete(key)
/// }
/// ```
pub trait StateTable: StateView {
    /// Store `value` under `key`, replacing any previous value.
    fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()>;
    /// Remove `key`; returns whether it existed.
    fn delete(&mut self, key: &[u8]) -> io::Result<bool>;
}

/// Where in the log a command is applied.
///
/// ```
/// use std::io;
/// use flotilla_core::{ApplyContext, StateTable};
///
/// /// Remember where the last command was applied: the same on every replica.
/// fn stamp(context: &ApplyContext, table: &mut dyn StateTable) -> io::Result<()> {
///     table.put(b"last-applied", &context.index.to_be_bytes())
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyContext {
    /// The log index of the entry that carries the command (the same on every replica).
    pub index: u64,
}

/// Deterministic application logic of a namespace.
///
/// `apply` must depend only on the context, the table and the payload (no clocks, no
/// randomness), so every replica reaches the same state. Returning `Ok(Err(reason))` refuses
/// the command on every replica without changing the table; `Err(io)` means the storage failed
/// and stops the group.
///
/// ```
/// use std::io;
/// use flotilla_core::{ApplyContext, StateMachine, StateTable};
///
/// /// Appends each command to a log under `entry/<index>`; refuses empty ones.
/// struct AppendLog;
///
/// impl StateMachine for AppendLog {
///     fn apply(&self, context: &ApplyContext, table: &mut dyn StateTable, payload: &[u8]) -> io::Result<Result<Vec<u8>, String>> {
///         if payload.is_empty() {
///             return Ok(Err("empty entry".into())); // refused on every replica, nothing written
///         }
///         table.put(format!("entry/{:020}", context.index).as_bytes(), payload)?;
///         Ok(Ok(Vec::new()))
///     }
/// }
/// ```
pub trait StateMachine: Send + Sync + 'static {
    /// Apply one committed command payload to `table` and return its reply.
    fn apply(
        &self,
        context: &ApplyContext,
        table: &mut dyn StateTable,
        payload: &[u8],
    ) -> io::Result<Result<Vec<u8>, String>>;

    /// Whether the table holds leases in the KV layout (`crate::kv`), so that the leader runs
    /// lease expiry over it. Only [`KvStateMachine`](crate::KvStateMachine) says yes: an
    /// embedder's table is never read as leases.
    fn serves_leases(&self) -> bool {
        false
    }
}
