//! One etcd Watch stream: the watchers it created, each a Flotilla [`Watch`] forwarded by its
//! own task into one bounded channel, and the requests of the stream (create, cancel,
//! progress), handled one at a time by a single task.

use std::collections::HashMap;
use std::time::Duration;

use flotilla::{Watch, WatchMessage, WatchRequest as FlotillaWatch};
use flotilla_core::ApiError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

use crate::context::{to_i64, to_u64, EtcdContext};
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use crate::range::interval;
use crate::status::{status_of, COMPACTED};
use crate::watch_events::{events_of, progress_answer, watch_id, EventFilters};

/// etcd's watch id of a response that belongs to no watcher (`clientv3.InvalidWatchID`).
const NO_WATCHER: i64 = -1;

/// etcd's refusal of a watch id taken on the stream (`mvcc.ErrWatcherDuplicateID`).
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// How often Flotilla's watch reports progress on a quiet watcher: a progress request is
/// answered once every watcher has reported up to the same revision, so within about this.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Least time between two progress notifications one watcher sends (`progress_notify`).
const NOTIFY_EVERY: Duration = Duration::from_secs(5);

/// Messages of the stream's watchers waiting for the stream task.
const FORWARD_BUFFER: usize = 64;

/// What a watcher's task forwards.
enum Forwarded {
    /// A message of the Flotilla watch.
    Message(WatchMessage),
    /// The watch ended, with its reason if it gave one.
    Ended(Option<ApiError>),
}

/// A message of watcher `id`, created as the stream's `generation`-th watcher (a cancelled
/// watcher's last messages, or those of an earlier watcher with the same id, are dropped).
struct Tagged {
    id: i64,
    generation: u64,
    forwarded: Forwarded,
}

/// One watcher of the stream.
struct Watcher {
    generation: u64,
    task: JoinHandle<()>,
    filters: EventFilters,
    progress_notify: bool,
    last_notify: Instant,
    /// Revision up to which the watcher delivered (or knows nothing changed).
    progress: u64,
}

/// The state of one Watch stream.
pub(crate) struct Session {
    context: EtcdContext,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    forward_tx: mpsc::Sender<Tagged>,
    watchers: HashMap<i64, Watcher>,
    next_id: i64,
    generations: u64,
    /// Highest revision a response of the stream has carried.
    sent: u64,
    progress_wanted: bool,
}

/// The stream's client is gone (its answers cannot be sent).
struct Gone;

impl Session {
    /// Serve `inbound` until the client closes it or stops reading answers from `out`.
    pub(crate) async fn run(
        context: EtcdContext,
        mut inbound: Streaming<WatchRequest>,
        out: mpsc::Sender<Result<WatchResponse, Status>>,
    ) {
        let (forward_tx, mut forwarded) = mpsc::channel(FORWARD_BUFFER);
        let mut session = Session {
            context,
            out,
            forward_tx,
            watchers: HashMap::new(),
            next_id: 0,
            generations: 0,
            sent: 0,
            progress_wanted: false,
        };
        loop {
            let step = tokio::select! {
                request = inbound.next() => match request {
                    Some(Ok(request)) => session.request(request).await,
                    _ => Err(Gone),
                },
                Some(tagged) = forwarded.recv() => session.forwarded(tagged).await,
            };
            if step.is_err() {
                break;
            }
        }
        for watcher in session.watchers.values() {
            watcher.task.abort();
        }
    }

