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
use std::ops::Bound;

use flotilla_core::{Scan, ScanVisitor, StateTable, StateView};
use redb::ReadableTable;

use crate::error::redb_error;

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

impl<T> EntryTable<'_, T>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    /// The committed value of `key` as stored, opened.
    fn open(&self, key: &[u8], stored: &[u8]) -> io::Result<Vec<u8>> {
        let what = || format!("namespace {:?}, the value of a key", self.tables.ns().as_str());
        // A StoreError travels inside the io::Error, so the apply can report it as such.
        Ok(self.codec.unprotect_value(&self.tables.kv_context(key), stored, &what)?.into_owned())
    }
}

impl<T> StateView for EntryTable<'_, T>
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
        let value = self.base.get(key).map_err(|e| io::Error::from(redb_error(e)))?;
        let Some(value) = value else { return Ok(None) };
        self.open(key, value.value()).map(Some)
    }

    /// Merges the three layers in key order; where they hold the same key, the command's own
    /// change wins over the batch's, and that over the committed row.
    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, visit: &mut ScanVisitor<'_>) -> io::Result<()> {
        let owned = (start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec));
        let mut own = self.changes.range::<Vec<u8>, _>(owned.clone()).peekable();
        let mut batch = self.batch.range::<Vec<u8>, _>(owned).peekable();
        let mut base = self.base.range::<&[u8]>((start, end)).map_err(|e| io::Error::from(redb_error(e)))?;
        let mut next_base = || -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
            match base.next() {
                None => Ok(None),
                Some(item) => {
                    let (k, v) = item.map_err(|e| io::Error::from(redb_error(e)))?;
                    Ok(Some((k.value().to_vec(), v.value().to_vec())))
                }
            }
        };
        let mut base_head = next_base()?;
        loop {
            let smallest = [own.peek().map(|(k, _)| k.as_slice()), batch.peek().map(|(k, _)| k.as_slice())]
                .into_iter()
                .chain([base_head.as_ref().map(|(k, _)| k.as_slice())])
                .flatten()
                .min()
                .map(<[u8]>::to_vec);
            let Some(key) = smallest else { return Ok(()) };
            let mut value: Option<Option<Vec<u8>>> = None;
            if own.peek().is_some_and(|(k, _)| **k == key) {
                value = own.next().map(|(_, v)| v.clone());
            }
            if batch.peek().is_some_and(|(k, _)| **k == key) {
                let staged = batch.next().map(|(_, v)| v.clone());
                value = value.or(staged);
            }
            if base_head.as_ref().is_some_and(|(k, _)| *k == key) {
                let (_, stored) = base_head.take().expect("checked above");
                if value.is_none() {
                    value = Some(Some(self.open(&key, &stored)?));
                }
                base_head = next_base()?;
            }
            if let Some(Some(v)) = value {
                if visit(&key, &v)? == Scan::Stop {
                    return Ok(());
                }
            }
        }
    }
}

impl<T> StateTable for EntryTable<'_, T>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
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
