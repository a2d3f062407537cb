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

use std::collections::HashMap;
use std::time::Duration;

use crate::prepare::{Kind, SearchOp};

/// `ops` with the returns of unknown writes narrowed and the writes that cannot matter dropped.
pub(crate) fn bound_unknown(ops: &[SearchOp]) -> Vec<SearchOp> {
    if ops.iter().all(|op| op.ret.is_some()) {
        return ops.to_vec();
    }
    // For each value: writers, earliest and latest return of a read of it.
    let mut writers: HashMap<u32, usize> = HashMap::new();
    let mut reads: HashMap<u32, (Duration, Duration)> = HashMap::new();
    for op in ops {
        match op.kind {
            Kind::Write(v) => *writers.entry(v).or_default() += 1,
            Kind::Read(v) => {
                let ret = op.ret.unwrap_or(Duration::MAX);
                let span = reads.entry(v).or_insert((ret, ret));
                span.0 = span.0.min(ret);
                span.1 = span.1.max(ret);
            }
        }
    }
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        match (op.kind, op.ret) {
            (Kind::Write(v), None) => {
                let Some(&(first, last)) = reads.get(&v) else {
                    continue;
                };
                if last < op.call {
                    continue;
                }
                let unique = writers.get(&v) == Some(&1) && v != crate::prepare::ABSENT;
                out.push(if unique {
                    SearchOp { ret: Some(first.max(op.call)), ..*op }
                } else {
                    SearchOp { ret: Some(last), optional: true, ..*op }
                });
            }
            _ => out.push(*op),
        }
    }
    out
}
