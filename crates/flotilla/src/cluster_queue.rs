//! The queue API of a [`Cluster`]: named FIFO queues (`flotilla_core::kv`'s queue commands).
//! A pop is a log entry, so each item goes to exactly one consumer, whichever node each
//! consumer calls; a pop with a visibility timeout keeps the item on a lease of its own and
//! puts it back at its place unless it is acknowledged in time.

use std::time::Duration;

use flotilla_core::kv::{self, encode_command, KvCommand, KvReply, QueueReply};
use flotilla_core::{ApiError, Consistency};

use crate::cluster::{store_read_error, Cluster};
use crate::cluster_kv::{decode_kv_reply, refusal_error};

/// An item taken from a queue.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// if let Some(item) = cluster.queue_pop("jobs").await? {
///     println!("job {}: {:?}", item.id, item.value);
///     assert_eq!(item.lease, 0); // a plain pop: taken for good, nothing to acknowledge
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Popped {
    /// The item's id (its place in the queue).
    pub id: u64,
    /// Its value.
    pub value: Vec<u8>,
    /// The visibility lease: acknowledge before it runs out, or the item comes back. 0 for a
    /// plain pop.
    pub lease: u64,
}

impl Cluster {
    /// Append `value` to queue `name`; the item's id.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let id = cluster.queue_push("jobs", b"resize image 17").await?;
    /// println!("queued as item {id}");
    /// # Ok(()) }
    /// ```
    pub async fn queue_push(&self, name: &str, value: &[u8]) -> Result<u64, ApiError> {
        self.check_value(value)?;
        match self.queue_command(KvCommand::QueuePush { name: name.into(), value: value.to_vec() }).await? {
            QueueReply::Pushed { id } => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    /// Take the first item of queue `name` for good; `None` when it is empty.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// // Each item goes to exactly one consumer, on whichever node it calls.
    /// match cluster.queue_pop("jobs").await? {
    ///     Some(item) => println!("took {:?}", item.value),
    ///     None => println!("the queue is empty"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn queue_pop(&self, name: &str) -> Result<Option<Popped>, ApiError> {
        self.pop(name, 0).await
    }

    /// Take the first item of queue `name` for `visibility`: acknowledge it with
    /// [`Cluster::queue_ack`] before that runs out, or it goes back to its place for another
    /// consumer. (The visibility is a lease: at least [`Cluster::min_lease_ttl`].)
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use std::time::Duration;
    ///
    /// if let Some(item) = cluster.queue_pop_for("jobs", Duration::from_secs(60)).await? {
    ///     // ... do the job within the minute, then:
    ///     cluster.queue_ack("jobs", &item).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn queue_pop_for(&self, name: &str, visibility: Duration) -> Result<Option<Popped>, ApiError> {
        let lease = self.lease_grant(0, visibility).await?;
        let popped = self.pop(name, lease.id).await;
        if !matches!(popped, Ok(Some(_))) {
            // Nothing taken: the lease has no use.
            let _ = self.lease_revoke(lease.id).await;
        }
        popped
    }

    async fn pop(&self, name: &str, lease: u64) -> Result<Option<Popped>, ApiError> {
        match self.queue_command(KvCommand::QueuePop { name: name.into(), lease }).await? {
            QueueReply::Popped { id, value } => Ok(Some(Popped { id, value, lease })),
            QueueReply::Empty => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Acknowledge `item` (from [`Cluster::queue_pop_for`]): it is done. False when it had
    /// already gone back to the queue.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, item: flotilla::Popped) -> Result<(), flotilla::ApiError> {
    /// if !cluster.queue_ack("jobs", &item).await? {
    ///     println!("too late: item {} went back to the queue for another consumer", item.id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn queue_ack(&self, name: &str, item: &Popped) -> Result<bool, ApiError> {
        let found = match self
            .queue_command(KvCommand::QueueAck { name: name.into(), id: item.id, lease: item.lease })
            .await?
        {
            QueueReply::Acked { found } => found,
            other => return Err(unexpected(other)),
        };
        if item.lease != 0 {
            match self.lease_revoke(item.lease).await {
                Ok(_) | Err(ApiError::LeaseNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// The first item of queue `name` without taking it.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// if let Some((id, value)) = cluster.queue_peek("jobs", flotilla::Consistency::Stale).await? {
    ///     println!("next up: item {id}, {value:?} (still in the queue)");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn queue_peek(&self, name: &str, consistency: Consistency) -> Result<Option<(u64, Vec<u8>)>, ApiError> {
        self.read_barrier(consistency).await?;
        let view = self.node.store.view(&self.namespace).map_err(store_read_error)?;
        kv::queue_first(&view, name.as_bytes()).map_err(|e| ApiError::Fatal(format!("reading queue {name:?}: {e}")))
    }

    /// `(waiting, in flight)` items of queue `name`.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let (waiting, in_flight) = cluster.queue_len("jobs", flotilla::Consistency::Linearizable).await?;
    /// println!("{waiting} waiting, {in_flight} taken but not acknowledged");
    /// # Ok(()) }
    /// ```
    pub async fn queue_len(&self, name: &str, consistency: Consistency) -> Result<(u64, u64), ApiError> {
        self.read_barrier(consistency).await?;
        let view = self.node.store.view(&self.namespace).map_err(store_read_error)?;
        kv::queue_counts(&view, name.as_bytes()).map_err(|e| ApiError::Fatal(format!("reading queue {name:?}: {e}")))
    }

    async fn queue_command(&self, command: KvCommand) -> Result<QueueReply, ApiError> {
        let (_, output) = self.propose(encode_command(&command)).await?;
        match decode_kv_reply(output)? {
            KvReply::Queue(reply) => Ok(reply),
            KvReply::Refused(refusal) => Err(refusal_error(refusal)),
            other => Err(ApiError::Fatal(format!("unexpected reply to a queue command: {other:?}"))),
        }
    }
}

fn unexpected(reply: QueueReply) -> ApiError {
    ApiError::Fatal(format!("unexpected queue reply {reply:?}"))
}
