//! Namespaces opened and closed at runtime: `PUT /v1/ns/{ns}`, `DELETE /v1/ns/{ns}`, `GET /v1/ns`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla::{CloseOptions, Node};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Admin;
use crate::error::HttpError;

/// Query of `DELETE /v1/ns/{ns}`.
#[derive(Debug, Default, Deserialize)]
pub struct CloseQuery {
    /// Keep the namespace's local data on this node.
    #[serde(default)]
    pub keep_data: bool,
}

/// `PUT /v1/ns/{ns}` (admin): open the namespace on this node; it forms or joins a cluster of
/// the namespace as at start. Idempotent.
pub async fn open(_admin: Admin, State(node): State<Arc<Node>>, Path(ns): Path<String>) -> Result<Response, HttpError> {
    let name = ns.clone();
    // Run to the end even if the client goes away or the request deadline passes: an open or
    // close cut at an arbitrary await would leave the namespace half set up.
    tokio::spawn(async move { node.open_namespace(&name).await }).await.map_err(joined)??;
    Ok(Json(json!({ "namespace": ns, "open": true })).into_response())
}

/// `DELETE /v1/ns/{ns}[?keep_data=true]` (admin): leave the namespace's membership (handing
/// leadership off first), stop its group and drop its local data unless `keep_data`.
/// Idempotent.
pub async fn close(
    _admin: Admin,
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(query): Query<CloseQuery>,
) -> Result<Response, HttpError> {
    let (name, options) = (ns.clone(), CloseOptions { keep_data: query.keep_data });
    tokio::spawn(async move { node.close_namespace(&name, options).await }).await.map_err(joined)??;
    Ok(Json(json!({ "namespace": ns, "open": false, "keep_data": query.keep_data })).into_response())
}

/// `GET /v1/ns`: the namespaces this node serves, with role, leader and formation phase.
pub async fn list(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let namespaces: Vec<serde_json::Value> = node
        .clusters()
        .iter()
        .map(|c| {
            let s = c.state();
            json!({
                "namespace": s.namespace,
                "role": s.role,
                "leader": s.leader,
                "term": s.term,
                "voters": s.members.iter().filter(|m| m.role == flotilla::MemberRole::Voter).count(),
                "phase": s.formation.as_ref().map(|f| f.phase),
            })
        })
        .collect();
    Json(json!({ "node_id": node.id().to_string(), "namespaces": namespaces }))
}

/// The error of an operation task that panicked.
fn joined(e: tokio::task::JoinError) -> HttpError {
    HttpError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "namespace_failed", e.to_string())
}
