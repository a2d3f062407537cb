//! Serving RPC streams opened by other nodes.
//!
//! `libp2p_stream` drops inbound streams when its accept queue is full, so the accept loop
//! does nothing but hand each stream to its own task. Each stream task reads request frames and
//! runs every request concurrently, at most `max_inflight_per_stream` at a time; a single writer
//! task per stream sends the responses back, tagged with the request ids, as they complete (those
//! that completed together in one write, see [`crate::coalesce`]).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flotilla_core::wire::{WireError, WireRequest, WireResponse};
use flotilla_core::{InboundHandler, NodeId};
use futures::io::WriteHalf;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::IncomingStreams;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::coalesce::Coalescer;
use crate::config::NetConfig;
use crate::frame::{self, ReadError};

/// Bound on closing a stream politely before dropping it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The registered request handler, replaceable at any time.
#[derive(Default)]
pub(crate) struct HandlerSlot(RwLock<Option<Arc<dyn InboundHandler>>>);

impl HandlerSlot {
    pub(crate) fn set(&self, handler: Arc<dyn InboundHandler>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(handler);
    }

    fn get(&self) -> Option<Arc<dyn InboundHandler>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Have the registered handler answer `request` from `from`.
    ///
    /// Without a handler (the node is still starting) the answer is a retryable
    /// `Unavailable`; a handler that panics yields `Fatal` instead of a reply that never comes.
    pub(crate) async fn respond(&self, from: NodeId, request: WireRequest) -> WireResponse {
        let Some(handler) = self.get() else {
            return WireResponse::Error(WireError::Unavailable("no request handler registered yet".into()));
        };
        match AssertUnwindSafe(handler.handle(from, request)).catch_unwind().await {
            Ok(response) => response,
            Err(_) => {
                tracing::error!(peer = %from, "request handler panicked");
                WireResponse::Error(WireError::Fatal("request handler panicked".into()))
            }
        }
    }
}

/// What the stream tasks share.
pub(crate) struct InboundShared {
    pub(crate) handler: Arc<HandlerSlot>,
    pub(crate) config: NetConfig,
    /// Inbound streams served at once, over all peers.
    pub(crate) streams: Arc<Semaphore>,
    pub(crate) cancel: CancellationToken,
}

/// Accept RPC streams until shutdown; dropping `incoming` afterwards stops the protocol from
/// being offered to peers.
pub(crate) async fn accept_loop(mut incoming: IncomingStreams, shared: Arc<InboundShared>) {
    loop {
        let (peer, stream) = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break,
            next = incoming.next() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many inbound RPC streams; refusing one");
            continue;
        };
        let span = tracing::debug_span!("rpc_in", %peer);
        tokio::spawn(serve(peer, stream, shared.clone(), permit).instrument(span));
    }
    tracing::debug!("stopped accepting RPC streams");
}

/// Serve one stream until the peer closes it, it fails, or the host shuts down.
async fn serve(peer: PeerId, stream: Stream, shared: Arc<InboundShared>, _permit: OwnedSemaphorePermit) {
    let limit = shared.config.max_frame_bytes;
    let inflight_limit = shared.config.max_inflight_per_stream;
    let (mut reader, writer) = stream.split();
    // Cancelled when the stream must go at once: shutdown, a broken frame, a failed write.
    let stop = shared.cancel.child_token();
    let (responses, queue) = mpsc::channel(inflight_limit);
    let mut writer_task = tokio::spawn(write_responses(writer, queue, stop.clone()).in_current_span());
    let inflight = Arc::new(Semaphore::new(inflight_limit));

    loop {
        let read = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            read = frame::read(&mut reader, limit) => read,
        };
        let (id, message) = match read {
            Ok(frame) => frame,
            Err(ReadError::Closed) => {
                // The peer is done sending; responses still owed are delivered below.
                tracing::debug!("peer closed the stream");
                break;
            }
            Err(ReadError::Io(e)) => {
                tracing::debug!(error = %e, "stream failed");
                stop.cancel();
                break;
            }
            Err(e) => {
                // The framing cannot be trusted past this point, so the stream goes.
                tracing::warn!(%peer, error = %e, "invalid request frame; dropping the stream");
                stop.cancel();
                break;
            }
        };
        // Waiting here (rather than queueing) stops reading, which the stream's flow control
        // turns into back-pressure on the sender.
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            permit = inflight.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let handler = shared.handler.clone();
        let responses = responses.clone();
        tokio::spawn(
            async move {
                let response = match flotilla_core::decode::<WireRequest>(&message, limit as u64) {
                    Ok(request) => handler.respond(peer, request).await,
                    Err(e) => {
                        tracing::warn!(%peer, id, error = %e, "malformed request");
                        WireResponse::Error(WireError::Malformed(e.to_string()))
                    }
                };
                if let Some(frame) = response_frame(id, &response, limit) {
                    let _ = responses.send(frame).await;
                }
                drop(permit);
            }
            .in_current_span(),
        );
    }
    drop(responses);
    // After a clean end of reading, the writer delivers what is still owed; a handler that
    // never returns must not pin the stream (and its slot) forever, though.
    if tokio::time::timeout(shared.config.idle_stream_timeout, &mut writer_task).await.is_err() {
        tracing::warn!(%peer, "requests still unanswered long after the peer closed the stream; dropping it");
        stop.cancel();
        let _ = writer_task.await;
    }
}

/// Write response frames in completion order until every sender is gone or `stop` fires.
/// Responses that completed together go out in one write (see crate::coalesce).
async fn write_responses(mut writer: WriteHalf<Stream>, mut queue: mpsc::Receiver<Vec<u8>>, stop: CancellationToken) {
    let mut batch = Coalescer::new();
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            frame = queue.recv() => frame,
        };
        let Some(frame) = frame else {
            // Reading ended cleanly and every request has been answered.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.close()).await;
            return;
        };
        batch.push(frame);
        while batch.has_room() {
            match queue.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        let flush = queue.is_empty();
        let written = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            written = batch.write_to(&mut writer, flush) => written,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "writing a response failed; dropping the stream");
            stop.cancel();
            return;
        }
    }
}

/// Encode `response` as the frame answering request `id`. A response too large for a frame is
/// replaced by an error the caller can read.
fn response_frame(id: u64, response: &WireResponse, limit: usize) -> Option<Vec<u8>> {
    let encoded = flotilla_core::encode(response).map(|message| frame::build(id, &message, limit));
    let refusal = match encoded {
        Ok(Ok(frame)) => return Some(frame),
        Ok(Err(too_large)) => {
            tracing::warn!(id, size = too_large.size, limit, "response exceeds the frame limit");
            WireError::Rejected(format!(
                "response of {} bytes exceeds the frame limit of {} bytes",
                too_large.size, too_large.limit
            ))
        }
        Err(e) => {
            tracing::error!(id, error = %e, "cannot encode a response");
            WireError::Fatal(format!("cannot encode the response: {e}"))
        }
    };
    let message = flotilla_core::encode(&WireResponse::Error(refusal)).ok()?;
    frame::build(id, &message, limit).ok()
}
