//! Formation at scale (issue 12, point 3): many namespaces started at once on three nodes all
//! form, and a fresh group, which cannot elect anything, keeps its Raft ticker off until it
//! founds a cluster or takes Raft traffic. In process over the in-process network, local preset (50 ms
//! heartbeats, 300-600 ms election timeouts), real stores.

mod common;

use std::time::Duration;

use common::{eventually, Harness};
use flotilla::{MemberRole, Role};
use tokio::time::Instant;

fn no_tweak(_: &mut flotilla::Config) {}

/// Whether `ns` has a leader that all three nodes agree on, with three voters and no change
/// in flight.
fn formed(h: &Harness, ns: &str) -> bool {
    let states: Vec<_> = (0..3).map(|i| h.cluster(i, ns).state()).collect();
    let Some(leader) = states.iter().find(|s| s.role == Role::Leader) else { return false };
    let voters = leader.members.iter().filter(|m| m.role == MemberRole::Voter).count();
    voters == 3 && !leader.membership_changing && states.iter().all(|s| s.leader == Some(leader.node_id))
}

/// 100 namespaces on each of three nodes started at once: every namespace gets a leader and
/// three voters within the bound (300 groups in one process, debug build). 300 namespaces
/// formed in about 60 s once and left 6 of 300 unformed after 180 s in another run on this
/// 2-core machine (see the report of issue 12 point 3), so CI runs 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_with_100_namespaces_started_at_once_all_form() {
    const COUNT: usize = 100;
    // Generous for a loaded 2-core CI machine; measured: see docs/BENCHMARKS.md.
    const BOUND: Duration = Duration::from_secs(120);
    let names: Vec<String> = (0..COUNT).map(|i| format!("ns-{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut h = Harness::new(3, 61, &refs, no_tweak);
    let began = Instant::now();
    for i in 0..3 {
        h.boot(i).await;
    }
    let mut pending: Vec<&String> = names.iter().collect();
    loop {
        pending.retain(|ns| !formed(&h, ns));
        if pending.is_empty() {
            break;
        }
        assert!(
            began.elapsed() < BOUND,
            "{} of {COUNT} namespaces not formed after {BOUND:?}, e.g. {:?}",
            pending.len(),
            pending.first()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("{COUNT} namespaces on 3 nodes formed (leader, 3 voters) after {:?}", began.elapsed());
    h.shutdown().await;
}

/// A fresh group has no membership: it can neither elect nor lead, so its ticker is off (it
/// costs no tick notifications) until it founds a cluster; once founded, the group runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_group_keeps_its_ticker_off_until_it_founds() {
    const NS: &str = "alone";
    let mut h = Harness::new(3, 62, &[NS], no_tweak);
    h.boot(0).await;
    // Alone with `--expect 3`, node 0 stays fresh: no founding, no Raft traffic.
    let watch_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < watch_until {
        let c = h.cluster(0, NS);
        assert!(c.is_quiesced(), "a fresh group without a cluster must not tick");
        assert!(c.state().last_log_index == 0 && c.state().leader.is_none());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.boot(1).await;
    h.boot(2).await;
    h.wait_voters(NS, 3).await;
    let l = h.leader(NS).await;
    // The leader ticks (heartbeats) until it has been idle for the quiesce period (12 s).
    eventually("the leader's ticker runs after founding", || !h.cluster(l, NS).is_quiesced()).await;
    h.shutdown().await;
}
