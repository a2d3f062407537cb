//! Linearizability under seeded chaos, in process.
//!
//! For each seed: a 3-node (sometimes 5-node) cluster on real stores over the in-process network,
//! serving three namespaces (two busy, one touched so rarely that it quiesces between
//! operations: woken by a write, a read or a failure, see `DESIGN-namespaces.md`),
//! concurrent clients writing unique values, reading linearizably and doing compare-and-sets
//! (a read, then a write conditioned on the mod revision it saw) through random nodes,
//! a fault schedule drawn from the seed (partitions, an isolated leader, one-way cuts, message
//! loss, delay, crash and reboot), then a heal and a final linearizable read of every key. Every
//! operation is recorded with [`flotilla_check::Recorder`] and the history is checked one key at
//! a time (a key is `namespace/key`). Several seeds run at once.
//!
//! Watchers (one per namespace, sometimes two on [`NS`], each on a random range) follow watches
//! through random nodes while the clients run, and watch again after every end (an error, a
//! crash of their node, or a random hop to another node) from the revision after the last one
//! they received. After the heal each namespace's whole history is read once, and every
//! watcher's stream and every acknowledged write's revision are checked against it
//! (`common/watch_check.rs`: no duplicate, no gap, same events, right previous states).
//!
//! - `FLOTILLA_CHAOS_SEEDS=n`: how many seeds (default [`DEFAULT_SEEDS`]), starting at
//!   `FLOTILLA_CHAOS_FIRST` (default 0);
//! - `FLOTILLA_CHAOS_SEED=n`: run only seed `n` (replays its fault schedule; thread timing
//!   still differs from run to run);
//! - `FLOTILLA_CHAOS_PARALLEL=n`: seeds at once (default [`DEFAULT_PARALLEL`]).
//!
//! A failure prints the seed and the minimal non-linearizable history of the key, or the
//! watcher and revision whose stream does not match the history.

mod common;
#[path = "common/watch_check.rs"]
mod watch_check;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use common::Harness;
use flotilla::kv::{EventKind, KeyValue, RangeEnd, WatchEvent};
use flotilla::{ApiError, Cluster, Config, Consistency, Node, Precondition, Role, Watch, WatchMessage, WatchRequest};
use flotilla_check::{check_all, Budget, History, Op, Outcome, Recorder, Report, Ticket, Value, Verdict};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::RwLock;
use tokio::time::Instant;
use watch_check::{check_acknowledged, check_watcher, Ack, Reference, WatchSpec, WatcherLog};

/// The namespace the faults aim at (its leader is "the leader"); the single-namespace tests
/// below use it too.
const NS: &str = "default";
/// Every namespace of a seed: [`NS`], a second busy one whose leader may sit on another node,
/// and one that clients touch about once in [`IDLE_ONE_IN`] operations.
const NAMESPACES: [&str; 3] = [NS, "busy", IDLE];
const IDLE: &str = "idle";
/// About one operation in this many goes to [`IDLE`]: with a few hundred operations a second
/// in all, it stays quiet for one to a few seconds at a time, longer than [`QUIESCE_AFTER_MS`]
/// plus the leader's extra wait, so it quiesces and is woken again during a seed.
const IDLE_ONE_IN: u32 = 300;
/// Quiet time after which a namespace quiesces in these tests (far below the default, so it
/// happens within a seed).
const QUIESCE_AFTER_MS: u64 = 400;
const KEYS: [&str; 3] = ["a", "b", "c"];
/// Share of a client's operations that are compare-and-sets (each is a read and a conditional
/// write, so it costs about two plain operations); the rest are half writes, half reads.
const CAS_SHARE: f64 = 0.2;

/// Seeds per run when `FLOTILLA_CHAOS_SEEDS` is not set: sized for about two minutes on a
/// 2-core machine (40 seeds took about 25 s there, with other builds running).
const DEFAULT_SEEDS: u64 = 200;
/// Seeds in flight at once when `FLOTILLA_CHAOS_PARALLEL` is not set. A seed mostly waits
/// (elections, timeouts, fault phases); beyond about 8 at once, 2 debug-build cores saturate
/// and operations slow down more than seeds speed up.
const DEFAULT_PARALLEL: usize = 8;

/// Server-side deadline of one request (forwarding and retries included).
const REQUEST_TIMEOUT_MS: u64 = 1_200;
/// Client-side deadline of one operation: past it the client gives up (outcome unknown).
const OP_DEADLINE: Duration = Duration::from_millis(1_600);
/// How long the cluster may take to serve the final reads once everything is healed.
const RECOVERY: Duration = Duration::from_secs(30);

/// Search budget per key; histories here have at most a few hundred operations per key and
/// check in milliseconds, so running out means something is off.
const BUDGET: Budget = Budget { max_steps: 50_000_000, max_time: Duration::from_secs(60) };

/// Short Raft timeouts so a seed takes a few seconds: elections, retries and the fault phases
/// all scale with them. The heartbeat is what an idle cluster spends its CPU on (a third of a
/// core per debug-build cluster at 30 ms, an eighth at 100 ms), and CPU is what bounds how many
/// seeds run at once.
fn fast(c: &mut Config) {
    c.heartbeat_ms = Some(100);
    c.election_min_ms = Some(250);
    c.election_max_ms = Some(500);
    c.request_timeout_ms = REQUEST_TIMEOUT_MS;
    c.quiesce_after_ms = Some(QUIESCE_AFTER_MS);
}

/// [`fast`], plus frequent snapshots so followers that fell behind catch up through one.
fn fast_small_snapshots(c: &mut Config) {
    fast(c);
    c.snapshot_every = 40;
    c.keep_logs_behind_snapshot = 10;
}

/// [`fast`], with the Raft logs in the write-ahead log, in segments of 1 MiB (the smallest;
/// values and frames made small enough for it) so that a seed fills some (every group commit
/// takes at least a 4 KiB block) and seeds with small snapshots recycle them.
fn fast_wal(c: &mut Config) {
    fast(c);
    c.write_ahead_log = true;
    c.max_value_bytes = 256 << 10;
    c.max_frame_bytes = 512 << 10;
    c.wal_segment_mib = 1;
}

/// [`fast_small_snapshots`] on the write-ahead log, as [`fast_wal`].
fn fast_small_snapshots_wal(c: &mut Config) {
    fast_wal(c);
    c.snapshot_every = 40;
    c.keep_logs_behind_snapshot = 10;
}

/// Where the seeds' nodes keep their Raft logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Logs {
    Tables,
    WriteAheadLog,
}

/// Seeds of [`linearizable_under_seeded_chaos_on_the_write_ahead_log`] when
/// `FLOTILLA_CHAOS_WAL_SEEDS` is not set: the suite above covers the rest of the system, this
/// one the log's own paths (appends, truncations, purges and recycling under crashes).
const DEFAULT_WAL_SEEDS: u64 = 40;

// ---------------------------------------------------------------------------------------------
// The plan of one seed.

/// One fault, with its nodes chosen when it is applied.
#[derive(Clone, Debug)]
enum Fault {
    /// Cut `minority` nodes (chosen at random) off from the rest, both ways.
    Partition { minority: usize, with_leader: bool },
    /// Cut the current leader off from everyone.
    IsolateLeader,
    /// Drop everything on one direction of one link touching the leader.
    CutOneWay { from_leader: bool },
    /// Drop this fraction of messages.
    Loss(f64),
    /// Delay every message by up to this many milliseconds.
    Delay(u64),
    /// Crash a node (the leader or a random one); it reboots at the heal.
    Crash { leader: bool },
}

#[derive(Clone, Debug)]
struct Phase {
    faults: Vec<Fault>,
    /// How long the faults last.
    length: Duration,
    /// How long the cluster runs fault-free afterwards.
    calm: Duration,
}

