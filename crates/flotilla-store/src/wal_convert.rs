//! Converting a store whose Raft logs are in tables ([`FORMAT_VERSION`](crate::FORMAT_VERSION))
//! to one whose logs are in the write-ahead log ([`FORMAT_VERSION_WAL`]): what opening a store
//! with [`LogKind::Wal`](crate::LogKind) does to a store of the older layout.
//!
//! The conversion is crash-safe by its order:
//! 1. a `wal` directory left by an interrupted conversion is removed (the store's format still
//!    says tables, so nothing in it is in use);
//! 2. every namespace's retained entries are copied, byte for byte, into a new write-ahead log
//!    (a `Purge` record first where the log was purged), in bounded batches, and the log is
//!    synced;
//! 3. one durable redb commit gives the namespaces their ids, records their purge points where
//!    the write-ahead log looks for them, deletes the log tables and stamps the new format.
//!
//! A crash before step 3 leaves a format-1 store with its tables whole (the next open removes
//! the unfinished log, or converts again); after it, a format-2 store whose log was synced
//! before the commit that points at it. Entries are copied as they are stored: a CRC frame, or
//! sealed at rest under a context that names the namespace and index, not the table, so a
//! sealed entry opens the same from the write-ahead log (`wal_sealing.rs`).

use std::path::Path;
use std::sync::Arc;

use flotilla_core::Namespace;
use redb::{Database, ReadableDatabase, TableHandle};

use crate::disk::DiskHealth;
use crate::error::{redb_error, StoreError};
use crate::format::{stamp_in, FORMAT_VERSION_WAL};
use crate::namespace_ids::NamespaceIds;
use crate::store::{read_meta, wal_error};
use crate::tables::{namespace_of_table, open_read, NsTables, META_PURGED, META_PURGED_INDEX};
use crate::wal::WriteAheadLog;
use crate::wal_record::{Record, RecordKind};

/// Most payload bytes copied in one append: the conversion holds at most this much of a log.
const COPY_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What a conversion copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Converted {
    /// Namespaces whose logs moved.
    pub(crate) namespaces: usize,
    /// Entries copied.
    pub(crate) entries: u64,
}

/// Convert the format-1 store `db` in `data_dir` to the write-ahead log, with segments of
/// `segment_bytes`; see the module doc.
pub(crate) fn convert_to_wal(
    db: &Database,
    data_dir: &Path,
    segment_bytes: u64,
    disk: &Arc<DiskHealth>,
) -> Result<Converted, StoreError> {
    let dir = data_dir.join(crate::store::WAL_DIR);
    remove_unfinished(data_dir)?;
    let namespaces = logged_namespaces(db)?;
    let ids = NamespaceIds::load(&db.begin_read().map_err(redb_error)?)?;
    let assigned = ids.propose(&namespaces)?;
    let mut log = WriteAheadLog::open(&dir, segment_bytes).map_err(|e| wal_error(&dir, e))?;
    log.wait_for_space(disk.clone());
    let mut converted = Converted::default();
    let mut purges = Vec::new();
    for (ns, id) in &assigned {
        let (purged, copied) = copy_namespace(db, &mut log, &dir, ns, *id)?;
        purges.extend(purged.map(|p| (ns.clone(), p)));
        converted.namespaces += 1;
        converted.entries += copied;
    }
    log.sync().map_err(|e| wal_error(&dir, e))?;
    crate::crash_points::hit("wal-convert-synced");
    drop(log);
    let mut txn = db.begin_write().map_err(redb_error)?;
    txn.set_durability(redb::Durability::Immediate).map_err(|e| StoreError::Redb(e.to_string()))?;
    NamespaceIds::record(&txn, &assigned).map_err(redb_error)?;
    for (ns, purged) in &purges {
        let tables = NsTables::new(ns);
        let mut meta = txn.open_table(tables.meta()).map_err(redb_error)?;
        meta.insert(META_PURGED_INDEX, purged.to_le_bytes().as_slice()).map_err(redb_error)?;
    }
    for (ns, _) in &assigned {
        txn.delete_table(NsTables::new(ns).log()).map_err(redb_error)?;
    }
    stamp_in(&txn, FORMAT_VERSION_WAL)?;
    txn.commit().map_err(redb_error)?;
    Ok(converted)
}

/// Remove a `wal` directory from `data_dir`: in a store whose format says its logs are in
/// tables, it can only be what an interrupted conversion left.
pub(crate) fn remove_unfinished(data_dir: &Path) -> Result<(), StoreError> {
    let dir = data_dir.join(crate::store::WAL_DIR);
    if !dir.exists() {
        return Ok(());
    }
    tracing::warn!(dir = %dir.display(), "removing the write-ahead log of an unfinished conversion");
    std::fs::remove_dir_all(&dir).map_err(|e| StoreError::io(format!("removing {}", dir.display()), e))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing {}", data_dir.display()), e))
}

/// The namespaces that have a log table, in name order.
fn logged_namespaces(db: &Database) -> Result<Vec<Namespace>, StoreError> {
    let txn = db.begin_read().map_err(redb_error)?;
    let mut names: Vec<Namespace> = txn
        .list_tables()
        .map_err(redb_error)?
        .filter(|t| t.name().starts_with("log/"))
        .filter_map(|t| namespace_of_table(t.name()))
        .collect();
    names.sort();
    Ok(names)
}

/// Append `ns`'s purge point and retained entries to `log` under `id`; returns the purge point
/// and how many entries were copied.
fn copy_namespace(
    db: &Database,
    log: &mut WriteAheadLog,
    dir: &Path,
    ns: &Namespace,
    id: u32,
) -> Result<(Option<u64>, u64), StoreError> {
    let tables = NsTables::new(ns);
    let txn = db.begin_read().map_err(redb_error)?;
    let purged: Option<flotilla_core::types::LogId> = read_meta(&txn, &tables, META_PURGED)?;
    let purged = purged.map(|p| p.index);
    let record = |kind, index, payload| Record { kind, namespace: id, index, term: 0, payload };
    let mut append = |records: &[Record]| match records.is_empty() {
        true => Ok(()),
        false => log.append(records).map_err(|e| wal_error(dir, e)),
    };
    if let Some(upto) = purged {
        append(&[record(RecordKind::Purge, upto, Vec::new())])?;
    }
    let Some(table) = open_read(&txn, tables.log())? else { return Ok((purged, 0)) };
    let first = purged.map_or(0, |p| p.saturating_add(1));
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut copied = 0;
    for row in table.range(first..).map_err(redb_error)? {
        let (index, value) = row.map_err(redb_error)?;
        bytes += value.value().len();
        batch.push(record(RecordKind::Entry, index.value(), value.value().to_vec()));
        if bytes >= COPY_BATCH_BYTES {
            append(&batch)?;
            copied += batch.len() as u64;
            batch.clear();
            bytes = 0;
        }
    }
    append(&batch)?;
    copied += batch.len() as u64;
    Ok((purged, copied))
}
