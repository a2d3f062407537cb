//! Histories of a real register are always linearizable; one corrupted read never is.

mod support;

use std::time::Duration;

use flotilla_check::{check_all, Budget, History, Op, Outcome, Verdict};
use proptest::prelude::*;
use support::{end_of, generate, generate_mixed, generate_with_finals, ok_reads, Shape};

fn us(x: u64) -> Duration {
    Duration::from_micros(x)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn real_register_histories_are_linearizable(
        seed in any::<u64>(),
        clients in 1u64..7,
        ops_per_client in 1u64..25,
        keys in 1u64..4,
        max_latency_us in 0u64..200,
    ) {
        let h = generate(seed, &Shape { clients, ops_per_client, keys, max_latency_us });
        let report = check_all(&h, Budget::default());
        prop_assert!(report.is_linearizable(), "{report}\nhistory:\n{h}");
    }

    #[test]
    fn real_register_histories_with_compare_and_sets_are_linearizable(
        seed in any::<u64>(),
        clients in 1u64..7,
        ops_per_client in 1u64..25,
        keys in 1u64..4,
        max_latency_us in 0u64..200,
    ) {
        let shape = Shape { clients, ops_per_client, keys, max_latency_us };
        let (h, _) = generate_mixed(seed, &shape, 25);
        let report = check_all(&h, Budget::default());
        prop_assert!(report.is_linearizable(), "{report}\nhistory:\n{h}");
    }

    /// A failed comparison claimed where the comparison held (the register held the expected
    /// value before and after the operation, and no write could put it back) is caught.
    /// (Histories of 4 clients × 19 operations could exhaust the search budget before the
    /// verdict, about once in thousands of cases; smaller ones keep the test deterministic.)
    #[test]
    fn a_compare_and_set_failing_on_the_expected_value_is_caught(
        seed in any::<u64>(),
        clients in 1u64..4,
        ops_per_client in 1u64..12,
        max_latency_us in 0u64..100,
    ) {
        let (mut h, _) = generate_mixed(seed, &Shape { clients, ops_per_client, keys: 1, max_latency_us }, 25);
        let end = end_of(&h);
        h.record(1000, "k0", Op::write("settled"), end + us(10), end + us(20), Outcome::Ok);
        h.record(1001, "k0", Op::cas(Some("settled"), "next"), end + us(30), end + us(40), Outcome::Fail);
        h.record(1002, "k0", Op::read_of(Some("settled")), end + us(50), end + us(60), Outcome::Ok);
        let report = check_all(&h, Budget::default());
        match &report.keys["k0"].verdict {
            Verdict::NotLinearizable { minimal, .. } => {
                prop_assert!(minimal.to_string().contains("cas k0=settled->next"), "{}", minimal);
            }
            other => prop_assert!(false, "failed comparison not caught: {}", other),
        }
    }

    #[test]
    fn one_read_of_a_never_written_value_is_caught(
        seed in any::<u64>(),
        clients in 1u64..7,
        ops_per_client in 1u64..25,
        keys in 1u64..4,
        max_latency_us in 0u64..200,
        pick in any::<prop::sample::Index>(),
    ) {
        let h = generate(seed, &Shape { clients, ops_per_client, keys, max_latency_us });
        let reads = ok_reads(&h);
        prop_assume!(!reads.is_empty());
        let victim = reads[pick.index(reads.len())];
        let mut entries = h.entries().to_vec();
        entries[victim].op = Op::read_of(Some("never-written"));
        let key = entries[victim].key.clone();
        let corrupted = History::from_entries(entries);
        let report = check_all(&corrupted, Budget::default());
        let verdict = &report.keys[&key].verdict;
        match verdict {
            Verdict::NotLinearizable { key: k, minimal, shrunk } => {
                prop_assert_eq!(k, &key);
                prop_assert!(*shrunk);
                prop_assert_eq!(minimal.len(), 1, "{}", minimal);
                prop_assert!(minimal.to_string().contains("never-written"));
            }
            other => prop_assert!(false, "expected a violation, got {}", other),
        }
        // The other keys are untouched.
        prop_assert_eq!(report.violations().len(), 1);
    }

    /// After the run, a read sees the last value of the key; an acknowledged write followed by
    /// a read that still sees the old value (the write was lost) is caught.
    #[test]
    fn a_lost_acknowledged_write_is_caught_by_the_final_read(
        seed in any::<u64>(),
        clients in 1u64..5,
        ops_per_client in 1u64..20,
        max_latency_us in 0u64..100,
    ) {
        let (mut h, finals) = generate_with_finals(seed, &Shape { clients, ops_per_client, keys: 1, max_latency_us });
        let end = end_of(&h);
        let last = finals.get("k0").cloned().flatten();
        h.record(1000, "k0", Op::Read(last.clone()), end + us(10), end + us(11), Outcome::Ok);
        let report = check_all(&h, Budget::default());
        prop_assert!(report.is_linearizable(), "{}", report);
        // An unknown delete may still take effect at any time, so only a present value can
        // prove the loss.
        if last.is_some() {
            h.record(1001, "k0", Op::write("lost"), end + us(20), end + us(30), Outcome::Ok);
            h.record(1002, "k0", Op::Read(last), end + us(40), end + us(50), Outcome::Ok);
            let report = check_all(&h, Budget::default());
            match &report.keys["k0"].verdict {
                Verdict::NotLinearizable { minimal, .. } => {
                    prop_assert!(minimal.to_string().contains("write k0=lost"), "{}", minimal);
                }
                other => prop_assert!(false, "lost write not caught: {}", other),
            }
        }
    }
}
