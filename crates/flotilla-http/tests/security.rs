//! The closed control plane and the server's connection limits: admin routes need the admin
//! token while key/value routes stay open, a non-loopback listener without a token is refused,
//! and slow or idle clients (slow-loris headers, trickled bodies, unread responses, more
//! connections than the cap) cannot hold the server.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla::in_process::InProcessNetwork;
use flotilla::{Config, Namespace, Node};
use flotilla_core::AdminToken;
use flotilla_http::{Client, ClientError};
use flotilla_store::Store;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "c2VjcmV0LWFkbWluLXRva2VuLWZvci10ZXN0cw==";
/// Bound on anything the server must do "soon": generous, so a loaded machine passes.
const PATIENCE: Duration = Duration::from_secs(20);

fn write_token(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

struct Served {
    node: Arc<Node>,
    addr: String,
    _dir: tempfile::TempDir,
}

/// The defaults with the cluster plane on loopback (an exposed one needs a cluster key).
fn loopback() -> Config {
    Config { listen: vec!["/ip4/127.0.0.1/tcp/0".into()], ..Config::default() }
}

/// A single-node cluster serving HTTP on loopback, with `tweak` applied to its config (the data
/// directory is passed in so a token file can live there).
async fn serve_node(tweak: impl FnOnce(&Path, &mut Config)) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        namespaces: vec![Namespace::new("default").unwrap()],
        ..loopback()
    };
    tweak(dir.path(), &mut config);
    let store = Store::open(&config.data_dir).expect("store");
    let node = Node::start(config, InProcessNetwork::new(1).transport(id), store).await.expect("node");
    node.cluster("default").unwrap().wait_for_leader(Duration::from_secs(10)).await.expect("leader");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(flotilla_http::serve(listener, node.clone(), std::future::pending()));
    Served { node, addr, _dir: dir }
}

async fn with_token() -> Served {
    serve_node(|dir, c| c.admin_token_file = Some(write_token(dir, "admin.token", &format!("{TOKEN}\n"), 0o600))).await
}

fn unauthorized(result: Result<serde_json::Value, ClientError>) -> bool {
    matches!(result, Err(ClientError::Api { status: 401, ref code, .. }) if code == "unauthorized")
}

#[tokio::test]
async fn a_backup_streams_a_verifiable_file_to_the_admin() {
    let s = with_token().await;
    let admin = Client::new(&s.addr, Duration::from_secs(10)).with_admin_token(&AdminToken::new(TOKEN).unwrap());
    let mut last = 0;
    for i in 0..20 {
        last = admin.put("default", &format!("key/{i}"), vec![b'v'; 10_000]).await.unwrap();
    }
    let mut file = Vec::new();
    let written = admin.backup_into("default", &mut file).await.unwrap();
    assert_eq!(written, file.len() as u64);
    let summary = flotilla_store::verify_backup(&file[..], written).unwrap();
    assert!(summary.meta.index >= last, "{summary:?} holds the acknowledged writes");
    assert_eq!(summary.meta.namespace, "default");
    assert!(summary.meta.revision >= 20, "{summary:?}");
    assert!(!summary.meta.cluster_id.is_empty(), "{summary:?}");

    let unknown = admin.backup_into("nope", &mut Vec::new()).await.unwrap_err();
    assert!(matches!(unknown, ClientError::Api { status: 404, .. }), "{unknown}");
}

