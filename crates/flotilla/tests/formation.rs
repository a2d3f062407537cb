//! Formation and membership lifecycle, in process: real stores, the seeded in-process network and a
//! simulated discovery that respects it (a node sees the nodes it can reach, minus pairs
//! hidden from each other). No node is given a member list.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{eventually, Harness, PATIENCE};
use flotilla::{Config, Consistency, MemberRole};
use flotilla_core::types::NodeId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const NS: &str = "default";

fn window(c: &mut Config) {
    c.expect = None;
    c.discovery_window_ms = Some(1_000);
}

fn expect(c: &mut Config) {
    c.discovery_window_ms = Some(1_000);
}

/// What one node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    cluster: String,
    leader: Option<NodeId>,
    members: BTreeSet<NodeId>,
    voters: usize,
    changing: bool,
}

fn seen(h: &Harness, i: usize) -> Seen {
    let s = h.cluster(i, NS).state();
    Seen {
        cluster: s.cluster.clone(),
        leader: s.leader,
        members: s.members.iter().map(|m| m.id).collect(),
        voters: s.members.iter().filter(|m| m.role == MemberRole::Voter).count(),
        changing: s.membership_changing,
    }
}

/// Wait until the nodes `among` form one cluster: one cluster id, one leader among them, and
/// the leader's configuration holds exactly them with `voters` voters.
async fn wait_one_cluster(h: &Harness, among: &[usize], voters: usize) -> usize {
    wait_one_cluster_within(h, among, voters, PATIENCE).await
}

