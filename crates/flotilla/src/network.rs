//! openraft's network traits implemented over the [`Transport`] seam.
//!
//! One [`GroupNetwork`] per (namespace, target peer). Appends are cut to the byte budget of a
//! [`WireBudget`] (openraft bounds them only by entry count) and snapshots into chunks of that
//! budget, so entries and snapshots of any size cross the wire in bounded frames; each message
//! that carries data gets a deadline that grows with its size. A snapshot is read from its file
//! one chunk at a time as it is sent, so sending holds one chunk in memory.

use std::future::Future;
use std::io::Read;
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
use openraft::{ErrorSubject, ErrorVerb, RaftNetworkV2, StorageError};

use flotilla_store::{SnapshotData, SnapshotReader};

use crate::wire_budget::WireBudget;

/// Creates per-peer network clients for one namespace's Raft group.
pub struct GroupNetworkFactory {
    transport: Arc<dyn Transport>,
    namespace: Namespace,
    budget: WireBudget,
}

impl GroupNetworkFactory {
    /// A factory sending through `transport`, cutting appends and snapshots to `budget`.
    pub fn new(transport: Arc<dyn Transport>, namespace: Namespace, budget: WireBudget) -> Self {
        Self { transport, namespace, budget }
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
            budget: self.budget,
        }
    }
}

/// Sends one namespace's Raft RPCs to one peer.
pub struct GroupNetwork {
    transport: Arc<dyn Transport>,
    namespace: Namespace,
    target: NodeId,
    cluster: ClusterId,
    budget: WireBudget,
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
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let sizes: Vec<usize> = rpc.entries.iter().map(entry_len).collect();
        let keep = self.budget.prefix_len(sizes.iter().copied());
        // Only a prefix travels; the target's success then covers exactly that prefix, which
        // openraft accepts as a partial success and continues after it.
        let cut = (keep < rpc.entries.len()).then(|| {
            rpc.entries.truncate(keep);
            rpc.entries.last().map(|e| e.log_id)
        });
        let ttl = self.budget.ttl(option.hard_ttl(), sizes[..keep].iter().sum());
        match self.send(RaftRequest::Append(rpc), ttl).await? {
            RaftResponse::Append(AppendEntriesResponse::Success) if cut.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(cut.flatten()))
            }
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
    /// Send the snapshot chunk by chunk, reading each chunk from its file just before it is
    /// sent: memory is one chunk, whatever the snapshot's size.
    async fn send_snapshot_chunks(
        &self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let total = snapshot.snapshot.len();
        let chunk = self.budget.bytes as u64;
        let mut reader = snapshot.snapshot.reader();
        let mut offset = 0u64;
        loop {
            let len = chunk.min(total - offset) as usize;
            let (back, data) = read_chunk(reader, len).await.map_err(|e| {
                tracing::error!(namespace = %self.namespace, peer = %self.target, error = %e,
                    "cannot read the snapshot to send");
                let subject = ErrorSubject::Snapshot(Some(snapshot.meta.signature()));
                StreamingError::StorageError(StorageError::from_io_error(subject, ErrorVerb::Read, e))
            })?;
            reader = back;
            let end = offset + len as u64;
            let done = end == total;
            let piece = SnapshotChunk { vote, meta: snapshot.meta.clone(), offset, total, data, done };
            let ttl = self.budget.ttl(option.hard_ttl(), len);
            let reply = self.send(RaftRequest::SnapshotChunk(piece), ttl).await.map_err(to_streaming)?;
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

/// The next `len` bytes of `reader`, read on a blocking thread; hands the reader back.
async fn read_chunk(mut reader: SnapshotReader, len: usize) -> std::io::Result<(SnapshotReader, Vec<u8>)> {
    tokio::task::spawn_blocking(move || {
        let mut data = vec![0u8; len];
        reader.read_exact(&mut data)?;
        Ok((reader, data))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The encoded size of `entry`, as it travels in an append.
fn entry_len(entry: &flotilla_core::types::Entry) -> usize {
    // Encoding to a counter cannot fail for a type that encodes on the wire; should it, the
    // entry counts as a full budget and travels alone.
    flotilla_core::encoded_len(entry).map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn to_streaming(e: RPCError<TypeConfig>) -> StreamingError<TypeConfig> {
    match e {
        RPCError::Timeout(t) => StreamingError::Timeout(t),
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Network(n) => StreamingError::Network(n),
        RPCError::RemoteError(r) => StreamingError::Network(NetworkError::from_string(r)),
    }
}
