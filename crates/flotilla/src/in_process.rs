//! The in-process mode: several nodes in one process, connected without sockets (feature
//! `in-process`), so code that uses a cluster can be tested, failures included.
//!
//! [`InProcessNetwork`] connects the nodes of one process through the transport seam
//! ([`Transport`]) and gives each a discovery that sees the others. Every message is encoded and
//! decoded as on the wire, so a serialization bug surfaces here too, and is bounded by the real
//! transport's frame limit. A test can partition nodes (both ways or one way), drop a fraction of
//! messages, add delay, and take a node down; randomness comes from one seed so a failing run can
//! be replayed. Everything else is real: each node has its own store on disk (fsync included),
//! its own Raft groups, forwarding and formation. Flotilla's own test suites run on it.
//!
//! Start nodes on it with [`NodeBuilder::in_process`](crate::NodeBuilder::in_process):
//!
//! ```no_run
//! # async fn example() -> Result<(), flotilla::BuildError> {
//! use flotilla::in_process::InProcessNetwork;
//!
//! let network = InProcessNetwork::new(7);
//! let mut nodes = Vec::new();
//! for i in 0..3 {
//!     // Three nodes that expect each other: they find each other and form one cluster.
//!     let builder = flotilla::Node::builder(format!("/tmp/flotilla-test/{i}"));
//!     nodes.push(builder.in_process(&network).configure(|c| c.expect = Some(3)).start().await?);
//! }
//! let cluster = nodes[0].cluster("default").expect("served");
//! cluster.wait_for_leader(std::time::Duration::from_secs(30)).await.expect("a leader");
//! // Cut the first node off: the other two keep a quorum.
//! let ids: Vec<_> = nodes.iter().map(|n| n.id()).collect();
//! network.isolate(ids[0], &ids);
//! nodes[1].cluster("default").expect("served").set(b"k", b"v").await.expect("written");
//! network.heal();
//! # Ok(()) }
//! ```
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_core::types::NodeId;
use flotilla_core::wire::{WireRequest, WireResponse};
use flotilla_core::{Discovery, DiscoverySource, InboundHandler, Sighting, Transport, TransportError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use crate::crash_point::CrashPoint;

/// Largest message the router carries: the default frame limit of a real transport, so a
/// message a node could not send over libp2p fails here too.
fn max_message_bytes() -> u64 {
    flotilla_core::Config::default().max_frame_bytes as u64
}

#[derive(Default)]
struct Faults {
    /// Directed links that drop everything: (from, to).
    cut: HashSet<(NodeId, NodeId)>,
    /// Nodes that are down: nothing reaches them and nothing leaves them.
    down: HashSet<NodeId>,
    /// Fraction of messages (requests and replies) dropped, in [0, 1].
    drop_rate: f64,
    /// Extra delay range applied to each delivery, in milliseconds.
    delay_ms: (u64, u64),
    /// Pairs that cannot *discover* each other (messages still flow if addressed).
    hidden: HashSet<(NodeId, NodeId)>,
}

struct NetworkState {
    handlers: Mutex<HashMap<NodeId, Arc<dyn InboundHandler>>>,
    addrs: Mutex<HashMap<String, NodeId>>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
}

/// The network of one process's nodes; cheap to clone (clones share it).
///
/// ```no_run
/// # async fn example() -> Result<(), flotilla::BuildError> {
/// use flotilla::in_process::InProcessNetwork;
///
/// let network = InProcessNetwork::new(7); // the same seed replays the same drops and delays
/// let a = flotilla::Node::builder("/tmp/flotilla-test/a").in_process(&network).start().await?;
/// let b = flotilla::Node::builder("/tmp/flotilla-test/b").in_process(&network).start().await?;
/// network.cut_one_way(a.id(), b.id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct InProcessNetwork {
    state: Arc<NetworkState>,
}

