//! [`WalBatch`]: the records of one group commit, framed as the write-ahead log stores them
//! (`DESIGN-log.md`).
//!
//! A batch is written with one write and made durable with one `fdatasync`. It starts on a
//! [`BLOCK`] boundary and is padded with zeros to the next one, so that no block ever holds two
//! batches: a power cut while a batch is written can tear that batch's blocks only, never a
//! block of a batch acknowledged before it (disks promise no more than sector atomicity).
//!
//! Header, [`BATCH_HEADER_LEN`] bytes, little-endian: `[magic u32][crc32 u32][segment sequence
//! u64][body length u32][record count u32][reserved u64]`, then the body (the records back to
//! back). The CRC covers the log's salt, the header after itself and the body: a batch torn by a
//! crash, or corrupted later, fails it as a whole. The segment's sequence number tells a batch of
//! this segment from one left by the segment's previous life when segment files are reused.
//!
//! The salt is a random number drawn when the log is created and never written into a batch.
//! Without it, a client could store a value whose bytes are a well-formed batch; should they
//! land on a block boundary inside a torn or stale batch, the scan that looks for good batches
//! past a bad one would find it, and either refuse to open the log or, at the tail, serve it.
//! A frame that passes the CRC must have been framed by this log.

use crate::wal_record::Record;

/// The alignment of batches in a segment, bytes.
pub(crate) const BLOCK: usize = 4096;
/// Bytes of a batch's header.
pub(crate) const BATCH_HEADER_LEN: usize = 32;
/// Largest body of one batch, bytes: a group commit holding more is split into several batches.
pub(crate) const MAX_BATCH_BODY: usize = 16 * 1024 * 1024;
/// `FWAL`, the first bytes of every batch.
const MAGIC: u32 = u32::from_le_bytes(*b"FWAL");

/// Why a record does not fit a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BatchFull {
    /// The batch's body would exceed [`MAX_BATCH_BODY`]: write this batch and start another.
    #[error("the batch holds {held} bytes; a record of {record} more would pass {MAX_BATCH_BODY}")]
    Full { held: usize, record: usize },
    /// The record alone is larger than a batch may be.
    #[error("a record of {0} bytes is larger than a batch may hold ({MAX_BATCH_BODY})")]
    TooLarge(usize),
}

/// The records of one group commit.
#[derive(Debug, Default)]
pub(crate) struct WalBatch {
    body: Vec<u8>,
    records: u32,
}

impl WalBatch {
    /// An empty batch.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Add `record`, unless the batch would grow past [`MAX_BATCH_BODY`].
    pub(crate) fn push(&mut self, record: &Record) -> Result<(), BatchFull> {
        let len = record.encoded_len();
        if len > MAX_BATCH_BODY {
            return Err(BatchFull::TooLarge(len));
        }
        if self.body.len() + len > MAX_BATCH_BODY {
            return Err(BatchFull::Full { held: self.body.len(), record: len });
        }
        record.encode_into(&mut self.body);
        self.records += 1;
        Ok(())
    }

    /// `true` when no record was pushed.
    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes of the records pushed so far.
    pub(crate) fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Bytes the batch takes in its segment: header and body, rounded up to a whole block.
    pub(crate) fn framed_len(&self) -> usize {
        (BATCH_HEADER_LEN + self.body.len()).next_multiple_of(BLOCK)
    }

    /// The batch as written into the segment numbered `sequence` of the log salted with
    /// `salt`: header, body, zeros to the end of its last block.
    pub(crate) fn frame(&self, sequence: u64, salt: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.framed_len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // the CRC, below
        out.extend_from_slice(&sequence.to_le_bytes());
        let body_len = u32::try_from(self.body.len()).expect("MAX_BATCH_BODY fits a u32");
        out.extend_from_slice(&body_len.to_le_bytes());
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&self.body);
        let crc = checksum(salt, &out[8..BATCH_HEADER_LEN], &self.body);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out.resize(self.framed_len(), 0);
        out
    }
}

/// The CRC of a batch: the log's salt, the header after the CRC, the body.
fn checksum(salt: u64, header_rest: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(header_rest);
    hasher.update(body);
    hasher.finalize()
}

/// A batch's header, read from a block boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    crc: u32,
    sequence: u64,
    pub(crate) body_len: usize,
    records: u32,
}

/// What the [`BATCH_HEADER_LEN`] bytes at a block boundary hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderAt {
    /// Nothing was ever written there (all zeros): the end of the log in a fresh segment.
    Blank,
    /// A header of this segment whose body fits the segment; its CRC is checked with the body.
    Header(BatchHeader),
    /// Anything else: a torn write, a batch of the segment's previous life, or damage.
    Unreadable,
}

