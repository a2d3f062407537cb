//! Shrinking a non-linearizable history to a small witness.
//!
//! Any sub-history is not a fair witness: dropping the write a read observed makes that read
//! impossible on its own. A sub-history is *closed* when, for every read it keeps, it also keeps
//! every write of the observed value (for a read of an absent key: every delete), and likewise
//! for the value each kept compare-and-set expects; and when it keeps a failed comparison, it
//! keeps every write that may have been the last one before it (that comparison saw whatever
//! that write left, and dropping it would show the comparison an older value). Restricting a linearization of the whole history to a closed
//! sub-history is still a linearization (the write each read follows is still the last one
//! before it), so a closed sub-history that is not linearizable proves the whole history is
//! not.

use std::collections::HashSet;

use crate::budget::Meter;
use crate::prepare::{Kind, SearchOp};
use crate::wgl::linearizable;

/// Indices into `ops` of a closed sub-history that is still not linearizable, shrunk greedily
/// (chunks of halving size, then single operations until none can go), and whether shrinking
/// ran to the end (`false`: the budget ran out first).
pub(crate) fn shrink(ops: &[SearchOp], meter: &mut Meter) -> (Vec<usize>, bool) {
    let mut kept: Vec<usize> = (0..ops.len()).collect();
    let mut chunk = (ops.len() / 2).max(1);
    loop {
        let mut removed = false;
        let mut i = 0;
        while i < kept.len() {
            let end = (i + chunk).min(kept.len());
            let mut candidate: Vec<usize> = kept[..i].iter().chain(&kept[end..]).copied().collect();
            close(ops, &mut candidate);
            if candidate.len() < kept.len() {
                let sub: Vec<SearchOp> = candidate.iter().map(|&j| ops[j]).collect();
                match linearizable(&sub, meter) {
                    Ok(false) => {
                        kept = candidate;
                        removed = true;
                        continue;
                    }
                    Ok(true) => {}
                    Err(_) => return (kept, false),
                }
            }
            i = end;
        }
        if chunk > 1 {
            chunk /= 2;
        } else if !removed {
            return (kept, true);
        }
    }
}

/// Close `kept`: add every operation that may write a value some kept operation requires,
/// and every write that may be the last one before a kept failed comparison. Keep it sorted.
fn close(ops: &[SearchOp], kept: &mut Vec<usize>) {
    let mut present: HashSet<usize> = kept.iter().copied().collect();
    // Added writers may require values of their own, or cover writes for a failed
    // comparison: repeat until nothing changes.
    loop {
        let required: HashSet<u32> = present.iter().filter_map(|&i| ops[i].kind.requires()).collect();
        let before = present.len();
        for (i, op) in ops.iter().enumerate() {
            if let Some(v) = op.kind.writes() {
                if required.contains(&v) || may_be_seen_by_a_failed_comparison(ops, &present, op) {
                    present.insert(i);
                }
            }
        }
        if present.len() == before {
            break;
        }
    }
    kept.clear();
    kept.extend(present);
    kept.sort_unstable();
}

/// Whether the write `w` may be the last write before some failed comparison of `present`.
///
/// A failed comparison saw whatever the last write before it left, so that write must stay:
/// without it the comparison would see an older value, perhaps the very one it expected. A
/// write cannot be that last one if it was called after the comparison returned, or if it
/// returned before some kept write that surely took effect was called, that one having
/// returned before the comparison was called (it sits between the two in every order).
fn may_be_seen_by_a_failed_comparison(ops: &[SearchOp], present: &HashSet<usize>, w: &SearchOp) -> bool {
    present.iter().any(|&f| {
        let (Kind::Differs(_), Some(f_ret)) = (ops[f].kind, ops[f].ret) else {
            return false;
        };
        if w.call > f_ret {
            return false;
        }
        let Some(w_ret) = w.ret else {
            return true;
        };
        let covered = present.iter().any(|&c| {
            let c = &ops[c];
            c.kind.writes().is_some() && c.ret.is_some_and(|r| r < ops[f].call) && w_ret < c.call
        });
        !covered
    })
}
