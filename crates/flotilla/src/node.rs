//! A Flotilla node: one transport, one store, many namespaced Raft groups.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::types::NodeId;
use flotilla_core::{ApiError, Config, KvStateMachine, MemberInfo, Namespace, StateMachine, Transport};
use flotilla_store::Store;
use tracing::{info, warn, Instrument};

use crate::cluster::Cluster;
use crate::error::StartError;
use crate::group::Group;
use crate::inbound::Inbound;
use crate::network::GroupNetworkFactory;
use crate::raft_config::raft_config;
use crate::request_ids::RequestIds;
use crate::snapshot_inbox::SnapshotInbox;

/// Chooses the state machine of each namespace.
pub type StateMachineFactory = Arc<dyn Fn(&Namespace) -> Arc<dyn StateMachine> + Send + Sync>;

/// Largest snapshot a node accepts from a leader.
const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// A running node.
pub struct Node {
    pub(crate) id: NodeId,
    pub(crate) config: Config,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store: Arc<Store>,
    pub(crate) groups: BTreeMap<Namespace, Arc<Group>>,
    pub(crate) snapshots: SnapshotInbox,
    pub(crate) request_ids: RequestIds,
    closing: AtomicBool,
}

impl Node {
    /// Start a node serving the configured namespaces with the KV state machine.
    pub async fn start(
        config: Config,
        transport: Arc<dyn Transport>,
        store: Arc<Store>,
    ) -> Result<Arc<Node>, StartError> {
        let factory: StateMachineFactory = Arc::new(|_| Arc::new(KvStateMachine) as Arc<dyn StateMachine>);
        Self::start_with(config, transport, store, factory).await
    }

    /// Start a node whose namespaces run the state machines `factory` returns.
    pub async fn start_with(
        config: Config,
        transport: Arc<dyn Transport>,
        store: Arc<Store>,
        factory: StateMachineFactory,
    ) -> Result<Arc<Node>, StartError> {
        config.validate()?;
        let id = transport.local_id();
        let mut groups = BTreeMap::new();
        let mut fresh = BTreeSet::new();
        for ns in &config.namespaces {
            // Decided before Raft opens the store: a node that was ever a member never founds.
            if !store.has_state(ns).map_err(|e| StartError::Storage(e.to_string()))? {
                fresh.insert(ns.clone());
            }
            let chunk = config.max_frame_bytes / 2;
            let network = GroupNetworkFactory::new(transport.clone(), ns.clone(), chunk);
            let rc = raft_config(&config, ns).map_err(|e| StartError::Config(e.to_string()))?;
            let group = Group::start(id, ns.clone(), rc, network, &store, factory(ns))
                .await
                .map_err(|e| StartError::Raft(ns.to_string(), e))?;
            groups.insert(ns.clone(), group);
        }
        let node = Arc::new(Node {
            id,
            config,
            transport: transport.clone(),
            store,
            groups,
            snapshots: SnapshotInbox::new(MAX_SNAPSHOT_BYTES),
            request_ids: RequestIds::new(),
            closing: AtomicBool::new(false),
        });
        transport.set_handler(Arc::new(Inbound::new(&node)));
        for ns in fresh {
            node.form(&ns).await?;
        }
        Ok(node)
    }

    /// This node's id (its PeerId).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Addresses other nodes can reach this node at.
    pub fn addrs(&self) -> Vec<String> {
        self.transport.local_addrs()
    }

    /// The namespaces this node serves.
    pub fn namespaces(&self) -> Vec<Namespace> {
        self.groups.keys().cloned().collect()
    }

    /// The store (for metrics).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The cluster API of every namespace, in name order.
    pub fn clusters(self: &Arc<Self>) -> Vec<Cluster> {
        self.groups.values().map(|g| Cluster::new(self.clone(), g.clone())).collect()
    }

    /// The cluster API of one namespace.
    pub fn cluster(self: &Arc<Self>, namespace: &str) -> Result<Cluster, ApiError> {
        let ns = Namespace::new(namespace)?;
        let group = self.groups.get(&ns).cloned().ok_or_else(|| ApiError::UnknownNamespace(namespace.to_string()))?;
        Ok(Cluster::new(self.clone(), group))
    }

    pub(crate) fn group(&self, ns: &Namespace) -> Option<&Arc<Group>> {
        self.groups.get(ns)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn self_info(&self) -> MemberInfo {
        MemberInfo::new(self.transport.local_addrs())
    }

    /// First start of a namespace on empty state: found it alone, or join through a bootstrap
    /// address. Joining runs in the background until it succeeds or the node closes.
    async fn form(self: &Arc<Self>, ns: &Namespace) -> Result<(), StartError> {
        let group = self.groups[ns].clone();
        if self.config.bootstrap.is_empty() {
            info!(namespace = %ns, "founding a single-node cluster");
            let members = BTreeMap::from([(self.id, self.self_info())]);
            if let Err(e) = group.raft.initialize(members).await {
                warn!(namespace = %ns, error = %e, "initialize refused");
            }
            return Ok(());
        }
        let node = self.clone();
        let span = tracing::info_span!("join", namespace = %ns);
        tokio::spawn(async move { node.join_loop(group).await }.instrument(span));
        Ok(())
    }

    async fn join_loop(self: Arc<Self>, group: Arc<Group>) {
        let mut backoff = Duration::from_millis(200);
        while !self.is_closing() {
            for addr in self.config.bootstrap.clone() {
                match self.try_join(&group, &addr).await {
                    Ok(()) => {
                        info!(%addr, "joined");
                        return;
                    }
                    Err(e) => warn!(%addr, error = %e, "join attempt failed"),
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn try_join(&self, group: &Arc<Group>, addr: &str) -> Result<(), ApiError> {
        let timeout = self.config.request_timeout();
        let peer = self.transport.connect(addr, timeout).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
        if peer == self.id {
            return Err(ApiError::Rejected("bootstrap address is this node".into()));
        }
        let request = flotilla_core::wire::CommandRequest::Join(self.self_info());
        self.send_command(group, peer, request, crate::command::MAX_HOPS, timeout).await.map(|_| ())
    }

    /// Hand leadership of every group this node leads to another voter, then stop all groups
    /// and flush the store. Safe to call more than once.
    pub async fn close(&self) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        for group in self.groups.values() {
            if group.is_leader() {
                let deadline = tokio::time::Instant::now() + self.config.request_timeout();
                if let Err(e) = self.transfer_leadership_local(group, None, deadline).await {
                    warn!(namespace = %group.namespace, error = %e, "leadership hand-off failed");
                }
            }
        }
        self.stop_groups().await;
    }

    /// Stop every group and the store at once, without handing leadership off: what a crash
    /// looks like to the rest of the cluster, minus the process exit. Used by tests and by
    /// fatal-error paths.
    pub async fn halt(&self) {
        self.closing.store(true, Ordering::Release);
        self.stop_groups().await;
    }

    async fn stop_groups(&self) {
        for group in self.groups.values() {
            if let Err(e) = group.raft.shutdown().await {
                warn!(namespace = %group.namespace, error = %e, "raft shutdown failed");
            }
        }
        self.store.shutdown();
    }
}
