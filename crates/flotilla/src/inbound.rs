//! Dispatches requests arriving from other nodes to the right group.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use flotilla_core::types::NodeId;
use flotilla_core::wire::{RaftEnvelope, RaftRequest, RaftResponse, RequestBody, WireError, WireRequest, WireResponse};
use flotilla_core::InboundHandler;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::Snapshot;
use tracing::{debug, warn};

use crate::formation::admission::{Incoming, Refusal};
use crate::formation::view::cluster_of;
use crate::group::Group;
use crate::node::Node;

/// The node's [`InboundHandler`]. Holds the node weakly so the transport does not keep a
/// closed node alive.
pub struct Inbound {
    node: Weak<Node>,
}

impl Inbound {
    /// A handler serving `node`.
    pub fn new(node: &Arc<Node>) -> Self {
        Self { node: Arc::downgrade(node) }
    }
}

#[async_trait::async_trait]
impl InboundHandler for Inbound {
    async fn handle(&self, from: NodeId, request: WireRequest) -> WireResponse {
        let Some(node) = self.node.upgrade().filter(|n| !n.is_stopped()) else {
            return WireResponse::Error(WireError::Fatal("node is shut down".into()));
        };
        if matches!(request.body, RequestBody::Goodbye) {
            crate::liveness::node_left(&node, from);
            return WireResponse::Pong;
        }
        crate::liveness::node_heard(&node, from);
        if matches!(request.body, RequestBody::Ping) {
            return WireResponse::Pong;
        }
        if matches!(request.body, RequestBody::Hello(_) | RequestBody::Sealed(_)) {
            // A sealing node's handler never sees these: it opens them first (crate::sealing).
            tracing::debug!(peer = %from, "refusing sealed traffic: this node has no cluster key");
            return WireResponse::Error(WireError::Unauthenticated("this node has no cluster key".into()));
        }
        if let RequestBody::Formation(formation) = request.body {
            return match node.serve_formation(from, &request.namespace, formation) {
                Ok(reply) => WireResponse::Formation(reply),
                Err(e) => WireResponse::Error(e),
            };
        }
        let Some(group) = node.group(&request.namespace) else {
            return WireResponse::Error(WireError::UnknownNamespace(request.namespace.to_string()));
        };
        match request.body {
            RequestBody::Formation(_)
            | RequestBody::Hello(_)
            | RequestBody::Sealed(_)
            | RequestBody::Ping
            | RequestBody::Goodbye => WireResponse::Error(WireError::Malformed("unexpected request".into())),
            RequestBody::Raft(rpc) => {
                let Some(_call) = RaftCall::enter(&node) else {
                    return WireResponse::Error(WireError::Fatal("node is shutting down".into()));
                };
                match serve_raft(&node, &group, from, rpc).await {
                    Ok(reply) => WireResponse::Raft(reply),
                    Err(e) => WireResponse::Error(e),
                }
            }
            RequestBody::Command(envelope) => match node.forwarder.serve(&group, from, envelope).await {
                Ok(reply) => WireResponse::Command(reply),
                Err(e) => WireResponse::Error(e),
            },
        }
    }
}

/// One Raft RPC from a peer being served, counted so that a node stopping its groups first
/// lets the calls already inside a group finish (a group stopped under a call makes openraft
/// report the call as an error) and refuses new ones.
pub(crate) struct RaftCall<'a>(&'a Node);

impl<'a> RaftCall<'a> {
    /// Count a call on `node`, unless its groups are stopping. The count is raised before the
    /// check (both sequentially consistent, as is the stop's flag), so a stop that waits for
    /// the count to reach zero after setting its flag sees every call that got in.
    pub(crate) fn enter(node: &'a Node) -> Option<Self> {
        node.inbound_raft_calls.fetch_add(1, Ordering::SeqCst);
        let call = RaftCall(node);
        (!node.is_stopped()).then_some(call)
    }

