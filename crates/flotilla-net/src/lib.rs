//! Flotilla's network layer: the production [`flotilla_core::Transport`], over libp2p.
//!
//! A [`Host`] runs a libp2p swarm (TCP + Noise + Yamux, with identify and ping) whose PeerId,
//! derived from the node key ([`load_or_create_keypair`]), is the node's identity and Raft
//! node id. Requests travel on RPC streams of protocol [`RPC_PROTOCOL`].
//!
//! # Streams
//!
//! Outbound, each peer gets up to three long-lived streams, one per lane: Raft messages,
//! snapshot chunks, and the command plane, so bulk transfers never delay heartbeats. Each stream
//! is opened on the first call, multiplexes any number of pipelined calls (responses return in
//! any order, matched by request id), is reopened after a failure, and is closed after a period
//! without traffic. Inbound, every stream is served by its own task, which runs requests
//! concurrently (bounded per stream) and writes responses as they complete.
//!
//! # Frames
//!
//! Every message on an RPC stream is one frame:
//!
//! ```text
//! u32 big-endian body length | u64 big-endian request id | message (flotilla_core::encode)
//! ```
//!
//! The message is a [`WireRequest`](flotilla_core::wire::WireRequest) from the stream's opener
//! and a [`WireResponse`](flotilla_core::wire::WireResponse) in the other direction, carrying
//! the id of the request it answers. A body longer than [`NetConfig::max_frame_bytes`] or too
//! short to hold an id drops the stream; an undecodable request with a readable id is answered
//! with [`WireError::Malformed`](flotilla_core::wire::WireError::Malformed).
//!
//! # Addresses
//!
//! [`Transport::local_addrs`](flotilla_core::Transport::local_addrs) returns the concrete
//! listen addresses with `/p2p/<peer id>` appended (for example
//! `/ip4/10.0.0.5/tcp/7000/p2p/12D3Koo...`), so they can be passed to `connect` as they are.
//! [`Transport::add_peer_addrs`](flotilla_core::Transport::add_peer_addrs) accepts addresses
//! with or without the suffix.
//!
//! # Local network discovery
//!
//! With [`NetConfig::mdns_query_interval`] set, the host announces itself and queries for peers
//! over mDNS (IPv4 multicast; it does not work over loopback). Every peer found is added to the
//! host's address book, and [`Host::mdns_discovery`] returns an [`MdnsDiscovery`], the
//! [`flotilla_core::Discovery`] backend listing the peers visible right now. A peer whose
//! records expire leaves that list but keeps its addresses in the book.

#![deny(missing_docs)]

mod address_book;
mod behaviour;
mod coalesce;
mod config;
mod error;
mod frame;
mod host;
mod identity;
mod inbound;
mod key_file;
mod link;
mod mdns;
mod outbound;
mod swarm_task;

pub use config::{NetConfig, MIN_FRAME_BYTES};
pub use error::NetError;
pub use host::Host;
pub use identity::{
    apply_memberships, forget_membership, load_memberships, load_or_create_keypair, record_membership,
    AppliedMemberships, MembershipChange, Memberships, KEY_FILE, MAX_CLUSTER_BYTES, MAX_MEMBERSHIPS,
};
pub use mdns::MdnsDiscovery;

use flotilla_core::NodeId;
use libp2p::StreamProtocol;

/// Protocol id of RPC streams; the trailing number is [`flotilla_core::wire::WIRE_VERSION`].
pub const RPC_PROTOCOL: &str = "/flotilla/rpc/2";

/// [`RPC_PROTOCOL`] as a libp2p protocol name.
pub fn rpc_protocol() -> StreamProtocol {
    StreamProtocol::new(RPC_PROTOCOL)
}

/// Stands in for the remote's id in errors of
/// [`Transport::connect`](flotilla_core::Transport::connect) when the address names no peer
/// (`TransportError::Unreachable` requires one). It is the identity multihash of nothing, which
/// no key can have, so it never collides with a real node.
pub fn unknown_peer() -> NodeId {
    NodeId::from_bytes(&[0, 0]).expect("an empty identity multihash is a valid peer id")
}

#[cfg(test)]
mod tests {
    #[test]
    fn protocol_id_carries_the_wire_version() {
        assert_eq!(super::RPC_PROTOCOL, format!("/flotilla/rpc/{}", flotilla_core::wire::WIRE_VERSION));
    }

    #[test]
    fn unknown_peer_is_valid_and_stable() {
        assert_eq!(super::unknown_peer(), super::unknown_peer());
    }
}
