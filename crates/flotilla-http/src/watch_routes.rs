//! `GET /v1/watch/{ns}/{*key}`: a watch as Server-Sent Events.
//!
//! One SSE event per change (`event: put` or `delete`), its data the change as JSON
//! (`revision`, `type`, `kv`, and `prev` when asked for). The events of one revision are sent
//! together and only the last carries `id: <revision>`: a client that reconnects with
//! `Last-Event-ID` (as `EventSource` does) resumes after the last revision it received whole.
//! `event: progress` (`id` and data: the current revision) comes after a quiet spell, and
//! `event: cancelled` (data: the error, e.g. `compacted` or a watcher too slow) ends the stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use flotilla::{Node, WatchMessage, WatchRequest};
use flotilla_core::kv::{EventKind, RangeEnd, WatchEvent};
use flotilla_core::ApiError;
use futures::stream::{self, StreamExt};
use serde_json::json;

use crate::error::HttpError;
use crate::kv_json::key_value;

/// Shortest and longest progress interval a client may ask for (`progress_ms`).
const PROGRESS_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

/// `GET /v1/watch/{ns}/{*key}[?prefix=true][&from_revision=N][&prev=true][&progress_ms=N]`.
pub async fn watch_key(
    State(node): State<Arc<Node>>,
    Path((ns, key)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let end = if flag(&query, "prefix") { RangeEnd::Prefix } else { RangeEnd::Key };
    watch(node, ns, key.into_bytes(), end, query, headers).await
}

/// `GET /v1/watch/{ns}[?...]`: every key of the namespace.
pub async fn watch_all(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    watch(node, ns, Vec::new(), RangeEnd::All, query, headers).await
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v != "false" && v != "0")
}

fn number(value: Option<&str>, name: &str) -> Result<Option<u64>, HttpError> {
    value
        .map(|s| {
            s.trim().parse::<u64>().map_err(|_| {
                HttpError::new(StatusCode::BAD_REQUEST, "malformed", format!("{name} must be a number, not {s:?}"))
            })
        })
        .transpose()
}

async fn watch(
    node: Arc<Node>,
    ns: String,
    key: Vec<u8>,
    end: RangeEnd,
    query: HashMap<String, String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let last_event = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let from_revision = match number(last_event, "Last-Event-ID")? {
        Some(last) => last + 1,
        None => number(query.get("from_revision").map(String::as_str), "from_revision")?.unwrap_or(0),
    };
    let progress_ms = number(query.get("progress_ms").map(String::as_str), "progress_ms")?.unwrap_or(5_000);
    if !PROGRESS_MS.contains(&progress_ms) {
        let message = format!("progress_ms must be between {} and {}", PROGRESS_MS.start(), PROGRESS_MS.end());
        return Err(HttpError::new(StatusCode::BAD_REQUEST, "malformed", message));
    }
    let request = WatchRequest {
        key,
        end,
        from_revision,
        prev_kv: flag(&query, "prev"),
        progress_every: Duration::from_millis(progress_ms),
    };
    let watch = node.cluster(&ns)?.watch(request).await?;
    let events = watch.flat_map(|item| stream::iter(sse_events(item).into_iter().map(Ok::<_, Infallible>)));
    Ok(Sse::new(events).into_response())
}

/// The SSE events of one watch message.
fn sse_events(item: Result<WatchMessage, ApiError>) -> Vec<Event> {
    match item {
        Ok(WatchMessage::Changes { revision, events }) => {
            let last = events.len().saturating_sub(1);
            events
                .iter()
                .enumerate()
                .map(|(i, change)| {
                    let event = Event::default().event(kind(change)).data(change_json(revision, change).to_string());
                    if i == last {
                        event.id(revision.to_string())
                    } else {
                        event
                    }
                })
                .collect()
        }
        Ok(WatchMessage::Progress { revision }) => vec![Event::default()
            .event("progress")
            .id(revision.to_string())
            .data(json!({ "revision": revision }).to_string())],
        Err(e) => {
            let error = HttpError::from(e);
            vec![Event::default().event("cancelled").data(error.body().to_string())]
        }
    }
}

fn kind(change: &WatchEvent) -> &'static str {
    match change.kind {
        EventKind::Put => "put",
        EventKind::Delete => "delete",
    }
}

fn change_json(revision: u64, change: &WatchEvent) -> serde_json::Value {
    let mut out = json!({ "revision": revision, "type": kind(change), "kv": key_value(&change.kv, false) });
    if let Some(prev) = &change.prev {
        out["prev"] = key_value(prev, false);
    }
    out
}
