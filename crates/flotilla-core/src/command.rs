//! Commands replicated through the Raft log and the results of applying them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one logical write across retries, so a retried write is applied once.
///
/// `client` is chosen at random by the issuer (a node's forwarding layer or an embedder) and
/// `seq` increases for each new write it issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    /// Random identity of the issuer.
    pub client: u64,
    /// Sequence number of the write within the issuer.
    pub seq: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}:{}", self.client, self.seq)
    }
}

/// One entry of application data in the Raft log: an opaque payload that the namespace's
/// [`StateMachine`](crate::StateMachine) understands, tagged with an optional request id for
/// deduplication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Deduplication id; `None` for writes that need no retry protection.
    pub id: Option<RequestId>,
    /// The state machine's own encoding of the operation.
    #[serde(with = "crate::byte_vec")]
    pub payload: Vec<u8>,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "command {id} ({} bytes)", self.payload.len()),
            None => write!(f, "command ({} bytes)", self.payload.len()),
        }
    }
}

/// Result of applying one [`Command`]: the state machine's reply, or the deterministic reason
/// it refused the command (the same on every replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The state machine's reply bytes, or its refusal.
    pub output: Result<Vec<u8>, String>,
}
