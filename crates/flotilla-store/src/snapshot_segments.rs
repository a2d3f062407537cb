//! Snapshot files sealed at rest in fixed-size segments, so they are written and read in
//! bounded memory.
//!
//! ```text
//! magic         8 bytes  "FLOTSEAL"
//! layout        1 byte   LAYOUT_SEGMENTED (2)
//! segment size  u32 LE   plaintext bytes of every segment but the last
//! segments               each a sealed record (crate::at_rest) of its plaintext
//! ```
//!
//! Every segment but the last holds exactly `segment size` plaintext bytes; the last holds the
//! rest (one empty segment for an empty snapshot), so a segment's position and length follow
//! from the file length alone. Each segment has its own random nonce, and its associated data
//! binds it to the namespace, the segment size, its index and whether it is the last one: a
//! segment moved, swapped, dropped, or a file truncated at a segment boundary (its new last
//! segment was not sealed as the last) fails authentication.
//!
//! Layout 1 (before segments) was `FLOTSEAL` followed by the whole snapshot sealed as one
//! record, whose first byte, the sealed-record version, is 1; such a file is converted to
//! segments once, when the store opens ([`crate::snapshot_file::SnapshotFiles::upgrade`]).

use std::io::{self, Write};
use std::sync::Arc;

use crate::at_rest::{AtRestCipher, SEAL_OVERHEAD};
use crate::error::StoreError;
use crate::snapshot::SEALED_MAGIC;

/// Layout byte of a file sealed in segments.
pub(crate) const LAYOUT_SEGMENTED: u8 = 2;
/// Layout byte of a file sealed as one record (the sealed-record version that follows the magic).
pub(crate) const LAYOUT_WHOLE: u8 = 1;
/// Bytes before the first segment.
pub(crate) const HEADER_LEN: u64 = SEALED_MAGIC.len() as u64 + 1 + 4;
/// Plaintext bytes per segment written by this build.
pub(crate) const SEGMENT_BYTES: u32 = 1 << 20;
/// Largest segment size a file may announce (a damaged header must not cause a huge allocation).
const MAX_SEGMENT_BYTES: u32 = 64 << 20;

/// How to open the segments of one file: the cipher, the namespace context and the geometry.
#[derive(Clone)]
pub(crate) struct Segments {
    cipher: Arc<AtRestCipher>,
    context: Arc<[u8]>,
    segment: u32,
    file_len: u64,
}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments").field("segment", &self.segment).field("file_len", &self.file_len).finish()
    }
}

impl Segments {
    /// The geometry of a segmented file of `file_len` bytes whose header is `header`; returns
    /// it with the plaintext length. `context` is the namespace's snapshot context.
    pub(crate) fn parse(
        cipher: Arc<AtRestCipher>,
        context: &[u8],
        header: &[u8; HEADER_LEN as usize],
        file_len: u64,
    ) -> Result<(Self, u64), StoreError> {
        if header[..SEALED_MAGIC.len()] != SEALED_MAGIC || header[SEALED_MAGIC.len()] != LAYOUT_SEGMENTED {
            return Err(StoreError::AtRestCorrupt("not a snapshot file sealed in segments".into()));
        }
        let size_at = SEALED_MAGIC.len() + 1;
        let segment =
            u32::from_le_bytes([header[size_at], header[size_at + 1], header[size_at + 2], header[size_at + 3]]);
        if segment == 0 || segment > MAX_SEGMENT_BYTES {
            return Err(StoreError::AtRestCorrupt(format!("snapshot segment size {segment} is out of range")));
        }
        let full = u64::from(segment) + SEAL_OVERHEAD as u64;
        let body = file_len.saturating_sub(HEADER_LEN);
        let (whole, rest) = (body / full, body % full);
        let segments = match rest {
            0 if whole > 0 => whole,
            r if r >= SEAL_OVERHEAD as u64 => whole + 1,
            _ => {
                return Err(StoreError::AtRestCorrupt(format!(
                    "sealed snapshot file of {file_len} bytes does not end with a whole segment"
                )))
            }
        };
        let plain = body - segments * SEAL_OVERHEAD as u64;
        Ok((Self { cipher, context: context.into(), segment, file_len }, plain))
    }

    /// Plaintext bytes per segment.
    pub(crate) fn segment_bytes(&self) -> u64 {
        u64::from(self.segment)
    }

    /// Where segment `index` lies in the file, and its stored length.
    pub(crate) fn span(&self, index: u64) -> (u64, usize) {
        let full = self.segment_bytes() + SEAL_OVERHEAD as u64;
        let start = HEADER_LEN.saturating_add(index.saturating_mul(full));
        let len = full.min(self.file_len.saturating_sub(start));
        (start, len as usize)
    }

    /// Open segment `index`, read from the file as `stored`.
    pub(crate) fn open(&self, index: u64, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (start, len) = self.span(index);
        let last = start + len as u64 == self.file_len;
        let ad = associated_data(&self.context, self.segment, index, last);
        self.cipher.open(&ad, stored).map_err(|e| match e {
            StoreError::AtRestCorrupt(msg) => StoreError::AtRestCorrupt(format!("snapshot segment {index}: {msg}")),
            other => other,
        })
    }
}

