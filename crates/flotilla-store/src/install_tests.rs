//! Snapshot installs: a crash between their durable steps, followed by openraft's own
//! recovery at startup ([`StorageHelper::get_initial_state`]), must leave a snapshot that
//! reaches the log and the snapshot's state; and an install must not hold the writer that
//! every other namespace uses.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use flotilla_core::kv::{encode_ops, KvStateMachine};
use flotilla_core::types::{Entry, LogId};
use flotilla_core::{Command, KvOp, MemberInfo, NodeId};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, StorageHelper};
use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, Membership, RaftTypeConfig};

use super::*;
use crate::Store;

fn node(n: u8) -> NodeId {
    let key = libp2p_identity::Keypair::ed25519_from_bytes([n; 32]).expect("valid ed25519 secret");
    key.public().to_peer_id()
}

fn log_id(index: u64) -> LogId {
    LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(1, node(1)), index)
}

/// Entries 1..=last: a membership, then one key per entry.
fn entries(last: u64) -> Vec<Entry> {
    sized_entries(last, 100)
}

/// Entries 1..=last: a membership, then one key per entry with a value of `value_len` bytes.
fn sized_entries(last: u64, value_len: usize) -> Vec<Entry> {
    let voters: BTreeSet<NodeId> = [node(1), node(2), node(3)].into();
    let m = Membership::<NodeId, MemberInfo>::new_with_defaults(vec![voters], []);
    let mut out = vec![Entry { log_id: log_id(1), payload: EntryPayload::Membership(m) }];
    for i in 2..=last {
        let ops = encode_ops(&[KvOp::Set { key: format!("k{i}").into_bytes(), value: vec![i as u8; value_len] }]);
        out.push(Entry { log_id: log_id(i), payload: EntryPayload::Normal(Command { id: None, payload: ops }) });
    }
    out
}

async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) {
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.unwrap();
}

fn ns() -> Namespace {
    Namespace::new("alpha").unwrap()
}

