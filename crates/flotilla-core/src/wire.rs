//! Messages exchanged between nodes.
//!
//! Every frame on the wire carries a [`WireRequest`]: the namespace it is for and either a Raft
//! RPC (the consensus plane) or a command (the forwarding and membership plane). Replies are
//! [`WireResponse`]s. The encoding is [`crate::encode`]; the transport adds framing, request
//! ids and size bounds.

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResult};
use crate::namespace::Namespace;
use crate::types::{LogId, MemberInfo, NodeId, SnapshotMeta, TypeConfig, Vote};

/// Version of the message encoding; carried in the protocol id.
pub const WIRE_VERSION: u32 = 2;

/// A request from one node to another, scoped to one namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireRequest {
    /// The Raft group the request is for.
    pub namespace: Namespace,
    /// What is asked.
    pub body: RequestBody,
}

/// The two planes a request can belong to.
// A request is built once and moved into a frame; boxing the larger variant would add an
// allocation per message for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RequestBody {
    /// Consensus traffic between group members, with the sender's cluster.
    Raft(RaftEnvelope),
    /// Forwarded client requests and membership requests.
    Command(CommandEnvelope),
    /// Discovery and founding; served even for namespaces the receiver does not serve.
    Formation(crate::formation::FormationRequest),
    /// Opens a sealed session: proves the sender holds a cluster key (see [`Hello`]).
    Hello(Hello),
    /// Any other body, sealed under a session's key (see [`Sealed`]).
    Sealed(Sealed),
    /// Node-level liveness probe, one per peer pair and tick while namespaces are quiesced;
    /// the namespace of its request is ignored. Answered with [`WireResponse::Pong`].
    Ping,
    /// The sender is shutting down: its groups have stopped and it will not answer again.
    /// The receiver declares it down at once instead of after an election timeout of
    /// silence; the namespace of its request is ignored. Answered with [`WireResponse::Pong`].
    Goodbye,
}

impl RequestBody {
    /// The transport lane this body travels on.
    pub fn lane(&self) -> Lane {
        match self {
            RequestBody::Raft(RaftEnvelope { rpc: RaftRequest::SnapshotChunk(_), .. }) => Lane::Snapshot,
            RequestBody::Raft(_) | RequestBody::Ping | RequestBody::Goodbye => Lane::Raft,
            RequestBody::Command(_) | RequestBody::Formation(_) | RequestBody::Hello(_) => Lane::Command,
            RequestBody::Sealed(sealed) => sealed.lane,
        }
    }
}

/// The three classes of traffic; each has its own stream per peer so bulk transfers never
/// delay heartbeats, and its own sealing key and sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Lane {
    /// Raft messages other than snapshot chunks.
    Raft,
    /// Snapshot chunks, which are large.
    Snapshot,
    /// The command plane (forwarded requests, membership) and formation.
    Command,
}

/// The first message of a sealed session: the initiator's fresh nonce and a proof that it holds
/// the key named `key_id`, bound to both peers' ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The key the initiator proposes (its sealing key).
    pub key_id: crate::keyring::KeyId,
    /// Fresh random bytes from the initiator.
    pub nonce: [u8; 16],
    /// HMAC over the transcript under a key derived from the cluster key.
    pub proof: [u8; 32],
}

/// The reply to a [`Hello`]: the session id, the responder's fresh nonce and its own proof
/// over both nonces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Welcome {
    /// The id later [`Sealed`] messages of this session carry.
    pub session: [u8; 16],
    /// Fresh random bytes from the responder.
    pub nonce: [u8; 16],
    /// HMAC over the whole transcript.
    pub proof: [u8; 32],
}

/// A request or reply body sealed with AES-256-GCM under a session key. The namespace of the
/// enclosing [`WireRequest`], both peers, the lane, the direction and `seq` are in the
/// associated data, so a sealed message cannot be replayed, or moved to another namespace,
/// peer, lane or direction.
#[derive(Clone, Serialize, Deserialize)]
pub struct Sealed {
    /// The session the message belongs to.
    pub session: [u8; 16],
    /// The lane it travels on.
    pub lane: Lane,
    /// The request's sequence number within (session, namespace, lane); a reply carries the
    /// sequence number of its request.
    pub seq: u64,
    /// Ciphertext and tag.
    #[serde(with = "crate::byte_vec")]
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({:?} seq {} {} bytes)", self.lane, self.seq, self.ciphertext.len())
    }
}

/// A reply to a [`WireRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireResponse {
    /// Reply to a [`RequestBody::Raft`].
    Raft(RaftResponse),
    /// Reply to a [`RequestBody::Command`].
    Command(CommandResponse),
    /// Reply to a [`RequestBody::Formation`].
    Formation(crate::formation::FormationResponse),
    /// Reply to a [`RequestBody::Hello`].
    Welcome(Welcome),
    /// Reply to a [`RequestBody::Sealed`].
    Sealed(Sealed),
    /// The request could not be handled at all.
    Error(WireError),
    /// Reply to a [`RequestBody::Ping`] or a [`RequestBody::Goodbye`].
    Pong,
}

