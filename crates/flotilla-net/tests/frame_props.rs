//! Property tests of the RPC frame codec (`u32 len | u64 request id | body`, `src/frame.rs`).
//!
//! Checked on generated input:
//! - any byte stream (valid frames, truncated frames, zero and short lengths, lengths at, just
//!   above and far above the limit, garbage) decodes exactly as a reference parser says, frame
//!   by frame, without panicking and without reading past the frame it returns;
//! - no allocation made while reading is larger than the frame limit;
//! - a length above the limit is refused after the 4 header bytes, before any body byte is read;
//! - frames built by `build` decode to the same id and body, also when the reader hands out
//!   1..k bytes at a time and is sometimes not ready.
//!
//! The codec is crate-private, so its source is compiled into this test through `#[path]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::executor::block_on;
use futures::AsyncRead;
use proptest::prelude::*;

#[allow(dead_code)]
#[path = "../src/frame.rs"]
mod frame;

use frame::{ReadError, TooLarge};

const HEADER_LEN: usize = 4;
const ID_LEN: usize = 8;
/// Allocations this small are bookkeeping (error messages), not buffers sized by the peer.
const SMALL_ALLOCATION: usize = 1024;

// ---- the largest allocation made by this thread ----

/// Forwards to the system allocator, recording the largest block asked for by each thread.
struct Recording;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping touches only a
// const-initialized thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// Run `f`, returning its result and the largest allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|largest| largest.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

// ---- a reader handing out bytes in small pieces ----

/// Hands out its bytes `chunks[i % len]` at a time (at least one), and answers "not ready"
/// (waking itself) to every `stall_every`-th read (never when 0), like a slow network would.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    chunks: Vec<usize>,
    stall_every: usize,
    since_stall: usize,
    reads: usize,
}

impl Chunked {
    fn new(data: Vec<u8>, chunks: Vec<usize>, stall_every: usize) -> Self {
        assert!(!chunks.is_empty());
        Self { data, pos: 0, chunks, stall_every, since_stall: 0, reads: 0 }
    }

    fn whole(data: Vec<u8>) -> Self {
        Self::new(data, vec![usize::MAX], 0)
    }
}

impl AsyncRead for Chunked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.reads += 1;
        this.since_stall += 1;
        if this.since_stall == this.stall_every {
            this.since_stall = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let chunk = this.chunks[this.reads % this.chunks.len()].max(1);
        let n = chunk.min(buf.len()).min(this.data.len() - this.pos);
        buf[..n].copy_from_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(n))
    }
}

// ---- the reference parser ----

/// What one call of `frame::read` must return, in a form that can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Frame(u64, Vec<u8>),
    Closed,
    TooLarge(usize),
    TooShort(usize),
    Truncated,
}

impl Outcome {
    fn of(read: Result<(u64, Vec<u8>), ReadError>, limit: usize) -> Outcome {
        match read {
            Ok((id, body)) => Outcome::Frame(id, body),
            Err(ReadError::Closed) => Outcome::Closed,
            Err(ReadError::TooLarge(t)) => {
                assert_eq!(t.limit, limit);
                Outcome::TooLarge(t.size)
            }
            Err(ReadError::TooShort(n)) => Outcome::TooShort(n),
            Err(ReadError::Io(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
                Outcome::Truncated
            }
        }
    }

    fn ends_stream(&self) -> bool {
        !matches!(self, Outcome::Frame(..))
    }
}

/// The frames of `stream` as the format defines them, up to and including the first outcome
/// that ends the stream, with the stream position after each.
fn reference(stream: &[u8], limit: usize) -> Vec<(Outcome, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &stream[pos..];
        let outcome = if rest.is_empty() {
            Outcome::Closed
        } else if rest.len() < HEADER_LEN {
            Outcome::Truncated
        } else {
            let size = u32::from_be_bytes(rest[..HEADER_LEN].try_into().unwrap()) as usize;
            if size > limit {
                Outcome::TooLarge(size)
            } else if size < ID_LEN {
                Outcome::TooShort(size)
            } else if rest.len() < HEADER_LEN + size {
                Outcome::Truncated
            } else {
                let id = u64::from_be_bytes(rest[HEADER_LEN..HEADER_LEN + ID_LEN].try_into().unwrap());
                pos += HEADER_LEN + size;
                Outcome::Frame(id, rest[HEADER_LEN + ID_LEN..HEADER_LEN + size].to_vec())
            }
        };
        let end = outcome.ends_stream();
        out.push((outcome, pos));
        if end {
            return out;
        }
    }
}

// ---- generators ----

