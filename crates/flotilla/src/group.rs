//! One namespace's Raft group on this node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flotilla_core::types::{NodeId, TypeConfig};
use flotilla_core::wire::log_index;
use flotilla_core::{Namespace, StateMachine};
use flotilla_store::{StateMachineStore, Store};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{RaftMetrics, ServerState};

use crate::network::GroupNetworkFactory;

/// The openraft handle of a group.
pub type GroupRaft = openraft::Raft<TypeConfig, StateMachineStore>;

/// How long a restarted group may take to publish the state it loaded from disk.
const METRICS_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Counters exported per namespace.
#[derive(Debug, Default)]
pub struct GroupCounters {
    /// Writes proposed to Raft by this node as leader.
    pub proposals: AtomicU64,
    /// Requests this node forwarded to a leader elsewhere.
    pub forwards: AtomicU64,
    /// Times the known leader changed, and when it last did.
    pub leader_changes: crate::leader_changes::LeaderChangeLog,
}

impl GroupCounters {
    /// Add one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A namespace's Raft group: the openraft instance plus what Flotilla tracks about it.
pub struct Group {
    /// The namespace.
    pub namespace: Namespace,
    /// The Raft instance.
    pub raft: GroupRaft,
    /// Exported counters.
    pub counters: Arc<GroupCounters>,
    /// Whether the group is quiesced (see [`crate::quiesce`]).
    pub(crate) quiet: crate::quiesce::Quiet,
    /// Lease deadlines while this node leads (see [`crate::lease_clock`]).
    pub(crate) leases: crate::lease_clock::LeaseClock,
    /// Whether the state machine keeps leases (the built-in KV one), so expiry runs here.
    pub(crate) serves_leases: bool,
    /// The leadership transfer this node asked for last (see [`crate::transfer_watch`]).
    pub(crate) transfer: crate::transfer_watch::PendingTransfer,
    /// The read-index rounds its linearizable reads share (see [`crate::read_index_batch`]).
    pub(crate) read_index: crate::read_index_batch::ReadIndexBatcher,
}

impl Group {
    /// Open the namespace's storage and start its Raft instance.
    pub async fn start(
        id: NodeId,
        namespace: Namespace,
        raft_config: Arc<openraft::Config>,
        network: GroupNetworkFactory,
        store: &Arc<Store>,
        state_machine: Arc<dyn StateMachine>,
    ) -> Result<Arc<Group>, String> {
        let had_state = store.has_state(&namespace).map_err(|e| e.to_string())?;
        let had_log = store.has_log_state(&namespace).map_err(|e| e.to_string())?;
        let log = store.log_store(&namespace).map_err(|e| e.to_string())?;
        let serves_leases = state_machine.serves_leases();
        let sm = store.state_machine(&namespace, state_machine).map_err(|e| e.to_string())?;
        let raft = GroupRaft::new(id, raft_config, network, log, sm).await.map_err(|e| e.to_string())?;
        if had_log {
            // The metrics start empty until the Raft task publishes the state it loaded; until
            // then `has_state` would call a restarted member fresh, and formation would have it
            // rejoin as if it had lost its data. Only for a log: a node that only voted (in an
            // election of a forming namespace, before any entry reached it) has none to
            // publish, and waiting for one failed its every restart after 30 s.
            raft.wait(Some(METRICS_PATIENCE))
                .metrics(|m| m.last_log_index.is_some(), "restored log published")
                .await
                .map_err(|e| format!("the Raft state loaded from disk was not published: {e}"))?;
        }
        // A fresh group has no membership: it can neither elect nor lead, only take the Raft
        // traffic of a cluster that admits it. Its ticker (every `heartbeat * 13 / 64`) would
        // only burn CPU, which a thousand namespaces forming at once cannot afford. It stays
        // off until the group founds a cluster (`Node::initialize`) or takes Raft traffic
        // (`crate::inbound` wakes the receiver of anything but a heartbeat).
        let quiet = crate::quiesce::Quiet::new(!had_state);
        if !had_state {
            raft.runtime_config().tick(false);
        }
        let counters = Arc::new(GroupCounters::default());
        spawn_leader_watch(raft.clone(), counters.clone());
        Ok(Arc::new(Group {
            namespace,
            raft,
            counters,
            quiet,
            leases: Default::default(),
            serves_leases,
            transfer: Default::default(),
            read_index: Default::default(),
        }))
    }

    /// A snapshot of the group's Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    // The accessors below sit on the request path: they read one field through the watch
    // instead of cloning the whole metrics (membership, replication maps).

    /// The leader this node currently knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Whether this node is the group's leader.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// Whether this replica holds Raft state for the namespace (any log entry, kept or purged).
    pub fn has_state(&self) -> bool {
        self.raft.metrics().borrow_watched().last_log_index.is_some()
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// Index of the last entry applied to this replica's state machine.
    pub fn applied_index(&self) -> u64 {
        log_index(&self.raft.metrics().borrow_watched().last_applied)
    }
}

/// Count leader changes for metrics; ends when the Raft instance shuts down.
fn spawn_leader_watch(raft: GroupRaft, counters: Arc<GroupCounters>) {
    tokio::spawn(async move {
        // The server metrics (vote, state, leader, membership), not the full metrics: openraft
        // sends the full metrics on every core-loop iteration, changed or not, and the server
        // metrics only when they change. Under load spread over many namespaces that is about
        // sixteen wake-ups of this task per write saved (see DESIGN-namespaces.md).
        let mut rx = raft.server_metrics();
        let mut last = rx.borrow_watched().current_leader;
        while rx.changed().await.is_ok() {
            let now = rx.borrow_watched().current_leader;
            if now != last {
                counters.leader_changes.record();
                last = now;
            }
        }
    });
}

/// The current group of a namespace. A namespace that dissolves into another cluster gets a
/// new, empty group; holders of the slot see the new one on their next call.
pub struct GroupSlot {
    current: std::sync::RwLock<Arc<Group>>,
}

impl GroupSlot {
    /// A slot holding `group`.
    pub fn new(group: Arc<Group>) -> Self {
        Self { current: std::sync::RwLock::new(group) }
    }

    /// The current group.
    pub fn get(&self) -> Arc<Group> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the group.
    pub fn replace(&self, group: Arc<Group>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = group;
    }
}
