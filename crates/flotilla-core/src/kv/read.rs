//! Reads of the KV layout: the namespace's revisions, a key at any readable revision, and
//! ranges with their continuation. They run on any [`StateView`]: a reader's committed view or
//! a transaction's view while it is applied.

use std::io;
use std::ops::Bound;

use super::layout::{self, Current, Event, EventPtr};
use super::types::{
    EventKind, KeyValue, KvRefusal, RangeEnd, RangeRequest, RangeResult, WatchEvent, MAX_RANGE_BYTES, MAX_RANGE_LIMIT,
};
use crate::state_machine::{Scan, StateView};

/// The revisions of a namespace as of one view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisions {
    /// The current revision: that of the last changing write ([`FIRST_REVISION`] before the
    /// first).
    pub current: u64,
    /// The oldest revision still readable (0 before any compaction).
    pub compacted: u64,
}

/// The revision of a namespace that has never been written, as in etcd: its first changing
/// write creates revision 2. etcd's clients rely on it: a revision of 0 means "the latest"
/// or "no such key" to them, and the concurrency API waits for keys created before its own
/// (`create_revision - 1`), which would be 0, "no bound", for a key created at revision 1.
pub const FIRST_REVISION: u64 = 1;

impl Default for Revisions {
    fn default() -> Self {
        Self { current: FIRST_REVISION, compacted: 0 }
    }
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
    match view.get(layout::REVISION)? {
        Some(row) => layout::decode_revisions(&row).map(|(current, compacted)| Revisions { current, compacted }),
        None => Ok(Revisions::default()),
    }
}

/// The current value of `key`, if present.
pub fn value(view: &dyn StateView, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
    current(view, key)?.map(|c| live_value(view, &c)).transpose()
}

/// The value of the live state `row`, from the event that made it. That event is never
/// compacted while it is the key's state, so its absence is damage.
pub(crate) fn live_value(view: &dyn StateView, row: &Current) -> io::Result<Vec<u8>> {
    let (revision, sub) = row.own_event();
    match event(view, revision, sub)? {
        Some(Event::Put { value, .. }) => Ok(value),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("damaged KV state: a current row points at event {revision}.{sub}, which is not a put"),
        )),
    }
}

/// The live state `row` of `key` as a [`KeyValue`], with its value.
pub(crate) fn live_key_value(view: &dyn StateView, key: Vec<u8>, row: Current) -> io::Result<KeyValue> {
    let value = live_value(view, &row)?;
    Ok(row.into_key_value(key, value))
}

/// The live state of `key`, if present (a deletion's tombstone reads as absent).
pub(crate) fn current(view: &dyn StateView, key: &[u8]) -> io::Result<Option<Current>> {
    Ok(current_row(view, key)?.filter(|c| !c.deleted))
}

/// The current row of `key`: its live state or its tombstone.
pub(crate) fn current_row(view: &dyn StateView, key: &[u8]) -> io::Result<Option<Current>> {
    view.get(&layout::current_key(key))?.map(|v| layout::decode(&v, "current")).transpose()
}

/// The event of write `sub` of `revision`, if it is still stored.
pub(crate) fn event(view: &dyn StateView, revision: u64, sub: u32) -> io::Result<Option<Event>> {
    view.get(&layout::event_key(revision, sub))?.map(|bytes| layout::decode(&bytes, "event")).transpose()
}

/// The key's newest event at or before `revision`, walking back from its current row: its
/// pointer and the event (`None` when the chain ends first: none, or compacted away).
pub(crate) fn event_at(view: &dyn StateView, row: &Current, revision: u64) -> io::Result<Option<(EventPtr, Event)>> {
    let mut next = Some(row.own_event());
    // Each step goes to an older revision, so the walk ends; it is bounded by the versions kept
    // since the compacted revision.
    while let Some((rev, sub)) = next {
        let Some(found) = event(view, rev, sub)? else { return Ok(None) };
        if rev <= revision {
            return Ok(Some(((rev, sub), found)));
        }
        next = found.prev().filter(|(older, _)| *older < rev);
    }
    Ok(None)
}

/// The state of the key with current row `row` as of `revision`.
fn state_at(
    view: &dyn StateView,
    key: &[u8],
    row: Current,
    revision: u64,
    keys_only: bool,
) -> io::Result<Option<KeyValue>> {
    if row.mod_revision <= revision {
        return match (row.deleted, keys_only) {
            (true, _) => Ok(None),
            (false, true) => Ok(Some(row.into_key_value(key.to_vec(), Vec::new()))),
            (false, false) => live_key_value(view, key.to_vec(), row).map(Some),
        };
    }
    Ok(event_at(view, &row, revision)?.and_then(|((rev, _), event)| event.state(rev, keys_only)))
}

/// The state of `key` as of `revision` (already resolved against [`Revisions`]).
pub(crate) fn key_at(
    view: &dyn StateView,
    _revs: &Revisions,
    key: &[u8],
    revision: u64,
    keys_only: bool,
) -> io::Result<Option<KeyValue>> {
    match current_row(view, key)? {
        Some(row) => state_at(view, key, row, revision, keys_only),
        None => Ok(None),
    }
}