/// What a segment's seal is bound to: the namespace, the geometry, its place, whether it ends
/// the file.
fn associated_data(context: &[u8], segment: u32, index: u64, last: bool) -> Vec<u8> {
    let mut ad = Vec::with_capacity(context.len() + 4 + 8 + 1);
    ad.extend_from_slice(context);
    ad.extend_from_slice(&segment.to_le_bytes());
    ad.extend_from_slice(&index.to_le_bytes());
    ad.push(u8::from(last));
    ad
}

/// Writes a snapshot to `out` sealed in segments; memory is one segment.
pub(crate) struct SegmentWriter<W: Write> {
    out: W,
    cipher: Arc<AtRestCipher>,
    context: Vec<u8>,
    buf: Vec<u8>,
    index: u64,
}

impl<W: Write> SegmentWriter<W> {
    /// Start a file on `out`: writes the header.
    pub(crate) fn new(mut out: W, cipher: Arc<AtRestCipher>, context: Vec<u8>) -> io::Result<Self> {
        out.write_all(&SEALED_MAGIC)?;
        out.write_all(&[LAYOUT_SEGMENTED])?;
        out.write_all(&SEGMENT_BYTES.to_le_bytes())?;
        Ok(Self { out, cipher, context, buf: Vec::with_capacity(SEGMENT_BYTES as usize), index: 0 })
    }

    /// Seal the buffered segment (the last one when `last`) and write it.
    fn seal(&mut self, last: bool) -> io::Result<()> {
        let ad = associated_data(&self.context, SEGMENT_BYTES, self.index, last);
        let sealed = self.cipher.seal(&ad, &self.buf).map_err(|e| e.to_io())?;
        self.out.write_all(&sealed)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    /// Seal the last segment and return the output.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for SegmentWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if bytes.is_empty() {
            return Ok(0);
        }
        // A full segment is sealed only once more data comes: until then it may be the last.
        if self.buf.len() == SEGMENT_BYTES as usize {
            self.seal(false)?;
        }
        let n = bytes.len().min(SEGMENT_BYTES as usize - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::at_rest::AtRestKey;
    use crate::snapshot_data::SnapshotData;

    const CONTEXT: &[u8] = b"snapshot/alpha\0";

    fn cipher() -> Arc<AtRestCipher> {
        Arc::new(AtRestCipher::new([AtRestKey { id: [3; 8], key: [9; 32] }], [3; 8]).unwrap())
    }

    fn sealed(plain: &[u8]) -> Vec<u8> {
        let mut w = SegmentWriter::new(Vec::new(), cipher(), CONTEXT.to_vec()).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap()
    }

    /// Read `file` back as a snapshot sealed in segments under `context`.
    fn read(file: &[u8], context: &[u8]) -> Result<Vec<u8>, StoreError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, file).unwrap();
        let data =
            SnapshotData::sealed(std::fs::File::open(&path).unwrap(), file.len() as u64, cipher(), context, None)?;
        let mut out = Vec::new();
        data.reader().read_to_end(&mut out).map_err(|e| StoreError::from_io("reading", e))?;
        assert_eq!(out.len() as u64, data.len());
        Ok(out)
    }

    fn plain(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_every_segment_boundary() {
        let seg = SEGMENT_BYTES as usize;
        for len in [0, 1, seg - 1, seg, seg + 1, 2 * seg, 2 * seg + 7] {
            let p = plain(len);
            let file = sealed(&p);
            let segments = len.div_ceil(seg).max(1);
            assert_eq!(file.len(), HEADER_LEN as usize + len + segments * SEAL_OVERHEAD, "{len}");
            assert_eq!(read(&file, CONTEXT).unwrap(), p, "{len}");
        }
    }

    #[test]
    fn moved_dropped_or_damaged_segments_are_refused() {
        let seg = SEGMENT_BYTES as usize;
        let p = plain(2 * seg + 100);
        let good = sealed(&p);
        let full = seg + SEAL_OVERHEAD;
        let start = HEADER_LEN as usize;
        let is_refused = |file: &[u8], what: &str| {
            let err = read(file, CONTEXT).unwrap_err();
            assert!(matches!(err, StoreError::AtRestCorrupt(_)), "{what}: {err:?}");
        };
        // The last segment dropped: the file ends at a boundary, on a segment not sealed last.
        is_refused(&good[..start + 2 * full], "truncated at a segment boundary");
        is_refused(&good[..good.len() - 1], "truncated inside a segment");
        let mut swapped = good.clone();
        swapped[start..start + full].copy_from_slice(&good[start + full..start + 2 * full]);
        swapped[start + full..start + 2 * full].copy_from_slice(&good[start..start + full]);
        is_refused(&swapped, "two segments swapped");
        for at in [0, 8, 9, start + 3, start + full + 40, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            let err = read(&bad, CONTEXT).unwrap_err();
            assert!(
                matches!(err, StoreError::AtRestCorrupt(_) | StoreError::AtRestKeyMissing { .. }),
                "flip at {at}: {err:?}"
            );
        }
        let err = read(&good, b"snapshot/beta\0").unwrap_err();
        assert!(matches!(err, StoreError::AtRestCorrupt(_)), "{err:?}");
        assert!(read(&good[..5], CONTEXT).is_err(), "shorter than the header");
    }
}
