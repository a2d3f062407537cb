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
}

impl HttpError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        let status = match &e {
            ApiError::NotLeader { .. } | ApiError::NoLeader(_) | ApiError::Unavailable(_) | ApiError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::UnknownNamespace(_) => StatusCode::NOT_FOUND,
            ApiError::InvalidNamespace(_) | ApiError::InvalidKey(_) | ApiError::Rejected(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Fatal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        };
        Self { status, code: e.code(), message: e.to_string() }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        (self.status, body).into_response()
    }
}
