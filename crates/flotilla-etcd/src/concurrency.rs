//! etcd's concurrency recipes (its `client/v3/concurrency`: the mutex and the election) run
//! inside the endpoint over its own KV service and the namespace's watches, as etcd's server
//! runs them for its Lock and Election services (`v3lock`, `v3election`) over an in-process
//! client.
//!
//! Flotilla's own locks (`Cluster::lock`, `Cluster::campaign`) cannot carry etcd's: they keep
//! their keys under `__lock/` and `__election/`, take and renew their own lease and bound
//! their wait, where etcd's put `name/<lease id in hex>` in the client's key space, on the
//! client's lease, and wait for as long as the client does. So the recipes are built here the
//! way etcd builds them, and their keys are ordinary keys any etcd client sees.

use std::time::Duration;

use flotilla::{WatchMessage, WatchRequest};
use flotilla_core::kv::EventKind;
use tokio_stream::StreamExt;
use tonic::{Request, Status};

use crate::context::{to_u64, EtcdContext};
use crate::kv_service::KvService;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseOp,
    TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::KeyValue;
use crate::status::status_of;

/// The lease a Lock or Campaign without one is given (etcd's `concurrency.defaultSessionTTL`).
/// As in etcd's server, nobody renews it: the lock or leadership ends with it.
const SESSION_TTL: Duration = Duration::from_secs(60);

/// A contender's place: the answer of the transaction that took it, and the create revision of
/// its key (its rank: the oldest key of the prefix holds the lock or leads).
pub(crate) struct Place {
    /// The transaction's answer: the success branch created the key, the failure branch read it
    /// (the contender was already there, on the same lease).
    pub(crate) answer: TxnResponse,
    /// The key's create revision.
    pub(crate) rev: i64,
}

impl Place {
    /// The value the key had when the place was already taken (the failure branch's read).
    pub(crate) fn existing_value(&self) -> Option<&[u8]> {
        if self.answer.succeeded {
            return None;
        }
        range_kv(self.answer.responses.first()).map(|kv| kv.value.as_slice())
    }
}

/// etcd's mutex and election steps over one endpoint's KV service.
#[derive(Clone)]
pub(crate) struct Recipes {
    kv: KvService,
    context: EtcdContext,
}

impl Recipes {
    pub(crate) fn new(context: EtcdContext) -> Self {
        Self { kv: KvService::new(context.clone()), context }
    }

    /// The endpoint's context.
    pub(crate) fn context(&self) -> &EtcdContext {
        &self.context
    }