impl InProcessNetwork {
    /// A fault-free network whose random choices derive from `seed`.
    ///
    /// ```no_run
    /// let network = flotilla::in_process::InProcessNetwork::new(std::process::id().into());
    /// ```
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(NetworkState {
                handlers: Mutex::new(HashMap::new()),
                addrs: Mutex::new(HashMap::new()),
                faults: Mutex::new(Faults::default()),
                rng: Mutex::new(StdRng::seed_from_u64(seed)),
            }),
        }
    }

    /// The address a node has on this network.
    ///
    /// ```
    /// use flotilla::in_process::InProcessNetwork;
    /// # use flotilla_core::types::NodeId;
    ///
    /// let id = NodeId::random();
    /// assert_eq!(InProcessNetwork::addr_of(id), format!("/memory/{id}"));
    /// ```
    pub fn addr_of(id: NodeId) -> String {
        format!("/memory/{id}")
    }

    /// The transport of node `id`.
    ///
    /// ```
    /// use flotilla::in_process::InProcessNetwork;
    /// use flotilla_core::Transport;
    /// # use flotilla_core::types::NodeId;
    ///
    /// let id = NodeId::random();
    /// let transport = InProcessNetwork::new(1).transport(id);
    /// assert_eq!(transport.local_addrs(), [InProcessNetwork::addr_of(id)]);
    /// ```
    pub fn transport(&self, id: NodeId) -> Arc<dyn Transport> {
        self.state.addrs.lock().expect("network lock").insert(Self::addr_of(id), id);
        Arc::new(InProcessTransport { state: self.state.clone(), id })
    }

    /// Take `id` off the network (a crash, as far as peers can tell).
    ///
    /// ```no_run
    /// # fn example(network: flotilla::in_process::InProcessNetwork, node: flotilla::RunningNode) {
    /// network.down(node.id()); // its peers see a crash; the node itself runs on
    /// network.up(node.id());
    /// # }
    /// ```
    pub fn down(&self, id: NodeId) {
        self.faults().down.insert(id);
    }

    /// Bring `id` back.
    ///
    /// ```no_run
    /// # fn example(network: flotilla::in_process::InProcessNetwork, node: flotilla::RunningNode) {
    /// network.up(node.id()); // reachable again, with whatever state it kept
    /// # }
    /// ```
    pub fn up(&self, id: NodeId) {
        self.faults().down.remove(&id);
    }

    /// Cut the link from `from` to `to` only.
    ///
    /// ```no_run
    /// # fn example(network: flotilla::in_process::InProcessNetwork, leader: flotilla::RunningNode, follower: flotilla::RunningNode) {
    /// // The follower hears nothing from the leader, but the leader still hears the follower.
    /// network.cut_one_way(leader.id(), follower.id());
    /// # }
    /// ```
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.faults().cut.insert((from, to));
    }

    /// Cut both directions between every node of `side` and every node outside it.
    ///
    /// ```no_run
    /// # fn example(network: flotilla::in_process::InProcessNetwork, nodes: Vec<flotilla::RunningNode>) {
    /// let ids: Vec<_> = nodes.iter().map(|n| n.id()).collect();
    /// network.partition(&ids[..2], &ids); // two against the rest
    /// network.heal();
    /// # }
    /// ```
    pub fn partition(&self, side: &[NodeId], all: &[NodeId]) {
        let mut f = self.faults();
        for a in side {
            for b in all.iter().filter(|b| !side.contains(b)) {
                f.cut.insert((*a, *b));
                f.cut.insert((*b, *a));
            }
        }
    }

    /// Isolate one node from all others.
    ///
    /// ```no_run
    /// # fn example(network: flotilla::in_process::InProcessNetwork, nodes: Vec<flotilla::RunningNode>) {
    /// let ids: Vec<_> = nodes.iter().map(|n| n.id()).collect();
    /// network.isolate(ids[0], &ids);
    /// # }
    /// ```
    pub fn isolate(&self, id: NodeId, all: &[NodeId]) {
        self.partition(&[id], all);
    }

    /// The simulated discovery backend of node `id`: it sees every other node on the network
    /// that is up, reachable from `id`, and not hidden from it with [`InProcessNetwork::hide`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().expect("a runtime").block_on(async {
    /// use flotilla::in_process::InProcessNetwork;
    /// use flotilla_core::Discovery;
    /// # use flotilla_core::types::NodeId;
    ///
    /// let network = InProcessNetwork::new(1);
    /// let id = NodeId::random();
    /// assert!(network.discovery(id).discover().await.is_empty()); // no other node on it yet
    /// # });
    /// ```
    pub fn discovery(&self, id: NodeId) -> Arc<dyn Discovery> {
        Arc::new(InProcessDiscovery { state: self.state.clone(), id })
    }

    /// Make `a` and `b` invisible to each other's discovery (both ways), as when two hosts
    /// share no LAN segment. They may still find each other through peers.
    ///
    /// ```no_run
    /// # fn example(network: flotilla::in_process::InProcessNetwork, a: flotilla::RunningNode, b: flotilla::RunningNode) {
    /// // a and b must learn of each other through a third node.
    /// network.hide(a.id(), b.id());
    /// # }
    /// ```
    pub fn hide(&self, a: NodeId, b: NodeId) {
        let mut f = self.faults();
        f.hidden.insert((a, b));
        f.hidden.insert((b, a));
    }

    /// Remove every cut link.
    ///
    /// ```no_run
    /// # fn example(network: flotilla::in_process::InProcessNetwork, ids: Vec<flotilla_core::types::NodeId>) {
    /// network.isolate(ids[0], &ids);
    /// network.heal(); // every link back; nodes taken `down` stay down
    /// # }
    /// ```
    pub fn heal(&self) {
        self.faults().cut.clear();
    }

    /// Drop this fraction of messages.
    ///
    /// ```no_run
    /// # fn example(network: flotilla::in_process::InProcessNetwork) {
    /// network.set_drop_rate(0.05); // lose one message in twenty, requests and replies alike
    /// # }
    /// ```
    pub fn set_drop_rate(&self, rate: f64) {
        self.faults().drop_rate = rate.clamp(0.0, 1.0);
    }

    /// Delay each delivery by a random time in `[min_ms, max_ms]`.
    ///
    /// ```no_run
    /// # fn example(network: flotilla::in_process::InProcessNetwork) {
    /// network.set_delay_ms(5, 50); // each delivery waits 5 to 50 ms
    /// # }
    /// ```
    pub fn set_delay_ms(&self, min_ms: u64, max_ms: u64) {
        self.faults().delay_ms = (min_ms, max_ms.max(min_ms));
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.state.faults.lock().expect("network lock")
    }
}

