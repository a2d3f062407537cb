//! Receives snapshots that arrive in chunks, appending them to a file on disk.
//!
//! One transfer per namespace: a follower installs at most one snapshot of a namespace at a
//! time, so a transfer that starts (offset 0) replaces any unfinished one of the same namespace,
//! whichever leader sent it (the old one is from a deposed leader or was given up by its
//! sender). Chunks must arrive in order.
//!
//! Each chunk is appended to the transfer's temporary file in the data directory (a
//! [`SnapshotSink`], sealed at rest in an encrypted store), so memory holds one chunk whatever
//! the snapshot's size; the last chunk turns the file into the [`SnapshotData`] openraft
//! installs. Disk use is bounded three ways, because the announced size comes from the network:
//! - a snapshot larger than [`InboxLimits::max_snapshot`] is refused at its first chunk;
//! - a file grows as data arrives, never past the announced size (more is refused), so a
//!   message that announces a huge snapshot costs nothing until the data is actually sent;
//! - the announced sizes of all unfinished transfers together stay under
//!   [`InboxLimits::max_total`]: a transfer that would pass it is refused at its start (the
//!   leader retries later), so the transfers already admitted can finish.
//!
//! A transfer with no chunk for [`InboxLimits::idle_expiry`] is abandoned (its sender crashed,
//! lost leadership or was cut off) and dropped, which removes its file and releases its share of
//! the total; so does a refused chunk that breaks its transfer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flotilla_core::types::{LogId, NodeId};
use flotilla_core::wire::SnapshotChunk;
use flotilla_core::Namespace;
use flotilla_store::{SnapshotData, SnapshotSink, Store, StoreError};

/// How much the inbox holds.
#[derive(Debug, Clone, Copy)]
pub struct InboxLimits {
    /// Largest snapshot accepted.
    pub max_snapshot: u64,
    /// Largest sum of the announced sizes of the unfinished transfers of all namespaces (bytes
    /// on disk).
    pub max_total: u64,
    /// A transfer without a chunk for this long is dropped.
    pub idle_expiry: Duration,
}

/// Why a chunk was refused. The sender sees it as a rejection and starts the snapshot over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboxError {
    /// The snapshot is larger than [`InboxLimits::max_snapshot`].
    #[error("snapshot of {total} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Announced size.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// Admitting the transfer would pass [`InboxLimits::max_total`].
    #[error("snapshot of {total} bytes refused: {held} bytes of other snapshots are being received (limit {limit})")]
    Busy {
        /// Announced size.
        total: u64,
        /// Announced sizes of the other unfinished transfers.
        held: u64,
        /// The limit.
        limit: u64,
    },
    /// A chunk past offset 0 for which no transfer is under way (never started, replaced or
    /// expired).
    #[error("snapshot chunk without a start")]
    NoStart,
    /// A chunk that does not continue its transfer.
    #[error("snapshot chunk out of order")]
    OutOfOrder,
    /// More data than the transfer announced.
    #[error("snapshot chunk beyond the announced size")]
    Overrun,
    /// The last chunk came before the announced size was reached.
    #[error("snapshot ended short of its announced size")]
    Short,
    /// The chunk could not be written to disk (the transfer is dropped).
    #[error("cannot store the snapshot being received: {0}")]
    Store(StoreError),
}

/// One unfinished transfer.
struct Partial {
    from: NodeId,
    /// The log id the snapshot covers: identifies it together with `from` and `total`.
    snapshot: Option<LogId>,
    total: u64,
    sink: SnapshotSink,
    last_chunk: Instant,
}

impl Partial {
    /// Whether `chunk` from `from` continues this transfer.
    fn continues(&self, from: NodeId, chunk: &SnapshotChunk) -> bool {
        self.from == from
            && self.snapshot == chunk.meta.last_log_id
            && self.total == chunk.total
            && self.sink.len() == chunk.offset
    }
}

/// The unfinished transfers, one per namespace.
struct Transfers {
    limits: InboxLimits,
    slots: HashMap<Namespace, Partial>,
}

