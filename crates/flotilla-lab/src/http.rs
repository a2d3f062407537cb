//! Blocking calls to an agent's HTTP API (see `crates/flotilla-http`).
//!
//! Every function takes the base URL (`http://ip:port`, as [`crate::Agent::http_base`] returns)
//! and a client-side timeout. Errors carry the HTTP status and the API's error code.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Timeout of status calls.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of reads and writes: above the agents' default request deadline (5 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of establishing a connection (an isolated host never answers).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Consistency of a read (`?consistency=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// The local replica, without contacting the leader.
    Stale,
    /// Through the leader's read index (the API's default).
    Linearizable,
}

impl Consistency {
    /// The query parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Stale => "stale",
            Consistency::Linearizable => "linearizable",
        }
    }
}

/// The shared blocking client (one connection pool for all agents of the process).
pub fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .expect("a plain HTTP client builds")
    })
}

/// `GET {base}{path}` and parse the JSON reply.
pub fn get_json(base: &str, path: &str, timeout: Duration) -> Result<Value> {
    let response =
        client().get(format!("{base}{path}")).timeout(timeout).send().with_context(|| format!("GET {base}{path}"))?;
    let response = check(response)?;
    response.json().with_context(|| format!("GET {base}{path}: reply is not JSON"))
}

/// `POST {base}{path}` with the JSON `body`, and `Authorization: Bearer <admin_token>` when
/// given (the membership and admin routes of an agent with an admin token need it); parses the
/// JSON reply.
pub fn post_json(base: &str, path: &str, body: &Value, admin_token: Option<&str>, timeout: Duration) -> Result<Value> {
    let mut request = client().post(format!("{base}{path}")).timeout(timeout).json(body);
    if let Some(token) = admin_token {
        request = request.bearer_auth(token);
    }
    let response = request.send().with_context(|| format!("POST {base}{path}"))?;
    let response = check(response)?;
    response.json().with_context(|| format!("POST {base}{path}: reply is not JSON"))
}

/// `GET {base}/v1/ns/{ns}/status`.
pub fn status(base: &str, ns: &str) -> Result<Value> {
    get_json(base, &format!("/v1/ns/{ns}/status"), STATUS_TIMEOUT)
}

/// `PUT {base}/v1/kv/{ns}/{key}` with the raw `value`; returns the log index.
pub fn put(base: &str, ns: &str, key: &str, value: &[u8], timeout: Duration) -> Result<u64> {
    let url = format!("{base}/v1/kv/{ns}/{}", encode_key(key));
    let response =
        client().put(&url).timeout(timeout).body(value.to_vec()).send().with_context(|| format!("PUT {url}"))?;
    let reply: Value = check(response)?.json().with_context(|| format!("PUT {url}: reply is not JSON"))?;
    reply["index"].as_u64().ok_or_else(|| anyhow!("PUT {url}: no index in {reply}"))
}

/// `GET {base}/v1/kv/{ns}/{key}?consistency=...`: the value, `None` on 404 `key_not_found`.
pub fn get(base: &str, ns: &str, key: &str, consistency: Consistency, timeout: Duration) -> Result<Option<Vec<u8>>> {
    let url = format!("{base}/v1/kv/{ns}/{}?consistency={}", encode_key(key), consistency.as_str());
    let response = client().get(&url).timeout(timeout).send().with_context(|| format!("GET {url}"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        let body: Value = response.json().unwrap_or(Value::Null);
        if body["error"]["code"] == "key_not_found" {
            return Ok(None);
        }
        bail!("GET {url}: 404 {body}");
    }
    let body = check(response)?.bytes().with_context(|| format!("GET {url}: reading the body"))?;
    Ok(Some(body.to_vec()))
}

fn check(response: reqwest::blocking::Response) -> Result<reqwest::blocking::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = response.url().to_string();
    let body = response.text().unwrap_or_default();
    bail!("{url}: {status}: {}", body.trim())
}

/// Percent-encode all but unreserved characters, as the flotilla CLI does.
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
