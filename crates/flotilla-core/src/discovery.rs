//! The discovery seam: how a node learns that other nodes exist.
//!
//! Several backends run at once (mDNS on the LAN, bootstrap addresses, per-namespace
//! rendezvous records, peer exchange, a simulated one in tests). Each reports *sightings*:
//! a peer id with the addresses it was seen at. A sighting says nothing about which
//! namespaces the peer serves or whether it is a member of anything; the formation layer asks
//! the peer itself over the transport. Discovery is therefore never trusted for safety, only
//! for liveness: a wrong or stale sighting costs one failed call.

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// Which backend produced a sighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiscoverySource {
    /// Multicast DNS on the local network.
    Mdns,
    /// A `--bootstrap` address.
    Bootstrap,
    /// A per-namespace rendezvous record held by a common contact.
    Rendezvous,
    /// Another node's list of the peers it knows.
    PeerExchange,
    /// The peer contacted us.
    Inbound,
    /// A test backend.
    Simulated,
}

/// A peer seen by a discovery backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// The peer's identity.
    pub peer: NodeId,
    /// Addresses it was seen at (multiaddrs as text); may be empty when the transport already
    /// knows how to reach it.
    pub addrs: Vec<String>,
    /// The backend that saw it.
    pub source: DiscoverySource,
}

/// A discovery backend.
///
/// The node polls every backend once per discovery round. Implementations must answer
/// promptly (bounded by their own timeouts) and return a bounded list.
#[async_trait::async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// Short name for status output and logs.
    fn name(&self) -> &'static str;

    /// The peers this backend sees now, not including this node.
    async fn discover(&self) -> Vec<Sighting>;
}