impl Transfers {
    /// Take `chunk` of `ns` from `from`; blocking file I/O. Returns the snapshot once its
    /// last chunk arrived.
    fn add(
        &mut self,
        now: Instant,
        store: &Store,
        from: NodeId,
        ns: &Namespace,
        chunk: SnapshotChunk,
    ) -> Result<Option<SnapshotData>, InboxError> {
        self.expire(now);
        if chunk.offset == 0 {
            self.start(now, store, from, ns, &chunk)?;
        }
        let Some(slot) = self.slots.get_mut(ns) else {
            return Err(InboxError::NoStart);
        };
        if !slot.continues(from, &chunk) {
            // A stray chunk of another sender must not break the transfer under way.
            if slot.from == from {
                self.slots.remove(ns);
            }
            return Err(InboxError::OutOfOrder);
        }
        if slot.sink.len() + chunk.data.len() as u64 > slot.total {
            self.slots.remove(ns);
            return Err(InboxError::Overrun);
        }
        if let Err(e) = slot.sink.append(&chunk.data) {
            self.slots.remove(ns);
            return Err(InboxError::Store(e));
        }
        slot.last_chunk = now;
        if !chunk.done {
            return Ok(None);
        }
        let Some(slot) = self.slots.remove(ns) else {
            return Err(InboxError::NoStart);
        };
        if slot.sink.len() != slot.total {
            return Err(InboxError::Short);
        }
        slot.sink.finish().map(Some).map_err(InboxError::Store)
    }

    /// Begin a transfer of `ns`, replacing any unfinished one of that namespace.
    fn start(
        &mut self,
        now: Instant,
        store: &Store,
        from: NodeId,
        ns: &Namespace,
        chunk: &SnapshotChunk,
    ) -> Result<(), InboxError> {
        let limits = self.limits;
        if chunk.total > limits.max_snapshot {
            return Err(InboxError::TooLarge { total: chunk.total, limit: limits.max_snapshot });
        }
        if let Some(old) = self.slots.remove(ns) {
            tracing::debug!(namespace = %ns, peer = %old.from, "unfinished snapshot transfer replaced by a new one");
        }
        let held: u64 = self.slots.values().map(|p| p.total).sum();
        if held.saturating_add(chunk.total) > limits.max_total {
            return Err(InboxError::Busy { total: chunk.total, held, limit: limits.max_total });
        }
        let sink = store.snapshot_sink(ns).map_err(InboxError::Store)?;
        let partial = Partial { from, snapshot: chunk.meta.last_log_id, total: chunk.total, sink, last_chunk: now };
        self.slots.insert(ns.clone(), partial);
        Ok(())
    }

    /// Drop the transfers that have been idle too long (removing their files).
    fn expire(&mut self, now: Instant) {
        let idle = self.limits.idle_expiry;
        self.slots.retain(|ns, p| {
            let live = now.saturating_duration_since(p.last_chunk) < idle;
            if !live {
                tracing::info!(namespace = %ns, peer = %p.from, received = p.sink.len(), total = p.total,
                    "dropping an abandoned snapshot transfer");
            }
            live
        });
    }

    #[cfg(test)]
    fn held(&self) -> u64 {
        self.slots.values().map(|p| p.total).sum()
    }
}

/// The snapshots being received, one per namespace.
pub struct SnapshotInbox {
    transfers: Arc<Mutex<Transfers>>,
}

impl SnapshotInbox {
    /// An inbox holding at most `limits`.
    pub fn new(limits: InboxLimits) -> Self {
        Self { transfers: Arc::new(Mutex::new(Transfers { limits, slots: HashMap::new() })) }
    }

    /// Add a chunk, written to a file of `store`; returns the whole snapshot once the last
    /// chunk arrived. The file I/O runs on a blocking thread.
    pub async fn add(
        &self,
        store: &Arc<Store>,
        from: NodeId,
        ns: &Namespace,
        chunk: SnapshotChunk,
    ) -> Result<Option<SnapshotData>, InboxError> {
        let (transfers, store, ns) = (self.transfers.clone(), store.clone(), ns.clone());
        tokio::task::spawn_blocking(move || lock(&transfers).add(Instant::now(), &store, from, &ns, chunk))
            .await
            .map_err(|e| InboxError::Store(StoreError::Redb(format!("snapshot receive task failed: {e}"))))?
    }
}

