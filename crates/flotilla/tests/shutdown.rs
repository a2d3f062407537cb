//! Graceful shutdown is bounded: hand-offs run at once under one deadline, whatever the number
//! of namespaces, also when the whole cluster stops at the same moment.

mod common;

use std::time::Duration;

use common::*;
use flotilla::Role;
use tokio::time::Instant;

/// Namespaces per node: enough that hand-offs one after another, each waiting up to the
/// request timeout, take far longer than the bound.
const NAMESPACES: usize = 50;
/// Each node's shutdown must finish within this (hand-off budget 3 s, plus stopping).
const BOUND: Duration = Duration::from_secs(5);

fn names() -> Vec<String> {
    (0..NAMESPACES).map(|i| format!("ns{i:02}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_cluster_stopping_at_once_shuts_down_within_the_bound() {
    let names = names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let h = Harness::start(3, 17, &refs, |_| {}).await;
    let mut led = [0usize; 3];
    for ns in &refs {
        led[h.leader(ns).await] += 1;
    }
    eprintln!("namespaces led per node: {led:?}");

    let nodes: Vec<_> = h.nodes.iter().map(|n| n.clone().expect("running")).collect();
    let closes: Vec<_> = nodes
        .iter()
        .cloned()
        .map(|node| {
            tokio::spawn(async move {
                let started = Instant::now();
                node.close().await;
                started.elapsed()
            })
        })
        .collect();
    for (i, close) in closes.into_iter().enumerate() {
        let took = tokio::time::timeout(PATIENCE, close).await.expect("close ends").expect("close task");
        eprintln!("node {i} (led {}) shut down in {took:?}", led[i]);
        assert!(took < BOUND, "node {i} leading {} namespaces took {took:?} to shut down", led[i]);
    }
    for node in &nodes {
        for ns in &refs {
            assert_eq!(node.cluster(ns).expect("served").state().role, Role::Shutdown, "{ns}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_leaving_alone_hands_off_and_the_others_lead_every_namespace() {
    let names: Vec<String> = (0..12).map(|i| format!("solo{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut h = Harness::start(3, 23, &refs, |_| {}).await;
    let mut led = [0usize; 3];
    for ns in &refs {
        led[h.leader(ns).await] += 1;
    }
    let leaving = (0..3).max_by_key(|i| led[*i]).expect("three nodes");

    let started = Instant::now();
    let node = h.nodes[leaving].take().expect("running");
    node.close().await;
    let took = started.elapsed();
    eprintln!("node leading {} namespaces shut down in {took:?}", led[leaving]);
    assert!(took < BOUND, "took {took:?}");
    h.router.down(h.ids[leaving]);
    let others: Vec<usize> = (0..3).filter(|i| *i != leaving).collect();
    for ns in &refs {
        assert_ne!(h.leader_among(ns, &others).await, leaving);
    }
    h.shutdown().await;
}
