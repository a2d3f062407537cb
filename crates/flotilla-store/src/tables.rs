//! Table layout of the redb file.
//!
//! Every namespace owns five tables whose names are derived from its validated name
//! (`[a-z0-9][a-z0-9._-]*`, so it contains no `/` and the names cannot collide):
//!
//! | table             | key                          | value                                   |
//! |-------------------|------------------------------|-----------------------------------------|
//! | `log/<ns>`        | log index (u64)              | protected encoded openraft entry        |
//! | `meta/<ns>`       | one of the `META_*` names    | CRC-framed encoded value                |
//! | `kv/<ns>`         | opaque key bytes             | value bytes (AEAD-sealed at rest)       |
//! | `dedup/<ns>`      | request id (16 bytes, BE)    | protected `[order u64 BE][CommandResult]` |
//! | `dedup-order/<ns>`| insertion order (u64)        | request id (16 bytes)                   |
//!
//! One more table belongs to the whole store: `store/meta` (the at-rest record, see
//! [`crate::sealing`]); no namespace table kind is `store`, so it cannot collide.
//!
//! *Protected* means CRC-framed in a plaintext store and AEAD-sealed in a store encrypted at
//! rest ([`crate::codec::Codec`]); the sealing context of a record is its table name, a zero
//! byte and its key ([`record_context`]), so a sealed value only opens where it was written.
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
/// Meta key: the index of the last purged log id, as 8 little-endian bytes, next to
/// [`META_PURGED`] in a store whose logs are in the write-ahead log: the store reads it at
/// open, before it knows the type configuration the log id was written with.
pub(crate) const META_PURGED_INDEX: &str = "raft.purged_index";
/// Meta key: the last applied log id.
pub(crate) const META_APPLIED: &str = "sm.applied";
/// Meta key: the last applied membership.
pub(crate) const META_MEMBERSHIP: &str = "sm.membership";
/// Meta key: the next insertion-order number of the dedup table.
pub(crate) const META_DEDUP_NEXT: &str = "sm.dedup_next";
/// Meta key: metadata of the snapshot file last saved as current.
pub(crate) const META_SNAPSHOT: &str = "sm.snapshot";
/// Meta key: present while a snapshot is being loaded into the namespace's tables in several
/// commits (the state is partial: reads are refused, and after a crash openraft installs the
/// snapshot again because nothing is applied).
pub(crate) const META_INSTALLING: &str = "sm.installing";
/// Meta key: the record of a membership an operator forced onto the log (see
/// [`crate::ForcedMembership`]).
pub(crate) const META_FORCED: &str = "raft.forced";

/// The store-wide metadata table.
pub(crate) const STORE_META: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("store/meta");
/// Store meta key: the at-rest record (absent in a plaintext store).
pub(crate) const STORE_META_AT_REST: &str = "at_rest";

/// Prefixes of the tables whose values are protected (sealed at rest).
pub(crate) const PROTECTED_PREFIXES: [&str; 3] = ["log/", "kv/", "dedup/"];

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

/// Kinds of per-namespace tables, as the prefix of their names.
const NAMESPACE_TABLE_KINDS: [&str; 5] = ["log/", "meta/", "kv/", "dedup/", "dedup-order/"];

/// The namespace a table named `name` belongs to, if it is a namespace table.
pub(crate) fn namespace_of_table(name: &str) -> Option<Namespace> {
    NAMESPACE_TABLE_KINDS.iter().find_map(|kind| name.strip_prefix(kind)).and_then(|ns| Namespace::new(ns).ok())
}

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

    /// Sealing context of the log entry at `index`.
    pub(crate) fn log_context(&self, index: u64) -> Vec<u8> {
        record_context(&self.log, &index.to_be_bytes())
    }

    /// Sealing context of the value of `key`.
    pub(crate) fn kv_context(&self, key: &[u8]) -> Vec<u8> {
        record_context(&self.kv, key)
    }

    /// Sealing context of the dedup record of a request id key.
    pub(crate) fn dedup_context(&self, id_key: &[u8]) -> Vec<u8> {
        record_context(&self.dedup, id_key)
    }

    /// Sealing context of the namespace's snapshot file.
    pub(crate) fn snapshot_context(ns: &Namespace) -> Vec<u8> {
        record_context(&format!("snapshot/{}", ns.as_str()), &[])
    }
}

/// The sealing context (AEAD associated data) of the record under `key` in `table`:
/// `table \0 key`. Table names never contain a zero byte, so the split is unambiguous; log
/// indexes are given as 8 big-endian bytes.
pub(crate) fn record_context(table: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(table.len() + 1 + key.len());
    out.extend_from_slice(table.as_bytes());
    out.push(0);
    out.extend_from_slice(key);
    out
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

/// The index stored under [`META_PURGED_INDEX`] for `tables`' namespace, if any.
pub(crate) fn read_purged_index(txn: &ReadTransaction, tables: &NsTables) -> Result<Option<u64>, StoreError> {
    let Some(meta) = open_read(txn, tables.meta())? else { return Ok(None) };
    let Some(value) = meta.get(META_PURGED_INDEX).map_err(redb_error)? else { return Ok(None) };
    let bytes: [u8; 8] = value
        .value()
        .try_into()
        .map_err(|_| StoreError::corrupt(format!("{}: not 8 bytes", tables.meta_what(META_PURGED_INDEX))))?;
    Ok(Some(u64::from_le_bytes(bytes)))
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

#[cfg(test)]
mod namespace_table_tests {
    use super::*;

    #[test]
    fn every_namespace_table_names_its_namespace_and_nothing_else_does() {
        let ns = Namespace::new("a.b-c").unwrap();
        let t = NsTables::new(&ns);
        for name in [&t.log, &t.meta, &t.kv, &t.dedup, &t.dedup_order] {
            assert_eq!(namespace_of_table(name), Some(ns.clone()), "{name}");
        }
        for other in ["store/meta", "log/", "kv/Bad", "unknown/x"] {
            assert_eq!(namespace_of_table(other), None, "{other}");
        }
    }
}
