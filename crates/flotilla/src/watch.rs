//! Watches: a stream of the changes of a key or a range, from any revision not compacted.
//!
//! A watch is served from this node's applied state, so any node (leader or not) serves it.
//! One task per watch (the pump) reads whole revisions of events from the namespace's table
//! (`flotilla_core::kv::changes`) each time the group applies something, and hands them to the
//! watcher through a bounded channel. The guarantees are etcd's: ordered by revision, no gap,
//! no duplicate, the events of one revision together, and a progress notification (the current
//! revision) on a stream that has had nothing to say for a while.
//!
//! Bounds: at most [`MAX_WATCHERS`] watches per node, and [`WATCH_BUFFER`] revisions waiting
//! per watcher. A pass reads no more revisions than the buffer has room for, so a watcher that
//! replays a long history from an old revision gets all of it as fast as it takes it. A watcher
//! whose buffer stays full for [`SLOW_GRACE`] while there is more to deliver is cancelled with
//! the reason (it holds a pump and a buffer while taking nothing); so is one whose next revision
//! gets compacted. Both counts are in [`WatchCounters`].

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use flotilla_core::kv::{self, ChangesRequest, KvRefusal, RangeEnd, WatchEvent};
use flotilla_core::ApiError;
use futures::Stream;
use openraft::async_runtime::watch::WatchReceiver;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cluster::{store_read_error, Cluster};

/// Most watches one node serves at once.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// use flotilla::{ApiError, WatchRequest};
///
/// match cluster.watch(WatchRequest::key(b"config".to_vec())).await {
///     Ok(watch) => drop(watch),
///     // This node serves MAX_WATCHERS watches already: any other node serves it too.
///     Err(ApiError::Unavailable(why)) => println!("{why}"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
pub const MAX_WATCHERS: u64 = 4_096;

/// Revisions waiting for a watcher before it is cancelled as too slow.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// use flotilla::{ApiError, WatchMessage, WatchRequest};
/// use futures::StreamExt;
///
/// let mut watch = cluster.watch(WatchRequest::prefix(b"order/".to_vec())).await?;
/// let mut next = watch.start_revision();
/// while let Some(message) = watch.next().await {
///     match message {
///         Ok(WatchMessage::Changes { revision, .. }) => next = revision + 1,
///         Ok(WatchMessage::Progress { .. }) => {}
///         // Left WATCH_BUFFER revisions waiting for SLOW_GRACE: watch again from `next`.
///         Err(ApiError::Cancelled(_)) => println!("too slow; resume from revision {next}"),
///         Err(e) => return Err(e),
///     }
/// }
/// # Ok(()) }
/// ```
pub const WATCH_BUFFER: usize = 256;

/// Events read from the table per pass (whole revisions: a large one may exceed it).
const EVENTS_PER_PASS: usize = 1_000;

/// How long a watcher's buffer may stay full, while there is more to deliver, before the
/// watcher is cancelled as too slow.
///
/// ```
/// use flotilla::{SLOW_GRACE, WATCH_BUFFER};
///
/// println!("a watcher may leave {WATCH_BUFFER} revisions waiting for up to {SLOW_GRACE:?}");
/// ```
pub const SLOW_GRACE: Duration = Duration::from_secs(1);

/// How often a pump looks again when it could not read (a snapshot being installed).
const RETRY_READ: Duration = Duration::from_millis(200);

/// What to watch.
///
/// ```
/// use std::time::Duration;
/// use flotilla::{kv::RangeEnd, WatchRequest};
///
/// // Every key under `order/`, from revision 42 on, with each key's state before the change.
/// let request = WatchRequest { from_revision: 42, prev_kv: true, ..WatchRequest::prefix(b"order/".to_vec()) };
/// assert_eq!(request.end, RangeEnd::Prefix);
/// assert_eq!(request.progress_every, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    /// The key, or the first key of the range.
    pub key: Vec<u8>,
    /// Where the range ends ([`RangeEnd::Key`]: the key alone).
    pub end: RangeEnd,
    /// The first revision to deliver; 0 for the changes after the current revision.
    pub from_revision: u64,
    /// Deliver each key's state before the change too.
    pub prev_kv: bool,
    /// Send a progress notification after this long without a change.
    pub progress_every: Duration,
}

