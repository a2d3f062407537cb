//! [`StateMachineStore`]: openraft's state machine of one namespace.
//!
//! The namespace's [`StateMachine`] decides what a command does; this type stores it: a batch
//! of committed entries is applied in ONE writer job (so it shares a group commit with
//! everything else the node writes), together with the applied log id, the applied membership
//! and the dedup records. Responses are sent once that commit is visible to readers. It is not
//! fsynced on its own: the entries are already durable on a quorum (they are committed), the
//! state is a function of them, and it becomes durable with the writer's next fsync. After a
//! crash before that, openraft applies the same entries again from the durable log, in the same
//! order, and the dedup records make retried commands answer as before. Snapshot installs are
//! durable before they return, and crash-safe against the log purge that follows them: the
//! snapshot file is saved first, then the state is loaded in bounded writer jobs that let
//! other namespaces through (`crate::snapshot_install`), and a snapshot file that does not
//! reach the purged log is never served (see `StateMachineStore::install` and
//! `current_snapshot`).

use std::fmt::Debug;
use std::io::{self, BufReader};
use std::marker::PhantomData;
use std::sync::Arc;

use flotilla_core::{CommandResult, Namespace, StateMachine, TypeConfig};
use futures::{Stream, StreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::OptionalSend;
use redb::WriteTransaction;

use crate::applied_feed::{AppliedEntry, AppliedFeed};
use crate::apply::apply_entries;
use crate::error::StoreError;
use crate::snapshot::{verify, SnapshotHeader, Tee, Verified};
use crate::snapshot_builder::{commit_file, SnapshotBuilder};
use crate::snapshot_file::SnapshotFiles;
use crate::store::{read_meta, Store};
use crate::tables::{NsTables, META_APPLIED, META_MEMBERSHIP, META_PURGED, META_SNAPSHOT};
use crate::{SnapshotData, StoreConfig};

/// The state machine storage of one namespace; implements openraft's [`RaftStateMachine`] with
/// [`SnapshotData`] snapshots. Cheap to clone.
pub struct StateMachineStore<C: StoreConfig = TypeConfig> {
    store: Arc<Store>,
    tables: Arc<NsTables>,
    sm: Arc<dyn StateMachine>,
    /// Subscribers of the applied entries.
    feed: Arc<AppliedFeed>,
    /// Counts this handle for the store's shutdown (see `in_use.rs`).
    _in_use: crate::in_use::InUse,
    /// Test hook: stop an install between its two durable steps, as a crash would.
    #[cfg(test)]
    pub(crate) crash_mid_install: Arc<std::sync::atomic::AtomicBool>,
    /// Test hook: called between the load jobs of an install.
    #[cfg(test)]
    pub(crate) between_jobs: Arc<std::sync::Mutex<Option<crate::snapshot_install::BetweenJobs>>>,
    /// Test hook: run once between reading the current snapshot's file and its record.
    #[cfg(test)]
    pub(crate) after_snapshot_load: Arc<std::sync::Mutex<Option<AfterLoad>>>,
    _config: PhantomData<fn() -> C>,
}

/// A test hook of [`StateMachineStore::current_snapshot`].
#[cfg(test)]
pub(crate) type AfterLoad = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

impl<C: StoreConfig> Clone for StateMachineStore<C> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            tables: self.tables.clone(),
            sm: self.sm.clone(),
            feed: self.feed.clone(),
            _in_use: self._in_use.clone(),
            #[cfg(test)]
            crash_mid_install: self.crash_mid_install.clone(),
            #[cfg(test)]
            between_jobs: self.between_jobs.clone(),
            #[cfg(test)]
            after_snapshot_load: self.after_snapshot_load.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: StoreConfig> Debug for StateMachineStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore").field("namespace", self.tables.ns()).finish_non_exhaustive()
    }
}

impl<C: StoreConfig> StateMachineStore<C> {
    pub(crate) fn new(store: Arc<Store>, tables: NsTables, sm: Arc<dyn StateMachine>) -> Self {
        let feed = store.applied_feed(tables.ns());
        let _in_use = crate::in_use::InUse::new(&store.in_use);
        Self {
            store,
            tables: Arc::new(tables),
            sm,
            feed,
            _in_use,
            #[cfg(test)]
            crash_mid_install: Arc::default(),
            #[cfg(test)]
            between_jobs: Arc::default(),
            #[cfg(test)]
            after_snapshot_load: Arc::default(),
            _config: PhantomData,
        }
    }

    /// The namespace this state machine belongs to.
    pub fn namespace(&self) -> &Namespace {
        self.tables.ns()
    }

