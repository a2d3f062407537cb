//! The node's lease expiry loop: on every namespace this node leads, compare the stored leases
//! with the leader's clock (`lease_clock.rs`) and propose the revoke of each expired one.
//!
//! Cost when idle: a namespace whose clock is empty (no lease seen) is read only every
//! [`SCAN_EMPTY_EVERY`]; one with leases every [`TICK`]. A lease granted through
//! `Cluster::lease_grant` is put on the clock at once (the grant is followed by a keep-alive),
//! so the slower scan only matters after a leader change, when every lease gets its whole time
//! to live again anyway.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use flotilla_core::kv::{self, encode_command, KvCommand};
use flotilla_core::Namespace;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::group::Group;
use crate::node::Node;

/// How often the loop runs.
const TICK: Duration = Duration::from_millis(250);
/// How often a namespace without a tracked lease is read for leases.
const SCAN_EMPTY_EVERY: Duration = Duration::from_secs(2);
/// Most leases read per namespace per pass.
const MAX_LEASES: usize = 100_000;
/// Most revokes proposed per namespace per pass.
const MAX_REVOKES: usize = 64;

pub(crate) fn spawn(node: &Arc<Node>) {
    let weak = Arc::downgrade(node);
    tokio::spawn(run(weak).instrument(tracing::info_span!("lease_expiry")));
}

async fn run(weak: Weak<Node>) {
    let mut last_scan: HashMap<Namespace, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(TICK).await;
        let Some((node, groups)) = Node::kv_groups_for_loop(&weak, |open| last_scan.retain(|ns, _| open(ns))) else {
            return;
        };
        for group in groups {
            if !group.is_leader() {
                group.leases.clear();
                continue;
            }
            let now = Instant::now();
            let due = last_scan.get(&group.namespace).is_none_or(|t| now.duration_since(*t) >= SCAN_EMPTY_EVERY);
            if group.leases.is_empty() && !due {
                continue;
            }
            last_scan.insert(group.namespace.clone(), now);
            expire(&node, &group).await;
        }
    }
}

/// Revoke the expired leases of `group`, which this node leads.
async fn expire(node: &Arc<Node>, group: &Arc<Group>) {
    let stored = match node.store.view(&group.namespace).map(|view| kv::leases(&view, MAX_LEASES)) {
        Ok(Ok(stored)) => stored,
        Ok(Err(e)) => return warn!(namespace = %group.namespace, error = %e, "reading leases failed"),
        // A snapshot being installed: look again next pass.
        Err(e) => return debug!(namespace = %group.namespace, error = %e, "leases not readable now"),
    };
    let expired = group.leases.expired(group.term(), &stored, Instant::now(), MAX_REVOKES);
    if expired.is_empty() {
        return;
    }
    let Ok(cluster) = node.cluster(group.namespace.as_str()) else { return };
    for id in expired {
        // Only the leader's clock may expire a lease; one deposed since the check stops here
        // (a revoke already in flight may still reach the new leader: etcd has the same race).
        if !group.is_leader() {
            return;
        }
        match cluster.propose(encode_command(&KvCommand::LeaseRevoke { id })).await {
            Ok(_) => info!(namespace = %group.namespace, lease = id, "lease expired and revoked"),
            // Not leader any more, or the quorum is gone: the next leader takes over.
            Err(e) => {
                return warn!(namespace = %group.namespace, lease = id, error = %e, "revoking an expired lease failed")
            }
        }
    }
}
