//! Shrinking a non-linearizable history to a small witness.
//!
//! Any sub-history is not a fair witness: dropping the write a read observed makes that read
//! impossible on its own. A sub-history is *closed* when, for every read it keeps, it also keeps
//! every write of the observed value (for a read of an absent key: every delete). Restricting a
//! linearization of the whole history to a closed sub-history is still a linearization (the
//! write each read follows is still the last one before it), so a closed sub-history that is not
//! linearizable proves the whole history is not.

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

/// Add to `kept` every write whose value a kept read observed; keep it sorted.
fn close(ops: &[SearchOp], kept: &mut Vec<usize>) {
    let observed: HashSet<u32> = kept
        .iter()
        .filter_map(|&i| match ops[i].kind {
            Kind::Read(v) => Some(v),
            Kind::Write(_) => None,
        })
        .collect();
    let present: HashSet<usize> = kept.iter().copied().collect();
    for (i, op) in ops.iter().enumerate() {
        if let Kind::Write(v) = op.kind {
            if observed.contains(&v) && !present.contains(&i) {
                kept.push(i);
            }
        }
    }
    kept.sort_unstable();
}
