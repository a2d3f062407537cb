//! Key/value routes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla::Node;
use flotilla_core::{Consistency, IdempotencyKey};
use serde_json::json;

use crate::error::HttpError;
use crate::{IDEMPOTENCY_HEADER, INDEX_HEADER};

fn consistency(query: &HashMap<String, String>) -> Result<Consistency, HttpError> {
    match query.get("consistency") {
        None => Ok(Consistency::default()),
        Some(s) => s.parse().map_err(|e: String| HttpError::new(StatusCode::BAD_REQUEST, "bad_consistency", e)),
    }
}

fn index_header(index: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(INDEX_HEADER, HeaderValue::from(index));
    headers
}

/// `GET /v1/kv/{ns}/{*key}`: the raw value, 404 when absent.
pub async fn get_value(
    State(node): State<Arc<Node>>,
    Path((ns, key)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let read = node.cluster(&ns)?.get(key.as_bytes(), consistency(&query)?).await?;
    let headers = index_header(read.index);
    Ok(match read.value {
        Some(value) => (StatusCode::OK, headers, value).into_response(),
        None => {
            let mut response =
                HttpError::new(StatusCode::NOT_FOUND, "key_not_found", format!("no key {key:?}")).into_response();
            response.headers_mut().extend(headers);
            response
        }
    })
}

/// The write's `Idempotency-Key`, if the client sent one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, HttpError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let invalid = |why: String| HttpError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", why);
    let value = value.to_str().map_err(|_| invalid("the idempotency key is not visible ASCII".into()))?;
    IdempotencyKey::new(value).map(Some).map_err(|e| invalid(e.to_string()))
}

/// `PUT /v1/kv/{ns}/{*key}`: store the raw body; with `Idempotency-Key`, at most once.
pub async fn put_value(
    State(node): State<Arc<Node>>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let idempotency = idempotency_key(&headers)?;
    let cluster = node.cluster(&ns)?;
    let out = match &idempotency {
        Some(id) => cluster.set_idempotent(key.as_bytes(), &body, id).await?,
        None => cluster.set(key.as_bytes(), &body).await?,
    };
    Ok((index_header(out.index), Json(json!({ "index": out.index }))).into_response())
}

/// `DELETE /v1/kv/{ns}/{*key}`; with `Idempotency-Key`, at most once.
pub async fn delete_value(
    State(node): State<Arc<Node>>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let idempotency = idempotency_key(&headers)?;
    let cluster = node.cluster(&ns)?;
    let out = match &idempotency {
        Some(id) => cluster.delete_idempotent(key.as_bytes(), id).await?,
        None => cluster.delete(key.as_bytes()).await?,
    };
    let existed = out.existed.first().copied().unwrap_or(false);
    Ok((index_header(out.index), Json(json!({ "index": out.index, "existed": existed }))).into_response())
}

/// `GET /v1/kv/{ns}?prefix=P`: list keys.
pub async fn list_keys(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let prefix = query.get("prefix").map(String::as_str).unwrap_or("");
    let out = node.cluster(&ns)?.keys(prefix.as_bytes(), consistency(&query)?).await?;
    let keys: Vec<String> = out.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    Ok((index_header(out.index), Json(json!({ "keys": keys, "index": out.index }))).into_response())
}