/// A follower that holds entries 1..=5 in its log and state, and a snapshot of them.
async fn lagging_follower(dir: &std::path::Path) -> (Arc<Store>, StateMachineStore) {
    let store = Store::open(dir).unwrap();
    let mut log = store.log_store(&ns()).unwrap();
    log.blocking_append(entries(5)).await.unwrap();
    let mut sm = store.state_machine(&ns(), Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm, entries(5)).await;
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    (store, sm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_an_install_leaves_a_snapshot_that_reaches_the_log() {
    // The leader's snapshot of entries 1..=50.
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = Store::open(leader_dir.path()).unwrap();
    let mut leader_sm = leader.state_machine(&ns(), Arc::new(KvStateMachine)).unwrap();
    apply(&mut leader_sm, entries(50)).await;
    let snap = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(50)));

    // The follower "crashes" between the two durable steps of installing it.
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sm) = lagging_follower(dir.path()).await;
    sm.crash_mid_install.store(true, Ordering::SeqCst);
    sm.install_snapshot(&snap.meta, snap.snapshot.clone()).await.expect_err("the hook stops the install");
    drop(sm);
    store.shutdown();
    drop(store);

    // Restart: openraft recovers the way it does when a node starts.
    let store = Store::open(dir.path()).unwrap();
    let mut log = store.log_store(&ns()).unwrap();
    let mut sm = store.state_machine(&ns(), Arc::new(KvStateMachine)).unwrap();
    let state = StorageHelper::new(&mut log, &mut sm).with_id(node(2)).get_initial_state().await.unwrap();

    let purged = log.get_log_state().await.unwrap().last_purged_log_id;
    let served = sm.get_current_snapshot().await.unwrap().map(|s| s.meta.last_log_id);
    assert!(
        served.flatten() >= purged && state.snapshot_meta.last_log_id >= purged,
        "the snapshot served ({served:?}, recovered {:?}) must reach the purged log ({purged:?})",
        state.snapshot_meta.last_log_id
    );
    // Whatever the interrupted step, the node ends with the snapshot's state.
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(50)));
    assert_eq!(store.kv_get(&ns(), b"k50").unwrap(), leader.kv_get(&ns(), b"k50").unwrap());
    // And the log it kept continues from the snapshot.
    assert!(log.try_get_log_entries(0..6).await.unwrap().iter().all(|e| e.log_id.index > 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_file_behind_the_purged_log_is_not_served() {
    // What a crash of an older version could leave behind: the log purged past the snapshot
    // file (the state installed, the file not yet replaced).
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sm) = lagging_follower(dir.path()).await;
    let mut log = store.log_store(&ns()).unwrap();
    assert_eq!(sm.get_current_snapshot().await.unwrap().map(|s| s.meta.last_log_id), Some(Some(log_id(5))));
    log.purge(log_id(5)).await.unwrap();
    assert!(sm.get_current_snapshot().await.unwrap().is_some(), "a snapshot up to the purged log is served");
    log.blocking_append(entries(8).split_off(5)).await.unwrap();
    log.purge(log_id(7)).await.unwrap();
    // The state is behind the purged log too (entries 6..8 are not applied): no snapshot can
    // reach it, none is served.
    assert!(sm.get_current_snapshot().await.unwrap().is_none(), "a snapshot behind the purged log is not served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_log_purged_past_every_snapshot_file_one_is_built_from_the_state() {
    // What a crash of an older version could leave: state and log past the snapshot file, the
    // log purged beyond it. openraft, told there is no snapshot, stopped the group the first
    // time a follower needed one.
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sm) = lagging_follower(dir.path()).await;
    let mut log = store.log_store(&ns()).unwrap();
    log.blocking_append(entries(8).split_off(5)).await.unwrap();
    apply(&mut sm, entries(8).split_off(5)).await;
    log.purge(log_id(7)).await.unwrap();
    let built = sm.get_current_snapshot().await.unwrap().expect("a snapshot of the state is built");
    assert_eq!(built.meta.last_log_id, Some(log_id(8)));
    assert_eq!(
        sm.get_current_snapshot().await.unwrap().map(|s| s.meta.last_log_id),
        Some(Some(log_id(8))),
        "the built snapshot is the current one"
    );
    // The same when the file is gone altogether.
    std::fs::remove_file(store.snapshots.current_path(&ns())).unwrap();
    let rebuilt = sm.get_current_snapshot().await.unwrap().expect("built again");
    assert_eq!(rebuilt.meta.last_log_id, Some(log_id(8)));
}

/// A snapshot built and saved while the current one is being read for a follower: the
/// reader must not pair the old file with the new record (the file then looks stale, the
/// reader answers "no snapshot", and openraft stops the group with a fatal storage error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_saved_while_the_current_one_is_read_does_not_hide_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sm) = lagging_follower(dir.path()).await;
    apply(&mut sm, entries(8).split_off(5)).await;
    let mut builder_sm = sm.clone();
    let (built_tx, built_rx) = oneshot::channel();
    let hook: AfterLoad = Box::new(move || {
        async move {
            let build = tokio::spawn(async move {
                let snapshot = builder_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
                let _ = built_tx.send(snapshot.meta.last_log_id);
            });
            // Long enough for the build to be saved if nothing holds it back; with the
            // reader holding the snapshot lock, it waits for the reader instead.
            let _ = tokio::time::timeout(Duration::from_millis(500), build).await;
        }
        .boxed()
    });
    *sm.after_snapshot_load.lock().unwrap() = Some(hook);
    let served = sm.get_current_snapshot().await.unwrap().map(|s| s.meta.last_log_id);
    assert_eq!(served, Some(Some(log_id(5))), "the snapshot read is served whole");
    assert_eq!(built_rx.await.unwrap(), Some(log_id(8)));
    let served = sm.get_current_snapshot().await.unwrap().map(|s| s.meta.last_log_id);
    assert_eq!(served, Some(Some(log_id(8))), "then the newer one");
    drop(store);
}

