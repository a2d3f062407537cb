//! The group-commit writer: one thread per node owns every write transaction.
//!
//! redb has no group commit of its own, and a durable commit costs an fsync whatever it holds.
//! The writer therefore takes the first queued job, drains whatever else is already queued
//! (bounded by [`MAX_BATCH_OPS`] and [`MAX_BATCH_BYTES`]), runs them all in ONE write
//! transaction and commits it once. Jobs of all namespaces and all Raft groups share commits.
//!
//! ## Durable and visible jobs
//!
//! A job says what its waiter needs ([`Wait`]):
//! - [`Wait::Durable`] (votes, truncations, purges, snapshot installs): the batch is committed
//!   with `Durability::Immediate` (an fsync) before the waiter hears of it.
//! - [`Wait::Visible`] (applying committed entries, the committed index): the waiter only needs
//!   readers to see the change. Raft can rebuild both from the durable log and vote, so a batch
//!   of such jobs is committed with `Durability::None`: no fsync. redb makes a non-durable
//!   commit durable with the next durable commit, and the writer is the only one committing, so
//!   what is on disk after a crash is always a prefix of the commits, in order.
//! - A log append is visible first and durable second: openraft replicates entries once
//!   `append` returns and counts them as the leader's own only once the flush callback runs.
//!   Its batch is committed without an fsync, the waiter is woken, and the writer then makes it
//!   durable with a flush (an empty durable commit) at once, and calls the job's flush callback
//!   after that. The leader's fsync thus overlaps the round trip to its followers.
//! - Short of disk space, every commit is durable (see [`crate::disk::RELAXED_COMMIT_MIN_FREE`]).
//! - A deferred job ([`Writer::defer`]: the committed log id, a hint) neither wakes the writer
//!   nor waits: it runs first in the next batch, whatever wakes the writer (for the committed
//!   id, the apply of the same entries, which openraft starts right after saving it). A write
//!   that would otherwise cost a commit and two thread wake-ups of its own rides along.
//!
//! ## Failures
//!
//! A job that fails on its own must not poison the others. Jobs do their validation and
//! computation before touching the transaction and report a *clean* failure when nothing was
//! written; a job that fails after it started writing (a *dirty* failure, or a panic) makes
//! the writer abort the transaction and run the batch again without it.
//!
//! A disk that fails is not a job's fault, and openraft stops a group for good when its storage
//! reports an error, so I/O errors are never passed on while they can be recovered from. A
//! write that finds the disk full waits inside the file backend (see [`crate::disk`]). Any
//! other I/O error leaves redb refusing every further operation on that `Database`. When every
//! commit so far is durable and no fsync failed, the writer reopens the database and runs the
//! same batch again, with bounded backoff, until it commits; nothing of the batch is
//! acknowledged before that. The store stops instead ([`StoreError::Stopped`]), as etcd does
//! when its WAL cannot be synced, and a restart recovers from what is on disk, when:
//! - an fsync failed (the file backend records it in [`crate::disk::DiskHealth`]): the kernel
//!   may have dropped the dirty pages and marked them clean, so a retried commit could be
//!   acknowledged with data that is not on disk (PostgreSQL's "fsyncgate");
//! - non-durable commits are outstanding: reopening would silently roll the database back
//!   under Raft (the applied state would go backwards).
//!
//! A stopped store fails every later job; openraft then stops the groups (a storage error is
//! fatal to them) and the node refuses client writes, naming the cause.
//!
//! ## The write-ahead log
//!
//! In a store whose Raft logs are in the write-ahead log (`DESIGN-log.md`), the writer also
//! owns that log: WAL jobs ([`crate::writer_wal`]) share the queue and the batches, are run
//! after the batch's redb commit, and one sync of the log makes all of them durable. Nothing
//! then flushes redb after each batch: its commits (applies) are made durable by a checkpoint
//! at most every [`CHECKPOINT_INTERVAL`], by durable jobs, and at shutdown.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::disk::{Backoff, DiskHealth, Opener};
use crate::error::{redb_error, StoreError};
use crate::metrics::Metrics;
use crate::namespace_ids::NamespaceIds;
use crate::wal_record::RecordKind;
use crate::writer_wal::{plan_appends, plan_replacements, WalJob, WalOp, WalSide, CHECKPOINT_INTERVAL};

/// The open database, shared by the writer and the store's readers. `None` after shutdown, and
/// while the writer reopens it after an I/O error.
pub(crate) type DbSlot = Arc<RwLock<Option<Arc<Database>>>>;

