//! A leader whose disk is full refuses client writes with `StorageFull`, also those forwarded
//! to it by a follower; acknowledged data stays readable, and writes resume once space returns.
//! The leader's data directory is on a real 16 MiB tmpfs (needs root; skipped otherwise).

mod common;
#[path = "../../flotilla-store/tests/tmpfs/mod.rs"]
mod tmpfs;

use std::time::Duration;

use common::*;
use flotilla::{ApiError, Consistency};
use tokio::time::Instant;

const NS: &str = "default";

/// Free space below which the leader refuses client writes in this test.
const RESERVE: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_with_a_full_disk_refuses_writes_until_space_returns() {
    let Some(fs) = tmpfs::mount_or_skip("16m") else { return };
    let mut h = Harness::new(3, 7, &[NS], |_| {});
    h.dirs[0] = tempfile::tempdir_in(fs.path()).expect("tempdir on the tmpfs");
    for i in 0..3 {
        h.boot(i).await;
    }
    h.node(0).store().set_free_space_reserve(RESERVE);
    h.wait_voters(NS, 3).await;
    make_leader(&h, 0).await;

    // Acknowledged before the disk fills.
    let entry = h.cluster(1, NS);
    for i in 0..5 {
        entry.set(format!("k{i}").as_bytes(), b"before").await.expect("write with room");
    }

    // The leader's disk fills: a write entering at a follower is refused by the leader.
    let filler = tmpfs::fill(fs.path());
    // Free space is measured at most every 200 ms.
    eventually("the leader sees its disk full", || h.node(0).store().write_blocked().is_some()).await;
    let err = entry.set(b"refused", b"v").await.expect_err("the leader's disk is full");
    assert!(matches!(err, ApiError::StorageFull(ref m) if m.contains("reserve")), "{err:?}");
    assert_eq!(err.code(), "storage_full");
    let err = h.cluster(0, NS).set(b"refused", b"v").await.expect_err("also at the leader itself");
    assert!(matches!(err, ApiError::StorageFull(_)), "{err:?}");

    // Reads go on, linearizable ones included.
    for i in 0..5 {
        let read = entry.get(format!("k{i}").as_bytes(), Consistency::Linearizable).await.expect("reads work");
        assert_eq!(read.value.as_deref(), Some(&b"before"[..]));
    }
    assert_eq!(entry.get(b"refused", Consistency::Linearizable).await.unwrap().value, None, "not applied");

    // Space returns: writes are accepted again, and the cluster still has all the data.
    std::fs::remove_file(&filler).expect("remove filler");
    let index = write_eventually(&entry, b"after").await;
    h.wait_applied(0, NS, index).await;
    assert_eq!(h.cluster(0, NS).get(b"k0", Consistency::Stale).await.unwrap().value.as_deref(), Some(&b"before"[..]));
    h.shutdown().await;
    drop(fs);
}

/// Move leadership to node `i` and wait until everyone agrees.
async fn make_leader(h: &Harness, i: usize) {
    let deadline = Instant::now() + PATIENCE;
    while h.leader(NS).await != i {
        let _ = h.cluster(i, NS).transfer_leadership(Some(h.ids[i])).await;
        assert!(Instant::now() < deadline, "node {i} never became leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Write `key` once the leader accepts writes again (free space is re-measured every 200 ms);
/// only `StorageFull` is retried. Returns the write's log index.
async fn write_eventually(c: &flotilla::Cluster, key: &[u8]) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match c.set(key, b"v").await {
            Ok(outcome) => return outcome.index,
            Err(ApiError::StorageFull(m)) => assert!(Instant::now() < deadline, "still refused: {m}"),
            Err(e) => panic!("unexpected error: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
