//! `GET /v1/ns/{ns}/backup` (admin): an online backup of the namespace as this node has applied
//! it, streamed as the backup file itself (see [`flotilla_store::Backup`] for its layout).
//!
//! The backup's view is fixed before the response starts, so its index and revision are in the
//! headers (`X-Flotilla-Index`, `X-Flotilla-Revision`); the body is then encoded on a blocking
//! thread and handed over in chunks through a small channel, so memory stays bounded whatever
//! the namespace's size and a client that stops reading stops the encoding (and a client that
//! goes away ends it). A failure midway aborts the response: the client sees a truncated body,
//! which `flotilla backup inspect` refuses, never a short file that looks whole.

use std::io::{self, Write};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flotilla::Node;
use tokio::sync::mpsc;
use tracing::warn;

use crate::auth::Admin;
use crate::error::HttpError;
use crate::{INDEX_HEADER, REVISION_HEADER};

/// Bytes of one chunk of the body.
const CHUNK_BYTES: usize = 64 << 10;
/// Chunks encoded ahead of the client.
const CHUNKS_AHEAD: usize = 4;

/// `GET /v1/ns/{ns}/backup` (admin).
pub async fn backup(
    _admin: Admin,
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
) -> Result<Response, HttpError> {
    let backup = node.cluster(&ns)?.backup()?;
    let meta = backup.meta().clone();
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let out = ChunkSender { tx: tx.clone(), buf: Vec::with_capacity(CHUNK_BYTES) };
        if let Err(e) = backup.write_to(out) {
            warn!(namespace = %ns, error = %e, "backup over HTTP failed");
            // The client may be gone already; then nobody is left to tell.
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(INDEX_HEADER, meta.index.into());
    headers.insert(REVISION_HEADER, meta.revision.into());
    // The namespace name is validated (`[a-z0-9][a-z0-9._-]*`), so it is a safe header value.
    let name = format!("attachment; filename=\"{}-{}.{}\"", meta.namespace, meta.index, flotilla::BACKUP_EXTENSION);
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Writes into chunks sent on a bounded channel (blocking while the client is behind).
struct ChunkSender {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
