//! Snapshots stream through disk: building, sending, receiving and installing a 210 MB snapshot
//! keeps the process's peak memory far below the snapshot's size (issue 11, point 6).
//!
//! The snapshot takes the real path: the leader's store builds it, the network code
//! (`GroupNetwork::full_snapshot`) cuts it into chunks, the follower's inbox receives them and
//! its store installs the result. Only the transport is a loopback. Peak memory is the
//! process's high-water mark of resident memory (`VmHWM`), reset before the measured part.
//! This test is alone in its binary, so nothing else runs in the process meanwhile.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla::network::GroupNetworkFactory;
use flotilla::snapshot_inbox::{InboxLimits, SnapshotInbox};
use flotilla::wire_budget::WireBudget;
use flotilla_core::kv::encode_ops;
use flotilla_core::types::{Entry, LogId, Vote};
use flotilla_core::wire::{RaftRequest, RaftResponse, RequestBody, WireError, WireRequest, WireResponse};
use flotilla_core::{
    Command, InboundHandler, KvOp, KvStateMachine, MemberInfo, Namespace, NodeId, Transport, TransportError, TypeConfig,
};
use flotilla_store::{StateMachineStore, Store, StoreOptions};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::SnapshotResponse;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, Membership, RaftNetworkV2, RaftTypeConfig};
use tokio::sync::Mutex;

/// 200 values of 1 MiB: the snapshot holds 210 MB.
const VALUES: u64 = 200;
const VALUE_BYTES: usize = 1 << 20;
/// Most the measured part may add to the peak resident memory.
const GROWTH_LIMIT: u64 = 64 << 20;
/// redb keeps pages it reads and writes in a cache of up to 1 GiB by default, which would
/// hide what the snapshot path itself holds; both stores get a small one.
const REDB_CACHE: usize = 8 << 20;
/// Frames of 16 MiB: chunks of 8 MiB, as a node with the default frame size sends.
const FRAME: usize = 16 << 20;

fn ns() -> Namespace {
    Namespace::new("big").unwrap()
}

fn node(n: u8) -> NodeId {
    libp2p_identity::Keypair::ed25519_from_bytes([n; 32]).unwrap().public().to_peer_id()
}

fn log_id(index: u64) -> LogId {
    LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(1, node(1)), index)
}

fn open(dir: &std::path::Path) -> Arc<Store> {
    Store::open_with(dir, StoreOptions { cache_bytes: Some(REDB_CACHE), ..StoreOptions::default() }).unwrap()
}

/// `/proc/self/status` field `name`, in bytes.
fn status_bytes(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {status}"));
    let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap();
    kb * 1024
}

/// Reset the peak resident memory to the current one; returns the current one, or `None`
/// when the kernel does not allow it.
fn reset_peak() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    Some(status_bytes("VmRSS:"))
}

/// How much the peak resident memory grew while `f` ran.
async fn peak_growth<T>(f: impl std::future::Future<Output = T>) -> Option<(T, u64)> {
    let base = reset_peak()?;
    let out = f.await;
    Some((out, status_bytes("VmHWM:").saturating_sub(base)))
}

/// Fill the leader's namespace with `VALUES` values, a few entries per apply.
async fn fill(sm: &mut StateMachineStore) {
    let voters: BTreeSet<NodeId> = [node(1), node(2)].into();
    let m = Membership::<NodeId, MemberInfo>::new_with_defaults(vec![voters], []);
    let mut next = 1;
    let mut batch = vec![Entry { log_id: log_id(next), payload: EntryPayload::Membership(m) }];
    for i in 0..VALUES {
        next += 1;
        let ops = encode_ops(&[KvOp::Set { key: format!("v{i:04}").into_bytes(), value: vec![i as u8; VALUE_BYTES] }]);
        batch.push(Entry { log_id: log_id(next), payload: EntryPayload::Normal(Command { id: None, payload: ops }) });
        if batch.len() >= 8 || i + 1 == VALUES {
            let entries = std::mem::take(&mut batch);
            sm.apply(futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))))).await.unwrap();
        }
    }
}

