//! Peers currently visible over mDNS, as a [`Discovery`] backend.
//!
//! The swarm task feeds the table from libp2p-mdns events; [`MdnsDiscovery`] reads it. Every
//! libp2p node on the LAN answers mDNS, not only Flotilla nodes, and nothing stops a host from
//! announcing many peer ids, so the table is bounded in peers and in addresses per peer. A
//! sighting is only a hint: the formation layer asks the peer itself before trusting it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_core::{Discovery, DiscoverySource, Sighting};
use libp2p::{Multiaddr, PeerId};

use crate::address_book::normalize;

/// Peers kept; the one seen least recently is forgotten first.
const MAX_PEERS: usize = 1024;
/// Addresses kept per peer; the oldest is forgotten first.
const MAX_ADDRS_PER_PEER: usize = 16;

/// The peers a [`Host`](crate::Host) currently sees on the local network through mDNS.
///
/// Obtained from [`Host::mdns_discovery`](crate::Host::mdns_discovery). Clones share one table,
/// which the host keeps up to date: a peer appears when its mDNS announcement arrives and
/// disappears when every address it announced has expired (its announced TTL passed without a
/// refresh). Expiry says nothing about whether the peer is down, only that it went quiet; its
/// addresses stay in the host's address book.
#[derive(Clone)]
pub struct MdnsDiscovery {
    table: Arc<Mutex<MdnsTable>>,
}

impl MdnsDiscovery {
    /// An empty table for the host whose peer id is `local` (never reported as a sighting).
    pub(crate) fn new(local: PeerId) -> Self {
        Self { table: Arc::new(Mutex::new(MdnsTable::new(local))) }
    }

    /// Lock the table; a panic elsewhere while holding the lock leaves a usable table behind.
    pub(crate) fn lock(&self) -> MutexGuard<'_, MdnsTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The visible peers, most recently seen first, each with its addresses (newest first,
    /// ending in `/p2p/<peer>`).
    pub fn sightings(&self) -> Vec<Sighting> {
        self.lock().sightings()
    }
}

impl std::fmt::Debug for MdnsDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsDiscovery").field("visible_peers", &self.lock().peers.len()).finish()
    }
}

#[async_trait::async_trait]
impl Discovery for MdnsDiscovery {
    fn name(&self) -> &'static str {
        "mdns"
    }

    async fn discover(&self) -> Vec<Sighting> {
        self.sightings()
    }
}

/// The shared state behind [`MdnsDiscovery`].
pub(crate) struct MdnsTable {
    local: PeerId,
    peers: HashMap<PeerId, Entry>,
    /// Logical clock ordering sightings, for eviction and for the order of the report.
    clock: u64,
}

struct Entry {
    /// Newest first, without a `/p2p` suffix.
    addrs: VecDeque<Multiaddr>,
    seen: u64,
}

impl MdnsTable {
    fn new(local: PeerId) -> Self {
        Self { local, peers: HashMap::new(), clock: 0 }
    }

