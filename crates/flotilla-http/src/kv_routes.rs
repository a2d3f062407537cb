//! Key/value routes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla::Node;
use flotilla_core::Consistency;
use serde_json::json;

use crate::error::HttpError;
use crate::INDEX_HEADER;

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

/// `PUT /v1/kv/{ns}/{*key}`: store the raw body.
pub async fn put_value(
    State(node): State<Arc<Node>>,
    Path((ns, key)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let out = node.cluster(&ns)?.set(key.as_bytes(), &body).await?;
    Ok((index_header(out.index), Json(json!({ "index": out.index }))).into_response())
}

/// `DELETE /v1/kv/{ns}/{*key}`.
pub async fn delete_value(
    State(node): State<Arc<Node>>,
    Path((ns, key)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let out = node.cluster(&ns)?.delete(key.as_bytes()).await?;
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
