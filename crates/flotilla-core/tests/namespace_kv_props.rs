//! Property tests of namespace validation and of the KV command codec against hostile input.
//!
//! Checked on generated input:
//! - `Namespace::new` accepts exactly the strings matching `[a-z0-9][a-z0-9._-]{0,63}` (a
//!   reference predicate written here), names the right error otherwise, and agrees with
//!   `FromStr`, `Display` and deserialization;
//! - the KV state machine, fed arbitrary payload bytes or hostile edits of valid `encode_ops`
//!   payloads, never panics and never allocates more than a fixed bound: a payload either is
//!   refused without touching the table, or is a command that is applied as a whole, creating
//!   at most one revision, after which the table still reads (unless the command began a
//!   restore, which refuses reads until it ends);
//! - generated batches (keys such as `..`, `../x`, NUL, empty) apply like a map model, keys
//!   being opaque bytes, each changing batch creating exactly one revision, and past revisions
//!   keep reading as they were; `decode_reply` never panics and round-trips replies.

mod support;

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;

use flotilla_core::kv::{
    decode_reply, encode_ops, range, revisions, KvRefusal, OpResult, RangeEnd, RangeRequest, TxnReply,
};
use flotilla_core::namespace::MAX_NAMESPACE_LEN;
use flotilla_core::{
    decode, encode, ApplyContext, KvCommand, KvOp, KvReply, KvStateMachine, Namespace, NamespaceError, Scan,
    ScanVisitor, StateMachine, StateTable, StateView,
};
use proptest::prelude::*;
use proptest::sample::Index;

#[global_allocator]
static ALLOCATOR: support::Recording = support::Recording;

/// serde's cap on preallocating a sequence of announced length (`size_hint::cautious`).
const PREALLOC_CAP: usize = 1024 * 1024;

// ---- namespaces ----

/// `[a-z0-9][a-z0-9._-]{0,63}`, written independently of `Namespace::new`.
fn reference(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else { return false };
    let head = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let tail = |c: char| head(c) || c == '.' || c == '_' || c == '-';
    head(first) && chars.clone().all(tail) && chars.count() <= 63
}

/// Strings of every kind: anything at all, near misses from a confusable alphabet, valid
/// names, and names around the length bound.
fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9._A-Z/\\\\ \0é%:-]{0,70}",
        "[a-z0-9][a-z0-9._-]{0,63}",
        "[a-z0-9]{62,67}",
        "[a-z0-9][a-z0-9._-]{60,64}[A-Z\0/]?",
        prop::sample::select(vec!["", ".", "..", "../x", "default", "a", "0", "-", "_x", "x\0", "\u{0}"])
            .prop_map(String::from),
    ]
}

// ---- KV ----

/// A table kept in memory.
#[derive(Debug, Default, Clone, PartialEq)]
struct MapTable(BTreeMap<Vec<u8>, Vec<u8>>);

impl StateView for MapTable {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(self.0.get(key).cloned())
    }
    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, visit: &mut ScanVisitor<'_>) -> io::Result<()> {
        for (k, v) in self.0.range::<Vec<u8>, _>((start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec))) {
            if visit(k, v)? == Scan::Stop {
                break;
            }
        }
        Ok(())
    }
}

impl StateTable for MapTable {
    fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.0.insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> io::Result<bool> {
        Ok(self.0.remove(key).is_some())
    }
}

const CTX: ApplyContext = ApplyContext { index: 1 };

/// Every live key and value, read at `revision` (0: the current one).
fn live(table: &MapTable, revision: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let all = RangeRequest { end: RangeEnd::All, revision, ..RangeRequest::key(Vec::new()) };
    let page = range(table, &all).expect("reads").expect("readable revision");
    assert!(!page.more, "small tables fit one page");
    page.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

/// Keys from a small set (so ops collide) mixed with hostile and arbitrary ones.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![&b"a"[..], b"b", b"", b"..", b"../x", b"../../etc/passwd", b"a\0b", b"\0", b"/"])
            .prop_map(<[u8]>::to_vec),
        bytes(16),
    ]
}

fn op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        (key(), bytes(64)).prop_map(|(key, value)| KvOp::Set { key, value }),
        key().prop_map(|key| KvOp::Delete { key }),
    ]
}

/// A table built by a few generated batches (each without a repeated key).
fn table() -> impl Strategy<Value = MapTable> {
    proptest::collection::vec(proptest::collection::btree_map(key(), bytes(8), 0..4), 0..4).prop_map(|batches| {
        let mut table = MapTable::default();
        for batch in batches {
            let ops: Vec<KvOp> = batch.into_iter().map(|(key, value)| KvOp::Set { key, value }).collect();
            KvStateMachine.apply(&CTX, &mut table, &encode_ops(&ops)).expect("in memory").expect("valid");
        }
        table
    })
}

