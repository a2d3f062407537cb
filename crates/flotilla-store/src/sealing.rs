//! The at-rest state of a store: the record saying it is sealed and with which keys, the
//! checks made when it opens, sealing a plaintext store in place, and key rotation
//! ([`Store::reseal`]).
//!
//! The record lives in `store/meta` (CRC-framed, plaintext: it holds key ids and a check value
//! per key, no data). Its presence means every protected record (log entries, kv values, dedup
//! records, snapshot files) is sealed; its key list is every key id such a record may be sealed
//! under, so it is the set of keys the data directory still needs.
//!
//! Turning encryption on for an existing plaintext store happens inside [`prepare`], before
//! the store serves anything: a stored kv value carries no marker saying whether it is sealed,
//! so plaintext and sealed records can only be told apart by position while nothing else
//! writes. The conversion runs in bounded transactions and records how far it got, so a crash
//! part-way resumes where it stopped. Rotation, by contrast, runs online: a sealed record names
//! its key, so [`Store::reseal`] can rewrite old-key records through the writer, in batches,
//! while the node serves.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{
    AccessGuard, Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::at_rest::{key_id_hex, sealed_key_id, AtRestCipher, KEY_ID_LEN};
use crate::codec::{decode_sealed, encode_sealed, unseal, Codec};
use crate::error::{redb_error, StoreError};
use crate::snapshot_file::SnapshotFiles;
use crate::store::Store;
use crate::tables::{open_read, record_context, PROTECTED_PREFIXES, STORE_META, STORE_META_AT_REST};
use crate::writer::{JobFailure, Wait};
use crate::writer_wal::{WalOp, WalSide};

/// Most records read, resealed and written per batch.
const BATCH_RECORDS: usize = 512;
/// Stored bytes after which a batch stops growing (a single larger record is a batch alone).
const BATCH_BYTES: usize = 1024 * 1024;
/// Sealing context of the per-key check values.
const CHECK_CONTEXT: &[u8] = b"store/meta\0at_rest key check";
/// What a check value seals.
const CHECK_PLAIN: &[u8] = b"flotilla at-rest key check v1";

/// What `store/meta` records about encryption at rest. Absent in a plaintext store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AtRestRecord {
    /// Every key id records may be sealed under, each with a value sealed under it, so a wrong
    /// key given under a known id is refused when the store opens, not at the first read.
    keys: Vec<KeyCheck>,
    /// Set while a plaintext store is being sealed in place: how far the conversion got.
    migration: Option<Position>,
}

/// One key id and its check value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyCheck {
    id: [u8; KEY_ID_LEN],
    check: Vec<u8>,
}

/// A point in the sealing of a plaintext store: every protected table whose name sorts before
/// `table` is sealed, and so is every record of `table` up to the key `after`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Position {
    table: String,
    after: Option<Vec<u8>>,
}

impl AtRestRecord {
    fn ids(&self) -> Vec<[u8; KEY_ID_LEN]> {
        self.keys.iter().map(|k| k.id).collect()
    }
}

/// What [`Store::reseal`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// The key every record is sealed under now.
    pub current_key_id: [u8; KEY_ID_LEN],
    /// Log entries, kv values and dedup records examined.
    pub records_checked: u64,
    /// Records rewritten under the current key.
    pub records_resealed: u64,
    /// Snapshot files rewritten under the current key.
    pub snapshots_resealed: u64,
    /// The key ids the data directory needs after the reseal: only the current one.
    pub key_ids_in_use: Vec<[u8; KEY_ID_LEN]>,
    /// Key ids the data directory needed before and no longer does: they can be retired.
    pub retired_key_ids: Vec<[u8; KEY_ID_LEN]>,
}

