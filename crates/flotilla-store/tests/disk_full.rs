//! A full disk, for real: the store on an 8 MiB tmpfs, with its Raft logs in tables and in a
//! write-ahead log of 64 KiB segments (whose roll-overs then wait for room). Writes wait (never
//! fail, never get acknowledged early), the store says why, reads go on, and everything
//! acknowledged survives.

mod common;
mod tmpfs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use flotilla_core::KvStateMachine;
use flotilla_store::{LogKind, Store};
use openraft::storage::RaftLogReader;
use tokio::time::Instant;

const VALUE_BYTES: usize = 16 * 1024;

fn key(i: u64) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; VALUE_BYTES]
}

/// Poll `check` every 10 ms until it holds, for at most 30 s.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Append and apply entries `first..` one at a time, as a Raft follower would, recording each
/// index once both are durable, until `stop` is set. Without `applies`, only appends: on a
/// write-ahead log they touch no redb page, so the log's own roll-overs meet the full disk.
fn spawn_writer(
    store: &Arc<Store>,
    first: u64,
    acked: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    applies: bool,
) -> tokio::task::JoinHandle<()> {
    let a = ns("alpha");
    let mut log = store.log_store(&a).unwrap();
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    tokio::spawn(async move {
        let mut i = first;
        while !stop.load(Ordering::SeqCst) {
            let entry = normal(1, i, rid(1, i), set(&key(i), &value(i)));
            append(&mut log, vec![entry.clone()]).await.expect("a full disk never fails an append");
            if applies {
                apply(&mut sm, vec![entry]).await.expect("a full disk never fails an apply");
            }
            acked.lock().unwrap().push(i);
            i += 1;
        }
    })
}

fn acked_len(acked: &Mutex<Vec<u64>>) -> usize {
    acked.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stalls_writes_without_losing_or_failing_any() {
    full_disk_case(LogKind::Tables).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stalls_write_ahead_log_roll_overs_without_losing_or_failing_any() {
    full_disk_case(LogKind::Wal).await;
}

async fn full_disk_case(layout: LogKind) {
    let applies = layout == LogKind::Tables;
    let Some(fs) = tmpfs::mount_or_skip("8m") else { return };
    let dir = fs.path().join("data");
    let a = ns("alpha");
    let store = open_layout(&dir, layout);
    store.set_free_space_reserve(1024 * 1024);
    assert_eq!(store.write_blocked(), None, "an empty 8 MiB file system has more than the reserve free");

    // Some writes while there is room.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(&store, 1, acked.clone(), stop.clone(), applies);
    until("20 entries written", || acked_len(&acked) >= 20).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();

    // Below the reserve, client writes are refused before anything fails.
    let filler = tmpfs::fill(fs.path());
    // Free space is measured at most every 200 ms: poll.
    until("client writes are refused", || store.write_blocked().is_some()).await;
    let reason = store.write_blocked().expect("no room left: client writes are refused");
    assert!(reason.contains("below the reserve"), "{reason}");

    // Raft's own writes go on into whatever is left, then wait for room.
    store.set_free_space_reserve(0);
    stop.store(false, Ordering::SeqCst);
    let next = acked.lock().unwrap().last().copied().unwrap() + 1;
    let writer = spawn_writer(&store, next, acked.clone(), stop.clone(), applies);
    until("the store reports the full disk", || store.write_blocked().is_some_and(|r| r.contains("disk full"))).await;
    let stalled_at = acked_len(&acked);
    assert!(!writer.is_finished(), "the stalled write neither failed nor panicked");

    // Reads go on meanwhile, and see every acknowledged write.
    let mut reader = store.log_store(&a).unwrap();
    let last = *acked.lock().unwrap().last().unwrap();
    assert_eq!(reader.try_get_log_entries(1..=last).await.unwrap().len() as u64, last);
    if applies {
        assert_eq!(store.kv_get(&a, &key(last)).unwrap(), Some(value(last)));
    }
    assert_eq!(acked_len(&acked), stalled_at, "nothing is acknowledged while the disk is full");

    // Room again: the waiting write completes, and writing goes on.
    std::fs::remove_file(&filler).unwrap();
    until("writes resume", || acked_len(&acked) > stalled_at + 2).await;
    until("the store reports health", || store.write_blocked().is_none()).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert_eq!(store.metrics().failed_ops, 0, "no operation failed");

    // Everything acknowledged survives a reopen.
    let acked = acked.lock().unwrap().clone();
    store.shutdown();
    drop((store, reader));
    let store = open_layout(&dir, layout);
    let mut log = store.log_store(&a).unwrap();
    let last = *acked.last().unwrap();
    assert_eq!(log.try_get_log_entries(1..=last).await.unwrap().len() as u64, last);
    for i in acked.iter().copied().filter(|_| applies) {
        assert_eq!(store.kv_get(&a, &key(i)).unwrap(), Some(value(i)), "entry {i} lost");
    }
    store.shutdown();
}
