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
    h.network.down(h.ids[leaving]);
    let others: Vec<usize> = (0..3).filter(|i| *i != leaving).collect();
    for ns in &refs {
        assert_ne!(h.leader_among(ns, &others).await, leaving);
    }
    h.shutdown().await;
}

/// Issue 12 point 5, in process: a node leading a third of 100 quiesced namespaces (the idle
/// state of a node at scale) closes within the bound, hands most of them off before it returns,
/// and the other two nodes lead every one of them afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_leading_many_quiesced_namespaces_hands_them_off_within_the_bound() {
    // 100, as in tests/formation_scale.rs: more do not form reliably in a debug build on a
    // loaded 2-core machine within its bound.
    const COUNT: usize = 100;
    let names: Vec<String> = (0..COUNT).map(|i| format!("q{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut h = Harness::new(3, 29, &refs, |_| {});
    for i in 0..3 {
        h.boot(i).await;
    }
    let formed = Instant::now();
    while !refs.iter().all(|ns| (0..3).all(|i| h.cluster(i, ns).leader().is_some())) {
        assert!(formed.elapsed() < Duration::from_secs(120), "{COUNT} namespaces did not form");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Idle: every group's ticker stops (followers after 1.2 s, unused leaders 2.4 s later).
    let quiet = Instant::now();
    let deadline = quiet + PATIENCE * 2;
    while !refs.iter().all(|ns| (0..3).all(|i| h.cluster(i, ns).is_quiesced())) {
        assert!(Instant::now() < deadline, "groups never quiesced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{COUNT} namespaces quiesced on three nodes after {:?}", quiet.elapsed());
    let mut led: Vec<Vec<&str>> = vec![Vec::new(); 3];
    for ns in &refs {
        led[h.leader(ns).await].push(ns);
    }
    let leaving = (0..3).max_by_key(|i| led[*i].len()).expect("three nodes");
    let others: Vec<usize> = (0..3).filter(|i| *i != leaving).collect();

    let started = Instant::now();
    let node = h.nodes[leaving].take().expect("running");
    let report = node.close().await;
    let took = started.elapsed();
    eprintln!("node leading {} of {COUNT} quiesced namespaces shut down in {took:?}: {report:?}", led[leaving].len());
    assert!(took < BOUND, "took {took:?}");
    assert_eq!(report.led, led[leaving].len(), "{report:?}");
    // Hand-offs to live, caught-up voters on an idle cluster: most move before close returns
    // (measured on a loaded 2-core machine, debug build: 29 of 35; the rest elect).
    assert!(report.moved * 2 > report.led, "fewer than half handed off: {report:?}");
    h.network.down(h.ids[leaving]);
    for ns in &led[leaving] {
        assert_ne!(h.leader_among(ns, &others).await, leaving);
    }
    h.shutdown().await;
}
