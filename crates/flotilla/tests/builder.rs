//! `Node::builder`: two nodes over real libp2p on loopback, built in one call each, form a
//! namespace, replicate a write and stop cleanly; bad input is a typed error.

use std::time::{Duration, Instant};

use flotilla::{BuildError, Consistency, Node};

/// Generous bound for anything cluster-wide on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_built_nodes_form_a_namespace_and_replicate_a_write() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let first = Node::builder(dirs[0].path())
        .namespace("orders")
        .listen("/ip4/127.0.0.1/tcp/0")
        .no_mdns()
        .configure(|c| c.force_bootstrap = true)
        .start()
        .await
        .expect("the first node starts");
    let address = first.addrs().into_iter().next().expect("it listens");
    let second = Node::builder(dirs[1].path())
        .namespace("orders")
        .listen("/ip4/127.0.0.1/tcp/0")
        .no_mdns()
        .bootstrap(address)
        .start()
        .await
        .expect("the second node starts");
    assert!(dirs[1].path().join("node.key").exists(), "the identity is created in the data dir");

    // The second node joins; a write through it reaches the first.
    let deadline = Instant::now() + PATIENCE;
    let orders = second.cluster("orders").expect("configured");
    loop {
        match orders.set(b"greeting", b"hello").await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "no write through the joining node: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = first.cluster("orders").unwrap().get(b"greeting", Consistency::Linearizable).await.expect("read");
    assert_eq!(read.value.as_deref(), Some(&b"hello"[..]));

    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_a_typed_error_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let err = Node::builder(dir.path()).namespace("Not A Name").start().await.unwrap_err();
    assert!(matches!(err, BuildError::Namespace(_)), "{err:?}");
    // Beyond loopback without a cluster key: the configuration is refused.
    let err = Node::builder(dir.path()).listen("/ip4/0.0.0.0/tcp/0").start().await.unwrap_err();
    assert!(matches!(err, BuildError::Config(_)), "{err:?}");
    assert!(!dir.path().join("node.key").exists(), "refused before an identity was made");
}
