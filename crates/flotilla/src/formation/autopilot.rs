//! The leader's membership lifecycle: promote caught-up learners up to the voter target,
//! replace or remove members that stay unreachable, never below the minimum quorum.
//!
//! Runs on every node but acts only where the node leads the namespace and no membership
//! change is in progress; each tick makes at most one change, so every step is a single,
//! committed configuration before the next is considered.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use flotilla_core::types::{NodeId, TypeConfig};
use flotilla_core::Namespace;
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use tokio::time::Instant;
use tracing::{warn, Instrument};

use super::state::{Formation, FormationCounters};
use crate::group::Group;
use crate::node::Node;

/// Interval between two looks at the configuration.
const TICK: Duration = Duration::from_millis(500);
/// A learner within this many entries of the leader's log counts as caught up.
const CAUGHT_UP_ENTRIES: u64 = 64;

/// Run the autopilot of `ns` until the node or the namespace closes (the namespace's registry
/// entry aborts the returned task).
pub(crate) fn spawn(node: &Arc<Node>, ns: Namespace) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(node);
    let span = tracing::info_span!("autopilot", namespace = %ns);
    tokio::spawn(async move { run(weak, ns).await }.instrument(span))
}

async fn run(weak: Weak<Node>, ns: Namespace) {
    // When each member was first seen without a heartbeat acknowledgement: a member that
    // never answered is as dead as one that stopped.
    let mut silent_since: HashMap<NodeId, Instant> = HashMap::new();
    loop {
        {
            let Some(node) = weak.upgrade() else { return };
            if node.is_closing() {
                return;
            }
            if let (Some(group), Some(formation)) = (node.group(&ns), node.formation(&ns)) {
                node.autopilot_tick(&group, &formation, &mut silent_since).await;
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// What the leader knows about one member at a tick.
struct Health {
    caught_up: bool,
    dead: bool,
}

impl Node {
    async fn autopilot_tick(
        &self,
        group: &Arc<Group>,
        formation: &Formation,
        silent_since: &mut HashMap<NodeId, Instant>,
    ) {
        let m = group.metrics();
        // A quiesced group has no heartbeat acknowledgements by design; liveness wakes it when
        // a member goes (crate::liveness).
        if m.state != ServerState::Leader || m.membership_config != m.committed_membership_config || group.is_quiesced()
        {
            silent_since.clear();
            return;
        }
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let health = |id: &NodeId, silent: &mut HashMap<NodeId, Instant>| self.health(&m, id, silent);
        let mut report: HashMap<NodeId, Health> = HashMap::new();
        for id in voters.iter().chain(learners.iter()).filter(|id| **id != self.id) {
            report.insert(*id, health(id, silent_since));
        }
        silent_since.retain(|id, _| report.contains_key(id));

        let ready_learner = learners.iter().find(|id| report.get(id).is_some_and(|h| h.caught_up && !h.dead)).copied();
        let dead_voter = voters.iter().find(|id| report.get(id).is_some_and(|h| h.dead)).copied();
        let dead_learner = learners.iter().find(|id| report.get(id).is_some_and(|h| h.dead)).copied();

        let change = if let (Some(dead), Some(fresh)) = (dead_voter, ready_learner) {
            formation.note(format!("replacing unreachable voter {dead} with caught-up learner {fresh}"));
            let mut next = voters.clone();
            next.remove(&dead);
            next.insert(fresh);
            Some((ChangeMembers::ReplaceAllVoters(next), Some(fresh), Some(dead)))
        } else if let (Some(fresh), true) = (ready_learner, voters.len() < self.config.voter_target) {
            formation.note(format!(
                "promoting caught-up learner {fresh} ({} of {} voters)",
                voters.len() + 1,
                self.config.voter_target
            ));
            Some((ChangeMembers::AddVoterIds(BTreeSet::from([fresh])), Some(fresh), None))
        } else if let Some(dead) = dead_voter {
            if voters.len() > self.config.min_quorum {
                formation.note(format!("removing unreachable voter {dead}; no learner can replace it"));
                Some((ChangeMembers::RemoveVoters(BTreeSet::from([dead])), None, Some(dead)))
            } else {
                let mut inner = formation.lock();
                inner.reason = format!(
                    "voter {dead} is unreachable but removing it would leave fewer than {} voters",
                    self.config.min_quorum
                );
                None
            }
        } else {
            dead_learner.map(|dead| {
                formation.note(format!("removing unreachable learner {dead}"));
                (ChangeMembers::RemoveNodes(BTreeSet::from([dead])), None, Some(dead))
            })
        };
        let Some((change, promoted, removed)) = change else { return };
        // Removed nodes stay in the node list as learners after a voter removal; drop them.
        let retain = false;
        match group.raft.change_membership(change, retain).await {
            Ok(_) => {
                if promoted.is_some() {
                    FormationCounters::bump(&formation.counters.promotions);
                }
                if let Some(dead) = removed {
                    FormationCounters::bump(&formation.counters.removals);
                    silent_since.remove(&dead);
                }
            }
            Err(e) => warn!(error = %e, "membership change by the autopilot failed"),
        }
    }

    fn health(&self, m: &RaftMetrics<TypeConfig>, id: &NodeId, silent_since: &mut HashMap<NodeId, Instant>) -> Health {
        use openraft::Instant as _;
        let last_ack = m.heartbeat.as_ref().and_then(|h| h.get(id).cloned().flatten());
        let silence = match last_ack {
            Some(at) => {
                silent_since.remove(id);
                at.elapsed()
            }
            None => silent_since.entry(*id).or_insert_with(Instant::now).elapsed(),
        };
        let dead = self.config.dead_member_timeout().is_some_and(|limit| silence > limit);
        let leader_last = m.last_log_index.unwrap_or(0);
        let matched = m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index);
        let caught_up = matched.is_some_and(|i| i + CAUGHT_UP_ENTRIES >= leader_last);
        Health { caught_up, dead }
    }
}
