//! Tests of [`ReadIndexBatcher`]: rounds are shared by the reads that arrived before them and
//! never by a read that arrived after a round was asked for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::types::{LogId, NodeId, TypeConfig};
use flotilla_core::ApiError;
use openraft::vote::RaftLeaderIdExt;
use openraft::RaftTypeConfig;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ReadIndexBatcher;

fn log_id(index: u64) -> LogId {
    let leader: NodeId = libp2p_identity::Keypair::ed25519_from_bytes([7; 32]).expect("a key").public().to_peer_id();
    LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(1, leader), index)
}

/// A fake leader: round `n` reports its start, waits for a permit, then answers index `n`
/// (or the error set for it).
struct Leader {
    rounds: AtomicU64,
    started: mpsc::UnboundedSender<u64>,
    release: Semaphore,
    fail_round: Option<u64>,
}

impl Leader {
    fn new(fail_round: Option<u64>) -> (Arc<Self>, mpsc::UnboundedReceiver<u64>) {
        let (started, rx) = mpsc::unbounded_channel();
        (Arc::new(Self { rounds: AtomicU64::new(0), started, release: Semaphore::new(0), fail_round }), rx)
    }

    async fn round(&self) -> Result<LogId, ApiError> {
        let n = self.rounds.fetch_add(1, Ordering::SeqCst) + 1;
        self.started.send(n).expect("the test listens");
        self.release.acquire().await.expect("never closed").forget();
        match self.fail_round == Some(n) {
            true => Err(ApiError::NoLeader(format!("round {n} failed"))),
            false => Ok(log_id(n)),
        }
    }
}

fn read(
    batcher: &Arc<ReadIndexBatcher>,
    leader: &Arc<Leader>,
    within: Duration,
) -> JoinHandle<Result<LogId, ApiError>> {
    let (batcher, leader) = (batcher.clone(), leader.clone());
    tokio::spawn(async move { batcher.read_index(Instant::now() + within, || leader.round()).await })
}

const LONG: Duration = Duration::from_secs(60);

/// Yield until `n` reads wait in the pending batch (bounded: the reads are spawned tasks on
/// this single-threaded runtime, each needs a poll or two).
async fn until_pending(batcher: &ReadIndexBatcher, n: usize) {
    for _ in 0..10_000 {
        let waiting = batcher.pending.lock().unwrap().as_ref().map_or(0, |b| b.result.receiver_count());
        if waiting == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{n} reads never joined the pending batch");
}

async fn started(rx: &mut mpsc::UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(LONG, rx.recv()).await.expect("a round starts").expect("sender alive")
}

#[tokio::test]
async fn reads_arriving_during_a_round_share_the_next_one_and_never_the_current() {
    let batcher = Arc::new(ReadIndexBatcher::default());
    let (leader, mut rounds) = Leader::new(None);
    let first = read(&batcher, &leader, LONG);
    assert_eq!(started(&mut rounds).await, 1);
    let later: Vec<_> = (0..10).map(|_| read(&batcher, &leader, LONG)).collect();
    until_pending(&batcher, 10).await;
    leader.release.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap(), log_id(1));
    assert_eq!(started(&mut rounds).await, 2, "one round for the ten reads that waited");
    leader.release.add_permits(1);
    for read in later {
        assert_eq!(read.await.unwrap().unwrap(), log_id(2), "a read never takes a round asked before it arrived");
    }
    assert_eq!(leader.rounds.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_lone_read_runs_its_round_at_once() {
    let batcher = Arc::new(ReadIndexBatcher::default());
    let (leader, mut rounds) = Leader::new(None);
    for n in 1..=3 {
        let one = read(&batcher, &leader, LONG);
        assert_eq!(started(&mut rounds).await, n);
        leader.release.add_permits(1);
        assert_eq!(one.await.unwrap().unwrap(), log_id(n));
    }
}

#[tokio::test]
async fn a_rounds_error_reaches_every_read_of_its_batch() {
    let batcher = Arc::new(ReadIndexBatcher::default());
    let (leader, mut rounds) = Leader::new(Some(2));
    let first = read(&batcher, &leader, LONG);
    assert_eq!(started(&mut rounds).await, 1);
    let later: Vec<_> = (0..4).map(|_| read(&batcher, &leader, LONG)).collect();
    until_pending(&batcher, 4).await;
    leader.release.add_permits(2);
    assert!(first.await.unwrap().is_ok());
    assert_eq!(started(&mut rounds).await, 2);
    for read in later {
        assert!(matches!(read.await.unwrap(), Err(ApiError::NoLeader(_))));
    }
    // The next read asks again.
    let again = read(&batcher, &leader, LONG);
    assert_eq!(started(&mut rounds).await, 3);
    leader.release.add_permits(1);
    assert_eq!(again.await.unwrap().unwrap(), log_id(3));
}

#[tokio::test]
async fn when_a_rounds_driver_is_cancelled_another_read_of_its_batch_runs_it() {
    let batcher = Arc::new(ReadIndexBatcher::default());
    let (leader, mut rounds) = Leader::new(None);
    let first = read(&batcher, &leader, LONG);
    assert_eq!(started(&mut rounds).await, 1);
    // Five reads wait behind round 1; the first of them to get the lock drives round 2.
    let mut waiting: Vec<_> = (0..5).map(|_| read(&batcher, &leader, LONG)).collect();
    until_pending(&batcher, 5).await;
    leader.release.add_permits(1);
    assert!(first.await.unwrap().is_ok());
    assert_eq!(started(&mut rounds).await, 2);
    // The first of them asked for the lock first, and tokio's lock is fair: it drives round 2.
    let driver = waiting.remove(0);
    driver.abort();
    assert!(driver.await.unwrap_err().is_cancelled());
    assert_eq!(started(&mut rounds).await, 3, "a read of the cancelled round's batch runs it again");
    leader.release.add_permits(2);
    for read in waiting {
        assert_eq!(read.await.unwrap().unwrap(), log_id(3));
    }
}

#[tokio::test]
async fn a_read_leaves_at_its_deadline_and_the_others_keep_waiting() {
    let batcher = Arc::new(ReadIndexBatcher::default());
    let (leader, mut rounds) = Leader::new(None);
    let first = read(&batcher, &leader, LONG);
    assert_eq!(started(&mut rounds).await, 1);
    let hasty = read(&batcher, &leader, Duration::from_millis(50));
    let patient = read(&batcher, &leader, LONG);
    assert!(matches!(hasty.await.unwrap(), Err(ApiError::Timeout(_))));
    leader.release.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap(), log_id(1));
    assert_eq!(started(&mut rounds).await, 2);
    assert_eq!(patient.await.unwrap().unwrap(), log_id(2));
}
