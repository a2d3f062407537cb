//! The node-level discovery loop: poll every backend, feed the peer table and the transport's
//! address book.

use std::sync::{Arc, Weak};
use std::time::Duration;

use flotilla_core::Discovery;
use tracing::Instrument;

use crate::node::Node;

/// Round interval while some namespace is still forming.
const FORMING_ROUND: Duration = Duration::from_millis(300);
/// Round interval once every namespace has a cluster.
const STEADY_ROUND: Duration = Duration::from_secs(2);
/// Deadline of one backend's round.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(3);

/// Run the discovery loop until the node closes.
pub(crate) fn spawn(node: &Arc<Node>) {
    let weak = Arc::downgrade(node);
    tokio::spawn(async move { run(weak).await }.instrument(tracing::info_span!("discovery")));
}

async fn run(weak: Weak<Node>) {
    loop {
        let pause = {
            let Some(node) = weak.upgrade() else { return };
            if node.is_closing() {
                return;
            }
            node.discovery_round().await;
            if node.all_formed() {
                STEADY_ROUND
            } else {
                FORMING_ROUND
            }
        };
        tokio::time::sleep(pause).await;
    }
}

impl Node {
    async fn discovery_round(&self) {
        let rounds = self.discovery.iter().map(|backend| poll(backend.as_ref()));
        for sightings in futures::future::join_all(rounds).await {
            for s in sightings {
                self.peers.saw(&s);
                if !s.addrs.is_empty() {
                    self.transport.add_peer_addrs(s.peer, &s.addrs);
                }
            }
        }
        self.peers.expire();
    }
}

async fn poll(backend: &dyn Discovery) -> Vec<flotilla_core::Sighting> {
    match tokio::time::timeout(BACKEND_TIMEOUT, backend.discover()).await {
        Ok(list) => list,
        Err(_) => {
            tracing::debug!(backend = backend.name(), "discovery round timed out");
            Vec::new()
        }
    }
}
