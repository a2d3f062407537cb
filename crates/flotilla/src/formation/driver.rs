//! The formation loop of one namespace: say hello to peers, then decide.
//!
//! A fresh node runs the founding state machine ([`super::founding`]) every tick and carries
//! out its steps (persist, promise, ask, found, join). A member checks that its cluster still
//! counts it (and rejoins if not) and watches for other clusters of the namespace.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use flotilla_core::formation::{
    Ballot, FormationRequest, FormationResponse, FreshPhase, PeerPhase, PeerView, PromiseState,
};
use flotilla_core::types::NodeId;
use flotilla_core::wire::{CommandRequest, CommandResponse, RequestBody, WireRequest, WireResponse};
use flotilla_core::{ApiError, DiscoverySource, MemberInfo, Namespace, Sighting};
use rand::seq::SliceRandom;
use tracing::{warn, Instrument};

use super::founding::{Observation, Step};
use super::record::FoundingRecord;
use super::rejoin::{dropped_from, OwnConfig, PeerConfig};
use super::state::{Formation, FormationPhase};
use super::view::{cluster_id, cluster_of};
use crate::group::Group;
use crate::node::Node;

/// Tick of a node without state.
const FRESH_TICK: Duration = Duration::from_millis(200);
/// Tick of a member.
const MEMBER_TICK: Duration = Duration::from_millis(1000);
/// Fresh namespaces a node ticks at the full [`FRESH_TICK`] pace; with more, each ticks
/// proportionally less often (see [`TickLoad`]).
const FRESH_AT_FULL_PACE: usize = 50;
/// Member namespaces a node ticks at the full [`MEMBER_TICK`] pace.
const MEMBERS_AT_FULL_PACE: usize = 100;
/// Least time between two ticks of one namespace, even when nudged (see [`Formation::nudge`]).
const NUDGE_GAP: Duration = Duration::from_millis(100);
/// Deadline of one formation call.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);
/// Most peers greeted per tick.
const MAX_HELLOS: usize = 64;
/// Peers outside its cluster a member greets per tick, to notice other clusters.
const MEMBER_PROBES: usize = 2;
/// Least time between two join attempts.
const JOIN_PAUSE: Duration = Duration::from_millis(1000);
/// How long an admitted node waits for the leader's log before asking again.
const ADMITTED_PATIENCE: Duration = Duration::from_secs(15);

/// Run the formation loop of `ns` until the node or the namespace closes (the namespace's
/// registry entry aborts the returned task).
pub(crate) fn spawn(node: &Arc<Node>, ns: Namespace) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(node);
    let span = tracing::info_span!("formation", namespace = %ns);
    tokio::spawn(async move { run(weak, ns).await }.instrument(span))
}

async fn run(weak: Weak<Node>, ns: Namespace) {
    let mut counted = Counted::default();
    loop {
        let (pause, formation) = {
            let Some(node) = weak.upgrade() else { return };
            if node.is_closing() {
                return;
            }
            // Boxed: the tick's future (hello round, founding steps, joins) is several KiB and
            // only lives while a tick runs; inline, every namespace's task would keep that much
            // resident between ticks (see `idle_loop_footprint`).
            let (phase, pause) = Box::pin(node.formation_tick(&ns)).await;
            counted.set(&node, phase);
            (node.tick_load.paced(phase, pause), node.formation(&ns))
        };
        // The paced pause, cut short by a nudge (news a founding step can act on), but never
        // shorter than NUDGE_GAP.
        let nudged = async {
            tokio::time::sleep(NUDGE_GAP.min(pause)).await;
            match &formation {
                Some(f) => f.nudged().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = nudged => {}
        }
    }
}

/// Whether a namespace's formation loop ticks as a fresh node or as a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TickPhase {
    /// No Raft state: founding or joining, [`FRESH_TICK`].
    Fresh,
    /// A member: [`MEMBER_TICK`].
    Member,
}

