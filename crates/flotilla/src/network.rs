//! openraft's network traits implemented over the [`Transport`] seam.
//!
//! One [`GroupNetwork`] per (namespace, target peer). Snapshots are cut into chunks no larger
//! than the frame budget, so a snapshot of any size crosses the wire in bounded frames.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::formation::ClusterId;
use flotilla_core::types::{NodeId, TypeConfig, Vote};
use flotilla_core::wire::{
    RaftEnvelope, RaftRequest, RaftResponse, RequestBody, SnapshotChunk, WireRequest, WireResponse,
};
use flotilla_core::{MemberInfo, Namespace, Transport, TransportError};
use openraft::alias::SnapshotOf;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::RaftNetworkV2;

use flotilla_store::SnapshotData;

/// Creates per-peer network clients for one namespace's Raft group.
pub struct GroupNetworkFactory {
    transport: Arc<dyn Transport>,
    namespace: Namespace,
    chunk_bytes: usize,
}

impl GroupNetworkFactory {
    /// A factory sending through `transport`, cutting snapshots into `chunk_bytes` pieces.
    pub fn new(transport: Arc<dyn Transport>, namespace: Namespace, chunk_bytes: usize) -> Self {
        Self { transport, namespace, chunk_bytes }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &MemberInfo) -> Self::Network {
        // Membership records where each member listens; hand that to the transport so a node
        // restarted before discovery ran can still reach its peers.
        if !node.addrs.is_empty() {
            self.transport.add_peer_addrs(target, &node.addrs);
        }
        GroupNetwork {
            transport: self.transport.clone(),
            namespace: self.namespace.clone(),
            target,
            // Every entry of a configuration carries its cluster's id, so the target's entry in
            // this node's configuration names this node's cluster. A group never changes
            // cluster (a dissolved namespace gets a new group), so it is read once per client.
            cluster: node.cluster.clone(),
            chunk_bytes: self.chunk_bytes,
        }
    }
}

/// Sends one namespace's Raft RPCs to one peer.
pub struct GroupNetwork {
    transport: Arc<dyn Transport>,
    namespace: Namespace,
    target: NodeId,
    cluster: ClusterId,
    chunk_bytes: usize,
}

impl GroupNetwork {
    async fn send(&self, rpc: RaftRequest, ttl: Duration) -> Result<RaftResponse, RPCError<TypeConfig>> {
        let body = RequestBody::Raft(RaftEnvelope { cluster: self.cluster.clone(), rpc });
        let request = WireRequest { namespace: self.namespace.clone(), body };
        match self.transport.call(self.target, request, ttl).await {
            Ok(WireResponse::Raft(reply)) => Ok(reply),
            Ok(WireResponse::Error(e)) => Err(RPCError::Unreachable(Unreachable::from_string(e))),
            Ok(other) => Err(RPCError::Network(NetworkError::from_string(format!("unexpected reply {other:?}")))),
            Err(TransportError::Timeout(d)) => {
                Err(RPCError::Network(NetworkError::from_string(format!("timed out after {d:?}"))))
            }
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }
}

fn unexpected(reply: RaftResponse) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!("mismatched reply {reply:?}")))
}

impl RaftNetworkV2<TypeConfig> for GroupNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.send(RaftRequest::Append(rpc), option.hard_ttl()).await? {
            RaftResponse::Append(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.send(RaftRequest::Vote(rpc), option.hard_ttl()).await? {
            RaftResponse::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.send(RaftRequest::PreVote(rpc), option.hard_ttl()).await? {
            RaftResponse::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.send(RaftRequest::TransferLeader(req), option.hard_ttl()).await? {
            RaftResponse::TransferLeader(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let send = self.send_snapshot_chunks(vote, snapshot, option);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result,
        }
    }
}

impl GroupNetwork {
    async fn send_snapshot_chunks(
        &self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot;
        let total = data.len() as u64;
        let chunk = self.chunk_bytes.max(1);
        let mut offset = 0usize;
        loop {
            let end = (offset + chunk).min(data.len());
            let done = end == data.len();
            let piece = SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                offset: offset as u64,
                total,
                data: data[offset..end].to_vec(),
                done,
            };
            let reply = self.send(RaftRequest::SnapshotChunk(piece), option.hard_ttl()).await.map_err(to_streaming)?;
            match reply {
                RaftResponse::SnapshotChunk(Some(resp)) if done => return Ok(resp),
                RaftResponse::SnapshotChunk(None) if !done => {}
                other => {
                    return Err(StreamingError::Network(NetworkError::from_string(format!(
                        "unexpected snapshot reply at offset {offset}: {other:?}"
                    ))))
                }
            }
            offset = end;
        }
    }
}

fn to_streaming(e: RPCError<TypeConfig>) -> StreamingError<TypeConfig> {
    match e {
        RPCError::Timeout(t) => StreamingError::Timeout(t),
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Network(n) => StreamingError::Network(n),
        RPCError::RemoteError(r) => StreamingError::Network(NetworkError::from_string(r)),
    }
}
