//! Change notifications: the entries a namespace's state machine applies on this node, handed
//! to subscribers ([`AppliedReceiver`]) as they are applied.
//!
//! The state machine store publishes each applied batch once its commit is visible to readers
//! (after the clients are answered). Publishing never waits: each subscriber has a bounded
//! buffer ([`SUBSCRIPTION_BUFFER`] entries, [`SUBSCRIPTION_BUFFER_BYTES`] bytes), and one that
//! has no room left for the next entry gets a final [`SubscriptionEnded::FellBehind`] instead
//! (one slot of its channel is kept for that signal) and is dropped. Entries are shared between
//! subscribers (one copy per entry, however many subscribers), and every subscriber's queue
//! ends at the newest entry, so the memory the feed holds is about one buffer's worth of bytes
//! per namespace (the longest queue).
//!
//! Subscribing reads the applied index under the feed's lock, and a batch is published after
//! it is visible, so a subscriber sees exactly the normal entries after its
//! [`AppliedReceiver::start_index`], in index order, each once:
//! - a batch visible before the read is reflected by the start index and filtered out when
//!   published (each subscriber remembers the next index it expects);
//! - a batch made visible after the read is published after the subscriber was registered.
//!
//! A snapshot install (from the leader, or an offline backup restore) skips entries: every subscriber
//! that expected an entry at or before the snapshot's index falls behind when the install
//! completes. Deleting the namespace's data ([`Store::wipe_namespace`](crate::Store::wipe_namespace)) makes
//! every subscriber fall behind; closing the store ends every subscription with
//! [`SubscriptionEnded::Closed`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use flotilla_core::Namespace;
use tokio::sync::mpsc;

use crate::error::StoreError;

/// Entries waiting for one subscriber before it falls behind.
pub const SUBSCRIPTION_BUFFER: usize = 1_024;

/// Bytes of entries (commands and replies) waiting for one subscriber before it falls behind.
/// An entry larger than this alone is still delivered to a subscriber with nothing waiting.
pub const SUBSCRIPTION_BUFFER_BYTES: usize = 64 << 20;

/// Most subscribers of one namespace on one node.
pub const MAX_SUBSCRIBERS: usize = 64;

/// Bookkeeping counted per entry on top of its command and reply bytes.
const ENTRY_OVERHEAD: usize = 64;

/// One normal entry applied to a namespace's state machine on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEntry {
    /// The entry's log index.
    pub index: u64,
    /// The command's payload, as proposed.
    pub command: Vec<u8>,
    /// The state machine's reply, or its deterministic refusal.
    pub reply: Result<Vec<u8>, String>,
}

impl AppliedEntry {
    /// What the entry counts against a subscriber's byte budget.
    fn cost(&self) -> usize {
        let reply = match &self.reply {
            Ok(bytes) => bytes.len(),
            Err(message) => message.len(),
        };
        self.command.len() + reply + ENTRY_OVERHEAD
    }
}

/// Why a subscription ended. Once it has ended, every further receive returns the same reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionEnded {
    /// The subscriber did not keep up (its buffer was full), or a snapshot install or a reset of
    /// the namespace skipped entries: entries from `next_index` on were not delivered. Read the
    /// current state and subscribe again.
    #[error(
        "the subscriber fell behind: entries from index {next_index} on were not delivered; \
         read the current state and subscribe again"
    )]
    FellBehind {
        /// The first index not delivered.
        next_index: u64,
    },
    /// The store closed (the node is shutting down).
    #[error("the store closed")]
    Closed,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The namespace already has [`MAX_SUBSCRIBERS`] subscribers on this node.
    #[error("namespace {namespace} has {limit} subscribers on this node already")]
    TooManySubscribers {
        /// The namespace.
        namespace: String,
        /// The limit.
        limit: usize,
    },
    /// The applied index could not be read.
    #[error("reading the applied index: {0}")]
    Store(#[from] StoreError),
}

/// What a subscriber's channel carries.
enum Message {
    Entry(Arc<AppliedEntry>),
    End(SubscriptionEnded),
}

/// Whether an entry goes to a subscriber, from what its buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// It fits.
    Deliver,
    /// It does not: the subscriber falls behind.
    FallBehind,
}

