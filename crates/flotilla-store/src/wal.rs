//! [`WriteAheadLog`]: the node's write-ahead log (`DESIGN-log.md`): a directory of segments
//! holding the Raft logs of every namespace, and the index of where each retained entry lies.
//!
//! Contract, for the writer thread that will own it:
//! - [`WriteAheadLog::append`] writes records in log order, as batches, moving on to a new
//!   segment when the active one is full, and updates the index at once: an appended entry
//!   can be read back before it is durable (openraft replicates entries before they are
//!   flushed, as it does today).
//! - Nothing appended is durable until [`WriteAheadLog::sync`] returns; only then may it be
//!   acknowledged. A failed sync must stop the log for good (see `crate::disk`), and so must a
//!   failed append: what it wrote past the last sync is unknown until the next open finds the
//!   end of the log.
//! - [`WriteAheadLog::open`] finds where the log ends: the last segment's tail may be torn (never
//!   acknowledged, dropped); anything else that fails its checks is corruption, and the open
//!   fails naming the segment and offset.
//!
//! The log's salt (see `crate::wal_batch`) is drawn when the log is created and kept in the file
//! `salt` next to the segments, written and synced before the first segment.
//!
//! The next segment is made ahead of time by a helper thread ([`SegmentFiller`]), so rolling
//! over usually costs the writer nothing. A segment that cannot be made for lack of space
//! (ENOSPC, EDQUOT) is waited for, as a redb write is (`crate::disk`): the roll-over retries
//! with backoff while the store reports the disk full, and nothing written after the last sync
//! is acknowledged meanwhile. Only another error fails the append.
//!
//! Readers share the index and the segments' handles through [`WalReader`]; only the owner of
//! the `WriteAheadLog` (the store's writer thread) appends, syncs and recycles.
//!
//! Copying forward ([`WriteAheadLog::copy_forward`]): a namespace that stays idle and is never
//! snapshotted keeps its few entries in an old segment, and that segment (and so every later
//! one) could never be recycled. Once [`COPY_FORWARD_AFTER`] segments lie behind the active
//! one, the whole retained log of each namespace whose oldest entry is old and whose log is
//! small is appended again as `Copy` records and synced; its index then points at the copies,
//! and the old segments can go. A replay that meets the copies after the originals were
//! recycled starts the namespace's index again from them (`LogIndex::copy`).
//!
//! Recycling ([`WriteAheadLog::recycle`]) deletes the oldest segments that hold no retained
//! entry of any namespace, oldest first, one at a time with the directory synced after each,
//! so that the segments left after a crash are always a run of consecutive ones: replaying a
//! run from its start is replaying the log from a point in its history.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::DiskHealth;
use crate::wal_batch::{BatchFull, WalBatch, BATCH_HEADER_LEN, BLOCK};
use crate::wal_filler::SegmentFiller;
use crate::wal_log_index::{IndexError, Location, LogIndex, LogShape};
use crate::wal_reader::{Entries, WalReader};
use crate::wal_record::{Record, RecordKind, RECORD_HEADER_LEN};
use crate::wal_segment::{segment_file_name, AppendError, RecordAt, ScanEnd, Segment};

/// What opening, appending to or reading the log can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalError {
    #[error("write-ahead log I/O: {0}")]
    Io(#[from] io::Error),
    #[error("write-ahead log segment {segment:016x} is damaged at offset {offset}: {reason}")]
    Corrupt { segment: u64, offset: u64, reason: String },
    #[error("write-ahead log, namespace {namespace}: {error}")]
    Index { namespace: u32, error: IndexError },
    #[error("write-ahead log: {0}")]
    TooLarge(BatchFull),
    #[error("write-ahead log: a record of {len} bytes is larger than a segment holds ({max})")]
    RecordTooLarge { len: usize, max: usize },
}

