//! Linearizability and watch checks under seeded chaos, through the etcd API.
//!
//! For each seed: a 3-node in-process cluster on real stores (flotilla's own test harness,
//! `crates/flotilla/tests/common/mod.rs`), each node serving etcd's v3 API on its own loopback
//! TCP listener. Clients speak to it with the `etcd-client` crate only, each operation through
//! a random node's endpoint (a crashed node's dead endpoint included: its connections are
//! refused): puts of unique values, linearizable gets, and compare-and-sets as a Txn (compare
//! the key's `mod_revision` with the one a get saw, then put; nothing otherwise). A watcher
//! follows every key through the etcd Watch API with previous values, and after any error or
//! end watches again from the revision after the last one it received, through another random
//! node. The fault schedule, drawn from the seed, kills the leader (its endpoint stops with it;
//! both come back later), isolates the leader, and partitions a random node, in a seeded order,
//! then heals.
//!
//! After the heal: a leader, a final linearizable get of every key, and the history of every
//! operation checked with `flotilla_check::check_all`; the watcher's stream and each
//! acknowledged put's revision (from the response header) are checked against one whole watch
//! from revision 1, read through one node's etcd endpoint (`common/watch_check.rs`).
//!
//! - `FLOTILLA_ETCD_CHAOS_SEEDS=n`: how many seeds (default [`DEFAULT_SEEDS`]), starting at
//!   `FLOTILLA_ETCD_CHAOS_FIRST` (default 0);
//! - `FLOTILLA_ETCD_CHAOS_SEED=n`: run only seed `n`;
//! - `FLOTILLA_ETCD_CHAOS_PARALLEL=n`: seeds at once (default [`DEFAULT_PARALLEL`]).
//!
//! A failure names the seed, with the minimal non-linearizable history of the key or the
//! watch violations.

#[path = "../../flotilla/tests/common/mod.rs"]
mod common;
// Some of the checker's helpers serve only flotilla's own chaos test.
#[allow(dead_code)]
#[path = "../../flotilla/tests/common/watch_check.rs"]
mod watch_check;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Harness;
use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions, WatchStream};
use flotilla::kv::{EventKind, KeyValue, WatchEvent};
use flotilla::{Config, Namespace, WatchMessage};
use flotilla_check::{check_all, Budget, History, Op, Outcome, Recorder, Ticket, Value, Verdict};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, RwLock};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Code;
use watch_check::{check_acknowledged, check_watcher, Ack, Reference, WatchSpec, WatcherLog};

/// The namespace the endpoints serve.
const NS: &str = "default";
const NODES: usize = 3;
const KEYS: [&str; 3] = ["a", "b", "c"];
const CLIENTS: usize = 4;
/// Share of a client's operations that are compare-and-sets; the rest are half puts, half gets.
const CAS_SHARE: f64 = 0.2;

/// Seeds per run when `FLOTILLA_ETCD_CHAOS_SEEDS` is not set: the binary stays well under a
/// minute on a loaded 2-core machine.
const DEFAULT_SEEDS: u64 = 2;
/// Seeds at once when `FLOTILLA_ETCD_CHAOS_PARALLEL` is not set.
const DEFAULT_PARALLEL: usize = 2;

/// Server-side deadline of one request (forwarding and retries included).
const REQUEST_TIMEOUT_MS: u64 = 1_200;
/// Client-side deadline of one operation: past it the client gives up (outcome unknown).
const OP_DEADLINE: Duration = Duration::from_millis(1_600);
/// How long connecting to an endpoint may take (loopback: a refusal is immediate).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the cluster may take to serve the final reads once everything is healed.
const RECOVERY: Duration = Duration::from_secs(30);
/// How long a stopped endpoint may take to finish its connections before it is aborted.
const ENDPOINT_STOP: Duration = Duration::from_secs(5);
/// Search budget per key; a seed's histories have at most a few hundred operations per key.
const BUDGET: Budget = Budget { max_steps: 50_000_000, max_time: Duration::from_secs(30) };

/// Short Raft timeouts so a seed takes a few seconds (as in flotilla's chaos test).
fn fast(c: &mut Config) {
    c.heartbeat_ms = Some(100);
    c.election_min_ms = Some(250);
    c.election_max_ms = Some(500);
    c.request_timeout_ms = REQUEST_TIMEOUT_MS;
}

// ---------------------------------------------------------------------------------------------
// How a failed request ended, as far as an etcd client can tell.

/// Why an operation got no answer.
#[derive(Debug)]
enum Failure {
    /// No connection to the endpoint could be made: the request was never sent.
    Connect(String),
    /// The request was sent (or may have been) and failed.
    Request(etcd_client::Error),
    /// No answer within the client's deadline.
    Deadline,
}

/// Whether a failed write may have taken effect. Only what proves the request was never
/// applied is a definite failure ([`Outcome::Fail`]); anything else is [`Outcome::Unknown`]. A
/// wrong "definite failure" would make the checker report false violations or hide real ones.
fn outcome_of(failure: &Failure) -> Outcome {
    match failure {
        Failure::Connect(_) => Outcome::Fail,
        Failure::Deadline => Outcome::Unknown,
        Failure::Request(etcd_client::Error::GRpcStatus(status)) => outcome_of_code(status.code()),
        // The client refused the arguments before building a request.
        Failure::Request(etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_)) => Outcome::Fail,
        // A broken stream, an I/O or transport error: the request may have reached the server.
        Failure::Request(_) => Outcome::Unknown,
    }
}

/// Whether a gRPC status with `code` proves the request was not applied.
///
/// Flotilla's endpoint (`src/status.rs`) answers these codes only for errors Flotilla itself
/// classes as "not applied": `InvalidArgument` (a malformed or refused request), `FailedPrecondition`,
/// `OutOfRange` (a compacted or future revision), `NotFound` (no such lease), `Unimplemented` (an
/// unsupported option, refused before anything happens). `Unavailable` is not among them: the
/// endpoint answers it for "no leader" (not applied) and for timeouts and a leader lost mid-way
/// (unknown) alike, and the client's transport answers it for a connection broken after
/// sending. `Internal`, `Cancelled`, `ResourceExhausted` and `PermissionDenied` are also what
/// the HTTP/2 layer makes of a stream reset (`ENHANCE_YOUR_CALM`, `INADEQUATE_SECURITY`), which
/// may come after the server processed the request, so they prove nothing either.
fn outcome_of_code(code: Code) -> Outcome {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange | Code::NotFound | Code::Unimplemented => {
            Outcome::Fail
        }
        _ => Outcome::Unknown,
    }
}

