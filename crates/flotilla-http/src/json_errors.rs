//! Every error the API answers has the documented JSON shape, also the ones axum's extractors
//! and router produce themselves (a body over the limit, malformed JSON, a wrong content type,
//! a path that is not UTF-8, an unknown route or method): those are plain text, and this layer
//! rewrites them as `{"error": {"code", "message"}}` with a stable code per status.

use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::HttpError;

/// Longest part of a plain-text rejection kept as the message.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Rewrite a plain-text error response as the JSON error shape.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Rejection texts are short; a longer body is cut, never read unbounded.
    let text = match axum::body::to_bytes(body, MAX_MESSAGE_BYTES * 4).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_MESSAGE_BYTES)]).into_owned(),
        Err(_) => String::new(),
    };
    let message = if text.trim().is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let mut rewritten = HttpError::new(status, code_of(status), message).into_response();
    // Keep headers such as `Allow` of a 405; the body and its type are new.
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The stable code of a rejection the framework produced, by status.
pub fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "no_route",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "malformed_json",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}
