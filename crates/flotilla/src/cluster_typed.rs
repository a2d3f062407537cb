//! [`TypedCluster`]: the cluster API of a namespace that runs a
//! [`TypedStateMachine`](flotilla_core::TypedStateMachine) (behind [`Typed`](flotilla_core::Typed)):
//! proposals take its command type and return its reply or its refusal, typed.

use std::marker::PhantomData;

use flotilla_core::{
    decode_typed_reply, encode_typed_command, ApiError, Consistency, IdempotencyKey, StateView, TypedStateMachine,
};

use crate::cluster::Cluster;
use crate::cluster_query::{Queried, QueryError};

/// A typed command's reply with the log index it was applied at.
///
/// ```no_run
/// # async fn example<M>(counter: flotilla::TypedCluster<M>) -> Result<(), Box<dyn std::error::Error>>
/// # where M: flotilla::TypedStateMachine<Command = u64, Reply = u64> {
/// let applied = counter.propose(&5).await?;
/// println!("the counter is {} (log index {})", applied.reply, applied.index);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<R> {
    /// The log index of the entry that carried the command.
    pub index: u64,
    /// What the state machine answered.
    pub reply: R,
}

/// Why a typed proposal did not produce a reply.
///
/// ```
/// use flotilla::{ApiError, ProposeError};
///
/// /// Whether to send the proposal again (idempotently) later.
/// fn worth_retrying<E>(error: &ProposeError<E>) -> bool {
///     matches!(error, ProposeError::Api(api) if api.is_retryable())
/// }
/// assert!(worth_retrying::<std::io::Error>(&ProposeError::Api(ApiError::HopLimit)));
/// assert!(!worth_retrying(&ProposeError::Rejected(std::io::Error::other("refused"))));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ProposeError<E> {
    /// The state machine refused the command (on every replica, changing nothing).
    #[error("refused by the state machine: {0}")]
    Rejected(E),
    /// The cluster API failed: not applied, or maybe applied, as [`ApiError::outcome`] says;
    /// [`ApiError::is_retryable`] says whether to try again (with
    /// [`TypedCluster::propose_idempotent`] to apply it at most once).
    #[error(transparent)]
    Api(ApiError),
    /// The namespace's state machine refused the payload before running it: the text of a
    /// [`TypedRefusal`](flotilla_core::TypedRefusal) (the namespace runs another state
    /// machine, or another version of the command type) or of a byte-level refusal.
    #[error("refused: {0}")]
    Refused(String),
    /// The command could not be encoded; nothing was proposed.
    #[error("the command does not encode: {0}")]
    Encode(String),
    /// The command was applied at `index`, but its reply does not decode as the reply type
    /// (the namespace runs another state machine, or another version of the types).
    #[error("the reply of the command applied at index {index} does not decode: {detail}")]
    Reply {
        /// Where the command was applied.
        index: u64,
        /// What the codec said.
        detail: String,
    },
}

/// The cluster API of a namespace whose state machine is `M` (see [`Cluster::typed`]).
///
/// ```no_run
/// # use std::io;
/// # use flotilla_core::{ApplyContext, StateTable, TypedStateMachine};
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
/// # #[error("the counter would overflow")]
/// # struct Overflow;
/// /// A counter under the key `n`.
/// struct Counter;
/// impl TypedStateMachine for Counter {
///     type Command = u64;
///     type Reply = u64;
///     type Error = Overflow;
///     fn apply(&self, _: &ApplyContext, table: &mut dyn StateTable, by: u64) -> io::Result<Result<u64, Overflow>> {
///         let now = table.get(b"n")?.and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
///         let Some(next) = now.checked_add(by) else { return Ok(Err(Overflow)) };
///         table.put(b"n", &next.to_be_bytes())?;
///         Ok(Ok(next))
///     }
/// }
///
/// async fn add_and_read(node: &std::sync::Arc<flotilla::Node>) -> Result<(), Box<dyn std::error::Error>> {
///     let counter = node.cluster("counter")?.typed::<Counter>();
///     match counter.propose(&2).await {
///         Ok(applied) => println!("now {} (index {})", applied.reply, applied.index),
///         Err(flotilla::ProposeError::Rejected(Overflow)) => println!("full"),
///         Err(other) => return Err(other.into()),
///     }
///     let read = counter
///         .query(flotilla::Consistency::Linearizable, |view| view.get(b"n"))
///         .await?;
///     println!("{:?} as of index {}", read.value, read.index);
///     Ok(())
/// }
/// ```
pub struct TypedCluster<M> {
    cluster: Cluster,
    /// `fn() -> M`: the handle neither owns an `M` nor needs `M: Sync` to be shared.
    machine: PhantomData<fn() -> M>,
}

