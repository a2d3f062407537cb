//! Issues [`RequestId`]s for writes that enter the cluster through this node.

use std::sync::atomic::{AtomicU64, Ordering};

use flotilla_core::RequestId;

/// A random client identity plus a counter: ids are unique across nodes and restarts with
/// overwhelming probability, and every retry of one write reuses its id.
#[derive(Debug)]
pub struct RequestIds {
    client: u64,
    next: AtomicU64,
}

impl RequestIds {
    /// A fresh, random issuer.
    pub fn new() -> Self {
        Self { client: rand::random(), next: AtomicU64::new(1) }
    }

    /// The next id.
    pub fn next(&self) -> RequestId {
        RequestId { client: self.client, seq: self.next.fetch_add(1, Ordering::Relaxed) }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}