/// Jobs the queue holds before submitters wait (back-pressure).
pub(crate) const QUEUE_CAPACITY: usize = 4096;
/// Most jobs grouped in one commit.
pub(crate) const MAX_BATCH_OPS: usize = 1024;
/// Approximate bytes after which the writer stops adding jobs to a batch (a single larger job
/// still runs, alone).
pub(crate) const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Deferred jobs held for the next batch; past this, a deferred job is queued as usual (still
/// without a waiter), so the list stays bounded even when no other job comes.
pub(crate) const MAX_DEFERRED: usize = 64;

/// What the writer's queue holds: a job for redb, or one for the write-ahead log.
enum Queued {
    Redb(Box<dyn Job>),
    Wal(WalJob),
}

impl Queued {
    fn cost(&self) -> usize {
        match self {
            Queued::Redb(job) => job.cost(),
            Queued::Wal(job) => job.cost(),
        }
    }
}

/// Jobs waiting to run first in the next batch (see [`Writer::defer`]).
type Deferred = Arc<Mutex<Vec<Box<dyn Job>>>>;

/// Lock `deferred`; a panic elsewhere while it was held leaves a list that is still valid.
fn lock_deferred(deferred: &Deferred) -> std::sync::MutexGuard<'_, Vec<Box<dyn Job>>> {
    deferred.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a job failed, and whether it had already written into the shared transaction.
#[derive(Debug)]
pub(crate) struct JobFailure {
    pub(crate) error: StoreError,
    /// `true` when the transaction may hold part of the job's writes: the batch must be rolled
    /// back and re-run without this job.
    pub(crate) dirty: bool,
}

impl JobFailure {
    /// Failed before writing anything.
    pub(crate) fn clean(error: StoreError) -> Self {
        Self { error, dirty: false }
    }

    /// Failed after it may have written.
    pub(crate) fn dirty(error: StoreError) -> Self {
        Self { error, dirty: true }
    }
}

/// Map a redb error raised while writing.
pub(crate) fn dirty(err: impl Into<redb::Error>) -> JobFailure {
    JobFailure::dirty(redb_error(err))
}

/// Map a redb error raised before writing.
pub(crate) fn clean(err: impl Into<redb::Error>) -> JobFailure {
    JobFailure::clean(redb_error(err))
}

/// What a job's waiter needs before it hears that the job is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The commit holding the job is on disk (fsynced).
    Durable,
    /// The commit holding the job is visible to readers; a later commit makes it durable.
    Visible,
}

/// Called once a later durable commit covers a job committed without an fsync (or with the
/// error that stopped the store).
pub(crate) type OnDurable = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// One unit of work for the writer.
trait Job: Send + 'static {
    /// Do the work inside `txn`. May be called more than once (when a batch is re-run), so it
    /// must not consume its inputs.
    fn run(&mut self, txn: &WriteTransaction) -> Result<(), JobFailure>;
    /// What the waiter needs before [`Job::finish`].
    fn wait(&self) -> Wait;
    /// Report the outcome (`Ok` only after the transaction holding the work was committed;
    /// `durable` when that commit was fsynced). Returns the callback to run once a later
    /// durable commit covers the job, if it still waits for one.
    fn finish(self: Box<Self>, outcome: Result<(), StoreError>, durable: bool) -> Option<OnDurable>;
    /// Approximate bytes written, for batch bounding.
    fn cost(&self) -> usize;
}

/// A job made of a closure and the channel its waiter listens on.
struct FnJob<T, F> {
    work: F,
    output: Option<T>,
    done: oneshot::Sender<Result<T, StoreError>>,
    wait: Wait,
    on_durable: Option<OnDurable>,
    cost: usize,
}

impl<T, F> Job for FnJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&WriteTransaction) -> Result<T, JobFailure> + Send + 'static,
{
    fn run(&mut self, txn: &WriteTransaction) -> Result<(), JobFailure> {
        self.output = Some((self.work)(txn)?);
        Ok(())
    }

    fn wait(&self) -> Wait {
        self.wait
    }

    fn finish(self: Box<Self>, outcome: Result<(), StoreError>, durable: bool) -> Option<OnDurable> {
        let FnJob { work, output, done, on_durable, .. } = *self;
        // Release what the work captured before waking the waiter, so it gets sole ownership
        // of anything it shared with the job.
        drop(work);
        let result =
            outcome.and_then(|()| output.ok_or_else(|| StoreError::Redb("job committed without output".into())));
        let pending = match (on_durable, &result) {
            (None, _) => None,
            (Some(on_durable), Ok(_)) if durable => {
                on_durable(Ok(()));
                None
            }
            (Some(on_durable), Ok(_)) => Some(on_durable),
            (Some(on_durable), Err(e)) => {
                on_durable(Err(e.clone()));
                None
            }
        };
        // The waiter may have gone away (its task was cancelled); nothing to do then.
        let _ = done.send(result);
        pending
    }

