//! [`Store`]: the node's one redb file, its writer thread and its snapshot directory.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_core::types::LogId;
use flotilla_core::{Namespace, StateMachine, TypeConfig};
use openraft::alias::LogIdOf;
use redb::{ReadTransaction, ReadableDatabase, ReadableTableMetadata, TableHandle, WriteTransaction};
use serde::de::DeserializeOwned;

use crate::applied_feed::{AppliedFeed, AppliedReceiver, Feeds, SubscribeError, SubscriptionCounts};
use crate::at_rest::AtRestCipher;
use crate::codec::{decode_sealed, Codec};
use crate::disk::DiskHealth;
use crate::error::{redb_error, StoreError};
use crate::format::{LogLayout, FORMAT_VERSION_WAL};
use crate::log_store::LogStore;
use crate::metrics::{Metrics, StoreMetrics};
use crate::namespace_ids::NamespaceIds;
use crate::snapshot_file::SnapshotFiles;
use crate::snapshot_sink::SnapshotSink;
use crate::state_machine_store::StateMachineStore;
use crate::tables::{open_read, NsTables, META_APPLIED, META_INSTALLING, META_MEMBERSHIP, META_PURGED, META_VOTE};
use crate::view::NamespaceView;
use crate::wal::WriteAheadLog;
use crate::wal_reader::WalReader;
use crate::writer::{DbSlot, Writer};
use crate::writer_wal::WalSide;
use crate::StoreConfig;

/// Name of the redb file inside the data directory.
pub const DB_FILE: &str = "flotilla.redb";

/// Name of the write-ahead log's directory inside the data directory ([`LogKind::Wal`]).
pub const WAL_DIR: &str = "wal";

/// Bytes of a write-ahead log segment unless [`StoreOptions::wal_segment_bytes`] says otherwise.
pub const DEFAULT_WAL_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Where a store keeps its namespaces' Raft logs. Chosen when the store is created; a store of
/// tables opened with [`LogKind::Wal`] is converted (once, crash-safely:
/// `crates/flotilla-store/DESIGN-log.md`, "Format and upgrade"), and a write-ahead log store
/// stays one whatever [`StoreOptions::log`] says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogKind {
    /// One redb table per namespace (`log/<ns>`), made durable by a redb commit (format 1).
    Tables,
    /// The node's write-ahead log (`crates/flotilla-store/DESIGN-log.md`): segment files in
    /// [`WAL_DIR`], one `fdatasync` per group commit (format 2). The default: measured faster
    /// and lighter (docs/BENCHMARKS.md).
    #[default]
    Wal,
}

/// What a store whose logs are in the write-ahead log shares with its log stores.
#[derive(Debug, Clone)]
pub(crate) struct WalHandles {
    pub(crate) reader: WalReader,
    pub(crate) ids: NamespaceIds,
}

/// How [`Store::open_with`] opens a store. `Default` is what [`Store::open`] uses.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Encrypt at rest with this cipher (see [`crate::at_rest`]); `None` keeps a plaintext
    /// store. A store sealed once can only be opened with a cipher holding its keys.
    pub at_rest: Option<Arc<AtRestCipher>>,
    /// Bytes of redb's page cache (which keeps pages read and written, up to this size);
    /// `None` keeps redb's default of 1 GiB.
    pub cache_bytes: Option<usize>,
    /// Where a new store keeps its Raft logs (an existing one keeps its own layout).
    pub log: LogKind,
    /// Bytes of a write-ahead log segment (at least 64 KiB, a multiple of 4 KiB); `None`:
    /// [`DEFAULT_WAL_SEGMENT_BYTES`].
    pub wal_segment_bytes: Option<u64>,
}

