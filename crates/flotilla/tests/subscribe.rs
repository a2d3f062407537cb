//! Change notifications over a three-node cluster: a follower yields every applied entry in
//! order with its index and reply, a subscriber resumes from a read of the state, one that
//! does not read falls behind without slowing writes, so do the subscribers of a follower that
//! catches up through a snapshot, drops and the subscriber limit hold, and a node that stops
//! ends its subscriptions.

mod common;

use common::{eventually, Harness, PATIENCE};
use flotilla::kv::restore::RestoreStep;
use flotilla::kv::{self, encode_ops, KvCommand, RangeRequest};
use flotilla::{
    AppliedEntry, Cluster, Consistency, KvOp, SubscribeError, Subscription, SubscriptionEnded, MAX_SUBSCRIBERS,
    SUBSCRIPTION_BUFFER,
};

const NS: &str = "default";

/// No automatic compaction: the writes of a test are the only normal entries.
fn only_our_writes(c: &mut flotilla::Config) {
    c.compact_keep_revisions = 0;
}

/// Snapshots every 20 entries, 5 kept behind them: a follower cut off for long catches up
/// through a snapshot.
fn small_snapshots(c: &mut flotilla::Config) {
    only_our_writes(c);
    c.snapshot_every = 20;
    c.keep_logs_behind_snapshot = 5;
}

/// The next entry within a generous bound.
async fn next(sub: &mut Subscription) -> Result<AppliedEntry, SubscriptionEnded> {
    tokio::time::timeout(PATIENCE, sub.recv()).await.expect("an entry within the patience")
}

fn set(key: &str, value: &str) -> Vec<u8> {
    encode_ops(&[KvOp::Set { key: key.into(), value: value.into() }])
}