    fn cost(&self) -> usize {
        self.cost
    }
}

/// Handle on the writer thread.
pub(crate) struct Writer {
    sender: Mutex<Option<mpsc::Sender<Queued>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
    closed: AtomicBool,
    disk: Arc<DiskHealth>,
    deferred: Deferred,
}

impl Writer {
    /// Start the writer thread over the database in `db`; `reopen` opens it again after an I/O
    /// error, and `disk` is told while commits fail. With `wal`, the writer owns the store's
    /// write-ahead log and runs the WAL jobs ([`Writer::write_log`]).
    pub(crate) fn start(
        db: DbSlot,
        reopen: Opener,
        metrics: Arc<Metrics>,
        disk: Arc<DiskHealth>,
        wal: Option<WalSide>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Queued>(QUEUE_CAPACITY);
        let deferred = Deferred::default();
        let committer = Committer {
            deferred: deferred.clone(),
            db,
            reopen,
            metrics,
            disk: disk.clone(),
            volatile: Cell::new(false),
            unflushed: RefCell::new(Vec::new()),
            stopped: RefCell::new(None),
            wal: wal.map(RefCell::new),
        };
        let handle = std::thread::Builder::new()
            .name("flotilla-store-writer".into())
            .spawn(move || committer.run(rx))
            .map_err(|e| StoreError::io("spawning the store writer thread", e))?;
        Ok(Self {
            sender: Mutex::new(Some(tx)),
            thread_id: handle.thread().id(),
            thread: Mutex::new(Some(handle)),
            closed: AtomicBool::new(false),
            disk,
            deferred,
        })
    }

