//! A store whose Raft logs are in the write-ahead log (`LogKind::Wal`, DESIGN-log.md): the log
//! survives a reopen with its truncations and purges, purges free segments (an idle
//! namespace's entries are copied forward so it does not keep them), a wiped namespace
//! leaves nothing behind, a table store asked for the write-ahead log is converted (safely
//! when interrupted), and a bad segment size is refused. Encryption at rest on this layout is
//! `tests/at_rest.rs`'s.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use flotilla_core::KvStateMachine;
use flotilla_store::{LogKind, Store, StoreError, StoreOptions, WAL_DIR};
use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogReader, RaftLogStorage};

/// Segments of 64 KiB, the smallest allowed: a few entries of 20 KiB fill one.
const SEGMENT: u64 = 64 * 1024;

fn options(log: LogKind) -> StoreOptions {
    StoreOptions { log, wal_segment_bytes: Some(SEGMENT), ..StoreOptions::default() }
}

fn open_wal(dir: &Path) -> Arc<Store> {
    Store::open_with(dir, options(LogKind::Wal)).expect("store opens")
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(WAL_DIR))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str().map(str::to_string))
        .filter(|name| name.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

/// Wait until at most `most` segments are left in `dir`: segments go after the purge's record
/// is synced, which the purge does not wait for. Fails after a generous 30 s.
async fn wait_for_segments(dir: &Path, most: usize, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = segments(dir);
        if now.len() <= most {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {now:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The redb tables of the store in `dir` (closed).
fn tables(dir: &Path) -> Vec<String> {
    use redb::{ReadableDatabase, TableHandle};
    let db = redb::Database::open(dir.join(flotilla_store::DB_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    txn.list_tables().unwrap().map(|t| t.name().to_string()).collect()
}

/// The log's survival of a reopen is `tests/log.rs`'s (run on this layout too); here, what only
/// this layout has: no log table, and a new term's entries after a truncation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_has_no_table_and_a_new_terms_entries_replace_truncated_ones() {
    let dir = tempfile::tempdir().unwrap();
    let a = ns("alpha");
    let store = open_wal(dir.path());
    let mut log = store.log_store(&a).unwrap();
    append(&mut log, (1..=10).map(|i| blank(1, i)).collect()).await.unwrap();
    log.truncate_after(Some(log_id(1, 8))).await.unwrap();
    append(&mut log, vec![blank(2, 9)]).await.unwrap();
    store.shutdown();
    drop((log, store));
    assert!(tables(dir.path()).iter().all(|t| !t.starts_with("log/")), "no log table: {:?}", tables(dir.path()));
    let store = open_wal(dir.path());
    let mut log = store.log_store(&a).unwrap();
    let ids: Vec<_> = log.try_get_log_entries(0..100).await.unwrap().iter().map(|e| e.log_id()).collect();
    let expected: Vec<_> = (1..=8).map(|i| log_id(1, i)).chain([log_id(2, 9)]).collect();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_free_segments_once_no_namespace_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (ns("alpha"), ns("beta"));
    let store = open_wal(dir.path());
    let mut log_a = store.log_store(&a).unwrap();
    let mut log_b = store.log_store(&b).unwrap();
    append(&mut log_b, vec![blank(1, 1)]).await.unwrap();
    for i in 1..=20 {
        append(&mut log_a, vec![normal(1, i, None, vec![7u8; 20 * 1024])]).await.unwrap();
    }
    let before = segments(dir.path());
    assert!(before.len() >= 5, "20 entries of 20 KiB fill several segments: {before:?}");
    log_b.purge(log_id(1, 1)).await.unwrap();
    log_a.purge(log_id(1, 18)).await.unwrap();
    wait_for_segments(dir.path(), 3, "only the segments of entries 19 and 20 and the next one stay").await;
    store.shutdown();
    drop(store);

    let store = open_wal(dir.path());
    let mut log_a = store.log_store(&a).unwrap();
    let entries = log_a.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.index()).collect::<Vec<_>>(), vec![19, 20]);
    let state = log_a.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 18)));
    let mut log_b = store.log_store(&b).unwrap();
    assert_eq!(log_b.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 1)));
    append(&mut log_b, vec![blank(1, 2)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_namespace_is_copied_forward_instead_of_keeping_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (busy, idle) = (ns("busy"), ns("idle"));
    let store = open_wal(dir.path());
    let mut log_idle = store.log_store(&idle).unwrap();
    append(&mut log_idle, vec![blank(1, 1), membership(1, 2, &[1])]).await.unwrap();
    let mut log_busy = store.log_store(&busy).unwrap();
    for i in 1..=30 {
        append(&mut log_busy, vec![normal(1, i, None, vec![7u8; 20 * 1024])]).await.unwrap();
    }
    let before = segments(dir.path());
    assert!(before.len() >= 12, "{before:?}");
    // Only the busy namespace purges; the idle one never does.
    log_busy.purge(log_id(1, 28)).await.unwrap();
    wait_for_segments(dir.path(), 4, "the idle namespace no longer holds the old segments").await;
    let entries = log_idle.try_get_log_entries(0..10).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.log_id()).collect::<Vec<_>>(), vec![log_id(1, 1), log_id(1, 2)]);
    store.shutdown();
    drop((log_idle, log_busy, store));
    let store = open_wal(dir.path());
    let mut log_idle = store.log_store(&idle).unwrap();
    assert_eq!(log_idle.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 2)));
    assert_eq!(log_idle.try_get_log_entries(0..10).await.unwrap().len(), 2);
    append(&mut log_idle, vec![blank(2, 3)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_namespace_leaves_no_log_behind_even_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = ns("alpha");
    let store = open_wal(dir.path());
    let mut log = store.log_store(&a).unwrap();
    append(&mut log, (1..=5).map(|i| blank(1, i)).collect()).await.unwrap();
    assert!(store.has_state(&a).unwrap());
    drop(log);
    store.wipe_namespace(&a).await.unwrap();
    assert!(!store.has_state(&a).unwrap());
    let mut log = store.log_store(&a).unwrap();
    assert!(log.try_get_log_entries(0..100).await.unwrap().is_empty());
    store.shutdown();
    drop((log, store));

    let store = open_wal(dir.path());
    assert!(!store.has_state(&a).unwrap(), "the old records are dead after a reopen");
    let mut log = store.log_store(&a).unwrap();
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, None);
    // The namespace starts again from index 1 under a new id.
    append(&mut log, vec![blank(2, 1)]).await.unwrap();
    assert_eq!(log.try_get_log_entries(0..100).await.unwrap()[0].log_id(), log_id(2, 1));
}

