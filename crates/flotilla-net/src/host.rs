//! The [`Host`]: Flotilla's [`Transport`] over libp2p.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_core::wire::{WireRequest, WireResponse};
use flotilla_core::{InboundHandler, NodeId, Transport, TransportError};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::address_book::SharedBook;
use crate::behaviour::build_swarm;
use crate::config::NetConfig;
use crate::error::NetError;
use crate::frame;
use crate::inbound::{accept_loop, HandlerSlot, InboundShared};
use crate::mdns::MdnsDiscovery;
use crate::outbound::{LinkShared, Outbound};
use crate::swarm_task::{SwarmCommand, SwarmTask, COMMAND_QUEUE};

/// How long [`Host::start`] waits for the first listen address.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// A running libp2p node: the production [`Transport`].
///
/// Dropping the host stops its tasks; [`Host::shutdown`] does the same and waits for the swarm
/// to close its connections.
pub struct Host {
    local_id: PeerId,
    config: NetConfig,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
    commands: mpsc::Sender<SwarmCommand>,
    book: SharedBook,
    mdns: Option<MdnsDiscovery>,
    handler: Arc<HandlerSlot>,
    outbound: Outbound,
    control: libp2p_stream::Control,
    closed: AtomicBool,
    cancel: CancellationToken,
    swarm_task: Mutex<Option<JoinHandle<()>>>,
}

impl Host {
    /// Start a host with identity `keypair`, listening on the multiaddrs `listen` (for example
    /// `/ip4/0.0.0.0/tcp/7000`; port 0 picks a free port).
    ///
    /// Returns once at least one listen address is up, so [`Transport::local_addrs`] is never
    /// empty for a listening host. An empty `listen` makes a host that only dials out; peers
    /// reach it over the connections it opens.
    pub async fn start(keypair: Keypair, listen: &[String], config: NetConfig) -> Result<Arc<Host>, NetError> {
        let config = config.sanitized();
        let local_id = keypair.public().to_peer_id();
        let book = SharedBook::default();
        let mut swarm = build_swarm(&keypair, &book, &config)?;
        // Decided by the swarm rather than the configuration: mDNS may have failed to start.
        let mdns = swarm.behaviour().mdns.is_enabled().then(|| MdnsDiscovery::new(local_id));

        // Register the protocol before listening, so no early stream finds it missing.
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control
            .accept(crate::rpc_protocol())
            .map_err(|e| NetError::Swarm(format!("cannot register {}: {e}", crate::RPC_PROTOCOL)))?;

        for text in listen {
            let addr: Multiaddr =
                text.parse().map_err(|e| NetError::InvalidAddr { addr: text.clone(), reason: format!("{e}") })?;
            swarm.listen_on(addr).map_err(|e| NetError::Listen { addr: text.clone(), reason: e.to_string() })?;
        }

        let cancel = CancellationToken::new();
        let (command_sender, commands) = mpsc::channel(COMMAND_QUEUE);
        let (listen_sender, mut listen_addrs) = watch::channel(Vec::new());
        let task = SwarmTask {
            swarm,
            commands,
            book: book.clone(),
            mdns: mdns.clone(),
            listen_addrs: listen_sender,
            cancel: cancel.clone(),
            connects: HashMap::new(),
            peer_waiters: HashMap::new(),
            connections: HashMap::new(),
        };
        let swarm_task = tokio::spawn(task.run().instrument(tracing::info_span!("swarm", local = %local_id)));

        let handler = Arc::new(HandlerSlot::default());
        let inbound = Arc::new(InboundShared {
            handler: handler.clone(),
            config: config.clone(),
            streams: Arc::new(Semaphore::new(config.max_inbound_streams)),
            cancel: cancel.clone(),
        });
        // Accepting starts before anything can reach us: libp2p-stream drops streams that find
        // no one accepting.
        tokio::spawn(accept_loop(incoming, inbound).instrument(tracing::info_span!("accept", local = %local_id)));

        if !listen.is_empty() {
            let up = tokio::time::timeout(LISTEN_WAIT, listen_addrs.wait_for(|addrs| !addrs.is_empty())).await;
            if !matches!(up, Ok(Ok(_))) {
                cancel.cancel();
                let _ = swarm_task.await;
                return Err(NetError::NoListenAddr(LISTEN_WAIT));
            }
        }

        let outbound = Outbound::new(LinkShared {
            control: control.clone(),
            commands: command_sender.clone(),
            book: book.clone(),
            config: config.clone(),
            cancel: cancel.clone(),
        });
        tracing::info!(peer_id = %local_id, addrs = ?*listen_addrs.borrow(), "network host started");
        Ok(Arc::new(Host {
            local_id,
            config,
            listen_addrs,
            commands: command_sender,
            book,
            mdns,
            handler,
            outbound,
            control,
            closed: AtomicBool::new(false),
            cancel,
            swarm_task: Mutex::new(Some(swarm_task)),
        }))
    }

