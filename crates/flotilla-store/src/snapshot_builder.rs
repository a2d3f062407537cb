//! Building snapshots from a read transaction, and keeping the current one on disk.
//!
//! A [`SnapshotBuilder`] takes its redb read transaction when openraft asks for the builder,
//! so the snapshot is exactly the state at that moment (MVCC) while the writer goes on
//! applying entries; encoding runs on a blocking thread and streams the records straight into
//! a temporary file (sealed at rest in segments when the store is encrypted), which is then
//! renamed into place: memory is a write buffer and one record, whatever the snapshot's size.

use std::io::{self, Write};
use std::marker::PhantomData;
use std::sync::Arc;

use flotilla_core::{Namespace, TypeConfig};
use openraft::alias::{SnapshotMetaOf, SnapshotOf};
use openraft::storage::RaftSnapshotBuilder;
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};

use crate::codec::encode_sealed;
use crate::error::{redb_error, StoreError};
use crate::snapshot::{SnapshotEncoder, SnapshotHeader};
use crate::store::{read_meta, Store};
use crate::tables::{open_read, NsTables, META_APPLIED, META_DEDUP_NEXT, META_MEMBERSHIP, META_SNAPSHOT};
use crate::writer::{clean, dirty};
use crate::{SnapshotData, StoreConfig};

/// Builds a snapshot of one namespace as of the moment the builder was created; implements
/// openraft's [`RaftSnapshotBuilder`].
pub struct SnapshotBuilder<C: StoreConfig = TypeConfig> {
    store: Arc<Store>,
    tables: Arc<NsTables>,
    /// The view to encode; taken by the first build (a later build takes a fresh view).
    view: Option<Result<ReadTransaction, StoreError>>,
    /// Counts this builder for the store's shutdown (see `in_use.rs`).
    _in_use: crate::in_use::InUse,
    _config: PhantomData<fn() -> C>,
}

impl<C: StoreConfig> SnapshotBuilder<C> {
    pub(crate) fn new(store: Arc<Store>, tables: Arc<NsTables>) -> Self {
        let view = Some(store.read_txn());
        let _in_use = crate::in_use::InUse::new(&store.in_use);
        Self { store, tables, view, _in_use, _config: PhantomData }
    }

    pub(crate) async fn build(&mut self) -> Result<SnapshotOf<C, SnapshotData>, StoreError> {
        let view = match self.view.take() {
            Some(view) => view?,
            None => self.store.read_txn()?,
        };
        let store = self.store.clone();
        let tables = self.tables.clone();
        // A full disk must not fail the build: openraft would stop the group. Wait for room.
        let (header, data) = tokio::task::spawn_blocking(move || {
            let is_full = |e: &StoreError| matches!(e, StoreError::DiskFull(_));
            store.disk.retry_while_full("writing a snapshot", is_full, || encode_view::<C>(&store, &view, &tables))
        })
        .await
        .map_err(|e| StoreError::Redb(format!("snapshot build task failed: {e}")))??;
        save_current::<C>(&self.store, &self.tables, &header, &data).await?;
        tracing::info!(
            namespace = %self.tables.ns(),
            snapshot = %header.snapshot_id,
            bytes = data.len(),
            "snapshot built"
        );
        let meta = SnapshotMetaOf::<C> { last_log_id: header.last_log_id, last_membership: header.last_membership };
        Ok(SnapshotOf::<C, SnapshotData> { meta, snapshot: data })
    }
}

impl<C: StoreConfig> RaftSnapshotBuilder<C> for SnapshotBuilder<C> {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, SnapshotData>, io::Error> {
        self.build().await.map_err(|e| {
            tracing::error!(namespace = %self.tables.ns(), error = %e, "building a snapshot failed");
            e.to_io()
        })
    }
}

/// Encode the namespace's state as seen by `txn` into a new temporary snapshot file (fsynced),
/// streaming: memory is a write buffer and one record.
fn encode_view<C: StoreConfig>(
    store: &Store,
    txn: &ReadTransaction,
    tables: &NsTables,
) -> Result<(SnapshotHeader<C>, SnapshotData), StoreError> {
    let header = view_header::<C>(store, txn, tables)?;
    let mut writer = store.snapshots.create_temp(tables.ns())?;
    write_view(store, txn, tables, &header, &mut writer)?;
    Ok((header, writer.finish(true)?))
}

