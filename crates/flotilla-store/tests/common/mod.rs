//! Helpers shared by the store's integration tests (Flotilla's real `TypeConfig`).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;

use flotilla_core::kv::encode_ops;
use flotilla_core::types::{Entry, LogId, Vote};
use flotilla_core::{
    ApplyContext, Command, KvOp, MemberInfo, Namespace, NodeId, RequestId, StateMachine, StateTable, StateView,
    TypeConfig,
};
use flotilla_store::{LogStore, StateMachineStore, Store};
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, Membership, RaftTypeConfig};

/// A deterministic node id.
pub fn node(n: u8) -> NodeId {
    let key = libp2p_identity::Keypair::ed25519_from_bytes([n.max(1); 32]).expect("valid ed25519 secret");
    key.public().to_peer_id()
}

pub fn ns(name: &str) -> Namespace {
    Namespace::new(name).expect("valid namespace")
}

pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(term, node(1)), index)
}

pub fn vote(term: u64) -> Vote {
    Vote::new(term, node(1))
}

pub fn blank(term: u64, index: u64) -> Entry {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
}

pub fn normal(term: u64, index: u64, id: Option<RequestId>, payload: Vec<u8>) -> Entry {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(Command { id, payload }) }
}

pub fn membership(term: u64, index: u64, voters: &[u8]) -> Entry {
    let set: BTreeSet<NodeId> = voters.iter().map(|n| node(*n)).collect();
    let m = Membership::<NodeId, MemberInfo>::new_with_defaults(vec![set], []);
    Entry { log_id: log_id(term, index), payload: EntryPayload::Membership(m) }
}

pub fn set(key: &[u8], value: &[u8]) -> Vec<u8> {
    encode_ops(&[KvOp::Set { key: key.to_vec(), value: value.to_vec() }])
}

pub fn rid(client: u64, seq: u64) -> Option<RequestId> {
    Some(RequestId { client, seq })
}

/// Append durably (waits for the flush callback).
pub async fn append(log: &mut LogStore, entries: Vec<Entry>) -> io::Result<()> {
    log.blocking_append(entries).await.map_err(|e| io::Error::other(e.to_string()))
}

/// Apply entries the way openraft does on a follower (no client waiting).
pub async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) -> io::Result<()> {
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await
}

pub fn open(dir: &std::path::Path) -> Arc<Store> {
    Store::open(dir).expect("store opens")
}

/// Open a store in `dir` keeping its Raft logs as `log` says; a write-ahead log gets the
/// smallest segments allowed (64 KiB), so a few entries of some KiB roll it over.
pub fn open_layout(dir: &std::path::Path, log: flotilla_store::LogKind) -> Arc<Store> {
    let options = flotilla_store::StoreOptions { log, wal_segment_bytes: Some(64 * 1024), ..Default::default() };
    Store::open_with(dir, options).expect("store opens")
}

/// Counts applications: every accepted command increments `n`; payload `refuse` writes a
/// key and then refuses; payload `fail` reports a storage error.
pub struct CountingSm;

impl StateMachine for CountingSm {
    fn apply(
        &self,
        _context: &ApplyContext,
        table: &mut dyn StateTable,
        payload: &[u8],
    ) -> io::Result<Result<Vec<u8>, String>> {
        match payload {
            b"refuse" => {
                table.put(b"scratch", b"must not stay")?;
                table.delete(b"n")?;
                Ok(Err("refused on purpose".into()))
            }
            b"fail" => Err(io::Error::other("failing on purpose")),
            _ => {
                let n = match table.get(b"n")? {
                    Some(v) => u64::from_be_bytes(v.as_slice().try_into().map_err(|_| io::Error::other("bad n"))?),
                    None => 0,
                } + 1;
                table.put(b"n", &n.to_be_bytes())?;
                Ok(Ok(n.to_be_bytes().to_vec()))
            }
        }
    }
}

/// The counter kept by [`CountingSm`].
pub fn count(store: &Store, ns: &Namespace) -> u64 {
    store
        .view(ns)
        .expect("a view")
        .get(b"n")
        .expect("read n")
        .map(|v| u64::from_be_bytes(v.as_slice().try_into().expect("8 bytes")))
        .unwrap_or(0)
}

/// Every file under `dir` whose bytes contain `needle` (to check that a value is on disk in
/// the clear, or nowhere).
pub fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle) {
            found.push(path);
        }
    }
    found
}
