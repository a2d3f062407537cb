//! `--bootstrap` addresses as a discovery backend: any node of the mesh is enough, since
//! rendezvous records and peer exchange lead from it to the namespace's members.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_core::types::NodeId;
use flotilla_core::{Discovery, DiscoverySource, Sighting, Transport};
use tokio::time::Instant;

/// Deadline of one dial.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// A resolved address is dialed again only after this long (the connection is kept open by
/// the traffic that follows, so there is rarely a need).
const REDIAL_AFTER: Duration = Duration::from_secs(30);

/// Dials the bootstrap addresses and reports the peers behind them.
pub struct BootstrapDiscovery {
    transport: Arc<dyn Transport>,
    addrs: Vec<String>,
    resolved: Mutex<HashMap<String, (NodeId, Instant)>>,
}

impl BootstrapDiscovery {
    /// A backend dialing `addrs` through `transport`.
    pub fn new(transport: Arc<dyn Transport>, addrs: Vec<String>) -> Self {
        Self { transport, addrs, resolved: Mutex::new(HashMap::new()) }
    }

    fn cached(&self, addr: &str) -> Option<NodeId> {
        let resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        resolved.get(addr).filter(|(_, at)| at.elapsed() < REDIAL_AFTER).map(|(id, _)| *id)
    }
}

#[async_trait::async_trait]
impl Discovery for BootstrapDiscovery {
    fn name(&self) -> &'static str {
        "bootstrap"
    }

    async fn discover(&self) -> Vec<Sighting> {
        let me = self.transport.local_id();
        let dials = self.addrs.iter().map(|addr| async move {
            if let Some(peer) = self.cached(addr) {
                return Some((addr.clone(), peer));
            }
            match self.transport.connect(addr, DIAL_TIMEOUT).await {
                Ok(peer) => {
                    let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
                    resolved.insert(addr.clone(), (peer, Instant::now()));
                    Some((addr.clone(), peer))
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bootstrap address unreachable");
                    None
                }
            }
        });
        futures::future::join_all(dials)
            .await
            .into_iter()
            .flatten()
            .filter(|(_, peer)| *peer != me)
            .map(|(addr, peer)| Sighting { peer, addrs: vec![addr], source: DiscoverySource::Bootstrap })
            .collect()
    }
}