/// A leader's snapshot big enough to take several load jobs (3 x 4 MiB batches of 1 MiB values).
async fn big_snapshot(dir: &std::path::Path) -> (Arc<Store>, openraft::alias::SnapshotOf<TypeConfig, SnapshotData>) {
    let leader = Store::open(dir).unwrap();
    let mut sm = leader.state_machine(&ns(), Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm, sized_entries(11, 1 << 20)).await;
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    (leader, snap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_namespaces_commit_while_an_install_is_under_way() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (_leader, snap) = big_snapshot(leader_dir.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sm) = lagging_follower(dir.path()).await;

    // Pause the install after its first load job, until the test has written elsewhere.
    let (paused_tx, mut paused) = mpsc::channel::<()>(1);
    let (resume_tx, resume) = oneshot::channel::<()>();
    let resume = Arc::new(std::sync::Mutex::new(Some(resume)));
    let hook: crate::snapshot_install::BetweenJobs = Arc::new(move |jobs| {
        let (paused_tx, resume) = (paused_tx.clone(), resume.clone());
        async move {
            if jobs == 1 {
                let _ = paused_tx.send(()).await;
                let resume = resume.lock().unwrap().take();
                if let Some(resume) = resume {
                    let _ = resume.await;
                }
            }
            Ok(())
        }
        .boxed()
    });
    *sm.between_jobs.lock().unwrap() = Some(hook);
    let meta = snap.meta.clone();
    let install = tokio::spawn(async move { sm.install_snapshot(&meta, snap.snapshot).await });
    tokio::time::timeout(Duration::from_secs(60), paused.recv())
        .await
        .expect("the install stops between two writer jobs")
        .unwrap();

    // Mid-install: another namespace's log appends are durable, and its state applies.
    let other = Namespace::new("beta").unwrap();
    let mut log = store.log_store(&other).unwrap();
    tokio::time::timeout(Duration::from_secs(30), log.blocking_append(entries(3)))
        .await
        .expect("another namespace's append is not held by the install")
        .unwrap();
    let mut other_sm = store.state_machine(&other, Arc::new(KvStateMachine)).unwrap();
    tokio::time::timeout(Duration::from_secs(30), apply(&mut other_sm, entries(3)))
        .await
        .expect("another namespace's apply is not held by the install");
    // The namespace being installed holds a partial state: it is not readable meanwhile.
    assert!(matches!(store.kv_get(&ns(), b"k2"), Err(StoreError::Installing(_))));
    assert!(matches!(store.kv_keys(&ns(), b"", 10), Err(StoreError::Installing(_))));
    assert_eq!(store.kv_get(&other, b"k3").unwrap(), Some(vec![3; 100]));

    resume_tx.send(()).unwrap();
    install.await.unwrap().unwrap();
    assert_eq!(store.kv_get(&ns(), b"k11").unwrap(), Some(vec![11; 1 << 20]));
    assert_eq!(store.applied(&ns()).unwrap(), Some(log_id(11)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_half_way_through_loading_is_installed_again_at_start() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (leader, snap) = big_snapshot(leader_dir.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sm) = lagging_follower(dir.path()).await;
    let hook: crate::snapshot_install::BetweenJobs = Arc::new(|jobs| {
        async move {
            match jobs {
                2 => Err(StoreError::Redb("simulated crash half way through loading".into())),
                _ => Ok(()),
            }
        }
        .boxed()
    });
    *sm.between_jobs.lock().unwrap() = Some(hook);
    sm.install_snapshot(&snap.meta, snap.snapshot.clone()).await.expect_err("the hook stops the install");
    drop(sm);
    store.shutdown();
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    let mut log = store.log_store(&ns()).unwrap();
    let mut sm = store.state_machine(&ns(), Arc::new(KvStateMachine)).unwrap();
    StorageHelper::new(&mut log, &mut sm).with_id(node(2)).get_initial_state().await.unwrap();
    assert_eq!(store.applied(&ns()).unwrap(), Some(log_id(11)));
    for i in 2..=11 {
        let key = format!("k{i}");
        assert_eq!(
            store.kv_get(&ns(), key.as_bytes()).unwrap(),
            leader.kv_get(&ns(), key.as_bytes()).unwrap(),
            "{key}"
        );
    }
    assert_eq!(store.kv_keys(&ns(), b"", 100).unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_applied_entries_and_fall_behind_when_an_install_skips_some() {
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = Store::open(leader_dir.path()).unwrap();
    let mut leader_sm = leader.state_machine(&ns(), Arc::new(KvStateMachine)).unwrap();
    apply(&mut leader_sm, entries(50)).await;
    let snap = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (store, mut sm) = lagging_follower(dir.path()).await;
    let mut rx = store.subscribe_applied(&ns()).unwrap();
    assert_eq!(rx.start_index(), 5);
    // Entries 6 and 7 (normal ones) arrive with their replies; the membership entry is not one.
    apply(&mut sm, entries(7).split_off(5)).await;
    for index in [6, 7] {
        let applied = rx.try_recv().expect("an entry is waiting").expect("not ended");
        assert_eq!(applied.index, index);
        let EntryPayload::Normal(command) = &entries(7)[index as usize - 1].payload else { panic!("a normal entry") };
        assert_eq!(applied.command, command.payload);
        assert!(applied.reply.is_ok());
    }
    assert!(rx.try_recv().is_none());

    // The install skips 8..=50: the subscriber falls behind, one taken after it goes on.
    sm.install_snapshot(&snap.meta, snap.snapshot.clone()).await.unwrap();
    assert_eq!(rx.try_recv(), Some(Err(crate::SubscriptionEnded::FellBehind { next_index: 8 })));
    let mut after = store.subscribe_applied(&ns()).unwrap();
    assert_eq!(after.start_index(), 50);
    let next = sized_entries(51, 10).split_off(50);
    apply(&mut sm, next).await;
    assert_eq!(after.try_recv().map(|r| r.map(|a| a.index)), Some(Ok(51)));

    store.shutdown();
    assert_eq!(after.try_recv(), Some(Err(crate::SubscriptionEnded::Closed)));
}
