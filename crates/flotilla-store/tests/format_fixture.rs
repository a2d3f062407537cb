//! A store written by this format (`tests/fixtures/format-1`, checked into the repository)
//! still opens and reads as it did: its vote, log, applied state with revisions and history,
//! lease, queue and request ids. A change to any stored layout fails here, and must then bump
//! `FORMAT_VERSION` with a migration (see `src/format.rs`) and a new fixture next to this one.
//!
//! Regenerate (only when the format version changes, into a new directory):
//! `FLOTILLA_WRITE_FORMAT_FIXTURE=1 cargo test -p flotilla-store --test format_fixture`.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use flotilla_core::kv::{self, encode_command, KvCommand, RangeRequest, Txn, TxnOp};
use flotilla_core::KvStateMachine;
use flotilla_store::{Store, FORMAT_VERSION};
use openraft::storage::{RaftLogReader, RaftLogStorage};
use std::sync::Arc;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1")
}

fn put(key: &str, value: &str, lease: u64) -> Vec<u8> {
    let op = TxnOp::Put { key: key.into(), value: value.into(), lease, prev_kv: false };
    encode_command(&KvCommand::Txn(Txn { compares: Vec::new(), success: vec![op], failure: Vec::new() }))
}

fn delete(key: &str) -> Vec<u8> {
    encode_command(&KvCommand::Txn(Txn {
        compares: Vec::new(),
        success: vec![TxnOp::delete(key)],
        failure: Vec::new(),
    }))
}

/// The entries of the fixture: index 1 is the membership.
fn entries() -> Vec<flotilla_core::types::Entry> {
    vec![
        membership(1, 1, &[1]),
        normal(1, 2, rid(9, 1), put("a", "one", 0)),
        normal(1, 3, rid(9, 2), put("b", "two", 0)),
        normal(1, 4, rid(9, 3), put("a", "three", 0)),
        normal(1, 5, rid(9, 4), encode_command(&KvCommand::LeaseGrant { id: 7, ttl_secs: 60 })),
        normal(1, 6, rid(9, 5), put("c", "leased", 7)),
        normal(1, 7, rid(9, 6), delete("b")),
        normal(1, 8, rid(9, 7), encode_command(&KvCommand::QueuePush { name: b"jobs".to_vec(), value: b"x".to_vec() })),
    ]
}

async fn write_fixture(dir: &Path) {
    let store = Store::open(dir).unwrap();
    let ns = ns("fixture");
    let mut log = store.log_store(&ns).unwrap();
    log.save_vote(&vote(1)).await.unwrap();
    append(&mut log, entries()).await.unwrap();
    let mut sm = store.state_machine(&ns, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm, entries()).await.unwrap();
    store.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checked_in_store_of_this_format_opens_and_reads_as_written() {
    assert_eq!(FORMAT_VERSION, 1, "a new format needs a new fixture directory and this test pointed at it");
    if std::env::var_os("FLOTILLA_WRITE_FORMAT_FIXTURE").is_some() {
        let _ = std::fs::remove_dir_all(fixture_dir());
        write_fixture(&fixture_dir()).await;
        for stale in ["snapshots", "namespaces.set"] {
            let _ = std::fs::remove_dir_all(fixture_dir().join(stale));
        }
    }
    // Work on a copy: opening writes to the file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture_dir().join(flotilla_store::DB_FILE), dir.path().join(flotilla_store::DB_FILE))
        .expect("the fixture is checked in");
    let store = Store::open(dir.path()).expect("a store of the current format opens");
    let ns = ns("fixture");

    let mut log = store.log_store(&ns).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote(1)));
    let stored = log.try_get_log_entries(1..9).await.unwrap();
    assert_eq!(stored, entries(), "the log reads back entry for entry");

    assert_eq!(store.applied(&ns).unwrap().map(|id| id.index), Some(8));
    let view = store.view(&ns).unwrap();
    let revs = kv::revisions(&view).unwrap();
    assert_eq!((revs.current, revs.compacted), (5, 0));
    let now = kv::range(&view, &RangeRequest::prefix("")).unwrap().unwrap();
    let got: Vec<_> = now
        .kvs
        .iter()
        .map(|kv| (kv.key.as_slice(), kv.value.as_slice(), kv.create_revision, kv.mod_revision, kv.version, kv.lease))
        .collect();
    assert_eq!(got, vec![(&b"a"[..], &b"three"[..], 1, 3, 2, 0), (&b"c"[..], &b"leased"[..], 4, 4, 1, 7)]);
    let past = kv::range(&view, &RangeRequest { revision: 2, ..RangeRequest::prefix("") }).unwrap().unwrap();
    let got: Vec<_> = past.kvs.iter().map(|kv| (kv.key.as_slice(), kv.value.as_slice())).collect();
    assert_eq!(got, vec![(&b"a"[..], &b"one"[..]), (&b"b"[..], &b"two"[..])], "history reads at a past revision");
    assert_eq!(kv::attached_keys(&view, 7, 10).unwrap(), vec![b"c".to_vec()]);
    assert_eq!(kv::queue_counts(&view, b"jobs").unwrap(), (1, 0));
    drop(view);

    // The request ids are remembered: the same write again changes nothing.
    let mut sm = store.state_machine(&ns, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm, vec![normal(1, 9, rid(9, 3), put("a", "three", 0))]).await.unwrap();
    let view = store.view(&ns).unwrap();
    assert_eq!(kv::revisions(&view).unwrap().current, 5, "a retried request id is not applied again");
    assert_eq!(store.applied(&ns).unwrap().map(|id| id.index), Some(9));
}
