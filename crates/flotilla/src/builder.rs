//! [`NodeBuilder`]: a running node from a data directory in one call, composed exactly as the
//! `flotilla agent` composes it (the agent uses this builder): the identity in `node.key`, the
//! libp2p host on the configured addresses, the store (sealed at rest when configured), mDNS
//! unless turned off, and the node itself.
//!
//! ```no_run
//! # async fn example() -> Result<(), flotilla::BuildError> {
//! let node = flotilla::Node::builder("/var/lib/myservice/raft")
//!     .namespace("orders")
//!     .listen("/ip4/127.0.0.1/tcp/0")
//!     .start()
//!     .await?;
//! let orders = node.cluster("orders").expect("configured");
//! orders.set(b"greeting", b"hello").await.expect("written");
//! node.shutdown().await;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use flotilla_core::{Config, ConfigError, Discovery, Namespace, NamespaceError};
use flotilla_net::{Host, NetConfig, NetError};
use flotilla_store::{Store, StoreError};

use crate::error::StartError;
use crate::node::{Node, NodeServices, StateMachineFactory};

/// Why a node could not be built and started.
///
/// ```no_run
/// # async fn example() {
/// use flotilla::BuildError;
///
/// let builder = flotilla::Node::builder("/var/lib/myservice/raft").listen("/ip4/127.0.0.1/tcp/7000");
/// match builder.start().await {
///     Ok(node) => println!("started {}", node.id()),
///     Err(BuildError::Config(e)) => eprintln!("fix the configuration: {e}"),
///     Err(e) => eprintln!("cannot start: {e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A namespace name given to the builder is invalid.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// The data directory could not be created.
    #[error("creating the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The identity (`node.key`) could not be read or created, or the host could not listen.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The store could not be opened (or resealed under the current at-rest key).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node refused to start.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Builds a node: every option has the agent's default ([`Config::default`]); set what you need
/// and call [`NodeBuilder::start`]. Get one from [`Node::builder`] or [`NodeBuilder::from_config`].
///
/// ```
/// let builder = flotilla::Node::builder("/var/lib/myservice/raft")
///     .namespace("orders")
///     .listen("/ip4/127.0.0.1/tcp/7000")
///     .configure(|c| c.expect = Some(3));
/// assert_eq!(builder.config().expect, Some(3)); // nothing runs until `start`
/// ```
pub struct NodeBuilder {
    config: Config,
    state_machines: Option<StateMachineFactory>,
    discovery: Vec<Arc<dyn Discovery>>,
    namespaces: Vec<String>,
    #[cfg(feature = "in-process")]
    in_process: Option<crate::in_process::InProcessNetwork>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder").field("config", &self.config).field("namespaces", &self.namespaces).finish()
    }
}

impl Node {
    /// A builder of a node keeping its identity and data in `data_dir` (see [`NodeBuilder`]).
    ///
    /// Like the agent, it listens on every interface by default, and a node that listens beyond
    /// loopback must hold the cluster key: give it one ([`NodeBuilder::cluster_key_file`]) or
    /// listen on loopback ([`NodeBuilder::listen`]), or [`NodeBuilder::start`] refuses the
    /// configuration.
    ///
    /// ```
    /// let builder = flotilla::Node::builder("/var/lib/myservice/raft");
    /// assert_eq!(builder.config().data_dir, std::path::Path::new("/var/lib/myservice/raft"));
    /// ```
    pub fn builder(data_dir: impl Into<PathBuf>) -> NodeBuilder {
        NodeBuilder::from_config(Config { data_dir: data_dir.into(), ..Config::default() })
    }
}

impl NodeBuilder {
    /// A builder of a node with every option of `config` (the agent's command line parses into
    /// one).
    ///
    /// ```
    /// use flotilla::{Config, NodeBuilder};
    ///
    /// let config = Config { expect: Some(3), ..Config::default() };
    /// assert_eq!(NodeBuilder::from_config(config).config().expect, Some(3));
    /// ```
    pub fn from_config(config: Config) -> Self {
        Self {
            config,
            state_machines: None,
            discovery: Vec::new(),
            namespaces: Vec::new(),
            #[cfg(feature = "in-process")]
            in_process: None,
        }
    }

