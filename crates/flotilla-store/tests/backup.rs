//! Online backups: a backup fixed while writes go on holds exactly the state at its index (and
//! installs as a snapshot, so a restore can use it); any damage to the file is detected; a
//! backup of a store encrypted at rest holds plaintext.

mod common;

use std::sync::Arc;

use common::*;
use flotilla_core::{KvStateMachine, Namespace, TypeConfig};
use flotilla_store::{
    verify_backup, AtRestCipher, AtRestKey, BackupFile, BackupSource, Store, StoreError, StoreOptions,
    BACKUP_FORMAT_VERSION,
};
use openraft::alias::{SnapshotMetaOf, StoredMembershipOf};
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;

fn source() -> BackupSource {
    BackupSource { cluster_id: "cluster-test".into(), flotilla_version: "9.9.9".into() }
}

fn key(i: u64) -> Vec<u8> {
    format!("key/{i:05}").into_bytes()
}

/// Apply `set(key(i), "value-i")` for every `i` in `range`, one commit each.
async fn write(sm: &mut flotilla_store::StateMachineStore, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        apply(sm, vec![normal(1, i, rid(3, i), set(&key(i), format!("value-{i}").as_bytes()))]).await.unwrap();
    }
}

/// A store whose namespace `a` has a membership at index 1 and writes up to index `last`.
async fn seeded(a: &Namespace, last: u64) -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut sm = store.state_machine(a, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm, vec![membership(1, 1, &[1])]).await.unwrap();
    write(&mut sm, 2..=last).await;
    (dir, store)
}

