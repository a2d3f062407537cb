//! [`Segment`]: one file of the node's write-ahead log (`DESIGN-log.md`), and the scan that
//! finds where its log ends after a crash.
//!
//! A segment is created zero-filled and synced before use, so that an append overwrites blocks
//! written before and its `fdatasync` has no metadata to journal (measured: half the time of
//! a `fallocate`d file's, docs/BENCHMARKS.md). Batches ([`WalBatch`]) start on block
//! boundaries and are appended one after another from offset 0.
//!
//! Where the log ends: the scan reads batches from offset 0 until a block holds none. A blank
//! block (zeros) or a batch that fails its checks there is the end of the log: a batch torn by
//! a crash was never acknowledged, since a batch is acknowledged only after its `fdatasync`.
//! But if a good batch of this segment follows at a later block, the bad one was acknowledged
//! once and is damaged: the scan reports corruption, and nothing may be served past it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::wal_batch::{BatchHeader, HeaderAt, WalBatch, BATCH_HEADER_LEN, BLOCK};
use crate::wal_record::{Record, RECORD_HEADER_LEN};

/// Zeros written at a time while filling a new segment.
const FILL_CHUNK: usize = 1024 * 1024;

/// One segment file, open for appending at its end of log.
#[derive(Debug)]
pub(crate) struct Segment {
    file: File,
    sequence: u64,
    /// The log's salt, which every batch's CRC covers (see `crate::wal_batch`).
    salt: u64,
    size: u64,
    /// Where the next batch goes (a block boundary).
    tail: u64,
}

/// Where a record lies in its segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordAt {
    /// The offset of its batch.
    pub(crate) batch: u64,
    /// The offset of its payload (an entry is read back from there, and checked by the CRC
    /// its encoding carries, `crate::codec`).
    pub(crate) payload: u64,
}