    /// Wait until no call is being served on `node`, at most `within`.
    pub(crate) async fn wait_none(node: &Node, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while node.inbound_raft_calls.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for RaftCall<'_> {
    fn drop(&mut self) {
        self.0.inbound_raft_calls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether this replica takes Raft traffic from `from` (see [`crate::Formation::admits`]).
/// A replica without Raft state that takes it first records its cluster with its identity, so
/// the state it is about to get can never be lost into a fresh-looking node (see
/// `Formation::remember_before_state`); if that record cannot be written, the message is refused.
async fn admits(node: &Node, group: &Group, message: &Incoming<'_, NodeId>) -> Result<(), WireError> {
    let Some(formation) = node.formation(&group.namespace) else {
        return Err(refused(message.from, Refusal::NotAdmitted));
    };
    let has_state = {
        let m = group.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let in_config = membership.get_node(&message.from).is_some();
        let config_empty = membership.nodes().next().is_none();
        let has_state = m.last_log_index.is_some();
        formation.admits(message, has_state, in_config, config_empty, &cluster_of(&m)).map_err(|refusal| {
            debug!(namespace = %group.namespace, peer = %message.from, %refusal, "Raft message refused");
            refused(message.from, refusal)
        })?;
        has_state
    };
    formation.remember_before_state(has_state, message.cluster).await.map_err(|e| {
        warn!(namespace = %group.namespace, error = %e, "cannot record the membership in node.key: Raft traffic refused");
        WireError::Unavailable(format!("cannot record the membership before taking Raft state: {e}"))
    })
}

fn refused(from: NodeId, refusal: Refusal) -> WireError {
    WireError::Rejected(format!("Raft traffic from {from} refused: {refusal}"))
}

async fn serve_raft(node: &Node, group: &Group, from: NodeId, raft: RaftEnvelope) -> Result<RaftResponse, WireError> {
    let RaftEnvelope { cluster, rpc } = raft;
    let vote = matches!(rpc, RaftRequest::Vote(_) | RaftRequest::PreVote(_));
    admits(node, group, &Incoming { from, vote, cluster: &cluster }).await?;
    if matches!(rpc, RaftRequest::PreVote(_)) && crate::liveness::refuses_pre_vote(node, group, from) {
        debug!(namespace = %group.namespace, peer = %from, "pre-vote refused: the quiet leader is alive");
        return Ok(RaftResponse::Vote(openraft::raft::VoteResponse::new(group.metrics().vote, None, false)));
    }
    // Anything but a heartbeat wakes a quiesced group, once handled (see crate::quiesce).
    let wakes = !matches!(&rpc, RaftRequest::Append(a) if a.entries.is_empty());
    let reply = serve_admitted_raft(node, group, from, rpc).await;
    if wakes {
        group.wake("raft message");
    }
    reply
}

async fn serve_admitted_raft(
    node: &Node,
    group: &Group,
    from: NodeId,
    rpc: RaftRequest,
) -> Result<RaftResponse, WireError> {
    let fatal = |e: openraft::errors::RaftError<_>| WireError::Fatal(e.to_string());
    match rpc {
        RaftRequest::Append(req) => group.raft.append_entries(req).await.map(RaftResponse::Append).map_err(fatal),
        RaftRequest::Vote(req) => group.raft.vote(req).await.map(RaftResponse::Vote).map_err(fatal),
        RaftRequest::PreVote(req) => group.raft.pre_vote(req).await.map(RaftResponse::Vote).map_err(fatal),
        RaftRequest::TransferLeader(req) => group
            .raft
            .handle_transfer_leader(req)
            .await
            .map(RaftResponse::TransferLeader)
            .map_err(|e| WireError::Fatal(e.to_string())),
        RaftRequest::SnapshotChunk(chunk) => {
            let vote = chunk.vote;
            let meta = chunk.meta.clone();
            let assembled = node.snapshots.add(&node.store, from, &group.namespace, chunk).await.map_err(|e| {
                warn!(namespace = %group.namespace, peer = %from, error = %e, "snapshot chunk refused");
                WireError::Rejected(e.to_string())
            })?;
            let Some(data) = assembled else {
                return Ok(RaftResponse::SnapshotChunk(None));
            };
            let snapshot = Snapshot { meta, snapshot: data };
            let reply =
                group.raft.install_full_snapshot(vote, snapshot).await.map_err(|e| WireError::Fatal(e.to_string()))?;
            Ok(RaftResponse::SnapshotChunk(Some(reply)))
        }
    }
}
