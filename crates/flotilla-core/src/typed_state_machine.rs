//! The typed seam: an embedder declares its command, reply and error types (serde) and a
//! state machine over them; [`Typed`] runs it behind the byte-level [`StateMachine`].
//!
//! On the log a command is its [`encode`](crate::encode)d form, and a reply the encoded whole
//! `Result<Reply, Error>`, so the state machine's refusal travels typed to the proposer.

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::staged_table::StagedTable;
use crate::state_machine::{ApplyContext, StateMachine, StateTable};

/// Largest payload the adapter decodes, a guard against hostile log entries (as for KV).
const MAX_PAYLOAD_BYTES: u64 = 64 * 1024 * 1024;

/// Deterministic application logic over typed commands.
///
/// The rules of [`StateMachine`] hold: `apply` depends only on the context, the table and the
/// command. Returning `Ok(Err(error))` refuses the command on every replica: its writes are
/// dropped and the proposer receives `error`. `Err(io)` means the storage failed and stops the
/// group.
///
/// ```
/// use std::io;
/// use flotilla_core::{ApplyContext, StateTable, Typed, TypedStateMachine};
/// use serde::{Deserialize, Serialize};
///
/// /// Counters by name, stored as 8 big-endian bytes under the name.
/// struct Counters;
///
/// #[derive(Serialize, Deserialize)]
/// enum CounterCommand { Add { name: String, by: u64 } }
///
/// #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
/// enum CounterError {
///     #[error("counter {0} would overflow")]
///     Overflow(String),
/// }
///
/// impl TypedStateMachine for Counters {
///     type Command = CounterCommand;
///     type Reply = u64;
///     type Error = CounterError;
///
///     fn apply(
///         &self,
///         _context: &ApplyContext,
///         table: &mut dyn StateTable,
///         command: CounterCommand,
///     ) -> io::Result<Result<u64, CounterError>> {
///         let CounterCommand::Add { name, by } = command;
///         let current = match table.get(name.as_bytes())? {
///             Some(bytes) => u64::from_be_bytes(bytes.try_into().map_err(|_| io::Error::other("bad row"))?),
///             None => 0,
///         };
///         let Some(next) = current.checked_add(by) else { return Ok(Err(CounterError::Overflow(name))) };
///         table.put(name.as_bytes(), &next.to_be_bytes())?;
///         Ok(Ok(next))
///     }
/// }
///
/// // What a node runs (see `flotilla::NodeBuilder::state_machines`).
/// let machine: std::sync::Arc<dyn flotilla_core::StateMachine> = std::sync::Arc::new(Typed::new(Counters));
/// ```
pub trait TypedStateMachine: Send + Sync + 'static {
    /// What a proposal carries.
    type Command: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What an applied command answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Why the state machine refuses a command.
    type Error: Serialize + DeserializeOwned + std::error::Error + Send + Sync + 'static;

    /// Apply one committed command to `table` and return its reply or refusal.
    fn apply(
        &self,
        context: &ApplyContext,
        table: &mut dyn StateTable,
        command: Self::Command,
    ) -> io::Result<Result<Self::Reply, Self::Error>>;
}

/// Why [`Typed`] refused a payload before or after its state machine ran: the byte-level
/// refusal text a proposer receives (the same on every replica).
///
/// ```
/// use flotilla_core::TypedRefusal;
///
/// let text = TypedRefusal::MalformedCommand("unexpected end of input".into()).to_string();
/// assert!(text.starts_with("malformed command"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypedRefusal {
    /// The payload does not decode as the state machine's command type (another state
    /// machine's command, or another version of the type).
    #[error("malformed command: {0}")]
    MalformedCommand(String),
    /// The state machine's result does not encode (a serde type the codec cannot write).
    #[error("the reply does not encode: {0}")]
    UnencodableReply(String),
}

