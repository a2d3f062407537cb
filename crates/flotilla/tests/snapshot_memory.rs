//! Snapshots stream through disk: building, sending, receiving and installing a 210 MB snapshot
//! keeps the process's peak memory far below the snapshot's size (issue 11, point 6).
//!
//! The snapshot takes the real path: the leader's store builds it, the network code
//! (`GroupNetwork::full_snapshot`) cuts it into chunks, the follower's inbox receives them and
//! its store installs the result. Only the transport is a loopback. Memory is measured two
//! ways over the measured part: the peak of live heap bytes, counted by this binary's global
//! allocator (exact, and blind to what the allocator keeps cached), and the process's
//! high-water mark of resident memory (`VmHWM`, reset before), which also sees everything
//! else. This test is alone in its binary, so nothing else runs in the process meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
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
/// Most the measured part may add to the peak of live heap bytes.
const HEAP_LIMIT: u64 = 64 << 20;
/// Most it may add to the peak resident memory, which also counts what the allocator keeps
/// cached per thread and the stacks of the threads it starts.
const RSS_LIMIT: u64 = 128 << 20;
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

/// The system allocator, counting the bytes allocated and not yet freed, and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `/proc/self/status` field `name`, in bytes.
fn status_bytes(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {status}"));
    let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap();
    kb * 1024
}

/// Reset the peak resident memory to the current one; returns the current one, or `None`
/// when the kernel does not allow it.
fn reset_peak_rss() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    Some(status_bytes("VmRSS:"))
}

/// What running `f` added to the peaks of memory.
#[derive(Debug, Clone, Copy)]
struct Growth {
    /// Peak of live heap bytes.
    heap: u64,
    /// Peak resident memory.
    rss: u64,
}

/// Run `f` and measure how much it grew the peaks of memory; `None` when the peak resident
/// memory cannot be reset here.
async fn peak_growth<T>(f: impl std::future::Future<Output = T>) -> Option<(T, Growth)> {
    let rss = reset_peak_rss()?;
    let heap = LIVE.load(Ordering::Relaxed);
    PEAK.store(heap, Ordering::Relaxed);
    let out = f.await;
    let growth = Growth {
        heap: (PEAK.load(Ordering::Relaxed).saturating_sub(heap)) as u64,
        rss: status_bytes("VmHWM:").saturating_sub(rss),
    };
    Some((out, growth))
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
    chunks: AtomicUsize,
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
        self.chunks.fetch_add(1, Ordering::Relaxed);
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
    // The probes themselves: they must see memory that is touched and then freed.
    let Some((_, control)) = peak_growth(async { std::hint::black_box(vec![1u8; 128 << 20]).len() }).await else {
        eprintln!("SKIPPED: /proc/self/clear_refs cannot reset the peak resident memory here (needs Linux >= 4.0)");
        return;
    };
    assert!(control.heap >= 128 << 20 && control.rss >= 120 << 20, "the probes missed 128 MiB: {control:?}");

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
        "built, sent in {} chunks and installed {size} bytes in {:?}; peaks grew by {} MiB of heap, {} MiB resident",
        loopback.chunks.load(Ordering::Relaxed),
        measured.elapsed(),
        growth.heap >> 20,
        growth.rss >> 20
    );
    assert!(size > 200_000_000, "the snapshot holds {size} bytes");
    assert!(growth.heap < HEAP_LIMIT, "the heap peak grew by {} bytes for a {size}-byte snapshot", growth.heap);
    assert!(growth.rss < RSS_LIMIT, "the resident peak grew by {} bytes for a {size}-byte snapshot", growth.rss);

    // The follower holds the leader's state, and no received file is left behind.
    let last = format!("v{:04}", VALUES - 1);
    assert_eq!(follower.kv_get(&ns(), last.as_bytes()).unwrap(), Some(vec![(VALUES - 1) as u8; VALUE_BYTES]));
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
