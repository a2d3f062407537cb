//! Reassembles snapshots that arrive in chunks.
//!
//! One slot per (sender, namespace): a new snapshot from the same leader replaces an
//! unfinished one, and chunks must arrive in order. Memory is bounded by `max_bytes`.

use std::collections::HashMap;

use flotilla_core::types::{LogId, NodeId};
use flotilla_core::wire::SnapshotChunk;
use flotilla_core::Namespace;
use tokio::sync::Mutex;

struct Partial {
    snapshot: Option<LogId>,
    data: Vec<u8>,
}

/// Chunk reassembly buffers.
pub struct SnapshotInbox {
    max_bytes: u64,
    partial: Mutex<HashMap<(NodeId, Namespace), Partial>>,
}

impl SnapshotInbox {
    /// An inbox that refuses snapshots larger than `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        Self { max_bytes, partial: Mutex::new(HashMap::new()) }
    }

    /// Add a chunk; returns the whole snapshot once the last chunk arrived.
    pub async fn add(&self, from: NodeId, ns: &Namespace, chunk: SnapshotChunk) -> Result<Option<Vec<u8>>, String> {
        if chunk.total > self.max_bytes {
            return Err(format!("snapshot of {} bytes exceeds the limit of {}", chunk.total, self.max_bytes));
        }
        let key = (from, ns.clone());
        let mut slots = self.partial.lock().await;
        // A snapshot is identified by the log id it covers; a new one restarts the slot.
        let id = chunk.meta.last_log_id;
        if chunk.offset == 0 {
            // Capacity is bounded by the limit checked above.
            let data = Vec::with_capacity(chunk.total as usize);
            slots.insert(key.clone(), Partial { snapshot: id, data });
        }
        let Some(slot) = slots.get_mut(&key) else {
            return Err("snapshot chunk without a start".into());
        };
        if slot.snapshot != id || slot.data.len() as u64 != chunk.offset {
            slots.remove(&key);
            return Err("snapshot chunk out of order".into());
        }
        if slot.data.len() as u64 + chunk.data.len() as u64 > chunk.total {
            slots.remove(&key);
            return Err("snapshot chunk beyond the announced size".into());
        }
        slot.data.extend_from_slice(&chunk.data);
        if !chunk.done {
            return Ok(None);
        }
        let slot = slots.remove(&key).expect("slot exists: checked above");
        if slot.data.len() as u64 != chunk.total {
            return Err("snapshot ended short of its announced size".into());
        }
        Ok(Some(slot.data))
    }
}
