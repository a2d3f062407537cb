//! Applying a [`Txn`]: compares, then one branch, creating at most one revision.

use std::io;
use std::ops::Bound;

use super::layout::{self, Current, Event, EventRef};
use super::read::{self, Revisions};
use super::types::{Compare, CompareOp, CompareTarget, KvRefusal, OpResult, RangeEnd, Txn, TxnOp, TxnReply};
use crate::state_machine::{Scan, StateTable};

/// Most keys one delete may remove, so one log entry's work stays bounded.
pub const MAX_DELETE_KEYS: usize = 100_000;

/// Most operations in one transaction (both branches together, nested transactions and their
/// operations included), and most compares (nested ones included).
pub const MAX_TXN_OPS: usize = 1_024;

/// Most levels of transactions nested in one another (the outer one is level 1).
pub const MAX_TXN_DEPTH: usize = 16;

/// Apply `txn` to `table`: the reply, or a refusal decided before anything was written.
pub(crate) fn apply(table: &mut dyn StateTable, txn: &Txn) -> io::Result<Result<TxnReply, KvRefusal>> {
    if let Err(refusal) = validate(txn) {
        return Ok(Err(refusal));
    }
    let revs = read::revisions(table)?;
    // As etcd: every compare, nested ones included, sees the state before the transaction,
    // so the path through it is fixed before anything is written.
    let path = path(table, txn)?;
    if let Err(refusal) = check_path(table, &revs, txn, &path)? {
        return Ok(Err(refusal));
    }
    let mut writer = Writer::new(&revs);
    let results = writer.run_path(table, &revs, txn, &path)?;
    let revision = writer.finish(table, &revs)?;
    Ok(Ok(TxnReply { succeeded: path.succeeded, revision, results }))
}

/// The way through a transaction: which branch runs, and the ways through the transactions
/// nested in that branch, in their order.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

/// The way through `txn`, its compares evaluated against `table` as it is.
fn path(table: &dyn StateTable, txn: &Txn) -> io::Result<Path> {
    let mut succeeded = true;
    for compare in &txn.compares {
        if !holds(table, compare)? {
            succeeded = false;
            break;
        }
    }
    let nested = txn.branch(succeeded).iter().filter_map(nested_txn).map(|inner| path(table, inner));
    Ok(Path { succeeded, nested: nested.collect::<io::Result<_>>()? })
}

fn nested_txn(op: &TxnOp) -> Option<&Txn> {
    match op {
        TxnOp::Txn(inner) => Some(inner),
        _ => None,
    }
}

/// Refuse what etcd refuses before looking at the data: too many operations or levels, a
/// branch that writes one key twice or puts a key it also deletes (etcd's rule for nested
/// transactions: a key may be put by both branches of a nested transaction, which exclude
/// each other, but not also by the branch around it).
fn validate(txn: &Txn) -> Result<(), KvRefusal> {
    let (mut ops, mut compares) = (0, 0);
    count(txn, 1, &mut ops, &mut compares)?;
    if ops > MAX_TXN_OPS || compares > MAX_TXN_OPS {
        return Err(KvRefusal::Invalid(format!("a transaction holds at most {MAX_TXN_OPS} operations")));
    }
    for branch in [&txn.success, &txn.failure] {
        writes(branch)?;
    }
    Ok(())
}

/// Add the operations and compares of `txn`, at nesting `depth`, to the counts.
fn count(txn: &Txn, depth: usize, ops: &mut usize, compares: &mut usize) -> Result<(), KvRefusal> {
    if depth > MAX_TXN_DEPTH {
        return Err(KvRefusal::Invalid(format!("transactions nest at most {MAX_TXN_DEPTH} levels deep")));
    }
    *compares += txn.compares.len();
    for op in txn.success.iter().chain(&txn.failure) {
        *ops += 1;
        if let TxnOp::Txn(inner) = op {
            count(inner, depth + 1, ops, compares)?;
        }
    }
    Ok(())
}

