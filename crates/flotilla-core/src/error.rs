//! The one error model of the cluster: the same type travels on the wire between nodes and is
//! answered by the API, so nothing is lost in between (a leader's timeout stays a timeout at
//! the entry node, a not-leader keeps its hint, a full disk stays a full disk).
//!
//! Every error also says whether a write that failed with it was certainly not applied
//! ([`Outcome::NotApplied`]) or may have been ([`Outcome::Unknown`]): see [`ApiError::outcome`].

use serde::{Deserialize, Serialize};

use crate::namespace::NamespaceError;
use crate::types::NodeId;

/// What a failed write left behind.
///
/// ```
/// use flotilla_core::{ApiError, Outcome};
///
/// // A timeout after the write was sent: it may still be applied.
/// assert_eq!(ApiError::Timeout("no reply in 5 s".into()).outcome(), Outcome::Unknown);
/// assert_eq!(ApiError::InvalidKey("key is empty".into()).outcome(), Outcome::NotApplied);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The write was certainly not applied, and never will be.
    NotApplied,
    /// The write may have been proposed: it may be applied, now or later. A retry with the
    /// same request id (or `Idempotency-Key`) is applied at most once.
    Unknown,
}

/// Which limit a request exceeded.
///
/// ```
/// use flotilla_core::{ApiError, Limit};
///
/// let error = ApiError::TooLarge { what: Limit::Value, size: 2 << 20, limit: 1 << 20 };
/// assert_eq!(Limit::Value.to_string(), "value");
/// assert_eq!(error.code(), "too_large");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// The key size limit.
    Key,
    /// The value size limit.
    Value,
    /// The size limit of one proposed command.
    Request,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Key => "key",
            Limit::Value => "value",
            Limit::Request => "request",
        })
    }
}

/// What can go wrong with a call on the cluster API, or with a request between nodes.
///
/// [`ApiError::is_retryable`] separates conditions that may clear by themselves (no leader yet,
/// leader changing, timeouts) from fatal ones (bad input, unknown namespace, shutdown);
/// [`ApiError::outcome`] says whether a failed write may still have been applied.
///
/// ```
/// use flotilla_core::{ApiError, Outcome};
///
/// /// What a client does with a failed write.
/// fn next_step(error: &ApiError) -> &'static str {
///     match (error.is_retryable(), error.outcome()) {
///         (true, Outcome::Unknown) => "retry with the same idempotency key",
///         (true, Outcome::NotApplied) => "retry",
///         (false, _) => "give up and report",
///     }
/// }
/// assert_eq!(next_step(&ApiError::NoLeader("election under way".into())), "retry");
/// assert_eq!(next_step(&ApiError::Timeout("5 s".into())), "retry with the same idempotency key");
/// assert_eq!(next_step(&ApiError::UnknownNamespace("orders".into())), "give up and report");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// The node asked is not the leader and could not forward; `leader` is the hint.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader the node knows of.
        leader: Option<NodeId>,
    },
    /// No leader is known, or none could be reached within the deadline.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// The forwarding budget was exhausted (leadership is moving); nothing was proposed.
    #[error("forwarding hop limit reached")]
    HopLimit,
    /// The deadline passed before the call completed; a write may or may not have been applied.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A write may have been proposed by an earlier attempt or by the leader that failed; it
    /// may be applied. The text says what happened.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The leader has not heard from a quorum of voters for about an election timeout, so it
    /// cannot confirm it still leads: it refused the call (try another node).
    #[error("leader {leader} lost contact with a quorum {silent_ms} ms ago")]
    LostQuorum {
        /// The leader that refused.
        leader: NodeId,
        /// How long ago a quorum last acknowledged it.
        silent_ms: u64,
    },
    /// The namespace is not served by the node.
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
    /// The namespace name is invalid.
    #[error(transparent)]
    InvalidNamespace(#[from] NamespaceError),
    /// The key is empty or otherwise invalid.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The key, value or request exceeds the configured size limit.
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit exceeded.
        what: Limit,
        /// Actual size.
        size: u64,
        /// Configured limit.
        limit: u64,
    },
    /// The request was refused for a reason that retrying will not fix (for example, a
    /// membership change that is not allowed).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The request could not be decoded.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A transient condition (membership change in progress, peer unreachable); nothing was
    /// proposed.
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
    /// A peer did not prove it holds this node's cluster key (or sent plain traffic to a node
    /// that requires sealing), or refused ours; the text names the cause.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The sealed session is unknown to the receiver (it restarted or dropped it): open a new
    /// one. Nothing was processed.
    #[error("unknown session")]
    UnknownSession,
    /// A read or watch asked for a revision that compaction has removed.
    #[error("revision {requested} has been compacted; the oldest available revision is {compacted}")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still available.
        compacted: u64,
    },
    /// A read asked for a revision that does not exist yet.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The namespace's current revision.
        current: u64,
    },
    /// The lease named does not exist (never granted, revoked, or expired).
    #[error("lease {0} not found")]
    LeaseNotFound(u64),
    /// A watch (or another long-running request) was ended by the server, for this reason.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A conditional write's condition did not hold; nothing was written.
    #[error("precondition failed: the key's mod revision is {mod_revision} (0: absent) at revision {revision}")]
    PreconditionFailed {
        /// The key's mod revision when the condition was checked; 0 when it was absent.
        mod_revision: u64,
        /// The namespace's revision then.
        revision: u64,
    },
}

