//! Lease grants and revokes. A lease is a row with a time to live; keys written with it carry
//! its id and an attachment row, so a revoke finds them. When a lease runs out is not decided
//! here: the leader keeps the clock in memory and proposes the revoke (etcd's design, so a
//! keep-alive costs no log entry); after a leader change every lease gets its full time to
//! live again, never less.

use std::io;
use std::ops::Bound;

use super::layout::{self, Lease};
use super::read;
use super::txn::Writer;
use super::types::{KvRefusal, LeaseReply};
use crate::state_machine::{Scan, StateTable, StateView};

/// Longest time to live a lease may have: one year.
pub const MAX_LEASE_TTL_SECS: u64 = 365 * 24 * 3600;

/// How many taken ids a grant skips looking for a free one before giving up.
const MAX_ID_PROBES: u64 = 1_024;

/// Grant lease `id` (0: the next free id) of `ttl_secs` seconds.
pub(crate) fn grant(table: &mut dyn StateTable, id: u64, ttl_secs: u64) -> io::Result<Result<LeaseReply, KvRefusal>> {
    if ttl_secs == 0 || ttl_secs > MAX_LEASE_TTL_SECS {
        return Ok(Err(KvRefusal::Invalid(format!("a lease lives 1 to {MAX_LEASE_TTL_SECS} seconds"))));
    }
    let next = match table.get(layout::LEASE_NEXT)? {
        Some(v) => layout::decode_u64(&v, "lease.next")?,
        None => 1,
    };
    let id = match id {
        0 => match free_id(table, next)? {
            Some(id) => id,
            None => return Ok(Err(KvRefusal::Invalid("no free lease id near the next one; name one".into()))),
        },
        id if table.get(&layout::lease_key(id))?.is_some() => return Ok(Err(KvRefusal::LeaseExists(id))),
        id => id,
    };
    table.put(&layout::lease_key(id), &layout::encode(&Lease { ttl_secs }))?;
    table.put(layout::LEASE_NEXT, &next.max(id.saturating_add(1)).to_be_bytes())?;
    let revision = read::revisions(table)?.current;
    Ok(Ok(LeaseReply { id, ttl_secs, revision, deleted: 0 }))
}

/// The first id from `next` on that no lease holds.
fn free_id(table: &dyn StateTable, next: u64) -> io::Result<Option<u64>> {
    for id in next..next.saturating_add(MAX_ID_PROBES) {
        if id != 0 && table.get(&layout::lease_key(id))?.is_none() {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// End lease `id`: delete its keys (one revision if there were any), put its in-flight queue
/// items back, and remove the lease.
pub(crate) fn revoke(table: &mut dyn StateTable, id: u64) -> io::Result<Result<LeaseReply, KvRefusal>> {
    let Some(stored) = table.get(&layout::lease_key(id))? else {
        return Ok(Err(KvRefusal::LeaseNotFound(id)));
    };
    let lease: Lease = layout::decode(&stored, "lease")?;
    let keys = attached_keys(table, id, usize::MAX)?;
    let revs = read::revisions(table)?;
    let mut writer = Writer::new(&revs);
    let mut deleted = 0;
    for key in keys {
        // An attachment row whose key has moved on (another lease, or gone) is only dropped.
        match read::current(table, &key)? {
            Some(state) if state.lease == id => {
                writer.delete(table, &key, &state)?;
                deleted += 1;
            }
            _ => {
                table.delete(&layout::lease_key_row(id, &key))?;
            }
        }
    }
    super::queue::requeue(table, id)?;
    table.delete(&layout::lease_key(id))?;
    let revision = writer.finish(table, &revs)?;
    Ok(Ok(LeaseReply { id, ttl_secs: lease.ttl_secs, revision, deleted }))
}

/// Up to `max` keys attached to lease `id`, in key order.
pub fn attached_keys(view: &dyn StateView, id: u64, max: usize) -> io::Result<Vec<Vec<u8>>> {
    let start = layout::lease_keys_of(id);
    let end = layout::prefix_end(&start).expect("a lease prefix starts with 0x05");
    let mut keys = Vec::new();
    view.scan(Bound::Included(&start), Bound::Excluded(&end), &mut |row, _| {
        if keys.len() >= max {
            return Ok(Scan::Stop);
        }
        keys.push(row[start.len()..].to_vec());
        Ok(Scan::Continue)
    })?;
    Ok(keys)
}

/// Every lease, `(id, ttl_secs)`, in id order, up to `max`.
pub fn leases(view: &dyn StateView, max: usize) -> io::Result<Vec<(u64, u64)>> {
    let start = [layout::LEASE];
    let end = [layout::LEASE + 1];
    let mut out = Vec::new();
    view.scan(Bound::Included(&start), Bound::Excluded(&end), &mut |row, value| {
        if out.len() >= max {
            return Ok(Scan::Stop);
        }
        let lease: Lease = layout::decode(value, "lease")?;
        out.push((layout::parse_lease_key(row)?, lease.ttl_secs));
        Ok(Scan::Continue)
    })?;
    Ok(out)
}

/// The time to live of lease `id`, if it exists.
pub fn lease_ttl(view: &dyn StateView, id: u64) -> io::Result<Option<u64>> {
    view.get(&layout::lease_key(id))?.map(|v| layout::decode::<Lease>(&v, "lease").map(|l| l.ttl_secs)).transpose()
}
