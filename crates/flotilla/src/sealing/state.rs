//! The sealing state a node shares between its outbound calls and its inbound handler: the
//! keyring, the open sessions and the record of refusals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use flotilla_core::keyring::Keyring;
use flotilla_core::types::NodeId;
use flotilla_core::wire::WireError;
use serde::Serialize;

use super::refusals::{Refusal, Refusals};
use super::session::Session;

/// Most inbound sessions kept per peer; a peer that opens more loses its oldest.
const MAX_SESSIONS_PER_PEER: usize = 4;
/// Most inbound sessions kept in all.
const MAX_INBOUND_SESSIONS: usize = 4096;
/// Most peers with outbound session slots.
const MAX_OUTBOUND_PEERS: usize = 4096;

/// Sessions peers opened with this node, by (peer, session id).
type InboundSessions = HashMap<(NodeId, [u8; 16]), Arc<Session>>;

/// This node's side of its sessions to one peer (it initiated them).
#[derive(Default)]
pub struct OutSlot {
    /// The current session, if a handshake succeeded.
    pub session: Option<Arc<Session>>,
    /// A recent refusal, returned at once until it expires so a peer with the wrong key costs
    /// one handshake per second, not one per Raft message.
    pub refused: Option<(Instant, WireError)>,
}

/// Sealing state of a node.
pub struct Sealing {
    /// This node's id.
    pub local: NodeId,
    /// Largest plaintext accepted inside a sealed message.
    pub max_message: u64,
    keyring: RwLock<Option<Arc<Keyring>>>,
    outbound: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<OutSlot>>>>,
    inbound: Mutex<InboundSessions>,
    /// Refusals in both directions.
    pub refusals: Refusals,
    /// Requests this node sealed and sent.
    pub sealed_sent: AtomicU64,
    /// Sealed requests this node opened and served.
    pub opened: AtomicU64,
    /// Handshakes completed, as initiator or responder.
    pub handshakes: AtomicU64,
}

/// What status shows about sealing.
///
/// ```no_run
/// # fn example(node: std::sync::Arc<flotilla::Node>) {
/// let sealing = node.sealing_status();
/// println!("sealed: {}, {} handshakes, {} refusals", sealing.enabled, sealing.handshakes, sealing.refusals.len());
/// # }
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct SealingStatus {
    /// Whether a cluster key is configured (all node-to-node traffic sealed).
    pub enabled: bool,
    /// Id of the key new sessions are opened with.
    pub sealing_key: Option<String>,
    /// Ids of every key accepted, the sealing key first.
    pub accepted_keys: Vec<String>,
    /// Sessions peers opened with this node.
    pub inbound_sessions: usize,
    /// Peers with a slot for this node's sessions.
    pub outbound_peers: usize,
    /// Requests this node sealed and sent.
    pub sealed_sent: u64,
    /// Sealed requests this node opened and served.
    pub opened: u64,
    /// Handshakes completed, as initiator or responder.
    pub handshakes: u64,
    /// Latest refusal per peer, most recent first.
    pub refusals: Vec<Refusal>,
}

impl Sealing {
    /// Sealing state for node `local`; `keyring` is `None` when no cluster key is configured.
    pub fn new(local: NodeId, keyring: Option<Keyring>, max_message: u64) -> Self {
        Self {
            local,
            max_message,
            keyring: RwLock::new(keyring.map(Arc::new)),
            outbound: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            refusals: Refusals::default(),
            sealed_sent: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
        }
    }

    /// The keyring, if sealing is on.
    pub fn keyring(&self) -> Option<Arc<Keyring>> {
        self.keyring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the keyring (rotation). Inbound sessions opened with a key that left the ring
    /// end at once; this node's own sessions are reopened with the new sealing key on next use.
    pub fn set_keyring(&self, keyring: Keyring) {
        let accepted = keyring.ids();
        *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keyring));
        self.lock_inbound().retain(|_, s| accepted.contains(&s.key_id));
    }

    /// The slot of this node's sessions to `peer`.
    pub fn out_slot(&self, peer: NodeId) -> Arc<tokio::sync::Mutex<OutSlot>> {
        let mut outbound = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        if !outbound.contains_key(&peer) && outbound.len() >= MAX_OUTBOUND_PEERS {
            // Forget an idle slot; its peer just handshakes again when next called.
            let idle = outbound.iter().find(|(_, s)| Arc::strong_count(s) == 1).map(|(p, _)| *p);
            idle.map(|p| outbound.remove(&p));
        }
        outbound.entry(peer).or_default().clone()
    }

    /// Keep a session `peer` opened with this node.
    pub fn add_inbound(&self, peer: NodeId, session: Arc<Session>) {
        let mut inbound = self.lock_inbound();
        let oldest = |inbound: &InboundSessions, only: Option<NodeId>| {
            inbound
                .iter()
                .filter(|((p, _), _)| only.is_none_or(|o| o == *p))
                .min_by_key(|(_, s)| s.opened)
                .map(|(k, _)| *k)
        };
        if inbound.keys().filter(|(p, _)| *p == peer).count() >= MAX_SESSIONS_PER_PEER {
            oldest(&inbound, Some(peer)).map(|k| inbound.remove(&k));
        }
        if inbound.len() >= MAX_INBOUND_SESSIONS {
            oldest(&inbound, None).map(|k| inbound.remove(&k));
        }
        inbound.insert((peer, session.id), session);
    }

    /// The session `peer` opened with id `id`, if this node still holds it.
    pub fn inbound(&self, peer: NodeId, id: [u8; 16]) -> Option<Arc<Session>> {
        self.lock_inbound().get(&(peer, id)).cloned()
    }

    /// Forget an inbound session.
    pub fn drop_inbound(&self, peer: NodeId, id: [u8; 16]) {
        self.lock_inbound().remove(&(peer, id));
    }

    /// What status shows.
    pub fn status(&self) -> SealingStatus {
        let keyring = self.keyring();
        SealingStatus {
            enabled: keyring.is_some(),
            sealing_key: keyring.as_ref().map(|k| k.current().id().to_string()),
            accepted_keys: keyring.map(|k| k.ids().iter().map(|id| id.to_string()).collect()).unwrap_or_default(),
            inbound_sessions: self.lock_inbound().len(),
            outbound_peers: self.outbound.lock().unwrap_or_else(|p| p.into_inner()).len(),
            sealed_sent: self.sealed_sent.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            handshakes: self.handshakes.load(Ordering::Relaxed),
            refusals: self.refusals.list(),
        }
    }

    /// Count one event.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn lock_inbound(&self) -> std::sync::MutexGuard<'_, InboundSessions> {
        self.inbound.lock().unwrap_or_else(|p| p.into_inner())
    }
}
