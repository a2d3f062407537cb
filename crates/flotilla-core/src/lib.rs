//! Shared vocabulary of Flotilla.
//!
//! Every other crate speaks in these types: the openraft type configuration
//! ([`TypeConfig`]), validated [`Namespace`] names, replicated [`Command`]s, the
//! [`StateMachine`] seam an embedder implements (or its typed form,
//! [`TypedStateMachine`]), the wire messages exchanged between
//! nodes ([`wire`]), the [`Transport`] seam the network implements, and the one
//! [`Config`] struct shared by the library and the CLI.

pub mod admin_token;
pub mod byte_vec;
pub mod command;
pub mod config;
pub mod consistency;
pub mod discovery;
pub mod error;
pub mod formation;
pub mod idempotency;
pub mod keyring;
pub mod kv;
#[cfg(test)]
mod map_table;
pub mod namespace;
pub mod secret_file;
pub mod staged_table;
pub mod state_machine;
pub mod timed_responder;
pub mod transport;
pub mod typed_state_machine;
pub mod types;
pub mod wire;

pub use admin_token::AdminToken;
pub use command::{Command, CommandResult, RequestId};
pub use config::{Config, ConfigError, Preset, Timing};
pub use consistency::Consistency;
pub use discovery::{Discovery, DiscoverySource, Sighting};
pub use error::{ApiError, Limit, Outcome};
pub use idempotency::{IdempotencyKey, IdempotencyKeyError};
pub use keyring::{ClusterKey, KeyId, Keyring};
pub use kv::{KvCommand, KvOp, KvReply, KvStateMachine};
pub use namespace::{Namespace, NamespaceError};
pub use staged_table::StagedTable;
pub use state_machine::{ApplyContext, Scan, ScanVisitor, StateMachine, StateTable, StateView};
pub use transport::{InboundHandler, Transport, TransportError};
pub use typed_state_machine::{decode_typed_reply, encode_typed_command, Typed, TypedRefusal, TypedStateMachine};
pub use types::{MemberInfo, NodeId, TypeConfig};

/// Encode a value with the project's one binary codec (bincode, fixed options).
pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes().serialize(value)
}

/// The number of bytes [`encode`] produces for `value`, computed without building them.
pub fn encoded_len<T: serde::Serialize>(value: &T) -> Result<u64, bincode::Error> {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes().serialized_size(value)
}

/// Decode a value produced by [`encode`], refusing inputs larger than `limit` bytes.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T, bincode::Error> {
    use bincode::Options;
    // bincode ignores `with_limit` when decoding from a slice (the slice bounds every read), so
    // the limit is enforced here, on the input.
    if bytes.len() as u64 > limit {
        return Err(Box::new(bincode::ErrorKind::SizeLimit));
    }
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes().deserialize(bytes)
}
