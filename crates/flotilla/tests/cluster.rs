//! In-process cluster behaviour over the seeded in-process network, on real stores.

mod common;

use std::time::Duration;

use common::{eventually, Harness};
use flotilla::{ApiError, Consistency, KvOp, Limit, MemberRole, Role};

const NS: &str = "default";

fn no_tweak(_: &mut flotilla::Config) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_one_leader_and_replicate() {
    let h = Harness::start(3, 1, &[NS], no_tweak).await;
    let l = h.leader(NS).await;
    let leaders = (0..3).filter(|i| h.cluster(*i, NS).state().role == Role::Leader).count();
    assert_eq!(leaders, 1);
    let out = h.cluster(l, NS).set(b"k", b"v").await.unwrap();
    assert!(out.index > 0);
    for i in 0..3 {
        h.wait_applied(i, NS, out.index).await;
        let read = h.cluster(i, NS).get(b"k", Consistency::Stale).await.unwrap();
        assert_eq!(read.value.as_deref(), Some(&b"v"[..]), "node {i}");
        assert!(read.index >= out.index);
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_through_follower_and_linearizable_follower_read() {
    let h = Harness::start(3, 2, &[NS], no_tweak).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let other = (0..3).find(|i| *i != l && *i != f).unwrap();
    for round in 0..20u32 {
        let value = round.to_be_bytes();
        let written = h.cluster(f, NS).set(b"x", &value).await.unwrap();
        // A linearizable read on another follower must see the write acknowledged just before.
        let read = h.cluster(other, NS).get(b"x", Consistency::Linearizable).await.unwrap();
        assert_eq!(read.value.as_deref(), Some(&value[..]), "round {round}");
        assert!(read.index >= written.index);
    }
    let (_, forwards, _) = h.cluster(f, NS).counters();
    assert!(forwards >= 20, "follower forwarded {forwards} requests");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_crash_then_new_leader_and_writes_continue() {
    let mut h = Harness::start(3, 3, &[NS], no_tweak).await;
    let old = h.leader(NS).await;
    let acked = h.cluster(old, NS).set(b"before", b"1").await.unwrap();
    h.crash(old).await;
    let new = h.leader(NS).await;
    assert_ne!(new, old);
    let survivor = h.live().into_iter().find(|i| *i != new).unwrap();
    h.cluster(survivor, NS).set(b"after", b"2").await.unwrap();
    let read = h.cluster(survivor, NS).get(b"before", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"1"[..]));
    assert!(read.index >= acked.index);
    // The old leader comes back as a follower and catches up.
    h.reboot(old).await;
    let read = h.cluster(old, NS).get(b"after", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"2"[..]));
    assert_ne!(h.cluster(old, NS).state().role, Role::Leader);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_reboot_catches_up() {
    let mut h = Harness::start(3, 4, &[NS], no_tweak).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    h.crash(f).await;
    let mut last = 0;
    for i in 0..50u32 {
        last = h.cluster(l, NS).set(format!("k{i}").as_bytes(), b"v").await.unwrap().index;
    }
    h.reboot(f).await;
    h.wait_applied(f, NS, last).await;
    let keys = h.cluster(f, NS).keys(b"k", Consistency::Stale).await.unwrap();
    assert_eq!(keys.keys.len(), 50);
    h.shutdown().await;
}

fn small_snapshots(c: &mut flotilla::Config) {
    c.snapshot_every = 20;
    c.keep_logs_behind_snapshot = 5;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_follower_receives_a_snapshot() {
    let mut h = Harness::start(3, 5, &[NS], small_snapshots).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    h.crash(f).await;
    let mut last = 0;
    for i in 0..200u32 {
        last = h.cluster(l, NS).set(format!("s{i:04}").as_bytes(), &i.to_be_bytes()).await.unwrap().index;
    }
    let leader = h.cluster(l, NS);
    eventually("leader snapshot and purge", || leader.state().snapshot_index > 100).await;
    h.reboot(f).await;
    h.wait_applied(f, NS, last).await;
    let state = h.cluster(f, NS).state();
    assert!(state.snapshot_index > 0, "follower caught up through a snapshot");
    for i in [0u32, 77, 199] {
        let v = h.cluster(f, NS).get(format!("s{i:04}").as_bytes(), Consistency::Stale).await.unwrap();
        assert_eq!(v.value.as_deref(), Some(&i.to_be_bytes()[..]));
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_transfer_moves_the_leader() {
    let h = Harness::start(3, 6, &[NS], no_tweak).await;
    let l = h.leader(NS).await;
    // Every node counts the leader changes it sees (`flotilla_leader_changes_total`).
    let changes = || (0..3).map(|i| h.cluster(i, NS).counters().2).collect::<Vec<_>>();
    eventually("every node counted the first leader", || changes().iter().all(|c| *c >= 1)).await;
    let before = changes();
    let target = (0..3).find(|i| *i != l).unwrap();
    // Requested through a follower that is not the target: it is forwarded to the leader.
    let via = (0..3).find(|i| *i != l && *i != target).unwrap_or(target);
    h.cluster(via, NS).transfer_leadership(Some(h.ids[target])).await.unwrap();
    let new = h.leader(NS).await;
    assert_eq!(new, target);
    eventually("every node counted the transfer", || changes().iter().zip(&before).all(|(now, was)| now > was)).await;
    h.cluster(l, NS).set(b"after-transfer", b"ok").await.unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_and_re_add_a_member() {
    let mut h = Harness::start(3, 7, &[NS], no_tweak).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let id = h.ids[f];
    h.cluster(l, NS).remove(id).await.unwrap();
    eventually("member removed", || h.cluster(l, NS).members().iter().all(|m| m.id != id)).await;
    h.cluster(l, NS).set(b"while-removed", b"1").await.unwrap();
    // Removing a node that is not a member is a clear error, not a panic. (The removed node
    // itself asks back in within a second or so, so it is not the one to try.)
    let stranger = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    assert!(matches!(h.cluster(l, NS).remove(stranger).await, Err(ApiError::Rejected(_))));
    // Adding it back explicitly is idempotent with its own rejoin.
    let addrs = h.node(f).addrs();
    h.cluster(l, NS).add_voter(id, addrs).await.unwrap();
    h.wait_voters(NS, 3).await;
    let read = h.cluster(f, NS).get(b"while-removed", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"1"[..]));
    // The re-added node also survives a reboot as a voter.
    h.crash(f).await;
    h.reboot(f).await;
    let members = h.cluster(h.leader(NS).await, NS).members();
    assert!(members.iter().any(|m| m.id == id && m.role == MemberRole::Voter));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_are_isolated() {
    let h = Harness::start(3, 8, &["alpha", "beta"], no_tweak).await;
    let a = h.cluster(0, "alpha");
    let b = h.cluster(1, "beta");
    a.set(b"same", b"from-alpha").await.unwrap();
    b.set(b"same", b"from-beta").await.unwrap();
    for i in 0..3 {
        let va = h.cluster(i, "alpha").get(b"same", Consistency::Linearizable).await.unwrap();
        let vb = h.cluster(i, "beta").get(b"same", Consistency::Linearizable).await.unwrap();
        assert_eq!(va.value.as_deref(), Some(&b"from-alpha"[..]));
        assert_eq!(vb.value.as_deref(), Some(&b"from-beta"[..]));
    }
    assert!(matches!(h.node(0).cluster("gamma"), Err(ApiError::UnknownNamespace(_))));
    assert!(matches!(h.node(0).cluster("../alpha"), Err(ApiError::InvalidNamespace(_))));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_keys_are_refused_or_stored_opaquely() {
    let h = Harness::start(3, 9, &["alpha", "beta"], no_tweak).await;
    let a = h.cluster(1, "alpha");
    assert!(matches!(a.set(b"", b"v").await, Err(ApiError::InvalidKey(_))));
    let huge = vec![b'k'; 5000];
    assert!(matches!(a.set(&huge, b"v").await, Err(ApiError::TooLarge { what: Limit::Key, .. })));
    let big_value = vec![0u8; 2 * 1024 * 1024];
    assert!(matches!(a.set(b"k", &big_value).await, Err(ApiError::TooLarge { what: Limit::Value, .. })));
    for key in [&b"../x"[..], b"../../beta/same", b"a\0b", b"/", b"..", b"%2e%2e"] {
        a.set(key, b"opaque").await.unwrap();
        let read = a.get(key, Consistency::Linearizable).await.unwrap();
        assert_eq!(read.value.as_deref(), Some(&b"opaque"[..]), "{key:?}");
    }
    let beta = h.cluster(0, "beta").keys(b"", Consistency::Linearizable).await.unwrap();
    assert!(beta.keys.is_empty(), "nothing leaked into beta: {:?}", beta.keys);
    // A batch with one bad op is refused as a whole.
    let ops = vec![KvOp::Set { key: b"ok".to_vec(), value: b"1".to_vec() }, KvOp::Delete { key: vec![] }];
    assert!(a.batch(ops).await.is_err());
    assert_eq!(a.get(b"ok", Consistency::Linearizable).await.unwrap().value, None);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn atomic_batch_is_one_entry() {
    let h = Harness::start(3, 10, &[NS], no_tweak).await;
    let c = h.cluster(2, NS);
    let ops = (0..10).map(|i| KvOp::Set { key: format!("b{i}").into_bytes(), value: b"v".to_vec() }).collect();
    let before = c.state().last_log_index;
    let out = c.batch(ops).await.unwrap();
    assert_eq!(out.existed.len(), 10);
    assert!(out.index > before);
    let keys = c.keys(b"b", Consistency::Linearizable).await.unwrap();
    assert_eq!(keys.keys.len(), 10);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_whole_cluster_after_many_entries_and_a_snapshot() {
    let mut h = Harness::start(3, 11, &[NS], small_snapshots).await;
    let l = h.leader(NS).await;
    for i in 0..300u32 {
        h.cluster(l, NS).set(format!("r{i:04}").as_bytes(), &i.to_be_bytes()).await.unwrap();
    }
    let leader = h.cluster(l, NS);
    eventually("snapshot taken", || leader.state().snapshot_index > 0).await;
    // A cluster handle keeps its node (and its open store) alive.
    drop(leader);
    for i in 0..3 {
        h.crash(i).await;
    }
    for i in 0..3 {
        h.reboot(i).await;
    }
    let l = h.leader(NS).await;
    let keys = h.cluster(l, NS).keys(b"r", Consistency::Linearizable).await.unwrap();
    assert_eq!(keys.keys.len(), 300);
    for i in 0..3 {
        let v = h.cluster(i, NS).get(b"r0299", Consistency::Linearizable).await.unwrap();
        assert_eq!(v.value.as_deref(), Some(&299u32.to_be_bytes()[..]));
    }
    h.shutdown().await;
}

/// A rolling restart onto `--write-ahead-log`: each node converts its store at start, catches
/// up, and the cluster keeps every write, before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_converts_every_node_to_the_write_ahead_log() {
    let mut h = Harness::start(3, 12, &[NS], small_snapshots).await;
    let l = h.leader(NS).await;
    for i in 0..150u32 {
        h.cluster(l, NS).set(format!("w{i:04}").as_bytes(), &i.to_be_bytes()).await.unwrap();
    }
    h.tweak = |c| {
        small_snapshots(c);
        c.write_ahead_log = true;
        // Small segments, so the converted logs and the writes after span several.
        c.max_value_bytes = 256 << 10;
        c.max_frame_bytes = 512 << 10;
        c.wal_segment_mib = 1;
    };
    for node in 0..3 {
        h.crash(node).await;
        h.reboot(node).await;
        let wal = h.dirs[node].path().join(flotilla_store::WAL_DIR);
        assert!(wal.is_dir(), "node {node} converted its store at start");
        let l = h.leader(NS).await;
        for i in 0..50u32 {
            let k = 150 + node as u32 * 50 + i;
            h.cluster(l, NS).set(format!("w{k:04}").as_bytes(), &k.to_be_bytes()).await.unwrap();
        }
        h.wait_voters(NS, 3).await;
    }
    let l = h.leader(NS).await;
    let keys = h.cluster(l, NS).keys(b"w", Consistency::Linearizable).await.unwrap();
    assert_eq!(keys.keys.len(), 300);
    for i in 0..3 {
        let v = h.cluster(i, NS).get(b"w0299", Consistency::Linearizable).await.unwrap();
        assert_eq!(v.value.as_deref(), Some(&299u32.to_be_bytes()[..]), "node {i}");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minority_partition_cannot_write_majority_can() {
    let h = Harness::start(3, 12, &[NS], no_tweak).await;
    let l = h.leader(NS).await;
    let all = h.ids.clone();
    h.network.isolate(h.ids[l], &all);
    let rest: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let new = h.leader_among(NS, &rest).await;
    h.cluster(new, NS).set(b"majority", b"yes").await.unwrap();
    // The isolated old leader cannot complete a linearizable read or a write.
    let stale_side = h.cluster(l, NS);
    let res =
        tokio::time::timeout(Duration::from_secs(20), stale_side.get(b"majority", Consistency::Linearizable)).await;
    assert!(matches!(res, Ok(Err(_))), "isolated node must not serve a linearizable read: {res:?}");
    h.network.heal();
    let read = h.cluster(l, NS).get(b"majority", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"yes"[..]));
    h.shutdown().await;
}