/// The durable storage of one node: every namespace's Raft log, vote and state machine in one
/// redb file, written by one group-commit writer thread.
///
/// Create it once with [`Store::open`] and share the `Arc`; hand each Raft group a
/// [`Store::log_store`] and a [`Store::state_machine`]. Reads ([`Store::view`], log reads) use redb read transactions (MVCC) and never wait for the writer.
pub struct Store {
    data_dir: PathBuf,
    /// The database; taken out by [`Store::shutdown`] so the file is closed (and its lock
    /// released) even while handles to the store are still alive.
    db: DbSlot,
    pub(crate) writer: Writer,
    /// Stalled writes and free space, for write admission (see [`crate::disk`]).
    pub(crate) disk: Arc<DiskHealth>,
    metrics: Arc<Metrics>,
    pub(crate) snapshots: SnapshotFiles,
    /// Protects log entries, kv values and dedup records (sealed when encrypted at rest).
    pub(crate) codec: Codec,
    /// Serialises saving the current snapshot of a namespace (builds and installs may race).
    snapshot_locks: Mutex<HashMap<Namespace, Arc<tokio::sync::Mutex<()>>>>,
    /// Makes snapshot ids unique; seeded with the open time so they stay unique across restarts.
    snapshot_counter: AtomicU64,
    /// Subscribers of each namespace's applied entries (see [`Store::subscribe_applied`]).
    feeds: Feeds,
    /// State machine handles and snapshot builders alive (see `in_use.rs`).
    pub(crate) in_use: Arc<std::sync::atomic::AtomicUsize>,
    /// The write-ahead log's index and namespace ids, when the logs are there.
    pub(crate) wal: Option<WalHandles>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("data_dir", &self.data_dir).finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the store in `data_dir`: creates the directory, opens or creates
    /// `flotilla.redb` and starts the writer thread. A plaintext store; see
    /// [`Store::open_with`].
    pub fn open(data_dir: &Path) -> Result<Arc<Store>, StoreError> {
        Self::open_with(data_dir, StoreOptions::default())
    }

