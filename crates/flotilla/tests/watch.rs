//! Watches over a three-node cluster: served by any node, in revision order without gaps,
//! resumable from any revision not compacted, cancelled with a reason when too slow or
//! compacted past, and quiet streams get progress notifications.

mod common;

use std::time::Duration;

use common::Harness;
use flotilla::{ApiError, WatchMessage, WatchRequest, SLOW_GRACE, WATCH_BUFFER};
use flotilla_core::kv::{EventKind, Txn, TxnOp};
use futures::StreamExt;

const NS: &str = "default";

/// The next message within a generous bound.
async fn next(watch: &mut flotilla::Watch) -> Option<Result<WatchMessage, ApiError>> {
    tokio::time::timeout(Duration::from_secs(20), watch.next()).await.expect("a watch message within 20 s")
}

/// The next changes, skipping progress notifications.
async fn next_changes(watch: &mut flotilla::Watch) -> (u64, Vec<flotilla_core::kv::WatchEvent>) {
    loop {
        match next(watch).await {
            Some(Ok(WatchMessage::Changes { revision, events })) => return (revision, events),
            Some(Ok(WatchMessage::Progress { .. })) => continue,
            other => panic!("expected changes, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_serves_every_change_in_order_and_resumes_from_any_revision() {
    let h = Harness::start(3, 21, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let follower = h.cluster(f, NS);
    let mut watch = follower.watch(WatchRequest { prev_kv: true, ..WatchRequest::prefix("cfg/") }).await.unwrap();
    let first = h.cluster(l, NS).set(b"cfg/a", b"1").await.unwrap().revision;
    h.cluster(l, NS).set(b"elsewhere", b"x").await.unwrap();
    let txn = Txn { success: vec![TxnOp::put("cfg/a", "2"), TxnOp::put("cfg/b", "3")], ..Txn::default() };
    let both = h.cluster(f, NS).txn(txn).await.unwrap().reply.revision;
    let deleted = h.cluster(l, NS).delete(b"cfg/a").await.unwrap().revision;

    let (rev, events) = next_changes(&mut watch).await;
    assert_eq!((rev, events.len(), events[0].kv.value.as_slice()), (first, 1, &b"1"[..]));
    let (rev, events) = next_changes(&mut watch).await;
    assert_eq!(rev, both, "the write to `elsewhere` is not delivered");
    assert_eq!(events.len(), 2, "both changes of one transaction together");
    assert_eq!(events[0].prev.as_ref().unwrap().value, b"1");
    let (rev, events) = next_changes(&mut watch).await;
    assert_eq!((rev, events[0].kind), (deleted, EventKind::Delete));

    // A new watch from the first revision replays exactly the same history.
    let request = WatchRequest { from_revision: first, ..WatchRequest::prefix("cfg/") };
    let mut replay = h.cluster(l, NS).watch(request).await.unwrap();
    let revisions: Vec<u64> =
        [next_changes(&mut replay).await.0, next_changes(&mut replay).await.0, next_changes(&mut replay).await.0]
            .into();
    assert_eq!(revisions, vec![first, both, deleted]);

    // Nothing new: a progress notification names the current revision.
    let quiet = WatchRequest {
        from_revision: deleted + 1,
        progress_every: Duration::from_millis(200),
        ..WatchRequest::key("cfg/a")
    };
    let mut quiet = follower.watch(quiet).await.unwrap();
    match next(&mut quiet).await {
        Some(Ok(WatchMessage::Progress { revision })) => assert!(revision >= deleted),
        other => panic!("expected a progress notification, got {other:?}"),
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_and_slow_watchers_end_a_watch_with_the_reason() {
    let h = Harness::start(3, 22, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let c = h.cluster(l, NS);
    let first = c.set(b"k", b"0").await.unwrap().revision;
    let mut slow = c.watch(WatchRequest { from_revision: first, ..WatchRequest::key("k") }).await.unwrap();
    let mut last = first;
    for i in 1..=(WATCH_BUFFER as u64 + 20) {
        last = c.set(b"k", &i.to_be_bytes()).await.unwrap().revision;
    }
    // The watcher stays away longer than the grace a full buffer gets (the experiment, not
    // synchronisation).
    tokio::time::sleep(SLOW_GRACE * 2).await;
    // The watcher read nothing: it gets what fit in its buffer, then the reason.
    let mut delivered = 0;
    let reason = loop {
        match next(&mut slow).await {
            Some(Ok(WatchMessage::Changes { .. })) => delivered += 1,
            Some(Ok(WatchMessage::Progress { .. })) => {}
            Some(Err(reason)) => break reason,
            None => panic!("the watch ended without a reason"),
        }
    };
    assert!(matches!(reason, ApiError::Cancelled(_)), "{reason}");
    assert!(delivered <= WATCH_BUFFER && delivered > 0, "{delivered}");
    assert!(next(&mut slow).await.is_none());
    assert!(h.node(l).watch_counters().get().1 >= 1);

    c.compact(last).await.unwrap();
    let refused = c.watch(WatchRequest { from_revision: first, ..WatchRequest::key("k") }).await;
    assert!(matches!(refused, Err(ApiError::Compacted { compacted, .. }) if compacted == last), "{:?}", refused.err());
    h.shutdown().await;
}

/// A watch through a node that stopped is refused as "shutting down" (retry through another
/// node), and an open one ends with a reason a client retries elsewhere, never as a fatal error
/// (the store being closed was reported as `fatal: store is closed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_through_a_stopped_node_is_told_to_go_elsewhere() {
    let mut h = Harness::start(3, 23, &[NS], |_| {}).await;
    let c = h.cluster(0, NS);
    let mut open = c.watch(WatchRequest::key("k")).await.unwrap();
    h.crash(0).await;
    let refused = c.watch(WatchRequest::key("k")).await;
    assert!(matches!(refused, Err(ApiError::ShuttingDown)), "{:?}", refused.err());
    // Every read of the stopped node's state says the same, not `fatal`.
    let read = c.get(b"k", flotilla::Consistency::Stale).await;
    assert_eq!(read.err(), Some(ApiError::ShuttingDown));
    match next(&mut open).await {
        Some(Err(ApiError::ShuttingDown | ApiError::Unavailable(_))) => {}
        other => panic!("expected shutting down or unavailable, got {other:?}"),
    }
    drop(c);
    h.shutdown().await;
}

/// A watcher that takes what it is given is not cancelled as slow when it replays more history
/// than its buffer holds (it was, after [`WATCH_BUFFER`] revisions: the pump filled the buffer
/// in one pass, faster than any watcher could take it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prompt_watcher_replays_more_history_than_its_buffer_holds() {
    let h = Harness::start(3, 24, &[NS], |_| {}).await;
    let c = h.cluster(h.leader(NS).await, NS);
    let first = c.set(b"k", b"0").await.unwrap().revision;
    let mut last = first;
    for i in 1..=(WATCH_BUFFER as u64 + 50) {
        last = c.set(b"k", &i.to_be_bytes()).await.unwrap().revision;
    }
    let request = WatchRequest { from_revision: first, ..WatchRequest::key("k") };
    let mut watch = c.watch(request).await.unwrap();
    for expected in first..=last {
        assert_eq!(next_changes(&mut watch).await.0, expected);
    }
    assert_eq!(h.node(0).watch_counters().get().1 + h.node(1).watch_counters().get().1, 0);
    h.shutdown().await;
}
