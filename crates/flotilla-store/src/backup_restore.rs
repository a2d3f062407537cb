//! Restoring a backup file into a namespace of this store: [`Store::restore_backup`].
//!
//! The backup's body is a snapshot of the namespace at its index, so a restore is a snapshot
//! install, exactly as if a leader had sent it: the file is verified whole (structure, CRC,
//! SHA-256) in the same pass that copies the body into a snapshot sink, the snapshot is
//! installed (verified again as it is saved, then loaded in bounded batches), and the empty log
//! is purged up to the snapshot so that the next entry goes right after it. Nothing of the
//! backup's cluster survives but its data: the caller then makes this node the only voter of a
//! new cluster (`flotilla::recovery`).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use flotilla_core::types::{LogId, SnapshotMeta};
use flotilla_core::{KvStateMachine, Namespace};
use openraft::storage::{RaftLogStorage, RaftStateMachine};

use crate::backup_verify::{check_backup, BackupSummary};
use crate::error::StoreError;
use crate::store::Store;

/// Bytes read from a backup file at a time.
const READ_BUFFER: usize = 256 << 10;

/// What [`Store::restore_backup`] installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredBackup {
    /// The backup file's summary, as [`crate::verify_backup`] gives it.
    pub summary: BackupSummary,
    /// The log id the namespace's state is now at (the backup's applied entry).
    pub applied: LogId,
}

impl Store {
    /// Install the backup file at `path` as the state of `ns`, which must hold nothing on this
    /// store (no Raft state, no data: [`StoreError::Invalid`] otherwise). The namespace runs
    /// the built-in KV state machine, and the backup's rows must be in this build's store format
    /// ([`crate::FORMAT_VERSION`]). Afterwards `ns` is at the backup's applied log id, with
    /// its data and its old membership; its group must not be running. A damaged file is
    /// [`StoreError::Corrupt`] and leaves the namespace as it was. Blocking file reads.
    pub async fn restore_backup(self: &Arc<Self>, ns: &Namespace, path: &Path) -> Result<RestoredBackup, StoreError> {
        if self.has_state(ns)? || self.holds_data(ns)? {
            return Err(StoreError::Invalid(format!(
                "namespace {ns} already has state here: restore into a new data directory"
            )));
        }
        let file = File::open(path).map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        let len = file.metadata().map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?.len();
        let mut sink = self.snapshot_sink(ns)?;
        let checked = check_backup(BufReader::with_capacity(READ_BUFFER, file), len, &mut sink)?;
        let (summary, header) = (checked.summary, checked.header);
        if summary.meta.store_format != crate::FORMAT_VERSION {
            return Err(StoreError::Invalid(format!(
                "the backup's rows are in store format {}, this build reads format {}: restore it with a \
                 Flotilla of that format",
                summary.meta.store_format,
                crate::FORMAT_VERSION
            )));
        }
        let applied = header
            .last_log_id
            .ok_or_else(|| StoreError::Invalid("the backup holds no applied entry: nothing to restore".into()))?;
        let meta = SnapshotMeta { last_log_id: Some(applied), last_membership: header.last_membership };
        let mut sm = self.state_machine(ns, Arc::new(KvStateMachine))?;
        sm.install_snapshot(&meta, sink.finish()?)
            .await
            .map_err(|e| StoreError::from_io("installing the backup", e))?;
        // The log is empty: purging up to the snapshot makes its next index the one after it.
        let mut log = self.log_store(ns)?;
        log.purge(applied).await.map_err(|e| StoreError::from_io("purging the log up to the backup", e))?;
        Ok(RestoredBackup { summary, applied })
    }
}
