//! etcd's Range over Flotilla's paged ranges: the key interval, sorting, revision filters,
//! `limit`, `count` and `more`, with etcd's semantics (its `apply.go`): `count` is the number of
//! keys in the interval, whatever the filters and the limit; filters and sorting apply before
//! the limit, which sets `more` when it cuts the answer.

use flotilla::Cluster;
use flotilla_core::kv::{self, KeyValue, RangeEnd, RangeRequest, RangeResult};
use flotilla_core::Consistency;
use tonic::{Code, Status};

use crate::context::{to_i64, to_u64};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::RangeRequest as EtcdRange;
use crate::pb::mvccpb;
use crate::status::{refused, status_of, EMPTY_KEY};

/// etcd's `ErrGRPCInvalidSortOption`.
const INVALID_SORT: &str = "etcdserver: invalid sort option";

/// Most pages (of up to `kv::MAX_RANGE_LIMIT` keys) one Range reads: counting the keys of an
/// interval reads all of them, so this bounds the work of one request (10 million keys).
const MAX_SCAN_PAGES: usize = 1_000;

/// Most key and value bytes one Range answers; a larger answer is refused (ask with `limit`).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The interval of keys an etcd request names: `range_end` empty is the key alone, `"\0"`
/// every key from `key` on, anything else the keys before it.
pub(crate) fn interval(key: &[u8], range_end: &[u8]) -> Result<RangeEnd, Status> {
    if key.is_empty() {
        return Err(refused(Code::InvalidArgument, EMPTY_KEY));
    }
    Ok(match range_end {
        [] => RangeEnd::Key,
        [0] => RangeEnd::All,
        end => RangeEnd::Before(end.to_vec()),
    })
}

/// How the answer is ordered: `None` in key order (what Flotilla reads), else the target and
/// whether descending. etcd sorts ascending when a target other than the key is named without
/// an order, and does not re-sort an ascending order by key.
pub(crate) fn ordering(order: i32, target: i32) -> Result<Option<(SortTarget, bool)>, Status> {
    let invalid = || refused(Code::InvalidArgument, INVALID_SORT);
    let order = SortOrder::try_from(order).map_err(|_| invalid())?;
    let target = SortTarget::try_from(target).map_err(|_| invalid())?;
    Ok(match (order, target) {
        (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => None,
        (SortOrder::None, target) | (SortOrder::Ascend, target) => Some((target, false)),
        (SortOrder::Descend, target) => Some((target, true)),
    })
}

/// The min/max create and mod revision filters of a request (0: no bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Filters {
    min_mod: u64,
    max_mod: u64,
    min_create: u64,
    max_create: u64,
}

impl Filters {
    /// The filters of `request`.
    pub(crate) fn of(request: &EtcdRange) -> Self {
        Self {
            min_mod: to_u64(request.min_mod_revision),
            max_mod: to_u64(request.max_mod_revision),
            min_create: to_u64(request.min_create_revision),
            max_create: to_u64(request.max_create_revision),
        }
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `kv` passes every bound.
    fn pass(&self, kv: &KeyValue) -> bool {
        let above = |value: u64, min: u64| min == 0 || value >= min;
        let below = |value: u64, max: u64| max == 0 || value <= max;
        above(kv.mod_revision, self.min_mod)
            && below(kv.mod_revision, self.max_mod)
            && above(kv.create_revision, self.min_create)
            && below(kv.create_revision, self.max_create)
    }
}

/// A validated etcd Range.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    key: Vec<u8>,
    end: RangeEnd,
    limit: usize,
    revision: u64,
    keys_only: bool,
    count_only: bool,
    ordering: Option<(SortTarget, bool)>,
    filters: Filters,
}

impl Query {
    /// Validate `request`.
    pub(crate) fn of(request: &EtcdRange) -> Result<Self, Status> {
        Ok(Self {
            end: interval(&request.key, &request.range_end)?,
            key: request.key.clone(),
            limit: usize::try_from(request.limit.max(0)).unwrap_or(usize::MAX),
            revision: to_u64(request.revision),
            keys_only: request.keys_only,
            count_only: request.count_only,
            ordering: ordering(request.sort_order, request.sort_target)?,
            filters: Filters::of(request),
        })
    }

    /// How many keys (in key order) the answer needs before sorting and cutting: every key
    /// when it is sorted or filtered, else one past the limit (which tells `more`).
    fn wanted(&self) -> Option<usize> {
        if self.count_only {
            return Some(0);
        }
        if self.ordering.is_some() || !self.filters.is_empty() || self.limit == 0 {
            return None;
        }
        Some(self.limit.saturating_add(1))
    }

