//! One long-lived outbound RPC stream and the task that owns it.
//!
//! The link opens its stream lazily on the first call, writes request frames tagged with fresh
//! request ids (each together with the calls already queued behind it, see [`crate::coalesce`]),
//! and a reader task routes each response to the waiting caller by id. When the stream fails,
//! every call waiting on it fails with `Unreachable` at once, and the next call
//! reopens the stream. When opening fails, calls fail fast during a growing backoff, unless the
//! address book learned something new about the peer in the meantime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flotilla_core::wire::WireResponse;
use flotilla_core::TransportError;
use futures::io::ReadHalf;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::coalesce::Coalescer;
use crate::frame::{self, ReadError};
use crate::outbound::{LinkShared, Outgoing, Reply};
use crate::swarm_task::SwarmCommand;

/// How often calls whose callers gave up are dropped from the pending table.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on closing a stream politely before dropping it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A call written to the stream and awaiting its response.
struct Pending {
    reply: oneshot::Sender<Reply>,
    /// Held until the response arrives, so the pending table never exceeds its bound.
    _slot: OwnedSemaphorePermit,
}

#[derive(Clone, Default)]
struct PendingTable(Arc<Mutex<HashMap<u64, Pending>>>);

impl PendingTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail_all(&self, error: TransportError) {
        for (_, pending) in self.lock().drain() {
            let _ = pending.reply.send(Reply::Done(Err(error.clone())));
        }
    }
}

/// Why a stream stopped being driven.
enum End {
    /// No traffic for the idle timeout; the link ends.
    Idle,
    /// The host is shutting down, or nobody can send to the link any more.
    Stopped,
    /// The stream broke; the next call reopens it.
    Failed(String),
}

/// Delays between failed attempts to open the stream.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    fn step(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Run the link to `peer` until it is idle, the host shuts down or the router forgets it.
pub(crate) async fn run(peer: PeerId, shared: Arc<LinkShared>, mut calls: mpsc::Receiver<Outgoing>) {
    let config = &shared.config;
    let mut control = shared.control.clone();
    let mut backoff = Backoff::new(config.reconnect_backoff_min, config.reconnect_backoff_max);
    // When the last attempt to open failed: retry not before `.0`, unless the peer's address
    // generation moves past `.1`.
    let mut retry: Option<(Instant, u64)> = None;

    loop {
        let first = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break,
            call = calls.recv() => match call {
                Some(call) => call,
                None => break,
            },
            _ = tokio::time::sleep(config.idle_stream_timeout) => break,
        };

        if let Some((not_before, generation)) = retry {
            let now = Instant::now();
            if now < not_before && shared.book.lock().generation(&peer) == generation {
                let reason = format!("cannot open a stream; next attempt in {:?}", not_before - now);
                let _ = first.reply.send(Reply::Done(Err(TransportError::Unreachable(peer, reason))));
                continue;
            }
        }

        let stream = match open(peer, &shared, &mut control).await {
            Ok(stream) => stream,
            Err(reason) => {
                let delay = backoff.step();
                tracing::debug!(%reason, ?delay, "opening the RPC stream failed");
                retry = Some((Instant::now() + delay, shared.book.lock().generation(&peer)));
                let _ = first.reply.send(Reply::Done(Err(TransportError::Unreachable(peer, reason))));
                continue;
            }
        };
        tracing::debug!("RPC stream open");
        backoff.reset();
        retry = None;

        match drive(peer, stream, first, &mut calls, &shared).await {
            End::Idle | End::Stopped => break,
            // A stream that worked and then broke is reopened at the next call right away:
            // the peer may well be back already (or reachable over another connection).
            End::Failed(reason) => tracing::info!(%reason, "RPC stream failed"),
        }
    }
    // Calls that arrived after the decision to stop were never written: hand them back, so
    // the router can give them to a fresh link (or fail them, when shutting down).
    calls.close();
    while let Ok(call) = calls.try_recv() {
        let reply = if shared.cancel.is_cancelled() {
            Reply::Done(Err(TransportError::Closed))
        } else {
            Reply::NotSent(call.frame)
        };
        let _ = call.reply.send(reply);
    }
    tracing::debug!("outbound link stopped");
}

/// Connect to `peer` if needed and negotiate a new RPC stream, within the connect timeout.
async fn open(peer: PeerId, shared: &LinkShared, control: &mut libp2p_stream::Control) -> Result<Stream, String> {
    let attempt = async {
        // The swarm task dials with the address book and reports the outcome; this gives a
        // clear error when the peer has no address or refuses, instead of a silent wait.
        let (reply, connected) = oneshot::channel();
        shared
            .commands
            .send(SwarmCommand::DialPeer { peer, reply })
            .await
            .map_err(|_| "network stopped".to_string())?;
        connected.await.map_err(|_| "network stopped".to_string())??;
        control.open_stream(peer, crate::rpc_protocol()).await.map_err(|e| e.to_string())
    };
    let timeout = shared.config.connect_timeout;
    tokio::select! {
        biased;
        _ = shared.cancel.cancelled() => Err("shutting down".into()),
        result = tokio::time::timeout(timeout, attempt) => {
            result.unwrap_or_else(|_| Err(format!("no stream within {timeout:?}")))
        }
    }
}

