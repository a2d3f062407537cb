//! The node-level leader-balancing task: every few seconds (with jitter), observe who leads
//! the namespaces this node serves, decide with [`balance::decide`], and ask Raft to transfer
//! the leadership of the chosen namespaces. One task per node, not per namespace; off with
//! `--no-leader-balance`. The rule and why it does not ping-pong are in `balance.rs` and
//! `DESIGN-formation.md`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use flotilla_core::types::{NodeId, TypeConfig};
use flotilla_core::wire::log_index;
use flotilla_core::Namespace;
use openraft::{RaftMetrics, ServerState};
use tokio::time::Instant;
use tracing::{info, warn, Instrument};

use super::balance::{self, Led, Move, Observation};
use crate::group::Group;
use crate::node::Node;

/// Wait after start before the first round, so balancing does not fight formation and the
/// first elections.
const SETTLE: Duration = Duration::from_secs(5);
/// Interval between rounds, plus up to [`JITTER`] so the nodes' rounds drift apart.
const ROUND: Duration = Duration::from_secs(2);
/// Random extra delay of a round.
const JITTER: Duration = Duration::from_secs(1);
/// A namespace whose leader changed (or that this node asked to move) this recently is left
/// where it is: a transfer gets time to finish and every node time to see it before anyone
/// counts again.
const COOLDOWN: Duration = Duration::from_secs(10);

/// Run the balancing task until the node closes.
pub(crate) fn spawn(node: &Arc<Node>) {
    let weak = Arc::downgrade(node);
    tokio::spawn(async move { run(weak).await }.instrument(tracing::info_span!("leader_balance")));
}

async fn run(weak: Weak<Node>) {
    tokio::time::sleep(SETTLE).await;
    let mut seen = LeaderMemory::default();
    loop {
        {
            let Some(node) = weak.upgrade() else { return };
            if node.is_closing() {
                return;
            }
            // Namespaces still forming have no leader and no voters: they count for nothing
            // and are never moved, so one that never forms does not hold the others back.
            node.balance_round(&mut seen).await;
        }
        let jitter = JITTER.mul_f64(rand::random::<f64>());
        tokio::time::sleep(ROUND + jitter).await;
    }
}

/// The leader last seen of each namespace and since when (None: since before the task's first
/// round).
#[derive(Default)]
struct LeaderMemory {
    leaders: HashMap<Namespace, (Option<NodeId>, Option<Instant>)>,
    /// Whether a round ran already: a namespace first seen later was opened at runtime and has
    /// just formed, so it cools down like a namespace whose leader changed.
    started: bool,
}

impl LeaderMemory {
    /// Note `leader` for `ns`; whether its leader changed within [`COOLDOWN`].
    fn cooling(&mut self, ns: &Namespace, leader: Option<NodeId>) -> bool {
        let now = Instant::now();
        let first_seen = self.started.then_some(now);
        let entry = self.leaders.entry(ns.clone()).or_insert((leader, first_seen));
        if entry.0 != leader {
            *entry = (leader, Some(now));
        }
        entry.1.is_some_and(|at| now.duration_since(at) < COOLDOWN)
    }

    /// A transfer of `ns` was asked for: it cools down as if its leader had changed.
    fn moved(&mut self, ns: &Namespace) {
        if let Some(entry) = self.leaders.get_mut(ns) {
            entry.1 = Some(Instant::now());
        }
    }

    /// Forget the namespaces no longer served.
    fn retain(&mut self, served: &BTreeMap<Namespace, Arc<Group>>) {
        self.leaders.retain(|ns, _| served.contains_key(ns));
    }

    /// A round's observation is complete.
    fn round_done(&mut self) {
        self.started = true;
    }
}

impl Node {
    /// One round: observe, decide, trigger the transfers.
    async fn balance_round(&self, seen: &mut LeaderMemory) {
        let groups: BTreeMap<Namespace, Arc<Group>> =
            self.namespaces.all().into_iter().map(|(ns, e)| (ns, e.group())).collect();
        seen.retain(&groups);
        let observation = self.observe_leaders(&groups, seen);
        seen.round_done();
        let moves = balance::decide(&observation);
        if moves.is_empty() {
            return;
        }
        info!(
            led = observation.leaders.get(&self.id).copied().unwrap_or(0),
            moves = moves.len(),
            "leader balancing: handing namespaces to voters that lead fewer"
        );
        for Move { namespace, to } in moves {
            let Some(group) = groups.get(&namespace) else { continue };
            seen.moved(&namespace);
            if let Err(e) = group.hand_leadership_to(to).await {
                warn!(namespace = %namespace, peer = %to, error = %e, "leader balancing: transfer failed");
            }
        }
    }

    /// What this node sees of leadership over the namespaces it serves.
    fn observe_leaders(
        &self,
        groups: &BTreeMap<Namespace, Arc<Group>>,
        seen: &mut LeaderMemory,
    ) -> Observation<NodeId, Namespace> {
        let silence = Duration::from_millis(self.config.timing().election_max_ms);
        let mut leaders: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut led = Vec::new();
        for (ns, group) in groups {
            let m = group.metrics();
            for voter in m.membership_config.voter_ids() {
                leaders.entry(voter).or_default();
            }
            let cooling = seen.cooling(ns, m.current_leader);
            if let Some(leader) = m.current_leader {
                *leaders.entry(leader).or_default() += 1;
            }
            if m.state == ServerState::Leader && m.current_leader == Some(self.id) {
                let changing = membership_changing(&m) || self.namespaces.busy(ns);
                led.push(Led {
                    namespace: ns.clone(),
                    ready: ready_voters(group, self.id, silence, &self.liveness),
                    changing,
                    cooling,
                });
            }
        }
        Observation { me: self.id, closing: self.is_closing(), led, leaders }
    }
}

/// Whether the group's membership is joint or not yet applied (so not known committed).
fn membership_changing(m: &RaftMetrics<TypeConfig>) -> bool {
    let membership = &m.membership_config;
    membership.get_joint_config().len() > 1 || log_index(membership.log_id()) > log_index(&m.last_applied)
}

/// The voters a transfer of `group` may target (the rule the shutdown hand-off uses too).
fn ready_voters(group: &Group, me: NodeId, silence: Duration, liveness: &crate::liveness::Liveness) -> Vec<NodeId> {
    crate::handoff_targets::ready_voters(group, me, silence, liveness).into_iter().map(|(v, _)| v).collect()
}