/// Decide how the store in `db` (and `data_dir`'s snapshot files) is protected, given the
/// cipher it is opened with, before anything else reads or writes it:
///
/// - plaintext store, no cipher: plaintext;
/// - sealed store, no cipher: [`StoreError::AtRestRequired`];
/// - sealed store, cipher: every recorded key must be in the cipher
///   ([`StoreError::AtRestKeyMissing`]) and be the same key ([`StoreError::AtRestWrongKey`]);
///   a new current key is recorded before it seals anything;
/// - plaintext store, cipher: every record and snapshot file is sealed in place now (an
///   unfinished conversion is resumed).
pub(crate) fn prepare(
    db: &mut Database,
    data_dir: &Path,
    cipher: Option<Arc<AtRestCipher>>,
    wal: Option<&mut WalSide>,
) -> Result<Codec, StoreError> {
    let record = read_record(&db.begin_read().map_err(redb_error)?)?;
    let (record, cipher) = match (record, cipher) {
        (None, None) => return Ok(Codec::default()),
        (Some(record), None) => return Err(StoreError::AtRestRequired { key_ids: record.ids() }),
        (record, Some(cipher)) => (record, cipher),
    };
    let mut record = record.unwrap_or_else(|| {
        tracing::info!(path = %data_dir.display(), "encrypting the store at rest: sealing every record in place");
        AtRestRecord { keys: Vec::new(), migration: Some(Position::default()) }
    });
    verify_keys(&record, &cipher)?;
    let current = cipher.current_key_id();
    if !record.keys.iter().any(|k| k.id == current) {
        record.keys.push(KeyCheck { id: current, check: cipher.seal(CHECK_CONTEXT, CHECK_PLAIN)? });
        commit_direct(db, |txn| write_record(txn, &record))?;
        tracing::info!(key = %key_id_hex(&current), "new current at-rest key recorded");
    }
    let codec = Codec::new(Some(cipher));
    if record.migration.is_some() {
        seal_in_place(db, data_dir, &codec, &mut record, wal)?;
        compact(db);
    }
    Ok(codec)
}

/// Compact the file after sealing it in place, so the pages that held the plaintext records
/// are released and the file shrinks over them. Best effort: the store is sealed either way.
fn compact(db: &mut Database) {
    loop {
        match db.compact() {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(error = %e, "compacting the store after sealing it failed");
                break;
            }
        }
    }
}

