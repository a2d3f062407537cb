//! Change notifications: [`Cluster::subscribe`] yields the entries a namespace applies on this
//! node, for cache invalidation and derived views (see [`Subscription`]).
//!
//! The plumbing is the store's (`flotilla_store::AppliedReceiver`): the state machine store
//! publishes each applied batch once it is visible, without ever waiting for a subscriber.
//! KV watches ([`Cluster::watch`]) read revisions back from the table instead; that does not
//! fit here, since a subscription carries every command and its reply, of any state machine,
//! and those are not kept after they are applied.

use flotilla_store::{AppliedEntry, AppliedReceiver, SubscribeError, SubscriptionEnded};

use crate::cluster::Cluster;

/// The entries applied to one namespace on this node, from [`Cluster::subscribe`].
///
/// It yields every *normal* entry (a proposed command: not the blank entries of new leaders,
/// nor membership changes) applied after [`Subscription::start_index`], in index order, each
/// once, as an [`AppliedEntry`] (index, command payload, the state machine's reply). It serves
/// from this node's state machine, so followers and learners serve it as well as the leader.
///
/// **Bounded.** At most [`SUBSCRIPTION_BUFFER`](crate::SUBSCRIPTION_BUFFER) entries and
/// [`SUBSCRIPTION_BUFFER_BYTES`](crate::SUBSCRIPTION_BUFFER_BYTES) wait for a subscriber. One
/// that does not keep up never slows the apply path: when the next entry does not fit, it
/// receives [`SubscriptionEnded::FellBehind`] after the entries already waiting, and is closed.
/// A namespace has at most [`MAX_SUBSCRIBERS`](crate::MAX_SUBSCRIBERS) subscribers per node.
/// Dropping the subscription unregisters it.
///
/// **What it sees besides entries.** A snapshot installed from the leader (this node was too
/// far behind for the log) skips entries: subscribers that expected them fall behind. So does
/// a reset of the namespace's data on this node (closing the namespace without `keep_data`,
/// or its cluster dissolving into another). Closing it with `keep_data` leaves the
/// subscription registered: nothing is applied while it is closed, and it goes on when the
/// namespace opens again. When the node shuts down, the subscription ends with
/// [`SubscriptionEnded::Closed`]. Entries re-applied when a node restarts (the
/// applied state is made durable lazily, so a restart may apply the last entries again) are
/// delivered to the subscribers of the restarted node as ordinary entries: they come after
/// the index those subscribers started from. A backup restored into a running KV namespace
/// ([`Cluster::replace_with_backup`]) travels through the log, so it arrives as its steps,
/// ordinary entries (`KvCommand::Restore`): a view derived from the state reloads it once the
/// `Finish` step arrives (reads are refused before).
///
/// **Resuming from a snapshot of the state.** A subscriber that fell behind (or starts fresh)
/// rebuilds its view from the current state and goes on from there without missing a change:
/// 1. subscribe first ([`Cluster::subscribe`]);
/// 2. then read the state it derives from: every read reports the log index it reflects
///    (`index` in [`ReadOutcome`](crate::ReadOutcome), [`RangeOutcome`](crate::RangeOutcome));
/// 3. [`Subscription::skip_through`] that index: the entries up to it are in the read, and the
///    subscription holds every later one (it started before the read, at a lower index). A
///    read older than the subscription (taken before subscribing) is refused there: the
///    entries between the two would be in neither.
///
/// ```no_run
/// use std::collections::BTreeMap;
///
/// use flotilla::kv::{self, KvCommand, RangeEnd, RangeRequest, TxnOp};
/// use flotilla::{Cluster, Consistency, SubscriptionEnded};
///
/// /// Keep `cache` equal to the keys under `config/`, for as long as the node runs.
/// async fn follow(cluster: &Cluster, cache: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(), Box<dyn std::error::Error>> {
///     loop {
///         let mut changes = cluster.subscribe()?;
///         // One page of keys is enough for this small example (see `RangeOutcome` for more).
///         let state = cluster.range(RangeRequest::prefix(b"config/".to_vec()), Consistency::Stale).await?;
///         *cache = state.result.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
///         changes.skip_through(state.index)?;
///         loop {
///             match changes.recv().await {
///                 Ok(applied) => {
///                     // A refused command changed nothing.
///                     if applied.reply.is_err() {
///                         continue;
///                     }
///                     match kv::decode_command(&applied.command) {
///                         // Invalidate what the transaction may have touched; a real cache
///                         // would reload those keys.
///                         Some(KvCommand::Txn(txn)) => {
///                             for op in txn.success.iter().chain(&txn.failure) {
///                                 match op {
///                                     TxnOp::Put { key, .. } | TxnOp::Delete { key, end: RangeEnd::Key, .. } => {
///                                         cache.remove(key);
///                                     }
///                                     TxnOp::Delete { .. } => cache.clear(),
///                                     TxnOp::Range(_) => {}
///                                     // Nested transactions (etcd's API sends them).
///                                     TxnOp::Txn(_) => cache.clear(),
///                                 }
///                             }
///                         }
///                         // A backup restored into the namespace replaces everything.
///                         Some(KvCommand::Restore(_)) => cache.clear(),
///                         // Leases (a revoke deletes the keys on the lease), queues, compactions.
///                         _ => {}
///                     }
///                 }
///                 // Entries were missed: read the state again.
///                 Err(SubscriptionEnded::FellBehind { .. }) => break,
///                 Err(SubscriptionEnded::Closed) => return Ok(()),
///             }
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Subscription {
    inner: AppliedReceiver,
    /// Entries up to this index are dropped (already reflected by a read).
    skip_through: u64,
}

