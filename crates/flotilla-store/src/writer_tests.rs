//! Batching, isolation of failing jobs, and commits retried across disk failures, on an
//! in-memory redb whose "disk" can be made to fail.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redb::backends::InMemoryBackend;
use redb::{ReadableDatabase, StorageBackend, TableDefinition};
use tokio::sync::oneshot;

use super::*;
use crate::disk::WaitingFileBackend;

const T: TableDefinition<&str, u64> = TableDefinition::new("t");

/// An in-memory backend that reports a full disk while `full` is set, and fails fsyncs (only)
/// while `sync_broken` is set. Clones share the data, so the database can be reopened on it.
/// The fixture puts it under the production [`WaitingFileBackend`].
#[derive(Debug, Clone)]
struct FlakyDisk {
    inner: Arc<InMemoryBackend>,
    full: Arc<AtomicBool>,
    sync_broken: Arc<AtomicBool>,
}

impl FlakyDisk {
    fn check(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

impl StorageBackend for FlakyDisk {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        if self.sync_broken.load(Ordering::SeqCst) {
            return Err(io::Error::other("fsync failed"));
        }
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

struct Fixture {
    slot: DbSlot,
    writer: Arc<Writer>,
    metrics: Arc<Metrics>,
    disk: Arc<DiskHealth>,
    full: Arc<AtomicBool>,
    sync_broken: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// The database as it is open now (the writer may have reopened it).
    fn db(&self) -> Arc<Database> {
        self.slot.read().unwrap().clone().expect("database open")
    }
}

fn fixture() -> Fixture {
    let full = Arc::new(AtomicBool::new(false));
    let sync_broken = Arc::new(AtomicBool::new(false));
    let backend =
        FlakyDisk { inner: Arc::new(InMemoryBackend::new()), full: full.clone(), sync_broken: sync_broken.clone() };
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(DiskHealth::new(dir.path()));
    disk.set_reserve(0);
    let reopen_on = backend.clone();
    let health = disk.clone();
    // Under the production wrapper, which records failed fsyncs; its writes do not wait for
    // room, so a full disk reaches redb as it would without the wrapper.
    let reopen: Opener = Box::new(move || {
        let waits = Arc::new(AtomicBool::new(false));
        let wrapped = WaitingFileBackend::new(reopen_on.clone(), health.clone(), "flaky.redb".into(), waits);
        Database::builder().create_with_backend(wrapped).map_err(redb_error)
    });
    let slot: DbSlot = Arc::new(RwLock::new(Some(Arc::new(reopen().unwrap()))));
    drop(backend);
    let metrics = Arc::new(Metrics::new());
    let writer = Arc::new(Writer::start(slot.clone(), reopen, metrics.clone(), disk.clone(), None).unwrap());
    Fixture { slot, writer, metrics, disk, full, sync_broken, _dir: dir }
}

/// Poll `check` (no fixed sleep as synchronisation) until it holds, for at most 10 s.
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn read(db: &Database, key: &str) -> Option<u64> {
    let txn = db.begin_read().unwrap();
    let table = match txn.open_table(T) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return None,
        Err(e) => panic!("{e}"),
    };
    table.get(key).unwrap().map(|v| v.value())
}

/// The work of a job writing `key = value`.
fn insert(key: &'static str, value: u64) -> impl FnMut(&WriteTransaction) -> Result<(), JobFailure> + Send + 'static {
    move |txn: &WriteTransaction| {
        txn.open_table(T).map_err(clean)?.insert(key, value).map_err(dirty)?;
        Ok(())
    }
}

/// Write `key = value` as one job.
async fn put(writer: &Writer, key: &'static str, value: u64) -> Result<(), StoreError> {
    writer.execute(8, insert(key, value)).await
}

/// Write `key = value` as one job that only waits until readers see it.
async fn put_visible(writer: &Writer, key: &'static str, value: u64) -> Result<(), StoreError> {
    writer.execute_visible(8, insert(key, value)).await
}

/// Write `key = value` as a job that waits until readers see it, and hear (on the returned
/// channel) once it is durable, with the number of fsyncs counted at that moment.
async fn put_then_flush(
    f: &Fixture,
    key: &'static str,
    value: u64,
) -> (Result<(), StoreError>, oneshot::Receiver<(Result<(), StoreError>, u64)>) {
    let (tx, rx) = oneshot::channel();
    let metrics = f.metrics.clone();
    let on_durable: OnDurable = Box::new(move |result| {
        let _ = tx.send((result, metrics.snapshot(0).fsyncs));
    });
    let visible = f.writer.execute_then_flush(8, insert(key, value), on_durable).await;
    (visible, rx)
}

/// Occupy the writer with a job that waits for the returned sender, so that the jobs queued
/// meanwhile form the next batch, all together.
async fn hold_writer(
    writer: &Arc<Writer>,
) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<Result<(), StoreError>>) {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = oneshot::channel();
    let mut started_tx = Some(started_tx);
    let w = writer.clone();
    let held = tokio::spawn(async move {
        w.execute(0, move |_txn: &WriteTransaction| {
            // Hold only the first run: a batch retried after a disk failure runs it again.
            if let Some(tx) = started_tx.take() {
                let _ = tx.send(());
                let _ = wait.recv();
            }
            Ok(())
        })
        .await
    });
    started.await.unwrap();
    (release, held)
}

/// Wait (without a fixed sleep) until `n` jobs are queued.
async fn queued(writer: &Writer, n: u64) {
    for _ in 0..100_000 {
        if writer.queue_depth() >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("jobs were not queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_share_one_commit() {
    let f = fixture();
    let (release, held) = hold_writer(&f.writer).await;
    let mut tasks = Vec::new();
    for (i, key) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        let w = f.writer.clone();
        tasks.push(tokio::spawn(async move { put(&w, key, i as u64).await }));
    }
    queued(&f.writer, 5).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let m = f.metrics.snapshot(0);
    assert_eq!(m.ops, 6);
    assert_eq!(m.commits, 2, "the held job, then the five queued ones together");
    assert_eq!(m.max_ops_per_commit, 5);
    assert_eq!(read(&f.db(), "e"), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_midway_is_rolled_back_alone() {
    let f = fixture();
    let (release, held) = hold_writer(&f.writer).await;
    let w = f.writer.clone();
    let before = tokio::spawn(async move { put(&w, "before", 1).await });
    queued(&f.writer, 1).await;
    // Writes, then fails: its write must not survive, the others' must.
    let w = f.writer.clone();
    let half = tokio::spawn(async move {
        w.execute(8, |txn: &WriteTransaction| -> Result<(), JobFailure> {
            txn.open_table(T).map_err(clean)?.insert("half", 1).map_err(dirty)?;
            Err(JobFailure::dirty(StoreError::Invalid("failed after writing".into())))
        })
        .await
    });
    queued(&f.writer, 2).await;
    let w = f.writer.clone();
    let panics = tokio::spawn(async move {
        w.execute(8, |txn: &WriteTransaction| -> Result<(), JobFailure> {
            txn.open_table(T).map_err(clean)?.insert("panic", 1).map_err(dirty)?;
            panic!("a job panicked on purpose");
        })
        .await
    });
    queued(&f.writer, 3).await;
    let w = f.writer.clone();
    let after = tokio::spawn(async move { put(&w, "after", 2).await });
    queued(&f.writer, 4).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();

    before.await.unwrap().unwrap();
    after.await.unwrap().unwrap();
    assert!(matches!(half.await.unwrap(), Err(StoreError::Invalid(_))));
    assert!(matches!(panics.await.unwrap(), Err(StoreError::StateMachine(m)) if m.contains("on purpose")));
    assert_eq!(read(&f.db(), "before"), Some(1));
    assert_eq!(read(&f.db(), "after"), Some(2));
    assert_eq!(read(&f.db(), "half"), None);
    assert_eq!(read(&f.db(), "panic"), None);
    let m = f.metrics.snapshot(0);
    assert_eq!(m.batch_retries, 2);
    assert_eq!(m.failed_ops, 2);
    assert_eq!(m.commits, 2);

    // The writer is still healthy.
    put(&f.writer, "later", 3).await.unwrap();
    assert_eq!(read(&f.db(), "later"), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_retried_until_the_disk_works_and_acknowledges_nothing_before() {
    let f = fixture();
    put(&f.writer, "ok", 1).await.unwrap();

    let (release, held) = hold_writer(&f.writer).await;
    let mut tasks = Vec::new();
    for key in ["x", "y", "z"] {
        let w = f.writer.clone();
        tasks.push(tokio::spawn(async move { put(&w, key, 9).await }));
    }
    queued(&f.writer, 3).await;
    // The held job's commit hits a full disk, and so does every retry while `full` is set.
    f.full.store(true, Ordering::SeqCst);
    release.send(()).unwrap();
    until("the store reports the failing disk", || f.disk.write_blocked().is_some()).await;
    // Still failing a second later: the waiters neither got an answer nor an error meanwhile.
    until("the stall lasts", || f.disk.write_blocked().is_some_and(|r| !r.contains("(for 0 s)"))).await;
    let reason = f.disk.write_blocked().unwrap();
    assert!(reason.contains("disk full") || reason.contains("I/O"), "{reason}");
    assert!(!held.is_finished(), "nothing is acknowledged, nor failed, while the disk fails");
    assert!(tasks.iter().all(|t| !t.is_finished()));

    f.full.store(false, Ordering::SeqCst);
    held.await.unwrap().unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(f.disk.write_blocked(), None, "the degraded state clears once a commit succeeds");
    let db = f.db();
    assert_eq!(read(&db, "ok"), Some(1));
    assert_eq!(read(&db, "x"), Some(9));
    assert_eq!(read(&db, "z"), Some(9));
    let m = f.metrics.snapshot(0);
    assert_eq!(m.failed_ops, 0, "a disk failure fails no operation");
    assert!(m.last_error.is_some());
    put(&f.writer, "later", 3).await.unwrap();
    assert_eq!(read(&f.db(), "later"), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_a_batch_the_disk_refuses() {
    let f = fixture();
    put(&f.writer, "ok", 1).await.unwrap();
    f.full.store(true, Ordering::SeqCst);
    let w = f.writer.clone();
    let stuck = tokio::spawn(async move { put(&w, "x", 9).await });
    until("the store reports the failing disk", || f.disk.write_blocked().is_some()).await;
    let w = f.writer.clone();
    let stopped = tokio::task::spawn_blocking(move || w.shutdown());
    tokio::time::timeout(Duration::from_secs(10), stopped).await.expect("shutdown ends").unwrap();
    let err = stuck.await.unwrap().unwrap_err();
    assert!(err.is_disk_failure(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_queue() {
    let f = fixture();
    let (release, held) = hold_writer(&f.writer).await;
    let w = f.writer.clone();
    let queued_put = tokio::spawn(async move { put(&w, "queued", 5).await });
    queued(&f.writer, 1).await;
    let w = f.writer.clone();
    let stopper = std::thread::spawn(move || w.shutdown());
    release.send(()).unwrap();
    stopper.join().unwrap();
    held.await.unwrap().unwrap();
    queued_put.await.unwrap().unwrap();
    assert_eq!(read(&f.db(), "queued"), Some(5));
    assert!(matches!(put(&f.writer, "late", 1).await, Err(StoreError::Closed)));
    f.writer.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visible_jobs_commit_without_an_fsync() {
    let f = fixture();
    put(&f.writer, "durable", 1).await.unwrap();
    let before = f.metrics.snapshot(0);
    put_visible(&f.writer, "visible", 2).await.unwrap();
    assert_eq!(read(&f.db(), "visible"), Some(2), "readers see it as soon as the waiter hears");
    let after = f.metrics.snapshot(0);
    assert_eq!(after.commits, before.commits + 1);
    assert_eq!(after.fsyncs, before.fsyncs, "nothing waits for the disk, so no fsync");
    put(&f.writer, "durable", 3).await.unwrap();
    assert_eq!(f.metrics.snapshot(0).fsyncs, before.fsyncs + 1, "a durable job still fsyncs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_job_is_visible_first_and_hears_after_the_fsync() {
    let f = fixture();
    put(&f.writer, "warm", 1).await.unwrap();
    let before = f.metrics.snapshot(0).fsyncs;
    let (visible, durable) = put_then_flush(&f, "appended", 7).await;
    visible.unwrap();
    assert_eq!(read(&f.db(), "appended"), Some(7));
    let (result, fsyncs_then) = tokio::time::timeout(Duration::from_secs(10), durable).await.unwrap().unwrap();
    result.unwrap();
    assert_eq!(fsyncs_then, before + 1, "told only after the flush that follows its commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_stops_the_store_and_tells_the_waiters() {
    let f = fixture();
    put(&f.writer, "warm", 1).await.unwrap();
    f.sync_broken.store(true, Ordering::SeqCst);
    let (visible, durable) = put_then_flush(&f, "appended", 7).await;
    visible.expect("the commit itself needs no fsync");
    let (result, _) = tokio::time::timeout(Duration::from_secs(10), durable).await.unwrap().unwrap();
    assert!(matches!(result, Err(StoreError::Stopped(_))), "{result:?}");
    f.sync_broken.store(false, Ordering::SeqCst);
    // Reopening would roll the database back under what readers saw: the store stays stopped.
    let later = put(&f.writer, "later", 2).await;
    assert!(matches!(later, Err(StoreError::Stopped(_))), "{later:?}");
    assert!(matches!(put_visible(&f.writer, "later", 2).await, Err(StoreError::Stopped(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_failure_after_visible_commits_stops_instead_of_reopening() {
    let f = fixture();
    put(&f.writer, "warm", 1).await.unwrap();
    put_visible(&f.writer, "applied", 2).await.unwrap();
    f.full.store(true, Ordering::SeqCst);
    let failed = put(&f.writer, "vote", 3).await;
    assert!(matches!(failed, Err(StoreError::Stopped(_))), "{failed:?}");
    f.full.store(false, Ordering::SeqCst);
    assert!(matches!(put(&f.writer, "vote", 3).await, Err(StoreError::Stopped(_))));
    let m = f.metrics.snapshot(0);
    assert!(m.last_error.is_some_and(|e| e.contains("restart")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_store_even_when_every_commit_was_durable() {
    let f = fixture();
    put(&f.writer, "warm", 1).await.unwrap();
    // Every commit so far is durable, which used to mean "reopen and retry": after a failed
    // fsync a retry could be acknowledged with data the kernel dropped, so the store stops.
    f.sync_broken.store(true, Ordering::SeqCst);
    let failed = tokio::time::timeout(Duration::from_secs(10), put(&f.writer, "x", 9))
        .await
        .expect("a failed fsync answers at once instead of retrying");
    assert!(matches!(&failed, Err(StoreError::Stopped(m)) if m.contains("fsync")), "{failed:?}");
    // The disk "works" again: the store stays stopped all the same, and says why.
    f.sync_broken.store(false, Ordering::SeqCst);
    assert!(matches!(put(&f.writer, "y", 1).await, Err(StoreError::Stopped(_))));
    assert!(matches!(put_visible(&f.writer, "y", 1).await, Err(StoreError::Stopped(_))));
    let blocked = f.disk.write_blocked().expect("client writes are refused");
    assert!(blocked.contains("fsync") && blocked.contains("restart"), "{blocked}");
    assert!(f.metrics.snapshot(0).last_error.is_some_and(|e| e.contains("fsync")));
    assert_eq!(f.metrics.snapshot(0).batch_retries, 0, "the batch is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_still_waits_while_a_failed_fsync_stops() {
    // The disk-full path is unchanged: a commit that meets ENOSPC is retried until it commits.
    let f = fixture();
    put(&f.writer, "warm", 1).await.unwrap();
    f.full.store(true, Ordering::SeqCst);
    let w = f.writer.clone();
    let waiting = tokio::spawn(async move { put(&w, "x", 9).await });
    until("the store reports the full disk", || f.disk.write_blocked().is_some()).await;
    assert!(!waiting.is_finished());
    f.full.store(false, Ordering::SeqCst);
    waiting.await.unwrap().unwrap();
    assert_eq!(read(&f.db(), "x"), Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_job_rides_with_the_next_batch_and_is_written_at_shutdown() {
    let f = fixture();
    let before = f.metrics.snapshot(0).commits;
    f.writer.defer(8, insert("hint", 1)).await.unwrap();
    // Nothing wakes the writer for it: no commit of its own, and readers do not see it yet.
    assert_eq!(f.metrics.snapshot(0).commits, before);
    assert_eq!(read(&f.db(), "hint"), None);
    put_visible(&f.writer, "next", 2).await.unwrap();
    assert_eq!(read(&f.db(), "hint"), Some(1), "committed with the job that followed it");
    assert_eq!(f.metrics.snapshot(0).commits, before + 1, "in the same commit");
    // Past the bound a deferred job is queued, and wakes the writer for all of them, in order.
    for i in 0..MAX_DEFERRED as u64 {
        f.writer.defer(8, insert("many", i)).await.unwrap();
    }
    assert_eq!(read(&f.db(), "many"), None);
    f.writer.defer(8, insert("many", 999)).await.unwrap();
    until("the queued deferred job is committed", || read(&f.db(), "many") == Some(999)).await;
    // One still held at shutdown is written before the writer ends.
    f.writer.defer(8, insert("hint", 3)).await.unwrap();
    f.writer.shutdown();
    assert_eq!(read(&f.db(), "hint"), Some(3));
    assert!(matches!(f.writer.defer(8, insert("late", 1)).await, Err(StoreError::Closed)));
}
