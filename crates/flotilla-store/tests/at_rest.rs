//! Encryption at rest: nothing readable on disk, reopening with and without the key, key
//! rotation, tampering, and sealing a plaintext store in place.

mod common;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use flotilla_core::{KvStateMachine, Namespace};
use flotilla_store::{AtRestCipher, AtRestKey, LogKind, Store, StoreError, StoreOptions, DB_FILE, WAL_DIR};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use redb::{ReadableDatabase, TableDefinition};

/// A client value that must never appear on disk in the clear.
const SECRET: &[u8] = b"SECRET-VALUE-7f3a9c1e-do-not-leak";

fn key(n: u8) -> AtRestKey {
    AtRestKey { id: [n; 8], key: [n ^ 0x5a; 32] }
}

fn cipher(keys: &[AtRestKey], current: u8) -> Arc<AtRestCipher> {
    Arc::new(AtRestCipher::new(keys.iter().cloned(), [current; 8]).expect("valid key list"))
}

fn open_with(dir: &Path, at_rest: Option<Arc<AtRestCipher>>) -> Result<Arc<Store>, StoreError> {
    open_log(LogKind::Tables, dir, at_rest)
}

/// [`open_with`], the Raft logs kept as `log` says (a write-ahead log in 64 KiB segments).
fn open_log(log: LogKind, dir: &Path, at_rest: Option<Arc<AtRestCipher>>) -> Result<Arc<Store>, StoreError> {
    Store::open_with(dir, StoreOptions { at_rest, log, wal_segment_bytes: Some(64 * 1024), ..StoreOptions::default() })
}

fn secret_value(i: u64) -> Vec<u8> {
    let mut v = SECRET.to_vec();
    v.extend_from_slice(&i.to_be_bytes());
    v
}

/// Log entries 1..=n, each carrying the secret, applied with request ids (so dedup records
/// exist), the vote saved, and a snapshot built (so a snapshot file exists).
async fn write_everything(store: &Arc<Store>, ns: &Namespace, n: u64) {
    let mut log = store.log_store(ns).unwrap();
    let mut sm = store.state_machine(ns, Arc::new(KvStateMachine)).unwrap();
    log.save_vote(&vote(1)).await.unwrap();
    let mut entries = vec![membership(1, 1, &[1])];
    for i in 2..=n {
        let key = format!("key/{i:05}").into_bytes();
        entries.push(normal(1, i, rid(9, i), set(&key, &secret_value(i))));
    }
    append(&mut log, entries.clone()).await.unwrap();
    apply(&mut sm, entries).await.unwrap();
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
}

/// Everything [`write_everything`] wrote reads back.
async fn check_everything(store: &Arc<Store>, ns: &Namespace, n: u64) {
    let mut log = store.log_store(ns).unwrap();
    let entries = log.try_get_log_entries(1..=n).await.unwrap();
    assert_eq!(entries.len() as u64, n);
    assert_eq!(
        entries[n as usize - 1],
        normal(1, n, rid(9, n), set(format!("key/{n:05}").as_bytes(), &secret_value(n)))
    );
    assert_eq!(log.read_vote().await.unwrap(), Some(vote(1)));
    for i in 2..=n {
        assert_eq!(store.kv_get(ns, format!("key/{i:05}").as_bytes()).unwrap(), Some(secret_value(i)), "key {i}");
    }
    assert_eq!(store.kv_keys(ns, b"key/", usize::MAX).unwrap().len() as u64, n - 1);
    // At least n: a test may have applied more since (see the dedup check below).
    assert!(store.applied(ns).unwrap() >= Some(log_id(1, n)));
    let mut sm = store.state_machine(ns, Arc::new(KvStateMachine)).unwrap();
    let snap = sm.get_current_snapshot().await.unwrap().expect("a current snapshot");
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, n)));
    // Dedup records read back: a retried write is answered, not applied again.
    apply(&mut sm, vec![normal(1, n + 1, rid(9, 2), set(b"key/00002", b"overwritten"))]).await.unwrap();
    assert_eq!(store.kv_get(ns, b"key/00002").unwrap(), Some(secret_value(2)));
}