impl<M> Clone for TypedCluster<M> {
    fn clone(&self) -> Self {
        Self { cluster: self.cluster.clone(), machine: PhantomData }
    }
}

impl<M> std::fmt::Debug for TypedCluster<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedCluster").field("namespace", self.cluster.namespace()).finish()
    }
}

impl Cluster {
    /// This namespace's API in the types of `M`, the state machine its nodes run (as
    /// [`Typed<M>`](flotilla_core::Typed), chosen with
    /// [`NodeBuilder::state_machines`](crate::NodeBuilder::state_machines)). Nothing checks
    /// that they do: a namespace running another state machine answers
    /// [`ProposeError::Refused`] or [`ProposeError::Reply`].
    ///
    /// ```no_run
    /// # use std::io;
    /// # use flotilla_core::{ApplyContext, StateTable, TypedStateMachine};
    /// # struct Counter;
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
    /// # #[error("never")]
    /// # struct Never;
    /// # impl TypedStateMachine for Counter {
    /// #     type Command = u64;
    /// #     type Reply = u64;
    /// #     type Error = Never;
    /// #     fn apply(&self, _: &ApplyContext, _: &mut dyn StateTable, by: u64) -> io::Result<Result<u64, Self::Error>> {
    /// #         Ok(Ok(by))
    /// #     }
    /// # }
    /// async fn add(cluster: &flotilla::Cluster) -> Result<u64, flotilla::ProposeError<<Counter as TypedStateMachine>::Error>> {
    ///     let applied = cluster.typed::<Counter>().propose(&5).await?;
    ///     println!("applied at index {}", applied.index);
    ///     Ok(applied.reply)
    /// }
    /// ```
    pub fn typed<M: TypedStateMachine>(&self) -> TypedCluster<M> {
        TypedCluster { cluster: self.clone(), machine: PhantomData }
    }
}

impl<M: TypedStateMachine> TypedCluster<M> {
    /// The untyped handle of the same namespace.
    ///
    /// ```no_run
    /// # fn example<M: flotilla::TypedStateMachine>(typed: flotilla::TypedCluster<M>) {
    /// // Everything that does not depend on M: status, membership, leases, ...
    /// println!("{} leader: {:?}", typed.cluster().namespace(), typed.cluster().leader());
    /// # }
    /// ```
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Replicate `command` (forwarded to the leader from any node); returns the state
    /// machine's reply and the log index it was applied at.
    ///
    /// ```no_run
    /// # async fn example<M>(counter: flotilla::TypedCluster<M>) -> Result<(), Box<dyn std::error::Error>>
    /// # where M: flotilla::TypedStateMachine<Command = u64, Reply = u64> {
    /// match counter.propose(&5).await {
    ///     Ok(applied) => println!("now {}", applied.reply),
    ///     Err(flotilla::ProposeError::Rejected(refusal)) => println!("refused, nothing changed: {refusal}"),
    ///     Err(other) => return Err(other.into()),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn propose(&self, command: &M::Command) -> Result<Applied<M::Reply>, ProposeError<M::Error>> {
        let payload = encode::<M>(command)?;
        typed_outcome::<M>(self.cluster.propose(payload).await)
    }

    /// [`TypedCluster::propose`] as the write named `idempotency`: applied at most once however
    /// often it is sent within the deduplication window; a repeat answers the first reply.
    ///
    /// ```no_run
    /// # async fn example<M>(counter: flotilla::TypedCluster<M>) -> Result<(), Box<dyn std::error::Error>>
    /// # where M: flotilla::TypedStateMachine<Command = u64, Reply = u64> {
    /// let key = flotilla::IdempotencyKey::new("add-5-request-81")?;
    /// // Sent again after an unknown outcome, it is applied once and answers the first reply.
    /// let applied = counter.propose_idempotent(&5, &key).await?;
    /// println!("now {}", applied.reply);
    /// # Ok(()) }
    /// ```
    pub async fn propose_idempotent(
        &self,
        command: &M::Command,
        idempotency: &IdempotencyKey,
    ) -> Result<Applied<M::Reply>, ProposeError<M::Error>> {
        let payload = encode::<M>(command)?;
        typed_outcome::<M>(self.cluster.propose_idempotent(payload, idempotency).await)
    }

    /// [`Cluster::query`] on this namespace: read `M`'s rows at `consistency`.
    ///
    /// ```no_run
    /// # async fn example<M: flotilla::TypedStateMachine>(typed: flotilla::TypedCluster<M>) -> Result<(), Box<dyn std::error::Error>> {
    /// let read = typed.query(flotilla::Consistency::Linearizable, |view| view.get(b"n")).await?;
    /// println!("{:?} as of index {}", read.value, read.index);
    /// # Ok(()) }
    /// ```
    pub async fn query<T, E>(
        &self,
        consistency: Consistency,
        query: impl FnOnce(&dyn StateView) -> Result<T, E>,
    ) -> Result<Queried<T>, QueryError<E>> {
        self.cluster.query(consistency, query).await
    }
}

