//! [`SnapshotData`]: a snapshot openraft builds, sends and installs, as a handle on a file.
//!
//! The handle owns an open file descriptor, so the snapshot stays readable while it lives even
//! if its path is replaced (a newer snapshot renamed over `current.snap`) or removed (a
//! received snapshot's temporary file). Reading it yields the plaintext snapshot (see
//! [`crate::snapshot`]) whether the file is plaintext or sealed at rest in segments (see
//! [`crate::snapshot_segments`]); memory is one segment, or what the caller reads at a time.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::at_rest::AtRestCipher;
use crate::error::StoreError;
use crate::snapshot_segments::{Segments, HEADER_LEN};

/// A snapshot on disk, readable as a stream ([`SnapshotData::reader`]); never held whole in
/// memory. Cheap to clone (clones share the file).
#[derive(Clone)]
pub struct SnapshotData {
    file: Arc<File>,
    /// Plaintext bytes.
    len: u64,
    /// How to open the file's segments when it is sealed at rest.
    segments: Option<Segments>,
    /// A temporary file this snapshot lives in, removed when the last handle is dropped.
    temp: Option<Arc<TempFile>>,
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotData").field("len", &self.len).field("sealed", &self.segments.is_some()).finish()
    }
}

impl SnapshotData {
    /// A plaintext snapshot: the first `len` bytes of `file`.
    pub(crate) fn plain(file: File, len: u64, temp: Option<Arc<TempFile>>) -> Self {
        Self { file: Arc::new(file), len, segments: None, temp }
    }

    /// A snapshot sealed in segments in `file` (of `file_len` bytes) with `cipher`, bound to
    /// the namespace's snapshot `context`. Checks the header and geometry, not the segments.
    pub(crate) fn sealed(
        file: File,
        file_len: u64,
        cipher: Arc<AtRestCipher>,
        context: &[u8],
        temp: Option<Arc<TempFile>>,
    ) -> Result<Self, StoreError> {
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut header, 0).map_err(|e| StoreError::from_io("reading a snapshot file header", e))?;
        let (segments, len) = Segments::parse(cipher, context, &header, file_len)?;
        Ok(Self { file: Arc::new(file), len, segments: Some(segments), temp })
    }

    /// Size of the (plaintext) snapshot in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the snapshot has no bytes (never true of a valid snapshot).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader of the snapshot's bytes from the start. Errors of the file, or of a sealed
    /// segment that fails authentication, surface as `io::Error`s wrapping a [`StoreError`].
    pub fn reader(&self) -> SnapshotReader {
        self.reader_at(0)
    }

    /// A reader from byte `pos` of the snapshot.
    pub(crate) fn reader_at(&self, pos: u64) -> SnapshotReader {
        SnapshotReader { data: self.clone(), pos: pos.min(self.len), segment: None }
    }

    /// The temporary file this snapshot lives in, if it is one.
    pub(crate) fn temp_path(&self) -> Option<&Path> {
        self.temp.as_ref().map(|t| t.path())
    }

    /// Mark the temporary file as kept (it was renamed into place).
    pub(crate) fn keep_file(&self) {
        if let Some(temp) = &self.temp {
            temp.keep.store(true, Ordering::Release);
        }
    }
}

/// Reads a [`SnapshotData`] sequentially; holds at most one opened segment.
pub struct SnapshotReader {
    data: SnapshotData,
    pos: u64,
    /// The last opened segment: its index and plaintext.
    segment: Option<(u64, Vec<u8>)>,
}

impl SnapshotReader {
    /// Bytes read so far (the position in the snapshot).
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.file.read_at(buf, self.pos)?;
        if n == 0 {
            return Err(StoreError::corrupt(format!(
                "snapshot file ends at {} of its {} bytes",
                self.pos, self.data.len
            ))
            .to_io());
        }
        Ok(n)
    }

    fn read_sealed(&mut self, segments: &Segments, buf: &mut [u8]) -> io::Result<usize> {
        let index = self.pos / segments.segment_bytes();
        if self.segment.as_ref().map(|(i, _)| *i) != Some(index) {
            self.segment = None;
            let (start, len) = segments.span(index);
            let mut stored = vec![0u8; len];
            self.data
                .file
                .read_exact_at(&mut stored, start)
                .map_err(|e| StoreError::from_io(format!("reading snapshot segment {index}"), e).to_io())?;
            let plain = segments.open(index, &stored).map_err(|e| e.to_io())?;
            self.segment = Some((index, plain));
        }
        let Some((_, plain)) = &self.segment else {
            return Ok(0);
        };
        let offset = (self.pos - index * segments.segment_bytes()) as usize;
        let available = plain.get(offset..).unwrap_or_default();
        if available.is_empty() {
            return Err(
                StoreError::AtRestCorrupt(format!("snapshot segment {index} is shorter than its place")).to_io()
            );
        }
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        Ok(n)
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.data.len - self.pos;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = match self.data.segments.clone() {
            None => self.read_plain(&mut buf[..want])?,
            Some(segments) => self.read_sealed(&segments, &mut buf[..want])?,
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// A temporary snapshot file, removed when dropped unless kept.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    keep: AtomicBool,
}

impl TempFile {
    /// Guard the file at `path`.
    pub(crate) fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(Self { path, keep: AtomicBool::new(false) })
    }

    /// The guarded path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.keep.load(Ordering::Acquire) {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a temporary snapshot file")
            }
        }
    }
}
