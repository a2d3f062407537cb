//! Checking a backup file: [`verify_backup`] reads it once, front to back, in bounded memory,
//! and returns a [`BackupSummary`] only when every part of it holds.

use std::io::{self, Read, Write};

use flotilla_core::TypeConfig;
use sha2::{Digest, Sha256};

use crate::backup::{BACKUP_FORMAT_VERSION, BACKUP_MAGIC, DIGEST_LEN, MAX_META_BYTES};
use crate::backup_meta::BackupMeta;
use crate::error::StoreError;
use crate::snapshot::{verify, RecordsPos, SnapshotHeader, Tee};

/// Bytes before the metadata: magic, version, metadata length.
const PREFIX_LEN: u64 = 8 + 4 + 4;

/// A backup file that passed [`verify_backup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Its metadata header.
    pub meta: BackupMeta,
    /// Rows of the namespace's state machine table it holds (keys, revisions of their
    /// history and the state machine's own bookkeeping rows alike).
    pub rows: u64,
    /// Remembered write outcomes (for retries with an idempotency key) it holds.
    pub dedup_records: u64,
    /// Bytes of its body (the snapshot).
    pub body_bytes: u64,
    /// Its SHA-256, in hex.
    pub sha256: String,
}

/// Verify the backup file of `len` bytes read from `src`: the magic, the format version, the
/// metadata, the body's structure and CRC-32, that the body is at the index the metadata names,
/// and the SHA-256 over the whole file. Any damage is an error ([`StoreError::Corrupt`]), never a
/// panic or a large allocation.
pub fn verify_backup(src: impl Read, len: u64) -> Result<BackupSummary, StoreError> {
    check_backup(src, len, io::sink()).map(|checked| checked.summary)
}

/// What [`check_backup`] learnt of a sound backup file.
pub(crate) struct CheckedBackup {
    pub(crate) summary: BackupSummary,
    /// The header of its body (the snapshot).
    pub(crate) header: SnapshotHeader<TypeConfig>,
    /// Where its body starts in the file.
    pub(crate) body_offset: u64,
    /// Where the body's key/value rows start, relative to the body, and how many there are.
    pub(crate) rows: RecordsPos,
}

/// [`verify_backup`], copying the body (the snapshot) to `body` as it is read, and returning
/// where its parts are too: a restore verifies and receives a backup in one pass.
pub(crate) fn check_backup(src: impl Read, len: u64, body: impl Write) -> Result<CheckedBackup, StoreError> {
    let mut r = HashingReader { src, hasher: Sha256::new(), consumed: 0 };
    let meta = read_meta(&mut r, len)?;
    let meta_len = r.consumed - PREFIX_LEN;
    let body_len = len
        .checked_sub(PREFIX_LEN + meta_len + DIGEST_LEN as u64)
        .ok_or_else(|| StoreError::corrupt(format!("backup file of {len} bytes is truncated")))?;
    let verified = verify::<TypeConfig>(Tee::new(&mut r, body), body_len).map_err(in_body)?;
    let index = verified.header.last_log_id.map_or(0, |l| l.index);
    if index != meta.index {
        return Err(StoreError::corrupt(format!("backup body is at index {index}, its metadata says {}", meta.index)));
    }
    let HashingReader { mut src, hasher, .. } = r;
    let computed = hasher.finalize();
    let mut stored = [0u8; DIGEST_LEN];
    src.read_exact(&mut stored).map_err(|e| StoreError::from_io("reading the backup's checksum", e))?;
    if stored[..] != computed[..] {
        return Err(StoreError::corrupt(format!(
            "backup checksum mismatch (stored sha256 {}, computed {})",
            hex(&stored),
            hex(&computed)
        )));
    }
    let summary = BackupSummary {
        meta,
        rows: verified.kv.left(),
        dedup_records: verified.dedup.left(),
        body_bytes: body_len,
        sha256: hex(&computed),
    };
    Ok(CheckedBackup { summary, header: verified.header, body_offset: PREFIX_LEN + meta_len, rows: verified.kv })
}

/// Read and check the magic, the version and the metadata header.
fn read_meta(r: &mut HashingReader<impl Read>, len: u64) -> Result<BackupMeta, StoreError> {
    if len < PREFIX_LEN {
        return Err(StoreError::corrupt(format!("backup file of {len} bytes is shorter than its header")));
    }
    let mut prefix = [0u8; PREFIX_LEN as usize];
    r.read_exact(&mut prefix).map_err(|e| StoreError::from_io("reading the backup header", e))?;
    if prefix[..8] != BACKUP_MAGIC {
        return Err(StoreError::corrupt("not a flotilla backup file (bad magic)"));
    }
    let version = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
    if version != BACKUP_FORMAT_VERSION {
        return Err(StoreError::corrupt(format!(
            "backup format version {version} is not supported (this build reads {BACKUP_FORMAT_VERSION})"
        )));
    }
    let meta_len = u32::from_le_bytes([prefix[12], prefix[13], prefix[14], prefix[15]]);
    if meta_len > MAX_META_BYTES || u64::from(meta_len) > len - PREFIX_LEN {
        return Err(StoreError::corrupt(format!("backup metadata length {meta_len} is out of range")));
    }
    let mut meta = vec![0u8; meta_len as usize];
    r.read_exact(&mut meta).map_err(|e| StoreError::from_io("reading the backup metadata", e))?;
    let meta: BackupMeta = serde_json::from_slice(&meta)
        .map_err(|e| StoreError::corrupt(format!("backup metadata does not decode: {e}")))?;
    if meta.format_version != version {
        return Err(StoreError::corrupt(format!(
            "backup metadata says format {}, its header {version}",
            meta.format_version
        )));
    }
    Ok(meta)
}

/// Say that a failure of the snapshot checks is about the backup's body.
fn in_body(e: StoreError) -> StoreError {
    match e {
        StoreError::Corrupt(msg) => StoreError::Corrupt(format!("backup body: {msg}")),
        other => other,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Passes reads through from `src`, hashing them and counting the bytes.
struct HashingReader<R> {
    src: R,
    hasher: Sha256,
    consumed: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.consumed += n as u64;
        Ok(n)
    }
}
