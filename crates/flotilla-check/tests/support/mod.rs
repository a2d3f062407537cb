//! Histories generated from a real sequential register, shared by the randomized tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use flotilla_check::{Entry, History, Op, Outcome, Value};

/// splitmix64: a tiny deterministic generator, enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub struct Shape {
    pub clients: u64,
    pub ops_per_client: u64,
    pub keys: u64,
    /// Longest operation, in microseconds (longer means more overlap).
    pub max_latency_us: u64,
}

/// A history of `shape` from a real register per key: each operation takes effect at one
/// instant inside its interval (an unknown write at any instant after its invocation, or never;
/// a failed write never), in the order of those instants.
pub fn generate(seed: u64, shape: &Shape) -> History {
    generate_with_finals(seed, shape).0
}

/// [`generate`], with the value of each key once every effect has happened.
pub fn generate_with_finals(seed: u64, shape: &Shape) -> (History, HashMap<String, Option<Value>>) {
    let mut rng = Rng::new(seed);
    // (entry, effect instant or None when it never takes effect)
    let mut ops: Vec<(Entry, Option<u64>)> = Vec::new();
    let mut next_client = shape.clients;
    let mut next_value = 0u64;
    for c in 0..shape.clients {
        let mut client = c;
        let mut t = rng.below(50);
        for _ in 0..shape.ops_per_client {
            let key = format!("k{}", rng.below(shape.keys));
            let invoked = t + rng.below(5);
            let latency = rng.below(shape.max_latency_us + 1);
            let completed = invoked + latency;
            let inside = invoked + rng.below(latency + 1);
            let roll = rng.below(100);
            let (op, outcome, effect) = if roll < 45 {
                let op = if rng.chance(10) {
                    Op::Delete
                } else {
                    next_value += 1;
                    Op::write(next_value)
                };
                match rng.below(100) {
                    0..=69 => (op, Outcome::Ok, Some(inside)),
                    70..=84 => (op, Outcome::Fail, None),
                    _ => {
                        // Unknown: maybe never, maybe long after the client gave up.
                        let effect = rng.chance(50).then(|| invoked + rng.below(4 * latency + 10));
                        (op, Outcome::Unknown, effect)
                    }
                }
            } else {
                match rng.below(100) {
                    0..=89 => (Op::read(), Outcome::Ok, Some(inside)),
                    90..=94 => (Op::read_of(Some("junk")), Outcome::Unknown, None),
                    _ => (Op::read_of(Some("junk")), Outcome::Fail, None),
                }
            };
            let entry = Entry {
                client,
                key,
                op,
                invoked: Duration::from_micros(invoked),
                completed: Some(Duration::from_micros(completed)),
                outcome,
            };
            if outcome == Outcome::Unknown {
                // The request may still be in flight: continue as a new client.
                client = next_client;
                next_client += 1;
            }
            ops.push((entry, effect));
            t = completed + rng.below(3);
        }
    }
    // Apply the effects in time order on one register per key.
    let mut order: Vec<usize> = (0..ops.len()).filter(|i| ops[*i].1.is_some()).collect();
    order.sort_by_key(|i| (ops[*i].1, *i));
    let mut registers: HashMap<String, Option<Value>> = Default::default();
    for i in order {
        let entry = &mut ops[i].0;
        let register = registers.entry(entry.key.clone()).or_default();
        match &entry.op {
            Op::Write(v) => *register = Some(v.clone()),
            Op::Delete => *register = None,
            Op::Read(_) => entry.op = Op::Read(register.clone()),
        }
    }
    (History::from_entries(ops.into_iter().map(|(e, _)| e).collect()), registers)
}

/// When the last operation of `h` completed (or was invoked, if later).
pub fn end_of(h: &History) -> Duration {
    h.entries().iter().map(|e| e.completed.unwrap_or(e.invoked).max(e.invoked)).max().unwrap_or_default()
}

/// Indices of reads that completed ok.
pub fn ok_reads(h: &History) -> Vec<usize> {
    h.entries().iter().enumerate().filter(|(_, e)| e.op.is_read() && e.outcome == Outcome::Ok).map(|(i, _)| i).collect()
}