    fn applied_state_now(&self) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), StoreError> {
        let txn = self.store.read_txn()?;
        let applied = read_meta(&txn, &self.tables, META_APPLIED)?;
        let membership = read_meta(&txn, &self.tables, META_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    /// Replace the namespace's state with the verified snapshot `data`: its file first, then
    /// the state, in bounded writer jobs ending with a durable one.
    async fn install(&self, meta: &SnapshotMetaOf<C>, data: SnapshotData) -> Result<(), StoreError> {
        // Verify every byte before the state is touched, and write the copy that becomes the
        // current file in the same pass (off the async threads: it reads the whole snapshot).
        let (store, ns, source) = (self.store.clone(), self.tables.ns().clone(), data.clone());
        let (verified, saved) = tokio::task::spawn_blocking(move || {
            // A full disk must not fail the install: openraft would stop the group. Wait for room.
            let is_full = |e: &StoreError| matches!(e, StoreError::DiskFull(_));
            store
                .disk
                .retry_while_full("saving a snapshot", is_full, || verify_copy::<C>(&store.snapshots, &ns, &source))
        })
        .await
        .map_err(|e| StoreError::Redb(format!("snapshot verification task failed: {e}")))??;
        let header = &verified.header;
        if header.last_log_id != meta.last_log_id || header.last_membership != meta.last_membership {
            return Err(StoreError::corrupt(format!(
                "snapshot {} does not match its metadata {meta}",
                header.snapshot_id
            )));
        }

        // Crash safety: openraft purges the log up to the snapshot once the install is durable
        // (at once, or at the next start), so the snapshot file must never be older than the
        // installed state. Hence the file first (written, fsynced, renamed), then the state
        // (crate::snapshot_install: in bounded jobs, crash-safe at every step). A crash after
        // the file leaves the new file over an older or unfinished state: at the next start
        // openraft finds the snapshot newer than the applied state and installs it again. The
        // lock keeps a snapshot being built from replacing the file in between.
        let lock = self.store.snapshot_lock(self.tables.ns());
        let _guard = lock.lock().await;
        commit_file(&self.store, self.tables.ns(), &saved).await?;
        #[cfg(test)]
        self.crash_point()?;

        let id = header.snapshot_id.clone();
        #[cfg(test)]
        let between = self.between_jobs.lock().map(|hook| hook.clone()).unwrap_or(None);
        let installed = crate::snapshot_install::install(
            &self.store,
            &self.tables,
            verified,
            &data,
            #[cfg(test)]
            between,
        )
        .await;
        // Subscribers that expected entries the snapshot covers missed them (also when the
        // install failed part way: the state they followed may be gone).
        self.feed.installed(meta.last_log_id.as_ref().map_or(0, |l| l.index()));
        let installed = installed?;
        tracing::info!(
            namespace = %self.tables.ns(),
            snapshot = %id,
            keys = installed.keys,
            writer_jobs = installed.jobs,
            "snapshot installed"
        );
        Ok(())
    }

    /// Fail like a crash would if the test hook is armed.
    #[cfg(test)]
    fn crash_point(&self) -> Result<(), StoreError> {
        if self.crash_mid_install.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Redb("simulated crash in the middle of an install".into()));
        }
        Ok(())
    }

    async fn current_snapshot(&self) -> Result<Option<SnapshotOf<C, SnapshotData>>, StoreError> {
        // The file and its record are read under the lock that a build or an install holds
        // while it replaces both: read apart, a build saved in between paired the old file
        // with the new record, the file looked stale, and openraft, told there is no snapshot
        // while a follower needed one, stopped the group (a fatal storage error).
        let lock = self.store.snapshot_lock(self.tables.ns());
        let _guard = lock.lock().await;
        let files = self.store.snapshots.clone();
        let ns = self.tables.ns().clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let Some(data) = files.load(&ns)? else {
                return Ok(None);
            };
            let header = verify::<C>(BufReader::with_capacity(READ_BUFFER, data.reader()), data.len())
                .map_err(|e| in_file(e, &files.current_path(&ns)))?
                .header;
            Ok::<_, StoreError>(Some((header, data)))
        })
        .await
        .map_err(|e| StoreError::Redb(format!("snapshot read task failed: {e}")))??;
        #[cfg(test)]
        if let Some(hook) = self.after_snapshot_load.lock().ok().and_then(|mut hook| hook.take()) {
            hook().await;
        }
        let txn = self.store.read_txn()?;
        let recorded = read_meta::<SnapshotHeader<C>>(&txn, &self.tables, META_SNAPSHOT)?;
        let Some((header, data)) = loaded else {
            if recorded.is_some() {
                tracing::warn!(
                    namespace = %self.tables.ns(),
                    "a snapshot was recorded but its file is missing; one will be rebuilt when needed"
                );
            }
            return Ok(None);
        };
        // A file behind the purged log (left by a crash of a version that installed before it
        // saved the file) or behind the recorded snapshot (a file put back by hand) cannot
        // bring a follower up to the log: sending it would leave a hole. Refuse it; the caller
        // then builds a new one from the state (`rebuild_if_purged`).
        let purged = read_meta::<LogIdOf<C>>(&txn, &self.tables, META_PURGED)?;
        let needed = purged.max(recorded.map(|r| r.last_log_id).unwrap_or_default());
        if header.last_log_id < needed {
            tracing::warn!(
                namespace = %self.tables.ns(),
                snapshot = %header.snapshot_id,
                "the snapshot file does not reach the purged log or the recorded snapshot; it will be rebuilt"
            );
            return Ok(None);
        }
        let meta = SnapshotMetaOf::<C> { last_log_id: header.last_log_id, last_membership: header.last_membership };
        Ok(Some(SnapshotOf::<C, SnapshotData> { meta, snapshot: data }))
    }

    /// No snapshot file to serve (missing, or behind the purged log: left by a crash of an
    /// older version). With the log purged, a follower that needs entries before the purge
    /// can only be brought up by a snapshot, and openraft, told there is none, stops
    /// replicating to it with a storage error that ends the group. So build one from the
    /// state now, as openraft would when asked to snapshot; `None` only while the log is whole
    /// (the log brings any follower up) or while the state itself is behind the purged log
    /// (an install under way: a snapshot of it would leave the same hole).
    async fn rebuild_if_purged(&self) -> Result<Option<SnapshotOf<C, SnapshotData>>, StoreError> {
        let purged = read_meta::<LogIdOf<C>>(&self.store.read_txn()?, &self.tables, META_PURGED)?;
        let Some(purged) = purged else { return Ok(None) };
        let built = SnapshotBuilder::<C>::new(self.store.clone(), self.tables.clone()).build().await?;
        if built.meta.last_log_id < Some(purged) {
            return Ok(None);
        }
        tracing::warn!(
            namespace = %self.tables.ns(),
            last_log_id = ?built.meta.last_log_id,
            "no snapshot reached the purged log; built one from the state"
        );
        Ok(Some(built))
    }
}

