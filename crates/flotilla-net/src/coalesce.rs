//! Writing the frames queued on a stream together.
//!
//! yamux turns every write on a stream into a data frame of its own, and its connection task
//! flushes the socket after each frame it sends (`yamux` 0.14, `connection.rs`, `Active::poll`):
//! frames written one by one cost one Noise seal, one `sendto` and one wake-up of the reader each,
//! whatever the writer's own flush hints say. Spread over many namespaces, a write costs about
//! ten small RPC messages, and these per-message costs were a fifth of the CPU (profile in
//! `crates/flotilla/DESIGN-namespaces.md`, "Load across namespaces").
//!
//! So a stream writer takes the frame it is about to write plus whatever frames are already
//! queued behind it (never waiting for more), copies the small ones into one buffer and writes
//! that with a single call. The bytes on the wire are the same as frame by frame (frames are
//! self-delimiting), so the receiving side sees no difference.

use std::io;

use futures::{AsyncWrite, AsyncWriteExt};

/// Bytes after which no further frame joins a batch: yamux's default split size, so a batch of
/// small frames is one yamux data frame.
pub(crate) const COALESCE_BYTES: usize = 16 * 1024;
/// Most frames in one batch, whatever their size.
pub(crate) const COALESCE_FRAMES: usize = 64;

/// Frames to be written together, and the buffer that joins the small ones.
#[derive(Default)]
pub(crate) struct Coalescer {
    frames: Vec<Vec<u8>>,
    bytes: usize,
    joined: Vec<u8>,
}

impl Coalescer {
    /// An empty batch.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether another frame may still join: under both bounds.
    pub(crate) fn has_room(&self) -> bool {
        self.bytes < COALESCE_BYTES && self.frames.len() < COALESCE_FRAMES
    }

    /// Whether no frame is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Add `frame` after the frames already in the batch.
    pub(crate) fn push(&mut self, frame: Vec<u8>) {
        self.bytes += frame.len();
        self.frames.push(frame);
    }

    /// Write every frame of the batch in order (then flush if `flush`), leaving the batch empty.
    /// Consecutive small frames go out in one write; a frame of [`COALESCE_BYTES`] or more is
    /// written as it is rather than copied.
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(&mut self, writer: &mut W, flush: bool) -> io::Result<()> {
        self.bytes = 0;
        if self.frames.len() == 1 {
            let frame = self.frames.pop().unwrap_or_default();
            writer.write_all(&frame).await?;
        } else {
            self.joined.clear();
            for frame in self.frames.drain(..) {
                if frame.len() >= COALESCE_BYTES || self.joined.len() + frame.len() > COALESCE_BYTES {
                    write_joined(writer, &mut self.joined).await?;
                }
                if frame.len() >= COALESCE_BYTES {
                    writer.write_all(&frame).await?;
                } else {
                    self.joined.extend_from_slice(&frame);
                }
            }
            write_joined(writer, &mut self.joined).await?;
        }
        if flush {
            writer.flush().await?;
        }
        Ok(())
    }
}

/// Write and clear `joined`, if it holds anything.
async fn write_joined<W: AsyncWrite + Unpin>(writer: &mut W, joined: &mut Vec<u8>) -> io::Result<()> {
    if !joined.is_empty() {
        writer.write_all(joined).await?;
        joined.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::executor::block_on;

    use super::*;

    /// Records every write call separately.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.0.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(byte: u8, len: usize) -> Vec<u8> {
        vec![byte; len]
    }

    #[test]
    fn small_frames_go_out_in_one_write_in_order() {
        let mut batch = Coalescer::new();
        for b in 1..=3 {
            batch.push(frame(b, 10));
        }
        let mut out = Writes::default();
        block_on(batch.write_to(&mut out, true)).unwrap();
        assert_eq!(out.0, vec![[frame(1, 10), frame(2, 10), frame(3, 10)].concat()]);
        assert!(batch.is_empty() && batch.has_room());
    }

    #[test]
    fn large_frames_are_written_alone_and_order_is_kept() {
        let mut batch = Coalescer::new();
        batch.push(frame(1, 10));
        batch.push(frame(2, COALESCE_BYTES));
        batch.push(frame(3, 10));
        batch.push(frame(4, COALESCE_BYTES - 5));
        let mut out = Writes::default();
        block_on(batch.write_to(&mut out, false)).unwrap();
        assert_eq!(out.0, vec![frame(1, 10), frame(2, COALESCE_BYTES), frame(3, 10), frame(4, COALESCE_BYTES - 5)]);
    }

    #[test]
    fn a_batch_is_bounded_in_bytes_and_frames() {
        let mut batch = Coalescer::new();
        batch.push(frame(1, COALESCE_BYTES));
        assert!(!batch.has_room());
        let mut batch = Coalescer::new();
        for _ in 0..COALESCE_FRAMES {
            assert!(batch.has_room());
            batch.push(frame(1, 1));
        }
        assert!(!batch.has_room());
    }
}