/// Segments before the active one past which small, old namespace logs are copied forward.
pub(crate) const COPY_FORWARD_AFTER: u64 = 4;
/// Most bytes of one namespace's retained entries copied forward; a larger log keeps its
/// segments until its own purges (behind its snapshots) free them.
pub(crate) const COPY_FORWARD_MAX_PER_NAMESPACE: u64 = 1024 * 1024;
/// Most bytes copied forward at once.
pub(crate) const COPY_FORWARD_MAX: u64 = 16 * 1024 * 1024;

/// Bytes of a new log's first segment. Each later one is twice its predecessor's planned size,
/// up to the configured segment size ([`planned_segment_size`]): a log that stays small (an
/// idle node's, a test's) takes a few MiB of disk, not two full segments of zeros, and a busy
/// one reaches full-size segments within a few roll-overs.
pub(crate) const FIRST_SEGMENT_BYTES: u64 = 1024 * 1024;

/// The size segment `sequence` is made with (a batch larger than that gets a segment that
/// fits it): [`FIRST_SEGMENT_BYTES`] doubled per sequence number, at most `max`.
pub(crate) fn planned_segment_size(max: u64, sequence: u64) -> u64 {
    let doublings = u32::try_from(sequence.saturating_sub(1).min(32)).unwrap_or(32);
    FIRST_SEGMENT_BYTES.saturating_mul(1u64 << doublings).min(max)
}

/// The write-ahead log of one node.
#[derive(Debug)]
pub(crate) struct WriteAheadLog {
    dir: PathBuf,
    segment_size: u64,
    salt: u64,
    active: Segment,
    /// Every namespace's index and every segment on disk (the active one included), shared
    /// with the readers.
    reader: WalReader,
    /// Full segments written since the last sync, kept open until it.
    unsynced_full: Vec<Segment>,
    /// Whether the active segment was written since the last sync.
    active_unsynced: bool,
    /// Makes the segment after the active one.
    filler: SegmentFiller,
    /// Where a roll-over short of space waits (`None`: it fails instead, for tests of the log
    /// alone).
    disk: Option<Arc<DiskHealth>>,
}

