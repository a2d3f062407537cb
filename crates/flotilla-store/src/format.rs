//! The store's on-disk format version, checked before anything else touches the file.
//!
//! `store/meta` holds `format`: the version of the layout of every table (log, meta, dedup,
//! state) and of the built-in KV state machine's rows (`flotilla_core::kv`, layout in
//! `kv/layout.rs`). A change to any of them that an older binary would misread bumps
//! [`FORMAT_VERSION`], adds a migration step here (from the previous version, crash-safe: one
//! durable transaction, or idempotent steps), and refreshes the fixture that
//! `tests/format_fixture.rs` opens, so a change cannot slip through unnoticed.
//!
//! Two versions are current: [`FORMAT_VERSION`] keeps every namespace's Raft log in a `log`
//! table, [`FORMAT_VERSION_WAL`] keeps them in the node's write-ahead log (`DESIGN-log.md`)
//! and has no log tables. Their tables and rows are otherwise the same (a backup's rows are
//! [`FORMAT_VERSION`]'s in both). A build from before the write-ahead log refuses a
//! [`FORMAT_VERSION_WAL`] store as too new, instead of opening it as one without a log.
//!
//! Opening decides, before sealing, snapshots or the writer touch the file:
//! - no record and no table other than `store/meta`: a fresh store, stamped with the version
//!   of the layout asked for;
//! - a current version: opened, with the layout it names (the store then converts a
//!   [`FORMAT_VERSION`] store asked for the write-ahead log: `wal_convert.rs`, which ends by
//!   stamping [`FORMAT_VERSION_WAL`] with [`stamp_in`]);
//! - a newer version: refused, naming both ([`StoreError::FormatTooNew`]);
//! - an older version with a migration: migrated in place; without one, refused
//!   ([`StoreError::FormatTooOld`]). Tables but no record is version 0: a store written before
//!   format versions existed, whose KV rows may predate revisions, so it cannot be read safely.

use redb::{Database, ReadableDatabase, TableHandle};

use crate::codec::{decode_sealed, encode_sealed};
use crate::error::{redb_error, StoreError};
use crate::tables::{open_read, STORE_META};

/// The format this build writes and reads.
///
/// 1: the first versioned format: per-namespace `log`, `meta`, `kv`, `dedup` and `dedup order`
/// tables; KV rows with revisions (current rows, event rows, lease and queue rows).
pub const FORMAT_VERSION: u32 = 1;

/// The format of a store whose Raft logs are in the write-ahead log: [`FORMAT_VERSION`]'s
/// tables without the `log` tables, and a `wal` directory next to the file.
pub const FORMAT_VERSION_WAL: u32 = 2;

/// Where a store keeps its namespaces' Raft logs, as its format says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogLayout {
    /// One redb table per namespace ([`FORMAT_VERSION`]).
    Tables,
    /// The node's write-ahead log ([`FORMAT_VERSION_WAL`]).
    Wal,
}

/// Key of the format record in `store/meta`.
const STORE_META_FORMAT: &str = "format";

/// What the file says about its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// No table yet: a new file.
    Fresh,
    /// Tables, and this version (0: tables without a record).
    Version(u32),
}

/// Check the format of `db`, stamping a fresh store with the version of `fresh`; returns the
/// layout the store has, and refuses what this build cannot read.
pub(crate) fn check_or_stamp(db: &Database, fresh: LogLayout) -> Result<LogLayout, StoreError> {
    match found(db)? {
        Found::Fresh => {
            stamp(db, if fresh == LogLayout::Wal { FORMAT_VERSION_WAL } else { FORMAT_VERSION })?;
            Ok(fresh)
        }
        Found::Version(FORMAT_VERSION) => Ok(LogLayout::Tables),
        Found::Version(FORMAT_VERSION_WAL) => Ok(LogLayout::Wal),
        Found::Version(v) if v > FORMAT_VERSION_WAL => {
            Err(StoreError::FormatTooNew { found: v, supported: FORMAT_VERSION_WAL })
        }
        // No migration exists yet: the first one goes here, one step per older version, each
        // ending with the new record in the same durable transaction.
        Found::Version(v) => Err(StoreError::FormatTooOld { found: v, supported: FORMAT_VERSION }),
    }
}

/// The format version recorded in `db`, `None` for a fresh file.
#[cfg(test)]
fn read_version(db: &Database) -> Result<Option<u32>, StoreError> {
    Ok(match found(db)? {
        Found::Fresh => None,
        Found::Version(v) => Some(v),
    })
}