/// A transport that hands the leader's snapshot chunks to the follower's inbox and installs
/// what it assembles, as the follower's inbound handler does.
struct Loopback {
    leader: NodeId,
    store: Arc<Store>,
    inbox: SnapshotInbox,
    sm: Mutex<StateMachineStore>,
    chunks: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Transport for Loopback {
    fn local_id(&self) -> NodeId {
        self.leader
    }

    fn local_addrs(&self) -> Vec<String> {
        Vec::new()
    }

    async fn call(
        &self,
        _to: NodeId,
        request: WireRequest,
        _timeout: Duration,
    ) -> Result<WireResponse, TransportError> {
        let RequestBody::Raft(envelope) = request.body else {
            return Ok(WireResponse::Error(WireError::Malformed("only Raft".into())));
        };
        let RaftRequest::SnapshotChunk(chunk) = envelope.rpc else {
            return Ok(WireResponse::Error(WireError::Malformed("only snapshot chunks".into())));
        };
        self.chunks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (vote, meta) = (chunk.vote, chunk.meta.clone());
        match self.inbox.add(&self.store, self.leader, &request.namespace, chunk).await {
            Ok(None) => Ok(WireResponse::Raft(RaftResponse::SnapshotChunk(None))),
            Ok(Some(data)) => {
                self.sm.lock().await.install_snapshot(&meta, data).await.expect("the snapshot installs");
                Ok(WireResponse::Raft(RaftResponse::SnapshotChunk(Some(SnapshotResponse::new(vote)))))
            }
            Err(e) => Ok(WireResponse::Error(WireError::Rejected(e.to_string()))),
        }
    }

    fn set_handler(&self, _handler: Arc<dyn InboundHandler>) {}

    fn add_peer_addrs(&self, _peer: NodeId, _addrs: &[String]) {}

    async fn connect(&self, _addr: &str, _timeout: Duration) -> Result<NodeId, TransportError> {
        Err(TransportError::Closed)
    }
}

// About 40 s in a debug build on a shared 2-core machine, most of it filling the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_snapshot_is_built_sent_received_and_installed_in_bounded_memory() {
    // The probe itself: it must see memory that is touched and then freed.
    let Some((_, control)) = peak_growth(async { std::hint::black_box(vec![1u8; 128 << 20]).len() }).await else {
        eprintln!("SKIPPED: /proc/self/clear_refs cannot reset the peak resident memory here (needs Linux >= 4.0)");
        return;
    };
    assert!(control >= 120 << 20, "the probe missed a 128 MiB allocation: growth {control}");

    let started = Instant::now();
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = open(leader_dir.path());
    let mut leader_sm = leader.state_machine(&ns(), Arc::new(KvStateMachine)).unwrap();
    fill(&mut leader_sm).await;
    eprintln!("filled {VALUES} x {VALUE_BYTES} bytes in {:?}", started.elapsed());

    let follower_dir = tempfile::tempdir().unwrap();
    let follower = open(follower_dir.path());
    let follower_sm = follower.state_machine(&ns(), Arc::new(KvStateMachine)).unwrap();
    let limits = InboxLimits { max_snapshot: 1 << 30, max_total: 1 << 30, idle_expiry: Duration::from_secs(60) };
    let loopback = Arc::new(Loopback {
        leader: node(1),
        store: follower.clone(),
        inbox: SnapshotInbox::new(limits),
        sm: Mutex::new(follower_sm),
        chunks: Default::default(),
    });
    let budget = WireBudget::new(FRAME, Duration::from_secs(1));
    let mut factory = GroupNetworkFactory::new(loopback.clone(), ns(), budget);
    let mut network = factory.new_client(node(2), &MemberInfo::new(Vec::new())).await;

    let measured = Instant::now();
    let (size, growth) = peak_growth(async {
        let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let size = snapshot.snapshot.len();
        let cancel = futures::future::pending();
        let reply = network
            .full_snapshot(Vote::new_committed(1, node(1)), snapshot, cancel, RPCOption::new(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(reply.vote, Vote::new_committed(1, node(1)));
        size
    })
    .await
    .expect("the probe worked above");
    eprintln!(
        "built, sent in {} chunks and installed {size} bytes in {:?}; peak resident memory grew by {} MiB",
        loopback.chunks.load(std::sync::atomic::Ordering::Relaxed),
        measured.elapsed(),
        growth >> 20
    );
    assert!(size > 200_000_000, "the snapshot holds {size} bytes");
    assert!(growth < GROWTH_LIMIT, "peak resident memory grew by {growth} bytes for a {size}-byte snapshot");

    // The follower holds the leader's state, and no received file is left behind.
    let last = format!("v{:04}", VALUES - 1);
    assert_eq!(follower.get(&ns(), last.as_bytes()).unwrap(), Some(vec![(VALUES - 1) as u8; VALUE_BYTES]));
    assert_eq!(follower.applied(&ns()).unwrap(), Some(log_id(VALUES + 1)));
    let incoming: Vec<_> = std::fs::read_dir(follower_dir.path().join("snapshots/.incoming")).unwrap().collect();
    assert!(incoming.is_empty(), "{incoming:?}");
    let mut current = Vec::new();
    std::fs::File::open(follower_dir.path().join("snapshots/big/current.snap"))
        .unwrap()
        .take(8)
        .read_to_end(&mut current)
        .unwrap();
    assert_eq!(current, b"FLOTSNAP");
}
