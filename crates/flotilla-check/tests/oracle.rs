//! On small random histories, the checker agrees with a brute-force enumeration of every order.

use std::time::Duration;

use flotilla_check::{check_key, Budget, Entry, History, Op, Outcome, Value, Verdict};
use proptest::prelude::*;

/// One operation the brute force must place (`ret` `None`: at infinity).
#[derive(Clone, Debug)]
struct Placed {
    op: Op,
    call: u64,
    ret: Option<u64>,
    /// A compare-and-set whose comparison failed: legal only where the register does not hold
    /// its expected value, and changes nothing.
    failed: bool,
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// Whether some subset of the unknown writes and some order of the operations, respecting
/// real time, explains every read.
fn brute_force(h: &History) -> bool {
    let mut must = Vec::new();
    let mut may = Vec::new();
    for e in h.entries() {
        let outcome = e.effective_outcome();
        let placed = |ret| Placed { op: e.op.clone(), call: micros(e.invoked), ret, failed: false };
        match (&e.op, outcome) {
            (Op::Cas { .. }, Outcome::Fail) => {
                must.push(Placed { failed: true, ..placed(e.completed.map(micros)) });
            }
            (_, Outcome::Fail) | (Op::Read(_), Outcome::Unknown) => {}
            (_, Outcome::Ok) => must.push(placed(e.completed.map(micros))),
            (_, Outcome::Unknown) => may.push(placed(None)),
        }
    }
    (0..1u32 << may.len()).any(|mask| {
        let mut ops = must.clone();
        ops.extend(may.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, p)| p.clone()));
        let mut used = vec![false; ops.len()];
        place(&ops, &mut used, None)
    })
}

fn place(ops: &[Placed], used: &mut [bool], state: Option<Value>) -> bool {
    if used.iter().all(|u| *u) {
        return true;
    }
    for i in 0..ops.len() {
        if used[i] {
            continue;
        }
        // Everything that returned strictly before i was called must already be placed.
        let blocked = (0..ops.len()).any(|j| !used[j] && j != i && ops[j].ret.is_some_and(|r| r < ops[i].call));
        if blocked {
            continue;
        }
        let next = match &ops[i].op {
            Op::Write(v) => Some(v.clone()),
            Op::Delete => None,
            Op::Read(v) if *v == state => state.clone(),
            Op::Read(_) => continue,
            Op::Cas { expected, .. } if ops[i].failed && *expected != state => state.clone(),
            Op::Cas { expected, new } if !ops[i].failed && *expected == state => Some(new.clone()),
            Op::Cas { .. } => continue,
        };
        used[i] = true;
        if place(ops, used, next) {
            used[i] = false;
            return true;
        }
        used[i] = false;
    }
    false
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    arb_entry_with(3, 4, 0)
}

/// Entries of up to `values` distinct values, `deletes` in 10 of them deletes, and outcomes
/// biased towards unknown by `unknown_bias` (0..=3).
fn arb_entry_with(values: u64, deletes: u8, unknown_bias: u8) -> impl Strategy<Value = Entry> {
    (0u64..20, 0u64..8, 0u8..10, 0u64..=values, 0u8..10, 0u64..4).prop_map(
        move |(call, len, kind, value, outcome, client)| {
            let value = Value::from(value);
            let outcome = outcome.saturating_add(unknown_bias).min(9);
            let (op, outcome) = match kind {
                k if k < 4 - deletes.min(4) => (Op::Write(value), outcome),
                k if k < 5 => (Op::Delete, outcome),
                // Reads: value 0 stands for an absent key.
                _ => (Op::Read((value.0 != "0").then_some(value)), outcome.min(7)),
            };
            let outcome = match outcome {
                0..=6 => Outcome::Ok,
                7 => Outcome::Fail,
                _ => Outcome::Unknown,
            };
            Entry {
                client,
                key: "k".into(),
                op,
                invoked: Duration::from_micros(call),
                completed: Some(Duration::from_micros(call + len)),
                outcome,
            }
        },
    )
}

/// Entries of up to `values` distinct values, three in ten of them compare-and-sets (from a
/// value or from absent, which value 0 stands for) that succeeded, failed their comparison or
/// ended unknown.
fn arb_cas_entry(values: u64) -> impl Strategy<Value = Entry> {
    (arb_entry_with(values, 1, 1), 0u8..10, 0u64..=values, 1u64..=values, 0u8..10).prop_map(
        |(mut entry, kind, expected, new, outcome)| {
            if kind < 3 {
                let expected = (expected != 0).then(|| Value::from(expected));
                entry.op = Op::Cas { expected, new: Value::from(new) };
                entry.outcome = match outcome {
                    0..=4 => Outcome::Ok,
                    5..=7 => Outcome::Fail,
                    _ => Outcome::Unknown,
                };
            }
            entry
        },
    )
}

/// Like [`arb_entry`] but every write has its own value, as a real driver records them.
fn unique_values(mut entries: Vec<Entry>) -> Vec<Entry> {
    let mut next = 100u64;
    for e in entries.iter_mut() {
        if let Op::Write(v) | Op::Cas { new: v, .. } = &mut e.op {
            next += 1;
            *v = Value::from(next);
        }
    }
    // Reads observe, and compare-and-sets expect, one of the written values (or something
    // else, or absent).
    let written: Vec<Value> = entries
        .iter()
        .filter_map(|e| match &e.op {
            Op::Write(v) | Op::Cas { new: v, .. } => Some(v.clone()),
            _ => None,
        })
        .collect();
    for (i, e) in entries.iter_mut().enumerate() {
        if let Op::Read(Some(v)) | Op::Cas { expected: Some(v), .. } = &mut e.op {
            if !written.is_empty() && i % 5 != 4 {
                *v = written[(micros(e.invoked) as usize + i) % written.len()].clone();
            }
        }
    }
    entries
}

fn agree(h: &History) -> Result<(), TestCaseError> {
    let expected = brute_force(h);
    let verdict = check_key(h, "k", Budget::default()).verdict;
    match &verdict {
        Verdict::Linearizable => prop_assert!(expected, "checker: linearizable, brute force: not\n{}", h),
        Verdict::NotLinearizable { minimal, shrunk, .. } => {
            prop_assert!(!expected, "checker: not linearizable, brute force: linearizable\n{}", h);
            prop_assert!(*shrunk);
            prop_assert!(!brute_force(minimal), "the minimal history is linearizable:\n{}", minimal);
        }
        Verdict::Undetermined { reason } => prop_assert!(false, "undetermined on a tiny history: {}", reason),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_brute_force(entries in prop::collection::vec(arb_entry(), 1..8)) {
        agree(&History::from_entries(entries))?;
    }

    #[test]
    fn agrees_with_brute_force_on_deletes_and_unknown_outcomes(
        entries in prop::collection::vec(arb_entry_with(2, 2, 2), 1..8),
    ) {
        agree(&History::from_entries(entries))?;
    }

    #[test]
    fn agrees_with_brute_force_on_compare_and_sets(entries in prop::collection::vec(arb_cas_entry(3), 1..8)) {
        agree(&History::from_entries(entries))?;
    }

    #[test]
    fn agrees_with_brute_force_on_compare_and_sets_of_unique_values(
        entries in prop::collection::vec(arb_cas_entry(3), 1..9),
    ) {
        agree(&History::from_entries(unique_values(entries)))?;
    }

    #[test]
    fn agrees_with_brute_force_on_unique_values(entries in prop::collection::vec(arb_entry(), 1..8)) {
        agree(&History::from_entries(unique_values(entries)))?;
    }
}