    async fn request(&mut self, request: WatchRequest) -> Result<(), Gone> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_wanted = true;
                self.answer_progress().await
            }
            // etcd ignores what it does not know rather than end the stream.
            None => Ok(()),
        }
    }

    async fn create(&mut self, mut create: WatchCreateRequest) -> Result<(), Gone> {
        if create.key.is_empty() {
            create.key = vec![0]; // etcd: "\0" is the smallest key
        }
        if create.start_revision < 0 {
            return self.refuse_create(COMPACTED).await;
        }
        let Some((id, next)) = watch_id(create.watch_id, self.next_id, |id| self.watchers.contains_key(&id)) else {
            return self.refuse_create(DUPLICATE_ID).await;
        };
        let watched = match self.start(&create).await {
            Ok(watched) => watched,
            Err(ApiError::Compacted { compacted, .. }) => {
                // etcd creates the watcher, then cancels it with the compacted revision.
                self.next_id = next;
                let created = WatchResponse { watch_id: id, created: true, ..self.response(None).await };
                self.send(created).await?;
                let header = self.response(None).await.header;
                return self.send(WatchResponse { header, ..compacted_away(id, compacted) }).await;
            }
            Err(e) => return self.refuse_create(status_of(&e).message()).await,
        };
        self.next_id = next;
        self.generations += 1;
        let progress = watched.start_revision().saturating_sub(1);
        let task = tokio::spawn(forward(watched, id, self.generations, self.forward_tx.clone()));
        let watcher = Watcher {
            generation: self.generations,
            task,
            filters: EventFilters::of(&create.filters),
            progress_notify: create.progress_notify,
            last_notify: Instant::now(),
            progress,
        };
        self.watchers.insert(id, watcher);
        let created = WatchResponse { watch_id: id, created: true, ..self.response(None).await };
        self.send(created).await
    }

    async fn start(&self, create: &WatchCreateRequest) -> Result<Watch, ApiError> {
        let end = interval(&create.key, &create.range_end).map_err(|s| ApiError::InvalidKey(s.message().into()))?;
        let cluster = self.context.node().cluster(self.context.namespace().as_str())?;
        let request = FlotillaWatch {
            key: create.key.clone(),
            end,
            from_revision: to_u64(create.start_revision),
            prev_kv: create.prev_kv,
            progress_every: PROGRESS_EVERY,
        };
        cluster.watch(request).await
    }

    async fn refuse_create(&mut self, reason: &str) -> Result<(), Gone> {
        let refused = WatchResponse {
            watch_id: NO_WATCHER,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..self.response(None).await
        };
        self.send(refused).await
    }

    async fn cancel(&mut self, id: i64) -> Result<(), Gone> {
        // etcd answers only the cancel of a watcher that exists.
        let Some(watcher) = self.watchers.remove(&id) else { return Ok(()) };
        watcher.task.abort();
        let canceled = WatchResponse { watch_id: id, canceled: true, ..self.response(None).await };
        self.send(canceled).await?;
        self.answer_progress().await
    }

    async fn forwarded(&mut self, tagged: Tagged) -> Result<(), Gone> {
        let Some(watcher) = self.watchers.get_mut(&tagged.id).filter(|w| w.generation == tagged.generation) else {
            return Ok(());
        };
        let id = tagged.id;
        let response = match tagged.forwarded {
            Forwarded::Message(WatchMessage::Changes { revision, events }) => {
                watcher.progress = revision;
                let events = events_of(events, watcher.filters);
                (!events.is_empty()).then(|| (Some(revision), WatchResponse { events, ..created_less(id) }))
            }
            Forwarded::Message(WatchMessage::Progress { revision }) => {
                watcher.progress = revision;
                let notify = watcher.progress_notify && watcher.last_notify.elapsed() >= NOTIFY_EVERY;
                if notify {
                    watcher.last_notify = Instant::now();
                }
                notify.then(|| (Some(revision), created_less(id)))
            }
            Forwarded::Ended(reason) => {
                self.watchers.remove(&id);
                match ending(id, reason) {
                    Ending::Cancel(response) => Some((None, response)),
                    Ending::FailStream(status) => {
                        // The client's next read sees the error; nothing more is sent.
                        let _ = self.out.send(Err(status)).await;
                        return Err(Gone);
                    }
                }
            }
        };
        if let Some((revision, response)) = response {
            let header = self.response(revision).await.header;
            self.send(WatchResponse { header, ..response }).await?;
        }
        self.answer_progress().await
    }

    /// Answer a pending progress request once [`progress_answer`] allows it.
    async fn answer_progress(&mut self) -> Result<(), Gone> {
        if !self.progress_wanted {
            return Ok(());
        }
        let progress: Vec<u64> = self.watchers.values().map(|w| w.progress).collect();
        let answer = progress_answer(&progress, self.sent);
        if answer.is_none() && !progress.is_empty() {
            return Ok(());
        }
        self.progress_wanted = false;
        let current = self.response(None).await;
        let current_revision = current.header.as_ref().map_or(0, |h| to_u64(h.revision));
        // A watcher from a future revision promises nothing before it: never answer past now.
        let revision = answer.map_or(current_revision, |a| a.min(current_revision));
        let response = WatchResponse { watch_id: NO_WATCHER, ..self.response(Some(revision)).await };
        self.send(response).await
    }

    /// A response with its header at `revision` (`None`: the namespace's current revision).
    async fn response(&self, revision: Option<u64>) -> WatchResponse {
        let header = match self.context.node().cluster(self.context.namespace().as_str()) {
            Ok(cluster) => {
                let revision = match revision {
                    Some(r) => r,
                    None => self.context.current_revision(&cluster).await.unwrap_or(0),
                };
                self.context.header(&cluster, revision)
            }
            Err(_) => ResponseHeader {
                member_id: self.context.member_id(),
                revision: to_i64(revision.unwrap_or(0)),
                ..Default::default()
            },
        };
        WatchResponse { header: Some(header), ..WatchResponse::default() }
    }

    async fn send(&mut self, response: WatchResponse) -> Result<(), Gone> {
        let revision = response.header.as_ref().map_or(0, |h| to_u64(h.revision));
        self.sent = self.sent.max(revision);
        self.out.send(Ok(response)).await.map_err(|_| Gone)
    }
}

