//! Dedup decisions are a pure function of the log: every batching of the same entries gives the
//! same results and the same tables.

use std::io;

use flotilla_core::types::{Entry, LogId};
use flotilla_core::{ApplyContext, Command, Namespace, RequestId, StateTable, TypeConfig};
use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, RaftTypeConfig};
use redb::backends::InMemoryBackend;
use redb::Database;

use super::*;
use crate::tables::request_id_key;

/// Every application increments a counter and answers its new value, so a command applied
/// twice is visible in both the state and the results.
struct Counter;

impl StateMachine for Counter {
    fn apply(
        &self,
        _context: &ApplyContext,
        table: &mut dyn StateTable,
        _payload: &[u8],
    ) -> io::Result<Result<Vec<u8>, String>> {
        let n = table.get(b"n")?.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap_or([0; 8]))) + 1;
        table.put(b"n", &n.to_be_bytes())?;
        Ok(Ok(n.to_be_bytes().to_vec()))
    }
}

fn log_id(index: u64) -> LogId {
    let key = libp2p_identity::Keypair::ed25519_from_bytes([1; 32]).unwrap();
    LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(1, key.public().to_peer_id()), index)
}

/// A command with request id `(1, seq)`, or without an id.
fn entry(index: u64, seq: Option<u64>) -> Entry {
    let id = seq.map(|seq| RequestId { client: 1, seq });
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(Command { id, payload: b"inc".to_vec() }) }
}

/// Everything the dedup and kv tables hold, decoded, plus the results answered.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    results: Vec<CommandResult>,
    counter: Option<Vec<u8>>,
    dedup: Vec<(u64, u64, CommandResult)>,
    order: Vec<(u64, Vec<u8>)>,
    next: u64,
}

/// Apply `entries` in batches of the given sizes (cycled) with a window of `max_ids`.
fn apply_in(entries: &[Entry], sizes: &[usize], max_ids: u64, id_space: u64) -> Outcome {
    let db = Database::builder().create_with_backend(InMemoryBackend::new()).unwrap();
    let tables = NsTables::new(&Namespace::new("t").unwrap());
    let codec = Codec::default();
    let mut results = Vec::new();
    let mut rest = entries;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at(size.clamp(1, rest.len()));
        rest = tail;
        let txn = db.begin_write().unwrap();
        let out = apply_entries_within::<TypeConfig>(&txn, &tables, &codec, &Counter, batch, max_ids).unwrap();
        txn.commit().unwrap();
        results.extend(out);
    }
    let txn = db.begin_write().unwrap();
    let dedup_table = txn.open_table(tables.dedup()).unwrap();
    let dedup = (0..id_space)
        .filter_map(|seq| {
            let (order, result) =
                dedup::lookup(&dedup_table, &tables, &codec, &RequestId { client: 1, seq }).unwrap()?;
            Some((seq, order, result))
        })
        .collect();
    let order_table = txn.open_table(tables.dedup_order()).unwrap();
    let order = order_table.iter().unwrap().map(|r| r.unwrap()).map(|(k, v)| (k.value(), v.value().to_vec())).collect();
    let meta = txn.open_table(tables.meta()).unwrap();
    let next = meta.get(META_DEDUP_NEXT).unwrap().map_or(0, |v| decode_sealed(v.value(), &|| String::new()).unwrap());
    let counter = txn.open_table(tables.kv()).unwrap().get(b"n".as_slice()).unwrap().map(|v| v.value().to_vec());
    Outcome { results, counter, dedup, order, next }
}

/// A fixed pseudo-random stream of retried and new ids over `id_space` ids, some without one.
fn workload(len: u64, id_space: u64) -> Vec<Entry> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (1..=len)
        .map(|index| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seq = (x % (id_space + 1) < id_space).then_some(x % id_space);
            entry(index, seq)
        })
        .collect()
}

#[test]
fn every_batching_of_the_same_entries_gives_the_same_tables_and_results() {
    let (max_ids, id_space) = (4, 9);
    let entries = workload(300, id_space);
    let one_by_one = apply_in(&entries, &[1], max_ids, id_space);
    // The window is smaller than the id space, so ids do fall out of it and are applied again.
    let applied = u64::from_be_bytes(one_by_one.counter.clone().unwrap().try_into().unwrap());
    let with_id = entries.iter().filter(|e| matches!(&e.payload, EntryPayload::Normal(c) if c.id.is_some())).count();
    assert!(applied > id_space && (applied as usize) < entries.len(), "applied {applied} of {with_id}");
    assert_eq!(one_by_one.order.len() as u64, max_ids);
    for sizes in [&[300][..], &[2], &[3], &[5], &[7, 1, 4], &[64, 13], &[150]] {
        assert_eq!(apply_in(&entries, sizes, max_ids, id_space), one_by_one, "batch sizes {sizes:?}");
    }
}

#[test]
fn an_id_that_left_the_window_is_applied_again_in_any_batching() {
    // Window of 3: ids 0, 1, 2, then 3 pushes 0 out; the retry of 0 right after is new again,
    // whether 3 and the retry share a batch with each other (or with everything) or not.
    let entries = vec![entry(1, Some(0)), entry(2, Some(1)), entry(3, Some(2)), entry(4, Some(3)), entry(5, Some(0))];
    let alone = apply_in(&entries, &[1], 3, 4);
    assert_eq!(alone.counter, Some(5u64.to_be_bytes().to_vec()), "the retry of 0 was applied again");
    assert_eq!(apply_in(&entries, &[3, 2], 3, 4), alone);
    assert_eq!(apply_in(&entries, &[5], 3, 4), alone);
    // Its old row is gone and the new one stays: ids 2, 3, 0 remain.
    let kept: Vec<u64> = alone.dedup.iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(kept, vec![0, 2, 3]);
    assert_eq!(alone.order.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_eq!(alone.order[2].1, request_id_key(&RequestId { client: 1, seq: 0 }).to_vec());
}

#[test]
fn an_id_repeated_within_one_batch_is_applied_once() {
    let entries = vec![entry(1, Some(7)), entry(2, None), entry(3, Some(7)), entry(4, Some(7))];
    let outcome = apply_in(&entries, &[4], 100, 8);
    assert_eq!(outcome.counter, Some(2u64.to_be_bytes().to_vec()), "id 7 once, the id-less command once");
    let first = outcome.results[0].clone();
    assert_eq!(outcome.results[2], first);
    assert_eq!(outcome.results[3], first);
    assert_eq!(outcome.next, 1);
}
