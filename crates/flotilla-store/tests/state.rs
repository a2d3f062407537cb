//! State machine storage: dedup, refusals, snapshots, isolation and hostile keys.

mod common;

use std::io::{self, Read};
use std::ops::Bound;
use std::sync::Arc;

use common::*;
use flotilla_core::kv::encode_ops;
use flotilla_core::{KvOp, KvStateMachine, Namespace, Scan, StateView};
use flotilla_store::{SnapshotData, StateMachineStore, Store};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

/// Every key and value of a namespace running the KV state machine, as of now.
fn all_keys(store: &Store, ns: &Namespace) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .kv_keys(ns, b"", usize::MAX)
        .unwrap()
        .into_iter()
        .map(|k| {
            let v = store.kv_get(ns, &k).unwrap().expect("listed key has a value");
            (k, v)
        })
        .collect()
}

/// Every row of the namespace's state machine table, raw (whatever the state machine).
fn raw_rows(store: &Store, ns: &Namespace) -> Vec<(Vec<u8>, Vec<u8>)> {
    let view = store.view(ns).unwrap();
    let mut rows = Vec::new();
    view.scan(Bound::Unbounded, Bound::Unbounded, &mut |k, v| {
        rows.push((k.to_vec(), v.to_vec()));
        Ok(Scan::Continue)
    })
    .unwrap();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = ns("alpha");
    let mut sm = store.state_machine(&a, Arc::new(CountingSm)).unwrap();

    apply(&mut sm, vec![normal(1, 1, rid(7, 1), b"inc".to_vec())]).await.unwrap();
    assert_eq!(count(&store, &a), 1);
    // A retry in a later batch.
    apply(&mut sm, vec![normal(1, 2, rid(7, 1), b"inc".to_vec())]).await.unwrap();
    assert_eq!(count(&store, &a), 1);
    // Twice in one batch, next to a new id and an id-less command.
    apply(
        &mut sm,
        vec![
            normal(1, 3, rid(7, 2), b"inc".to_vec()),
            normal(1, 4, rid(7, 2), b"inc".to_vec()),
            normal(1, 5, None, b"inc".to_vec()),
            normal(1, 6, rid(7, 1), b"inc".to_vec()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(count(&store, &a), 3);
    assert_eq!(store.applied(&a).unwrap(), Some(log_id(1, 6)));

    // Dedup survives a restart.
    drop(sm);
    store.shutdown();
    drop(store);
    let store = open(dir.path());
    let mut sm = store.state_machine(&a, Arc::new(CountingSm)).unwrap();
    apply(&mut sm, vec![normal(1, 7, rid(7, 2), b"inc".to_vec())]).await.unwrap();
    assert_eq!(count(&store, &a), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = ns("alpha");
    let mut sm = store.state_machine(&a, Arc::new(CountingSm)).unwrap();
    apply(&mut sm, vec![normal(1, 1, None, b"inc".to_vec())]).await.unwrap();
    let before = raw_rows(&store, &a);

    // The refusing command writes and deletes before refusing; none of it may stay, while the
    // commands around it in the same batch do apply.
    apply(
        &mut sm,
        vec![
            normal(1, 2, None, b"refuse".to_vec()),
            normal(1, 3, None, b"inc".to_vec()),
            normal(1, 4, rid(9, 9), b"refuse".to_vec()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(store.view(&a).unwrap().get(b"scratch").unwrap(), None);
    assert_eq!(count(&store, &a), 2);
    assert_eq!(store.applied(&a).unwrap(), Some(log_id(1, 4)), "a refusal is still applied");
    assert_ne!(raw_rows(&store, &a), before);

    // A batch whose state machine fails is all-or-nothing: nothing of it stays.
    let before = raw_rows(&store, &a);
    let err = apply(&mut sm, vec![normal(1, 5, None, b"inc".to_vec()), normal(1, 6, None, b"fail".to_vec())])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("failing on purpose"), "{err}");
    assert_eq!(raw_rows(&store, &a), before);
    assert_eq!(store.applied(&a).unwrap(), Some(log_id(1, 4)));
}

/// Fill a namespace through the KV state machine, with dedup ids and a membership.
async fn fill(sm: &mut StateMachineStore) {
    let mut entries = vec![membership(1, 1, &[1, 2, 3])];
    for i in 0..200u64 {
        let key = format!("key/{i:04}").into_bytes();
        entries.push(normal(1, i + 2, rid(42, i), set(&key, &i.to_be_bytes())));
    }
    entries.push(normal(
        2,
        202,
        None,
        encode_ops(&[KvOp::Delete { key: b"key/0000".to_vec() }, KvOp::Set { key: vec![], value: b"empty".to_vec() }]),
    ));
    apply(sm, entries).await.unwrap();
}

/// The bytes of a snapshot.
fn bytes(data: &SnapshotData) -> Vec<u8> {
    let mut out = Vec::new();
    data.reader().read_to_end(&mut out).unwrap();
    out
}

/// `bytes` as a snapshot received by `store` for `ns`.
fn received(store: &Store, ns: &Namespace, bytes: &[u8]) -> SnapshotData {
    let mut sink = store.snapshot_sink(ns).unwrap();
    sink.append(bytes).unwrap();
    sink.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_installs_into_a_fresh_store() {
    let a = ns("alpha");
    let dir1 = tempfile::tempdir().unwrap();
    let store1 = open(dir1.path());
    let mut sm1 = store1.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    assert!(sm1.get_current_snapshot().await.unwrap().is_none());
    fill(&mut sm1).await;

    let mut builder = sm1.get_snapshot_builder().await;
    // Writes after the builder was taken are not in the snapshot (it reads a fixed view).
    apply(&mut sm1, vec![normal(2, 203, None, set(b"late", b"x"))]).await.unwrap();
    let snap = builder.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(2, 202)));
    let current = sm1.get_current_snapshot().await.unwrap().expect("built snapshot is current");
    assert_eq!(current.meta, snap.meta);
    assert_eq!(bytes(&current.snapshot), bytes(&snap.snapshot));

    let dir2 = tempfile::tempdir().unwrap();
    let store2 = open(dir2.path());
    let mut sm2 = store2.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm2, vec![normal(1, 1, None, set(b"stale", b"gone after install"))]).await.unwrap();
    sm2.install_snapshot(&snap.meta, snap.snapshot.clone()).await.unwrap();

    let mut expected = all_keys(&store1, &a);
    expected.retain(|(k, _)| k != b"late");
    assert_eq!(all_keys(&store2, &a), expected);
    assert_eq!(store2.kv_get(&a, b"").unwrap(), Some(b"empty".to_vec()));
    assert_eq!(store2.kv_get(&a, b"stale").unwrap(), None);
    assert_eq!(store2.kv_keys(&a, b"key/00", 5).unwrap().len(), 5);
    assert_eq!(store2.kv_keys(&a, b"key/01", 1000).unwrap(), store1.kv_keys(&a, b"key/01", 1000).unwrap());
    let (applied, membership) = sm2.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(2, 202)));
    assert_eq!(membership, snap.meta.last_membership);
    assert_eq!(sm2.get_current_snapshot().await.unwrap().map(|s| s.meta), Some(snap.meta.clone()));

    // Dedup records travel with the snapshot: a retried write is not applied again.
    apply(&mut sm2, vec![normal(2, 203, rid(42, 5), set(b"key/0005", b"overwritten"))]).await.unwrap();
    assert_eq!(store2.kv_get(&a, b"key/0005").unwrap(), Some(5u64.to_be_bytes().to_vec()));

    // The installed snapshot is still current after a restart.
    drop(sm2);
    store2.shutdown();
    drop(store2);
    let store2 = open(dir2.path());
    let mut sm2 = store2.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    assert_eq!(sm2.get_current_snapshot().await.unwrap().map(|s| s.meta), Some(snap.meta));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_snapshots_are_rejected_and_change_nothing() {
    let a = ns("alpha");
    let dir1 = tempfile::tempdir().unwrap();
    let store1 = open(dir1.path());
    let mut sm1 = store1.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    fill(&mut sm1).await;
    let snap = sm1.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let good: Vec<u8> = bytes(&snap.snapshot);

    let dir2 = tempfile::tempdir().unwrap();
    let store2 = open(dir2.path());
    let mut sm2 = store2.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm2, vec![normal(1, 1, None, set(b"mine", b"1"))]).await.unwrap();
    let before = all_keys(&store2, &a);
    let before_state = sm2.applied_state().await.unwrap();

    let mut bad_inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for pos in [0, 9, 13, 20, good.len() / 2, good.len() - 5, good.len() - 1] {
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        bad_inputs.push((format!("flip at {pos}"), bad));
    }
    for len in [0, 3, 27, good.len() / 3, good.len() - 1] {
        bad_inputs.push((format!("truncated to {len}"), good[..len].to_vec()));
    }
    let mut longer = good.clone();
    longer.extend_from_slice(b"tail");
    bad_inputs.push(("trailing bytes".into(), longer));

    for (what, bad) in bad_inputs {
        let err = sm2.install_snapshot(&snap.meta, received(&store2, &a, &bad)).await.expect_err(&what);
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
        assert_eq!(all_keys(&store2, &a), before, "{what}");
        assert_eq!(sm2.applied_state().await.unwrap(), before_state, "{what}");
    }
    assert!(sm2.get_current_snapshot().await.unwrap().is_none());

    // Metadata that does not match the bytes is refused too.
    let mut other_meta = snap.meta.clone();
    other_meta.last_log_id = Some(log_id(9, 999));
    let err = sm2.install_snapshot(&other_meta, received(&store2, &a, &good)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(all_keys(&store2, &a), before);

    // A damaged current snapshot file is reported, not trusted and not a panic.
    let path = dir1.path().join("snapshots").join("alpha").join("current.snap");
    let mut on_disk = std::fs::read(&path).unwrap();
    let mid = on_disk.len() / 2;
    on_disk[mid] ^= 0xff;
    std::fs::write(&path, &on_disk).unwrap();
    let err = sm1.get_current_snapshot().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("current.snap"), "{err}");

    // No refused snapshot left a file behind.
    let left: Vec<_> = std::fs::read_dir(dir2.path().join("snapshots/.incoming")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    let alpha = dir2.path().join("snapshots/alpha");
    let left: Vec<_> = std::fs::read_dir(&alpha).map(|d| d.collect()).unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // The good bytes still install.
    sm2.install_snapshot(&snap.meta, received(&store2, &a, &good)).await.unwrap();
    assert_eq!(all_keys(&store2, &a), all_keys(&store1, &a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_snapshot_files_left_by_a_crash_are_removed_when_the_store_opens() {
    let a = ns("alpha");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    fill(&mut sm).await;
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    // A snapshot being received when the process died.
    let mut sink = store.snapshot_sink(&a).unwrap();
    sink.append(b"partial").unwrap();
    std::mem::forget(sink);
    drop(sm);
    store.shutdown();
    drop(store);
    // A save that died before its rename.
    let half_saved = dir.path().join("snapshots/alpha/current.snap.99.tmp");
    std::fs::write(&half_saved, b"half").unwrap();
    let incoming = dir.path().join("snapshots/.incoming");
    assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 1);

    let store = open(dir.path());
    assert!(!half_saved.exists());
    assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 0);
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    let current = sm.get_current_snapshot().await.unwrap().expect("the current snapshot is kept");
    assert_eq!(bytes(&current.snapshot), bytes(&snap.snapshot));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (a, b) = (ns("alpha"), ns("beta"));
    let mut sm_a = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    let mut sm_b = store.state_machine(&b, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm_a, vec![normal(1, 1, rid(1, 1), set(b"same", b"from a"))]).await.unwrap();
    apply(&mut sm_b, vec![normal(1, 1, rid(1, 1), set(b"same", b"from b"))]).await.unwrap();
    assert_eq!(store.kv_get(&a, b"same").unwrap(), Some(b"from a".to_vec()));
    assert_eq!(store.kv_get(&b, b"same").unwrap(), Some(b"from b".to_vec()), "dedup ids are per namespace");
    apply(&mut sm_b, vec![normal(1, 2, None, encode_ops(&[KvOp::Delete { key: b"same".to_vec() }]))]).await.unwrap();
    assert_eq!(store.kv_get(&a, b"same").unwrap(), Some(b"from a".to_vec()));
    assert_eq!(store.kv_get(&b, b"same").unwrap(), None);
    assert_eq!(store.kv_get(&ns("gamma"), b"same").unwrap(), None);
    assert_eq!(store.applied(&a).unwrap(), Some(log_id(1, 1)));
    assert_eq!(store.applied(&b).unwrap(), Some(log_id(1, 2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_are_stored_opaquely() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = ns("alpha");
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    let big = vec![b'k'; 1024 * 1024];
    let keys: Vec<Vec<u8>> = vec![
        b"../x".to_vec(),
        b"../../etc/passwd".to_vec(),
        Vec::new(),
        b"\0".to_vec(),
        b"a\0b".to_vec(),
        b"log/alpha".to_vec(),
        b"meta/alpha".to_vec(),
        b"raft.vote".to_vec(),
        big.clone(),
    ];
    let entries = keys.iter().enumerate().map(|(i, k)| normal(1, i as u64 + 1, None, set(k, &[i as u8]))).collect();
    apply(&mut sm, entries).await.unwrap();

    for (i, k) in keys.iter().enumerate() {
        assert_eq!(store.kv_get(&a, k).unwrap(), Some(vec![i as u8]), "key {i}");
    }
    let mut listed = store.kv_keys(&a, b"", usize::MAX).unwrap();
    listed.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(store.kv_keys(&a, b"../", 10).unwrap().len(), 2);
    assert_eq!(store.kv_keys(&a, b"a\0", 10).unwrap(), vec![b"a\0b".to_vec()]);
    assert!(store.kv_keys(&a, b"", 0).unwrap().is_empty());

    // None of it reached the file system or Raft state.
    let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("flotilla.redb"), std::ffi::OsString::from("wal")]);
    let mut wal: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    wal.sort();
    assert!(wal.iter().all(|n| n == "salt" || n.ends_with(".wal")), "only the log's own files: {wal:?}");
    assert!(store.has_state(&a).unwrap());
    let mut log = store.log_store(&a).unwrap();
    assert_eq!(openraft::storage::RaftLogReader::read_vote(&mut log).await.unwrap(), None);

    // The big key survives a snapshot round trip.
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = open(dir2.path());
    let mut sm2 = store2.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    sm2.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_eq!(store2.kv_get(&a, &big).unwrap(), Some(vec![8]));
    assert_eq!(all_keys(&store2, &a), all_keys(&store, &a));
}