/// A short name for a failure, for the counts of the report.
fn failure_kind(failure: &Failure) -> String {
    match failure {
        Failure::Connect(reason) => format!("connect: {reason}"),
        Failure::Deadline => "client deadline".into(),
        Failure::Request(etcd_client::Error::GRpcStatus(status)) => {
            format!("{:?}: {}", status.code(), gist(status.message()))
        }
        Failure::Request(other) => format!("client error: {other}"),
    }
}

/// The gist of an error message, for counting by kind: up to the first detail (Flotilla's
/// messages may go on with node ids and cluster states), at most [`GIST_CHARS`] characters.
fn gist(message: &str) -> &str {
    let end = message.find([',', '{', '(']).unwrap_or(message.len());
    let end = message.char_indices().nth(GIST_CHARS).map_or(end, |(i, _)| i.min(end));
    message[..end].trim_end()
}

/// The longest gist of a message.
const GIST_CHARS: usize = 100;

// ---------------------------------------------------------------------------------------------
// The nodes' etcd endpoints.

/// The etcd endpoint of one running node.
struct Served {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), flotilla_etcd::EtcdError>>,
}

/// The cluster and its endpoints, changed together (a crash stops both).
struct World {
    harness: Harness,
    endpoints: Vec<Option<Served>>,
    /// Every node's last endpoint address, dead or alive: clients may aim at a dead one.
    addrs: Vec<SocketAddr>,
    /// Which incarnation of each node's endpoint runs, if one does: a watcher notices by it
    /// that its endpoint stopped, without waiting for the lock a crash holds.
    running: Arc<Mutex<Vec<Option<u64>>>>,
    generations: u64,
    /// Stopped endpoints that did not finish their connections within [`ENDPOINT_STOP`].
    ungraceful: u64,
}

impl World {
    async fn new(harness: Harness) -> World {
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let endpoints = (0..NODES).map(|_| None).collect();
        let running = Arc::new(Mutex::new(vec![None; NODES]));
        let addrs = vec![unbound; NODES];
        let mut world = World { harness, endpoints, addrs, running, generations: 0, ungraceful: 0 };
        for i in 0..NODES {
            world.serve(i).await;
        }
        world
    }

    /// Serve the etcd API of node `i` on a fresh loopback listener.
    async fn serve(&mut self, i: usize) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback listener");
        self.addrs[i] = listener.local_addr().expect("listener address");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let node = self.harness.node(i).clone();
        let namespace = Namespace::new(NS).expect("valid namespace");
        let task = tokio::spawn(flotilla_etcd::serve(listener, node, namespace, shutdown));
        self.generations += 1;
        self.set_running(i, Some(self.generations));
        self.endpoints[i] = Some(Served { stop, task });
    }

    fn set_running(&self, i: usize, generation: Option<u64>) {
        self.running.lock().unwrap_or_else(|p| p.into_inner())[i] = generation;
    }

    /// Stop node `i`'s endpoint: no new connection, and the open ones finish (or are dropped).
    async fn stop_endpoint(&mut self, i: usize) {
        let Some(served) = self.endpoints[i].take() else { return };
        // First, so that a watcher through it lets go of its stream, which the graceful stop
        // waits for.
        self.set_running(i, None);
        let _ = served.stop.send(());
        let mut task = served.task;
        if tokio::time::timeout(ENDPOINT_STOP, &mut task).await.is_err() {
            task.abort();
            self.ungraceful += 1;
        }
    }

    /// Crash node `i` (as the harness does), then its endpoint: requests in flight on it meet a
    /// halted node first, then a closed listener.
    async fn crash(&mut self, i: usize) {
        self.harness.crash(i).await;
        self.stop_endpoint(i).await;
    }

    async fn reboot(&mut self, i: usize) {
        self.harness.reboot(i).await;
        self.serve(i).await;
    }

    /// The running node that believes it leads, if any (no waiting).
    fn current_leader(&self) -> Option<usize> {
        self.harness.live().into_iter().find(|i| self.harness.cluster(*i, NS).is_leader())
    }

    async fn shutdown(mut self) {
        for i in 0..NODES {
            self.stop_endpoint(i).await;
        }
        self.harness.shutdown().await;
    }
}

/// A client of the endpoint at `addr` over a connection made first, so that a failure to
/// connect is known to have sent nothing.
async fn connect(addr: SocketAddr) -> Result<Client, Failure> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Failure::Connect(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = match tokio::time::timeout(CONNECT_TIMEOUT * 2, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return Err(Failure::Connect(innermost(&e))),
        Err(_) => return Err(Failure::Connect("connect timed out".into())),
    };
    Client::from_channel(etcd_client::Channel::Tonic(channel), None).await.map_err(Failure::Request)
}

/// The innermost cause of `error` (a transport error's own text says only "transport error").
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    // Bounded: a source chain is a handful of wrappers deep.
    for _ in 0..16 {
        match cause.source() {
            Some(next) => cause = next,
            None => break,
        }
    }
    cause.to_string()
}

/// Run `call` on a fresh client of `addr` within [`OP_DEADLINE`] (connecting included).
async fn call<T, F, Fut>(addr: SocketAddr, call: F) -> Result<T, Failure>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let attempt = async {
        let client = connect(addr).await?;
        call(client).await.map_err(Failure::Request)
    };
    tokio::time::timeout(OP_DEADLINE, attempt).await.unwrap_or(Err(Failure::Deadline))
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// What the clients and the watcher share.
struct Ctx {
    world: RwLock<World>,
    /// [`World::running`].
    running: Arc<Mutex<Vec<Option<u64>>>>,
    recorder: Recorder,
    next_value: AtomicU64,
    stop: AtomicBool,
    /// Acknowledged puts with the revision of their response header.
    acks: Mutex<Vec<Ack>>,
    /// How failed operations failed, by kind.
    failures: Mutex<BTreeMap<String, u64>>,
    /// Compare-and-sets refused before anything happened (recorded as unknown, see [`cas`]).
    cas_refused: AtomicU64,
    /// Set when the cluster did not recover: the watcher stops at once, unchecked.
    watchers_abandon: AtomicBool,
    /// How the clients' gets read (the final reads are always linearizable).
    reads: Reads,
}

