//! Restoring a backup into a running namespace, through the log, in bounded steps.
//!
//! A backup can be far larger than one log entry, and one entry's writes are held in memory
//! until its group commit, so a restore is a sequence of [`RestoreStep`]s, each bounded:
//!
//! 1. `Begin` writes the restore marker (`0x00 "restore"`). From then on every other command
//!    is refused with [`KvRefusal::Restoring`] and so is every read (`read::range`,
//!    `read::changes`): nobody sees the half-replaced state. The marker keeps what the old
//!    state's counters were (revision, next lease id, next queue item id).
//! 2. `Clear` deletes up to [`MAX_CLEAR_ROWS`] rows of the old state; the driver repeats it until
//!    it answers that nothing is left. The revisions row and the marker stay.
//! 3. `Load` writes a batch of the backup's rows as they are, except the counters: the backup's
//!    revisions go into the marker, its next lease and queue ids are raised to the old ones.
//! 4. `Finish` sets the revision to one above both the old and the backup's, marks every
//!    revision up to it compacted (the old history and the backup's are different timelines,
//!    neither may be read or watched across the restore), and removes the marker. The driver
//!    then compacts to that revision, which removes the backup's history in bounded steps.
//!
//! A driver that dies half way leaves the marker: the namespace refuses reads and writes
//! until a restore is run again (a new `Begin` takes over, keeping the saved counters), so a
//! half-restored state is never served. Every step is deterministic, as any command must be.

use std::io;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::layout;
use super::read;
use super::types::{KvRefusal, RestoreReply};
use crate::state_machine::{Scan, StateTable, StateView};

/// Row of the restore marker, present only while a restore runs.
pub(crate) const MARKER: &[u8] = b"\x00restore";

/// Most rows one `Clear` step deletes: its deletions are held in memory until the commit.
pub const MAX_CLEAR_ROWS: usize = 4_096;

/// One step of a restore into a running namespace; see the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreStep {
    /// Start (or take over) restore `id`: from now on other commands and reads are refused.
    Begin {
        /// Chosen at random by the driver; later steps name it.
        id: u64,
    },
    /// Delete a bounded part of the old state.
    Clear {
        /// The restore.
        id: u64,
    },
    /// Write these rows of the backup.
    Load {
        /// The restore.
        id: u64,
        /// `(key, value)` rows of the backup's table, in any order.
        rows: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Raise the revision above the old and the backup's, and serve again.
    Finish {
        /// The restore.
        id: u64,
    },
}

/// What the marker keeps: which restore runs, and the counters the restored state must not
/// go below (reusing a revision, a lease id or a queue item id of the old state would let an
/// old fencing token or lease id mean something new).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    id: u64,
    old_revision: u64,
    old_lease_next: u64,
    old_queue_next: u64,
    backup_revision: u64,
}

/// The id of the restore in progress, if any, as `view` sees it.
pub fn in_progress(view: &dyn StateView) -> io::Result<Option<u64>> {
    Ok(marker(view)?.map(|m| m.id))
}

fn marker(view: &dyn StateView) -> io::Result<Option<Marker>> {
    view.get(MARKER)?.map(|row| layout::decode(&row, "restore marker")).transpose()
}

fn counter(view: &dyn StateView, row: &[u8]) -> io::Result<u64> {
    view.get(row)?.map_or(Ok(0), |v| layout::decode_u64(&v, "counter"))
}

/// Apply one restore step.
pub(crate) fn apply(table: &mut dyn StateTable, step: &RestoreStep) -> io::Result<Result<RestoreReply, KvRefusal>> {
    let current = marker(table)?;
    let id = match step {
        RestoreStep::Begin { id } => return begin(table, *id, current).map(Ok),
        RestoreStep::Clear { id } | RestoreStep::Load { id, .. } | RestoreStep::Finish { id } => *id,
    };
    let Some(marker) = current.filter(|m| m.id == id) else {
        return Ok(Err(KvRefusal::Invalid(format!(
            "restore {id:016x} is not in progress (another restore took over, or it finished)"
        ))));
    };
    match step {
        RestoreStep::Begin { .. } => begin(table, id, Some(marker)).map(Ok),
        RestoreStep::Clear { .. } => clear(table).map(Ok),
        RestoreStep::Load { rows, .. } => load(table, marker, rows),
        RestoreStep::Finish { .. } => finish(table, marker).map(Ok),
    }
}