    /// Connect the node to the other nodes of this process over `network` instead of libp2p
    /// (feature `in-process`; see [`crate::in_process`]): no socket, no mDNS; the network's
    /// discovery finds the other nodes on it. Everything else (store, groups, formation) is as
    /// in production.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), flotilla::BuildError> {
    /// let network = flotilla::in_process::InProcessNetwork::new(42);
    /// let node = flotilla::Node::builder("/tmp/flotilla-test/a").in_process(&network).start().await?;
    /// println!("{:?}", node.addrs()); // `/memory/<id>`: no socket
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "in-process")]
    pub fn in_process(mut self, network: &crate::in_process::InProcessNetwork) -> Self {
        self.in_process = Some(network.clone());
        self
    }

    /// Serve namespace `name` from the start (a fresh node's initial set; see
    /// [`Config::namespaces`]). More can be opened at runtime with [`Node::open_namespace`].
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), flotilla::BuildError> {
    /// let builder = flotilla::Node::builder("/var/lib/myservice/raft").listen("/ip4/127.0.0.1/tcp/7000");
    /// let node = builder.namespace("orders").namespace("users").start().await?;
    /// let orders = node.cluster("orders").expect("served from the start");
    /// # Ok(()) }
    /// ```
    pub fn namespace(mut self, name: impl Into<String>) -> Self {
        self.namespaces.push(name.into());
        self
    }

    /// Listen on this libp2p multiaddr (instead of the default, every interface). A node that
    /// listens beyond loopback needs a cluster key ([`NodeBuilder::cluster_key_file`]).
    ///
    /// ```
    /// let builder = flotilla::Node::builder("/var/lib/myservice/raft").listen("/ip4/127.0.0.1/tcp/7000");
    /// assert_eq!(builder.config().listen, ["/ip4/127.0.0.1/tcp/7000"]); // instead of the default
    /// ```
    pub fn listen(mut self, multiaddr: impl Into<String>) -> Self {
        if self.config.listen == Config::default().listen {
            self.config.listen.clear();
        }
        self.config.listen.push(multiaddr.into());
        self
    }

    /// Also find peers at this multiaddr (besides mDNS).
    ///
    /// ```
    /// let builder = flotilla::Node::builder("/var/lib/myservice/raft").bootstrap("/dns4/raft-0.internal/tcp/7000");
    /// assert_eq!(builder.config().bootstrap, ["/dns4/raft-0.internal/tcp/7000"]);
    /// ```
    pub fn bootstrap(mut self, multiaddr: impl Into<String>) -> Self {
        self.config.bootstrap.push(multiaddr.into());
        self
    }

    /// Seal node-to-node traffic with the cluster key in this file (`flotilla keygen`).
    ///
    /// ```
    /// let builder = flotilla::Node::builder("/var/lib/myservice/raft")
    ///     .listen("/ip4/0.0.0.0/tcp/7000")
    ///     .cluster_key_file("/etc/myservice/cluster.key");
    /// assert!(builder.config().cluster_key_file.is_some());
    /// ```
    pub fn cluster_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.cluster_key_file = Some(path.into());
        self
    }

    /// Do not discover peers with mDNS (only `bootstrap` addresses and peer exchange).
    ///
    /// ```
    /// let builder = flotilla::Node::builder("/var/lib/myservice/raft").no_mdns();
    /// assert!(builder.config().no_mdns);
    /// ```
    pub fn no_mdns(mut self) -> Self {
        self.config.no_mdns = true;
        self
    }

    /// Change any other option of the configuration.
    ///
    /// ```
    /// let builder = flotilla::Node::builder("/var/lib/myservice/raft").configure(|c| {
    ///     c.expect = Some(3); // found the cluster once three nodes see each other
    ///     c.force_bootstrap = false;
    /// });
    /// assert_eq!(builder.config().expect, Some(3));
    /// ```
    pub fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Choose each namespace's state machine (default: the KV state machine everywhere).
    ///
    /// ```no_run
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
    /// # async fn example() -> Result<(), flotilla::BuildError> {
    /// use std::sync::Arc;
    /// use flotilla::{StateMachine, Typed};
    ///
    /// let counter: Arc<dyn StateMachine> = Arc::new(Typed::new(Counter));
    /// let builder = flotilla::Node::builder("/var/lib/myservice/raft").listen("/ip4/127.0.0.1/tcp/7000").namespace("counters");
    /// let node = builder.state_machines(Arc::new(move |_| counter.clone())).start().await?;
    /// # Ok(()) }
    /// ```
    pub fn state_machines(mut self, factory: StateMachineFactory) -> Self {
        self.state_machines = Some(factory);
        self
    }

    /// Add a discovery backend of your own.
    ///
    /// ```no_run
    /// # async fn example(consul: std::sync::Arc<dyn flotilla_core::Discovery>) -> Result<(), flotilla::BuildError> {
    /// // `consul` implements `Discovery`: it lists the peers it sees.
    /// let builder = flotilla::Node::builder("/var/lib/myservice/raft").listen("/ip4/127.0.0.1/tcp/7000");
    /// let node = builder.discovery(consul).start().await?;
    /// # Ok(()) }
    /// ```
    pub fn discovery(mut self, backend: Arc<dyn Discovery>) -> Self {
        self.discovery.push(backend);
        self
    }

    /// The configuration the node will start with.
    ///
    /// ```
    /// let builder = flotilla::Node::builder("/var/lib/myservice/raft");
    /// // The default listens on every interface, which needs a cluster key; loopback does not.
    /// assert!(builder.config().validate().is_err());
    /// assert!(builder.listen("/ip4/127.0.0.1/tcp/7000").config().validate().is_ok());
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Open identity, host and store, and start the node. The identity is created on the first
    /// start (`node.key`, 0600) and kept afterwards.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), flotilla::BuildError> {
    /// let builder = flotilla::Node::builder("/var/lib/myservice/raft").listen("/ip4/127.0.0.1/tcp/7000");
    /// let node = builder.namespace("orders").start().await?;
    /// println!("node {} listening at {:?}", node.id(), node.addrs());
    /// # Ok(()) }
    /// ```
    pub async fn start(self) -> Result<RunningNode, BuildError> {
        let mut config = self.config;
        for name in self.namespaces {
            let ns = Namespace::new(&name)?;
            if !config.namespaces.contains(&ns) {
                config.namespaces.push(ns);
            }
        }
        // On the in-process network nothing listens: its cluster plane counts as loopback
        // (an exposed one would need a cluster key), unless the configuration says otherwise.
        #[cfg(feature = "in-process")]
        if self.in_process.is_some() && config.listen == Config::default().listen {
            config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        }
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| BuildError::DataDir { path: config.data_dir.clone(), source })?;
        let keypair = flotilla_net::load_or_create_keypair(&config.data_dir)?;
        let mut services = NodeServices { discovery: self.discovery, ..NodeServices::default() };
        if let Some(factory) = self.state_machines {
            services.state_machines = factory;
        }
        #[cfg(feature = "in-process")]
        if let Some(network) = self.in_process {
            return start_in_process(config, &network, keypair.public().to_peer_id(), services).await;
        }
        let host = Host::start(keypair, &config.listen, NetConfig::from_node_config(&config)).await?;
        let store = match open_store(&config).await {
            Ok(store) => store,
            Err(e) => {
                host.shutdown().await;
                return Err(e);
            }
        };
        if let Some(mdns) = host.mdns_discovery() {
            services.discovery.push(Arc::new(mdns));
        }
        match Node::start_with(config, host.clone(), store, services).await {
            Ok(node) => Ok(RunningNode { node, host: Some(host) }),
            Err(e) => {
                host.shutdown().await;
                Err(e.into())
            }
        }
    }
}