impl<C: StoreConfig> RaftStateMachine<C> for StateMachineStore<C> {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder<C>;

    async fn applied_state(&mut self) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        Ok(self.applied_state_now()?)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push(entry);
            responders.push(responder);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let tables = self.tables.clone();
        let codec = self.store.codec.clone();
        let sm = self.sm.clone();
        // Roughly what the batch writes: payloads plus per-entry bookkeeping.
        let cost = batch.iter().map(|e| C::command(e).map_or(0, |c| c.payload.len()) + 64).sum();
        // Shared with the writer job, so subscribers get the payloads without a copy per batch.
        let batch = Arc::new(batch);
        let job_batch = batch.clone();
        let results = self
            .store
            .writer
            .execute_visible(cost, move |txn: &WriteTransaction| {
                apply_entries::<C>(txn, &tables, &codec, sm.as_ref(), &job_batch)
            })
            .await
            .inspect_err(|e| tracing::error!(namespace = %self.tables.ns(), error = %e, "applying entries failed"))?;
        // Checked after the batch is visible: a subscriber that registers later reads an applied
        // index that already covers it, so skipping the copy here loses it nothing.
        let applied = match self.feed.has_subscribers() {
            true => applied_entries::<C>(&batch, &results),
            false => Vec::new(),
        };
        // Visible now (and the entries durable on a quorum): answer the clients, in log order.
        for (responder, result) in responders.into_iter().zip(results) {
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        if !applied.is_empty() {
            self.feed.publish(&applied);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder::new(self.store.clone(), self.tables.clone())
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<C>, snapshot: SnapshotData) -> Result<(), io::Error> {
        self.install(meta, snapshot).await.map_err(|e| {
            tracing::error!(namespace = %self.tables.ns(), error = %e, "installing a snapshot failed");
            e.to_io()
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, SnapshotData>>, io::Error> {
        if let Some(snapshot) = self.current_snapshot().await? {
            return Ok(Some(snapshot));
        }
        Ok(self.rebuild_if_purged().await?)
    }
}

/// The normal entries of an applied batch with their results, for subscribers.
fn applied_entries<C: StoreConfig>(batch: &[C::Entry], results: &[CommandResult]) -> Vec<Arc<AppliedEntry>> {
    batch
        .iter()
        .zip(results)
        .filter_map(|(entry, result)| {
            let command = C::command(entry)?;
            let index = entry.log_id().index();
            Some(Arc::new(AppliedEntry { index, command: command.payload.clone(), reply: result.output.clone() }))
        })
        .collect()
}

/// Bytes read from a snapshot file at a time.
const READ_BUFFER: usize = 256 << 10;

/// Verify the snapshot `data` of `ns` and copy it to a new temporary snapshot file (fsynced)
/// in the same pass; returns what the verification found and the copy.
fn verify_copy<C: StoreConfig>(
    files: &SnapshotFiles,
    ns: &Namespace,
    data: &SnapshotData,
) -> Result<(Verified<C>, SnapshotData), StoreError> {
    let mut writer = files.create_temp(ns)?;
    let src = Tee::new(BufReader::with_capacity(READ_BUFFER, data.reader()), &mut writer);
    let verified = verify::<C>(src, data.len())?;
    Ok((verified, writer.finish(true)?))
}

/// Name the snapshot file a verification failure is about.
fn in_file(e: StoreError, path: &std::path::Path) -> StoreError {
    match e {
        StoreError::AtRestCorrupt(msg) => StoreError::AtRestCorrupt(format!("{}: {msg}", path.display())),
        StoreError::Corrupt(msg) => StoreError::Corrupt(format!("{}: {msg}", path.display())),
        other => other,
    }
}

#[cfg(test)]
#[path = "install_tests.rs"]
mod install_tests;