/// Write the marker; a restore that takes over a dead one keeps the counters it saved (the
/// state's own may be cleared or overwritten by now).
fn begin(table: &mut dyn StateTable, id: u64, current: Option<Marker>) -> io::Result<RestoreReply> {
    let marker = match current {
        Some(old) => Marker { id, backup_revision: 0, ..old },
        None => Marker {
            id,
            old_revision: read::revisions(table)?.current,
            old_lease_next: counter(table, layout::LEASE_NEXT)?,
            old_queue_next: counter(table, layout::QUEUE_NEXT)?,
            backup_revision: 0,
        },
    };
    table.put(MARKER, &layout::encode(&marker))?;
    Ok(RestoreReply { more: false, revision: marker.old_revision })
}

/// Delete up to [`MAX_CLEAR_ROWS`] rows, keeping the revisions row and the marker.
fn clear(table: &mut dyn StateTable) -> io::Result<RestoreReply> {
    let mut doomed = Vec::new();
    let mut more = false;
    table.scan(Bound::Unbounded, Bound::Unbounded, &mut |key, _| {
        if key == layout::REVISION || key == MARKER {
            return Ok(Scan::Continue);
        }
        if doomed.len() == MAX_CLEAR_ROWS {
            more = true;
            return Ok(Scan::Stop);
        }
        doomed.push(key.to_vec());
        Ok(Scan::Continue)
    })?;
    for key in &doomed {
        table.delete(key)?;
    }
    Ok(RestoreReply { more, revision: 0 })
}

/// Write the backup's `rows`; its counters are kept aside or raised. A counter row that does
/// not decode refuses the step (the backup is input, not this store's own state).
fn load(
    table: &mut dyn StateTable,
    mut marker: Marker,
    rows: &[(Vec<u8>, Vec<u8>)],
) -> io::Result<Result<RestoreReply, KvRefusal>> {
    let damaged = |e: io::Error| KvRefusal::Invalid(format!("the backup's rows: {e}"));
    for (key, value) in rows {
        match key.as_slice() {
            MARKER => {}
            layout::REVISION => {
                marker.backup_revision = match layout::decode_revisions(value) {
                    Ok((revision, _)) => revision,
                    Err(e) => return Ok(Err(damaged(e))),
                };
                table.put(MARKER, &layout::encode(&marker))?;
            }
            layout::LEASE_NEXT | layout::QUEUE_NEXT => {
                let old =
                    if key.as_slice() == layout::LEASE_NEXT { marker.old_lease_next } else { marker.old_queue_next };
                let next = match layout::decode_u64(value, "counter") {
                    Ok(next) => next.max(old),
                    Err(e) => return Ok(Err(damaged(e))),
                };
                table.put(key, &next.to_be_bytes())?;
            }
            _ => table.put(key, value)?,
        }
    }
    Ok(Ok(RestoreReply { more: false, revision: 0 }))
}

/// Move the revision past both timelines, mark all of it compacted, and serve again.
fn finish(table: &mut dyn StateTable, marker: Marker) -> io::Result<RestoreReply> {
    let revision = marker.old_revision.max(marker.backup_revision).saturating_add(1);
    table.put(layout::REVISION, &layout::encode_revisions(revision, revision))?;
    // Counters the backup did not have (no lease or queue used yet) still may not go back.
    for (row, old) in [(layout::LEASE_NEXT, marker.old_lease_next), (layout::QUEUE_NEXT, marker.old_queue_next)] {
        if old > counter(table, row)? {
            table.put(row, &old.to_be_bytes())?;
        }
    }
    table.delete(MARKER)?;
    Ok(RestoreReply { more: false, revision })
}