/// The transfers, even if a thread panicked while holding them (each step leaves them valid).
fn lock(transfers: &Mutex<Transfers>) -> MutexGuard<'_, Transfers> {
    transfers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use flotilla_core::types::Vote;
    use flotilla_core::TypeConfig;
    use openraft::alias::SnapshotMetaOf;
    use openraft::vote::RaftLeaderIdExt;
    use openraft::RaftTypeConfig;

    const IDLE: Duration = Duration::from_secs(60);

    /// Transfers with the given limits, and the store whose data dir receives them.
    fn transfers(max_snapshot: u64, max_total: u64) -> (Transfers, Arc<Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = Transfers { limits: InboxLimits { max_snapshot, max_total, idle_expiry: IDLE }, slots: HashMap::new() };
        (t, store, dir)
    }

    fn ns(name: &str) -> Namespace {
        Namespace::new(name).unwrap()
    }

    fn chunk(index: u64, offset: u64, total: u64, data: &[u8], done: bool) -> SnapshotChunk {
        let leader = NodeId::random();
        let last_log_id = Some(LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(1, leader), index));
        SnapshotChunk {
            vote: Vote::new(1, leader),
            meta: SnapshotMetaOf::<TypeConfig> { last_log_id, last_membership: Default::default() },
            offset,
            total,
            data: data.to_vec(),
            done,
        }
    }

    /// The bytes of a finished transfer.
    fn bytes(result: Result<Option<SnapshotData>, InboxError>) -> Result<Option<Vec<u8>>, InboxError> {
        result.map(|done| {
            done.map(|data| {
                let mut out = Vec::new();
                data.reader().read_to_end(&mut out).unwrap();
                out
            })
        })
    }

    /// The files of the transfers under way in `dir`.
    fn files(dir: &tempfile::TempDir) -> Vec<(String, u64)> {
        match std::fs::read_dir(dir.path().join("snapshots/.incoming")) {
            Ok(entries) => entries
                .map(|e| e.unwrap())
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    #[test]
    fn reassembles_in_order_chunks() {
        let (mut t, s, dir) = transfers(100, 100);
        let (now, a) = (Instant::now(), NodeId::random());
        let mut first = chunk(5, 0, 6, b"abc", false);
        let mut second = chunk(5, 3, 6, b"def", true);
        second.meta = first.meta.clone();
        assert_eq!(bytes(t.add(now, &s, a, &ns("n"), first.clone())), Ok(None));
        let done = t.add(now, &s, a, &ns("n"), second).unwrap().unwrap();
        assert_eq!(bytes(Ok(Some(done.clone()))), Ok(Some(b"abcdef".to_vec())));
        assert_eq!(t.held(), 0, "a finished transfer releases its share");
        assert_eq!(files(&dir).len(), 1, "the snapshot is a file until it is installed");
        drop(done);
        assert_eq!(files(&dir), vec![], "and its file goes with it");
        first.offset = 3;
        assert_eq!(bytes(t.add(now, &s, a, &ns("n"), first)), Err(InboxError::NoStart));
    }

    #[test]
    fn announced_size_is_not_reserved_up_front() {
        let (mut t, s, dir) = transfers(u64::MAX, u64::MAX);
        // One message announcing 4 GiB must not take 4 GiB, in memory or on disk.
        let c = chunk(1, 0, 4 << 30, b"x", false);
        assert_eq!(bytes(t.add(Instant::now(), &s, NodeId::random(), &ns("n"), c)), Ok(None));
        assert_eq!(t.slots[&ns("n")].sink.len(), 1);
        assert!(files(&dir).iter().map(|(_, len)| *len).sum::<u64>() <= 1, "{:?}", files(&dir));
    }

    #[test]
    fn one_transfer_per_namespace_and_a_new_one_from_any_sender_replaces_it() {
        let (mut t, s, dir) = transfers(1000, 1000);
        let (now, old_leader, new_leader, n) = (Instant::now(), NodeId::random(), NodeId::random(), ns("n"));
        t.add(now, &s, old_leader, &n, chunk(1, 0, 400, &[0; 100], false)).unwrap();
        let start = chunk(2, 0, 400, &[0; 100], false);
        let meta = start.meta.clone();
        t.add(now, &s, new_leader, &n, start).unwrap();
        assert_eq!(t.slots.len(), 1);
        assert_eq!(t.held(), 400, "the replaced transfer released its share");
        assert_eq!(files(&dir).len(), 1, "and its file");
        // The old leader's next chunk is refused and does not disturb the new transfer.
        let stray = chunk(1, 100, 400, &[0; 100], false);
        assert_eq!(bytes(t.add(now, &s, old_leader, &n, stray)), Err(InboxError::OutOfOrder));
        let mut next = chunk(2, 100, 400, &[0; 300], true);
        next.meta = meta;
        assert_eq!(bytes(t.add(now, &s, new_leader, &n, next)).map(|d| d.map(|d| d.len())), Ok(Some(400)));
    }

    #[test]
    fn abandoned_transfers_expire_and_their_files_go() {
        let (mut t, s, dir) = transfers(1000, 1000);
        let (now, a) = (Instant::now(), NodeId::random());
        let start = chunk(1, 0, 1000, &[0; 10], false);
        let meta = start.meta.clone();
        t.add(now, &s, a, &ns("a"), start).unwrap();
        assert_eq!(files(&dir).len(), 1);
        // The total is taken, so another namespace must wait...
        let other = chunk(1, 0, 10, &[0; 10], true);
        assert!(matches!(t.add(now, &s, a, &ns("b"), other.clone()), Err(InboxError::Busy { .. })));
        // ...until the abandoned transfer expires.
        let later = now + IDLE + Duration::from_millis(1);
        assert_eq!(bytes(t.add(later, &s, a, &ns("b"), other)), Ok(Some(vec![0; 10])));
        assert_eq!(t.held(), 0);
        assert_eq!(files(&dir), vec![], "the expired transfer's file is removed");
        let mut late = chunk(1, 10, 1000, &[0; 10], false);
        late.meta = meta;
        assert_eq!(bytes(t.add(later, &s, a, &ns("a"), late)), Err(InboxError::NoStart));
    }

    #[test]
    fn a_transfer_that_keeps_sending_does_not_expire() {
        let (mut t, s, _dir) = transfers(1000, 1000);
        let (mut now, a, n) = (Instant::now(), NodeId::random(), ns("n"));
        let start = chunk(1, 0, 40, &[0; 10], false);
        let meta = start.meta.clone();
        t.add(now, &s, a, &n, start).unwrap();
        for offset in [10, 20, 30] {
            now += IDLE / 2;
            let mut c = chunk(1, offset, 40, &[0; 10], offset == 30);
            c.meta = meta.clone();
            assert!(t.add(now, &s, a, &n, c).is_ok(), "chunk at {offset}");
        }
    }

    #[test]
    fn total_is_bounded_across_namespaces() {
        let (mut t, s, _dir) = transfers(600, 1000);
        let (now, a) = (Instant::now(), NodeId::random());
        assert_eq!(
            bytes(t.add(now, &s, a, &ns("big"), chunk(1, 0, 601, &[0; 1], false))),
            Err(InboxError::TooLarge { total: 601, limit: 600 })
        );
        t.add(now, &s, a, &ns("a"), chunk(1, 0, 600, &[0; 1], false)).unwrap();
        t.add(now, &s, a, &ns("b"), chunk(1, 0, 400, &[0; 1], false)).unwrap();
        assert_eq!(
            bytes(t.add(now, &s, a, &ns("c"), chunk(1, 0, 1, &[0; 1], false))),
            Err(InboxError::Busy { total: 1, held: 1000, limit: 1000 })
        );
        assert_eq!(t.held(), 1000);
    }

    #[test]
    fn overrun_and_short_transfers_are_refused_and_leave_no_file() {
        let (mut t, s, dir) = transfers(1000, 1000);
        let (now, a, n) = (Instant::now(), NodeId::random(), ns("n"));
        assert_eq!(bytes(t.add(now, &s, a, &n, chunk(1, 0, 5, &[0; 6], false))), Err(InboxError::Overrun));
        assert_eq!(bytes(t.add(now, &s, a, &n, chunk(1, 0, 5, &[0; 4], true))), Err(InboxError::Short));
        assert_eq!(t.held(), 0);
        assert_eq!(files(&dir), vec![]);
    }
}