/// Where a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// The log ends at `offset`: a blank block, the segment's end, or a torn or stale batch with
    /// no good batch after it (`blank` tells the first case from the others).
    Tail { offset: u64, blank: bool },
    /// The batch at `offset` is damaged although batches after it are good.
    Corrupt { offset: u64, reason: String },
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendError {
    /// The batch does not fit in what is left of the segment: write it to the next one.
    #[error("the segment has {left} bytes left, the batch takes {needed}")]
    Full { left: u64, needed: u64 },
    /// The write failed; what the file holds past the tail is unknown (the next scan ends there).
    #[error("writing the segment: {0}")]
    Io(#[from] io::Error),
}

/// The file name of the segment numbered `sequence`.
pub(crate) fn segment_file_name(sequence: u64) -> String {
    format!("{sequence:016x}.wal")
}

/// Write `size` bytes of zeros to a new file at `path` and sync it.
fn fill_zeros(path: &Path, size: u64) -> io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    let zeros = vec![0u8; FILL_CHUNK];
    let mut written = 0u64;
    while written < size {
        let n = (size - written).min(FILL_CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], written)?;
        written += n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

impl Segment {
    /// Create the segment numbered `sequence` in `dir`: `size` bytes of zeros (a multiple of
    /// [`BLOCK`]), written and synced under a temporary name, then renamed into place and the
    /// directory synced, so a crash leaves either no segment or a whole zero-filled one.
    pub(crate) fn create(dir: &Path, sequence: u64, size: u64, salt: u64) -> io::Result<Segment> {
        if size == 0 || !size.is_multiple_of(BLOCK as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("segment size {size} is not whole blocks"),
            ));
        }
        let path = dir.join(segment_file_name(sequence));
        let temp = dir.join(format!("{}.tmp", segment_file_name(sequence)));
        let file = match fill_zeros(&temp, size) {
            Ok(file) => file,
            Err(e) => {
                // What was written of it would hold space a waiting roll-over needs.
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        std::fs::rename(&temp, &path)?;
        File::open(dir)?.sync_all()?;
        Ok(Segment { file, sequence, salt, size, tail: 0 })
    }

    /// Open the existing segment at `path` as the one numbered `sequence`, scan it, and place
    /// the tail where its log ends. Every record the scan finds is passed to `visit` with
    /// where it is ([`RecordAt`]). A corrupt segment is opened too (the caller decides what to do);
    /// its tail is then the corrupt batch, so nothing is ever appended after damage.
    pub(crate) fn open(
        path: &Path,
        sequence: u64,
        salt: u64,
        visit: impl FnMut(RecordAt, Record),
    ) -> io::Result<(Segment, ScanEnd)> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let size = file.metadata()?.len() / BLOCK as u64 * BLOCK as u64;
        let mut segment = Segment { file, sequence, salt, size, tail: 0 };
        let end = segment.scan(visit)?;
        segment.tail = match &end {
            ScanEnd::Tail { offset, .. } | ScanEnd::Corrupt { offset, .. } => *offset,
        };
        Ok((segment, end))
    }

    /// This segment's sequence number, which its batches carry.
    pub(crate) fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Bytes of the segment.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Where the next batch goes (0: nothing written yet).
    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }

    /// Write `batch` at the tail (not yet durable: see [`Segment::sync`]); returns its offset.
    pub(crate) fn append(&mut self, batch: &WalBatch) -> Result<u64, AppendError> {
        let needed = batch.framed_len() as u64;
        let left = self.size - self.tail;
        if needed > left {
            return Err(AppendError::Full { left, needed });
        }
        let at = self.tail;
        self.file.write_all_at(&batch.frame(self.sequence, self.salt), at)?;
        self.tail += needed;
        Ok(at)
    }

    /// Whether every byte from the tail to the segment's end is zero.
    pub(crate) fn tail_is_clear(&self) -> io::Result<bool> {
        let mut buf = vec![0u8; FILL_CHUNK];
        let mut at = self.tail;
        while at < self.size {
            let n = (self.size - at).min(FILL_CHUNK as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], at)?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// Overwrite everything from the tail to the segment's end with zeros, durably: what a crash
    /// left there (a torn batch) must not stay behind the log's new batches, where a later scan
    /// would meet it in a segment that is no longer the last and take it for damage.
    pub(crate) fn clear_tail(&self) -> io::Result<()> {
        let zeros = vec![0u8; FILL_CHUNK];
        let mut at = self.tail;
        while at < self.size {
            let n = (self.size - at).min(FILL_CHUNK as u64) as usize;
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.file.sync_data()
    }

    /// Make every appended batch durable (`fdatasync`). A failure must stop the log for good:
    /// the kernel may have dropped the pages it could not write (see `crate::disk`).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Read the batches from offset 0, passing their records to `visit`, until the log ends.
    fn scan(&self, mut visit: impl FnMut(RecordAt, Record)) -> io::Result<ScanEnd> {
        let mut offset = 0u64;
        loop {
            let (at, blank) = match self.batch_at(offset)? {
                Found::Good { records, framed_len } => {
                    let mut payload = offset + BATCH_HEADER_LEN as u64;
                    for record in records {
                        payload += RECORD_HEADER_LEN as u64;
                        let len = record.payload.len() as u64;
                        visit(RecordAt { batch: offset, payload }, record);
                        payload += len;
                    }
                    offset += framed_len;
                    continue;
                }
                Found::End => return Ok(ScanEnd::Tail { offset, blank: true }),
                Found::Blank => (offset, true),
                Found::Undecodable(reason) => return Ok(ScanEnd::Corrupt { offset, reason }),
                Found::Bad(reason) => {
                    if self.good_batch_after(offset)? {
                        return Ok(ScanEnd::Corrupt { offset, reason });
                    }
                    (offset, false)
                }
            };
            if blank && self.good_batch_after(at)? {
                return Ok(ScanEnd::Corrupt { offset: at, reason: "a blank block before good batches".into() });
            }
            return Ok(ScanEnd::Tail { offset: at, blank });
        }
    }

    /// Whether any block after `offset` starts a good batch of this segment.
    fn good_batch_after(&self, offset: u64) -> io::Result<bool> {
        let mut at = offset + BLOCK as u64;
        while at < self.size {
            if matches!(self.batch_at(at)?, Found::Good { .. }) {
                return Ok(true);
            }
            at += BLOCK as u64;
        }
        Ok(false)
    }

    /// What the block at `offset` starts.
    fn batch_at(&self, offset: u64) -> io::Result<Found> {
        if offset + BATCH_HEADER_LEN as u64 > self.size {
            return Ok(Found::End);
        }
        let mut header_bytes = [0u8; BATCH_HEADER_LEN];
        self.file.read_exact_at(&mut header_bytes, offset)?;
        let room = (self.size - offset - BATCH_HEADER_LEN as u64) as usize;
        let header = match BatchHeader::parse(&header_bytes, self.sequence, room) {
            HeaderAt::Blank => return Ok(Found::Blank),
            HeaderAt::Unreadable => return Ok(Found::Bad("not a batch of this segment".into())),
            HeaderAt::Header(header) => header,
        };
        let mut body = vec![0u8; header.body_len];
        self.file.read_exact_at(&mut body, offset + BATCH_HEADER_LEN as u64)?;
        Ok(match header.records(self.salt, &header_bytes, &body) {
            None => Found::Bad("the batch fails its checksum".into()),
            Some(Err(e)) => Found::Undecodable(format!("the batch passes its checksum but does not decode: {e}")),
            Some(Ok(records)) => {
                let framed_len = (BATCH_HEADER_LEN + header.body_len).next_multiple_of(BLOCK) as u64;
                Found::Good { records, framed_len }
            }
        })
    }
}

/// What a block boundary holds.
enum Found {
    Good {
        records: Vec<Record>,
        framed_len: u64,
    },
    Blank,
    /// Torn, stale or damaged: the end of the log unless a good batch follows.
    Bad(String),
    /// Passes its checksum but does not decode: never a torn write, always damage (or a bug).
    Undecodable(String),
    /// Past the segment's last whole header.
    End,
}

#[cfg(test)]
#[path = "wal_segment_tests.rs"]
mod tests;
