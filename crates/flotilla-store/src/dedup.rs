//! Request deduplication: the result of every command that carries a [`RequestId`] is kept, so a
//! retried command returns the first result instead of being applied twice.
//!
//! The table is bounded: at most [`MAX_DEDUP_ENTRIES`] ids per namespace, the oldest evicted
//! first (insertion order is kept in `dedup-order/<ns>`). A retry of a write older than the last
//! 100 000 deduplicated writes of its namespace is therefore applied again; clients retry
//! within seconds, far inside that window. Eviction depends only on the order of applied
//! entries, and snapshots carry both tables, so every replica keeps the same ids.

use flotilla_core::{CommandResult, RequestId};
use redb::{ReadableTable, ReadableTableMetadata, Table};

use crate::codec::{decode_bounded, Codec};
use crate::error::{redb_error, StoreError};
use crate::snapshot::ORDER_LEN;
use crate::tables::{request_id_key, NsTables};

/// Most request ids remembered per namespace.
pub(crate) const MAX_DEDUP_ENTRIES: u64 = 100_000;

/// The stored result of `id`, if it was applied before.
pub(crate) fn lookup<T>(
    table: &T,
    tables: &NsTables,
    codec: &Codec,
    id: &RequestId,
) -> Result<Option<CommandResult>, StoreError>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let key = request_id_key(id);
    let Some(value) = table.get(key.as_slice()).map_err(redb_error)? else {
        return Ok(None);
    };
    let what = || format!("namespace {:?}, dedup entry {id}", tables.ns().as_str());
    let payload = codec.unprotect(&tables.dedup_context(&key), value.value(), &what)?;
    let result = payload.get(ORDER_LEN..).ok_or_else(|| StoreError::corrupt(format!("{}: too short", what())))?;
    decode_bounded(result, &what).map(Some)
}

/// The stored form of the dedup entry of `id`: protected `[order u64 BE][encoded result]`.
pub(crate) fn encode_entry(
    tables: &NsTables,
    codec: &Codec,
    id: &RequestId,
    order: u64,
    result: &CommandResult,
) -> Result<Vec<u8>, StoreError> {
    let encoded = flotilla_core::encode(result).map_err(|e| StoreError::Encode(e.to_string()))?;
    let mut payload = Vec::with_capacity(ORDER_LEN + encoded.len());
    payload.extend_from_slice(&order.to_be_bytes());
    payload.extend_from_slice(&encoded);
    codec.protect(&tables.dedup_context(&request_id_key(id)), &payload)
}

/// Insert one entry (already encoded with [`encode_entry`] for `order`).
pub(crate) fn insert(
    dedup: &mut Table<'_, &'static [u8], &'static [u8]>,
    order_table: &mut Table<'_, u64, &'static [u8]>,
    id: &RequestId,
    order: u64,
    stored: &[u8],
) -> Result<(), redb::Error> {
    let key = request_id_key(id);
    dedup.insert(key.as_slice(), stored)?;
    order_table.insert(order, key.as_slice())?;
    Ok(())
}

/// Drop the oldest entries until at most `max` (in production [`MAX_DEDUP_ENTRIES`]) remain.
pub(crate) fn evict(
    dedup: &mut Table<'_, &'static [u8], &'static [u8]>,
    order_table: &mut Table<'_, u64, &'static [u8]>,
    max: u64,
) -> Result<u64, redb::Error> {
    let mut evicted = 0;
    while order_table.len()? > max {
        let Some((_, key)) = order_table.pop_first()? else { break };
        let key = key.value().to_vec();
        dedup.remove(key.as_slice())?;
        evicted += 1;
    }
    Ok(evicted)
}

#[cfg(test)]
mod tests {
    use redb::backends::InMemoryBackend;
    use redb::{Database, ReadableDatabase};

    use super::*;

    #[test]
    fn eviction_drops_the_oldest_ids_first() {
        let db = Database::builder().create_with_backend(InMemoryBackend::new()).unwrap();
        let tables = NsTables::new(&flotilla_core::Namespace::new("t").unwrap());
        let id = |seq| RequestId { client: 5, seq };
        let txn = db.begin_write().unwrap();
        {
            let mut dedup = txn.open_table(tables.dedup()).unwrap();
            let mut order = txn.open_table(tables.dedup_order()).unwrap();
            for seq in 0..10u64 {
                let result = CommandResult { output: Ok(seq.to_be_bytes().to_vec()) };
                let stored = encode_entry(&tables, &Codec::default(), &id(seq), seq, &result).unwrap();
                insert(&mut dedup, &mut order, &id(seq), seq, &stored).unwrap();
                evict(&mut dedup, &mut order, 3).unwrap();
            }
            assert_eq!(order.len().unwrap(), 3);
            assert_eq!(dedup.len().unwrap(), 3);
        }
        txn.commit().unwrap();

        let txn = db.begin_read().unwrap();
        let dedup = txn.open_table(tables.dedup()).unwrap();
        for seq in 0..7 {
            assert_eq!(lookup(&dedup, &tables, &Codec::default(), &id(seq)).unwrap(), None, "seq {seq}");
        }
        for seq in 7..10u64 {
            let got = lookup(&dedup, &tables, &Codec::default(), &id(seq)).unwrap().unwrap();
            assert_eq!(got.output, Ok(seq.to_be_bytes().to_vec()));
        }
    }
}
