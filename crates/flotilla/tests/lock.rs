//! Locks and elections over a three-node cluster: mutual exclusion with strictly increasing
//! fencing tokens, a crashed holder's lock freeing itself, and leadership passing on.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Harness;
use tokio::time::Instant;

const NS: &str = "default";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contenders_on_every_node_hold_one_at_a_time_with_increasing_tokens() {
    let h = Arc::new(Harness::start(3, 41, &[NS], |_| {}).await);
    h.leader(NS).await;
    // (token, entered, left) of every holding, in the order they entered.
    let log: Arc<Mutex<Vec<(u64, Instant, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..6usize {
        let (h, log) = (h.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let cluster = h.cluster(c % 3, NS);
                let held = cluster.lock("job", Duration::from_secs(5), Duration::from_secs(60)).await.expect("lock");
                let entered = Instant::now();
                tokio::time::sleep(Duration::from_millis(20)).await;
                let left = Instant::now();
                log.lock().unwrap().push((held.fencing_token(), entered, left));
                held.release().await.expect("release");
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task).await.expect("all contenders done").unwrap();
    }
    let mut log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 18);
    log.sort_by_key(|(_, entered, _)| *entered);
    for pair in log.windows(2) {
        let ((t1, _, left1), (t2, entered2, _)) = (pair[0], pair[1]);
        assert!(t2 > t1, "fencing tokens strictly increase across holders: {t1} then {t2}");
        assert!(entered2 >= left1, "two holders overlapped");
    }
    Arc::try_unwrap(h).ok().expect("no other handle").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_holders_lock_frees_itself_and_a_try_lock_does_not_wait() {
    let h = Harness::start(3, 42, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let first = h.cluster(f, NS).lock("db", Duration::from_secs(1), Duration::from_secs(10)).await.unwrap();
    let ttl = h.cluster(f, NS).min_lease_ttl();
    assert!(h.cluster(l, NS).try_lock("db", Duration::from_secs(1)).await.unwrap().is_none());
    let holder = h.cluster(l, NS).lock_holder("db").await.unwrap().expect("a holder");
    assert_eq!(holder.fencing_token, first.fencing_token());
    // The holder "crashes": it stops renewing and never releases.
    let (_, _, old_token) = first.detach();
    let started = Instant::now();
    let second = h.cluster(l, NS).lock("db", Duration::from_secs(1), ttl * 6).await.expect("freed by expiry");
    assert!(second.fencing_token() > old_token);
    assert!(started.elapsed() >= ttl / 2, "taken only once the crashed holder's lease ran out");
    second.release().await.unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_passes_to_the_next_candidate_when_the_leader_resigns() {
    let h = Harness::start(3, 43, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let a = h.cluster(l, NS);
    let b = h.cluster((l + 1) % 3, NS);
    let leader = a.campaign("scheduler", b"node-a", Duration::from_secs(5), Duration::from_secs(10)).await.unwrap();
    let seen = b.election_leader("scheduler").await.unwrap().expect("a leader");
    assert_eq!(seen.value, b"node-a");
    let waiting = tokio::spawn(async move {
        b.campaign("scheduler", b"node-b", Duration::from_secs(5), Duration::from_secs(30)).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second candidate waits while the first leads");
    let first_token = leader.fencing_token();
    leader.release().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), waiting).await.unwrap().unwrap().unwrap();
    assert!(next.fencing_token() > first_token);
    assert_eq!(a.election_leader("scheduler").await.unwrap().unwrap().value, b"node-b");
    h.shutdown().await;
}
