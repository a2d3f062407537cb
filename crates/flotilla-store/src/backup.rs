//! Online backups of one namespace: a consistent copy of its state machine table at one
//! applied index, taken while writes go on, streamed, and checksummed.
//!
//! The file layout, and what the body is, are documented on [`Backup`].

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_core::{Namespace, TypeConfig};
use sha2::{Digest, Sha256};

use crate::backup_meta::{BackupMeta, BackupSource};
use crate::error::StoreError;
use crate::snapshot::SnapshotHeader;
use crate::snapshot_builder::{view_header, write_view};
use crate::store::Store;
use crate::view::NamespaceView;

/// First bytes of every backup file.
pub(crate) const BACKUP_MAGIC: [u8; 8] = *b"FLOTBKUP";
/// Version of the backup file layout written by this build.
pub const BACKUP_FORMAT_VERSION: u32 = 1;
/// Largest metadata header a backup file may have (a damaged length must not cause a huge
/// allocation).
pub(crate) const MAX_META_BYTES: u32 = 64 << 10;
/// Bytes of the trailing SHA-256.
pub(crate) const DIGEST_LEN: usize = 32;

/// A backup of one namespace whose view is fixed: the state it will write is the state at
/// [`BackupMeta::index`], however many writes commit before [`Backup::write_to`] runs. Holding
/// it holds a redb read transaction (which keeps the pages of that view from being reused), so
/// write it out promptly. Get one from [`Store::backup`].
///
/// ```text
/// magic      8 bytes  "FLOTBKUP"
/// version    u32 LE   BACKUP_FORMAT_VERSION
/// meta_len   u32 LE   at most MAX_META_BYTES
/// meta       JSON BackupMeta (namespace, cluster id, index, term, revision, time, version)
/// body       the plaintext snapshot of the namespace (its header with the applied
///            log id and membership, every key/value row, every dedup record, its own CRC-32;
///            the layout is in `snapshot.rs`)
/// sha256     32 bytes over every byte before it
/// ```
///
/// The body is exactly what a snapshot build writes (`write_view` in `snapshot_builder.rs`),
/// read from one redb read transaction, so it reflects exactly one applied index while the
/// writer keeps committing; a restore can install it as it installs a snapshot. It is plaintext
/// even when the store is encrypted at rest: a backup must be readable by a restore that does
/// not hold the node's keys, so protect backup files as you protect the data itself.
///
/// Nothing is held in memory beyond one record and the output's buffer: [`Backup::write_to`]
/// streams into any writer (a file, an HTTP body). Check a file with [`crate::verify_backup`].
pub struct Backup {
    meta: BackupMeta,
    header: SnapshotHeader<TypeConfig>,
    view: NamespaceView,
    store: Arc<Store>,
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup").field("meta", &self.meta).finish_non_exhaustive()
    }
}

impl Store {
    /// Fix a backup of `ns` at the state applied right now (refused with
    /// [`StoreError::Installing`] while a snapshot is being loaded into it). Cheap: the data is
    /// read when the backup is written.
    pub fn backup(self: &Arc<Self>, ns: &Namespace, source: BackupSource) -> Result<Backup, StoreError> {
        let view = self.view(ns)?;
        let header = view_header::<TypeConfig>(self, view.txn(), view.tables())?;
        let revision = flotilla_core::kv::revisions(&view)
            .map_err(|e| StoreError::from_io("reading the namespace's revision", e))?
            .current;
        let applied = view.applied();
        let meta = BackupMeta {
            format_version: BACKUP_FORMAT_VERSION,
            store_format: crate::FORMAT_VERSION,
            namespace: ns.as_str().to_string(),
            cluster_id: source.cluster_id,
            index: applied.map_or(0, |l| l.index),
            term: applied.map_or(0, |l| l.leader_id.term),
            revision,
            taken_at_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            flotilla_version: source.flotilla_version,
        };
        Ok(Backup { meta, header, view, store: self.clone() })
    }
}

impl Backup {
    /// What the backup will say about itself.
    pub fn meta(&self) -> &BackupMeta {
        &self.meta
    }

    /// Write the whole backup file to `out` and return it (flushed). Blocking I/O: call it off
    /// the async threads. An error leaves `out` with a partial file, which
    /// [`crate::verify_backup`] refuses.
    pub fn write_to<W: Write>(self, out: W) -> Result<W, StoreError> {
        let what = |e| StoreError::from_io("writing a backup", e);
        let meta = serde_json::to_vec(&self.meta).map_err(|e| StoreError::Encode(e.to_string()))?;
        let meta_len = u32::try_from(meta.len())
            .ok()
            .filter(|n| *n <= MAX_META_BYTES)
            .ok_or_else(|| StoreError::Invalid(format!("backup metadata of {} bytes is too large", meta.len())))?;
        let mut out = HashingWriter { out, hasher: Sha256::new(), store: self.store.clone() };
        out.write_all(&BACKUP_MAGIC).map_err(what)?;
        out.write_all(&BACKUP_FORMAT_VERSION.to_le_bytes()).map_err(what)?;
        out.write_all(&meta_len.to_le_bytes()).map_err(what)?;
        out.write_all(&meta).map_err(what)?;
        let HashingWriter { mut out, hasher, .. } =
            write_view(&self.store, self.view.txn(), self.view.tables(), &self.header, out)?;
        out.write_all(&hasher.finalize()).map_err(what)?;
        out.flush().map_err(what)?;
        Ok(out)
    }
}

/// Passes writes through to `out`, hashing them; fails once the store shuts down.
struct HashingWriter<W> {
    out: W,
    hasher: Sha256,
    /// A backup holds a read transaction, which keeps the database file open: one still
    /// streaming must not keep a stopped store's file (and its lock) from being reopened.
    store: Arc<Store>,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.store.writer.is_closed() {
            return Err(StoreError::Closed.to_io());
        }
        let n = self.out.write(bytes)?;
        self.hasher.update(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
