//! The task that owns the swarm.
//!
//! The swarm is not shareable, so one task drives it and everybody else talks to it through a
//! bounded command channel. RPC bytes never pass through here (they move on the connection
//! tasks via `libp2p_stream`), so this loop only handles dials, listen addresses, identify,
//! ping and mDNS; a slow call can never stall it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{identify, mdns, ping, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::address_book::SharedBook;
use crate::behaviour::{Behaviour, BehaviourEvent, IDENTIFY_PROTOCOL};
use crate::mdns::MdnsDiscovery;

/// Capacity of the command channel.
pub(crate) const COMMAND_QUEUE: usize = 64;
/// Dials by address awaiting their outcome; more are refused rather than queued.
const MAX_PENDING_CONNECTS: usize = 1024;
/// How long shutdown waits for connections to close politely.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Requests to the swarm task.
pub(crate) enum SwarmCommand {
    /// Dial `addr` (whose peer may be unknown) and reply with the peer's id once connected.
    Connect { addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, String>> },
    /// Make sure there is a connection to `peer`, dialing its known addresses if needed.
    DialPeer { peer: PeerId, reply: oneshot::Sender<Result<(), String>> },
}

/// State of the swarm task.
pub(crate) struct SwarmTask {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) commands: mpsc::Receiver<SwarmCommand>,
    pub(crate) book: SharedBook,
    /// Peers visible over mDNS; `None` when mDNS is off.
    pub(crate) mdns: Option<MdnsDiscovery>,
    /// Concrete listen addresses, as reported by the swarm.
    pub(crate) listen_addrs: watch::Sender<Vec<Multiaddr>>,
    pub(crate) cancel: CancellationToken,
    /// Dials by address, keyed by the connection they will produce.
    pub(crate) connects: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, String>>>,
    /// Links waiting for a connection to a peer.
    pub(crate) peer_waiters: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>>,
    /// Open connections per peer with the peer's IP address on each, to drop the ones left
    /// behind when a peer comes back from another address (see [`moved_away`]).
    pub(crate) connections: HashMap<PeerId, Vec<(ConnectionId, Option<IpAddr>)>>,
}

