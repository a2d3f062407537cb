//! Reads of the KV layout: the namespace's revisions, a key at any readable revision, and
//! ranges with their continuation. They run on any [`StateView`]: a reader's committed view or
//! a transaction's view while it is applied.

use std::io;
use std::ops::Bound;

use super::layout::{self, Current, Event};
use super::types::{KeyValue, KvRefusal, RangeEnd, RangeRequest, RangeResult, MAX_RANGE_BYTES, MAX_RANGE_LIMIT};
use crate::state_machine::{Scan, StateView};

/// The revisions of a namespace as of one view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revisions {
    /// The current revision: that of the last changing write (0 before the first).
    pub current: u64,
    /// The oldest revision still readable (0 or 1 before any compaction).
    pub compacted: u64,
}

impl Revisions {
    /// The revision a read of `requested` (0: the current one) is answered at, or why not.
    pub fn resolve(&self, requested: u64) -> Result<u64, KvRefusal> {
        if requested == 0 {
            return Ok(self.current);
        }
        if requested > self.current {
            return Err(KvRefusal::FutureRevision { requested, current: self.current });
        }
        if requested < self.compacted {
            return Err(KvRefusal::Compacted { requested, compacted: self.compacted });
        }
        Ok(requested)
    }
}

/// The namespace's revisions as `view` sees them.
pub fn revisions(view: &dyn StateView) -> io::Result<Revisions> {
    let read = |row: &[u8], what: &str| -> io::Result<u64> {
        view.get(row)?.map(|v| layout::decode_u64(&v, what)).transpose().map(Option::unwrap_or_default)
    };
    Ok(Revisions { current: read(layout::REVISION, "revision")?, compacted: read(layout::COMPACTED, "compacted")? })
}

/// The current value of `key`, if present.
pub fn value(view: &dyn StateView, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
    Ok(current(view, key)?.map(|c| c.value))
}

/// The live state of `key`, if present.
pub(crate) fn current(view: &dyn StateView, key: &[u8]) -> io::Result<Option<Current>> {
    view.get(&layout::current_key(key))?.map(|v| layout::decode(&v, "current")).transpose()
}

/// The event of write `sub` of `revision`.
pub(crate) fn event(view: &dyn StateView, revision: u64, sub: u32) -> io::Result<Event> {
    let bytes = view
        .get(&layout::event_key(revision, sub))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("KV event {revision}.{sub} is missing")))?;
    layout::decode(&bytes, "event")
}

/// The newest version of `key` at or before `revision`: its revision and sub, if any.
pub(crate) fn version_at(view: &dyn StateView, key: &[u8], revision: u64) -> io::Result<Option<(u64, u32)>> {
    let prefix = layout::versions_of(key);
    let Some(end) = layout::prefix_end(&prefix) else { return Ok(None) };
    let start = layout::version_key(key, revision);
    let mut found = None;
    view.scan(Bound::Included(&start), Bound::Excluded(&end), &mut |row, value| {
        let sub = <[u8; 4]>::try_from(value)
            .map(u32::from_be_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "damaged KV version row"))?;
        found = Some((layout::version_revision(row, &prefix)?, sub));
        Ok(Scan::Stop)
    })?;
    Ok(found)
}

/// The state of `key` as of `revision` (already resolved against [`Revisions`]).
pub(crate) fn key_at(
    view: &dyn StateView,
    revs: &Revisions,
    key: &[u8],
    revision: u64,
    keys_only: bool,
) -> io::Result<Option<KeyValue>> {
    let live = current(view, key)?;
    if revision >= revs.current || live.as_ref().is_some_and(|c| c.mod_revision <= revision) {
        return Ok(live.map(|c| c.into_key_value(key.to_vec(), keys_only)));
    }
    match version_at(view, key, revision)? {
        Some((rev, sub)) => Ok(event(view, rev, sub)?.state(rev, keys_only)),
        None => Ok(None),
    }
}

/// Answer `request` from `view`, or refuse it (a compacted or future revision).
pub fn range(view: &dyn StateView, request: &RangeRequest) -> io::Result<Result<RangeResult, KvRefusal>> {
    let revs = revisions(view)?;
    let revision = match revs.resolve(request.revision) {
        Ok(r) => r,
        Err(refusal) => return Ok(Err(refusal)),
    };
    range_at(view, &revs, request, revision).map(Ok)
}