/// The keys `branch` may put and the ranges it may delete, nested transactions included, or
/// the key it writes twice (etcd's `checkIntervals`).
#[allow(clippy::type_complexity)]
fn writes(branch: &[TxnOp]) -> Result<(Vec<&[u8]>, Vec<(&[u8], &RangeEnd)>), KvRefusal> {
    let duplicate = |key: &[u8]| KvRefusal::DuplicateKey(String::from_utf8_lossy(key).into_owned());
    let mut dels: Vec<(&[u8], &RangeEnd)> = Vec::new();
    for op in branch {
        if let TxnOp::Delete { key, end, .. } = op {
            dels.push((key, end));
        }
    }
    let deleted = |dels: &[(&[u8], &RangeEnd)], key: &[u8]| dels.iter().any(|(start, end)| end.contains(start, key));
    let mut puts: Vec<&[u8]> = Vec::new();
    for inner in branch.iter().filter_map(nested_txn) {
        let (puts_then, dels_then) = writes(&inner.success)?;
        let (puts_else, dels_else) = writes(&inner.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deleted(&dels, key) {
                return Err(duplicate(key));
            }
            puts.push(key);
        }
        for key in &puts_else {
            // Both branches of the nested transaction may put it: they exclude each other.
            if (puts.contains(key) && !puts_then.contains(key)) || deleted(&dels, key) {
                return Err(duplicate(key));
            }
            if !puts.contains(key) {
                puts.push(key);
            }
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in branch {
        if let TxnOp::Put { key, .. } = op {
            if puts.contains(&key.as_slice()) || deleted(&dels, key) {
                return Err(duplicate(key));
            }
            puts.push(key);
        }
    }
    Ok((puts, dels))
}

/// Refuse, before any write, what depends on the data along `path` through `txn`: a read of
/// a compacted or future revision, a delete of more than [`MAX_DELETE_KEYS`] keys, a put on a
/// lease that does not exist.
fn check_path(table: &dyn StateTable, revs: &Revisions, txn: &Txn, path: &Path) -> io::Result<Result<(), KvRefusal>> {
    let mut nested = path.nested.iter();
    for op in txn.branch(path.succeeded) {
        match op {
            TxnOp::Put { lease, .. } if *lease != 0 && table.get(&layout::lease_key(*lease))?.is_none() => {
                return Ok(Err(KvRefusal::LeaseNotFound(*lease)));
            }
            TxnOp::Range(request) if request.revision != 0 => {
                if let Err(refusal) = revs.resolve(request.revision) {
                    return Ok(Err(refusal));
                }
            }
            TxnOp::Delete { key, end, .. }
                if *end != RangeEnd::Key && count_live(table, key, end, MAX_DELETE_KEYS + 1)? > MAX_DELETE_KEYS =>
            {
                return Ok(Err(KvRefusal::Invalid(format!(
                    "a delete removes at most {MAX_DELETE_KEYS} keys; delete the range in parts"
                ))));
            }
            TxnOp::Txn(inner) => {
                let Some(inner_path) = nested.next() else { return Err(io::Error::other("a nested path is missing")) };
                if let Err(refusal) = check_path(table, revs, inner, inner_path)? {
                    return Ok(Err(refusal));
                }
            }
            _ => {}
        }
    }
    Ok(Ok(()))
}

/// How many live keys lie in a range, counting up to `max`.
fn count_live(table: &dyn StateTable, key: &[u8], end: &RangeEnd, max: usize) -> io::Result<usize> {
    let (start, stop) = layout::current_range(key, end);
    let mut count = 0;
    if start < stop {
        table.scan(Bound::Included(&start), Bound::Excluded(&stop), &mut |_, value| {
            let state: Current = layout::decode(value, "current")?;
            count += usize::from(!state.deleted);
            Ok(if count >= max { Scan::Stop } else { Scan::Continue })
        })?;
    }
    Ok(count)
}

/// Whether `compare` holds against the key's live state (etcd's rules: an absent key has
/// version, revisions and lease 0, and no value compares true against it).
fn holds(table: &dyn StateTable, compare: &Compare) -> io::Result<bool> {
    let live = read::current(table, &compare.key)?;
    let ordering = match (&compare.target, &live) {
        (CompareTarget::Value(_), None) => return Ok(false),
        (CompareTarget::Value(v), Some(c)) => read::live_value(table, c)?.as_slice().cmp(v.as_slice()),
        (CompareTarget::Version(v), _) => live.as_ref().map_or(0, |c| c.version).cmp(v),
        (CompareTarget::CreateRevision(v), _) => live.as_ref().map_or(0, |c| c.create_revision).cmp(v),
        (CompareTarget::ModRevision(v), _) => live.as_ref().map_or(0, |c| c.mod_revision).cmp(v),
        (CompareTarget::Lease(v), _) => live.as_ref().map_or(0, |c| c.lease).cmp(v),
    };
    Ok(match compare.op {
        CompareOp::Equal => ordering.is_eq(),
        CompareOp::NotEqual => ordering.is_ne(),
        CompareOp::Greater => ordering.is_gt(),
        CompareOp::Less => ordering.is_lt(),
    })
}

/// Writes of one command: every change is event `sub` of the command's revision.
pub(crate) struct Writer {
    revision: u64,
    sub: u32,
}

impl Writer {
    /// A writer of the revision after `revs.current`.
    pub(crate) fn new(revs: &Revisions) -> Self {
        Self { revision: revs.current + 1, sub: 0 }
    }

    /// Record the new revision if anything changed; the namespace's revision after the command.
    pub(crate) fn finish(self, table: &mut dyn StateTable, revs: &Revisions) -> io::Result<u64> {
        if self.sub == 0 {
            return Ok(revs.current);
        }
        table.put(layout::REVISION, &layout::encode_revisions(self.revision, revs.compacted))?;
        Ok(self.revision)
    }

    /// Run the branch of `txn` that `path` takes, nested transactions along their own paths.
    fn run_path(
        &mut self,
        table: &mut dyn StateTable,
        revs: &Revisions,
        txn: &Txn,
        path: &Path,
    ) -> io::Result<Vec<OpResult>> {
        let branch = txn.branch(path.succeeded);
        let mut nested = path.nested.iter();
        let mut results = Vec::with_capacity(branch.len());
        for op in branch {
            let result = match op {
                TxnOp::Txn(inner) => {
                    let inner_path = nested.next().ok_or_else(|| io::Error::other("a nested path is missing"))?;
                    let results = self.run_path(table, revs, inner, inner_path)?;
                    OpResult::Txn { succeeded: inner_path.succeeded, results }
                }
                op => self.run(table, revs, op)?,
            };
            results.push(result);
        }
        Ok(results)
    }

    fn run(&mut self, table: &mut dyn StateTable, revs: &Revisions, op: &TxnOp) -> io::Result<OpResult> {
        Ok(match op {
            TxnOp::Put { key, value, lease, prev_kv } => {
                let row = read::current_row(table, key)?;
                let existed = row.as_ref().is_some_and(|c| !c.deleted);
                let prev = match (prev_kv, existed) {
                    (true, true) => row.clone().map(|c| read::live_key_value(table, key.clone(), c)).transpose()?,
                    _ => None,
                };
                self.put(table, key, value, *lease, row)?;
                OpResult::Put { prev, existed }
            }
            TxnOp::Delete { key, end, prev_kv } => {
                let victims = live_in_range(table, key, end)?;
                let deleted = victims.len() as u64;
                let mut prev = Vec::new();
                for (victim, state) in victims {
                    if *prev_kv {
                        prev.push(read::live_key_value(table, victim.clone(), state.clone())?);
                    }
                    self.delete(table, &victim, &state)?;
                }
                OpResult::Delete { deleted, prev }
            }
            TxnOp::Range(request) => {
                // Reads see the branch's earlier writes, at the revision this transaction
                // creates; an explicit revision is one that existed before it (checked).
                let seen = Revisions { current: if self.sub > 0 { self.revision } else { revs.current }, ..*revs };
                let at = if request.revision == 0 { seen.current } else { request.revision };
                OpResult::Range(read::range_at(table, &seen, request, at)?)
            }
            TxnOp::Txn(_) => return Err(io::Error::other("a nested transaction runs along its path")),
        })
    }

    fn next_sub(&mut self) -> io::Result<u32> {
        let sub = self.sub;
        self.sub = sub.checked_add(1).ok_or_else(|| io::Error::other("too many writes in one revision"))?;
        Ok(sub)
    }

    /// Put `value` under `key`, whose current row (live or tombstone) is `row`.
    fn put(
        &mut self,
        table: &mut dyn StateTable,
        key: &[u8],
        value: &[u8],
        lease: u64,
        row: Option<Current>,
    ) -> io::Result<()> {
        let sub = self.next_sub()?;
        let prev = row.as_ref().map(Current::own_event);
        let live = row.filter(|c| !c.deleted);
        let old_lease = live.as_ref().map_or(0, |c| c.lease);
        if old_lease != 0 && old_lease != lease {
            table.delete(&layout::lease_key_row(old_lease, key))?;
        }
        if lease != 0 {
            table.put(&layout::lease_key_row(lease, key), &[])?;
        }
        let (create_revision, version) = match live {
            Some(c) => (c.create_revision, c.version + 1),
            None => (self.revision, 1),
        };
        let mod_revision = self.revision;
        let now = Current { create_revision, mod_revision, version, lease, sub, prev, deleted: false };
        table.put(&layout::current_key(key), &layout::encode(&now))?;
        let event = EventRef::Put { key, create_revision, version, lease, value, prev };
        table.put(&layout::event_key(self.revision, sub), &layout::encode(&event))
    }

    /// Delete `key`, whose live state is `state`: its current row becomes a tombstone.
    pub(crate) fn delete(&mut self, table: &mut dyn StateTable, key: &[u8], state: &Current) -> io::Result<()> {
        let sub = self.next_sub()?;
        if state.lease != 0 {
            table.delete(&layout::lease_key_row(state.lease, key))?;
        }
        let prev = Some(state.own_event());
        let tombstone =
            Current { create_revision: 0, mod_revision: self.revision, version: 0, lease: 0, sub, prev, deleted: true };
        table.put(&layout::current_key(key), &layout::encode(&tombstone))?;
        table.put(&layout::event_key(self.revision, sub), &layout::encode(&Event::Delete { key: key.to_vec(), prev }))
    }
}

/// The live keys in a range, with their states (at most [`MAX_DELETE_KEYS`], checked before).
fn live_in_range(table: &dyn StateTable, key: &[u8], end: &RangeEnd) -> io::Result<Vec<(Vec<u8>, Current)>> {
    if *end == RangeEnd::Key {
        return Ok(read::current(table, key)?.map(|c| (key.to_vec(), c)).into_iter().collect());
    }
    let (start, stop) = layout::current_range(key, end);
    let mut found = Vec::new();
    if start < stop {
        table.scan(Bound::Included(&start), Bound::Excluded(&stop), &mut |row, value| {
            let state: Current = layout::decode(value, "current")?;
            if !state.deleted {
                found.push((row[1..].to_vec(), state));
            }
            Ok(if found.len() >= MAX_DELETE_KEYS { Scan::Stop } else { Scan::Continue })
        })?;
    }
    Ok(found)
}
