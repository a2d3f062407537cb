//! Full disks and failing disks: what the store does instead of failing Raft.
//!
//! openraft treats an error from log storage or the state machine as fatal: the group stops. A
//! full disk is an operational condition, not a reason to stop, so the store never reports one
//! to Raft. Instead:
//!
//! - the redb file sits on a [`WaitingFileBackend`]: a write (or file growth) that fails with
//!   ENOSPC or EDQUOT waits, with bounded backoff, and is retried in place until there is room.
//!   redb never sees the error, so it never marks the database as failed, and reads go on. The
//!   commit is just slow, and nothing of it is acknowledged before it is durable;
//! - a failed fsync (`sync_data`) is never retried and stops the store for good: after a failed
//!   fsync the kernel may have dropped the dirty pages while marking them clean, so a retry
//!   could report success for data that is not on disk (PostgreSQL's "fsyncgate"). The
//!   backend records the failure in [`DiskHealth`], the writer stops the store (see
//!   `crate::writer`), and a restart recovers from what is on disk;
//! - any other I/O error that reaches redb makes the writer reopen the database and run the
//!   same batch again (see `crate::writer`);
//! - snapshot files are saved with [`DiskHealth::retry_while_full`].
//!
//! Meanwhile [`DiskHealth`] says why writes are stalled, so the node refuses new client writes
//! ([`crate::Store::write_blocked`]). It also refuses them, before the disk is completely full,
//! while free space is below a reserve, so that entries Raft already accepted still fit.

use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};

use crate::error::{redb_error, StoreError};

/// Default free space (bytes) below which client writes are refused: room for the Raft entries
/// and snapshots already under way. Change it with [`crate::Store::set_free_space_reserve`].
pub const DEFAULT_FREE_SPACE_RESERVE: u64 = 64 * 1024 * 1024;

/// Free space below which the writer fsyncs every commit (see `crate::writer`). redb writes
/// out the pages of commits made without an fsync while holding locks that readers of those
/// pages take, so a write waiting there for space would hold reads up until space returns; a
/// durable commit writes its pages before readers can see them, and waits without holding
/// them. The margin keeps those waits on the durable path unless the disk fills very fast.
pub const RELAXED_COMMIT_MIN_FREE: u64 = 128 * 1024 * 1024;

/// First pause before retrying a write that failed for lack of space or with an I/O error.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between retries: space that comes back is used within this long.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a free-space measurement is reused: `statvfs` is cheap, but writes are many.
const FREE_SPACE_TTL: Duration = Duration::from_millis(200);

/// Doubling pauses from [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`].
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Self(FIRST_BACKOFF)
    }

    /// The pause to take now; the next one is twice as long, up to the cap.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        pause
    }
}

/// Free space on the data directory's file system against the reserve, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Free bytes (for unprivileged users), as last measured; `None` when the file system
    /// cannot be measured.
    pub free_bytes: Option<u64>,
    /// Free space below which client writes are refused (0: the check is off).
    pub reserve_bytes: u64,
}

/// A stalled state: why, and since when.
#[derive(Debug, Clone)]
struct Stall {
    detail: String,
    since: Instant,
}

/// Why a condition is set, for the log lines of its transitions.
#[derive(Debug, Clone, Copy)]
enum Condition {
    /// Writes wait for free space.
    Full,
    /// A commit failed with an I/O error; the writer reopens the database and retries.
    Failing,
}

/// The store's view of its disk: stalled writes, and free space against the reserve.
#[derive(Debug)]
pub(crate) struct DiskHealth {
    data_dir: PathBuf,
    /// Set while a write waits for space.
    full: Mutex<Option<Stall>>,
    /// Set while the writer retries a batch whose commit failed with an I/O error.
    failing: Mutex<Option<Stall>>,
    reserve: AtomicU64,
    /// Last measurement of free space, reused for [`FREE_SPACE_TTL`].
    free: Mutex<Option<(Instant, u64)>>,
    /// Whether free space was below the reserve at the last measurement (for logging changes).
    low: AtomicBool,
    /// Set at shutdown: waiting writes give up, so the writer can stop.
    stopping: AtomicBool,
    /// The first fsync that failed, described: the store must stop.
    sync_failed: Mutex<Option<String>>,
    /// Why the store stopped for good, once it did: every write is refused until a restart.
    stopped: Mutex<Option<String>>,
}