    /// Flotilla's read of one page of this query, from after `after`, at `revision`,
    /// with values when `values`.
    fn page(&self, after: Option<Vec<u8>>, revision: u64, values: bool) -> RangeRequest {
        RangeRequest {
            key: self.key.clone(),
            end: self.end.clone(),
            after,
            limit: kv::MAX_RANGE_LIMIT,
            revision,
            keys_only: !values,
        }
    }

    /// Flotilla's read of this query inside a transaction: one page, of one past the limit
    /// when nothing is sorted or filtered.
    pub(crate) fn txn_read(&self) -> RangeRequest {
        let limit = self.wanted().map_or(0, |n| n.max(1) as u64);
        RangeRequest { limit, ..self.page(None, self.revision, !(self.keys_only || self.count_only)) }
    }

    /// The answer from the keys read in key order (`read`), `count` being the number of keys in
    /// the interval: filtered, sorted, cut at the limit.
    pub(crate) fn answer(&self, read: Vec<KeyValue>, count: u64, cut_short: bool) -> RangeAnswer {
        if self.count_only {
            return RangeAnswer { kvs: Vec::new(), more: false, count };
        }
        let mut kvs: Vec<KeyValue> = read.into_iter().filter(|kv| self.filters.pass(kv)).collect();
        if let Some((target, descending)) = self.ordering {
            sort(&mut kvs, target, descending);
        }
        let mut more = cut_short;
        if self.limit > 0 && kvs.len() > self.limit {
            kvs.truncate(self.limit);
            more = true;
        }
        RangeAnswer { kvs: kvs.into_iter().map(to_etcd_kv).collect(), more, count }
    }

    /// The answer to this query inside a transaction, from Flotilla's one page: `count` is the
    /// number of keys that page holds (exact when the interval fits in one page).
    pub(crate) fn txn_answer(&self, result: RangeResult) -> RangeAnswer {
        let count = result.kvs.len() as u64;
        self.answer(result.kvs, count, false)
    }
}

/// What a Range answers, before its header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RangeAnswer {
    /// The keys.
    pub(crate) kvs: Vec<mvccpb::KeyValue>,
    /// Whether the limit cut the answer.
    pub(crate) more: bool,
    /// Keys in the interval.
    pub(crate) count: u64,
}

/// Sort `kvs` (in key order) by `target`; ties stay in key order, as etcd's stable sort keeps
/// them.
fn sort(kvs: &mut [KeyValue], target: SortTarget, descending: bool) {
    match target {
        SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
    if descending {
        kvs.reverse();
    }
}

/// etcd's key-value from Flotilla's.
pub(crate) fn to_etcd_kv(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: to_i64(kv.create_revision),
        mod_revision: to_i64(kv.mod_revision),
        version: to_i64(kv.version),
        value: kv.value,
        lease: to_i64(kv.lease),
    }
}

/// Read an etcd Range: page through the interval at one revision (the first page's, read with
/// the consistency asked for; the next ones stale at that fixed revision), keeping the keys
/// the answer needs and counting the rest without their values. Returns the answer and the
/// revision it reflects.
pub(crate) async fn read(cluster: &Cluster, request: &EtcdRange) -> Result<(RangeAnswer, u64), Status> {
    let query = Query::of(request)?;
    let wanted = query.wanted();
    let mut consistency = if request.serializable { Consistency::Stale } else { Consistency::Linearizable };
    let mut revision = query.revision;
    let (mut kept, mut count, mut bytes, mut after) = (Vec::new(), 0u64, 0usize, None);
    for _ in 0..MAX_SCAN_PAGES {
        let values = !query.keys_only && wanted.is_none_or(|n| kept.len() < n);
        let page = cluster.range(query.page(after.take(), revision, values), consistency).await;
        let page = page.map_err(|e| status_of(&e))?;
        (revision, consistency) = (page.revision, Consistency::Stale);
        after = page.result.kvs.last().map(|kv| kv.key.clone());
        count += page.result.kvs.len() as u64;
        for kv in page.result.kvs {
            if wanted.is_none_or(|n| kept.len() < n) {
                bytes += kv.key.len() + kv.value.len();
                kept.push(kv);
            }
        }
        if bytes > MAX_ANSWER_BYTES {
            return Err(too_large(bytes));
        }
        if !page.result.more {
            return Ok((query.answer(kept, count, false), revision));
        }
    }
    Err(Status::resource_exhausted(format!(
        "flotilla: a range reads at most {} keys; split the interval",
        MAX_SCAN_PAGES as u64 * kv::MAX_RANGE_LIMIT
    )))
}

fn too_large(bytes: usize) -> Status {
    Status::resource_exhausted(format!(
        "flotilla: the range's answer exceeds {MAX_ANSWER_BYTES} bytes ({bytes} read); ask with a limit"
    ))
}

#[cfg(test)]
#[path = "range_tests.rs"]
mod tests;
