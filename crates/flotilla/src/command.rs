//! The forwarding layer: runs a command on the leader, wherever the caller is.
//!
//! [`Forwarder`] is the only code that sends a command to another node; `Cluster` (the public
//! API), the inbound handler, namespace close and formation joins go through it. Its contract:
//!
//! - **Where it runs.** A request entering at any node is executed locally (by the
//!   [`Executor`]) when this node leads the namespace, and sent to the leader otherwise: the
//!   leader this node knows of, or the one a `NotLeader` answer named. A receiving node that
//!   does not lead forwards at most `hops_left` more times ([`MAX_HOPS`] in all), never back to
//!   the node it came from, which bounds loops while leadership moves. A join is never
//!   forwarded (the leader adds exactly the authenticated sender); membership and leadership
//!   commands from another node are served only for voters of the receiver's configuration
//!   (any member may remove itself).
//! - **Deadlines.** The entry node retries across leader changes (same request id, so a write
//!   is applied at most once) until the caller's deadline, each attempt bounded by two
//!   election timeouts (at least 1 s) so a silent leader cannot eat the whole deadline. The
//!   time left travels with the request as a duration (`budget_ms`); a receiver works within
//!   it, capped by its own request timeout, and never starts a fresh one.
//! - **Errors are lossless about outcome.** Every error says whether the write may have been
//!   proposed ([`Outcome`]): an attempt that may have reached a leader and got no answer
//!   (timeout, connection lost after sending) is `Unknown`. Once any attempt of a write was
//!   `Unknown`, the final answer is never one that promises "not applied"
//!   ([`ApiError::after_possible_proposal`]), whatever the last attempt met. A leader that lost
//!   its quorum is answered at once (the client should try another node), as is any error that
//!   is not retryable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::types::NodeId;
use flotilla_core::wire::{
    CommandEnvelope, CommandRequest, CommandResponse, RequestBody, WireError, WireRequest, WireResponse,
};
use flotilla_core::{ApiError, Outcome, Transport, TransportError};
use flotilla_store::Store;
use tokio::time::Instant;
use tracing::debug;

use crate::execute::Executor;
use crate::group::{Group, GroupCounters};
use crate::request_trace::{RequestTrace, TraceKind};

/// Hops a request may take beyond its entry node.
pub const MAX_HOPS: u8 = 2;

/// Pause between attempts while no leader is reachable.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The durations a [`Forwarder`] works with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForwarderTiming {
    /// This node's request timeout.
    pub(crate) request_timeout: Duration,
    /// The maximal election timeout.
    pub(crate) election_max: Duration,
    /// Requests slower than this log where their time went (`Config::slow_request_ms`).
    pub(crate) slow_request: Duration,
}

/// Sends commands to the leader of their namespace, or runs them here when this node leads.
pub(crate) struct Forwarder {
    me: NodeId,
    transport: Arc<dyn Transport>,
    /// The entry node's store: a write is refused at once while its own disk is full.
    store: Arc<Store>,
    executor: Executor,
    /// Set when the node closes: no new attempt starts.
    closing: Arc<AtomicBool>,
    /// This node's request timeout: caps the budget a forwarded request brings.
    request_timeout: Duration,
    /// The maximal election timeout (bounds one attempt).
    election_max: Duration,
    /// A request served for another node that takes longer logs where its time went.
    slow_request: Duration,
}

impl Forwarder {
    /// The forwarding layer of node `me`, running local commands with `executor`.
    pub(crate) fn new(
        me: NodeId,
        transport: Arc<dyn Transport>,
        store: Arc<Store>,
        executor: Executor,
        closing: Arc<AtomicBool>,
        timing: ForwarderTiming,
    ) -> Self {
        let ForwarderTiming { request_timeout, election_max, slow_request } = timing;
        Self { me, transport, store, executor, closing, request_timeout, election_max, slow_request }
    }

    /// Run `request` on the namespace's leader, retrying across leader changes until `deadline`.
    ///
    /// Every attempt of a write carries the same request id, so retries are applied at most
    /// once. Once an attempt may have been proposed (its error is of
    /// [`Outcome::Unknown`]), the final answer is never one that promises "not applied": it is
    /// upgraded with [`ApiError::after_possible_proposal`].
    pub(crate) async fn submit(
        &self,
        group: &Arc<Group>,
        request: CommandRequest,
        deadline: Instant,
    ) -> Result<CommandResponse, ApiError> {
        let mut trace = RequestTrace::start(TraceKind::of(&request));
        self.submit_traced(group, request, deadline, &mut trace).await
    }

