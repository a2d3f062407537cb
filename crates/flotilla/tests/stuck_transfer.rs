//! A leader whose leadership transfer does not finish (its target went away right after being
//! asked, as when leader balancing picks a node that is about to leave) asks again of a live
//! voter. openraft keeps such a leader from heartbeating and writing until another leads, and
//! it refuses the pre-votes of the others: without asking again, the namespace refused every
//! write for good.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_node_that_went_away_is_asked_again_of_a_live_voter() {
    let h = Harness::start(3, 61, &["default"], |_| {}).await;
    let leader = h.leader("default").await;
    h.cluster(leader, "default").set(b"k", b"before").await.expect("a first write");
    // Idle: the followers quiesce, so no election timer of theirs runs (as in a namespace
    // that sees little traffic).
    eventually("the namespace quiesces everywhere", || (0..3).all(|i| h.cluster(i, "default").is_quiesced())).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (gone, live) = (others[0], others[1]);
    h.network.down(h.ids[gone]);
    // The transfer cannot finish: its target is unreachable.
    let _ = h.cluster(leader, "default").transfer_leadership(Some(h.ids[gone])).await;
    // The namespace accepts writes again, through either live node.
    let deadline = Instant::now() + PATIENCE;
    let mut attempt = 0u64;
    loop {
        let through = [leader, live][(attempt % 2) as usize];
        if h.cluster(through, "default").set(b"k", b"after").await.is_ok() {
            break;
        }
        attempt += 1;
        assert!(Instant::now() < deadline, "no write accepted after a transfer to an unreachable node");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.shutdown().await;
}