fn encode<M: TypedStateMachine>(command: &M::Command) -> Result<Vec<u8>, ProposeError<M::Error>> {
    encode_typed_command::<M>(command).map_err(|e| ProposeError::Encode(e.to_string()))
}

/// What a byte-level proposal's result means in `M`'s types.
fn typed_outcome<M: TypedStateMachine>(
    proposed: Result<(u64, Result<Vec<u8>, String>), ApiError>,
) -> Result<Applied<M::Reply>, ProposeError<M::Error>> {
    let (index, output) = proposed.map_err(ProposeError::Api)?;
    let reply = output.map_err(ProposeError::Refused)?;
    match decode_typed_reply::<M>(&reply) {
        Ok(Ok(reply)) => Ok(Applied { index, reply }),
        Ok(Err(refusal)) => Err(ProposeError::Rejected(refusal)),
        Err(e) => Err(ProposeError::Reply { index, detail: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use flotilla_core::{encode, ApplyContext, StateTable};

    use super::*;

    /// Echoes its command; refuses zero.
    struct Echo;

    #[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
    #[error("zero")]
    struct Zero;

    impl TypedStateMachine for Echo {
        type Command = u32;
        type Reply = u32;
        type Error = Zero;
        fn apply(&self, _: &ApplyContext, _: &mut dyn StateTable, command: u32) -> io::Result<Result<u32, Zero>> {
            Ok(if command == 0 { Err(Zero) } else { Ok(command) })
        }
    }

    /// A short description of an outcome, to compare in a table.
    fn describe(outcome: Result<Applied<u32>, ProposeError<Zero>>) -> String {
        match outcome {
            Ok(applied) => format!("applied {} at {}", applied.reply, applied.index),
            Err(ProposeError::Rejected(Zero)) => "rejected".into(),
            Err(ProposeError::Api(e)) => format!("api {e}"),
            Err(ProposeError::Refused(text)) => format!("refused {text}"),
            Err(ProposeError::Encode(_)) => "encode".into(),
            Err(ProposeError::Reply { index, .. }) => format!("undecodable at {index}"),
        }
    }

    /// What `Cluster::propose` answers.
    type Proposed = Result<(u64, Result<Vec<u8>, String>), ApiError>;

    #[test]
    fn a_byte_level_result_maps_to_its_typed_outcome() {
        let reply = |r: Result<u32, Zero>| Ok((7, Ok(encode(&r).unwrap())));
        let cases: Vec<(Proposed, &str)> = vec![
            (reply(Ok(3)), "applied 3 at 7"),
            (reply(Err(Zero)), "rejected"),
            (Err(ApiError::HopLimit), "api forwarding hop limit reached"),
            (Ok((7, Err("malformed command: x".into()))), "refused malformed command: x"),
            (Ok((7, Ok(vec![9]))), "undecodable at 7"),
        ];
        for (proposed, expected) in cases {
            assert_eq!(describe(typed_outcome::<Echo>(proposed)), expected);
        }
    }
}
