//! What the sealing layer refused, and why: for the log (rate-limited) and for status.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla_core::types::NodeId;
use serde::Serialize;
use tracing::warn;

/// Peers remembered; past it the oldest entry is forgotten.
const MAX_PEERS: usize = 256;
/// One WARN line per peer and reason at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Who refused whom.
///
/// ```no_run
/// # fn example(node: std::sync::Arc<flotilla::Node>) {
/// use flotilla::SealingSide;
///
/// for refusal in node.sealing_status().refusals {
///     let who = match refusal.side { SealingSide::WeRefused => "we refused", SealingSide::PeerRefused => "refused us" };
///     println!("{} {who}: {}", refusal.peer, refusal.reason);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// This node refused the peer's traffic.
    WeRefused,
    /// The peer refused this node's traffic (or its proof did not verify).
    PeerRefused,
}

/// The latest refusal involving one peer, as status shows it.
///
/// ```no_run
/// # fn example(node: std::sync::Arc<flotilla::Node>) {
/// for refusal in node.sealing_status().refusals {
///     println!("{}: {} ({} times, last {} ms ago)", refusal.peer, refusal.reason, refusal.count, refusal.ago_ms);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// The peer.
    pub peer: String,
    /// Who refused.
    pub side: Side,
    /// The cause, e.g. "cluster key mismatch: ...".
    pub reason: String,
    /// How many refusals of this peer so far.
    pub count: u64,
    /// Milliseconds since the latest one.
    pub ago_ms: u64,
}

struct Entry {
    side: Side,
    reason: String,
    count: u64,
    last: Instant,
    logged: Option<Instant>,
}

/// A bounded record of refusals per peer.
#[derive(Default)]
pub struct Refusals {
    peers: Mutex<HashMap<NodeId, Entry>>,
}

impl Refusals {
    /// Record a refusal and log it at WARN unless the same one was logged lately.
    pub fn record(&self, peer: NodeId, side: Side, reason: String) {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if !peers.contains_key(&peer) && peers.len() >= MAX_PEERS {
            let oldest = peers.iter().min_by_key(|(_, e)| e.last).map(|(id, _)| *id);
            oldest.map(|id| peers.remove(&id));
        }
        let entry = peers.entry(peer).or_insert_with(|| Entry {
            side,
            reason: String::new(),
            count: 0,
            last: now,
            logged: None,
        });
        let changed = entry.reason != reason || entry.side != side;
        let due = entry.logged.is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if changed || due {
            match side {
                Side::WeRefused => warn!(%peer, %reason, "refused a peer's traffic"),
                Side::PeerRefused => warn!(%peer, %reason, "a peer refused this node"),
            }
            entry.logged = Some(now);
        }
        entry.side = side;
        entry.reason = reason;
        entry.count += 1;
        entry.last = now;
    }

    /// Forget `peer` (it completed a handshake).
    pub fn clear(&self, peer: &NodeId) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).remove(peer);
    }

    /// The refusals, most recent first.
    pub fn list(&self) -> Vec<Refusal> {
        let now = Instant::now();
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Refusal> = peers
            .iter()
            .map(|(peer, e)| Refusal {
                peer: peer.to_string(),
                side: e.side,
                reason: e.reason.clone(),
                count: e.count,
                ago_ms: now.duration_since(e.last).as_millis() as u64,
            })
            .collect();
        list.sort_by_key(|r| r.ago_ms);
        list
    }
}
