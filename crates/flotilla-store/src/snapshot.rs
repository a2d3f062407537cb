//! The snapshot format: one self-checking byte stream, written and read in bounded memory.
//!
//! ```text
//! magic        8 bytes  "FLOTSNAP"
//! version      u32 LE   FORMAT_VERSION
//! header_len   u32 LE
//! header       encoded SnapshotHeader (last log id, last membership, snapshot id, dedup counter)
//! kv_count     u64 LE
//!   key_len u32 LE, key, value_len u32 LE, value            (kv_count times, key order)
//! dedup_count  u64 LE
//!   request id 16 bytes, payload_len u32 LE, payload        (dedup_count times)
//!     payload = insertion order u64 BE, encoded CommandResult
//! crc32        u32 LE   over every byte before it
//! ```
//!
//! The counts come before their sections, so a snapshot is written front to back in one pass
//! (the builder takes them from its read transaction) and never patched. This byte stream is
//! what openraft builds, sends and installs ([`crate::SnapshotData`]); in a store encrypted at
//! rest its *file* is sealed in segments (see [`crate::snapshot_segments`]).
//!
//! Decoding streams too: [`verify`] reads the whole snapshot once, checking every length
//! or count against the bytes that remain before it is used and the checksum at the end, so a
//! hostile or damaged snapshot yields an error, never a huge allocation or a panic; an install
//! then reads its records back in bounded batches ([`read_batch`]).

use std::io::{self, Read, Write};

use flotilla_core::CommandResult;
use openraft::alias::{LogIdOf, StoredMembershipOf};
use serde::{Deserialize, Serialize};

use crate::codec::decode_bounded;
use crate::error::StoreError;
use crate::tables::REQUEST_ID_LEN;
use crate::StoreConfig;

/// First bytes of every snapshot.
pub(crate) const MAGIC: [u8; 8] = *b"FLOTSNAP";
/// First bytes of a snapshot file sealed at rest.
pub(crate) const SEALED_MAGIC: [u8; 8] = *b"FLOTSEAL";
/// Version of the layout above.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Bytes of the insertion-order prefix of a dedup payload.
pub(crate) const ORDER_LEN: usize = 8;

/// Fixed-size parts: magic, version, header length, two counts, checksum.
const FIXED_LEN: u64 = 8 + 4 + 4 + 8 + 8 + 4;
/// Bytes of the checksum.
const CRC_LEN: u64 = 4;

/// What a snapshot says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct SnapshotHeader<C: StoreConfig> {
    /// Last log id included in the snapshot.
    pub(crate) last_log_id: Option<LogIdOf<C>>,
    /// Last membership included in the snapshot.
    pub(crate) last_membership: StoredMembershipOf<C>,
    /// Unique id of this snapshot (`<term>-<index>-<counter>`), for logs and operators.
    pub(crate) snapshot_id: String,
    /// Next insertion-order number of the dedup table.
    pub(crate) dedup_next: u64,
}

/// Writes a snapshot section by section to `out`, checksumming as it goes. The number of
/// records of each section is given up front and enforced.
pub(crate) struct SnapshotEncoder<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    /// Records still expected in the current section.
    left: u64,
    dedup_count: u64,
}

impl<W: Write> SnapshotEncoder<W> {
    /// Start a snapshot with `header`, announcing `kv_count` pairs and `dedup_count` dedup
    /// records; the kv section follows.
    pub(crate) fn new<C: StoreConfig>(
        out: W,
        header: &SnapshotHeader<C>,
        kv_count: u64,
        dedup_count: u64,
    ) -> Result<Self, StoreError> {
        let header = flotilla_core::encode(header).map_err(|e| StoreError::Encode(e.to_string()))?;
        let header_len = len_u32(header.len(), "snapshot header")?;
        let mut enc = Self { out, crc: crc32fast::Hasher::new(), left: kv_count, dedup_count };
        enc.put(&MAGIC)?;
        enc.put(&FORMAT_VERSION.to_le_bytes())?;
        enc.put(&header_len.to_le_bytes())?;
        enc.put(&header)?;
        enc.put(&kv_count.to_le_bytes())?;
        Ok(enc)
    }

