//! Crashes at the write-ahead log's own steps (`flotilla_store::crash_points`): a child process
//! runs a workload and exits at the armed point, as a crash would; the parent reopens its data
//! directory and checks that every acknowledged entry is there, the state is never ahead of the
//! log, and the store goes on. Points: a checkpoint, copying forward (before and after its
//! sync), recycling (after one deletion), a conversion from tables (before its commit), and
//! sealing a log in place (before the plaintext segments go).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use flotilla_core::KvStateMachine;
use flotilla_store::crash_points::{CRASH_AT_ENV, CRASH_EXIT_CODE};
use flotilla_store::{AtRestCipher, AtRestKey, LogKind, Store, StoreOptions, WAL_DIR};
use openraft::storage::{RaftLogReader, RaftLogStorage};

/// Set in a child process: the data directory it works in.
const CHILD_DIR: &str = "FLOTILLA_WAL_CRASH_TEST_DIR";

/// A value that must not be on disk in the clear once the log is sealed.
const SECRET: &[u8] = b"SECRET-9c1e7f3a-wal-crash";

fn options(log: LogKind, at_rest: Option<Arc<AtRestCipher>>) -> StoreOptions {
    StoreOptions { log, at_rest, wal_segment_bytes: Some(64 * 1024), ..StoreOptions::default() }
}

fn open(dir: &Path, log: LogKind) -> Arc<Store> {
    Store::open_with(dir, options(log, None)).expect("store opens")
}

fn cipher() -> Arc<AtRestCipher> {
    Arc::new(AtRestCipher::new([AtRestKey { id: [3; 8], key: [9; 32] }], [3; 8]).expect("cipher"))
}

/// The data directory of the child part, if this process is one.
fn child_dir() -> Option<std::path::PathBuf> {
    std::env::var(CHILD_DIR).ok().map(Into::into)
}

/// Run test `name` again in a child process working in `dir` with crash point `point` armed;
/// check it stopped there, and return the indexes it printed as acknowledged (`acked N`).
fn crash_child(name: &str, dir: &Path, point: &str) -> Vec<u64> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CRASH_AT_ENV, point)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(CRASH_EXIT_CODE), "the child did not stop at {point}: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // libtest prints the test's name without a newline before it runs: the first line
        // may start with that.
        .filter_map(|l| l.split("acked ").nth(1))
        .map(|n| n.trim().parse().unwrap())
        .collect()
}

fn value(i: u64) -> Vec<u8> {
    let mut v = SECRET.to_vec();
    v.extend_from_slice(&vec![i as u8; 1024]);
    v
}

fn entry(i: u64) -> flotilla_core::types::Entry {
    normal(1, i, rid(1, i), set(format!("k{i:04}").as_bytes(), &value(i)))
}