/// Every recorded key must be held by `cipher`, and be the same key.
fn verify_keys(record: &AtRestRecord, cipher: &AtRestCipher) -> Result<(), StoreError> {
    for k in &record.keys {
        if !cipher.has_key(&k.id) {
            return Err(StoreError::AtRestKeyMissing { id: k.id });
        }
        match cipher.open(CHECK_CONTEXT, &k.check) {
            Ok(plain) if plain == CHECK_PLAIN => {}
            Ok(_) | Err(StoreError::AtRestCorrupt(_)) => return Err(StoreError::AtRestWrongKey { id: k.id }),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Seal every plaintext record and snapshot file, resuming from `record.migration`, then
/// record that the conversion is done. The entries of a write-ahead log are sealed first, all
/// of them each time (`crate::wal_sealing`): the record says nothing of how far that got.
fn seal_in_place(
    db: &Database,
    data_dir: &Path,
    codec: &Codec,
    record: &mut AtRestRecord,
    wal: Option<&mut WalSide>,
) -> Result<(), StoreError> {
    let cipher = codec.cipher().ok_or_else(|| StoreError::Invalid("sealing in place needs a cipher".into()))?;
    let mut sealed = match wal {
        Some(wal) => crate::wal_sealing::seal_in_place(wal, cipher)?,
        None => 0,
    };
    while let Some(n) = seal_next_batch(db, cipher, record)? {
        sealed += n;
    }
    // Snapshot files say whether they are sealed (their magic), so no position is needed.
    let files = SnapshotFiles::new(data_dir, codec.clone());
    for ns in files.namespaces()? {
        files.reseal(&ns, true)?;
    }
    record.migration = None;
    commit_direct(db, |txn| write_record(txn, record))?;
    tracing::info!(records = sealed, "store sealed at rest");
    Ok(())
}

/// Seal the next batch of plaintext records after `record.migration`, and record the new
/// position in the same transaction. Returns how many were sealed, `None` once none is left.
fn seal_next_batch(db: &Database, cipher: &AtRestCipher, record: &mut AtRestRecord) -> Result<Option<u64>, StoreError> {
    let position = record.migration.clone().unwrap_or_default();
    let txn = db.begin_read().map_err(redb_error)?;
    for table in protected_tables(&txn)?.into_iter().filter(|t| *t >= position.table) {
        let after = if table == position.table { position.after.as_deref() } else { None };
        let rows = read_batch(&txn, &table, after)?;
        let Some(last) = rows.last().map(|r| r.key.clone()) else { continue };
        let rewrites = seal_plain_rows(cipher, &table, rows)?;
        record.migration = Some(Position { table: table.clone(), after: Some(last) });
        let sealed = commit_direct(db, |txn| {
            let n = apply_rewrites(txn, &table, &rewrites)?;
            write_record(txn, record)?;
            Ok(n)
        })?;
        return Ok(Some(sealed));
    }
    Ok(None)
}

/// One stored record: its key as bytes (log indexes big-endian) and its stored value.
struct Row {
    key: Vec<u8>,
    value: Vec<u8>,
}

/// A record to replace, if it still holds `old`.
struct Rewrite {
    key: Vec<u8>,
    old: Vec<u8>,
    new: Vec<u8>,
}

/// Seal plaintext rows of `table` (CRC-framed records, or raw kv values).
fn seal_plain_rows(cipher: &AtRestCipher, table: &str, rows: Vec<Row>) -> Result<Vec<Rewrite>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let what = || format!("{table}, record {}", hex(&row.key));
            let plain = if table.starts_with("kv/") {
                Cow::Borrowed(&row.value[..])
            } else {
                unseal(&row.value, &what)?.into()
            };
            let new = cipher.seal(&record_context(table, &row.key), &plain)?;
            Ok(Rewrite { key: row.key, old: row.value, new })
        })
        .collect()
}

/// Reseal the rows of `table` that are not under the current key.
fn reseal_rows(cipher: &AtRestCipher, table: &str, rows: Vec<Row>) -> Result<Vec<Rewrite>, StoreError> {
    let current = cipher.current_key_id();
    let mut out = Vec::new();
    for row in rows {
        let what = || format!("{table}, record {}", hex(&row.key));
        let id = sealed_key_id(&row.value).map_err(|e| in_record(e, &what))?;
        if id == current {
            continue;
        }
        let context = record_context(table, &row.key);
        let plain = cipher.open(&context, &row.value).map_err(|e| in_record(e, &what))?;
        out.push(Rewrite { new: cipher.seal(&context, &plain)?, key: row.key, old: row.value });
    }
    Ok(out)
}

