//! [`WalReader`]: the read side of the write-ahead log, shared by the writer thread (which
//! keeps it current) and every reader of a namespace's log (openraft's replication, apply and
//! log-state reads), so that reads never go through the writer.
//!
//! It holds every namespace's [`LogIndex`] and an open handle per segment. A reader takes the
//! lock only to look up where an entry lies and to clone the segment's handle; the bytes are
//! read after the lock is released. That is safe because a segment's bytes never change once
//! written: the log only appends, and a recycled segment is deleted, never overwritten (a
//! handle still open on a deleted file reads it as it was).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(test)]
use crate::wal_log_index::Location;
use crate::wal_log_index::LogIndex;

/// What the writer and the readers share.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    /// Every namespace's index, by namespace id.
    pub(crate) namespaces: HashMap<u32, LogIndex>,
    /// A read handle on every segment on disk, by sequence number.
    pub(crate) files: BTreeMap<u64, Arc<File>>,
}

/// A handle on the log's index and segments for reading; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct WalReader {
    shared: Arc<RwLock<Entries>>,
}

impl WalReader {
    /// The shared state, for the writer to update.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Entries> {
        // A panic while the lock was held cannot leave the maps half changed in a way later
        // readers could misread: every change is one insert, removal or index call.
        self.shared.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, Entries> {
        self.shared.read().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    /// Where entry `index` of `namespace` lies, if it is retained.
    pub(crate) fn location(&self, namespace: u32, index: u64) -> Option<Location> {
        self.read_lock().namespaces.get(&namespace).and_then(|log| log.get(index))
    }

    /// The first and last retained index of `namespace`, if it retains any entry.
    pub(crate) fn bounds(&self, namespace: u32) -> Option<(u64, u64)> {
        self.read_lock().namespaces.get(&namespace).and_then(LogIndex::bounds)
    }

    #[cfg(test)]
    /// The last index purged from `namespace`'s log, if any was.
    pub(crate) fn purged(&self, namespace: u32) -> Option<u64> {
        self.read_lock().namespaces.get(&namespace).and_then(LogIndex::purged)
    }

    /// The entry at `index` of `namespace` as it was written (encoded and protected), if it is
    /// retained.
    pub(crate) fn read(&self, namespace: u32, index: u64) -> io::Result<Option<Vec<u8>>> {
        let (location, file) = {
            let entries = self.read_lock();
            let Some(location) = entries.namespaces.get(&namespace).and_then(|log| log.get(index)) else {
                return Ok(None);
            };
            let file = entries.files.get(&location.segment).cloned().ok_or_else(|| {
                io::Error::other(format!("write-ahead log segment {:016x} is not open", location.segment))
            })?;
            (location, file)
        };
        let mut payload = vec![0u8; location.len as usize];
        file.read_exact_at(&mut payload, location.payload)?;
        Ok(Some(payload))
    }
}