/// A store of the table layout, with three namespaces: `alpha` holds 300 entries of 1 KiB
/// (several 64 KiB segments' worth), purged up to 100, a vote and some applied state; `beta`
/// three entries; `gamma` five entries, all purged.
async fn table_store_to_convert(dir: &Path) {
    let (a, b, c) = (ns("alpha"), ns("beta"), ns("gamma"));
    let store = Store::open_with(dir, options(LogKind::Tables)).unwrap();
    let mut log_a = store.log_store(&a).unwrap();
    let entries: Vec<_> = (1..=300).map(|i| normal(1, i, rid(1, i), set(&i.to_be_bytes(), &[9u8; 1024]))).collect();
    append(&mut log_a, entries.clone()).await.unwrap();
    log_a.save_vote(&vote(3)).await.unwrap();
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm, entries[..120].to_vec()).await.unwrap();
    log_a.purge(log_id(1, 100)).await.unwrap();
    let mut log_b = store.log_store(&b).unwrap();
    append(&mut log_b, vec![blank(1, 1), membership(1, 2, &[1]), blank(2, 3)]).await.unwrap();
    let mut log_c = store.log_store(&c).unwrap();
    append(&mut log_c, (1..=5).map(|i| blank(1, i)).collect()).await.unwrap();
    log_c.purge(log_id(1, 5)).await.unwrap();
    store.shutdown();
}