impl DiskHealth {
    pub(crate) fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            full: Mutex::new(None),
            failing: Mutex::new(None),
            reserve: AtomicU64::new(DEFAULT_FREE_SPACE_RESERVE),
            free: Mutex::new(None),
            low: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            sync_failed: Mutex::new(None),
            stopped: Mutex::new(None),
        }
    }

    /// An fsync of the database file failed: remembered (the first one), so the writer stops
    /// the store instead of retrying.
    pub(crate) fn sync_failed(&self, what: &str, err: &io::Error) {
        let mut slot = lock(&self.sync_failed);
        if slot.is_none() {
            tracing::error!(error = %err, file = what, "fsync failed: the store stops; restart the node to recover from what is on disk");
            *slot = Some(format!("fsync of {what} failed: {err}"));
        }
    }

    /// The first fsync failure, if one happened.
    pub(crate) fn sync_failure(&self) -> Option<String> {
        lock(&self.sync_failed).clone()
    }

    /// The store stopped for good (`detail` says why): writes are refused until a restart.
    pub(crate) fn set_stopped(&self, detail: String) {
        lock(&self.stopped).get_or_insert(detail);
    }

    /// Why new client writes must be refused right now, if they must.
    pub(crate) fn write_blocked(&self) -> Option<String> {
        let stalled = |slot: &Mutex<Option<Stall>>| {
            lock(slot).as_ref().map(|s| format!("{} (for {} s)", s.detail, s.since.elapsed().as_secs()))
        };
        lock(&self.stopped)
            .clone()
            .or_else(|| stalled(&self.full))
            .or_else(|| stalled(&self.failing))
            .or_else(|| self.below_reserve())
    }

    /// Whether commits may skip their fsync: there is well more than [`RELAXED_COMMIT_MIN_FREE`]
    /// (and the reserve) free, and no write is waiting or failing. `true` when free space
    /// cannot be measured.
    pub(crate) fn has_room_for_relaxed_commits(&self) -> bool {
        if lock(&self.full).is_some() || lock(&self.failing).is_some() {
            return false;
        }
        let floor = RELAXED_COMMIT_MIN_FREE.max(self.reserve.load(Ordering::Relaxed));
        self.free_bytes().is_none_or(|free| free >= floor)
    }

    /// Free space below the reserve, described; `None` when there is enough (or it cannot be
    /// measured: an unmeasurable file system must not stop writes).
    fn below_reserve(&self) -> Option<String> {
        let reserve = self.reserve.load(Ordering::Relaxed);
        let free = self.free_bytes()?;
        let low = free < reserve;
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::warn!(free, reserve, dir = %self.data_dir.display(), "free space below the reserve: client writes are refused");
            } else {
                tracing::warn!(free, reserve, dir = %self.data_dir.display(), "free space above the reserve again: client writes are accepted");
            }
        }
        low.then(|| {
            format!(
                "disk almost full: {free} bytes free on {}, below the reserve of {reserve} bytes",
                self.data_dir.display()
            )
        })
    }

    /// Free bytes on the data directory's file system, measured at most every [`FREE_SPACE_TTL`].
    fn free_bytes(&self) -> Option<u64> {
        let mut cached = lock(&self.free);
        if let Some((at, free)) = *cached {
            if at.elapsed() < FREE_SPACE_TTL {
                return Some(free);
            }
        }
        match free_bytes(&self.data_dir) {
            Ok(free) => {
                *cached = Some((Instant::now(), free));
                Some(free)
            }
            Err(e) => {
                tracing::debug!(error = %e, dir = %self.data_dir.display(), "cannot measure free space");
                None
            }
        }
    }

    /// Free space and the reserve, measured at most every [`FREE_SPACE_TTL`].
    pub(crate) fn space(&self) -> DiskSpace {
        DiskSpace { free_bytes: self.free_bytes(), reserve_bytes: self.reserve.load(Ordering::Relaxed) }
    }

    pub(crate) fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
        // Measure again at the next check, against the new reserve.
        *lock(&self.free) = None;
    }

    /// Make waiting writes give up (with their error) instead of waiting for space.
    pub(crate) fn stop_waiting(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// A write waits for space: record why (logged once, when the state begins).
    fn enter(&self, condition: Condition, detail: String) {
        let slot = self.slot(condition);
        let mut stall = lock(slot);
        match stall.as_mut() {
            Some(s) => s.detail = detail,
            None => {
                match condition {
                    Condition::Full => {
                        tracing::warn!(error = %detail, dir = %self.data_dir.display(), "disk full: store writes wait for free space, client writes are refused; nothing unwritten is acknowledged")
                    }
                    Condition::Failing => {
                        tracing::warn!(error = %detail, dir = %self.data_dir.display(), "store commit failed with an I/O error: nothing of it was acknowledged; reopening the database and retrying")
                    }
                }
                *stall = Some(Stall { detail, since: Instant::now() });
            }
        }
    }

    /// The condition is over (logged once, if it was set).
    fn leave(&self, condition: Condition) {
        let Some(stall) = lock(self.slot(condition)).take() else { return };
        let waited_ms = u64::try_from(stall.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        match condition {
            Condition::Full => tracing::warn!(waited_ms, "disk has room again: store writes resumed"),
            Condition::Failing => tracing::warn!(waited_ms, "store database usable again: writes resumed"),
        }
    }

    fn slot(&self, condition: Condition) -> &Mutex<Option<Stall>> {
        match condition {
            Condition::Full => &self.full,
            Condition::Failing => &self.failing,
        }
    }

    /// A commit failed with an I/O error and will be retried.
    pub(crate) fn commit_failing(&self, error: &StoreError) {
        self.enter(Condition::Failing, error.to_string());
    }

    /// A batch is done (committed, or failed for a reason other than the disk): the failing
    /// state, if any, is over.
    pub(crate) fn commit_succeeded(&self) {
        self.leave(Condition::Failing);
    }

    /// Run `op` until it does not fail for lack of space: between attempts, report the disk
    /// as full and wait with backoff. Gives up (returning the error) at shutdown.
    pub(crate) fn retry_while_full<T, E>(
        &self,
        what: &str,
        is_full: impl Fn(&E) -> bool,
        mut op: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
    {
        let mut backoff = Backoff::new();
        let mut waited = false;
        loop {
            match op() {
                Ok(value) => {
                    if waited {
                        self.leave(Condition::Full);
                    }
                    return Ok(value);
                }
                Err(e) if is_full(&e) && !self.is_stopping() => {
                    self.enter(Condition::Full, format!("disk full: {what}: {e}"));
                    waited = true;
                    std::thread::sleep(backoff.next_pause());
                }
                Err(e) => {
                    if waited {
                        self.leave(Condition::Full);
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// Lock `m`, reading through poisoning: every value behind these locks stays valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// ENOSPC and EDQUOT.
pub(crate) fn is_full(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// Free bytes for unprivileged users on the file system holding `dir`.
#[cfg(unix)]
fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and outlives the call; `stat` is writable memory of the
    // type statvfs fills in.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    // The field types are narrower than u64 on some targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Ok(blocks.saturating_mul(size))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> io::Result<u64> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "free space is only measured on unix"))
}

/// Opens the database (again): at start, and after redb refused further writes because of an
/// I/O error.
pub(crate) type Opener = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// An [`Opener`] of the redb file at `path`, on a [`WaitingFileBackend`], with a page cache of
/// `cache_bytes` (redb's default when `None`).
pub(crate) fn file_opener(path: PathBuf, health: Arc<DiskHealth>, cache_bytes: Option<usize>) -> Opener {
    Box::new(move || open_file(&path, &health, cache_bytes))
}

fn open_file(path: &Path, health: &Arc<DiskHealth>, cache_bytes: Option<usize>) -> Result<Database, StoreError> {
    // The options redb's own `Builder::create` uses.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
    let inner = FileBackend::new(file).map_err(|e| in_context(path, redb_error(e)))?;
    let waits = Arc::new(AtomicBool::new(false));
    let backend = WaitingFileBackend::new(inner, health.clone(), path.to_path_buf(), waits.clone());
    let mut builder = Database::builder();
    if let Some(bytes) = cache_bytes {
        builder.set_cache_size(bytes);
    }
    let db = builder.create_with_backend(backend).map_err(|e| in_context(path, redb_error(e)))?;
    // Only now: an open (the writer reopens while readers wait for it) fails at once on a full
    // disk, and is retried later, rather than hold everyone up.
    waits.store(true, Ordering::Release);
    Ok(db)
}

fn in_context(path: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Redb(msg) => StoreError::Redb(format!("opening {}: {msg}", path.display())),
        StoreError::AlreadyOpen(_) => StoreError::AlreadyOpen(path.display().to_string()),
        other => other,
    }
}

/// redb's file backend (or, in tests, one that injects faults), except that a write or a
/// growth of the file that fails for lack of space waits and retries instead of failing.
///
/// Retrying is safe: both are positional (the same bytes at the same offset, the same length),
/// and redb is blocked in the call meanwhile. A failed `sync_data` is NOT retried: after a
/// failed fsync the kernel may have dropped the dirty pages, so a second fsync could report
/// success for data that never reached the disk. The failure is recorded in [`DiskHealth`]
/// before the error reaches redb, and the writer stops the store rather than reopen the
/// database and rewrite the batch.
#[derive(Debug)]
pub(crate) struct WaitingFileBackend<B = FileBackend> {
    inner: B,
    health: Arc<DiskHealth>,
    path: PathBuf,
    /// Whether writes wait for room yet (not while the database is being opened).
    waits: Arc<AtomicBool>,
}

impl<B: StorageBackend> WaitingFileBackend<B> {
    /// Wrap `inner`, the backend of the file at `path`; writes wait for room once `waits` is set.
    pub(crate) fn new(inner: B, health: Arc<DiskHealth>, path: PathBuf, waits: Arc<AtomicBool>) -> Self {
        Self { inner, health, path, waits }
    }

    fn wait_for_room(&self, what: &str, mut op: impl FnMut() -> io::Result<()>) -> io::Result<()> {
        if !self.waits.load(Ordering::Acquire) {
            return op();
        }
        let what = format!("{what} {}", self.path.display());
        self.health.retry_while_full(&what, is_full, op)
    }
}

impl<B: StorageBackend> StorageBackend for WaitingFileBackend<B> {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.wait_for_room("growing", || self.inner.set_len(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data().inspect_err(|e| self.health.sync_failed(&self.path.display().to_string(), e))
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.wait_for_room("writing", || self.inner.write(offset, data))
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new();
        let pauses: Vec<u64> = (0..8).map(|_| b.next_pause().as_millis() as u64).collect();
        assert_eq!(pauses, vec![50, 100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn retry_while_full_reports_the_stall_and_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let health = DiskHealth::new(dir.path());
        health.set_reserve(0);
        let mut failures = 2;
        let result = health.retry_while_full("writing x", is_full, || {
            if failures > 0 {
                failures -= 1;
                // While the write waits, the store reports why.
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            assert!(health.write_blocked().is_some_and(|d| d.contains("writing x")), "{:?}", health.write_blocked());
            Ok(7)
        });
        assert_eq!(result.unwrap(), 7);
        assert_eq!(health.write_blocked(), None);
    }

    #[test]
    fn other_errors_and_shutdown_do_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let health = DiskHealth::new(dir.path());
        let r: io::Result<()> = health.retry_while_full("x", is_full, || Err(io::Error::other("broken")));
        assert!(r.is_err());
        health.stop_waiting();
        let r: io::Result<()> = health.retry_while_full("x", is_full, || Err(io::ErrorKind::StorageFull.into()));
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn free_space_below_the_reserve_blocks_writes() {
        let dir = tempfile::tempdir().unwrap();
        let health = DiskHealth::new(dir.path());
        health.set_reserve(0);
        assert_eq!(health.write_blocked(), None);
        health.set_reserve(u64::MAX);
        let blocked = health.write_blocked().expect("no disk has u64::MAX bytes free");
        assert!(blocked.contains("below the reserve"), "{blocked}");
    }
}