#[derive(Clone, Debug)]
struct Plan {
    nodes: usize,
    clients: usize,
    small_snapshots: bool,
    warmup: Duration,
    phases: Vec<Phase>,
}

impl Plan {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_c4a0_5000_0000);
        let nodes = if rng.gen_ratio(1, 6) { 5 } else { 3 };
        let phases = (0..rng.gen_range(1..=3))
            .map(|_| {
                let faults = (0..rng.gen_range(1..=2)).map(|_| Self::fault(&mut rng, nodes)).collect();
                Phase {
                    faults,
                    // From shorter than an election timeout to a few of them.
                    length: Duration::from_millis(rng.gen_range(200..=1_200)),
                    calm: Duration::from_millis(rng.gen_range(100..=600)),
                }
            })
            .collect();
        Plan {
            nodes,
            clients: rng.gen_range(4..=6),
            small_snapshots: rng.gen_bool(0.3),
            warmup: Duration::from_millis(rng.gen_range(50..=300)),
            phases,
        }
    }

    fn fault(rng: &mut StdRng, nodes: usize) -> Fault {
        match rng.gen_range(0..6) {
            0 => Fault::Partition { minority: rng.gen_range(1..=(nodes - 1) / 2), with_leader: rng.gen_bool(0.5) },
            1 => Fault::IsolateLeader,
            2 => Fault::CutOneWay { from_leader: rng.gen_bool(0.5) },
            3 => Fault::Loss(rng.gen_range(0.05..0.4)),
            4 => Fault::Delay(rng.gen_range(5..=40)),
            _ => Fault::Crash { leader: rng.gen_bool(0.5) },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running one seed.

/// What the clients share.
struct Ctx {
    harness: RwLock<Harness>,
    recorder: Recorder,
    next_value: AtomicU64,
    stop: AtomicBool,
    /// Voters removed by leaders that took them for members that lost their data (counted per
    /// node in memory, so collected before each crash and at the end).
    amnesia: AtomicU64,
    /// Compare-and-sets refused before they were proposed (recorded as unknown, see [`cas`]).
    cas_refused: AtomicU64,
    /// Acknowledged writes with the revision each was answered with, per namespace: the
    /// watch check finds each in the history.
    acks: Mutex<BTreeMap<String, Vec<Ack>>>,
    /// Set when the cluster did not recover: watchers stop at once, unchecked.
    watchers_abandon: AtomicBool,
}

/// How many members node `i` removed, as leader, for having lost their data. No node of this
/// test ever loses its data, so any is a false alarm.
fn amnesia_removals(h: &Harness, i: usize) -> u64 {
    let status = h.cluster(i, NS).formation_status();
    status.and_then(|s| s.counters.get("amnesia").copied()).unwrap_or(0)
}

/// A handle on a random running node (fetched per operation: a handle keeps its node's store
/// open, so none may outlive a crash for long).
async fn random_cluster(ctx: &Ctx, rng: &mut StdRng, ns: &str) -> Option<Cluster> {
    let h = ctx.harness.read().await;
    let live = h.live();
    let i = *live.choose(rng)?;
    Some(h.cluster(i, ns))
}

/// The namespace of a client's next operation: [`IDLE`] rarely, else one of the busy two.
fn random_namespace(rng: &mut StdRng) -> &'static str {
    if rng.gen_ratio(1, IDLE_ONE_IN) {
        IDLE
    } else {
        NAMESPACES[rng.gen_range(0..2)]
    }
}

/// The key the checker sees: operations on one key of one namespace form one register.
fn checked_key(cluster: &Cluster, key: &str) -> String {
    format!("{}/{key}", cluster.namespace())
}

/// The running node that believes it leads, if any (no waiting).
fn current_leader(h: &Harness) -> Option<usize> {
    h.live().into_iter().find(|i| h.cluster(*i, NS).is_leader())
}

/// How a failed write ended, as far as the client can tell: the error itself says whether
/// the write may have been applied (the forwarding layer upgrades any error that follows an
/// attempt which may have been proposed), and the checker holds the API to that promise.
fn write_failure(e: &ApiError) -> Outcome {
    match e.outcome() {
        flotilla::Outcome::NotApplied => Outcome::Fail,
        flotilla::Outcome::Unknown => Outcome::Unknown,
    }
}

/// A failed read observed nothing; the checker ignores it either way.
fn read_failure(e: &ApiError) -> Outcome {
    match e {
        ApiError::Timeout(_) => Outcome::Unknown,
        _ => Outcome::Fail,
    }
}

fn value_of(bytes: Option<Vec<u8>>) -> Option<Value> {
    bytes.map(|b| Value(String::from_utf8_lossy(&b).into_owned()))
}

/// Record one write of a fresh unique value through `cluster`.
async fn write(ctx: &Ctx, client: u64, cluster: Cluster, key: &str) -> Outcome {
    let value = format!("v{}", ctx.next_value.fetch_add(1, Ordering::Relaxed));
    let ticket = ctx.recorder.invoke(client, checked_key(&cluster, key), Op::write(value.as_str()));
    let result = tokio::time::timeout(OP_DEADLINE, cluster.set(key.as_bytes(), value.as_bytes())).await;
    let outcome = match result {
        Ok(Ok(written)) => acknowledged(ctx, &cluster, key, &value, written.revision),
        Ok(Err(e)) => write_failure(&e),
        Err(_) => Outcome::Unknown,
    };
    ctx.recorder.complete(ticket, outcome).expect("fresh ticket");
    outcome
}

/// Record one read of `key` through `cluster`.
async fn read(ctx: &Ctx, client: u64, cluster: Cluster, key: &str, consistency: Consistency) -> Outcome {
    let ticket = ctx.recorder.invoke(client, checked_key(&cluster, key), Op::read());
    let result = tokio::time::timeout(OP_DEADLINE, cluster.get(key.as_bytes(), consistency)).await;
    drop(cluster);
    let outcome = match result {
        Ok(Ok(read)) => {
            ctx.recorder.complete_read(ticket, value_of(read.value)).expect("fresh ticket");
            return Outcome::Ok;
        }
        Ok(Err(e)) => read_failure(&e),
        Err(_) => Outcome::Unknown,
    };
    ctx.recorder.complete(ticket, outcome).expect("fresh ticket");
    outcome
}

/// Record one compare-and-set of `key` through `cluster`: a read (recorded too) learns the
/// value and its mod revision, then a fresh unique value is written only if the mod revision
/// is still that one (or, if the key was absent, only if it still is).
///
/// The checker compares values, the store mod revisions. They agree because every write of a
/// key writes a value never written to it before, and the store applies a write at most once
/// (retries are deduplicated): the value read names exactly one revision, so "the mod
/// revision is still r" holds exactly when "the value is still the one read" does. Writing a
/// value twice (even by a retried write) would break this.
///
/// A failed precondition means the comparison failed: recorded as [`Outcome::Fail`], which
/// the checker takes as "the key did not hold the value read". A refusal for another reason
/// (no leader, before any proposal) observed nothing, so it is recorded as
/// [`Outcome::Unknown`] (which allows that it never happened) and counted apart.
async fn cas(ctx: &Ctx, client: u64, cluster: Cluster, key: &str, consistency: Consistency) -> Outcome {
    let checked = checked_key(&cluster, key);
    let ticket = ctx.recorder.invoke(client, checked.as_str(), Op::read());
    let result = tokio::time::timeout(OP_DEADLINE, cluster.get(key.as_bytes(), consistency)).await;
    let read = match result {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return complete(ctx, ticket, read_failure(&e)),
        Err(_) => return complete(ctx, ticket, Outcome::Unknown),
    };
    let expected = value_of(read.value);
    ctx.recorder.complete_read(ticket, expected.clone()).expect("fresh ticket");
    let condition = match (&expected, read.key_revisions) {
        (None, _) => Precondition::Absent,
        (Some(_), Some(revisions)) => Precondition::ModRevision(revisions.mod_revision),
        // A present value always comes with its revisions; without them there is nothing to
        // compare: the read alone is the operation.
        (Some(_), None) => return Outcome::Ok,
    };
    let value = format!("v{}", ctx.next_value.fetch_add(1, Ordering::Relaxed));
    let ticket = ctx.recorder.invoke(client, checked, Op::Cas { expected, new: value.as_str().into() });
    let result = tokio::time::timeout(OP_DEADLINE, cluster.put_if(key.as_bytes(), value.as_bytes(), condition, None));
    let result = result.await;
    let outcome = match result {
        Ok(Ok(written)) => acknowledged(ctx, &cluster, key, &value, written.revision),
        Ok(Err(ApiError::PreconditionFailed { .. })) => Outcome::Fail,
        Ok(Err(e)) => {
            if write_failure(&e) == Outcome::Fail {
                ctx.cas_refused.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Unknown
        }
        Err(_) => Outcome::Unknown,
    };
    complete(ctx, ticket, outcome)
}

/// Note that the write of `value` to `key` through `cluster` was acknowledged at `revision`,
/// for the watch check; returns [`Outcome::Ok`].
fn acknowledged(ctx: &Ctx, cluster: &Cluster, key: &str, value: &str, revision: u64) -> Outcome {
    let ack = Ack { key: key.into(), value: value.into(), revision };
    let mut acks = ctx.acks.lock().unwrap_or_else(|p| p.into_inner());
    acks.entry(cluster.namespace().to_string()).or_default().push(ack);
    Outcome::Ok
}

/// Record that the operation of `ticket` ended with `outcome`, and return it.
fn complete(ctx: &Ctx, ticket: Ticket, outcome: Outcome) -> Outcome {
    ctx.recorder.complete(ticket, outcome).expect("fresh ticket");
    outcome
}

/// One client: random reads, writes and compare-and-sets on random keys through random nodes
/// until told to stop.
async fn client(ctx: Arc<Ctx>, mut rng: StdRng, consistency: Consistency) {
    let mut id = ctx.recorder.new_client();
    while !ctx.stop.load(Ordering::Relaxed) {
        let key = *KEYS.choose(&mut rng).expect("keys");
        let ns = random_namespace(&mut rng);
        let Some(cluster) = random_cluster(&ctx, &mut rng, ns).await else {
            // Every node is down: think time before looking again, not synchronisation.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let outcome = if rng.gen_bool(CAS_SHARE) {
            cas(&ctx, id, cluster, key, consistency).await
        } else if rng.gen_bool(0.5) {
            write(&ctx, id, cluster, key).await
        } else {
            read(&ctx, id, cluster, key, consistency).await
        };
        if outcome == Outcome::Unknown {
            // The request may still be in flight: carry on as a new client.
            id = ctx.recorder.new_client();
        }
        if outcome != Outcome::Ok {
            // Think time after a failure, so clients do not spin against an unavailable cluster.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(5..=25))).await;
        }
    }
}

/// Apply `fault`; returns the node it crashed, if any.
async fn inject(ctx: &Ctx, fault: &Fault, rng: &mut StdRng) -> Option<usize> {
    let h = ctx.harness.read().await;
    let all = h.ids.clone();
    let live = h.live();
    let leader = current_leader(&h).or_else(|| live.choose(rng).copied());
    match fault {
        Fault::Partition { minority, with_leader } => {
            let mut order: Vec<usize> = (0..all.len()).collect();
            order.shuffle(rng);
            if let (true, Some(l)) = (*with_leader, leader) {
                order.retain(|i| *i != l);
                order.insert(0, l);
            }
            let side: Vec<_> = order[..*minority].iter().map(|i| all[*i]).collect();
            h.network.partition(&side, &all);
        }
        Fault::IsolateLeader => {
            if let Some(l) = leader {
                h.network.isolate(all[l], &all);
            }
        }
        Fault::CutOneWay { from_leader } => {
            if let Some(l) = leader {
                let other = *(0..all.len()).filter(|i| *i != l).collect::<Vec<_>>().choose(rng).expect("peers");
                let (from, to) = if *from_leader { (l, other) } else { (other, l) };
                h.network.cut_one_way(all[from], all[to]);
            }
        }
        Fault::Loss(rate) => h.network.set_drop_rate(*rate),
        Fault::Delay(max) => h.network.set_delay_ms(0, *max),
        Fault::Crash { leader: at_leader } => {
            let target = if *at_leader { leader } else { live.choose(rng).copied() };
            // Keep a quorum of nodes running, so the cluster can still make progress.
            let quorum = all.len() / 2 + 1;
            if let Some(i) = target.filter(|_| live.len() > quorum) {
                ctx.amnesia.fetch_add(amnesia_removals(&h, i), Ordering::Relaxed);
                drop(h);
                ctx.harness.write().await.crash(i).await;
                return Some(i);
            }
        }
    }
    None
}

/// Undo every fault: links, loss and delay, and reboot the crashed nodes.
async fn heal(ctx: &Ctx, crashed: &mut Vec<usize>) {
    let mut h = ctx.harness.write().await;
    h.network.heal();
    h.network.set_drop_rate(0.0);
    h.network.set_delay_ms(0, 0);
    for i in crashed.drain(..) {
        h.reboot(i).await;
    }
}

/// Wait until every running node agrees on one leader of `ns` that knows it leads.
async fn agreed_leader(h: &Harness, ns: &str, deadline: Instant) -> Result<usize, String> {
    loop {
        let live = h.live();
        let leaders: Vec<_> = live.iter().map(|i| h.cluster(*i, ns).leader()).collect();
        if let Some(Some(l)) = leaders.first() {
            if leaders.iter().all(|x| x == &Some(*l)) {
                if let Some(i) = live.iter().copied().find(|i| h.ids[*i] == *l) {
                    if h.cluster(i, ns).state().role == Role::Leader {
                        return Ok(i);
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("{ns}: no agreed leader {RECOVERY:?} after healing: nodes {live:?} see {leaders:?}"));
        }
        // Polling interval while the cluster settles.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read every key of `ns` linearizably through one node, retrying (and recording every
/// attempt) until one read of each key succeeds.
async fn final_reads(ctx: &Ctx, ns: &str, node: usize, deadline: Instant) -> Result<(), String> {
    let client = ctx.recorder.new_client();
    for key in KEYS {
        loop {
            let cluster = ctx.harness.read().await.cluster(node, ns);
            if read(ctx, client, cluster, key, Consistency::Linearizable).await == Outcome::Ok {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {node} served no linearizable read of {ns}/{key} {RECOVERY:?} after healing"
                ));
            }
            // Retry pacing while the cluster settles after the heal.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Where the nodes keep their data: `FLOTILLA_CHAOS_TMPDIR`, else `/dev/shm` when present.
/// In-process crashes never lose the page cache, so fsync durability is not what this test
/// exercises, and memory-backed stores let each seed do several times more operations.
fn data_root() -> Option<std::path::PathBuf> {
    if let Ok(dir) = std::env::var("FLOTILLA_CHAOS_TMPDIR") {
        return Some(dir.into());
    }
    let shm = std::path::Path::new("/dev/shm");
    shm.is_dir().then(|| shm.to_path_buf())
}

/// [`Harness::start`] with the data directories under [`data_root`].
async fn start_in_memory(n: usize, seed: u64, tweak: fn(&mut Config)) -> Harness {
    let mut h = Harness::new(n, seed, &NAMESPACES, tweak);
    if let Some(root) = data_root() {
        for dir in h.dirs.iter_mut() {
            if let Ok(d) = tempfile::tempdir_in(&root) {
                *dir = d;
            }
        }
    }
    for i in 0..n {
        h.boot(i).await;
    }
    for ns in NAMESPACES {
        h.wait_voters(ns, n).await;
    }
    h
}

/// The outcome of one seed.
struct SeedRun {
    seed: u64,
    plan: Plan,
    report: Report,
    elapsed: Duration,
    /// Latencies of the successful writes and reads.
    write_latency: Vec<Duration>,
    read_latency: Vec<Duration>,
    /// See [`amnesia_removals`].
    amnesia: u64,
    /// Why the cluster did not recover after healing, if it did not.
    liveness: Option<String>,
    /// Whether [`IDLE`] was seen quiesced on some node while the clients ran.
    idle_quiesced: bool,
    /// How the compare-and-sets ended.
    cas: CasCounts,
    /// What the watch check found.
    watch: WatchReport,
}

/// How the compare-and-sets of a history ended.
#[derive(Clone, Copy, Debug, Default)]
struct CasCounts {
    ok: usize,
    /// The comparison failed (precondition failed).
    failed: usize,
    /// Outcome unknown, refused ones included.
    unknown: usize,
    /// Refused before being proposed (among `unknown`).
    refused: u64,
}

impl CasCounts {
    fn of(history: &History, refused: u64) -> Self {
        let mut counts = CasCounts { refused, ..Self::default() };
        for e in history.entries().iter().filter(|e| e.op.is_cas()) {
            match e.effective_outcome() {
                Outcome::Ok => counts.ok += 1,
                Outcome::Fail => counts.failed += 1,
                Outcome::Unknown => counts.unknown += 1,
            }
        }
        counts
    }

    fn add(&mut self, other: CasCounts) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.unknown += other.unknown;
        self.refused += other.refused;
    }
}

impl std::fmt::Display for CasCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ok, {} failed comparison, {} unknown ({} of them refused before being proposed)",
            self.ok, self.failed, self.unknown, self.refused
        )
    }
}

/// Look, until `stop`, whether [`IDLE`] quiesces on any running node (so the run shows that
/// quiesced groups were exercised, not only awake ones). Polls every 50 ms.
async fn watch_idle(ctx: Arc<Ctx>) -> bool {
    while !ctx.stop.load(Ordering::Relaxed) {
        {
            let h = ctx.harness.read().await;
            if h.live().into_iter().any(|i| h.cluster(i, IDLE).is_quiesced()) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Watchers: streams followed through the faults, checked against the history afterwards
// (see `common/watch_check.rs`).

/// Progress notifications on quiet watches: how a watcher whose keys stopped changing learns
/// that it has covered the final revision.
const WATCH_PROGRESS: Duration = Duration::from_millis(200);
/// How often a watcher waiting for a message looks whether its node crashed.
const WATCH_POLL: Duration = Duration::from_millis(100);
/// About one message in this many, a roaming watcher moves to another node (resuming after
/// the last revision it received), as a client behind a load balancer would.
const WATCH_HOP_ONE_IN: u32 = 50;
/// How long a watcher may take, once told the final revision, to have covered it.
const WATCH_DRAIN: Duration = Duration::from_secs(15);

/// How one watcher (or the reference reader) follows its watch.
struct Follow {
    ns: &'static str,
    /// Watch through this node only (the reference), or through random running nodes.
    pinned: Option<usize>,
    /// The revision to cover before stopping; [`NOT_YET`] until known (after the final reads).
    target: Arc<AtomicU64>,
}

/// A [`Follow::target`] not known yet (0 is a real target: a namespace never written).
const NOT_YET: u64 = u64::MAX;

/// The watchers of a seed: one per namespace, plus a second one on [`NS`] half the time, each
/// on a random range (the whole namespace, one key, or two keys), with or without previous
/// states, from revision 1 or from "now".
fn watcher_plan(rng: &mut StdRng) -> Vec<(&'static str, WatcherLog)> {
    let extra = rng.gen_bool(0.5).then_some(NS);
    let namespaces = NAMESPACES.into_iter().chain(extra);
    namespaces
        .enumerate()
        .map(|(n, ns)| {
            let (key, end, range) = match rng.gen_range(0..3) {
                0 => (Vec::new(), RangeEnd::All, "all".to_string()),
                1 => {
                    let key = *KEYS.choose(rng).expect("keys");
                    (key.as_bytes().to_vec(), RangeEnd::Key, key.to_string())
                }
                _ => (b"a".to_vec(), RangeEnd::Before(b"c".to_vec()), "[a,c)".to_string()),
            };
            let spec = WatchSpec { key, end, prev_kv: rng.gen_bool(0.5) };
            let start = if rng.gen_bool(0.5) { 1 } else { 0 };
            let name = format!("#{n} {ns}/{range} prev_kv={} from={start}", spec.prev_kv);
            (ns, WatcherLog::new(name, spec, start))
        })
        .collect()
}

/// A new watch for `log`, resuming where it is, through `follow`'s node or a random running
/// one; with a handle on that node to notice when it crashes.
async fn connect(ctx: &Ctx, follow: &Follow, log: &WatcherLog, rng: &mut StdRng) -> Option<(Watch, Weak<Node>)> {
    let (cluster, node) = {
        let h = ctx.harness.read().await;
        let i = match follow.pinned {
            Some(i) => Some(i).filter(|i| h.nodes[*i].is_some()),
            None => h.live().choose(rng).copied(),
        }?;
        (h.cluster(i, follow.ns), Arc::downgrade(h.node(i)))
    };
    let request = WatchRequest {
        key: log.spec.key.clone(),
        end: log.spec.end.clone(),
        from_revision: log.resume_from(),
        prev_kv: log.spec.prev_kv,
        progress_every: WATCH_PROGRESS,
    };
    let watch = tokio::time::timeout(OP_DEADLINE, cluster.watch(request)).await.ok()?.ok()?;
    Some((watch, node))
}

/// Whether the node behind `node` is still running (not crashed, nor crashed and rebooted as
/// a new instance).
async fn still_running(ctx: &Ctx, node: &Weak<Node>) -> bool {
    let h = ctx.harness.read().await;
    h.nodes.iter().flatten().any(|n| std::ptr::eq(Arc::as_ptr(n), node.as_ptr()))
}

/// Whether the watcher is done: it covered its target, its drain time ran out, or the run
/// gave up on the cluster. Starts the drain clock when the target becomes known.
fn finished(ctx: &Ctx, follow: &Follow, log: &WatcherLog, drain: &mut Option<Instant>) -> bool {
    if ctx.watchers_abandon.load(Ordering::Relaxed) {
        return true;
    }
    let target = follow.target.load(Ordering::Relaxed);
    if target == NOT_YET {
        return false;
    }
    let deadline = *drain.get_or_insert_with(|| Instant::now() + WATCH_DRAIN);
    log.covered() >= target || Instant::now() >= deadline
}

/// Why a watch ended, as counted in the report.
fn end_kind(e: &ApiError) -> String {
    match e {
        ApiError::Cancelled(_) => "cancelled".into(),
        ApiError::Compacted { .. } => "compacted".into(),
        ApiError::Unavailable(_) => "unavailable".into(),
        ApiError::ShuttingDown => "shutting down".into(),
        other => format!("error: {other}"),
    }
}

/// Follow one watch until it ends, its node crashes, the watcher hops to another node, or
/// the watcher is finished; everything received goes into `log`.
async fn consume(
    ctx: &Ctx,
    follow: &Follow,
    log: &mut WatcherLog,
    mut watch: Watch,
    node: Weak<Node>,
    rng: &mut StdRng,
    drain: &mut Option<Instant>,
) {
    while !finished(ctx, follow, log, drain) {
        let end = match tokio::time::timeout(WATCH_POLL, watch.next()).await {
            Err(_) if still_running(ctx, &node).await => continue,
            Err(_) => "node crashed".to_string(),
            Ok(None) => "ended".into(),
            Ok(Some(Err(e))) => end_kind(&e),
            Ok(Some(Ok(message))) => {
                log.messages.push(message);
                if follow.pinned.is_some() || !rng.gen_ratio(1, WATCH_HOP_ONE_IN) {
                    continue;
                }
                "hop".into()
            }
        };
        log.ends.push(end);
        return;
    }
}

/// One watcher: watch, and after every end watch again (through another random node unless
/// pinned) from the revision after the last one received, until finished.
async fn watcher(ctx: Arc<Ctx>, follow: Follow, mut log: WatcherLog, mut rng: StdRng) -> WatcherLog {
    let mut drain = None;
    while !finished(&ctx, &follow, &log, &mut drain) {
        let Some((watch, node)) = connect(&ctx, &follow, &log, &mut rng).await else {
            // No node to watch through just now: think time, not synchronisation.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if log.start == 0 {
            log.start = watch.start_revision();
        }
        log.connects += 1;
        consume(&ctx, &follow, &mut log, watch, node, &mut rng, &mut drain).await;
    }
    log
}

/// The namespace's current revision, from a linearizable read through `node`.
async fn current_revision(ctx: &Ctx, ns: &str, node: usize, deadline: Instant) -> Result<u64, String> {
    loop {
        let cluster = ctx.harness.read().await.cluster(node, ns);
        if let Ok(Ok(read)) = tokio::time::timeout(OP_DEADLINE, cluster.get(b"a", Consistency::Linearizable)).await {
            return Ok(read.revision);
        }
        if Instant::now() >= deadline {
            return Err(format!("node {node} served no linearizable read of {ns} {RECOVERY:?} after healing"));
        }
        // Retry pacing while the cluster settles after the heal.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the watch check of one seed found.
#[derive(Debug, Default)]
struct WatchReport {
    watchers: usize,
    /// Watch events compared with the history (the reference's own not counted).
    events: usize,
    reconnects: usize,
    /// Why watches ended, by kind.
    ends: BTreeMap<String, usize>,
    /// Acknowledged writes found in the history.
    acks: usize,
    violations: Vec<String>,
}

impl std::fmt::Display for WatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} watchers, {} events checked, {} reconnects (ends: {:?}), {} acknowledged writes found, {} violations",
            self.watchers,
            self.events,
            self.reconnects,
            self.ends,
            self.acks,
            self.violations.len()
        )
    }
}

impl WatchReport {
    fn add(&mut self, other: WatchReport) {
        self.watchers += other.watchers;
        self.events += other.events;
        self.reconnects += other.reconnects;
        for (kind, n) in other.ends {
            *self.ends.entry(kind).or_default() += n;
        }
        self.acks += other.acks;
        self.violations.extend(other.violations);
    }
}

/// Check the watchers of `ns` against its history, read once through `reader` from revision
/// 1 up to everything anyone saw, and the acknowledged writes of `ns` with them.
async fn check_namespace(
    ctx: &Arc<Ctx>,
    ns: &'static str,
    reader: usize,
    target: u64,
    logs: &[WatcherLog],
) -> WatchReport {
    let acks = ctx.acks.lock().unwrap_or_else(|p| p.into_inner()).remove(ns).unwrap_or_default();
    let seen = logs.iter().filter_map(WatcherLog::last_changes).chain(acks.iter().map(|a| a.revision));
    let needed = seen.fold(target, u64::max);
    let follow = Follow { ns, pinned: Some(reader), target: Arc::new(AtomicU64::new(needed)) };
    let log = WatcherLog::new(format!("reference {ns}"), WatchSpec::everything(), 1);
    let rng = StdRng::seed_from_u64(0);
    let reference_log = watcher(ctx.clone(), follow, log, rng).await;
    let mut report = WatchReport { acks: acks.len(), ..WatchReport::default() };
    if reference_log.covered() < needed {
        let covered = reference_log.covered();
        report.violations.push(format!("{ns}: the reference read reached revision {covered}, not {needed}"));
        return report;
    }
    let reference = match Reference::build(&reference_log.messages) {
        Ok(reference) => reference,
        Err(problems) => {
            report.violations.extend(problems.into_iter().map(|p| format!("{ns}: {p}")));
            return report;
        }
    };
    report.violations.extend(check_acknowledged(&reference, &acks).into_iter().map(|v| format!("{ns}: {v}")));
    for log in logs {
        let check = check_watcher(&reference, log, Some(target));
        report.watchers += 1;
        report.events += check.events;
        report.reconnects += log.reconnects();
        for end in &log.ends {
            *report.ends.entry(end.clone()).or_default() += 1;
        }
        if log.ends.iter().any(|e| e == "compacted") {
            report.violations.push(format!("watcher {}: a watch ended compacted, yet nothing compacts", log.name));
        }
        report.violations.extend(check.violations);
    }
    report
}

async fn run_seed(seed: u64, consistency: Consistency, logs: Logs) -> SeedRun {
    let started = Instant::now();
    let plan = Plan::new(seed);
    let tweak = match (plan.small_snapshots, logs) {
        (true, Logs::Tables) => fast_small_snapshots,
        (false, Logs::Tables) => fast,
        (true, Logs::WriteAheadLog) => fast_small_snapshots_wal,
        (false, Logs::WriteAheadLog) => fast_wal,
    };
    let harness = start_in_memory(plan.nodes, seed, tweak).await;
    let ctx = Arc::new(Ctx {
        harness: RwLock::new(harness),
        recorder: Recorder::new(),
        next_value: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        amnesia: AtomicU64::new(0),
        cas_refused: AtomicU64::new(0),
        acks: Mutex::new(BTreeMap::new()),
        watchers_abandon: AtomicBool::new(false),
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let clients: Vec<_> = (0..plan.clients)
        .map(|_| tokio::spawn(client(ctx.clone(), StdRng::seed_from_u64(rng.gen()), consistency)))
        .collect();
    // Watchers draw from their own generator, so the fault schedule stays what it was.
    let mut watch_rng = StdRng::seed_from_u64(seed ^ 0x3a7c_4000_0000_0000);
    let watchers: Vec<_> = watcher_plan(&mut watch_rng)
        .into_iter()
        .map(|(ns, log)| {
            let target = Arc::new(AtomicU64::new(NOT_YET));
            let follow = Follow { ns, pinned: None, target: target.clone() };
            let task = tokio::spawn(watcher(ctx.clone(), follow, log, StdRng::seed_from_u64(watch_rng.gen())));
            (ns, target, task)
        })
        .collect();
    let idle_watch = tokio::spawn(watch_idle(ctx.clone()));

    // The sleeps below set the length of the schedule's phases: they are the experiment, not
    // synchronisation.
    tokio::time::sleep(plan.warmup).await;
    let mut crashed = Vec::new();
    for phase in &plan.phases {
        for fault in &phase.faults {
            crashed.extend(inject(&ctx, fault, &mut rng).await);
        }
        tokio::time::sleep(phase.length).await;
        heal(&ctx, &mut crashed).await;
        tokio::time::sleep(phase.calm).await;
    }
    ctx.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let idle_quiesced = idle_watch.await.expect("idle watch task");

    // Recovery: in every namespace, every node agrees on a leader, then one node serves a
    // linearizable read of every key. A failure here is a liveness failure; the history is
    // checked all the same.
    let deadline = Instant::now() + RECOVERY;
    let reader = rng.gen_range(0..plan.nodes);
    let mut liveness = None;
    for ns in NAMESPACES {
        let agreed = agreed_leader(&*ctx.harness.read().await, ns, deadline).await;
        liveness = match agreed {
            Ok(_) => final_reads(&ctx, ns, reader, deadline).await.err(),
            Err(e) => Some(e),
        };
        if liveness.is_some() {
            break;
        }
    }
    let watch = check_watches(&ctx, watchers, reader, deadline, &mut liveness).await;

    let history = ctx.recorder.history();
    let report = check_all(&history, BUDGET);
    let amnesia = {
        let h = ctx.harness.read().await;
        h.live().into_iter().map(|i| amnesia_removals(&h, i)).sum::<u64>() + ctx.amnesia.load(Ordering::Relaxed)
    };
    let cas = CasCounts::of(&history, ctx.cas_refused.load(Ordering::Relaxed));
    let ctx = Arc::into_inner(ctx).expect("clients are done");
    ctx.harness.into_inner().shutdown().await;
    let (mut write_latency, mut read_latency) = (Vec::new(), Vec::new());
    for e in history.entries().iter().filter(|e| e.outcome == Outcome::Ok) {
        let latency = e.completed.unwrap_or_default().saturating_sub(e.invoked);
        if e.op.is_read() {
            read_latency.push(latency)
        } else {
            write_latency.push(latency)
        }
    }
    SeedRun {
        seed,
        plan,
        report,
        elapsed: started.elapsed(),
        write_latency,
        read_latency,
        amnesia,
        liveness,
        idle_quiesced,
        cas,
        watch,
    }
}

/// Tell the watchers the final revision of their namespace, wait for them to cover it, and
/// check what they received (nothing is checked when the cluster did not recover: the
/// watchers are stopped).
async fn check_watches(
    ctx: &Arc<Ctx>,
    watchers: Vec<(&'static str, Arc<AtomicU64>, tokio::task::JoinHandle<WatcherLog>)>,
    reader: usize,
    deadline: Instant,
    liveness: &mut Option<String>,
) -> WatchReport {
    let mut targets = BTreeMap::new();
    for ns in NAMESPACES {
        if liveness.is_some() {
            break;
        }
        match current_revision(ctx, ns, reader, deadline).await {
            Ok(revision) => {
                targets.insert(ns, revision);
            }
            Err(e) => *liveness = Some(e),
        }
    }
    if liveness.is_some() {
        ctx.watchers_abandon.store(true, Ordering::Relaxed);
    }
    let mut logs: BTreeMap<&str, Vec<WatcherLog>> = BTreeMap::new();
    for (ns, target, task) in watchers {
        // Without a target (the cluster did not recover) the watcher stops on `watchers_abandon`.
        target.store(targets.get(ns).copied().unwrap_or(0), Ordering::Relaxed);
        logs.entry(ns).or_default().push(task.await.expect("watcher task"));
    }
    let mut report = WatchReport::default();
    for (ns, target) in targets {
        let logs = logs.get(ns).map(Vec::as_slice).unwrap_or_default();
        report.add(check_namespace(ctx, ns, reader, target, logs).await);
    }
    report
}

// ---------------------------------------------------------------------------------------------
// Many seeds.

/// Totals over the seeds of a run.
#[derive(Default)]
struct Tally {
    seeds: usize,
    linearizable: usize,
    violations: Vec<String>,
    undetermined: Vec<String>,
    /// Seeds whose cluster did not recover after healing.
    stuck: Vec<String>,
    panicked: Vec<String>,
    ok: usize,
    fail: usize,
    unknown: usize,
    slowest: Duration,
    write_latency: Vec<Duration>,
    read_latency: Vec<Duration>,
    /// Seeds where a voter that kept its data was removed as if it had lost it.
    amnesia: Vec<u64>,
    /// Seeds in which [`IDLE`] quiesced while the clients ran.
    idle_quiesced: usize,
    /// How the compare-and-sets ended, over all seeds.
    cas: CasCounts,
    /// Longest check of one seed's history.
    slowest_check: Duration,
    /// The watch checks over all seeds (violations are in `watch_failed`).
    watch: WatchReport,
    /// Seeds whose watch check found a violation, each with its violations.
    watch_failed: Vec<String>,
    /// Fewest watch events checked in one seed that recovered.
    watch_fewest_events: Option<usize>,
}

/// Median and maximum, in milliseconds.
fn spread(latencies: &mut [Duration]) -> String {
    latencies.sort();
    match (latencies.get(latencies.len() / 2), latencies.last()) {
        (Some(median), Some(max)) => {
            format!("median {:.0}ms, max {:.0}ms", median.as_secs_f64() * 1e3, max.as_secs_f64() * 1e3)
        }
        _ => "none".into(),
    }
}

impl Tally {
    fn add(&mut self, run: SeedRun) {
        self.seeds += 1;
        self.ok += run.report.counts.ok;
        self.fail += run.report.counts.fail;
        self.unknown += run.report.counts.unknown;
        self.slowest = self.slowest.max(run.elapsed);
        self.idle_quiesced += usize::from(run.idle_quiesced);
        self.cas.add(run.cas);
        self.slowest_check = self.slowest_check.max(run.report.elapsed);
        if run.amnesia > 0 {
            self.amnesia.push(run.seed);
        }
        self.write_latency.extend(&run.write_latency);
        self.read_latency.extend(&run.read_latency);
        self.add_watch(&run);
        let describe = || {
            format!(
                "seed {} ({:?}); compare-and-sets: {}; watches: {}; voters removed as amnesiac: {}; {}\n{}",
                run.seed,
                run.plan,
                run.cas,
                run.watch,
                run.amnesia,
                run.liveness.as_deref().unwrap_or("recovered"),
                run.report
            )
        };
        if run.liveness.is_some() {
            self.stuck.push(describe());
        }
        match run.report.verdict() {
            Verdict::Linearizable => self.linearizable += 1,
            Verdict::NotLinearizable { .. } => self.violations.push(describe()),
            Verdict::Undetermined { .. } => self.undetermined.push(describe()),
        }
    }

    /// Count `run`'s watch check, and keep its violations with the seed.
    fn add_watch(&mut self, run: &SeedRun) {
        if run.liveness.is_none() {
            let fewest = self.watch_fewest_events.map_or(run.watch.events, |n| n.min(run.watch.events));
            self.watch_fewest_events = Some(fewest);
        }
        if !run.watch.violations.is_empty() {
            let violations = run.watch.violations.join("\n  ");
            self.watch_failed
                .push(format!("seed {} ({:?}) watch check failed: {}\n  {violations}", run.seed, run.plan, run.watch));
        }
        let counts = WatchReport { violations: Vec::new(), ends: run.watch.ends.clone(), ..run.watch };
        self.watch.add(counts);
    }

    fn summary(&mut self, elapsed: Duration) -> String {
        let writes = spread(&mut self.write_latency);
        let reads = spread(&mut self.read_latency);
        format!(
            "chaos: {} seeds in {:.1}s (slowest {:.1}s): {} linearizable, {} NOT linearizable, {} undetermined, {} did not recover, {} panicked; ops: {} ok, {} fail, {} unknown; compare-and-sets: {}; watches: {} in {} seeds failing the watch check, fewest events checked in a seed {}; slowest check {:.0}ms; ok writes: {writes}; ok reads: {reads}; voters removed as amnesiac although they kept their data: {} seeds {:?}; namespace {IDLE:?} quiesced in {} seeds",
            self.seeds,
            elapsed.as_secs_f64(),
            self.slowest.as_secs_f64(),
            self.linearizable,
            self.violations.len(),
            self.undetermined.len(),
            self.stuck.len(),
            self.panicked.len(),
            self.ok,
            self.fail,
            self.unknown,
            self.cas,
            self.watch,
            self.watch_failed.len(),
            self.watch_fewest_events.unwrap_or(0),
            self.slowest_check.as_secs_f64() * 1e3,
            self.amnesia.len(),
            self.amnesia,
            self.idle_quiesced,
        )
    }
}

/// Run `seeds`, `parallel` at a time (`common::run_seeds`), and tally them.
async fn run_seeds(seeds: Vec<u64>, parallel: usize, consistency: Consistency, logs: Logs) -> Tally {
    let mut tally = Tally::default();
    for (seed, result) in common::run_seeds(seeds, parallel, move |seed| run_seed(seed, consistency, logs)).await {
        match result {
            Ok(run) => tally.add(run),
            Err(message) => {
                tally.seeds += 1;
                tally.panicked.push(format!("seed {seed} ({:?}) panicked: {message}", Plan::new(seed)));
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_under_seeded_chaos() {
    let seeds = common::seeds_from_env("FLOTILLA_CHAOS", DEFAULT_SEEDS);
    check_seeds(seeds, Logs::Tables).await;
}

/// The same chaos with every node's Raft logs in the write-ahead log (`FLOTILLA_CHAOS_WAL_SEEDS`,
/// `_FIRST`, `_SEED` as above; `FLOTILLA_CHAOS_PARALLEL` is shared).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_under_seeded_chaos_on_the_write_ahead_log() {
    let seeds = common::seeds_from_env("FLOTILLA_CHAOS_WAL", DEFAULT_WAL_SEEDS);
    check_seeds(seeds, Logs::WriteAheadLog).await;
}

/// Run `seeds` with their logs where `logs` says, and fail on any violation, stuck seed,
/// panic or broken watch.
async fn check_seeds(seeds: Vec<u64>, logs: Logs) {
    let parallel = common::env_u64("FLOTILLA_CHAOS_PARALLEL").map_or(DEFAULT_PARALLEL, |p| p as usize);
    let started = Instant::now();
    let mut tally = run_seeds(seeds, parallel, Consistency::Linearizable, logs).await;
    let summary = tally.summary(started.elapsed());
    println!("{summary}");
    let failures = [
        &tally.violations[..],
        &tally.undetermined[..],
        &tally.stuck[..],
        &tally.panicked[..],
        &tally.watch_failed[..],
    ]
    .concat();
    for failure in &failures {
        println!("{failure}");
    }
    assert!(failures.is_empty(), "{summary}\n\n{}", failures.join("\n"));
    // The run must have exercised the cluster, not only watched it fail.
    assert!(tally.ok >= tally.seeds * 10, "too few successful operations: {summary}");
    // And quiesced groups were among those exercised (a short run may miss them by chance).
    if tally.seeds >= 20 {
        assert!(tally.idle_quiesced > 0, "namespace {IDLE:?} never quiesced: {summary}");
    }
}

// ---------------------------------------------------------------------------------------------
// The check can fail.

/// Record `op` on key `x`, by client 0, as succeeding in both histories, around `f`.
async fn both<T, F: std::future::Future<Output = T>>(a: &Recorder, b: &Recorder, op: Op, f: F) -> T {
    let (ta, tb) = (a.invoke(0, "x", op.clone()), b.invoke(0, "x", op));
    let out = f.await;
    a.complete(ta, Outcome::Ok).unwrap();
    b.complete(tb, Outcome::Ok).unwrap();
    out
}

/// A deliberately broken read path: a stale local read on a leader cut off from the majority,
/// recorded as if it were linearizable, is flagged; the real linearizable read on that node
/// refuses to answer instead, and its history passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_read_from_an_isolated_leader_is_flagged() {
    let h = start_in_memory(3, 77, fast).await;
    let broken = Recorder::new();
    let honest = Recorder::new();
    let client = 0;
    let old = h.leader(NS).await;
    both(&broken, &honest, Op::write("v1"), h.cluster(old, NS).set(b"x", b"v1")).await.unwrap();
    h.network.isolate(h.ids[old], &h.ids);
    let rest: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let new = h.leader_among(NS, &rest).await;
    both(&broken, &honest, Op::write("v2"), h.cluster(new, NS).set(b"x", b"v2")).await.unwrap();

    let t = broken.invoke(client, "x", Op::read());
    let stale = h.cluster(old, NS).get(b"x", Consistency::Stale).await.unwrap();
    broken.complete_read(t, value_of(stale.value)).unwrap();

    let t = honest.invoke(client, "x", Op::read());
    let refused = tokio::time::timeout(OP_DEADLINE, h.cluster(old, NS).get(b"x", Consistency::Linearizable)).await;
    assert!(!matches!(refused, Ok(Ok(_))), "an isolated node answered a linearizable read: {refused:?}");
    honest.complete(t, Outcome::Unknown).unwrap();
    h.network.heal();
    let t = honest.invoke(client + 1, "x", Op::read());
    let fresh = h.cluster(old, NS).get(b"x", Consistency::Linearizable).await.unwrap();
    honest.complete_read(t, value_of(fresh.value)).unwrap();

    let report = check_all(&honest.history(), BUDGET);
    assert!(report.is_linearizable(), "{report}");
    let report = check_all(&broken.history(), BUDGET);
    match &report.keys["x"].verdict {
        Verdict::NotLinearizable { minimal, shrunk: true, .. } => {
            let text = minimal.to_string();
            assert!(text.contains("read x=v1") && text.contains("write x=v2"), "{text}");
            assert_eq!(minimal.len(), 3, "{text}");
        }
        other => panic!("the stale read was not flagged: {other}\n{report}"),
    }
    h.shutdown().await;
}

/// Two compare-and-sets from the value one read saw: the store applies the first and refuses
/// the second (precondition failed), and that history passes; a broken compare-and-set that
/// writes unconditionally, recorded as succeeding, is flagged (two successes from one value).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compare_and_set_that_ignores_its_condition_is_flagged() {
    let h = start_in_memory(3, 78, fast).await;
    let honest = Recorder::new();
    let broken = Recorder::new();
    let c = h.cluster(h.leader(NS).await, NS);
    both(&honest, &broken, Op::write("v1"), c.set(b"x", b"v1")).await.unwrap();
    let t = (honest.invoke(0, "x", Op::read()), broken.invoke(0, "x", Op::read()));
    let seen = c.get(b"x", Consistency::Linearizable).await.unwrap();
    honest.complete_read(t.0, value_of(seen.value.clone())).unwrap();
    broken.complete_read(t.1, value_of(seen.value)).unwrap();
    let revision = seen.key_revisions.expect("x is present").mod_revision;
    let condition = Precondition::ModRevision(revision);
    both(&honest, &broken, Op::cas(Some("v1"), "v2"), c.put_if(b"x", b"v2", condition, None)).await.unwrap();

    let second = Op::cas(Some("v1"), "v3");
    let t = (honest.invoke(1, "x", second.clone()), broken.invoke(1, "x", second));
    let refused = c.put_if(b"x", b"v3", condition, None).await;
    assert!(matches!(refused, Err(ApiError::PreconditionFailed { .. })), "{refused:?}");
    honest.complete(t.0, Outcome::Fail).unwrap();
    // What an unconditional write would have answered.
    broken.complete(t.1, Outcome::Ok).unwrap();

    let report = check_all(&honest.history(), BUDGET);
    assert!(report.is_linearizable(), "{report}");
    let report = check_all(&broken.history(), BUDGET);
    match &report.keys["x"].verdict {
        Verdict::NotLinearizable { minimal, shrunk: true, .. } => {
            let text = minimal.to_string();
            assert!(text.contains("cas x=v1->v2") && text.contains("cas x=v1->v3"), "{text}");
        }
        other => panic!("the unconditional compare-and-set was not flagged: {other}\n{report}"),
    }
    h.shutdown().await;
}

/// The same chaos, with clients reading stale local state instead of linearizably: the
/// schedule and the workload are enough to expose it (usually in most seeds; batches of seeds
/// run until one is flagged, so a loaded machine only makes it slower).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_reads_under_chaos_are_flagged() {
    let started = Instant::now();
    for batch in 0..4u64 {
        let first = 1_000_000 + batch * 6;
        let mut tally =
            run_seeds((first..first + 6).collect(), DEFAULT_PARALLEL, Consistency::Stale, Logs::Tables).await;
        let summary = tally.summary(started.elapsed());
        println!("{summary}");
        assert!(tally.panicked.is_empty(), "{summary}\n{}", tally.panicked.join("\n"));
        if let Some(example) = tally.violations.first() {
            println!("for example, {example}");
            return;
        }
    }
    panic!("stale reads went unnoticed in 24 seeds");
}

// ---------------------------------------------------------------------------------------------
// The watch check can fail.

/// A key's state after a put.
fn state(key: &str, value: &str, create_revision: u64, mod_revision: u64, version: u64) -> KeyValue {
    KeyValue { key: key.into(), value: value.into(), create_revision, mod_revision, version, lease: 0 }
}

fn put(kv: KeyValue, prev: Option<KeyValue>) -> WatchEvent {
    WatchEvent { kind: EventKind::Put, kv, prev }
}

fn changes(revision: u64, events: Vec<WatchEvent>) -> WatchMessage {
    WatchMessage::Changes { revision, events }
}

/// A small history, as a whole-namespace watch with previous states delivers it, numbered
/// from 1 for readability (a real namespace's first write is revision 2): a created
/// (1), b created (2), a changed (3), b deleted (4), a changed and c created together (5).
fn small_history() -> Vec<WatchMessage> {
    let (a1, b2, a3) = (state("a", "1", 1, 1, 1), state("b", "1", 2, 2, 1), state("a", "2", 1, 3, 2));
    // A delete carries only the key and its revision.
    let deleted_b = state("b", "", 0, 4, 0);
    vec![
        changes(1, vec![put(a1.clone(), None)]),
        changes(2, vec![put(b2.clone(), None)]),
        changes(3, vec![put(a3.clone(), Some(a1))]),
        changes(4, vec![WatchEvent { kind: EventKind::Delete, kv: deleted_b, prev: Some(b2) }]),
        changes(5, vec![put(state("a", "3", 1, 5, 3), Some(a3)), put(state("c", "1", 5, 5, 1), None)]),
    ]
}

/// `messages` as received by a watcher of `spec` from revision 1, checked against
/// [`small_history`] (to cover revision `until`).
fn check_small(spec: WatchSpec, messages: Vec<WatchMessage>, until: Option<u64>) -> Vec<String> {
    let reference = Reference::build_after(&small_history(), 0).expect("a consistent history");
    let log = WatcherLog { messages, connects: 1, ..WatcherLog::new("test", spec, 1) };
    check_watcher(&reference, &log, until).violations
}

/// Assert that some violation says `what`.
fn assert_flagged(violations: &[String], what: &str) {
    assert!(violations.iter().any(|v| v.contains(what)), "expected {what:?} among {violations:#?}");
}

fn key_a(prev_kv: bool) -> WatchSpec {
    WatchSpec { key: b"a".to_vec(), end: RangeEnd::Key, prev_kv }
}

/// The history itself, and the revisions that changed `a` without previous states, pass.
#[test]
fn watch_check_passes_the_true_history() {
    assert!(check_small(WatchSpec::everything(), small_history(), Some(5)).is_empty());
    let only_a: Vec<_> = small_history()
        .into_iter()
        .filter_map(|m| match m {
            WatchMessage::Changes { revision, events } => {
                let events: Vec<_> = events.into_iter().filter(|e| e.kv.key == b"a").map(|e| put(e.kv, None)).collect();
                (!events.is_empty()).then_some(changes(revision, events))
            }
            progress => Some(progress),
        })
        .collect();
    let mut with_progress = only_a.clone();
    with_progress.push(WatchMessage::Progress { revision: 7 });
    assert!(check_small(key_a(false), with_progress, Some(7)).is_empty());
}

/// A duplicate, a revision out of order, a split revision, a gap, a progress notification
/// that skips a change, a wrong previous state, a wrong value, and a watcher that never caught
/// up: each is flagged, naming the revision.
#[test]
fn watch_check_flags_every_kind_of_broken_stream() {
    let h = small_history();
    let all = WatchSpec::everything;
    let dup = vec![h[0].clone(), h[1].clone(), h[1].clone(), h[2].clone(), h[3].clone(), h[4].clone()];
    assert_flagged(&check_small(all(), dup, None), "revision 2 delivered twice");
    let reordered = vec![h[0].clone(), h[2].clone(), h[1].clone(), h[3].clone(), h[4].clone()];
    assert_flagged(&check_small(all(), reordered, None), "revision 2 delivered after revision 3");
    let WatchMessage::Changes { events: five, .. } = h[4].clone() else { unreachable!() };
    let split = [&h[..4], &[changes(5, vec![five[0].clone()]), changes(5, vec![five[1].clone()])]].concat();
    let found = check_small(all(), split, None);
    assert_flagged(&found, "revision 5 delivered twice");
    assert_flagged(&found, "revision 5: received");
    let gap = vec![h[0].clone(), h[1].clone(), h[3].clone(), h[4].clone()];
    assert_flagged(&check_small(all(), gap, None), "revision 3 was never delivered (before revision 4)");
    let progress_lie = vec![h[0].clone(), WatchMessage::Progress { revision: 2 }];
    assert_flagged(&check_small(all(), progress_lie, None), "revision 2 was never delivered (before progress at 2)");

    let a1 = state("a", "1", 1, 1, 1);
    let wrong_prev =
        vec![changes(1, vec![put(a1.clone(), None)]), changes(3, vec![put(state("a", "2", 1, 3, 2), None)])];
    assert_flagged(&check_small(key_a(true), wrong_prev, None), "revision 3: received");
    let wrong_value = vec![changes(1, vec![put(state("a", "9", 1, 1, 1), None)])];
    assert_flagged(&check_small(key_a(false), wrong_value, None), "revision 1: received");
    let behind = vec![changes(1, vec![put(a1, None)])];
    assert_flagged(
        &check_small(key_a(false), behind, Some(5)),
        "covered revisions up to 1 only, not the final revision 5",
    );
}

/// A history with a hole, or a version that does not follow, is refused as a reference; an
/// acknowledged write missing at its revision is flagged.
#[test]
fn watch_check_flags_a_broken_history_and_a_lost_write() {
    let h = small_history();
    let hole = [&h[..2], &h[3..]].concat();
    let problems = Reference::build_after(&hole, 0).expect_err("a hole");
    assert!(problems.iter().any(|p| p.contains("revision 4 where 3 was due")), "{problems:#?}");
    let mut bad_version = h.clone();
    bad_version[2] = changes(3, vec![put(state("a", "2", 1, 3, 7), Some(state("a", "1", 1, 1, 1)))]);
    let problems = Reference::build_after(&bad_version, 0).expect_err("a wrong version");
    assert!(problems.iter().any(|p| p.contains("revision 3 a")), "{problems:#?}");

    let reference = Reference::build_after(&h, 0).expect("a consistent history");
    let ack = |value: &str, revision| Ack { key: b"a".to_vec(), value: value.into(), revision };
    assert!(check_acknowledged(&reference, &[ack("1", 1), ack("2", 3), ack("3", 5)]).is_empty());
    assert_flagged(&check_acknowledged(&reference, &[ack("2", 4)]), "acknowledged write a=2 at revision 4");
}
