//! [`SnapshotSink`]: a snapshot being received, written to disk chunk by chunk.

use std::io::Write;

use crate::error::StoreError;
use crate::snapshot_data::SnapshotData;
use crate::snapshot_writer::SnapshotWriter;

/// A snapshot being received from a leader: its chunks are appended to a temporary file in
/// the data directory (sealed at rest in an encrypted store), so memory stays bounded whatever
/// the snapshot's size. Dropping an unfinished sink removes its file. Get one from
/// [`crate::Store::snapshot_sink`].
pub struct SnapshotSink {
    writer: SnapshotWriter,
}

impl std::fmt::Debug for SnapshotSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotSink").field("len", &self.len()).finish()
    }
}

impl SnapshotSink {
    pub(crate) fn new(writer: SnapshotWriter) -> Self {
        Self { writer }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.writer.written()
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append `bytes` to the file. Blocking I/O: call it off the async threads.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.writer.write_all(bytes).map_err(|e| StoreError::from_io("writing a received snapshot", e))
    }

    /// The received snapshot, ready to install; its file is removed when the last handle on it
    /// is dropped. Not fsynced: an install verifies it and saves its own durable copy.
    pub fn finish(self) -> Result<SnapshotData, StoreError> {
        self.writer.finish(false)
    }
}

/// A sink is written like a file (a restore copies a backup's body into one as it verifies it).
impl Write for SnapshotSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}