/// How the clients' gets read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reads {
    /// A Range without `serializable`: what the test checks.
    Linearizable,
    /// A Range with `serializable` (the answering node's local state): what the check must flag.
    Serializable,
}

impl Reads {
    fn options(self) -> Option<GetOptions> {
        match self {
            Reads::Linearizable => None,
            Reads::Serializable => Some(GetOptions::new().with_serializable()),
        }
    }
}

impl Ctx {
    fn new(world: World, reads: Reads) -> Ctx {
        Ctx {
            running: world.running.clone(),
            world: RwLock::new(world),
            recorder: Recorder::new(),
            next_value: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            acks: Mutex::new(Vec::new()),
            failures: Mutex::new(BTreeMap::new()),
            cas_refused: AtomicU64::new(0),
            watchers_abandon: AtomicBool::new(false),
            reads,
        }
    }

    /// The incarnation of node `i`'s endpoint, if it runs.
    fn generation(&self, i: usize) -> Option<u64> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())[i]
    }

    /// Count `failure` and return its outcome.
    fn failed(&self, failure: &Failure) -> Outcome {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        *failures.entry(failure_kind(failure)).or_default() += 1;
        outcome_of(failure)
    }

    /// Note that the put of `value` to `key` was acknowledged at `revision`.
    fn acknowledged(&self, key: &str, value: &str, revision: i64) -> Outcome {
        let revision = u64::try_from(revision).unwrap_or(0);
        let ack = Ack { key: key.into(), value: value.into(), revision };
        self.acks.lock().unwrap_or_else(|p| p.into_inner()).push(ack);
        Outcome::Ok
    }

    fn fresh_value(&self) -> String {
        format!("v{}", self.next_value.fetch_add(1, Ordering::Relaxed))
    }
}

/// The endpoint of a random node, running or not (a crashed node's refuses connections).
async fn random_endpoint(ctx: &Ctx, rng: &mut StdRng) -> SocketAddr {
    let world = ctx.world.read().await;
    *world.addrs.choose(rng).expect("nodes")
}

fn value_of(kv: Option<&etcd_client::KeyValue>) -> Option<Value> {
    kv.map(|kv| Value(String::from_utf8_lossy(kv.value()).into_owned()))
}

/// The revision of a response's header (0 without one: the ack check then flags it).
fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

fn complete(ctx: &Ctx, ticket: Ticket, outcome: Outcome) -> Outcome {
    ctx.recorder.complete(ticket, outcome).expect("fresh ticket");
    outcome
}

/// Record one put of a fresh unique value through `addr`.
async fn put(ctx: &Ctx, client: u64, addr: SocketAddr, key: &'static str) -> Outcome {
    let value = ctx.fresh_value();
    let ticket = ctx.recorder.invoke(client, key, Op::write(value.as_str()));
    let sent = value.clone();
    let result = call(addr, |mut c| async move { c.put(key, sent, None).await }).await;
    let outcome = match result {
        Ok(response) => ctx.acknowledged(key, &value, header_revision(response.header())),
        Err(failure) => ctx.failed(&failure),
    };
    complete(ctx, ticket, outcome)
}

/// A get of `key` through `addr` ([`Ctx::reads`]): its value and mod revision (0 when absent).
async fn get(ctx: &Ctx, client: u64, addr: SocketAddr, key: &'static str) -> Option<(Option<Value>, i64)> {
    let ticket = ctx.recorder.invoke(client, key, Op::read());
    let options = ctx.reads.options();
    match call(addr, |mut c| async move { c.get(key, options).await }).await {
        Ok(response) => {
            let kv = response.kvs().first();
            let seen = (value_of(kv), kv.map_or(0, |kv| kv.mod_revision()));
            ctx.recorder.complete_read(ticket, seen.0.clone()).expect("fresh ticket");
            Some(seen)
        }
        Err(failure) => {
            let outcome = ctx.failed(&failure);
            complete(ctx, ticket, outcome);
            None
        }
    }
}