impl NetworkState {
    /// Whether a message from `from` to `to` is delivered, and after which delay.
    fn route(&self, from: NodeId, to: NodeId) -> Option<Duration> {
        let faults = self.faults.lock().expect("network lock");
        if faults.down.contains(&from) || faults.down.contains(&to) || faults.cut.contains(&(from, to)) {
            return None;
        }
        let mut rng = self.rng.lock().expect("network lock");
        if faults.drop_rate > 0.0 && rng.gen_bool(faults.drop_rate) {
            return None;
        }
        let (lo, hi) = faults.delay_ms;
        Some(Duration::from_millis(if hi > lo { rng.gen_range(lo..=hi) } else { lo }))
    }
}

struct InProcessTransport {
    state: Arc<NetworkState>,
    id: NodeId,
}

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> Result<T, TransportError> {
    let bytes = flotilla_core::encode(value).map_err(|e| TransportError::Protocol(e.to_string()))?;
    flotilla_core::decode(&bytes, max_message_bytes()).map_err(|e| TransportError::Protocol(e.to_string()))
}

#[async_trait::async_trait]
impl Transport for InProcessTransport {
    fn local_id(&self) -> NodeId {
        self.id
    }

    fn local_addrs(&self) -> Vec<String> {
        vec![InProcessNetwork::addr_of(self.id)]
    }

    async fn call(&self, to: NodeId, request: WireRequest, timeout: Duration) -> Result<WireResponse, TransportError> {
        let exchange = async {
            // A lost message looks like silence to the sender: wait out the deadline.
            let Some(delay) = self.state.route(self.id, to) else {
                return std::future::pending().await;
            };
            tokio::time::sleep(delay).await;
            let handler = self.state.handlers.lock().expect("network lock").get(&to).cloned();
            let Some(handler) = handler else {
                return Err(TransportError::Unreachable(to, "no such node".into()));
            };
            let response = handler.handle(self.id, roundtrip(&request)?).await;
            let Some(delay) = self.state.route(to, self.id) else {
                return std::future::pending().await;
            };
            tokio::time::sleep(delay).await;
            roundtrip(&response)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }

    fn set_handler(&self, handler: Arc<dyn InboundHandler>) {
        self.state.handlers.lock().expect("network lock").insert(self.id, handler);
    }

    fn add_peer_addrs(&self, _peer: NodeId, _addrs: &[String]) {}

    async fn connect(&self, addr: &str, _timeout: Duration) -> Result<NodeId, TransportError> {
        let id = self.state.addrs.lock().expect("network lock").get(addr).copied();
        let id = id.ok_or_else(|| TransportError::Protocol(format!("unknown address {addr}")))?;
        match self.state.route(self.id, id) {
            Some(_) => Ok(id),
            None => Err(TransportError::Unreachable(id, "link down".into())),
        }
    }
}

struct InProcessDiscovery {
    state: Arc<NetworkState>,
    id: NodeId,
}

#[async_trait::async_trait]
impl Discovery for InProcessDiscovery {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn discover(&self) -> Vec<Sighting> {
        let peers: Vec<NodeId> = self.state.handlers.lock().expect("network lock").keys().copied().collect();
        let faults = self.state.faults.lock().expect("network lock");
        peers
            .into_iter()
            .filter(|p| {
                *p != self.id
                    && !faults.down.contains(p)
                    && !faults.down.contains(&self.id)
                    && !faults.cut.contains(&(self.id, *p))
                    && !faults.hidden.contains(&(self.id, *p))
            })
            .map(|peer| Sighting {
                peer,
                addrs: vec![InProcessNetwork::addr_of(peer)],
                source: DiscoverySource::Simulated,
            })
            .collect()
    }
}