impl ApiError {
    /// One error of each kind (naming `peer` where a kind names a node), for tests that must
    /// cover them all: the wire round trip here, the etcd endpoint's mapping of each to a
    /// gRPC status. A new kind fails to compile in this function until it is listed.
    ///
    /// ```
    /// use flotilla_core::ApiError;
    ///
    /// let peer = "12D3KooWEK2tYRVWQr2VPVAer2dkhnXe5PoLGLY4HrGgX2WZCvWf".parse().unwrap();
    /// assert!(ApiError::one_of_each_kind(peer).iter().any(|e| e.code() == "no_leader"));
    /// ```
    pub fn one_of_each_kind(peer: NodeId) -> Vec<ApiError> {
        let all = vec![
            ApiError::NotLeader { leader: Some(peer) },
            ApiError::NoLeader("none".into()),
            ApiError::HopLimit,
            ApiError::Timeout("t".into()),
            ApiError::OutcomeUnknown("u".into()),
            ApiError::LostQuorum { leader: peer, silent_ms: 700 },
            ApiError::UnknownNamespace("ns".into()),
            ApiError::InvalidNamespace(NamespaceError::Empty),
            ApiError::InvalidKey("k".into()),
            ApiError::TooLarge { what: Limit::Value, size: 10, limit: 5 },
            ApiError::Rejected("r".into()),
            ApiError::Malformed("m".into()),
            ApiError::Unavailable("u".into()),
            ApiError::ShuttingDown,
            ApiError::Fatal("f".into()),
            ApiError::StorageFull("s".into()),
            ApiError::Unauthenticated("a".into()),
            ApiError::UnknownSession,
            ApiError::Compacted { requested: 3, compacted: 9 },
            ApiError::FutureRevision { requested: 9, current: 3 },
            ApiError::PreconditionFailed { mod_revision: 4, revision: 7 },
            ApiError::Cancelled("slow".into()),
            ApiError::LeaseNotFound(7),
        ];
        for error in &all {
            match error {
                ApiError::NotLeader { .. }
                | ApiError::NoLeader(_)
                | ApiError::HopLimit
                | ApiError::Timeout(_)
                | ApiError::OutcomeUnknown(_)
                | ApiError::LostQuorum { .. }
                | ApiError::UnknownNamespace(_)
                | ApiError::InvalidNamespace(_)
                | ApiError::InvalidKey(_)
                | ApiError::TooLarge { .. }
                | ApiError::Rejected(_)
                | ApiError::Malformed(_)
                | ApiError::Unavailable(_)
                | ApiError::ShuttingDown
                | ApiError::Fatal(_)
                | ApiError::StorageFull(_)
                | ApiError::Unauthenticated(_)
                | ApiError::UnknownSession
                | ApiError::Compacted { .. }
                | ApiError::FutureRevision { .. }
                | ApiError::LeaseNotFound(_)
                | ApiError::Cancelled(_)
                | ApiError::PreconditionFailed { .. } => {}
            }
        }
        all
    }