    /// The client's lease, or for 0 a new lease of [`SESSION_TTL`] (etcd's server opens a
    /// session on a new lease and orphans it: it is not renewed).
    pub(crate) async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let cluster = self.context.cluster()?;
        let granted = cluster.lease_grant(0, SESSION_TTL).await.map_err(|e| status_of(&e))?;
        Ok(crate::context::to_i64(granted.id))
    }

    /// A transaction through the KV service (the same checks and answers as a client's).
    pub(crate) async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, Status> {
        Ok(self.kv.txn(Request::new(request)).await?.into_inner())
    }

    /// A linearizable range through the KV service.
    pub(crate) async fn get(&self, request: RangeRequest) -> Result<RangeResponse, Status> {
        Ok(self.kv.range(Request::new(request)).await?.into_inner())
    }

    /// Delete `key` through the KV service.
    pub(crate) async fn delete(&self, key: Vec<u8>) -> Result<DeleteRangeResponse, Status> {
        let request = DeleteRangeRequest { key, ..Default::default() };
        Ok(self.kv.delete_range(Request::new(request)).await?.into_inner())
    }

    /// Create `key` with `value` on `lease` unless it exists (so a retry on the same lease
    /// keeps its place), running `also` after the put or the read in both branches (etcd's
    /// mutex reads the owner in the same transaction).
    pub(crate) async fn take_place(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
        also: Option<RequestOp>,
    ) -> Result<Place, Status> {
        let put =
            op(Op::RequestPut(PutRequest { key: key.to_vec(), value: value.to_vec(), lease, ..Default::default() }));
        let get = op(Op::RequestRange(RangeRequest { key: key.to_vec(), ..Default::default() }));
        let (mut success, mut failure) = (vec![put], vec![get]);
        success.extend(also.clone());
        failure.extend(also);
        let request = TxnRequest { compare: vec![created_at(key, 0)], success, failure };
        let answer = self.txn(request).await?;
        let rev = if answer.succeeded {
            answer.header.map_or(0, |h| h.revision)
        } else {
            // The key may have gone between the compare and now only if the lease ended in
            // between; etcd's recipe would fail on it too.
            let existing = range_kv(answer.responses.first());
            existing.map(|kv| kv.create_revision).ok_or_else(|| Status::unknown("mutex: session is expired"))?
        };
        Ok(Place { answer, rev })
    }

    /// Wait until no key of `prefix` created at or before `max_create_rev` is left (etcd's
    /// `waitDeletes`): watch the newest of them until it is deleted, then look again. Each
    /// pass waits for a different key, and no key can be created at an old revision, so the
    /// passes are at most the contenders ahead; the wait itself lasts as long as the client's.
    pub(crate) async fn wait_deletes(&self, prefix: &[u8], max_create_rev: i64) -> Result<(), Status> {
        // Nothing is created at or before revision 1 (a namespace's first write is revision 2,
        // as in etcd), and a bound of 0 would read as "no bound".
        if max_create_rev <= 0 {
            return Ok(());
        }
        loop {
            let request = RangeRequest { max_create_revision: max_create_rev, ..by_create(prefix, SortOrder::Descend) };
            let newest = self.get(request).await?;
            let Some(kv) = newest.kvs.into_iter().next() else {
                return Ok(());
            };
            self.wait_delete(kv.key, newest.header.map_or(0, |h| h.revision)).await?;
        }
    }

    /// Wait until `key` is deleted at or after revision `rev` (etcd's `waitDelete`).
    async fn wait_delete(&self, key: Vec<u8>, rev: i64) -> Result<(), Status> {
        let cluster = self.context.cluster()?;
        let request = WatchRequest { from_revision: to_u64(rev), ..WatchRequest::key(key) };
        let mut watch = cluster.watch(request).await.map_err(|e| status_of(&e))?;
        while let Some(message) = watch.next().await {
            if let WatchMessage::Changes { events, .. } = message.map_err(|e| status_of(&e))? {
                if events.iter().any(|e| e.kind == EventKind::Delete) {
                    return Ok(());
                }
            }
        }
        Err(Status::unknown("lost watcher waiting for delete"))
    }
}

/// A request operation.
pub(crate) fn op(request: Op) -> RequestOp {
    RequestOp { request: Some(request) }
}

/// etcd's compare "the create revision of `key` is `rev`" (0: the key does not exist).
pub(crate) fn created_at(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        range_end: Vec::new(),
    }
}

/// The oldest (ascending) or newest (descending) key of `prefix` by create revision: etcd's
/// `WithFirstCreate` and `WithLastCreate`.
pub(crate) fn by_create(prefix: &[u8], order: SortOrder) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

/// The first key of a range answer inside a transaction's answer.
pub(crate) fn range_kv(response: Option<&ResponseOp>) -> Option<&KeyValue> {
    match response.and_then(|r| r.response.as_ref()) {
        Some(OpResponse::ResponseRange(range)) => range.kvs.first(),
        _ => None,
    }
}

/// The end of the interval of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`): the
/// prefix with its last byte below 0xff raised by one and what follows it dropped, or `"\0"`
/// (every key from the prefix on) when every byte is 0xff.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|b| *b < 0xff) {
        Some(at) => {
            let mut end = prefix[..=at].to_vec();
            end[at] += 1;
            end
        }
        None => vec![0],
    }
}

/// `name/` followed by `lease` in lowercase hex: a contender's key (etcd's `%s/%x`).
pub(crate) fn contender_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// `name/`: the prefix of a lock's or an election's keys.
pub(crate) fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        for (prefix, end) in
            [(&b"a/"[..], &b"a0"[..]), (b"a\xff", b"b"), (b"a\xff\xff", b"b"), (b"\xff", b"\0"), (b"\xff\xff", b"\0")]
        {
            assert_eq!(prefix_end(prefix), end, "{prefix:?}");
        }
    }

    #[test]
    fn contender_keys_are_etcds() {
        assert_eq!(contender_key(&prefix_of(b"job"), 0x694d_7a3b_1c2f_0a11), b"job/694d7a3b1c2f0a11");
        assert_eq!(contender_key(&prefix_of(b"x"), 10), b"x/a");
    }
}
