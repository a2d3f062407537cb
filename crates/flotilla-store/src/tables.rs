//! Table layout of the redb file.
//!
//! Every namespace owns five tables whose names are derived from its validated name
//! (`[a-z0-9][a-z0-9._-]*`, so it contains no `/` and the names cannot collide):
//!
//! | table             | key                          | value                                   |
//! |-------------------|------------------------------|-----------------------------------------|
//! | `log/<ns>`        | log index (u64)              | sealed encoded openraft entry           |
//! | `meta/<ns>`       | one of the `META_*` names    | sealed encoded value                    |
//! | `kv/<ns>`         | opaque key bytes             | opaque value bytes                      |
//! | `dedup/<ns>`      | request id (16 bytes, BE)    | sealed `[order u64 BE][CommandResult]`  |
//! | `dedup-order/<ns>`| insertion order (u64)        | request id (16 bytes)                   |
//!
//! User keys only ever appear as keys of `kv/<ns>`: they are bytes, never paths or table names,
//! so no key can reach another namespace or the Raft state.

use flotilla_core::{Namespace, RequestId};
use redb::{ReadOnlyTable, ReadTransaction, TableDefinition, TableError};

use crate::error::{redb_error, StoreError};

/// Meta key: the last saved vote.
pub(crate) const META_VOTE: &str = "raft.vote";
/// Meta key: the last saved committed log id.
pub(crate) const META_COMMITTED: &str = "raft.committed";
/// Meta key: the last purged log id.
pub(crate) const META_PURGED: &str = "raft.purged";
/// Meta key: the last applied log id.
pub(crate) const META_APPLIED: &str = "sm.applied";
/// Meta key: the last applied membership.
pub(crate) const META_MEMBERSHIP: &str = "sm.membership";
/// Meta key: the next insertion-order number of the dedup table.
pub(crate) const META_DEDUP_NEXT: &str = "sm.dedup_next";
/// Meta key: metadata of the snapshot file last saved as current.
pub(crate) const META_SNAPSHOT: &str = "sm.snapshot";

/// Table of a namespace's log.
pub(crate) type LogTable<'a> = TableDefinition<'a, u64, &'static [u8]>;
/// Table of a namespace's metadata.
pub(crate) type MetaTable<'a> = TableDefinition<'a, &'static str, &'static [u8]>;
/// Table of a namespace's key/value state.
pub(crate) type KvTable<'a> = TableDefinition<'a, &'static [u8], &'static [u8]>;
/// Table of a namespace's dedup results.
pub(crate) type DedupTable<'a> = TableDefinition<'a, &'static [u8], &'static [u8]>;
/// Table of a namespace's dedup insertion order.
pub(crate) type DedupOrderTable<'a> = TableDefinition<'a, u64, &'static [u8]>;

/// The table names of one namespace, computed once.
#[derive(Debug, Clone)]
pub(crate) struct NsTables {
    ns: Namespace,
    log: String,
    meta: String,
    kv: String,
    dedup: String,
    dedup_order: String,
}

impl NsTables {
    /// The tables of `ns`.
    pub(crate) fn new(ns: &Namespace) -> Self {
        let n = ns.as_str();
        Self {
            ns: ns.clone(),
            log: format!("log/{n}"),
            meta: format!("meta/{n}"),
            kv: format!("kv/{n}"),
            dedup: format!("dedup/{n}"),
            dedup_order: format!("dedup-order/{n}"),
        }
    }

    /// The namespace.
    pub(crate) fn ns(&self) -> &Namespace {
        &self.ns
    }

    /// `log/<ns>`.
    pub(crate) fn log(&self) -> LogTable<'_> {
        TableDefinition::new(&self.log)
    }

    /// `meta/<ns>`.
    pub(crate) fn meta(&self) -> MetaTable<'_> {
        TableDefinition::new(&self.meta)
    }

    /// `kv/<ns>`.
    pub(crate) fn kv(&self) -> KvTable<'_> {
        TableDefinition::new(&self.kv)
    }

    /// `dedup/<ns>`.
    pub(crate) fn dedup(&self) -> DedupTable<'_> {
        TableDefinition::new(&self.dedup)
    }

    /// `dedup-order/<ns>`.
    pub(crate) fn dedup_order(&self) -> DedupOrderTable<'_> {
        TableDefinition::new(&self.dedup_order)
    }

    /// Describes a meta value for error messages.
    pub(crate) fn meta_what(&self, key: &str) -> String {
        format!("namespace {:?}, {} key {key:?}", self.ns.as_str(), self.meta)
    }

    /// Describes a log entry for error messages.
    pub(crate) fn log_what(&self, index: u64) -> String {
        format!("namespace {:?}, log entry at index {index}", self.ns.as_str())
    }
}

/// Open a table in a read transaction; a table never written yet reads as absent (`None`).
pub(crate) fn open_read<K, V>(
    txn: &ReadTransaction,
    def: TableDefinition<'_, K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, StoreError>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(redb_error(e)),
    }
}

/// Bytes of an encoded [`RequestId`].
pub(crate) const REQUEST_ID_LEN: usize = 16;

/// A request id as a dedup key: client then seq, big-endian, so ids of one client sort by seq.
pub(crate) fn request_id_key(id: &RequestId) -> [u8; REQUEST_ID_LEN] {
    let mut out = [0u8; REQUEST_ID_LEN];
    out[..8].copy_from_slice(&id.client.to_be_bytes());
    out[8..].copy_from_slice(&id.seq.to_be_bytes());
    out
}