    /// Whether the same call may succeed if retried later (possibly on another node).
    ///
    /// ```
    /// use flotilla_core::ApiError;
    ///
    /// assert!(ApiError::NotLeader { leader: None }.is_retryable()); // the next attempt may reach the leader
    /// assert!(!ApiError::ShuttingDown.is_retryable()); // not on this node: go to another one
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::NotLeader { .. }
                | ApiError::NoLeader(_)
                | ApiError::HopLimit
                | ApiError::Timeout(_)
                | ApiError::OutcomeUnknown(_)
                | ApiError::LostQuorum { .. }
                | ApiError::Unavailable(_)
                | ApiError::UnknownSession
        )
    }

    /// Whether a write that failed with this error may still have been applied. Only the
    /// errors raised once a write may have been proposed are [`Outcome::Unknown`]; every other
    /// error is raised before proposing, and promises the write was not applied.
    ///
    /// ```
    /// use flotilla_core::{ApiError, Outcome};
    ///
    /// assert_eq!(ApiError::Fatal("disk failed".into()).outcome(), Outcome::Unknown);
    /// assert_eq!(ApiError::HopLimit.outcome(), Outcome::NotApplied);
    /// ```
    pub fn outcome(&self) -> Outcome {
        match self {
            ApiError::Timeout(_) | ApiError::OutcomeUnknown(_) | ApiError::Fatal(_) => Outcome::Unknown,
            _ => Outcome::NotApplied,
        }
    }

    /// The error a write answers when an attempt may have been proposed before this error
    /// ended it: an error that promises "not applied" becomes [`ApiError::OutcomeUnknown`].
    ///
    /// ```
    /// use flotilla_core::{ApiError, Outcome};
    ///
    /// // A retry failed before proposing, but an earlier attempt may have gone through.
    /// let error = ApiError::NoLeader("election under way".into()).after_possible_proposal();
    /// assert_eq!(error.outcome(), Outcome::Unknown);
    /// assert_eq!(error.code(), "outcome_unknown");
    /// ```
    pub fn after_possible_proposal(self) -> ApiError {
        match self.outcome() {
            Outcome::Unknown => self,
            Outcome::NotApplied => ApiError::OutcomeUnknown(format!(
                "an earlier attempt may have been applied; the last one failed: {self}"
            )),
        }
    }

    /// A stable machine-readable code, used in HTTP error bodies.
    ///
    /// ```
    /// use flotilla_core::ApiError;
    ///
    /// assert_eq!(ApiError::LeaseNotFound(7).code(), "lease_not_found");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotLeader { .. } => "not_leader",
            ApiError::NoLeader(_) => "no_leader",
            ApiError::HopLimit => "hop_limit",
            ApiError::Timeout(_) => "timeout",
            ApiError::OutcomeUnknown(_) => "outcome_unknown",
            ApiError::LostQuorum { .. } => "lost_quorum",
            ApiError::UnknownNamespace(_) => "unknown_namespace",
            ApiError::InvalidNamespace(_) => "invalid_namespace",
            ApiError::InvalidKey(_) => "invalid_key",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::Rejected(_) => "rejected",
            ApiError::Malformed(_) => "malformed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Fatal(_) => "fatal",
            ApiError::StorageFull(_) => "storage_full",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::UnknownSession => "unknown_session",
            ApiError::Compacted { .. } => "compacted",
            ApiError::FutureRevision { .. } => "future_revision",
            ApiError::PreconditionFailed { .. } => "precondition_failed",
            ApiError::Cancelled(_) => "cancelled",
            ApiError::LeaseNotFound(_) => "lease_not_found",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definite_errors_become_unknown_after_a_possible_proposal() {
        let full = ApiError::StorageFull("disk".into());
        assert_eq!(full.outcome(), Outcome::NotApplied);
        let upgraded = full.after_possible_proposal();
        assert_eq!(upgraded.outcome(), Outcome::Unknown);
        assert_eq!(upgraded.code(), "outcome_unknown");
        assert!(upgraded.to_string().contains("storage full"), "{upgraded}");
        for definite in [ApiError::Rejected("x".into()), ApiError::HopLimit, ApiError::NotLeader { leader: None }] {
            assert_eq!(definite.after_possible_proposal().code(), "outcome_unknown");
        }
        // Already unknown: kept as is.
        let timeout = ApiError::Timeout("slow".into());
        assert_eq!(timeout.clone().after_possible_proposal(), timeout);
    }

    #[test]
    fn every_error_survives_the_wire() {
        let all = ApiError::one_of_each_kind(NodeId::random());
        for e in all {
            let back: ApiError = crate::decode(&crate::encode(&e).unwrap(), 1 << 20).unwrap();
            assert_eq!(back, e);
            assert_eq!(back.code(), e.code());
        }
    }
}
