//! The network seam.
//!
//! Production uses libp2p (`flotilla-net`); tests use an in-process router that can partition,
//! drop, delay and crash nodes. The node code only sees these two traits.

use std::sync::Arc;
use std::time::Duration;

use crate::types::NodeId;
use crate::wire::{WireRequest, WireResponse};

/// Why a request did not get a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached (no address, dial failed, connection lost).
    #[error("peer {0} unreachable: {1}")]
    Unreachable(NodeId, String),
    /// No reply within the deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The peer sent something that is not a valid reply.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The message is larger than the frame limit.
    #[error("message of {size} bytes exceeds the frame limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// The local transport has shut down.
    #[error("transport closed")]
    Closed,
}

/// Serves requests that arrive from other nodes.
#[async_trait::async_trait]
pub trait InboundHandler: Send + Sync + 'static {
    /// Handle `request` sent by the authenticated peer `from`.
    async fn handle(&self, from: NodeId, request: WireRequest) -> WireResponse;
}

/// Sends requests to other nodes and delivers theirs to the registered handler.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// This node's identity.
    fn local_id(&self) -> NodeId;

    /// Addresses (multiaddrs as text) other nodes can reach this node at.
    fn local_addrs(&self) -> Vec<String>;

    /// Send `request` to `to` and wait up to `timeout` for its reply.
    async fn call(&self, to: NodeId, request: WireRequest, timeout: Duration) -> Result<WireResponse, TransportError>;

    /// Register the handler for inbound requests (replaces any previous one).
    fn set_handler(&self, handler: Arc<dyn InboundHandler>);

    /// Remember addresses at which `peer` may be reachable.
    fn add_peer_addrs(&self, peer: NodeId, addrs: &[String]);

    /// Dial an address whose peer id is not known yet, returning the peer's id once connected.
    async fn connect(&self, addr: &str, timeout: Duration) -> Result<NodeId, TransportError>;
}
