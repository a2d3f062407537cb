//! [`SegmentFiller`]: a helper thread that makes the write-ahead log's next segment while the
//! active one fills (`DESIGN-log.md`), so that rolling over does not put 64 MiB of zeros and
//! two syncs on the writer's path.
//!
//! Bounds: one segment is prepared at a time, and one prepared segment waits at most; asking
//! for another while one is under way waits for it. Dropping the filler ends the thread after
//! the segment under way, if any, and waits for that (a bounded write).

use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::wal_segment::Segment;

/// A prepared segment, or why it could not be made (a full or failing disk).
type Prepared = (u64, io::Result<Segment>);

/// The helper thread and its two one-slot channels.
#[derive(Debug)]
pub(crate) struct SegmentFiller {
    /// Sequence number and size of the segment to make.
    requests: Option<SyncSender<(u64, u64)>>,
    prepared: Receiver<Prepared>,
    /// The sequence number asked for and not yet taken.
    pending: Option<u64>,
    thread: Option<JoinHandle<()>>,
}

impl SegmentFiller {
    /// Start the thread making segments salted with `salt` in `dir`.
    pub(crate) fn start(dir: PathBuf, salt: u64) -> io::Result<Self> {
        let (requests, incoming) = sync_channel::<(u64, u64)>(1);
        let (done, prepared) = sync_channel::<Prepared>(1);
        let thread = std::thread::Builder::new().name("flotilla-wal-fill".into()).spawn(move || {
            for (sequence, size) in incoming {
                if done.send((sequence, Segment::create(&dir, sequence, size, salt))).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { requests: Some(requests), prepared, pending: None, thread: Some(thread) })
    }

    /// Start making the segment numbered `sequence`, of `size` bytes, unless one is already
    /// asked for.
    pub(crate) fn prepare(&mut self, sequence: u64, size: u64) {
        if self.pending.is_some() {
            return;
        }
        if let Some(requests) = &self.requests {
            if requests.send((sequence, size)).is_ok() {
                self.pending = Some(sequence);
            }
        }
    }

    /// The segment numbered `sequence`, waiting for it if it is under way; `None` when it was
    /// not asked for (or the thread is gone): the caller makes it itself.
    pub(crate) fn take(&mut self, sequence: u64) -> Option<io::Result<Segment>> {
        let asked = self.pending.take()?;
        let (made, segment) = self.prepared.recv().ok()?;
        debug_assert_eq!(made, asked);
        // A segment prepared for another number (the log went on elsewhere) is not used; it is
        // made anew, under the right name, when the log reaches it.
        (made == sequence).then_some(segment)
    }
}

impl Drop for SegmentFiller {
    fn drop(&mut self) {
        // Closing the request channel ends the thread's loop; a result it still sends finds the
        // receiver alive until the join returns.
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