#[tokio::test]
async fn admin_routes_need_the_token() {
    let s = with_token().await;
    let me = s.node.id().to_string();
    let open = Client::new(&s.addr, Duration::from_secs(10));
    let wrong = open.clone().with_admin_token(&AdminToken::new("not-the-admin-token-at-all").unwrap());
    let admin = open.clone().with_admin_token(&AdminToken::new(TOKEN).unwrap());

    for client in [&open, &wrong] {
        let add = client.post_json("/v1/ns/default/members", &json!({ "peer_id": me, "role": "learner" })).await;
        assert!(unauthorized(add), "add member");
        assert!(unauthorized(client.delete_json(&format!("/v1/ns/default/members/{me}")).await), "remove member");
        assert!(unauthorized(client.post_json("/v1/ns/default/transfer-leader", &json!({ "to": me })).await));
        assert!(unauthorized(client.post_json("/v1/ns/default/dissolve", &json!({})).await), "dissolve");
        // The check comes before anything else: no namespace or body is looked at.
        assert!(unauthorized(client.post_json("/v1/ns/nope/dissolve", &json!({})).await));
        assert!(unauthorized(client.post_json("/v1/ns/default/members", &json!({ "garbage": 1 })).await));
        assert!(unauthorized(client.put_json("/v1/ns/extra").await), "open a namespace");
        assert!(unauthorized(client.delete_json("/v1/ns/default").await), "close a namespace");
        assert!(unauthorized(client.delete_json("/v1/ns/default?keep_data=true").await), "close, keeping data");
        assert!(unauthorized(client.get_json("/v1/ns/default/backup").await), "backup");
    }
    assert_eq!(s.node.namespaces().len(), 1, "nothing opened or closed without the token");

    // The refusal has the API's error shape and names the scheme.
    let url = format!("http://{}/v1/ns/default/transfer-leader", s.addr);
    for auth in [None, Some("Basic YWRtaW46YWRtaW4="), Some("Bearer"), Some("Bearer wrong-token-of-some-length")] {
        let mut request = reqwest::Client::new().post(&url).json(&json!({}));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(!body["error"]["message"].as_str().unwrap().contains(TOKEN));
    }

    // With the token: served (2xx where a lone node can say yes, the handler's own answer
    // otherwise).
    let added = admin.post_json("/v1/ns/default/members", &json!({ "peer_id": me, "role": "learner" })).await;
    assert!(added.is_ok(), "already a member: {added:?}");
    let moved = admin.post_json("/v1/ns/default/transfer-leader", &json!({ "to": me })).await;
    assert_eq!(moved.unwrap()["leader"], me.as_str());
    let lowercase = reqwest::Client::new()
        .post(&url)
        .header("authorization", format!("bearer {TOKEN}"))
        .json(&json!({ "to": me }))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), 200, "the scheme is case-insensitive");
    let removed = admin.delete_json(&format!("/v1/ns/default/members/{me}")).await.unwrap_err();
    assert!(matches!(removed, ClientError::Api { status: 400, .. }), "last voter: {removed}");
    let dissolved = admin.post_json("/v1/ns/nope/dissolve", &json!({})).await.unwrap_err();
    assert_eq!(dissolved.code(), Some("unknown_namespace"));

    // Opening and closing namespaces with the token; both are idempotent.
    for _ in 0..2 {
        assert_eq!(admin.put_json("/v1/ns/extra").await.unwrap()["open"], true);
    }
    let listed = open.get_json("/v1/ns").await.unwrap();
    let names: Vec<&str> =
        listed["namespaces"].as_array().unwrap().iter().filter_map(|n| n["namespace"].as_str()).collect();
    assert_eq!(names, ["default", "extra"]);
    for _ in 0..2 {
        assert_eq!(admin.delete_json("/v1/ns/extra").await.unwrap()["open"], false);
    }
    assert_eq!(s.node.namespaces().len(), 1);
    let bad = admin.put_json("/v1/ns/Not.Valid").await.unwrap_err();
    assert!(matches!(bad, ClientError::Api { status: 400, .. }) && bad.code() == Some("invalid_namespace"), "{bad}");
}

