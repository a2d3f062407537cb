//! Encryption at rest of the Raft log entries a write-ahead log holds (`DESIGN-log.md`,
//! "Encryption at rest"). An entry's payload is what the store's codec wrote, sealed under the
//! entry's own context (namespace log and index) exactly as in a log table, so appends,
//! reads and copies need nothing of their own. Two things do:
//!
//! - [`seal_in_place`]: a plaintext store opened with a key (`crate::sealing::prepare`, while
//!   its migration record is set, so a crash runs it again). Before the store serves, every
//!   retained entry is appended again, sealed, as a `Copy` record into a fresh segment, the log
//!   is synced, and every older segment (all that held plaintext) is recycled.
//! - [`reseal_batch`]: a key rotation (`Store::reseal`), online. Entries sealed under an older
//!   key are resealed off the writer thread and handed to it as [`WalOp::Replace`], which
//!   copies each only if it still holds what was resealed (see `plan_replacements`).

use flotilla_core::Namespace;

use crate::at_rest::{sealed_key_id, AtRestCipher};
use crate::codec::unseal;
use crate::error::StoreError;
use crate::store::wal_error;
use crate::tables::NsTables;
use crate::wal_reader::WalReader;
use crate::wal_record::{Record, RecordKind};
use crate::writer_wal::{Replacement, WalSide};

/// Most payload bytes resealed or copied per batch.
const BATCH_BYTES: usize = 1024 * 1024;

/// Seal every retained entry of the log in `side` under `cipher`'s current key (entries
/// already sealed are copied as they are), then sync and recycle, so no segment holding a
/// plaintext entry is left; returns how many entries were copied. Run again after a crash, it
/// does the same from the start.
pub(crate) fn seal_in_place(side: &mut WalSide, cipher: &AtRestCipher) -> Result<u64, StoreError> {
    let dir = side.log.dir().to_path_buf();
    side.log.start_new_segment().map_err(|e| wal_error(&dir, e))?;
    let reader = side.log.reader();
    let mut copied = 0u64;
    for (ns, id) in side.ids.all() {
        let Some((first, last)) = reader.bounds(id) else { continue };
        let tables = NsTables::new(&ns);
        let mut batch = Vec::new();
        let mut bytes = 0;
        for index in first..=last {
            let raw = read_entry(&reader, &tables, id, index)?;
            let payload = sealed_entry(cipher, &tables, index, raw)?;
            bytes += payload.len();
            batch.push(Record { kind: RecordKind::Copy, namespace: id, index, term: 0, payload });
            if bytes >= BATCH_BYTES || index == last {
                side.log.append(&batch).map_err(|e| wal_error(&dir, e))?;
                copied += batch.len() as u64;
                batch.clear();
                bytes = 0;
            }
        }
    }
    side.log.sync().map_err(|e| wal_error(&dir, e))?;
    crate::crash_points::hit("wal-seal-copied");
    side.log.recycle().map_err(|e| wal_error(&dir, e))?;
    Ok(copied)
}

/// `raw` (the stored entry at `index`) sealed under `cipher`'s current key: as it is when it
/// already opens, else sealed from its plaintext (CRC-framed) form.
fn sealed_entry(cipher: &AtRestCipher, tables: &NsTables, index: u64, raw: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    let context = tables.log_context(index);
    if cipher.open(&context, &raw).is_ok() {
        return Ok(raw);
    }
    let plain = unseal(&raw, &|| tables.log_what(index))?;
    cipher.seal(&context, plain)
}

/// The retained entries of `ns` (log id `id`) from `from` on that are sealed under another key
/// than `cipher`'s current one, resealed, within [`BATCH_BYTES`]; with how many entries were
/// looked at and where the next batch starts (`None`: the log's end was reached).
pub(crate) fn reseal_batch(
    reader: &WalReader,
    cipher: &AtRestCipher,
    ns: &Namespace,
    id: u32,
    from: u64,
) -> Result<(Vec<Replacement>, u64, Option<u64>), StoreError> {
    let Some((first, last)) = reader.bounds(id) else { return Ok((Vec::new(), 0, None)) };
    let tables = NsTables::new(ns);
    let current = cipher.current_key_id();
    let mut replacements = Vec::new();
    let mut bytes = 0;
    let mut checked = 0;
    for index in from.max(first)..=last {
        // Purged since the bounds were read: nothing left to reseal there.
        let Some(raw) = reader.read(id, index).map_err(|e| StoreError::io(tables.log_what(index), e))? else {
            continue;
        };
        checked += 1;
        if sealed_key_id(&raw)? == current {
            continue;
        }
        let context = tables.log_context(index);
        let plain = cipher.open(&context, &raw)?;
        let new = cipher.seal(&context, &plain)?;
        bytes += new.len();
        replacements.push(Replacement { index, old: raw, new });
        if bytes >= BATCH_BYTES && index < last {
            return Ok((replacements, checked, Some(index + 1)));
        }
    }
    Ok((replacements, checked, None))
}

