//! etcd's transactions, puts and deletes as Flotilla transactions, and their results back.
//!
//! Flotilla's `Txn` is etcd's with compares on single keys: a compare over a key range and
//! `ignore_value`/`ignore_lease` inside a transaction are refused with a message saying so.
//! Nested transactions nest in Flotilla's too, at most [`kv::MAX_TXN_DEPTH`] levels deep.

use flotilla_core::kv::{self, Compare, CompareOp, CompareTarget, OpResult, Txn, TxnOp, TxnReply};
use tonic::{Code, Status};

use crate::context::to_i64;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget as EtcdTarget, TargetUnion};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::{
    Compare as EtcdCompare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::range::{interval, to_etcd_kv, Query};
use crate::status::{refused, unsupported, EMPTY_KEY, TOO_MANY_OPS};

/// What each operation of a branch answers, to shape its result the way etcd does.
#[derive(Debug, Clone)]
pub(crate) enum Shape {
    /// A put.
    Put,
    /// A delete.
    Delete,
    /// A range, shaped by its query (filters, sorting, limit, count).
    Range(Box<Query>),
    /// A nested transaction, with the shapes of its branches.
    Txn(Box<Branches>),
}

/// The shapes of a transaction's two branches.
#[derive(Debug, Clone)]
pub(crate) struct Branches {
    success: Vec<Shape>,
    failure: Vec<Shape>,
}

impl Branches {
    /// etcd's responses to the branch that ran (`succeeded`), from its `results`.
    fn responses(&self, succeeded: bool, results: Vec<OpResult>, header: &ResponseHeader) -> Vec<ResponseOp> {
        let shapes = if succeeded { &self.success } else { &self.failure };
        shapes
            .iter()
            .zip(results)
            .map(|(shape, result)| ResponseOp { response: Some(response(shape, result, header)) })
            .collect()
    }
}

/// An etcd transaction as Flotilla runs it, with the shapes of both branches.
#[derive(Debug, Clone)]
pub(crate) struct Converted {
    /// Flotilla's transaction.
    pub(crate) txn: Txn,
    /// Shapes of its branches.
    shapes: Branches,
}

impl Converted {
    /// A transaction without compares of the single operation `op`.
    pub(crate) fn single(op: TxnOp, shape: Shape) -> Self {
        let shapes = Branches { success: vec![shape], failure: Vec::new() };
        Self { txn: Txn { success: vec![op], ..Txn::default() }, shapes }
    }

    /// etcd's responses to the branch that ran. Each carries only `header`'s revision, as
    /// etcd's do (the ids and term are in the transaction's own header); so do those of
    /// nested transactions.
    pub(crate) fn responses(&self, reply: TxnReply, header: &ResponseHeader) -> Vec<ResponseOp> {
        let header = &ResponseHeader { revision: header.revision, ..ResponseHeader::default() };
        self.shapes.responses(reply.succeeded, reply.results, header)
    }
}

/// Convert an etcd transaction.
pub(crate) fn convert(request: &TxnRequest) -> Result<Converted, Status> {
    convert_at(request, 1)
}

/// Convert an etcd transaction nested at `depth` (1: not nested).
fn convert_at(request: &TxnRequest, depth: usize) -> Result<Converted, Status> {
    let max = kv::MAX_TXN_OPS;
    if request.compare.len() > max || request.success.len() + request.failure.len() > max {
        return Err(refused(Code::InvalidArgument, TOO_MANY_OPS));
    }
    if depth > kv::MAX_TXN_DEPTH {
        let text = format!("flotilla: transactions nest at most {} levels deep", kv::MAX_TXN_DEPTH);
        return Err(Status::invalid_argument(text));
    }
    let compares = request.compare.iter().map(compare).collect::<Result<Vec<_>, _>>()?;
    let (success, success_shapes) = branch(&request.success, depth)?;
    let (failure, failure_shapes) = branch(&request.failure, depth)?;
    let shapes = Branches { success: success_shapes, failure: failure_shapes };
    Ok(Converted { txn: Txn { compares, success, failure }, shapes })
}

fn branch(ops: &[RequestOp], depth: usize) -> Result<(Vec<TxnOp>, Vec<Shape>), Status> {
    let mut converted = Vec::with_capacity(ops.len());
    let mut shapes = Vec::with_capacity(ops.len());
    for op in ops {
        let (op, shape) = match &op.request {
            Some(Request::RequestPut(put)) => (put_op(put)?, Shape::Put),
            Some(Request::RequestDeleteRange(delete)) => (delete_op(delete)?, Shape::Delete),
            Some(Request::RequestRange(range)) => {
                let query = Query::of(range)?;
                (TxnOp::Range(query.txn_read()), Shape::Range(Box::new(query)))
            }
            Some(Request::RequestTxn(inner)) => {
                let nested = convert_at(inner, depth + 1)?;
                (TxnOp::Txn(Box::new(nested.txn)), Shape::Txn(Box::new(nested.shapes)))
            }
            None => return Err(Status::invalid_argument("flotilla: a transaction operation names no request")),
        };
        converted.push(op);
        shapes.push(shape);
    }
    Ok((converted, shapes))
}

/// Flotilla's put of an etcd put (its `ignore_value` and `ignore_lease` resolved already).
pub(crate) fn put_op(put: &PutRequest) -> Result<TxnOp, Status> {
    if put.key.is_empty() {
        return Err(refused(Code::InvalidArgument, EMPTY_KEY));
    }
    if put.ignore_value || put.ignore_lease {
        return Err(unsupported("ignore_value or ignore_lease inside a transaction"));
    }
    let lease = u64::try_from(put.lease).map_err(|_| Status::invalid_argument("flotilla: negative lease id"))?;
    Ok(TxnOp::Put { key: put.key.clone(), value: put.value.clone(), lease, prev_kv: put.prev_kv })
}

/// Flotilla's delete of an etcd delete.
pub(crate) fn delete_op(delete: &DeleteRangeRequest) -> Result<TxnOp, Status> {
    let end = interval(&delete.key, &delete.range_end)?;
    Ok(TxnOp::Delete { key: delete.key.clone(), end, prev_kv: delete.prev_kv })
}

/// Flotilla's compare of an etcd compare.
fn compare(c: &EtcdCompare) -> Result<Compare, Status> {
    if !c.range_end.is_empty() {
        return Err(unsupported("a compare over a key range"));
    }
    let invalid = |what: &str| Status::invalid_argument(format!("flotilla: invalid compare {what}"));
    let op = match CompareResult::try_from(c.result).map_err(|_| invalid("result"))? {
        CompareResult::Equal => CompareOp::Equal,
        CompareResult::NotEqual => CompareOp::NotEqual,
        CompareResult::Greater => CompareOp::Greater,
        CompareResult::Less => CompareOp::Less,
    };
    let number = |n: Option<i64>| u64::try_from(n.unwrap_or(0)).map_err(|_| invalid("target: negative"));
    // etcd reads the target field and takes the union's value of that kind (0 when absent).
    let union = c.target_union.as_ref();
    let target = match EtcdTarget::try_from(c.target).map_err(|_| invalid("target"))? {
        EtcdTarget::Version => CompareTarget::Version(number(match union {
            Some(TargetUnion::Version(v)) => Some(*v),
            _ => None,
        })?),
        EtcdTarget::Create => CompareTarget::CreateRevision(number(match union {
            Some(TargetUnion::CreateRevision(v)) => Some(*v),
            _ => None,
        })?),
        EtcdTarget::Mod => CompareTarget::ModRevision(number(match union {
            Some(TargetUnion::ModRevision(v)) => Some(*v),
            _ => None,
        })?),
        EtcdTarget::Lease => CompareTarget::Lease(number(match union {
            Some(TargetUnion::Lease(v)) => Some(*v),
            _ => None,
        })?),
        EtcdTarget::Value => CompareTarget::Value(match union {
            Some(TargetUnion::Value(v)) => v.clone(),
            _ => Vec::new(),
        }),
    };
    Ok(Compare { key: c.key.clone(), op, target })
}

/// etcd's response to one operation.
fn response(shape: &Shape, result: OpResult, only_revision: &ResponseHeader) -> Response {
    let header = Some(*only_revision);
    match (shape, result) {
        (_, OpResult::Put { prev, .. }) => Response::ResponsePut(PutResponse { header, prev_kv: prev.map(to_etcd_kv) }),
        (_, OpResult::Delete { deleted, prev }) => Response::ResponseDeleteRange(DeleteRangeResponse {
            header,
            deleted: to_i64(deleted),
            prev_kvs: prev.into_iter().map(to_etcd_kv).collect(),
        }),
        (Shape::Range(query), OpResult::Range(result)) => {
            let answer = query.txn_answer(result);
            Response::ResponseRange(RangeResponse {
                header,
                kvs: answer.kvs,
                more: answer.more,
                count: to_i64(answer.count),
            })
        }
        (_, OpResult::Range(result)) => {
            let count = to_i64(result.kvs.len() as u64);
            let kvs = result.kvs.into_iter().map(to_etcd_kv).collect();
            Response::ResponseRange(RangeResponse { header, kvs, more: result.more, count })
        }
        (shape, OpResult::Txn { succeeded, results }) => {
            let responses = match shape {
                Shape::Txn(branches) => branches.responses(succeeded, results, only_revision),
                // Every nested transaction has its shapes; without them, answer no responses.
                _ => Vec::new(),
            };
            Response::ResponseTxn(TxnResponse { header, succeeded, responses })
        }
    }
}

#[cfg(test)]
#[path = "txn_tests.rs"]
mod tests;
