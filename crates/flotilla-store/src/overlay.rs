//! Staging overlays over the kv table, so a command is applied all-or-nothing.
//!
//! redb savepoints cannot be taken once a transaction has opened a table, so they cannot undo
//! one command inside a shared group commit. Instead a command's `StateMachine::apply` runs
//! against an [`EntryTable`]: reads see the command's own writes, then the writes of earlier
//! commands of the batch ([`Changes`]), then the committed table; writes only go to the
//! command's own change set. A refused command's changes are dropped; an accepted command's
//! are merged into the batch's, which is written to redb once the whole batch succeeded.

use std::collections::BTreeMap;
use std::io;

use flotilla_core::StateTable;
use redb::ReadableTable;

use crate::codec::Codec;
use crate::tables::NsTables;

/// Pending writes: `Some(value)` to store, `None` to delete.
pub(crate) type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The view one command is applied against.
pub(crate) struct EntryTable<'a, T> {
    base: &'a T,
    /// Opens the committed values of `base` (sealed at rest).
    codec: &'a Codec,
    tables: &'a NsTables,
    batch: &'a Changes,
    changes: Changes,
}

impl<'a, T> EntryTable<'a, T>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    /// A view over the committed `base` table (of namespace `tables`, protected by `codec`) and
    /// the batch's earlier `batch` writes.
    pub(crate) fn new(base: &'a T, codec: &'a Codec, tables: &'a NsTables, batch: &'a Changes) -> Self {
        Self { base, codec, tables, batch, changes: Changes::new() }
    }

    /// The command's writes.
    pub(crate) fn into_changes(self) -> Changes {
        self.changes
    }
}

impl<T> StateTable for EntryTable<'_, T>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        if let Some(v) = self.changes.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.batch.get(key) {
            return Ok(v.clone());
        }
        let value = self.base.get(key).map_err(|e| io::Error::other(format!("reading the kv table: {e}")))?;
        let Some(value) = value else { return Ok(None) };
        let what = || format!("namespace {:?}, the value of a key", self.tables.ns().as_str());
        // A StoreError travels inside the io::Error, so the apply can report it as such.
        let plain = self.codec.unprotect_value(&self.tables.kv_context(key), value.value(), &what)?;
        Ok(Some(plain.into_owned()))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.changes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> io::Result<bool> {
        let existed = self.get(key)?.is_some();
        self.changes.insert(key.to_vec(), None);
        Ok(existed)
    }
}
