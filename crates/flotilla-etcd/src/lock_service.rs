//! etcd's Lock service (`v3lockpb`): Lock and Unlock, etcd's mutex run over the endpoint's KV
//! service as etcd's server runs it (see [`crate::concurrency`]).

use tonic::{Request, Response, Status};

use crate::concurrency::{by_create, contender_key, op, prefix_of, range_kv, Recipes};
use crate::context::EtcdContext;
use crate::pb::etcdserverpb::range_request::SortOrder;
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{DeleteRangeRequest, RangeRequest, TxnRequest};
use crate::pb::mvccpb::KeyValue;
use crate::pb::v3lockpb::lock_server::Lock;
use crate::pb::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::withdraw::Withdraw;

/// etcd's mutex error when the contender's key vanished while it waited (its lease ended).
const SESSION_EXPIRED: &str = "mutex: session is expired";

/// etcd's Lock service for one namespace.
#[derive(Clone)]
pub(crate) struct LockService {
    recipes: Recipes,
}

impl LockService {
    pub(crate) fn new(context: EtcdContext) -> Self {
        Self { recipes: Recipes::new(context) }
    }
}

/// Whether a contender whose key was created at `rev` holds the lock, given the oldest key of
/// the lock's prefix (etcd's mutex: no key, or its own, is the oldest).
fn holds(oldest: Option<&KeyValue>, rev: i64) -> bool {
    oldest.is_none_or(|kv| kv.create_revision == rev)
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let ask = request.into_inner();
        let lease = self.recipes.session_lease(ask.lease).await?;
        let prefix = prefix_of(&ask.name);
        let key = contender_key(&prefix, lease);
        let owner = op(Op::RequestRange(by_create(&prefix, SortOrder::Ascend)));
        let place = self.recipes.take_place(&key, b"", lease, Some(owner)).await?;
        if holds(range_kv(place.answer.responses.get(1)), place.rev) {
            return Ok(Response::new(LockResponse { header: place.answer.header, key }));
        }
        // From here a failure or a client giving up deletes the key, as etcd's mutex does.
        let delete = DeleteRangeRequest { key: key.clone(), ..Default::default() };
        let withdraw = Withdraw::armed(
            self.recipes.clone(),
            TxnRequest { success: vec![op(Op::RequestDeleteRange(delete))], ..Default::default() },
        );
        self.recipes.wait_deletes(&prefix, place.rev - 1).await?;
        let mine = self.recipes.get(RangeRequest { key: key.clone(), ..Default::default() }).await?;
        withdraw.disarm();
        if mine.kvs.is_empty() {
            return Err(Status::unknown(SESSION_EXPIRED));
        }
        Ok(Response::new(LockResponse { header: mine.header, key }))
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let deleted = self.recipes.delete(request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse { header: deleted.header }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_holds() {
        let oldest = |rev| KeyValue { create_revision: rev, ..Default::default() };
        for (owner, rev, expected) in [(None, 7, true), (Some(oldest(7)), 7, true), (Some(oldest(5)), 7, false)] {
            assert_eq!(holds(owner.as_ref(), rev), expected, "{owner:?} {rev}");
        }
    }
}
