//! A follower installing a large snapshot of one namespace must not stall the other
//! namespaces of its node: they share its store's single writer (issue 11, point 6).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Harness};
use tokio::time::Instant;

const BIG: &str = "big";
const SMALL: &str = "small";
/// 200 values of 1 MiB: the snapshot holds 210 MB. `FLOTILLA_LOAD_VALUES` overrides it.
const VALUES: usize = 200;
const VALUE_BYTES: usize = 1 << 20;
/// Bound of filling BIG on a loaded CI machine (debug build).
const FILL: Duration = Duration::from_secs(300);
/// Bound of the catch-up (snapshot, transfer, install) on a loaded CI machine.
const CATCH_UP: Duration = Duration::from_secs(300);

fn tweak(c: &mut flotilla::Config) {
    c.snapshot_every = 50;
    c.keep_logs_behind_snapshot = 5;
    c.max_value_bytes = 2 * VALUE_BYTES;
}

// About 75 s in a debug build on a shared 2-core machine (45 s to fill, 30 s to catch up).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_namespace_keeps_its_leader_and_writes_while_a_follower_installs_a_200_mb_snapshot() {
    let mut h = Harness::start(3, 23, &[BIG, SMALL], tweak).await;
    eprintln!("cluster formed");
    let lb = h.leader(BIG).await;
    let f = (0..3).find(|i| *i != lb).unwrap();
    h.crash(f).await;

    // Fill BIG while the follower is away. Set-to-a-constant is idempotent, so a write whose
    // outcome is unknown (the loaded machine may move the leader meanwhile) is simply retried.
    let started = Instant::now();
    let values = std::env::var("FLOTILLA_LOAD_VALUES").ok().and_then(|v| v.parse().ok()).unwrap_or(VALUES);
    let mut last = 0;
    for i in 0..values {
        let value = vec![i as u8; VALUE_BYTES];
        let key = format!("v{i:04}");
        let mut attempts = 0;
        loop {
            let l = h.leader_among(BIG, &h.live()).await;
            match h.cluster(l, BIG).set(key.as_bytes(), &value).await {
                Ok(w) => {
                    last = last.max(w.index);
                    break;
                }
                Err(e) => {
                    eprintln!("writing {key}: {e}");
                    attempts += 1;
                    assert!(attempts < 20, "writing {key} keeps failing: {e}");
                }
            }
        }
        assert!(started.elapsed() < FILL, "filling BIG took longer than {FILL:?}: {i} values written");
    }
    let lb = h.leader_among(BIG, &h.live()).await;
    let leader = h.cluster(lb, BIG);
    eventually("the leader snapshots BIG and purges its log", || leader.state().snapshot_index + 60 > last).await;
    eprintln!("filled {values} x {VALUE_BYTES} bytes in {:?}", started.elapsed());

    // The follower comes back: it can only catch up on BIG through the snapshot.
    let ls = h.leader_among(SMALL, &h.live()).await;
    let small_leader = h.ids[ls];
    let small_term = h.cluster(ls, SMALL).state().term;
    let stop = Arc::new(AtomicBool::new(false));
    let small = h.cluster(ls, SMALL);
    let stop_writes = stop.clone();
    let probe = tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut n = 0u64;
        while !stop_writes.load(Ordering::SeqCst) {
            let t = Instant::now();
            small.set(format!("p{n}").as_bytes(), b"x").await.expect("SMALL keeps serving writes");
            latencies.push(t.elapsed());
            n += 1;
        }
        latencies
    });
    let reboot = Instant::now();
    h.reboot(f).await;
    let deadline = Instant::now() + CATCH_UP;
    while h.cluster(f, BIG).state().applied_index < last {
        assert!(Instant::now() < deadline, "the follower never caught up on BIG");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = reboot.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut latencies = probe.await.unwrap();

    let state = h.cluster(f, BIG).state();
    assert!(state.snapshot_index > 0, "the follower caught up through a snapshot");
    let key = format!("v{:04}", values - 1);
    let value = h.cluster(f, BIG).get(key.as_bytes(), flotilla::Consistency::Stale).await.unwrap().value;
    assert_eq!(value.map(|v| v.len()), Some(VALUE_BYTES));

    latencies.sort();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100).saturating_sub(1)];
    eprintln!(
        "follower caught up in {caught_up:?}; {} SMALL writes meanwhile, p99 {p99:?}, max {:?}",
        latencies.len(),
        latencies.last()
    );
    assert!(latencies.len() >= 10, "too few SMALL writes to measure: {}", latencies.len());
    assert!(p99 < Duration::from_secs(1), "SMALL write p99 {p99:?} during the install");
    let now = h.cluster(ls, SMALL).state();
    assert_eq!((now.leader, now.term), (Some(small_leader), small_term), "SMALL kept its leader");
    h.shutdown().await;
}
