//! Loading a verified snapshot into a namespace's tables without stalling the other namespaces.
//!
//! The store has one writer for every namespace, so an install done as one transaction would
//! hold the votes and appends of all of them for as long as it takes to write the whole
//! snapshot. Instead the install is a sequence of writer jobs, each bounded by
//! [`BATCH_BYTES`] and [`BATCH_RECORDS`], and the writer serves other namespaces between them:
//!
//! 1. begin: drop the namespace's state, remove its applied log id, set [`META_INSTALLING`]
//!    and record the snapshot (its file is already saved, see [`crate::state_machine_store`]);
//! 2. load: the key/value pairs, then the dedup records, a batch per job (each batch read from
//!    the snapshot file off the writer thread, so memory is one batch);
//! 3. finish (durable): set the applied log id, membership and dedup counter, remove the mark.
//!
//! Crash safety: redb commits land in order, so after a crash the namespace is either as it
//! was before step 1, or marked and without an applied log id. Then openraft, at start, finds
//! the snapshot file newer than the applied state and installs it again from the start. While
//! the mark is set, reads of the namespace are refused ([`crate::Store::get`]), since its
//! tables hold a state that never existed; linearizable reads wait anyway, since openraft
//! reports the new applied index only once the install returned.

use std::io::BufReader;
use std::sync::Arc;

use redb::WriteTransaction;

use crate::codec::{encode_sealed, Codec};
use crate::error::StoreError;
use crate::snapshot::{dedup_order, read_batch, Record, RecordsPos, Section, Verified};
use crate::store::Store;
use crate::tables::{NsTables, META_APPLIED, META_DEDUP_NEXT, META_INSTALLING, META_MEMBERSHIP, META_SNAPSHOT};
use crate::writer::{clean, dirty, JobFailure};
use crate::{SnapshotData, StoreConfig};

/// Most snapshot bytes one load job writes.
pub(crate) const BATCH_BYTES: usize = 4 << 20;
/// Most records one load job writes.
pub(crate) const BATCH_RECORDS: usize = 4096;
/// Bytes read from the snapshot file at a time.
const READ_BUFFER: usize = 256 << 10;

/// Test hook: called between load jobs (with the number of jobs done), where a test can
/// pause the install or stop it as a crash would.
#[cfg(test)]
pub(crate) type BetweenJobs =
    Arc<dyn Fn(usize) -> futures::future::BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;

/// What an install did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Installed {
    /// Keys loaded.
    pub(crate) keys: u64,
    /// Load jobs it took (the writer served other work between them).
    pub(crate) jobs: usize,
}

/// Load the verified snapshot `data` (described by `snapshot`) into the namespace of `tables`.
pub(crate) async fn install<C: StoreConfig>(
    store: &Store,
    tables: &Arc<NsTables>,
    snapshot: Verified<C>,
    data: &SnapshotData,
    #[cfg(test)] between: Option<BetweenJobs>,
) -> Result<Installed, StoreError> {
    let record = encode_sealed(&snapshot.header)?;
    let job_tables = tables.clone();
    store.writer.execute_visible(record.len(), move |txn: &WriteTransaction| begin(txn, &job_tables, &record)).await?;

    let mut jobs = 0;
    let mut keys = 0;
    for (section, start) in [(Section::Kv, snapshot.kv), (Section::Dedup, snapshot.dedup)] {
        let mut at = start;
        while !at.is_done() {
            #[cfg(test)]
            if let Some(hook) = &between {
                hook(jobs).await?;
            }
            // The batch is read off the writer thread, so the writer only inserts: memory is
            // one batch, and the other namespaces wait for no file reads.
            let (batch, next) = read_next(data, section, at).await?;
            let loaded = batch.len() as u64;
            let cost = batch.iter().map(|(k, v)| k.len() + v.len()).sum();
            let (job_tables, codec) = (tables.clone(), store.codec.clone());
            store
                .writer
                .execute_visible(cost, move |txn: &WriteTransaction| load(txn, &job_tables, &codec, section, &batch))
                .await?;
            if section == Section::Kv {
                keys += loaded;
            }
            at = next;
            jobs += 1;
        }
    }

    let applied = snapshot.header.last_log_id.as_ref().map(encode_sealed).transpose()?;
    let membership = encode_sealed(&snapshot.header.last_membership)?;
    let next = encode_sealed(&snapshot.header.dedup_next)?;
    let job_tables = tables.clone();
    store
        .writer
        .execute(membership.len(), move |txn: &WriteTransaction| {
            finish(txn, &job_tables, applied.as_deref(), &membership, &next)
        })
        .await?;
    Ok(Installed { keys, jobs })
}

