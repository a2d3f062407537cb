//! Loading a verified snapshot into a namespace's tables without stalling the other namespaces.
//!
//! The store has one writer for every namespace, so an install done as one transaction would
//! hold the votes and appends of all of them for as long as it takes to write the whole
//! snapshot. Instead the install is a sequence of writer jobs, each bounded by
//! [`BATCH_BYTES`] and [`BATCH_RECORDS`], and the writer serves other namespaces between them:
//!
//! 1. begin: drop the namespace's state, remove its applied log id, set [`META_INSTALLING`]
//!    and record the snapshot (its file is already saved, see [`crate::state_machine_store`]);
//! 2. load: the key/value pairs, then the dedup records, a batch per job;
//! 3. finish (durable): set the applied log id, membership and dedup counter, remove the mark.
//!
//! Crash safety: redb commits land in order, so after a crash the namespace is either as it
//! was before step 1, or marked and without an applied log id. Then openraft, at start, finds
//! the snapshot file newer than the applied state and installs it again from the start. While
//! the mark is set, reads of the namespace are refused ([`crate::Store::get`]), since its
//! tables hold a state that never existed; linearizable reads wait anyway, since openraft
//! reports the new applied index only once the install returned.

use std::sync::Arc;

use redb::WriteTransaction;

use crate::codec::{encode_sealed, Codec};
use crate::error::StoreError;
use crate::snapshot::{dedup_order, DedupRecord, KvRecord, Records, RecordsPos, SnapshotHeader};
use crate::store::Store;
use crate::tables::{NsTables, META_APPLIED, META_DEDUP_NEXT, META_INSTALLING, META_MEMBERSHIP, META_SNAPSHOT};
use crate::writer::{clean, dirty, JobFailure};
use crate::StoreConfig;

/// Most snapshot bytes one load job writes.
pub(crate) const BATCH_BYTES: usize = 4 << 20;
/// Most records one load job writes.
pub(crate) const BATCH_RECORDS: usize = 4096;

/// A verified snapshot and where its sections start.
pub(crate) struct Verified<C: StoreConfig> {
    /// The snapshot's header.
    pub(crate) header: SnapshotHeader<C>,
    /// The snapshot bytes (checksum verified).
    pub(crate) data: Arc<Vec<u8>>,
    /// Start of the key/value section.
    pub(crate) kv: RecordsPos,
    /// Start of the dedup section.
    pub(crate) dedup: RecordsPos,
}

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

/// Load `snapshot` into the namespace of `tables`.
pub(crate) async fn install<C: StoreConfig>(
    store: &Store,
    tables: &Arc<NsTables>,
    snapshot: Verified<C>,
    #[cfg(test)] between: Option<BetweenJobs>,
) -> Result<Installed, StoreError> {
    let record = encode_sealed(&snapshot.header)?;
    let job_tables = tables.clone();
    store.writer.execute_visible(record.len(), move |txn: &WriteTransaction| begin(txn, &job_tables, &record)).await?;

    let mut jobs = 0;
    let mut keys = 0;
    for section in [Section::Kv(snapshot.kv), Section::Dedup(snapshot.dedup)] {
        let mut at = section;
        while !at.pos().is_done() {
            #[cfg(test)]
            if let Some(hook) = &between {
                hook(jobs).await?;
            }
            let (job_tables, codec, data) = (tables.clone(), store.codec.clone(), snapshot.data.clone());
            let (next, loaded) = store
                .writer
                .execute_visible(BATCH_BYTES, move |txn: &WriteTransaction| load(txn, &job_tables, &codec, &data, at))
                .await?;
            if matches!(at, Section::Kv(_)) {
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

/// A section of the snapshot and where its loading stands.
#[derive(Debug, Clone, Copy)]
enum Section {
    Kv(RecordsPos),
    Dedup(RecordsPos),
}

impl Section {
    fn pos(&self) -> RecordsPos {
        match self {
            Section::Kv(at) | Section::Dedup(at) => *at,
        }
    }
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

/// Step 2: one batch of records from `at`; returns where the next batch starts and how many
/// records this one loaded.
fn load(
    txn: &WriteTransaction,
    tables: &NsTables,
    codec: &Codec,
    data: &[u8],
    at: Section,
) -> Result<(Section, u64), JobFailure> {
    match at {
        Section::Kv(pos) => load_kv(txn, tables, codec, data, pos).map(|(p, n)| (Section::Kv(p), n)),
        Section::Dedup(pos) => load_dedup(txn, tables, codec, data, pos).map(|(p, n)| (Section::Dedup(p), n)),
    }
}

fn load_kv(
    txn: &WriteTransaction,
    tables: &NsTables,
    codec: &Codec,
    data: &[u8],
    at: RecordsPos,
) -> Result<(RecordsPos, u64), JobFailure> {
    let mut kv = txn.open_table(tables.kv()).map_err(clean)?;
    let mut records = Records::<KvRecord>::resume(data, at);
    let (mut bytes, mut count) = (0, 0);
    while bytes < BATCH_BYTES && (count as usize) < BATCH_RECORDS {
        let Some(record) = records.next() else { break };
        let (key, value) = record.map_err(JobFailure::dirty)?;
        let stored = codec.protect_value(&tables.kv_context(key), value).map_err(JobFailure::dirty)?;
        kv.insert(key, stored.as_ref()).map_err(dirty)?;
        bytes += key.len() + value.len();
        count += 1;
    }
    Ok((records.pos(), count))
}

fn load_dedup(
    txn: &WriteTransaction,
    tables: &NsTables,
    codec: &Codec,
    data: &[u8],
    at: RecordsPos,
) -> Result<(RecordsPos, u64), JobFailure> {
    let mut dedup = txn.open_table(tables.dedup()).map_err(clean)?;
    let mut order = txn.open_table(tables.dedup_order()).map_err(dirty)?;
    let mut records = Records::<DedupRecord>::resume(data, at);
    let (mut bytes, mut count) = (0, 0);
    while bytes < BATCH_BYTES && (count as usize) < BATCH_RECORDS {
        let Some(record) = records.next() else { break };
        let (id, payload) = record.map_err(JobFailure::dirty)?;
        let order_no = dedup_order(payload).map_err(JobFailure::dirty)?;
        let stored = codec.protect(&tables.dedup_context(id), payload).map_err(JobFailure::dirty)?;
        dedup.insert(id, stored.as_slice()).map_err(dirty)?;
        order.insert(order_no, id).map_err(dirty)?;
        bytes += id.len() + payload.len();
        count += 1;
    }
    Ok((records.pos(), count))
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
