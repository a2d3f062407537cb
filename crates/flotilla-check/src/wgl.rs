//! The Wing-Gong search with Lowe's memoization, for one register.
//!
//! Calls and returns are events in one doubly linked list ordered by time (calls before returns
//! at equal times, so touching intervals count as concurrent). The search walks the list from
//! the front: at a call it tries to linearize that operation next (legal on the current state,
//! and the pair (set of linearized operations, resulting state) not seen before); it then takes
//! the operation's call and return out of the list and starts again at the front. Reaching a
//! return means the operation returning there was not linearized although every operation that
//! could precede it was tried: backtrack, unless the operation is optional, in which case it is
//! left out (counted as done, state unchanged) before backtracking is considered. An empty list
//! is a linearization.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use crate::bound::bound_unknown;
use crate::budget::{Exhausted, Meter};
use crate::prepare::{Kind, SearchOp, ABSENT};

/// Whether `ops`, on a register that starts absent, have a linearization.
pub(crate) fn linearizable(ops: &[SearchOp], meter: &mut Meter) -> Result<bool, Exhausted> {
    if reads_unwritten_value(ops) {
        return Ok(false);
    }
    let ops = &bound_unknown(ops)[..];
    if ops.is_empty() {
        return Ok(true);
    }
    let mut events = Events::new(ops);
    let mut values = Values::new(ops);
    let words = ops.len().div_ceil(64);
    // The memo key: the linearized set as a bitset, then the register state.
    let mut key = vec![0u64; words + 1];
    let mut seen: HashSet<Box<[u64]>, BuildHasherDefault<MixHasher>> = HashSet::default();
    // (operation, state before it, whether it was a choice the search may revisit: not a
    // forced read nor a left-out optional operation)
    let mut stack: Vec<(usize, u32, bool)> = Vec::new();
    let mut state = ABSENT;
    let mut entry = events.first();
    // Whether the walk is at the front of the list, just after a linearization.
    let mut at_front = true;
    while !events.is_empty() {
        meter.tick()?;
        let mut backtrack = false;
        if at_front {
            at_front = false;
            // A legal read (or failed comparison) the walk can reach is linearized at once and
            // no alternative is tried: it leaves the state as is, and whatever may precede it
            // already did, so any linearization from here can be rearranged to place it first.
            if let Some(read) = events.reachable_observation(ops, state) {
                toggle(&mut key, read);
                key[words] = u64::from(state);
                if seen.contains(&key[..]) {
                    // Explored before, from another path: it failed.
                    toggle(&mut key, read);
                    backtrack = true;
                } else {
                    seen.insert(key.clone().into_boxed_slice());
                    stack.push((read, state, false));
                    values.take(&ops[read]);
                    events.lift(read);
                    entry = events.first();
                    at_front = true;
                    continue;
                }
            }
        }
        if !backtrack {
            let op = events.op[entry];
            if !events.is_call[entry] {
                backtrack = true;
                if ops[op].optional {
                    // Leave it out: done, state unchanged. Any linearization that leaves it out
                    // can do so here, as leaving out commutes with everything.
                    toggle(&mut key, op);
                    key[words] = u64::from(state);
                    if seen.contains(&key[..]) {
                        toggle(&mut key, op);
                    } else {
                        seen.insert(key.clone().into_boxed_slice());
                        stack.push((op, state, false));
                        events.lift(op);
                        entry = events.first();
                        at_front = true;
                        continue;
                    }
                }
            } else {
                if let Some(next_state) = values.apply(&ops[op], state) {
                    toggle(&mut key, op);
                    key[words] = u64::from(next_state);
                    if !seen.contains(&key[..]) {
                        seen.insert(key.clone().into_boxed_slice());
                        stack.push((op, state, true));
                        values.take(&ops[op]);
                        state = next_state;
                        events.lift(op);
                        entry = events.first();
                        at_front = true;
                        continue;
                    }
                    toggle(&mut key, op);
                }
                entry = events.next[entry];
            }
        }
        if backtrack {
            // Undo forced moves along with the choice that led to them.
            loop {
                let Some((op, previous, choice)) = stack.pop() else {
                    return Ok(false);
                };
                toggle(&mut key, op);
                state = previous;
                // A left-out operation is optional, so never counted as pending: no-op.
                values.restore(&ops[op]);
                events.unlift(op);
                if choice {
                    entry = events.next[events.call_of[op]];
                    break;
                }
            }
        }
    }
    Ok(true)
}

/// What the search tracks per value id.
struct Values {
    /// Whether exactly one operation writes the value.
    unique: Vec<bool>,
    /// Operations not linearized yet that must find the register holding the value (reads,
    /// compare-and-sets that must take effect).
    pending: Vec<u32>,
}

impl Values {
    fn new(ops: &[SearchOp]) -> Self {
        let top = ops.iter().map(|op| match op.kind {
            Kind::Write(v) | Kind::Read(v) | Kind::Differs(v) => v,
            Kind::Cas { expected, new } => expected.max(new),
        });
        let len = top.max().unwrap_or(0) as usize + 1;
        let mut writers = vec![0u32; len];
        let mut pending = vec![0u32; len];
        for op in ops {
            if let Some(v) = op.kind.writes() {
                writers[v as usize] += 1;
            }
            if let Some(v) = Self::pending_on(op) {
                pending[v as usize] += 1;
            }
        }
        let unique = writers.iter().enumerate().map(|(v, n)| *n == 1 && v as u32 != ABSENT).collect();
        Values { unique, pending }
    }

