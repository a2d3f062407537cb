//! [`BackupFile`]: a backup file written crash-safely.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::snapshot_file::sync_dir;

/// Bytes buffered before a write to the file.
const BUFFER_BYTES: usize = 256 << 10;
/// Suffix of the temporary file a backup is written to.
pub const BACKUP_TEMP_SUFFIX: &str = ".tmp";

/// A backup being written to a temporary file next to its final path; [`BackupFile::commit`]
/// fsyncs it and renames it into place (and fsyncs the directory), so the final path only ever
/// holds a whole backup. Dropped uncommitted, the temporary file is removed.
#[derive(Debug)]
pub struct BackupFile {
    out: Option<BufWriter<File>>,
    temp: PathBuf,
    path: PathBuf,
}

impl BackupFile {
    /// Start writing the backup that will be at `path` (replaced if it exists), in
    /// `.<name>.tmp` of the same directory.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        let name = path
            .file_name()
            .ok_or_else(|| StoreError::Invalid(format!("{} names no file", path.display())))?
            .to_string_lossy();
        let temp = path.with_file_name(format!(".{name}{BACKUP_TEMP_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| StoreError::io(format!("creating {}", temp.display()), e))?;
        Ok(Self { out: Some(BufWriter::with_capacity(BUFFER_BYTES, file)), temp, path: path.to_path_buf() })
    }

    /// The final path of the backup.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make the backup durable at its final path.
    pub fn commit(mut self) -> Result<(), StoreError> {
        let shown = self.temp.display().to_string();
        let out = self.out.take().ok_or_else(|| StoreError::Invalid("backup file already committed".into()))?;
        let file = out.into_inner().map_err(|e| StoreError::io(format!("writing {shown}"), e.into_error()))?;
        file.sync_all().map_err(|e| StoreError::io(format!("syncing {shown}"), e))?;
        drop(file);
        fs::rename(&self.temp, &self.path)
            .map_err(|e| StoreError::io(format!("renaming {shown} to {}", self.path.display()), e))?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(dir)
    }
}

impl Write for BackupFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match &mut self.out {
            Some(out) => out.write(bytes),
            None => Err(io::Error::other("backup file already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BackupFile {
    fn drop(&mut self) {
        // Committed: the temporary file was renamed away.
        if self.out.take().is_none() {
            return;
        }
        if let Err(e) = fs::remove_file(&self.temp) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.temp.display(), error = %e, "cannot remove an unfinished backup file");
            }
        }
    }
}