/// Name the record an authentication failure is about.
fn in_record(e: StoreError, what: &dyn Fn() -> String) -> StoreError {
    match e {
        StoreError::AtRestCorrupt(msg) => StoreError::AtRestCorrupt(format!("{}: {msg}", what())),
        other => other,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The names of every table whose values are protected, sorted.
fn protected_tables(txn: &ReadTransaction) -> Result<Vec<String>, StoreError> {
    let mut names: Vec<String> = txn
        .list_tables()
        .map_err(redb_error)?
        .map(|t| redb::TableHandle::name(&t).to_string())
        .filter(|name| PROTECTED_PREFIXES.iter().any(|p| name.starts_with(p)))
        .collect();
    names.sort();
    Ok(names)
}

/// Whether `table` is keyed by log index (u64) rather than bytes.
fn is_log(table: &str) -> bool {
    table.starts_with("log/")
}

fn log_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] =
        key.try_into().map_err(|_| StoreError::corrupt(format!("log position of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The next batch of `table`'s records after the key `after` (from the start with `None`).
fn read_batch(txn: &ReadTransaction, table: &str, after: Option<&[u8]>) -> Result<Vec<Row>, StoreError> {
    if is_log(table) {
        let Some(t) = open_read(txn, TableDefinition::<u64, &[u8]>::new(table))? else {
            return Ok(Vec::new());
        };
        let start = after.map(log_index).transpose()?.map_or(Bound::Unbounded, Bound::Excluded);
        take_batch(t.range::<u64>((start, Bound::Unbounded)).map_err(redb_error)?, |k| k.value().to_be_bytes().to_vec())
    } else {
        let Some(t) = open_read(txn, TableDefinition::<&[u8], &[u8]>::new(table))? else {
            return Ok(Vec::new());
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        take_batch(t.range::<&[u8]>((start, Bound::Unbounded)).map_err(redb_error)?, |k| k.value().to_vec())
    }
}

/// Rows from `range` up to the batch bounds.
fn take_batch<K: redb::Key + 'static>(
    range: redb::Range<'_, K, &'static [u8]>,
    key_bytes: fn(&AccessGuard<'_, K>) -> Vec<u8>,
) -> Result<Vec<Row>, StoreError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in range {
        let (key, value) = item.map_err(redb_error)?;
        let value = value.value().to_vec();
        bytes = bytes.saturating_add(value.len());
        out.push(Row { key: key_bytes(&key), value });
        if out.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES {
            break;
        }
    }
    Ok(out)
}

/// Write every rewrite whose record still holds the value it was computed from (a record
/// changed since was written under the current key, a removed one needs nothing). Returns
/// how many were written.
fn apply_rewrites(txn: &WriteTransaction, table: &str, rewrites: &[Rewrite]) -> Result<u64, StoreError> {
    let mut written = 0;
    if is_log(table) {
        let mut t = txn.open_table(TableDefinition::<u64, &[u8]>::new(table)).map_err(redb_error)?;
        for r in rewrites {
            let index = log_index(&r.key)?;
            let unchanged = t.get(index).map_err(redb_error)?.is_some_and(|v| v.value() == r.old.as_slice());
            if unchanged {
                t.insert(index, r.new.as_slice()).map_err(redb_error)?;
                written += 1;
            }
        }
    } else {
        let mut t = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(table)).map_err(redb_error)?;
        for r in rewrites {
            let unchanged = t.get(r.key.as_slice()).map_err(redb_error)?.is_some_and(|v| v.value() == r.old.as_slice());
            if unchanged {
                t.insert(r.key.as_slice(), r.new.as_slice()).map_err(redb_error)?;
                written += 1;
            }
        }
    }
    Ok(written)
}

/// The at-rest record, if the store is sealed.
fn read_record(txn: &ReadTransaction) -> Result<Option<AtRestRecord>, StoreError> {
    let Some(meta) = open_read(txn, STORE_META)? else {
        return Ok(None);
    };
    let Some(value) = meta.get(STORE_META_AT_REST).map_err(redb_error)? else {
        return Ok(None);
    };
    decode_sealed(value.value(), &|| "store/meta at-rest record".to_string()).map(Some)
}

fn write_record(txn: &WriteTransaction, record: &AtRestRecord) -> Result<(), StoreError> {
    let bytes = encode_sealed(record)?;
    let mut meta = txn.open_table(STORE_META).map_err(redb_error)?;
    meta.insert(STORE_META_AT_REST, bytes.as_slice()).map_err(redb_error)?;
    Ok(())
}

/// Run `work` in its own durable transaction, outside the writer (only while the store opens,
/// before the writer exists).
fn commit_direct<T>(
    db: &Database,
    work: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut txn = db.begin_write().map_err(redb_error)?;
    txn.set_durability(Durability::Immediate).map_err(|e| StoreError::Redb(e.to_string()))?;
    let out = work(&txn)?;
    txn.commit().map_err(redb_error)?;
    Ok(out)
}

impl Store {
    /// Rewrite every record and snapshot file not sealed under the current key, in bounded
    /// batches through the writer while the store keeps serving, then record that no other
    /// key is needed: afterwards the keys in [`ResealReport::retired_key_ids`] can be dropped
    /// from the cipher. Safe to run again after a failure or a crash (it starts over).
    ///
    /// Fails with [`StoreError::Invalid`] on a plaintext store, and stops at the first record
    /// that cannot be opened ([`StoreError::AtRestCorrupt`], [`StoreError::AtRestKeyMissing`]).
    pub async fn reseal(&self) -> Result<ResealReport, StoreError> {
        let cipher = self
            .codec
            .cipher()
            .cloned()
            .ok_or_else(|| StoreError::Invalid("the store is not encrypted at rest; nothing to reseal".into()))?;
        let before = self.at_rest_key_ids_in_use()?;
        let mut report = ResealReport { current_key_id: cipher.current_key_id(), ..ResealReport::default() };
        for table in protected_tables(&self.read_txn()?)? {
            self.reseal_table(&cipher, &table, &mut report).await?;
        }
        self.reseal_wal(&cipher, &mut report).await?;
        for ns in self.snapshots.namespaces()? {
            let lock = self.snapshot_lock(&ns);
            let _saving = lock.lock().await;
            let files = self.snapshots.clone();
            let rewritten = tokio::task::spawn_blocking(move || files.reseal(&ns, false))
                .await
                .map_err(|e| StoreError::Redb(format!("snapshot reseal task failed: {e}")))??;
            report.snapshots_resealed += u64::from(rewritten);
        }
        // Every record is under the current key now, and every later write uses it.
        self.forget_other_keys(cipher.current_key_id()).await?;
        report.key_ids_in_use = self.at_rest_key_ids_in_use()?;
        let in_use: BTreeSet<_> = report.key_ids_in_use.iter().collect();
        report.retired_key_ids = before.into_iter().filter(|id| !in_use.contains(id)).collect();
        tracing::info!(?report, "store resealed");
        Ok(report)
    }

    /// The ids of the keys records of this store may be sealed under (empty for a plaintext
    /// store). A key not listed is not needed to read this data directory.
    pub fn at_rest_key_ids_in_use(&self) -> Result<Vec<[u8; KEY_ID_LEN]>, StoreError> {
        Ok(read_record(&self.read_txn()?)?.map(|r| r.ids()).unwrap_or_default())
    }

    /// Reseal `table` batch by batch: read and reseal outside the writer, so the writer thread
    /// only compares and copies bytes.
    async fn reseal_table(
        &self,
        cipher: &AtRestCipher,
        table: &str,
        report: &mut ResealReport,
    ) -> Result<(), StoreError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = read_batch(&self.read_txn()?, table, after.as_deref())?;
            let Some(last) = rows.last().map(|r| r.key.clone()) else { return Ok(()) };
            report.records_checked += rows.len() as u64;
            let rewrites = reseal_rows(cipher, table, rows)?;
            if !rewrites.is_empty() {
                let cost = rewrites.iter().map(|r| r.new.len()).sum();
                let job_table = table.to_string();
                report.records_resealed += self
                    .writer
                    .execute(cost, move |txn: &WriteTransaction| {
                        apply_rewrites(txn, &job_table, &rewrites).map_err(JobFailure::dirty)
                    })
                    .await?;
            }
            after = Some(last);
        }
    }

    /// Reseal the entries a write-ahead log holds under older keys, batch by batch, through
    /// the writer (see `crate::wal_sealing`); nothing to do for logs in tables.
    async fn reseal_wal(&self, cipher: &AtRestCipher, report: &mut ResealReport) -> Result<(), StoreError> {
        let Some(wal) = &self.wal else { return Ok(()) };
        for (ns, id) in wal.ids.all() {
            let mut from = Some(0);
            while let Some(start) = from {
                let (replacements, checked, next) =
                    crate::wal_sealing::reseal_batch(&wal.reader, cipher, &ns, id, start)?;
                report.records_checked += checked;
                if !replacements.is_empty() {
                    report.records_resealed += replacements.len() as u64;
                    let op = WalOp::Replace(replacements);
                    self.writer.write_log(&ns, op, Wait::Durable, None).await?;
                }
                from = next;
            }
        }
        Ok(())
    }

    /// Keep only `current` in the at-rest record.
    async fn forget_other_keys(&self, current: [u8; KEY_ID_LEN]) -> Result<(), StoreError> {
        self.writer
            .execute(0, move |txn: &WriteTransaction| {
                let record = {
                    let meta = txn.open_table(STORE_META).map_err(crate::writer::clean)?;
                    let value = meta.get(STORE_META_AT_REST).map_err(crate::writer::clean)?;
                    let value =
                        value.ok_or_else(|| JobFailure::clean(StoreError::Invalid("no at-rest record".into())))?;
                    decode_sealed::<AtRestRecord>(value.value(), &|| "store/meta at-rest record".to_string())
                        .map_err(JobFailure::clean)?
                };
                let keys = record.keys.into_iter().filter(|k| k.id == current).collect();
                write_record(txn, &AtRestRecord { keys, migration: record.migration }).map_err(JobFailure::dirty)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use crate::at_rest::AtRestKey;
    use crate::codec::seal;

    use super::*;

    fn kv_value(i: u32) -> Vec<u8> {
        format!("value {i}").into_bytes()
    }

    #[test]
    fn an_interrupted_sealing_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::create(dir.path().join("test.redb")).unwrap();
        let kv = TableDefinition::<&[u8], &[u8]>::new("kv/a");
        let dedup = TableDefinition::<&[u8], &[u8]>::new("dedup/a");
        commit_direct(&db, |txn| {
            let mut t = txn.open_table(kv).unwrap();
            for i in 0..600u32 {
                t.insert(i.to_be_bytes().as_slice(), kv_value(i).as_slice()).unwrap();
            }
            let mut t = txn.open_table(dedup).unwrap();
            t.insert(b"id".as_slice(), seal(b"result").as_slice()).unwrap();
            Ok(())
        })
        .unwrap();
        let cipher = Arc::new(AtRestCipher::new([AtRestKey { id: [3; 8], key: [4; 32] }], [3; 8]).unwrap());

        // Start as `prepare` does, seal two batches, then "crash".
        let check = cipher.seal(CHECK_CONTEXT, CHECK_PLAIN).unwrap();
        let mut record =
            AtRestRecord { keys: vec![KeyCheck { id: [3; 8], check }], migration: Some(Position::default()) };
        commit_direct(&db, |txn| write_record(txn, &record)).unwrap();
        assert_eq!(seal_next_batch(&db, &cipher, &mut record).unwrap(), Some(1), "dedup/a sorts first");
        assert_eq!(seal_next_batch(&db, &cipher, &mut record).unwrap(), Some(BATCH_RECORDS as u64));

        // Reopening resumes: every record is sealed exactly once.
        prepare(&mut db, dir.path(), Some(cipher.clone()), None).unwrap();
        let txn = db.begin_read().unwrap();
        assert!(read_record(&txn).unwrap().unwrap().migration.is_none());
        let t = txn.open_table(kv).unwrap();
        for i in 0..600u32 {
            let key = i.to_be_bytes();
            let stored = t.get(key.as_slice()).unwrap().unwrap();
            let plain = cipher.open(&record_context("kv/a", &key), stored.value()).unwrap();
            assert_eq!(plain, kv_value(i), "record {i}");
        }
        let t = txn.open_table(dedup).unwrap();
        let stored = t.get(b"id".as_slice()).unwrap().unwrap();
        assert_eq!(cipher.open(&record_context("dedup/a", b"id"), stored.value()).unwrap(), b"result");
    }
}
