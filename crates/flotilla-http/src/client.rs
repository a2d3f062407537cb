//! A small client of the HTTP API, used by the CLI and the multi-process tests.

use std::time::Duration;

use flotilla_core::AdminToken;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde_json::Value;

use crate::INDEX_HEADER;

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached.
    #[error("cannot reach {addr}: {source}")]
    Connect {
        /// The node's address.
        addr: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The node answered with an error.
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Human-readable message.
        message: String,
    },
    /// The reply was not what the API documents.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// Writing what the node sent to the local output failed.
    #[error("writing the reply: {0}")]
    Output(#[source] std::io::Error),
    /// Reading a local file to send failed.
    #[error("reading {}: {source}", path.display())]
    Input {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The stable error code, when the node answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A value read from the API with the index it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The value, `None` when the key is absent.
    pub value: Option<Vec<u8>>,
    /// Log index the read reflects.
    pub index: u64,
    /// The namespace revision the read reflects.
    pub revision: u64,
    /// The key's mod revision (its `ETag`), when present.
    pub mod_revision: Option<u64>,
}

/// The condition of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `If-Match: "<mod_revision>"`: only if the key was last changed at this revision.
    ModRevision(u64),
    /// `If-None-Match: *`: only if the key is absent.
    Absent,
}

/// One Server-Sent Event of a watch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `put`, `delete`, `progress` or `cancelled`.
    pub event: String,
    /// The revision, on the last event of a revision and on progress events.
    pub id: Option<String>,
    /// The JSON data.
    pub data: String,
}

/// Largest SSE event a watch accepts (a value of the largest size, encoded, and then some).
/// Longest [`Client::restore_from`] waits for a restore to finish.
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(3600);

const MAX_SSE_EVENT: usize = 16 * 1024 * 1024;

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// The keys (and values, with revisions, when asked for) as JSON objects or strings.
    pub items: Vec<Value>,
    /// Where the next page starts, when more remain.
    pub next: Option<String>,
}

/// Client of one node's HTTP API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// `Bearer <admin token>`, marked sensitive, sent with every request when set.
    authorization: Option<HeaderValue>,
    /// The request timeout; for a long download, how long it may stall.
    timeout: Duration,
}

impl Client {
    /// A client of the node at `addr` (`host:port` or a full `http://` URL).
    pub fn new(addr: &str, timeout: Duration) -> Self {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(64)
            // Below the server's idle limit (`--http-header-timeout-ms`, 10 s by default), so a
            // request never goes out on a connection the server is closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("a client with no TLS and a timeout builds");
        Self { base, http, authorization: None, timeout }
    }

    /// This client, sending `Authorization: Bearer <token>` with every request (needed by the
    /// membership and admin routes of a node that has an admin token).
    pub fn with_admin_token(mut self, token: &AdminToken) -> Self {
        // A valid token is visible ASCII, so the header value always builds.
        self.authorization = HeaderValue::from_str(&format!("Bearer {}", token.expose())).ok().map(|mut v| {
            v.set_sensitive(true);
            v
        });
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = self.send_raw(request).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(api_error(response).await)
    }

    /// Send `request` with the admin token, if any; any status is returned as is.
    async fn send_raw(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let request = match &self.authorization {
            Some(value) => request.header(AUTHORIZATION, value.clone()),
            None => request,
        };
        request.send().await.map_err(|source| ClientError::Connect { addr: self.base.clone(), source })
    }

    /// Store `value` under `key`; returns the log index.
    pub async fn put(&self, ns: &str, key: &str, value: Vec<u8>) -> Result<u64, ClientError> {
        let r = self.send(self.http.put(self.url(&format!("/v1/kv/{ns}/{}", encode_key(key)))).body(value)).await?;
        json_u64(r, "index").await
    }

    /// Store `value` under `key` with an `Idempotency-Key`: sending it again after an unknown
    /// outcome applies it at most once. Returns the log index.
    pub async fn put_idempotent(
        &self,
        ns: &str,
        key: &str,
        value: Vec<u8>,
        idempotency_key: &str,
    ) -> Result<u64, ClientError> {
        let url = self.url(&format!("/v1/kv/{ns}/{}", encode_key(key)));
        let r = self.send(self.http.put(url).header(crate::IDEMPOTENCY_HEADER, idempotency_key).body(value)).await?;
        json_u64(r, "index").await
    }

    /// Read `key` with `consistency` (`stale` or `linearizable`).
    pub async fn get(&self, ns: &str, key: &str, consistency: &str) -> Result<Read, ClientError> {
        let url = self.url(&format!("/v1/kv/{ns}/{}?consistency={consistency}", encode_key(key)));
        self.read(url).await
    }

    /// Read `key` as of `revision` (0: the current one) with `consistency`.
    pub async fn get_at(&self, ns: &str, key: &str, revision: u64, consistency: &str) -> Result<Read, ClientError> {
        let path = format!("/v1/kv/{ns}/{}?consistency={consistency}&revision={revision}", encode_key(key));
        self.read(self.url(&path)).await
    }

