//! Routing outbound calls to long-lived streams.
//!
//! Each peer gets up to three outbound streams ("lanes"), each owned by its own link task (see
//! [`crate::link`]). Lanes exist because one stream delivers its bytes in order: a 16 MiB
//! snapshot chunk or a large forwarded write being written would otherwise sit in front of the
//! heartbeats that keep the leader in office. Across lanes, yamux interleaves the streams, so
//! Raft traffic never waits behind bulk data. Within a lane, requests are pipelined: many are
//! in flight at once and responses are matched by request id, in any order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flotilla_core::wire::{Lane, WireResponse};
use flotilla_core::TransportError;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::address_book::SharedBook;
use crate::config::NetConfig;
use crate::swarm_task::SwarmCommand;

/// Calls queued for one link before callers wait (within their own timeout) for room.
const LINK_QUEUE: usize = 256;
/// How many links a call may be handed to before it fails.
const MAX_HANDOFFS: usize = 3;

/// One call handed to a link: a complete frame (its request id is filled in by the link) and
/// where the reply goes.
pub(crate) struct Outgoing {
    pub(crate) frame: Vec<u8>,
    pub(crate) reply: oneshot::Sender<Reply>,
}

/// A link's answer to a call.
pub(crate) enum Reply {
    /// The call was sent (or could not be); this is its outcome.
    Done(Result<WireResponse, TransportError>),
    /// The link stopped before writing the call, which can therefore safely be sent again.
    NotSent(Vec<u8>),
}

/// What every link needs from the host.
pub(crate) struct LinkShared {
    pub(crate) control: libp2p_stream::Control,
    pub(crate) commands: mpsc::Sender<SwarmCommand>,
    pub(crate) book: SharedBook,
    pub(crate) config: NetConfig,
    pub(crate) cancel: CancellationToken,
}

/// The table of running links.
pub(crate) struct Outbound {
    links: Mutex<HashMap<(PeerId, Lane), mpsc::Sender<Outgoing>>>,
    shared: Arc<LinkShared>,
}

impl Outbound {
    pub(crate) fn new(shared: LinkShared) -> Self {
        Self { links: Mutex::new(HashMap::new()), shared: Arc::new(shared) }
    }

    /// Send `frame` to `peer` on `lane` and wait for the reply. The caller bounds the wait.
    pub(crate) async fn call(
        &self,
        peer: PeerId,
        lane: Lane,
        mut frame: Vec<u8>,
    ) -> Result<WireResponse, TransportError> {
        // A link stops by itself when idle. A call that reaches it just then comes back unsent
        // (or finds the link's queue closed) and is handed to a fresh link.
        for _ in 0..MAX_HANDOFFS {
            if self.shared.cancel.is_cancelled() {
                return Err(TransportError::Closed);
            }
            let (reply, response) = oneshot::channel();
            let link = self.link(peer, lane);
            if let Err(mpsc::error::SendError(back)) = link.send(Outgoing { frame, reply }).await {
                frame = back.frame;
                continue;
            }
            match response.await {
                Ok(Reply::Done(result)) => return result,
                Ok(Reply::NotSent(back)) => frame = back,
                Err(_) if self.shared.cancel.is_cancelled() => return Err(TransportError::Closed),
                Err(_) => return Err(TransportError::Unreachable(peer, "outbound stream task stopped".into())),
            }
        }
        Err(TransportError::Unreachable(peer, "outbound stream task keeps stopping".into()))
    }

    /// The running link for `(peer, lane)`, started if there is none.
    fn link(&self, peer: PeerId, lane: Lane) -> mpsc::Sender<Outgoing> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get(&(peer, lane)).filter(|l| !l.is_closed()) {
            return link.clone();
        }
        // Links of departed peers end when idle; their entries go here, so the table stays
        // as small as the set of peers recently called.
        links.retain(|_, l| !l.is_closed());
        let (sender, receiver) = mpsc::channel(LINK_QUEUE);
        let span = tracing::debug_span!("rpc_out", %peer, ?lane);
        tokio::spawn(crate::link::run(peer, self.shared.clone(), receiver).instrument(span));
        links.insert((peer, lane), sender.clone());
        sender
    }
}
