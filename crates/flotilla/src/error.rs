//! Errors of starting a node.

use flotilla_core::ConfigError;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// openraft refused the derived configuration.
    #[error("raft configuration: {0}")]
    Config(String),
    /// The store could not be read.
    #[error("storage: {0}")]
    Storage(String),
    /// `--force-bootstrap` on a namespace this node's identity was admitted to before, with
    /// an empty store: the node lost its data, and founding again would make a second cluster.
    #[error(
        "namespace {namespace}: --force-bootstrap refused: {reason}. This node's identity \
         (node.key) was admitted to the namespace before and its store is now empty, so founding \
         again would make a second cluster beside the one it belonged to. Start it without \
         --force-bootstrap: it rejoins that cluster once a member is reachable (the leader drops \
         its old vote and re-adds it as a learner). To abandon that cluster for good (explicit \
         reset), move node.key out of the data directory: the node then starts as a new identity \
         (remove the old one with `flotilla members remove` if its cluster still runs)"
    )]
    ForceBootstrapAfterDataLoss {
        /// The namespace.
        namespace: String,
        /// What the node remembers of its membership.
        reason: String,
    },
    /// A group's Raft instance failed to start.
    #[error("namespace {0}: {1}")]
    Raft(String, String),
}