/// A response of watcher `id`, without header.
fn created_less(id: i64) -> WatchResponse {
    WatchResponse { watch_id: id, ..WatchResponse::default() }
}

/// How a stream answers the end of one of its watchers.
#[derive(Debug)]
enum Ending {
    /// Cancel that watcher (etcd's `canceled`, with `compact_revision` or a reason); the
    /// stream and its other watchers go on.
    Cancel(WatchResponse),
    /// End the whole stream with this error, as etcd's server does when it stops: etcd's
    /// clients watch again (through another endpoint) after a retryable stream error, but
    /// take a cancelled watcher as final and hand the end to the application.
    FailStream(Status),
}

/// etcd's answer when watcher `id` ends: compacted away (etcd's `compact_revision`); the
/// namespace stopped on this node or is unavailable for now (a stream error the client
/// retries); or cancelled with the reason.
fn ending(id: i64, reason: Option<ApiError>) -> Ending {
    match reason {
        Some(ApiError::Compacted { compacted, .. }) => Ending::Cancel(compacted_away(id, compacted)),
        None => Ending::FailStream(Status::unavailable(STOPPED_HERE)),
        Some(e) => match status_of(&e) {
            status if status.code() == tonic::Code::Unavailable => Ending::FailStream(status),
            status => Ending::Cancel(WatchResponse {
                canceled: true,
                cancel_reason: status.message().to_string(),
                ..created_less(id)
            }),
        },
    }
}

/// etcd's cancel of watcher `id` whose start was compacted away, up to `compacted`.
fn compacted_away(id: i64, compacted: u64) -> WatchResponse {
    WatchResponse { canceled: true, compact_revision: to_i64(compacted), ..created_less(id) }
}

/// Why a watch stream ends when its namespace stops on this node (the node closes it, or
/// shuts down).
const STOPPED_HERE: &str = "flotilla: the namespace stopped on this node";

/// Forward `watch`'s messages as watcher `id` until it ends or the stream is gone.
async fn forward(mut watch: Watch, id: i64, generation: u64, to: mpsc::Sender<Tagged>) {
    loop {
        let (forwarded, last) = match watch.next().await {
            Some(Ok(message)) => (Forwarded::Message(message), false),
            Some(Err(reason)) => (Forwarded::Ended(Some(reason)), true),
            None => (Forwarded::Ended(None), true),
        };
        if to.send(Tagged { id, generation, forwarded }).await.is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// etcd's clients watch again after a retryable stream error, not after a cancel: what
    /// clears by itself ends the stream; what does not cancels the one watcher.
    #[test]
    fn a_watcher_ends_as_etcd_would_end_it() {
        let cases: Vec<(Option<ApiError>, Result<&str, Code>)> = vec![
            (Some(ApiError::Compacted { requested: 2, compacted: 9 }), Ok("")),
            (None, Err(Code::Unavailable)),
            (Some(ApiError::ShuttingDown), Err(Code::Unavailable)),
            (Some(ApiError::NoLeader("ns".into())), Err(Code::Unavailable)),
            (Some(ApiError::Malformed("bad".into())), Ok("flotilla: ")),
            (Some(ApiError::Fatal("disk".into())), Ok("flotilla: ")),
        ];
        for (reason, expected) in cases {
            let shown = format!("{reason:?}");
            match (ending(7, reason), expected) {
                (Ending::Cancel(r), Ok(prefix)) => {
                    assert!(r.canceled && r.watch_id == 7, "{shown}: {r:?}");
                    assert!(r.cancel_reason.starts_with(prefix), "{shown}: {r:?}");
                }
                (Ending::FailStream(status), Err(code)) => assert_eq!(status.code(), code, "{shown}"),
                (got, want) => panic!("{shown}: got {got:?}, expected {want:?}"),
            }
        }
        let Ending::Cancel(compacted) = ending(3, Some(ApiError::Compacted { requested: 2, compacted: 9 })) else {
            panic!("a compaction cancels");
        };
        assert_eq!(compacted.compact_revision, 9);
    }
}
