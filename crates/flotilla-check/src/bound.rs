//! Narrowing the open-ended intervals of unknown writes before a search.
//!
//! A write with unknown outcome may take effect at any time after its call, so its return is
//! at infinity and it stays pending for the rest of the search: every such write would double
//! the states the search may visit. Each history is first rewritten into one that is
//! linearizable exactly when the original is:
//!
//! - An unknown write (or delete) that takes effect after every read that could observe its
//!   value has returned might as well not take effect at all: reads placed after it before the
//!   next write would have to observe its value, and there are none left, so removing it
//!   changes nothing (and a write that never happened can always happen after everything). So
//!   it either takes effect before the last return among those reads, or it can be left out:
//!   its return moves back there and it becomes *optional* for the search. If it was called
//!   after them, or there are none, it is dropped.
//! - If it is the only write of its value and some read observed that value, it must take
//!   effect, and before the *first* of those reads returns, since each of them follows it.
//!
//! Compare-and-sets add two kinds of observers. A compare-and-set from a value needs the
//! register to hold it, like a read of it (a successful one counts for the first rule; one with
//! unknown outcome only for the second, since it may never have happened). A failed comparison
//! observes that the register does *not* hold its expected value, and removing a write that
//! took effect before it can break that (the register falls back to the value before the
//! write, which may be the one it expected). So a write whose value nobody reads may still be
//! needed to explain a failed comparison: it may only be left out after every failed
//! comparison has returned, whatever value they expected. An unknown compare-and-set is
//! narrowed like a write of its new value (removing it leaves the register at its expected
//! value, with the same reasoning).

use std::collections::HashMap;
use std::time::Duration;

use crate::prepare::{Kind, SearchOp, ABSENT};

/// When the observers of one value return.
#[derive(Clone, Copy, Default)]
struct Observers {
    /// First return among the operations that definitely observed the value.
    first: Option<Duration>,
    /// Last return among every operation that may observe it (`Duration::MAX`: one may still
    /// happen at any time).
    last: Option<Duration>,
}

/// `ops` with the returns of unknown writes narrowed and the writes that cannot matter dropped.
pub(crate) fn bound_unknown(ops: &[SearchOp]) -> Vec<SearchOp> {
    if ops.iter().all(|op| op.ret.is_some()) {
        return ops.to_vec();
    }
    let mut writers: HashMap<u32, usize> = HashMap::new();
    let mut observers: HashMap<u32, Observers> = HashMap::new();
    // The last return of a failed comparison: any write before it may be what it saw.
    let mut last_differs: Option<Duration> = None;
    for op in ops {
        if let Some(v) = op.kind.writes() {
            *writers.entry(v).or_default() += 1;
        }
        if let Some(v) = op.kind.requires() {
            let seen = observers.entry(v).or_default();
            if let Some(ret) = op.ret {
                seen.first = Some(seen.first.map_or(ret, |f| f.min(ret)));
            }
            let ret = op.ret.unwrap_or(Duration::MAX);
            seen.last = Some(seen.last.map_or(ret, |l| l.max(ret)));
        }
        if let Kind::Differs(_) = op.kind {
            last_differs = last_differs.max(op.ret);
        }
    }
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        match (op.kind.writes(), op.ret) {
            (Some(v), None) => {
                let seen = observers.get(&v).copied().unwrap_or_default();
                let Some(last) = seen.last.max(last_differs) else {
                    continue;
                };
                if last < op.call {
                    continue;
                }
                let unique = writers.get(&v) == Some(&1) && v != ABSENT;
                out.push(match seen.first {
                    Some(first) if unique => SearchOp { ret: Some(first.max(op.call)), ..*op },
                    _ => SearchOp { ret: Some(last), optional: true, ..*op },
                });
            }
            _ => out.push(*op),
        }
    }
    out
}
