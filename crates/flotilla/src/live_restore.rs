//! Restoring a backup into a running namespace: [`Cluster::replace_with_backup`].
//!
//! The backup's rows travel through the log, so every member (and every member that joins
//! later) ends up with the same state, and the replacement survives any member's crash. The
//! steps and what each one does to the table are in `flotilla_core::kv::restore`; this is the
//! driver that proposes them, from any node (each is forwarded to the leader like any write).
//!
//! Every step carries a request id derived from the restore's random id and the step's
//! number, so a step whose outcome is unknown is retried safely (the dedup table answers a
//! retry of an applied step with its first result). A driver that fails half way leaves the
//! namespace refusing reads and writes until a restore is run again.

use std::path::PathBuf;
use std::time::Duration;

use flotilla_core::kv::restore::RestoreStep;
use flotilla_core::kv::{encode_command, KvCommand, KvReply, RestoreReply};
use flotilla_core::{ApiError, RequestId};
use flotilla_store::{BackupRows, BackupSummary, StoreError};
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::cluster_kv::{decode_kv_reply, refusal_error};

/// Most backup rows one load step carries.
const ROWS_PER_STEP: usize = 4_096;
/// Most bytes of keys and values one load step carries (a larger single row goes alone).
const BYTES_PER_STEP: usize = 1 << 20;
/// Most times one step is proposed again after a retryable failure.
const STEP_ATTEMPTS: u32 = 20;
/// The pause before proposing a step again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Most clear steps: enough for 4 billion rows, a bound on a loop that must end.
const MAX_CLEAR_STEPS: u64 = 1 << 20;

/// What [`Cluster::replace_with_backup`] did.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// let replaced = cluster.replace_with_backup("/var/backups/orders.flbk".into()).await?;
/// println!("{} rows restored in {} log entries", replaced.backup.rows, replaced.steps);
/// println!("revision {} -> {} (earlier ones compacted)", replaced.old_revision, replaced.revision);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacedState {
    /// The backup file's summary (as `flotilla_store::verify_backup` gives it).
    pub backup: BackupSummary,
    /// The restore's id (in the log, in the refusals clients saw while it ran).
    pub restore_id: u64,
    /// The namespace's revision before the restore.
    pub old_revision: u64,
    /// The namespace's revision now: above every revision before the restore and in the
    /// backup. Every revision up to it is compacted.
    pub revision: u64,
    /// The log index of the step that finished the restore: a read at or after it sees the
    /// backup's state.
    pub index: u64,
    /// Log entries the restore took.
    pub steps: u64,
}

/// Proposes the steps of one restore, numbering their request ids.
struct Driver<'a> {
    cluster: &'a Cluster,
    id: u64,
    seq: u64,
}

