//! Issue 15, point 2: a backup restored into a running namespace through the log, over the
//! in-process network. Every member ends with the backup's state; watches open during the
//! restore are cancelled; a damaged backup changes nothing.

mod common;

use std::time::Duration;

use common::Harness;
use flotilla::{ApiError, WatchRequest};
use flotilla_core::Consistency;
use futures::StreamExt;

const NS: &str = "default";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_reaches_every_member_and_cancels_watches() {
    let h = Harness::start(3, 31, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let (leader, follower) = (h.cluster(l, NS), h.cluster(f, NS));
    for i in 0..20 {
        leader.set(format!("k/{i}").as_bytes(), format!("v{i}").as_bytes()).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.flbk");
    let backup = leader.backup().unwrap();
    let out = std::fs::File::create(&file).unwrap();
    tokio::task::spawn_blocking(move || backup.write_to(out).map(|_| ())).await.unwrap().unwrap();
    for i in 0..5 {
        leader.set(b"k/0", format!("later {i}").as_bytes()).await.unwrap();
    }
    let old = leader.set(b"later", b"x").await.unwrap().revision;

    // A damaged file is refused whole, before anything is proposed.
    let damaged = dir.path().join("damaged.flbk");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    let refused = follower.replace_with_backup(damaged).await;
    assert!(matches!(refused, Err(ApiError::Malformed(_))), "{refused:?}");
    assert_eq!(leader.get(b"later", Consistency::Linearizable).await.unwrap().value, Some(b"x".to_vec()));

    let mut watch = follower.watch(WatchRequest::prefix("k/")).await.unwrap();
    let replaced = follower.replace_with_backup(file).await.unwrap();
    assert!(replaced.revision > old && replaced.old_revision == old, "{replaced:?}");
    assert!(replaced.backup.rows >= 40, "two rows per key at least: {replaced:?}");
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match watch.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch ends within 20 s");
    assert!(
        matches!(ended, Some(Err(ApiError::Compacted { .. } | ApiError::Unavailable(_)))),
        "a watch open across a restore is cancelled with the reason: {ended:?}"
    );
    for i in 0..3 {
        h.wait_applied(i, NS, replaced.index).await;
        let c = h.cluster(i, NS);
        for k in 0..20 {
            let read = c.get(format!("k/{k}").as_bytes(), Consistency::Stale).await.unwrap();
            assert_eq!(read.value, Some(format!("v{k}").into_bytes()), "k/{k} on node {i}");
        }
        assert_eq!(c.get(b"later", Consistency::Stale).await.unwrap().value, None, "node {i}");
    }
    let next = follower.set(b"new", b"n").await.unwrap().revision;
    assert_eq!(next, replaced.revision + 1);
    h.shutdown().await;
}
