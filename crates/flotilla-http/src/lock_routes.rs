//! Lock and election routes. The server takes the place and waits for the turn (at most the
//! request deadline); the caller then holds a lease it must keep alive
//! (`POST /v1/lease/{ns}/{id}/keepalive`, every third of its TTL) and releases by revoking it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla::{Held, Holder, Node};
use serde::Deserialize;
use serde_json::json;

use crate::error::HttpError;
use crate::kv_json::put_bytes;

/// Time kept back from the request deadline for answering.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// Query and body options of an acquire.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// The value an election candidate campaigns with.
    #[serde(default)]
    pub value: Option<String>,
}

fn number(query: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, HttpError> {
    match query.get(name) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| {
            HttpError::new(StatusCode::BAD_REQUEST, "malformed", format!("{name} must be a number, not {s:?}"))
        }),
    }
}

/// `(ttl, wait)` of an acquire: `ttl` seconds (default 10), `wait_ms` (default 0: only if
/// free), the wait capped below the request deadline.
fn terms(node: &Node, query: &HashMap<String, String>) -> Result<(Duration, Duration), HttpError> {
    let ttl = Duration::from_secs(number(query, "ttl", 10)?);
    let cap = node.config().request_timeout().saturating_sub(ANSWER_MARGIN);
    let wait = Duration::from_millis(number(query, "wait_ms", 0)?).min(cap);
    Ok((ttl, wait))
}

fn held(held: Held) -> Response {
    let (key, lease, token) = held.detach();
    let mut body = serde_json::Map::new();
    put_bytes(&mut body, "key", &key);
    body.insert("lease".into(), json!(lease));
    body.insert("fencing_token".into(), json!(token));
    Json(serde_json::Value::Object(body)).into_response()
}

fn holder_json(holder: Option<Holder>, what: &str) -> Result<Response, HttpError> {
    let Some(holder) = holder else {
        return Err(HttpError::new(StatusCode::NOT_FOUND, "not_held", format!("no one holds {what}")));
    };
    let mut body = serde_json::Map::new();
    put_bytes(&mut body, "key", &holder.key);
    put_bytes(&mut body, "value", &holder.value);
    body.insert("lease".into(), json!(holder.lease));
    body.insert("fencing_token".into(), json!(holder.fencing_token));
    Ok(Json(serde_json::Value::Object(body)).into_response())
}

/// `POST /v1/lock/{ns}/{name}?ttl=S&wait_ms=N` → `{"key", "lease", "fencing_token"}`; 504
/// `timeout` when it stayed held by another for `wait_ms`.
pub async fn lock(
    State(node): State<Arc<Node>>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let (ttl, wait) = terms(&node, &query)?;
    Ok(held(node.cluster(&ns)?.lock(&name, ttl, wait).await?))
}

/// `GET /v1/lock/{ns}/{name}` → the holder, 404 `not_held`.
pub async fn lock_holder(
    State(node): State<Arc<Node>>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    holder_json(node.cluster(&ns)?.lock_holder(&name).await?, &format!("lock {name:?}"))
}

/// `POST /v1/election/{ns}/{name}?ttl=S&wait_ms=N` `{"value"}` → as a lock, once leader.
pub async fn campaign(
    State(node): State<Arc<Node>>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<AcquireBody>,
) -> Result<Response, HttpError> {
    let (ttl, wait) = terms(&node, &query)?;
    let value = body.value.unwrap_or_default();
    Ok(held(node.cluster(&ns)?.campaign(&name, value.as_bytes(), ttl, wait).await?))
}

/// `GET /v1/election/{ns}/{name}` → the leader, 404 `not_held`.
pub async fn election_leader(
    State(node): State<Arc<Node>>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    holder_json(node.cluster(&ns)?.election_leader(&name).await?, &format!("election {name:?}"))
}
