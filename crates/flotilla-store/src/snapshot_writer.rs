//! Writing a snapshot to a new temporary file, sealed at rest in segments when the store is
//! encrypted; memory is a write buffer (or one segment).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::at_rest::AtRestCipher;
use crate::error::StoreError;
use crate::snapshot_data::{SnapshotData, TempFile};
use crate::snapshot_segments::SegmentWriter;

/// Bytes buffered before a write to the file.
const BUFFER_BYTES: usize = 256 << 10;

enum Out {
    Plain(BufWriter<File>),
    Sealed(SegmentWriter<BufWriter<File>>),
}

/// A snapshot being written to a temporary file, removed unless the writer finishes and the
/// resulting [`SnapshotData`] is kept.
pub(crate) struct SnapshotWriter {
    out: Out,
    /// A second handle on the file, to read the snapshot back.
    file: File,
    temp: Arc<TempFile>,
    cipher: Option<Arc<AtRestCipher>>,
    context: Vec<u8>,
    written: u64,
}

impl SnapshotWriter {
    /// Create the file at `path` (which must not exist), sealed with `cipher` under the
    /// namespace's snapshot `context` when given.
    pub(crate) fn create(
        path: PathBuf,
        cipher: Option<Arc<AtRestCipher>>,
        context: Vec<u8>,
    ) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let what = || format!("creating {shown}");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io(what(), e))?;
        let temp = TempFile::new(path);
        let reader = file.try_clone().map_err(|e| StoreError::io(what(), e))?;
        let buffered = BufWriter::with_capacity(BUFFER_BYTES, file);
        let out = match &cipher {
            Some(c) => Out::Sealed(
                SegmentWriter::new(buffered, c.clone(), context.clone()).map_err(|e| StoreError::io(what(), e))?,
            ),
            None => Out::Plain(buffered),
        };
        Ok(Self { out, file: reader, temp, cipher, context, written: 0 })
    }

    /// Plaintext bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Write out every buffered byte (the last segment sealed), fsync the file when `sync`, and
    /// return the snapshot, still in its temporary file (removed when the last handle drops,
    /// unless [`SnapshotData::keep_file`]).
    pub(crate) fn finish(self, sync: bool) -> Result<SnapshotData, StoreError> {
        let path = self.temp.path().display().to_string();
        let buffered = match self.out {
            Out::Plain(b) => b,
            Out::Sealed(s) => s.finish().map_err(|e| StoreError::from_io(format!("writing {path}"), e))?,
        };
        let file = buffered.into_inner().map_err(|e| StoreError::io(format!("writing {path}"), e.into_error()))?;
        if sync {
            file.sync_all().map_err(|e| StoreError::io(format!("syncing {path}"), e))?;
        }
        drop(file);
        match self.cipher {
            None => Ok(SnapshotData::plain(self.file, self.written, Some(self.temp))),
            Some(cipher) => {
                let len = self.file.metadata().map_err(|e| StoreError::io(format!("reading {path}"), e))?.len();
                SnapshotData::sealed(self.file, len, cipher, &self.context, Some(self.temp))
            }
        }
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = match &mut self.out {
            Out::Plain(b) => b.write(bytes)?,
            Out::Sealed(s) => s.write(bytes)?,
        };
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Out::Plain(b) => b.flush(),
            Out::Sealed(s) => s.flush(),
        }
    }
}
