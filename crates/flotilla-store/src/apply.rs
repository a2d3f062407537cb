//! Applying a batch of committed entries inside the writer's transaction.
//!
//! The batch is all-or-nothing. Phase one computes every result while only *reading* the
//! transaction (commands write into overlays, see [`crate::overlay`]); a failing state machine
//! therefore leaves the shared transaction untouched (a clean failure). Everything that can fail
//! then (encoding, sealing at rest) runs before phase two writes the batch's kv changes, dedup
//! entries, applied log id and membership.

use std::collections::HashMap;

use flotilla_core::{Command, CommandResult, RequestId, StateMachine};
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

/// What phase one decided.
struct Plan<C: StoreConfig> {
    results: Vec<CommandResult>,
    kv: Changes,
    new_ids: Vec<(RequestId, CommandResult)>,
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
    let plan = plan::<C>(txn, tables, codec, sm, entries)?;

    // Encode everything that can fail before the first write.
    let applied = plan.applied.as_ref().map(encode_sealed).transpose().map_err(JobFailure::clean)?;
    let membership = plan.membership.as_ref().map(encode_sealed).transpose().map_err(JobFailure::clean)?;
    let mut meta = txn.open_table(tables.meta()).map_err(clean)?;
    let mut next: u64 = match meta.get(META_DEDUP_NEXT).map_err(clean)? {
        Some(v) => decode_sealed(v.value(), &|| tables.meta_what(META_DEDUP_NEXT)).map_err(JobFailure::clean)?,
        None => 0,
    };
    let mut dedup_rows = Vec::with_capacity(plan.new_ids.len());
    for (id, result) in &plan.new_ids {
        let stored = dedup::encode_entry(tables, codec, id, next, result).map_err(JobFailure::clean)?;
        dedup_rows.push((*id, next, stored));
        next += 1;
    }
    let next_record = encode_sealed(&next).map_err(JobFailure::clean)?;
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
        for (id, order_no, stored) in &dedup_rows {
            dedup::insert(&mut dedup_table, &mut order, id, *order_no, stored).map_err(dirty)?;
        }
        dedup::evict(&mut dedup_table, &mut order, dedup::MAX_DEDUP_ENTRIES).map_err(dirty)?;
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

/// Phase one: compute results and changes, reading only.
fn plan<C: StoreConfig>(
    txn: &WriteTransaction,
    tables: &NsTables,
    codec: &Codec,
    sm: &dyn StateMachine,
    entries: &[C::Entry],
) -> Result<Plan<C>, JobFailure> {
    let kv = txn.open_table(tables.kv()).map_err(clean)?;
    let dedup_table = txn.open_table(tables.dedup()).map_err(clean)?;
    let mut plan = Plan::<C> {
        results: Vec::with_capacity(entries.len()),
        kv: Changes::new(),
        new_ids: Vec::new(),
        applied: None,
        membership: None,
    };
    // Ids applied earlier in this same batch, by position in `plan.new_ids`.
    let mut seen: HashMap<RequestId, usize> = HashMap::new();

    for entry in entries {
        let log_id = entry.log_id();
        let result = if let Some(m) = entry.get_membership() {
            plan.membership = Some(StoredMembership::new(Some(log_id.clone()), m));
            empty_result()
        } else if let Some(command) = C::command(entry) {
            let earlier = match command.id {
                Some(id) => match seen.get(&id) {
                    Some(&i) => plan.new_ids.get(i).map(|(_, r)| r.clone()),
                    None => dedup::lookup(&dedup_table, tables, codec, &id).map_err(JobFailure::clean)?,
                },
                None => None,
            };
            match earlier {
                // Already applied: answer as the first time, change nothing.
                Some(result) => result,
                None => {
                    let result = apply_command(&kv, codec, tables, &mut plan.kv, sm, command)
                        .map_err(|e| JobFailure::clean(command_error(tables, &log_id, e)))?;
                    if let Some(id) = command.id {
                        seen.insert(id, plan.new_ids.len());
                        plan.new_ids.push((id, result.clone()));
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
    command: &Command,
) -> std::io::Result<CommandResult>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let mut view = EntryTable::new(kv, codec, tables, batch);
    let output = sm.apply(&mut view, &command.payload)?;
    if output.is_ok() {
        let changes = view.into_changes();
        batch.extend(changes);
    }
    Ok(CommandResult { output })
}
