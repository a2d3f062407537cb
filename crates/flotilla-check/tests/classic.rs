//! Hand-written histories with known verdicts.

use std::time::Duration;

use flotilla_check::{check_all, check_key, Budget, History, Op, Outcome, Verdict};

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn w(v: u64) -> Op {
    Op::write(v)
}

fn r(v: Option<u64>) -> Op {
    Op::read_of(v)
}

fn verdict(h: &History) -> Verdict {
    check_key(h, "k", Budget::default()).verdict
}

fn assert_violation(h: &History, max_minimal: usize) -> History {
    match verdict(h) {
        Verdict::NotLinearizable { key, minimal, shrunk } => {
            assert_eq!(key, "k");
            assert!(shrunk);
            assert!(minimal.len() <= max_minimal, "minimal history too long:\n{minimal}");
            // The witness must itself be non-linearizable.
            assert!(verdict(&minimal).is_violation(), "witness is linearizable:\n{minimal}");
            minimal
        }
        other => panic!("expected a violation, got {other}\n{h}"),
    }
}

#[test]
fn empty_and_single_ops_are_linearizable() {
    assert!(verdict(&History::new()).is_linearizable());
    let mut h = History::new();
    h.record(1, "k", r(None), ms(0), ms(1), Outcome::Ok);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn stale_read_after_a_completed_write() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(1, "k", w(2), ms(20), ms(30), Outcome::Ok);
    h.record(2, "k", r(Some(1)), ms(40), ms(50), Outcome::Ok);
    // Filler that has nothing to do with the violation; shrinking must drop it.
    h.record(3, "k", w(3), ms(60), ms(70), Outcome::Ok);
    h.record(3, "k", r(Some(3)), ms(80), ms(90), Outcome::Ok);
    let minimal = assert_violation(&h, 3);
    assert_eq!(minimal.len(), 3, "{minimal}");
    let text = minimal.to_string();
    assert!(text.contains("client 2  read k=1  [40.000ms, 50.000ms] ok"), "{text}");
    assert!(text.contains("write k=2"), "{text}");
}

#[test]
fn stale_absent_read_after_a_completed_write() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(2, "k", r(None), ms(11), ms(12), Outcome::Ok);
    assert_eq!(assert_violation(&h, 2).len(), 2);
}

#[test]
fn read_of_a_value_never_written() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(2, "k", r(Some(1)), ms(5), ms(15), Outcome::Ok);
    h.record(2, "k", r(Some(99)), ms(20), ms(25), Outcome::Ok);
    let minimal = assert_violation(&h, 1);
    assert!(minimal.to_string().contains("read k=99"));
}

#[test]
fn read_of_a_failed_write_is_a_violation() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Fail);
    h.record(2, "k", r(Some(1)), ms(5), ms(15), Outcome::Ok);
    assert_violation(&h, 1);
}

#[test]
fn two_sequential_reads_going_backwards() {
    let mut h = History::new();
    // Two writes overlap everything, so either order is possible, but not both.
    h.record(1, "k", w(1), ms(0), ms(100), Outcome::Ok);
    h.record(2, "k", w(2), ms(0), ms(100), Outcome::Ok);
    h.record(3, "k", r(Some(1)), ms(10), ms(20), Outcome::Ok);
    h.record(3, "k", r(Some(2)), ms(30), ms(40), Outcome::Ok);
    h.record(4, "k", r(Some(1)), ms(50), ms(60), Outcome::Ok);
    let minimal = assert_violation(&h, 5);
    assert!(minimal.len() >= 4, "both writes and at least two reads: {minimal}");
}

#[test]
fn forward_reads_over_concurrent_writes_are_fine() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(100), Outcome::Ok);
    h.record(2, "k", w(2), ms(0), ms(100), Outcome::Ok);
    h.record(3, "k", r(Some(1)), ms(10), ms(20), Outcome::Ok);
    h.record(3, "k", r(Some(2)), ms(30), ms(40), Outcome::Ok);
    h.record(4, "k", r(Some(2)), ms(50), ms(60), Outcome::Ok);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn lost_acknowledged_write_caught_by_the_final_read() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(2, "k", w(2), ms(20), ms(30), Outcome::Ok); // acknowledged, then lost
    h.record(3, "k", w(3), ms(25), ms(60), Outcome::Unknown);
    h.record(4, "k", r(Some(1)), ms(1000), ms(1010), Outcome::Ok); // final read after healing
    let minimal = assert_violation(&h, 3);
    assert!(minimal.to_string().contains("write k=2"), "{minimal}");
}

