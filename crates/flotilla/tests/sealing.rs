//! The cluster key: sealed replication, forwarding, snapshots and failover; refusal of peers
//! with the wrong key or none; rotation under continuous writes. In process, over the in-process
//! network, on real stores.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, Harness};
use flotilla::{Consistency, MemberRole};
use flotilla_core::keyring::ClusterKey;
use flotilla_core::types::NodeId;
use flotilla_core::wire::{
    CommandEnvelope, CommandRequest, Hello, Lane, RequestBody, Sealed, WireError, WireRequest, WireResponse,
};
use flotilla_core::{InboundHandler, MemberInfo, Namespace, Transport, TransportError};

const NS: &str = "default";
/// Written in every test value, and searched for in every message on the wire.
const MARKER: &[u8] = b"VISIBLE-PLAINTEXT-MARKER";

fn small_snapshots(c: &mut flotilla::Config) {
    c.snapshot_every = 20;
    c.keep_logs_behind_snapshot = 5;
}

fn expect_three(c: &mut flotilla::Config) {
    c.expect = Some(3);
}

/// Write a keyring file holding `keys` (first seals), mode 0600.
fn write_keyring(path: &Path, keys: &[&ClusterKey]) {
    let text: String = keys.iter().map(|k| format!("{}\n", k.to_hex())).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::rename(&tmp, path).unwrap();
}

/// Key files for nodes `0..n`, all holding `keys`, in `dir`.
fn key_files(dir: &Path, n: usize, keys: &[&ClusterKey]) -> Vec<Option<PathBuf>> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("node{i}.keys"));
            write_keyring(&path, keys);
            Some(path)
        })
        .collect()
}

/// A transport that watches everything one node puts on the wire.
struct Spy {
    inner: Arc<dyn Transport>,
    messages: AtomicU64,
    leaked: AtomicBool,
    plain: Mutex<Vec<String>>,
}

impl Spy {
    fn inspect(&self, bytes: &[u8], what: String, sealed: bool) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        if bytes.windows(MARKER.len()).any(|w| w == MARKER) {
            self.leaked.store(true, Ordering::Relaxed);
        }
        if !sealed {
            self.plain.lock().unwrap().push(what);
        }
    }
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
        let sealed = matches!(request.body, RequestBody::Sealed(_) | RequestBody::Hello(_));
        self.inspect(&flotilla_core::encode(&request).unwrap(), format!("{:?}", request.body), sealed);
        let reply = self.inner.call(to, request, timeout).await?;
        let sealed = matches!(reply, WireResponse::Sealed(_) | WireResponse::Welcome(_) | WireResponse::Error(_));
        self.inspect(&flotilla_core::encode(&reply).unwrap(), format!("{reply:?}"), sealed);
        Ok(reply)
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

