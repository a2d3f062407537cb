//! The HTTP API of a single-node cluster: routes, status codes, error bodies, limits.

use std::sync::Arc;
use std::time::Duration;

use flotilla::in_process::InProcessNetwork;
use flotilla::{Config, Namespace, Node};
use flotilla_http::Client;
use flotilla_store::Store;
use serde_json::json;

async fn single_node() -> (Arc<Node>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        namespaces: vec![Namespace::new("default").unwrap(), Namespace::new("other").unwrap()],
        max_value_bytes: 1024,
        // The cluster plane on loopback: an exposed one needs a cluster key.
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        ..Config::default()
    };
    let store = Store::open(&config.data_dir).expect("store");
    let node = Node::start(config, InProcessNetwork::new(1).transport(id), store).await.expect("node");
    for ns in ["default", "other"] {
        node.cluster(ns).unwrap().wait_for_leader(Duration::from_secs(10)).await.expect("leader");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(flotilla_http::serve(listener, node.clone(), std::future::pending()));
    (node, addr, dir)
}

#[tokio::test]
async fn kv_round_trip_with_index_and_errors() {
    let (_node, addr, _dir) = single_node().await;
    let c = Client::new(&addr, Duration::from_secs(10));
    let index = c.put("default", "a/b/../c", b"v1".to_vec()).await.unwrap();
    let read = c.get("default", "a/b/../c", "linearizable").await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"v1"[..]));
    assert!(read.index >= index);
    assert_eq!(c.get("default", "missing", "stale").await.unwrap().value, None);
    assert_eq!(c.list("default", "a/").await.unwrap(), vec!["a/b/../c".to_string()]);
    assert!(c.list("other", "").await.unwrap().is_empty(), "namespaces are isolated");
    c.delete("default", "a/b/../c").await.unwrap();
    assert_eq!(c.get("default", "a/b/../c", "linearizable").await.unwrap().value, None);

    let err = c.put("nope", "k", b"v".to_vec()).await.unwrap_err();
    assert!(
        matches!(err, flotilla_http::ClientError::Api { status: 404, ref code, .. } if code == "unknown_namespace")
    );
    let err = c.put("Bad..NS", "k", b"v".to_vec()).await.unwrap_err();
    assert!(
        matches!(err, flotilla_http::ClientError::Api { status: 400, ref code, .. } if code == "invalid_namespace")
    );
    let err = c.put("default", "k", vec![0; 4096]).await.unwrap_err();
    assert!(matches!(err, flotilla_http::ClientError::Api { status: 413, .. }), "{err}");
    let err = c.put("default", &"k".repeat(5000), b"v".to_vec()).await.unwrap_err();
    assert!(matches!(err, flotilla_http::ClientError::Api { status: 413, ref code, .. } if code == "too_large"));
    let err = c.get("default", "k", "eventual").await.unwrap_err();
    assert!(matches!(err, flotilla_http::ClientError::Api { status: 400, ref code, .. } if code == "bad_consistency"));
}

#[tokio::test]
async fn status_members_health_and_metrics() {
    let (node, addr, _dir) = single_node().await;
    let c = Client::new(&addr, Duration::from_secs(10));
    let status = c.get_json("/v1/ns/default/status").await.unwrap();
    assert_eq!(status["role"], "leader");
    assert_eq!(status["members"].as_array().unwrap().len(), 1);
    let node_status = c.get_json("/v1/status").await.unwrap();
    assert_eq!(node_status["peer_id"], node.id().to_string());
    assert_eq!(node_status["namespaces"].as_array().unwrap().len(), 2);
    assert_eq!(c.get_json("/ready").await.unwrap()["ready"], true);
    let err = c.post_json("/v1/ns/default/members", &json!({ "peer_id": "not-a-peer" })).await.unwrap_err();
    assert!(matches!(err, flotilla_http::ClientError::Api { status: 400, ref code, .. } if code == "bad_peer_id"));
    let err = c.delete_json(&format!("/v1/ns/default/members/{}", node.id())).await.unwrap_err();
    assert!(matches!(err, flotilla_http::ClientError::Api { status: 400, .. }), "last voter: {err}");
    // An embedder's change subscription is counted.
    let _subscription = node.cluster("default").unwrap().subscribe().unwrap();
    c.put("default", "k", b"v".to_vec()).await.unwrap();
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("flotilla_is_leader{namespace=\"default\"} 1"), "{metrics}");
    assert!(metrics.contains("flotilla_proposals_total{namespace=\"default\"}"));
    assert!(metrics.contains("flotilla_fsync_seconds_count"));
    assert!(metrics.contains("flotilla_subscriptions 1\n"), "{metrics}");
    assert!(metrics.contains("flotilla_subscriptions_fell_behind_total 0\n"), "{metrics}");
}