#[test]
fn overlapping_ops_may_take_effect_in_either_order() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(50), Outcome::Ok);
    h.record(2, "k", r(Some(1)), ms(10), ms(20), Outcome::Ok);
    h.record(3, "k", r(None), ms(5), ms(30), Outcome::Ok); // linearized before the write
    h.record(2, "k", w(2), ms(25), ms(60), Outcome::Ok);
    h.record(3, "k", r(Some(1)), ms(40), ms(45), Outcome::Ok);
    h.record(1, "k", r(Some(2)), ms(70), ms(80), Outcome::Ok);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn touching_intervals_count_as_concurrent() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(2, "k", r(None), ms(10), ms(12), Outcome::Ok);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn unknown_writes_may_or_may_not_have_happened() {
    // Took effect, seen long after the client gave up.
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Unknown);
    h.record(2, "k", r(None), ms(20), ms(30), Outcome::Ok);
    h.record(2, "k", r(Some(1)), ms(500), ms(510), Outcome::Ok);
    assert!(verdict(&h).is_linearizable());
    // Never took effect.
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Unknown);
    h.record(2, "k", r(None), ms(20), ms(30), Outcome::Ok);
    h.record(2, "k", r(None), ms(500), ms(510), Outcome::Ok);
    assert!(verdict(&h).is_linearizable());
    // A pending write behaves the same.
    let mut h = History::new();
    h.push(flotilla_check::Entry {
        client: 1,
        key: "k".into(),
        op: w(7),
        invoked: ms(0),
        completed: None,
        outcome: Outcome::Ok,
    });
    h.record(2, "k", r(Some(7)), ms(900), ms(910), Outcome::Ok);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn unknown_delete_after_the_last_absent_read_may_take_effect_late() {
    // Found by the randomized test: the unknown delete cannot happen before the reads of 16,
    // but it may happen after them (or never).
    let mut h = History::new();
    h.record(1, "k", r(None), ms(23), ms(89), Outcome::Ok);
    h.record(4, "k", w(16), ms(47), ms(71), Outcome::Ok);
    h.record(4, "k", Op::Delete, ms(74), ms(109), Outcome::Unknown);
    h.record(0, "k", r(Some(16)), ms(146), ms(167), Outcome::Ok);
    h.record(9, "k", Op::Delete, ms(384), ms(406), Outcome::Ok);
    assert!(verdict(&h).is_linearizable());
    // Seen absent in between, it must have happened then.
    h.record(2, "k", r(None), ms(110), ms(120), Outcome::Ok);
    // The witness keeps every delete while it keeps a read of the absent key.
    assert_violation(&h, 5);
}

#[test]
fn unknown_write_cannot_take_effect_before_its_invocation() {
    let mut h = History::new();
    h.record(2, "k", r(Some(1)), ms(0), ms(5), Outcome::Ok);
    h.record(1, "k", w(1), ms(10), ms(20), Outcome::Unknown);
    assert_violation(&h, 2);
}

#[test]
fn failed_writes_never_happened() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(1, "k", w(2), ms(20), ms(30), Outcome::Fail);
    h.record(2, "k", r(Some(1)), ms(40), ms(50), Outcome::Ok);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn unknown_and_failed_reads_are_ignored() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(2, "k", r(Some(42)), ms(20), ms(30), Outcome::Unknown);
    h.record(2, "k", r(None), ms(20), ms(30), Outcome::Fail);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn deletes_make_the_key_absent() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(1, "k", Op::Delete, ms(20), ms(30), Outcome::Ok);
    h.record(2, "k", r(None), ms(40), ms(50), Outcome::Ok);
    assert!(verdict(&h).is_linearizable());
    h.record(2, "k", r(Some(1)), ms(60), ms(70), Outcome::Ok);
    let minimal = assert_violation(&h, 3);
    assert!(minimal.to_string().contains("delete k"), "{minimal}");
}

