//! Errors of the public cluster API.

use crate::namespace::NamespaceError;
use crate::types::NodeId;
use crate::wire::WireError;

/// What can go wrong with a call on the cluster API.
///
/// [`ApiError::is_retryable`] separates conditions that may clear by themselves (no leader yet,
/// leader changing, timeouts) from fatal ones (bad input, unknown namespace, shutdown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// This node is not the leader and the call cannot be forwarded; `leader` is the hint.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// No leader could be reached within the deadline.
    #[error("no leader within the deadline: {0}")]
    NoLeader(String),
    /// The deadline passed before the call completed; a write may or may not have been applied.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The namespace is not served by this node.
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
    /// The namespace name is invalid.
    #[error(transparent)]
    InvalidNamespace(#[from] NamespaceError),
    /// The key is empty or larger than the configured limit.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The key or value exceeds the configured size limit.
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// `key`, `value` or `request`.
        what: &'static str,
        /// Actual size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The request was refused (for example, a membership change that is not allowed).
    #[error("rejected: {0}")]
    Rejected(String),
    /// A transient condition (membership change in progress, peer unreachable).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// Storage or Raft failed; the group is stopped.
    #[error("fatal: {0}")]
    Fatal(String),
    /// The disk of the node that would store the write (the entry node or the leader) is full
    /// or failing: the write was refused and not applied. Reads still work; retry once the
    /// operator has freed space.
    #[error("storage full: {0}")]
    StorageFull(String),
}

impl ApiError {
    /// Whether the same call may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::NotLeader { .. } | ApiError::NoLeader(_) | ApiError::Timeout(_) | ApiError::Unavailable(_)
        )
    }

    /// A stable machine-readable code, used in HTTP error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotLeader { .. } => "not_leader",
            ApiError::NoLeader(_) => "no_leader",
            ApiError::Timeout(_) => "timeout",
            ApiError::UnknownNamespace(_) => "unknown_namespace",
            ApiError::InvalidNamespace(_) => "invalid_namespace",
            ApiError::InvalidKey(_) => "invalid_key",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::Rejected(_) => "rejected",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Fatal(_) => "fatal",
            ApiError::StorageFull(_) => "storage_full",
        }
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotLeader { leader } => ApiError::NotLeader { leader },
            WireError::NoLeader => ApiError::NoLeader("no leader elected".into()),
            WireError::HopLimit => ApiError::Unavailable("forwarding hop limit reached".into()),
            WireError::UnknownNamespace => ApiError::UnknownNamespace("(on the remote node)".into()),
            WireError::Rejected(m) | WireError::Malformed(m) => ApiError::Rejected(m),
            WireError::Unavailable(m) => ApiError::Unavailable(m),
            WireError::Fatal(m) => ApiError::Fatal(m),
            WireError::StorageFull(m) => ApiError::StorageFull(m),
            WireError::Unauthenticated(m) => ApiError::Rejected(format!("peer refused us: {m}")),
            WireError::UnknownSession => ApiError::Unavailable("sealed session expired".into()),
        }
    }
}
