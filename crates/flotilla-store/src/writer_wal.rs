//! The writer's side of the write-ahead log (`DESIGN-log.md`): the jobs that write a
//! namespace's Raft log there, and what the writer thread holds to run them.
//!
//! A [`WalJob`] is queued like any other writer job and taken into the same batches. After the
//! batch's redb jobs are committed, the writer appends the records of every WAL job of the
//! batch in one go, wakes the jobs that only need their records readable (log appends:
//! openraft replicates them at once), syncs the log once, and then tells the jobs waiting for
//! durability (the appends' flush callbacks, truncations). One `fdatasync` of a segment thus
//! stands for every namespace's appends of the batch, in place of the redb commit and flush a
//! log table costs.
//!
//! A failed append or sync stops the store, as a failed redb fsync does: what the log holds
//! past its last sync is unknown until the next open finds where it ends.

use std::time::Instant;

use flotilla_core::Namespace;
use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::namespace_ids::NamespaceIds;
use crate::wal::WriteAheadLog;
use crate::wal_log_index::LogShape;
use crate::wal_record::{Record, RecordKind};
use crate::writer::{OnDurable, Wait};

/// How often, at most, redb's non-durable commits (applies) are made durable by a checkpoint
/// while the log is in the write-ahead log. A checkpoint bounds how much a restart re-applies
/// and lets redb reuse the pages of older commits; the log itself is durable without it.
pub(crate) const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// One change to a namespace's log, as the log store hands it to the writer.
#[derive(Debug, Clone)]
pub(crate) struct WalWrite {
    pub(crate) kind: RecordKind,
    pub(crate) index: u64,
    /// The encoded, protected entry for [`RecordKind::Entry`]; empty otherwise.
    pub(crate) payload: Vec<u8>,
}

/// What a WAL job does.
pub(crate) enum WalOp {
    /// Append these changes to the namespace's log, in order.
    Append(Vec<WalWrite>),
    /// Forget the namespace's id and index: its id was removed from the store by a committed
    /// wipe, so its records are dead.
    Forget,
    /// Replace retained entries by copies sealed under the current at-rest key (a key
    /// rotation, `crate::wal_sealing`); an entry that no longer holds what was resealed
    /// (truncated, purged, rewritten meanwhile) is left alone.
    Replace(Vec<Replacement>),
}

/// One retained entry to replace by `new`, if it still holds `old`.
#[derive(Debug, Clone)]
pub(crate) struct Replacement {
    pub(crate) index: u64,
    pub(crate) old: Vec<u8>,
    pub(crate) new: Vec<u8>,
}

/// A job for the write-ahead log.
pub(crate) struct WalJob {
    pub(crate) namespace: Namespace,
    pub(crate) op: WalOp,
    /// [`Wait::Visible`]: the waiter hears once the records are readable, `on_durable` once
    /// they are synced. [`Wait::Durable`]: the waiter hears once they are synced.
    pub(crate) wait: Wait,
    pub(crate) done: oneshot::Sender<Result<(), StoreError>>,
    pub(crate) on_durable: Option<OnDurable>,
}

impl WalJob {
    /// Report `result` to the waiter and to `on_durable`, if still waiting.
    pub(crate) fn fail(self, error: StoreError) {
        if let Some(on_durable) = self.on_durable {
            on_durable(Err(error.clone()));
        }
        let _ = self.done.send(Err(error));
    }

    /// Bytes of payload, for batch bounding.
    pub(crate) fn cost(&self) -> usize {
        match &self.op {
            WalOp::Append(writes) => writes.iter().map(|w| w.payload.len()).sum(),
            WalOp::Forget => 0,
            WalOp::Replace(replacements) => replacements.iter().map(|r| r.new.len()).sum(),
        }
    }
}

/// What the writer thread holds when the store's logs are in the write-ahead log.
pub(crate) struct WalSide {
    pub(crate) log: WriteAheadLog,
    pub(crate) ids: NamespaceIds,
    /// When redb last committed durably (a checkpoint, or any durable job).
    pub(crate) last_durable: Instant,
}

/// The records of `jobs` (whose namespaces all have ids), each job's records checked against
/// its namespace's log as the jobs before it leave it; a job that would break its log fails
/// alone (a bug upstream: openraft never asks for it). Returns the records and the jobs left.
pub(crate) fn plan_appends(side: &WalSide, jobs: Vec<(WalJob, u32)>) -> (Vec<Record>, Vec<WalJob>) {
    let mut shapes: std::collections::HashMap<u32, LogShape> = std::collections::HashMap::new();
    let mut records = Vec::new();
    let mut kept = Vec::with_capacity(jobs.len());
    for (mut job, id) in jobs {
        let WalOp::Append(writes) = &mut job.op else {
            kept.push(job);
            continue;
        };
        let max = side.log.max_record_len();
        if let Some(w) = writes.iter().find(|w| w.payload.len() + crate::wal_record::RECORD_HEADER_LEN > max) {
            let message = format!(
                "namespace {}: a log entry of {} bytes does not fit a write-ahead log segment (at most {max}): \
                 raise --wal-segment-mib",
                job.namespace,
                w.payload.len()
            );
            job.fail(StoreError::Invalid(message));
            continue;
        }
        let mut shape = *shapes.entry(id).or_insert_with(|| side.log.shape(id));
        let checked = writes.iter().try_for_each(|w| match w.kind {
            RecordKind::Entry => shape.entry(w.index),
            RecordKind::Truncate => shape.truncate(w.index).map(drop),
            RecordKind::Purge => shape.purge(w.index).map(drop),
            RecordKind::Copy => shape.copy(w.index),
        });
        if let Err(error) = checked {
            let message = format!("namespace {}: a log change refused: {error}", job.namespace);
            tracing::error!(namespace = %job.namespace, %error, "a log change would break the log; refused");
            job.fail(StoreError::Invalid(message));
            continue;
        }
        shapes.insert(id, shape);
        records.extend(std::mem::take(writes).into_iter().map(|w| Record {
            kind: w.kind,
            namespace: id,
            index: w.index,
            // The entry's own log id carries its term; the record's is not used.
            term: 0,
            payload: w.payload,
        }));
        kept.push(job);
    }
    (records, kept)
}

/// The `Copy` records that carry out `jobs`' replacements (each a [`WalOp::Replace`] with its
/// namespace id), read against the log as it is now, after the batch's appends: an entry is
/// copied only if it still holds the bytes that were resealed. Reading here, on the writer's
/// thread, is what keeps a copy from bringing back an entry a truncation removed.
pub(crate) fn plan_replacements(side: &WalSide, jobs: &mut [(WalJob, u32)]) -> Result<Vec<Record>, StoreError> {
    let reader = side.log.reader();
    let mut records = Vec::new();
    for (job, id) in jobs.iter_mut() {
        let WalOp::Replace(replacements) = &mut job.op else { continue };
        for r in std::mem::take(replacements) {
            let current = reader.read(*id, r.index).map_err(|e| {
                StoreError::io(format!("namespace {}: reading log entry {}", job.namespace, r.index), e)
            })?;
            if current.as_deref() == Some(r.old.as_slice()) {
                records.push(Record {
                    kind: RecordKind::Copy,
                    namespace: *id,
                    index: r.index,
                    term: 0,
                    payload: r.new,
                });
            }
        }
    }
    Ok(records)
}
