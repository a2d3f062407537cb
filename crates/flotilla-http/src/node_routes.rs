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
    Ok(Json(node.cluster(&ns)?.state()).into_response())
}

/// `GET /v1/status`: this node's identity, addresses and namespaces.
pub async fn node_status(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let namespaces: Vec<serde_json::Value> = node
        .clusters()
        .iter()
        .map(|c| {
            let s = c.state();
            json!({ "namespace": s.namespace, "role": s.role, "leader": s.leader, "term": s.term, "commit_index": s.commit_index, "applied_index": s.applied_index })
        })
        .collect();
    // Why client writes are refused, if they are (full or failing disk): `null` when healthy.
    let write_blocked = node.store().write_blocked();
    Json(json!({
        "peer_id": node.id().to_string(),
        "addrs": node.addrs(),
        "namespaces": namespaces,
        "storage": { "write_blocked": write_blocked },
        "sealing": node.sealing_status(),
        // The operator opened the cluster plane without a cluster key (docs/SECURITY.md).
        "insecure_no_cluster_key": node.config().insecure_no_cluster_key,
    }))
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
