//! Key/value routes: values as raw bodies, revisions in headers, conditional writes in HTTP's
//! own vocabulary (`If-Match: "<mod_revision>"`, `If-None-Match: *`), and paged ranges.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::{ETAG, IF_MATCH, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla::{Node, Precondition, WriteOutcome};
use flotilla_core::kv::RangeRequest;
use flotilla_core::{Consistency, IdempotencyKey};
use serde_json::json;

use crate::error::HttpError;
use crate::kv_json::{key_value, put_bytes};
use crate::{
    CREATE_REVISION_HEADER, IDEMPOTENCY_HEADER, INDEX_HEADER, MOD_REVISION_HEADER, REVISION_HEADER, VERSION_HEADER,
};

fn consistency(query: &HashMap<String, String>) -> Result<Consistency, HttpError> {
    match query.get("consistency") {
        None => Ok(Consistency::default()),
        Some(s) => s.parse().map_err(|e: String| HttpError::new(StatusCode::BAD_REQUEST, "bad_consistency", e)),
    }
}

/// A numeric query parameter, 0 when absent.
fn number(query: &HashMap<String, String>, name: &str) -> Result<u64, HttpError> {
    match query.get(name) {
        None => Ok(0),
        Some(s) => s.parse().map_err(|_| {
            HttpError::new(StatusCode::BAD_REQUEST, "malformed", format!("{name} must be a number, not {s:?}"))
        }),
    }
}

/// A boolean query parameter: present and not `false` or `0`.
fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v != "false" && v != "0")
}

/// The index and revision headers of a response.
fn state_headers(index: u64, revision: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(INDEX_HEADER, HeaderValue::from(index));
    headers.insert(REVISION_HEADER, HeaderValue::from(revision));
    headers
}

/// `"<revision>"`, the entity tag of a value.
fn etag(mod_revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{mod_revision}\"")).expect("digits and quotes are a valid header")
}

/// `GET /v1/kv/{ns}/{*key}[?revision=N]`: the raw value with its revisions, 404 when absent.
pub async fn get_value(
    State(node): State<Arc<Node>>,
    Path((ns, key)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let revision = number(&query, "revision")?;
    let read = node.cluster(&ns)?.get_at(key.as_bytes(), revision, consistency(&query)?).await?;
    let mut headers = state_headers(read.index, read.revision);
    match (read.value, read.key_revisions) {
        (Some(value), Some(revs)) => {
            headers.insert(ETAG, etag(revs.mod_revision));
            headers.insert(CREATE_REVISION_HEADER, HeaderValue::from(revs.create_revision));
            headers.insert(MOD_REVISION_HEADER, HeaderValue::from(revs.mod_revision));
            headers.insert(VERSION_HEADER, HeaderValue::from(revs.version));
            Ok((StatusCode::OK, headers, value).into_response())
        }
        _ => {
            let mut response =
                HttpError::new(StatusCode::NOT_FOUND, "key_not_found", format!("no key {key:?}")).into_response();
            response.headers_mut().extend(headers);
            Ok(response)
        }
    }
}

/// The write's `Idempotency-Key`, if the client sent one.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, HttpError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let invalid = |why: String| HttpError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", why);
    let value = value.to_str().map_err(|_| invalid("the idempotency key is not visible ASCII".into()))?;
    IdempotencyKey::new(value).map(Some).map_err(|e| invalid(e.to_string()))
}

/// The write's condition: `If-Match: "<mod_revision>"` or `If-None-Match: *`.
fn precondition(headers: &HeaderMap) -> Result<Option<Precondition>, HttpError> {
    let bad = |why: &str| HttpError::new(StatusCode::BAD_REQUEST, "bad_precondition", why.to_string());
    match (headers.get(IF_MATCH), headers.get(IF_NONE_MATCH)) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad("send If-Match or If-None-Match, not both")),
        (None, Some(v)) if v.as_bytes() == b"*" => Ok(Some(Precondition::Absent)),
        (None, Some(_)) => Err(bad("If-None-Match accepts only *: create the key only if it is absent")),
        (Some(v), None) => {
            let text = v.to_str().map_err(|_| bad("If-Match is not ASCII"))?.trim();
            let tag = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
            let revision = tag.parse().map_err(|_| bad("If-Match takes one entity tag: \"<mod_revision>\""))?;
            Ok(Some(Precondition::ModRevision(revision)))
        }
    }
}

