//! Sealing of node-to-node traffic with the cluster key.
//!
//! When `--cluster-key-file` is set, every request and reply between nodes (Raft, snapshot
//! chunks, forwarded commands, membership and formation) travels inside a
//! [`Sealed`](flotilla_core::wire::Sealed) body: AES-256-GCM under keys derived per session,
//! namespace, lane and direction, with counter nonces and the namespace, both peers, the lane
//! and the sequence number in the associated data. A [handshake] proves that both
//! sides hold a key of the keyring before anything else is accepted. Without a key, nodes talk
//! in plain (still Noise-encrypted and authenticated by libp2p) and refuse sealed traffic, so a
//! key mismatch in either direction fails fast with a reason on both sides.
//!
//! The layer is a [`Transport`](flotilla_core::Transport) decorator, [`SealingTransport`], so
//! it works the same over libp2p and over the in-process fault router.

pub mod channel;
pub mod handshake;
pub mod inbound;
pub mod refusals;
pub mod replay;
pub mod session;
pub mod state;
pub mod transport;

pub use refusals::{Refusal, Side};
pub use state::{Sealing, SealingStatus};
pub use transport::SealingTransport;
