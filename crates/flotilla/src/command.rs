//! The forwarding layer: runs a command on the leader, wherever the caller is.
//!
//! A request entering at any node is executed locally when this node leads the namespace and
//! forwarded otherwise. The entry node retries across leader changes until the caller's
//! deadline; writes carry a [`RequestId`](flotilla_core::RequestId) so a retry after an
//! unknown outcome is applied once. A receiving node forwards at most `hops_left` more times,
//! which bounds loops while leadership moves.

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::types::NodeId;
use flotilla_core::wire::{
    CommandEnvelope, CommandRequest, CommandResponse, RequestBody, WireError, WireRequest, WireResponse,
};
use flotilla_core::ApiError;
use tokio::time::Instant;
use tracing::debug;

use crate::group::{Group, GroupCounters};
use crate::node::Node;

/// Hops a request may take beyond its entry node.
pub const MAX_HOPS: u8 = 2;

/// Pause between attempts while no leader is reachable.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl Node {
    /// Run `request` on the namespace's leader, retrying across leader changes until `deadline`.
    pub(crate) async fn submit(
        &self,
        group: &Arc<Group>,
        request: CommandRequest,
        deadline: Instant,
    ) -> Result<CommandResponse, ApiError> {
        if matches!(request, CommandRequest::Write(_)) {
            self.admit_write().map_err(ApiError::StorageFull)?;
        }
        let mut hint: Option<NodeId> = None;
        let mut last_error;
        loop {
            if self.is_closing() {
                return Err(ApiError::ShuttingDown);
            }
            let target = hint.take().or_else(|| group.leader());
            let attempt = match target {
                Some(leader) if leader == self.id => {
                    self.execute_local(group, self.id, request.clone(), deadline).await.map_err(ApiError::from)
                }
                Some(leader) => {
                    GroupCounters::bump(&group.counters.forwards);
                    self.send_command(group, leader, request.clone(), MAX_HOPS - 1, self.attempt_budget(deadline)).await
                }
                None => Err(ApiError::NoLeader("no leader elected yet".into())),
            };
            match attempt {
                Ok(response) => return Ok(response),
                Err(ApiError::NotLeader { leader }) => {
                    hint = leader.filter(|l| Some(*l) != target);
                    last_error = ApiError::NotLeader { leader };
                }
                Err(e) if e.is_retryable() => last_error = e,
                Err(e) => return Err(e),
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(match last_error {
                    ApiError::NotLeader { .. } => ApiError::NoLeader("leader kept changing until the deadline".into()),
                    other => other,
                });
            }
            if hint.is_none() {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// Time one forwarding attempt may take: a leader that went silent must not eat the whole
    /// deadline, since a new one is usually elected within two election timeouts.
    fn attempt_budget(&self, deadline: Instant) -> Duration {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let per_attempt = Duration::from_millis((self.config.timing().election_max_ms * 2).max(1_000));
        remaining.min(per_attempt)
    }

    /// Send one command to `peer` and map every failure to an [`ApiError`].
    pub(crate) async fn send_command(
        &self,
        group: &Group,
        peer: NodeId,
        request: CommandRequest,
        hops_left: u8,
        timeout: Duration,
    ) -> Result<CommandResponse, ApiError> {
        let wire = WireRequest {
            namespace: group.namespace.clone(),
            body: RequestBody::Command(CommandEnvelope { hops_left, request }),
        };
        match self.transport.call(peer, wire, timeout).await {
            Ok(WireResponse::Command(response)) => Ok(response),
            Ok(WireResponse::Error(e)) => Err(e.into()),
            Ok(other) => Err(ApiError::Unavailable(format!("unexpected reply {other:?}"))),
            Err(flotilla_core::TransportError::Timeout(d)) => {
                Err(ApiError::Timeout(format!("no reply from {peer} within {d:?}")))
            }
            Err(e) => Err(ApiError::Unavailable(e.to_string())),
        }
    }

    /// Serve a command that arrived from `from`: execute it as leader, or forward it once more.
    pub(crate) async fn serve_command(
        &self,
        group: &Arc<Group>,
        from: NodeId,
        envelope: CommandEnvelope,
    ) -> Result<CommandResponse, WireError> {
        let deadline = Instant::now() + self.config.request_timeout();
        if is_membership_change(&envelope.request) && !is_voter(group, from) {
            return Err(WireError::Rejected(format!(
                "{from} is not a voter of this cluster: only voters may change its membership or leadership \
                 (a node asks for itself with a join; an operator asks a voter's HTTP API)"
            )));
        }
        match group.leader() {
            Some(leader) if leader == self.id => self.execute_local(group, from, envelope.request, deadline).await,
            // A join adds its authenticated sender, so it must reach the leader directly: a
            // forwarded join would carry the forwarder's identity.
            Some(leader) if matches!(envelope.request, CommandRequest::Join { .. }) => {
                Err(WireError::NotLeader { leader: Some(leader) })
            }
            Some(leader) if envelope.hops_left > 0 && leader != from => {
                debug!(%leader, "forwarding a command once more");
                GroupCounters::bump(&group.counters.forwards);
                let request = envelope.request;
                self.send_command(group, leader, request, envelope.hops_left - 1, self.config.request_timeout())
                    .await
                    .map_err(api_to_wire)
            }
            Some(leader) => Err(WireError::NotLeader { leader: Some(leader) }),
            None if envelope.hops_left == 0 => Err(WireError::HopLimit),
            None => Err(WireError::NoLeader),
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

/// Map an [`ApiError`] back onto the wire for a forwarded request.
pub(crate) fn api_to_wire(e: ApiError) -> WireError {
    match e {
        ApiError::NotLeader { leader } => WireError::NotLeader { leader },
        ApiError::NoLeader(_) => WireError::NoLeader,
        ApiError::Timeout(m) | ApiError::Unavailable(m) => WireError::Unavailable(m),
        ApiError::UnknownNamespace(_) => WireError::UnknownNamespace,
        ApiError::ShuttingDown => WireError::Unavailable("node shutting down".into()),
        ApiError::Fatal(m) => WireError::Fatal(m),
        ApiError::StorageFull(m) => WireError::StorageFull(m),
        other => WireError::Rejected(other.to_string()),
    }
}
