//! Request deduplication: the result of every command that carries a [`RequestId`] is kept, so a
//! retried command returns the first result instead of being applied twice.
//!
//! The table is bounded: at most [`MAX_DEDUP_ENTRIES`] ids per namespace, the oldest evicted
//! first (insertion order is kept in `dedup-order/<ns>`). A retry of a write older than the last
//! 100 000 deduplicated writes of its namespace is therefore applied again; clients retry
//! within seconds, far inside that window.
//!
//! Whether an entry is a duplicate must be a pure function of the log prefix before it, or
//! replicas diverge: openraft groups committed entries into apply batches by timing, and a
//! restart re-applies with other batch sizes. So the window is defined per entry, by insertion
//! order numbers, never by the table as it was at the start of a batch: the id inserted with
//! order `o` is remembered while fewer than [`MAX_DEDUP_ENTRIES`] ids were inserted after it,
//! i.e. while `next - o <= MAX_DEDUP_ENTRIES` where `next` is the order the next new id gets
//! ([`is_live`]). A row still in the table but outside that window (its eviction waits for the
//! end of the batch) counts as absent, and the id is applied again under a new order number,
//! its old order row removed. Eviction at the end of each batch drops exactly the rows outside
//! the window ([`evict`]). The result: every batching of the same entries leaves the same
//! tables and answers the same, and snapshots, which carry both tables and the counter, keep
//! replicas identical.

use flotilla_core::{CommandResult, RequestId};
use redb::{ReadableTable, Table};

use crate::codec::{decode_bounded, Codec};
use crate::error::{redb_error, StoreError};
use crate::snapshot::ORDER_LEN;
use crate::tables::{request_id_key, NsTables};

/// Most request ids remembered per namespace.
pub(crate) const MAX_DEDUP_ENTRIES: u64 = 100_000;

/// Whether the id inserted with order number `order` is still remembered when the next new id
/// would get `next`: fewer than `max` ids were inserted after it.
pub(crate) fn is_live(order: u64, next: u64, max: u64) -> bool {
    next.saturating_sub(order) <= max
}

/// The stored insertion order and result of `id`, if its row is in the table (check
/// [`is_live`]: a row outside the window may still be there until the end of the batch).
pub(crate) fn lookup<T>(
    table: &T,
    tables: &NsTables,
    codec: &Codec,
    id: &RequestId,
) -> Result<Option<(u64, CommandResult)>, StoreError>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let key = request_id_key(id);
    let Some(value) = table.get(key.as_slice()).map_err(redb_error)? else {
        return Ok(None);
    };
    let what = || format!("namespace {:?}, dedup entry {id}", tables.ns().as_str());
    let payload = codec.unprotect(&tables.dedup_context(&key), value.value(), &what)?;
    let (order, result) = match (payload.get(..ORDER_LEN), payload.get(ORDER_LEN..)) {
        (Some(order), Some(result)) => (order, result),
        _ => return Err(StoreError::corrupt(format!("{}: too short", what()))),
    };
    let order = u64::from_be_bytes(order.try_into().map_err(|_| StoreError::corrupt(what()))?);
    Ok(Some((order, decode_bounded(result, &what)?)))
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

/// Insert one entry (already encoded with [`encode_entry`] for `order`). `replaces` is the
/// order number of the id's earlier row, if it still has one (evicted from the window but not
/// yet from the table): its order row goes, so that evicting it later cannot remove this one.
pub(crate) fn insert(
    dedup: &mut Table<'_, &'static [u8], &'static [u8]>,
    order_table: &mut Table<'_, u64, &'static [u8]>,
    id: &RequestId,
    order: u64,
    stored: &[u8],
    replaces: Option<u64>,
) -> Result<(), redb::Error> {
    let key = request_id_key(id);
    if let Some(old) = replaces {
        order_table.remove(old)?;
    }
    dedup.insert(key.as_slice(), stored)?;
    order_table.insert(order, key.as_slice())?;
    Ok(())
}

/// Drop every entry outside the window ([`is_live`]) of `next` and `max` (in production
/// [`MAX_DEDUP_ENTRIES`]), oldest first.
pub(crate) fn evict(
    dedup: &mut Table<'_, &'static [u8], &'static [u8]>,
    order_table: &mut Table<'_, u64, &'static [u8]>,
    next: u64,
    max: u64,
) -> Result<u64, redb::Error> {
    let mut evicted = 0;
    loop {
        let Some(order) = order_table.first()?.map(|(order, _)| order.value()) else { break };
        if is_live(order, next, max) {
            break;
        }
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
    use redb::{Database, ReadableDatabase, ReadableTableMetadata};

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
                insert(&mut dedup, &mut order, &id(seq), seq, &stored, None).unwrap();
                evict(&mut dedup, &mut order, seq + 1, 3).unwrap();
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
            let (order, got) = lookup(&dedup, &tables, &Codec::default(), &id(seq)).unwrap().unwrap();
            assert_eq!(order, seq);
            assert_eq!(got.output, Ok(seq.to_be_bytes().to_vec()));
        }
    }
}
