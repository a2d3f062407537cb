//! etcd's Election service (`v3electionpb`): Campaign, Proclaim, Leader, Observe and Resign,
//! etcd's election run over the endpoint's KV service and the namespace's watches as etcd's
//! server runs it (see [`crate::concurrency`]).

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::concurrency::{by_create, contender_key, created_at, op, prefix_of, Recipes};
use crate::context::EtcdContext;
use crate::election_observer::Observer;
use crate::pb::etcdserverpb::range_request::SortOrder;
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, TxnRequest};
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse,
    ResignRequest, ResignResponse,
};
use crate::withdraw::Withdraw;

/// etcd's answer to a Proclaim or Resign without the leader's key.
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
/// etcd's answer to a Proclaim by a key that no longer leads (or never did).
const NOT_LEADER: &str = "election: not leader";
/// etcd's answer to Leader when nobody campaigns.
pub(crate) const NO_LEADER: &str = "election: no leader";

/// Observe answers waiting to be sent; the observer waits while they are full.
const OBSERVE_BUFFER: usize = 16;

/// etcd's Election service for one namespace.
#[derive(Clone)]
pub(crate) struct ElectionService {
    recipes: Recipes,
}

impl ElectionService {
    pub(crate) fn new(context: EtcdContext) -> Self {
        Self { recipes: Recipes::new(context) }
    }

    /// The transaction that resigns `leader`: delete its key if it is still the same one.
    fn resignation(leader: &LeaderKey) -> TxnRequest {
        let delete = DeleteRangeRequest { key: leader.key.clone(), ..Default::default() };
        TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![op(Op::RequestDeleteRange(delete))],
            failure: Vec::new(),
        }
    }

    /// Set the value of `leader`'s key, if it is still the same one (etcd's `Proclaim`).
    async fn proclaim(&self, leader: &LeaderKey, value: Vec<u8>) -> Result<ProclaimResponse, Status> {
        let put = PutRequest { key: leader.key.clone(), value, lease: leader.lease, ..Default::default() };
        let txn = TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![op(Op::RequestPut(put))],
            failure: Vec::new(),
        };
        let answer = self.recipes.txn(txn).await?;
        if !answer.succeeded {
            return Err(Status::unknown(NOT_LEADER));
        }
        Ok(ProclaimResponse { header: answer.header })
    }
}

/// The stream of Observe answers.
type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        let ask = request.into_inner();
        let lease = self.recipes.session_lease(ask.lease).await?;
        let prefix = prefix_of(&ask.name);
        let key = contender_key(&prefix, lease);
        let place = self.recipes.take_place(&key, &ask.value, lease, None).await?;
        let leader = LeaderKey { name: ask.name, key, rev: place.rev, lease };
        // From here a failure or a client giving up resigns, as etcd's election does.
        let withdraw = Withdraw::armed(self.recipes.clone(), Self::resignation(&leader));
        // A campaign again on the same lease keeps its place and takes the new value.
        if place.existing_value().is_some_and(|v| v != ask.value.as_slice()) {
            self.proclaim(&leader, ask.value).await?;
        }
        self.recipes.wait_deletes(&prefix, place.rev - 1).await?;
        withdraw.disarm();
        Ok(Response::new(CampaignResponse { header: place.answer.header, leader: Some(leader) }))
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        let ask = request.into_inner();
        let leader = ask.leader.ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        Ok(Response::new(ElectionService::proclaim(self, &leader, ask.value).await?))
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let prefix = prefix_of(&request.into_inner().name);
        let oldest = self.recipes.get(by_create(&prefix, SortOrder::Ascend)).await?;
        let Some(kv) = oldest.kvs.into_iter().next() else {
            return Err(Status::unknown(NO_LEADER));
        };
        Ok(Response::new(LeaderResponse { header: oldest.header, kv: Some(kv) }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        let (answers, stream) = mpsc::channel(OBSERVE_BUFFER);
        let observer = Observer::new(self.recipes.clone(), prefix_of(&request.into_inner().name), answers);
        tokio::spawn(observer.run());
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let leader = request.into_inner().leader.ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let answer = self.recipes.txn(Self::resignation(&leader)).await?;
        Ok(Response::new(ResignResponse { header: answer.header }))
    }
}
