//! The KV state machine against an in-memory table: revisions, transactions, past reads,
//! ranges and compaction.

use std::collections::BTreeMap;

use super::*;
use crate::map_table::MapTable;

mod nested;
mod restore;

const CTX: ApplyContext = ApplyContext { index: 1 };

/// Apply `command` the way the store does: a refusal or an error keeps the table unchanged.
fn run(table: &mut MapTable, command: &KvCommand) -> KvReply {
    let mut scratch = table.clone();
    let out = KvStateMachine.apply(&CTX, &mut scratch, &encode_command(command)).unwrap().unwrap();
    let reply = decode_reply(&out).unwrap();
    if !matches!(reply, KvReply::Refused(_)) {
        *table = scratch;
    }
    reply
}

fn txn(table: &mut MapTable, t: Txn) -> TxnReply {
    match run(table, &KvCommand::Txn(t)) {
        KvReply::Txn(reply) => reply,
        other => panic!("expected a txn reply, got {other:?}"),
    }
}

fn put(table: &mut MapTable, key: &str, value: &str) -> u64 {
    txn(table, Txn { success: vec![TxnOp::put(key, value)], ..Txn::default() }).revision
}

fn get(table: &MapTable, key: &str, revision: u64) -> Result<Option<KeyValue>, KvRefusal> {
    let request = RangeRequest { revision, ..RangeRequest::key(key) };
    range(table, &request).unwrap().map(|r| r.kvs.into_iter().next())
}

fn value(kv: Option<KeyValue>) -> Option<String> {
    kv.map(|kv| String::from_utf8(kv.value).unwrap())
}

#[test]
fn every_changing_write_creates_one_revision_and_keys_carry_their_revisions() {
    let mut t = MapTable::default();
    assert_eq!(revisions(&t).unwrap(), Revisions { current: FIRST_REVISION, compacted: 0 });
    assert_eq!(put(&mut t, "a", "1"), 2);
    assert_eq!(put(&mut t, "b", "1"), 3);
    assert_eq!(put(&mut t, "a", "2"), 4);
    let a = get(&t, "a", 0).unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 4, 2));
    // A delete of a missing key and a read-only transaction change nothing: no revision.
    let reply = txn(&mut t, Txn { success: vec![TxnOp::delete("zzz")], ..Txn::default() });
    assert_eq!(reply.revision, 4);
    assert_eq!(reply.results, vec![OpResult::Delete { deleted: 0, prev: vec![] }]);
    // Delete then re-create: the create revision and version start again.
    assert_eq!(txn(&mut t, Txn { success: vec![TxnOp::delete("a")], ..Txn::default() }).revision, 5);
    assert_eq!(put(&mut t, "a", "3"), 6);
    let a = get(&t, "a", 0).unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (6, 6, 1));
}

#[test]
fn past_revisions_read_what_was_there_then() {
    let mut t = MapTable::default();
    put(&mut t, "k", "v1"); // 2
    put(&mut t, "other", "x"); // 3
    put(&mut t, "k", "v2"); // 4
    txn(&mut t, Txn { success: vec![TxnOp::delete("k")], ..Txn::default() }); // 5
    put(&mut t, "k\0", "nul"); // 6
    assert_eq!(get(&t, "k", 0).unwrap(), None);
    assert_eq!(value(get(&t, "k", 2).unwrap()), Some("v1".into()));
    assert_eq!(value(get(&t, "k", 3).unwrap()), Some("v1".into()));
    assert_eq!(value(get(&t, "k", 4).unwrap()), Some("v2".into()));
    assert_eq!(get(&t, "k", 5).unwrap(), None);
    assert_eq!(get(&t, "k", 7), Err(KvRefusal::FutureRevision { requested: 7, current: 6 }));
    // Ranges at a past revision see every key as it was.
    let at = |rev| {
        let r = range(&t, &RangeRequest { revision: rev, ..RangeRequest::prefix("k") }).unwrap().unwrap();
        r.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect::<Vec<_>>()
    };
    assert_eq!(at(4), vec![(b"k".to_vec(), b"v2".to_vec())]);
    assert_eq!(at(5), vec![]);
    assert_eq!(at(6), vec![(b"k\0".to_vec(), b"nul".to_vec())]);
}

