//! A Flotilla node: one transport, one store, many namespaced Raft groups.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flotilla_core::formation::Ballot;
use flotilla_core::keyring::{KeyId, Keyring};
use flotilla_core::types::NodeId;
use flotilla_core::Discovery;
use flotilla_core::{ApiError, Config, KvStateMachine, MemberInfo, Namespace, StateMachine, Transport};
use flotilla_store::Store;
use tracing::warn;

use crate::cluster::Cluster;
use crate::command::Forwarder;
use crate::error::StartError;
use crate::execute::Executor;
use crate::formation::ledger::MembershipLedger;
use crate::formation::peers::PeerTable;
use crate::formation::record::{FoundingRecord, RecordFile};
use crate::formation::view::cluster_id;
use crate::formation::{balance_loop, discovery_loop, BootstrapDiscovery, Formation};
use crate::group::Group;
use crate::inbound::Inbound;
use crate::namespace_lifecycle;
use crate::namespace_set::NamespaceSetFile;
use crate::namespaces::NamespaceRegistry;
use crate::network::GroupNetworkFactory;
use crate::raft_config::raft_config;
use crate::request_ids::RequestIds;
use crate::sealing::{Sealing, SealingStatus, SealingTransport};
use crate::snapshot_inbox::{InboxLimits, SnapshotInbox};

/// Chooses the state machine of each namespace.
///
/// ```
/// # use std::io;
/// # use flotilla::{ApplyContext, StateTable, TypedStateMachine};
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
/// # #[error("never")]
/// # struct Never;
/// # struct Counter;
/// # impl TypedStateMachine for Counter {
/// #     type Command = u64;
/// #     type Reply = u64;
/// #     type Error = Never;
/// #     fn apply(&self, _: &ApplyContext, _: &mut dyn StateTable, by: u64) -> io::Result<Result<u64, Never>> {
/// #         Ok(Ok(by))
/// #     }
/// # }
/// use std::sync::Arc;
/// use flotilla::{kv::KvStateMachine, Namespace, StateMachine, StateMachineFactory, Typed};
///
/// // `counters` runs the counter, every other namespace the KV state machine.
/// let factory: StateMachineFactory = Arc::new(|ns: &Namespace| -> Arc<dyn StateMachine> {
///     if ns.as_str() == "counters" { Arc::new(Typed::new(Counter)) } else { Arc::new(KvStateMachine) }
/// });
/// let _machine = factory(&Namespace::new("counters").expect("a valid name"));
/// ```
pub type StateMachineFactory = Arc<dyn Fn(&Namespace) -> Arc<dyn StateMachine> + Send + Sync>;

/// What a node holds of snapshots being received: at most 4 GiB for one snapshot and for all
/// namespaces together (files on disk, grown as data arrives), and a transfer idle for a minute is
/// abandoned (see [`SnapshotInbox`]).
const SNAPSHOT_INBOX: InboxLimits = InboxLimits {
    max_snapshot: 4 * 1024 * 1024 * 1024,
    max_total: 4 * 1024 * 1024 * 1024,
    idle_expiry: std::time::Duration::from_secs(60),
};

/// What a node runs besides its configuration, transport and store.
///
/// ```no_run
/// # async fn example(config: flotilla::Config, transport: std::sync::Arc<dyn flotilla_core::Transport>,
/// #     store: std::sync::Arc<flotilla_store::Store>, factory: flotilla::StateMachineFactory) -> Result<(), flotilla::StartError> {
/// let services = flotilla::NodeServices { state_machines: factory, ..Default::default() };
/// let node = flotilla::Node::start_with(config, transport, store, services).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NodeServices {
    /// Chooses each namespace's state machine.
    pub state_machines: StateMachineFactory,
    /// Discovery backends besides `--bootstrap` (which the node adds itself).
    pub discovery: Vec<Arc<dyn Discovery>>,
}

impl Default for NodeServices {
    fn default() -> Self {
        Self { state_machines: Arc::new(|_| Arc::new(KvStateMachine) as Arc<dyn StateMachine>), discovery: Vec::new() }
    }
}

