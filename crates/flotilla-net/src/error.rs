//! Errors of starting the network layer.
//!
//! Once a [`Host`](crate::Host) runs, failures of individual calls are reported as
//! [`flotilla_core::TransportError`]s; [`NetError`] only covers what can stop a node from
//! coming up at all (its key, its listen addresses, the swarm itself).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why the network layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The node key file exists but could not be read, or is not a valid key.
    ///
    /// The file is never replaced automatically: a new key would be a new node identity, which
    /// the rest of the cluster would treat as a stranger.
    #[error("node key {path}: {reason}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing the data directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A listen address is not a valid multiaddr.
    #[error("invalid listen address {addr:?}: {reason}")]
    InvalidAddr {
        /// The address as given.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// The swarm refused to listen on an address.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// The transport's error.
        reason: String,
    },
    /// No listen address came up in time.
    #[error("no listen address came up within {0:?}")]
    NoListenAddr(Duration),
    /// Building the libp2p swarm failed.
    #[error("cannot build the libp2p swarm: {0}")]
    Swarm(String),
}