    async fn read(&self, url: String) -> Result<Read, ClientError> {
        let response = self.send_raw(self.http.get(url)).await?;
        let index = header_index(&response);
        let revision = header_u64(&response, crate::REVISION_HEADER).unwrap_or(0);
        let mod_revision = header_u64(&response, crate::MOD_REVISION_HEADER);
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            let err = api_error(response).await;
            return match err.code() {
                Some("key_not_found") => Ok(Read { value: None, index, revision, mod_revision: None }),
                _ => Err(err),
            };
        }
        if !response.status().is_success() {
            return Err(api_error(response).await);
        }
        let body = response.bytes().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Read { value: Some(body.to_vec()), index, revision, mod_revision })
    }

    /// Store `value` under `key` only if `condition` holds (412 `precondition_failed`
    /// otherwise); returns the revision the write created.
    pub async fn put_if(&self, ns: &str, key: &str, value: Vec<u8>, condition: Condition) -> Result<u64, ClientError> {
        let request = self.http.put(self.url(&format!("/v1/kv/{ns}/{}", encode_key(key)))).body(value);
        let r = self.send(with_condition(request, condition)).await?;
        json_u64(r, "revision").await
    }

    /// Store `value` under `key` attached to `lease`; returns the revision the write created.
    pub async fn put_with_lease(&self, ns: &str, key: &str, value: Vec<u8>, lease: u64) -> Result<u64, ClientError> {
        let url = self.url(&format!("/v1/kv/{ns}/{}", encode_key(key)));
        let r = self.send(self.http.put(url).query(&[("lease", lease)]).body(value)).await?;
        json_u64(r, "revision").await
    }

    /// Delete `key` only if `condition` holds; returns the namespace's revision after it.
    pub async fn delete_if(&self, ns: &str, key: &str, condition: Condition) -> Result<u64, ClientError> {
        let request = self.http.delete(self.url(&format!("/v1/kv/{ns}/{}", encode_key(key))));
        let r = self.send(with_condition(request, condition)).await?;
        json_u64(r, "revision").await
    }

    /// Watch `key` (every key starting with it when `prefix`) from `from_revision` (0: from
    /// now on), calling `on_event` for each event until it answers `false` or the stream ends
    /// (after a `cancelled` event, or when the node goes away). No timeout applies.
    pub async fn watch(
        &self,
        ns: &str,
        key: &str,
        prefix: bool,
        from_revision: u64,
        prev: bool,
        mut on_event: impl FnMut(SseEvent) -> bool,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/watch/{ns}/{}", encode_key(key));
        let query =
            [("prefix", prefix.to_string()), ("from_revision", from_revision.to_string()), ("prev", prev.to_string())];
        // A watch lasts as long as the caller wants: no request timeout (about a century).
        let forever = std::time::Duration::from_secs(u64::from(u32::MAX));
        let mut response = self.send(self.http.get(self.url(&path)).query(&query).timeout(forever)).await?;
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| ClientError::Protocol(e.to_string()))? {
            buffer.extend_from_slice(&chunk);
            while let Some(end) = find_blank_line(&buffer) {
                let block: Vec<u8> = buffer.drain(..end + 2).collect();
                if let Some(event) = parse_sse(&block) {
                    if !on_event(event) {
                        return Ok(());
                    }
                }
            }
            if buffer.len() > MAX_SSE_EVENT {
                return Err(ClientError::Protocol(format!("an SSE event exceeds {MAX_SSE_EVENT} bytes")));
            }
        }
        Ok(())
    }

    /// One page of the keys starting with `prefix` after `after`, with their values and
    /// revisions when `values`.
    pub async fn list_page(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        values: bool,
    ) -> Result<Page, ClientError> {
        let mut query = vec![("prefix", prefix.to_string()), ("values", values.to_string())];
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        let r = self.send(self.http.get(self.url(&format!("/v1/kv/{ns}"))).query(&query)).await?;
        let v: Value = r.json().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        let items = v[if values { "kvs" } else { "keys" }]
            .as_array()
            .cloned()
            .ok_or_else(|| ClientError::Protocol("no keys in the listing".into()))?;
        Ok(Page { items, next: v["next"].as_str().map(str::to_string) })
    }

    /// Delete `key`; returns the log index.
    pub async fn delete(&self, ns: &str, key: &str) -> Result<u64, ClientError> {
        let r = self.send(self.http.delete(self.url(&format!("/v1/kv/{ns}/{}", encode_key(key))))).await?;
        json_u64(r, "index").await
    }

    /// List keys with `prefix`.
    pub async fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, ClientError> {
        let r = self.send(self.http.get(self.url(&format!("/v1/kv/{ns}"))).query(&[("prefix", prefix)])).await?;
        let v: Value = r.json().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        let keys = v["keys"].as_array().ok_or_else(|| ClientError::Protocol("no keys array".into()))?;
        Ok(keys.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
    }

    /// Stream an online backup of namespace `ns` (`GET /v1/ns/{ns}/backup`, an admin route)
    /// into `out`, chunk by chunk; returns the bytes written. A backup takes as long as its size
    /// needs: the client's timeout bounds the wait for the reply and each stall between two
    /// chunks, not the whole download. A reply cut short is an error (and `out` then holds a
    /// partial file): write into a [`flotilla_store::BackupFile`] and commit it only on success.
    pub async fn backup_into(&self, ns: &str, out: &mut impl std::io::Write) -> Result<u64, ClientError> {
        let stalled = || ClientError::Protocol(format!("backup stalled for {:?}", self.timeout));
        let forever = Duration::from_secs(u64::from(u32::MAX));
        let request = self.send(self.http.get(self.url(&format!("/v1/ns/{ns}/backup"))).timeout(forever));
        let mut response = tokio::time::timeout(self.timeout, request).await.map_err(|_| stalled())??;
        let mut written = 0u64;
        loop {
            let chunk = tokio::time::timeout(self.timeout, response.chunk()).await.map_err(|_| stalled())?;
            let Some(chunk) = chunk.map_err(|e| ClientError::Protocol(format!("backup cut short: {e}")))? else {
                return Ok(written);
            };
            out.write_all(&chunk).map_err(ClientError::Output)?;
            written += chunk.len() as u64;
        }
    }

    /// `POST /v1/ns/{ns}/restore?confirm={confirm}` (admin): replace the running namespace's
    /// whole state with the backup file at `path`, streamed from disk. The server refuses
    /// unless `confirm` is the namespace's name. Waits for the restore to finish, at most
    /// [`RESTORE_TIMEOUT`]; returns the server's report.
    pub async fn restore_from(&self, ns: &str, path: &std::path::Path, confirm: &str) -> Result<Value, ClientError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| ClientError::Input { path: path.to_path_buf(), source })?;
        let url = self.url(&format!("/v1/ns/{ns}/restore"));
        let request = self.http.post(url).query(&[("confirm", confirm)]).timeout(RESTORE_TIMEOUT).body(file);
        let r = self.send(request).await?;
        r.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `GET` a JSON document at `path`.
    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let r = self.send(self.http.get(self.url(path))).await?;
        r.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `POST` a JSON document to `path`.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let r = self.send(self.http.post(self.url(path)).json(body)).await?;
        r.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `POST` raw bytes to `path`, returning the JSON reply.
    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> Result<Value, ClientError> {
        let r = self.send(self.http.post(self.url(path)).body(body)).await?;
        r.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `POST` at `path` without a body, returning the JSON reply.
    pub async fn post_empty(&self, path: &str) -> Result<Value, ClientError> {
        let r = self.send(self.http.post(self.url(path))).await?;
        r.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `PUT` at `path` without a body, returning the JSON reply.
    pub async fn put_json(&self, path: &str) -> Result<Value, ClientError> {
        let r = self.send(self.http.put(self.url(path))).await?;
        r.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `DELETE` at `path`, returning the JSON reply.
    pub async fn delete_json(&self, path: &str) -> Result<Value, ClientError> {
        let r = self.send(self.http.delete(self.url(path))).await?;
        r.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

/// Percent-encode everything but unreserved characters (`/` included), so any UTF-8 key survives
/// the trip through a URL path as one segment that no client normalizes away.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where the first event block ends (the index of its blank line's first newline).
fn find_blank_line(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|w| w == b"\n\n")
}

/// One SSE event block; `None` for a comment-only block.
fn parse_sse(block: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(block);
    let mut event = SseEvent { event: "message".into(), ..SseEvent::default() };
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event.event = value.to_string(),
            "id" => event.id = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() && event.id.is_none() {
        return None;
    }
    event.data = data.join("\n");
    Some(event)
}

fn with_condition(request: reqwest::RequestBuilder, condition: Condition) -> reqwest::RequestBuilder {
    match condition {
        Condition::ModRevision(rev) => request.header(reqwest::header::IF_MATCH, format!("\"{rev}\"")),
        Condition::Absent => request.header(reqwest::header::IF_NONE_MATCH, "*"),
    }
}

fn header_u64(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

fn header_index(response: &reqwest::Response) -> u64 {
    response.headers().get(INDEX_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn json_u64(response: reqwest::Response, field: &str) -> Result<u64, ClientError> {
    let v: Value = response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
    v[field].as_u64().ok_or_else(|| ClientError::Protocol(format!("no {field} in reply")))
}

async fn api_error(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    ClientError::Api {
        status,
        code: body["error"]["code"].as_str().unwrap_or("unknown").to_string(),
        message: body["error"]["message"].as_str().unwrap_or("").to_string(),
    }
}