/// What [`table_store_to_convert`] wrote, read from the store in `dir` in either layout.
async fn check_converted_content(store: &Arc<Store>) {
    let (a, b, c) = (ns("alpha"), ns("beta"), ns("gamma"));
    let mut log_a = store.log_store(&a).unwrap();
    let state = log_a.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 100)), Some(log_id(1, 300))));
    let expected: Vec<_> = (101..=300).map(|i| normal(1, i, rid(1, i), set(&i.to_be_bytes(), &[9u8; 1024]))).collect();
    assert_eq!(log_a.try_get_log_entries(0..1000).await.unwrap(), expected, "every retained entry, byte for byte");
    assert_eq!(log_a.read_vote().await.unwrap(), Some(vote(3)));
    assert_eq!(store.kv_get(&a, &120u64.to_be_bytes()).unwrap(), Some(vec![9u8; 1024]));
    let mut log_b = store.log_store(&b).unwrap();
    let ids: Vec<_> = log_b.try_get_log_entries(0..10).await.unwrap().iter().map(|e| e.log_id()).collect();
    assert_eq!(ids, vec![log_id(1, 1), log_id(1, 2), log_id(2, 3)]);
    let mut log_c = store.log_store(&c).unwrap();
    let state = log_c.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 5)), Some(log_id(1, 5))));
    assert!(log_c.try_get_log_entries(0..10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_store_opened_for_the_write_ahead_log_is_converted_once() {
    let dir = tempfile::tempdir().unwrap();
    table_store_to_convert(dir.path()).await;
    assert!(tables(dir.path()).iter().any(|t| t.starts_with("log/")));

    let store = open_wal(dir.path());
    check_converted_content(&store).await;
    store.shutdown();
    drop(store);
    assert!(tables(dir.path()).iter().all(|t| !t.starts_with("log/")), "{:?}", tables(dir.path()));
    assert!(segments(dir.path()).len() >= 5, "300 KiB of entries in 64 KiB segments: {:?}", segments(dir.path()));

    // Converted for good: a default open keeps the write-ahead log, and the logs go on from
    // where they were.
    let store = Store::open(dir.path()).unwrap();
    check_converted_content(&store).await;
    let mut log_c = store.log_store(&ns("gamma")).unwrap();
    append(&mut log_c, vec![blank(2, 6)]).await.unwrap();
    let mut log_a = store.log_store(&ns("alpha")).unwrap();
    log_a.purge(log_id(1, 290)).await.unwrap();
    store.shutdown();
    drop((log_a, log_c, store));
    let store = open_wal(dir.path());
    let mut log_c = store.log_store(&ns("gamma")).unwrap();
    assert_eq!(log_c.get_log_state().await.unwrap().last_log_id, Some(log_id(2, 6)));
    let mut log_a = store.log_store(&ns("alpha")).unwrap();
    assert_eq!(log_a.try_get_log_entries(0..1000).await.unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_interrupted_before_its_commit_leaves_the_tables_whole() {
    // A crash before the conversion's last commit leaves the table store as it was and a
    // write-ahead log directory holding anything (here: junk): it is never read.
    let dir = tempfile::tempdir().unwrap();
    table_store_to_convert(dir.path()).await;
    let wal = dir.path().join(WAL_DIR);
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::write(wal.join("0000000000000001.wal"), vec![0xAB; 64 * 1024]).unwrap();
    std::fs::write(wal.join("salt"), b"junk").unwrap();

    // Opened as a table store: the leftover goes, the tables serve.
    let store = Store::open_with(dir.path(), options(LogKind::Tables)).unwrap();
    check_converted_content(&store).await;
    assert!(!wal.exists(), "the unfinished conversion's log is removed");
    store.shutdown();
    drop(store);

    // Or converted again from the start.
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::write(wal.join("0000000000000001.wal"), vec![0xAB; 64 * 1024]).unwrap();
    let store = open_wal(dir.path());
    check_converted_content(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_size_below_64_kib_or_not_whole_blocks_is_refused() {
    for bytes in [100_000, 32 * 1024] {
        let dir = tempfile::tempdir().unwrap();
        let odd = StoreOptions { wal_segment_bytes: Some(bytes), ..options(LogKind::Wal) };
        let err = Store::open_with(dir.path(), odd).unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains("64 KiB")), "{bytes}: {err}");
    }
}

/// Set in the child process of [`acknowledged_entries_survive_a_crash_and_cover_the_applies_it_rolled_back`]:
/// the data directory it writes into before it exits without closing the store.
const CRASH_CHILD: &str = "FLOTILLA_WAL_CRASH_CHILD_DIR";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_survive_a_crash_and_cover_the_applies_it_rolled_back() {
    let a = ns("alpha");
    if let Ok(dir) = std::env::var(CRASH_CHILD) {
        // The child: append and apply, then exit at once, as a crash would (no destructor
        // runs: nothing is flushed or checkpointed on the way out).
        let store = open_wal(Path::new(&dir));
        let mut log = store.log_store(&a).unwrap();
        let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
        let entries: Vec<_> = (1..=50).map(|i| normal(1, i, None, set(format!("k{i}").as_bytes(), b"v"))).collect();
        for chunk in entries.chunks(10) {
            append(&mut log, chunk.to_vec()).await.unwrap();
            apply(&mut sm, chunk.to_vec()).await.unwrap();
        }
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "acknowledged_entries_survive_a_crash_and_cover_the_applies_it_rolled_back", "--nocapture"])
        .env(CRASH_CHILD, dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the child failed: {status}");
    let store = open_wal(dir.path());
    let mut log = store.log_store(&a).unwrap();
    let held: Vec<_> = log.try_get_log_entries(0..).await.unwrap().iter().map(|e| e.index()).collect();
    assert_eq!(held, (1..=50).collect::<Vec<_>>(), "every acknowledged entry is in the log");
    // The applies were not checkpointed: the state may be behind (it is rebuilt by applying
    // the log again), never ahead of the log.
    let applied = store.applied(&a).unwrap().map_or(0, |l| l.index);
    assert!(applied <= 50, "applied {applied}");
}
