//! Transactions nested in transactions, as etcd runs them: every compare sees the state
//! before the outer transaction, the nested branch runs in place in the same revision, and
//! etcd's rules on keys written twice hold across levels.

use super::*;

fn equals(key: &str, value: &str) -> Compare {
    Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::Value(value.into()) }
}

fn nested(compares: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> TxnOp {
    TxnOp::Txn(Box::new(Txn { compares, success, failure }))
}

fn refusal(t: &mut MapTable, txn: Txn) -> KvRefusal {
    let before = t.0.clone();
    match run(t, &KvCommand::Txn(txn)) {
        KvReply::Refused(refusal) => {
            assert_eq!(t.0, before, "a refusal changes nothing");
            refusal
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn nested_compares_see_the_state_before_the_outer_transaction() {
    let mut t = MapTable::default();
    let first = put(&mut t, "a", "old");
    let reply = txn(
        &mut t,
        Txn {
            success: vec![
                TxnOp::put("a", "new"),
                // "a" is "new" by now in the branch, but compares see the state before.
                nested(vec![equals("a", "old")], vec![TxnOp::put("b", "then")], vec![TxnOp::put("b", "else")]),
                TxnOp::Range(RangeRequest::key("b")),
            ],
            ..Txn::default()
        },
    );
    assert!(reply.succeeded);
    assert_eq!(reply.revision, first + 1, "one revision for every level");
    let OpResult::Txn { succeeded: true, results } = &reply.results[1] else { panic!("{reply:?}") };
    assert!(matches!(results[..], [OpResult::Put { existed: false, .. }]));
    let OpResult::Range(read) = &reply.results[2] else { panic!("{reply:?}") };
    assert_eq!(read.kvs[0].value, b"then", "the outer branch reads the nested write");
    assert_eq!(value(get(&t, "b", 0).unwrap()), Some("then".into()));
}

#[test]
fn a_nested_failure_branch_runs_when_its_compares_fail_and_nesting_goes_deep() {
    let mut t = MapTable::default();
    put(&mut t, "a", "1");
    let innermost = nested(vec![equals("a", "1")], vec![TxnOp::put("deep", "yes")], vec![]);
    let middle = nested(vec![equals("a", "2")], vec![], vec![innermost, TxnOp::delete("a")]);
    let reply = txn(&mut t, Txn { compares: vec![equals("a", "9")], success: vec![], failure: vec![middle] });
    assert!(!reply.succeeded);
    let OpResult::Txn { succeeded: false, results } = &reply.results[0] else { panic!("{reply:?}") };
    assert!(matches!(&results[0], OpResult::Txn { succeeded: true, .. }), "{results:?}");
    assert!(matches!(&results[1], OpResult::Delete { deleted: 1, .. }), "{results:?}");
    assert_eq!(value(get(&t, "deep", 0).unwrap()), Some("yes".into()));
    assert_eq!(get(&t, "a", 0).unwrap(), None);
}

#[test]
fn keys_written_twice_across_levels_are_refused_as_etcd_refuses_them() {
    let mut t = MapTable::default();
    // Both branches of a nested transaction may put one key: only one of them runs.
    let both = nested(vec![], vec![TxnOp::put("k", "1")], vec![TxnOp::put("k", "2")]);
    assert!(txn(&mut t, Txn { success: vec![both.clone()], ..Txn::default() }).succeeded);
    // But not the branch around it too, nor a delete around it that covers the key.
    let outer_put = Txn { success: vec![both.clone(), TxnOp::put("k", "3")], ..Txn::default() };
    assert_eq!(refusal(&mut t, outer_put), KvRefusal::DuplicateKey("k".into()));
    let covering = TxnOp::Delete { key: b"".to_vec(), end: RangeEnd::All, prev_kv: false };
    let outer_delete = Txn { success: vec![covering, both], ..Txn::default() };
    assert_eq!(refusal(&mut t, outer_delete), KvRefusal::DuplicateKey("k".into()));
    // Two nested transactions that put the same key.
    let one = nested(vec![], vec![TxnOp::put("x", "1")], vec![]);
    let two = Txn { success: vec![one.clone(), one], ..Txn::default() };
    assert_eq!(refusal(&mut t, two), KvRefusal::DuplicateKey("x".into()));
}

#[test]
fn nesting_depth_operation_count_and_the_branch_taken_are_checked_before_any_write() {
    let mut t = MapTable::default();
    let mut deep = Txn { success: vec![TxnOp::put("leaf", "v")], ..Txn::default() };
    for _ in 1..MAX_TXN_DEPTH {
        deep = Txn { success: vec![TxnOp::Txn(Box::new(deep))], ..Txn::default() };
    }
    assert!(txn(&mut t, deep.clone()).succeeded, "{MAX_TXN_DEPTH} levels are allowed");
    let too_deep = Txn { success: vec![TxnOp::Txn(Box::new(deep))], ..Txn::default() };
    assert!(matches!(refusal(&mut t, too_deep), KvRefusal::Invalid(_)));
    // The operations of nested transactions count towards the bound.
    let half: Vec<TxnOp> = (0..MAX_TXN_OPS / 2).map(|i| TxnOp::put(format!("k{i}"), "v")).collect();
    let other: Vec<TxnOp> = (0..MAX_TXN_OPS / 2).map(|i| TxnOp::put(format!("o{i}"), "v")).collect();
    let wide = Txn { success: [half, vec![nested(vec![], other, vec![])]].concat(), ..Txn::default() };
    assert!(matches!(refusal(&mut t, wide), KvRefusal::Invalid(_)));
    // A put on a missing lease in the nested branch that runs refuses the whole transaction;
    // in the branch that does not run, it is not looked at.
    let leased = TxnOp::Put { key: b"l".to_vec(), value: b"v".to_vec(), lease: 77, prev_kv: false };
    let runs =
        Txn { success: vec![TxnOp::put("z", "1"), nested(vec![], vec![leased.clone()], vec![])], ..Txn::default() };
    assert_eq!(refusal(&mut t, runs), KvRefusal::LeaseNotFound(77));
    let skipped = Txn { success: vec![nested(vec![equals("none", "x")], vec![leased], vec![])], ..Txn::default() };
    assert!(txn(&mut t, skipped).succeeded);
}