/// `len` bytes of a cheap pattern: bodies up to a few hundred KiB, without generating each
/// byte through proptest.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// One piece of a hostile stream.
#[derive(Debug, Clone)]
enum Piece {
    /// A well-formed frame.
    Frame { id: u64, body: Vec<u8> },
    /// A header announcing `size`, then `body` whatever its length.
    Header { size: u32, body: Vec<u8> },
    /// Raw bytes.
    Garbage(Vec<u8>),
}

fn piece(limit: usize) -> impl Strategy<Value = Piece> {
    let max_body = limit - ID_LEN;
    let lim = limit as u32;
    let sizes = prop_oneof![
        0..=(ID_LEN as u32),
        Just(lim),
        Just(lim + 1),
        (ID_LEN as u32)..=lim,
        (lim + 1)..=u32::MAX,
        Just(u32::MAX),
    ];
    prop_oneof![
        4 => (any::<u64>(), 0..=max_body.min(512), any::<u8>())
            .prop_map(|(id, len, seed)| Piece::Frame { id, body: pattern(len, seed) }),
        1 => (any::<u64>(), Just(max_body), any::<u8>())
            .prop_map(|(id, len, seed)| Piece::Frame { id, body: pattern(len, seed) }),
        2 => (sizes, proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(size, body)| Piece::Header { size, body }),
        1 => proptest::collection::vec(any::<u8>(), 0..16).prop_map(Piece::Garbage),
    ]
}

fn encode_pieces(pieces: &[Piece]) -> Vec<u8> {
    let mut stream = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Frame { id, body } => {
                stream.extend_from_slice(&((ID_LEN + body.len()) as u32).to_be_bytes());
                stream.extend_from_slice(&id.to_be_bytes());
                stream.extend_from_slice(body);
            }
            Piece::Header { size, body } => {
                stream.extend_from_slice(&size.to_be_bytes());
                stream.extend_from_slice(body);
            }
            Piece::Garbage(bytes) => stream.extend_from_slice(bytes),
        }
    }
    stream
}

/// Frame limits: tiny, small, and around the 64 KiB initial body buffer.
fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![ID_LEN..=64usize, 65usize..=4096, 60_000usize..=140_000]
}

/// A stream built from pieces, possibly cut anywhere, under `limit`.
fn hostile_stream() -> impl Strategy<Value = (usize, Vec<u8>)> {
    limit()
        .prop_flat_map(|limit| {
            (Just(limit), proptest::collection::vec(piece(limit), 0..6), any::<prop::sample::Index>())
        })
        .prop_map(|(limit, pieces, cut)| {
            let mut stream = encode_pieces(&pieces);
            // Half of the streams are cut at a random point.
            if cut.index(2) == 0 {
                let at = cut.index(stream.len() + 1);
                stream.truncate(at);
            }
            (limit, stream)
        })
}

fn chunks() -> impl Strategy<Value = (Vec<usize>, usize)> {
    (proptest::collection::vec(1usize..=16, 1..8), prop_oneof![Just(0usize), 2usize..=5])
}

