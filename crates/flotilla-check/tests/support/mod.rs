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
    generate_mixed(seed, shape, 0)
}

/// [`generate_with_finals`] with `cas_percent` in 100 operations compare-and-sets, each from
/// the last value its client wrote or read on the key (or from absent), as a real client would
/// after a read; whether its comparison held is decided when the effects are applied.
pub fn generate_mixed(seed: u64, shape: &Shape, cas_percent: u64) -> (History, HashMap<String, Option<Value>>) {
    let mut rng = Rng::new(seed);
    // Per client and key, the value it last wrote (a guess at what the key holds).
    let mut last_seen: HashMap<(u64, String), Value> = HashMap::new();
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
            let (op, outcome, effect) = if (45..45 + cas_percent).contains(&roll) {
                next_value += 1;
                let expected = last_seen.get(&(c, key.clone())).filter(|_| rng.chance(80)).cloned();
                let op = Op::Cas { expected, new: Value::from(next_value) };
                last_seen.insert((c, key.clone()), Value::from(next_value));
                // The outcome of a definite one is settled when the effects are applied.
                if rng.chance(85) {
                    (op, Outcome::Ok, Some(inside))
                } else {
                    let effect = rng.chance(50).then(|| invoked + rng.below(4 * latency + 10));
                    (op, Outcome::Unknown, effect)
                }
            } else if roll < 45 {
                let op = if rng.chance(10) {
                    Op::Delete
                } else {
                    next_value += 1;
                    Op::write(next_value)
                };
                if let (true, Op::Write(v)) = (cas_percent > 0, &op) {
                    last_seen.insert((c, key.clone()), v.clone());
                }
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
            Op::Cas { expected, new } => {
                if expected == register {
                    *register = Some(new.clone());
                } else if entry.outcome == Outcome::Ok {
                    entry.outcome = Outcome::Fail;
                }
            }
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
