//! The frame codec of RPC streams.
//!
//! A frame is `u32` big-endian body length, then the body: a `u64` big-endian request id followed
//! by the message encoded with [`flotilla_core::encode`]. The length is checked against the
//! limit before anything is allocated, and the body buffer grows only as bytes actually arrive
//! (and never past the announced length), so a peer announcing a huge frame and sending nothing
//! costs nothing.

use std::io;

use futures::{AsyncRead, AsyncReadExt};

/// Bytes of the length header.
pub(crate) const HEADER_LEN: usize = 4;
/// Bytes of the request id that starts every body.
pub(crate) const ID_LEN: usize = 8;
/// Largest initial buffer for a body; larger bodies grow as their bytes arrive.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// A frame whose body would exceed the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge {
    /// Body size (request id + message).
    pub size: usize,
    /// The limit.
    pub limit: usize,
}

/// Build a complete frame carrying `message` under request id `id`.
pub(crate) fn build(id: u64, message: &[u8], limit: usize) -> Result<Vec<u8>, TooLarge> {
    let size = ID_LEN + message.len();
    if size > limit || size > u32::MAX as usize {
        return Err(TooLarge { size, limit });
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + size);
    frame.extend_from_slice(&(size as u32).to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(message);
    Ok(frame)
}

/// Overwrite the request id of a frame made by [`build`]; lets callers encode a request before
/// the stream that will carry it has assigned the id.
pub(crate) fn set_id(frame: &mut [u8], id: u64) {
    frame[HEADER_LEN..HEADER_LEN + ID_LEN].copy_from_slice(&id.to_be_bytes());
}

/// Why no frame could be read. Every variant except [`ReadError::Closed`] leaves the stream
/// at an unknown position, so the stream must be dropped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the stream cleanly between two frames.
    Closed,
    /// The announced body exceeds the limit.
    TooLarge(TooLarge),
    /// The announced body cannot even hold a request id.
    TooShort(usize),
    /// The stream failed or ended inside a frame.
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => f.write_str("stream closed by the peer"),
            ReadError::TooLarge(t) => write!(f, "frame of {} bytes exceeds the limit of {} bytes", t.size, t.limit),
            ReadError::TooShort(n) => write!(f, "frame of {n} bytes is too short to hold a request id"),
            ReadError::Io(e) => write!(f, "stream error: {e}"),
        }
    }
}

/// Read one frame, returning its request id and message bytes.
pub(crate) async fn read<R: AsyncRead + Unpin>(reader: &mut R, limit: usize) -> Result<(u64, Vec<u8>), ReadError> {
    let mut header = [0u8; HEADER_LEN];
    read_header(reader, &mut header).await?;
    let size = u32::from_be_bytes(header) as usize;
    if size > limit {
        return Err(ReadError::TooLarge(TooLarge { size, limit }));
    }
    if size < ID_LEN {
        return Err(ReadError::TooShort(size));
    }

    let mut id = [0u8; ID_LEN];
    reader.read_exact(&mut id).await.map_err(ReadError::Io)?;

    let len = size - ID_LEN;
    let mut message = vec![0u8; len.min(INITIAL_BODY_CAPACITY)];
    let mut read = 0;
    while read < len {
        if read == message.len() {
            // Grow geometrically as bytes arrive, but never past the announced size (a
            // `read_to_end` would double the buffer once more to look for the end).
            let grown = (message.len() * 2).min(len);
            message.reserve_exact(grown - message.len());
            message.resize(grown, 0);
        }
        match reader.read(&mut message[read..]).await {
            Ok(0) => {
                return Err(ReadError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended after {read} of {len} message bytes"),
                )))
            }
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok((u64::from_be_bytes(id), message))
}

/// Fill `header`, telling a clean end of stream (no byte of a new frame) from a truncated one.
async fn read_header<R: AsyncRead + Unpin>(reader: &mut R, header: &mut [u8; HEADER_LEN]) -> Result<(), ReadError> {
    let mut filled = 0;
    while filled < HEADER_LEN {
        match reader.read(&mut header[filled..]).await {
            Ok(0) if filled == 0 => return Err(ReadError::Closed),
            Ok(0) => {
                return Err(ReadError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a frame header",
                )))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::executor::block_on;

    use super::*;

    /// Yields its bytes one at a time, to exercise partial reads.
    struct Trickle(Vec<u8>, usize);

    impl AsyncRead for Trickle {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            if self.1 >= self.0.len() || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            buf[0] = self.0[self.1];
            self.1 += 1;
            Poll::Ready(Ok(1))
        }
    }

    #[test]
    fn round_trip_with_partial_reads() {
        let mut bytes = build(7, b"hello", 100).unwrap();
        let mut second = build(0, b"", 100).unwrap();
        set_id(&mut second, u64::MAX);
        bytes.extend_from_slice(&second);
        let mut reader = Trickle(bytes, 0);
        assert_eq!(block_on(read(&mut reader, 100)).unwrap(), (7, b"hello".to_vec()));
        assert_eq!(block_on(read(&mut reader, 100)).unwrap(), (u64::MAX, Vec::new()));
        assert!(matches!(block_on(read(&mut reader, 100)), Err(ReadError::Closed)));
    }

    #[test]
    fn limits_are_enforced_on_both_sides() {
        assert_eq!(build(1, &[0; 93], 100), Err(TooLarge { size: 101, limit: 100 }));
        let mut reader = Trickle(u32::MAX.to_be_bytes().to_vec(), 0);
        assert!(matches!(block_on(read(&mut reader, 100)), Err(ReadError::TooLarge(t)) if t.size == u32::MAX as usize));
        let mut reader = Trickle(3u32.to_be_bytes().to_vec(), 0);
        assert!(matches!(block_on(read(&mut reader, 100)), Err(ReadError::TooShort(3))));
    }

    #[test]
    fn truncation_is_an_error_not_a_clean_close() {
        let frame = build(1, b"abcdef", 100).unwrap();
        for cut in 1..frame.len() {
            let mut reader = Trickle(frame[..cut].to_vec(), 0);
            assert!(matches!(block_on(read(&mut reader, 100)), Err(ReadError::Io(_))), "cut at {cut}");
        }
    }
}