/// Arbitrary bytes, half of them behind a small op count and op tag so the decoder reaches
/// the keys and values.
fn arbitrary_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(256),
        (0u64..4, 0u32..3, bytes(256)).prop_map(|(count, tag, rest)| {
            let mut out = count.to_le_bytes().to_vec();
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&rest);
            out
        }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    Length(Index, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<Index>(), prop_oneof![0u64..=16, any::<u64>(), (1u64 << 20)..(1u64 << 40)])
            .prop_map(|(at, n)| Mutation::Length(at, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Set(at, b) if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
            Mutation::Insert(at, b) => bytes.insert(at.index(bytes.len() + 1), *b),
            Mutation::Length(at, n) if bytes.len() >= 8 => {
                let i = at.index(bytes.len() - 7);
                bytes[i..i + 8].copy_from_slice(&n.to_le_bytes());
            }
            _ => {}
        }
    }
    bytes
}

/// Apply `payload` to a copy of `table` and check the outcome against the payload's meaning.
fn apply_hostile(table: &MapTable, payload: &[u8]) -> Result<(), TestCaseError> {
    let mut after = table.clone();
    let (applied, largest) = support::largest_allocation(|| KvStateMachine.apply(&CTX, &mut after, payload));
    prop_assert!(largest <= PREALLOC_CAP, "applying {} payload bytes allocated {} bytes", payload.len(), largest);
    let applied = applied.expect("an in-memory table never fails");
    let before_rev = revisions(table).unwrap().current;
    match decode::<KvCommand>(payload, u64::MAX) {
        Err(_) => {
            prop_assert!(applied.is_err(), "an undecodable payload was applied");
            prop_assert_eq!(&after, table, "a refused payload changed the table");
        }
        Ok(command) => {
            let reply = decode_reply(&applied.expect("decodable commands are answered")).expect("the reply decodes");
            let after_rev = revisions(&after).unwrap().current;
            match reply {
                KvReply::Refused(_) => prop_assert_eq!(&after, table, "a refused command changed the table"),
                KvReply::Txn(TxnReply { revision, .. }) => {
                    prop_assert!(after_rev == before_rev || after_rev == before_rev + 1);
                    prop_assert_eq!(revision, after_rev);
                }
                KvReply::Restore(_) => {
                    let is_restore = matches!(command, KvCommand::Restore(_));
                    prop_assert!(is_restore, "a restore reply to another command");
                }
                KvReply::Compact(_) => {
                    let is_compact = matches!(command, KvCommand::Compact { .. });
                    prop_assert!(is_compact, "a compaction reply to another command");
                    prop_assert_eq!(after_rev, before_rev);
                }
                KvReply::Queue(_) => {
                    let is_queue = matches!(
                        command,
                        KvCommand::QueuePush { .. } | KvCommand::QueuePop { .. } | KvCommand::QueueAck { .. }
                    );
                    prop_assert!(is_queue, "a queue reply to another command");
                    prop_assert_eq!(after_rev, before_rev, "queues create no revision");
                }
                KvReply::Lease(reply) => {
                    let is_lease = matches!(command, KvCommand::LeaseGrant { .. } | KvCommand::LeaseRevoke { .. });
                    prop_assert!(is_lease, "a lease reply to another command");
                    prop_assert!(after_rev == before_rev || after_rev == before_rev + 1);
                    prop_assert_eq!(reply.revision, after_rev);
                }
            }
            // The table still reads, except that a restore the command began refuses reads
            // until it ends (by design: nobody reads a half-replaced state).
            let all = RangeRequest { end: RangeEnd::All, ..RangeRequest::key(Vec::new()) };
            match range(&after, &all).expect("reads") {
                Ok(_) => {}
                Err(KvRefusal::Restoring(_)) => {
                    let is_restore = matches!(command, KvCommand::Restore(_));
                    prop_assert!(is_restore, "only a restore makes the table refuse reads");
                }
                Err(refusal) => prop_assert!(false, "the current revision does not read: {refusal:?}"),
            }
        }
    }
    Ok(())
}

/// Apply a generated batch to `table` and to a map model: refused when it writes a key twice,
/// otherwise applied like the map, one revision if anything changed, the past unchanged.
fn apply_batch(table: &mut MapTable, ops: &[KvOp]) -> Result<(), TestCaseError> {
    let before = table.clone();
    let before_rev = revisions(table).unwrap().current;
    let out = KvStateMachine.apply(&CTX, table, &encode_ops(ops)).unwrap().expect("decodable");
    let reply = decode_reply(&out).expect("the reply decodes");
    let mut keys: Vec<&[u8]> = ops.iter().filter(|op| matches!(op, KvOp::Set { .. })).map(KvOp::key).collect();
    keys.sort();
    let repeats = keys.windows(2).any(|w| w[0] == w[1])
        || ops.iter().any(|op| matches!(op, KvOp::Delete { key } if keys.contains(&key.as_slice())));
    if repeats {
        prop_assert!(matches!(reply, KvReply::Refused(_)), "{:?}", reply);
        prop_assert_eq!(&*table, &before);
        return Ok(());
    }
    let KvReply::Txn(reply) = reply else { return Err(TestCaseError::fail(format!("{reply:?}"))) };
    let mut model = live(&before, 0);
    let existed: Vec<bool> = ops.iter().map(|op| model_apply(&mut model, op)).collect();
    let answered: Vec<bool> = reply
        .results
        .iter()
        .map(|r| match r {
            OpResult::Put { existed, .. } => *existed,
            OpResult::Delete { deleted, .. } => *deleted > 0,
            OpResult::Range(_) | OpResult::Txn { .. } => unreachable!("batches neither read nor nest"),
        })
        .collect();
    prop_assert_eq!(answered, existed.clone());
    prop_assert_eq!(live(table, 0), model);
    let changed = ops.iter().zip(&existed).any(|(op, e)| matches!(op, KvOp::Set { .. }) || *e);
    prop_assert_eq!(reply.revision, before_rev + u64::from(changed));
    if before_rev > 0 {
        prop_assert_eq!(live(table, before_rev), live(&before, 0), "the past changed");
    }
    Ok(())
}

