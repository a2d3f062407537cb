//! Where peers may be reached.
//!
//! The book is shared between the [`Host`](crate::Host) (addresses the node layer supplies from
//! membership), the swarm task (addresses learned from identify and from successful dials) and
//! the swarm itself: [`AddressBookBehaviour`] hands the book's addresses to every dial by peer
//! id, including the dials `libp2p_stream::Control::open_stream` starts on its own. Sharing the
//! table (rather than feeding `Swarm::add_peer_address` through the command channel) keeps
//! `Transport::add_peer_addrs` synchronous and lossless even when the channel is full.
//!
//! Addresses are never removed because a dial failed: a peer that is down now is expected back
//! at the same address. Instead each peer keeps its most recent addresses, and the table keeps
//! its most recently touched peers.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent,
    ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Addresses kept per peer; older ones are forgotten first.
const MAX_ADDRS_PER_PEER: usize = 16;
/// Peers kept; the least recently touched one is forgotten first.
const MAX_PEERS: usize = 4096;

/// The address book, shared by the host, the swarm task and the swarm's behaviour.
#[derive(Clone, Default)]
pub(crate) struct SharedBook(Arc<Mutex<AddressBook>>);

impl SharedBook {
    /// Lock the book; a panic elsewhere while holding the lock leaves a usable table behind.
    pub(crate) fn lock(&self) -> MutexGuard<'_, AddressBook> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
pub(crate) struct AddressBook {
    peers: HashMap<PeerId, Entry>,
    /// Logical clock ordering touches, for eviction.
    clock: u64,
}

struct Entry {
    /// Newest first, without a `/p2p` suffix.
    addrs: VecDeque<Multiaddr>,
    /// Changes whenever there is new reason to believe the peer is reachable; outbound links
    /// compare it to skip their reconnect backoff.
    generation: u64,
    touched: u64,
}

impl AddressBook {
    /// Record `addr` for `peer`, moving it to the front if already known. Returns whether the
    /// address was new. Addresses that cannot be dialed or that name another peer are ignored.
    pub(crate) fn add(&mut self, peer: PeerId, addr: &Multiaddr) -> bool {
        let Some(addr) = normalize(peer, addr) else {
            tracing::debug!(%peer, %addr, "ignoring an address that cannot reach this peer");
            return false;
        };
        let entry = self.touch(peer);
        let new = match entry.addrs.iter().position(|a| *a == addr) {
            Some(i) => {
                let known = entry.addrs.remove(i).expect("index is in range");
                entry.addrs.push_front(known);
                false
            }
            None => {
                entry.addrs.push_front(addr);
                entry.addrs.truncate(MAX_ADDRS_PER_PEER);
                true
            }
        };
        if new {
            entry.generation += 1;
        }
        new
    }

    /// Signal that `peer` may be reachable now (the node layer vouched for its addresses, or
    /// it just connected), even if no address is new.
    pub(crate) fn bump(&mut self, peer: PeerId) {
        self.touch(peer).generation += 1;
    }

    /// The addresses to dial `peer` at, newest first.
    pub(crate) fn addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.peers.get(peer).map(|e| e.addrs.iter().cloned().collect()).unwrap_or_default()
    }

    /// See [`Entry::generation`].
    pub(crate) fn generation(&self, peer: &PeerId) -> u64 {
        self.peers.get(peer).map_or(0, |e| e.generation)
    }

    /// The entry of `peer`, created if needed (evicting the least recently touched peer when
    /// the table is full) and marked as just touched.
    fn touch(&mut self, peer: PeerId) -> &mut Entry {
        self.clock += 1;
        let clock = self.clock;
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            self.evict_oldest();
        }
        let entry =
            self.peers.entry(peer).or_insert_with(|| Entry { addrs: VecDeque::new(), generation: 0, touched: clock });
        entry.touched = clock;
        entry
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self.peers.iter().min_by_key(|(_, e)| e.touched).map(|(p, _)| *p) {
            self.peers.remove(&oldest);
        }
    }
}

/// `addr` without its `/p2p/<peer>` suffix, or `None` if it names another peer or an
/// unspecified IP (which listeners report but nobody can dial).
pub(crate) fn normalize(peer: PeerId, addr: &Multiaddr) -> Option<Multiaddr> {
    let mut addr = addr.clone();
    if let Some(Protocol::P2p(named)) = addr.iter().last() {
        if named != peer {
            return None;
        }
        addr.pop();
    }
    let dialable = addr.iter().next().is_some()
        && addr.iter().all(|p| match p {
            Protocol::Ip4(ip) => !IpAddr::from(ip).is_unspecified(),
            Protocol::Ip6(ip) => !IpAddr::from(ip).is_unspecified(),
            Protocol::P2p(_) | Protocol::P2pCircuit => false,
            _ => true,
        });
    dialable.then_some(addr)
}

/// Swarm behaviour that answers "where is this peer?" from the shared book.
pub(crate) struct AddressBookBehaviour {
    book: SharedBook,
}

impl AddressBookBehaviour {
    pub(crate) fn new(book: SharedBook) -> Self {
        Self { book }
    }
}

impl NetworkBehaviour for AddressBookBehaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(peer.map(|p| self.book.lock().addrs(&p)).unwrap_or_default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519().public().to_peer_id()
    }

    #[test]
    fn normalizes_and_filters() {
        let (a, b) = (peer(), peer());
        let plain: Multiaddr = "/ip4/10.0.0.1/tcp/7000".parse().unwrap();
        let named = plain.clone().with(Protocol::P2p(a));
        assert_eq!(normalize(a, &named), Some(plain.clone()));
        assert_eq!(normalize(a, &plain), Some(plain));
        assert_eq!(normalize(b, &named), None);
        assert_eq!(normalize(a, &"/ip4/0.0.0.0/tcp/7000".parse().unwrap()), None);
        assert_eq!(normalize(a, &"/ip6/::/tcp/7000".parse().unwrap()), None);
    }

    #[test]
    fn newest_first_bounded_and_generations() {
        let p = peer();
        let mut book = AddressBook::default();
        for port in 0..(MAX_ADDRS_PER_PEER as u16 + 4) {
            assert!(book.add(p, &format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap()));
        }
        let addrs = book.addrs(&p);
        assert_eq!(addrs.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(addrs[0], format!("/ip4/10.0.0.1/tcp/{}", MAX_ADDRS_PER_PEER + 3).parse().unwrap());
        let generation = book.generation(&p);
        assert!(!book.add(p, &addrs[3]));
        assert_eq!(book.addrs(&p)[0], addrs[3]);
        assert_eq!(book.generation(&p), generation);
        book.bump(p);
        assert_eq!(book.generation(&p), generation + 1);
    }
}
