//! Applying a batch of committed entries inside the writer's transaction.
//!
//! The batch is all-or-nothing. Phase one computes every result while only *reading* the
//! transaction (commands write into overlays, see [`crate::overlay`]); a failing state machine
//! therefore leaves the shared transaction untouched (a clean failure). Everything that can fail
//! then (encoding, sealing at rest) runs before phase two writes the batch's kv changes, dedup
//! entries, applied log id and membership.

use std::collections::HashMap;

use flotilla_core::{ApplyContext, Command, CommandResult, RequestId, StateMachine};
use openraft::alias::{LogIdOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::StoredMembership;
use redb::{ReadableTable, WriteTransaction};

use crate::codec::{decode_sealed, encode_sealed, Codec};
use crate::dedup;
use crate::error::StoreError;
use crate::overlay::{Changes, EntryTable};
use crate::tables::{NsTables, META_APPLIED, META_DEDUP_NEXT, META_MEMBERSHIP};
use crate::writer::{clean, dirty, JobFailure};
use crate::StoreConfig;

/// The result sent for blank and membership entries.
fn empty_result() -> CommandResult {
    CommandResult { output: Ok(Vec::new()) }
}

/// A request id applied by the batch, to remember.
struct NewId {
    id: RequestId,
    /// Its insertion order number.
    order: u64,
    result: CommandResult,
    /// The order number of the id's earlier row, still in the table but outside the window.
    replaces: Option<u64>,
    /// Set when a later entry of the same batch applied the id again (after it left the
    /// window): that later row is the one to keep.
    superseded: bool,
}

/// What phase one decided.
struct Plan<C: StoreConfig> {
    results: Vec<CommandResult>,
    kv: Changes,
    new_ids: Vec<NewId>,
    /// The dedup counter after the batch: the order number of the next new id.
    dedup_next: u64,
    applied: Option<LogIdOf<C>>,
    membership: Option<StoredMembershipOf<C>>,
}

/// Apply `entries` to namespace `tables` with `sm`, returning one result per entry. `codec`
/// protects what is stored (sealed at rest).
pub(crate) fn apply_entries<C: StoreConfig>(
    txn: &WriteTransaction,
    tables: &NsTables,
    codec: &Codec,
    sm: &dyn StateMachine,
    entries: &[C::Entry],
) -> Result<Vec<CommandResult>, JobFailure> {
    apply_entries_within::<C>(txn, tables, codec, sm, entries, dedup::MAX_DEDUP_ENTRIES)
}

/// [`apply_entries`] with a dedup window of `max_ids` request ids (tests use small ones).
fn apply_entries_within<C: StoreConfig>(
    txn: &WriteTransaction,
    tables: &NsTables,
    codec: &Codec,
    sm: &dyn StateMachine,
    entries: &[C::Entry],
    max_ids: u64,
) -> Result<Vec<CommandResult>, JobFailure> {
    let mut meta = txn.open_table(tables.meta()).map_err(clean)?;
    let next: u64 = match meta.get(META_DEDUP_NEXT).map_err(clean)? {
        Some(v) => decode_sealed(v.value(), &|| tables.meta_what(META_DEDUP_NEXT)).map_err(JobFailure::clean)?,
        None => 0,
    };
    let plan = plan::<C>(txn, tables, codec, sm, entries, next, max_ids)?;

    // Encode everything that can fail before the first write.
    let applied = plan.applied.as_ref().map(encode_sealed).transpose().map_err(JobFailure::clean)?;
    let membership = plan.membership.as_ref().map(encode_sealed).transpose().map_err(JobFailure::clean)?;
    let mut dedup_rows = Vec::with_capacity(plan.new_ids.len());
    for new in plan.new_ids.iter().filter(|n| !n.superseded) {
        let stored = dedup::encode_entry(tables, codec, &new.id, new.order, &new.result).map_err(JobFailure::clean)?;
        dedup_rows.push((new.id, new.order, stored, new.replaces));
    }
    let next_record = encode_sealed(&plan.dedup_next).map_err(JobFailure::clean)?;
    let kv_rows = protect_values(tables, codec, plan.kv).map_err(JobFailure::clean)?;

    // Phase two: write.
    {
        let mut kv = txn.open_table(tables.kv()).map_err(dirty)?;
        for (key, value) in &kv_rows {
            match value {
                Some(v) => kv.insert(key.as_slice(), v.as_slice()).map(drop),
                None => kv.remove(key.as_slice()).map(drop),
            }
            .map_err(dirty)?;
        }
    }
    if !dedup_rows.is_empty() {
        let mut dedup_table = txn.open_table(tables.dedup()).map_err(dirty)?;
        let mut order = txn.open_table(tables.dedup_order()).map_err(dirty)?;
        for (id, order_no, stored, replaces) in &dedup_rows {
            dedup::insert(&mut dedup_table, &mut order, id, *order_no, stored, *replaces).map_err(dirty)?;
        }
        dedup::evict(&mut dedup_table, &mut order, plan.dedup_next, max_ids).map_err(dirty)?;
        meta.insert(META_DEDUP_NEXT, next_record.as_slice()).map_err(dirty)?;
    }
    if let Some(applied) = &applied {
        meta.insert(META_APPLIED, applied.as_slice()).map_err(dirty)?;
    }
    if let Some(membership) = &membership {
        meta.insert(META_MEMBERSHIP, membership.as_slice()).map_err(dirty)?;
    }
    Ok(plan.results)
}

/// The batch's kv changes in their stored form (sealed at rest), computed before any write.
fn protect_values(tables: &NsTables, codec: &Codec, kv: Changes) -> Result<Changes, StoreError> {
    if codec.cipher().is_none() {
        return Ok(kv);
    }
    kv.into_iter()
        .map(|(key, value)| {
            let stored = match value {
                Some(v) => Some(codec.protect_value(&tables.kv_context(&key), &v)?.into_owned()),
                None => None,
            };
            Ok((key, stored))
        })
        .collect()
}

/// Phase one: compute results and changes, reading only. `next` is the dedup counter before
/// the batch and `max_ids` the dedup window.
fn plan<C: StoreConfig>(
    txn: &WriteTransaction,
    tables: &NsTables,
    codec: &Codec,
    sm: &dyn StateMachine,
    entries: &[C::Entry],
    next: u64,
    max_ids: u64,
) -> Result<Plan<C>, JobFailure> {
    let kv = txn.open_table(tables.kv()).map_err(clean)?;
    let dedup_table = txn.open_table(tables.dedup()).map_err(clean)?;
    let mut plan = Plan::<C> {
        results: Vec::with_capacity(entries.len()),
        kv: Changes::new(),
        new_ids: Vec::new(),
        dedup_next: next,
        applied: None,
        membership: None,
    };
    // Ids applied earlier in this same batch, by position in `plan.new_ids` (the latest).
    let mut seen: HashMap<RequestId, usize> = HashMap::new();

    for entry in entries {
        let log_id = entry.log_id();
        let result = if let Some(m) = entry.get_membership() {
            plan.membership = Some(StoredMembership::new(Some(log_id.clone()), m));
            empty_result()
        } else if let Some(command) = C::command(entry) {
            let earlier = match command.id {
                Some(id) => earlier_result(&dedup_table, tables, codec, &plan, &seen, &id, max_ids)?,
                None => Earlier::Absent,
            };
            match earlier {
                // Already applied, within the window: answer as the first time, change nothing.
                Earlier::Live(result) => result,
                Earlier::Absent | Earlier::Evicted(_) => {
                    let context = ApplyContext { index: log_id.index() };
                    let result = apply_command(&kv, codec, tables, &mut plan.kv, sm, &context, command)
                        .map_err(|e| JobFailure::clean(command_error(tables, &log_id, e)))?;
                    if let Some(id) = command.id {
                        remember(&mut plan, &mut seen, id, result.clone(), earlier);
                    }
                    result
                }
            }
        } else {
            empty_result()
        };
        plan.results.push(result);
        plan.applied = Some(log_id);
    }
    Ok(plan)
}

/// What the dedup state says about a request id at one point of the log.
enum Earlier {
    /// Never applied, or its row is gone.
    Absent,
    /// Applied, and still within the window: its first result.
    Live(CommandResult),
    /// Applied, out of the window, but its row (with this order number) is still stored.
    Evicted(u64),
}

/// The dedup state of `id` just before the next entry: earlier in this batch first, then the
/// table as of the batch's start, both judged against the window as it is at this entry.
fn earlier_result<T, C: StoreConfig>(
    dedup_table: &T,
    tables: &NsTables,
    codec: &Codec,
    plan: &Plan<C>,
    seen: &HashMap<RequestId, usize>,
    id: &RequestId,
    max_ids: u64,
) -> Result<Earlier, JobFailure>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let found = match seen.get(id).and_then(|&i| plan.new_ids.get(i)) {
        Some(new) => Some((new.order, new.result.clone())),
        None => dedup::lookup(dedup_table, tables, codec, id).map_err(JobFailure::clean)?,
    };
    Ok(match found {
        None => Earlier::Absent,
        Some((order, result)) if dedup::is_live(order, plan.dedup_next, max_ids) => Earlier::Live(result),
        Some((order, _)) => Earlier::Evicted(order),
    })
}