#[test]
fn compares_pick_the_branch_and_the_failure_branch_runs_otherwise() {
    let mut t = MapTable::default();
    let create = |key: &str| Txn {
        compares: vec![Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::Version(0) }],
        success: vec![TxnOp::put(key, "mine")],
        failure: vec![TxnOp::Range(RangeRequest::key(key))],
    };
    let first = txn(&mut t, create("lock"));
    assert!(first.succeeded);
    let second = txn(&mut t, create("lock"));
    assert!(!second.succeeded);
    assert_eq!(second.revision, first.revision, "the failure branch only read");
    let OpResult::Range(held) = &second.results[0] else { panic!("{second:?}") };
    assert_eq!(held.kvs[0].mod_revision, first.revision);
    // A value compare on an absent key is false, whatever the operator (etcd's rule).
    let on_absent = Txn {
        compares: vec![Compare { key: "none".into(), op: CompareOp::NotEqual, target: CompareTarget::Value(vec![]) }],
        ..Txn::default()
    };
    assert!(!txn(&mut t, on_absent).succeeded);
    let cas = |rev| Txn {
        compares: vec![Compare { key: "lock".into(), op: CompareOp::Equal, target: CompareTarget::ModRevision(rev) }],
        success: vec![TxnOp::put("lock", "next")],
        failure: vec![],
    };
    assert!(!txn(&mut t, cas(first.revision + 7)).succeeded);
    assert!(txn(&mut t, cas(first.revision)).succeeded);
}

#[test]
fn a_branch_that_writes_a_key_twice_is_refused_without_change() {
    let mut t = MapTable::default();
    put(&mut t, "p/a", "1");
    let before = t.0.clone();
    for branch in [
        vec![TxnOp::put("x", "1"), TxnOp::put("x", "2")],
        vec![TxnOp::put("p/b", "1"), TxnOp::Delete { key: b"p/".to_vec(), end: RangeEnd::Prefix, prev_kv: false }],
        vec![TxnOp::Put { key: b"y".to_vec(), value: vec![], lease: 9, prev_kv: false }],
    ] {
        let reply = run(&mut t, &KvCommand::Txn(Txn { success: branch, ..Txn::default() }));
        assert!(matches!(reply, KvReply::Refused(_)), "{reply:?}");
        assert_eq!(t.0, before);
    }
}

#[test]
fn reads_in_a_transaction_see_its_earlier_writes() {
    let mut t = MapTable::default();
    put(&mut t, "a", "old");
    let reply = txn(
        &mut t,
        Txn {
            success: vec![
                TxnOp::Put { key: b"a".to_vec(), value: b"new".to_vec(), lease: 0, prev_kv: true },
                TxnOp::Range(RangeRequest::key("a")),
                TxnOp::Range(RangeRequest { revision: 2, ..RangeRequest::key("a") }),
            ],
            ..Txn::default()
        },
    );
    let OpResult::Put { prev: Some(prev), existed: true } = &reply.results[0] else { panic!("{reply:?}") };
    assert_eq!(prev.value, b"old");
    let OpResult::Range(now) = &reply.results[1] else { panic!() };
    assert_eq!((now.kvs[0].value.as_slice(), now.kvs[0].mod_revision), (&b"new"[..], 3));
    let OpResult::Range(then) = &reply.results[2] else { panic!() };
    assert_eq!(then.kvs[0].value, b"old");
}

#[test]
fn ranges_page_with_a_limit_and_a_continuation() {
    let mut t = MapTable::default();
    for i in 0..25 {
        put(&mut t, &format!("job/{i:02}"), "x");
    }
    put(&mut t, "jobs", "not under job/");
    for revision in [0, 27] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let request = RangeRequest { after: after.clone(), limit: 10, revision, ..RangeRequest::prefix("job/") };
            let page = range(&t, &request).unwrap().unwrap();
            assert!(page.kvs.len() <= 10);
            seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
            after = page.kvs.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
        }
        let expected: Vec<Vec<u8>> = (0..25).map(|i| format!("job/{i:02}").into_bytes()).collect();
        assert_eq!(seen, expected, "at revision {revision}");
    }
    let all = range(&t, &RangeRequest { end: RangeEnd::All, ..RangeRequest::key("") }).unwrap().unwrap();
    assert_eq!(all.kvs.len(), 26);
    let before = RangeRequest { end: RangeEnd::Before(b"job/05".to_vec()), ..RangeRequest::key("job/02") };
    assert_eq!(range(&t, &before).unwrap().unwrap().kvs.len(), 3);
}