fn found(db: &Database) -> Result<Found, StoreError> {
    let txn = db.begin_read().map_err(redb_error)?;
    let record = match open_read(&txn, STORE_META)? {
        Some(meta) => meta.get(STORE_META_FORMAT).map_err(redb_error)?.map(|v| v.value().to_vec()),
        None => None,
    };
    if let Some(bytes) = record {
        let version: u32 = decode_sealed(&bytes, &|| "store/meta format record".to_string())?;
        return Ok(Found::Version(version));
    }
    let tables = txn.list_tables().map_err(redb_error)?;
    let holds_tables = tables.into_iter().any(|t| t.name() != STORE_META.name());
    Ok(if holds_tables { Found::Version(0) } else { Found::Fresh })
}

fn stamp(db: &Database, version: u32) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(redb_error)?;
    txn.set_durability(redb::Durability::Immediate).map_err(|e| StoreError::Redb(e.to_string()))?;
    stamp_in(&txn, version)?;
    txn.commit().map_err(redb_error)
}

/// Record `version` as the store's format in `txn` (a migration's last step, in the durable
/// transaction that makes the store that format).
pub(crate) fn stamp_in(txn: &redb::WriteTransaction, version: u32) -> Result<(), StoreError> {
    let bytes = encode_sealed(&version)?;
    let mut meta = txn.open_table(STORE_META).map_err(redb_error)?;
    meta.insert(STORE_META_FORMAT, bytes.as_slice()).map_err(redb_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::STORE_META;

    fn db(dir: &std::path::Path) -> Database {
        Database::create(dir.join("f.redb")).unwrap()
    }

    fn write_format(db: &Database, version: u32) {
        let txn = db.begin_write().unwrap();
        txn.open_table(STORE_META)
            .unwrap()
            .insert(STORE_META_FORMAT, encode_sealed(&version).unwrap().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_fresh_file_is_stamped_with_the_current_version_and_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        assert_eq!(check_or_stamp(&db, LogLayout::Tables).unwrap(), LogLayout::Tables);
        assert_eq!(read_version(&db).unwrap(), Some(FORMAT_VERSION));
        assert_eq!(check_or_stamp(&db, LogLayout::Wal).unwrap(), LogLayout::Tables, "the file's layout wins");
    }

    #[test]
    fn a_fresh_file_asked_for_the_write_ahead_log_is_stamped_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        assert_eq!(check_or_stamp(&db, LogLayout::Wal).unwrap(), LogLayout::Wal);
        assert_eq!(read_version(&db).unwrap(), Some(FORMAT_VERSION_WAL));
        assert_eq!(check_or_stamp(&db, LogLayout::Tables).unwrap(), LogLayout::Wal, "the file's layout wins");
    }

    #[test]
    fn a_newer_format_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        write_format(&db, FORMAT_VERSION_WAL + 1);
        let err = check_or_stamp(&db, LogLayout::Tables).unwrap_err();
        assert_eq!(err, StoreError::FormatTooNew { found: FORMAT_VERSION_WAL + 1, supported: FORMAT_VERSION_WAL });
        let text = err.to_string();
        assert!(text.contains(&format!("format {}", FORMAT_VERSION_WAL + 1)), "{text}");
        assert!(text.contains(&format!("up to {FORMAT_VERSION_WAL}")), "{text}");
    }

    #[test]
    fn tables_without_a_record_are_format_zero_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let txn = db.begin_write().unwrap();
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv/alpha");
        txn.open_table(def).unwrap().insert(b"k".as_slice(), b"v".as_slice()).unwrap();
        txn.commit().unwrap();
        let err = check_or_stamp(&db, LogLayout::Tables).unwrap_err();
        assert_eq!(err, StoreError::FormatTooOld { found: 0, supported: FORMAT_VERSION });
        assert_eq!(read_version(&db).unwrap(), Some(0), "nothing was stamped");
    }

    #[test]
    fn only_an_at_rest_record_is_still_a_fresh_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let txn = db.begin_write().unwrap();
        txn.open_table(STORE_META).unwrap().insert("at_rest", b"x".as_slice()).unwrap();
        txn.commit().unwrap();
        check_or_stamp(&db, LogLayout::Tables).unwrap();
        assert_eq!(read_version(&db).unwrap(), Some(FORMAT_VERSION));
    }
}