    /// The value `op` counts as pending on: the one it requires, unless it is optional (the
    /// search may leave it out, so it must not hold a value's last writer back).
    #[inline]
    fn pending_on(op: &SearchOp) -> Option<u32> {
        op.kind.requires().filter(|_| !op.optional)
    }

    /// `op` was linearized.
    #[inline]
    fn take(&mut self, op: &SearchOp) {
        if let Some(v) = Self::pending_on(op) {
            self.pending[v as usize] -= 1;
        }
    }

    /// The linearization of `op` was undone.
    #[inline]
    fn restore(&mut self, op: &SearchOp) {
        if let Some(v) = Self::pending_on(op) {
            self.pending[v as usize] += 1;
        }
    }

    /// The state after `op`, or `None` if it cannot happen in `state` or leads nowhere.
    ///
    /// Leaving a value that only one operation writes, while operations that need it remain,
    /// leads nowhere: that writer is spent, so those operations could never be linearized.
    #[inline]
    fn apply(&self, op: &SearchOp, state: u32) -> Option<u32> {
        match op.kind {
            Kind::Read(v) => (v == state).then_some(state),
            Kind::Differs(v) => (v != state).then_some(state),
            Kind::Write(v) => (!self.stranded(op, state)).then_some(v),
            Kind::Cas { expected, new } => (expected == state && !self.stranded(op, state)).then_some(new),
        }
    }

    /// Whether moving off `state` with `op` would leave operations needing `state` behind
    /// for good (`op` itself aside, when it is one of them).
    #[inline]
    fn stranded(&self, op: &SearchOp, state: u32) -> bool {
        let own = u32::from(Self::pending_on(op) == Some(state));
        self.unique[state as usize] && self.pending[state as usize] > own
    }
}

#[inline]
fn toggle(bits: &mut [u64], i: usize) {
    bits[i / 64] ^= 1 << (i % 64);
}

/// An operation that needs a value that no operation writes can never be linearized (one
/// with an unknown outcome may simply never have happened).
fn reads_unwritten_value(ops: &[SearchOp]) -> bool {
    let written: HashSet<u32> = ops.iter().filter_map(|op| op.kind.writes()).collect();
    ops.iter()
        .any(|op| op.ret.is_some() && matches!(op.kind.requires(), Some(v) if v != ABSENT && !written.contains(&v)))
}

/// The event list: index 0 is the head sentinel, the last index the tail sentinel.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    op: Vec<usize>,
    is_call: Vec<bool>,
    call_of: Vec<usize>,
    return_of: Vec<usize>,
    tail: usize,
}

impl Events {
    fn new(ops: &[SearchOp]) -> Self {
        // (returns only at infinity, time, call before return, op)
        let mut order = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((false, op.call, 0u8, i));
            match op.ret {
                Some(t) => order.push((false, t.max(op.call), 1, i)),
                None => order.push((true, op.call, 1, i)),
            }
        }
        order.sort_unstable();
        let tail = order.len() + 1;
        let mut events = Events {
            next: (1..=tail + 1).collect(),
            prev: (0..=tail).map(|e| e.saturating_sub(1)).collect(),
            op: vec![usize::MAX; tail + 1],
            is_call: vec![false; tail + 1],
            call_of: vec![0; ops.len()],
            return_of: vec![0; ops.len()],
            tail,
        };
        for (pos, &(_, _, kind, op)) in order.iter().enumerate() {
            let e = pos + 1;
            events.op[e] = op;
            events.is_call[e] = kind == 0;
            if kind == 0 {
                events.call_of[op] = e;
            } else {
                events.return_of[op] = e;
            }
        }
        events
    }

    /// A read of `state`, or a failed comparison with another value, whose call comes before
    /// the first return of the list.
    fn reachable_observation(&self, ops: &[SearchOp], state: u32) -> Option<usize> {
        let mut e = self.first();
        while e != self.tail && self.is_call[e] {
            let op = self.op[e];
            match ops[op].kind {
                Kind::Read(v) if v == state => return Some(op),
                Kind::Differs(v) if v != state => return Some(op),
                _ => {}
            }
            e = self.next[e];
        }
        None
    }

    fn first(&self) -> usize {
        self.next[0]
    }

    fn is_empty(&self) -> bool {
        self.next[0] == self.tail
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    /// Take operation `op` out of the list (its call and its return).
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        self.unlink(self.return_of[op]);
    }

    /// Put back the operation lifted last.
    fn unlift(&mut self, op: usize) {
        self.relink(self.return_of[op]);
        self.relink(self.call_of[op]);
    }
}

/// A small, fast hasher for the memo table (the keys are bitsets, not attacker-controlled).
#[derive(Default)]
struct MixHasher(u64);

impl MixHasher {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(7) ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }

    fn write_usize(&mut self, x: usize) {
        self.add(x as u64);
    }

    fn finish(&self) -> u64 {
        // Spread the bits so both the low (bucket) and high (tag) bits vary.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
