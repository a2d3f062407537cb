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
    /// A group's Raft instance failed to start.
    #[error("namespace {0}: {1}")]
    Raft(String, String),
}