fn model_apply(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &KvOp) -> bool {
    match op {
        KvOp::Set { key, value } => model.insert(key.clone(), value.clone()).is_some(),
        KvOp::Delete { key } => model.remove(key).is_some(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `Namespace::new` accepts exactly the reference grammar, with the right error otherwise,
    /// and every other way of making a namespace agrees with it.
    #[test]
    fn namespace_accepts_exactly_the_grammar(name in any_name()) {
        let expected = reference(&name);
        let made = Namespace::new(name.clone());
        prop_assert_eq!(made.is_ok(), expected, "{:?}", name);
        match &made {
            Ok(ns) => {
                prop_assert_eq!(ns.as_str(), name.as_str());
                prop_assert_eq!(ns.to_string(), name.clone());
            }
            Err(NamespaceError::Empty) => prop_assert!(name.is_empty()),
            Err(NamespaceError::TooLong(n)) => {
                prop_assert_eq!(*n, name.len());
                prop_assert!(name.len() > MAX_NAMESPACE_LEN);
            }
            Err(NamespaceError::BadCharacter(s)) => {
                prop_assert_eq!(s, &name);
                prop_assert!(!name.is_empty() && name.len() <= MAX_NAMESPACE_LEN);
            }
        }
        prop_assert_eq!(name.parse::<Namespace>(), made.clone());
        let decoded = decode::<Namespace>(&encode(&name).unwrap(), 1024);
        prop_assert_eq!(decoded.is_ok(), expected);
        if let (Ok(decoded), Ok(made)) = (decoded, made) {
            prop_assert_eq!(decoded, made);
        }
    }

    /// Arbitrary payload bytes: refused without change, or applied as the ops they encode.
    #[test]
    fn kv_apply_survives_arbitrary_payloads(table in table(), payload in arbitrary_payload()) {
        apply_hostile(&table, &payload)?;
    }

    /// Valid payloads with hostile edits (flipped bytes, cuts, insertions, huge lengths).
    #[test]
    fn kv_apply_survives_mutated_payloads(
        table in table(),
        ops in proptest::collection::vec(op(), 0..6),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        apply_hostile(&table, &mutate(encode_ops(&ops), &mutations))?;
    }

    /// Valid batches, hostile keys included, apply like a map: keys are opaque bytes.
    #[test]
    fn kv_batches_apply_like_a_map(
        mut table in table(),
        batches in proptest::collection::vec(proptest::collection::vec(op(), 0..8), 1..4),
    ) {
        for ops in &batches {
            apply_hostile(&table, &encode_ops(ops))?;
            apply_batch(&mut table, ops)?;
        }
    }

    /// `decode_reply` never panics, and gives back the replies the state machine encodes.
    #[test]
    fn kv_replies_decode_safely(garbage in bytes(128), existed in proptest::collection::vec(any::<bool>(), 0..32)) {
        let (_, largest) = support::largest_allocation(|| decode_reply(&garbage));
        prop_assert!(largest <= PREALLOC_CAP);
        let results = existed.into_iter().map(|existed| OpResult::Put { prev: None, existed }).collect();
        let reply = KvReply::Txn(TxnReply { succeeded: true, revision: 7, results });
        prop_assert_eq!(decode_reply(&encode(&reply).unwrap()), Some(reply));
    }
}

/// Found by `kv_apply_survives_mutated_payloads` in CI: an empty batch whose first eight
/// bytes became the number 7 decodes as a restore that begins, and the table then (rightly)
/// refuses reads; the property expected every table to read.
#[test]
fn a_mutated_payload_that_begins_a_restore_leaves_a_table_that_refuses_reads() {
    let mut payload = encode_ops(&[]);
    payload[..8].copy_from_slice(&7u64.to_le_bytes());
    assert!(matches!(decode::<KvCommand>(&payload, u64::MAX), Ok(KvCommand::Restore(_))));
    apply_hostile(&MapTable::default(), &payload).expect("a restore may refuse reads");
}
