//! Executing commands on the leader: the [`Executor`] runs a command this node believes it
//! leads the namespace for (writes through the group's write gate, read index, joins,
//! membership changes, leadership transfers). Getting a command to the leader is the
//! forwarding layer's job (`command.rs`); this module never sends a command anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::timed_responder::TimedResponder;
use flotilla_core::types::{LogId, NodeId, TypeConfig};
use flotilla_core::wire::{CommandRequest, CommandResponse, WireError};
use flotilla_core::Command;
use flotilla_core::{MemberInfo, Timing, Transport};
use flotilla_store::Store;
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::linearizable_read::{Linearizer, ReadLogId};
use openraft::{ChangeMembers, ReadPolicy};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::formation::rejoin::{admit_joiner, JoinDecision, JoinFacts, Place};
use crate::formation::FormationCounters;

use crate::formation::Formation;
use crate::group::{Group, GroupCounters};
use crate::namespaces::NamespaceRegistry;
use crate::quorum::Quorum;
use crate::request_trace::RequestTrace;
use crate::write_gate::WriteGate;

/// Pause before retrying a membership change that collided with another one.
const MEMBERSHIP_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Runs commands on this node as the namespace's leader. Holds what it needs: the node's
/// identity, transport (for members' addresses), store (disk admission), the namespace
/// registry (formation state) and the quorum check.
pub(crate) struct Executor {
    me: NodeId,
    transport: Arc<dyn Transport>,
    store: Arc<Store>,
    namespaces: Arc<NamespaceRegistry>,
    quorum: Quorum,
    /// The maximal election timeout (how fresh a quiesced leader's lease must be).
    election_max: Duration,
}

impl Executor {
    /// The executor of node `me`.
    pub(crate) fn new(
        me: NodeId,
        transport: Arc<dyn Transport>,
        store: Arc<Store>,
        namespaces: Arc<NamespaceRegistry>,
        timing: Timing,
    ) -> Self {
        let election_max = Duration::from_millis(timing.election_max_ms);
        Self { me, transport, store, namespaces, quorum: Quorum::new(me, timing), election_max }
    }

    fn formation(&self, group: &Group) -> Option<Arc<Formation>> {
        self.namespaces.get(&group.namespace).map(|entry| entry.formation.clone())
    }

    /// Execute `request` on this node, which believes it leads the namespace.
    pub(crate) async fn execute(
        &self,
        group: &Arc<Group>,
        from: NodeId,
        request: CommandRequest,
        deadline: Instant,
        trace: &mut RequestTrace,
    ) -> Result<CommandResponse, WireError> {
        // A quiesced leader first renews its lease (crate::quiesce): within the quorum-loss
        // probe interval (two election timeouts) plus one election timeout.
        let fresh = self.election_max;
        let patience = (fresh * 3).min(deadline.saturating_duration_since(Instant::now()));
        let waking = Instant::now();
        group.wake_leader(fresh, patience).await;
        trace.woke(waking);
        if matches!(request, CommandRequest::Write(_) | CommandRequest::ReadIndex) {
            group.quiet.mark_used();
        }
        match request {
            CommandRequest::Write(command) => self.write_local(group, command, deadline, trace).await,
            CommandRequest::ReadIndex => {
                let confirming = Instant::now();
                let read_log_id = self.confirm_leadership(group).await;
                trace.confirmed(confirming);
                let read_log_id = read_log_id?;
                trace.at_index(read_log_id.index);
                Ok(CommandResponse::ReadIndex { read_log_id })
            }
            CommandRequest::LeaseKeepAlive(id) => self.lease_local(group, id, true, deadline).await,
            CommandRequest::LeaseTimeToLive(id) => self.lease_local(group, id, false, deadline).await,
            CommandRequest::Join { info, fresh } => self.admit_joiner(group, from, info, fresh, deadline).await,
            CommandRequest::AddVoter(id, info) => self.add_voter_local(group, id, info, deadline).await,
            CommandRequest::AddLearner(id, info) => self.add_learner_local(group, id, info, deadline).await,
            CommandRequest::Remove(id) => self.remove_local(group, id, deadline).await,
            CommandRequest::TransferLeader(to) => self.transfer_leadership_local(group, to, deadline).await,
        }
    }

    /// Confirm this node still leads (a heartbeat round to a quorum, openraft's ReadIndex):
    /// the log id a linearizable read must wait for.
    async fn confirm_leadership(&self, group: &Arc<Group>) -> Result<LogId, WireError> {
        self.quorum.confirm_contact(group).await?;
        let read = group.raft.get_read_linearizer(ReadPolicy::ReadIndex);
        let linearizer = tokio::select! {
            read = read => read.map_err(read_error)?,
            lost = self.quorum.lost(group) => return Err(lost),
        };
        Ok(*linearizer.read_log_id().log_id())
    }

