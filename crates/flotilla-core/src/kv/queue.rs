//! Named FIFO queues: push, pop (each item to exactly one consumer: pops are log entries,
//! applied in one order everywhere), pop with a visibility lease (the item comes back, at its
//! place, when the lease ends before it is acknowledged), ack, peek and length.
//!
//! Queues live outside the key space (rows 0x06-0x09, see `layout.rs`): they create no
//! revision and no watch event.

use std::io;
use std::ops::Bound;

use super::layout::{self, InFlight, QueueMeta};
use super::types::{KvRefusal, QueueReply};
use crate::state_machine::{Scan, StateTable, StateView};

/// Longest queue name, in bytes.
pub const MAX_QUEUE_NAME: usize = 256;

fn check_name(name: &[u8]) -> Result<(), KvRefusal> {
    match name.is_empty() || name.len() > MAX_QUEUE_NAME {
        true => Err(KvRefusal::Invalid(format!("a queue name is 1 to {MAX_QUEUE_NAME} bytes"))),
        false => Ok(()),
    }
}

fn meta(view: &dyn StateView, name: &[u8]) -> io::Result<QueueMeta> {
    view.get(&layout::queue_rows(layout::QUEUE_META, name))?
        .map(|v| layout::decode(&v, "queue meta"))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn set_meta(table: &mut dyn StateTable, name: &[u8], meta: QueueMeta) -> io::Result<()> {
    let row = layout::queue_rows(layout::QUEUE_META, name);
    match meta == QueueMeta::default() {
        true => table.delete(&row).map(drop),
        false => table.put(&row, &layout::encode(&meta)),
    }
}

/// Append `value` to queue `name`.
pub(crate) fn push(table: &mut dyn StateTable, name: &[u8], value: &[u8]) -> io::Result<Result<QueueReply, KvRefusal>> {
    if let Err(refusal) = check_name(name) {
        return Ok(Err(refusal));
    }
    let id = match table.get(layout::QUEUE_NEXT)? {
        Some(v) => layout::decode_u64(&v, "queue.next")?,
        None => 1,
    };
    table.put(layout::QUEUE_NEXT, &(id + 1).to_be_bytes())?;
    table.put(&layout::queue_item(layout::QUEUE_READY, name, id), value)?;
    let mut counts = meta(table, name)?;
    counts.ready += 1;
    set_meta(table, name, counts)?;
    Ok(Ok(QueueReply::Pushed { id }))
}

/// Take the first waiting item of queue `name`; with `lease` (not 0) it stays in flight until
/// acknowledged, or comes back when the lease ends.
pub(crate) fn pop(table: &mut dyn StateTable, name: &[u8], lease: u64) -> io::Result<Result<QueueReply, KvRefusal>> {
    if let Err(refusal) = check_name(name) {
        return Ok(Err(refusal));
    }
    if lease != 0 && table.get(&layout::lease_key(lease))?.is_none() {
        return Ok(Err(KvRefusal::LeaseNotFound(lease)));
    }
    let Some((id, value)) = first(table, name)? else { return Ok(Ok(QueueReply::Empty)) };
    table.delete(&layout::queue_item(layout::QUEUE_READY, name, id))?;
    let mut counts = meta(table, name)?;
    counts.ready = counts.ready.saturating_sub(1);
    if lease != 0 {
        let in_flight = InFlight { value: value.clone(), lease };
        table.put(&layout::queue_item(layout::QUEUE_IN_FLIGHT, name, id), &layout::encode(&in_flight))?;
        table.put(&layout::queue_by_lease(lease, name, id), &[])?;
        counts.in_flight += 1;
    }
    set_meta(table, name, counts)?;
    Ok(Ok(QueueReply::Popped { id, value }))
}

/// Acknowledge in-flight item `id` of queue `name`, taken under `lease`: it is done and will
/// not come back.
pub(crate) fn ack(
    table: &mut dyn StateTable,
    name: &[u8],
    id: u64,
    lease: u64,
) -> io::Result<Result<QueueReply, KvRefusal>> {
    if let Err(refusal) = check_name(name) {
        return Ok(Err(refusal));
    }
    let row = layout::queue_item(layout::QUEUE_IN_FLIGHT, name, id);
    let Some(stored) = table.get(&row)? else { return Ok(Ok(QueueReply::Acked { found: false })) };
    let in_flight: InFlight = layout::decode(&stored, "in-flight item")?;
    if in_flight.lease != lease {
        return Ok(Ok(QueueReply::Acked { found: false }));
    }
    table.delete(&row)?;
    table.delete(&layout::queue_by_lease(in_flight.lease, name, id))?;
    let mut counts = meta(table, name)?;
    counts.in_flight = counts.in_flight.saturating_sub(1);
    set_meta(table, name, counts)?;
    Ok(Ok(QueueReply::Acked { found: true }))
}

/// Put the in-flight items of `lease` back at their places (the lease ended).
pub(crate) fn requeue(table: &mut dyn StateTable, lease: u64) -> io::Result<u64> {
    let start = layout::queue_by_lease_of(lease);
    let end = layout::prefix_end(&start).expect("a by-lease prefix starts with 0x08");
    let mut items = Vec::new();
    table.scan(Bound::Included(&start), Bound::Excluded(&end), &mut |row, _| {
        items.push(layout::parse_queue_by_lease(row)?);
        Ok(Scan::Continue)
    })?;
    let requeued = items.len() as u64;
    for (name, id) in items {
        table.delete(&layout::queue_by_lease(lease, &name, id))?;
        let row = layout::queue_item(layout::QUEUE_IN_FLIGHT, &name, id);
        let Some(stored) = table.get(&row)? else { continue };
        let in_flight: InFlight = layout::decode(&stored, "in-flight item")?;
        table.delete(&row)?;
        table.put(&layout::queue_item(layout::QUEUE_READY, &name, id), &in_flight.value)?;
        let mut counts = meta(table, &name)?;
        counts.in_flight = counts.in_flight.saturating_sub(1);
        counts.ready += 1;
        set_meta(table, &name, counts)?;
    }
    Ok(requeued)
}

/// The first waiting item of queue `name`, `(id, value)`.
pub fn first(view: &dyn StateView, name: &[u8]) -> io::Result<Option<(u64, Vec<u8>)>> {
    let start = layout::queue_rows(layout::QUEUE_READY, name);
    let end = layout::prefix_end(&start).expect("a queue prefix starts with 0x06");
    let mut found = None;
    view.scan(Bound::Included(&start), Bound::Excluded(&end), &mut |row, value| {
        found = Some((layout::queue_item_id(row, &start)?, value.to_vec()));
        Ok(Scan::Stop)
    })?;
    Ok(found)
}

/// `(waiting, in flight)` items of queue `name`.
pub fn counts(view: &dyn StateView, name: &[u8]) -> io::Result<(u64, u64)> {
    let m = meta(view, name)?;
    Ok((m.ready, m.in_flight))
}
