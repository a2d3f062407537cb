//! Locks, leases and queues under seeded network faults (leaders isolated, partitions, lost
//! and delayed messages), checked against what their clients observed.
//!
//! - **Locks**: three contenders (one per node) take and release one lock, and sometimes
//!   abandon it as a crashed holder would. Sorted by when their acquisition returned, the
//!   fencing tokens strictly increase; and no holder's acquisition returned before the previous
//!   holder's last successful keep-alive was sent (that keep-alive proved the lease, and so the
//!   lock, still held then).
//! - **Leases**: a keeper renews a lease every quarter of its TTL through whichever node
//!   answers. If no two successful renewals are further apart than the TTL (measured from the
//!   start of one to the end of the next), the lease and its key must still exist at the end,
//!   whatever leader changes happened meanwhile.
//! - **Queues**: two producers push unique items, two consumers pop them; after healing the
//!   rest is drained. No item is seen twice, nothing is seen that was not pushed, and every
//!   acknowledged push is seen, except as many as there were pops with an unknown outcome.
//!
//! `FLOTILLA_COORD_CHAOS_SEEDS=n` (default 4) seeds, two at a time;
//! `FLOTILLA_COORD_CHAOS_SEED=n` runs one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Harness;
use flotilla::{ApiError, Cluster, Config, Consistency};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const NS: &str = "default";
/// How long the workload and the faults run per seed.
const RUN: Duration = Duration::from_secs(8);
const DEFAULT_SEEDS: u64 = 4;

fn fast(c: &mut Config) {
    c.heartbeat_ms = Some(100);
    c.election_min_ms = Some(250);
    c.election_max_ms = Some(500);
    c.request_timeout_ms = 2_000;
}

/// One holding of the lock, as its contender saw it.
#[derive(Debug, Clone, Copy)]
struct Holding {
    token: u64,
    acquired: Instant,
    /// When the last keep-alive that succeeded while holding was sent.
    last_proof: Instant,
}

/// What the queue's clients saw.
#[derive(Debug, Default)]
struct QueueLog {
    acked_pushes: BTreeSet<String>,
    unknown_pushes: BTreeSet<String>,
    seen: Vec<String>,
    unknown_pops: u64,
}

/// Whether an error leaves the outcome of a write unknown.
fn unknown(e: &ApiError) -> bool {
    e.outcome() == flotilla::Outcome::Unknown
}

async fn lock_contender(c: Cluster, until: Instant, seed: u64, holdings: Arc<Mutex<Vec<Holding>>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    while Instant::now() < until {
        let Ok(held) = c.lock("chaos", Duration::from_secs(1), Duration::from_secs(2)).await else { continue };
        let acquired = Instant::now();
        let mut last_proof = acquired;
        for _ in 0..rng.gen_range(1..4) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(20..120))).await;
            let sent = Instant::now();
            if c.lease_keep_alive(held.lease()).await.is_ok() {
                last_proof = sent;
            }
        }
        holdings.lock().unwrap().push(Holding { token: held.fencing_token(), acquired, last_proof });
        if rng.gen_bool(0.2) {
            held.detach(); // a crashed holder: the lock frees itself when the lease runs out
        } else {
            let _ = held.release().await;
        }
    }
}

/// TTL of the kept lease: long enough that a renewal gets through a fault (an isolation of
/// at most 1.5 s and the election after it) well within it.
const KEPT_LEASE_TTL: Duration = Duration::from_secs(5);

/// Renew a lease through any node; true when it was kept alive throughout (no gap > TTL).
async fn lease_keeper(clusters: Vec<Cluster>, until: Instant, ttl: Duration, lease: u64) -> bool {
    let mut last_ok_start: Option<Instant> = Some(Instant::now());
    let mut throughout = true;
    let mut node = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let start = Instant::now();
        match tokio::time::timeout(Duration::from_secs(1), clusters[node].lease_keep_alive(lease)).await {
            Ok(Ok(_)) => {
                let end = Instant::now();
                if last_ok_start.is_some_and(|prev| end.duration_since(prev) >= ttl) {
                    throughout = false;
                }
                last_ok_start = Some(start);
            }
            Ok(Err(ApiError::LeaseNotFound(_))) => return false,
            _ => node = (node + 1) % clusters.len(),
        }
    }
    throughout && last_ok_start.is_some_and(|prev| Instant::now().duration_since(prev) < ttl)
}

async fn producer(c: Cluster, until: Instant, who: usize, log: Arc<Mutex<QueueLog>>) {
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let item = format!("p{who}-{n}");
        match c.queue_push("work", item.as_bytes()).await {
            Ok(_) => log.lock().unwrap().acked_pushes.insert(item),
            Err(e) if unknown(&e) => log.lock().unwrap().unknown_pushes.insert(item),
            Err(_) => false,
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn consumer(c: Cluster, until: Instant, log: Arc<Mutex<QueueLog>>) {
    while Instant::now() < until {
        match c.queue_pop("work").await {
            Ok(Some(item)) => log.lock().unwrap().seen.push(String::from_utf8_lossy(&item.value).into_owned()),
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) if unknown(&e) => log.lock().unwrap().unknown_pops += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Faults until `until`: a random node isolated, or a lossy, slow network, then healed.
async fn nemesis(h: &Harness, until: Instant, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..900))).await;
        match rng.gen_range(0..3) {
            0 => h.network.isolate(h.ids[rng.gen_range(0..h.ids.len())], &h.ids),
            1 => {
                h.network.set_drop_rate(0.2);
                h.network.set_delay_ms(5, 40);
            }
            _ => {
                let leader = (0..h.ids.len()).find(|i| h.cluster(*i, NS).is_leader());
                if let Some(l) = leader {
                    h.network.isolate(h.ids[l], &h.ids);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..1_500))).await;
        h.network.heal();
        h.network.set_drop_rate(0.0);
        h.network.set_delay_ms(0, 0);
    }
}