    /// Renew lease `id` on this leader's clock (`renew`), or tell what is left of it. The
    /// leadership is confirmed first, and the lease looked up in state that reflects every
    /// committed entry, so a lease revoked or expired is not renewed.
    async fn lease_local(
        &self,
        group: &Arc<Group>,
        id: u64,
        renew: bool,
        deadline: Instant,
    ) -> Result<CommandResponse, WireError> {
        let read_log_id = self.confirm_leadership(group).await?;
        let leader = self.me;
        let linearizer = Linearizer::<TypeConfig>::new(leader, ReadLogId::from_log_id(read_log_id), None);
        let budget = deadline.saturating_duration_since(Instant::now());
        match linearizer.try_await_ready(&group.raft, Some(budget)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(WireError::Timeout(format!("leader {leader} did not apply its commit in time"))),
            Err(fatal) => return Err(stopped_or_fatal(fatal)),
        }
        let view = self.store.view(&group.namespace).map_err(|e| WireError::Unavailable(e.to_string()))?;
        let ttl_secs = flotilla_core::kv::lease_ttl(&view, id)
            .map_err(|e| WireError::Fatal(format!("reading lease {id}: {e}")))?
            .ok_or(WireError::LeaseNotFound(id))?;
        let ttl = Duration::from_secs(ttl_secs);
        let now = Instant::now();
        let term = group.term();
        if renew {
            group.leases.keep_alive(term, id, ttl, now);
        }
        let remaining = group.leases.remaining(term, id, ttl, now);
        let remaining_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        Ok(CommandResponse::Lease { ttl_secs, remaining_ms })
    }

    /// Propose a client write, within the caller's `deadline`. The group's [`WriteGate`]
    /// refuses first with an error promising "not applied" (dissolving, disk full, quorum lost,
    /// budget spent in transit); once proposed, the write ends with its result or with an
    /// [`Outcome::Unknown`](flotilla_core::Outcome) error: the deadline passed, or this leader
    /// lost contact with a quorum.
    async fn write_local(
        &self,
        group: &Arc<Group>,
        command: Command,
        deadline: Instant,
        trace: &mut RequestTrace,
    ) -> Result<CommandResponse, WireError> {
        let formation = self.formation(group).ok_or_else(|| unknown_namespace(group))?;
        let gate = WriteGate::new(self.me, &formation, &*self.store);
        let admitting = Instant::now();
        let pass = gate.admit(self.quorum.confirm_contact(group), deadline).await;
        trace.admitted(admitting);
        let _pass = pass?;
        GroupCounters::bump(&group.counters.proposals);
        let proposed = Instant::now();
        // Our own responder, rather than `client_write`, notes when the entry committed.
        let (responder, reply) = TimedResponder::new();
        group.raft.client_write_ff(command, Some(responder)).await.map_err(|f| write_error(RaftError::Fatal(f)))?;
        let timed = tokio::select! {
            // Proposed, then the group stopped (the node is shutting down): it may have
            // committed.
            timed = reply => timed.map_err(|_| {
                WireError::OutcomeUnknown("the Raft group stopped before answering the write".into())
            })?,
            () = tokio::time::sleep_until(deadline) => {
                return Err(WireError::Timeout(format!(
                    "leader {}: the write was proposed but not committed within the caller's deadline",
                    self.me
                )));
            }
            lost = self.quorum.lost(group) => return Err(lost.after_possible_proposal()),
        };
        let committed_ago = timed.committed_at.map(|at| openraft::Instant::elapsed(&at));
        let response = timed.result.map_err(|e| write_error(RaftError::APIError(e)));
        trace.written(proposed, committed_ago, response.as_ref().ok().map(|r| r.log_id.index));
        let response = response?;
        Ok(CommandResponse::Written { log_id: response.log_id, result: response.data })
    }

    /// Add `id` as a learner, wait until it has caught up, then make it a voter. Idempotent.
    async fn add_voter_local(
        &self,
        group: &Arc<Group>,
        id: NodeId,
        info: MemberInfo,
        deadline: Instant,
    ) -> Result<CommandResponse, WireError> {
        if group.raft.voter_ids().any(|v| v == id) {
            return Ok(CommandResponse::Done { index: None });
        }
        self.add_learner_local(group, id, info, deadline).await?;
        info!(namespace = %group.namespace, peer = %id, "promoting learner to voter");
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        let index = retry_membership(deadline, || group.raft.change_membership(change.clone(), true)).await?;
        Ok(CommandResponse::Done { index })
    }

