//! [`LogStore`]: openraft's log storage of one namespace over the shared redb file.
//!
//! Writes go through the group-commit writer. `append` returns once its commit is visible, so
//! openraft can start replicating the entries, and calls the `IOFlushed` callback only after
//! the writer's next fsync: the entries count as this node's acknowledgement only once durable.
//! The vote, truncations and purges return only once durable; the committed log id is a hint
//! openraft can do without after a crash, so saving it neither waits nor costs a commit of its
//! own: it is deferred to the writer's next batch (see `Writer::defer`), which is the apply of
//! the same entries, and this process reads it back from memory until then. Openraft issues log writes
//! one at a time per group, and the writer groups the writes of all groups of the node into
//! shared commits.
//! Reads use redb read transactions and run concurrently with the writer. Entries are sealed
//! at rest (bound to their namespace and index) when the store is encrypted; the vote and the
//! other log ids stay plaintext (they hold no client data).
//!
//! In a store whose logs are in the write-ahead log ([`crate::LogKind::Wal`]), the entries,
//! truncations and purges go there instead of to the `log/<ns>` table (see
//! `crate::writer_wal`), and entries are read through its index ([`crate::wal_reader`]); the
//! vote, the committed id and the purged id stay in redb. A purge is first made durable in
//! redb, then written to the log: the segments it frees are deleted only after both.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use flotilla_core::{Namespace, TypeConfig};
use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use redb::{ReadableTable, WriteTransaction};

use crate::codec::{decode_sealed, encode_sealed};
use crate::error::{redb_error, StoreError};
use crate::store::WalHandles;
use crate::store::{read_meta, Store};
use crate::tables::{open_read, NsTables, META_COMMITTED, META_PURGED, META_PURGED_INDEX, META_VOTE};
use crate::wal_record::RecordKind;
use crate::writer::{clean, dirty, JobFailure, OnDurable, Wait};
use crate::writer_wal::{WalOp, WalWrite};
use crate::StoreConfig;

/// Soft cap on the bytes [`RaftLogReader::limited_get_log_entries`] returns at once (at least
/// one entry is always returned), so one replication message stays well inside a frame.
pub const LIMITED_READ_BYTES: usize = 4 * 1024 * 1024;

/// Raft log storage of one namespace; implements openraft's [`RaftLogStorage`] and is its own
/// [`RaftLogReader`]. Cheap to clone.
pub struct LogStore<C: StoreConfig = TypeConfig> {
    store: Arc<Store>,
    tables: Arc<NsTables>,
    /// The committed log id last saved through this store and its clones (`Some` once one was):
    /// its write is deferred, so a read in this process must not go to the table for it.
    committed: Arc<Mutex<Option<Option<LogIdOf<C>>>>>,
    _config: PhantomData<fn() -> C>,
}

impl<C: StoreConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            tables: self.tables.clone(),
            committed: self.committed.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: StoreConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("namespace", self.tables.ns()).finish_non_exhaustive()
    }
}

impl<C: StoreConfig> LogStore<C> {
    pub(crate) fn new(store: Arc<Store>, tables: NsTables) -> Self {
        Self { store, tables: Arc::new(tables), committed: Arc::default(), _config: PhantomData }
    }

    /// The namespace this log belongs to.
    pub fn namespace(&self) -> &Namespace {
        self.tables.ns()
    }

