//! The snapshot format: one self-checking byte string.
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
//! In a store encrypted at rest, the snapshot *file* holds that byte string sealed as one
//! record, behind a header that stays readable:
//!
//! ```text
//! magic        8 bytes  "FLOTSEAL"
//! version      1 byte   sealed-record layout (crate::at_rest)
//! key id       8 bytes  the key it is sealed with
//! nonce       12 bytes
//! ciphertext            of the whole snapshot above; context "snapshot/<ns>"
//! tag         16 bytes
//! ```
//!
//! The snapshot openraft builds, sends and installs is always the plaintext byte string.
//!
//! Decoding is bounded: the checksum is verified before anything else is trusted, and every
//! length or count is checked against the bytes that remain before it is used, so a hostile or
//! damaged snapshot yields an error, never a huge allocation or a panic.

use std::marker::PhantomData;

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
const FIXED_LEN: usize = 8 + 4 + 4 + 8 + 8 + 4;

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

/// Builds a snapshot byte string section by section.
pub(crate) struct SnapshotEncoder {
    buf: Vec<u8>,
    count_at: usize,
    count: u64,
}

impl SnapshotEncoder {
    /// Start a snapshot with `header`; the kv section follows.
    pub(crate) fn new<C: StoreConfig>(header: &SnapshotHeader<C>) -> Result<Self, StoreError> {
        let header = flotilla_core::encode(header).map_err(|e| StoreError::Encode(e.to_string()))?;
        let header_len = len_u32(header.len(), "snapshot header")?;
        let mut buf = Vec::with_capacity(FIXED_LEN + header.len());
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&header_len.to_le_bytes());
        buf.extend_from_slice(&header);
        let count_at = buf.len();
        buf.extend_from_slice(&0u64.to_le_bytes());
        Ok(Self { buf, count_at, count: 0 })
    }

    /// Append one key/value pair (in key order).
    pub(crate) fn push_kv(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.push_bytes(key, "snapshot key")?;
        self.push_bytes(value, "snapshot value")?;
        self.count += 1;
        Ok(())
    }

    /// Close the kv section and open the dedup section.
    pub(crate) fn start_dedup(&mut self) {
        self.patch_count();
        self.count_at = self.buf.len();
        self.count = 0;
        self.buf.extend_from_slice(&0u64.to_le_bytes());
    }

    /// Append one dedup record: the request id key and its `[order][CommandResult]` payload.
    pub(crate) fn push_dedup(&mut self, id: &[u8], payload: &[u8]) -> Result<(), StoreError> {
        if id.len() != REQUEST_ID_LEN {
            return Err(StoreError::corrupt(format!("dedup key of {} bytes, expected {REQUEST_ID_LEN}", id.len())));
        }
        self.buf.extend_from_slice(id);
        self.push_bytes(payload, "dedup payload")?;
        self.count += 1;
        Ok(())
    }

    /// Close the dedup section and append the checksum.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.patch_count();
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }

    fn push_bytes(&mut self, bytes: &[u8], what: &str) -> Result<(), StoreError> {
        self.buf.extend_from_slice(&len_u32(bytes.len(), what)?.to_le_bytes());
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn patch_count(&mut self) {
        let bytes = self.count.to_le_bytes();
        if let Some(slot) = self.buf.get_mut(self.count_at..self.count_at + 8) {
            slot.copy_from_slice(&bytes);
        }
    }
}

fn len_u32(len: usize, what: &str) -> Result<u32, StoreError> {
    u32::try_from(len).map_err(|_| StoreError::Invalid(format!("{what} of {len} bytes is too large for a snapshot")))
}

/// A bounds-checked reader over a byte slice.
#[derive(Clone)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], StoreError> {
        if n > self.remaining() {
            return Err(StoreError::corrupt(format!(
                "snapshot truncated: {what} needs {n} bytes at offset {}, {} remain",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], StoreError> {
        let bytes = self.take(N, what)?;
        bytes.try_into().map_err(|_| StoreError::corrupt(format!("snapshot: cannot read {what}")))
    }

    fn u32(&mut self, what: &str) -> Result<u32, StoreError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, StoreError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], StoreError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }
}

/// A snapshot whose checksum and structure have been verified; its records borrow the input.
pub(crate) struct ParsedSnapshot<'a, C: StoreConfig> {
    /// The header.
    pub(crate) header: SnapshotHeader<C>,
    kv: Reader<'a>,
    kv_count: u64,
    dedup: Reader<'a>,
    dedup_count: u64,
}

impl<'a, C: StoreConfig> ParsedSnapshot<'a, C> {
    /// Verify `data` completely (magic, version, checksum, every length, every dedup result)
    /// and index its sections.
    pub(crate) fn parse(data: &'a [u8]) -> Result<Self, StoreError> {
        if data.len() < FIXED_LEN {
            return Err(StoreError::corrupt(format!(
                "snapshot of {} bytes is shorter than the minimum {FIXED_LEN}",
                data.len()
            )));
        }
        if !data.starts_with(&MAGIC) {
            return Err(StoreError::corrupt("not a flotilla snapshot (bad magic)"));
        }
        let Some((body, crc)) = data.split_last_chunk::<4>() else {
            return Err(StoreError::corrupt("snapshot too short for its checksum"));
        };
        let stored = u32::from_le_bytes(*crc);
        let actual = crc32fast::hash(body);
        if stored != actual {
            return Err(StoreError::corrupt(format!(
                "snapshot checksum mismatch (stored {stored:08x}, computed {actual:08x})"
            )));
        }
        Self::parse_checksummed(data)
    }