#[tokio::test]
async fn data_plane_and_read_only_routes_stay_open() {
    let s = with_token().await;
    let c = Client::new(&s.addr, Duration::from_secs(10));
    let index = c.put("default", "k", b"v".to_vec()).await.expect("put without a token");
    let read = c.get("default", "k", "linearizable").await.expect("get without a token");
    assert_eq!(read.value.as_deref(), Some(&b"v"[..]));
    assert!(read.index >= index);
    assert_eq!(c.list("default", "").await.unwrap(), vec!["k".to_string()]);
    c.delete("default", "k").await.expect("delete without a token");
    for path in ["/v1/status", "/v1/ns", "/v1/ns/default/status", "/v1/ns/default/members", "/ready"] {
        c.get_json(path).await.unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let metrics = reqwest::get(format!("http://{}/metrics", s.addr)).await.unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test]
async fn without_a_token_admin_routes_are_open_on_loopback() {
    let s = serve_node(|_, _| {}).await;
    let me = s.node.id().to_string();
    let c = Client::new(&s.addr, Duration::from_secs(10));
    c.post_json("/v1/ns/default/transfer-leader", &json!({ "to": me })).await.expect("no token configured");
}

#[tokio::test]
async fn non_loopback_http_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let exposed = Config { http: "0.0.0.0:7070".parse().unwrap(), ..loopback() };
    let err = exposed.validate().unwrap_err().to_string();
    assert!(err.contains("--admin-token-file") && err.contains("0.0.0.0:7070"), "{err}");
    let lan = Config { http: "10.1.2.3:8080".parse().unwrap(), ..loopback() };
    assert!(lan.validate().is_err());

    let token = write_token(dir.path(), "token", TOKEN, 0o600);
    let with_token = Config { admin_token_file: Some(token), ..exposed.clone() };
    with_token.validate().expect("non-loopback with a token");
    loopback().validate().expect("loopback without a token");
    Config { http: "[::1]:7070".parse().unwrap(), ..loopback() }.validate().expect("IPv6 loopback");

    // The library refuses too: Node::start validates.
    let id = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let config = Config { data_dir: dir.path().join("node"), ..exposed };
    let store = Store::open(&config.data_dir).expect("store");
    let refused = Node::start(config, InProcessNetwork::new(1).transport(id), store).await;
    assert!(refused.is_err(), "Node::start must refuse an exposed HTTP address without a token");
}

#[tokio::test]
async fn serve_refuses_a_non_loopback_listener_without_a_token() {
    let s = serve_node(|_, _| {}).await;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let err = flotilla_http::serve(listener, s.node.clone(), std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("--admin-token-file"), "{err}");
}

#[tokio::test]
async fn bad_token_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let check = |path: PathBuf| Config { admin_token_file: Some(path), ..loopback() }.validate();

    let err = check(write_token(dir.path(), "open", TOKEN, 0o644)).unwrap_err().to_string();
    assert!(err.contains("group or others") && err.contains("chmod 600"), "{err}");
    assert!(!err.contains(TOKEN), "the error never shows the token");
    assert!(check(write_token(dir.path(), "group", TOKEN, 0o640)).is_err());
    let err = check(write_token(dir.path(), "short", "0123456789\n", 0o600)).unwrap_err().to_string();
    assert!(err.contains("at least 16"), "{err}");
    assert!(check(write_token(dir.path(), "blank", "   \n", 0o600)).is_err());
    let err = check(dir.path().join("missing")).unwrap_err().to_string();
    assert!(err.contains("cannot read"), "{err}");
    let err = check(dir.path().to_path_buf()).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    check(write_token(dir.path(), "good", &format!("\n  {TOKEN}  \n"), 0o400)).expect("0400, trimmed");
}

/// Read one HTTP/1.1 response (headers and a `Content-Length` body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before a full response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// Read until the server closes the connection (EOF or reset); returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";

