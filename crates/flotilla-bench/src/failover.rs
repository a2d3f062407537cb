//! Failover: `kill -9` the leader under one continuous writer and time until writes succeed
//! again through a survivor; then restart the killed member and time until it serves.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::cluster::Cluster;
use crate::load::{key, Handle, ReadLevel};

/// Timeout of each write of the failover writer.
pub const WRITE_TIMEOUT: Duration = Duration::from_millis(100);
/// Acknowledged writes before the kill (the writer is in its steady state).
const WRITES_BEFORE_KILL: u32 = 20;
/// Longest the writer may go without success after the kill before the run is an error.
const PATIENCE: Duration = Duration::from_secs(30);

/// One failover run.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverSample {
    /// Member index (0-based) of the killed leader.
    pub killed: usize,
    /// From just before `kill -9` until a write sent after it was acknowledged, ms.
    pub failover_ms: f64,
    /// Writes that timed out or failed in between.
    pub failed_writes: u64,
    /// From restarting the killed member until a linearizable read through it returned the
    /// last acknowledged write, ms.
    pub restart_to_serving_ms: f64,
}

/// One run: find the leader, start the writer on the survivors, kill the leader once the
/// writer has `WRITES_BEFORE_KILL` acknowledgements, wait for the first write sent after the
/// kill to be acknowledged, restart the member, wait until it serves and the cluster is
/// healthy again. `key_base` makes this run's keys distinct.
pub async fn run_once(cluster: &mut Cluster, key_base: u64) -> anyhow::Result<FailoverSample> {
    cluster.wait_healthy(Duration::from_secs(60)).await?;
    let leader = cluster.leader().await?;
    let addrs = cluster.load_addrs();
    let mut survivors = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        if i != leader {
            // The handle's own timeout is a backstop; each write is bounded by WRITE_TIMEOUT.
            survivors.push(Handle::connect(cluster.protocol(), addr, Duration::from_secs(5)).await?);
        }
    }
    let (kill_tx, kill_rx) = watch::channel::<Option<Instant>>(None);
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(1);
    let writer = tokio::spawn(writer(survivors, key_base, kill_rx, ready_tx));

    // The writer says when it is in its steady state (or ends with an error).
    if ready_rx.recv().await.is_none() {
        return Err(writer.await?.err().unwrap_or_else(|| anyhow!("the writer stopped before the kill")));
    }
    // Failover runs from just before the signal; only a write sent after the signal was sent
    // counts as "writes succeed again" (an earlier one may have been committed by the old
    // leader before it died).
    let killed_at = Instant::now();
    let signalled = cluster.kill(leader)?;
    kill_tx.send_replace(Some(signalled));
    let result = writer.await?;
    let (acked_at, failed_writes, last_key) = match result {
        Ok(r) => r,
        Err(e) => return Err(e.context(format!("{} failover", cluster.system.name()))),
    };
    let failover = acked_at.saturating_duration_since(killed_at);

    // Restart the killed member; it serves once a linearizable read through it sees the last
    // acknowledged write.
    let restarted_at = Instant::now();
    cluster.restart(leader)?;
    let mut h = Handle::connect(cluster.protocol(), &addrs[leader], Duration::from_secs(1)).await?;
    let deadline = restarted_at + Duration::from_secs(60);
    loop {
        cluster.check_running()?;
        if let Ok(Ok(Some(_))) =
            tokio::time::timeout(Duration::from_secs(1), h.get(&last_key, ReadLevel::Linearizable)).await
        {
            break;
        }
        if Instant::now() >= deadline {
            bail!("restarted {} member {} did not serve within 60 s", cluster.system.name(), leader + 1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart_to_serving = restarted_at.elapsed();
    cluster.wait_healthy(Duration::from_secs(60)).await.context("after restarting the killed leader")?;
    Ok(FailoverSample {
        killed: leader,
        failover_ms: failover.as_secs_f64() * 1e3,
        failed_writes,
        restart_to_serving_ms: restart_to_serving.as_secs_f64() * 1e3,
    })
}

/// The continuous writer: one write at a time, each bounded by [`WRITE_TIMEOUT`]; on failure
/// it retries at once through the next survivor. Returns when a write *sent* after the kill
/// signal is acknowledged: (its acknowledgement time, failed writes since the kill, its key).
async fn writer(
    mut survivors: Vec<Handle>,
    key_base: u64,
    kill: watch::Receiver<Option<Instant>>,
    ready: mpsc::Sender<()>,
) -> anyhow::Result<(Instant, u64, String)> {
    let value = vec![b'f'; crate::load::VALUE_SIZE];
    let mut target = 0usize;
    let mut acked_before_kill = 0u32;
    let mut ready = Some(ready);
    let mut failed_after_kill = 0u64;
    let began = Instant::now();
    let mut n = 0u64;
    loop {
        let signalled = *kill.borrow();
        let now = Instant::now();
        match signalled {
            Some(at) if now.saturating_duration_since(at) > PATIENCE => {
                bail!("no write acknowledged within {PATIENCE:?} of the kill")
            }
            None if now.saturating_duration_since(began) > PATIENCE => {
                bail!("the writer could not make {WRITES_BEFORE_KILL} writes before the kill")
            }
            _ => {}
        }
        let k = key(key_base + n);
        n += 1;
        let sent = Instant::now();
        let ok = matches!(tokio::time::timeout(WRITE_TIMEOUT, survivors[target].put(&k, &value)).await, Ok(Ok(())));
        let acked = Instant::now();
        if ok {
            if signalled.is_some_and(|at| sent >= at) {
                return Ok((acked, failed_after_kill, k));
            }
            acked_before_kill += 1;
            if acked_before_kill >= WRITES_BEFORE_KILL {
                if let Some(r) = ready.take() {
                    // The receiver waits for exactly this message; if it is gone, so is the run.
                    let _ = r.send(()).await;
                }
            }
        } else {
            if signalled.is_some() {
                failed_after_kill += 1;
            }
            target = (target + 1) % survivors.len();
        }
    }
}