/// A running node.
///
/// ```no_run
/// # async fn example() -> Result<(), flotilla::BuildError> {
/// let builder = flotilla::Node::builder("/var/lib/myservice/raft").listen("/ip4/127.0.0.1/tcp/7000");
/// let node = builder.namespace("orders").start().await?;
/// println!("node {} serves {:?}", node.id(), node.namespaces());
/// node.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Node {
    pub(crate) id: NodeId,
    pub(crate) config: Config,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store: Arc<Store>,
    pub(crate) namespaces: Arc<NamespaceRegistry>,
    pub(crate) snapshots: SnapshotInbox,
    pub(crate) request_ids: RequestIds,
    pub(crate) peers: PeerTable,
    pub(crate) sealing: Arc<Sealing>,
    pub(crate) discovery: Vec<Arc<dyn Discovery>>,
    pub(crate) factory: StateMachineFactory,
    pub(crate) liveness: crate::liveness::Liveness,
    /// How many namespaces' formation loops tick in each phase (paces them).
    pub(crate) tick_load: crate::formation::driver::TickLoad,
    /// Sends commands to their namespace's leader, or runs them here (`command.rs`).
    pub(crate) forwarder: Forwarder,
    /// Watches served by this node (`watch.rs`).
    pub(crate) watch_counters: Arc<crate::watch::WatchCounters>,
    closing: Arc<AtomicBool>,
    /// Set when the groups start stopping (closed or halted): the node answers nothing more,
    /// not even liveness pings, so its peers do not take a stopped node for a live one, and
    /// no Raft RPC reaches a group that is stopping.
    stopped: AtomicBool,
    /// Raft RPCs from peers being served now (see `inbound::RaftCall`).
    pub(crate) inbound_raft_calls: std::sync::atomic::AtomicUsize,
    /// Where a test wants an open or close to crash (see [`crate::crash_point::CrashPoint`]).
    pub(crate) crash_at: std::sync::Mutex<Option<crate::crash_point::CrashPoint>>,
}