    /// [`Store::open`] with `options`. With a cipher, a fresh store is sealed from the start, a
    /// plaintext one is sealed in place (and compacted) before this returns, and a sealed one
    /// must be opened with every key it is sealed under ([`StoreError::AtRestKeyMissing`],
    /// [`StoreError::AtRestWrongKey`]); without one, a sealed store is refused with
    /// [`StoreError::AtRestRequired`]. A store in a format this build does not read is refused
    /// before anything is written to it ([`StoreError::FormatTooNew`],
    /// [`StoreError::FormatTooOld`]; see [`FORMAT_VERSION`](crate::FORMAT_VERSION)).
    pub fn open_with(data_dir: &Path, options: StoreOptions) -> Result<Arc<Store>, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io(format!("creating data directory {}", data_dir.display()), e))?;
        let path = data_dir.join(DB_FILE);
        let disk = Arc::new(DiskHealth::new(data_dir));
        let reopen = crate::disk::file_opener(path.clone(), disk.clone(), options.cache_bytes);
        let mut db = reopen()?;
        let wanted = match options.log {
            LogKind::Tables => LogLayout::Tables,
            LogKind::Wal => LogLayout::Wal,
        };
        // First: a file in a format this build cannot read is refused before anything writes to it.
        let layout = match crate::format::check_or_stamp(&db, wanted)? {
            LogLayout::Tables if wanted == LogLayout::Wal => {
                let segment_bytes = wal_segment_bytes(options.wal_segment_bytes)?;
                let converted = crate::wal_convert::convert_to_wal(&db, data_dir, segment_bytes, &disk)?;
                tracing::warn!(
                    namespaces = converted.namespaces,
                    entries = converted.entries,
                    "converted the store's Raft logs from tables to the write-ahead log (format {FORMAT_VERSION_WAL})"
                );
                LogLayout::Wal
            }
            LogLayout::Tables => {
                crate::wal_convert::remove_unfinished(data_dir)?;
                LogLayout::Tables
            }
            LogLayout::Wal => LogLayout::Wal,
        };
        // The write-ahead log opens without a key (it never decodes an entry), so that
        // sealing a plaintext store in place can seal its entries too.
        let mut wal_side = match layout {
            LogLayout::Wal => Some(open_wal(&db, data_dir, options.wal_segment_bytes, &disk)?),
            LogLayout::Tables => None,
        };
        let codec = crate::sealing::prepare(&mut db, data_dir, options.at_rest, wal_side.as_mut())?;
        let snapshots = SnapshotFiles::new(data_dir, codec.clone());
        snapshots.remove_stale()?;
        for ns in snapshots.namespaces()? {
            // A file that cannot be converted stays as it is: reading it reports why.
            if let Err(e) = snapshots.upgrade(&ns) {
                tracing::warn!(namespace = %ns, error = %e, "cannot convert a snapshot file to sealed segments");
            }
        }
        let wal = wal_side.as_ref().map(|side| WalHandles { reader: side.log.reader(), ids: side.ids.clone() });
        let db: DbSlot = Arc::new(RwLock::new(Some(Arc::new(db))));
        let metrics = Arc::new(Metrics::new());
        let writer = Writer::start(db.clone(), reopen, metrics.clone(), disk.clone(), wal_side)?;
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        tracing::info!(path = %path.display(), "store opened");
        Ok(Arc::new(Store {
            data_dir: data_dir.to_path_buf(),
            db,
            writer,
            disk,
            metrics,
            snapshots,
            codec,
            snapshot_locks: Mutex::new(HashMap::new()),
            snapshot_counter: AtomicU64::new(seed),
            feeds: Feeds::default(),
            in_use: Default::default(),
            wal,
        }))
    }

    /// The data directory this store lives in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A new [`SnapshotSink`] receiving a snapshot of `ns` into a temporary file under the data
    /// directory (sealed at rest in an encrypted store). Blocking I/O.
    pub fn snapshot_sink(&self, ns: &Namespace) -> Result<SnapshotSink, StoreError> {
        self.check_open()?;
        self.snapshots.create_incoming(ns).map(SnapshotSink::new)
    }

    /// The Raft log storage of namespace `ns`, for openraft.
    pub fn log_store(self: &Arc<Self>, ns: &Namespace) -> Result<LogStore, StoreError> {
        self.typed_log_store::<TypeConfig>(ns)
    }

    /// [`Store::log_store`] for another type configuration with the same application data
    /// (used by tests that need integer node ids).
    pub fn typed_log_store<C: StoreConfig>(self: &Arc<Self>, ns: &Namespace) -> Result<LogStore<C>, StoreError> {
        self.check_open()?;
        Ok(LogStore::new(self.clone(), NsTables::new(ns)))
    }

    /// The Raft state machine of namespace `ns`, applying commands with `sm`.
    pub fn state_machine(
        self: &Arc<Self>,
        ns: &Namespace,
        sm: Arc<dyn StateMachine>,
    ) -> Result<StateMachineStore, StoreError> {
        self.typed_state_machine::<TypeConfig>(ns, sm)
    }

    /// [`Store::state_machine`] for another type configuration with the same application data
    /// (used by tests that need integer node ids).
    pub fn typed_state_machine<C: StoreConfig>(
        self: &Arc<Self>,
        ns: &Namespace,
        sm: Arc<dyn StateMachine>,
    ) -> Result<StateMachineStore<C>, StoreError> {
        self.check_open()?;
        Ok(StateMachineStore::new(self.clone(), NsTables::new(ns), sm))
    }

    /// Whether this node was ever part of `ns`'s group: a vote, a log entry (present or purged),
    /// an applied entry or an applied membership is stored. A node with state must never found
    /// the group again after a restart.
    pub fn has_state(&self, ns: &Namespace) -> Result<bool, StoreError> {
        self.has_any(ns, &[META_VOTE, META_PURGED, META_APPLIED, META_MEMBERSHIP])
    }

    /// Whether `ns` has log state: a log entry (present or purged), an applied entry or an
    /// applied membership. A node that only voted in the group's elections has state
    /// ([`Store::has_state`]) but no log state: its Raft metrics never show a last log index.
    pub fn has_log_state(&self, ns: &Namespace) -> Result<bool, StoreError> {
        self.has_any(ns, &[META_PURGED, META_APPLIED, META_MEMBERSHIP])
    }

    /// Whether any of the meta `keys` is stored for `ns`, or its log holds an entry.
    fn has_any(&self, ns: &Namespace, keys: &[&str]) -> Result<bool, StoreError> {
        let tables = NsTables::new(ns);
        let txn = self.read_txn()?;
        if let Some(meta) = open_read(&txn, tables.meta())? {
            for key in keys.iter().copied() {
                if meta.get(key).map_err(redb_error)?.is_some() {
                    return Ok(true);
                }
            }
        }
        if let Some(wal) = &self.wal {
            let id = wal.ids.get(ns);
            return Ok(id.is_some_and(|id| wal.reader.bounds(id).is_some()));
        }
        if let Some(log) = open_read(&txn, tables.log())? {
            if !log.is_empty().map_err(redb_error)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// In a store whose logs are in the write-ahead log: the index of `ns`'s last entry there,
    /// else of its purged id, if either exists.
    pub(crate) fn wal_last_index(&self, ns: &Namespace) -> Result<Option<u64>, StoreError> {
        let Some(wal) = &self.wal else { return Ok(None) };
        if let Some((_, last)) = wal.ids.get(ns).and_then(|id| wal.reader.bounds(id)) {
            return Ok(Some(last));
        }
        let txn = self.read_txn()?;
        crate::tables::read_purged_index(&txn, &NsTables::new(ns))
    }

    /// Whether `ns`'s state machine holds client data: any key, or any remembered write. A
    /// cluster whose members all answer `false` never acknowledged a write that is still
    /// visible, so it can be dissolved into another without losing one.
    pub fn holds_data(&self, ns: &Namespace) -> Result<bool, StoreError> {
        let tables = NsTables::new(ns);
        let txn = self.read_txn()?;
        if let Some(kv) = open_read(&txn, tables.kv())? {
            if !kv.is_empty().map_err(redb_error)? {
                return Ok(true);
            }
        }
        if let Some(dedup) = open_read(&txn, tables.dedup())? {
            if !dedup.is_empty().map_err(redb_error)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Delete every table and the snapshot of `ns`, durably: the namespace is as if this node
    /// had never served it. The namespace's Raft group must be stopped first. Used when a
    /// cluster that never acknowledged a write dissolves into another one.
    pub async fn wipe_namespace(&self, ns: &Namespace) -> Result<(), StoreError> {
        let tables = NsTables::new(ns);
        let in_wal = self.wal.is_some();
        let name = ns.clone();
        self.writer
            .execute(0, move |txn: &WriteTransaction| {
                if in_wal {
                    // In the same commit as the tables: the log's records become dead with them.
                    NamespaceIds::unrecord(txn, &name).map_err(crate::writer::dirty)?;
                }
                txn.delete_table(tables.log()).map_err(crate::writer::dirty)?;
                txn.delete_table(tables.meta()).map_err(crate::writer::dirty)?;
                txn.delete_table(tables.kv()).map_err(crate::writer::dirty)?;
                txn.delete_table(tables.dedup()).map_err(crate::writer::dirty)?;
                txn.delete_table(tables.dedup_order()).map_err(crate::writer::dirty)?;
                Ok(())
            })
            .await?;
        if self.wal.is_some() {
            self.writer.write_log(ns, crate::writer_wal::WalOp::Forget, crate::writer::Wait::Visible, None).await?;
        }
        self.feeds.get(ns).reset();
        self.snapshots.remove_all(ns)
    }

    /// The namespaces this store holds anything of: a table or a snapshot directory. Used at
    /// start to find the leftovers of namespaces the node no longer serves.
    pub fn stored_namespaces(&self) -> Result<BTreeSet<Namespace>, StoreError> {
        let txn = self.read_txn()?;
        let mut found = BTreeSet::new();
        for table in txn.list_tables().map_err(redb_error)? {
            let name = table.name();
            if let Some(ns) = crate::tables::namespace_of_table(name) {
                found.insert(ns);
            }
        }
        found.extend(self.snapshots.namespaces()?);
        Ok(found)
    }

    /// A view of `ns`'s state machine table as of the last commit, for reads (the state
    /// machine's own read functions run on it, e.g. `flotilla_core::kv::range`). Refused with
    /// [`StoreError::Installing`] while a snapshot is being loaded into `ns`.
    pub fn view(&self, ns: &Namespace) -> Result<NamespaceView, StoreError> {
        let tables = NsTables::new(ns);
        let txn = self.read_txn()?;
        refuse_while_installing(&txn, &tables)?;
        NamespaceView::new(txn, tables, self.codec.clone())
    }

    /// The current value of `key` in `ns`, a namespace that runs the built-in KV state
    /// machine (`flotilla_core::kv`): a shortcut for tools and tests.
    pub fn kv_get(&self, ns: &Namespace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let view = self.view(ns)?;
        flotilla_core::kv::read::value(&view, key).map_err(|e| StoreError::from_io("reading a namespace's state", e))
    }

    /// Up to `limit` current keys of `ns` (built-in KV state machine) that start with
    /// `prefix`, in byte order: a shortcut for tools and tests.
    pub fn kv_keys(&self, ns: &Namespace, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        use flotilla_core::kv::{range, RangeRequest};
        let view = self.view(ns)?;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        while keys.len() < limit {
            let left = u64::try_from(limit - keys.len()).unwrap_or(u64::MAX);
            let request = RangeRequest {
                after: keys.last().cloned(),
                limit: left,
                keys_only: true,
                ..RangeRequest::prefix(prefix)
            };
            let page = range(&view, &request)
                .map_err(|e| StoreError::from_io("reading a namespace's state", e))?
                .map_err(|refusal| StoreError::Invalid(refusal.to_string()))?;
            keys.extend(page.kvs.into_iter().map(|kv| kv.key));
            if !page.more {
                break;
            }
        }
        Ok(keys)
    }

    /// The last log id applied to `ns`'s state machine.
    pub fn applied(&self, ns: &Namespace) -> Result<Option<LogId>, StoreError> {
        let tables = NsTables::new(ns);
        let txn = self.read_txn()?;
        read_meta::<LogIdOf<TypeConfig>>(&txn, &tables, META_APPLIED)
    }

    /// A copy of the writer's counters.
    pub fn metrics(&self) -> StoreMetrics {
        self.metrics.snapshot(self.writer.queue_depth())
    }

    /// Why new client writes must be refused right now, or `None` when they may go ahead:
    /// store writes are waiting for disk space, or the writer is retrying a commit that failed
    /// with an I/O error, or free space is below the reserve
    /// ([`Store::set_free_space_reserve`]). Raft's own writes are never refused; they wait.
    /// Cheap enough to call for every write (free space is measured at most every 200 ms).
    pub fn write_blocked(&self) -> Option<String> {
        self.disk.write_blocked()
    }

    /// Free space on the data directory's file system and the reserve below which client
    /// writes are refused (measured at most every 200 ms, like [`Store::write_blocked`]).
    pub fn disk_space(&self) -> crate::DiskSpace {
        self.disk.space()
    }

    /// Refuse client writes while less than `bytes` are free on the data directory's file
    /// system (default [`crate::DEFAULT_FREE_SPACE_RESERVE`]; 0 turns the check off).
    pub fn set_free_space_reserve(&self, bytes: u64) {
        self.disk.set_reserve(bytes);
    }

    /// Refuse new writes, commit everything already queued, stop the writer thread and close
    /// the redb file, so the same directory can be opened again at once (even in this process,
    /// while handles to this store are still alive). Reads fail with [`StoreError::Closed`]
    /// afterwards. Idempotent; also run when the last handle is dropped.
    pub fn shutdown(&self) {
        self.shutdown_now();
    }

    /// [`Store::shutdown`] once every state machine handle and snapshot builder of this store
    /// is gone (openraft's state machine workers drain their queued applies after the Raft
    /// groups stop), waiting at most `within`; after that, it closes anyway (the late applies
    /// then fail and are applied again at the next start). Returns whether none was left.
    pub async fn shutdown_when_unused(&self, within: std::time::Duration) -> bool {
        let drained = crate::in_use::wait_unused(&self.in_use, within).await;
        if !drained {
            tracing::warn!(
                handles = self.in_use.load(std::sync::atomic::Ordering::Acquire),
                "state machines still busy at shutdown: closing the store under them"
            );
        }
        self.shutdown_now();
        drained
    }

    fn shutdown_now(&self) {
        self.writer.shutdown();
        self.feeds.close_all();
        let db = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(db) = db {
            // The writer thread has dropped its handle; this is normally the last one, and
            // dropping it closes the file.
            drop(db);
            tracing::info!(path = %self.data_dir.join(DB_FILE).display(), "store closed");
        }
    }

    pub(crate) fn check_open(&self) -> Result<(), StoreError> {
        if self.writer.is_closed() {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// A read transaction: a consistent view of the last commit.
    pub(crate) fn read_txn(&self) -> Result<ReadTransaction, StoreError> {
        let db = self.db.read().unwrap_or_else(|p| p.into_inner()).clone();
        // Not open while running: the writer could not reopen it yet after an I/O error.
        let db = db.ok_or_else(|| {
            if self.writer.is_closed() {
                StoreError::Closed
            } else {
                StoreError::io("reading", std::io::Error::other("the database is being reopened after an I/O error"))
            }
        })?;
        db.begin_read().map_err(redb_error)
    }

    /// Subscribe to the normal entries applied to `ns` on this node after its current applied
    /// index ([`AppliedReceiver::start_index`]), bounded and never slowing the apply path (see
    /// [`AppliedReceiver`]). Refused beyond [`MAX_SUBSCRIBERS`](crate::MAX_SUBSCRIBERS) per
    /// namespace.
    pub fn subscribe_applied(&self, ns: &Namespace) -> Result<AppliedReceiver, SubscribeError> {
        self.check_open()?;
        self.feeds.get(ns).subscribe(ns, || Ok(self.applied(ns)?.map_or(0, |l| l.index)))
    }

    /// How many subscriptions are registered, and how many fell behind since the store opened.
    pub fn subscription_counts(&self) -> SubscriptionCounts {
        self.feeds.counts()
    }

    /// The subscribers of `ns`'s applied entries.
    pub(crate) fn applied_feed(&self, ns: &Namespace) -> Arc<AppliedFeed> {
        self.feeds.get(ns)
    }

    /// The lock serialising snapshot-file replacement for `ns`.
    pub(crate) fn snapshot_lock(&self, ns: &Namespace) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.snapshot_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(ns.clone()).or_default().clone()
    }

    /// A unique snapshot id for a snapshot ending at `last`: `<leader>-<index>-<counter>`.
    pub(crate) fn next_snapshot_id<C: StoreConfig>(&self, last: &Option<LogIdOf<C>>) -> String {
        let n = self.snapshot_counter.fetch_add(1, Ordering::Relaxed);
        match last {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("none-0-{n}"),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Open the write-ahead log of a store in `data_dir` whose logs are there, and bring its index
/// in line with redb: namespaces whose id was removed (wiped) are forgotten, and every
/// namespace's purge, which redb holds durably, is applied.
fn open_wal(
    db: &redb::Database,
    data_dir: &Path,
    segment_bytes: Option<u64>,
    disk: &Arc<DiskHealth>,
) -> Result<WalSide, StoreError> {
    let segment_bytes = wal_segment_bytes(segment_bytes)?;
    let dir = data_dir.join(WAL_DIR);
    let mut log = WriteAheadLog::open(&dir, segment_bytes).map_err(|e| wal_error(&dir, e))?;
    log.wait_for_space(disk.clone());
    let txn = db.begin_read().map_err(redb_error)?;
    let ids = NamespaceIds::load(&txn)?;
    for id in log.namespace_ids() {
        if !ids.in_use(id) {
            log.forget(id);
        }
    }
    for (ns, id) in ids.all() {
        if let Some(purged) = crate::tables::read_purged_index(&txn, &NsTables::new(&ns))? {
            log.purge_index(id, purged).map_err(|e| wal_error(&dir, e))?;
        }
    }
    // Segments a crash kept from being recycled go now.
    log.copy_forward().map_err(|e| wal_error(&dir, e))?;
    log.recycle().map_err(|e| wal_error(&dir, e))?;
    Ok(WalSide { log, ids, last_durable: std::time::Instant::now() })
}

/// The segment size asked for (or the default), checked.
fn wal_segment_bytes(asked: Option<u64>) -> Result<u64, StoreError> {
    let bytes = asked.unwrap_or(DEFAULT_WAL_SEGMENT_BYTES);
    if bytes < 64 * 1024 || !bytes.is_multiple_of(4096) {
        return Err(StoreError::Invalid(format!(
            "a write-ahead log segment must be a multiple of 4 KiB of at least 64 KiB, not {bytes} bytes"
        )));
    }
    Ok(bytes)
}

/// A write-ahead log error as a store error: damage is corruption, the rest I/O.
pub(crate) fn wal_error(dir: &Path, error: crate::wal::WalError) -> StoreError {
    match error {
        crate::wal::WalError::Io(e) => StoreError::io(format!("write-ahead log in {}", dir.display()), e),
        other => StoreError::corrupt(format!("write-ahead log in {}: {other}", dir.display())),
    }
}

/// Read and decode the meta value `key` of a namespace; absent reads as `None`.
/// A namespace whose tables hold a snapshot half loaded (see `crate::snapshot_install`) has a
/// state that never existed: it must not be read.
fn refuse_while_installing(txn: &ReadTransaction, tables: &NsTables) -> Result<(), StoreError> {
    let Some(meta) = open_read(txn, tables.meta())? else {
        return Ok(());
    };
    match meta.get(META_INSTALLING).map_err(redb_error)? {
        Some(_) => Err(StoreError::Installing(tables.ns().as_str().to_string())),
        None => Ok(()),
    }
}

pub(crate) fn read_meta<T: DeserializeOwned>(
    txn: &ReadTransaction,
    tables: &NsTables,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let Some(meta) = open_read(txn, tables.meta())? else {
        return Ok(None);
    };
    let Some(value) = meta.get(key).map_err(redb_error)? else {
        return Ok(None);
    };
    decode_sealed(value.value(), &|| tables.meta_what(key)).map(Some)
}