    /// [`Forwarder::submit`], noting in `trace` where the time goes (the caller decides
    /// whether the request was slow enough to log it).
    pub(crate) async fn submit_traced(
        &self,
        group: &Arc<Group>,
        request: CommandRequest,
        deadline: Instant,
        trace: &mut RequestTrace,
    ) -> Result<CommandResponse, ApiError> {
        let is_write = matches!(request, CommandRequest::Write(_));
        if is_write {
            // The entry node refuses at once when its own disk is full (the leader's gate checks
            // the leader's disk again).
            crate::write_gate::disk_admits(&*self.store, self.me)?;
        }
        let mut hint: Option<NodeId> = None;
        let mut fate = Fate::new(is_write);
        loop {
            let (target, error) = match self.attempt(group, &request, hint.take(), deadline, trace).await {
                Ok(response) => return Ok(response),
                Err(failed) => failed,
            };
            fate.record(&error);
            let settle = |e: ApiError| fate.settle(e);
            match &error {
                ApiError::NotLeader { leader } => hint = leader.filter(|l| Some(*l) != target),
                // The leader cannot confirm it leads and will not for a while: answer at once,
                // so the client tries another node, rather than ask it again until the deadline.
                ApiError::LostQuorum { .. } => return Err(settle(error)),
                e if !e.is_retryable() => return Err(settle(error)),
                _ => {}
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(settle(match error {
                    ApiError::NotLeader { .. } => ApiError::NoLeader("leader kept changing until the deadline".into()),
                    other => other,
                }));
            }
            if hint.is_none() {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// One attempt of [`Forwarder::submit`]: run `request` locally or on the leader (`hint` first).
    /// Returns the attempt's error with the node it was sent to.
    async fn attempt(
        &self,
        group: &Arc<Group>,
        request: &CommandRequest,
        hint: Option<NodeId>,
        deadline: Instant,
        trace: &mut RequestTrace,
    ) -> Result<CommandResponse, (Option<NodeId>, ApiError)> {
        if self.closing.load(Ordering::Acquire) {
            return Err((None, ApiError::ShuttingDown));
        }
        trace.attempt();
        let target = hint.or_else(|| group.leader());
        let result = match target {
            Some(leader) if leader == self.me => {
                self.executor.execute(group, self.me, request.clone(), deadline, trace).await
            }
            Some(leader) => {
                GroupCounters::bump(&group.counters.forwards);
                let sent = Instant::now();
                let result =
                    self.send(group, leader, request.clone(), MAX_HOPS - 1, self.attempt_budget(deadline)).await;
                trace.forwarded(sent);
                result
            }
            None => Err(ApiError::NoLeader("no leader elected yet".into())),
        };
        result.map_err(|e| (target, e))
    }

    /// Time one forwarding attempt may take: a leader that went silent must not eat the whole
    /// deadline, since a new one is usually elected within two election timeouts.
    fn attempt_budget(&self, deadline: Instant) -> Duration {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let per_attempt = (self.election_max * 2).max(Duration::from_secs(1));
        remaining.min(per_attempt)
    }

    /// Send one command to `peer`, which may work on it for at most `timeout` (the budget
    /// travels in the envelope), and map every failure to an [`ApiError`]. A request that may
    /// have reached `peer` and got no answer fails with an [`Outcome::Unknown`] error.
    pub(crate) async fn send(
        &self,
        group: &Group,
        peer: NodeId,
        request: CommandRequest,
        hops_left: u8,
        timeout: Duration,
    ) -> Result<CommandResponse, ApiError> {
        let budget_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let is_write = matches!(request, CommandRequest::Write(_));
        let wire = WireRequest {
            namespace: group.namespace.clone(),
            body: RequestBody::Command(CommandEnvelope { hops_left, budget_ms, request }),
        };
        match self.transport.call(peer, wire, timeout).await {
            Ok(WireResponse::Command(response)) => Ok(response),
            Ok(WireResponse::Error(e)) => Err(e),
            Ok(other) => Err(ApiError::Unavailable(format!("unexpected reply {other:?}"))),
            Err(TransportError::Timeout(d)) => Err(ApiError::Timeout(format!("no reply from {peer} within {d:?}"))),
            // A write may have left before the connection failed.
            Err(e @ TransportError::Unreachable(..)) if is_write => Err(ApiError::OutcomeUnknown(e.to_string())),
            // Refused locally before anything was sent.
            Err(e) => Err(ApiError::Unavailable(e.to_string())),
        }
    }

    /// Serve a command that arrived from `from`: execute it as leader, or forward it once more.
    /// The caller's remaining budget bounds the work (capped by this node's request timeout).
    pub(crate) async fn serve(
        &self,
        group: &Arc<Group>,
        from: NodeId,
        envelope: CommandEnvelope,
    ) -> Result<CommandResponse, WireError> {
        let budget = Duration::from_millis(envelope.budget_ms).min(self.request_timeout);
        let deadline = Instant::now() + budget;
        // A member may always take itself out (closing the namespace on that node).
        let leaving = matches!(envelope.request, CommandRequest::Remove(id) if id == from);
        if is_membership_change(&envelope.request) && !is_voter(group, from) && !leaving {
            return Err(WireError::Rejected(format!(
                "{from} is not a voter of this cluster: only voters may change its membership or leadership \
                 (a node asks for itself with a join; an operator asks a voter's HTTP API)"
            )));
        }
        match group.leader() {
            Some(leader) if leader == self.me => {
                let mut trace = RequestTrace::start(TraceKind::of(&envelope.request));
                trace.attempt();
                let result = self.executor.execute(group, from, envelope.request, deadline, &mut trace).await;
                trace.finish(group.namespace.as_str(), Some(from), self.slow_request);
                result
            }
            // A join adds its authenticated sender, so it must reach the leader directly: a
            // forwarded join would carry the forwarder's identity.
            Some(leader) if matches!(envelope.request, CommandRequest::Join { .. }) => {
                Err(WireError::NotLeader { leader: Some(leader) })
            }
            Some(leader) if envelope.hops_left > 0 && leader != from => {
                debug!(%leader, "forwarding a command once more");
                GroupCounters::bump(&group.counters.forwards);
                let remaining = deadline.saturating_duration_since(Instant::now());
                self.send(group, leader, envelope.request, envelope.hops_left - 1, remaining).await
            }
            Some(leader) => Err(WireError::NotLeader { leader: Some(leader) }),
            None if envelope.hops_left == 0 => Err(WireError::HopLimit),
            None => Err(WireError::NoLeader("no leader known on the receiving node".into())),
        }
    }
}

/// What the attempts of one request may have left behind: once an attempt of a write may have
/// been proposed, no later answer may promise that nothing was applied.
#[derive(Debug, Clone, Copy)]
struct Fate {
    is_write: bool,
    maybe_proposed: bool,
}

impl Fate {
    fn new(is_write: bool) -> Self {
        Self { is_write, maybe_proposed: false }
    }

    /// Note the error an attempt ended with.
    fn record(&mut self, error: &ApiError) {
        self.maybe_proposed |= self.is_write && error.outcome() == Outcome::Unknown;
    }

    /// The error to answer, given every attempt so far.
    fn settle(&self, error: ApiError) -> ApiError {
        if self.maybe_proposed {
            error.after_possible_proposal()
        } else {
            error
        }
    }
}

/// Requests that change who is in the cluster or who leads it.
fn is_membership_change(request: &CommandRequest) -> bool {
    matches!(
        request,
        CommandRequest::AddVoter(..)
            | CommandRequest::AddLearner(..)
            | CommandRequest::Remove(_)
            | CommandRequest::TransferLeader(_)
    )
}

/// Whether `peer` is a voter of the group's current configuration. Learners are excluded: a
/// learner is admitted by a join, which any key holder (or, without a key, anyone) may send, so
/// it must not be able to remove voters or move leadership.
fn is_voter(group: &Group, peer: NodeId) -> bool {
    group.metrics().membership_config.voter_ids().any(|v| v == peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definite_last_error_after_a_possible_proposal_answers_unknown() {
        // The case: an attempt timed out at a leader, a later one hit a full disk.
        let mut fate = Fate::new(true);
        fate.record(&ApiError::NoLeader("none yet".into()));
        assert_eq!(fate.settle(ApiError::StorageFull("disk".into())).code(), "storage_full");
        fate.record(&ApiError::Timeout("no reply from the leader".into()));
        let last = ApiError::StorageFull("disk".into());
        fate.record(&last);
        let answer = fate.settle(last);
        assert_eq!(answer.outcome(), Outcome::Unknown);
        assert_eq!(answer.code(), "outcome_unknown");
        // Unknown errors stay what they are.
        assert_eq!(fate.settle(ApiError::Timeout("t".into())).code(), "timeout");
    }

    #[test]
    fn reads_keep_their_errors() {
        let mut fate = Fate::new(false);
        fate.record(&ApiError::Timeout("t".into()));
        assert_eq!(fate.settle(ApiError::NoLeader("n".into())).code(), "no_leader");
    }
}