    /// Run `work` in the next group commit and wait until that commit is durable.
    ///
    /// `work` may run more than once (if its batch is re-run), and must leave the transaction
    /// untouched when it returns a clean failure. `cost` is the approximate number of bytes it
    /// writes.
    pub(crate) async fn execute<T, F>(&self, cost: usize, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, JobFailure> + Send + 'static,
    {
        self.execute_as(Wait::Durable, cost, work).await
    }

    /// Like [`Writer::execute`], but only wait until readers see the change: for state Raft can
    /// rebuild from its durable log after a crash.
    pub(crate) async fn execute_visible<T, F>(&self, cost: usize, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, JobFailure> + Send + 'static,
    {
        self.execute_as(Wait::Visible, cost, work).await
    }

    /// [`Writer::execute`] or [`Writer::execute_visible`], as `wait` says.
    pub(crate) async fn execute_as<T, F>(&self, wait: Wait, cost: usize, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, JobFailure> + Send + 'static,
    {
        self.submit(cost, wait, None, work).await
    }

    /// Like [`Writer::execute_visible`], and call `on_durable` once the change is durable too
    /// (or with the error that prevented it). `on_durable` may run before this returns.
    pub(crate) async fn execute_then_flush<T, F>(
        &self,
        cost: usize,
        work: F,
        on_durable: OnDurable,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, JobFailure> + Send + 'static,
    {
        self.submit(cost, Wait::Visible, Some(on_durable), work).await
    }

    async fn submit<T, F>(
        &self,
        cost: usize,
        wait: Wait,
        on_durable: Option<OnDurable>,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, JobFailure> + Send + 'static,
    {
        let sender = match self.sender() {
            Ok(sender) => sender,
            Err(e) => return Err(fail_early(on_durable, e)),
        };
        let (done, wait_done) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(FnJob { work, output: None, done, wait, on_durable, cost });
        if let Err(mpsc::error::SendError(Queued::Redb(job))) = sender.send(Queued::Redb(job)).await {
            drop(job.finish(Err(StoreError::Closed), false));
            return Err(StoreError::Closed);
        }
        // Drop our clone now, so shutdown is not held up by a waiter.
        drop(sender);
        wait_done.await.map_err(|_| StoreError::Closed)?
    }

    /// Run `work` (visible, no fsync of its own) first in the next batch, without waking the
    /// writer and without waiting for the commit: for a hint whose loss in a crash is harmless
    /// and which a write that follows at once can carry. Nobody hears how it ended: a failure
    /// is only logged (and a store that fails stops, failing the jobs that do have waiters).
    /// Past [`MAX_DEFERRED`] held jobs it is queued as usual instead. A job deferred while the
    /// writer shuts down may be dropped.
    pub(crate) async fn defer<F>(&self, cost: usize, work: F) -> Result<(), StoreError>
    where
        F: FnMut(&WriteTransaction) -> Result<(), JobFailure> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        // The receiver is dropped at once: `finish` ignores a waiter that went away.
        let (done, _) = oneshot::channel();
        let job: Box<dyn Job> =
            Box::new(FnJob { work, output: None, done, wait: Wait::Visible, on_durable: None, cost });
        let job = {
            let mut deferred = lock_deferred(&self.deferred);
            if deferred.len() < MAX_DEFERRED {
                deferred.push(job);
                return Ok(());
            }
            job
        };
        let sender = self.sender()?;
        sender.send(Queued::Redb(job)).await.map_err(|_| StoreError::Closed)
    }

    /// Run `op` on `ns`'s log in the write-ahead log (a store with one only). With
    /// [`Wait::Visible`], return once the change is readable and call `on_durable` once it is
    /// synced (or with the error that kept it from disk); with [`Wait::Durable`], return once
    /// it is synced. `on_durable` may run before this returns.
    pub(crate) async fn write_log(
        &self,
        ns: &flotilla_core::Namespace,
        op: WalOp,
        wait: Wait,
        on_durable: Option<OnDurable>,
    ) -> Result<(), StoreError> {
        let sender = match self.sender() {
            Ok(sender) => sender,
            Err(e) => return Err(fail_early(on_durable, e)),
        };
        let (done, wait_done) = oneshot::channel();
        let job = WalJob { namespace: ns.clone(), op, wait, done, on_durable };
        if let Err(mpsc::error::SendError(Queued::Wal(job))) = sender.send(Queued::Wal(job)).await {
            job.fail(StoreError::Closed);
            return Err(StoreError::Closed);
        }
        drop(sender);
        wait_done.await.map_err(|_| StoreError::Closed)?
    }

    fn sender(&self) -> Result<mpsc::Sender<Queued>, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let guard = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().cloned().ok_or(StoreError::Closed)
    }

    /// Whether [`Writer::shutdown`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Jobs queued and not yet taken by the writer.
    pub(crate) fn queue_depth(&self) -> u64 {
        let guard = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(|s| (s.max_capacity() - s.capacity()) as u64).unwrap_or(0)
    }

    /// Refuse new jobs, let the writer finish every queued one, and wait for its thread to end.
    /// Idempotent.
    pub(crate) fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        // A batch waiting for disk space would hold up the join below for as long as the disk
        // stays full: make it give up instead (it is not acknowledged).
        self.disk.stop_waiting();
        // Dropping the last long-lived sender closes the channel once in-flight submitters
        // (holding short-lived clones) are done; the writer drains the queue and exits.
        drop(self.sender.lock().unwrap_or_else(|p| p.into_inner()).take());
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            if std::thread::current().id() == self.thread_id {
                // Called from the writer itself (a job dropped the last store handle): it will
                // exit on its own once the queue is drained.
                return;
            }
            if handle.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
    }
}

/// Tell `on_durable` (if any) that its job never ran, and return the error.
fn fail_early(on_durable: Option<OnDurable>, error: StoreError) -> StoreError {
    if let Some(on_durable) = on_durable {
        on_durable(Err(error.clone()));
    }
    error
}

/// Why the store stops after an fsync failed.
const SYNC_FAILED: &str =
    "an fsync failed, so what is on disk is unknown (a retried fsync may report data the kernel dropped)";
/// Why the store stops after a disk failure with non-durable commits outstanding.
const NOT_DURABLE: &str = "the disk failed while commits were not yet durable";
/// Why the store stops after appending to or syncing the write-ahead log failed.
const WAL_FAILED: &str =
    "writing or syncing the write-ahead log failed, so where the log ends is unknown until it is opened again";

/// What the writer thread works with. Only the writer thread touches it, hence the cells.
struct Committer {
    db: DbSlot,
    reopen: Opener,
    metrics: Arc<Metrics>,
    disk: Arc<DiskHealth>,
    /// Whether a commit since the last durable one was not fsynced: what is on disk is then
    /// behind what readers (and Raft) have seen.
    volatile: Cell<bool>,
    /// Callbacks of jobs committed without an fsync, to run after the next durable commit.
    unflushed: RefCell<Vec<OnDurable>>,
    /// Set when the store stopped after a disk failure it could not recover from: every
    /// later job fails with it.
    stopped: RefCell<Option<StoreError>>,
    /// Jobs to run first in the next batch (see [`Writer::defer`]).
    deferred: Deferred,
    /// The write-ahead log, in a store whose Raft logs are there.
    wal: Option<RefCell<WalSide>>,
}

/// How one attempt at committing a batch ended.
enum Attempt {
    /// Committed, or failed for a reason retrying cannot fix: finish the jobs with this.
    Done(Result<(), StoreError>),
    /// The disk failed: nothing was committed, and the database must be reopened.
    DiskFailed(StoreError),
}

/// How running the jobs of a batch in one transaction ended.
enum Ran {
    /// Every job left still ran successfully: commit.
    Clean,
    /// A job failed after writing and was removed: roll back and run the others again.
    Rerun,
    /// The disk failed under a job.
    DiskFailed(StoreError),
}

impl Committer {
    /// The writer thread: block for a job, drain the queue into a batch, commit, flush if a
    /// job waits for that, repeat until the channel is closed and empty.
    fn run(self, mut rx: mpsc::Receiver<Queued>) {
        tracing::debug!("store writer started");
        while let Some(first) = rx.blocking_recv() {
            let mut bytes = first.cost();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(job) => {
                        bytes = bytes.saturating_add(job.cost());
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            let mut jobs = Vec::with_capacity(batch.len());
            let mut wal_jobs = Vec::new();
            for queued in batch {
                match queued {
                    Queued::Redb(job) => jobs.push(job),
                    Queued::Wal(job) => wal_jobs.push(job),
                }
            }
            let jobs = self.with_deferred(jobs);
            if !jobs.is_empty() {
                self.run_batch(jobs);
            }
            if !wal_jobs.is_empty() {
                self.run_wal(wal_jobs);
            }
            if self.checkpoint_due() {
                crate::crash_points::hit("wal-checkpoint");
            }
            if !self.unflushed.borrow().is_empty() || self.checkpoint_due() {
                self.flush();
            }
        }
        let rest = self.with_deferred(Vec::new());
        if !rest.is_empty() {
            self.run_batch(rest);
        }
        // Leave nothing behind that only this process's memory holds.
        if self.volatile.get() {
            self.flush();
        }
        tracing::debug!("store writer stopped");
    }

    /// `batch` with the deferred jobs put first. Taken after the queue was drained: a job
    /// deferred before one of the queued jobs was submitted is then always in this batch, and
    /// ahead of it.
    fn with_deferred(&self, batch: Vec<Box<dyn Job>>) -> Vec<Box<dyn Job>> {
        let mut jobs = std::mem::take(&mut *lock_deferred(&self.deferred));
        if jobs.is_empty() {
            return batch;
        }
        jobs.extend(batch);
        jobs
    }

    /// Commit `batch`, without any job that fails on its own; after a disk failure, reopen the
    /// database and try again until it commits (or the store stops or shuts down).
    fn run_batch(&self, batch: Vec<Box<dyn Job>>) {
        // Short of space, every commit is durable: see `crate::disk::RELAXED_COMMIT_MIN_FREE`.
        let durable = batch.iter().any(|job| job.wait() == Wait::Durable) || !self.disk.has_room_for_relaxed_commits();
        let mut pending: Vec<Option<Box<dyn Job>>> = batch.into_iter().map(Some).collect();
        let mut failed: Vec<(Box<dyn Job>, StoreError)> = Vec::new();
        let mut backoff = Backoff::new();
        let outcome = loop {
            match self.attempt(&mut pending, &mut failed, durable) {
                Attempt::Done(outcome) => {
                    self.disk.commit_succeeded();
                    break outcome;
                }
                Attempt::DiskFailed(error) => {
                    self.metrics.record_stalled_commit(&error.to_string());
                    if let Err(error) = self.recover(error, &mut backoff) {
                        tracing::error!(%error, "store writer gives up a batch it could not commit; none of it is acknowledged");
                        break Err(error);
                    }
                }
            }
        };
        if outcome.is_ok() {
            self.committed(durable);
        }
        let mut unflushed = Vec::new();
        for job in pending.into_iter().flatten() {
            unflushed.extend(job.finish(outcome.clone(), durable));
        }
        for (job, error) in failed {
            drop(job.finish(Err(error), durable));
        }
        self.unflushed.borrow_mut().extend(unflushed);
    }

    /// Bookkeeping after a successful commit: a durable one makes every earlier commit durable.
    fn committed(&self, durable: bool) {
        if !durable {
            self.volatile.set(true);
            return;
        }
        self.volatile.set(false);
        if let Some(wal) = &self.wal {
            wal.borrow_mut().last_durable = Instant::now();
        }
        self.settle_unflushed(&Ok(()));
    }

    /// Whether redb's non-durable commits are due a checkpoint (a store with a write-ahead log
    /// only: without one, every log append flushes them).
    fn checkpoint_due(&self) -> bool {
        self.volatile.get()
            && self.wal.as_ref().is_some_and(|wal| wal.borrow().last_durable.elapsed() >= CHECKPOINT_INTERVAL)
    }

    /// Run the WAL jobs of a batch (see `crate::writer_wal`): give ids to new namespaces,
    /// append every job's records, wake the jobs that wait for visibility, sync once, then
    /// tell the jobs waiting for durability.
    fn run_wal(&self, jobs: Vec<WalJob>) {
        let Some(wal) = &self.wal else {
            for job in jobs {
                job.fail(StoreError::Invalid("this store keeps its Raft logs in tables, not a write-ahead log".into()));
            }
            return;
        };
        if let Some(error) = self.stopped.borrow().clone() {
            jobs.into_iter().for_each(|job| job.fail(error.clone()));
            return;
        }
        let ids = wal.borrow().ids.clone();
        let Some(jobs) = self.give_ids(&ids, jobs) else { return };
        let mut appends = Vec::with_capacity(jobs.len());
        let mut replaces = Vec::new();
        for job in jobs {
            let Some(id) = ids.get(&job.namespace) else {
                // A Forget or Replace of a namespace without an id: nothing to do.
                let _ = job.done.send(Ok(()));
                continue;
            };
            match job.op {
                WalOp::Forget => {
                    ids.drop_namespace(&job.namespace);
                    wal.borrow_mut().log.forget(id);
                    let _ = job.done.send(Ok(()));
                }
                WalOp::Replace(_) => replaces.push((job, id)),
                WalOp::Append(_) => appends.push((job, id)),
            }
        }
        let purges = appends.iter().any(|(job, _)| match &job.op {
            WalOp::Append(writes) => writes.iter().any(|w| w.kind == RecordKind::Purge),
            WalOp::Forget | WalOp::Replace(_) => false,
        });
        let (records, mut jobs) = plan_appends(&wal.borrow(), appends);
        if jobs.is_empty() && replaces.is_empty() {
            return;
        }
        let appending = Instant::now();
        let appended = wal.borrow_mut().log.append(&records).map_err(|e| e.to_string());
        // After the appends, so replacements are checked against the log as they left it.
        let appended = appended.and_then(|()| {
            let copies = plan_replacements(&wal.borrow(), &mut replaces).map_err(|e| e.to_string())?;
            wal.borrow_mut().log.append(&copies).map_err(|e| e.to_string())
        });
        jobs.extend(replaces.into_iter().map(|(job, _)| job));
        if let Err(error) = appended {
            let error = self.stop(&StoreError::Io { kind: std::io::ErrorKind::Other, message: error }, WAL_FAILED);
            jobs.into_iter().for_each(|job| job.fail(error.clone()));
            return;
        }
        let ops = jobs.len() as u64;
        let mut waiting = Vec::with_capacity(jobs.len());
        for job in jobs {
            match job.wait {
                Wait::Visible => {
                    let _ = job.done.send(Ok(()));
                    waiting.extend(job.on_durable);
                }
                Wait::Durable => waiting.push(Box::new(move |result: Result<(), StoreError>| {
                    let _ = job.done.send(result);
                }) as OnDurable),
            }
        }
        let synced = wal.borrow_mut().log.sync();
        let result =
            match synced {
                Ok(()) => {
                    // A group commit of the log: its jobs, written and synced as one.
                    self.metrics.record_commit(ops, appending.elapsed(), true);
                    Ok(())
                }
                Err(error) => Err(self
                    .stop(&StoreError::Io { kind: std::io::ErrorKind::Other, message: error.to_string() }, WAL_FAILED)),
            };
        for on_durable in waiting {
            on_durable(result.clone());
        }
        if purges && result.is_ok() {
            // The purges' own commits are durable (they ran before these records): the
            // segments holding nothing but purged entries can go, once the small logs that
            // still pin old segments are copied forward.
            let copied = wal.borrow_mut().log.copy_forward();
            if let Err(error) = copied {
                let cause = StoreError::Io { kind: std::io::ErrorKind::Other, message: error.to_string() };
                self.stop(&cause, WAL_FAILED);
                return;
            }
            if let Err(error) = wal.borrow_mut().log.recycle() {
                tracing::warn!(%error, "recycling write-ahead log segments failed; they stay until the next purge");
            }
        }
    }

    /// `jobs`, after a durable commit has given an id to each namespace they append to that
    /// has none; `None` when that commit failed (every job then failed with its error).
    fn give_ids(&self, ids: &NamespaceIds, jobs: Vec<WalJob>) -> Option<Vec<WalJob>> {
        let mut new: Vec<flotilla_core::Namespace> = Vec::new();
        for job in &jobs {
            if matches!(job.op, WalOp::Append(_)) && ids.get(&job.namespace).is_none() && !new.contains(&job.namespace)
            {
                new.push(job.namespace.clone());
            }
        }
        if new.is_empty() {
            return Some(jobs);
        }
        let assigned = match ids.propose(&new) {
            Ok(assigned) => assigned,
            Err(error) => {
                jobs.into_iter().for_each(|job| job.fail(error.clone()));
                return None;
            }
        };
        let (done, mut outcome) = oneshot::channel();
        let record = assigned.clone();
        let work = move |txn: &WriteTransaction| NamespaceIds::record(txn, &record).map_err(dirty);
        let job: Box<dyn Job> =
            Box::new(FnJob { work, output: None, done, wait: Wait::Durable, on_durable: None, cost: 0 });
        self.run_batch(vec![job]);
        match outcome.try_recv() {
            Ok(Ok(())) => {
                ids.adopt(&assigned);
                Some(jobs)
            }
            Ok(Err(error)) => {
                jobs.into_iter().for_each(|job| job.fail(error.clone()));
                None
            }
            Err(_) => {
                jobs.into_iter().for_each(|job| job.fail(StoreError::Closed));
                None
            }
        }
    }

    /// Tell every job waiting for a durable commit how that ended.
    fn settle_unflushed(&self, result: &Result<(), StoreError>) {
        let waiting = std::mem::take(&mut *self.unflushed.borrow_mut());
        for on_durable in waiting {
            on_durable(result.clone());
        }
    }

    /// Make every commit so far durable with an empty durable commit, then run the callbacks
    /// waiting for that. A failure here stops the store: the commits it should have saved
    /// were seen by readers and by Raft, and can no longer be made durable.
    fn flush(&self) {
        // A stopped store commits nothing more, not even at exit.
        if let Some(error) = self.stopped.borrow().clone() {
            self.settle_unflushed(&Err(error));
            return;
        }
        let result = match self.current_db() {
            Some(db) => begin(&db, Durability::Immediate).and_then(|txn| {
                let started = Instant::now();
                txn.commit().map_err(redb_error)?;
                self.metrics.record_flush(started.elapsed());
                Ok(())
            }),
            None => Err(StoreError::Closed),
        };
        match result {
            Ok(()) => self.committed(true),
            Err(error) => {
                let error = self.stop_after(&error);
                self.settle_unflushed(&Err(error));
            }
        }
    }

    /// Stop the store for good after `error` (on a commit, or on a flush, which only happens
    /// with non-durable commits outstanding), naming a failed fsync as the cause if there was one.
    fn stop_after(&self, error: &StoreError) -> StoreError {
        match self.disk.sync_failure() {
            Some(sync) => self.stop(&StoreError::Io { kind: std::io::ErrorKind::Other, message: sync }, SYNC_FAILED),
            None => self.stop(error, NOT_DURABLE),
        }
    }

    /// Stop the store for good after `cause` (`why` says why it cannot be retried): every later
    /// job fails with the returned error.
    fn stop(&self, cause: &StoreError, why: &str) -> StoreError {
        let mut stopped = self.stopped.borrow_mut();
        if let Some(error) = stopped.as_ref() {
            return error.clone();
        }
        let error = StoreError::Stopped(format!("{why}: {cause}"));
        self.metrics.set_error(&error.to_string());
        self.disk.set_stopped(error.to_string());
        tracing::error!(%cause, "store stopped: {why}; every write is refused, restart the node to recover from what is on disk");
        *stopped = Some(error.clone());
        error
    }

    fn current_db(&self) -> Option<Arc<Database>> {
        self.db.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Run the pending jobs in one transaction and commit it (fsynced when `durable`),
    /// re-running without any job that failed after it had started writing.
    fn attempt(
        &self,
        pending: &mut [Option<Box<dyn Job>>],
        failed: &mut Vec<(Box<dyn Job>, StoreError)>,
        durable: bool,
    ) -> Attempt {
        if let Some(error) = self.stopped.borrow().as_ref() {
            return Attempt::Done(Err(error.clone()));
        }
        let Some(db) = self.current_db() else {
            return Attempt::DiskFailed(StoreError::io("store writer", std::io::Error::other("database is not open")));
        };
        let durability = if durable { Durability::Immediate } else { Durability::None };
        loop {
            let txn = match begin(&db, durability) {
                Ok(txn) => txn,
                Err(e) if e.is_disk_failure() => return Attempt::DiskFailed(e),
                Err(e) => {
                    let ops = pending.iter().filter(|j| j.is_some()).count() as u64;
                    self.metrics.record_failed_commit(ops, Duration::ZERO, &e.to_string());
                    tracing::error!(error = %e, "cannot begin a store write transaction");
                    return Attempt::Done(Err(e));
                }
            };
            match run_jobs(&txn, pending, failed, &self.metrics) {
                Ran::Clean => {}
                Ran::Rerun => {
                    self.metrics.record_retry();
                    if let Err(e) = txn.abort().map_err(redb_error) {
                        // Rolling back failed: the database is unusable as it is.
                        return if e.is_disk_failure() { Attempt::DiskFailed(e) } else { Attempt::Done(Err(e)) };
                    }
                    continue;
                }
                Ran::DiskFailed(e) => {
                    drop(txn.abort());
                    return Attempt::DiskFailed(e);
                }
            }
            return self.commit(txn, pending, durable);
        }
    }

    fn commit(&self, txn: WriteTransaction, pending: &[Option<Box<dyn Job>>], durable: bool) -> Attempt {
        let ops = pending.iter().filter(|j| j.is_some()).count() as u64;
        if ops == 0 {
            // Nothing left to commit; dropping the transaction rolls it back.
            drop(txn.abort());
            return Attempt::Done(Ok(()));
        }
        let started = Instant::now();
        let committed = txn.commit();
        let latency = started.elapsed();
        match committed.map_err(redb_error) {
            Ok(()) => {
                self.metrics.record_commit(ops, latency, durable);
                Attempt::Done(Ok(()))
            }
            Err(error) if error.is_disk_failure() => Attempt::DiskFailed(error),
            Err(error) => {
                self.metrics.record_failed_commit(ops, latency, &error.to_string());
                tracing::error!(%error, ops, "store commit failed; no operation of the batch is acknowledged");
                Attempt::Done(Err(error))
            }
        }
    }

    /// After a disk failure: report it, reopen the database (redb refuses every operation on
    /// it after an I/O error, reads included, so at once), retrying with backoff, then pause
    /// before the batch runs again. `Err` when the store is shutting down instead, or when an
    /// fsync failed or reopening would lose commits that were not durable yet (the store then
    /// stops).
    fn recover(&self, mut error: StoreError, backoff: &mut Backoff) -> Result<(), StoreError> {
        if self.volatile.get() || self.disk.sync_failure().is_some() {
            let error = self.stop_after(&error);
            self.settle_unflushed(&Err(error.clone()));
            return Err(error);
        }
        loop {
            if self.disk.is_stopping() {
                return Err(error);
            }
            self.disk.commit_failing(&error);
            match self.reopen_db() {
                Ok(()) => break,
                Err(e) => {
                    error = e;
                    std::thread::sleep(backoff.next_pause());
                }
            }
        }
        std::thread::sleep(backoff.next_pause());
        Ok(())
    }

    /// Close the failed database and open the file again. Readers wait on the slot meanwhile
    /// rather than meet the failed database; not for long, as an open does not wait for disk
    /// space (it fails, and is retried after a pause).
    fn reopen_db(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        // Only one instance may hold the file: close the old one first. A reader that still
        // holds it delays the close, and the open below then fails and is retried.
        drop(slot.take());
        let db = (self.reopen)()?;
        *slot = Some(Arc::new(db));
        tracing::info!("store database reopened after an I/O error");
        Ok(())
    }
}

/// Run every pending job in `txn`. A job that fails on its own moves to `failed`; a disk
/// failure is nobody's fault and leaves the job pending.
fn run_jobs(
    txn: &WriteTransaction,
    pending: &mut [Option<Box<dyn Job>>],
    failed: &mut Vec<(Box<dyn Job>, StoreError)>,
    metrics: &Metrics,
) -> Ran {
    for slot in pending.iter_mut() {
        let Some(job) = slot.as_mut() else { continue };
        let result = catch_unwind(AssertUnwindSafe(|| job.run(txn)));
        let failure = match result {
            Ok(Ok(())) => continue,
            Ok(Err(failure)) if failure.error.is_disk_failure() => return Ran::DiskFailed(failure.error),
            Ok(Err(failure)) => failure,
            Err(panic) => JobFailure::dirty(StoreError::StateMachine(format!(
                "a store job panicked: {}",
                panic_message(panic.as_ref())
            ))),
        };
        if let Some(job) = slot.take() {
            metrics.record_failed_op(&failure.error.to_string());
            tracing::warn!(error = %failure.error, dirty = failure.dirty, "store job failed");
            failed.push((job, failure.error));
        }
        if failure.dirty {
            return Ran::Rerun;
        }
    }
    Ran::Clean
}

/// A write transaction that commits with `durability`.
fn begin(db: &Database, durability: Durability) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write().map_err(redb_error)?;
    // Set even when it is redb's default (Immediate): acknowledging a durable job before it
    // is on disk would break Raft's safety.
    txn.set_durability(durability).map_err(|e| StoreError::Redb(e.to_string()))?;
    Ok(txn)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