/// Decide whether an entry of `cost` bytes goes to a subscriber whose channel has `room` free
/// slots (one of them kept for the end signal) and `queued` bytes waiting.
pub(crate) fn delivery(room: usize, queued: usize, cost: usize) -> Delivery {
    let slots = room > 1;
    // A subscriber with nothing waiting takes any entry, so one larger than the budget
    // does not end every subscription.
    let bytes = queued == 0 || queued.saturating_add(cost) <= SUBSCRIPTION_BUFFER_BYTES;
    match slots && bytes {
        true => Delivery::Deliver,
        false => Delivery::FallBehind,
    }
}

/// One registered subscriber.
struct Subscriber {
    id: u64,
    /// The next index it expects: entries below it are already reflected by its start index.
    next: u64,
    tx: mpsc::Sender<Message>,
    /// Bytes of entries sent and not yet received.
    queued: Arc<AtomicUsize>,
}

impl Subscriber {
    /// Hand `entry` over, or end the subscription if it has no room. Returns whether the
    /// subscriber stays registered.
    fn offer(&mut self, entry: &Arc<AppliedEntry>, fell_behind: &AtomicU64) -> bool {
        if entry.index < self.next {
            return true;
        }
        let cost = entry.cost();
        match delivery(self.tx.capacity(), self.queued.load(Ordering::Acquire), cost) {
            Delivery::Deliver => {
                self.queued.fetch_add(cost, Ordering::AcqRel);
                self.next = entry.index + 1;
                // The publisher (under the feed's lock) is the only sender and saw room: this
                // fails only when the receiver is gone.
                self.tx.try_send(Message::Entry(entry.clone())).is_ok()
            }
            Delivery::FallBehind => {
                self.end(SubscriptionEnded::FellBehind { next_index: entry.index }, fell_behind);
                false
            }
        }
    }

    /// Send the end signal into the slot kept for it, counting subscribers that fell behind.
    fn end(&self, reason: SubscriptionEnded, fell_behind: &AtomicU64) {
        if matches!(reason, SubscriptionEnded::FellBehind { .. }) {
            fell_behind.fetch_add(1, Ordering::Relaxed);
        }
        // Full only if the receiver is gone or the reason was already sent: nothing to tell.
        let _ = self.tx.try_send(Message::End(reason));
    }
}

#[derive(Default)]
struct FeedState {
    subscribers: Vec<Subscriber>,
    next_id: u64,
}

/// The subscribers of one namespace's applied entries on this node.
#[derive(Default)]
pub(crate) struct AppliedFeed {
    state: Mutex<FeedState>,
    /// Subscribers that fell behind, shared by the store's feeds (for metrics).
    fell_behind: Arc<AtomicU64>,
}

impl AppliedFeed {
    fn lock(&self) -> MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether anyone listens (publishing costs a copy of each entry only then).
    pub(crate) fn has_subscribers(&self) -> bool {
        !self.lock().subscribers.is_empty()
    }

    /// Register a subscriber of `ns` starting after the index `applied` reads (under the lock,
    /// so no batch is published between the read and the registration).
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        ns: &Namespace,
        applied: impl FnOnce() -> Result<u64, StoreError>,
    ) -> Result<AppliedReceiver, SubscribeError> {
        let mut state = self.lock();
        if state.subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(SubscribeError::TooManySubscribers { namespace: ns.to_string(), limit: MAX_SUBSCRIBERS });
        }
        let start = applied()?;
        // One more slot than the buffer: the end signal always fits.
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER + 1);
        let queued = Arc::new(AtomicUsize::new(0));
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.push(Subscriber { id, next: start + 1, tx, queued: queued.clone() });
        Ok(AppliedReceiver { rx, queued, feed: Arc::downgrade(self), id, start, ended: None })
    }

    /// Hand a batch of applied entries (in index order) to every subscriber.
    pub(crate) fn publish(&self, entries: &[Arc<AppliedEntry>]) {
        let mut state = self.lock();
        let fell_behind = &self.fell_behind;
        state.subscribers.retain_mut(|subscriber| entries.iter().all(|entry| subscriber.offer(entry, fell_behind)));
    }

    /// A snapshot up to `index` replaced the state: every subscriber that expected an entry at
    /// or before it falls behind.
    pub(crate) fn installed(&self, index: u64) {
        let mut state = self.lock();
        state.subscribers.retain(|subscriber| {
            let skipped = subscriber.next <= index;
            if skipped {
                subscriber.end(SubscriptionEnded::FellBehind { next_index: subscriber.next }, &self.fell_behind);
            }
            !skipped
        });
    }

    /// The namespace's state is gone: every subscriber falls behind.
    pub(crate) fn reset(&self) {
        let mut state = self.lock();
        for subscriber in state.subscribers.drain(..) {
            subscriber.end(SubscriptionEnded::FellBehind { next_index: subscriber.next }, &self.fell_behind);
        }
    }

    /// The store closes: end every subscription.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        for subscriber in state.subscribers.drain(..) {
            subscriber.end(SubscriptionEnded::Closed, &self.fell_behind);
        }
    }

    fn unregister(&self, id: u64) {
        self.lock().subscribers.retain(|subscriber| subscriber.id != id);
    }
}

