//! Node-level failure detection for quiesced groups.
//!
//! A quiesced group has no heartbeats and no election timer, so nothing inside it notices a
//! dead peer. Instead, one probe per peer (not per group) runs while any quiesced group has
//! that peer as a member: every heartbeat interval, a peer not heard from within it gets a
//! [`RequestBody::Ping`]. Any request from a peer counts as hearing from it too. A peer silent
//! for the minimum election timeout is declared down, and every quiesced group it led elects
//! a new leader: one designated survivor per group stands at once, the others wake only if it
//! has not won within a grace period (`crate::failover`). Groups where it only followed stay
//! quiet: they keep a quorum, and waking them all (every namespace has the dead node as a
//! member) had each survivor heartbeat the dead node in every namespace it leads, which at a
//! few hundred namespaces saturated the survivors until heartbeats between them timed out and
//! their leaders refused writes for lost quorum.
//! A leader may also quiesce with a member declared down (`crate::quiesce`). A peer heard
//! again after being down wakes the groups this node leads with it, without counting that as
//! activity: each quiesces again once the returning member holds its whole log.
//!
//! The probe also stands in for the leader lease of a quiesced group. openraft refuses a
//! pre-vote while the leader's lease holds, but a quiet leader renews no lease: every quiesced
//! group would grant the pre-vote, and then the vote, of any member whose election timer runs,
//! typically a restarted node whose groups tick before the leaders' heartbeats reach them. A
//! restart would then cost an election in every namespace whose log it still matches. So a
//! quiesced group refuses a pre-vote while its leader is this node or is not declared down
//! ([`refuses_pre_vote`]); the leader, which hears the restarted node too, wakes and its
//! heartbeats make the candidate a follower. When the leader has died, the designated
//! candidate may be refused by a survivor that has not noticed yet, but only until that one
//! notices too (both last heard from the dead leader at nearly the same moment); the
//! candidate's election timer, running again, retries.
//! A narrower rule (refuse only if the leader was heard from within half an election
//! timeout) still let a restart win 140 of 300 elections on a loaded machine, where pings
//! come late.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_core::types::NodeId;
use flotilla_core::wire::{RequestBody, WireRequest, WireResponse};
use flotilla_core::Namespace;
use tokio::time::Instant;
use tracing::info;

use crate::group::Group;
use crate::node::Node;

/// What the node knows of each peer's liveness.
#[derive(Debug, Default)]
pub struct Liveness {
    state: Mutex<Peers>,
}

#[derive(Debug, Default)]
struct Peers {
    /// When each watched peer was last heard from. Only members of this node's groups are
    /// kept (see [`Liveness::retain`]), so the map is bounded by the membership.
    heard: HashMap<NodeId, Instant>,
    /// Peers declared down and not heard from since, with when each was declared.
    down: HashMap<NodeId, Instant>,
    /// Peers with a probe in flight.
    probing: HashSet<NodeId>,
}

impl Liveness {
    fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `peer`, watched because it shares a quiesced group, was heard from within
    /// `within` (what a quiesced leader knows instead of heartbeat acknowledgements).
    pub fn heard_within(&self, peer: &NodeId, within: Duration) -> bool {
        let p = self.peers();
        !p.down.contains_key(peer) && p.heard.get(peer).is_some_and(|at| at.elapsed() <= within)
    }

    /// Whether `peer` is declared down: silent for an election timeout and not heard since.
    pub fn is_down(&self, peer: &NodeId) -> bool {
        self.peers().down.contains_key(peer)
    }

    /// How long ago `peer` was declared down, if it is.
    pub fn down_for(&self, peer: &NodeId) -> Option<Duration> {
        self.peers().down.get(peer).map(|at| at.elapsed())
    }

    /// How long ago `peer` was last heard from, if it is watched (it shares a quiesced group).
    pub fn heard_ago(&self, peer: &NodeId) -> Option<Duration> {
        self.peers().heard.get(peer).map(|at| at.elapsed())
    }

    /// Record that `peer` was heard from now. Returns whether it had been declared down.
    pub fn heard(&self, peer: NodeId) -> bool {
        let mut p = self.peers();
        if let Some(at) = p.heard.get_mut(&peer) {
            *at = Instant::now();
        }
        p.down.remove(&peer).is_some()
    }

