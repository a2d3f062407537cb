//! The seam an embedder implements to replicate its own commands.
//!
//! Flotilla owns durability, snapshots and replication; a [`StateMachine`] only decides what a
//! committed command does to the namespace's key/value table. Because all state lives in that
//! table, snapshots, restores and crash recovery work for every state machine alike.

use std::io;

/// The namespace's table as seen by [`StateMachine::apply`]: opaque byte keys and values,
/// written in the same transaction that records the applied log index.
pub trait StateTable {
    /// Read the value stored under `key`.
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>>;
    /// Store `value` under `key`, replacing any previous value.
    fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()>;
    /// Remove `key`; returns whether it existed.
    fn delete(&mut self, key: &[u8]) -> io::Result<bool>;
}

/// Deterministic application logic of a namespace.
///
/// `apply` must depend only on the table and the payload (no clocks, no randomness), so every
/// replica reaches the same state. Returning `Ok(Err(reason))` refuses the command on every
/// replica without changing the table; `Err(io)` means the storage failed and stops the group.
pub trait StateMachine: Send + Sync + 'static {
    /// Apply one committed command payload to `table` and return its reply.
    fn apply(&self, table: &mut dyn StateTable, payload: &[u8]) -> io::Result<Result<Vec<u8>, String>>;
}
