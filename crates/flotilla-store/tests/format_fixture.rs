//! Stores written by the current formats (`tests/fixtures/format-1`, log tables, and
//! `tests/fixtures/format-2`, a write-ahead log; checked into the repository) still open and
//! read as they did: vote, log, applied state with revisions and history, lease, queue and
//! request ids. A format-1 store is read as it is and once converted to a write-ahead log. A
//! change to any stored layout fails here, and must then bump `FORMAT_VERSION` or
//! `FORMAT_VERSION_WAL` with a migration (see `src/format.rs`) and a new fixture next to these.
//!
//! Write a missing fixture (only when a format version changes, into a new directory; one
//! checked in is never rewritten):
//! `FLOTILLA_WRITE_FORMAT_FIXTURE=1 cargo test -p flotilla-store --test format_fixture`.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use flotilla_core::kv::{self, encode_command, KvCommand, RangeRequest, Txn, TxnOp};
use flotilla_core::KvStateMachine;
use flotilla_store::{LogKind, Store, StoreOptions, FORMAT_VERSION, FORMAT_VERSION_WAL};
use openraft::storage::{RaftLogReader, RaftLogStorage};
use std::sync::Arc;

fn fixture_dir(layout: LogKind) -> PathBuf {
    let name = match layout {
        LogKind::Tables => "format-1",
        LogKind::Wal => "format-2",
    };
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn open(dir: &Path, log: LogKind) -> Arc<Store> {
    // Small segments: the format-2 fixture then holds one segment of 64 KiB.
    let options = StoreOptions { log, wal_segment_bytes: Some(64 * 1024), ..StoreOptions::default() };
    Store::open_with(dir, options).expect("a store of a current format opens")
}

/// Copy the files of `from` (a fixture) into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).expect("the fixture is checked in") {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
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

async fn write_fixture(dir: &Path, layout: LogKind) {
    let store = open(dir, layout);
    let ns = ns("fixture");
    let mut log = store.log_store(&ns).unwrap();
    log.save_vote(&vote(1)).await.unwrap();
    append(&mut log, entries()).await.unwrap();
    let mut sm = store.state_machine(&ns, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm, entries()).await.unwrap();
    store.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checked_in_stores_of_the_current_formats_open_and_read_as_written() {
    assert_eq!(
        (FORMAT_VERSION, FORMAT_VERSION_WAL),
        (1, 2),
        "a new format needs a new fixture directory and this test pointed at it"
    );
    for layout in [LogKind::Tables, LogKind::Wal] {
        // Only a missing fixture is written: one checked in is never rewritten.
        if std::env::var_os("FLOTILLA_WRITE_FORMAT_FIXTURE").is_some() && !fixture_dir(layout).exists() {
            write_fixture(&fixture_dir(layout), layout).await;
            // What a store makes ahead or on the side is not part of its format.
            for stale in ["snapshots", "namespaces.set", "wal/0000000000000002.wal"] {
                let path = fixture_dir(layout).join(stale);
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
        // Work on a copy: opening writes to it. Each fixture opens as it is, and format 1 also
        // as the default opens it: converted to a write-ahead log.
        let (opens, base) = match layout {
            LogKind::Tables => (vec![LogKind::Tables, LogKind::Wal], 0),
            LogKind::Wal => (vec![LogKind::Wal], 1),
        };
        for open_as in opens {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(&fixture_dir(layout), dir.path());
            check_fixture(open(dir.path(), open_as), base).await;
        }
    }
}

/// Everything [`write_fixture`] wrote reads back from `store`. `base` is the revision before
/// the first put: 0 in the format-1 fixture, 1 in stores written since revisions start at 1
/// (etcd's numbering).
async fn check_fixture(store: Arc<Store>, base: u64) {
    let ns = ns("fixture");

    let mut log = store.log_store(&ns).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote(1)));
    let stored = log.try_get_log_entries(1..9).await.unwrap();
    assert_eq!(stored, entries(), "the log reads back entry for entry");

    assert_eq!(store.applied(&ns).unwrap().map(|id| id.index), Some(8));
    let view = store.view(&ns).unwrap();
    let revs = kv::revisions(&view).unwrap();
    assert_eq!((revs.current, revs.compacted), (base + 5, 0));
    let now = kv::range(&view, &RangeRequest::prefix("")).unwrap().unwrap();
    let got: Vec<_> = now
        .kvs
        .iter()
        .map(|kv| (kv.key.as_slice(), kv.value.as_slice(), kv.create_revision, kv.mod_revision, kv.version, kv.lease))
        .collect();
    let (a, c) = (b"a".as_slice(), b"c".as_slice());
    assert_eq!(
        got,
        vec![(a, b"three".as_slice(), base + 1, base + 3, 2, 0), (c, b"leased".as_slice(), base + 4, base + 4, 1, 7)]
    );
    let past = kv::range(&view, &RangeRequest { revision: base + 2, ..RangeRequest::prefix("") }).unwrap().unwrap();
    let got: Vec<_> = past.kvs.iter().map(|kv| (kv.key.as_slice(), kv.value.as_slice())).collect();
    assert_eq!(got, vec![(&b"a"[..], &b"one"[..]), (&b"b"[..], &b"two"[..])], "history reads at a past revision");
    assert_eq!(kv::attached_keys(&view, 7, 10).unwrap(), vec![b"c".to_vec()]);
    assert_eq!(kv::queue_counts(&view, b"jobs").unwrap(), (1, 0));
    drop(view);

    // The request ids are remembered: the same write again changes nothing.
    let mut sm = store.state_machine(&ns, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm, vec![normal(1, 9, rid(9, 3), put("a", "three", 0))]).await.unwrap();
    let view = store.view(&ns).unwrap();
    assert_eq!(kv::revisions(&view).unwrap().current, base + 5, "a retried request id is not applied again");
    assert_eq!(store.applied(&ns).unwrap().map(|id| id.index), Some(9));
}
