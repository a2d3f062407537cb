//! What the tests of the etcd endpoint share: a single-node Flotilla cluster serving it, and
//! reading a client's errors.

// Each test binary includes this module and uses only some of its helpers.
#![allow(dead_code)]

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use flotilla::{Namespace, Node, RunningNode};

/// How long the single node may take to elect itself on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A node serving the etcd API; `_dir` (its data directory) must live as long as it, so bind
/// it by name when destructuring (`..` would drop it at once).
pub struct Endpoint {
    /// A client of the endpoint.
    pub client: Client,
    /// The node.
    pub running: RunningNode,
    /// The endpoint's address.
    pub addr: String,
    /// The node's data directory.
    pub _dir: tempfile::TempDir,
}

/// A single-node cluster serving the etcd API on loopback, and a client of it.
pub async fn endpoint() -> Endpoint {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = Node::builder(dir.path())
        .listen("/ip4/127.0.0.1/tcp/0")
        .no_mdns()
        .configure(|c| c.force_bootstrap = true)
        .start()
        .await
        .expect("node starts");
    running.cluster("default").unwrap().wait_for_leader(PATIENCE).await.expect("a leader");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    let namespace = Namespace::new("default").unwrap();
    tokio::spawn(flotilla_etcd::serve(listener, running.node().clone(), namespace, std::future::pending()));
    let options = ConnectOptions::new().with_connect_timeout(PATIENCE).with_timeout(PATIENCE);
    let client = Client::connect([addr.as_str()], Some(options)).await.expect("client connects");
    Endpoint { client, running, addr, _dir: dir }
}

/// The keys of a range answer, as text.
pub fn keys(response: &etcd_client::GetResponse) -> Vec<String> {
    response.kvs().iter().map(|kv| kv.key_str().unwrap().to_string()).collect()
}

/// The gRPC code and message of a client's error.
pub fn grpc_message(error: etcd_client::Error) -> (tonic::Code, String) {
    match error {
        etcd_client::Error::GRpcStatus(status) => (status.code(), status.message().to_string()),
        other => panic!("not a gRPC status: {other}"),
    }
}