#[test]
fn compaction_forgets_old_revisions_but_keeps_what_reads_at_it_need() {
    let mut t = MapTable::default();
    for i in 1..=30u64 {
        put(&mut t, &format!("k{}", i % 3), &format!("v{i}")); // revisions 2..=31
    }
    txn(&mut t, Txn { success: vec![TxnOp::delete("k0")], ..Txn::default() }); // 32
    put(&mut t, "late", "x"); // 33
    let expected_at = |t: &MapTable, rev| ["k0", "k1", "k2", "late"].map(|k| value(get(t, k, rev).unwrap())).to_vec();
    let at_32 = expected_at(&t, 32);
    let at_33 = expected_at(&t, 33);
    // Small steps, so the cleanup takes several entries.
    let mut steps = 0;
    loop {
        let mut scratch = t.clone();
        let reply = compact::step(&mut scratch, 32, 4).unwrap().unwrap();
        t = scratch;
        steps += 1;
        assert_eq!(reply.compacted, 32);
        if reply.done {
            break;
        }
        assert!(steps < 100, "compaction does not finish");
    }
    assert!(steps > 2);
    assert_eq!(get(&t, "k1", 31), Err(KvRefusal::Compacted { requested: 31, compacted: 32 }));
    assert_eq!(expected_at(&t, 32), at_32);
    assert_eq!(expected_at(&t, 33), at_33);
    // Left: one version per live key as of 32 (k1, k2), and the events from 32 on (the
    // delete of k0 at 32 is kept: a watch from 31 replays it).
    let events = t.0.keys().filter(|k| k[0] == layout::EVENT).count();
    assert_eq!(events, 4, "{:?}", t.0.keys().collect::<Vec<_>>());
    // Compacting again further removes the survivors that are replaced.
    put(&mut t, "k1", "new"); // 34
    assert!(matches!(
        run(&mut t, &KvCommand::Compact { revision: 34 }),
        KvReply::Compact(CompactReply { done: true, .. })
    ));
    assert_eq!(value(get(&t, "k1", 34).unwrap()), Some("new".into()));
    assert_eq!(value(get(&t, "k2", 34).unwrap()), Some("v29".into()));
    let events = t.0.keys().filter(|k| k[0] == layout::EVENT).count();
    assert_eq!(events, 3, "k1 at 34, k2 at 30 and late at 33");
    assert!(matches!(
        run(&mut t, &KvCommand::Compact { revision: 20 }),
        KvReply::Refused(KvRefusal::Compacted { requested: 20, compacted: 34 })
    ));
    assert!(matches!(
        run(&mut t, &KvCommand::Compact { revision: 99 }),
        KvReply::Refused(KvRefusal::FutureRevision { .. })
    ));
}

#[test]
fn malformed_payload_is_refused_without_change() {
    let mut table = MapTable::default();
    let out = KvStateMachine.apply(&CTX, &mut table, &[0xff; 3]).unwrap();
    assert!(out.is_err());
    assert!(table.0.is_empty());
}

#[test]
fn hostile_keys_are_opaque() {
    let mut t = MapTable::default();
    let ops = vec![
        KvOp::Set { key: b"../x".to_vec(), value: b"1".to_vec() },
        KvOp::Set { key: b"a\0b".to_vec(), value: b"2".to_vec() },
        KvOp::Set { key: vec![0xff, 0xff], value: b"3".to_vec() },
    ];
    KvStateMachine.apply(&CTX, &mut t, &encode_ops(&ops)).unwrap().unwrap();
    assert_eq!(value(get(&t, "../x", 0).unwrap()), Some("1".into()));
    assert_eq!(value(get(&t, "a\0b", 0).unwrap()), Some("2".into()));
    let all = range(&t, &RangeRequest { end: RangeEnd::All, ..RangeRequest::key("") }).unwrap().unwrap();
    assert_eq!(all.kvs.len(), 3);
    let past = RangeRequest { end: RangeEnd::Prefix, revision: 2, ..RangeRequest::key(vec![0xff]) };
    assert_eq!(range(&t, &past).unwrap().unwrap().kvs.len(), 1);
}

