//! Node-level routes: status, health, readiness.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla::Node;
use serde_json::json;

use crate::auth::Admin;
use crate::error::HttpError;

/// `GET /v1/ns/{ns}/status`.
pub async fn namespace_status(State(node): State<Arc<Node>>, Path(ns): Path<String>) -> Result<Response, HttpError> {
    Ok(Json(node.cluster(&ns)?.status()).into_response())
}

/// `GET /v1/status`: this node's identity, storage, peers and namespaces
/// ([`flotilla::NodeStatus`]), with its sealing state.
pub async fn node_status(State(node): State<Arc<Node>>) -> Response {
    let mut body = match serde_json::to_value(node.status()) {
        Ok(body) => body,
        Err(e) => {
            return HttpError::from(flotilla::ApiError::Fatal(format!("encoding the status: {e}"))).into_response()
        }
    };
    if let Some(fields) = body.as_object_mut() {
        fields.insert("sealing".into(), json!(node.sealing_status()));
        // The operator opened the cluster plane without a cluster key (docs/SECURITY.md).
        fields.insert("insecure_no_cluster_key".into(), json!(node.config().insecure_no_cluster_key));
    }
    Json(body).into_response()
}

/// `POST /v1/admin/keyring/reload` (admin): read the cluster key file again, for rotation.
pub async fn reload_keyring(_admin: Admin, State(node): State<Arc<Node>>) -> Result<Response, HttpError> {
    let ids: Vec<String> = node.reload_keyring()?.iter().map(|id| id.to_string()).collect();
    Ok(Json(json!({ "sealing_key": ids[0], "accepted_keys": ids })).into_response())
}

/// `GET /health`: the process is up and serving HTTP.
pub async fn health() -> &'static str {
    "ok\n"
}

/// `GET /ready`: every namespace knows a leader.
pub async fn ready(State(node): State<Arc<Node>>) -> Response {
    let missing: Vec<String> =
        node.clusters().iter().filter(|c| c.leader().is_none()).map(|c| c.namespace().to_string()).collect();
    if missing.is_empty() {
        (StatusCode::OK, Json(json!({ "ready": true }))).into_response()
    } else {
        let body = json!({ "ready": false, "reason": format!("no leader in: {}", missing.join(", ")) });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