    /// Append one key/value pair (in key order).
    pub(crate) fn push_kv(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.count_one("key/value pairs")?;
        self.put_bytes(key, "snapshot key")?;
        self.put_bytes(value, "snapshot value")
    }

    /// Close the kv section and open the dedup section.
    pub(crate) fn start_dedup(&mut self) -> Result<(), StoreError> {
        self.check_section_done("key/value pairs")?;
        self.left = self.dedup_count;
        self.put(&self.dedup_count.to_le_bytes())
    }

    /// Append one dedup record: the request id key and its `[order][CommandResult]` payload.
    pub(crate) fn push_dedup(&mut self, id: &[u8], payload: &[u8]) -> Result<(), StoreError> {
        if id.len() != REQUEST_ID_LEN {
            return Err(StoreError::corrupt(format!("dedup key of {} bytes, expected {REQUEST_ID_LEN}", id.len())));
        }
        self.count_one("dedup records")?;
        self.put(id)?;
        self.put_bytes(payload, "dedup payload")
    }

    /// Close the dedup section, append the checksum and return the output.
    pub(crate) fn finish(mut self) -> Result<W, StoreError> {
        self.check_section_done("dedup records")?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes()).map_err(|e| StoreError::from_io("writing a snapshot", e))?;
        Ok(self.out)
    }

    fn count_one(&mut self, what: &str) -> Result<(), StoreError> {
        self.left = self
            .left
            .checked_sub(1)
            .ok_or_else(|| StoreError::Invalid(format!("more {what} than announced in the snapshot")))?;
        Ok(())
    }

    fn check_section_done(&self, what: &str) -> Result<(), StoreError> {
        if self.left != 0 {
            return Err(StoreError::Invalid(format!("{} {what} announced in the snapshot are missing", self.left)));
        }
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.crc.update(bytes);
        self.out.write_all(bytes).map_err(|e| StoreError::from_io("writing a snapshot", e))
    }

    fn put_bytes(&mut self, bytes: &[u8], what: &str) -> Result<(), StoreError> {
        self.put(&len_u32(bytes.len(), what)?.to_le_bytes())?;
        self.put(bytes)
    }
}

fn len_u32(len: usize, what: &str) -> Result<u32, StoreError> {
    u32::try_from(len).map_err(|_| StoreError::Invalid(format!("{what} of {len} bytes is too large for a snapshot")))
}

/// A bounds-checked reader over the body of a snapshot (everything before the checksum) of a
/// known length: nothing is read or allocated beyond what remains of it.
struct Stream<R: Read> {
    src: R,
    /// Position in the snapshot.
    pos: u64,
    /// Bytes of the body.
    body_len: u64,
    /// Checksum of what was read, when verifying.
    crc: Option<crc32fast::Hasher>,
    /// Bytes records are skipped through (grown to at most [`SKIP_BYTES`]).
    scratch: Vec<u8>,
}

/// Scratch bytes used to skip over records without keeping them.
const SKIP_BYTES: usize = 64 << 10;

impl<R: Read> Stream<R> {
    fn remaining(&self) -> u64 {
        self.body_len.saturating_sub(self.pos)
    }