fn read_entry(reader: &WalReader, tables: &NsTables, id: u32, index: u64) -> Result<Vec<u8>, StoreError> {
    reader
        .read(id, index)
        .map_err(|e| StoreError::io(tables.log_what(index), e))?
        .ok_or_else(|| StoreError::corrupt(format!("{}: retained but not found", tables.log_what(index))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flotilla_core::types::{Entry, LogId, TypeConfig};
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
    use openraft::vote::RaftLeaderIdExt;
    use openraft::{EntryPayload, RaftTypeConfig};

    use super::*;
    use crate::at_rest::AtRestKey;
    use crate::writer::Wait;
    use crate::writer_wal::WalOp;
    use crate::{LogKind, Store, StoreOptions};

    fn log_id(term: u64, index: u64) -> LogId {
        let node = libp2p_identity::Keypair::ed25519_from_bytes([1; 32]).expect("key").public().to_peer_id();
        LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(term, node), index)
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
    }

    fn open(dir: &std::path::Path, keys: &[u8], current: u8) -> Arc<Store> {
        let keys = keys.iter().map(|&n| AtRestKey { id: [n; 8], key: [n; 32] });
        let cipher = Arc::new(AtRestCipher::new(keys, [current; 8]).expect("cipher"));
        let options = StoreOptions { at_rest: Some(cipher), log: LogKind::Wal, ..StoreOptions::default() };
        Store::open_with(dir, options).expect("store opens")
    }

    /// Replacements resealed before a truncation and handed to the writer after it: the
    /// truncated entries stay gone and the new term's entries stay, whatever was resealed.
    #[tokio::test]
    async fn a_replacement_never_brings_back_what_a_truncation_removed() {
        let dir = tempfile::tempdir().unwrap();
        let ns = Namespace::new("alpha").unwrap();
        let store = open(dir.path(), &[1], 1);
        let mut log = store.log_store(&ns).unwrap();
        log.blocking_append((1..=10).map(|i| blank(1, i)).collect::<Vec<_>>()).await.unwrap();
        store.shutdown();
        drop((log, store));

        let store = open(dir.path(), &[1, 2], 2);
        let wal = store.wal.as_ref().expect("a write-ahead log store");
        let id = wal.ids.get(&ns).expect("an id");
        let cipher = store.codec.cipher().expect("sealed").clone();
        let (replacements, checked, next) = reseal_batch(&wal.reader, &cipher, &ns, id, 0).unwrap();
        assert_eq!((replacements.len(), checked, next), (10, 10, None));

        let mut log = store.log_store(&ns).unwrap();
        log.truncate_after(Some(log_id(1, 5))).await.unwrap();
        log.blocking_append(vec![blank(2, 6), blank(2, 7)]).await.unwrap();
        store.writer.write_log(&ns, WalOp::Replace(replacements), Wait::Durable, None).await.unwrap();

        let expected: Vec<_> = (1..=5).map(|i| blank(1, i)).chain([blank(2, 6), blank(2, 7)]).collect();
        assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), expected);
        // Entries 1-5 were resealed under the new key; 6 and 7 were written under it.
        let (left, _, _) = reseal_batch(&wal.reader, &cipher, &ns, id, 0).unwrap();
        assert!(left.is_empty(), "{} entries still under the old key", left.len());
        // The rest of the rotation (tables, then forgetting the old key) lets it go.
        let report = store.reseal().await.unwrap();
        assert_eq!(report.retired_key_ids, vec![[1; 8]]);
        store.shutdown();
        drop((log, store));

        let store = open(dir.path(), &[2], 2);
        let mut log = store.log_store(&ns).unwrap();
        assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), expected, "after a reopen, with the new key only");
    }
}