impl Subscription {
    /// The applied index when the subscription started: it yields the entries after it.
    pub fn start_index(&self) -> u64 {
        self.inner.start_index()
    }

    /// Drop the entries up to `index` (included) instead of yielding them: a read that
    /// reflects `index` already holds them (see the recipe above). Refused with
    /// [`SubscriptionEnded::FellBehind`] (naming the first entry neither holds) when `index` is
    /// below [`Subscription::start_index`]: the read is older than the subscription, so the
    /// entries between them are in neither; read again.
    pub fn skip_through(&mut self, index: u64) -> Result<(), SubscriptionEnded> {
        if index < self.start_index() {
            return Err(SubscriptionEnded::FellBehind { next_index: index + 1 });
        }
        self.skip_through = self.skip_through.max(index);
        Ok(())
    }

    /// The next applied entry, waiting for one; or why the subscription ended (every later
    /// call returns the same).
    pub async fn recv(&mut self) -> Result<AppliedEntry, SubscriptionEnded> {
        loop {
            let applied = self.inner.recv().await?;
            if applied.index > self.skip_through {
                return Ok(applied);
            }
        }
    }

    /// The next applied entry if one is waiting (`None` if none is), or why the subscription
    /// ended.
    pub fn try_recv(&mut self) -> Option<Result<AppliedEntry, SubscriptionEnded>> {
        loop {
            match self.inner.try_recv()? {
                Ok(applied) if applied.index <= self.skip_through => continue,
                other => return Some(other),
            }
        }
    }
}

impl Cluster {
    /// Subscribe to the entries this node applies to the namespace from now on (see
    /// [`Subscription`], which also shows how to resume from a read of the state). Refused with
    /// [`SubscribeError::TooManySubscribers`] when the namespace has
    /// [`MAX_SUBSCRIBERS`](crate::MAX_SUBSCRIBERS) subscribers on this node.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut changes = cluster.subscribe()?;
    /// let (index, _reply) = cluster.propose(b"payload".to_vec()).await?;
    /// let applied = changes.recv().await?;
    /// assert!(applied.index > changes.start_index() && applied.index <= index);
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscribe(&self) -> Result<Subscription, SubscribeError> {
        let inner = self.node.store.subscribe_applied(&self.namespace)?;
        Ok(Subscription { inner, skip_through: 0 })
    }
}