fn close(store: Arc<Store>) {
    store.shutdown();
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_data_dir_holds_no_client_value_in_the_clear() {
    a_sealed_data_dir_holds_no_client_value_in_the_clear_case(LogKind::Tables).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_write_ahead_log_holds_no_client_value_in_the_clear() {
    a_sealed_data_dir_holds_no_client_value_in_the_clear_case(LogKind::Wal).await;
}

async fn a_sealed_data_dir_holds_no_client_value_in_the_clear_case(log: LogKind) {
    let a = ns("alpha");
    let plain_dir = tempfile::tempdir().unwrap();
    let store = open_log(log, plain_dir.path(), None).unwrap();
    write_everything(&store, &a, 20).await;
    close(store);
    // The control: without a cipher the value is in the redb file and in the snapshot file.
    let found = files_containing(plain_dir.path(), SECRET);
    assert!(found.iter().any(|p| p.ends_with(DB_FILE)), "{found:?}");
    assert!(found.iter().any(|p| p.ends_with("current.snap")), "{found:?}");
    if log == LogKind::Wal {
        assert!(found.iter().any(|p| p.parent().is_some_and(|d| d.ends_with(WAL_DIR))), "{found:?}");
    }

    let sealed_dir = tempfile::tempdir().unwrap();
    let store = open_log(log, sealed_dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    write_everything(&store, &a, 20).await;
    assert_eq!(store.at_rest_key_ids_in_use().unwrap(), vec![[1; 8]]);
    close(store);
    assert_eq!(files_containing(sealed_dir.path(), SECRET), Vec::<PathBuf>::new());
    assert_eq!(files_containing(sealed_dir.path(), &SECRET[..12]), Vec::<PathBuf>::new());
    // Keys stay in the clear (ordered scans need them); that is documented, and checked here so
    // the scan above is known to look at the right bytes.
    assert!(!files_containing(sealed_dir.path(), b"key/00007").is_empty());
    // The snapshot file is sealed in segments (layout 2, 1 MiB each), each naming its key in
    // the clear.
    let snap = std::fs::read(sealed_dir.path().join("snapshots/alpha/current.snap")).unwrap();
    assert_eq!(&snap[..9], b"FLOTSEAL\x02");
    assert_eq!(&snap[9..13], &(1u32 << 20).to_le_bytes());
    assert_eq!(&snap[14..22], &[1; 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_store_reads_back_after_reopening_with_its_key() {
    let a = ns("alpha");
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    write_everything(&store, &a, 50).await;
    close(store);

    // A new cipher built from the same key material, as after a restart.
    let store = open_with(dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    check_everything(&store, &a, 50).await;
    let mut log = store.log_store(&a).unwrap();
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 50)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_without_the_key_or_with_a_wrong_key_is_refused() {
    let a = ns("alpha");
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    write_everything(&store, &a, 5).await;
    close(store);

    let err = open_with(dir.path(), None).unwrap_err();
    assert_eq!(err, StoreError::AtRestRequired { key_ids: vec![[1; 8]] });
    let msg = err.to_string();
    assert!(msg.contains("encrypted at rest") && msg.contains("start with the cluster key"), "{msg}");
    assert!(msg.contains("0101010101010101"), "{msg}");
    assert_eq!(err.to_io().kind(), io::ErrorKind::PermissionDenied);

    let err = open_with(dir.path(), Some(cipher(&[key(2)], 2))).unwrap_err();
    assert_eq!(err, StoreError::AtRestKeyMissing { id: [1; 8] });

    let wrong = AtRestKey { id: [1; 8], key: [0xee; 32] };
    let err = open_with(dir.path(), Some(cipher(&[wrong], 1))).unwrap_err();
    assert_eq!(err, StoreError::AtRestWrongKey { id: [1; 8] });
    assert!(err.to_string().contains("not the key"), "{err}");

    // The refused opens changed nothing and released the file.
    let store = open_with(dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    check_everything(&store, &a, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reseals_everything_so_the_old_key_can_be_retired() {
    rotation_reseals_everything_so_the_old_key_can_be_retired_case(LogKind::Tables).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reseals_the_write_ahead_log_so_the_old_key_can_be_retired() {
    rotation_reseals_everything_so_the_old_key_can_be_retired_case(LogKind::Wal).await;
}

async fn rotation_reseals_everything_so_the_old_key_can_be_retired_case(log: LogKind) {
    let (a, b) = (ns("alpha"), ns("beta"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_log(log, dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    write_everything(&store, &a, 1200).await;
    close(store);

    // B becomes current; A is still needed for what it sealed.
    let store = open_log(log, dir.path(), Some(cipher(&[key(1), key(2)], 2))).unwrap();
    assert_eq!(store.at_rest_key_ids_in_use().unwrap(), vec![[1; 8], [2; 8]]);
    write_everything(&store, &b, 10).await;
    close(store);
    assert_eq!(
        open_log(log, dir.path(), Some(cipher(&[key(2)], 2))).unwrap_err(),
        StoreError::AtRestKeyMissing { id: [1; 8] }
    );

    let store = open_log(log, dir.path(), Some(cipher(&[key(1), key(2)], 2))).unwrap();
    // Writes keep flowing while the reseal runs.
    let writer = {
        let store = store.clone();
        let a = a.clone();
        tokio::spawn(async move {
            let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
            for i in 0..50u64 {
                let key = format!("key/{:05}", 2 + i * 20).into_bytes();
                apply(&mut sm, vec![normal(1, 1201 + i, None, set(&key, &secret_value(2 + i * 20)))]).await.unwrap();
            }
        })
    };
    let report = store.reseal().await.unwrap();
    writer.await.unwrap();
    assert_eq!(report.current_key_id, [2; 8]);
    assert_eq!(report.key_ids_in_use, vec![[2; 8]]);
    assert_eq!(report.retired_key_ids, vec![[1; 8]]);
    assert_eq!(report.snapshots_resealed, 1, "alpha's snapshot was under A, beta's under B");
    assert!(report.records_resealed > 2000, "{report:?}");
    assert!(report.records_checked >= report.records_resealed, "{report:?}");
    assert_eq!(store.at_rest_key_ids_in_use().unwrap(), vec![[2; 8]]);
    let again = store.reseal().await.unwrap();
    assert_eq!((again.records_resealed, again.snapshots_resealed), (0, 0), "{again:?}");
    close(store);

    let store = open_log(log, dir.path(), Some(cipher(&[key(2)], 2))).unwrap();
    check_everything(&store, &a, 1200).await;
    check_everything(&store, &b, 10).await;
}

/// Rewrite one stored value of table `name` directly in the redb file.
fn edit_raw(dir: &Path, name: &str, key: &[u8], edit: impl FnOnce(&mut Vec<u8>)) {
    let db = redb::Database::create(dir.join(DB_FILE)).unwrap();
    let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
    let mut raw = {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(def).unwrap();
        table.get(key).unwrap().unwrap().value().to_vec()
    };
    edit(&mut raw);
    let txn = db.begin_write().unwrap();
    txn.open_table(def).unwrap().insert(key, raw.as_slice()).unwrap();
    txn.commit().unwrap();
}

fn read_raw(dir: &Path, name: &str, key: &[u8]) -> Vec<u8> {
    let db = redb::Database::create(dir.join(DB_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(name)).unwrap();
    table.get(key).unwrap().unwrap().value().to_vec()
}

fn is_at_rest_corrupt(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::InvalidData && err.to_string().contains("failed authentication")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_ciphertext_is_an_error_not_a_panic() {
    let a = ns("alpha");
    let dir = tempfile::tempdir().unwrap();
    let sealing = || Some(cipher(&[key(1)], 1));
    let store = open_with(dir.path(), sealing()).unwrap();
    write_everything(&store, &a, 10).await;
    let mut counter = store.state_machine(&ns("count"), Arc::new(CountingSm)).unwrap();
    apply(&mut counter, vec![normal(1, 1, None, b"inc".to_vec())]).await.unwrap();
    close(store);

    // One flipped bit in a value; a value moved under another key.
    edit_raw(dir.path(), "kv/alpha", b"\x01key/00003", |v| {
        let last = v.len() - 1;
        v[last] ^= 0x01;
    });
    let moved = read_raw(dir.path(), "kv/alpha", b"\x01key/00005");
    edit_raw(dir.path(), "kv/alpha", b"\x01key/00004", |v| *v = moved);
    edit_raw(dir.path(), "kv/count", b"n", |v| v[30] ^= 0x80);
    // A flipped bit in the sealed snapshot file.
    let snap_path = dir.path().join("snapshots/alpha/current.snap");
    let mut snap = std::fs::read(&snap_path).unwrap();
    let mid = snap.len() / 2;
    snap[mid] ^= 0x01;
    std::fs::write(&snap_path, &snap).unwrap();

    let store = open_with(dir.path(), sealing()).unwrap();
    for k in [&b"key/00003"[..], b"key/00004"] {
        let err = store.kv_get(&a, k).unwrap_err();
        assert!(matches!(&err, StoreError::AtRestCorrupt(m) if m.contains("alpha")), "{err:?}");
    }
    assert_eq!(store.kv_get(&a, b"key/00005").unwrap(), Some(secret_value(5)));

    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    let err = sm.get_current_snapshot().await.unwrap_err();
    assert!(is_at_rest_corrupt(&err) && err.to_string().contains("current.snap"), "{err}");
    // Building a snapshot reads every value: refused, not a snapshot of damaged data.
    assert!(is_at_rest_corrupt(&sm.get_snapshot_builder().await.build_snapshot().await.unwrap_err()));

    // A command reading a damaged value fails as such, and applies nothing.
    let mut counter = store.state_machine(&ns("count"), Arc::new(CountingSm)).unwrap();
    let err = apply(&mut counter, vec![normal(1, 2, None, b"inc".to_vec())]).await.unwrap_err();
    assert!(is_at_rest_corrupt(&err), "{err}");
    assert_eq!(store.applied(&ns("count")).unwrap(), Some(log_id(1, 1)));

    close(store);

    // A log entry: flipped, and a plaintext snapshot file put in place of the sealed one.
    {
        let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
        let def: TableDefinition<u64, &[u8]> = TableDefinition::new("log/alpha");
        let mut raw = db.begin_read().unwrap().open_table(def).unwrap().get(6).unwrap().unwrap().value().to_vec();
        raw[25] ^= 0x04;
        let txn = db.begin_write().unwrap();
        txn.open_table(def).unwrap().insert(6, raw.as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = open_with(plain_dir.path(), None).unwrap();
    write_everything(&plain, &a, 10).await;
    close(plain);
    std::fs::copy(plain_dir.path().join("snapshots/alpha/current.snap"), &snap_path).unwrap();

    let store = open_with(dir.path(), sealing()).unwrap();
    let mut log = store.log_store(&a).unwrap();
    let err = log.try_get_log_entries(1..=10).await.unwrap_err();
    assert!(is_at_rest_corrupt(&err) && err.to_string().contains("index 6"), "{err}");
    assert_eq!(log.try_get_log_entries(7..=10).await.unwrap().len(), 4);
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    let err = sm.get_current_snapshot().await.unwrap_err();
    assert!(is_at_rest_corrupt(&err) && err.to_string().contains("not sealed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_being_received_is_sealed_on_disk_and_installs() {
    let a = ns("alpha");
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = open_with(leader_dir.path(), None).unwrap();
    write_everything(&leader, &a, 20).await;
    let snap = leader.state_machine(&a, Arc::new(KvStateMachine)).unwrap().get_current_snapshot().await.unwrap();
    let snap = snap.expect("a current snapshot");
    let mut plain = Vec::new();
    snap.snapshot.reader().read_to_end(&mut plain).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    let mut sink = store.snapshot_sink(&a).unwrap();
    for chunk in plain.chunks(100) {
        sink.append(chunk).unwrap();
    }
    let received = sink.finish().unwrap();
    let incoming = dir.path().join("snapshots/.incoming");
    let files: Vec<PathBuf> = std::fs::read_dir(&incoming).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(&std::fs::read(&files[0]).unwrap()[..9], b"FLOTSEAL\x02");
    assert_eq!(files_containing(dir.path(), SECRET), Vec::<PathBuf>::new(), "nothing in the clear");

    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    sm.install_snapshot(&snap.meta, received).await.unwrap();
    assert_eq!(store.kv_get(&a, b"key/00007").unwrap(), Some(secret_value(7)));
    assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 0, "the received file is gone once installed");
    assert_eq!(files_containing(dir.path(), SECRET), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_file_sealed_whole_by_an_older_version_is_converted_when_the_store_opens() {
    let a = ns("alpha");
    let dir = tempfile::tempdir().unwrap();
    let c = cipher(&[key(1)], 1);
    let store = open_with(dir.path(), Some(c.clone())).unwrap();
    write_everything(&store, &a, 20).await;
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    let snap = sm.get_current_snapshot().await.unwrap().expect("a current snapshot");
    let mut plain = Vec::new();
    snap.snapshot.reader().read_to_end(&mut plain).unwrap();
    drop(sm);
    close(store);

    // What the version before segments wrote: the magic, then the whole snapshot sealed as one
    // record bound to the namespace.
    let path = dir.path().join("snapshots/alpha/current.snap");
    let mut legacy = b"FLOTSEAL".to_vec();
    legacy.extend(c.seal(b"snapshot/alpha\0", &plain).unwrap());
    std::fs::write(&path, &legacy).unwrap();

    // Still read: converted to segments when the store opens, then served as before.
    let store = open_with(dir.path(), Some(c.clone())).unwrap();
    assert_eq!(&std::fs::read(&path).unwrap()[..9], b"FLOTSEAL\x02");
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    let again = sm.get_current_snapshot().await.unwrap().expect("the converted snapshot is current");
    assert_eq!(again.meta, snap.meta);
    let mut read = Vec::new();
    again.snapshot.reader().read_to_end(&mut read).unwrap();
    assert_eq!(read, plain);
    drop(sm);
    close(store);

    // A damaged file in that layout is not converted, and reported as damaged sealed data.
    legacy[40] ^= 0x01;
    std::fs::write(&path, &legacy).unwrap();
    let store = open_with(dir.path(), Some(c)).unwrap();
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    let err = sm.get_current_snapshot().await.unwrap_err();
    assert!(is_at_rest_corrupt(&err) && err.to_string().contains("current.snap"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_store_opened_with_a_key_is_sealed_in_place() {
    a_plaintext_store_opened_with_a_key_is_sealed_in_place_case(LogKind::Tables).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_write_ahead_log_store_opened_with_a_key_is_sealed_in_place() {
    a_plaintext_store_opened_with_a_key_is_sealed_in_place_case(LogKind::Wal).await;
}

async fn a_plaintext_store_opened_with_a_key_is_sealed_in_place_case(log: LogKind) {
    let a = ns("alpha");
    let dir = tempfile::tempdir().unwrap();
    let store = open_log(log, dir.path(), None).unwrap();
    assert!(matches!(store.reseal().await, Err(StoreError::Invalid(_))));
    assert_eq!(store.at_rest_key_ids_in_use().unwrap(), Vec::<[u8; 8]>::new());
    write_everything(&store, &a, 1100).await;
    close(store);

    let store = open_log(log, dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    assert_eq!(store.at_rest_key_ids_in_use().unwrap(), vec![[1; 8]]);
    let report = store.reseal().await.unwrap();
    assert_eq!((report.records_resealed, report.snapshots_resealed), (0, 0), "sealed while opening: {report:?}");
    check_everything(&store, &a, 1100).await;
    close(store);
    // The file is compacted after sealing, so the pages that held plaintext are gone too.
    assert_eq!(files_containing(dir.path(), SECRET), Vec::<PathBuf>::new());

    // From now on the key is required.
    assert!(matches!(open_log(log, dir.path(), None), Err(StoreError::AtRestRequired { .. })));
    let store = open_log(log, dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    check_everything(&store, &a, 1100).await;
}

/// A key rotation reseals a write-ahead log's entries while its leader keeps truncating and
/// appending (a new term each round): every entry ends as the last write left it, readable with
/// the new key alone. (That a resealed copy never brings back a truncated entry, whatever the
/// timing, is `wal_sealing`'s unit test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_of_a_write_ahead_log_keeps_every_entry_while_the_leader_truncates() {
    let a = ns("alpha");
    let dir = tempfile::tempdir().unwrap();
    let entry = |term: u64, i: u64| normal(term, i, None, set(&i.to_be_bytes(), &secret_value(i)));
    let store = open_log(LogKind::Wal, dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    let mut log = store.log_store(&a).unwrap();
    append(&mut log, (1..=3000).map(|i| entry(1, i)).collect()).await.unwrap();
    close(store);
    drop(log);

    let store = open_log(LogKind::Wal, dir.path(), Some(cipher(&[key(1), key(2)], 2))).unwrap();
    let churn = {
        let mut log = store.log_store(&a).unwrap();
        tokio::spawn(async move {
            for round in 0..30u64 {
                let cut = 2995 - round * 5;
                log.truncate_after(Some(log_id(1, cut))).await.unwrap();
                append(&mut log, (cut + 1..=cut + 3).map(|i| entry(2 + round, i)).collect()).await.unwrap();
            }
        })
    };
    let report = store.reseal().await.unwrap();
    churn.await.unwrap();
    assert_eq!(report.key_ids_in_use, vec![[2; 8]]);
    close(store);

    let store = open_log(LogKind::Wal, dir.path(), Some(cipher(&[key(2)], 2))).unwrap();
    let mut log = store.log_store(&a).unwrap();
    let expected: Vec<_> = (1..=2850).map(|i| entry(1, i)).chain((2851..=2853).map(|i| entry(31, i))).collect();
    assert_eq!(log.try_get_log_entries(0..10_000).await.unwrap(), expected);
}

/// A sealed store with log tables opened for the write-ahead log: its sealed entries move as
/// they are (their sealing context names the namespace and index, not the table) and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_table_store_is_converted_to_the_write_ahead_log() {
    let a = ns("alpha");
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    write_everything(&store, &a, 50).await;
    close(store);
    let store = open_log(LogKind::Wal, dir.path(), Some(cipher(&[key(1)], 1))).unwrap();
    check_everything(&store, &a, 50).await;
    close(store);
    assert!(dir.path().join(WAL_DIR).is_dir());
    assert_eq!(files_containing(dir.path(), SECRET), Vec::<PathBuf>::new());
    assert!(matches!(open_log(LogKind::Wal, dir.path(), None), Err(StoreError::AtRestRequired { .. })));
}
