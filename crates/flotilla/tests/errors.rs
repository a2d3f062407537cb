//! Errors that say what happened: a write that may have been proposed never answers a
//! definite error, a forwarded command works within its caller's remaining budget, and a leader
//! cut off from its quorum refuses at once instead of holding its clients.

mod common;

use std::time::Duration;

use common::{eventually, Harness};
use flotilla::{ApiError, Consistency, Outcome};
use flotilla_core::kv::encode_ops;
use flotilla_core::wire::{CommandEnvelope, CommandRequest, RequestBody, WireRequest, WireResponse};
use flotilla_core::{Command, KvOp, Namespace, RequestId};
use tokio::time::Instant;

const NS: &str = "default";

fn short_requests(c: &mut flotilla::Config) {
    c.request_timeout_ms = 3_000;
}

/// A write entering at a follower reaches the leader, which proposes it but whose replies and
/// appends are lost: whatever the entry node meets afterwards, the answer is an unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_that_reached_a_cut_off_leader_answers_an_unknown_outcome() {
    let mut h = Harness::start(3, 41, &[NS], short_requests).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let g = (0..3).find(|i| *i != l && *i != f).unwrap();
    // The leader still hears the entry node, but nothing it sends arrives; the third node is
    // gone, so no other leader can be elected either.
    h.crash(g).await;
    h.network.cut_one_way(h.ids[l], h.ids[f]);
    let started = Instant::now();
    let err = h.cluster(f, NS).set(b"k", b"v").await.expect_err("no quorum");
    assert_eq!(err.outcome(), Outcome::Unknown, "{err:?}");
    assert!(matches!(err.code(), "timeout" | "outcome_unknown"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "answered within the request timeout");
    h.shutdown().await;
}

/// The case: a write reaches a leader that proposes it and then goes silent; the retry
/// at the next leader meets a full disk. The answer must not be `storage_full` (which promises
/// nothing was applied) but an unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_definite_error_after_a_possible_proposal_answers_unknown() {
    let h = Harness::start(3, 45, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let g = (0..3).find(|i| *i != l && *i != f).unwrap();
    // The leader hears the entry node but nothing it sends arrives anywhere.
    h.network.cut_one_way(h.ids[l], h.ids[f]);
    h.network.cut_one_way(h.ids[l], h.ids[g]);
    let before = h.cluster(l, NS).state().last_log_index;
    let entry = h.cluster(f, NS);
    let write = tokio::spawn(async move { entry.set(b"k", b"v").await });
    let leader = h.cluster(l, NS);
    eventually("the old leader proposed the write", || leader.state().last_log_index > before).await;
    // Every other node's disk is now "full": the retry at the next leader is refused.
    for i in [f, g] {
        h.node(i).store().set_free_space_reserve(u64::MAX);
    }
    eventually("the others see their disks full", || {
        [f, g].iter().all(|i| h.node(*i).store().write_blocked().is_some())
    })
    .await;
    let err = write.await.unwrap().expect_err("no leader can take the write");
    assert_eq!(err.outcome(), Outcome::Unknown, "{err:?}");
    assert_ne!(err.code(), "storage_full", "{err:?}");
    h.shutdown().await;
}

/// A command whose budget ran out in transit is not proposed: the leader does not start a
/// fresh request timeout of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_does_not_propose_a_write_whose_budget_ran_out() {
    let h = Harness::start(3, 42, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let write = |budget_ms| WireRequest {
        namespace: Namespace::new(NS).unwrap(),
        body: RequestBody::Command(CommandEnvelope {
            hops_left: 0,
            budget_ms,
            request: CommandRequest::Write(Command {
                id: Some(RequestId { client: 0x5eed, seq: budget_ms }),
                payload: encode_ops(&[KvOp::Set { key: format!("k{budget_ms}").into_bytes(), value: b"v".to_vec() }]),
            }),
        }),
    };
    // Sent as the follower would forward it.
    let transport = h.network.transport(h.ids[f]);
    let reply = transport.call(h.ids[l], write(0), Duration::from_secs(5)).await.expect("the leader answers");
    let WireResponse::Error(err) = reply else { panic!("a write without budget was executed: {reply:?}") };
    assert_eq!(err.outcome(), Outcome::NotApplied, "{err:?}");
    // A write with budget left goes through, and the refused one was never applied.
    let reply = transport.call(h.ids[l], write(5_000), Duration::from_secs(5)).await.expect("the leader answers");
    assert!(matches!(reply, WireResponse::Command(_)), "{reply:?}");
    let read = h.cluster(f, NS).get(b"k0", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value, None, "the write whose budget ran out was applied");
    h.shutdown().await;
}