impl WatchRequest {
    /// Watch `key` alone, from now on, with progress notifications every 5 s.
    ///
    /// ```
    /// use flotilla::{kv::RangeEnd, WatchRequest};
    ///
    /// let request = WatchRequest::key(b"config".to_vec());
    /// assert_eq!((request.end, request.from_revision), (RangeEnd::Key, 0)); // the key alone, from now on
    /// ```
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            end: RangeEnd::Key,
            from_revision: 0,
            prev_kv: false,
            progress_every: Duration::from_secs(5),
        }
    }

    /// Watch every key starting with `prefix`, from now on.
    ///
    /// ```
    /// use flotilla::{kv::RangeEnd, WatchRequest};
    ///
    /// let request = WatchRequest::prefix(b"order/".to_vec());
    /// assert!(request.end.contains(b"order/", b"order/42"));
    /// ```
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self { end: RangeEnd::Prefix, ..Self::key(prefix) }
    }
}

/// One message of a watch.
///
/// ```no_run
/// # async fn example(mut watch: flotilla::Watch) -> Result<(), flotilla::ApiError> {
/// use flotilla::WatchMessage;
/// use futures::StreamExt;
///
/// while let Some(message) = watch.next().await {
///     match message? {
///         WatchMessage::Changes { revision, events } => println!("revision {revision}: {} keys", events.len()),
///         WatchMessage::Progress { revision } => println!("nothing new up to revision {revision}"),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// The watched keys' changes of one revision, all of them.
    Changes {
        /// The revision.
        revision: u64,
        /// One event per changed key, in the order the transaction made them.
        events: Vec<WatchEvent>,
    },
    /// Nothing changed in the watched keys up to `revision` (included).
    Progress {
        /// The namespace's revision.
        revision: u64,
    },
}

/// Node-wide counts of watches, for metrics.
///
/// ```no_run
/// # fn example(node: std::sync::Arc<flotilla::Node>) {
/// let (active, too_slow, compacted) = node.watch_counters().get();
/// println!("{active} watches; cancelled: {too_slow} too slow, {compacted} by compaction");
/// # }
/// ```
#[derive(Debug, Default)]
pub struct WatchCounters {
    active: AtomicU64,
    cancelled_slow: AtomicU64,
    cancelled_compacted: AtomicU64,
}

impl WatchCounters {
    /// `(active, cancelled as too slow, cancelled by compaction)`.
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) {
    /// let (active, _, _) = node.watch_counters().get();
    /// assert!(active <= flotilla::MAX_WATCHERS);
    /// # }
    /// ```
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.active.load(Ordering::Relaxed),
            self.cancelled_slow.load(Ordering::Relaxed),
            self.cancelled_compacted.load(Ordering::Relaxed),
        )
    }

    /// Count one more watch, unless [`MAX_WATCHERS`] are active.
    fn enter(self: &Arc<Self>) -> Option<ActiveWatch> {
        let admitted = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_WATCHERS).then_some(n + 1))
            .is_ok();
        admitted.then(|| ActiveWatch(self.clone()))
    }
}

/// Counts a watch as active while it lives.
struct ActiveWatch(Arc<WatchCounters>);