    /// Declare `peer` down now, if it is watched: it said goodbye.
    fn left(&self, peer: NodeId) {
        let mut p = self.peers();
        if p.heard.contains_key(&peer) {
            p.down.entry(peer).or_insert_with(Instant::now);
        }
    }

    /// Watch exactly `watched`: new peers start as heard now, others are forgotten.
    fn retain(&self, watched: &HashSet<NodeId>) {
        let mut p = self.peers();
        p.heard.retain(|id, _| watched.contains(id));
        p.down.retain(|id, _| watched.contains(id));
        p.probing.retain(|id| watched.contains(id));
        for id in watched {
            p.heard.entry(*id).or_insert_with(Instant::now);
        }
    }

    /// Peers to probe now (silent for `probe_after`, no probe in flight; marked in flight) and
    /// peers that have just gone down (silent for `down_after`).
    fn due(&self, probe_after: Duration, down_after: Duration) -> (Vec<NodeId>, Vec<NodeId>) {
        let mut p = self.peers();
        let Peers { heard, down, probing } = &mut *p;
        let mut probe = Vec::new();
        let mut gone = Vec::new();
        for (id, at) in heard.iter() {
            let silent = at.elapsed();
            if silent >= down_after && !down.contains_key(id) {
                down.insert(*id, Instant::now());
                gone.push(*id);
            }
            if silent >= probe_after && probing.insert(*id) {
                probe.push(*id);
            }
        }
        (probe, gone)
    }

    fn probe_done(&self, peer: NodeId) {
        self.peers().probing.remove(&peer);
    }
}

/// Run the node's liveness loop until the node closes (only when quiescing is on).
pub(crate) fn spawn(node: &Arc<Node>) {
    if node.config.quiesce_after().is_none() {
        return;
    }
    let every = Duration::from_millis(node.config.timing().heartbeat_ms.max(10));
    crate::node_loop::spawn(node, tracing::info_span!("liveness"), every, |node| async move { round(&node) });
}

/// One round: watch the members of quiesced groups, probe the silent ones, and fail over the
/// quiesced groups whose leader is declared down.
fn round(node: &Arc<Node>) {
    let timing = node.config.timing();
    let groups: Vec<Arc<Group>> = node.all_groups().into_iter().filter(|g| g.is_quiesced()).collect();
    let watched: HashSet<NodeId> = groups.iter().flat_map(|g| members(g)).filter(|id| *id != node.id).collect();
    node.liveness.retain(&watched);
    if watched.is_empty() {
        return;
    }
    let (probe, gone) =
        node.liveness.due(Duration::from_millis(timing.heartbeat_ms), Duration::from_millis(timing.election_min_ms));
    for peer in &gone {
        info!(%peer, "peer silent for an election timeout: electing new leaders where it led");
    }
    fail_over(node, &groups, crate::failover::grace(Duration::from_millis(timing.election_max_ms)));
    let ttl = Duration::from_millis(timing.election_min_ms / 2).max(Duration::from_millis(10));
    let Some(ns) = groups.first().map(|g| g.namespace.clone()) else { return };
    for peer in probe {
        let node = node.clone();
        let ns = ns.clone();
        tokio::spawn(async move { probe_peer(&node, peer, ns, ttl).await });
    }
}

/// Among the quiesced `groups`, those whose leader is declared down elect a new one: the
/// designated survivor stands at once, the others wake after `grace` if it has not won by
/// then (`crate::failover`). Only followers of the dead leader: woken otherwise, a follower's
/// election timer would find the lease long expired and depose a live, quiet leader; and a
/// leader whose follower died keeps its quorum.
fn fail_over(node: &Node, groups: &[Arc<Group>], grace: Duration) {
    use crate::failover::Step;
    for group in groups {
        let Some(leader) = group.leader().filter(|l| *l != node.id) else { continue };
        let Some(down_for) = node.liveness.down_for(&leader) else { continue };
        let voters = voters(group);
        let down = |p: &NodeId| node.liveness.is_down(p);
        match crate::failover::step(node.id, &group.namespace, &voters, leader, &down, down_for, grace) {
            Step::Wait => {}
            Step::Wake => group.wake("leader down"),
            Step::Stand => {
                group.wake("leader down: designated candidate");
                let raft = group.raft.clone();
                // A pre-vote round first: if the probe was wrong and the leader lives, it and
                // the followers that still hear it refuse, and nothing changes. If refused
                // because another survivor has not noticed yet, the election timer, running
                // again, retries.
                tokio::spawn(async move {
                    let _ = raft.trigger().elect(true).await;
                });
            }
        }
    }
}

