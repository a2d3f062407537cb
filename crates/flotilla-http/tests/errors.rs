//! Every error the API answers is `{"error": {"code", "message"}}` with a stable code, also the
//! framework's own rejections; `Idempotency-Key` makes a client's retries apply at most once.

use std::sync::Arc;
use std::time::Duration;

use flotilla::in_process::InProcessNetwork;
use flotilla::{Config, Namespace, Node};
use flotilla_store::Store;
use reqwest::StatusCode;
use serde_json::Value;

async fn single_node() -> (Arc<Node>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        namespaces: vec![Namespace::new("default").unwrap()],
        max_value_bytes: 1024,
        // The cluster plane on loopback: an exposed one needs a cluster key.
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        ..Config::default()
    };
    let store = Store::open(&config.data_dir).expect("store");
    let node = Node::start(config, InProcessNetwork::new(1).transport(id), store).await.expect("node");
    node.cluster("default").unwrap().wait_for_leader(Duration::from_secs(10)).await.expect("leader");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(flotilla_http::serve(listener, node.clone(), std::future::pending()));
    (node, format!("http://{addr}"), dir)
}

/// The status and the error code of a JSON error body; panics on any other shape.
async fn json_error(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    assert_eq!(content_type.as_deref(), Some("application/json"), "{status}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code: {text}")).to_string();
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no error.message: {text}");
    (status, code)
}

#[tokio::test]
async fn framework_rejections_answer_the_json_error_shape() {
    let (_node, base, _dir) = single_node().await;
    let http = reqwest::Client::new();

    // A body over the limit.
    let r = http.put(format!("{base}/v1/kv/default/k")).body(vec![0u8; 64 * 1024]).send().await.unwrap();
    assert_eq!(json_error(r).await, (StatusCode::PAYLOAD_TOO_LARGE, "too_large".into()));

    // Malformed JSON, and JSON of the wrong shape.
    let members = format!("{base}/v1/ns/default/members");
    let r = http.post(&members).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(json_error(r).await, (StatusCode::BAD_REQUEST, "bad_request".into()));
    let r = http.post(&members).header("content-type", "application/json").body("{\"addrs\":1}").send().await.unwrap();
    assert_eq!(json_error(r).await, (StatusCode::UNPROCESSABLE_ENTITY, "malformed_json".into()));

    // A wrong content type.
    let r = http.post(&members).header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(json_error(r).await, (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type".into()));

    // A key that is not UTF-8.
    let r = http.get(format!("{base}/v1/kv/default/%FF%FE")).send().await.unwrap();
    assert_eq!(json_error(r).await, (StatusCode::BAD_REQUEST, "bad_request".into()));

    // No such route, no such method.
    let r = http.get(format!("{base}/v2/nothing")).send().await.unwrap();
    assert_eq!(json_error(r).await, (StatusCode::NOT_FOUND, "no_route".into()));
    let r = http.patch(format!("{base}/v1/kv/default/k")).send().await.unwrap();
    assert!(r.headers().contains_key("allow"), "405 keeps its Allow header");
    assert_eq!(json_error(r).await, (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into()));

    // The API's own errors keep their codes.
    let r = http.put(format!("{base}/v1/kv/nope/k")).body("v").send().await.unwrap();
    assert_eq!(json_error(r).await, (StatusCode::NOT_FOUND, "unknown_namespace".into()));
}

#[tokio::test]
async fn the_same_idempotency_key_applies_once() {
    let (node, base, _dir) = single_node().await;
    let http = reqwest::Client::new();
    let put = |value: &'static str, key: &'static str| {
        http.put(format!("{base}/v1/kv/default/counter")).header("Idempotency-Key", key).body(value).send()
    };
    let first = put("one", "order-42").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    // A retry of the same write (here with another body, to see which one won) is not applied.
    let again = put("two", "order-42").await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert!(again["index"].as_u64() >= first["index"].as_u64(), "{first} {again}");
    let cluster = node.cluster("default").unwrap();
    let read = cluster.get(b"counter", flotilla::Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"one"[..]), "applied once");
    // Another key is another write.
    assert_eq!(put("three", "order-43").await.unwrap().status(), StatusCode::OK);
    let read = cluster.get(b"counter", flotilla::Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"three"[..]));

    // Invalid keys are refused before anything is proposed.
    for bad in ["", "has space", &"x".repeat(256)] {
        let r = http.put(format!("{base}/v1/kv/default/other")).header("Idempotency-Key", bad).body("v").send().await;
        let (status, code) = json_error(r.unwrap()).await;
        assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "invalid_idempotency_key"), "{bad:?}");
    }
    assert_eq!(cluster.get(b"other", flotilla::Consistency::Linearizable).await.unwrap().value, None);
}