fn check_locks(seed: u64, mut holdings: Vec<Holding>) -> Result<usize, String> {
    holdings.sort_by_key(|h| h.acquired);
    for pair in holdings.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.token <= a.token {
            return Err(format!("seed {seed}: token {} acquired after token {}", b.token, a.token));
        }
        if b.acquired < a.last_proof {
            return Err(format!(
                "seed {seed}: token {} acquired while token {} still proved its hold ({:?} earlier)",
                b.token,
                a.token,
                a.last_proof - b.acquired
            ));
        }
    }
    Ok(holdings.len())
}

fn check_queue(seed: u64, log: &QueueLog) -> Result<usize, String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for item in &log.seen {
        *counts.entry(item).or_default() += 1;
    }
    if let Some((item, n)) = counts.iter().find(|(_, n)| **n > 1) {
        return Err(format!("seed {seed}: item {item} popped {n} times"));
    }
    if let Some(item) = counts.keys().find(|i| !log.acked_pushes.contains(**i) && !log.unknown_pushes.contains(**i)) {
        return Err(format!("seed {seed}: item {item} popped but never pushed"));
    }
    let lost: Vec<&String> = log.acked_pushes.iter().filter(|i| !counts.contains_key(i.as_str())).collect();
    if lost.len() as u64 > log.unknown_pops {
        return Err(format!(
            "seed {seed}: {} acknowledged items lost (unknown pops: {}): {lost:?}",
            lost.len(),
            log.unknown_pops
        ));
    }
    Ok(log.seen.len())
}

async fn run_seed(seed: u64) -> Result<String, String> {
    let h = Arc::new(Harness::start(3, seed, &[NS], fast).await);
    h.leader(NS).await;
    let until = Instant::now() + RUN;
    let holdings: Arc<Mutex<Vec<Holding>>> = Arc::default();
    let queue: Arc<Mutex<QueueLog>> = Arc::default();
    let c0 = h.cluster(0, NS);
    let lease = c0.lease_grant(0, KEPT_LEASE_TTL).await.map_err(|e| e.to_string())?;
    c0.set_with_lease(b"alive", b"yes", lease.id).await.map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    for i in 0..3 {
        tasks.push(tokio::spawn(lock_contender(h.cluster(i, NS), until, seed * 10 + i as u64, holdings.clone())));
    }
    for (who, node) in [(0, 1), (1, 2)] {
        tasks.push(tokio::spawn(producer(h.cluster(node, NS), until, who, queue.clone())));
        tasks.push(tokio::spawn(consumer(h.cluster((node + 1) % 3, NS), until, queue.clone())));
    }
    let keeper = tokio::spawn(lease_keeper(
        (0..3).map(|i| h.cluster(i, NS)).collect(),
        until,
        Duration::from_secs(lease.ttl_secs),
        lease.id,
    ));
    nemesis(&h, until, seed).await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let kept_alive = keeper.await.map_err(|e| e.to_string())?;
    // Healed: drain the queue and look at the lease.
    h.network.heal();
    let l = h.leader(NS).await;
    let c = h.cluster(l, NS);
    // Retryable errors (a leader still catching up with the healed network) are retried within
    // a generous bound; a pop whose outcome is unknown counts as such.
    let patience = Instant::now() + Duration::from_secs(30);
    loop {
        match c.queue_pop("work").await {
            Ok(Some(item)) => queue.lock().unwrap().seen.push(String::from_utf8_lossy(&item.value).into_owned()),
            Ok(None) => break,
            Err(e) if e.is_retryable() && Instant::now() < patience => {
                if unknown(&e) {
                    queue.lock().unwrap().unknown_pops += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("seed {seed}: draining the queue: {e}")),
        }
    }
    if kept_alive {
        let status = loop {
            match c.lease_time_to_live(lease.id, false).await {
                Err(e) if e.is_retryable() && Instant::now() < patience => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => break other,
            }
        };
        let key = loop {
            match c.get(b"alive", Consistency::Linearizable).await {
                Err(e) if e.is_retryable() && Instant::now() < patience => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => break other.map_err(|e| e.to_string())?,
            }
        };
        if status.is_err() || key.value.is_none() {
            return Err(format!("seed {seed}: the lease was kept alive within its TTL throughout, yet it expired"));
        }
    }
    let locks = check_locks(seed, holdings.lock().unwrap().clone())?;
    let items = check_queue(seed, &queue.lock().unwrap())?;
    let leader_changes: u64 = (0..3).map(|i| h.cluster(i, NS).counters().2).max().unwrap_or(0);
    let summary = format!(
        "seed {seed}: {locks} lock holdings, {items} queue items, lease kept alive throughout: {kept_alive}, \
         leader changes seen: {leader_changes}"
    );
    Arc::try_unwrap(h).ok().expect("no other handle").shutdown().await;
    Ok(summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locks_leases_and_queues_keep_their_promises_under_faults() {
    let seeds: Vec<u64> = match std::env::var("FLOTILLA_COORD_CHAOS_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(one) => vec![one],
        None => {
            let n =
                std::env::var("FLOTILLA_COORD_CHAOS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEEDS);
            (1..=n).collect()
        }
    };
    let mut failures = Vec::new();
    for pair in seeds.chunks(2) {
        let runs: Vec<_> = pair.iter().map(|s| tokio::spawn(run_seed(*s))).collect();
        for run in runs {
            match run.await.expect("the seed's task") {
                Ok(summary) => eprintln!("{summary}"),
                Err(failure) => failures.push(failure),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