    /// Admit `from` as a learner of this cluster, as [`admit_joiner`] decides. A sender that is
    /// already a voter but reports no state lost its data: it is removed first, so it can never
    /// vote with an empty log, and comes back as a learner that the autopilot promotes once
    /// caught up.
    async fn admit_joiner(
        &self,
        group: &Arc<Group>,
        from: NodeId,
        info: MemberInfo,
        fresh: bool,
        deadline: Instant,
    ) -> Result<CommandResponse, WireError> {
        let Some(formation) = self.formation(group) else {
            return Err(unknown_namespace(group));
        };
        let m = group.metrics();
        let cluster = crate::formation::view::cluster_of(&m);
        let joined = |index| CommandResponse::Joined { leader: self.me, cluster: cluster.clone(), index };
        let place = match m.membership_config.membership().get_node(&from) {
            None => Place::Outside,
            Some(_) if m.membership_config.voter_ids().any(|v| v == from) => Place::Voter,
            Some(_) => Place::Learner,
        };
        match admit_joiner(JoinFacts { from_self: from == self.me, place, fresh }) {
            // A restarted leader that still believes it leads may find itself as the leader.
            JoinDecision::RefuseSelf => return Err(WireError::Rejected("a node cannot ask itself to admit it".into())),
            JoinDecision::AlreadyMember => return Ok(joined(None)),
            JoinDecision::RemoveThenAdd => {
                warn!(namespace = %group.namespace, peer = %from, "member rejoined without its data; removing it before re-adding it as a learner");
                FormationCounters::bump(&formation.counters.amnesia);
                formation.note(format!("{from} lost its data: removing it, then re-adding it as a learner"));
                self.remove_local(group, from, deadline).await?;
            }
            JoinDecision::AddLearner => {}
        }
        let index = self.add_learner_entry(group, from, info.addrs, false, deadline).await?;
        FormationCounters::bump(&formation.counters.joins);
        formation.note(format!("admitted {from} as a learner"));
        Ok(joined(index))
    }

    async fn add_learner_local(
        &self,
        group: &Arc<Group>,
        id: NodeId,
        info: MemberInfo,
        deadline: Instant,
    ) -> Result<CommandResponse, WireError> {
        self.transport.add_peer_addrs(id, &info.addrs);
        let already = group.metrics().membership_config.membership().get_node(&id).cloned();
        if already.is_some() {
            return Ok(CommandResponse::Done { index: None });
        }
        info!(namespace = %group.namespace, peer = %id, "adding learner");
        let index = self.add_learner_entry(group, id, info.addrs, true, deadline).await?;
        Ok(CommandResponse::Done { index })
    }

    /// Add `id` as a learner, its entry stamped with this cluster's id (every entry of a
    /// configuration carries it, whoever asked for the change). `blocking` waits until the
    /// learner has caught up.
    async fn add_learner_entry(
        &self,
        group: &Arc<Group>,
        id: NodeId,
        addrs: Vec<String>,
        blocking: bool,
        deadline: Instant,
    ) -> Result<Option<u64>, WireError> {
        let info = MemberInfo { addrs, cluster: crate::formation::view::cluster_of(&group.metrics()) };
        self.transport.add_peer_addrs(id, &info.addrs);
        retry_membership(deadline, || group.raft.add_learner(id, info.clone(), blocking)).await
    }

    async fn remove_local(
        &self,
        group: &Arc<Group>,
        id: NodeId,
        deadline: Instant,
    ) -> Result<CommandResponse, WireError> {
        let membership = group.metrics().membership_config.clone();
        if membership.membership().get_node(&id).is_none() {
            return Err(WireError::Rejected(format!("{id} is not a member")));
        }
        let is_voter = membership.voter_ids().any(|v| v == id);
        if is_voter && membership.voter_ids().count() == 1 {
            return Err(WireError::Rejected("cannot remove the last voter".into()));
        }
        info!(namespace = %group.namespace, peer = %id, voter = is_voter, "removing member");
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let index = retry_membership(deadline, || group.raft.change_membership(change.clone(), false)).await?;
        Ok(CommandResponse::Done { index })
    }