/// Drive an open stream: write calls, route responses, until it fails, idles or is stopped.
async fn drive(
    peer: PeerId,
    stream: Stream,
    first: Outgoing,
    calls: &mut mpsc::Receiver<Outgoing>,
    shared: &LinkShared,
) -> End {
    let config = &shared.config;
    let (reader, mut writer) = stream.split();
    let pending = PendingTable::default();
    let slots = Arc::new(Semaphore::new(config.max_pending_per_stream));
    let mut reader_task: JoinHandle<String> = tokio::spawn(
        read_responses(reader, pending.clone(), config.max_frame_bytes).instrument(tracing::Span::current()),
    );
    let mut next_id: u64 = 0;
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut last_call = Instant::now();
    // A call is only taken off the queue with a pending slot in hand. The table is fresh, so
    // the first call (taken before the stream existed) always gets one.
    let mut slot = slots.clone().try_acquire_owned().ok();
    let mut next = Some(first);
    let mut batch = Coalescer::new();

    let end = loop {
        if slot.is_none() {
            slot = slots.clone().try_acquire_owned().ok();
        }
        let call = match next.take() {
            Some(call) => call,
            None => {
                let idle = slot.is_some() && pending.lock().is_empty();
                tokio::select! {
                    biased;
                    _ = shared.cancel.cancelled() => break End::Stopped,
                    reason = &mut reader_task => break End::Failed(reason.unwrap_or_else(|e| e.to_string())),
                    _ = sweep.tick() => {
                        // Callers that timed out dropped their receivers; their slots are freed
                        // here even if the peer never answers.
                        pending.lock().retain(|_, p| !p.reply.is_closed());
                        continue;
                    }
                    permit = slots.clone().acquire_owned(), if slot.is_none() => {
                        slot = permit.ok();
                        continue;
                    }
                    call = calls.recv(), if slot.is_some() => match call {
                        Some(call) => call,
                        None => break End::Stopped,
                    },
                    _ = tokio::time::sleep_until(last_call + config.idle_stream_timeout), if idle => break End::Idle,
                }
            }
        };

        last_call = Instant::now();
        let permit = slot.take().expect("a slot is held for every call taken");
        // The calls already queued behind this one go out with it (see crate::coalesce).
        let mut taken = Some((call, permit));
        while let Some((call, permit)) = taken.take() {
            if let Some(frame) = register(call, permit, &mut next_id, &pending) {
                batch.push(frame);
            }
            if batch.has_room() {
                taken = take_queued(&mut slot, &slots, calls);
            }
        }
        if batch.is_empty() {
            continue; // Every caller gave up while its call was queued.
        }

        let flush = calls.is_empty();
        let written = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break End::Stopped,
            reason = &mut reader_task => break End::Failed(reason.unwrap_or_else(|e| e.to_string())),
            written = batch.write_to(&mut writer, flush) => written,
        };
        if let Err(e) = written {
            break End::Failed(format!("write failed: {e}"));
        }
    };

    reader_task.abort();
    match &end {
        End::Failed(reason) => pending.fail_all(TransportError::Unreachable(peer, reason.clone())),
        End::Stopped => pending.fail_all(TransportError::Closed),
        End::Idle => {}
    }
    if !matches!(end, End::Failed(_)) {
        // Tell the peer we are done, so its serving task ends now rather than at disconnect.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.close()).await;
    }
    end
}

/// Give `call` the next request id and record it as pending, holding `permit`; its frame, or
/// `None` (and the permit released) when the caller gave up while the call was queued.
fn register(
    call: Outgoing,
    permit: OwnedSemaphorePermit,
    next_id: &mut u64,
    pending: &PendingTable,
) -> Option<Vec<u8>> {
    let Outgoing { mut frame, reply } = call;
    if reply.is_closed() {
        return None;
    }
    *next_id = next_id.wrapping_add(1);
    frame::set_id(&mut frame, *next_id);
    pending.lock().insert(*next_id, Pending { reply, _slot: permit });
    Some(frame)
}

/// The next call already queued, with a pending slot for it, without waiting for either. The
/// slot in hand (if any) is used first, and kept when nothing is queued.
fn take_queued(
    slot: &mut Option<OwnedSemaphorePermit>,
    slots: &Arc<Semaphore>,
    calls: &mut mpsc::Receiver<Outgoing>,
) -> Option<(Outgoing, OwnedSemaphorePermit)> {
    let permit = slot.take().or_else(|| slots.clone().try_acquire_owned().ok())?;
    match calls.try_recv() {
        Ok(call) => Some((call, permit)),
        Err(_) => {
            *slot = Some(permit);
            None
        }
    }
}

/// Route response frames to their callers until the stream fails; returns why it did.
async fn read_responses(mut reader: ReadHalf<Stream>, pending: PendingTable, limit: usize) -> String {
    loop {
        let (id, message) = match frame::read(&mut reader, limit).await {
            Ok(frame) => frame,
            Err(ReadError::Closed) => return "stream closed by the peer".into(),
            Err(e) => {
                if !matches!(e, ReadError::Io(_)) {
                    tracing::warn!(error = %e, "invalid response frame; dropping the stream");
                }
                return e.to_string();
            }
        };
        let Some(call) = pending.lock().remove(&id) else {
            tracing::trace!(id, "response to a call that was given up");
            continue;
        };
        let response = flotilla_core::decode::<WireResponse>(&message, limit as u64).map_err(|e| {
            tracing::warn!(id, error = %e, "undecodable response");
            TransportError::Protocol(format!("undecodable response: {e}"))
        });
        let _ = call.reply.send(Reply::Done(response));
    }
}