/// Send one ping to `peer`; a pong counts as hearing from it.
async fn probe_peer(node: &Arc<Node>, peer: NodeId, namespace: Namespace, ttl: Duration) {
    let request = WireRequest { namespace, body: RequestBody::Ping };
    let answered = matches!(node.transport.call(peer, request, ttl).await, Ok(WireResponse::Pong));
    node.liveness.probe_done(peer);
    if answered {
        node_heard(node, peer);
    }
}

/// `peer` is shutting down (it said goodbye): declare it down now, so the quiesced groups it
/// led elect on the next round instead of after an election timeout of silence.
pub(crate) fn node_left(node: &Node, peer: NodeId) {
    info!(%peer, "peer is shutting down: electing new leaders where it led");
    node.liveness.left(peer);
}

/// Tell every peer of this node's groups that it is shutting down (after its groups have
/// stopped), at once and best effort: a peer that does not hear it notices the silence
/// after an election timeout, as after a crash.
pub(crate) async fn say_goodbye(node: &Node, peers: HashSet<NodeId>) {
    let ttl = Duration::from_millis(node.config.timing().election_min_ms / 2).max(Duration::from_millis(10));
    let Some(namespace) = node.all_groups().first().map(|g| g.namespace.clone()) else { return };
    let calls = peers.into_iter().map(|peer| {
        let request = WireRequest { namespace: namespace.clone(), body: RequestBody::Goodbye };
        node.transport.call(peer, request, ttl)
    });
    futures::future::join_all(calls).await;
}

/// The other members of this node's groups.
pub(crate) fn peers_of(node: &Node) -> HashSet<NodeId> {
    node.all_groups().iter().flat_map(|g| members(g)).filter(|id| *id != node.id).collect()
}

/// Record that `peer` was heard from; if it had been down, wake the quiesced groups this node
/// leads with it, to bring it up to date (each quiesces again once it is, without this
/// counting as activity).
pub(crate) fn node_heard(node: &Node, peer: NodeId) {
    if node.liveness.heard(peer) {
        info!(%peer, "peer answers again: waking the quiesced groups this node leads with it");
        for group in node.all_groups() {
            if group.is_quiesced() && group.is_leader() && members(&group).any(|id| id == peer) {
                group.resume("peer back");
            }
        }
    }
}

/// Whether `group` refuses a pre-vote from `candidate` without consulting openraft: it is
/// leader: this node leads it, or it is quiesced and its leader, another node than the
/// candidate, is not declared down by the liveness probe. A refused pre-vote changes nothing
/// and does not wake the group (see the module documentation).
///
/// The leader refuses awake too: a leader woken from quiet has no fresh quorum
/// acknowledgement, so openraft would grant, and the returning member whose request woke it
/// (`node_heard` runs first) would depose it. Refusing at the leader never blocks an election
/// that a quorum of the other voters supports.
pub(crate) fn refuses_pre_vote(node: &Node, group: &Group, candidate: NodeId) -> bool {
    if group.is_leader() {
        return candidate != node.id;
    }
    if !group.is_quiesced() {
        return false;
    }
    match group.leader() {
        Some(leader) if leader == candidate || leader == node.id => false,
        Some(leader) => !node.liveness.is_down(&leader),
        None => false,
    }
}

/// Voters of the group's current configuration.
fn voters(group: &Group) -> Vec<NodeId> {
    use openraft::async_runtime::watch::WatchReceiver;
    group.raft.metrics().borrow_watched().membership_config.membership().voter_ids().collect()
}

/// Voters and learners of the group's current configuration.
fn members(group: &Group) -> impl Iterator<Item = NodeId> {
    use openraft::async_runtime::watch::WatchReceiver;
    let m = group.raft.metrics();
    let ids: Vec<NodeId> = m.borrow_watched().membership_config.membership().nodes().map(|(id, _)| *id).collect();
    ids.into_iter()
}