/// How many namespaces of the node tick in each phase. Every tick greets peers (one formation
/// call per peer and namespace), so a node forming a thousand namespaces at the per-namespace
/// pace would send and serve tens of thousands of calls a second and starve the elections it
/// waits for. Past [`FRESH_AT_FULL_PACE`] fresh (or [`MEMBERS_AT_FULL_PACE`] member)
/// namespaces, each ticks proportionally less often, so the node's formation traffic stays
/// bounded whatever the number of namespaces; with fewer, nothing changes.
#[derive(Debug, Default)]
pub(crate) struct TickLoad {
    fresh: AtomicUsize,
    member: AtomicUsize,
}

impl TickLoad {
    fn counter(&self, phase: TickPhase) -> &AtomicUsize {
        match phase {
            TickPhase::Fresh => &self.fresh,
            TickPhase::Member => &self.member,
        }
    }

    /// The pause before a namespace in `phase` ticks again: `base`, stretched by the number of
    /// namespaces in that phase beyond the full-pace count, with up to 25% jitter so the
    /// namespaces' ticks spread out instead of coming in bursts.
    fn paced(&self, phase: TickPhase, base: Duration) -> Duration {
        let full = match phase {
            TickPhase::Fresh => FRESH_AT_FULL_PACE,
            TickPhase::Member => MEMBERS_AT_FULL_PACE,
        };
        let n = self.counter(phase).load(Ordering::Relaxed);
        let stretched = if n > full { base.mul_f64(n as f64 / full as f64) } else { base };
        stretched.mul_f64(1.0 + rand::random::<f64>() * 0.25)
    }
}

/// The phase one formation loop is counted in; uncounted when the loop ends (or is aborted).
#[derive(Default)]
struct Counted {
    at: Option<(Weak<Node>, TickPhase)>,
}