    /// Record that `peer` announced `addr`. Returns whether it was recorded: our own id and
    /// addresses nobody can dial (unspecified IPs, another peer's suffix) are not.
    pub(crate) fn discovered(&mut self, peer: PeerId, addr: &Multiaddr) -> bool {
        if peer == self.local {
            return false;
        }
        let Some(addr) = normalize(peer, addr) else {
            return false;
        };
        self.clock += 1;
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            // Linear, but only when a full table meets a new peer, and bounded by MAX_PEERS.
            if let Some(oldest) = self.peers.iter().min_by_key(|(_, e)| e.seen).map(|(p, _)| *p) {
                self.peers.remove(&oldest);
            }
        }
        let entry = self.peers.entry(peer).or_insert_with(|| Entry { addrs: VecDeque::new(), seen: 0 });
        entry.seen = self.clock;
        entry.addrs.retain(|a| *a != addr);
        entry.addrs.push_front(addr);
        entry.addrs.truncate(MAX_ADDRS_PER_PEER);
        true
    }

    /// Forget that `peer` announced `addr`; the peer disappears with its last address.
    pub(crate) fn expired(&mut self, peer: PeerId, addr: &Multiaddr) {
        let Some(addr) = normalize(peer, addr) else {
            return;
        };
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.addrs.retain(|a| *a != addr);
            if entry.addrs.is_empty() {
                self.peers.remove(&peer);
            }
        }
    }

    fn sightings(&self) -> Vec<Sighting> {
        let mut peers: Vec<(&PeerId, &Entry)> = self.peers.iter().collect();
        peers.sort_unstable_by_key(|(_, e)| std::cmp::Reverse(e.seen));
        peers
            .into_iter()
            .map(|(peer, entry)| Sighting {
                peer: *peer,
                addrs: entry
                    .addrs
                    .iter()
                    .map(|a| a.clone().with_p2p(*peer).unwrap_or_else(|a| a).to_string())
                    .collect(),
                source: DiscoverySource::Mdns,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::multiaddr::Protocol;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519().public().to_peer_id()
    }

    fn addr(host: u8, port: u16) -> Multiaddr {
        format!("/ip4/10.98.0.{host}/tcp/{port}").parse().unwrap()
    }

    #[tokio::test]
    async fn reports_visible_peers_with_their_addresses() {
        let (local, a, b) = (peer(), peer(), peer());
        let mdns = MdnsDiscovery::new(local);
        assert_eq!(mdns.name(), "mdns");
        assert!(mdns.discover().await.is_empty());

        // libp2p-mdns hands out addresses with the /p2p suffix; either form must land in one
        // entry.
        assert!(mdns.lock().discovered(a, &addr(1, 7000).with(Protocol::P2p(a))));
        assert!(mdns.lock().discovered(a, &addr(1, 7000)));
        assert!(mdns.lock().discovered(b, &addr(2, 7000)));
        assert!(mdns.lock().discovered(a, &addr(3, 7000)));

        let sightings = mdns.discover().await;
        assert_eq!(sightings.len(), 2);
        assert_eq!(sightings[0].peer, a, "most recently seen first");
        assert_eq!(
            sightings[0].addrs,
            vec![format!("/ip4/10.98.0.3/tcp/7000/p2p/{a}"), format!("/ip4/10.98.0.1/tcp/7000/p2p/{a}")]
        );
        assert_eq!(sightings[1].addrs, vec![format!("/ip4/10.98.0.2/tcp/7000/p2p/{b}")]);
        assert!(sightings.iter().all(|s| s.source == DiscoverySource::Mdns));
        // Every address parses back and reaches the right peer.
        for s in &sightings {
            for text in &s.addrs {
                assert!(normalize(s.peer, &text.parse().unwrap()).is_some());
            }
        }
    }

    #[tokio::test]
    async fn expiry_removes_addresses_then_the_peer() {
        let (a, b) = (peer(), peer());
        let mdns = MdnsDiscovery::new(peer());
        mdns.lock().discovered(a, &addr(1, 7000));
        mdns.lock().discovered(a, &addr(1, 7001));
        mdns.lock().discovered(b, &addr(2, 7000));

        mdns.lock().expired(a, &addr(1, 7000).with(Protocol::P2p(a)));
        let sightings = mdns.discover().await;
        let a_sighting = sightings.iter().find(|s| s.peer == a).expect("a still has an address");
        assert_eq!(a_sighting.addrs, vec![format!("/ip4/10.98.0.1/tcp/7001/p2p/{a}")]);

        // Expiring an address a peer never announced, or one of an unknown peer, changes nothing.
        mdns.lock().expired(a, &addr(9, 9));
        mdns.lock().expired(peer(), &addr(1, 7001));
        assert_eq!(mdns.discover().await.len(), 2);

        mdns.lock().expired(a, &addr(1, 7001));
        let sightings = mdns.discover().await;
        assert_eq!(sightings.iter().map(|s| s.peer).collect::<Vec<_>>(), vec![b]);
        mdns.lock().expired(b, &addr(2, 7000));
        assert!(mdns.discover().await.is_empty());
    }

    #[test]
    fn skips_self_and_undialable_addresses() {
        let (local, a, b) = (peer(), peer(), peer());
        let mdns = MdnsDiscovery::new(local);
        assert!(!mdns.lock().discovered(local, &addr(1, 7000)));
        assert!(!mdns.lock().discovered(a, &"/ip4/0.0.0.0/tcp/7000".parse().unwrap()));
        assert!(!mdns.lock().discovered(a, &addr(1, 7000).with(Protocol::P2p(b))));
        assert!(mdns.sightings().is_empty());
    }

    #[test]
    fn bounded_in_peers_and_addresses() {
        let mdns = MdnsDiscovery::new(peer());
        let first = peer();
        mdns.lock().discovered(first, &addr(1, 7000));
        for port in 0..(MAX_ADDRS_PER_PEER as u16 + 5) {
            mdns.lock().discovered(first, &addr(1, port));
        }
        let sightings = mdns.sightings();
        assert_eq!(sightings[0].addrs.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(sightings[0].addrs[0], format!("/ip4/10.98.0.1/tcp/{}/p2p/{first}", MAX_ADDRS_PER_PEER + 4));

        let second = peer();
        mdns.lock().discovered(second, &addr(2, 7000));
        // A flood of new peers pushes out the least recently seen ones, never past the bound.
        let flood: Vec<PeerId> = (0..MAX_PEERS).map(|_| peer()).collect();
        for (i, p) in flood.iter().enumerate() {
            mdns.lock().discovered(*p, &addr(3, i as u16));
            if i == 0 {
                // Seen again, so it outlives `second`.
                mdns.lock().discovered(first, &addr(1, 7000));
            }
        }
        let sightings = mdns.sightings();
        assert_eq!(sightings.len(), MAX_PEERS);
        let visible: std::collections::HashSet<PeerId> = sightings.iter().map(|s| s.peer).collect();
        assert!(!visible.contains(&second));
        assert!(visible.contains(&first));
        assert!(visible.contains(flood.last().unwrap()));
    }
}