/// [`range`] at a resolved revision.
pub(crate) fn range_at(
    view: &dyn StateView,
    revs: &Revisions,
    request: &RangeRequest,
    revision: u64,
) -> io::Result<RangeResult> {
    if request.end == RangeEnd::Key {
        let past_after = request.after.as_ref().is_none_or(|a| request.key > *a);
        let kvs = match past_after {
            true => key_at(view, revs, &request.key, revision, request.keys_only)?.into_iter().collect(),
            false => Vec::new(),
        };
        return Ok(RangeResult { kvs, more: false });
    }
    let mut out = Collector::new(request);
    if revision >= revs.current {
        scan_current(view, request, &mut out)?;
    } else {
        scan_versions(view, request, revision, &mut out)?;
    }
    Ok(RangeResult { kvs: out.kvs, more: out.more })
}

/// Gathers a range's answer within its limits.
struct Collector {
    kvs: Vec<KeyValue>,
    more: bool,
    limit: usize,
    bytes: u64,
}

impl Collector {
    fn new(request: &RangeRequest) -> Self {
        let limit = match request.limit {
            0 => MAX_RANGE_LIMIT,
            n => n.min(MAX_RANGE_LIMIT),
        };
        Self { kvs: Vec::new(), more: false, limit: usize::try_from(limit).unwrap_or(usize::MAX), bytes: 0 }
    }

    /// Take `kv` if it fits; otherwise note that more remain and stop.
    fn offer(&mut self, kv: KeyValue) -> Scan {
        let size = (kv.key.len() + kv.value.len()) as u64;
        if self.kvs.len() >= self.limit || (!self.kvs.is_empty() && self.bytes + size > MAX_RANGE_BYTES) {
            self.more = true;
            return Scan::Stop;
        }
        self.bytes += size;
        self.kvs.push(kv);
        Scan::Continue
    }
}

/// The first key of the range: `key`, or just after `after` when that is further.
fn start_key(request: &RangeRequest) -> (Vec<u8>, bool) {
    match &request.after {
        Some(after) if *after >= request.key => (after.clone(), false),
        _ => (request.key.clone(), true),
    }
}

/// The range over the live keys (a read at the current revision).
fn scan_current(view: &dyn StateView, request: &RangeRequest, out: &mut Collector) -> io::Result<()> {
    let (first, inclusive) = start_key(request);
    let start = layout::current_key(&first);
    let (_, end) = layout::current_range(&request.key, &request.end);
    if start >= end {
        return Ok(());
    }
    let start = if inclusive { Bound::Included(&start[..]) } else { Bound::Excluded(&start[..]) };
    view.scan(start, Bound::Excluded(&end), &mut |row, value| {
        let key = row[1..].to_vec();
        let live: Current = layout::decode(value, "current")?;
        Ok(out.offer(live.into_key_value(key, request.keys_only)))
    })
}

/// The range as of a past `revision`, from the version rows: per key, its newest version at
/// or before `revision`, if that is not a deletion.
fn scan_versions(view: &dyn StateView, request: &RangeRequest, revision: u64, out: &mut Collector) -> io::Result<()> {
    let (first, inclusive) = start_key(request);
    let start = match inclusive {
        true => layout::versions_from(&first),
        false => layout::prefix_end(&layout::versions_of(&first)).expect("a version prefix ends in 0x00"),
    };
    let end = match &request.end {
        RangeEnd::Key => unreachable!("single keys are read with key_at"),
        RangeEnd::Prefix => layout::prefix_end(&layout::versions_from(&request.key)).expect("0x02 is not 0xFF"),
        RangeEnd::Before(end) => layout::versions_from(end),
        RangeEnd::All => vec![layout::VERSION + 1],
    };
    if start >= end {
        return Ok(());
    }
    let mut decided: Option<Vec<u8>> = None;
    view.scan(Bound::Included(&start), Bound::Excluded(&end), &mut |row, value| {
        let (key, rev) = layout::parse_version_row(row)?;
        if rev > revision || decided.as_ref() == Some(&key) {
            return Ok(Scan::Continue);
        }
        let sub = <[u8; 4]>::try_from(value)
            .map(u32::from_be_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "damaged KV version row"))?;
        decided = Some(key);
        match event(view, rev, sub)?.state(rev, request.keys_only) {
            Some(kv) => Ok(out.offer(kv)),
            None => Ok(Scan::Continue),
        }
    })
}
