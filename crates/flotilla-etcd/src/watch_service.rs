//! etcd's Watch service: each stream is a [`Session`] task; its answers reach the client
//! through a bounded channel.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::context::EtcdContext;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{WatchRequest, WatchResponse};
use crate::watch_session::Session;

/// Answers of one stream waiting to be sent: a client that does not read holds its watchers
/// up, and Flotilla cancels a watcher held up too long (see `flotilla::SLOW_GRACE`).
const ANSWER_BUFFER: usize = 64;

/// etcd's Watch service for one namespace.
#[derive(Clone)]
pub(crate) struct WatchService {
    context: EtcdContext,
}

impl WatchService {
    pub(crate) fn new(context: EtcdContext) -> Self {
        Self { context }
    }
}

/// The stream of watch answers.
type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let (out, answers) = mpsc::channel(ANSWER_BUFFER);
        tokio::spawn(Session::run(self.context.clone(), request.into_inner(), out));
        Ok(Response::new(Box::pin(ReceiverStream::new(answers))))
    }
}
