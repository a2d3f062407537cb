//! Turning one key's entries into the operations the search works on.

use std::collections::HashMap;
use std::time::Duration;

use crate::entry::Entry;
use crate::op::{Op, Outcome, Value};

/// The value id of an absent key (the initial state, and what a delete leaves).
pub(crate) const ABSENT: u32 = 0;

/// What one operation does to the register, values as small ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Set the register (a delete writes [`ABSENT`]).
    Write(u32),
    /// Observe the register.
    Read(u32),
    /// Set the register to `new` if it holds `expected`; legal only then (a compare-and-set
    /// that succeeded, or may have).
    Cas { expected: u32, new: u32 },
    /// Observe that the register does not hold this value (a compare-and-set whose comparison
    /// failed): legal only then, and changes nothing.
    Differs(u32),
}

impl Kind {
    /// The value the register must hold for this operation to be legal, if one.
    pub fn requires(self) -> Option<u32> {
        match self {
            Kind::Read(v) | Kind::Cas { expected: v, .. } => Some(v),
            Kind::Write(_) | Kind::Differs(_) => None,
        }
    }

    /// The value this operation may set the register to, if it may set it.
    pub fn writes(self) -> Option<u32> {
        match self {
            Kind::Write(v) | Kind::Cas { new: v, .. } => Some(v),
            Kind::Read(_) | Kind::Differs(_) => None,
        }
    }
}

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SearchOp {
    pub kind: Kind,
    pub call: Duration,
    /// `None`: the operation may take effect at any time after its call.
    pub ret: Option<Duration>,
    /// Whether the search may leave the operation out instead of linearizing it.
    pub optional: bool,
}

/// One key's operations ready for the search, with the entry each came from.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    pub ops: Vec<SearchOp>,
    /// `origin[i]` is the index, in the key's entries, of `ops[i]`.
    pub origin: Vec<usize>,
}

/// Keep what can matter for linearizability:
/// - failed operations never happened: dropped, except compare-and-sets, whose failed
///   comparison observed the register;
/// - reads with unknown outcome returned nothing: dropped;
/// - writes and deletes with unknown outcome may take effect until the end: return at infinity
///   (see [`crate::bound`] for how the search narrows that down).
pub(crate) fn prepare<'a>(entries: &[&'a Entry]) -> Prepared {
    let mut ids: HashMap<&Value, u32> = HashMap::new();
    let mut id_of = |v: Option<&'a Value>| -> u32 {
        match v {
            None => ABSENT,
            Some(v) => {
                let next = ids.len() as u32 + 1;
                *ids.entry(v).or_insert(next)
            }
        }
    };
    let mut candidates: Vec<(SearchOp, usize)> = Vec::new();
    for (index, e) in entries.iter().enumerate() {
        let outcome = e.effective_outcome();
        if outcome == Outcome::Fail && !e.op.is_cas() {
            continue;
        }
        let e: &'a Entry = e;
        let kind = match &e.op {
            Op::Read(_) if outcome != Outcome::Ok => continue,
            Op::Read(v) => Kind::Read(id_of(v.as_ref())),
            Op::Write(v) => Kind::Write(id_of(Some(v))),
            Op::Delete => Kind::Write(ABSENT),
            Op::Cas { expected, .. } if outcome == Outcome::Fail => Kind::Differs(id_of(expected.as_ref())),
            Op::Cas { expected, new } => Kind::Cas { expected: id_of(expected.as_ref()), new: id_of(Some(new)) },
        };
        // A definite outcome (success, or a failed comparison) happened within the interval;
        // an unknown one may happen at any time after the call.
        let ret = match (outcome, e.completed) {
            (Outcome::Ok | Outcome::Fail, Some(t)) => Some(t.max(e.invoked)),
            _ => None,
        };
        candidates.push((SearchOp { kind, call: e.invoked, ret, optional: false }, index));
    }
    let mut prepared = Prepared::default();
    for (op, index) in candidates {
        prepared.ops.push(op);
        prepared.origin.push(index);
    }
    prepared
}