/// [`wait_one_cluster`] with its own bound, for clusters larger than the usual handful.
async fn wait_one_cluster_within(h: &Harness, among: &[usize], voters: usize, patience: Duration) -> usize {
    let want: BTreeSet<NodeId> = among.iter().map(|i| h.ids[*i]).collect();
    let deadline = Instant::now() + patience;
    loop {
        let views: Vec<Seen> = among.iter().map(|i| seen(h, *i)).collect();
        let first = &views[0];
        let leader_pos = first.leader.and_then(|l| among.iter().position(|i| h.ids[*i] == l));
        if let Some(pos) = leader_pos {
            let lv = &views[pos];
            let agree = views.iter().all(|v| v.cluster == lv.cluster && v.leader == lv.leader && !v.cluster.is_empty());
            if agree && lv.members == want && lv.voters == voters && !lv.changing {
                return among[pos];
            }
        }
        assert!(Instant::now() < deadline, "no single cluster of {among:?} with {voters} voters: {views:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A formation counter summed over the running nodes among `among`: each node counts what it
/// did as leader, and leadership may have moved since.
fn counter(h: &Harness, among: &[usize], key: &str) -> u64 {
    among
        .iter()
        .filter(|i| h.nodes[**i].is_some())
        .filter_map(|i| h.cluster(*i, NS).formation_status())
        .map(|s| s.counters.get(key).copied().unwrap_or(0))
        .sum()
}

async fn boot_in_order(h: &mut Harness, order: &[usize]) {
    for i in order {
        h.boot(*i).await;
    }
}

fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_start_with_expect_forms_one_cluster() {
    for n in [3usize, 5, 7] {
        for seed in 0..4 {
            let mut h = Harness::new(n, seed * 31 + n as u64, &[NS], expect);
            boot_in_order(&mut h, &shuffled(n, seed)).await;
            let l = wait_one_cluster(&h, &(0..n).collect::<Vec<_>>(), n.min(5)).await;
            h.cluster(l, NS).set(b"k", b"v").await.expect("first write");
            h.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_start_without_expect_forms_one_cluster() {
    for n in [3usize, 5, 7] {
        for seed in 0..3 {
            let mut h = Harness::new(n, seed * 17 + n as u64, &[NS], window);
            boot_in_order(&mut h, &shuffled(n, seed)).await;
            let l = wait_one_cluster(&h, &(0..n).collect::<Vec<_>>(), n.min(5)).await;
            h.cluster(l, NS).set(b"k", b"v").await.expect("first write");
            h.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staggered_random_starts_converge() {
    for seed in 0..3u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut h = Harness::new(5, seed, &[NS], window);
        for i in shuffled(5, seed) {
            h.boot(i).await;
            // Staggering is the scenario itself, not synchronisation: nodes arrive before,
            // during and after the others' discovery windows.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..2_500))).await;
        }
        wait_one_cluster(&h, &[0, 1, 2, 3, 4], 5).await;
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_connectivity_still_forms_one_cluster() {
    // A sees B, B sees C, A does not see C: peer exchange and the rendezvous record carried
    // by B introduce them.
    for tweak in [window as fn(&mut Config), expect] {
        let mut h = Harness::new(3, 7, &[NS], tweak);
        h.network.hide(h.ids[0], h.ids[2]);
        boot_in_order(&mut h, &[0, 1, 2]).await;
        wait_one_cluster(&h, &[0, 1, 2], 3).await;
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_joiner_enters_as_learner_and_is_promoted() {
    let mut h = Harness::new(4, 11, &[NS], |c| c.expect = Some(3));
    boot_in_order(&mut h, &[0, 1, 2]).await;
    let l = wait_one_cluster(&h, &[0, 1, 2], 3).await;
    h.cluster(l, NS).set(b"before", b"1").await.expect("write");
    h.boot(3).await;
    wait_one_cluster(&h, &[0, 1, 2, 3], 4).await;
    // Counters are bumped once each change returns, just after it becomes visible.
    let all = [0, 1, 2, 3];
    eventually("the join and the promotion counted", || {
        counter(&h, &all, "joins") >= 1 && counter(&h, &all, "promotions") >= 1
    })
    .await;
    let read = h.cluster(3, NS).get(b"before", Consistency::Linearizable).await.expect("read");
    assert_eq!(read.value.as_deref(), Some(&b"1"[..]));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_nodes_join_concurrently() {
    // 23 debug-build nodes share one process and, in CI, two cores with another test: the
    // harness's 50 ms heartbeats then time out and leaders change every few seconds, which
    // fails joins and promotions for as long as it lasts. This test is about concurrent joins,
    // so it runs with heartbeats and elections a loaded machine keeps up with, and waits for
    // 22 joins and two promotions with a bound scaled to them.
    let mut h = Harness::new(23, 5, &[NS], |c| {
        c.expect = Some(3);
        c.heartbeat_ms = Some(150);
        c.election_min_ms = Some(1_500);
        c.election_max_ms = Some(3_000);
    });
    boot_in_order(&mut h, &[0, 1, 2]).await;
    wait_one_cluster(&h, &[0, 1, 2], 3).await;
    let started = Instant::now();
    let boots: Vec<usize> = (3..23).collect();
    boot_in_order(&mut h, &boots).await;
    wait_one_cluster_within(&h, &(0..23).collect::<Vec<_>>(), 5, 3 * PATIENCE).await;
    eprintln!("20 concurrent joiners: all members after {} ms", started.elapsed().as_millis());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removed_node_rejoins_and_old_leader_rejoins_as_follower() {
    let mut h = Harness::start(3, 3, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let victim = (l + 1) % 3;
    h.cluster(l, NS).remove(h.ids[victim]).await.expect("remove");
    // The removed node notices it is no longer in the configuration and asks back in.
    wait_one_cluster(&h, &[0, 1, 2], 3).await;
    assert!(counter(&h, &[0, 1, 2], "joins") >= 1);
    let l = h.leader(NS).await;

    // Leader crash and reboot: a new leader, and the old one comes back as a follower.
    h.cluster(l, NS).set(b"k", b"v").await.expect("write");
    h.crash(l).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    h.leader_among(NS, &others).await;
    h.reboot(l).await;
    let new_leader = wait_one_cluster(&h, &[0, 1, 2], 3).await;
    assert_ne!(new_leader, l, "the rebooted leader must not have founded or taken over by itself");
    let read = h.cluster(l, NS).get(b"k", Consistency::Linearizable).await.expect("read");
    assert_eq!(read.value.as_deref(), Some(&b"v"[..]));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_node_is_removed_and_readded_never_voting_with_amnesia() {
    let mut h = Harness::start(3, 9, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    for i in 0..20u32 {
        h.cluster(l, NS).set(format!("k{i}").as_bytes(), b"v").await.expect("write");
    }
    let victim = (l + 1) % 3;
    h.crash(victim).await;
    h.wipe(victim);
    h.reboot(victim).await;
    // Back as a voter, but only after being removed and re-added as a learner.
    wait_one_cluster(&h, &[0, 1, 2], 3).await;
    assert!(counter(&h, &[0, 1, 2], "amnesia") >= 1, "amnesia not detected");
    let read = h.cluster(victim, NS).get(b"k19", Consistency::Linearizable).await.expect("read");
    assert_eq!(read.value.as_deref(), Some(&b"v"[..]));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_voter_is_replaced_by_a_learner_and_the_floor_holds() {
    let mut h = Harness::new(4, 13, &[NS], |c| {
        c.expect = Some(3);
        c.voter_target = 3;
        c.dead_member_timeout_ms = 2_000;
    });
    boot_in_order(&mut h, &[0, 1, 2]).await;
    wait_one_cluster(&h, &[0, 1, 2], 3).await;
    h.boot(3).await;
    // Beyond the voter target the fourth node stays a learner (a read replica).
    wait_one_cluster(&h, &[0, 1, 2, 3], 3).await;
    let l = h.leader(NS).await;
    let dead = (0..3).find(|i| *i != l && seen(&h, l).voters == 3 && h.ids[*i] != h.ids[3]).expect("a follower");
    h.crash(dead).await;
    let live: Vec<usize> = (0..4).filter(|i| *i != dead).collect();
    wait_one_cluster(&h, &live, 3).await;
    // The counter is bumped once the change returns to the autopilot, just after the new
    // configuration becomes visible.
    eventually("the removal counted", || counter(&h, &live, "removals") >= 1).await;

    // Now no learner is left and three voters is the floor: losing one more keeps it listed.
    let l = h.leader(NS).await;
    let second = live.iter().copied().find(|i| *i != l).expect("a follower");
    h.crash(second).await;
    // An idle (quiesced) leader keeps its quorum without a dead follower and does not wake
    // for it (DESIGN-namespaces.md, "Shutdown and failures at scale"): a client wakes it, and
    // its autopilot looks at the members again.
    h.cluster(l, NS).set(b"wake", b"v").await.expect("a write with two of three voters");
    let floor_reason = |h: &Harness| {
        h.cluster(l, NS).formation_status().map(|s| s.reason.contains("fewer than 3 voters")).unwrap_or(false)
    };
    eventually("the leader reports the quorum floor", || floor_reason(&h)).await;
    assert_eq!(seen(&h, l).voters, 3);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_during_formation_heals_into_one_cluster_without_losing_writes() {
    let mut h = Harness::new(5, 21, &[NS], window);
    let all = h.ids.clone();
    h.network.partition(&all[0..2], &all);
    boot_in_order(&mut h, &[0, 1, 2, 3, 4]).await;
    // Each side founds on its own after its window.
    wait_one_cluster(&h, &[0, 1], 2).await;
    let l = wait_one_cluster(&h, &[2, 3, 4], 3).await;
    for i in 0..10u32 {
        h.cluster(l, NS).set(format!("k{i}").as_bytes(), b"acked").await.expect("write on the majority side");
    }
    h.network.heal();
    // The side that never acknowledged a write dissolves into the other.
    wait_one_cluster(&h, &[0, 1, 2, 3, 4], 5).await;
    for i in 0..5 {
        for k in 0..10u32 {
            let read = h.cluster(i, NS).get(format!("k{k}").as_bytes(), Consistency::Linearizable).await.expect("read");
            assert_eq!(read.value.as_deref(), Some(&b"acked"[..]), "node {i} lost k{k}");
        }
    }
    assert!(counter(&h, &[0, 1], "absorbed") >= 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clusters_holding_data_are_reported_and_both_keep_serving() {
    let mut h = Harness::new(4, 23, &[NS], window);
    let all = h.ids.clone();
    h.network.partition(&all[0..2], &all);
    boot_in_order(&mut h, &[0, 1, 2, 3]).await;
    let a = wait_one_cluster(&h, &[0, 1], 2).await;
    let b = wait_one_cluster(&h, &[2, 3], 2).await;
    h.cluster(a, NS).set(b"a", b"1").await.expect("write on side a");
    h.cluster(b, NS).set(b"b", b"2").await.expect("write on side b");
    h.network.heal();
    let reported = |h: &Harness, i: usize| {
        h.cluster(i, NS).formation_status().map(|s| !s.splits.is_empty() && s.counters["splits"] >= 1).unwrap_or(false)
    };
    eventually("both sides report the split", || reported(&h, a) && reported(&h, b)).await;
    let got_a = h.cluster(a, NS).get(b"a", Consistency::Linearizable).await.expect("side a serves");
    let got_b = h.cluster(b, NS).get(b"b", Consistency::Linearizable).await.expect("side b serves");
    assert_eq!(got_a.value.as_deref(), Some(&b"1"[..]));
    assert_eq!(got_b.value.as_deref(), Some(&b"2"[..]));
    assert_ne!(seen(&h, a).cluster, seen(&h, b).cluster);

    // The documented operator resolution: dissolve one side on its leader; its members join
    // the other side, whose data survives.
    let a = h.leader_among(NS, &[0, 1]).await;
    h.cluster(a, NS).dissolve().await.expect("dissolve side a");
    let l = wait_one_cluster(&h, &[0, 1, 2, 3], 4).await;
    let got_b = h.cluster(l, NS).get(b"b", Consistency::Linearizable).await.expect("read");
    assert_eq!(got_b.value.as_deref(), Some(&b"2"[..]));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_bootstrap_founds_alone_and_restarts_cleanly() {
    let mut h = Harness::new(1, 1, &[NS], |c| {
        c.expect = None;
        c.force_bootstrap = true;
    });
    h.boot(0).await;
    wait_one_cluster(&h, &[0], 1).await;
    let cluster = seen(&h, 0).cluster;
    h.cluster(0, NS).set(b"k", b"v").await.expect("write");
    h.crash(0).await;
    h.reboot(0).await;
    wait_one_cluster(&h, &[0], 1).await;
    assert_eq!(seen(&h, 0).cluster, cluster, "a restart with --force-bootstrap must not found again");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lone_node_founds_after_the_window() {
    let mut h = Harness::new(1, 2, &[NS], window);
    let started = Instant::now();
    h.boot(0).await;
    wait_one_cluster(&h, &[0], 1).await;
    assert!(started.elapsed() >= Duration::from_millis(1_000), "founded before its discovery window closed");
    h.cluster(0, NS).set(b"k", b"v").await.expect("write");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outsiders_cannot_add_arbitrary_members() {
    use flotilla_core::wire::{CommandEnvelope, CommandRequest, RequestBody, WireRequest, WireResponse};
    use flotilla_core::MemberInfo;
    let h = Harness::start(3, 4, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let outsider = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let victim = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let transport = h.network.transport(outsider);
    let requests = [
        CommandRequest::AddVoter(victim, MemberInfo::new(vec![])),
        CommandRequest::AddLearner(victim, MemberInfo::new(vec![])),
        CommandRequest::Remove(h.ids[(l + 1) % 3]),
        CommandRequest::TransferLeader(None),
    ];
    for request in requests {
        let wire = WireRequest {
            namespace: flotilla::Namespace::new(NS).expect("ns"),
            body: RequestBody::Command(CommandEnvelope { hops_left: 0, budget_ms: 5_000, request: request.clone() }),
        };
        let reply = transport.call(h.ids[l], wire, Duration::from_secs(5)).await.expect("a reply");
        assert!(
            matches!(reply, WireResponse::Error(flotilla_core::wire::WireError::Rejected(_))),
            "{request:?} from a non-member was not refused: {reply:?}"
        );
    }
    let members: BTreeSet<NodeId> = seen(&h, l).members;
    assert_eq!(members, h.ids.iter().copied().collect::<BTreeSet<_>>());
    h.shutdown().await;
}

/// A learner is admitted by a join, which anyone who can reach the cluster may send: it must not
/// be able to remove voters, add members or move leadership, whether it asks the leader or a
/// follower (which would forward it). A voter still may.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learners_cannot_change_membership_or_leadership() {
    use flotilla_core::wire::{
        CommandEnvelope, CommandRequest, CommandResponse, RequestBody, WireRequest, WireResponse,
    };
    use flotilla_core::MemberInfo;
    let mut h = Harness::new(4, 5, &[NS], |c| c.voter_target = 3);
    for i in 0..4 {
        h.boot(i).await;
    }
    h.wait_voters(NS, 3).await;
    let l = h.leader(NS).await;
    eventually("the fourth node is a learner", || {
        h.cluster(l, NS).state().members.iter().filter(|m| m.role == MemberRole::Learner).count() == 1
    })
    .await;
    let state = h.cluster(l, NS).state();
    let learner = state.members.iter().find(|m| m.role == MemberRole::Learner).expect("a learner").id;
    let follower = (0..4).find(|i| *i != l && h.ids[*i] != learner).expect("a follower voter");
    let victim = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let as_learner = h.network.transport(learner);
    let command = |request: CommandRequest, hops_left| WireRequest {
        namespace: flotilla::Namespace::new(NS).expect("ns"),
        body: RequestBody::Command(CommandEnvelope { hops_left, budget_ms: 5_000, request }),
    };
    let requests = [
        CommandRequest::AddVoter(victim, MemberInfo::new(vec![])),
        CommandRequest::AddLearner(victim, MemberInfo::new(vec![])),
        CommandRequest::Remove(h.ids[follower]),
        CommandRequest::TransferLeader(Some(learner)),
        CommandRequest::TransferLeader(None),
    ];
    for (to, hops) in [(l, 0), (follower, 1)] {
        for request in requests.clone() {
            let reply = as_learner.call(h.ids[to], command(request.clone(), hops), PATIENCE).await.expect("a reply");
            assert!(
                matches!(&reply, WireResponse::Error(flotilla_core::wire::WireError::Rejected(m)) if m.contains("not a voter")),
                "{request:?} from a learner to node {to} was not refused: {reply:?}"
            );
        }
    }
    let after = h.cluster(l, NS).state();
    assert_eq!(after.leader, Some(h.ids[l]), "leadership moved");
    let members: BTreeSet<NodeId> = after.members.iter().map(|m| m.id).collect();
    assert_eq!(members, h.ids.iter().copied().collect::<BTreeSet<_>>(), "membership changed");
    assert_eq!(after.members.iter().filter(|m| m.role == MemberRole::Voter).count(), 3);

    // A voter may: the check is on the sender's role, not on every remote request.
    let as_voter = h.network.transport(h.ids[follower]);
    let reply = as_voter.call(h.ids[l], command(CommandRequest::TransferLeader(None), 0), PATIENCE).await;
    assert!(matches!(reply, Ok(WireResponse::Command(CommandResponse::Done { .. }))), "{reply:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_store_with_surviving_founding_record_is_still_amnesia() {
    use flotilla::formation::record::{FoundingRecord, RecordFile};
    let mut h = Harness::start(3, 19, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    for i in 0..10u32 {
        h.cluster(l, NS).set(format!("k{i}").as_bytes(), b"v").await.expect("write");
    }
    let victim = (l + 1) % 3;
    let ns = flotilla::Namespace::new(NS).expect("ns");
    let record = RecordFile::new(h.dirs[victim].path(), &ns);
    // The founding promise on disk is replaced by "member" once the node has Raft state.
    eventually("the record says member", || record.load().ok() == Some(FoundingRecord::Member)).await;
    h.crash(victim).await;
    // Lose the store and snapshots, keep the formation record (and, in production, the key).
    std::fs::remove_file(h.dirs[victim].path().join("flotilla.redb")).expect("remove store");
    let _ = std::fs::remove_dir_all(h.dirs[victim].path().join("snapshots"));
    h.reboot(victim).await;
    wait_one_cluster(&h, &[0, 1, 2], 3).await;
    assert!(counter(&h, &[0, 1, 2], "amnesia") >= 1, "a node that lost its store was trusted with its old vote");
    let read = h.cluster(victim, NS).get(b"k9", Consistency::Linearizable).await.expect("read");
    assert_eq!(read.value.as_deref(), Some(&b"v"[..]));
    h.shutdown().await;
}