/// Read frames until one read ends the stream, recording each outcome and the position after it.
fn read_all(reader: &mut Chunked, limit: usize) -> Vec<(Outcome, usize)> {
    let mut out = Vec::new();
    loop {
        let outcome = Outcome::of(block_on(frame::read(reader, limit)), limit);
        let end = outcome.ends_stream();
        out.push((outcome, reader.pos));
        if end {
            return out;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any stream, read in arbitrary pieces, decodes as the reference parser says; a returned
    /// frame consumed exactly its own bytes, and no allocation exceeded the limit.
    #[test]
    fn any_stream_decodes_like_the_reference((limit, stream) in hostile_stream(), (chunks, stall_every) in chunks()) {
        let expected = reference(&stream, limit);
        let mut reader = Chunked::new(stream, chunks, stall_every);
        let (got, largest) = largest_allocation(|| read_all(&mut reader, limit));
        // Positions are only defined after a frame: an error leaves the stream anywhere.
        let strip = |v: &[(Outcome, usize)]| -> Vec<(Outcome, Option<usize>)> {
            v.iter().map(|(o, p)| (o.clone(), (!o.ends_stream()).then_some(*p))).collect()
        };
        prop_assert_eq!(strip(&got), strip(&expected));
        prop_assert!(largest <= limit.max(SMALL_ALLOCATION), "allocated {} bytes under a limit of {}", largest, limit);
    }

    /// A length above the limit is refused having read only the header: no body byte is
    /// consumed and nothing sized by the announced length is allocated.
    #[test]
    fn over_limit_is_refused_before_the_body(limit in limit(), excess in 1u64..=u32::MAX as u64, (chunks, stall_every) in chunks()) {
        let size = (limit as u64 + excess).min(u32::MAX as u64) as u32;
        let mut stream = size.to_be_bytes().to_vec();
        stream.extend_from_slice(&pattern(4096, 7));
        let mut reader = Chunked::new(stream, chunks, stall_every);
        let (read, largest) = largest_allocation(|| block_on(frame::read(&mut reader, limit)));
        prop_assert_eq!(Outcome::of(read, limit), Outcome::TooLarge(size as usize));
        prop_assert_eq!(reader.pos, HEADER_LEN, "bytes consumed before the refusal");
        prop_assert!(largest <= SMALL_ALLOCATION, "allocated {} bytes for a refused frame", largest);
    }

    /// Sizes at the edges: `limit` is accepted (body of `limit - 8`), `limit + 1` refused,
    /// 8 is an empty body, 0..8 is too short.
    #[test]
    fn edges_of_the_size_range(limit in limit(), id in any::<u64>(), short in 0u32..ID_LEN as u32, seed in any::<u8>()) {
        let at_limit = frame::build(id, &pattern(limit - ID_LEN, seed), limit).expect("a frame at the limit builds");
        let (read, largest) = largest_allocation(|| block_on(frame::read(&mut Chunked::whole(at_limit), limit)));
        let (got_id, body) = read.expect("a frame at the limit is read");
        prop_assert_eq!(got_id, id);
        prop_assert_eq!(body, pattern(limit - ID_LEN, seed));
        prop_assert!(largest <= limit.max(SMALL_ALLOCATION), "allocated {} bytes under a limit of {}", largest, limit);

        prop_assert_eq!(frame::build(id, &pattern(limit - ID_LEN + 1, seed), limit), Err(TooLarge { size: limit + 1, limit }));
        let mut over = ((limit + 1) as u32).to_be_bytes().to_vec();
        over.extend_from_slice(&pattern(limit + 1, seed));
        let read = block_on(frame::read(&mut Chunked::whole(over), limit));
        prop_assert_eq!(Outcome::of(read, limit), Outcome::TooLarge(limit + 1));

        let empty = frame::build(id, &[], limit).unwrap();
        prop_assert_eq!(empty.len(), HEADER_LEN + ID_LEN);
        prop_assert_eq!(block_on(frame::read(&mut Chunked::whole(empty), limit)).unwrap(), (id, Vec::new()));

        let mut too_short = short.to_be_bytes().to_vec();
        too_short.extend_from_slice(&pattern(ID_LEN, seed));
        let read = block_on(frame::read(&mut Chunked::whole(too_short), limit));
        prop_assert_eq!(Outcome::of(read, limit), Outcome::TooShort(short as usize));
    }

    /// Frames made by `build` (ids set at build time or afterwards with `set_id`) come back
    /// with the same ids and bodies, in order, whatever pieces the reader hands out; then the
    /// stream reads as closed.
    #[test]
    fn built_frames_round_trip_through_partial_reads(
        limit in limit(),
        frames in proptest::collection::vec((any::<u64>(), any::<bool>(), any::<prop::sample::Index>(), any::<u8>()), 1..5),
        (chunks, stall_every) in chunks(),
    ) {
        let max_body = limit - ID_LEN;
        let frames: Vec<(u64, Vec<u8>)> = frames
            .into_iter()
            .map(|(id, full, len, seed)| {
                let len = if full { max_body } else { len.index(max_body.min(2048) + 1) };
                (id, pattern(len, seed))
            })
            .collect();
        let mut stream = Vec::new();
        for (i, (id, body)) in frames.iter().enumerate() {
            let mut built = frame::build(if i % 2 == 0 { *id } else { 0 }, body, limit).expect("fits the limit");
            if i % 2 == 1 {
                frame::set_id(&mut built, *id);
            }
            stream.extend_from_slice(&built);
        }
        let mut reader = Chunked::new(stream, chunks, stall_every);
        for (id, body) in &frames {
            let (read, largest) = largest_allocation(|| block_on(frame::read(&mut reader, limit)));
            let (got_id, got_body) = read.expect("a built frame is read back");
            prop_assert_eq!(got_id, *id);
            prop_assert_eq!(&got_body, body);
            prop_assert!(largest <= limit.max(SMALL_ALLOCATION), "allocated {} bytes under a limit of {}", largest, limit);
        }
        prop_assert_eq!(Outcome::of(block_on(frame::read(&mut reader, limit)), limit), Outcome::Closed);
    }
}