/// Start a node on the in-process `network` as node `id`.
#[cfg(feature = "in-process")]
async fn start_in_process(
    config: Config,
    network: &crate::in_process::InProcessNetwork,
    id: flotilla_core::types::NodeId,
    mut services: NodeServices,
) -> Result<RunningNode, BuildError> {
    let store = open_store(&config).await?;
    services.discovery.push(network.discovery(id));
    let node = Node::start_with(config, network.transport(id), store, services).await?;
    Ok(RunningNode { node, host: None })
}

/// The store, sealed at rest (and resealed under the current key) when configured.
async fn open_store(config: &Config) -> Result<Arc<Store>, BuildError> {
    // Read once: a passphrase key costs a PBKDF2 run per read.
    let keyring = config.keyring()?;
    let store = Store::open_with(&config.data_dir, crate::at_rest::store_options(config, keyring.as_ref())?)?;
    if let (true, Some(keyring)) = (config.encrypt_at_rest, &keyring) {
        crate::at_rest::reseal_if_needed(&store, keyring).await?;
    }
    Ok(store)
}

/// A node started by [`NodeBuilder::start`], with the host it owns. Dereferences to the
/// `Arc<Node>`, so every [`Node`] method works on it; [`RunningNode::shutdown`] stops both.
///
/// ```no_run
/// # async fn example() -> Result<(), flotilla::BuildError> {
/// let node = flotilla::Node::builder("/var/lib/myservice/raft").listen("/ip4/127.0.0.1/tcp/7000").start().await?;
/// println!("{:?}", node.namespaces()); // any `Node` method, through `Deref`
/// let report = node.shutdown().await;
/// # Ok(()) }
/// ```
pub struct RunningNode {
    node: Arc<Node>,
    /// The libp2p host it owns; `None` on the in-process network.
    host: Option<Arc<Host>>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode").field("id", &self.node.id()).finish_non_exhaustive()
    }
}

impl std::ops::Deref for RunningNode {
    type Target = Arc<Node>;

    fn deref(&self) -> &Arc<Node> {
        &self.node
    }
}

impl RunningNode {
    /// The node, to share (for example with an HTTP server).
    ///
    /// ```no_run
    /// # async fn example(node: flotilla::RunningNode) {
    /// let shared = node.node().clone(); // an `Arc<Node>` for a server task
    /// tokio::spawn(async move { println!("{} namespaces", shared.namespaces().len()) });
    /// node.shutdown().await;
    /// # }
    /// ```
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stop gracefully: hand off leadership, stop every group, flush the store
    /// ([`Node::close`]), then close the host's connections (if it has a host).
    ///
    /// ```no_run
    /// # async fn example(node: flotilla::RunningNode) {
    /// let report = node.shutdown().await;
    /// println!("{} of {} leaderships handed off in {:?}", report.moved, report.led, report.elapsed);
    /// # }
    /// ```
    pub async fn shutdown(self) -> crate::HandOffReport {
        let report = self.node.close().await;
        if let Some(host) = self.host {
            host.shutdown().await;
        }
        report
    }
}
