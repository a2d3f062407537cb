//! etcd's KV service: Range, Put, DeleteRange, Txn and Compact over the namespace's
//! [`Cluster`] KV API.

use flotilla::Cluster;
use flotilla_core::kv::{Compare, CompareOp, CompareTarget, RangeRequest, Txn};
use flotilla_core::Consistency;
use tonic::{Code, Request, Response, Status};

use crate::context::{to_i64, to_u64, EtcdContext};
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest as EtcdRange, RangeResponse, RangeStreamResponse, TxnRequest, TxnResponse,
};
use crate::range;
use crate::status::{refused, status_of, unsupported, KEY_NOT_FOUND, LEASE_PROVIDED, TIMEOUT, VALUE_PROVIDED};
use crate::txn::{self, Converted, Shape};

/// Attempts of a put with `ignore_value` or `ignore_lease`: it reads the key, then writes it on
/// condition that it did not change meanwhile, and reads again if it did.
const MAX_IGNORE_ATTEMPTS: usize = 8;

/// etcd's KV service for one namespace.
#[derive(Clone)]
pub(crate) struct KvService {
    context: EtcdContext,
}

impl KvService {
    pub(crate) fn new(context: EtcdContext) -> Self {
        Self { context }
    }

    /// Run `converted` as one transaction; the branch's responses, whether it succeeded, and
    /// the revision after it.
    async fn run(&self, cluster: &Cluster, converted: &Converted) -> Result<TxnResponse, Status> {
        let out = cluster.txn(converted.txn.clone()).await.map_err(|e| status_of(&e))?;
        let header = self.context.header(cluster, out.reply.revision);
        let succeeded = out.reply.succeeded;
        let responses = converted.responses(out.reply, &header);
        Ok(TxnResponse { header: Some(header), succeeded, responses })
    }

    /// A put with `ignore_value` or `ignore_lease`: the key's current value or lease, written
    /// back on condition that the key did not change since it was read.
    async fn put_keeping(&self, cluster: &Cluster, put: &PutRequest) -> Result<TxnResponse, Status> {
        if put.ignore_value && !put.value.is_empty() {
            return Err(refused(Code::InvalidArgument, VALUE_PROVIDED));
        }
        if put.ignore_lease && put.lease != 0 {
            return Err(refused(Code::InvalidArgument, LEASE_PROVIDED));
        }
        for _ in 0..MAX_IGNORE_ATTEMPTS {
            let read = cluster.range(RangeRequest::key(put.key.clone()), Consistency::Linearizable).await;
            let read = read.map_err(|e| status_of(&e))?;
            let Some(current) = read.result.kvs.into_iter().next() else {
                return Err(refused(Code::InvalidArgument, KEY_NOT_FOUND));
            };
            let write = PutRequest {
                value: if put.ignore_value { current.value } else { put.value.clone() },
                lease: if put.ignore_lease { to_i64(current.lease) } else { put.lease },
                ignore_value: false,
                ignore_lease: false,
                ..put.clone()
            };
            let unchanged = Compare {
                key: put.key.clone(),
                op: CompareOp::Equal,
                target: CompareTarget::ModRevision(current.mod_revision),
            };
            let mut converted = Converted::single(txn::put_op(&write)?, Shape::Put);
            converted.txn = Txn { compares: vec![unchanged], ..converted.txn };
            let answer = self.run(cluster, &converted).await?;
            if answer.succeeded {
                return Ok(answer);
            }
        }
        Err(refused(Code::Unavailable, TIMEOUT))
    }
}

/// etcd refuses a compaction to the revision already compacted, as one below it (Flotilla's
/// compaction accepts it, so that a retry finishes an interrupted one): a read just below
/// `revision` fails with the compacted error exactly when `revision` is not above the
/// compacted revision.
async fn refuse_compacted(cluster: &Cluster, revision: u64) -> Result<(), Status> {
    // A read at revision 0 reads the current one: revision 1 is compacted only past it.
    if revision < 2 {
        return Ok(());
    }
    let probe = RangeRequest { keys_only: true, revision: revision - 1, ..RangeRequest::key(vec![0u8]) };
    cluster.range(probe, Consistency::Linearizable).await.map_err(|e| status_of(&e))?;
    Ok(())
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<EtcdRange>) -> Result<Response<RangeResponse>, Status> {
        let cluster = self.context.cluster()?;
        let (answer, mut revision) = range::read(&cluster, request.get_ref()).await?;
        if request.get_ref().revision > 0 {
            // etcd's header carries the store's current revision, also for a read of the past
            // (the apiserver takes a list's resource version from it).
            revision = revision.max(self.context.current_revision(&cluster).await?);
        }
        Ok(Response::new(RangeResponse {
            header: Some(self.context.header(&cluster, revision)),
            kvs: answer.kvs,
            more: answer.more,
            count: to_i64(answer.count),
        }))
    }

    type RangeStreamStream = tokio_stream::Empty<Result<RangeStreamResponse, Status>>;

    async fn range_stream(&self, _: Request<EtcdRange>) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(unsupported("RangeStream"))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let cluster = self.context.cluster()?;
        let put = request.get_ref();
        let answer = if put.ignore_value || put.ignore_lease {
            self.put_keeping(&cluster, put).await?
        } else {
            self.run(&cluster, &Converted::single(txn::put_op(put)?, Shape::Put)).await?
        };
        match answer.responses.into_iter().next().and_then(|r| r.response) {
            Some(OpResponse::ResponsePut(mut response)) => {
                response.header = answer.header;
                Ok(Response::new(response))
            }
            other => Err(Status::internal(format!("flotilla: unexpected answer to a put: {other:?}"))),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let cluster = self.context.cluster()?;
        let converted = Converted::single(txn::delete_op(request.get_ref())?, Shape::Delete);
        let answer = self.run(&cluster, &converted).await?;
        match answer.responses.into_iter().next().and_then(|r| r.response) {
            Some(OpResponse::ResponseDeleteRange(mut response)) => {
                response.header = answer.header;
                Ok(Response::new(response))
            }
            other => Err(Status::internal(format!("flotilla: unexpected answer to a delete: {other:?}"))),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let cluster = self.context.cluster()?;
        let converted = txn::convert(request.get_ref())?;
        Ok(Response::new(self.run(&cluster, &converted).await?))
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let cluster = self.context.cluster()?;
        let revision = to_u64(request.get_ref().revision);
        refuse_compacted(&cluster, revision).await?;
        // Flotilla's compaction removes the history before it returns: `physical` always holds.
        cluster.compact(revision).await.map_err(|e| status_of(&e))?;
        let revision = self.context.current_revision(&cluster).await?;
        Ok(Response::new(CompactionResponse { header: Some(self.context.header(&cluster, revision)) }))
    }
}
