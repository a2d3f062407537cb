//! [`NamespaceIds`]: the small integer that stands for a namespace in the write-ahead log's
//! records (`DESIGN-log.md`), so that a record does not carry the name.
//!
//! The map lives in the redb table `store/namespace-ids` (name to id) and the next id to give
//! in `store/meta` (`next_namespace_id`), so an id is never given twice, not even after its
//! namespace was wiped. Only the writer thread gives ids: it records a new one in a durable
//! commit before it appends the first record that uses it, so no record on disk names an id
//! the map does not hold. Wiping a namespace removes its id in the same commit that deletes
//! its tables: records left in the log under an id no longer in the map are dead.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use flotilla_core::Namespace;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use crate::error::{redb_error, StoreError};
use crate::tables::{open_read, STORE_META};

/// The table of namespace ids.
pub(crate) const NAMESPACE_IDS: TableDefinition<'static, &'static str, u32> =
    TableDefinition::new("store/namespace-ids");
/// Store meta key: the next namespace id to give (u32, little-endian).
const NEXT_ID: &str = "next_namespace_id";

/// The namespace ids in use, shared by the writer (which gives them) and the log readers.
#[derive(Debug, Clone, Default)]
pub(crate) struct NamespaceIds {
    shared: Arc<RwLock<Known>>,
}

#[derive(Debug, Default)]
struct Known {
    ids: HashMap<Namespace, u32>,
    next: u32,
}

impl NamespaceIds {
    /// The ids recorded in the store read by `txn`.
    pub(crate) fn load(txn: &ReadTransaction) -> Result<Self, StoreError> {
        let mut known = Known { ids: HashMap::new(), next: 1 };
        if let Some(table) = open_read(txn, NAMESPACE_IDS)? {
            for row in table.iter().map_err(redb_error)? {
                let (name, id) = row.map_err(redb_error)?;
                let ns = Namespace::new(name.value())
                    .map_err(|e| StoreError::corrupt(format!("store/namespace-ids holds a bad name: {e}")))?;
                known.next = known.next.max(id.value().saturating_add(1));
                known.ids.insert(ns, id.value());
            }
        }
        if let Some(meta) = open_read(txn, STORE_META)? {
            if let Some(bytes) = meta.get(NEXT_ID).map_err(redb_error)? {
                let bytes: [u8; 4] = bytes
                    .value()
                    .try_into()
                    .map_err(|_| StoreError::corrupt("store/meta next_namespace_id is not 4 bytes"))?;
                known.next = known.next.max(u32::from_le_bytes(bytes));
            }
        }
        Ok(Self { shared: Arc::new(RwLock::new(known)) })
    }

    /// The id of `ns`, if it has one.
    pub(crate) fn get(&self, ns: &Namespace) -> Option<u32> {
        self.shared.read().unwrap_or_else(|p| p.into_inner()).ids.get(ns).copied()
    }

    /// Every namespace with an id, and its id.
    pub(crate) fn all(&self) -> Vec<(Namespace, u32)> {
        let known = self.shared.read().unwrap_or_else(|p| p.into_inner());
        known.ids.iter().map(|(ns, id)| (ns.clone(), *id)).collect()
    }

    /// Whether `id` is in use.
    pub(crate) fn in_use(&self, id: u32) -> bool {
        self.shared.read().unwrap_or_else(|p| p.into_inner()).ids.values().any(|&v| v == id)
    }

    /// Ids for `names` (which have none yet), to be recorded by [`NamespaceIds::record`] in a
    /// durable commit and then taken into use by [`NamespaceIds::adopt`].
    pub(crate) fn propose(&self, names: &[Namespace]) -> Result<Vec<(Namespace, u32)>, StoreError> {
        let next = self.shared.read().unwrap_or_else(|p| p.into_inner()).next;
        names
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let id = u32::try_from(i)
                    .ok()
                    .and_then(|i| next.checked_add(i))
                    .ok_or_else(|| StoreError::Invalid("every namespace id has been given".into()))?;
                Ok((ns.clone(), id))
            })
            .collect()
    }

    /// Record `assigned` (from [`NamespaceIds::propose`]) in `txn`.
    pub(crate) fn record(txn: &WriteTransaction, assigned: &[(Namespace, u32)]) -> Result<(), redb::Error> {
        let Some(last) = assigned.iter().map(|(_, id)| *id).max() else { return Ok(()) };
        let mut table = txn.open_table(NAMESPACE_IDS)?;
        for (ns, id) in assigned {
            table.insert(ns.as_str(), *id)?;
        }
        let mut meta = txn.open_table(STORE_META)?;
        meta.insert(NEXT_ID, last.saturating_add(1).to_le_bytes().as_slice())?;
        Ok(())
    }

    /// Take `assigned` into use, once its commit is durable.
    pub(crate) fn adopt(&self, assigned: &[(Namespace, u32)]) {
        let mut known = self.shared.write().unwrap_or_else(|p| p.into_inner());
        for (ns, id) in assigned {
            known.ids.insert(ns.clone(), *id);
            known.next = known.next.max(id.saturating_add(1));
        }
    }

    /// Remove `ns`'s id from `txn` (wiping the namespace).
    pub(crate) fn unrecord(txn: &WriteTransaction, ns: &Namespace) -> Result<(), redb::Error> {
        let mut table = txn.open_table(NAMESPACE_IDS)?;
        table.remove(ns.as_str())?;
        Ok(())
    }

    /// Forget `ns`'s id once its removal is committed; returns the id it had.
    pub(crate) fn drop_namespace(&self, ns: &Namespace) -> Option<u32> {
        self.shared.write().unwrap_or_else(|p| p.into_inner()).ids.remove(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn ids_are_never_given_twice_even_after_a_namespace_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("ids.redb")).unwrap();
        let ids = NamespaceIds::load(&db.begin_read().unwrap()).unwrap();
        let (a, b) = (Namespace::new("a").unwrap(), Namespace::new("b").unwrap());
        let assigned = ids.propose(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(assigned, vec![(a.clone(), 1), (b.clone(), 2)]);
        let txn = db.begin_write().unwrap();
        NamespaceIds::record(&txn, &assigned).unwrap();
        NamespaceIds::unrecord(&txn, &b).unwrap();
        txn.commit().unwrap();
        ids.adopt(&assigned);
        assert_eq!(ids.drop_namespace(&b), Some(2));
        assert_eq!(ids.get(&a), Some(1));
        assert!(!ids.in_use(2));
        // Reloaded, b's id is gone and is not given again.
        let ids = NamespaceIds::load(&db.begin_read().unwrap()).unwrap();
        assert_eq!((ids.get(&a), ids.get(&b)), (Some(1), None));
        assert_eq!(ids.propose(std::slice::from_ref(&b)).unwrap(), vec![(b, 3)]);
    }
}