/// Answer `request` from `view`, or refuse it (a compacted or future revision, a restore
/// in progress).
pub fn range(view: &dyn StateView, request: &RangeRequest) -> io::Result<Result<RangeResult, KvRefusal>> {
    if let Some(id) = super::restore::in_progress(view)? {
        return Ok(Err(KvRefusal::Restoring(id)));
    }
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
    scan_rows(view, request, revision, &mut out)?;
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

/// The range as of `revision`: every key with a current row (live or tombstone) in the range,
/// as it was then. At the current revision that is the live rows themselves (and, with values,
/// the event holding each value).
fn scan_rows(view: &dyn StateView, request: &RangeRequest, revision: u64, out: &mut Collector) -> io::Result<()> {
    let (first, inclusive) = start_key(request);
    let start = layout::current_key(&first);
    let (_, end) = layout::current_range(&request.key, &request.end);
    if start >= end {
        return Ok(());
    }
    let start = if inclusive { Bound::Included(&start[..]) } else { Bound::Excluded(&start[..]) };
    view.scan(start, Bound::Excluded(&end), &mut |row, value| {
        let current: Current = layout::decode(value, "current")?;
        match state_at(view, &row[1..], current, revision, request.keys_only)? {
            Some(kv) => Ok(out.offer(kv)),
            None => Ok(Scan::Continue),
        }
    })
}

/// The changes of a watch: which keys, from which revision, with or without previous states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesRequest {
    /// The first key of the watched range.
    pub key: Vec<u8>,
    /// Where the watched range ends.
    pub end: RangeEnd,
    /// The first revision to read.
    pub from: u64,
    /// Add each key's state before the change.
    pub prev_kv: bool,
}

/// Changes read by [`changes`]: whole revisions, in order, each with the watched keys' events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// `(revision, events)` for each revision that changed a watched key.
    pub revisions: Vec<(u64, Vec<WatchEvent>)>,
    /// The revision to read next: every revision before it has been read.
    pub next: u64,
}

/// The changes of the watched keys from `request.from` on, whole revisions only, stopping
/// after the revision during which `max_events` events (of any key) have been looked at.
/// A `from` below the compacted revision is refused, and so is any read while a restore runs.
pub fn changes(
    view: &dyn StateView,
    request: &ChangesRequest,
    max_events: usize,
) -> io::Result<Result<Changes, KvRefusal>> {
    if let Some(id) = super::restore::in_progress(view)? {
        return Ok(Err(KvRefusal::Restoring(id)));
    }
    let revs = revisions(view)?;
    if request.from < revs.compacted {
        return Ok(Err(KvRefusal::Compacted { requested: request.from, compacted: revs.compacted }));
    }
    let mut out = Changes { revisions: Vec::new(), next: request.from.max(revs.current + 1) };
    if request.from > revs.current {
        out.next = request.from;
        return Ok(Ok(out));
    }
    let start = layout::event_key(request.from, 0);
    let end = layout::event_key(revs.current + 1, 0);
    let mut seen = 0usize;
    let mut last_revision = None;
    let mut stopped_at = None;
    let mut found: Vec<(u64, Event)> = Vec::new();
    view.scan(Bound::Included(&start), Bound::Excluded(&end), &mut |row, value| {
        let (revision, _) = layout::parse_event_key(row)?;
        // Stop only between revisions: a revision is delivered whole.
        if seen >= max_events && last_revision != Some(revision) {
            stopped_at = Some(revision);
            return Ok(Scan::Stop);
        }
        seen += 1;
        last_revision = Some(revision);
        let event: Event = layout::decode(value, "event")?;
        if request.end.contains(&request.key, event.key()) {
            found.push((revision, event));
        }
        Ok(Scan::Continue)
    })?;
    if let Some(revision) = stopped_at {
        out.next = revision;
    }
    for (revision, event) in found {
        let watch_event = to_watch_event(view, revision, event, request.prev_kv)?;
        match out.revisions.last_mut() {
            Some((r, events)) if *r == revision => events.push(watch_event),
            _ => out.revisions.push((revision, vec![watch_event])),
        }
    }
    Ok(Ok(out))
}

/// A stored event as a watch delivers it, with the key's previous state when asked for.
fn to_watch_event(view: &dyn StateView, revision: u64, event: Event, prev_kv: bool) -> io::Result<WatchEvent> {
    let prev = match (prev_kv, event.prev()) {
        (true, Some((rev, sub))) => self::event(view, rev, sub)?.and_then(|e| e.state(rev, false)),
        _ => None,
    };
    let kind = match event {
        Event::Put { .. } => EventKind::Put,
        Event::Delete { .. } => EventKind::Delete,
    };
    let kv = match event {
        Event::Delete { key, .. } => {
            KeyValue { key, value: Vec::new(), create_revision: 0, mod_revision: revision, version: 0, lease: 0 }
        }
        put => put.state(revision, false).expect("a put has a state"),
    };
    Ok(WatchEvent { kind, kv, prev })
}