    /// Entries with an index in `range`, stopping once `max_bytes` of stored bytes have been
    /// read (after at least one entry). Every entry's checksum (or, at rest, its authentication
    /// tag) is verified.
    fn read_entries(&self, range: (Bound<u64>, Bound<u64>), max_bytes: usize) -> Result<Vec<C::Entry>, StoreError> {
        if range_is_empty(&range) {
            return Ok(Vec::new());
        }
        if let Some(wal) = self.wal() {
            // The segments stay readable after a shutdown; the store does not.
            self.store.check_open()?;
            return self.read_wal_entries(wal, range, max_bytes);
        }
        let txn = self.store.read_txn()?;
        let Some(log) = open_read(&txn, self.tables.log())? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in log.range(range).map_err(redb_error)? {
            let (key, value) = item.map_err(redb_error)?;
            let index = key.value();
            let raw = value.value();
            out.push(self.decode_entry(index, raw)?);
            bytes = bytes.saturating_add(raw.len());
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// The write-ahead log's handles, in a store whose logs are there.
    fn wal(&self) -> Option<&WalHandles> {
        self.store.wal.as_ref()
    }

    /// [`LogStore::read_entries`] from the write-ahead log.
    fn read_wal_entries(
        &self,
        wal: &WalHandles,
        range: (Bound<u64>, Bound<u64>),
        max_bytes: usize,
    ) -> Result<Vec<C::Entry>, StoreError> {
        let Some(id) = wal.ids.get(self.tables.ns()) else { return Ok(Vec::new()) };
        let Some((first, last)) = wal.reader.bounds(id) else { return Ok(Vec::new()) };
        let start = match range.0 {
            Bound::Included(s) => s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => first,
        }
        .max(first);
        let end = match range.1 {
            Bound::Included(e) => e,
            Bound::Excluded(e) => e.saturating_sub(1),
            Bound::Unbounded => last,
        }
        .min(last);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for index in start..=end {
            if start > end {
                break;
            }
            let raw = wal.reader.read(id, index).map_err(|e| StoreError::io(self.tables.log_what(index), e))?;
            // Purged or truncated since the bounds were read: the log no longer holds it.
            let Some(raw) = raw else { break };
            out.push(self.decode_entry(index, &raw)?);
            bytes = bytes.saturating_add(raw.len());
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    fn decode_entry(&self, index: u64, raw: &[u8]) -> Result<C::Entry, StoreError> {
        let what = || self.tables.log_what(index);
        let entry: C::Entry = self.store.codec.decode(&self.tables.log_context(index), raw, &what)?;
        if entry.index() != index {
            return Err(StoreError::corrupt(format!("{}: holds the entry of index {}", what(), entry.index())));
        }
        Ok(entry)
    }

    /// Store (or, with `None`, remove) the meta value `key`; return once `wait` holds.
    async fn put_meta(&self, key: &'static str, value: Option<Vec<u8>>, wait: Wait) -> Result<(), StoreError> {
        let cost = value.as_ref().map_or(0, Vec::len);
        self.store.writer.execute_as(wait, cost, meta_work(self.tables.clone(), key, value)).await
    }

    /// Save the committed log id in the writer's next batch, without waiting (see the module
    /// doc); reads in this process see it at once.
    async fn defer_committed(&self, committed: Option<LogIdOf<C>>) -> Result<(), StoreError> {
        let record = committed.as_ref().map(encode_sealed).transpose()?;
        let cost = record.as_ref().map_or(0, Vec::len);
        // openraft saves one at a time per group, so the cache and the writer see the same order.
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = Some(committed);
        self.store.writer.defer(cost, meta_work(self.tables.clone(), META_COMMITTED, record)).await
    }

    fn read_committed_now(&self) -> Result<Option<LogIdOf<C>>, StoreError> {
        if let Some(saved) = self.committed.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(saved);
        }
        self.read_meta(META_COMMITTED)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let txn = self.store.read_txn()?;
        read_meta(&txn, &self.tables, key)
    }

    /// Append `entries`; return once readers see them, and call `on_durable` once they are on
    /// disk (or with the error that kept them off it).
    async fn append_entries(&self, entries: Vec<C::Entry>, on_durable: OnDurable) -> Result<(), StoreError> {
        // Encode (and seal, at rest) on the caller's task, so the writer thread only copies bytes.
        let mut rows = Vec::with_capacity(entries.len());
        let mut cost = 0;
        for entry in &entries {
            match self.store.codec.encode(&self.tables.log_context(entry.index()), entry) {
                Ok(bytes) => {
                    cost += bytes.len();
                    rows.push((entry.index(), bytes));
                }
                Err(e) => {
                    on_durable(Err(e.clone()));
                    return Err(e);
                }
            }
        }
        if rows.is_empty() {
            on_durable(Ok(()));
            return Ok(());
        }
        if self.wal().is_some() {
            let writes =
                rows.into_iter().map(|(index, payload)| WalWrite { kind: RecordKind::Entry, index, payload }).collect();
            let op = WalOp::Append(writes);
            return self.store.writer.write_log(self.tables.ns(), op, Wait::Visible, Some(on_durable)).await;
        }
        let tables = self.tables.clone();
        let work = move |txn: &WriteTransaction| {
            let mut log = txn.open_table(tables.log()).map_err(clean)?;
            for (index, bytes) in &rows {
                log.insert(*index, bytes.as_slice()).map_err(dirty)?;
            }
            Ok(())
        };
        self.store.writer.execute_then_flush(cost, work, on_durable).await
    }

    async fn truncate(&self, after: Option<u64>) -> Result<(), StoreError> {
        if self.wal().is_some() {
            let since = match after {
                Some(index) => {
                    index.checked_add(1).ok_or_else(|| StoreError::Invalid("truncating after the last index".into()))?
                }
                None => 0,
            };
            // Truncating purged entries is a no-op in the tables; the log's records refuse it
            // (it would mean a damaged log), so a truncation of everything starts after them.
            let purged: Option<LogIdOf<C>> = self.read_meta(META_PURGED)?;
            let since = since.max(purged.map_or(0, |p| p.index.saturating_add(1)));
            let op = WalOp::Append(vec![WalWrite { kind: RecordKind::Truncate, index: since, payload: Vec::new() }]);
            return self.store.writer.write_log(self.tables.ns(), op, Wait::Durable, None).await;
        }
        let tables = self.tables.clone();
        self.store
            .writer
            .execute(0, move |txn: &WriteTransaction| {
                let mut log = txn.open_table(tables.log()).map_err(clean)?;
                let range = match after {
                    Some(index) => (Bound::Excluded(index), Bound::Unbounded),
                    None => (Bound::Unbounded, Bound::Unbounded),
                };
                log.retain_in::<u64, _>(range, |_, _| false).map_err(dirty)?;
                Ok(())
            })
            .await
    }

    async fn purge_upto(&self, log_id: LogIdOf<C>) -> Result<(), StoreError> {
        let tables = self.tables.clone();
        let record = encode_sealed(&log_id)?;
        let in_wal = self.wal().is_some();
        let index = log_id.index;
        self.store
            .writer
            .execute(0, move |txn: &WriteTransaction| {
                let mut meta = txn.open_table(tables.meta()).map_err(clean)?;
                let current: Option<LogIdOf<C>> = match meta.get(META_PURGED).map_err(clean)? {
                    Some(v) => {
                        Some(decode_sealed(v.value(), &|| tables.meta_what(META_PURGED)).map_err(JobFailure::clean)?)
                    }
                    None => None,
                };
                // Purging never moves backwards: an older request is already satisfied.
                if current.as_ref().is_some_and(|c| c.index >= log_id.index) {
                    return Ok(());
                }
                meta.insert(META_PURGED, record.as_slice()).map_err(dirty)?;
                if in_wal {
                    meta.insert(META_PURGED_INDEX, log_id.index.to_le_bytes().as_slice()).map_err(dirty)?;
                    return Ok(());
                }
                let mut log = txn.open_table(tables.log()).map_err(dirty)?;
                log.retain_in::<u64, _>(..=log_id.index, |_, _| false).map_err(dirty)?;
                Ok(())
            })
            .await?;
        if in_wal {
            // Durable in redb above; the record lets the log recycle the segments it frees.
            let op = WalOp::Append(vec![WalWrite { kind: RecordKind::Purge, index, payload: Vec::new() }]);
            self.store.writer.write_log(self.tables.ns(), op, Wait::Visible, None).await?;
        }
        Ok(())
    }

    fn log_state(&self) -> Result<LogState<C>, StoreError> {
        let txn = self.store.read_txn()?;
        let purged: Option<LogIdOf<C>> = read_meta(&txn, &self.tables, META_PURGED)?;
        if let Some(wal) = self.wal() {
            let last = self.last_wal_entry(wal)?.map(|entry| entry.log_id());
            return Ok(LogState { last_log_id: last.or_else(|| purged.clone()), last_purged_log_id: purged });
        }
        let last = match open_read(&txn, self.tables.log())? {
            Some(log) => match log.last().map_err(redb_error)? {
                Some((k, v)) => Some(self.decode_entry(k.value(), v.value())?.log_id()),
                None => None,
            },
            None => None,
        };
        Ok(LogState { last_log_id: last.or_else(|| purged.clone()), last_purged_log_id: purged })
    }
}

impl<C: StoreConfig> LogStore<C> {
    /// The last entry of the namespace's log in the write-ahead log, if it retains any.
    fn last_wal_entry(&self, wal: &WalHandles) -> Result<Option<C::Entry>, StoreError> {
        let Some(id) = wal.ids.get(self.tables.ns()) else { return Ok(None) };
        let Some((_, last)) = wal.reader.bounds(id) else { return Ok(None) };
        let raw = wal.reader.read(id, last).map_err(|e| StoreError::io(self.tables.log_what(last), e))?;
        raw.map(|raw| self.decode_entry(last, &raw)).transpose()
    }
}

/// The writer job storing (or, with `None`, removing) the meta value `key` of `tables`.
fn meta_work(
    tables: Arc<NsTables>,
    key: &'static str,
    value: Option<Vec<u8>>,
) -> impl FnMut(&WriteTransaction) -> Result<(), JobFailure> + Send + 'static {
    move |txn: &WriteTransaction| {
        let mut meta = txn.open_table(tables.meta()).map_err(clean)?;
        match &value {
            Some(v) => meta.insert(key, v.as_slice()).map_err(dirty)?,
            None => meta.remove(key).map_err(dirty)?,
        };
        Ok(())
    }
}

/// Whether `range` can contain no index (also keeps inverted ranges away from redb).
fn range_is_empty(range: &(Bound<u64>, Bound<u64>)) -> bool {
    let start = match range.0 {
        Bound::Included(s) => s,
        Bound::Excluded(s) => match s.checked_add(1) {
            Some(s) => s,
            None => return true,
        },
        Bound::Unbounded => 0,
    };
    match range.1 {
        Bound::Included(e) => start > e,
        Bound::Excluded(e) => start >= e,
        Bound::Unbounded => false,
    }
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl<C: StoreConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        Ok(self.read_entries(bounds(&range), usize::MAX)?)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(self.read_meta(META_VOTE)?)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<C::Entry>, io::Error> {
        Ok(self.read_entries((Bound::Included(start), Bound::Excluded(end)), LIMITED_READ_BYTES)?)
    }
}

impl<C: StoreConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        Ok(self.log_state()?)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let record = encode_sealed(vote)?;
        // Durable before openraft acts on it: a vote forgotten in a crash could be cast twice.
        Ok(self.put_meta(META_VOTE, Some(record), Wait::Durable).await?)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        // A hint: after a crash openraft learns the committed index from the leader again. It
        // used to cost every write on every node a commit and a round trip to the writer that
        // held up openraft's core; now it rides with the apply that follows.
        Ok(self.defer_committed(committed).await?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.read_committed_now()?)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        let ns = self.tables.ns().clone();
        let on_durable: OnDurable = Box::new(move |result: Result<(), StoreError>| {
            if let Err(e) = &result {
                tracing::error!(namespace = %ns, error = %e, "flushing appended log entries failed");
            }
            callback.io_completed(result.map_err(|e| e.to_io()));
        });
        self.append_entries(entries, on_durable).await.map_err(|e| {
            tracing::error!(namespace = %self.tables.ns(), error = %e, "appending to the log failed");
            e.to_io()
        })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        Ok(self.truncate(last_log_id.map(|l| l.index)).await?)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        Ok(self.purge_upto(log_id).await?)
    }
}