/// The body (the snapshot) of a backup file.
fn body(file: &[u8]) -> &[u8] {
    let meta_len = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    &file[16 + meta_len..file.len() - 32]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writes_go_on_holds_exactly_its_index() {
    let a = ns("alpha");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    let first = membership(1, 1, &[1]);
    apply(&mut sm, vec![first.clone()]).await.unwrap();
    write(&mut sm, 2..=50).await;

    let backup = store.backup(&a, source()).unwrap();
    // Writes keep committing while the backup is held and while it is written out.
    write(&mut sm, 51..=150).await;
    let writing = tokio::task::spawn_blocking(move || backup.write_to(Vec::new()));
    write(&mut sm, 151..=250).await;
    let file = writing.await.unwrap().unwrap();
    assert_eq!(store.applied(&a).unwrap().map(|l| l.index), Some(250));

    let summary = verify_backup(&file[..], file.len() as u64).unwrap();
    let meta = &summary.meta;
    assert_eq!((meta.index, meta.term), (50, 1));
    // One revision per write, from one view with the index.
    assert_eq!(meta.revision, flotilla_core::kv::FIRST_REVISION + 49);
    assert_eq!(meta.namespace, "alpha");
    assert_eq!(meta.cluster_id, "cluster-test");
    assert_eq!(meta.flotilla_version, "9.9.9");
    assert_eq!(meta.format_version, BACKUP_FORMAT_VERSION);
    assert_eq!(meta.store_format, flotilla_store::FORMAT_VERSION);
    assert_eq!(summary.dedup_records, 49);
    assert_eq!(summary.body_bytes, body(&file).len() as u64);

    // The body installs like a snapshot into a fresh store: exactly the keys up to index 50.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = open(dir2.path());
    let mut sm2 = store2.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    let EntryPayload::Membership(m) = first.payload else { unreachable!("a membership entry") };
    let snapshot_meta = SnapshotMetaOf::<TypeConfig> {
        last_log_id: Some(log_id(1, 50)),
        last_membership: StoredMembershipOf::<TypeConfig>::new(Some(log_id(1, 1)), m),
    };
    let mut sink = store2.snapshot_sink(&a).unwrap();
    sink.append(body(&file)).unwrap();
    sm2.install_snapshot(&snapshot_meta, sink.finish().unwrap()).await.unwrap();
    let keys = store2.kv_keys(&a, b"key/", 1_000).unwrap();
    assert_eq!(keys, (2..=50).map(key).collect::<Vec<_>>());
    assert_eq!(store2.kv_get(&a, &key(50)).unwrap(), Some(b"value-50".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_truncated_backup_is_refused() {
    let a = ns("alpha");
    let (_dir, store) = seeded(&a, 20).await;
    let good = store.backup(&a, source()).unwrap().write_to(Vec::new()).unwrap();
    verify_backup(&good[..], good.len() as u64).unwrap();

    let meta_len = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
    let places =
        [0, 9, 13, 20, 16 + meta_len / 2, 16 + meta_len + 3, good.len() / 2 + 40, good.len() - 40, good.len() - 1];
    for at in places {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        let err = verify_backup(&bad[..], bad.len() as u64).expect_err(&format!("a flipped bit at {at}"));
        assert!(matches!(err, StoreError::Corrupt(_)), "flip at {at}: {err:?}");
    }
    for len in [0, 10, 16 + meta_len, good.len() / 2, good.len() - 1] {
        let err = verify_backup(&good[..len], len as u64).expect_err(&format!("truncated to {len}"));
        assert!(matches!(err, StoreError::Corrupt(_)), "truncated to {len}: {err:?}");
    }
    let mut longer = good.clone();
    longer.extend_from_slice(b"tail");
    assert!(verify_backup(&longer[..], longer.len() as u64).is_err(), "trailing bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_file_appears_whole_or_not_at_all() {
    let a = ns("alpha");
    let (_dir, store) = seeded(&a, 10).await;
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("alpha.flbk");

    let unfinished = BackupFile::create(&path).unwrap();
    drop(unfinished);
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "an unfinished file is removed");

    let file = store.backup(&a, source()).unwrap().write_to(BackupFile::create(&path).unwrap()).unwrap();
    assert!(!path.exists(), "not at its final path before the commit");
    file.commit().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(verify_backup(&bytes[..], bytes.len() as u64).unwrap().meta.index, 10);
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1, "no temporary file left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_store_encrypted_at_rest_holds_plaintext() {
    let a: Namespace = ns("alpha");
    let dir = tempfile::tempdir().unwrap();
    let cipher = Arc::new(AtRestCipher::new([AtRestKey { id: [7; 8], key: [9; 32] }], [7; 8]).unwrap());
    let store =
        Store::open_with(dir.path(), StoreOptions { at_rest: Some(cipher), ..StoreOptions::default() }).unwrap();
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm, vec![membership(1, 1, &[1])]).await.unwrap();
    write(&mut sm, 2..=5).await;
    let file = store.backup(&a, source()).unwrap().write_to(Vec::new()).unwrap();
    assert_eq!(verify_backup(&file[..], file.len() as u64).unwrap().meta.index, 5);
    // Readable by a restore that does not hold the node's keys.
    assert!(file.windows(7).any(|w| w == b"value-5"), "the value is in the clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_way_does_not_keep_a_stopped_store_open() {
    let a = ns("alpha");
    let (dir, store) = seeded(&a, 10).await;
    let backup = store.backup(&a, source()).unwrap();
    store.shutdown();
    let err = backup.write_to(Vec::new()).unwrap_err();
    assert_eq!(err, StoreError::Closed);
    drop(store);
    let reopened = open(dir.path());
    assert_eq!(reopened.applied(&a).unwrap().map(|l| l.index), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_an_empty_namespace_only_and_only_whole() {
    let a = ns("alpha");
    let (_dir, store) = seeded(&a, 30).await;
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("alpha.flbk");
    let good = store.backup(&a, source()).unwrap().write_to(Vec::new()).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x10;

    // A damaged file is refused and leaves the namespace as empty as it was.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = open(dir2.path());
    std::fs::write(&path, &bad).unwrap();
    let err = store2.restore_backup(&a, &path).await.expect_err("a damaged backup");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(!store2.has_state(&a).unwrap() && !store2.holds_data(&a).unwrap());

    // A whole one installs at its index, the log continuing right after it.
    std::fs::write(&path, &good).unwrap();
    let restored = store2.restore_backup(&a, &path).await.unwrap();
    assert_eq!(restored.applied.index, 30);
    assert_eq!(restored.summary.meta.index, 30);
    assert_eq!(store2.applied(&a).unwrap(), Some(restored.applied));
    assert_eq!(store2.kv_keys(&a, b"key/", 1_000).unwrap(), (2..=30).map(key).collect::<Vec<_>>());
    let mut log = store2.log_store(&a).unwrap();
    let state = openraft::storage::RaftLogStorage::get_log_state(&mut log).await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(30));

    // Never over a namespace that holds something.
    let err = store2.restore_backup(&a, &path).await.expect_err("an occupied namespace");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}
