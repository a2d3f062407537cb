//! Flotilla's errors as etcd 3.5 answers them: the same gRPC codes and the same messages
//! (etcd's `api/v3rpc/rpctypes/error.go`). Clients match on the messages (Go's `clientv3`
//! turns them back into typed errors by their exact text), so they are etcd's, verbatim.

use flotilla_core::ApiError;
use tonic::{Code, Status};

/// etcd's `ErrGRPCEmptyKey`.
pub(crate) const EMPTY_KEY: &str = "etcdserver: key is not provided";
/// etcd's `ErrGRPCKeyNotFound`.
pub(crate) const KEY_NOT_FOUND: &str = "etcdserver: key not found";
/// etcd's `ErrGRPCValueProvided`.
pub(crate) const VALUE_PROVIDED: &str = "etcdserver: value is provided";
/// etcd's `ErrGRPCLeaseProvided`.
pub(crate) const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
/// etcd's `ErrGRPCTooManyOps`.
pub(crate) const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
/// etcd's `ErrGRPCDuplicateKey`.
pub(crate) const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
/// etcd's `ErrGRPCCompacted`.
pub(crate) const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// etcd's `ErrGRPCFutureRev`.
pub(crate) const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
/// etcd's `ErrGRPCNoSpace`.
pub(crate) const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
/// etcd's `ErrGRPCLeaseNotFound`.
pub(crate) const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
/// etcd's `ErrGRPCLeaseExist`.
pub(crate) const LEASE_EXIST: &str = "etcdserver: lease already exists";
/// etcd's `ErrGRPCLeaseTTLTooLarge`.
pub(crate) const LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
/// etcd's `ErrGRPCRequestTooLarge`.
pub(crate) const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
/// etcd's `ErrGRPCNoLeader`.
pub(crate) const NO_LEADER: &str = "etcdserver: no leader";
/// etcd's `ErrGRPCLeaderChanged`.
pub(crate) const LEADER_CHANGED: &str = "etcdserver: leader changed";
/// etcd's `ErrGRPCStopped`.
pub(crate) const STOPPED: &str = "etcdserver: server stopped";
/// etcd's `ErrGRPCTimeout`.
pub(crate) const TIMEOUT: &str = "etcdserver: request timed out";
/// etcd's `ErrGRPCTimeoutDueToLeaderFail`.
pub(crate) const TIMEOUT_LEADER_FAIL: &str = "etcdserver: request timed out, possibly due to previous leader failure";
/// etcd's `ErrGRPCTimeoutDueToConnectionLost`.
pub(crate) const TIMEOUT_CONNECTION_LOST: &str = "etcdserver: request timed out, possibly due to connection lost";

/// The text by which the KV state machine refuses a transaction branch that writes a key
/// twice (`KvRefusal::DuplicateKey`), as it reaches the API inside `ApiError::Rejected`.
const DUPLICATE_KEY_REFUSAL: &str = "more than once";

/// The text by which it refuses a grant of a lease id that is taken (`KvRefusal::LeaseExists`).
const LEASE_EXISTS_REFUSAL: &str = "exists already";

/// The gRPC status etcd 3.5 answers for what Flotilla reports as `error`.
pub fn status_of(error: &ApiError) -> Status {
    let (code, message) = code_and_message(error);
    Status::new(code, message)
}