/// Propose `payloads` through `cluster`, `in_flight` at a time; returns (index, reply) of each.
async fn propose_all(
    cluster: &Cluster,
    payloads: Vec<Vec<u8>>,
    in_flight: usize,
) -> Vec<(u64, Result<Vec<u8>, String>)> {
    let mut out = Vec::with_capacity(payloads.len());
    for chunk in payloads.chunks(in_flight) {
        let writes = chunk.iter().map(|p| cluster.propose(p.clone()));
        for written in futures::future::join_all(writes).await {
            out.push(written.expect("the write commits"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_yields_every_applied_entry_in_order_with_its_reply_and_resumes_from_a_read() {
    let h = Harness::start(3, 61, &[NS], only_our_writes).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let follower = h.cluster(f, NS);
    let leader = h.cluster(l, NS);

    let mut sub = follower.subscribe().expect("subscribed");
    // Writes and a command the state machine refuses (deterministically, on every replica).
    let mut payloads: Vec<Vec<u8>> = (0..20).map(|i| set(&format!("cfg/{i}"), &i.to_string())).collect();
    payloads.insert(7, b"not a kv command".to_vec());
    let written = propose_all(&leader, payloads.clone(), 1).await;
    assert!(written[7].1.is_err(), "the malformed command is refused");

    let mut last = sub.start_index();
    for ((index, reply), payload) in written.iter().zip(&payloads) {
        let applied = next(&mut sub).await.expect("not ended");
        // Normal entries only, in index order, no gap among them: exactly the writes.
        assert!(applied.index > last);
        assert_eq!((applied.index, &applied.command, &applied.reply), (*index, payload, reply));
        last = applied.index;
    }
    assert!(sub.try_recv().is_none(), "nothing else was applied");

    // Resume: subscribe, read the state, skip what the read reflects; later writes arrive once.
    let mut resumed = follower.subscribe().expect("subscribed");
    let before = propose_all(&leader, vec![set("cfg/x", "1")], 1).await[0].0;
    h.wait_applied(f, NS, before).await;
    let state = follower.range(RangeRequest::prefix(b"cfg/".to_vec()), Consistency::Stale).await.unwrap();
    assert!(state.index >= before && state.result.kvs.iter().any(|kv| kv.key == b"cfg/x"));
    // A read older than the subscription would leave a hole: refused.
    let start = resumed.start_index();
    assert_eq!(resumed.skip_through(start - 1), Err(SubscriptionEnded::FellBehind { next_index: start }));
    resumed.skip_through(state.index).expect("the read is newer than the subscription");
    let after = propose_all(&leader, vec![set("cfg/y", "2")], 1).await[0].0;
    assert_eq!(next(&mut resumed).await.expect("not ended").index, after);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_does_not_read_falls_behind_and_writes_keep_committing() {
    let h = Harness::start(3, 62, &[NS], only_our_writes).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let follower = h.cluster(f, NS);
    let leader = h.cluster(l, NS);

    let mut idle = follower.subscribe().expect("subscribed");
    let mut reader = follower.subscribe().expect("subscribed");
    // Writes go in rounds of 32; the reader takes each round's entries before the next round,
    // so it never has more than a round waiting however loaded the machine is.
    let total = SUBSCRIPTION_BUFFER + 50;
    let payloads: Vec<Vec<u8>> = (0..total).map(|i| set(&format!("k{}", i % 10), "v")).collect();
    let mut indexes = Vec::with_capacity(total);
    let mut got = Vec::with_capacity(total);
    for round in payloads.chunks(32) {
        let written = propose_all(&leader, round.to_vec(), 32).await;
        indexes.extend(written.iter().map(|(index, _)| *index));
        for _ in round {
            got.push(next(&mut reader).await.expect("the reader keeps up").index);
        }
    }
    indexes.sort_unstable();
    assert_eq!(got, indexes, "the reader got every write, in index order");
    // Apply on the follower went on past the stalled subscriber.
    h.wait_applied(f, NS, *indexes.last().unwrap()).await;

    // The idle one holds a full buffer, then the signal naming the first entry it missed.
    for expected in &indexes[..SUBSCRIPTION_BUFFER] {
        assert_eq!(idle.try_recv().map(|r| r.map(|a| a.index)), Some(Ok(*expected)));
    }
    let missed = indexes[SUBSCRIPTION_BUFFER];
    assert_eq!(idle.try_recv(), Some(Err(SubscriptionEnded::FellBehind { next_index: missed })));
    assert_eq!(next(&mut idle).await, Err(SubscriptionEnded::FellBehind { next_index: missed }), "the end is final");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_a_subscription_unregisters_it_and_the_limit_is_per_namespace_and_node() {
    let h = Harness::start(3, 63, &[NS], only_our_writes).await;
    let node0 = h.cluster(0, NS);
    let mut subs: Vec<Subscription> = (0..MAX_SUBSCRIBERS).map(|_| node0.subscribe().expect("subscribed")).collect();
    match node0.subscribe() {
        Err(SubscribeError::TooManySubscribers { limit, .. }) => assert_eq!(limit, MAX_SUBSCRIBERS),
        other => panic!("expected the limit, got {other:?}"),
    }
    // Another node has its own subscribers.
    let mut elsewhere = h.cluster(1, NS).subscribe().expect("another node subscribes");
    // A dropped subscription frees its place.
    subs.pop();
    let mut again = node0.subscribe().expect("a place was freed");
    let (index, _) = h.cluster(2, NS).propose(set("a", "b")).await.unwrap();
    assert_eq!(next(&mut again).await.unwrap().index, index);
    assert_eq!(next(&mut elsewhere).await.unwrap().index, index);
    assert_eq!(next(&mut subs[0]).await.unwrap().index, index);
    drop(subs);
    drop(again);
    let all: Vec<Subscription> =
        (0..MAX_SUBSCRIBERS).map(|_| node0.subscribe().expect("every place is free again")).collect();
    assert_eq!(all.len(), MAX_SUBSCRIBERS);
    // A node that stops ends its subscriptions.
    h.shutdown().await;
    assert_eq!(next(&mut elsewhere).await, Err(SubscriptionEnded::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_that_catches_up_through_a_snapshot_makes_its_subscribers_fall_behind() {
    let h = Harness::start(3, 64, &[NS], small_snapshots).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let follower = h.cluster(f, NS);
    let leader = h.cluster(l, NS);
    let mut sub = follower.subscribe().expect("subscribed");
    let start = sub.start_index();

    // Cut off, the follower misses entries the leader then purges behind a snapshot.
    h.network.isolate(h.ids[f], &h.ids);
    let written = propose_all(&leader, (0..200).map(|i| set(&format!("s{i}"), "v")).collect(), 16).await;
    let last = written.iter().map(|(index, _)| *index).max().unwrap();
    eventually("the leader snapshots and purges", || leader.state().snapshot_index > start + 100).await;
    h.network.heal();
    h.wait_applied(f, NS, last).await;
    assert!(follower.state().snapshot_index > start, "the follower caught up through a snapshot");

    // The install skipped every entry the subscriber expected.
    assert_eq!(next(&mut sub).await, Err(SubscriptionEnded::FellBehind { next_index: start + 1 }));
    // The recipe: subscribe again, read, skip what the read reflects, go on.
    let mut again = follower.subscribe().expect("subscribed");
    let state = follower.range(RangeRequest::prefix(b"s".to_vec()), Consistency::Stale).await.unwrap();
    assert_eq!(state.result.kvs.len(), 200);
    again.skip_through(state.index).expect("the read is newer than the subscription");
    let (index, _) = leader.propose(set("after", "1")).await.unwrap();
    assert_eq!(next(&mut again).await.expect("not ended").index, index);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_a_namespace_and_dropping_its_data_makes_its_subscribers_fall_behind() {
    let h = Harness::start(3, 65, &[NS], only_our_writes).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let mut sub = h.cluster(f, NS).subscribe().expect("subscribed");
    let start = sub.start_index();
    h.node(f).close_namespace(NS, flotilla::CloseOptions { keep_data: false }).await.expect("closed");
    assert_eq!(next(&mut sub).await, Err(SubscriptionEnded::FellBehind { next_index: start + 1 }));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restored_through_the_log_reaches_subscribers_as_its_steps() {
    let h = Harness::start(3, 66, &[NS], only_our_writes).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let (leader, follower) = (h.cluster(l, NS), h.cluster(f, NS));
    propose_all(&leader, (0..5).map(|i| set(&format!("k/{i}"), "backed up")).collect(), 5).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.flbk");
    let backup = leader.backup().unwrap();
    let out = std::fs::File::create(&file).unwrap();
    tokio::task::spawn_blocking(move || backup.write_to(out).map(|_| ())).await.unwrap().unwrap();
    let later = propose_all(&leader, vec![set("later", "gone after the restore")], 1).await[0].0;
    // Subscribed once the follower holds everything before the restore.
    h.wait_applied(f, NS, later).await;
    let mut sub = follower.subscribe().expect("subscribed");
    follower.replace_with_backup(file).await.expect("restored");
    // The steps are ordinary entries: Begin, Clear and Load steps, then Finish.
    let mut steps = Vec::new();
    loop {
        let applied = next(&mut sub).await.expect("not ended");
        assert!(applied.reply.is_ok());
        match kv::decode_command(&applied.command) {
            Some(KvCommand::Restore(RestoreStep::Finish { .. })) => break,
            Some(KvCommand::Restore(step)) => steps.push(std::mem::discriminant(&step)),
            other => panic!("only restore steps until Finish, got {other:?}"),
        }
    }
    assert_eq!(steps.first(), Some(&std::mem::discriminant(&RestoreStep::Begin { id: 0 })));
    assert!(steps.contains(&std::mem::discriminant(&RestoreStep::Load { id: 0, rows: Vec::new() })));
    // Once Finish is delivered this node serves the backup's state: a subscriber reloads it.
    let state = follower.range(RangeRequest::prefix(b"".to_vec()), Consistency::Stale).await.unwrap();
    let keys: Vec<Vec<u8>> = state.result.kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, (0..5).map(|i| format!("k/{i}").into_bytes()).collect::<Vec<_>>());
    h.shutdown().await;
}