impl WriteAheadLog {
    /// Open the log in `dir` (created when missing), scanning every segment, or start one with
    /// a first segment of `segment_size` bytes. A roll-over short of space fails; see
    /// [`WriteAheadLog::wait_for_space`].
    pub(crate) fn open(dir: &Path, segment_size: u64) -> Result<Self, WalError> {
        std::fs::create_dir_all(dir)?;
        let sequences = list_segments(dir)?;
        let salt = read_or_create_salt(dir, sequences.is_empty())?;
        let Scanned { namespaces, mut files, active } = scan_segments(dir, sequences, salt)?;
        let active = match active {
            Some(segment) => {
                // Whatever a crash left past the tail (a torn batch) goes, so that the batches
                // written next are never followed by it in a segment that is no longer the last.
                if !segment.tail_is_clear()? {
                    segment.clear_tail()?;
                }
                segment
            }
            None => {
                let segment = Segment::create(dir, 1, planned_segment_size(segment_size, 1), salt)?;
                files.insert(1, Arc::new(File::open(dir.join(segment_file_name(1)))?));
                segment
            }
        };
        let mut filler = SegmentFiller::start(dir.to_path_buf(), salt)?;
        let next = active.sequence() + 1;
        filler.prepare(next, planned_segment_size(segment_size, next));
        let reader = WalReader::default();
        *reader.write() = Entries { namespaces, files };
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_size,
            salt,
            active,
            reader,
            unsynced_full: Vec::new(),
            active_unsynced: false,
            filler,
            disk: None,
        })
    }

    /// From now on, a roll-over that finds no room for the next segment waits for it,
    /// reporting the disk full through `disk` (see the module doc).
    pub(crate) fn wait_for_space(&mut self, disk: Arc<DiskHealth>) {
        self.disk = Some(disk);
    }

    /// The directory of the log's segments.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A handle for reading entries, sharing this log's index.
    pub(crate) fn reader(&self) -> WalReader {
        self.reader.clone()
    }

    /// The namespace ids that have an index (any record since the oldest segment on disk).
    pub(crate) fn namespace_ids(&self) -> Vec<u32> {
        self.reader.write().namespaces.keys().copied().collect()
    }

    /// The shape of `namespace`'s log, to check changes against before appending them.
    pub(crate) fn shape(&self, namespace: u32) -> LogShape {
        self.reader.write().namespaces.get(&namespace).map(LogIndex::shape).unwrap_or_default()
    }

    /// Forget `namespace`'s index: its records stay in the segments until they are recycled,
    /// but no longer keep any segment (used for a namespace whose id is no longer in use).
    pub(crate) fn forget(&mut self, namespace: u32) {
        self.reader.write().namespaces.remove(&namespace);
    }

    /// Purge `namespace`'s index up to `upto` without writing a record: for a purge recorded
    /// elsewhere durably (the store's metadata), applied at open.
    pub(crate) fn purge_index(&mut self, namespace: u32, upto: u64) -> Result<(), WalError> {
        let mut entries = self.reader.write();
        let log = entries.namespaces.entry(namespace).or_default();
        log.purge(upto).map_err(|error| WalError::Index { namespace, error })
    }

    /// Copy forward the retained entries of namespaces whose logs are small and old, so that
    /// the segments they pin can be recycled, and sync the copies; see "Copying forward" in
    /// the module doc. A no-op unless at least [`COPY_FORWARD_AFTER`] segments lie before the
    /// active one. A failure leaves the log in an unknown state past its last sync, as a
    /// failed append does.
    pub(crate) fn copy_forward(&mut self) -> Result<usize, WalError> {
        let candidates = self.copy_candidates();
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut records = Vec::new();
        for id in &candidates {
            let Some((first, last)) = self.reader.bounds(*id) else { continue };
            for index in first..=last {
                let payload = self.reader.read(*id, index)?.ok_or_else(|| {
                    io::Error::other(format!("namespace {id}: retained entry {index} has no location"))
                })?;
                records.push(Record { kind: RecordKind::Copy, namespace: *id, index, term: 0, payload });
            }
        }
        self.append(&records)?;
        crate::crash_points::hit("wal-copy-appended");
        self.sync()?;
        crate::crash_points::hit("wal-copy-synced");
        Ok(candidates.len())
    }

    /// The namespaces to copy forward: retained entries older than half of
    /// [`COPY_FORWARD_AFTER`] segments behind the active one, at most
    /// [`COPY_FORWARD_MAX_PER_NAMESPACE`] bytes of them, within [`COPY_FORWARD_MAX`] in all.
    fn copy_candidates(&self) -> Vec<u32> {
        let active = self.active.sequence();
        let entries = self.reader.write();
        let oldest = entries.files.keys().next().copied().unwrap_or(active);
        if active.saturating_sub(oldest) < COPY_FORWARD_AFTER {
            return Vec::new();
        }
        let horizon = active - COPY_FORWARD_AFTER / 2;
        let mut budget = COPY_FORWARD_MAX;
        let mut chosen = Vec::new();
        for (id, log) in &entries.namespaces {
            if log.oldest_segment().is_none_or(|s| s >= horizon) {
                continue;
            }
            if let Some(bytes) = log.retained_bytes_within(COPY_FORWARD_MAX_PER_NAMESPACE.min(budget)) {
                budget -= bytes;
                chosen.push(*id);
            }
        }
        chosen
    }

    /// Delete the oldest segments that hold no retained entry of any namespace (never the
    /// active one), oldest first, syncing the directory after each; returns how many went.
    /// Every namespace's purges must be durable before this runs: a deleted segment cannot be
    /// read again.
    pub(crate) fn recycle(&mut self) -> Result<usize, WalError> {
        let keep_from = {
            let entries = self.reader.write();
            let oldest_needed = entries.namespaces.values().filter_map(LogIndex::oldest_segment).min();
            oldest_needed.unwrap_or(u64::MAX).min(self.active.sequence())
        };
        let mut deleted = 0;
        loop {
            let oldest = self.reader.write().files.keys().next().copied();
            let Some(sequence) = oldest.filter(|&s| s < keep_from) else { break };
            std::fs::remove_file(self.dir.join(segment_file_name(sequence)))?;
            crate::crash_points::hit("wal-recycle-deleted");
            File::open(&self.dir)?.sync_all()?;
            self.reader.write().files.remove(&sequence);
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Append `records`, in order, as one batch or, when they do not fit one, several; a full
    /// segment is followed by a new one. The index follows at once; nothing is durable before
    /// [`WriteAheadLog::sync`].
    pub(crate) fn append(&mut self, records: &[Record]) -> Result<(), WalError> {
        if let Some(record) = records.iter().find(|r| r.encoded_len() > self.max_record_len()) {
            return Err(WalError::RecordTooLarge { len: record.encoded_len(), max: self.max_record_len() });
        }
        self.check_shapes(records)?;
        let mut start = 0;
        while start < records.len() {
            let mut batch = WalBatch::new();
            let mut end = start;
            while end < records.len() {
                // A batch never outgrows a segment: it must fit a fresh one whole.
                if !batch.is_empty() && batch.body_len() + records[end].encoded_len() > self.max_record_len() {
                    break;
                }
                match batch.push(&records[end]) {
                    Ok(()) => end += 1,
                    Err(BatchFull::Full { .. }) => break,
                    Err(too_large) => return Err(WalError::TooLarge(too_large)),
                }
            }
            let at = self.write_batch(&batch)?;
            self.index_batch(at, &records[start..end])?;
            start = end;
        }
        Ok(())
    }

    /// The largest record this log takes: one that fits a batch alone in a fresh segment.
    pub(crate) fn max_record_len(&self) -> usize {
        let segment = usize::try_from(self.segment_size).unwrap_or(usize::MAX);
        segment.saturating_sub(BATCH_HEADER_LEN).min(crate::wal_batch::MAX_BATCH_BODY)
    }

    /// Refuse `records` before any is written if one of them would break its namespace's log
    /// (a gap, an overwrite without a truncation, a truncation of purged entries): written, it
    /// would fail every later open of the log.
    fn check_shapes(&self, records: &[Record]) -> Result<(), WalError> {
        let mut shapes: HashMap<u32, LogShape> = HashMap::new();
        for record in records {
            let shape = shapes.entry(record.namespace).or_insert_with(|| {
                self.reader.write().namespaces.get(&record.namespace).map(LogIndex::shape).unwrap_or_default()
            });
            let checked = match record.kind {
                RecordKind::Entry => shape.entry(record.index),
                RecordKind::Truncate => shape.truncate(record.index).map(drop),
                RecordKind::Purge => shape.purge(record.index).map(drop),
                RecordKind::Copy => shape.copy(record.index),
            };
            checked.map_err(|error| WalError::Index { namespace: record.namespace, error })?;
        }
        Ok(())
    }

    /// Write `batch` to the active segment, or to a new one when it is full; returns where it
    /// went: (segment, offset).
    fn write_batch(&mut self, batch: &WalBatch) -> Result<(u64, u64), WalError> {
        match self.active.append(batch) {
            Ok(offset) => return Ok(self.written(offset)),
            Err(AppendError::Io(e)) => return Err(e.into()),
            Err(AppendError::Full { .. }) => self.roll((BATCH_HEADER_LEN + batch.body_len()) as u64)?,
        }
        match self.active.append(batch) {
            Ok(offset) => Ok(self.written(offset)),
            Err(AppendError::Io(e)) => Err(e.into()),
            // A batch larger than a whole segment: the segment size is below the batch bound.
            Err(full @ AppendError::Full { .. }) => Err(io::Error::other(full.to_string()).into()),
        }
    }

    fn written(&mut self, offset: u64) -> (u64, u64) {
        self.active_unsynced = true;
        (self.active.sequence(), offset)
    }

    /// Start the next segment, large enough for a batch of `needed` bytes. The full one stays
    /// unsynced until the next [`WriteAheadLog::sync`].
    fn roll(&mut self, needed: u64) -> Result<(), WalError> {
        let next = self.active.sequence() + 1;
        let size = planned_segment_size(self.segment_size, next).max(needed.next_multiple_of(BLOCK as u64));
        let segment = match self.filler.take(next) {
            Some(Ok(prepared)) if prepared.size() >= size => prepared,
            // Too small for the batch (replaced under the same name), or the helper found no
            // room or failed otherwise: made here, waiting for space.
            Some(_) | None => self.create_segment(next, size)?,
        };
        let file = Arc::new(File::open(self.dir.join(segment_file_name(next)))?);
        self.reader.write().files.insert(next, file);
        let full = std::mem::replace(&mut self.active, segment);
        if std::mem::take(&mut self.active_unsynced) {
            self.unsynced_full.push(full);
        }
        self.filler.prepare(next + 1, planned_segment_size(self.segment_size, next + 1));
        Ok(())
    }

    /// Move on to a new segment now, unless the active one is still empty: what is appended
    /// next lies in no segment that holds anything older, so once it covers every retained
    /// entry, [`WriteAheadLog::recycle`] deletes every older segment (used to leave no
    /// plaintext behind when the log is sealed in place).
    pub(crate) fn start_new_segment(&mut self) -> Result<(), WalError> {
        if self.active.tail() > 0 {
            self.roll(0)?;
        }
        Ok(())
    }

    /// Make segment `sequence` of `size` bytes here, on the writer's thread; short of space, wait for room when
    /// the log was told where to ([`WriteAheadLog::wait_for_space`]).
    fn create_segment(&self, sequence: u64, size: u64) -> Result<Segment, WalError> {
        let create = || Segment::create(&self.dir, sequence, size, self.salt);
        let segment = match &self.disk {
            Some(disk) => {
                let what = format!("making write-ahead log segment {}", segment_file_name(sequence));
                disk.retry_while_full(&what, crate::disk::is_full, create)?
            }
            None => create()?,
        };
        Ok(segment)
    }

    /// Record where each of `records`, written as one batch at `(segment, offset)`, lies.
    fn index_batch(&mut self, (segment, offset): (u64, u64), records: &[Record]) -> Result<(), WalError> {
        let mut payload = offset + BATCH_HEADER_LEN as u64;
        let mut entries = self.reader.write();
        for record in records {
            payload += RECORD_HEADER_LEN as u64;
            apply(&mut entries.namespaces, segment, RecordAt { batch: offset, payload }, record)?;
            payload += record.payload.len() as u64;
        }
        Ok(())
    }

    /// Make everything appended durable: every segment written since the last sync.
    pub(crate) fn sync(&mut self) -> Result<(), WalError> {
        for full in &self.unsynced_full {
            full.sync()?;
        }
        self.unsynced_full.clear();
        if self.active_unsynced {
            self.active.sync()?;
            self.active_unsynced = false;
        }
        Ok(())
    }
}

/// What opening found in the segments: every namespace's index, a reader per segment, and the
/// segment appends go on in (the last one holding a batch, else the first).
struct Scanned {
    namespaces: HashMap<u32, LogIndex>,
    files: BTreeMap<u64, Arc<File>>,
    active: Option<Segment>,
}

/// Scan the segments numbered `sequences` (in order) of the log salted with `salt` in `dir`.
fn scan_segments(dir: &Path, sequences: Vec<u64>, salt: u64) -> Result<Scanned, WalError> {
    let mut namespaces: HashMap<u32, LogIndex> = HashMap::new();
    let mut files = BTreeMap::new();
    let mut active = None;
    // A segment whose log ended in a torn or damaged batch: only the last segment holding
    // any batch may (the crash interrupted its last write); a later one holding batches
    // means the bad batch was acknowledged once.
    let mut torn: Option<(u64, u64)> = None;
    for sequence in sequences {
        let path = dir.join(segment_file_name(sequence));
        let mut broken = None;
        let mut records = 0usize;
        let (segment, end) = Segment::open(&path, sequence, salt, |at, record| {
            records += 1;
            if broken.is_none() {
                broken = match torn {
                    Some((segment, offset)) => {
                        let reason = "a bad batch before the last segment that holds any".into();
                        Some(WalError::Corrupt { segment, offset, reason })
                    }
                    None => apply(&mut namespaces, sequence, at, &record).err(),
                };
            }
        })?;
        if let Some(error) = broken {
            return Err(error);
        }
        match end {
            ScanEnd::Corrupt { offset, reason } => {
                return Err(WalError::Corrupt { segment: sequence, offset, reason });
            }
            ScanEnd::Tail { offset, blank: false } => torn = Some((sequence, offset)),
            ScanEnd::Tail { .. } => {}
        }
        if records > 0 || active.is_none() {
            // Appends go on in the last segment that holds a batch; segments after it are
            // empty and made anew when the log reaches them.
            active = Some(segment);
        }
        files.insert(sequence, Arc::new(File::open(&path)?));
    }
    Ok(Scanned { namespaces, files, active })
}

/// Apply one record, found at `at` in segment `segment`, to its namespace's index.
fn apply(namespaces: &mut HashMap<u32, LogIndex>, segment: u64, at: RecordAt, record: &Record) -> Result<(), WalError> {
    let log = namespaces.entry(record.namespace).or_default();
    let indexed = match record.kind {
        RecordKind::Entry => {
            let len = u32::try_from(record.payload.len()).expect("a batch holds at most 16 MiB");
            log.append(record.index, Location { segment, payload: at.payload, len, term: record.term })
        }
        RecordKind::Copy => {
            let len = u32::try_from(record.payload.len()).expect("a batch holds at most 16 MiB");
            log.copy(record.index, Location { segment, payload: at.payload, len, term: record.term })
        }
        RecordKind::Truncate => log.truncate(record.index),
        RecordKind::Purge => log.purge(record.index),
    };
    indexed.map_err(|error| WalError::Index { namespace: record.namespace, error })
}

/// The log's salt from `dir/salt`; when `fresh` (no segment yet) and the file is missing, a new
/// random one, written and synced (with the directory) before any segment exists.
fn read_or_create_salt(dir: &Path, fresh: bool) -> Result<u64, WalError> {
    let path = dir.join("salt");
    match std::fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16).map_err(|e| WalError::Corrupt {
            segment: 0,
            offset: 0,
            reason: format!("{} does not hold a salt: {e}", path.display()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound && fresh => {
            let salt = rand::random::<u64>();
            let temp = dir.join("salt.tmp");
            let file = File::create(&temp)?;
            file.write_all_at(format!("{salt:016x}\n").as_bytes(), 0)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            File::open(dir)?.sync_all()?;
            Ok(salt)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(WalError::Corrupt {
            segment: 0,
            offset: 0,
            reason: format!("{} is missing next to the segments: no batch can be checked", path.display()),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The sequence numbers of the segments in `dir`, in order; leftovers of an interrupted
/// segment creation (`*.wal.tmp`) are removed: only at open, before the filler starts.
fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut sequences = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".wal.tmp") {
            std::fs::remove_file(entry.path())?;
        } else if let Some(hex) = name.strip_suffix(".wal") {
            if let Ok(sequence) = u64::from_str_radix(hex, 16) {
                sequences.push(sequence);
            }
        }
    }
    sequences.sort_unstable();
    Ok(sequences)
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