#[test]
fn keys_are_checked_independently() {
    let mut h = History::new();
    h.record(1, "a", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(1, "b", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(2, "a", r(Some(1)), ms(20), ms(30), Outcome::Ok);
    h.record(2, "b", r(None), ms(20), ms(30), Outcome::Ok); // stale on b only
    h.record(3, "c", w(5), ms(0), ms(10), Outcome::Fail);
    h.record(3, "c", w(6), ms(0), ms(10), Outcome::Unknown);
    let report = check_all(&h, Budget::default());
    assert_eq!(report.keys.len(), 3);
    assert!(report.keys["a"].verdict.is_linearizable());
    assert!(report.keys["b"].verdict.is_violation());
    assert!(report.keys["c"].verdict.is_linearizable());
    assert_eq!((report.counts.ok, report.counts.fail, report.counts.unknown), (4, 1, 1));
    assert!(!report.is_linearizable());
    assert_eq!(report.violations().len(), 1);
    let text = report.to_string();
    assert!(text.contains("1 not linearizable"), "{text}");
    assert!(text.contains("client 2  read b=<absent>  [20.000ms, 30.000ms] ok"), "{text}");
    match report.verdict() {
        Verdict::NotLinearizable { key, .. } => assert_eq!(key, "b"),
        other => panic!("{other}"),
    }
}

/// Many mutually concurrent writes followed by reads that no order explains: the search must
/// explore a large space before it can say no.
fn hard_history(writers: u64) -> History {
    let mut h = History::new();
    for i in 0..writers {
        h.record(i, "k", w(i), ms(0), ms(1000), Outcome::Ok);
    }
    // Every value read once while the writes are in flight, then an impossible pair.
    for i in 0..writers {
        h.record(100 + i, "k", r(Some(i)), ms(10 + i), ms(900), Outcome::Ok);
    }
    h.record(200, "k", r(Some(0)), ms(2000), ms(2001), Outcome::Ok);
    h.record(200, "k", r(Some(1)), ms(2002), ms(2003), Outcome::Ok);
    h
}

#[test]
fn exhausted_step_budget_is_undetermined() {
    let h = hard_history(12);
    match check_key(&h, "k", Budget::steps(1_000)).verdict {
        Verdict::Undetermined { reason } => assert!(reason.contains("step budget"), "{reason}"),
        other => panic!("expected undetermined, got {other}"),
    }
    let report = check_all(&h, Budget::steps(1_000));
    assert!(!report.is_linearizable());
    assert_eq!(report.undetermined().len(), 1);
    assert!(report.to_string().contains("undetermined: step budget"), "{report}");
}

#[test]
fn exhausted_time_budget_is_undetermined() {
    let h = hard_history(22);
    let budget = Budget { max_steps: u64::MAX, max_time: Duration::from_millis(50) };
    let started = std::time::Instant::now();
    match check_key(&h, "k", budget).verdict {
        Verdict::Undetermined { reason } => assert!(reason.contains("time budget"), "{reason}"),
        other => panic!("expected undetermined, got {other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_hard_but_small_history_is_decided_within_the_budget() {
    let h = hard_history(8);
    assert!(check_key(&h, "k", Budget::default()).verdict.is_violation());
}

// ---------------------------------------------------------------------------------------------
// Compare-and-set.

fn cas(expected: Option<u64>, new: u64) -> Op {
    Op::cas(expected, new)
}

#[test]
fn compare_and_sets_that_chain_are_linearizable() {
    let mut h = History::new();
    h.record(1, "k", Op::create(1u64), ms(0), ms(10), Outcome::Ok);
    // Concurrent with the next one: whichever goes first, the other finds 2 and fails.
    h.record(1, "k", cas(Some(1), 2), ms(20), ms(40), Outcome::Ok);
    h.record(2, "k", cas(Some(1), 3), ms(25), ms(45), Outcome::Fail);
    h.record(3, "k", Op::create(4u64), ms(30), ms(35), Outcome::Fail);
    h.record(3, "k", r(Some(2)), ms(50), ms(60), Outcome::Ok);
    // Unknown, and its value never seen: may have happened or not.
    h.record(4, "k", cas(Some(2), 5), ms(70), ms(80), Outcome::Unknown);
    h.record(3, "k", r(Some(2)), ms(90), ms(100), Outcome::Ok);
    assert!(verdict(&h).is_linearizable(), "{}", check_key(&h, "k", Budget::default()).verdict);
}

#[test]
fn two_successful_compare_and_sets_from_one_value() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    // Concurrent, both succeed from 1: only one can have found 1.
    h.record(2, "k", cas(Some(1), 2), ms(20), ms(40), Outcome::Ok);
    h.record(3, "k", cas(Some(1), 3), ms(20), ms(40), Outcome::Ok);
    h.record(4, "k", r(Some(3)), ms(50), ms(60), Outcome::Ok);
    let minimal = assert_violation(&h, 3);
    let text = minimal.to_string();
    assert!(text.contains("cas k=1->2") && text.contains("cas k=1->3"), "{text}");
}

#[test]
fn two_successful_creates() {
    let mut h = History::new();
    h.record(1, "k", Op::create(1u64), ms(0), ms(40), Outcome::Ok);
    h.record(2, "k", Op::create(2u64), ms(10), ms(30), Outcome::Ok);
    assert_eq!(assert_violation(&h, 2).len(), 2);
}

#[test]
fn a_failed_comparison_on_the_expected_value() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(2, "k", cas(Some(1), 2), ms(20), ms(30), Outcome::Fail);
    h.record(3, "k", r(Some(1)), ms(40), ms(50), Outcome::Ok);
    let minimal = assert_violation(&h, 2);
    assert!(minimal.to_string().contains("cas k=1->2"), "{minimal}");
}

#[test]
fn a_compare_and_set_of_a_value_nobody_wrote() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(2, "k", cas(Some(7), 2), ms(20), ms(30), Outcome::Ok);
    assert_eq!(assert_violation(&h, 1).len(), 1);
}

/// A write with unknown outcome whose value nobody read can still be what a failed comparison
/// saw: it must not be dropped as irrelevant.
#[test]
fn an_unknown_write_explains_a_failed_comparison() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(2, "k", w(2), ms(5), ms(15), Outcome::Unknown);
    h.record(3, "k", cas(Some(1), 3), ms(20), ms(30), Outcome::Fail);
    assert!(verdict(&h).is_linearizable(), "{}", check_key(&h, "k", Budget::default()).verdict);
}