/// The IP address of the remote end of a connection.
fn remote_ip(endpoint: &ConnectedPoint) -> Option<IpAddr> {
    let address = match endpoint {
        ConnectedPoint::Dialer { address, .. } => address,
        ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
    };
    address.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// The connections of a peer to close when it connects again from `new_ip`: those to another
/// IP address. A peer that moved (a new address, a restart behind NAT) leaves its old
/// connection dead but open, with no RST to close it; calls would keep picking it until the
/// ping timeout ends it, long after the peer is back. Two live connections from one host (a
/// simultaneous dial) share the IP address and are both kept.
pub(crate) fn moved_away(existing: &[(ConnectionId, Option<IpAddr>)], new_ip: Option<IpAddr>) -> Vec<ConnectionId> {
    let Some(new_ip) = new_ip else { return Vec::new() };
    existing.iter().filter(|(_, ip)| ip.is_some_and(|ip| ip != new_ip)).map(|(id, _)| *id).collect()
}

impl SwarmTask {
    /// Drive the swarm until the host shuts down (or is dropped).
    pub(crate) async fn run(mut self) {
        loop {
            // Unbiased: neither a stream of commands nor a burst of swarm events may starve
            // the other.
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        self.close().await;
    }

    /// Close every connection politely (peers see a clean end of their streams rather than a
    /// reset), within a short grace period.
    async fn close(mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        while self.swarm.connected_peers().next().is_some() {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(_) => {}
                Err(_) => break,
            }
        }
        tracing::debug!("swarm stopped");
    }

    fn on_command(&mut self, command: SwarmCommand) {
        match command {
            SwarmCommand::Connect { addr, reply } => self.connect(addr, reply),
            SwarmCommand::DialPeer { peer, reply } => self.dial_peer(peer, reply),
        }
    }

    fn connect(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, String>>) {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            if self.swarm.is_connected(&peer) {
                self.book.lock().add(peer, &addr);
                let _ = reply.send(Ok(peer));
                return;
            }
        }
        self.connects.retain(|_, r| !r.is_closed());
        if self.connects.len() >= MAX_PENDING_CONNECTS {
            let _ = reply.send(Err("too many dials in progress".into()));
            return;
        }
        let opts = DialOpts::unknown_peer_id().address(addr).build();
        let connection = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.connects.insert(connection, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }

    fn dial_peer(&mut self, peer: PeerId, reply: oneshot::Sender<Result<(), String>>) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        self.peer_waiters.retain(|_, waiters| {
            waiters.retain(|w| !w.is_closed());
            !waiters.is_empty()
        });
        self.peer_waiters.entry(peer).or_default().push(reply);
        let opts = DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing).build();
        match self.swarm.dial(opts) {
            Ok(()) => {}
            // A dial is already under way; its outcome answers this waiter too.
            Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => self.answer_waiters(peer, Err(e.to_string())),
        }
    }

    fn answer_waiters(&mut self, peer: PeerId, result: Result<(), String>) {
        for waiter in self.peer_waiters.remove(&peer).unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen_addrs.send_if_modified(|addrs| {
                    let new = !addrs.contains(&address);
                    if new {
                        addrs.push(address);
                    }
                    new
                });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::info!(%address, "no longer listening");
                self.listen_addrs.send_modify(|addrs| addrs.retain(|a| *a != address));
            }
            SwarmEvent::ListenerClosed { addresses, reason, .. } => {
                if let Err(e) = reason {
                    tracing::warn!(error = %e, ?addresses, "listener failed");
                }
                self.listen_addrs.send_modify(|addrs| addrs.retain(|a| !addresses.contains(a)));
            }
            SwarmEvent::ListenerError { error, .. } => tracing::warn!(%error, "listener error"),
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                tracing::debug!(peer = %peer_id, ?endpoint, "connection established");
                // An address we dialed successfully is worth remembering; the remote port of an
                // inbound connection is ephemeral and is not.
                let mut book = self.book.lock();
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    book.add(peer_id, address);
                }
                // The peer is reachable right now: links backing off after failed attempts may
                // retry at once (over this very connection, if it is inbound).
                book.bump(peer_id);
                drop(book);
                let ip = remote_ip(&endpoint);
                let known = self.connections.entry(peer_id).or_default();
                let stale = moved_away(known, ip);
                known.retain(|(id, _)| !stale.contains(id));
                known.push((connection_id, ip));
                for old in stale {
                    tracing::info!(peer = %peer_id, ?ip, "the peer connected from a new address; closing its old connection");
                    self.swarm.close_connection(old);
                }
                if let Some(reply) = self.connects.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                self.answer_waiters(peer_id, Ok(()));
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
                let reason = error.to_string();
                if let Some(reply) = self.connects.remove(&connection_id) {
                    let _ = reply.send(Err(reason.clone()));
                }
                if let Some(peer) = peer_id.filter(|p| !self.swarm.is_connected(p)) {
                    self.answer_waiters(peer, Err(reason));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, cause, num_established, .. } => {
                tracing::debug!(peer = %peer_id, ?cause, remaining = num_established, "connection closed");
                if let Some(known) = self.connections.get_mut(&peer_id) {
                    known.retain(|(id, _)| *id != connection_id);
                    if known.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                tracing::debug!(from = %send_back_addr, %error, "inbound connection failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                if info.protocol_version != IDENTIFY_PROTOCOL {
                    tracing::debug!(peer = %peer_id, protocol = %info.protocol_version, "peer is not a Flotilla node");
                    return;
                }
                let mut book = self.book.lock();
                for addr in &info.listen_addrs {
                    book.add(peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(event)) => self.on_mdns(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, connection, result: Err(failure) }))
                if !matches!(failure, ping::Failure::Unsupported) =>
            {
                // Closing fails every stream of the connection now, so callers learn at once
                // instead of each waiting out its own timeout.
                tracing::info!(%peer, %failure, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
            _ => {}
        }
    }

    fn on_mdns(&mut self, event: mdns::Event) {
        let local = *self.swarm.local_peer_id();
        match event {
            mdns::Event::Discovered(found) => {
                let mut book = self.book.lock();
                for (peer, addr) in found.iter().filter(|(peer, _)| *peer != local) {
                    tracing::debug!(%peer, %addr, "seen over mDNS");
                    book.add(*peer, addr);
                    // libp2p-mdns reports a (peer, address) pair only when it is new to it, so
                    // this is a peer (re)appearing: links backing off from it may retry now.
                    book.bump(*peer);
                }
                drop(book);
                if let Some(mdns) = &self.mdns {
                    let mut table = mdns.lock();
                    for (peer, addr) in found.iter().filter(|(peer, _)| *peer != local) {
                        table.discovered(*peer, addr);
                    }
                }
            }
            // Only the sighting ends: the address book keeps the addresses, since a member
            // that went quiet (restarting, partitioned) is expected back at them.
            mdns::Event::Expired(gone) => {
                if let Some(mdns) = &self.mdns {
                    let mut table = mdns.lock();
                    for (peer, addr) in &gone {
                        tracing::debug!(%peer, %addr, "mDNS record expired");
                        table.expired(*peer, addr);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_back_from_another_address_leaves_its_old_connections_behind() {
        let a: IpAddr = "10.0.0.3".parse().unwrap();
        let b: IpAddr = "10.0.0.150".parse().unwrap();
        let (c1, c2, c3) =
            (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2), ConnectionId::new_unchecked(3));
        let existing = [(c1, Some(a)), (c2, Some(a)), (c3, None)];
        assert_eq!(moved_away(&existing, Some(b)), vec![c1, c2], "moved: the old address's connections go");
        assert!(moved_away(&existing, Some(a)).is_empty(), "a second connection from the same host stays");
        assert!(moved_away(&existing, None).is_empty(), "no address known: nothing is judged");
        assert!(moved_away(&[], Some(b)).is_empty());
    }
}