    /// Stop the host: stop accepting streams, fail calls in flight with
    /// [`TransportError::Closed`], and close all connections. Later calls fail with `Closed`.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.cancel.cancel();
        let task = self.swarm_task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        tracing::info!(peer_id = %self.local_id, "network host stopped");
    }

    /// A handle for opening raw streams over this host's connections (diagnostics and tests;
    /// the RPC protocol is already being accepted by the host itself).
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// The peers this host currently sees on the local network, as a discovery backend; `None`
    /// when mDNS is disabled ([`NetConfig::mdns_query_interval`]) or could not start.
    pub fn mdns_discovery(&self) -> Option<MdnsDiscovery> {
        self.mdns.clone()
    }

    /// The configuration in effect (after raising zero limits).
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// A call to ourselves goes straight to the handler: no dial, no encoding.
    async fn call_local(&self, request: WireRequest, timeout: Duration) -> Result<WireResponse, TransportError> {
        let handler = self.handler.clone();
        let local = self.local_id;
        // Spawned so the handler runs to completion even if the caller gives up, exactly as
        // it would for a remote caller.
        let task = tokio::spawn(async move { handler.respond(local, request).await }.in_current_span());
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(TransportError::Protocol(format!("local handler failed: {e}"))),
            Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[async_trait::async_trait]
impl Transport for Host {
    fn local_id(&self) -> NodeId {
        self.local_id
    }

    /// The concrete listen addresses, each ending in `/p2p/<local peer id>`.
    fn local_addrs(&self) -> Vec<String> {
        self.listen_addrs
            .borrow()
            .iter()
            .map(|addr| addr.clone().with_p2p(self.local_id).unwrap_or_else(|addr| addr).to_string())
            .collect()
    }

    async fn call(&self, to: NodeId, request: WireRequest, timeout: Duration) -> Result<WireResponse, TransportError> {
        if self.is_closed() {
            return Err(TransportError::Closed);
        }
        if to == self.local_id {
            return self.call_local(request, timeout).await;
        }
        let lane = request.body.lane();
        let message = flotilla_core::encode(&request)
            .map_err(|e| TransportError::Protocol(format!("cannot encode the request: {e}")))?;
        // The request id is filled in by the stream that carries the frame.
        let frame = frame::build(0, &message, self.config.max_frame_bytes)
            .map_err(|t| TransportError::TooLarge { size: t.size, limit: t.limit })?;
        drop(message);
        match tokio::time::timeout(timeout, self.outbound.call(to, lane, frame)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }

    fn set_handler(&self, handler: Arc<dyn InboundHandler>) {
        self.handler.set(handler);
    }

    /// Accepts addresses with or without a `/p2p/<peer>` suffix; ones naming another peer, and
    /// unparsable ones, are ignored with a warning.
    fn add_peer_addrs(&self, peer: NodeId, addrs: &[String]) {
        if peer == self.local_id || self.is_closed() {
            return;
        }
        let mut book = self.book.lock();
        for text in addrs {
            match text.parse::<Multiaddr>() {
                Ok(addr) => {
                    if crate::address_book::normalize(peer, &addr).is_none() {
                        tracing::warn!(%peer, addr = %text, "ignoring an address that cannot reach this peer");
                    }
                    book.add(peer, &addr);
                }
                Err(e) => tracing::warn!(%peer, addr = %text, error = %e, "ignoring an unparsable peer address"),
            }
        }
        // Even known addresses are news here: the node layer believes the peer is reachable,
        // so a link backing off after failures should try again now.
        book.bump(peer);
    }

    /// Accepts an address with or without a `/p2p/<peer>` suffix; with one, the remote must
    /// prove that identity. Errors name the peer of the suffix, or [`crate::unknown_peer`].
    async fn connect(&self, addr: &str, timeout: Duration) -> Result<NodeId, TransportError> {
        if self.is_closed() {
            return Err(TransportError::Closed);
        }
        let multiaddr: Multiaddr = addr.parse().map_err(|e| {
            TransportError::Unreachable(crate::unknown_peer(), format!("invalid address {addr:?}: {e}"))
        })?;
        let named = match multiaddr.iter().last() {
            Some(Protocol::P2p(peer)) => peer,
            _ => crate::unknown_peer(),
        };
        let attempt = async {
            let (reply, outcome) = oneshot::channel();
            self.commands
                .send(SwarmCommand::Connect { addr: multiaddr, reply })
                .await
                .map_err(|_| TransportError::Closed)?;
            match outcome.await {
                Ok(Ok(peer)) => Ok(peer),
                Ok(Err(reason)) => Err(TransportError::Unreachable(named, format!("dialing {addr}: {reason}"))),
                Err(_) => Err(TransportError::Closed),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }
}
