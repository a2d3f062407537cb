//! One Observe stream of etcd's Election service: the leader, then every value it proclaims,
//! then the next leader, as etcd's election `observe` reports them.

use flotilla::{Cluster, Watch, WatchMessage, WatchRequest};
use flotilla_core::kv::{EventKind, WatchEvent};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::Status;

use crate::concurrency::{by_create, Recipes};
use crate::context::to_u64;
use crate::pb::etcdserverpb::range_request::SortOrder;
use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::mvccpb::KeyValue;
use crate::pb::v3electionpb::LeaderResponse;
use crate::range::to_etcd_kv;
use crate::status::status_of;

/// An Observe stream's task: what it watches and where its answers go.
pub(crate) struct Observer {
    recipes: Recipes,
    prefix: Vec<u8>,
    answers: mpsc::Sender<Result<LeaderResponse, Status>>,
}

impl Observer {
    pub(crate) fn new(
        recipes: Recipes,
        prefix: Vec<u8>,
        answers: mpsc::Sender<Result<LeaderResponse, Status>>,
    ) -> Self {
        Self { recipes, prefix, answers }
    }

    /// Report until the client goes away or a read or watch fails; then the stream ends
    /// without an error, as etcd's does.
    pub(crate) async fn run(self) {
        let answers = self.answers.clone();
        tokio::select! {
            () = answers.closed() => {}
            ended = self.observe() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "an election observer stopped");
                }
            }
        }
    }

    /// Each pass reports a leader and follows it until its key is deleted; the bounded answer
    /// channel paces the passes by the client's reading.
    async fn observe(&self) -> Result<(), Status> {
        loop {
            let (header, kv) = self.leader().await?;
            let (revision, key) = (header.revision, kv.key.clone());
            self.send(header, kv).await?;
            self.follow(key, to_u64(revision) + 1).await?;
        }
    }

    /// The leader now, or (nobody campaigns) the first key put under the prefix from now on,
    /// reported at its revision.
    async fn leader(&self) -> Result<(ResponseHeader, KeyValue), Status> {
        let oldest = self.recipes.get(by_create(&self.prefix, SortOrder::Ascend)).await?;
        let header = oldest.header.unwrap_or_default();
        if let Some(kv) = oldest.kvs.into_iter().next() {
            return Ok((header, kv));
        }
        let request =
            WatchRequest { from_revision: to_u64(header.revision), ..WatchRequest::prefix(self.prefix.clone()) };
        let (cluster, mut watch) = self.watch(request).await?;
        while let Some((_, events)) = next_changes(&mut watch).await? {
            if let Some(put) = events.into_iter().find(|e| e.kind == EventKind::Put) {
                let kv = to_etcd_kv(put.kv);
                return Ok((self.recipes.context().header(&cluster, to_u64(kv.mod_revision)), kv));
            }
        }
        Err(lost())
    }

    /// Report every put of the leader's `key` from revision `from` on, until it is deleted.
    async fn follow(&self, key: Vec<u8>, from: u64) -> Result<(), Status> {
        let (cluster, mut watch) = self.watch(WatchRequest { from_revision: from, ..WatchRequest::key(key) }).await?;
        while let Some((revision, events)) = next_changes(&mut watch).await? {
            for event in events {
                if event.kind == EventKind::Delete {
                    return Ok(());
                }
                self.send(self.recipes.context().header(&cluster, revision), to_etcd_kv(event.kv)).await?;
            }
        }
        Err(lost())
    }

    async fn watch(&self, request: WatchRequest) -> Result<(Cluster, Watch), Status> {
        let cluster = self.recipes.context().cluster()?;
        let watch = cluster.watch(request).await.map_err(|e| status_of(&e))?;
        Ok((cluster, watch))
    }

    async fn send(&self, header: ResponseHeader, kv: KeyValue) -> Result<(), Status> {
        let answer = LeaderResponse { header: Some(header), kv: Some(kv) };
        self.answers.send(Ok(answer)).await.map_err(|_| Status::cancelled("the observer's client went away"))
    }
}

/// The next revision's changes of `watch` (progress skipped), `None` when it ended.
async fn next_changes(watch: &mut Watch) -> Result<Option<(u64, Vec<WatchEvent>)>, Status> {
    while let Some(message) = watch.next().await {
        if let WatchMessage::Changes { revision, events } = message.map_err(|e| status_of(&e))? {
            return Ok(Some((revision, events)));
        }
    }
    Ok(None)
}

fn lost() -> Status {
    Status::unknown("flotilla: the election's watch ended")
}
