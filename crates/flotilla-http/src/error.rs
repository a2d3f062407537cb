//! Mapping API errors onto HTTP responses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla_core::ApiError;
use serde_json::json;

/// An error answered as JSON with a stable code.
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Revisions a client acts on, as fields of the error object and as headers.
    revisions: Vec<(&'static str, &'static str, u64)>,
}

impl HttpError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), revisions: Vec::new() }
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        use crate::{COMPACTED_HEADER, MOD_REVISION_HEADER, REVISION_HEADER};
        let revisions = match &e {
            ApiError::Compacted { compacted, .. } => vec![("compacted_revision", COMPACTED_HEADER, *compacted)],
            ApiError::FutureRevision { current, .. } => vec![("revision", REVISION_HEADER, *current)],
            ApiError::PreconditionFailed { mod_revision, revision } => {
                vec![("mod_revision", MOD_REVISION_HEADER, *mod_revision), ("revision", REVISION_HEADER, *revision)]
            }
            _ => Vec::new(),
        };
        Self { status: status_of(&e), code: e.code(), message: e.to_string(), revisions }
    }
}

impl From<flotilla::NamespaceError> for HttpError {
    fn from(e: flotilla::NamespaceError) -> Self {
        use flotilla::NamespaceError as E;
        let (status, code) = match &e {
            E::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_namespace"),
            E::NodeClosing => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            E::Leave { source, .. } => (status_of(source), "leave_failed"),
            E::LastVoter { .. } => (StatusCode::CONFLICT, "last_voter"),
            E::TooMany { .. } => (StatusCode::CONFLICT, "too_many_namespaces"),
            E::Open(_) | E::Storage(_) | E::Crashed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "namespace_failed"),
        };
        Self { status, code, message: e.to_string(), revisions: Vec::new() }
    }
}

/// The HTTP status of each error, in one place. 503 and 504 are the only statuses a write
/// answers when its outcome is unknown; every other status promises nothing was applied.
pub fn status_of(e: &ApiError) -> StatusCode {
    match e {
        ApiError::NotLeader { .. }
        | ApiError::NoLeader(_)
        | ApiError::HopLimit
        | ApiError::OutcomeUnknown(_)
        | ApiError::LostQuorum { .. }
        | ApiError::Unavailable(_)
        | ApiError::UnknownSession
        | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        ApiError::UnknownNamespace(_) => StatusCode::NOT_FOUND,
        ApiError::InvalidNamespace(_) | ApiError::InvalidKey(_) | ApiError::Rejected(_) | ApiError::Malformed(_) => {
            StatusCode::BAD_REQUEST
        }
        ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::Fatal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ApiError::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        // A peer of this node refused it: the cluster is misconfigured, not the request.
        ApiError::Unauthenticated(_) => StatusCode::BAD_GATEWAY,
        // The history asked for is gone for good.
        ApiError::Compacted { .. } => StatusCode::GONE,
        ApiError::FutureRevision { .. } => StatusCode::BAD_REQUEST,
        ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
        ApiError::Cancelled(_) => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::LeaseNotFound(_) => StatusCode::NOT_FOUND,
    }
}

impl HttpError {
    /// The JSON body: `{"error": {"code", "message", ...revisions}}`.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        for (field, _, value) in &self.revisions {
            error[*field] = json!(value);
        }
        json!({ "error": error })
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        for (_, header, value) in self.revisions {
            response.headers_mut().insert(header, value.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::Outcome;

    #[test]
    fn an_unknown_outcome_is_only_ever_503_or_504() {
        let all = [
            ApiError::Timeout("t".into()),
            ApiError::OutcomeUnknown("u".into()),
            ApiError::StorageFull("s".into()).after_possible_proposal(),
            ApiError::Rejected("r".into()).after_possible_proposal(),
        ];
        for e in all {
            assert_eq!(e.outcome(), Outcome::Unknown);
            let status = status_of(&e);
            assert!(
                status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT,
                "{e}: {status}"
            );
        }
    }
}
