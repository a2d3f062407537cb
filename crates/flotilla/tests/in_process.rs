//! The in-process mode as an embedder uses it (issue 16, point 6): nodes built with
//! `NodeBuilder::in_process` find each other on the network, form one cluster, and keep
//! serving when the network cuts their leader off.

use std::time::Duration;

use flotilla::in_process::InProcessNetwork;
use flotilla::{Consistency, Node, RunningNode};

const NS: &str = "default";
const BOUND: Duration = Duration::from_secs(60);

async fn start(network: &InProcessNetwork, dir: &std::path::Path) -> RunningNode {
    let builder = Node::builder(dir).in_process(network).configure(|c| {
        c.expect = Some(3);
        c.heartbeat_ms = Some(50);
        c.election_min_ms = Some(300);
        c.election_max_ms = Some(600);
    });
    builder.start().await.expect("an in-process node starts")
}

/// Poll `check` until it holds, within [`BOUND`].
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what} within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn builder_nodes_on_the_in_process_network_form_a_cluster_and_survive_a_cut() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let network = InProcessNetwork::new(5);
    let mut nodes = Vec::new();
    for dir in &dirs {
        nodes.push(start(&network, dir.path()).await);
    }
    until("three voters", || nodes.iter().all(|n| n.cluster(NS).map(|c| c.members().len() == 3).unwrap_or(false)))
        .await;
    let ids: Vec<_> = nodes.iter().map(|n| n.id()).collect();
    let first = nodes[0].cluster(NS).unwrap();
    let leader = first.wait_for_leader(BOUND).await.expect("a leader");
    first.set(b"k", b"before").await.expect("a write through any node");

    let cut = ids.iter().position(|id| *id == leader).expect("the leader is one of them");
    network.isolate(ids[cut], &ids);
    let other = nodes[(cut + 1) % 3].cluster(NS).unwrap();
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match other.set(b"k", b"after").await {
            Ok(_) => break,
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => continue,
            Err(e) => panic!("the majority side elects a leader and writes: {e}"),
        }
    }
    network.heal();
    let back = nodes[cut].cluster(NS).unwrap();
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let read = back.get(b"k", Consistency::Linearizable).await;
        match read {
            Ok(r) if r.value.as_deref() == Some(&b"after"[..]) => break,
            Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("the healed node reads the majority's write: {other:?}"),
        }
    }
    for node in nodes {
        node.shutdown().await;
    }
}
