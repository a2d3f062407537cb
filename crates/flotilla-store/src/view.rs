//! [`NamespaceView`]: a reader's view of one namespace's state machine table, as of one commit.

use std::io;
use std::ops::Bound;

use flotilla_core::types::LogId;
use flotilla_core::{Scan, ScanVisitor, StateView};
use redb::{ReadOnlyTable, ReadTransaction};

use crate::codec::Codec;
use crate::error::{redb_error, StoreError};
use crate::store::read_meta;
use crate::tables::{open_read, NsTables, META_APPLIED};

/// The state machine table of one namespace as of the commit that was the latest when the
/// view was taken (a redb read transaction: it never waits for the writer, and the writer
/// never waits for it). Values are opened (unsealed at rest) as they are read.
pub struct NamespaceView {
    /// `None` while the namespace has no state at all.
    table: Option<ReadOnlyTable<&'static [u8], &'static [u8]>>,
    codec: Codec,
    tables: NsTables,
    applied: Option<LogId>,
    /// Keeps the snapshot the table reads from.
    txn: ReadTransaction,
}

impl std::fmt::Debug for NamespaceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceView").field("namespace", self.tables.ns()).field("applied", &self.applied).finish()
    }
}

impl NamespaceView {
    pub(crate) fn new(txn: ReadTransaction, tables: NsTables, codec: Codec) -> Result<Self, StoreError> {
        let table = open_read(&txn, tables.kv())?;
        let applied = read_meta(&txn, &tables, META_APPLIED)?;
        Ok(Self { table, codec, tables, applied, txn })
    }

    /// The last log id applied to the state the view shows.
    pub fn applied(&self) -> Option<LogId> {
        self.applied
    }

    /// The read transaction the view reads from (a backup streams the same state).
    pub(crate) fn txn(&self) -> &ReadTransaction {
        &self.txn
    }

    /// The namespace's tables.
    pub(crate) fn tables(&self) -> &NsTables {
        &self.tables
    }

    fn open(&self, key: &[u8], stored: &[u8]) -> io::Result<Vec<u8>> {
        let what = || format!("namespace {:?}, the value of a key", self.tables.ns().as_str());
        Ok(self.codec.unprotect_value(&self.tables.kv_context(key), stored, &what)?.into_owned())
    }
}

impl StateView for NamespaceView {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let Some(table) = &self.table else { return Ok(None) };
        match table.get(key).map_err(|e| io::Error::from(redb_error(e)))? {
            Some(stored) => self.open(key, stored.value()).map(Some),
            None => Ok(None),
        }
    }

    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, visit: &mut ScanVisitor<'_>) -> io::Result<()> {
        let Some(table) = &self.table else { return Ok(()) };
        for item in table.range::<&[u8]>((start, end)).map_err(|e| io::Error::from(redb_error(e)))? {
            let (key, stored) = item.map_err(|e| io::Error::from(redb_error(e)))?;
            let value = self.open(key.value(), stored.value())?;
            if visit(key.value(), &value)? == Scan::Stop {
                break;
            }
        }
        Ok(())
    }
}