impl Node {
    /// Start a node serving the configured namespaces with the KV state machine.
    ///
    /// ```no_run
    /// # async fn example(config: flotilla::Config) -> Result<(), Box<dyn std::error::Error>> {
    /// // What `NodeBuilder::start` does, by hand: identity, libp2p host, store, node.
    /// let keypair = flotilla_net::load_or_create_keypair(&config.data_dir)?;
    /// let net = flotilla_net::NetConfig::from_node_config(&config);
    /// let host = flotilla_net::Host::start(keypair, &config.listen, net).await?;
    /// let store = flotilla_store::Store::open(&config.data_dir)?;
    /// let node = flotilla::Node::start(config, host, store).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(
        config: Config,
        transport: Arc<dyn Transport>,
        store: Arc<Store>,
    ) -> Result<Arc<Node>, StartError> {
        Self::start_with(config, transport, store, NodeServices::default()).await
    }

    /// Start a node with explicit state machines and discovery backends.
    ///
    /// ```no_run
    /// # async fn example(config: flotilla::Config, transport: std::sync::Arc<dyn flotilla_core::Transport>,
    /// #     store: std::sync::Arc<flotilla_store::Store>, factory: flotilla::StateMachineFactory) -> Result<(), flotilla::StartError> {
    /// let services = flotilla::NodeServices { state_machines: factory, discovery: Vec::new() };
    /// let node = flotilla::Node::start_with(config, transport, store, services).await?;
    /// println!("node {} started", node.id());
    /// # Ok(()) }
    /// ```
    pub async fn start_with(
        config: Config,
        transport: Arc<dyn Transport>,
        store: Arc<Store>,
        services: NodeServices,
    ) -> Result<Arc<Node>, StartError> {
        config.validate()?;
        if config.insecure_no_cluster_key {
            warn!(
                listen = ?config.listen,
                "--insecure-no-cluster-key: the cluster plane is open to every host that reaches these addresses; \
                 any of them can join, receive every value and vote (see docs/SECURITY.md)"
            );
        }
        let started = tokio::time::Instant::now();
        let id = transport.local_id();
        let keyring = config.keyring()?;
        let sealing = Arc::new(Sealing::new(id, keyring, config.max_frame_bytes as u64));
        // Everything the node sends or serves goes through the sealing layer, which is a
        // pass-through (that refuses sealed traffic) when no cluster key is configured.
        let transport: Arc<dyn Transport> = Arc::new(SealingTransport::new(transport, sealing.clone()));
        let factory = services.state_machines;
        let mut discovery = services.discovery;
        if !config.bootstrap.is_empty() {
            discovery.push(Arc::new(BootstrapDiscovery::new(transport.clone(), config.bootstrap.clone())));
        }
        let ledger = Arc::new(MembershipLedger::open(config.data_dir.clone(), id).map_err(StartError::Storage)?);
        // Everything this node holds of any namespace: tables, snapshots, formation records,
        // memberships in node.key.
        let mut stored = store.stored_namespaces().map_err(|e| StartError::Storage(e.to_string()))?;
        stored.extend(RecordFile::namespaces(&config.data_dir));
        stored.extend(ledger.namespaces());
        let set_file = NamespaceSetFile::new(&config.data_dir);
        let (set, persisted) =
            namespace_lifecycle::initial_set(&set_file, &config.namespaces, &stored).map_err(StartError::Storage)?;
        let namespaces = Arc::new(NamespaceRegistry::new(&config.data_dir, set.clone(), ledger));
        let closing = Arc::new(AtomicBool::new(false));
        let executor = Executor::new(id, transport.clone(), store.clone(), namespaces.clone(), config.timing());
        let timing = crate::command::ForwarderTiming {
            request_timeout: config.request_timeout(),
            election_max: std::time::Duration::from_millis(config.timing().election_max_ms),
            slow_request: config.slow_request(),
        };
        let forwarder = Forwarder::new(id, transport.clone(), store.clone(), executor, closing.clone(), timing);
        let node = Arc::new(Node {
            id,
            config,
            transport: transport.clone(),
            store,
            namespaces,
            snapshots: SnapshotInbox::new(SNAPSHOT_INBOX),
            request_ids: RequestIds::new(),
            peers: PeerTable::new(id),
            sealing,
            discovery,
            factory,
            liveness: crate::liveness::Liveness::default(),
            tick_load: Default::default(),
            forwarder,
            watch_counters: Arc::default(),
            closing,
            stopped: AtomicBool::new(false),
            inbound_raft_calls: Default::default(),
            crash_at: std::sync::Mutex::new(None),
        });
        if persisted {
            node.clean_leftovers(&stored).await?;
        }
        transport.set_handler(Arc::new(Inbound::new(&node)));
        for ns in &set.open {
            if let Err(e) = node.open_listed(ns, started, true).await {
                // Stop what already started; the store stays the caller's.
                node.closing.store(true, Ordering::Release);
                crate::shutdown::stop_all(&node.all_groups()).await;
                return Err(e);
            }
        }
        discovery_loop::spawn(&node);
        crate::lease_expiry::spawn(&node);
        crate::auto_compact::spawn(&node);
        crate::backup_schedule::spawn(&node);
        if node.config.leader_balance {
            balance_loop::spawn(&node);
        }
        crate::formation::autopilot_loop::spawn(&node);
        crate::quiesce::spawn(&node);
        crate::liveness::spawn(&node);
        crate::transfer_watch::spawn(&node);
        Ok(node)
    }

    /// This node's id (its PeerId).
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) {
    /// println!("node {} (its Raft id in every namespace)", node.id());
    /// # }
    /// ```
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The configuration the node runs with.
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) {
    /// println!("data in {}", node.config().data_dir.display());
    /// # }
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Addresses other nodes can reach this node at.
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) {
    /// // What another node passes to `NodeBuilder::bootstrap` to find this one.
    /// for addr in node.addrs() {
    ///     println!("reachable at {addr}");
    /// }
    /// # }
    /// ```
    pub fn addrs(&self) -> Vec<String> {
        self.transport.local_addrs()
    }

    /// The namespaces this node serves.
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) {
    /// for ns in node.namespaces() {
    ///     println!("serves {ns}");
    /// }
    /// # }
    /// ```
    pub fn namespaces(&self) -> Vec<Namespace> {
        self.namespaces.names()
    }

    /// The store (for metrics).
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) {
    /// println!("store in {}", node.store().data_dir().display());
    /// # }
    /// ```
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The watches this node serves: active, and cancelled so far.
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) {
    /// let (active, too_slow, compacted) = node.watch_counters().get();
    /// println!("{active} watches; {too_slow} cancelled as too slow, {compacted} by compaction");
    /// # }
    /// ```
    pub fn watch_counters(&self) -> &crate::watch::WatchCounters {
        &self.watch_counters
    }

    /// The cluster API of every namespace, in name order.
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) {
    /// for cluster in node.clusters() {
    ///     println!("{}: leader {:?}", cluster.namespace(), cluster.leader());
    /// }
    /// # }
    /// ```
    pub fn clusters(self: &Arc<Self>) -> Vec<Cluster> {
        self.namespaces.all().into_iter().map(|(_, e)| Cluster::new(self.clone(), e.slot.clone())).collect()
    }

    /// The cluster API of one namespace.
    ///
    /// ```no_run
    /// # async fn example(node: std::sync::Arc<flotilla::Node>) -> Result<(), flotilla::ApiError> {
    /// match node.cluster("orders") {
    ///     Ok(orders) => println!("leader {:?}", orders.leader()),
    ///     Err(flotilla::ApiError::UnknownNamespace(ns)) => println!("{ns} is not open here"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn cluster(self: &Arc<Self>, namespace: &str) -> Result<Cluster, ApiError> {
        let ns = Namespace::new(namespace)?;
        let entry = self.namespaces.get(&ns).ok_or_else(|| ApiError::UnknownNamespace(namespace.to_string()))?;
        Ok(Cluster::new(self.clone(), entry.slot.clone()))
    }

    pub(crate) fn group(&self, ns: &Namespace) -> Option<Arc<Group>> {
        self.namespaces.get(ns).map(|entry| entry.group())
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn self_info(&self) -> MemberInfo {
        MemberInfo::new(self.transport.local_addrs())
    }

    /// The sealing layer's state: keys, sessions and refusals.
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) {
    /// let sealing = node.sealing_status();
    /// if sealing.enabled {
    ///     println!("sealing with {:?}, accepting {:?}", sealing.sealing_key, sealing.accepted_keys);
    /// }
    /// # }
    /// ```
    pub fn sealing_status(&self) -> SealingStatus {
        self.sealing.status()
    }

    /// Read the keyring file again and use it: the rotation step of `docs/SECURITY.md`. The
    /// node must have started with a cluster key (sealing cannot be turned on or off while
    /// running: peers would refuse each other until all had changed). Returns the key ids, the
    /// sealing key first.
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) -> Result<(), flotilla::ApiError> {
    /// // After adding a new key at the top of the keyring file, on every node:
    /// let ids = node.reload_keyring()?;
    /// println!("sealing with key {}, accepting {} keys", ids[0], ids.len());
    /// # Ok(()) }
    /// ```
    pub fn reload_keyring(&self) -> Result<Vec<KeyId>, ApiError> {
        let Some(path) = self.config.cluster_key_file.as_deref() else {
            return Err(ApiError::Rejected("this node runs without a cluster key; restart it with one".into()));
        };
        let keyring = Keyring::load(path).map_err(|e| ApiError::Rejected(e.to_string()))?;
        let ids = keyring.ids();
        tracing::info!(sealing_key = %ids[0], keys = ids.len(), "keyring reloaded");
        self.sealing.set_keyring(keyring);
        Ok(ids)
    }

    /// The formation state of a namespace.
    pub(crate) fn formation(&self, ns: &Namespace) -> Option<Arc<Formation>> {
        self.namespaces.get(ns).map(|entry| entry.formation.clone())
    }

    /// Whether every namespace has Raft state on this node.
    pub(crate) fn all_formed(&self) -> bool {
        self.namespaces.all().iter().all(|(_, e)| e.group().has_state())
    }

    /// `--force-bootstrap` on empty state: found a single-node cluster at once.
    pub(crate) async fn force_found(&self, ns: &Namespace) -> Result<(), StartError> {
        let Some(entry) = self.namespaces.get(ns) else { return Ok(()) };
        let (group, formation) = (entry.group(), &entry.formation);
        let ballot = Ballot { coordinator: self.id, round: rand::random() };
        let record =
            FoundingRecord::Founded { ballot, voters: BTreeSet::from([self.id]), all: BTreeSet::from([self.id]) };
        let cluster = cluster_id(self.id, ballot.round);
        formation.remember_admission(&cluster).await.map_err(StartError::Storage)?;
        formation.save(&record).map_err(StartError::Storage)?;
        formation.lock().founder.restore_founded(ballot, BTreeSet::from([self.id]), BTreeSet::from([self.id]));
        formation.admit(None);
        let info = MemberInfo { addrs: self.transport.local_addrs(), cluster: cluster.clone() };
        formation.note(format!("--force-bootstrap: founding single-node cluster {cluster}"));
        if let Err(e) = group.raft.initialize(BTreeMap::from([(self.id, info)])).await {
            warn!(namespace = %ns, error = %e, "initialize refused");
        }
        group.wake("founded");
        Ok(())
    }

    /// Hand leadership of every group this node leads to another voter, all at once and within
    /// a few seconds in total (`HANDOFF_BUDGET` in `shutdown.rs`, at most the request timeout),
    /// then stop all groups at once and flush the store. Returns what became of the node's
    /// leaderships (nothing on a second call). Safe to call more than once.
    ///
    /// ```no_run
    /// # async fn example(node: std::sync::Arc<flotilla::Node>) {
    /// let report = node.close().await;
    /// println!("led {} namespaces, handed {} off", report.led, report.moved);
    /// # }
    /// ```
    pub async fn close(&self) -> crate::shutdown::HandOffReport {
        if self.closing.swap(true, Ordering::AcqRel) {
            return Default::default();
        }
        let groups = self.all_groups();
        let budget = crate::shutdown::HANDOFF_BUDGET.min(self.config.request_timeout());
        let silence = std::time::Duration::from_millis(self.config.timing().election_max_ms);
        let deadline = tokio::time::Instant::now() + budget;
        let report = crate::shutdown::hand_off_all(&groups, self.id, silence, deadline, &self.liveness).await;
        let peers = crate::liveness::peers_of(self);
        self.stop_groups().await;
        crate::liveness::say_goodbye(self, peers).await;
        report
    }

    /// Stop every group and the store at once, without handing leadership off: what a crash
    /// looks like to the rest of the cluster, minus the process exit. Used by tests and by
    /// fatal-error paths.
    ///
    /// ```no_run
    /// # async fn example(node: std::sync::Arc<flotilla::Node>) {
    /// node.halt().await; // no hand-off: each namespace it led elects a new leader
    /// # }
    /// ```
    pub async fn halt(&self) {
        self.closing.store(true, Ordering::Release);
        self.stop_groups().await;
    }

    /// For a node-level loop: the node, while it runs, and the groups of the built-in KV state
    /// machine it holds, after `forget` has been told which namespaces are still open.
    pub(crate) fn kv_groups_for_loop(
        weak: &std::sync::Weak<Node>,
        mut forget: impl FnMut(&dyn Fn(&Namespace) -> bool),
    ) -> Option<(Arc<Node>, Vec<Arc<Group>>)> {
        let node = weak.upgrade()?;
        if node.is_closing() {
            return None;
        }
        let groups = node.all_groups();
        forget(&|ns: &Namespace| groups.iter().any(|g| g.namespace == *ns));
        let kv = groups.into_iter().filter(|g| g.serves_leases).collect();
        Some((node, kv))
    }

    pub(crate) fn all_groups(&self) -> Vec<Arc<Group>> {
        self.namespaces.all().iter().map(|(_, e)| e.group()).collect()
    }

    async fn stop_groups(&self) {
        // First: from now on inbound Raft traffic is refused here instead of reaching a group
        // that is stopping (openraft reports each such call as an error).
        self.stopped.store(true, Ordering::SeqCst);
        crate::inbound::RaftCall::wait_none(self, crate::shutdown::DRAIN_BUDGET).await;
        crate::shutdown::stop_all(&self.all_groups()).await;
        // openraft's state machine workers outlive their groups until they have drained their
        // queued applies: close the store after them.
        self.store.shutdown_when_unused(crate::shutdown::DRAIN_BUDGET).await;
    }

    /// Whether the groups are stopping or stopped ([`Node::close`] or [`Node::halt`] reached
    /// them): inbound traffic is refused.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// Open the store of `ns` and start its Raft group.
pub(crate) async fn open_group(
    config: &Config,
    transport: &Arc<dyn Transport>,
    store: &Arc<Store>,
    factory: &StateMachineFactory,
    ns: &Namespace,
) -> Result<Arc<Group>, StartError> {
    let election_max = std::time::Duration::from_millis(config.timing().election_max_ms);
    let budget = crate::wire_budget::WireBudget::new(config.max_frame_bytes, election_max);
    let network = GroupNetworkFactory::new(transport.clone(), ns.clone(), budget);
    let rc = raft_config(config, ns).map_err(|e| StartError::Config(e.to_string()))?;
    Group::start(transport.local_id(), ns.clone(), rc, network, store, factory(ns))
        .await
        .map_err(|e| StartError::Raft(ns.to_string(), e))
}
