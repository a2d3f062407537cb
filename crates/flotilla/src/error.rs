//! Errors of starting a node.

use flotilla_core::ConfigError;

/// Why a node could not start.
///
/// ```no_run
/// # async fn example(config: flotilla::Config, transport: std::sync::Arc<dyn flotilla_core::Transport>,
/// #     store: std::sync::Arc<flotilla_store::Store>) {
/// use flotilla::StartError;
///
/// match flotilla::Node::start(config, transport, store).await {
///     Ok(node) => println!("started {}", node.id()),
///     Err(StartError::ForceBootstrapAfterDataLoss { namespace, .. }) => eprintln!("{namespace}: start without --force-bootstrap"),
///     Err(e) => eprintln!("cannot start: {e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// openraft refused the derived configuration.
    #[error("raft configuration: {0}")]
    Config(String),
    /// The store could not be read.
    #[error("storage: {0}")]
    Storage(String),
    /// `--force-bootstrap` on a namespace this node's identity was admitted to before, with
    /// an empty store: the node lost its data, and founding again would make a second cluster.
    #[error(
        "namespace {namespace}: --force-bootstrap refused: {reason}. This node's identity \
         (node.key) was admitted to the namespace before and its store is now empty, so founding \
         again would make a second cluster beside the one it belonged to. Start it without \
         --force-bootstrap: it rejoins that cluster once a member is reachable (the leader drops \
         its old vote and re-adds it as a learner). To abandon that cluster for good (explicit \
         reset), move node.key out of the data directory: the node then starts as a new identity \
         (remove the old one with `flotilla members remove` if its cluster still runs)"
    )]
    ForceBootstrapAfterDataLoss {
        /// The namespace.
        namespace: String,
        /// What the node remembers of its membership.
        reason: String,
    },
    /// A group's Raft instance failed to start.
    #[error("namespace {0}: {1}")]
    Raft(String, String),
}

/// Why a namespace could not be opened or closed at runtime ([`crate::Node::open_namespace`],
/// [`crate::Node::close_namespace`]).
///
/// ```no_run
/// # async fn example(node: std::sync::Arc<flotilla::Node>) -> Result<(), flotilla::NamespaceError> {
/// use flotilla::NamespaceError;
///
/// match node.close_namespace("orders", Default::default()).await {
///     Err(NamespaceError::LastVoter { others, .. }) => println!("promote one of the {others} learners first"),
///     other => other?,
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The name is not a valid namespace name.
    #[error(transparent)]
    InvalidName(#[from] flotilla_core::NamespaceError),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    NodeClosing,
    /// The namespace could not be set up (storage, Raft configuration, group start); it is not
    /// open and nothing of it remains in the set of open namespaces.
    #[error(transparent)]
    Open(#[from] StartError),
    /// Persisting the set of open namespaces, or dropping the namespace's data, failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The node could not leave the namespace's membership (no leader, timeout): the
    /// namespace stays open and its data is untouched; closing again retries.
    #[error("cannot leave the membership of namespace {namespace}: {source}")]
    Leave {
        /// The namespace.
        namespace: String,
        /// What the leader (or the way to it) answered.
        source: flotilla_core::ApiError,
    },
    /// This node is the namespace's only voter and other members (learners) remain: it cannot
    /// leave without stranding them. Promote one first (`flotilla members add --voter`), or
    /// remove them.
    #[error("this node is the only voter of namespace {namespace} and {others} other member(s) remain")]
    LastVoter {
        /// The namespace.
        namespace: String,
        /// Members other than this node.
        others: usize,
    },
    /// The node already serves as many namespaces as it may.
    #[error("this node already serves {limit} namespaces, the most it may")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// A crash point armed by an in-process test stopped the operation (see `Node::crash_at`,
    /// feature `in-process`); never raised otherwise.
    #[error("crashed at {0:?} (test crash point)")]
    Crashed(crate::crash_point::CrashPoint),
}