/// Runs a [`TypedStateMachine`] as a byte-level [`StateMachine`]: decodes the payload, applies
/// the command against staged writes (kept only when it is accepted), and encodes the whole
/// `Result<Reply, Error>` as the reply. A payload that does not decode is refused with
/// [`TypedRefusal::MalformedCommand`], never a panic.
///
/// ```
/// # use std::io;
/// # use flotilla_core::{ApplyContext, StateTable, TypedStateMachine};
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, thiserror::Error)]
/// # #[error("never")]
/// # struct Never;
/// /// Echoes the number it is given.
/// struct Echo;
/// impl TypedStateMachine for Echo {
///     type Command = u64;
///     type Reply = u64;
///     type Error = Never;
///     fn apply(&self, _: &ApplyContext, _: &mut dyn StateTable, n: u64) -> io::Result<Result<u64, Never>> {
///         Ok(Ok(n))
///     }
/// }
/// use std::sync::Arc;
/// use flotilla_core::{StateMachine, Typed};
///
/// // What a node's state machine factory returns for the namespace.
/// let machine: Arc<dyn StateMachine> = Arc::new(Typed::new(Echo));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Typed<M> {
    machine: M,
}

impl<M: TypedStateMachine> Typed<M> {
    /// Wrap `machine`.
    pub fn new(machine: M) -> Self {
        Self { machine }
    }

    /// The wrapped state machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }
}

impl<M: TypedStateMachine> StateMachine for Typed<M> {
    fn apply(
        &self,
        context: &ApplyContext,
        table: &mut dyn StateTable,
        payload: &[u8],
    ) -> io::Result<Result<Vec<u8>, String>> {
        let command: M::Command = match crate::decode(payload, MAX_PAYLOAD_BYTES) {
            Ok(command) => command,
            Err(e) => return Ok(Err(TypedRefusal::MalformedCommand(e.to_string()).to_string())),
        };
        let mut staged = StagedTable::new(table);
        let result = self.machine.apply(context, &mut staged, command)?;
        let accepted = result.is_ok();
        let reply = match crate::encode(&result) {
            Ok(reply) => reply,
            // Dropping `staged` drops the writes: a refused command changes nothing.
            Err(e) => return Ok(Err(TypedRefusal::UnencodableReply(e.to_string()).to_string())),
        };
        if accepted {
            staged.commit()?;
        }
        Ok(Ok(reply))
    }
}

/// Encode a command of `M` as the payload [`Typed`] decodes.
///
/// ```
/// # use std::io;
/// # use flotilla_core::{ApplyContext, StateTable, TypedStateMachine};
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, thiserror::Error)]
/// # #[error("never")]
/// # struct Never;
/// /// Echoes the number it is given.
/// struct Echo;
/// impl TypedStateMachine for Echo {
///     type Command = u64;
///     type Reply = u64;
///     type Error = Never;
///     fn apply(&self, _: &ApplyContext, _: &mut dyn StateTable, n: u64) -> io::Result<Result<u64, Never>> {
///         Ok(Ok(n))
///     }
/// }
/// use flotilla_core::encode_typed_command;
///
/// let payload = encode_typed_command::<Echo>(&5).expect("a u64 encodes");
/// assert_eq!(payload.len(), 8);
/// ```
pub fn encode_typed_command<M: TypedStateMachine>(command: &M::Command) -> Result<Vec<u8>, bincode::Error> {
    crate::encode(command)
}

/// Decode the reply [`Typed`] encoded: the state machine's reply or refusal.
///
/// ```
/// # use std::io;
/// # use flotilla_core::{ApplyContext, StateTable, TypedStateMachine};
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, thiserror::Error)]
/// # #[error("never")]
/// # struct Never;
/// /// Echoes the number it is given.
/// struct Echo;
/// impl TypedStateMachine for Echo {
///     type Command = u64;
///     type Reply = u64;
///     type Error = Never;
///     fn apply(&self, _: &ApplyContext, _: &mut dyn StateTable, n: u64) -> io::Result<Result<u64, Never>> {
///         Ok(Ok(n))
///     }
/// }
/// use flotilla_core::decode_typed_reply;
///
/// // What `Typed<Echo>` answers when `Echo` replies 5.
/// let reply = flotilla_core::encode(&Ok::<u64, Never>(5)).unwrap();
/// assert_eq!(decode_typed_reply::<Echo>(&reply).unwrap(), Ok(5));
/// ```
pub fn decode_typed_reply<M: TypedStateMachine>(reply: &[u8]) -> Result<Result<M::Reply, M::Error>, bincode::Error> {
    crate::decode(reply, MAX_PAYLOAD_BYTES)
}

#[cfg(test)]
#[path = "typed_state_machine_tests.rs"]
mod tests;