/// The next batch of `section` from `at` (at most [`BATCH_RECORDS`] records and about
/// [`BATCH_BYTES`] bytes), read on a blocking thread.
async fn read_next(
    data: &SnapshotData,
    section: Section,
    at: RecordsPos,
) -> Result<(Vec<Record>, RecordsPos), StoreError> {
    let data = data.clone();
    tokio::task::spawn_blocking(move || {
        let src = BufReader::with_capacity(READ_BUFFER, data.reader_at(at.offset()));
        read_batch(src, data.len(), section, at, BATCH_RECORDS, BATCH_BYTES)
    })
    .await
    .map_err(|e| StoreError::Redb(format!("snapshot read task failed: {e}")))?
}

/// Step 1: mark the namespace, drop its state and record the snapshot `record`.
fn begin(txn: &WriteTransaction, tables: &NsTables, record: &[u8]) -> Result<(), JobFailure> {
    let mut meta = txn.open_table(tables.meta()).map_err(clean)?;
    meta.insert(META_INSTALLING, record).map_err(dirty)?;
    meta.remove(META_APPLIED).map_err(dirty)?;
    meta.insert(META_SNAPSHOT, record).map_err(dirty)?;
    drop(meta);
    txn.delete_table(tables.kv()).map_err(dirty)?;
    txn.delete_table(tables.dedup()).map_err(dirty)?;
    txn.delete_table(tables.dedup_order()).map_err(dirty)?;
    Ok(())
}

/// Step 2: insert one batch of records of `section`.
fn load(
    txn: &WriteTransaction,
    tables: &NsTables,
    codec: &Codec,
    section: Section,
    batch: &[Record],
) -> Result<(), JobFailure> {
    match section {
        Section::Kv => load_kv(txn, tables, codec, batch),
        Section::Dedup => load_dedup(txn, tables, codec, batch),
    }
}

fn load_kv(txn: &WriteTransaction, tables: &NsTables, codec: &Codec, batch: &[Record]) -> Result<(), JobFailure> {
    let mut kv = txn.open_table(tables.kv()).map_err(clean)?;
    for (key, value) in batch {
        let stored = codec.protect_value(&tables.kv_context(key), value).map_err(JobFailure::dirty)?;
        kv.insert(key.as_slice(), stored.as_ref()).map_err(dirty)?;
    }
    Ok(())
}

fn load_dedup(txn: &WriteTransaction, tables: &NsTables, codec: &Codec, batch: &[Record]) -> Result<(), JobFailure> {
    let mut dedup = txn.open_table(tables.dedup()).map_err(clean)?;
    let mut order = txn.open_table(tables.dedup_order()).map_err(dirty)?;
    for (id, payload) in batch {
        let order_no = dedup_order(payload).map_err(JobFailure::dirty)?;
        let stored = codec.protect(&tables.dedup_context(id), payload).map_err(JobFailure::dirty)?;
        dedup.insert(id.as_slice(), stored.as_slice()).map_err(dirty)?;
        order.insert(order_no, id.as_slice()).map_err(dirty)?;
    }
    Ok(())
}

/// Step 3: the namespace holds the snapshot's state: set its applied log id, membership and
/// dedup counter, and remove the mark.
fn finish(
    txn: &WriteTransaction,
    tables: &NsTables,
    applied: Option<&[u8]>,
    membership: &[u8],
    next: &[u8],
) -> Result<(), JobFailure> {
    let mut meta = txn.open_table(tables.meta()).map_err(clean)?;
    match applied {
        Some(a) => meta.insert(META_APPLIED, a).map(drop),
        None => meta.remove(META_APPLIED).map(drop),
    }
    .map_err(dirty)?;
    meta.insert(META_MEMBERSHIP, membership).map_err(dirty)?;
    meta.insert(META_DEDUP_NEXT, next).map_err(dirty)?;
    meta.remove(META_INSTALLING).map_err(dirty)?;
    Ok(())
}
