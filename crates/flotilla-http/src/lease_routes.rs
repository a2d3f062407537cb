//! Lease routes: grant, keep alive, revoke, time to live, list.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla::Node;
use serde::Deserialize;
use serde_json::json;

use crate::error::HttpError;
use crate::kv_json::put_bytes;

/// Body of `POST /v1/lease/{ns}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// Time to live in seconds (raised to the namespace's minimum).
    pub ttl: u64,
    /// The id wanted; the next free one when absent or 0.
    #[serde(default)]
    pub id: u64,
}

fn lease_id(text: &str) -> Result<u64, HttpError> {
    text.parse().map_err(|_| HttpError::new(StatusCode::BAD_REQUEST, "malformed", format!("bad lease id {text:?}")))
}

/// `POST /v1/lease/{ns}` `{"ttl": seconds, "id"?}` → `{"id", "ttl"}`.
pub async fn grant(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Json(body): Json<GrantBody>,
) -> Result<Response, HttpError> {
    let granted = node.cluster(&ns)?.lease_grant(body.id, Duration::from_secs(body.ttl)).await?;
    Ok(Json(json!({ "id": granted.id, "ttl": granted.ttl_secs })).into_response())
}

/// `POST /v1/lease/{ns}/{id}/keepalive` → `{"id", "ttl"}`; 404 `lease_not_found` once gone.
pub async fn keep_alive(
    State(node): State<Arc<Node>>,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let id = lease_id(&id)?;
    let ttl = node.cluster(&ns)?.lease_keep_alive(id).await?;
    Ok(Json(json!({ "id": id, "ttl": ttl.as_secs() })).into_response())
}

/// `DELETE /v1/lease/{ns}/{id}` → `{"id", "deleted", "revision"}`.
pub async fn revoke(
    State(node): State<Arc<Node>>,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let revoked = node.cluster(&ns)?.lease_revoke(lease_id(&id)?).await?;
    Ok(Json(json!({ "id": revoked.id, "deleted": revoked.deleted, "revision": revoked.revision })).into_response())
}

/// `GET /v1/lease/{ns}/{id}[?keys=true]` → `{"id", "ttl", "remaining_ms", "keys"?}`.
pub async fn time_to_live(
    State(node): State<Arc<Node>>,
    Path((ns, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let with_keys = query.get("keys").is_some_and(|v| v != "false" && v != "0");
    let status = node.cluster(&ns)?.lease_time_to_live(lease_id(&id)?, with_keys).await?;
    let mut body = json!({
        "id": status.id,
        "ttl": status.ttl.as_secs(),
        "remaining_ms": u64::try_from(status.remaining.as_millis()).unwrap_or(u64::MAX),
    });
    if with_keys {
        let keys: Vec<serde_json::Value> = status
            .keys
            .iter()
            .map(|k| {
                let mut object = serde_json::Map::new();
                put_bytes(&mut object, "key", k);
                serde_json::Value::Object(object)
            })
            .collect();
        body["keys"] = json!(keys);
    }
    Ok(Json(body).into_response())
}

/// `GET /v1/lease/{ns}` → `{"leases": [{"id", "ttl"}]}`.
pub async fn list(State(node): State<Arc<Node>>, Path(ns): Path<String>) -> Result<Response, HttpError> {
    let leases = node.cluster(&ns)?.leases().await?;
    let leases: Vec<_> = leases.into_iter().map(|(id, ttl)| json!({ "id": id, "ttl": ttl.as_secs() })).collect();
    Ok(Json(json!({ "leases": leases })).into_response())
}