impl Cluster {
    /// Replace the namespace's whole state with the backup file at `path`, through the log:
    /// an operator's admin operation, for a namespace running the KV state machine.
    ///
    /// The file is verified whole first; a damaged file or one in another store format changes
    /// nothing. While the restore runs (a few log entries per MiB of backup), every read and
    /// write of the namespace is refused with [`ApiError::Unavailable`] and every watch is
    /// cancelled. Afterwards the namespace holds exactly the backup's keys, values and leases,
    /// at a revision above every earlier one; all earlier revisions count as compacted, so a
    /// watch or read of the old history fails with [`ApiError::Compacted`]. Works on any node.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let replaced = cluster.replace_with_backup("/var/backups/orders.flbk".into()).await?;
    /// // A read at or after this index sees the backup's state, on any node.
    /// println!("restored at log index {}", replaced.index);
    /// # Ok(()) }
    /// ```
    pub async fn replace_with_backup(&self, path: PathBuf) -> Result<ReplacedState, ApiError> {
        if !self.group().serves_leases {
            return Err(ApiError::Rejected(format!(
                "namespace {} does not run the KV state machine: a backup restores KV namespaces only",
                self.namespace()
            )));
        }
        let rows = blocking(move || BackupRows::open(&path)).await?;
        let backup = rows.summary().clone();
        if backup.meta.store_format != flotilla_store::FORMAT_VERSION {
            return Err(ApiError::Rejected(format!(
                "the backup's rows are in store format {}, this build writes format {}",
                backup.meta.store_format,
                flotilla_store::FORMAT_VERSION
            )));
        }
        let mut driver = Driver { cluster: self, id: rand::random(), seq: 0 };
        info!(namespace = %self.namespace(), restore = format_args!("{:016x}", driver.id), rows = backup.rows,
            index = backup.meta.index, "restoring a backup into the running namespace");
        let old_revision = driver.step(RestoreStep::Begin { id: driver.id }).await?.1.revision;
        driver.clear().await?;
        driver.load(rows).await?;
        let (index, finished) = driver.step(RestoreStep::Finish { id: driver.id }).await?;
        // The old history and the backup's are gone for readers; this removes their rows.
        if let Err(e) = self.compact(finished.revision).await {
            warn!(namespace = %self.namespace(), error = %e, "compacting after a restore failed; automatic compaction will");
        }
        info!(namespace = %self.namespace(), revision = finished.revision, index, "restore finished");
        Ok(ReplacedState {
            backup,
            restore_id: driver.id,
            old_revision,
            revision: finished.revision,
            index,
            steps: driver.seq,
        })
    }
}

impl Driver<'_> {
    /// Delete the old state, a bounded part per step.
    async fn clear(&mut self) -> Result<(), ApiError> {
        for _ in 0..MAX_CLEAR_STEPS {
            if !self.step(RestoreStep::Clear { id: self.id }).await?.1.more {
                return Ok(());
            }
        }
        Err(ApiError::Fatal(format!("the old state was not cleared in {MAX_CLEAR_STEPS} steps")))
    }

    /// Propose the backup's rows, batch by batch, reading the file off the async threads.
    async fn load(&mut self, mut rows: BackupRows) -> Result<(), ApiError> {
        loop {
            let (back, batch) = blocking(move || {
                let batch = rows.next_batch(ROWS_PER_STEP, BYTES_PER_STEP)?;
                Ok((rows, batch))
            })
            .await?;
            rows = back;
            let Some(batch) = batch else { return Ok(()) };
            self.step(RestoreStep::Load { id: self.id, rows: batch }).await?;
        }
    }

    /// Propose `step` until it is applied or refused, retrying retryable failures under the
    /// same request id; returns the index it was applied at and its reply.
    async fn step(&mut self, step: RestoreStep) -> Result<(u64, RestoreReply), ApiError> {
        self.seq += 1;
        let id = RequestId { client: self.id, seq: self.seq };
        let payload = encode_command(&KvCommand::Restore(step));
        let mut attempt = 0;
        let (index, output) = loop {
            attempt += 1;
            match self.cluster.propose_as(payload.clone(), id).await {
                Ok(applied) => break applied,
                Err(e) if e.is_retryable() && attempt < STEP_ATTEMPTS => {
                    warn!(namespace = %self.cluster.namespace(), step = self.seq, error = %e, "retrying a restore step");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        };
        match decode_kv_reply(output)? {
            KvReply::Restore(reply) => Ok((index, reply)),
            KvReply::Refused(refusal) => Err(refusal_error(refusal)),
            other => Err(ApiError::Fatal(format!("unexpected reply to a restore step: {other:?}"))),
        }
    }
}

/// Run blocking file work off the async threads, a damaged or unreadable backup being the
/// caller's error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(StoreError::Corrupt(msg))) => Err(ApiError::Malformed(format!("the backup file: {msg}"))),
        Ok(Err(e)) => Err(ApiError::Rejected(format!("reading the backup file: {e}"))),
        Err(e) => Err(ApiError::Fatal(format!("the backup reading task failed: {e}"))),
    }
}