#[test]
fn changes_come_in_whole_revisions_with_previous_states() {
    let mut t = MapTable::default();
    put(&mut t, "w/a", "1"); // 3
    txn(
        &mut t,
        Txn {
            success: vec![TxnOp::put("w/a", "2"), TxnOp::put("w/b", "x"), TxnOp::put("other", "o")],
            ..Txn::default()
        },
    ); // 3
    txn(&mut t, Txn { success: vec![TxnOp::delete("w/a")], ..Txn::default() }); // 4
    let request = ChangesRequest { key: b"w/".to_vec(), end: RangeEnd::Prefix, from: 2, prev_kv: true };
    let all = changes(&t, &request, 100).unwrap().unwrap();
    assert_eq!(all.next, 5);
    let revisions: Vec<u64> = all.revisions.iter().map(|(r, _)| *r).collect();
    assert_eq!(revisions, vec![2, 3, 4]);
    let (_, second) = &all.revisions[1];
    assert_eq!(second.len(), 2, "both watched keys of revision 3, not `other`");
    assert_eq!(second[0].prev.as_ref().unwrap().value, b"1");
    assert_eq!((second[0].kv.value.as_slice(), second[0].kv.version), (&b"2"[..], 2));
    let (_, third) = &all.revisions[2];
    assert_eq!(third[0].kind, EventKind::Delete);
    assert_eq!(third[0].kv.mod_revision, 4);
    assert_eq!(third[0].prev.as_ref().unwrap().value, b"2");
    // A small budget stops between revisions, never inside one.
    let first = changes(&t, &ChangesRequest { from: 3, ..request.clone() }, 1).unwrap().unwrap();
    assert_eq!(first.revisions.len(), 1);
    assert_eq!(first.revisions[0].1.len(), 2, "revision 3 whole although it holds 3 events");
    assert_eq!(first.next, 4);
    // Nothing new yet: the next revision stays the one asked for.
    let none = changes(&t, &ChangesRequest { from: 9, ..request.clone() }, 10).unwrap().unwrap();
    assert_eq!((none.revisions.len(), none.next), (0, 9));
    run(&mut t, &KvCommand::Compact { revision: 4 });
    assert_eq!(
        changes(&t, &ChangesRequest { from: 3, ..request.clone() }, 10).unwrap(),
        Err(KvRefusal::Compacted { requested: 3, compacted: 4 })
    );
    let after = changes(&t, &ChangesRequest { from: 4, ..request }, 10).unwrap().unwrap();
    assert_eq!(after.revisions.len(), 1, "the delete at the compacted revision stays for a watch from it");
}

fn lease_reply(reply: KvReply) -> LeaseReply {
    match reply {
        KvReply::Lease(l) => l,
        other => panic!("expected a lease reply, got {other:?}"),
    }
}

