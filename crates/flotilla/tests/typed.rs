//! A typed state machine on three in-process nodes: typed proposals through a follower and
//! the leader, a typed refusal, a malformed payload, and `query` reads of the same rows at
//! both consistencies from a follower, each reflecting at least the write's index.

mod common;

use std::io;
use std::ops::Bound;
use std::sync::Arc;

use common::{Harness, PATIENCE};
use flotilla::{
    ApplyContext, Consistency, IdempotencyKey, NodeServices, ProposeError, Scan, StateMachine, StateTable, StateView,
    Typed, TypedStateMachine,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

const NS: &str = "tallies";
const PREFIX: &[u8] = b"tally/";

/// Named tallies, one row each under `tally/<name>` (8 big-endian bytes).
struct Tallies;

#[derive(Debug, Serialize, Deserialize)]
struct Add {
    name: String,
    by: u64,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
enum TallyError {
    #[error("tally {0} would overflow")]
    Overflow(String),
}

fn row_key(name: &str) -> Vec<u8> {
    [PREFIX, name.as_bytes()].concat()
}

fn decode_tally(bytes: &[u8]) -> io::Result<u64> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| io::Error::other("a tally row is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

impl TypedStateMachine for Tallies {
    type Command = Add;
    type Reply = u64;
    type Error = TallyError;

    fn apply(&self, _: &ApplyContext, table: &mut dyn StateTable, add: Add) -> io::Result<Result<u64, TallyError>> {
        let key = row_key(&add.name);
        // Written before the check, so a refusal shows the adapter drops the write.
        let current = table.get(&key)?.as_deref().map(decode_tally).transpose()?.unwrap_or(0);
        table.put(&key, &current.wrapping_add(add.by).to_be_bytes())?;
        match current.checked_add(add.by) {
            Some(total) => Ok(Ok(total)),
            None => Ok(Err(TallyError::Overflow(add.name))),
        }
    }
}

/// Every tally, in name order.
fn all_tallies(view: &dyn StateView) -> io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    view.scan(Bound::Included(PREFIX), Bound::Excluded(b"tally0"), &mut |key, value| {
        let name = String::from_utf8_lossy(&key[PREFIX.len()..]).into_owned();
        out.push((name, decode_tally(value)?));
        Ok(Scan::Continue)
    })?;
    Ok(out)
}

fn services() -> NodeServices {
    let machine: Arc<dyn StateMachine> = Arc::new(Typed::new(Tallies));
    NodeServices { state_machines: Arc::new(move |_| machine.clone()), ..NodeServices::default() }
}

async fn start() -> Harness {
    let mut h = Harness::new(3, 16, &[NS], |_| {});
    for i in 0..3 {
        let transport = h.network.transport(h.ids[i]);
        h.boot_with(i, transport, services()).await;
    }
    h.wait_voters(NS, 3).await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typed_proposals_from_any_node_and_queries_of_their_rows() {
    let h = start().await;
    let leader = h.leader(NS).await;
    let follower = (leader + 1) % 3;
    let through_follower = h.cluster(follower, NS).typed::<Tallies>();
    let through_leader = h.cluster(leader, NS).typed::<Tallies>();

    let a = through_follower.propose(&Add { name: "a".into(), by: 2 }).await.expect("through a follower");
    assert_eq!(a.reply, 2);
    let b = through_leader.propose(&Add { name: "b".into(), by: 3 }).await.expect("through the leader");
    assert_eq!(b.reply, 3);
    assert!(b.index > a.index);

    // A refusal travels typed and changes nothing.
    let refused = through_follower.propose(&Add { name: "a".into(), by: u64::MAX }).await;
    assert!(matches!(&refused, Err(ProposeError::Rejected(TallyError::Overflow(n))) if n == "a"), "{refused:?}");

    // An idempotent proposal applies once (the tallies below show b = 7, not 11) and a
    // repeat answers the first reply.
    let key = IdempotencyKey::new("add-b-once").unwrap();
    let once = through_follower.propose_idempotent(&Add { name: "b".into(), by: 4 }, &key).await.unwrap();
    let again = through_leader.propose_idempotent(&Add { name: "b".into(), by: 4 }, &key).await.unwrap();
    assert_eq!((once.reply, again.reply), (7, 7));

    // A payload that is not a command is refused, not applied.
    let (_, refusal) = h.cluster(follower, NS).propose(vec![0xff; 3]).await.expect("proposed");
    assert!(refusal.as_ref().is_err_and(|r| r.starts_with("malformed command")), "{refusal:?}");

    let expected = vec![("a".to_string(), 2), ("b".to_string(), 7)];
    let linear = through_follower.query(Consistency::Linearizable, all_tallies).await.expect("linearizable query");
    assert!(linear.index >= once.index, "{} < {}", linear.index, once.index);
    assert_eq!(linear.value, expected);

    // A stale read may lag; once it reflects the write's index it shows the same rows.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stale = h.cluster(follower, NS).query(Consistency::Stale, all_tallies).await.expect("stale query");
        if stale.index >= once.index {
            assert_eq!(stale.value, expected);
            break;
        }
        assert!(Instant::now() < deadline, "the follower never applied {}", once.index);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    h.shutdown().await;
}
