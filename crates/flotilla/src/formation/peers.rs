//! Every peer this node has heard of, from any discovery source, and the per-namespace
//! rendezvous records it holds for others. Both are bounded: the oldest entries go first.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use flotilla_core::formation::{PeerAddrs, MAX_PEER_ADDRS, MAX_VIEW_PEERS};
use flotilla_core::types::NodeId;
use flotilla_core::{DiscoverySource, Namespace, Sighting};
use tokio::time::Instant;

/// Most peers remembered.
const MAX_PEERS: usize = 4096;
/// Most rendezvous registrations held per namespace.
const MAX_REGISTRATIONS: usize = 256;
/// Most namespaces this node holds rendezvous records for.
const MAX_RECORD_NAMESPACES: usize = 1024;
/// A peer not seen by any source for this long is forgotten.
const PEER_TTL: Duration = Duration::from_secs(120);
/// A rendezvous registration not renewed for this long expires.
const REGISTRATION_TTL: Duration = Duration::from_secs(60);

/// What is known about one peer.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    /// Addresses it was seen at, newest first.
    pub addrs: Vec<String>,
    /// The sources that reported it.
    pub sources: BTreeSet<DiscoverySource>,
    /// When any source last reported it.
    pub last_seen: Instant,
}

#[derive(Default)]
struct Tables {
    peers: HashMap<NodeId, PeerEntry>,
    records: HashMap<Namespace, HashMap<NodeId, (Vec<String>, Instant)>>,
}

/// The node's peer table.
pub struct PeerTable {
    me: NodeId,
    tables: Mutex<Tables>,
}

impl PeerTable {
    /// An empty table for node `me`.
    pub fn new(me: NodeId) -> Self {
        Self { me, tables: Mutex::new(Tables::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a sighting; returns whether the peer is new.
    pub fn saw(&self, sighting: &Sighting) -> bool {
        if sighting.peer == self.me {
            return false;
        }
        let now = Instant::now();
        let mut t = self.lock();
        let new = !t.peers.contains_key(&sighting.peer);
        if new && t.peers.len() >= MAX_PEERS {
            evict_oldest(&mut t.peers);
        }
        let entry = t.peers.entry(sighting.peer).or_insert_with(|| PeerEntry {
            addrs: Vec::new(),
            sources: BTreeSet::new(),
            last_seen: now,
        });
        // Second-hand reports (another node's lists) never keep a peer alive: nodes would go
        // on telling each other about a peer that left, and it would never expire.
        let second_hand = matches!(sighting.source, DiscoverySource::Rendezvous | DiscoverySource::PeerExchange);
        if new || !second_hand {
            entry.last_seen = now;
        }
        entry.sources.insert(sighting.source);
        for addr in sighting.addrs.iter().rev() {
            entry.addrs.retain(|a| a != addr);
            entry.addrs.insert(0, addr.clone());
        }
        entry.addrs.truncate(MAX_PEER_ADDRS);
        new
    }

    /// Forget peers no source has reported for a while, and expired registrations.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut t = self.lock();
        t.peers.retain(|_, e| now.duration_since(e.last_seen) < PEER_TTL);
        for regs in t.records.values_mut() {
            regs.retain(|_, (_, at)| now.duration_since(*at) < REGISTRATION_TTL);
        }
        t.records.retain(|_, regs| !regs.is_empty());
    }

    /// Every known peer with its entry.
    pub fn all(&self) -> Vec<(NodeId, PeerEntry)> {
        self.lock().peers.iter().map(|(id, e)| (*id, e.clone())).collect()
    }

    /// The entry of one peer.
    pub fn get(&self, peer: &NodeId) -> Option<PeerEntry> {
        self.lock().peers.get(peer).cloned()
    }

    /// Up to [`MAX_VIEW_PEERS`] most recently seen peers, for peer exchange.
    pub fn recent(&self, except: NodeId) -> Vec<PeerAddrs> {
        let t = self.lock();
        let mut peers: Vec<_> = t.peers.iter().filter(|(id, _)| **id != except).collect();
        peers.sort_by_key(|p| std::cmp::Reverse(p.1.last_seen));
        peers.into_iter().take(MAX_VIEW_PEERS).map(|(id, e)| PeerAddrs { peer: *id, addrs: e.addrs.clone() }).collect()
    }

    /// Register `peer` as serving `ns` (it said hello for that namespace).
    pub fn register(&self, ns: &Namespace, peer: NodeId, addrs: &[String]) {
        let now = Instant::now();
        let mut t = self.lock();
        if !t.records.contains_key(ns) && t.records.len() >= MAX_RECORD_NAMESPACES {
            return;
        }
        let regs = t.records.entry(ns.clone()).or_default();
        if !regs.contains_key(&peer) && regs.len() >= MAX_REGISTRATIONS {
            if let Some(oldest) = regs.iter().min_by_key(|(_, (_, at))| *at).map(|(id, _)| *id) {
                regs.remove(&oldest);
            }
        }
        let addrs: Vec<String> = addrs.iter().take(MAX_PEER_ADDRS).cloned().collect();
        regs.insert(peer, (addrs, now));
    }

    /// The rendezvous record of `ns`: peers that registered for it, bounded.
    pub fn registrations(&self, ns: &Namespace, except: NodeId) -> Vec<PeerAddrs> {
        let t = self.lock();
        let Some(regs) = t.records.get(ns) else {
            return Vec::new();
        };
        let mut list: Vec<_> = regs.iter().filter(|(id, _)| **id != except).collect();
        list.sort_by_key(|r| std::cmp::Reverse((r.1).1));
        list.into_iter()
            .take(MAX_VIEW_PEERS)
            .map(|(id, (addrs, _))| PeerAddrs { peer: *id, addrs: addrs.clone() })
            .collect()
    }
}

fn evict_oldest(peers: &mut HashMap<NodeId, PeerEntry>) {
    if let Some(oldest) = peers.iter().min_by_key(|(_, e)| e.last_seen).map(|(id, _)| *id) {
        peers.remove(&oldest);
    }
}
