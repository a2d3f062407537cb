//! The built-in key/value state machine.
//!
//! Keys and values are opaque bytes stored as they are in the namespace's table: no key is a
//! path, so no key can reach another namespace or the Raft state. A `set`, `delete` or `batch`
//! is one log entry holding a list of [`KvOp`]s, applied all-or-nothing.

use std::io;

use serde::{Deserialize, Serialize};

use crate::state_machine::{StateMachine, StateTable};

/// Largest payload the KV state machine decodes, a guard against hostile log entries.
const MAX_PAYLOAD_BYTES: u64 = 64 * 1024 * 1024;

/// One operation of a KV command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Store `value` under `key`.
    Set {
        /// The key, opaque bytes.
        #[serde(with = "crate::byte_vec")]
        key: Vec<u8>,
        /// The value, opaque bytes.
        #[serde(with = "crate::byte_vec")]
        value: Vec<u8>,
    },
    /// Remove `key` if present.
    Delete {
        /// The key, opaque bytes.
        #[serde(with = "crate::byte_vec")]
        key: Vec<u8>,
    },
}

impl KvOp {
    /// The key this operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            KvOp::Set { key, .. } | KvOp::Delete { key } => key,
        }
    }
}

/// Reply of a KV command: for each op, whether its key existed before the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvReply {
    /// `existed[i]` tells whether the key of op `i` was present before it was applied.
    pub existed: Vec<bool>,
}

/// Encode a list of ops as a command payload for [`KvStateMachine`].
pub fn encode_ops(ops: &[KvOp]) -> Vec<u8> {
    crate::encode(&ops).expect("encoding a Vec of byte vectors cannot fail")
}

/// Decode a [`KvReply`] from a command's output bytes.
pub fn decode_reply(bytes: &[u8]) -> Option<KvReply> {
    crate::decode(bytes, MAX_PAYLOAD_BYTES).ok()
}

/// The key/value state machine every namespace runs unless an embedder supplies another.
#[derive(Debug, Default, Clone, Copy)]
pub struct KvStateMachine;

impl StateMachine for KvStateMachine {
    fn apply(&self, table: &mut dyn StateTable, payload: &[u8]) -> io::Result<Result<Vec<u8>, String>> {
        let ops: Vec<KvOp> = match crate::decode(payload, MAX_PAYLOAD_BYTES) {
            Ok(ops) => ops,
            Err(e) => return Ok(Err(format!("malformed kv command: {e}"))),
        };
        let mut existed = Vec::with_capacity(ops.len());
        for op in &ops {
            let was_there = match op {
                KvOp::Set { key, value } => {
                    let had = table.get(key)?.is_some();
                    table.put(key, value)?;
                    had
                }
                KvOp::Delete { key } => table.delete(key)?,
            };
            existed.push(was_there);
        }
        Ok(Ok(crate::encode(&KvReply { existed }).expect("encoding bools cannot fail")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Default)]
    struct MapTable(BTreeMap<Vec<u8>, Vec<u8>>);

    impl StateTable for MapTable {
        fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
            Ok(self.0.get(key).cloned())
        }
        fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
            self.0.insert(key.to_vec(), value.to_vec());
            Ok(())
        }
        fn delete(&mut self, key: &[u8]) -> io::Result<bool> {
            Ok(self.0.remove(key).is_some())
        }
    }

    #[test]
    fn batch_applies_in_order_and_reports_existence() {
        let mut table = MapTable::default();
        let ops = vec![
            KvOp::Set { key: b"a".to_vec(), value: b"1".to_vec() },
            KvOp::Set { key: b"a".to_vec(), value: b"2".to_vec() },
            KvOp::Delete { key: b"b".to_vec() },
            KvOp::Delete { key: b"a".to_vec() },
        ];
        let out = KvStateMachine.apply(&mut table, &encode_ops(&ops)).unwrap().unwrap();
        assert_eq!(decode_reply(&out).unwrap().existed, vec![false, true, false, true]);
        assert!(table.0.is_empty());
    }

    #[test]
    fn malformed_payload_is_refused_without_change() {
        let mut table = MapTable::default();
        let out = KvStateMachine.apply(&mut table, &[0xff; 3]).unwrap();
        assert!(out.is_err());
        assert!(table.0.is_empty());
    }

    #[test]
    fn hostile_keys_are_opaque() {
        let mut table = MapTable::default();
        let ops = vec![
            KvOp::Set { key: b"../x".to_vec(), value: b"1".to_vec() },
            KvOp::Set { key: b"a\0b".to_vec(), value: b"2".to_vec() },
        ];
        KvStateMachine.apply(&mut table, &encode_ops(&ops)).unwrap().unwrap();
        assert_eq!(table.0.get(&b"../x"[..]).unwrap(), b"1");
        assert_eq!(table.0.get(&b"a\0b"[..]).unwrap(), b"2");
    }
}