/// A Raft RPC with the id of the cluster its sender belongs to: a node refuses Raft traffic from
/// another cluster of the same namespace (two clusters of one namespace must never exchange
/// appends, snapshots or votes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftEnvelope {
    /// The sender's cluster, as its configuration names it (empty: it names none).
    pub cluster: crate::formation::ClusterId,
    /// The RPC.
    pub rpc: RaftRequest,
}

/// Raft RPCs, one variant per openraft network call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Append entries or heartbeat.
    Append(openraft::raft::AppendEntriesRequest<TypeConfig>),
    /// Request a vote.
    Vote(openraft::raft::VoteRequest<TypeConfig>),
    /// Ask whether a vote would be granted, without disturbing the term.
    PreVote(openraft::raft::VoteRequest<TypeConfig>),
    /// One chunk of a snapshot; the last chunk carries `done` and triggers installation.
    SnapshotChunk(SnapshotChunk),
    /// Hand leadership to the receiver.
    TransferLeader(openraft::raft::TransferLeaderRequest<TypeConfig>),
}

/// A slice of a snapshot being streamed to a follower.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// Leader's vote at the time of sending.
    pub vote: Vote,
    /// Metadata of the snapshot (identical in every chunk).
    pub meta: SnapshotMeta,
    /// Byte offset of `data` within the snapshot.
    pub offset: u64,
    /// Total snapshot size in bytes.
    pub total: u64,
    /// The bytes.
    #[serde(with = "crate::byte_vec")]
    pub data: Vec<u8>,
    /// Whether this is the last chunk.
    pub done: bool,
}

/// Replies to [`RaftRequest`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RaftResponse {
    /// Reply to [`RaftRequest::Append`].
    Append(openraft::raft::AppendEntriesResponse<TypeConfig>),
    /// Reply to [`RaftRequest::Vote`] or [`RaftRequest::PreVote`].
    Vote(openraft::raft::VoteResponse<TypeConfig>),
    /// Reply to a chunk: `None` until the last chunk has been installed.
    SnapshotChunk(Option<openraft::raft::SnapshotResponse<TypeConfig>>),
    /// Reply to [`RaftRequest::TransferLeader`].
    TransferLeader(openraft::raft::TransferLeaderResponse<TypeConfig>),
}

/// A command with its forwarding budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandEnvelope {
    /// Forwarding hops left; a node that would need to forward at zero answers
    /// [`WireError::HopLimit`] instead, which breaks forwarding loops during leader changes.
    pub hops_left: u8,
    /// Milliseconds left of the caller's deadline when the command was sent (a duration, not a
    /// time: clocks differ between nodes). The receiver works within it (capped by its own
    /// request timeout) and a leader does not propose a write whose budget has run out.
    pub budget_ms: u64,
    /// What is asked.
    pub request: CommandRequest,
}

/// Requests of the command plane; all are served by the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CommandRequest {
    /// Propose a command.
    Write(Command),
    /// Confirm leadership and return the index a linearizable read must wait for.
    ReadIndex,
    /// Add the *sender* as a learner (a join request can name no one else). `fresh` says the
    /// sender holds no Raft state: if it is already a member, it lost its data and is removed
    /// and re-added as a learner rather than trusted with its old vote.
    Join {
        /// Where the sender listens.
        info: MemberInfo,
        /// Whether the sender has no Raft state for the namespace.
        fresh: bool,
    },
    /// Add a learner, wait for it to catch up, then promote it to voter.
    AddVoter(NodeId, MemberInfo),
    /// Add a learner.
    AddLearner(NodeId, MemberInfo),
    /// Remove a member (voter or learner).
    Remove(NodeId),
    /// Transfer leadership to the given node, or to the most up-to-date voter.
    TransferLeader(Option<NodeId>),
    /// Renew a lease on the leader's lease clock (a lease's time is kept there, in memory).
    LeaseKeepAlive(u64),
    /// How long a lease has left on the leader's clock.
    LeaseTimeToLive(u64),
}

/// Replies of the command plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CommandResponse {
    /// A write was applied at `log_id`.
    Written {
        /// Where the command sits in the log.
        log_id: LogId,
        /// What the state machine answered.
        result: CommandResult,
    },
    /// Leadership confirmed; reads must wait until `read_log_id` is applied.
    ReadIndex {
        /// The log id the reader must have applied.
        read_log_id: LogId,
    },
    /// A join was accepted: the sender is a learner of `cluster`, led by `leader`.
    Joined {
        /// The leader that admitted the sender.
        leader: NodeId,
        /// The cluster the sender now belongs to.
        cluster: crate::formation::ClusterId,
        /// Log index of the membership change, when one was needed.
        index: Option<u64>,
    },
    /// A membership or leadership change completed; `index` is the log index it reflects.
    Done {
        /// Log index of the change, when it produced one.
        index: Option<u64>,
    },
    /// A lease's time to live and what is left of it on the leader's clock.
    Lease {
        /// Its time to live, in seconds.
        ttl_secs: u64,
        /// Milliseconds left before the leader expires it.
        remaining_ms: u64,
    },
}

/// Errors carried across the wire: the API's own error type, so a reply's error reaches the
/// entry node (and the client) exactly as the replying node raised it.
pub type WireError = crate::error::ApiError;

/// The index of an optional log id, 0 when there is none.
pub fn log_index(log_id: &Option<LogId>) -> u64 {
    log_id.as_ref().map(|l| l.index).unwrap_or(0)
}
