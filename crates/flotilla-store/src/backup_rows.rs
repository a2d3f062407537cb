//! Reading a backup file's key/value rows back in bounded batches: what a restore into a running
//! namespace proposes through the log, batch by batch.

use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::path::Path;

use crate::backup_verify::{check_backup, BackupSummary};
use crate::error::StoreError;
use crate::snapshot::{read_batch, Record, RecordsPos, Section};

/// Bytes read from the file at a time.
const READ_BUFFER: usize = 256 << 10;

/// The key/value rows of a backup file that was verified whole when it was opened; read them
/// with [`BackupRows::next_batch`]. The namespace's dedup records are not read: they belong to
/// the cluster the backup was taken from.
#[derive(Debug)]
pub struct BackupRows {
    file: File,
    summary: BackupSummary,
    body_offset: u64,
    at: RecordsPos,
}

impl BackupRows {
    /// Open the backup file at `path` and verify it (structure, CRC, SHA-256), in bounded
    /// memory. A damaged file is [`StoreError::Corrupt`]. Blocking file reads.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open = || File::open(path).map_err(|e| StoreError::io(format!("opening {}", path.display()), e));
        let file = open()?;
        let len = file.metadata().map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?.len();
        let checked = check_backup(BufReader::with_capacity(READ_BUFFER, file), len, io::sink())?;
        Ok(Self { file: open()?, summary: checked.summary, body_offset: checked.body_offset, at: checked.rows })
    }

    /// What the file says about itself, as [`crate::verify_backup`] gives it.
    pub fn summary(&self) -> &BackupSummary {
        &self.summary
    }

    /// Rows not read yet.
    pub fn left(&self) -> u64 {
        self.at.left()
    }

    /// The next rows, at most `max_records` of them and about `max_bytes` of keys and values (a
    /// single larger row is a batch alone); `None` once every row was read. Blocking file reads.
    pub fn next_batch(&mut self, max_records: usize, max_bytes: usize) -> Result<Option<Vec<Record>>, StoreError> {
        if self.at.is_done() {
            return Ok(None);
        }
        let what = |e| StoreError::from_io("reading the backup's rows", e);
        self.file.seek(SeekFrom::Start(self.body_offset + self.at.offset())).map_err(what)?;
        let src = BufReader::with_capacity(READ_BUFFER, &mut self.file);
        let (rows, next) = read_batch(src, self.summary.body_bytes, Section::Kv, self.at, max_records, max_bytes)?;
        self.at = next;
        Ok(Some(rows))
    }
}
