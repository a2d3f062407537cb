//! Queue routes: push, pop (optionally with a visibility timeout), ack, peek, length.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla::{Node, Popped};
use serde_json::json;

use crate::error::HttpError;
use crate::kv_json::put_bytes;

fn number(query: &HashMap<String, String>, name: &str) -> Result<u64, HttpError> {
    match query.get(name) {
        None => Ok(0),
        Some(s) => s.parse().map_err(|_| {
            HttpError::new(StatusCode::BAD_REQUEST, "malformed", format!("{name} must be a number, not {s:?}"))
        }),
    }
}

fn empty(name: &str) -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, "queue_empty", format!("queue {name:?} has no waiting item"))
}

fn item(id: u64, value: &[u8], lease: u64) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("id".into(), json!(id));
    put_bytes(&mut body, "value", value);
    if lease != 0 {
        body.insert("lease".into(), json!(lease));
    }
    Json(serde_json::Value::Object(body)).into_response()
}

/// `POST /v1/queue/{ns}/{name}` with the raw item as body → `{"id"}`.
pub async fn push(
    State(node): State<Arc<Node>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let id = node.cluster(&ns)?.queue_push(&name, &body).await?;
    Ok(Json(json!({ "id": id })).into_response())
}

/// `POST /v1/queue/{ns}/{name}/pop[?visibility_ms=N]` → `{"id", "value", "lease"?}`; 404
/// `queue_empty`. With a visibility, acknowledge before it runs out or the item comes back.
pub async fn pop(
    State(node): State<Arc<Node>>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let cluster = node.cluster(&ns)?;
    let popped = match number(&query, "visibility_ms")? {
        0 => cluster.queue_pop(&name).await?,
        ms => cluster.queue_pop_for(&name, Duration::from_millis(ms)).await?,
    };
    let popped = popped.ok_or_else(|| empty(&name))?;
    Ok(item(popped.id, &popped.value, popped.lease))
}

/// `POST /v1/queue/{ns}/{name}/ack/{id}?lease=L` → `{"acked"}` (false when the item had gone
/// back to the queue already).
pub async fn ack(
    State(node): State<Arc<Node>>,
    Path((ns, name, id)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let id = id.parse().map_err(|_| HttpError::new(StatusCode::BAD_REQUEST, "malformed", "bad item id"))?;
    let popped = Popped { id, value: Vec::new(), lease: number(&query, "lease")? };
    let acked = node.cluster(&ns)?.queue_ack(&name, &popped).await?;
    Ok(Json(json!({ "acked": acked })).into_response())
}

/// `GET /v1/queue/{ns}/{name}/peek` → the first item without taking it; 404 `queue_empty`.
pub async fn peek(
    State(node): State<Arc<Node>>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let first = node.cluster(&ns)?.queue_peek(&name, flotilla::Consistency::Linearizable).await?;
    let (id, value) = first.ok_or_else(|| empty(&name))?;
    Ok(item(id, &value, 0))
}

/// `GET /v1/queue/{ns}/{name}` → `{"waiting", "in_flight"}`.
pub async fn len(
    State(node): State<Arc<Node>>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let (waiting, in_flight) = node.cluster(&ns)?.queue_len(&name, flotilla::Consistency::Linearizable).await?;
    Ok(Json(json!({ "waiting": waiting, "in_flight": in_flight })).into_response())
}