fn code_and_message(error: &ApiError) -> (Code, String) {
    let etcd = |code: Code, text: &str| (code, text.to_string());
    match error {
        ApiError::NoLeader(_) => etcd(Code::Unavailable, NO_LEADER),
        // Flotilla forwards to the leader; these reach a client only while leadership moves.
        ApiError::NotLeader { .. } | ApiError::HopLimit => etcd(Code::Unavailable, LEADER_CHANGED),
        ApiError::Timeout(_) => etcd(Code::Unavailable, TIMEOUT),
        ApiError::OutcomeUnknown(_) => etcd(Code::Unavailable, TIMEOUT_LEADER_FAIL),
        ApiError::LostQuorum { .. } => etcd(Code::Unavailable, TIMEOUT_CONNECTION_LOST),
        ApiError::ShuttingDown => etcd(Code::Unavailable, STOPPED),
        ApiError::InvalidKey(_) => etcd(Code::InvalidArgument, EMPTY_KEY),
        ApiError::TooLarge { .. } => etcd(Code::InvalidArgument, REQUEST_TOO_LARGE),
        ApiError::Rejected(text) if text.contains(DUPLICATE_KEY_REFUSAL) => etcd(Code::InvalidArgument, DUPLICATE_KEY),
        ApiError::Rejected(text) if text.contains(LEASE_EXISTS_REFUSAL) => etcd(Code::FailedPrecondition, LEASE_EXIST),
        ApiError::StorageFull(_) => etcd(Code::ResourceExhausted, NO_SPACE),
        ApiError::Compacted { .. } => etcd(Code::OutOfRange, COMPACTED),
        ApiError::FutureRevision { .. } => etcd(Code::OutOfRange, FUTURE_REV),
        ApiError::LeaseNotFound(_) => etcd(Code::NotFound, LEASE_NOT_FOUND),
        // What etcd has no word for keeps Flotilla's text, marked as Flotilla's.
        other => (flotilla_code(other), format!("flotilla: {other}")),
    }
}

/// The gRPC code of an error etcd has no message for.
fn flotilla_code(error: &ApiError) -> Code {
    match error {
        ApiError::InvalidNamespace(_) | ApiError::Rejected(_) | ApiError::Malformed(_) => Code::InvalidArgument,
        ApiError::PreconditionFailed { .. } => Code::FailedPrecondition,
        ApiError::Cancelled(_) => Code::Cancelled,
        ApiError::Fatal(_) => Code::Internal,
        // An unknown namespace may be open on another node; the rest clear by themselves.
        _ => Code::Unavailable,
    }
}

/// etcd's refusal with `code` and its message `text`.
pub(crate) fn refused(code: Code, text: &str) -> Status {
    Status::new(code, text)
}

/// A refusal of what Flotilla does not support, saying so.
pub(crate) fn unsupported(what: &str) -> Status {
    Status::new(Code::Unimplemented, format!("flotilla: {what} is not supported (see docs/ETCD.md)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::kv::KvRefusal;

    #[test]
    fn errors_map_to_etcd_codes_and_messages() {
        let cases: Vec<(ApiError, Code, &str)> = vec![
            (ApiError::Compacted { requested: 1, compacted: 5 }, Code::OutOfRange, COMPACTED),
            (ApiError::FutureRevision { requested: 9, current: 5 }, Code::OutOfRange, FUTURE_REV),
            (ApiError::LeaseNotFound(7), Code::NotFound, LEASE_NOT_FOUND),
            (ApiError::NoLeader("x".into()), Code::Unavailable, NO_LEADER),
            (ApiError::NotLeader { leader: None }, Code::Unavailable, LEADER_CHANGED),
            (ApiError::Timeout("x".into()), Code::Unavailable, TIMEOUT),
            (ApiError::StorageFull("x".into()), Code::ResourceExhausted, NO_SPACE),
            (ApiError::InvalidKey("key is empty".into()), Code::InvalidArgument, EMPTY_KEY),
            (ApiError::ShuttingDown, Code::Unavailable, STOPPED),
            (
                ApiError::TooLarge { what: flotilla_core::Limit::Value, size: 2, limit: 1 },
                Code::InvalidArgument,
                REQUEST_TOO_LARGE,
            ),
            // The state machine's own refusal text, as Cluster::txn passes it on.
            (ApiError::Rejected(KvRefusal::DuplicateKey("k".into()).to_string()), Code::InvalidArgument, DUPLICATE_KEY),
        ];
        for (error, code, message) in cases {
            let status = status_of(&error);
            assert_eq!((status.code(), status.message()), (code, message), "{error:?}");
        }
    }

    #[test]
    fn errors_without_an_etcd_word_keep_flotillas_text() {
        let status = status_of(&ApiError::UnknownNamespace("etcd".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().starts_with("flotilla: unknown namespace"), "{}", status.message());
        assert_eq!(status_of(&ApiError::Fatal("disk".into())).code(), Code::Internal);
        assert_eq!(status_of(&ApiError::Rejected("no".into())).code(), Code::InvalidArgument);
    }
}