    /// Ask `to` (or the most up-to-date other voter) to take over, and wait until it has.
    pub(crate) async fn transfer_leadership_local(
        &self,
        group: &Arc<Group>,
        to: Option<NodeId>,
        deadline: Instant,
    ) -> Result<CommandResponse, WireError> {
        let metrics = group.metrics();
        if metrics.current_leader != Some(self.me) {
            return Err(WireError::NotLeader { leader: metrics.current_leader });
        }
        let target = match to {
            Some(t) if t == self.me => return Ok(CommandResponse::Done { index: None }),
            Some(t) if !group.raft.voter_ids().any(|v| v == t) => {
                return Err(WireError::Rejected(format!("{t} is not a voter")))
            }
            Some(t) => t,
            None => best_successor(group, self.me)
                .ok_or_else(|| WireError::Rejected("no other voter to hand leadership to".into()))?,
        };
        info!(namespace = %group.namespace, %target, "transferring leadership");
        group.hand_leadership_to(target).await.map_err(|e| WireError::Fatal(e.to_string()))?;
        let budget = deadline.saturating_duration_since(Instant::now());
        let moved = group
            .raft
            .wait(Some(budget))
            .metrics(|m| m.current_leader.is_some() && m.current_leader != Some(m.id), "leader moved")
            .await;
        match moved {
            Ok(_) => Ok(CommandResponse::Done { index: None }),
            Err(e) => Err(WireError::Unavailable(format!("leadership did not move: {e}"))),
        }
    }
}

/// The error of a namespace this node no longer serves.
fn unknown_namespace(group: &Group) -> WireError {
    WireError::UnknownNamespace(group.namespace.to_string())
}

/// The other voter whose log matches the leader's furthest.
fn best_successor(group: &Group, me: NodeId) -> Option<NodeId> {
    let metrics = group.metrics();
    let matched: BTreeMap<NodeId, u64> = metrics
        .replication
        .as_ref()
        .map(|r| r.iter().map(|(id, log)| (*id, log.as_ref().map(|l| l.index).unwrap_or(0))).collect())
        .unwrap_or_default();
    metrics.membership_config.voter_ids().filter(|v| *v != me).max_by_key(|v| matched.get(v).copied().unwrap_or(0))
}

/// Run a membership change, retrying while another change is in progress, until `deadline`.
async fn retry_membership<F, Fut>(deadline: Instant, mut change: F) -> Result<Option<u64>, WireError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
        Output = Result<
            openraft::raft::ClientWriteResponse<TypeConfig>,
            RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
        >,
    >,
{
    loop {
        match change().await {
            Ok(response) => return Ok(Some(response.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))
                if Instant::now() + MEMBERSHIP_RETRY_PAUSE < deadline =>
            {
                use openraft::errors::ChangeMembershipError as E;
                match e {
                    E::InProgress(_) | E::UncommittedLeaderLog(_) => tokio::time::sleep(MEMBERSHIP_RETRY_PAUSE).await,
                    other => return Err(WireError::Rejected(other.to_string())),
                }
            }
            Err(e) => return Err(write_error(e)),
        }
    }
}

/// Map a client-write failure onto the wire.
pub(crate) fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> WireError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => WireError::NotLeader { leader: f.leader_id },
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => {
            WireError::OutcomeUnknown("entry discarded by a leader change".into())
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(m)) => WireError::Unavailable(m.to_string()),
        RaftError::APIError(other) => WireError::Rejected(other.to_string()),
        RaftError::Fatal(f) => stopped_or_fatal(f),
    }
}

/// A group that stopped normally (its node shuts down or closed the namespace) refuses with
/// "shutting down" (retry on another node); any other fatal error stays fatal.
fn stopped_or_fatal(fatal: openraft::error::Fatal<TypeConfig>) -> WireError {
    match fatal {
        openraft::error::Fatal::Stopped => WireError::ShuttingDown,
        other => WireError::Fatal(other.to_string()),
    }
}

/// Map a read-index failure onto the wire.
fn read_error(e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> WireError {
    match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => WireError::NotLeader { leader: f.leader_id },
        RaftError::APIError(other) => WireError::Unavailable(other.to_string()),
        RaftError::Fatal(f) => stopped_or_fatal(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_group_refuses_as_shutting_down_and_other_fatal_errors_stay_fatal() {
        assert!(matches!(stopped_or_fatal(openraft::error::Fatal::Stopped), WireError::ShuttingDown));
        assert!(matches!(stopped_or_fatal(openraft::error::Fatal::Panicked), WireError::Fatal(_)));
        let stopped = write_error(RaftError::Fatal(openraft::error::Fatal::Stopped));
        assert_eq!(stopped.outcome(), flotilla_core::Outcome::NotApplied, "nothing was proposed");
    }
}