impl BatchHeader {
    /// Read the header in `bytes` for the segment numbered `sequence`, whose body may take at
    /// most `room` bytes.
    pub(crate) fn parse(bytes: &[u8; BATCH_HEADER_LEN], sequence: u64, room: usize) -> HeaderAt {
        if bytes.iter().all(|&b| b == 0) {
            return HeaderAt::Blank;
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let body_len = u32_at(16) as usize;
        if u32_at(0) != MAGIC || u64_at(8) != sequence || body_len > MAX_BATCH_BODY.min(room) {
            return HeaderAt::Unreadable;
        }
        HeaderAt::Header(BatchHeader { crc: u32_at(4), sequence, body_len, records: u32_at(20) })
    }

    /// The records of the batch with this header and `body`, if its CRC holds for the log
    /// salted with `salt` (`None` otherwise); an error if the CRC holds but the records do not
    /// decode (damage the CRC did not catch, or a bug: never a torn write).
    pub(crate) fn records(
        &self,
        salt: u64,
        header_bytes: &[u8; BATCH_HEADER_LEN],
        body: &[u8],
    ) -> Option<Result<Vec<Record>, String>> {
        if body.len() != self.body_len || checksum(salt, &header_bytes[8..], body) != self.crc {
            return None;
        }
        Some(self.decode_body(body))
    }

    fn decode_body(&self, mut body: &[u8]) -> Result<Vec<Record>, String> {
        let mut records = Vec::new();
        while !body.is_empty() {
            let (record, used) = Record::decode(body).map_err(|e| format!("record {}: {e}", records.len()))?;
            records.push(record);
            body = &body[used..];
        }
        if records.len() != self.records as usize {
            return Err(format!("the header counts {} records, the body holds {}", self.records, records.len()));
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal_record::RecordKind;

    const SALT: u64 = 0x5eed;

    fn entry(index: u64, len: usize) -> Record {
        Record { kind: RecordKind::Entry, namespace: 1, index, term: 1, payload: vec![index as u8; len] }
    }

    fn header_of(framed: &[u8]) -> [u8; BATCH_HEADER_LEN] {
        framed[..BATCH_HEADER_LEN].try_into().unwrap()
    }

    #[test]
    fn a_framed_batch_reads_back_and_fills_whole_blocks() {
        let mut batch = WalBatch::new();
        let records: Vec<Record> = (1..=3).map(|i| entry(i, 100 * i as usize)).collect();
        for r in &records {
            batch.push(r).unwrap();
        }
        let framed = batch.frame(42, SALT);
        assert_eq!(framed.len(), BLOCK);
        assert_eq!(framed.len(), batch.framed_len());
        let header = header_of(&framed);
        let HeaderAt::Header(parsed) = BatchHeader::parse(&header, 42, usize::MAX) else { panic!("not a header") };
        let body = &framed[BATCH_HEADER_LEN..BATCH_HEADER_LEN + parsed.body_len];
        assert_eq!(parsed.records(SALT, &header, body), Some(Ok(records)));
        assert_eq!(parsed.records(SALT + 1, &header, body), None, "framed by another log");
    }

    #[test]
    fn another_segments_batch_a_blank_block_and_damage_are_told_apart() {
        let mut batch = WalBatch::new();
        batch.push(&entry(1, 10)).unwrap();
        let framed = batch.frame(7, SALT);
        let header = header_of(&framed);
        assert_eq!(BatchHeader::parse(&header, 8, usize::MAX), HeaderAt::Unreadable, "older segment life");
        assert_eq!(BatchHeader::parse(&[0; BATCH_HEADER_LEN], 7, usize::MAX), HeaderAt::Blank);
        assert_eq!(BatchHeader::parse(&header, 7, 5), HeaderAt::Unreadable, "a body longer than the segment's room");
        // A flipped byte anywhere in header or body fails the CRC.
        let HeaderAt::Header(parsed) = BatchHeader::parse(&header, 7, usize::MAX) else { panic!() };
        let end = BATCH_HEADER_LEN + parsed.body_len;
        for at in (0..end).step_by(3) {
            let mut damaged = framed.clone();
            damaged[at] ^= 0x40;
            let h = header_of(&damaged);
            let readable = match BatchHeader::parse(&h, 7, usize::MAX) {
                HeaderAt::Header(p) => p.records(
                    SALT,
                    &h,
                    &damaged[BATCH_HEADER_LEN..BATCH_HEADER_LEN + p.body_len.min(end - BATCH_HEADER_LEN)],
                ),
                _ => None,
            };
            assert_eq!(readable, None, "a flip at byte {at} went unnoticed");
        }
    }

    #[test]
    fn a_batch_refuses_what_would_pass_its_bound() {
        let mut batch = WalBatch::new();
        assert_eq!(batch.push(&entry(1, MAX_BATCH_BODY)), Err(BatchFull::TooLarge(MAX_BATCH_BODY + 25)));
        assert!(batch.is_empty());
        batch.push(&entry(1, MAX_BATCH_BODY / 2)).unwrap();
        let held = MAX_BATCH_BODY / 2 + 25;
        assert_eq!(batch.push(&entry(2, MAX_BATCH_BODY / 2)), Err(BatchFull::Full { held, record: held }));
        assert!(!batch.is_empty());
    }
}