#[test]
fn a_revoked_lease_deletes_its_keys_in_one_revision() {
    let mut t = MapTable::default();
    let a = lease_reply(run(&mut t, &KvCommand::LeaseGrant { id: 0, ttl_secs: 10 }));
    let b = lease_reply(run(&mut t, &KvCommand::LeaseGrant { id: 0, ttl_secs: 30 }));
    assert_eq!((a.id, b.id, a.revision), (1, 2, FIRST_REVISION), "grants create no revision");
    assert!(matches!(
        run(&mut t, &KvCommand::LeaseGrant { id: 2, ttl_secs: 5 }),
        KvReply::Refused(KvRefusal::LeaseExists(2))
    ));
    let leased = |key: &str, lease| TxnOp::Put { key: key.into(), value: b"v".to_vec(), lease, prev_kv: false };
    txn(&mut t, Txn { success: vec![leased("s/1", a.id), leased("s/2", a.id), leased("s/3", a.id)], ..Txn::default() }); // 2
    txn(&mut t, Txn { success: vec![leased("s/2", b.id)], ..Txn::default() }); // 3: moves to lease b
    put(&mut t, "s/3", "no lease"); // 4: detached
    assert_eq!(get(&t, "s/1", 0).unwrap().unwrap().lease, a.id);
    assert_eq!(attached_keys(&t, a.id, 10).unwrap(), vec![b"s/1".to_vec()]);
    let revoked = lease_reply(run(&mut t, &KvCommand::LeaseRevoke { id: a.id }));
    assert_eq!((revoked.deleted, revoked.revision), (1, 5));
    assert_eq!(get(&t, "s/1", 0).unwrap(), None);
    assert!(get(&t, "s/2", 0).unwrap().is_some() && get(&t, "s/3", 0).unwrap().is_some());
    assert_eq!(leases(&t, 10).unwrap(), vec![(b.id, 30)]);
    assert!(matches!(run(&mut t, &KvCommand::LeaseRevoke { id: a.id }), KvReply::Refused(KvRefusal::LeaseNotFound(1))));
    let on_gone = Txn { success: vec![leased("s/9", a.id)], ..Txn::default() };
    assert!(matches!(run(&mut t, &KvCommand::Txn(on_gone)), KvReply::Refused(KvRefusal::LeaseNotFound(1))));
    // A revoke with no keys left creates no revision.
    run(&mut t, &KvCommand::Txn(Txn { success: vec![TxnOp::delete("s/2")], ..Txn::default() })); // 6
    let empty = lease_reply(run(&mut t, &KvCommand::LeaseRevoke { id: b.id }));
    assert_eq!((empty.deleted, empty.revision), (0, 6));
    assert!(leases(&t, 10).unwrap().is_empty());
    assert!(t.0.keys().all(|k| k[0] != 0x05), "no attachment row is left behind");
}

fn queue(t: &mut MapTable, command: KvCommand) -> QueueReply {
    match run(t, &command) {
        KvReply::Queue(q) => q,
        other => panic!("expected a queue reply, got {other:?}"),
    }
}

#[test]
fn queues_hand_out_items_in_order_and_bring_back_unacknowledged_ones() {
    let mut t = MapTable::default();
    let push = |t: &mut MapTable, v: &str| queue(t, KvCommand::QueuePush { name: b"jobs".to_vec(), value: v.into() });
    let pop = |t: &mut MapTable, lease| queue(t, KvCommand::QueuePop { name: b"jobs".to_vec(), lease });
    assert_eq!(push(&mut t, "a"), QueueReply::Pushed { id: 1 });
    assert_eq!(push(&mut t, "b"), QueueReply::Pushed { id: 2 });
    push(&mut t, "c");
    queue(&mut t, KvCommand::QueuePush { name: b"other".to_vec(), value: b"x".to_vec() });
    assert_eq!(pop(&mut t, 0), QueueReply::Popped { id: 1, value: b"a".to_vec() });
    let lease = lease_reply(run(&mut t, &KvCommand::LeaseGrant { id: 0, ttl_secs: 5 })).id;
    assert_eq!(pop(&mut t, lease), QueueReply::Popped { id: 2, value: b"b".to_vec() });
    assert_eq!(queue_counts(&t, b"jobs").unwrap(), (1, 1));
    // The lease ends unacknowledged: "b" comes back at its place, before "c".
    run(&mut t, &KvCommand::LeaseRevoke { id: lease });
    assert_eq!(queue_counts(&t, b"jobs").unwrap(), (2, 0));
    assert_eq!(queue_first(&t, b"jobs").unwrap(), Some((2, b"b".to_vec())));
    let lease = lease_reply(run(&mut t, &KvCommand::LeaseGrant { id: 0, ttl_secs: 5 })).id;
    assert_eq!(pop(&mut t, lease), QueueReply::Popped { id: 2, value: b"b".to_vec() });
    let ack = |lease| KvCommand::QueueAck { name: b"jobs".to_vec(), id: 2, lease };
    assert_eq!(queue(&mut t, ack(lease - 1)), QueueReply::Acked { found: false }, "the earlier taker's late ack");
    assert_eq!(queue(&mut t, ack(lease)), QueueReply::Acked { found: true });
    assert_eq!(queue(&mut t, ack(lease)), QueueReply::Acked { found: false });
    run(&mut t, &KvCommand::LeaseRevoke { id: lease });
    assert_eq!(queue_counts(&t, b"jobs").unwrap(), (1, 0), "an acknowledged item does not come back");
    assert_eq!(pop(&mut t, 0), QueueReply::Popped { id: 3, value: b"c".to_vec() });
    assert_eq!(pop(&mut t, 0), QueueReply::Empty);
    assert_eq!(queue_counts(&t, b"other").unwrap(), (1, 0), "queues are independent");
    assert!(matches!(
        run(&mut t, &KvCommand::QueuePop { name: b"jobs".to_vec(), lease: 99 }),
        KvReply::Refused(KvRefusal::LeaseNotFound(99))
    ));
    assert!(matches!(
        run(&mut t, &KvCommand::QueuePush { name: vec![], value: vec![] }),
        KvReply::Refused(KvRefusal::Invalid(_))
    ));
    assert_eq!(revisions(&t).unwrap().current, FIRST_REVISION, "queues create no revision");
}

