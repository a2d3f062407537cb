//! Log storage, persistence, group commit and corruption handling.

mod common;

use std::io;
use std::sync::Arc;

use common::*;
use flotilla_core::KvStateMachine;
use flotilla_store::{Store, StoreError, DB_FILE};
use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use redb::{ReadableDatabase, TableDefinition};

/// A store whose logs are in the write-ahead log, in small segments.
fn open_wal(dir: &std::path::Path) -> Arc<Store> {
    open_layout(dir, flotilla_store::LogKind::Wal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_state_survives_reopen() {
    log_state_case(open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_state_survives_reopen_in_a_write_ahead_log() {
    log_state_case(open_wal).await;
}

/// Vote, appends, a truncation and purges on a store opened by `open`, then reopened.
async fn log_state_case(open: fn(&std::path::Path) -> Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let a = ns("alpha");
    {
        let store = open(dir.path());
        assert!(!store.has_state(&a).unwrap());
        let mut log = store.log_store(&a).unwrap();
        log.save_vote(&vote(3)).await.unwrap();
        append(&mut log, (1..=10).map(|i| blank(1, i)).collect()).await.unwrap();
        // Entries are readable as soon as append returns.
        assert_eq!(log.try_get_log_entries(1..=10).await.unwrap().len(), 10);
        log.truncate_after(Some(log_id(1, 8))).await.unwrap();
        log.purge(log_id(1, 3)).await.unwrap();
        // Purging never goes backwards.
        log.purge(log_id(1, 2)).await.unwrap();
        log.save_committed(Some(log_id(1, 7))).await.unwrap();
        assert!(store.has_state(&a).unwrap());
        store.shutdown();
    }

    let store = open(dir.path());
    let mut log = store.log_store(&a).unwrap();
    assert!(store.has_state(&a).unwrap());
    assert!(!store.has_state(&ns("beta")).unwrap());
    assert_eq!(log.read_vote().await.unwrap(), Some(vote(3)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 7)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 8)));
    let ids: Vec<_> = log.try_get_log_entries(0..100).await.unwrap().iter().map(|e| e.index()).collect();
    assert_eq!(ids, vec![4, 5, 6, 7, 8]);

    // Clearing the committed id and truncating everything also persist.
    log.save_committed(None).await.unwrap();
    log.truncate_after(None).await.unwrap();
    drop(log);
    store.shutdown();
    drop(store);
    let store = open(dir.path());
    let mut log = store.log_store(&a).unwrap();
    assert_eq!(log.read_committed().await.unwrap(), None);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 3)), "an empty log reports the purged id as last");
    // A purged-only namespace still counts as having state.
    assert!(store.has_state(&a).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_membership_alone_counts_as_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = ns("alpha");
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm, vec![membership(1, 1, &[1])]).await.unwrap();
    assert!(store.has_state(&a).unwrap());
    assert_eq!(store.applied(&a).unwrap(), Some(log_id(1, 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_of_many_namespaces_share_commits() {
    const NAMESPACES: usize = 8;
    const APPENDS: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let before = store.metrics();

    let mut tasks = Vec::new();
    for n in 0..NAMESPACES {
        let mut log = store.log_store(&ns(&format!("ns{n}"))).unwrap();
        tasks.push(tokio::spawn(async move {
            for i in 1..=APPENDS {
                append(&mut log, vec![blank(1, i)]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let after = store.metrics();
    let ops = after.ops - before.ops;
    let commits = after.commits - before.commits;
    // Every append, plus at most one commit per namespace: a write-ahead log store records a
    // new namespace's id durably before its first record.
    let appends = NAMESPACES as u64 * APPENDS;
    assert!((appends..=appends + NAMESPACES as u64).contains(&ops), "{ops} operations for {appends} appends");
    assert!(commits < ops, "{commits} commits for {ops} operations: nothing was grouped");
    assert!(after.max_ops_per_commit > 1);
    assert_eq!(after.ops_per_commit.count, after.commits);
    assert_eq!(after.commit_latency_us.counts.iter().sum::<u64>(), after.commits);
    assert!(after.commit_latency_us_sum > 0);
    assert_eq!(after.failed_ops, 0);
    for n in 0..NAMESPACES {
        let mut log = store.log_store(&ns(&format!("ns{n}"))).unwrap();
        assert_eq!(log.try_get_log_entries(..).await.unwrap().len(), APPENDS as usize);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_does_not_poison_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let bad = ns("bad");
    let good = ns("good");
    let mut sm = store.state_machine(&bad, Arc::new(CountingSm)).unwrap();
    let mut log = store.log_store(&good).unwrap();

    // Interleave failing applies with appends of another namespace, so they share batches.
    let failing = tokio::spawn(async move {
        for i in 1..=20 {
            let r =
                apply(&mut sm, vec![normal(1, i, None, b"inc".to_vec()), normal(1, i, None, b"fail".to_vec())]).await;
            assert!(r.is_err());
        }
    });
    for i in 1..=50 {
        append(&mut log, vec![blank(1, i)]).await.unwrap();
    }
    failing.await.unwrap();

    assert_eq!(log.try_get_log_entries(..).await.unwrap().len(), 50);
    assert_eq!(count(&store, &bad), 0, "a failed batch applies nothing");
    assert_eq!(store.applied(&bad).unwrap(), None);
    let m = store.metrics();
    assert_eq!(m.failed_ops, 20);
    assert!(m.last_error.unwrap_or_default().contains("failing on purpose"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_log_entry_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let a = ns("alpha");
    // Log tables (a write-ahead log's damage is `wal_segment_tests.rs`'s).
    {
        let store = open_layout(dir.path(), flotilla_store::LogKind::Tables);
        let mut log = store.log_store(&a).unwrap();
        append(&mut log, (1..=10).map(|i| normal(1, i, None, vec![i as u8; 16])).collect()).await.unwrap();
        store.shutdown();
    }

    // Flip one byte of entry 5 directly in the redb table.
    {
        let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
        let def: TableDefinition<u64, &[u8]> = TableDefinition::new("log/alpha");
        let mut raw = {
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(def).unwrap();
            table.get(5).unwrap().unwrap().value().to_vec()
        };
        let last = raw.len() - 1;
        raw[last] ^= 0x40;
        let txn = db.begin_write().unwrap();
        txn.open_table(def).unwrap().insert(5, raw.as_slice()).unwrap();
        txn.commit().unwrap();
    }

    let store = open_layout(dir.path(), flotilla_store::LogKind::Tables);
    let mut log = store.log_store(&a).unwrap();
    let err = log.try_get_log_entries(1..=10).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let msg = err.to_string();
    assert!(msg.contains("alpha") && msg.contains("index 5") && msg.contains("checksum"), "{msg}");
    // Entries around it still read.
    assert_eq!(log.try_get_log_entries(1..5).await.unwrap().len(), 4);
    assert_eq!(log.try_get_log_entries(6..=10).await.unwrap().len(), 5);
    assert!(log.get_log_state().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_reads_are_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut log = store.log_store(&ns("big")).unwrap();
    let value = vec![7u8; 1024 * 1024];
    append(&mut log, (1..=10).map(|i| normal(1, i, None, value.clone())).collect()).await.unwrap();
    let limited = log.limited_get_log_entries(1, 11).await.unwrap();
    assert!(!limited.is_empty() && limited.len() < 10, "{} entries", limited.len());
    assert_eq!(limited[0].index(), 1);
    assert_eq!(log.try_get_log_entries(1..11).await.unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_idempotent_and_refuses_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut log = store.log_store(&ns("alpha")).unwrap();
    append(&mut log, vec![blank(1, 1)]).await.unwrap();
    store.shutdown();
    store.shutdown();
    let err = log.save_vote(&vote(1)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
    assert!(matches!(store.log_store(&ns("beta")), Err(StoreError::Closed)));
    assert!(matches!(store.kv_get(&ns("alpha"), b"k"), Err(StoreError::Closed)));
    assert!(log.try_get_log_entries(..).await.is_err());

    // The file is released at shutdown, although `store` and `log` are still alive: the
    // directory reopens at once, with everything acknowledged before.
    let reopened = Store::open(dir.path()).expect("reopen after shutdown");
    let mut log2 = reopened.log_store(&ns("alpha")).unwrap();
    assert_eq!(log2.try_get_log_entries(..).await.unwrap().len(), 1);
    drop(log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let second = Store::open(dir.path());
    assert!(second.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_does_not_touch_the_log() {
    // The state machine and the log of a namespace are separate tables.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = ns("alpha");
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    apply(&mut sm, vec![normal(1, 1, None, set(b"k", b"v"))]).await.unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1)));
    let mut log = store.log_store(&a).unwrap();
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_membership_goes_right_after_the_log_with_its_vote_and_record() {
    forced_membership_case(open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_membership_goes_right_after_a_write_ahead_log_too() {
    forced_membership_case(open_wal).await;
}

/// Forcing a membership onto a store opened by `open`: refused where it does not fit the log,
/// durable with its vote and record where it does.
async fn forced_membership_case(open: fn(&std::path::Path) -> Arc<Store>) {
    use flotilla_store::ForcedMembership;
    let dir = tempfile::tempdir().unwrap();
    let a = ns("alpha");
    let record = |entry: &flotilla_core::types::Entry| ForcedMembership {
        log_id: entry.log_id,
        previous_cluster: "old".into(),
        cluster: "new".into(),
        at_unix_ms: 1,
        reason: "a test".into(),
    };
    {
        let store = open(dir.path());
        let mut log = store.log_store(&a).unwrap();
        log.save_vote(&vote(3)).await.unwrap();
        append(&mut log, (1..=5).map(|i| blank(3, i)).collect()).await.unwrap();
        // Not right after the log, not a membership, or under an older vote: refused, nothing written.
        for (v, entry) in [(vote(4), membership(4, 7, &[1])), (vote(4), blank(4, 6)), (vote(2), membership(2, 6, &[1]))]
        {
            let err = store.force_membership(&a, v, entry.clone(), &record(&entry)).await.expect_err("refused");
            assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        }
        assert_eq!(store.forced_membership(&a).unwrap(), None);
        assert_eq!(log.read_vote().await.unwrap(), Some(vote(3)));
        let entry = membership(4, 6, &[1]);
        store.force_membership(&a, vote(4), entry.clone(), &record(&entry)).await.unwrap();
        store.shutdown();
    }
    // Durable: all three are there after a reopen.
    let store = open(dir.path());
    let mut log = store.log_store(&a).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote(4)));
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(4, 6)));
    let forced = store.forced_membership(&a).unwrap().expect("the record");
    assert_eq!((forced.log_id, forced.cluster.as_str(), forced.reason.as_str()), (log_id(4, 6), "new", "a test"));
}