/// The answer to a write: its index and revision, in the body and in headers.
fn written(out: &WriteOutcome, etag_too: bool) -> Response {
    let mut headers = state_headers(out.index, out.revision);
    if etag_too {
        headers.insert(ETAG, etag(out.revision));
    }
    let existed = out.existed.first().copied().unwrap_or(false);
    (headers, Json(json!({ "index": out.index, "revision": out.revision, "existed": existed }))).into_response()
}

/// `PUT /v1/kv/{ns}/{*key}[?lease=ID]`: store the raw body (attached to a lease, deleted with
/// it); with `Idempotency-Key`, at most once; with `If-Match` or `If-None-Match: *`, only if
/// the condition holds (412 otherwise).
pub async fn put_value(
    State(node): State<Arc<Node>>,
    Path((ns, key)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let idempotency = idempotency_key(&headers)?;
    let condition = precondition(&headers)?;
    let lease = number(&query, "lease")?;
    let cluster = node.cluster(&ns)?;
    if lease != 0 {
        if condition.is_some() || idempotency.is_some() {
            let why = "a put with a lease takes no condition or idempotency key (use POST /v1/txn)";
            return Err(HttpError::new(StatusCode::BAD_REQUEST, "malformed", why));
        }
        return Ok(written(&cluster.set_with_lease(key.as_bytes(), &body, lease).await?, true));
    }
    let out = match (condition, &idempotency) {
        (Some(c), id) => cluster.put_if(key.as_bytes(), &body, c, id.as_ref()).await?,
        (None, Some(id)) => cluster.set_idempotent(key.as_bytes(), &body, id).await?,
        (None, None) => cluster.set(key.as_bytes(), &body).await?,
    };
    Ok(written(&out, true))
}

/// `DELETE /v1/kv/{ns}/{*key}`; with `Idempotency-Key`, at most once; with `If-Match` or
/// `If-None-Match: *`, only if the condition holds (412 otherwise).
pub async fn delete_value(
    State(node): State<Arc<Node>>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let idempotency = idempotency_key(&headers)?;
    let condition = precondition(&headers)?;
    let cluster = node.cluster(&ns)?;
    let out = match (condition, &idempotency) {
        (Some(c), id) => cluster.delete_if(key.as_bytes(), c, id.as_ref()).await?,
        (None, Some(id)) => cluster.delete_idempotent(key.as_bytes(), id).await?,
        (None, None) => cluster.delete(key.as_bytes()).await?,
    };
    Ok(written(&out, false))
}

/// `GET /v1/kv/{ns}?prefix=P[&values=true][&limit=N][&after=KEY][&revision=R]`: one page of
/// the keys starting with `P` (with their values and revisions when `values`); `more` and
/// `next` say where the next page starts (`after=<next>`).
pub async fn list_keys(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let prefix = query.get("prefix").map(String::as_str).unwrap_or("");
    let values = flag(&query, "values");
    let request = RangeRequest {
        after: query.get("after").map(|a| a.as_bytes().to_vec()),
        limit: number(&query, "limit")?,
        revision: number(&query, "revision")?,
        keys_only: !values,
        ..RangeRequest::prefix(prefix)
    };
    let out = node.cluster(&ns)?.range(request, consistency(&query)?).await?;
    let kvs = &out.result.kvs;
    let mut body = json!({ "index": out.index, "revision": out.revision, "more": out.result.more });
    if values {
        body["kvs"] = json!(kvs.iter().map(|kv| key_value(kv, false)).collect::<Vec<_>>());
    } else {
        let keys: Vec<String> = kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect();
        body["keys"] = json!(keys);
    }
    if let (true, Some(last)) = (out.result.more, kvs.last()) {
        let mut next = serde_json::Map::new();
        put_bytes(&mut next, "next", &last.key);
        body.as_object_mut().expect("an object").extend(next);
    }
    Ok((state_headers(out.index, out.revision), Json(body)).into_response())
}