#[test]
fn reads_at_every_readable_revision_match_a_model_through_random_writes_and_compactions() {
    // A small deterministic generator (no dependency): keys collide often, deletes and
    // re-creations happen, compactions land anywhere up to the current revision.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut t = MapTable::default();
    // snapshots[r] = the live map after revision r.
    let mut snapshots: Vec<BTreeMap<Vec<u8>, Vec<u8>>> = vec![BTreeMap::new(); FIRST_REVISION as usize + 1];
    let mut compacted = 0;
    for step in 0..600u64 {
        let key = format!("k{}", next(12)).into_bytes();
        let choice = next(10);
        if choice < 6 {
            let value = format!("v{step}").into_bytes();
            txn(&mut t, Txn { success: vec![TxnOp::put(key.clone(), value.clone())], ..Txn::default() });
            let mut map = snapshots.last().unwrap().clone();
            map.insert(key, value);
            snapshots.push(map);
        } else if choice < 9 {
            let reply = txn(&mut t, Txn { success: vec![TxnOp::delete(key.clone())], ..Txn::default() });
            if reply.revision as usize == snapshots.len() {
                let mut map = snapshots.last().unwrap().clone();
                map.remove(&key);
                snapshots.push(map);
            }
        } else {
            let current = snapshots.len() as u64 - 1;
            let target = compacted.max(1) + next(current.saturating_sub(compacted.max(1)) + 1);
            if target <= current && target >= compacted {
                loop {
                    let mut scratch = t.clone();
                    let reply = compact::step(&mut scratch, target, 7).unwrap().unwrap();
                    t = scratch;
                    if reply.done {
                        break;
                    }
                }
                compacted = target;
                // At most one version per key older than the compacted revision remains.
                let old =
                    t.0.keys().filter(|k| k[0] == layout::EVENT && layout::parse_event_key(k).unwrap().0 < target);
                assert!(old.count() <= 12, "after compacting to {target} at step {step}");
            }
        }
        assert_eq!(revisions(&t).unwrap().current as usize, snapshots.len() - 1);
    }
    let current = snapshots.len() as u64 - 1;
    for rev in compacted.max(1)..=current {
        let all = RangeRequest { end: RangeEnd::All, revision: rev, ..RangeRequest::key(Vec::new()) };
        let got: BTreeMap<Vec<u8>, Vec<u8>> =
            range(&t, &all).unwrap().unwrap().kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        assert_eq!(got, snapshots[rev as usize], "the whole namespace at revision {rev}");
        for k in 0..12 {
            let key = format!("k{k}");
            let expected = snapshots[rev as usize].get(key.as_bytes()).cloned();
            assert_eq!(get(&t, &key, rev).unwrap().map(|kv| kv.value), expected, "{key} at {rev}");
        }
    }
    // Compaction keeps history bounded: at most one old version per key below the current ones.
    let events = t.0.keys().filter(|k| k[0] == layout::EVENT).count() as u64;
    assert!(events <= (current - compacted + 1) + 12, "{events} events kept, compacted {compacted}, current {current}");
}
