//! Batching, isolation of failing jobs and failed commits, on an in-memory redb whose "disk"
//! can be made to fail.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::backends::InMemoryBackend;
use redb::{ReadableDatabase, StorageBackend, TableDefinition};
use tokio::sync::oneshot;

use super::*;

const T: TableDefinition<&str, u64> = TableDefinition::new("t");

/// An in-memory backend that reports a full disk while `full` is set.
#[derive(Debug)]
struct FlakyDisk {
    inner: InMemoryBackend,
    full: Arc<AtomicBool>,
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
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

struct Fixture {
    db: Arc<Database>,
    writer: Arc<Writer>,
    metrics: Arc<Metrics>,
    full: Arc<AtomicBool>,
}

fn fixture() -> Fixture {
    let full = Arc::new(AtomicBool::new(false));
    let backend = FlakyDisk { inner: InMemoryBackend::new(), full: full.clone() };
    let db = Arc::new(Database::builder().create_with_backend(backend).unwrap());
    let metrics = Arc::new(Metrics::new());
    let writer = Arc::new(Writer::start(db.clone(), metrics.clone()).unwrap());
    Fixture { db, writer, metrics, full }
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

/// Write `key = value` as one job.
async fn put(writer: &Writer, key: &'static str, value: u64) -> Result<(), StoreError> {
    writer
        .execute(8, move |txn: &WriteTransaction| {
            txn.open_table(T).map_err(clean)?.insert(key, value).map_err(dirty)?;
            Ok(())
        })
        .await
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
            if let Some(tx) = started_tx.take() {
                let _ = tx.send(());
            }
            let _ = wait.recv();
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
    assert_eq!(read(&f.db, "e"), Some(4));
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
    assert_eq!(read(&f.db, "before"), Some(1));
    assert_eq!(read(&f.db, "after"), Some(2));
    assert_eq!(read(&f.db, "half"), None);
    assert_eq!(read(&f.db, "panic"), None);
    let m = f.metrics.snapshot(0);
    assert_eq!(m.batch_retries, 2);
    assert_eq!(m.failed_ops, 2);
    assert_eq!(m.commits, 2);

    // The writer is still healthy.
    put(&f.writer, "later", 3).await.unwrap();
    assert_eq!(read(&f.db, "later"), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_every_waiter_and_acknowledges_nothing() {
    let f = fixture();
    put(&f.writer, "ok", 1).await.unwrap();

    let (release, held) = hold_writer(&f.writer).await;
    let mut tasks = Vec::new();
    for key in ["x", "y", "z"] {
        let w = f.writer.clone();
        tasks.push(tokio::spawn(async move { put(&w, key, 9).await }));
    }
    queued(&f.writer, 3).await;
    // The held job's commit and the next one both hit a full disk.
    f.full.store(true, Ordering::SeqCst);
    release.send(()).unwrap();
    let err = held.await.unwrap().unwrap_err();
    assert!(matches!(err, StoreError::DiskFull(_)), "{err:?}");
    for t in tasks {
        // redb refuses further writes after an I/O error until the database is reopened.
        let err = t.await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::DiskFull(_) | StoreError::Redb(_)), "{err:?}");
    }
    let m = f.metrics.snapshot(0);
    assert_eq!(m.failed_commits, 2);
    assert_eq!(m.failed_ops, 4);
    assert!(m.last_error.is_some());
    f.full.store(false, Ordering::SeqCst);
    assert_eq!(read(&f.db, "ok"), Some(1));
    assert_eq!(read(&f.db, "x"), None);
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
    assert_eq!(read(&f.db, "queued"), Some(5));
    assert!(matches!(put(&f.writer, "late", 1).await, Err(StoreError::Closed)));
    f.writer.shutdown();
}