/// Check the reopened store in `dir`: every acknowledged index of `ns` is in the log, and the
/// state is never ahead of it (every applied key is there).
async fn check_acked(store: &Arc<Store>, ns: &str, acked: &[u64]) {
    let a = common::ns(ns);
    let mut log = store.log_store(&a).unwrap();
    let held: Vec<u64> = log.try_get_log_entries(0..).await.unwrap().iter().map(|e| e.log_id.index).collect();
    for i in acked {
        assert!(held.contains(i), "acknowledged entry {i} lost: the log holds {held:?}");
    }
    let applied = store.applied(&a).unwrap().map_or(0, |l| l.index);
    assert!(applied <= held.last().copied().unwrap_or(0), "applied {applied} is ahead of the log {held:?}");
    for i in 1..=applied {
        assert_eq!(store.kv_get(&a, format!("k{i:04}").as_bytes()).unwrap(), Some(value(i)), "applied key {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_a_checkpoint_loses_no_acknowledged_entry() {
    const NAME: &str = "a_crash_at_a_checkpoint_loses_no_acknowledged_entry";
    if let Some(dir) = child_dir() {
        let store = open(&dir, LogKind::Wal);
        let a = ns("alpha");
        let mut log = store.log_store(&a).unwrap();
        let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
        for i in 1.. {
            append(&mut log, vec![entry(i)]).await.unwrap();
            println!("acked {i}");
            apply(&mut sm, vec![entry(i)]).await.unwrap();
            // Past the checkpoint interval (2 s), the writer's next batch makes the applies
            // durable: that checkpoint is the crash point.
            if i % 10 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
        unreachable!("the crash point ends the child");
    }
    let dir = tempfile::tempdir().unwrap();
    let acked = crash_child(NAME, dir.path(), "wal-checkpoint");
    assert!(!acked.is_empty());
    let store = open(dir.path(), LogKind::Wal);
    check_acked(&store, "alpha", &acked).await;
}

/// The child part of the copy-forward and recycling crashes: an idle namespace with two
/// entries, a busy one that fills a dozen segments and purges all but its last two entries,
/// which copies the idle log forward and recycles the old segments.
async fn copy_forward_workload(dir: &Path) {
    let store = open(dir, LogKind::Wal);
    let (busy, idle) = (ns("busy"), ns("alpha"));
    let mut log_idle = store.log_store(&idle).unwrap();
    append(&mut log_idle, vec![entry(1), entry(2)]).await.unwrap();
    println!("acked 1");
    println!("acked 2");
    let mut log_busy = store.log_store(&busy).unwrap();
    for i in 1..=30 {
        append(&mut log_busy, vec![normal(1, i, None, vec![7u8; 20 * 1024])]).await.unwrap();
    }
    log_busy.purge(log_id(1, 28)).await.unwrap();
    // Copying forward and recycling follow the purge's record, on the writer thread.
    std::thread::sleep(std::time::Duration::from_secs(30));
    unreachable!("the crash point ends the child");
}

/// After a crash while copying forward or recycling: both logs whole, and the store goes on
/// (a new purge copies and recycles again).
async fn check_after_copy_forward_crash(dir: &Path, acked: &[u64]) {
    let store = open(dir, LogKind::Wal);
    check_acked(&store, "alpha", acked).await;
    let mut log_busy = store.log_store(&ns("busy")).unwrap();
    let state = log_busy.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 28)), Some(log_id(1, 30))));
    assert_eq!(log_busy.try_get_log_entries(0..100).await.unwrap().len(), 2);
    for i in 31..=40 {
        append(&mut log_busy, vec![normal(1, i, None, vec![7u8; 20 * 1024])]).await.unwrap();
    }
    log_busy.purge(log_id(1, 39)).await.unwrap();
    let mut log_idle = store.log_store(&ns("alpha")).unwrap();
    append(&mut log_idle, vec![entry(3)]).await.unwrap();
    check_acked(&store, "alpha", &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_copying_forward_loses_nothing() {
    const NAME: &str = "a_crash_while_copying_forward_loses_nothing";
    if let Some(dir) = child_dir() {
        copy_forward_workload(&dir).await;
    }
    for point in ["wal-copy-appended", "wal-copy-synced"] {
        let dir = tempfile::tempdir().unwrap();
        let acked = crash_child(NAME, dir.path(), point);
        check_after_copy_forward_crash(dir.path(), &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_recycling_loses_nothing() {
    const NAME: &str = "a_crash_while_recycling_loses_nothing";
    if let Some(dir) = child_dir() {
        copy_forward_workload(&dir).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let acked = crash_child(NAME, dir.path(), "wal-recycle-deleted");
    check_after_copy_forward_crash(dir.path(), &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_a_conversion_commits_leaves_the_tables_in_charge() {
    const NAME: &str = "a_crash_before_a_conversion_commits_leaves_the_tables_in_charge";
    if let Some(dir) = child_dir() {
        let store = open(&dir, LogKind::Tables);
        let a = ns("alpha");
        let mut log = store.log_store(&a).unwrap();
        let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
        let entries: Vec<_> = (1..=200).map(entry).collect();
        append(&mut log, entries.clone()).await.unwrap();
        apply(&mut sm, entries).await.unwrap();
        (1..=200).for_each(|i| println!("acked {i}"));
        store.shutdown();
        drop((log, sm, store));
        open(&dir, LogKind::Wal);
        unreachable!("the crash point ends the child");
    }
    let dir = tempfile::tempdir().unwrap();
    let acked = crash_child(NAME, dir.path(), "wal-convert-synced");
    assert_eq!(acked.len(), 200);
    assert!(dir.path().join(WAL_DIR).is_dir(), "the crash left the unfinished log");
    let store = open(dir.path(), LogKind::Tables);
    check_acked(&store, "alpha", &acked).await;
    store.shutdown();
    drop(store);
    assert!(!dir.path().join(WAL_DIR).exists(), "a table store removes an unfinished conversion");
    let store = open(dir.path(), LogKind::Wal);
    check_acked(&store, "alpha", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_sealing_a_log_in_place_leaves_no_plaintext_once_reopened() {
    const NAME: &str = "a_crash_while_sealing_a_log_in_place_leaves_no_plaintext_once_reopened";
    if let Some(dir) = child_dir() {
        let store = open(&dir, LogKind::Wal);
        let a = ns("alpha");
        let mut log = store.log_store(&a).unwrap();
        append(&mut log, (1..=200).map(entry).collect()).await.unwrap();
        (1..=200).for_each(|i| println!("acked {i}"));
        store.shutdown();
        drop((log, store));
        let _ = Store::open_with(&dir, options(LogKind::Wal, Some(cipher())));
        unreachable!("the crash point ends the child");
    }
    let dir = tempfile::tempdir().unwrap();
    let acked = crash_child(NAME, dir.path(), "wal-seal-copied");
    assert_eq!(acked.len(), 200);
    let store = Store::open_with(dir.path(), options(LogKind::Wal, Some(cipher()))).expect("reopens with the key");
    check_acked(&store, "alpha", &acked).await;
    let mut log = store.log_store(&ns("alpha")).unwrap();
    assert_eq!(log.try_get_log_entries(0..).await.unwrap(), (1..=200).map(entry).collect::<Vec<_>>());
    store.shutdown();
    drop((log, store));
    let found = files_containing(dir.path(), SECRET);
    assert!(found.is_empty(), "plaintext left in {found:?}");
}