/// Node-wide counts of subscriptions, for metrics ([`Store::subscription_counts`](crate::Store::subscription_counts)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriptionCounts {
    /// Subscriptions registered now, over every namespace.
    pub active: u64,
    /// Subscriptions ended with [`SubscriptionEnded::FellBehind`] since the store opened.
    pub fell_behind: u64,
}

/// The feeds of every namespace of a store.
#[derive(Default)]
pub(crate) struct Feeds {
    feeds: Mutex<HashMap<Namespace, Arc<AppliedFeed>>>,
    fell_behind: Arc<AtomicU64>,
}

impl Feeds {
    fn lock(&self) -> MutexGuard<'_, HashMap<Namespace, Arc<AppliedFeed>>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The feed of `ns` (created on first use; one per namespace, kept while the store lives).
    pub(crate) fn get(&self, ns: &Namespace) -> Arc<AppliedFeed> {
        let fell_behind = &self.fell_behind;
        let mut feeds = self.lock();
        feeds
            .entry(ns.clone())
            .or_insert_with(|| Arc::new(AppliedFeed { fell_behind: fell_behind.clone(), ..AppliedFeed::default() }))
            .clone()
    }

    /// The counts over every namespace.
    pub(crate) fn counts(&self) -> SubscriptionCounts {
        let feeds = self.lock();
        let active = feeds.values().map(|feed| feed.lock().subscribers.len() as u64).sum();
        SubscriptionCounts { active, fell_behind: self.fell_behind.load(Ordering::Relaxed) }
    }

    /// End every subscription of every namespace.
    pub(crate) fn close_all(&self) {
        for feed in self.lock().values() {
            feed.close();
        }
    }
}

/// A subscription to the entries applied to one namespace on this node (see
/// [`Store::subscribe_applied`](crate::Store::subscribe_applied)): every normal entry after
/// [`AppliedReceiver::start_index`], in index order, each once, until it ends with a
/// [`SubscriptionEnded`]. Dropping it unregisters it.
pub struct AppliedReceiver {
    rx: mpsc::Receiver<Message>,
    queued: Arc<AtomicUsize>,
    feed: Weak<AppliedFeed>,
    id: u64,
    start: u64,
    ended: Option<SubscriptionEnded>,
}

impl std::fmt::Debug for AppliedReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppliedReceiver").field("start", &self.start).field("ended", &self.ended).finish()
    }
}

impl AppliedReceiver {
    /// The applied index when the subscription started: it delivers the entries after it.
    pub fn start_index(&self) -> u64 {
        self.start
    }

    /// The next applied entry, waiting for one; or why the subscription ended (returned again
    /// by every later call).
    pub async fn recv(&mut self) -> Result<AppliedEntry, SubscriptionEnded> {
        if let Some(end) = self.ended {
            return Err(end);
        }
        let message = self.rx.recv().await;
        self.take(message)
    }

    /// The next applied entry if one is waiting (`None` if not), or why the subscription ended.
    pub fn try_recv(&mut self) -> Option<Result<AppliedEntry, SubscriptionEnded>> {
        if let Some(end) = self.ended {
            return Some(Err(end));
        }
        match self.rx.try_recv() {
            Ok(message) => Some(self.take(Some(message))),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(self.take(None)),
        }
    }

    fn take(&mut self, message: Option<Message>) -> Result<AppliedEntry, SubscriptionEnded> {
        let end = match message {
            Some(Message::Entry(entry)) => {
                self.queued.fetch_sub(entry.cost(), Ordering::AcqRel);
                return Ok(Arc::unwrap_or_clone(entry));
            }
            Some(Message::End(end)) => end,
            // The feed is gone with its store.
            None => SubscriptionEnded::Closed,
        };
        self.ended = Some(end);
        Err(end)
    }
}

impl Drop for AppliedReceiver {
    fn drop(&mut self) {
        if let Some(feed) = self.feed.upgrade() {
            feed.unregister(self.id);
        }
    }
}

#[cfg(test)]
#[path = "applied_feed_tests.rs"]
mod tests;