#[tokio::test]
async fn slow_loris_headers_and_idle_connections_are_closed() {
    let s = serve_node(|_, c| c.http_header_timeout_ms = 500).await;
    let mut loris = TcpStream::connect(&s.addr).await.unwrap();
    loris.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ").await.unwrap();
    let mut idle = TcpStream::connect(&s.addr).await.unwrap();
    let started = Instant::now();
    let got = tokio::time::timeout(PATIENCE, read_until_closed(&mut loris)).await.expect("partial headers: closed");
    assert!(got.is_empty(), "no answer to half a request: {:?}", String::from_utf8_lossy(&got));
    let got = tokio::time::timeout(PATIENCE, read_until_closed(&mut idle)).await.expect("idle connection: closed");
    assert!(got.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());

    // A kept-alive connection is closed once idle for the header timeout, after being served.
    let mut kept = TcpStream::connect(&s.addr).await.unwrap();
    kept.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut kept).await.starts_with("HTTP/1.1 200"));
    let got = tokio::time::timeout(PATIENCE, read_until_closed(&mut kept)).await.expect("kept-alive: closed");
    assert!(got.is_empty());

    // The server still serves.
    let mut fresh = TcpStream::connect(&s.addr).await.unwrap();
    fresh.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut fresh).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_at_the_request_deadline() {
    // Deadline once the headers are in: request timeout (1000 ms) + header timeout (500 ms).
    let s = serve_node(|_, c| {
        c.http_header_timeout_ms = 500;
        c.request_timeout_ms = 1_000;
    })
    .await;
    let mut slow = TcpStream::connect(&s.addr).await.unwrap();
    slow.write_all(b"PUT /v1/kv/default/slow HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nx").await.unwrap();
    let started = Instant::now();
    let got = tokio::time::timeout(PATIENCE, read_until_closed(&mut slow)).await.expect("closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(text.contains("\"code\":\"timeout\""), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(1_000), "cut at {:?}", started.elapsed());
    let c = Client::new(&s.addr, Duration::from_secs(10));
    assert_eq!(c.get("default", "slow", "linearizable").await.unwrap().value, None, "nothing was written");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let s = serve_node(|_, c| {
        c.http_max_connections = 2;
        c.http_header_timeout_ms = 60_000;
    })
    .await;
    // Two connections, served once each, then held open and idle.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(&s.addr).await.unwrap();
        conn.write_all(HEALTH).await.unwrap();
        assert!(read_response(&mut conn).await.starts_with("HTTP/1.1 200"));
        held.push(conn);
    }
    // A third is not served while both are held (it waits in the backlog)...
    let mut third = TcpStream::connect(&s.addr).await.unwrap();
    third.write_all(HEALTH).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(early.is_err(), "a third connection was served beyond the cap: {early:?}");
    // ...and is served as soon as one of them closes.
    drop(held.remove(0));
    let response = tokio::time::timeout(PATIENCE, read_response(&mut third)).await.expect("served after a slot freed");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The other held connection still works.
    held[0].write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut held[0]).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection() {
    let s = serve_node(|_, c| {
        c.http_max_connections = 1;
        c.http_header_timeout_ms = 500;
    })
    .await;
    let c = Client::new(&s.addr, Duration::from_secs(10));
    c.put("default", "big", vec![7u8; 1024 * 1024]).await.unwrap();
    drop(c); // its pooled connection would hold the only slot until the header timeout

    // Pipeline far more response bytes than socket buffers hold, and read none of them.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(s.addr.parse().unwrap()).await.unwrap();
    let requests = b"GET /v1/kv/default/big?consistency=stale HTTP/1.1\r\nHost: test\r\n\r\n".repeat(32);
    stalled.write_all(&requests).await.unwrap();

    // The only slot is freed once the server gives up on the stalled writes.
    let mut next = TcpStream::connect(&s.addr).await.unwrap();
    next.write_all(HEALTH).await.unwrap();
    let response = tokio::time::timeout(PATIENCE, read_response(&mut next)).await.expect("served once the slot frees");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let got = tokio::time::timeout(PATIENCE, read_until_closed(&mut stalled)).await.expect("stalled: closed");
    assert!(got.len() < 32 * 1024 * 1024, "the server wrote every response: {} bytes", got.len());
}