fn value(i: u32) -> Vec<u8> {
    [MARKER, &i.to_be_bytes()].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sealed_cluster_replicates_forwards_installs_snapshots_and_fails_over() {
    let keys_dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::generate();
    let mut h = Harness::new(3, 41, &[NS], small_snapshots);
    h.key_files = key_files(keys_dir.path(), 3, &[&key]);
    let spies: Vec<Arc<Spy>> = (0..3)
        .map(|i| {
            let inner = h.network.transport(h.ids[i]);
            Arc::new(Spy {
                inner,
                messages: AtomicU64::new(0),
                leaked: AtomicBool::new(false),
                plain: Mutex::default(),
            })
        })
        .collect();
    for (i, spy) in spies.iter().enumerate() {
        let spy = spy.clone();
        h.boot_wrapped(i, move |_| spy as Arc<dyn Transport>).await;
    }
    h.wait_voters(NS, 3).await;

    // Forwarding through a follower, and a linearizable read on the other follower.
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let other = (0..3).find(|i| *i != l && *i != f).unwrap();
    let written = h.cluster(f, NS).set(b"via-follower", &value(1)).await.unwrap();
    let read = h.cluster(other, NS).get(b"via-follower", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value, Some(value(1)));
    assert!(read.index >= written.index);

    // A follower that misses enough entries catches up through a (sealed) snapshot.
    h.crash(other).await;
    let mut last = 0;
    for i in 0..120u32 {
        last = h.cluster(l, NS).set(format!("s{i:04}").as_bytes(), &value(i)).await.unwrap().index;
    }
    let leader = h.cluster(l, NS);
    eventually("leader snapshot and purge", || leader.state().snapshot_index > 60).await;
    let spy = spies[other].clone();
    h.network.up(h.ids[other]);
    h.boot_wrapped(other, move |_| spy as Arc<dyn Transport>).await;
    h.wait_applied(other, NS, last).await;
    assert!(h.cluster(other, NS).state().snapshot_index > 0, "caught up through a snapshot");
    let v = h.cluster(other, NS).get(b"s0007", Consistency::Stale).await.unwrap();
    assert_eq!(v.value, Some(value(7)));

    // Leader failover: the survivors elect a leader over sealed votes and keep writing.
    h.crash(l).await;
    let new = h.leader(NS).await;
    assert_ne!(new, l);
    let survivor = h.live().into_iter().find(|i| *i != new).unwrap();
    h.cluster(survivor, NS).set(b"after-failover", &value(2)).await.unwrap();
    let read = h.cluster(survivor, NS).get(b"via-follower", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value, Some(value(1)));

    let total: u64 = spies.iter().map(|s| s.messages.load(Ordering::Relaxed)).sum();
    assert!(total > 200, "only {total} messages seen on the wire");
    for (i, spy) in spies.iter().enumerate() {
        assert!(!spy.leaked.load(Ordering::Relaxed), "node {i} put a value on the wire in plain");
        let plain = spy.plain.lock().unwrap();
        assert!(plain.is_empty(), "node {i} sent plain messages: {:?}", &plain[..plain.len().min(3)]);
    }
    let status = h.node(new).sealing_status();
    assert!(status.enabled && status.opened > 0 && status.handshakes > 0, "{status:?}");
    assert_eq!(status.sealing_key, Some(key.id().to_string()));
    h.shutdown().await;
}

/// Start nodes 0..3 with `members_key`, then node 3 with `outsider_key`; it must be refused.
async fn outsider_is_refused(outsider_key: Option<&ClusterKey>, reason: &str) {
    let keys_dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::generate();
    let mut h = Harness::new(4, 43, &[NS], expect_three);
    h.key_files = key_files(keys_dir.path(), 4, &[&key]);
    if let Some(k) = outsider_key {
        write_keyring(h.key_files[3].as_deref().unwrap(), &[k]);
    } else {
        h.key_files[3] = None;
    }
    for i in 0..3 {
        h.boot(i).await;
    }
    h.wait_voters(NS, 3).await;
    let l = h.leader(NS).await;
    h.cluster(l, NS).set(b"secret", MARKER).await.unwrap();
    h.boot(3).await;

    // Both sides name the cause.
    let outsider = h.node(3).clone();
    let id3 = h.ids[3].to_string();
    eventually("the outsider reports the refusal", || {
        outsider.sealing_status().refusals.iter().any(|r| r.reason.contains(reason))
    })
    .await;
    let leader = h.node(l).clone();
    eventually("the leader reports the outsider", || {
        leader.sealing_status().refusals.iter().any(|r| r.peer == id3 && r.reason.contains(reason))
    })
    .await;
    // The outsider never got in: not a member, no vote, no data.
    let state = h.cluster(l, NS).state();
    assert_eq!(state.members.len(), 3, "{:?}", state.members);
    assert!(state.members.iter().all(|m| m.id.to_string() != id3));
    let outside = h.cluster(3, NS).state();
    assert!(
        outside.members.iter().all(|m| m.role != MemberRole::Voter || m.id.to_string() == id3),
        "{:?}",
        outside.members
    );
    let read = h.cluster(3, NS).get(b"secret", Consistency::Stale).await.unwrap();
    assert_eq!(read.value, None, "the outsider holds the members' data");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_the_wrong_key_is_refused_with_the_reason() {
    outsider_is_refused(Some(&ClusterKey::generate()), "cluster key mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_without_a_key_is_refused_with_the_reason() {
    outsider_is_refused(None, "cluster key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_without_the_key_can_neither_write_join_nor_read() {
    let keys_dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::generate();
    let mut h = Harness::new(3, 44, &[NS], expect_three);
    h.key_files = key_files(keys_dir.path(), 3, &[&key]);
    for i in 0..3 {
        h.boot(i).await;
    }
    h.wait_voters(NS, 3).await;
    let l = h.leader(NS).await;
    let target = h.ids[l];
    // A rogue speaks the protocol directly on the network, without the key.
    let rogue_id = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let rogue = h.network.transport(rogue_id);
    let ns = Namespace::new(NS).unwrap();
    let command = |request| RequestBody::Command(CommandEnvelope { hops_left: 2, budget_ms: 5_000, request });
    let wrong_key = ClusterKey::generate();
    let attempts = vec![
        ("write", command(CommandRequest::Write(flotilla_core::Command { id: None, payload: b"owned".to_vec() }))),
        ("join", command(CommandRequest::Join { info: MemberInfo::new(vec![]), fresh: true })),
        ("read index", command(CommandRequest::ReadIndex)),
        ("hello with a forged proof", RequestBody::Hello(Hello { key_id: key.id(), nonce: [1; 16], proof: [2; 32] })),
        (
            "hello with another key",
            RequestBody::Hello(Hello { key_id: wrong_key.id(), nonce: [1; 16], proof: [2; 32] }),
        ),
    ];
    for (what, body) in attempts {
        let reply = rogue.call(target, WireRequest { namespace: ns.clone(), body }, Duration::from_secs(5)).await;
        match reply {
            Ok(WireResponse::Error(WireError::Unauthenticated(why))) => assert!(why.contains("cluster key"), "{why}"),
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }
    // Sealed garbage on a made-up session is not even opened.
    let garbage = Sealed { session: [9; 16], lane: Lane::Command, seq: 1, ciphertext: vec![0; 64] };
    let reply = rogue
        .call(target, WireRequest { namespace: ns.clone(), body: RequestBody::Sealed(garbage) }, Duration::from_secs(5))
        .await;
    assert!(matches!(reply, Ok(WireResponse::Error(WireError::UnknownSession))), "{reply:?}");
    // Nothing changed.
    let state = h.cluster(l, NS).state();
    assert_eq!(state.members.len(), 3);
    assert_eq!(h.cluster(l, NS).get(b"owned", Consistency::Linearizable).await.unwrap().value, None);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_rotate_under_continuous_writes_without_a_failed_write() {
    let keys_dir = tempfile::tempdir().unwrap();
    let (old, new) = (ClusterKey::generate(), ClusterKey::generate());
    let mut h = Harness::new(3, 45, &[NS], expect_three);
    h.key_files = key_files(keys_dir.path(), 3, &[&old]);
    for i in 0..3 {
        h.boot(i).await;
    }
    h.wait_voters(NS, 3).await;

    // One writer per node, each writing through its own node (followers forward).
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for i in 0..3 {
        let (cluster, stop, acked, failures) = (h.cluster(i, NS), stop.clone(), acked.clone(), failures.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match cluster.set(format!("w{i}-{n}").as_bytes(), &n.to_be_bytes()).await {
                    Ok(_) => acked.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures.lock().unwrap().push(format!("writer {i} #{n}: {e}"));
                        0
                    }
                };
            }
        }));
    }
    let progress = |more: u64| {
        let target = acked.load(Ordering::Relaxed) + more;
        let acked = acked.clone();
        async move { eventually("writes keep succeeding", || acked.load(Ordering::Relaxed) >= target).await }
    };
    progress(30).await;
    let steps: [&[&ClusterKey]; 3] = [&[&old, &new], &[&new, &old], &[&new]];
    for keys in steps {
        for i in 0..3 {
            write_keyring(h.key_files[i].as_deref().unwrap(), keys);
            let ids = h.node(i).reload_keyring().unwrap();
            assert_eq!(ids[0], keys[0].id());
            // Let traffic flow with the cluster half-changed, too.
            progress(10).await;
        }
    }
    progress(30).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{} failed writes, first: {:?}", failures.len(), failures.first());
    for i in 0..3 {
        let status = h.node(i).sealing_status();
        assert_eq!(status.accepted_keys, vec![new.id().to_string()], "node {i}");
        assert!(status.refusals.is_empty(), "node {i}: {:?}", status.refusals);
    }
    h.shutdown().await;
}