impl Drop for ActiveWatch {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running watch: a [`Stream`] of messages. It ends after an `Err` (the reason the watch
/// was cancelled) or when the namespace stops on this node. Dropping it stops the watch.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// use futures::StreamExt;
///
/// let mut watch = cluster.watch(flotilla::WatchRequest::prefix(b"order/".to_vec())).await?;
/// while let Some(message) = watch.next().await {
///     println!("{:?}", message?); // an `Err` is the last item: why the watch ended
/// }
/// # Ok(()) }
/// ```
pub struct Watch {
    rx: mpsc::Receiver<WatchMessage>,
    /// Why the pump stopped, yielded once the messages before it are consumed.
    end: Arc<Mutex<Option<ApiError>>>,
    ended: bool,
    /// The first revision the watch delivers.
    start: u64,
}

impl Watch {
    /// The first revision this watch delivers (the one asked for, or the current one + 1).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let watch = cluster.watch(flotilla::WatchRequest::key(b"config".to_vec())).await?;
    /// // Asked "from now on" (revision 0): the revision after the current one.
    /// println!("changes from revision {} on", watch.start_revision());
    /// # Ok(()) }
    /// ```
    pub fn start_revision(&self) -> u64 {
        self.start
    }
}

impl Stream for Watch {
    type Item = Result<WatchMessage, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(message)) => Poll::Ready(Some(Ok(message))),
            Poll::Ready(None) => {
                self.ended = true;
                let reason = self.end.lock().unwrap_or_else(|p| p.into_inner()).take();
                Poll::Ready(reason.map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Cluster {
    /// Watch a key or a range from `request.from_revision` (see [`Watch`]). Refused at once
    /// with [`ApiError::Compacted`] when that revision is compacted, and with
    /// [`ApiError::Unavailable`] when this node already serves [`MAX_WATCHERS`] watches.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use flotilla::{ApiError, WatchRequest};
    ///
    /// let request = WatchRequest { from_revision: 100, ..WatchRequest::key(b"config".to_vec()) };
    /// match cluster.watch(request).await {
    ///     Ok(watch) => println!("replaying from revision {}", watch.start_revision()),
    ///     Err(ApiError::Compacted { compacted, .. }) => println!("history before {compacted} is gone: read, then watch"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch(&self, request: WatchRequest) -> Result<Watch, ApiError> {
        let guard = self.node.watch_counters.enter().ok_or_else(|| {
            ApiError::Unavailable(format!("this node serves {MAX_WATCHERS} watches already; try another node"))
        })?;
        let view = self.node.store.view(&self.namespace).map_err(store_read_error)?;
        let revs = kv::revisions(&view).map_err(|e| ApiError::Fatal(format!("reading the revisions: {e}")))?;
        let start = if request.from_revision == 0 { revs.current + 1 } else { request.from_revision };
        if start < revs.compacted {
            return Err(ApiError::Compacted { requested: start, compacted: revs.compacted });
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let end = Arc::new(Mutex::new(None));
        let pump = Pump {
            cluster: self.clone(),
            request,
            next: start,
            tx,
            end: end.clone(),
            quiet_since: Instant::now(),
            _active: guard,
        };
        tokio::spawn(pump.run());
        Ok(Watch { rx, end, ended: false, start })
    }
}

/// The task behind one watch.
struct Pump {
    cluster: Cluster,
    request: WatchRequest,
    /// The next revision to deliver.
    next: u64,
    tx: mpsc::Sender<WatchMessage>,
    end: Arc<Mutex<Option<ApiError>>>,
    /// When the watcher last heard something (changes or progress).
    quiet_since: Instant,
    _active: ActiveWatch,
}

/// What one pass of the pump found.
enum Pass {
    /// Delivered changes, or found more to read: go again at once.
    Again,
    /// Up to date at this revision: wait for the next apply.
    UpToDate(u64),
    /// The table cannot be read just now (a snapshot being installed).
    NotNow,
    /// There is more to deliver, but the watcher's buffer is full.
    Full,
}

impl Pump {
    async fn run(mut self) {
        let mut applied = self.cluster.group_raft().data_metrics();
        loop {
            let pass = match self.pass() {
                Ok(pass) => pass,
                Err(reason) => return self.stop(reason),
            };
            let revision = match pass {
                Pass::Again => continue,
                Pass::UpToDate(revision) => revision,
                Pass::NotNow => {
                    tokio::time::sleep(RETRY_READ).await;
                    continue;
                }
                Pass::Full => {
                    // `Ok(true)`: room again (the permit is released at once: the next pass
                    // sends); `Ok(false)`: the watcher is gone.
                    let room = tokio::time::timeout(SLOW_GRACE, self.tx.reserve()).await.map(|r| r.is_ok());
                    match room {
                        Ok(true) => continue,
                        Ok(false) => return,
                        Err(_) => {
                            let reason = self.too_slow();
                            return self.stop(reason);
                        }
                    }
                }
            };
            let progress_at = self.quiet_since + self.request.progress_every;
            tokio::select! {
                changed = applied.changed() => {
                    if changed.is_err() {
                        return self.stop(ApiError::Unavailable("the namespace stopped on this node".into()));
                    }
                }
                _ = tokio::time::sleep_until(progress_at) => {
                    if let Err(reason) = self.send(WatchMessage::Progress { revision }) {
                        return self.stop(reason);
                    }
                    self.quiet_since = Instant::now();
                }
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Read and deliver what is new.
    fn pass(&mut self) -> Result<Pass, ApiError> {
        let view = match self.cluster.node.store.view(&self.cluster.namespace) {
            Ok(view) => view,
            Err(flotilla_store::StoreError::Installing(_)) => return Ok(Pass::NotNow),
            Err(e) => return Err(store_read_error(e)),
        };
        // A pass delivers at most one revision per event it looks at, so reading no more events
        // than the buffer has room for means every send of this pass fits (this pump is the
        // only sender: room only grows meanwhile).
        let room = self.tx.capacity();
        if room == 0 {
            let current = kv::revisions(&view).map_err(|e| ApiError::Fatal(format!("reading the revisions: {e}")))?;
            return Ok(match self.next <= current.current {
                true => Pass::Full,
                false => Pass::UpToDate(current.current),
            });
        }
        let request = ChangesRequest {
            key: self.request.key.clone(),
            end: self.request.end.clone(),
            from: self.next,
            prev_kv: self.request.prev_kv,
        };
        let read = kv::changes(&view, &request, EVENTS_PER_PASS.min(room))
            .map_err(|e| ApiError::Fatal(format!("reading the namespace's history: {e}")))?;
        let changes = match read {
            Ok(changes) => changes,
            Err(KvRefusal::Compacted { requested, compacted }) => {
                self.cluster.node.watch_counters.cancelled_compacted.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::Compacted { requested, compacted });
            }
            Err(other) => return Err(crate::cluster_kv::refusal_error(other)),
        };
        if !changes.revisions.is_empty() {
            self.quiet_since = Instant::now();
        }
        for (revision, events) in changes.revisions {
            self.send(WatchMessage::Changes { revision, events })?;
            self.next = revision + 1;
        }
        self.next = self.next.max(changes.next);
        let current = kv::revisions(&view).map_err(|e| ApiError::Fatal(format!("reading the revisions: {e}")))?.current;
        match self.next <= current {
            true => Ok(Pass::Again),
            false => Ok(Pass::UpToDate(current)),
        }
    }

    /// Hand `message` to the watcher; a full buffer cancels the watch.
    fn send(&self, message: WatchMessage) -> Result<(), ApiError> {
        match self.tx.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.too_slow()),
            // The watcher is gone: nothing to tell.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// Count a watcher cancelled as too slow, and tell it where to resume.
    fn too_slow(&self) -> ApiError {
        self.cluster.node.watch_counters.cancelled_slow.fetch_add(1, Ordering::Relaxed);
        ApiError::Cancelled(format!(
            "the watcher left {WATCH_BUFFER} revisions waiting for {SLOW_GRACE:?}; watch again from revision {}, \
             the first one it has not received",
            self.next
        ))
    }

    /// End the watch with `reason`, delivered after the messages already queued.
    fn stop(self, reason: ApiError) {
        *self.end.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }
}
