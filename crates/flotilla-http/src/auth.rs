//! The admin token check of the control-plane routes.
//!
//! Handlers of admin routes take an [`Admin`] argument first: it extracts nothing but refuses
//! the request with 401 `unauthorized` unless the node has no admin token configured or the
//! request carries `Authorization: Bearer <token>` with the right token. Key/value and
//! read-only routes do not take it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts, MatchedPath};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla::Node;
use flotilla_core::AdminToken;
use tracing::warn;

use crate::error::HttpError;

/// State shared by every route: the node, and the admin token if one is configured.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) node: Arc<Node>,
    pub(crate) admin_token: Option<Arc<AdminToken>>,
}

impl FromRef<AppState> for Arc<Node> {
    fn from_ref(state: &AppState) -> Self {
        state.node.clone()
    }
}

/// Proof that a request may use an admin route.
pub(crate) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = &state.admin_token else {
            return Ok(Admin);
        };
        let presented = parts.headers.get(AUTHORIZATION).map(|v| bearer(v.as_bytes()));
        let reason = match presented {
            Some(Some(candidate)) if token.matches(candidate) => return Ok(Admin),
            Some(Some(_)) => "wrong admin token",
            Some(None) => "malformed Authorization header",
            None => "no admin token",
        };
        let route = parts.extensions.get::<MatchedPath>().map(|p| p.as_str()).unwrap_or("(unmatched)");
        let client = match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => addr.to_string(),
            None => "unknown".to_string(),
        };
        warn!(method = %parts.method, route, client, reason, "admin request refused");
        let message = format!(
            "{reason}: {} {route} needs Authorization: Bearer <token> with the node's admin token \
             (flotilla: --admin-token-file)",
            parts.method
        );
        let mut response = HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(response)
    }
}

/// The credentials of an `Authorization: Bearer <credentials>` header value (scheme matched
/// case-insensitively); `None` for any other form.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let credentials = value[SCHEME.len()..].trim_ascii();
    (!credentials.is_empty()).then_some(credentials)
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_credentials() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b""), None);
    }
}
