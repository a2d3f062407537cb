//! Leader balancing in process over the in-process network on real stores: three nodes serving 30
//! namespaces, all led by one node, spread their leaders within a bound and then stay put.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{eventually, Harness};
use flotilla_core::types::NodeId;
use tokio::time::Instant;

const NODES: usize = 3;
const NAMESPACES: usize = 30;
/// ceil(30 / 3) + slack (1): the most a node may lead once balanced (see `formation/balance.rs`).
const MOST_LED: usize = 11;
/// Balancing starts 5 s after start, a moved namespace cools for 10 s and a round moves at
/// most 8: a few rounds of about 3 s. Generous for a loaded 2-core CI machine.
const SPREAD_WITHIN: Duration = Duration::from_secs(120);
/// Several balancing rounds (2-3 s each) after the spread.
const STABLE_FOR: Duration = Duration::from_secs(12);

fn no_tweak(_: &mut flotilla::Config) {}

fn names() -> Vec<String> {
    (0..NAMESPACES).map(|i| format!("ns{i:02}")).collect()
}

/// The leader of every namespace as node 0 sees it (None while unknown).
fn leaders(h: &Harness) -> BTreeMap<String, Option<NodeId>> {
    names().into_iter().map(|ns| (ns.clone(), h.cluster(0, &ns).leader())).collect()
}

/// How many namespaces each node leads, by node position.
fn counts(h: &Harness, leaders: &BTreeMap<String, Option<NodeId>>) -> Vec<usize> {
    (0..NODES).map(|i| leaders.values().filter(|l| **l == Some(h.ids[i])).count()).collect()
}

/// Move the leadership of every namespace to node 0, all at once.
async fn skew_to_node_0(h: &Harness) {
    let to = h.ids[0];
    let transfers = names().into_iter().map(|ns| async move {
        let deadline = Instant::now() + common::PATIENCE;
        while h.cluster(0, &ns).leader() != Some(to) || !h.cluster(0, &ns).is_leader() {
            // An error (a leader change under way) is retried until node 0 leads.
            let _ = h.cluster(0, &ns).transfer_leadership(Some(to)).await;
            assert!(Instant::now() < deadline, "{ns}: leadership never moved to node 0");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    futures::future::join_all(transfers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skewed_leaders_spread_over_the_nodes_then_stay_put() {
    let names = names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let h = Harness::start(NODES, 71, &refs, no_tweak).await;

    skew_to_node_0(&h).await;
    eventually("node 0 leads every namespace", || counts(&h, &leaders(&h))[0] == NAMESPACES).await;

    let deadline = Instant::now() + SPREAD_WITHIN;
    loop {
        let now = leaders(&h);
        let c = counts(&h, &now);
        if now.values().all(Option::is_some) && c.iter().all(|n| *n <= MOST_LED) {
            break;
        }
        assert!(Instant::now() < deadline, "leaders still skewed after {SPREAD_WITHIN:?}: {c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stable: over several rounds no namespace moves back and forth, and no node goes back
    // above the bound. A single change (a transfer of the last round landing, or an election
    // on a loaded machine) is allowed; a namespace that changes leader twice is ping-pong.
    let mut last = leaders(&h);
    let mut changes: BTreeMap<String, usize> = BTreeMap::new();
    let end = Instant::now() + STABLE_FOR;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = leaders(&h);
        for (ns, leader) in &now {
            if leader.is_some() && *leader != last[ns] && last[ns].is_some() {
                *changes.entry(ns.clone()).or_default() += 1;
            }
        }
        let c = counts(&h, &now);
        assert!(c.iter().all(|n| *n <= MOST_LED), "a node went back above {MOST_LED}: {c:?}");
        for (ns, leader) in now {
            if leader.is_some() {
                last.insert(ns, leader);
            }
        }
    }
    let ping_pong: Vec<_> = changes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(ping_pong.is_empty(), "namespaces moved more than once: {ping_pong:?}");
    h.shutdown().await;
}