    /// Parse a snapshot whose checksum [`Self::parse`] has already verified, without hashing
    /// every byte again (the install job runs on the node-wide writer thread). Structure and
    /// bounds are still checked.
    pub(crate) fn parse_checksummed(data: &'a [u8]) -> Result<Self, StoreError> {
        let Some((body, _crc)) = data.split_last_chunk::<4>() else {
            return Err(StoreError::corrupt("snapshot too short for its checksum"));
        };
        let mut r = Reader::new(body);
        r.take(MAGIC.len(), "magic")?;
        let version = r.u32("format version")?;
        if version != FORMAT_VERSION {
            return Err(StoreError::corrupt(format!(
                "snapshot format version {version} is not supported (this build reads {FORMAT_VERSION})"
            )));
        }
        let header_bytes = r.bytes("header")?;
        let header: SnapshotHeader<C> = decode_bounded(header_bytes, &|| "snapshot header".to_string())?;

        let kv_count = r.u64("kv count")?;
        let kv = r.clone();
        for _ in 0..kv_count {
            r.bytes("kv key")?;
            r.bytes("kv value")?;
        }

        let dedup_count = r.u64("dedup count")?;
        let dedup = r.clone();
        for _ in 0..dedup_count {
            r.take(REQUEST_ID_LEN, "dedup request id")?;
            let payload = r.bytes("dedup payload")?;
            check_dedup_payload(payload)?;
        }

        if r.remaining() != 0 {
            return Err(StoreError::corrupt(format!("snapshot has {} unexpected trailing bytes", r.remaining())));
        }
        Ok(Self { header, kv, kv_count, dedup, dedup_count })
    }

    /// The key/value pairs, in the order they were written.
    pub(crate) fn kv(&self) -> Records<'a, KvRecord> {
        Records { r: self.kv.clone(), left: self.kv_count, _kind: PhantomData }
    }

    /// The dedup records.
    pub(crate) fn dedup(&self) -> Records<'a, DedupRecord> {
        Records { r: self.dedup.clone(), left: self.dedup_count, _kind: PhantomData }
    }
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

/// Marker: records of the kv section.
pub(crate) struct KvRecord;
/// Marker: records of the dedup section.
pub(crate) struct DedupRecord;

/// Iterator over the records of one section of a parsed snapshot.
pub(crate) struct Records<'a, K> {
    r: Reader<'a>,
    left: u64,
    _kind: PhantomData<K>,
}

/// Where the iteration of a section stands, so it can go on later (an install loads a
/// snapshot in several writer jobs): the byte offset of the next record and how many remain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordsPos {
    pos: usize,
    left: u64,
}

impl RecordsPos {
    /// Whether every record of the section has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.left == 0
    }
}

impl<'a, K> Records<'a, K> {
    /// Where this iterator stands.
    pub(crate) fn pos(&self) -> RecordsPos {
        RecordsPos { pos: self.r.pos, left: self.left }
    }

    /// Go on from `at`, taken from the [`Records`] of a [`ParsedSnapshot`] of the same `data`.
    /// Reads stay bounds-checked, so a wrong position yields an error, never a panic.
    pub(crate) fn resume(data: &'a [u8], at: RecordsPos) -> Self {
        let body = data.split_last_chunk::<4>().map_or(&[][..], |(body, _)| body);
        let pos = at.pos.min(body.len());
        Records { r: Reader { buf: body, pos }, left: at.left, _kind: PhantomData }
    }
}

impl<'a> Iterator for Records<'a, KvRecord> {
    /// `(key, value)`.
    type Item = Result<(&'a [u8], &'a [u8]), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(self.r.bytes("kv key").and_then(|k| Ok((k, self.r.bytes("kv value")?))))
    }
}

impl<'a> Iterator for Records<'a, DedupRecord> {
    /// `(request id key, payload)`.
    type Item = Result<(&'a [u8], &'a [u8]), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(self.r.take(REQUEST_ID_LEN, "dedup request id").and_then(|k| Ok((k, self.r.bytes("dedup payload")?))))
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
        let mut enc = SnapshotEncoder::new(&header()).unwrap();
        enc.push_kv(b"a", b"1").unwrap();
        enc.push_kv(b"", b"").unwrap();
        enc.start_dedup();
        let mut payload = 2u64.to_be_bytes().to_vec();
        payload.extend_from_slice(&flotilla_core::encode(&CommandResult { output: Ok(vec![9]) }).unwrap());
        enc.push_dedup(&[7u8; REQUEST_ID_LEN], &payload).unwrap();
        enc.finish()
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
        let parsed = ParsedSnapshot::<TypeConfig>::parse(&data).unwrap();
        assert_eq!(parsed.header, header());
        let kv: Vec<_> = parsed.kv().collect::<Result<_, _>>().unwrap();
        assert_eq!(kv, vec![(&b"a"[..], &b"1"[..]), (&b""[..], &b""[..])]);
        let dedup: Vec<_> = parsed.dedup().collect::<Result<_, _>>().unwrap();
        assert_eq!(dedup.len(), 1);
        assert_eq!(dedup_order(dedup[0].1).unwrap(), 2);
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
            let err = ParsedSnapshot::<TypeConfig>::parse(&reseal(bad)).err();
            assert!(matches!(err, Some(StoreError::Corrupt(_))), "{what}: {err:?}");
        }
    }

    #[test]
    fn checksum_and_magic_are_checked() {
        let good = sample();
        for pos in 0..good.len() {
            let mut bad = good.clone();
            bad[pos] ^= 0x80;
            assert!(ParsedSnapshot::<TypeConfig>::parse(&bad).is_err(), "flip at {pos}");
        }
        for len in 0..good.len() {
            assert!(ParsedSnapshot::<TypeConfig>::parse(&good[..len]).is_err(), "truncated to {len}");
        }
    }
}