/// The header of a snapshot of the namespace's state as seen by `txn`, with a new snapshot id.
pub(crate) fn view_header<C: StoreConfig>(
    store: &Store,
    txn: &ReadTransaction,
    tables: &NsTables,
) -> Result<SnapshotHeader<C>, StoreError> {
    let last_log_id = read_meta(txn, tables, META_APPLIED)?;
    let last_membership = read_meta(txn, tables, META_MEMBERSHIP)?.unwrap_or_default();
    let dedup_next = read_meta(txn, tables, META_DEDUP_NEXT)?.unwrap_or(0);
    let snapshot_id = store.next_snapshot_id::<C>(&last_log_id);
    Ok(SnapshotHeader::<C> { last_log_id, last_membership, snapshot_id, dedup_next })
}

/// Write the plaintext snapshot (see [`crate::snapshot`]) of the namespace's state as seen by
/// `txn`, described by `header`, to `out`, streaming: memory is `out`'s buffer and one record.
/// Snapshot files and backups (see [`crate::backup`]) are both written by it.
pub(crate) fn write_view<C: StoreConfig, W: Write>(
    store: &Store,
    txn: &ReadTransaction,
    tables: &NsTables,
    header: &SnapshotHeader<C>,
    out: W,
) -> Result<W, StoreError> {
    // The snapshot itself is plaintext (it is sent to other nodes, which may hold other keys);
    // a snapshot file is sealed as it is written.
    let codec = &store.codec;
    let kv = open_read(txn, tables.kv())?;
    let dedup = open_read(txn, tables.dedup())?;
    // The view is fixed, so the counts are those of the records iterated below.
    let kv_count = kv.as_ref().map(|t| t.len()).transpose().map_err(redb_error)?.unwrap_or(0);
    let dedup_count = dedup.as_ref().map(|t| t.len()).transpose().map_err(redb_error)?.unwrap_or(0);
    let mut enc = SnapshotEncoder::new(out, header, kv_count, dedup_count)?;
    if let Some(kv) = kv {
        let what = || format!("namespace {:?}, the value of a key", tables.ns().as_str());
        for item in kv.iter().map_err(redb_error)? {
            let (key, value) = item.map_err(redb_error)?;
            let key = key.value();
            enc.push_kv(key, &codec.unprotect_value(&tables.kv_context(key), value.value(), &what)?)?;
        }
    }
    enc.start_dedup()?;
    if let Some(dedup) = dedup {
        let what = || format!("namespace {:?}, a dedup entry", tables.ns().as_str());
        for item in dedup.iter().map_err(redb_error)? {
            let (key, value) = item.map_err(redb_error)?;
            let key = key.value();
            enc.push_dedup(key, &codec.unprotect(&tables.dedup_context(key), value.value(), &what)?)?;
        }
    }
    enc.finish()
}

/// Make `data` (described by `header`, in a temporary file written by the store) the current
/// snapshot of the namespace: rename the file into place crash-safely, then record its header
/// in the meta table. A snapshot older than the current one (an install may have overtaken
/// the build) is not saved (its file goes when `data` is dropped).
pub(crate) async fn save_current<C: StoreConfig>(
    store: &Store,
    tables: &Arc<NsTables>,
    header: &SnapshotHeader<C>,
    data: &SnapshotData,
) -> Result<(), StoreError> {
    let lock = store.snapshot_lock(tables.ns());
    let _guard = lock.lock().await;

    let txn = store.read_txn()?;
    if let Some(current) = read_meta::<SnapshotHeader<C>>(&txn, tables, META_SNAPSHOT)? {
        if current.last_log_id > header.last_log_id {
            tracing::debug!(
                namespace = %tables.ns(),
                built = %header.snapshot_id,
                current = %current.snapshot_id,
                "keeping the newer current snapshot"
            );
            return Ok(());
        }
    }
    drop(txn);

    commit_file(store, tables.ns(), data).await?;
    let record = encode_sealed(header)?;
    let job_tables = tables.clone();
    store
        .writer
        .execute(record.len(), move |txn: &WriteTransaction| {
            let mut meta = txn.open_table(job_tables.meta()).map_err(clean)?;
            meta.insert(META_SNAPSHOT, record.as_slice()).map_err(dirty)?;
            Ok(())
        })
        .await?;
    Ok(())
}

/// Make `data`, in a temporary snapshot file of the store, the current snapshot file of `ns`
/// (see [`crate::snapshot_file`]). Callers hold the namespace's snapshot lock.
pub(crate) async fn commit_file(store: &Store, ns: &Namespace, data: &SnapshotData) -> Result<(), StoreError> {
    let (files, ns, data) = (store.snapshots.clone(), ns.clone(), data.clone());
    tokio::task::spawn_blocking(move || files.commit(&ns, &data))
        .await
        .map_err(|e| StoreError::Redb(format!("snapshot save task failed: {e}")))?
}