/// Record that `id` was applied (again, when `earlier` is an evicted row) with `result`.
fn remember<C: StoreConfig>(
    plan: &mut Plan<C>,
    seen: &mut HashMap<RequestId, usize>,
    id: RequestId,
    result: CommandResult,
    earlier: Earlier,
) {
    let mut replaces = None;
    if let Some(&i) = seen.get(&id) {
        // Applied earlier in this batch: that row is never written; the stored row it
        // replaced, if any, is replaced by this one instead.
        if let Some(prev) = plan.new_ids.get_mut(i) {
            prev.superseded = true;
            replaces = prev.replaces;
        }
    } else if let Earlier::Evicted(order) = earlier {
        replaces = Some(order);
    }
    seen.insert(id, plan.new_ids.len());
    plan.new_ids.push(NewId { id, order: plan.dedup_next, result, replaces, superseded: false });
    plan.dedup_next += 1;
}

/// The error of a command whose apply failed. A store error met while reading (a sealed value
/// that fails authentication, a missing key) keeps its kind, so the operator sees the cause.
fn command_error(tables: &NsTables, log_id: &impl std::fmt::Display, e: std::io::Error) -> StoreError {
    if let Some(store) = e.get_ref().and_then(|inner| inner.downcast_ref::<StoreError>()) {
        if !matches!(store, StoreError::StateMachine(_)) {
            return store.clone();
        }
    }
    StoreError::StateMachine(format!("namespace {:?}, entry {log_id}: {e}", tables.ns().as_str()))
}

/// Apply one command: accepted changes join the batch's, a refusal changes nothing.
fn apply_command<T>(
    kv: &T,
    codec: &Codec,
    tables: &NsTables,
    batch: &mut Changes,
    sm: &dyn StateMachine,
    context: &ApplyContext,
    command: &Command,
) -> std::io::Result<CommandResult>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let mut view = EntryTable::new(kv, codec, tables, batch);
    let output = sm.apply(context, &mut view, &command.payload)?;
    if output.is_ok() {
        let changes = view.into_changes();
        batch.extend(changes);
    }
    Ok(CommandResult { output })
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
