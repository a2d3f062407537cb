//! Restoring a backup's rows into a running namespace, step by step.

use super::*;
use crate::kv::restore::{RestoreStep, MAX_CLEAR_ROWS};

fn step(t: &mut MapTable, step: RestoreStep) -> Result<RestoreReply, KvRefusal> {
    match run(t, &KvCommand::Restore(step)) {
        KvReply::Restore(reply) => Ok(reply),
        KvReply::Refused(refusal) => Err(refusal),
        other => panic!("expected a restore reply, got {other:?}"),
    }
}

fn grant(t: &mut MapTable) -> u64 {
    lease_reply(run(t, &KvCommand::LeaseGrant { id: 0, ttl_secs: 60 })).id
}

/// Clear, load `source`'s rows in two batches and finish restore `id` into `t`.
fn restore_rows(t: &mut MapTable, id: u64, source: &MapTable) -> RestoreReply {
    while step(t, RestoreStep::Clear { id }).unwrap().more {}
    let rows: Vec<_> = source.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let (first, second) = rows.split_at(rows.len() / 2);
    step(t, RestoreStep::Load { id, rows: first.to_vec() }).unwrap();
    step(t, RestoreStep::Load { id, rows: second.to_vec() }).unwrap();
    step(t, RestoreStep::Finish { id }).unwrap()
}

#[test]
fn a_restore_replaces_the_state_and_moves_every_counter_forward() {
    let mut backup = MapTable::default();
    put(&mut backup, "a", "1");
    put(&mut backup, "b", "2");
    let backup_lease = grant(&mut backup);
    let mut t = MapTable::default();
    for i in 0..10 {
        put(&mut t, "x", &i.to_string());
    }
    let old_lease = grant(&mut t);
    grant(&mut t);

    assert_eq!(step(&mut t, RestoreStep::Begin { id: 7 }).unwrap().revision, 11);
    // While it runs, nothing else is applied or read.
    assert_eq!(
        run(&mut t, &KvCommand::Txn(Txn { success: vec![TxnOp::put("y", "1")], ..Txn::default() })),
        KvReply::Refused(KvRefusal::Restoring(7))
    );
    assert_eq!(get(&t, "x", 0), Err(KvRefusal::Restoring(7)));
    let request = ChangesRequest { key: b"x".to_vec(), end: RangeEnd::Key, from: 1, prev_kv: false };
    assert_eq!(changes(&t, &request, 100).unwrap(), Err(KvRefusal::Restoring(7)));

    let finished = restore_rows(&mut t, 7, &backup);
    assert_eq!(finished.revision, 12, "one above the old revision (11) and the backup's (4)");
    assert_eq!(revisions(&t).unwrap(), Revisions { current: 12, compacted: 12 });
    assert_eq!(value(get(&t, "a", 0).unwrap()), Some("1".into()));
    assert_eq!(value(get(&t, "b", 0).unwrap()), Some("2".into()));
    assert_eq!(get(&t, "x", 0).unwrap(), None);
    assert_eq!(get(&t, "a", 2), Err(KvRefusal::Compacted { requested: 2, compacted: 12 }));
    assert_eq!(leases(&t, 100).unwrap().iter().map(|l| l.0).collect::<Vec<_>>(), vec![backup_lease]);
    // New revisions and lease ids continue above both timelines.
    assert_eq!(put(&mut t, "c", "3"), 13);
    assert!(grant(&mut t) > old_lease + 1);
    // The compaction the driver runs next removes the histories and keeps the live state.
    while !matches!(
        run(&mut t, &KvCommand::Compact { revision: 12 }),
        KvReply::Compact(CompactReply { done: true, .. })
    ) {}
    assert_eq!(value(get(&t, "a", 0).unwrap()), Some("1".into()));
    assert_eq!(value(get(&t, "c", 13).unwrap()), Some("3".into()));
}

#[test]
fn steps_of_another_or_a_finished_restore_are_refused() {
    let mut t = MapTable::default();
    put(&mut t, "k", "v");
    assert!(matches!(step(&mut t, RestoreStep::Clear { id: 1 }), Err(KvRefusal::Invalid(_))));
    step(&mut t, RestoreStep::Begin { id: 1 }).unwrap();
    step(&mut t, RestoreStep::Clear { id: 1 }).unwrap();
    // A second restore takes over (the first driver died) and keeps the saved counters.
    assert_eq!(step(&mut t, RestoreStep::Begin { id: 2 }).unwrap().revision, 2);
    assert!(matches!(step(&mut t, RestoreStep::Finish { id: 1 }), Err(KvRefusal::Invalid(_))));
    assert_eq!(step(&mut t, RestoreStep::Finish { id: 2 }).unwrap().revision, 3);
    assert!(matches!(step(&mut t, RestoreStep::Finish { id: 2 }), Err(KvRefusal::Invalid(_))));
    assert_eq!(get(&t, "k", 0).unwrap(), None, "restored from an empty backup");
    assert_eq!(put(&mut t, "k", "again"), 4);
}

#[test]
fn clearing_is_bounded_per_step_and_damaged_counters_refuse_a_load() {
    let mut t = MapTable::default();
    let ops: Vec<TxnOp> = (0..MAX_CLEAR_ROWS).map(|i| TxnOp::put(format!("k{i}"), "v")).collect();
    for chunk in ops.chunks(MAX_TXN_OPS) {
        txn(&mut t, Txn { success: chunk.to_vec(), ..Txn::default() });
    }
    step(&mut t, RestoreStep::Begin { id: 3 }).unwrap();
    assert!(step(&mut t, RestoreStep::Clear { id: 3 }).unwrap().more);
    let mut steps = 1;
    while step(&mut t, RestoreStep::Clear { id: 3 }).unwrap().more {
        steps += 1;
    }
    assert!(steps >= 1 && t.0.len() == 2, "only the revisions row and the marker stay: {}", t.0.len());
    let damaged = vec![(b"\x00lease.next".to_vec(), b"short".to_vec())];
    assert!(matches!(step(&mut t, RestoreStep::Load { id: 3, rows: damaged }), Err(KvRefusal::Invalid(_))));
}
