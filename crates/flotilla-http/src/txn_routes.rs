//! Transaction and compaction routes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla::Node;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Admin;
use crate::error::HttpError;
use crate::kv_json::{txn_reply, TxnBody};
use crate::{INDEX_HEADER, REVISION_HEADER};

/// `POST /v1/txn/{ns}`: compares, then the success or the failure operations, atomically in
/// one log entry. Answers which branch ran and each operation's result (see `kv_json`).
pub async fn txn(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    Json(body): Json<TxnBody>,
) -> Result<Response, HttpError> {
    let txn = body.into_txn()?;
    let cluster = node.cluster(&ns)?;
    let out = match crate::kv_routes::idempotency_key(&headers)? {
        Some(id) => cluster.txn_idempotent(txn, &id).await?,
        None => cluster.txn(txn).await?,
    };
    let mut headers = HeaderMap::new();
    headers.insert(INDEX_HEADER, HeaderValue::from(out.index));
    headers.insert(REVISION_HEADER, HeaderValue::from(out.reply.revision));
    Ok((headers, Json(txn_reply(&out.reply, out.index))).into_response())
}

/// Body of `POST /v1/ns/{ns}/compact`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactBody {
    /// The oldest revision that stays readable.
    pub revision: u64,
}

/// `POST /v1/ns/{ns}/compact` (admin): forget the history before `revision`.
pub async fn compact(
    _admin: Admin,
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Json(body): Json<CompactBody>,
) -> Result<Response, HttpError> {
    let compacted = node.cluster(&ns)?.compact(body.revision).await?;
    Ok(Json(json!({ "compacted": compacted })).into_response())
}