/// An unknown compare-and-set that cannot have happened (its expected value was gone before it
/// was called) must not hold that value's only writer back.
#[test]
fn an_impossible_unknown_compare_and_set_is_left_out() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(1, "k", w(2), ms(20), ms(30), Outcome::Ok);
    h.record(2, "k", cas(Some(1), 9), ms(40), ms(45), Outcome::Unknown);
    h.record(3, "k", cas(Some(7), 8), ms(50), ms(60), Outcome::Fail);
    h.record(3, "k", r(Some(2)), ms(70), ms(80), Outcome::Ok);
    assert!(verdict(&h).is_linearizable(), "{}", check_key(&h, "k", Budget::default()).verdict);
}

/// Shrinking keeps the write a failed comparison saw: without it the comparison would look
/// wrong on its own, and the witness would blame it instead of the stale read.
#[test]
fn the_witness_keeps_what_a_failed_comparison_saw() {
    let mut h = History::new();
    h.record(1, "k", w(1), ms(0), ms(10), Outcome::Ok);
    h.record(1, "k", w(3), ms(60), ms(70), Outcome::Ok);
    h.record(2, "k", r(None), ms(80), ms(90), Outcome::Ok);
    h.record(3, "k", Op::create(2u64), ms(40), ms(50), Outcome::Fail);
    let minimal = assert_violation(&h, 3);
    let text = minimal.to_string();
    assert!(text.contains("read k=<absent>") && text.contains("write k=1"), "{text}");
}
