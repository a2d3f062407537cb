//! Idle namespaces quiesce (no per-group heartbeats or election timers) and wake on a write,
//! a linearizable read and a leader crash. See crates/flotilla/DESIGN-namespaces.md.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Harness};
use flotilla::{Config, Consistency, Preset, Role};
use flotilla_core::types::NodeId;
use flotilla_core::wire::{RaftRequest, RequestBody, WireRequest, WireResponse};
use flotilla_core::{InboundHandler, Transport, TransportError};
use tokio::time::Instant;

const BUSY: &str = "busy";
const IDLE: &str = "idle";

/// Quiesce after one second of idleness (the default is twenty election timeouts).
fn quick_quiesce(c: &mut Config) {
    c.quiesce_after_ms = Some(1_000);
}

/// Counts what a node sends: heartbeats (appends without entries) per namespace, and pings.
struct Spy {
    inner: Arc<dyn Transport>,
    idle_heartbeats: AtomicU64,
    pings: AtomicU64,
}

#[async_trait::async_trait]
impl Transport for Spy {
    fn local_id(&self) -> NodeId {
        self.inner.local_id()
    }
    fn local_addrs(&self) -> Vec<String> {
        self.inner.local_addrs()
    }
    async fn call(&self, to: NodeId, request: WireRequest, timeout: Duration) -> Result<WireResponse, TransportError> {
        match &request.body {
            RequestBody::Raft(env) if request.namespace.as_str() == IDLE => {
                if matches!(&env.rpc, RaftRequest::Append(a) if a.entries.is_empty()) {
                    self.idle_heartbeats.fetch_add(1, Ordering::Relaxed);
                }
            }
            RequestBody::Ping => {
                self.pings.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.inner.call(to, request, timeout).await
    }
    fn set_handler(&self, handler: Arc<dyn InboundHandler>) {
        self.inner.set_handler(handler)
    }
    fn add_peer_addrs(&self, peer: NodeId, addrs: &[String]) {
        self.inner.add_peer_addrs(peer, addrs)
    }
    async fn connect(&self, addr: &str, timeout: Duration) -> Result<NodeId, TransportError> {
        self.inner.connect(addr, timeout).await
    }
}

/// Three nodes serving `namespaces`, each node's transport wrapped in a spy.
async fn start(seed: u64, namespaces: &[&str]) -> (Harness, Vec<Arc<Spy>>) {
    let mut h = Harness::new(3, seed, namespaces, quick_quiesce);
    let spies: Vec<Arc<Spy>> = (0..3)
        .map(|i| {
            Arc::new(Spy {
                inner: h.network.transport(h.ids[i]),
                idle_heartbeats: AtomicU64::new(0),
                pings: AtomicU64::new(0),
            })
        })
        .collect();
    for (i, spy) in spies.iter().enumerate() {
        let spy = spy.clone();
        h.boot_wrapped(i, move |_| spy as Arc<dyn Transport>).await;
    }
    for ns in namespaces {
        h.wait_voters(ns, 3).await;
    }
    (h, spies)
}

async fn wait_quiesced(h: &Harness, ns: &str) {
    let clusters: Vec<_> = h.live().into_iter().map(|i| h.cluster(i, ns)).collect();
    eventually(&format!("{ns} quiesced on every live node"), || clusters.iter().all(|c| c.is_quiesced())).await;
}

/// Leave the quiesced namespace alone for a second: its leader's last quorum acknowledgement
/// is then between one and three election timeouts old, where openraft's quorum-loss probe
/// holds back its heartbeats (crates/flotilla/src/quiesce.rs), so a woken leader that only
/// restarted its ticker could not confirm its leadership in time.
async fn stay_quiet() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_namespace_quiesces_and_sends_no_heartbeats_while_a_busy_one_keeps_working() {
    let (h, spies) = start(71, &[IDLE, BUSY]).await;
    wait_quiesced(&h, IDLE).await;
    let before: Vec<u64> = spies.iter().map(|s| s.idle_heartbeats.load(Ordering::Relaxed)).collect();
    let pings_before: u64 = spies.iter().map(|s| s.pings.load(Ordering::Relaxed)).sum();
    // A window of twenty heartbeat intervals with writes to the other namespace: the quiesced
    // one sends no heartbeat at all (awake, its leader would send about 40), the busy one is
    // unaffected, and the node-level probe runs instead.
    let window = Instant::now() + Duration::from_secs(1);
    let busy = h.cluster(0, BUSY);
    let mut n = 0u32;
    while Instant::now() < window {
        busy.set(format!("k{n}").as_bytes(), b"v").await.expect("the busy namespace takes writes");
        n += 1;
    }
    let after: Vec<u64> = spies.iter().map(|s| s.idle_heartbeats.load(Ordering::Relaxed)).collect();
    assert_eq!(before, after, "a quiesced namespace sent heartbeats");
    assert!((0..3).all(|i| h.cluster(i, IDLE).is_quiesced()), "stayed quiesced while another namespace worked");
    let pings_after: u64 = spies.iter().map(|s| s.pings.load(Ordering::Relaxed)).sum();
    assert!(pings_after > pings_before, "the node-level liveness probe runs while groups are quiesced");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_through_a_follower_wakes_a_quiesced_namespace() {
    let (h, _spies) = start(72, &[IDLE]).await;
    let leader = h.leader(IDLE).await;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    wait_quiesced(&h, IDLE).await;
    stay_quiet().await;
    let started = Instant::now();
    let written = h.cluster(follower, IDLE).set(b"k", b"after quiet").await.expect("write wakes the namespace");
    assert!(started.elapsed() < Duration::from_secs(3), "write took {:?}", started.elapsed());
    // Same leader: waking is not an election.
    assert_eq!(h.leader(IDLE).await, leader);
    for i in 0..3 {
        h.wait_applied(i, IDLE, written.index).await;
    }
    h.shutdown().await;
}

/// A single node is its own quorum: waking it has no acknowledgement to wait for. (A write to
/// a quiesced single-node namespace used to wait out the whole wake patience, three election
/// timeouts: 6 s with the regional preset used here, 1.8 s with the local one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_wakes_a_quiesced_single_node_namespace_at_once() {
    let h = Harness::start(1, 75, &[IDLE], |c| {
        quick_quiesce(c);
        let regional = Preset::Regional.timing();
        c.heartbeat_ms = Some(regional.heartbeat_ms);
        c.election_min_ms = Some(regional.election_min_ms);
        c.election_max_ms = Some(regional.election_max_ms);
    })
    .await;
    h.cluster(0, IDLE).set(b"k", b"before").await.expect("write");
    wait_quiesced(&h, IDLE).await;
    // Quiet for longer than an election timeout (2 s): the leader's own acknowledgement is
    // then stale, which is what made waking wait. (Idle time under test, not synchronisation.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    h.cluster(0, IDLE).set(b"k", b"after quiet").await.expect("write wakes the namespace");
    assert!(started.elapsed() < Duration::from_secs(3), "write took {:?}", started.elapsed());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_linearizable_read_wakes_a_quiesced_namespace() {
    let (h, _spies) = start(73, &[IDLE]).await;
    let leader = h.leader(IDLE).await;
    let written = h.cluster(leader, IDLE).set(b"k", b"v1").await.expect("write");
    wait_quiesced(&h, IDLE).await;
    stay_quiet().await;
    for i in 0..3 {
        let started = Instant::now();
        let read = h.cluster(i, IDLE).get(b"k", Consistency::Linearizable).await.expect("linearizable read");
        assert_eq!(read.value.as_deref(), Some(&b"v1"[..]));
        assert!(read.index >= written.index);
        assert!(started.elapsed() < Duration::from_secs(3), "read on node {i} took {:?}", started.elapsed());
    }
    assert_eq!(h.leader(IDLE).await, leader, "waking is not an election");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_leader_of_a_quiesced_namespace_is_replaced_at_once() {
    let (mut h, _spies) = start(74, &[IDLE]).await;
    let leader = h.leader(IDLE).await;
    wait_quiesced(&h, IDLE).await;
    h.crash(leader).await;
    let crashed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new = h.leader_among(IDLE, &survivors).await;
    // Without the liveness probe, quiesced followers would never notice (their election timers
    // are off); with it, detection takes one minimum election timeout and the election one
    // more: well within the local preset's failover time, plus slack for a loaded machine.
    let elapsed = crashed.elapsed();
    assert!(elapsed < Duration::from_secs(5), "new leader after {elapsed:?}");
    h.cluster(new, IDLE).set(b"k", b"after crash").await.expect("the new leader takes writes");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_closing_hands_its_quiesced_namespaces_off() {
    let (mut h, _spies) = start(75, &[IDLE]).await;
    let leader = h.leader(IDLE).await;
    wait_quiesced(&h, IDLE).await;
    stay_quiet().await;
    let node = h.nodes[leader].take().expect("running");
    node.close().await;
    // Handed off before close returned: a survivor already leads. (A quiesced leader has no
    // heartbeat acknowledgements; without the liveness probe's word that its peers answer,
    // it would find no successor and leave the survivors to detect its absence and elect.)
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let roles: Vec<Role> = others.iter().map(|i| h.cluster(*i, IDLE).state().role).collect();
    assert!(roles.contains(&Role::Leader), "no survivor leads right after the close: {roles:?}");
    h.network.down(h.ids[leader]);
    h.shutdown().await;
}