    fn check(&self, n: u64, what: &str) -> Result<(), StoreError> {
        if n > self.remaining() {
            return Err(StoreError::corrupt(format!(
                "snapshot truncated: {what} needs {n} bytes at offset {}, {} remain",
                self.pos,
                self.remaining()
            )));
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.src.read_exact(buf).map_err(|e| StoreError::from_io("reading a snapshot", e))?;
        if let Some(crc) = &mut self.crc {
            crc.update(buf);
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn take(&mut self, n: u64, what: &str) -> Result<Vec<u8>, StoreError> {
        self.check(n, what)?;
        let mut out = vec![0u8; n as usize];
        self.fill(&mut out)?;
        Ok(out)
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), StoreError> {
        self.check(n, what)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(SKIP_BYTES.min(n as usize).max(scratch.len()), 0);
        let mut left = n;
        let result = loop {
            if left == 0 {
                break Ok(());
            }
            let step = left.min(scratch.len() as u64) as usize;
            if let Err(e) = self.fill(&mut scratch[..step]) {
                break Err(e);
            }
            left -= step as u64;
        };
        self.scratch = scratch;
        result
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], StoreError> {
        self.check(N as u64, what)?;
        let mut out = [0u8; N];
        self.fill(&mut out)?;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, StoreError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, StoreError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn bytes(&mut self, what: &str) -> Result<Vec<u8>, StoreError> {
        let len = self.u32(what)?;
        self.take(u64::from(len), what)
    }

    fn skip_bytes(&mut self, what: &str) -> Result<(), StoreError> {
        let len = self.u32(what)?;
        self.skip(u64::from(len), what)
    }
}

/// A snapshot whose checksum and structure have been verified, and where its sections start.
pub(crate) struct Verified<C: StoreConfig> {
    /// The header.
    pub(crate) header: SnapshotHeader<C>,
    /// Start of the key/value section.
    pub(crate) kv: RecordsPos,
    /// Start of the dedup section.
    pub(crate) dedup: RecordsPos,
}

/// Verify the snapshot of `len` bytes read from `src` completely (magic, version, every
/// length, every dedup result, the checksum), reading it exactly once, front to back, in
/// bounded memory.
pub(crate) fn verify<C: StoreConfig>(src: impl Read, len: u64) -> Result<Verified<C>, StoreError> {
    if len < FIXED_LEN {
        return Err(StoreError::corrupt(format!("snapshot of {len} bytes is shorter than the minimum {FIXED_LEN}")));
    }
    let mut r =
        Stream { src, pos: 0, body_len: len - CRC_LEN, crc: Some(crc32fast::Hasher::new()), scratch: Vec::new() };
    if r.array::<8>("magic")? != MAGIC {
        return Err(StoreError::corrupt("not a flotilla snapshot (bad magic)"));
    }
    let version = r.u32("format version")?;
    if version != FORMAT_VERSION {
        return Err(StoreError::corrupt(format!(
            "snapshot format version {version} is not supported (this build reads {FORMAT_VERSION})"
        )));
    }
    let header_bytes = r.bytes("header")?;
    let header: SnapshotHeader<C> = decode_bounded(&header_bytes, &|| "snapshot header".to_string())?;

    let kv_count = r.u64("kv count")?;
    let kv = RecordsPos { pos: r.pos, left: kv_count };
    for _ in 0..kv_count {
        r.skip_bytes("kv key")?;
        r.skip_bytes("kv value")?;
    }

    let dedup_count = r.u64("dedup count")?;
    let dedup = RecordsPos { pos: r.pos, left: dedup_count };
    for _ in 0..dedup_count {
        r.skip(REQUEST_ID_LEN as u64, "dedup request id")?;
        check_dedup_payload(&r.bytes("dedup payload")?)?;
    }

    if r.remaining() != 0 {
        return Err(StoreError::corrupt(format!("snapshot has {} unexpected trailing bytes", r.remaining())));
    }
    let actual = r.crc.take().map(|c| c.finalize()).unwrap_or_default();
    let mut stored = [0u8; CRC_LEN as usize];
    r.src.read_exact(&mut stored).map_err(|e| StoreError::from_io("reading a snapshot", e))?;
    let stored = u32::from_le_bytes(stored);
    if stored != actual {
        return Err(StoreError::corrupt(format!(
            "snapshot checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        )));
    }
    Ok(Verified { header, kv, dedup })
}

/// A dedup payload is `[order u64 BE][encoded CommandResult]`.
fn check_dedup_payload(payload: &[u8]) -> Result<(), StoreError> {
    let result = payload
        .get(ORDER_LEN..)
        .ok_or_else(|| StoreError::corrupt(format!("dedup payload of {} bytes is too short", payload.len())))?;
    decode_bounded::<CommandResult>(result, &|| "snapshot dedup result".to_string())?;
    Ok(())
}

/// The insertion order stored at the front of a dedup payload.
pub(crate) fn dedup_order(payload: &[u8]) -> Result<u64, StoreError> {
    let head = payload
        .first_chunk::<ORDER_LEN>()
        .ok_or_else(|| StoreError::corrupt(format!("dedup payload of {} bytes is too short", payload.len())))?;
    Ok(u64::from_be_bytes(*head))
}

/// The two sections of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// Key/value pairs: `(key, value)`.
    Kv,
    /// Dedup records: `(request id key, payload)`.
    Dedup,
}

/// Where the reading of a section stands, so it can go on later (an install loads a snapshot
/// in several writer jobs): the byte offset of the next record and how many remain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordsPos {
    pos: u64,
    left: u64,
}

impl RecordsPos {
    /// Records of the section not read yet (all of them, as [`verify`] returns it).
    pub(crate) fn left(&self) -> u64 {
        self.left
    }

    /// Whether every record of the section has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.left == 0
    }

    /// Byte offset of the next record in the snapshot.
    pub(crate) fn offset(&self) -> u64 {
        self.pos
    }
}

/// One record of a section: `(key, value)` or `(request id key, payload)`.
pub(crate) type Record = (Vec<u8>, Vec<u8>);

/// Read the records of `section` from `at`, `src` reading the snapshot of `len` bytes from
/// `at.offset()`, until `max_records` records or `max_bytes` bytes (a single larger record is
/// a batch alone) or the section's end. Returns them and where the next batch starts. Lengths
/// stay bounds-checked, so a damaged file yields an error, never a panic.
pub(crate) fn read_batch(
    src: impl Read,
    len: u64,
    section: Section,
    at: RecordsPos,
    max_records: usize,
    max_bytes: usize,
) -> Result<(Vec<Record>, RecordsPos), StoreError> {
    let mut r = Stream { src, pos: at.pos, body_len: len.saturating_sub(CRC_LEN), crc: None, scratch: Vec::new() };
    let (mut out, mut bytes, mut left) = (Vec::new(), 0usize, at.left);
    while left > 0 && out.len() < max_records && bytes < max_bytes {
        let record = match section {
            Section::Kv => (r.bytes("kv key")?, r.bytes("kv value")?),
            Section::Dedup => (r.take(REQUEST_ID_LEN as u64, "dedup request id")?, r.bytes("dedup payload")?),
        };
        bytes += record.0.len() + record.1.len();
        out.push(record);
        left -= 1;
    }
    Ok((out, RecordsPos { pos: r.pos, left }))
}

/// Copies everything read from `src` to `out`: a snapshot is verified and saved in one pass.
pub(crate) struct Tee<R, W> {
    src: R,
    out: W,
}

impl<R: Read, W: Write> Tee<R, W> {
    /// Read from `src`, copying to `out`.
    pub(crate) fn new(src: R, out: W) -> Self {
        Self { src, out }
    }
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use flotilla_core::TypeConfig;

    use super::*;

    fn header() -> SnapshotHeader<TypeConfig> {
        SnapshotHeader {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "none-0-1".into(),
            dedup_next: 3,
        }
    }

    fn sample() -> Vec<u8> {
        let mut enc = SnapshotEncoder::new(Vec::new(), &header(), 2, 1).unwrap();
        enc.push_kv(b"a", b"1").unwrap();
        enc.push_kv(b"", b"").unwrap();
        enc.start_dedup().unwrap();
        let mut payload = 2u64.to_be_bytes().to_vec();
        payload.extend_from_slice(&flotilla_core::encode(&CommandResult { output: Ok(vec![9]) }).unwrap());
        enc.push_dedup(&[7u8; REQUEST_ID_LEN], &payload).unwrap();
        enc.finish().unwrap()
    }

    fn parse(data: &[u8]) -> Result<Verified<TypeConfig>, StoreError> {
        verify::<TypeConfig>(data, data.len() as u64)
    }

    fn records(data: &[u8], section: Section, at: RecordsPos) -> Vec<Record> {
        let (batch, next) =
            read_batch(&data[at.offset() as usize..], data.len() as u64, section, at, 100, 1 << 20).unwrap();
        assert!(next.is_done());
        batch
    }

    /// Replace the checksum after editing, so the structural checks themselves are exercised.
    fn reseal(mut data: Vec<u8>) -> Vec<u8> {
        let body = data.len() - 4;
        let crc = crc32fast::hash(&data[..body]);
        data[body..].copy_from_slice(&crc.to_le_bytes());
        data
    }

    fn header_len(data: &[u8]) -> usize {
        u32::from_le_bytes([data[12], data[13], data[14], data[15]]) as usize
    }

    #[test]
    fn round_trip() {
        let data = sample();
        let parsed = parse(&data).unwrap();
        assert_eq!(parsed.header, header());
        let kv = records(&data, Section::Kv, parsed.kv);
        assert_eq!(kv, vec![(b"a".to_vec(), b"1".to_vec()), (Vec::new(), Vec::new())]);
        let dedup = records(&data, Section::Dedup, parsed.dedup);
        assert_eq!(dedup.len(), 1);
        assert_eq!(dedup_order(&dedup[0].1).unwrap(), 2);
    }

    #[test]
    fn batches_resume_where_they_stopped() {
        let mut enc = SnapshotEncoder::new(Vec::new(), &header(), 5, 0).unwrap();
        for i in 0..5u8 {
            enc.push_kv(&[i], &[i; 10]).unwrap();
        }
        enc.start_dedup().unwrap();
        let data = enc.finish().unwrap();
        let mut at = parse(&data).unwrap().kv;
        let mut seen = Vec::new();
        while !at.is_done() {
            let src = &data[at.offset() as usize..];
            let (batch, next) = read_batch(src, data.len() as u64, Section::Kv, at, 2, 1 << 20).unwrap();
            assert!(batch.len() <= 2);
            seen.extend(batch.into_iter().map(|(k, _)| k[0]));
            at = next;
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn the_encoder_enforces_its_counts() {
        let mut enc = SnapshotEncoder::new(Vec::new(), &header(), 1, 0).unwrap();
        assert!(matches!(enc.start_dedup(), Err(StoreError::Invalid(_))), "a pair is missing");
        let mut enc = SnapshotEncoder::new(Vec::new(), &header(), 0, 0).unwrap();
        assert!(matches!(enc.push_kv(b"k", b"v"), Err(StoreError::Invalid(_))), "one pair too many");
    }

    #[test]
    fn lengths_are_checked_before_use() {
        let good = sample();
        let kv_count_at = 16 + header_len(&good);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("huge kv count", {
                let mut d = good.clone();
                d[kv_count_at..kv_count_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
                d
            }),
            ("huge key length", {
                let mut d = good.clone();
                d[kv_count_at + 8..kv_count_at + 12].copy_from_slice(&u32::MAX.to_le_bytes());
                d
            }),
            ("huge header length", {
                let mut d = good.clone();
                d[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
                d
            }),
            ("unknown version", {
                let mut d = good.clone();
                d[8..12].copy_from_slice(&2u32.to_le_bytes());
                d
            }),
            ("trailing byte", {
                let mut d = good.clone();
                d.insert(d.len() - 4, 0);
                d
            }),
            ("short dedup payload", {
                // Shrink the dedup payload length so it no longer holds its order number.
                let mut d = good.clone();
                let payload_len = 8 + flotilla_core::encode(&CommandResult { output: Ok(vec![9]) }).unwrap().len();
                let len_at = d.len() - 4 - payload_len - 4;
                assert_eq!(d[len_at..len_at + 4], (payload_len as u32).to_le_bytes());
                d[len_at..len_at + 4].copy_from_slice(&4u32.to_le_bytes());
                d.drain(len_at + 4 + 4..len_at + 4 + payload_len);
                d
            }),
        ];
        for (what, bad) in cases {
            let err = parse(&reseal(bad)).err();
            assert!(matches!(err, Some(StoreError::Corrupt(_))), "{what}: {err:?}");
        }
    }

    #[test]
    fn checksum_and_magic_are_checked() {
        let good = sample();
        for pos in 0..good.len() {
            let mut bad = good.clone();
            bad[pos] ^= 0x80;
            assert!(parse(&bad).is_err(), "flip at {pos}");
        }
        for len in 0..good.len() {
            assert!(parse(&good[..len]).is_err(), "truncated to {len}");
            // A stream shorter than the length it claims is an error too, not a panic.
            assert!(matches!(verify::<TypeConfig>(&good[..len], good.len() as u64), Err(StoreError::Corrupt(_))));
        }
    }

    #[test]
    fn a_batch_past_a_damaged_length_is_an_error() {
        let good = sample();
        let at = parse(&good).unwrap().kv;
        let mut bad = good.clone();
        let at_len = at.offset() as usize;
        bad[at_len..at_len + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = read_batch(&bad[at_len..], bad.len() as u64, Section::Kv, at, 10, 1 << 20).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }
}
