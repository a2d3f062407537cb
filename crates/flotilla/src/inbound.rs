//! Dispatches requests arriving from other nodes to the right group.

use std::sync::{Arc, Weak};

use flotilla_core::types::NodeId;
use flotilla_core::wire::{RaftRequest, RaftResponse, RequestBody, WireError, WireRequest, WireResponse};
use flotilla_core::InboundHandler;
use openraft::Snapshot;
use tracing::warn;

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
        let Some(node) = self.node.upgrade() else {
            return WireResponse::Error(WireError::Fatal("node is shut down".into()));
        };
        let Some(group) = node.group(&request.namespace).cloned() else {
            return WireResponse::Error(WireError::UnknownNamespace);
        };
        match request.body {
            RequestBody::Raft(rpc) => match serve_raft(&node, &group, from, rpc).await {
                Ok(reply) => WireResponse::Raft(reply),
                Err(e) => WireResponse::Error(e),
            },
            RequestBody::Command(envelope) => match node.serve_command(&group, from, envelope).await {
                Ok(reply) => WireResponse::Command(reply),
                Err(e) => WireResponse::Error(e),
            },
        }
    }
}

async fn serve_raft(node: &Node, group: &Group, from: NodeId, rpc: RaftRequest) -> Result<RaftResponse, WireError> {
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
            let assembled = node.snapshots.add(from, &group.namespace, chunk).await.map_err(|e| {
                warn!(namespace = %group.namespace, peer = %from, error = %e, "snapshot chunk refused");
                WireError::Rejected(e)
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
