//! The node-level autopilot task: every [`TICK`], walk the namespaces this node leads, observe
//! each configuration, [`decide`] the one change to make and make it.
//!
//! One task and one timer per node, however many namespaces it serves (there was one per
//! namespace). A namespace is skipped while its group is quiesced (no heartbeat
//! acknowledgements by design; the liveness probe wakes it when a member goes, see
//! `liveness.rs`), while an open or close of it is under way, and while a membership change is
//! uncommitted. The rule itself is in `autopilot.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use flotilla_core::types::{NodeId, TypeConfig};
use flotilla_core::Namespace;
use futures::StreamExt;
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use tokio::time::Instant;
use tracing::{warn, Instrument};

use super::autopilot::{decide, health, Decision, MemberFacts, Observed};
use super::state::{Formation, FormationCounters};
use crate::group::Group;
use crate::node::Node;

/// Interval between two looks at the configurations.
const TICK: Duration = Duration::from_millis(500);
/// Most membership changes the task waits on at once (each waits for a commit).
const CHANGES_IN_FLIGHT: usize = 16;

/// When each member of each led namespace was first seen without a heartbeat acknowledgement:
/// a member that never answered is as dead as one that stopped. Only namespaces led and
/// awake at the last round are kept.
type SilentSince = HashMap<Namespace, HashMap<NodeId, Instant>>;

/// Run the autopilot of every namespace of `node` until the node closes.
pub(crate) fn spawn(node: &Arc<Node>) {
    let weak = Arc::downgrade(node);
    tokio::spawn(async move { run(weak).await }.instrument(tracing::info_span!("autopilot")));
}

async fn run(weak: Weak<Node>) {
    let mut silent_since = SilentSince::new();
    loop {
        {
            let Some(node) = weak.upgrade() else { return };
            if node.is_closing() {
                return;
            }
            round(&node, &mut silent_since).await;
        }
        tokio::time::sleep(TICK).await;
    }
}

/// One round over every namespace: observe and decide each (no awaits), then make the changes.
async fn round(node: &Node, silent_since: &mut SilentSince) {
    let patience = node.config.request_timeout();
    let mut changes = Vec::new();
    let mut kept = SilentSince::new();
    for (ns, entry) in node.namespaces.all() {
        let group = entry.group();
        if node.namespaces.busy(&ns) || group.is_quiesced() {
            continue;
        }
        let m = group.metrics();
        if m.state != ServerState::Leader || m.membership_config != m.committed_membership_config {
            continue;
        }
        let mut silent = silent_since.remove(&ns).unwrap_or_default();
        let observed = observe(node, &m, &mut silent);
        let decision = decide(&observed);
        if let Some(line) = decision.describe(&observed) {
            match decision {
                Decision::Blocked { .. } => entry.formation.lock().reason = line,
                _ => entry.formation.note(line),
            }
        }
        if let Some(change) = membership_change(&observed, &decision) {
            changes.push((ns.clone(), group, entry.formation.clone(), change, decision));
        }
        kept.insert(ns, silent);
    }
    *silent_since = kept;
    let done: Vec<(Namespace, Option<NodeId>)> = futures::stream::iter(changes)
        .map(|(ns, group, formation, change, decision)| async move {
            let removed = apply(&group, &formation, change, &decision, patience).await;
            (ns, removed)
        })
        .buffer_unordered(CHANGES_IN_FLIGHT)
        .collect()
        .await;
    for (ns, removed) in done {
        if let (Some(silent), Some(dead)) = (silent_since.get_mut(&ns), removed) {
            silent.remove(&dead);
        }
    }
}

/// What the leader knows of its configuration, members judged with the node's timeout.
fn observe(node: &Node, m: &RaftMetrics<TypeConfig>, silent: &mut HashMap<NodeId, Instant>) -> Observed<NodeId> {
    use openraft::Instant as _;
    let membership = m.membership_config.membership();
    let voters = membership.voter_ids().collect();
    let learners = membership.learner_ids().collect();
    let mut judged = BTreeMap::new();
    for (id, _) in membership.nodes().filter(|(id, _)| **id != node.id) {
        let last_ack = m.heartbeat.as_ref().and_then(|h| h.get(id).cloned().flatten());
        let silence = match last_ack {
            Some(at) => {
                silent.remove(id);
                at.elapsed()
            }
            None => silent.entry(*id).or_insert_with(Instant::now).elapsed(),
        };
        let matched = m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index);
        let facts = MemberFacts { silence, matched, leader_last: m.last_log_index.unwrap_or(0) };
        judged.insert(*id, health(facts, node.config.dead_member_timeout()));
    }
    silent.retain(|id, _| judged.contains_key(id));
    Observed {
        me: node.id,
        voters,
        learners,
        health: judged,
        voter_target: node.config.voter_target,
        min_quorum: node.config.min_quorum,
    }
}

/// The Raft membership change carrying out `decision`, if it changes anything.
fn membership_change(
    observed: &Observed<NodeId>,
    decision: &Decision<NodeId>,
) -> Option<ChangeMembers<NodeId, flotilla_core::MemberInfo>> {
    let one = |id: NodeId| std::collections::BTreeSet::from([id]);
    Some(match decision {
        Decision::Idle | Decision::Blocked { .. } => return None,
        Decision::Replace { dead, fresh } => {
            let mut next = observed.voters.clone();
            next.remove(dead);
            next.insert(*fresh);
            ChangeMembers::ReplaceAllVoters(next)
        }
        Decision::Promote(fresh) => ChangeMembers::AddVoterIds(one(*fresh)),
        Decision::RemoveVoter(dead) => ChangeMembers::RemoveVoters(one(*dead)),
        Decision::RemoveLearner(dead) => ChangeMembers::RemoveNodes(one(*dead)),
    })
}

/// Make the change (waiting at most `patience`) and count it; the member removed, if it was.
async fn apply(
    group: &Group,
    formation: &Formation,
    change: ChangeMembers<NodeId, flotilla_core::MemberInfo>,
    decision: &Decision<NodeId>,
    patience: Duration,
) -> Option<NodeId> {
    // Removed nodes stay in the node list as learners after a voter removal; drop them.
    let retain = false;
    // Bounded: one namespace whose change cannot commit must not hold every other one's
    // autopilot. A change that commits later is seen by the next round's observation.
    let Ok(changed) = tokio::time::timeout(patience, group.raft.change_membership(change, retain)).await else {
        warn!(namespace = %group.namespace, "membership change by the autopilot not committed in time");
        return None;
    };
    match changed {
        Ok(_) => {
            if decision.promoted().is_some() {
                FormationCounters::bump(&formation.counters.promotions);
            }
            let removed = decision.removed();
            if removed.is_some() {
                FormationCounters::bump(&formation.counters.removals);
            }
            removed
        }
        Err(e) => {
            warn!(namespace = %group.namespace, error = %e, "membership change by the autopilot failed");
            None
        }
    }
}
