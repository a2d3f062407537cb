//! Membership and leadership routes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla::Node;
use flotilla_core::types::NodeId;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Admin;
use crate::error::HttpError;

/// Body of `POST /v1/ns/{ns}/members`.
#[derive(Debug, Deserialize)]
pub struct AddMember {
    /// PeerId of the node to add.
    pub peer_id: String,
    /// Multiaddresses where it listens.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// `voter` (default) or `learner`.
    #[serde(default)]
    pub role: Option<String>,
}

/// Body of `POST /v1/ns/{ns}/transfer-leader`.
#[derive(Debug, Default, Deserialize)]
pub struct TransferLeader {
    /// PeerId of the new leader; the most up-to-date voter when absent.
    #[serde(default)]
    pub to: Option<String>,
}

fn parse_peer(s: &str) -> Result<NodeId, HttpError> {
    s.parse().map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, "bad_peer_id", format!("invalid PeerId {s:?}: {e}")))
}

/// `GET /v1/ns/{ns}/members`.
pub async fn list_members(State(node): State<Arc<Node>>, Path(ns): Path<String>) -> Result<Response, HttpError> {
    Ok(Json(node.cluster(&ns)?.members()).into_response())
}

/// `POST /v1/ns/{ns}/members`: add a voter (learner first, promoted once caught up) or a learner.
/// Admin route.
pub async fn add_member(
    _admin: Admin,
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Json(body): Json<AddMember>,
) -> Result<Response, HttpError> {
    let id = parse_peer(&body.peer_id)?;
    let cluster = node.cluster(&ns)?;
    let index = match body.role.as_deref().unwrap_or("voter") {
        "voter" => cluster.add_voter(id, body.addrs).await?,
        "learner" => cluster.add_learner(id, body.addrs).await?,
        other => {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "bad_role",
                format!("role {other:?}: use voter or learner"),
            ))
        }
    };
    Ok(Json(json!({ "index": index })).into_response())
}

/// `DELETE /v1/ns/{ns}/members/{peer_id}`. Admin route.
pub async fn remove_member(
    _admin: Admin,
    State(node): State<Arc<Node>>,
    Path((ns, peer)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let id = parse_peer(&peer)?;
    let index = node.cluster(&ns)?.remove(id).await?;
    Ok(Json(json!({ "index": index })).into_response())
}

/// `POST /v1/ns/{ns}/transfer-leader`. Admin route.
pub async fn transfer_leader(
    _admin: Admin,
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    body: Option<Json<TransferLeader>>,
) -> Result<Response, HttpError> {
    let to = match body.and_then(|b| b.0.to) {
        Some(s) => Some(parse_peer(&s)?),
        None => None,
    };
    let cluster = node.cluster(&ns)?;
    cluster.transfer_leadership(to).await?;
    Ok(Json(json!({ "leader": cluster.leader().map(|l| l.to_string()) })).into_response())
}

/// `POST /v1/ns/{ns}/dissolve`: on the leader, dissolve its cluster of the namespace (dropping
/// its data) so every member joins the other cluster of a split. Admin route.
pub async fn dissolve(
    _admin: Admin,
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
) -> Result<Response, HttpError> {
    node.cluster(&ns)?.dissolve().await?;
    Ok(Json(json!({ "dissolved": ns })).into_response())
}
