//! A full disk over HTTP: writes get 507 `storage_full`, the status and the metrics say so,
//! reads go on, and writes succeed again once space returns. The node's data directory is on
//! a real 16 MiB tmpfs (needs root; skipped otherwise).

#[path = "../../flotilla-store/tests/tmpfs/mod.rs"]
mod tmpfs;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flotilla::in_process::InProcessNetwork;
use flotilla::{Config, Namespace, Node};
use flotilla_http::{Client, ClientError};
use flotilla_store::Store;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(30);

async fn node_on(dir: &Path) -> (Arc<Node>, String) {
    let id = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let config = Config {
        data_dir: dir.to_path_buf(),
        namespaces: vec![Namespace::new("default").unwrap()],
        // A write stalled on the full disk times out quickly (the HTTP deadline is the sum).
        request_timeout_ms: 2_000,
        http_header_timeout_ms: 2_000,
        // The cluster plane on loopback: an exposed one needs a cluster key.
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        ..Config::default()
    };
    let store = Store::open(&config.data_dir).expect("store");
    store.set_free_space_reserve(1024 * 1024);
    let node = Node::start(config, InProcessNetwork::new(1).transport(id), store).await.expect("node");
    node.cluster("default").unwrap().wait_for_leader(Duration::from_secs(10)).await.expect("leader");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(flotilla_http::serve(listener, node.clone(), std::future::pending()));
    (node, addr)
}

fn is_storage_full(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 507, code, .. } if code == "storage_full")
}

/// Poll `check` until it holds or [`PATIENCE`] runs out.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PUT `key` until it is no longer refused with 507 (space is re-measured every 200 ms).
async fn put_eventually(c: &Client, key: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match c.put("default", key, b"v".to_vec()).await {
            Ok(_) => return,
            Err(e) if is_storage_full(&e) => assert!(Instant::now() < deadline, "still refused: {e}"),
            Err(e) => panic!("unexpected error: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics(addr: &str) -> String {
    reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_and_recovers() {
    let Some(fs) = tmpfs::mount_or_skip("16m") else { return };
    let (node, addr) = node_on(&fs.path().join("data")).await;
    let c = Client::new(&addr, Duration::from_secs(10));
    for i in 0..5 {
        c.put("default", &format!("k{i}"), b"before".to_vec()).await.expect("write with room");
    }
    assert!(metrics(&addr).await.contains("flotilla_store_write_blocked 0"));

    // Below the reserve: refused with 507 before the disk is completely full.
    let filler = tmpfs::fill(fs.path());
    until("the node sees its disk full", || node.store().write_blocked().is_some()).await;
    let err = c.put("default", "refused", b"v".to_vec()).await.unwrap_err();
    assert!(is_storage_full(&err), "{err}");
    let status = c.get_json("/v1/status").await.unwrap();
    let reason = status["storage"]["write_blocked"].as_str().expect("status says why writes are refused");
    assert!(reason.contains("below the reserve"), "{reason}");
    assert!(metrics(&addr).await.contains("flotilla_store_write_blocked 1"));
    // Reads go on, linearizable ones included.
    for i in 0..5 {
        let read = c.get("default", &format!("k{i}"), "linearizable").await.expect("reads work");
        assert_eq!(read.value.as_deref(), Some(&b"before"[..]));
    }

    std::fs::remove_file(&filler).unwrap();
    put_eventually(&c, "after").await;
    assert!(metrics(&addr).await.contains("flotilla_store_write_blocked 0"));

    // Without a reserve the disk really fills under Raft's writes: they wait (the client times
    // out, not knowing the outcome), new writes are refused, and nothing is lost.
    node.store().set_free_space_reserve(0);
    let filler = tmpfs::fill(fs.path());
    let stalled = c.put("default", "stalled", vec![7; 64 * 1024]).await.unwrap_err();
    assert!(matches!(stalled, ClientError::Api { status: 504, .. }), "{stalled}");
    let err = c.put("default", "refused", b"v".to_vec()).await.unwrap_err();
    assert!(is_storage_full(&err), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(c.get("default", "k0", "stale").await.unwrap().value.as_deref(), Some(&b"before"[..]));

    std::fs::remove_file(&filler).unwrap();
    put_eventually(&c, "resumed").await;
    // The write that timed out was never refused: it lands once there is room.
    assert_eq!(c.get("default", "stalled", "linearizable").await.unwrap().value, Some(vec![7; 64 * 1024]));
    assert_eq!(c.get("default", "refused", "linearizable").await.unwrap().value, None, "refused writes never apply");
    node.halt().await;
    drop(fs);
}
