//! Compaction: forgetting the history that no readable revision needs, in bounded steps.
//!
//! Compacting to revision `C` makes reads and watches below `C` fail at once (the compacted
//! revision is raised in the first step). The cleanup then walks the events below `C` in
//! revision order, at most [`MAX_COMPACT_EVENTS`] per log entry, keeping its place in a
//! cursor row: an event is removed unless it is its key's newest
//! version at or before `C` and not a deletion, which a read at `C` still needs. When such a
//! survivor is kept, the survivor an earlier compaction kept for the same key is removed.

use std::io;
use std::ops::Bound;

use super::layout::{self, Event};
use super::read;
use super::types::{CompactReply, KvRefusal};
use crate::state_machine::{Scan, StateTable};

/// Most events one compaction step looks at: a step runs inside the writer's shared transaction,
/// so a large one holds up every namespace's writes (with 10,000 per step, the vs-etcd put case
/// (c), during which automatic compactions ran, had a p99 of 70-82 ms against 40-49 ms before
/// revisions).
pub const MAX_COMPACT_EVENTS: usize = 1_000;

/// One compaction step towards `target`.
pub(crate) fn apply(table: &mut dyn StateTable, target: u64) -> io::Result<Result<CompactReply, KvRefusal>> {
    step(table, target, MAX_COMPACT_EVENTS)
}

/// [`apply`] looking at most at `max_events` events (tests use small steps).
pub(crate) fn step(
    table: &mut dyn StateTable,
    target: u64,
    max_events: usize,
) -> io::Result<Result<CompactReply, KvRefusal>> {
    let revs = read::revisions(table)?;
    if target > revs.current {
        return Ok(Err(KvRefusal::FutureRevision { requested: target, current: revs.current }));
    }
    if target < revs.compacted {
        return Ok(Err(KvRefusal::Compacted { requested: target, compacted: revs.compacted }));
    }
    if target > revs.compacted {
        table.put(layout::REVISION, &layout::encode_revisions(revs.current, target))?;
    }
    let cursor = table.get(layout::COMPACT_NEXT)?.unwrap_or_else(|| vec![layout::EVENT]);
    // The events at the target itself are visited too (they replace older survivors), and
    // visited again by the next compaction, which may remove them.
    let end = layout::event_key(target.saturating_add(1), 0);
    let (batch, next) = events_between(table, &cursor, &end, max_events)?;
    for (revision, sub, event) in batch {
        forget(table, target, revision, sub, &event)?;
    }
    let done = next.is_none();
    let next = next.unwrap_or_else(|| layout::event_key(target, 0));
    table.put(layout::COMPACT_NEXT, &next)?;
    Ok(Ok(CompactReply { compacted: target, done }))
}

/// Up to `max` events from `start` (included) to `end` (excluded), and the row of the next
/// one when more remain.
type EventBatch = (Vec<(u64, u32, Event)>, Option<Vec<u8>>);

fn events_between(table: &dyn StateTable, start: &[u8], end: &[u8], max: usize) -> io::Result<EventBatch> {
    let mut batch = Vec::new();
    let mut next = None;
    if start >= end {
        return Ok((batch, next));
    }
    table.scan(Bound::Included(start), Bound::Excluded(end), &mut |row, value| {
        if batch.len() >= max {
            next = Some(row.to_vec());
            return Ok(Scan::Stop);
        }
        let (revision, sub) = layout::parse_event_key(row)?;
        batch.push((revision, sub, layout::decode(value, "event")?));
        Ok(Scan::Continue)
    })?;
    Ok((batch, next))
}

/// Decide the fate of event `sub` of `revision` under a compaction to `target`.
fn forget(table: &mut dyn StateTable, target: u64, revision: u64, sub: u32, event: &Event) -> io::Result<()> {
    let key = event.key();
    // Its predecessor is older than this event, which is at or before the target: no read at
    // the target or after needs it. Within this compaction's window it was visited (and
    // removed) already; below it, it is the version an earlier compaction kept, reachable only
    // through this event, so it goes now or never.
    if let Some((older, older_sub)) = event.prev().filter(|(older, _)| *older < revision) {
        remove(table, older, older_sub)?;
    }
    let Some(row) = read::current_row(table, key)? else {
        // Nothing points at it any more.
        return remove(table, revision, sub);
    };
    // The key's state now is this event (the common case: a key not written since), so it is
    // the newest at the target without walking the chain.
    let newest = match row.own_event() == (revision, sub) {
        true => Some((revision, sub)),
        false => read::event_at(table, &row, target)?.map(|(ptr, _)| ptr),
    };
    if newest != Some((revision, sub)) {
        // A newer version at or before the target replaces it (or the chain to it is gone).
        return remove(table, revision, sub);
    }
    // A deletion before the target is not needed by a read at it; one at the target is, by a
    // watch from the target. The tombstone goes with it when it is still the key's state.
    if matches!(event, Event::Delete { .. }) && revision < target {
        remove(table, revision, sub)?;
        if row.deleted && row.own_event() == (revision, sub) {
            table.delete(&layout::current_key(key))?;
        }
    }
    Ok(())
}

fn remove(table: &mut dyn StateTable, revision: u64, sub: u32) -> io::Result<()> {
    table.delete(&layout::event_key(revision, sub))?;
    Ok(())
}
