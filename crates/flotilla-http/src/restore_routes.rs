//! `POST /v1/ns/{ns}/restore?confirm={ns}` (admin): replace a running namespace's whole state
//! with a backup file sent as the body ([`flotilla::Cluster::replace_with_backup`]).
//!
//! The body is streamed into a temporary file in the data directory (a backup may be far
//! larger than memory), verified whole, then restored through the log. The restore runs in its
//! own task: a client that goes away does not cut it half way (which would leave the namespace
//! refusing service until a restore is run again). The temporary file is removed afterwards.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla::Node;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::auth::Admin;
use crate::error::HttpError;
use crate::{INDEX_HEADER, REVISION_HEADER};

/// Largest backup body the route takes.
pub const MAX_RESTORE_BYTES: usize = 64 << 30;

/// Query of the restore route.
#[derive(Debug, Default, Deserialize)]
pub struct RestoreQuery {
    /// Must repeat the namespace's name: the restore replaces every key of it.
    #[serde(default)]
    pub confirm: Option<String>,
}

/// `POST /v1/ns/{ns}/restore?confirm={ns}` (admin).
pub async fn restore(
    _admin: Admin,
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(query): Query<RestoreQuery>,
    body: Body,
) -> Result<Response, HttpError> {
    if query.confirm.as_deref() != Some(ns.as_str()) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "confirmation_required",
            format!(
                "a restore replaces every key, lease and queue of namespace {ns} and cancels its watches: \
                 repeat its name as ?confirm={ns}"
            ),
        ));
    }
    let cluster = node.cluster(&ns)?;
    let file = TempBackup::receive(&node.config().data_dir, body).await?;
    let path = file.path.clone();
    let replaced = tokio::spawn(async move { cluster.replace_with_backup(path).await })
        .await
        .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "restore_failed", e.to_string()))??;
    drop(file);
    let meta = &replaced.backup.meta;
    let mut response = Json(json!({
        "namespace": ns,
        "restore_id": format!("{:016x}", replaced.restore_id),
        "old_revision": replaced.old_revision,
        "revision": replaced.revision,
        "index": replaced.index,
        "log_entries": replaced.steps,
        "backup": {
            "namespace": meta.namespace,
            "cluster_id": meta.cluster_id,
            "index": meta.index,
            "revision": meta.revision,
            "rows": replaced.backup.rows,
            "sha256": replaced.backup.sha256,
        },
    }))
    .into_response();
    response.headers_mut().insert(INDEX_HEADER, replaced.index.into());
    response.headers_mut().insert(REVISION_HEADER, replaced.revision.into());
    Ok(response)
}

/// A received backup body on disk, removed when dropped.
struct TempBackup {
    path: PathBuf,
}

impl TempBackup {
    /// Stream `body` into a new file of `dir`.
    async fn receive(dir: &std::path::Path, body: Body) -> Result<Self, HttpError> {
        let file = Self {
            path: dir.join(format!("restore-{:016x}.{}.part", rand::random::<u64>(), flotilla::BACKUP_EXTENSION)),
        };
        let failed = |what: &str, e: std::io::Error| {
            HttpError::new(StatusCode::INSUFFICIENT_STORAGE, "restore_failed", format!("{what} the backup: {e}"))
        };
        let mut out = tokio::fs::File::create(&file.path).await.map_err(|e| failed("storing", e))?;
        let mut stream = body.into_data_stream();
        let mut received = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                HttpError::new(StatusCode::BAD_REQUEST, "malformed", format!("receiving the backup: {e}"))
            })?;
            received += chunk.len();
            if received > MAX_RESTORE_BYTES {
                return Err(HttpError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("a backup sent for a restore is at most {MAX_RESTORE_BYTES} bytes"),
                ));
            }
            out.write_all(&chunk).await.map_err(|e| failed("storing", e))?;
        }
        out.flush().await.map_err(|e| failed("storing", e))?;
        Ok(file)
    }
}

impl Drop for TempBackup {
    fn drop(&mut self) {
        // Best effort: a leftover part file is only disk space, never read again.
        let _ = std::fs::remove_file(&self.path);
    }
}