fn slow_elections(c: &mut flotilla::Config) {
    c.heartbeat_ms = Some(100);
    c.election_min_ms = Some(1_000);
    c.election_max_ms = Some(2_000);
}

/// A leader that cannot reach its followers answers a forwarded write within the caller's
/// budget instead of holding it until it steps down (two election timeouts, here 4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_write_ends_within_its_budget_at_a_cut_off_leader() {
    let h = Harness::start(3, 43, &[NS], slow_elections).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let g = (0..3).find(|i| *i != l && *i != f).unwrap();
    // The leader keeps its link with the entry node only, and cannot append to it.
    h.network.partition(&[h.ids[g]], &h.ids);
    h.network.cut_one_way(h.ids[l], h.ids[f]);
    h.network.cut_one_way(h.ids[f], h.ids[l]);
    let request = WireRequest {
        namespace: Namespace::new(NS).unwrap(),
        body: RequestBody::Command(CommandEnvelope {
            hops_left: 0,
            budget_ms: 300,
            request: CommandRequest::Write(Command {
                id: Some(RequestId { client: 0xfeed, seq: 1 }),
                payload: encode_ops(&[KvOp::Set { key: b"late".to_vec(), value: b"v".to_vec() }]),
            }),
        }),
    };
    // From a client-like sender that still reaches the leader.
    let client = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let started = Instant::now();
    let reply = h.network.transport(client).call(h.ids[l], request, Duration::from_secs(10)).await.expect("answered");
    let took = started.elapsed();
    let WireResponse::Error(err) = reply else { panic!("cannot commit without a quorum: {reply:?}") };
    assert_eq!(err.outcome(), Outcome::Unknown, "{err:?}");
    assert!(took < Duration::from_millis(2_000), "answered after {took:?}, budget 300 ms: {err:?}");
    h.shutdown().await;
}

/// A leader cut off from both followers answers a linearizable read with a retryable error
/// naming the cause within about two election timeouts, far from the 8 s request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_leader_refuses_reads_and_writes_quickly() {
    let h = Harness::start(3, 44, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let leader = h.cluster(l, NS);
    leader.set(b"k", b"before").await.unwrap();
    h.network.isolate(h.ids[l], &h.ids);
    let started = Instant::now();
    let err = leader.get(b"k", Consistency::Linearizable).await.expect_err("cannot confirm leadership");
    let took = started.elapsed();
    assert!(matches!(err, ApiError::LostQuorum { .. }), "{err:?}");
    assert!(err.is_retryable());
    // Election timeout here is 300-600 ms; the request timeout 8 s.
    assert!(took < Duration::from_millis(2_500), "answered after {took:?}");
    // A write proposed to it ends the same way, as an unknown outcome: it was proposed.
    let started = Instant::now();
    let err = leader.set(b"k", b"cut off").await.expect_err("no quorum");
    assert!(started.elapsed() < Duration::from_millis(2_500), "write answered after {:?}", started.elapsed());
    assert!(err.is_retryable(), "{err:?}");
    h.network.heal();
    // The others elected a leader meanwhile; the cluster still serves.
    let other = (0..3).find(|i| *i != l).unwrap();
    eventually("a leader among the others", || h.cluster(other, NS).leader().is_some_and(|x| x != h.ids[l])).await;
    h.cluster(other, NS).set(b"after", b"1").await.unwrap();
    h.shutdown().await;
}