impl Counted {
    fn set(&mut self, node: &Arc<Node>, phase: TickPhase) {
        if self.at.as_ref().is_some_and(|(_, p)| *p == phase) {
            return;
        }
        let load = &node.tick_load;
        if let Some((_, old)) = self.at.take() {
            load.counter(old).fetch_sub(1, Ordering::Relaxed);
        }
        load.counter(phase).fetch_add(1, Ordering::Relaxed);
        self.at = Some((Arc::downgrade(node), phase));
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some((node, phase)) = self.at.take() {
            if let Some(node) = node.upgrade() {
                node.tick_load.counter(phase).fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Node {
    async fn formation_tick(&self, ns: &Namespace) -> (TickPhase, Duration) {
        let (Some(group), Some(formation)) = (self.group(ns), self.formation(ns)) else {
            return (TickPhase::Member, MEMBER_TICK);
        };
        let member = group.has_state();
        self.hello_round(ns, &group, &formation, member).await;
        if member {
            self.member_tick(&group, &formation).await;
            (TickPhase::Member, MEMBER_TICK)
        } else {
            let before = formation.lock().founder.phase();
            self.fresh_tick(&group, &formation).await;
            let now = formation.lock().founder.phase();
            if matches!(now, FreshPhase::Coordinating { .. }) && !matches!(before, FreshPhase::Coordinating { .. }) {
                // Started coordinating: tell the peers in a hello soon, not at the next paced
                // tick (the hello of this tick went out before the decision).
                formation.nudge();
            }
            (TickPhase::Fresh, FRESH_TICK)
        }
    }

    /// Greet peers: learn their phase, register with them (rendezvous) and hear of the peers
    /// they know (peer exchange).
    async fn hello_round(&self, ns: &Namespace, group: &Group, formation: &Formation, member: bool) {
        let mut targets: Vec<NodeId> = self.peers.all().into_iter().map(|(id, _)| id).collect();
        targets.shuffle(&mut rand::thread_rng());
        if member {
            let m = group.metrics();
            let membership = m.membership_config.membership();
            targets.retain(|id| membership.get_node(id).is_none());
            targets.truncate(MEMBER_PROBES);
            if let Some(leader) = m.current_leader.filter(|l| *l != self.id) {
                targets.push(leader);
            } else if let Some(other) = membership.nodes().map(|(id, _)| *id).find(|id| *id != self.id) {
                targets.push(other);
            }
        } else {
            targets.truncate(MAX_HELLOS);
        }
        let hello = self.local_view(ns, None);
        let calls = targets.into_iter().map(|peer| {
            let request = FormationRequest::Hello(hello.clone());
            async move { (peer, self.formation_call(ns, peer, request).await) }
        });
        for (peer, reply) in futures::future::join_all(calls).await {
            if let Ok(FormationResponse::View(view)) = reply {
                let view = view.bounded();
                self.learn_from_view(&view);
                formation.record_view(peer, view, true);
            }
        }
    }

    fn learn_from_view(&self, view: &PeerView) {
        let lists = [(&view.members, DiscoverySource::Rendezvous), (&view.known, DiscoverySource::PeerExchange)];
        for (list, source) in lists {
            for p in list.iter() {
                let addrs: Vec<String> =
                    p.addrs.iter().take(flotilla_core::formation::MAX_PEER_ADDRS).cloned().collect();
                if self.peers.saw(&Sighting { peer: p.peer, addrs: addrs.clone(), source }) || !addrs.is_empty() {
                    self.transport.add_peer_addrs(p.peer, &addrs);
                }
            }
        }
    }

    /// One formation request to `peer`.
    pub(crate) async fn formation_call(
        &self,
        ns: &Namespace,
        peer: NodeId,
        request: FormationRequest,
    ) -> Result<FormationResponse, String> {
        let wire = WireRequest { namespace: ns.clone(), body: RequestBody::Formation(request) };
        match self.transport.call(peer, wire, CALL_TIMEOUT).await {
            Ok(WireResponse::Formation(reply)) => Ok(reply),
            Ok(WireResponse::Error(e)) => Err(e.to_string()),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn fresh_tick(&self, group: &Arc<Group>, formation: &Formation) {
        let views = formation.fresh_views();
        let window = self.config.discovery_window();
        let elapsed = formation.fresh_for();
        let obs = Observation {
            fresh_peers: views
                .iter()
                .filter_map(|(id, v)| match &v.phase {
                    PeerPhase::Fresh { phase, .. } => Some((*id, phase.clone())),
                    _ => None,
                })
                .collect(),
            cluster_contact: best_contact(&views),
            window_elapsed: elapsed >= window,
            grace_elapsed: elapsed >= window * 3,
        };
        let step = formation.lock().founder.tick(&obs, rand::random());
        match step {
            Step::Wait(_) if formation.lock().founder.founding().is_some() => {
                // Founded (decision on disk) but no Raft state: the node stopped between the
                // decision and `initialize`, or `initialize` failed. Founding again with the
                // same ballot is the same founding.
                let founding = formation.lock().founder.founding();
                if let Some((ballot, voters)) = founding {
                    self.initialize(group, formation, ballot, &voters).await;
                }
            }
            Step::Wait(_) if formation.rejoin_only().is_some() => {
                let reason = formation.rejoin_only().unwrap_or_default();
                formation.set_phase(FormationPhase::Joining, reason);
            }
            Step::Wait(reason) => {
                let (founding, admitted) = {
                    let inner = formation.lock();
                    (inner.founder.phase(), inner.admitted)
                };
                let phase = match founding {
                    FreshPhase::Coordinating { .. } => FormationPhase::Coordinating,
                    FreshPhase::Bound(_) => FormationPhase::Bound,
                    FreshPhase::Founded(_) => FormationPhase::Founding,
                    FreshPhase::Free | FreshPhase::Rejoining if admitted => FormationPhase::Joining,
                    FreshPhase::Free | FreshPhase::Rejoining => FormationPhase::Discovering,
                };
                if phase != FormationPhase::Joining {
                    formation.set_phase(phase, reason);
                }
            }
            Step::Promise(ballot) => self.promise(formation, ballot).await,
            Step::AskStatus(ballot) => self.ask_status(group, formation, ballot, &views).await,
            Step::Found { ballot, voters, learners } => self.found(group, formation, ballot, voters, learners).await,
            Step::Join(_) if self.recently_admitted(formation) => {
                formation.set_phase(FormationPhase::Joining, "admitted as a learner; waiting for the leader's log");
            }
            Step::Join(contact) => self.join_cluster(group, formation, contact, &views, true).await,
        }
    }

    /// Admitted by a join within the last [`ADMITTED_PATIENCE`]: the leader is sending its log
    /// (maybe a large snapshot); asking again would only restart that.
    fn recently_admitted(&self, formation: &Formation) -> bool {
        let inner = formation.lock();
        inner.admitted_by.is_some() && inner.last_join.is_some_and(|at| at.elapsed() < ADMITTED_PATIENCE)
    }

    async fn promise(&self, formation: &Formation, ballot: Ballot) {
        let ns = &formation.namespace;
        if let Err(e) = formation.save(&FoundingRecord::Bound(ballot)) {
            formation.lock().founder.on_promise_refused(ballot);
            formation.set_phase(FormationPhase::Discovering, format!("cannot persist a promise: {e}"));
            return;
        }
        let c = ballot.coordinator;
        match self.formation_call(ns, c, FormationRequest::Promise(ballot)).await {
            Ok(FormationResponse::Promised(true)) => {
                formation.set_phase(FormationPhase::Bound, format!("promised to coordinator {c}"));
            }
            Ok(_) => {
                formation.lock().founder.on_promise_refused(ballot);
                self.save_free(formation);
            }
            Err(e) => formation
                .set_phase(FormationPhase::Bound, format!("promise to {c} unanswered ({e}); bound until it answers")),
        }
    }

    fn save_free(&self, formation: &Formation) {
        if let Err(e) = formation.save(&FoundingRecord::Free) {
            warn!(error = %e, "cannot clear the founding record");
        }
    }

    async fn ask_status(&self, group: &Arc<Group>, formation: &Formation, ballot: Ballot, views: &Views) {
        let c = ballot.coordinator;
        match self.formation_call(&formation.namespace, c, FormationRequest::PromiseStatus(ballot)).await {
            Ok(FormationResponse::Status(PromiseState::Pending)) => {
                formation
                    .set_phase(FormationPhase::Bound, format!("bound to coordinator {c}, which is still gathering"));
            }
            Ok(FormationResponse::Status(PromiseState::Founded { voter: true })) => {
                if let Err(e) = formation.remember_admission(&cluster_id(c, ballot.round)).await {
                    // Not admitted until the identity remembers it: asked again next tick.
                    formation.set_phase(FormationPhase::Bound, format!("cannot record the membership: {e}"));
                    return;
                }
                formation.admit(Some(c));
                formation.set_phase(FormationPhase::Founding, format!("founding voter of {c}'s cluster"));
            }
            Ok(FormationResponse::Status(PromiseState::Founded { voter: false })) => {
                self.join_cluster(group, formation, c, views, true).await;
            }
            Ok(FormationResponse::Status(PromiseState::Released)) => {
                formation.lock().founder.on_status(ballot, PromiseState::Released);
                formation.unadmit();
                self.save_free(formation);
                formation.set_phase(FormationPhase::Discovering, format!("coordinator {c} released its ballot"));
            }
            Ok(other) => warn!(?other, "unexpected promise status reply"),
            Err(e) => formation.set_phase(
                FormationPhase::Bound,
                format!("bound to coordinator {c}, unreachable ({e}); waiting for it to answer"),
            ),
        }
    }

    async fn found(
        &self,
        group: &Arc<Group>,
        formation: &Formation,
        ballot: Ballot,
        voters: std::collections::BTreeSet<NodeId>,
        learners: std::collections::BTreeSet<NodeId>,
    ) {
        let all = voters.union(&learners).copied().collect();
        let record = FoundingRecord::Founded { ballot, voters: voters.clone(), all };
        // The identity remembers the cluster first: if the store is lost from here on, the
        // node rejoins it instead of founding again.
        let saved = match formation.remember_admission(&cluster_id(self.id, ballot.round)).await {
            Ok(()) => formation.save(&record),
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            formation.lock().founder.revert_found();
            formation.set_phase(FormationPhase::Discovering, format!("cannot persist the founding decision: {e}"));
            return;
        }
        formation.admit(None);
        let names: Vec<String> = voters.iter().map(|v| v.to_string()).collect();
        formation.note(format!(
            "founding cluster {} with voters {names:?} ({} learners to join)",
            cluster_id(self.id, ballot.round),
            learners.len()
        ));
        self.initialize(group, formation, ballot, &voters).await;
    }

    /// Initialize Raft with the founding voters of `ballot`.
    async fn initialize(
        &self,
        group: &Arc<Group>,
        formation: &Formation,
        ballot: Ballot,
        voters: &std::collections::BTreeSet<NodeId>,
    ) {
        let cluster = cluster_id(self.id, ballot.round);
        let members: BTreeMap<NodeId, MemberInfo> = voters
            .iter()
            .map(|id| {
                let addrs = if *id == self.id {
                    self.transport.local_addrs()
                } else {
                    self.peers.get(id).map(|e| e.addrs).unwrap_or_default()
                };
                (*id, MemberInfo { addrs, cluster: cluster.clone() })
            })
            .collect();
        if let Err(e) = group.raft.initialize(members).await {
            warn!(error = %e, "initialize refused");
        }
        // A fresh group's ticker is off (`Group::start`): the founder needs it to elect.
        group.wake("founded");
        formation.set_phase(FormationPhase::Founding, format!("founded {cluster}; electing a leader"));
    }

    /// Ask the leader of the cluster `contact` belongs to to admit this node as a learner.
    pub(crate) async fn join_cluster(
        &self,
        group: &Group,
        formation: &Formation,
        contact: NodeId,
        views: &Views,
        fresh: bool,
    ) {
        {
            let mut inner = formation.lock();
            if inner.last_join.is_some_and(|at| at.elapsed() < JOIN_PAUSE) {
                return;
            }
            inner.last_join = Some(tokio::time::Instant::now());
        }
        let leader = views
            .iter()
            .find_map(|(id, v)| match &v.phase {
                PeerPhase::Member(m) if *id == contact => m.leader,
                _ => None,
            })
            .unwrap_or(contact);
        formation.set_phase(FormationPhase::Joining, format!("asking leader {leader} to admit this node"));
        let mut target = leader;
        for _ in 0..3 {
            let request = CommandRequest::Join { info: self.self_info(), fresh };
            match self.forwarder.send(group, target, request, 0, self.config.request_timeout()).await {
                Ok(CommandResponse::Joined { leader, cluster, .. }) => {
                    if let Err(e) = formation.remember_admission(&cluster).await {
                        // Take no traffic before the identity remembers it: join again later.
                        formation.set_phase(FormationPhase::Joining, format!("cannot record the membership: {e}"));
                        return;
                    }
                    formation.note(format!("admitted as a learner of cluster {cluster} by leader {leader}"));
                    formation.admit_joined(leader, cluster);
                    return;
                }
                Ok(other) => {
                    warn!(?other, "unexpected reply to a join");
                    return;
                }
                Err(ApiError::NotLeader { leader: Some(next) }) if next != target => target = next,
                Err(e) => {
                    formation.set_phase(FormationPhase::Joining, format!("join through {target} failed: {e}"));
                    return;
                }
            }
        }
    }

    async fn member_tick(&self, group: &Arc<Group>, formation: &Formation) {
        let m = group.metrics();
        let mine = cluster_of(&m);
        formation.record_member(&mine).await;
        let views = formation.fresh_views();
        let replies = formation.reply_views();
        let my_config_index = m.membership_config.log_id().as_ref().map(|l| l.index).unwrap_or(0);
        let in_own_config = m.membership_config.membership().get_node(&self.id).is_some();
        let leader = m.current_leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
        formation.set_phase(
            FormationPhase::Member,
            format!("member of cluster {}; leader {leader}", if mine.is_empty() { "(unnamed)" } else { &mine }),
        );
        // Dropped from the configuration (removed while away, or replaced as dead): ask in
        // again. Only a peer of the same cluster with a configuration at least as new as ours
        // can say so.
        let own = OwnConfig { cluster: &mine, config_index: my_config_index, listed: in_own_config };
        let dropped = dropped_from(
            &own,
            replies.iter().filter_map(|(id, v)| match &v.phase {
                PeerPhase::Member(pm) => Some(PeerConfig {
                    peer: *id,
                    cluster: &pm.cluster,
                    has_leader: pm.leader.is_some(),
                    includes_me: pm.includes_you,
                    config_index: pm.config_index,
                }),
                _ => None,
            }),
        );
        if let Some(contact) = dropped {
            formation.note(format!("no longer in the configuration of cluster {mine} (per {contact}); rejoining"));
            self.join_cluster(group, formation, contact, &views, false).await;
        }
        self.watch_for_splits(group, formation, &mine, &views).await;
    }
}

/// Views as returned by [`Formation::fresh_views`].
pub(crate) type Views = Vec<(NodeId, PeerView)>;

/// The member through which a fresh node should join: one whose cluster has a leader,
/// preferring clusters that hold data, then larger ones, then the lowest id.
fn best_contact(views: &Views) -> Option<NodeId> {
    views
        .iter()
        .filter_map(|(id, v)| match &v.phase {
            PeerPhase::Member(m) if m.leader.is_some() => Some((m.holds_data, m.voters, std::cmp::Reverse(*id), *id)),
            _ => None,
        })
        .max()
        .map(|t| t.3)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Most bytes the future of one namespace's formation loop may occupy (8.5 KiB in a release
    /// build before its tick was boxed; the bound leaves room for debug builds' larger
    /// futures). Every namespace keeps one such task for as long as it is open, so this is
    /// per-namespace memory (issue 12, point 4).
    const LOOP_FUTURE_BOUND: usize = 4096;

    #[test]
    fn idle_loop_footprint() {
        // Never polled: only its size is of interest.
        let future = run(Weak::new(), Namespace::new("ns").unwrap());
        let bytes = std::mem::size_of_val(&future);
        assert!(bytes <= LOOP_FUTURE_BOUND, "formation loop future is {bytes} bytes");
    }

    #[test]
    fn ticks_stretch_with_the_number_of_namespaces_beyond_full_pace() {
        let load = TickLoad::default();
        let within = |d: Duration, lo: Duration| d >= lo && d <= lo.mul_f64(1.25);
        load.fresh.store(FRESH_AT_FULL_PACE, Ordering::Relaxed);
        assert!(within(load.paced(TickPhase::Fresh, FRESH_TICK), FRESH_TICK));
        load.fresh.store(FRESH_AT_FULL_PACE * 20, Ordering::Relaxed);
        assert!(within(load.paced(TickPhase::Fresh, FRESH_TICK), FRESH_TICK * 20));
        // Members are counted apart: a thousand forming namespaces do not slow the members.
        assert!(within(load.paced(TickPhase::Member, MEMBER_TICK), MEMBER_TICK));
        load.member.store(MEMBERS_AT_FULL_PACE * 10, Ordering::Relaxed);
        assert!(within(load.paced(TickPhase::Member, MEMBER_TICK), MEMBER_TICK * 10));
    }
}