/// Record one compare-and-set of `key` through `addr`: a get (recorded too) learns the value
/// and its mod revision, then a Txn puts a fresh unique value only if the key's mod revision
/// is still that one (0: still absent), and does nothing otherwise.
///
/// The checker compares values, the Txn mod revisions; they agree because every put writes a
/// value never written before, so a value names exactly one revision. A Txn answered with
/// `succeeded: false` observed that the key no longer held the value read: [`Outcome::Fail`].
/// A Txn that failed with an error observed nothing, even when the error proves it was not
/// applied: recorded as [`Outcome::Unknown`] (which allows that it never happened), counted.
async fn cas(ctx: &Ctx, client: u64, addr: SocketAddr, key: &'static str) -> Outcome {
    let Some((expected, seen)) = get(ctx, client, addr, key).await else { return Outcome::Unknown };
    let value = ctx.fresh_value();
    let ticket = ctx.recorder.invoke(client, key, Op::Cas { expected, new: value.as_str().into() });
    let txn = Txn::new().when([Compare::mod_revision(key, CompareOp::Equal, seen)]).and_then([TxnOp::put(
        key,
        value.as_str(),
        None,
    )]);
    let outcome = match call(addr, |mut c| async move { c.txn(txn).await }).await {
        Ok(response) if response.succeeded() => ctx.acknowledged(key, &value, header_revision(response.header())),
        Ok(_) => Outcome::Fail,
        Err(failure) => {
            if ctx.failed(&failure) == Outcome::Fail {
                ctx.cas_refused.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Unknown
        }
    };
    complete(ctx, ticket, outcome)
}

/// One client: random puts, gets and compare-and-sets on random keys through random
/// endpoints until told to stop.
async fn client(ctx: Arc<Ctx>, mut rng: StdRng) {
    let mut id = ctx.recorder.new_client();
    while !ctx.stop.load(Ordering::Relaxed) {
        let key = *KEYS.choose(&mut rng).expect("keys");
        let addr = random_endpoint(&ctx, &mut rng).await;
        let outcome = if rng.gen_bool(CAS_SHARE) {
            cas(&ctx, id, addr, key).await
        } else if rng.gen_bool(0.5) {
            put(&ctx, id, addr, key).await
        } else {
            get(&ctx, id, addr, key).await.map_or(Outcome::Unknown, |_| Outcome::Ok)
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

// ---------------------------------------------------------------------------------------------
// The fault schedule.

/// One fault of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Crash the leader, and its endpoint with it; both come back at the phase's end.
    KillLeader,
    /// Cut the leader off from everyone.
    IsolateLeader,
    /// Cut a random node off from the rest.
    Partition,
}

#[derive(Clone, Debug)]
struct Phase {
    fault: Fault,
    /// How long the fault lasts.
    length: Duration,
    /// How long the cluster runs fault-free afterwards.
    calm: Duration,
}

#[derive(Clone, Debug)]
struct Plan {
    warmup: Duration,
    phases: Vec<Phase>,
}

impl Plan {
    /// Every fault once, in an order drawn from the seed, with seeded lengths.
    fn new(seed: u64) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xe7cd_c4a0_5000_0000);
        let mut faults = [Fault::KillLeader, Fault::IsolateLeader, Fault::Partition];
        faults.shuffle(&mut rng);
        let phases = faults
            .into_iter()
            .map(|fault| Phase {
                fault,
                // From about an election timeout to a few of them.
                length: Duration::from_millis(rng.gen_range(400..=1_200)),
                calm: Duration::from_millis(rng.gen_range(200..=600)),
            })
            .collect();
        Plan { warmup: Duration::from_millis(rng.gen_range(200..=500)), phases }
    }
}

/// Apply `fault`; returns the node it crashed, if any.
async fn inject(ctx: &Ctx, fault: Fault, rng: &mut StdRng) -> Option<usize> {
    let mut world = ctx.world.write().await;
    let all = world.harness.ids.clone();
    let live = world.harness.live();
    let leader = world.current_leader().or_else(|| live.choose(rng).copied());
    match fault {
        Fault::KillLeader => {
            // Keep a quorum running, so the cluster can still make progress.
            let leader = leader.filter(|_| live.len() > NODES / 2 + 1)?;
            world.crash(leader).await;
            return Some(leader);
        }
        Fault::IsolateLeader => {
            if let Some(l) = leader {
                world.harness.network.isolate(all[l], &all);
            }
        }
        Fault::Partition => {
            let cut = *all.choose(rng).expect("nodes");
            world.harness.network.partition(&[cut], &all);
        }
    }
    None
}

/// Undo every fault: links, and reboot the crashed nodes with fresh endpoints.
async fn heal(ctx: &Ctx, crashed: &mut Vec<usize>) {
    let mut world = ctx.world.write().await;
    world.harness.network.heal();
    for i in crashed.drain(..) {
        world.reboot(i).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The watcher, through the etcd Watch API.

/// How often a watcher waiting for a message looks whether its endpoint went away.
const WATCH_POLL: Duration = Duration::from_millis(100);
/// About one message in this many, the watcher moves to another node (resuming after the last
/// revision it received), as a client behind a load balancer would.
const WATCH_HOP_ONE_IN: u32 = 50;
/// How long a watcher may take, once told the final revision, to have covered it.
const WATCH_DRAIN: Duration = Duration::from_secs(15);
/// How often a watcher that has not covered its target asks for a progress notification.
const PROGRESS_REQUEST_EVERY: Duration = Duration::from_millis(300);
/// A [`Follow::target`] not known yet.
const NOT_YET: u64 = u64::MAX;
/// Malformed responses listed before the rest are only counted.
const MAX_MALFORMED: usize = 5;

/// How one watcher (or the reference reader) follows its watch.
struct Follow {
    /// Watch through this node only (the reference), or through random nodes.
    pinned: Option<usize>,
    /// The revision to cover before stopping; [`NOT_YET`] until known.
    target: Arc<AtomicU64>,
}

/// A watcher's record: what [`watch_check`] checks, and the responses it could not read.
struct Watched {
    log: WatcherLog,
    malformed: Vec<String>,
}

/// One key-value of an etcd event, as the protocol carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RawKv {
    key: Vec<u8>,
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

/// One etcd watch event, as the protocol carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RawEvent {
    put: bool,
    kv: RawKv,
    prev: Option<RawKv>,
}

impl RawKv {
    fn of(kv: &etcd_client::KeyValue) -> RawKv {
        RawKv {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }

    /// The key-value as Flotilla's watch carries it; refused when a number is negative.
    fn to_flotilla(&self) -> Result<KeyValue, String> {
        let number = |n: i64, what: &str| u64::try_from(n).map_err(|_| format!("negative {what} {n} in {self:?}"));
        Ok(KeyValue {
            key: self.key.clone(),
            value: self.value.clone(),
            create_revision: number(self.create_revision, "create revision")?,
            mod_revision: number(self.mod_revision, "mod revision")?,
            version: number(self.version, "version")?,
            lease: number(self.lease, "lease")?,
        })
    }
}

impl RawEvent {
    /// The event of an etcd watch response; `None` when it carries no key-value.
    fn of(event: &etcd_client::Event) -> Option<RawEvent> {
        let kv = RawKv::of(event.kv()?);
        Some(RawEvent { put: event.event_type() == EventType::Put, kv, prev: event.prev_kv().map(RawKv::of) })
    }

    fn to_flotilla(&self) -> Result<WatchEvent, String> {
        let kind = if self.put { EventKind::Put } else { EventKind::Delete };
        let prev = self.prev.as_ref().map(RawKv::to_flotilla).transpose()?;
        Ok(WatchEvent { kind, kv: self.kv.to_flotilla()?, prev })
    }
}

/// The watch messages an etcd watch response of events (neither a creation nor a
/// cancellation) stands for: one [`WatchMessage::Changes`] per revision its events carry, in
/// order (etcd may batch several revisions in one response; one revision split over two
/// responses then shows up as a duplicate revision, which the check flags), or a
/// [`WatchMessage::Progress`] at the header's revision when it carries none.
fn messages_of(header_revision: i64, events: &[RawEvent]) -> Result<Vec<WatchMessage>, String> {
    if events.is_empty() {
        let revision = u64::try_from(header_revision).map_err(|_| format!("progress at revision {header_revision}"))?;
        return Ok(vec![WatchMessage::Progress { revision }]);
    }
    let mut messages: Vec<WatchMessage> = Vec::new();
    for raw in events {
        let event = raw.to_flotilla()?;
        let revision = event.kv.mod_revision;
        match messages.last_mut() {
            Some(WatchMessage::Changes { revision: r, events }) if *r == revision => events.push(event),
            _ => messages.push(WatchMessage::Changes { revision, events: vec![event] }),
        }
    }
    Ok(messages)
}

/// A watch of every key with previous values from `from`, through a fresh client of `addr`.
async fn open_watch(addr: SocketAddr, from: u64) -> Result<WatchStream, Failure> {
    let from = i64::try_from(from).unwrap_or(i64::MAX);
    let options = WatchOptions::new().with_all_keys().with_prev_key().with_progress_notify().with_start_revision(from);
    call(addr, |mut c| async move { c.watch("", Some(options)).await }).await
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

/// What to do with one response of a watch: why the watch ended, or nothing.
fn take_response(watched: &mut Watched, response: &etcd_client::WatchResponse) -> Option<String> {
    if response.canceled() {
        return Some(match response.compact_revision() {
            0 => format!("cancelled: {}", response.cancel_reason()),
            _ => "compacted".into(),
        });
    }
    if response.created() {
        return None;
    }
    let events: Vec<RawEvent> = response.events().iter().filter_map(RawEvent::of).collect();
    if events.len() != response.events().len() {
        watched.malformed.push(format!("an event without a key-value in {response:?}"));
    }
    match messages_of(header_revision(response.header()), &events) {
        Ok(messages) => watched.log.messages.extend(messages),
        Err(problem) => watched.malformed.push(problem),
    }
    None
}

/// Follow one watch through node `node` until it ends, the node's endpoint goes away, the
/// watcher hops to another node, or the watcher is finished.
async fn consume(
    ctx: &Ctx,
    follow: &Follow,
    watched: &mut Watched,
    mut stream: WatchStream,
    (node, generation): (usize, u64),
    rng: &mut StdRng,
    drain: &mut Option<Instant>,
) -> String {
    let mut last_request = Instant::now();
    while !finished(ctx, follow, &watched.log, drain) {
        let target = follow.target.load(Ordering::Relaxed);
        if target != NOT_YET && last_request.elapsed() >= PROGRESS_REQUEST_EVERY {
            // The watcher may have every change already: a progress answer tells it so.
            last_request = Instant::now();
            if stream.request_progress().await.is_err() {
                return "progress request failed".into();
            }
        }
        let response = match tokio::time::timeout(WATCH_POLL, stream.message()).await {
            Err(_) if ctx.generation(node) == Some(generation) => continue,
            Err(_) => return "endpoint stopped".into(),
            Ok(Err(e)) => return format!("error: {}", failure_kind(&Failure::Request(e))),
            Ok(Ok(None)) => return "ended".into(),
            Ok(Ok(Some(response))) => response,
        };
        if let Some(end) = take_response(watched, &response) {
            return end;
        }
        if follow.pinned.is_none() && rng.gen_ratio(1, WATCH_HOP_ONE_IN) {
            return "hop".into();
        }
    }
    "finished".into()
}

/// One watcher: watch, and after every end watch again (through another random node unless
/// pinned) from the revision after the last one received, until finished.
async fn watcher(ctx: Arc<Ctx>, follow: Follow, log: WatcherLog, mut rng: StdRng) -> Watched {
    let mut watched = Watched { log, malformed: Vec::new() };
    let mut drain = None;
    while !finished(&ctx, &follow, &watched.log, &mut drain) {
        let (node, addr, generation) = {
            let world = ctx.world.read().await;
            let node = follow.pinned.unwrap_or_else(|| rng.gen_range(0..NODES));
            (node, world.addrs[node], ctx.generation(node))
        };
        let opened = match generation {
            Some(generation) => open_watch(addr, watched.log.resume_from()).await.map(|s| (s, generation)),
            None => Err(Failure::Connect("its node is down".into())),
        };
        let (stream, generation) = match opened {
            Ok(opened) => opened,
            Err(failure) => {
                watched.log.ends.push(format!("open: {}", failure_kind(&failure)));
                // No endpoint to watch through just now: think time, not synchronisation.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        watched.log.connects += 1;
        let end = consume(&ctx, &follow, &mut watched, stream, (node, generation), &mut rng, &mut drain).await;
        watched.log.ends.push(end);
    }
    watched
}

/// What the watch check of one seed found.
#[derive(Debug, Default)]
struct WatchReport {
    events: usize,
    reconnects: usize,
    /// Why watches ended (or failed to open), by kind.
    ends: BTreeMap<String, usize>,
    acks: usize,
    violations: Vec<String>,
}

/// Check the watcher's stream and the acknowledged puts against the whole history, read once
/// through `reader`'s endpoint from revision 1 up to everything anyone saw.
async fn check_watch(ctx: &Arc<Ctx>, reader: usize, target: u64, watched: Watched) -> WatchReport {
    let acks = std::mem::take(&mut *ctx.acks.lock().unwrap_or_else(|p| p.into_inner()));
    let seen = watched.log.last_changes().into_iter().chain(acks.iter().map(|a| a.revision));
    let needed = seen.fold(target, u64::max);
    let follow = Follow { pinned: Some(reader), target: Arc::new(AtomicU64::new(needed)) };
    let log = WatcherLog::new("reference", WatchSpec::everything(), 1);
    let reference = watcher(ctx.clone(), follow, log, StdRng::seed_from_u64(0)).await;
    let mut report = WatchReport { acks: acks.len(), reconnects: watched.log.reconnects(), ..WatchReport::default() };
    for end in &watched.log.ends {
        *report.ends.entry(end.clone()).or_default() += 1;
    }
    let malformed = watched.malformed.iter().chain(&reference.malformed);
    report.violations.extend(malformed.take(MAX_MALFORMED).map(|m| format!("malformed watch response: {m}")));
    if reference.log.covered() < needed {
        let covered = reference.log.covered();
        report.violations.push(format!("the reference read reached revision {covered}, not {needed}"));
        return report;
    }
    let reference = match Reference::build(&reference.log.messages) {
        Ok(reference) => reference,
        Err(problems) => {
            report.violations.extend(problems);
            return report;
        }
    };
    report.violations.extend(check_acknowledged(&reference, &acks));
    let check = check_watcher(&reference, &watched.log, Some(target));
    report.events = check.events;
    report.violations.extend(check.violations);
    if report.ends.contains_key("compacted") {
        report.violations.push("a watch ended compacted, yet nothing compacts".into());
    }
    report
}

// ---------------------------------------------------------------------------------------------
// One seed.

/// The outcome of one seed.
struct SeedRun {
    seed: u64,
    plan: Plan,
    elapsed: Duration,
    history: History,
    /// What is wrong: linearizability, liveness or the watch check.
    problems: Vec<String>,
    watch: WatchReport,
    failures: BTreeMap<String, u64>,
    cas_refused: u64,
    ungraceful: u64,
}

/// Where the nodes keep their data: `/dev/shm` when present (in-process crashes never lose the
/// page cache, so fsync durability is not what this test exercises, and memory-backed stores
/// are several times faster).
async fn start_cluster(seed: u64) -> Harness {
    let mut h = Harness::new(NODES, seed, &[NS], fast);
    let shm = std::path::Path::new("/dev/shm");
    for dir in h.dirs.iter_mut().filter(|_| shm.is_dir()) {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            *dir = d;
        }
    }
    for i in 0..NODES {
        h.boot(i).await;
    }
    h.wait_voters(NS, NODES).await;
    h
}

/// Linearizable gets of every key through `node`'s endpoint, retrying (and recording every
/// attempt) until one of each succeeds; returns the highest revision they answered at.
async fn final_reads(ctx: &Ctx, node: usize, deadline: Instant) -> Result<u64, String> {
    let client = ctx.recorder.new_client();
    let mut revision = 0;
    for key in KEYS {
        loop {
            let addr = ctx.world.read().await.addrs[node];
            let ticket = ctx.recorder.invoke(client, key, Op::read());
            match call(addr, |mut c| async move { c.get(key, None).await }).await {
                Ok(response) => {
                    ctx.recorder.complete_read(ticket, value_of(response.kvs().first())).expect("fresh ticket");
                    revision = revision.max(u64::try_from(header_revision(response.header())).unwrap_or(0));
                    break;
                }
                // A failed read observed nothing; recorded as unknown it cannot mislead.
                Err(_) => {
                    complete(ctx, ticket, Outcome::Unknown);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("node {node} served no linearizable get of {key} {RECOVERY:?} after healing"));
            }
            // Retry pacing while the cluster settles after the heal.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(revision)
}

/// What the history check finds wrong, with the report when it is not linearizable.
fn judge(history: &History) -> Option<String> {
    let report = check_all(history, BUDGET);
    match report.verdict() {
        Verdict::Linearizable => None,
        _ => Some(format!("{}\n{report}", report.verdict())),
    }
}

async fn run_seed(seed: u64, reads: Reads) -> SeedRun {
    let started = Instant::now();
    let plan = Plan::new(seed);
    let ctx = Arc::new(Ctx::new(World::new(start_cluster(seed).await).await, reads));
    let mut rng = StdRng::seed_from_u64(seed);
    let clients: Vec<_> =
        (0..CLIENTS).map(|_| tokio::spawn(client(ctx.clone(), StdRng::seed_from_u64(rng.gen())))).collect();
    let target = Arc::new(AtomicU64::new(NOT_YET));
    let follow = Follow { pinned: None, target: target.clone() };
    let log = WatcherLog::new("all keys, prev_kv, from 1", WatchSpec::everything(), 1);
    let watch_task = tokio::spawn(watcher(ctx.clone(), follow, log, StdRng::seed_from_u64(rng.gen())));
    run_schedule(&ctx, &plan, &mut rng).await;
    ctx.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let reader = rng.gen_range(0..NODES);
    let (mut problems, watch) = recover_and_check_watch(&ctx, reader, &target, watch_task).await;
    let history = ctx.recorder.history();
    problems.extend(judge(&history));
    let ctx = Arc::into_inner(ctx).expect("clients and watchers are done");
    let failures = ctx.failures.into_inner().unwrap_or_else(|p| p.into_inner());
    let cas_refused = ctx.cas_refused.load(Ordering::Relaxed);
    let world = ctx.world.into_inner();
    let ungraceful = world.ungraceful;
    world.shutdown().await;
    SeedRun { seed, plan, elapsed: started.elapsed(), history, problems, watch, failures, cas_refused, ungraceful }
}

/// Apply the plan's faults, each followed by a heal.
async fn run_schedule(ctx: &Ctx, plan: &Plan, rng: &mut StdRng) {
    // The sleeps set the length of the schedule's phases: they are the experiment, not
    // synchronisation.
    tokio::time::sleep(plan.warmup).await;
    let mut crashed = Vec::new();
    for phase in &plan.phases {
        crashed.extend(inject(ctx, phase.fault, rng).await);
        tokio::time::sleep(phase.length).await;
        heal(ctx, &mut crashed).await;
        tokio::time::sleep(phase.calm).await;
    }
}

/// After the heal: a leader, then a linearizable get of every key through `reader`; the
/// watcher is told the revision they answered at, and checked once it covered it. Returns what
/// is wrong (a cluster that did not recover, watch violations) and the watch report.
async fn recover_and_check_watch(
    ctx: &Arc<Ctx>,
    reader: usize,
    target: &AtomicU64,
    watch_task: JoinHandle<Watched>,
) -> (Vec<String>, WatchReport) {
    let deadline = Instant::now() + RECOVERY;
    ctx.world.read().await.harness.leader(NS).await;
    match final_reads(ctx, reader, deadline).await {
        Ok(revision) => {
            target.store(revision, Ordering::Relaxed);
            let watched = watch_task.await.expect("watcher task");
            let watch = check_watch(ctx, reader, revision, watched).await;
            (watch.violations.clone(), watch)
        }
        Err(stuck) => {
            ctx.watchers_abandon.store(true, Ordering::Relaxed);
            watch_task.await.expect("watcher task");
            (vec![stuck], WatchReport::default())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Many seeds.

/// Totals over the seeds of a run.
#[derive(Default)]
struct Tally {
    seeds: usize,
    failed: Vec<String>,
    ok: usize,
    fail: usize,
    unknown: usize,
    /// Seeds with fewer than [`MIN_OK_PER_SEED`] successful operations.
    idle: Vec<u64>,
    failures: BTreeMap<String, u64>,
    watch_ends: BTreeMap<String, usize>,
    watch_events: usize,
    reconnects: usize,
    acks: usize,
    cas_refused: u64,
    ungraceful: u64,
    slowest: Duration,
    /// Latencies of the successful operations (connection included).
    latency: Vec<Duration>,
}

/// Fewest successful operations a seed must have done to count as having exercised the cluster.
const MIN_OK_PER_SEED: usize = 10;

impl Tally {
    fn add(&mut self, run: SeedRun) {
        self.seeds += 1;
        let entries = run.history.entries();
        let count = |o: Outcome| entries.iter().filter(|e| e.effective_outcome() == o).count();
        let ok = count(Outcome::Ok);
        (self.ok, self.fail, self.unknown) =
            (self.ok + ok, self.fail + count(Outcome::Fail), self.unknown + count(Outcome::Unknown));
        let ok_entries = entries.iter().filter(|e| e.outcome == Outcome::Ok);
        self.latency.extend(ok_entries.map(|e| e.completed.unwrap_or_default().saturating_sub(e.invoked)));
        if ok < MIN_OK_PER_SEED {
            self.idle.push(run.seed);
        }
        for (kind, n) in run.failures {
            *self.failures.entry(kind).or_default() += n;
        }
        for (kind, n) in &run.watch.ends {
            *self.watch_ends.entry(kind.clone()).or_default() += n;
        }
        self.watch_events += run.watch.events;
        self.reconnects += run.watch.reconnects;
        self.acks += run.watch.acks;
        self.cas_refused += run.cas_refused;
        self.ungraceful += run.ungraceful;
        self.slowest = self.slowest.max(run.elapsed);
        if !run.problems.is_empty() {
            self.failed.push(format!("seed {} ({:?}) failed:\n  {}", run.seed, run.plan, run.problems.join("\n  ")));
        }
    }

    fn summary(&mut self, elapsed: Duration) -> String {
        self.latency.sort();
        let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
        let (median, max) = (ms(self.latency.get(self.latency.len() / 2)), ms(self.latency.last()));
        format!(
            "etcd chaos: {} seeds in {:.1}s (slowest {:.1}s), {} failed; ops: {} ok (median {median:.0}ms, max {max:.0}ms), {} fail, {} unknown; failures by kind: {:?}; compare-and-sets refused with an error: {}; watch: {} events checked, {} reconnects, ends {:?}; {} acknowledged puts found in the history; endpoints aborted after {ENDPOINT_STOP:?} of graceful stop: {}",
            self.seeds,
            elapsed.as_secs_f64(),
            self.slowest.as_secs_f64(),
            self.failed.len(),
            self.ok,
            self.fail,
            self.unknown,
            self.failures,
            self.cas_refused,
            self.watch_events,
            self.reconnects,
            self.watch_ends,
            self.acks,
            self.ungraceful,
        )
    }
}

/// Run `seeds`, `parallel` at a time (`common::run_seeds`), and tally them.
async fn run_seeds(seeds: Vec<u64>, parallel: usize, reads: Reads) -> Tally {
    let mut tally = Tally::default();
    for (seed, result) in common::run_seeds(seeds, parallel, move |seed| run_seed(seed, reads)).await {
        match result {
            Ok(run) => tally.add(run),
            Err(message) => {
                tally.seeds += 1;
                tally.failed.push(format!("seed {seed} ({:?}) panicked: {message}", Plan::new(seed)));
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_api_is_linearizable_under_seeded_chaos() {
    let seeds = common::seeds_from_env("FLOTILLA_ETCD_CHAOS", DEFAULT_SEEDS);
    let parallel = common::env_u64("FLOTILLA_ETCD_CHAOS_PARALLEL").map_or(DEFAULT_PARALLEL, |p| p as usize);
    let started = Instant::now();
    let mut tally = run_seeds(seeds, parallel, Reads::Linearizable).await;
    let summary = tally.summary(started.elapsed());
    println!("{summary}");
    assert!(tally.failed.is_empty(), "{summary}\n\n{}", tally.failed.join("\n"));
    // The run must have exercised the cluster, not only watched it fail.
    assert!(tally.idle.is_empty(), "seeds {:?} did too few successful operations: {summary}", tally.idle);
}

// ---------------------------------------------------------------------------------------------
// The pure parts, and the checks can fail.

/// The same chaos with the clients' gets serializable (the answering node's local state, which
/// may lag): the history check flags it (in every seed of a trial run, 8 of 8; batches of two
/// seeds run until one is flagged, so a loaded machine only makes it slower).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serializable_gets_under_chaos_are_flagged() {
    let started = Instant::now();
    for batch in 0..3u64 {
        let first = 1_000_000 + batch * 2;
        let mut tally = run_seeds((first..first + 2).collect(), DEFAULT_PARALLEL, Reads::Serializable).await;
        let summary = tally.summary(started.elapsed());
        println!("{summary}");
        let flagged = tally.failed.iter().find(|f| f.contains("NOT LINEARIZABLE"));
        if let Some(example) = flagged {
            println!("for example, {example}");
            return;
        }
    }
    panic!("serializable gets went unnoticed in 6 seeds");
}

#[test]
fn failures_are_counted_by_the_gist_of_their_message() {
    let quorum = "flotilla: unavailable: not enough for a quorum, cluster: {voters:[]}";
    let table = [
        ("etcdserver: request timed out", "etcdserver: request timed out"),
        (quorum, "flotilla: unavailable: not enough for a quorum"),
        ("a (b)", "a"),
        ("", ""),
    ];
    for (message, gist_of_it) in table {
        assert_eq!(gist(message), gist_of_it);
    }
    assert_eq!(gist(&"é".repeat(300)).chars().count(), GIST_CHARS);
}

#[test]
fn only_errors_that_prove_nothing_was_applied_are_definite() {
    use etcd_client::Error;
    let status = |code: Code| Failure::Request(Error::GRpcStatus(tonic::Status::new(code, "x")));
    let table = [
        (Failure::Connect("connection refused".into()), Outcome::Fail),
        (Failure::Deadline, Outcome::Unknown),
        (status(Code::InvalidArgument), Outcome::Fail),
        (status(Code::FailedPrecondition), Outcome::Fail),
        (status(Code::OutOfRange), Outcome::Fail),
        (status(Code::NotFound), Outcome::Fail),
        (status(Code::Unimplemented), Outcome::Fail),
        (status(Code::Unavailable), Outcome::Unknown),
        (status(Code::Unknown), Outcome::Unknown),
        (status(Code::DeadlineExceeded), Outcome::Unknown),
        (status(Code::Cancelled), Outcome::Unknown),
        (status(Code::Internal), Outcome::Unknown),
        (status(Code::ResourceExhausted), Outcome::Unknown),
        (status(Code::PermissionDenied), Outcome::Unknown),
        (status(Code::Aborted), Outcome::Unknown),
        (status(Code::DataLoss), Outcome::Unknown),
        (Failure::Request(Error::InvalidArgs("empty endpoints".into())), Outcome::Fail),
        (Failure::Request(Error::WatchError("stream closed".into())), Outcome::Unknown),
        (Failure::Request(Error::IoError(std::io::ErrorKind::BrokenPipe.into())), Outcome::Unknown),
        (Failure::Request(Error::Internal("x".into())), Outcome::Unknown),
    ];
    for (failure, expected) in table {
        assert_eq!(outcome_of(&failure), expected, "{failure:?}");
    }
}

/// For every error of Flotilla, the status the endpoint answers is classed definite only when
/// Flotilla promises the error means "not applied" (a "not applied" error may still be classed
/// unknown: `Unavailable` mixes both).
#[test]
fn the_endpoints_codes_keep_flotillas_promise() {
    let peer = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    for error in flotilla_core::ApiError::one_of_each_kind(peer) {
        let status = flotilla_etcd::status_of(&error);
        let failure = Failure::Request(etcd_client::Error::GRpcStatus(status));
        if outcome_of(&failure) == Outcome::Fail {
            assert_eq!(error.outcome(), flotilla_core::Outcome::NotApplied, "{error:?} classed definite");
        }
    }
}

fn raw(key: &str, value: &str, create: i64, revision: i64, version: i64) -> RawKv {
    RawKv { key: key.into(), value: value.into(), create_revision: create, mod_revision: revision, version, lease: 0 }
}

fn raw_put(kv: RawKv, prev: Option<RawKv>) -> RawEvent {
    RawEvent { put: true, kv, prev }
}

/// A small history as etcd watch responses: a=1 (2), b=1 (3), a=2 (4), one per response.
fn small_responses() -> Vec<Vec<RawEvent>> {
    let (a2, b3) = (raw("a", "1", 2, 2, 1), raw("b", "1", 3, 3, 1));
    vec![vec![raw_put(a2.clone(), None)], vec![raw_put(b3, None)], vec![raw_put(raw("a", "2", 2, 4, 2), Some(a2))]]
}

fn converted(responses: &[Vec<RawEvent>]) -> Vec<WatchMessage> {
    responses.iter().flat_map(|events| messages_of(0, events).expect("well-formed")).collect()
}

#[test]
fn watch_responses_become_one_message_per_revision() {
    let responses = small_responses();
    let messages = converted(&responses);
    assert_eq!(messages.len(), 3);
    let reference = Reference::build(&messages).expect("a consistent history");
    // Two revisions batched in one response are two messages; an empty response is progress.
    let batched = [responses[0].clone(), responses[1].clone()].concat();
    assert_eq!(messages_of(0, &batched).unwrap(), messages[..2].to_vec());
    assert_eq!(messages_of(4, &[]).unwrap(), vec![WatchMessage::Progress { revision: 4 }]);
    let log =
        WatcherLog { messages: messages.clone(), connects: 1, ..WatcherLog::new("t", WatchSpec::everything(), 1) };
    assert!(check_watcher(&reference, &log, Some(4)).violations.is_empty());
    // Nothing from the network makes the conversion panic.
    assert!(messages_of(-1, &[]).is_err());
    assert!(messages_of(0, &[raw_put(raw("a", "1", -2, 2, 1), None)]).is_err());
}

/// One revision split over two responses, and a put acknowledged at a revision where the
/// history has another value, are flagged.
#[test]
fn the_watch_check_flags_a_split_revision_and_a_lost_put() {
    let responses = small_responses();
    let reference = Reference::build(&converted(&responses)).expect("a consistent history");
    let a4 = raw_put(raw("a", "2", 2, 4, 2), Some(raw("a", "1", 2, 2, 1)));
    let c4 = raw_put(raw("c", "1", 4, 4, 1), None);
    let two = Reference::build(&converted(&[responses[0].clone(), responses[1].clone(), vec![a4.clone(), c4.clone()]]))
        .expect("a consistent history");
    let split = converted(&[responses[0].clone(), responses[1].clone(), vec![a4], vec![c4]]);
    let log = WatcherLog { messages: split, connects: 1, ..WatcherLog::new("t", WatchSpec::everything(), 1) };
    let found = check_watcher(&two, &log, None).violations;
    assert!(found.iter().any(|v| v.contains("revision 4 delivered twice")), "{found:#?}");
    let lost = Ack { key: b"b".to_vec(), value: b"9".to_vec(), revision: 3 };
    let found = check_acknowledged(&reference, &[lost]);
    assert!(found.iter().any(|v| v.contains("acknowledged write b=9 at revision 3")), "{found:#?}");
}

/// The wiring of the history check: a put acknowledged before a final read that does not see
/// it is a violation; the same history with the put unknown (it may never have happened) or
/// seen by the read passes.
#[test]
fn a_final_read_missing_an_acknowledged_put_is_flagged() {
    let history = |put: Outcome, seen: Option<&str>| {
        let recorder = Recorder::new();
        let (writer, reader) = (recorder.new_client(), recorder.new_client());
        let t = recorder.invoke(writer, "a", Op::write("v1"));
        recorder.complete(t, put).unwrap();
        let t = recorder.invoke(reader, "a", Op::read());
        recorder.complete_read(t, seen.map(|v| Value(v.into()))).unwrap();
        recorder.history()
    };
    let flagged = judge(&history(Outcome::Ok, None)).expect("a lost acknowledged put is flagged");
    assert!(flagged.contains("read a=") || flagged.contains("write a=v1"), "{flagged}");
    assert_eq!(judge(&history(Outcome::Unknown, None)), None);
    assert_eq!(judge(&history(Outcome::Ok, Some("v1"))), None);
    assert_eq!(judge(&history(Outcome::Fail, None)), None);
}
