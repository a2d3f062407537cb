//! The store's on-disk format version, checked before anything else touches the file.
//!
//! `store/meta` holds `format`: the version of the layout of every table (log, meta, dedup,
//! state) and of the built-in KV state machine's rows (`flotilla_core::kv`, layout in
//! `kv/layout.rs`). A change to any of them that an older binary would misread bumps
//! [`FORMAT_VERSION`], adds a migration step here (from the previous version, crash-safe: one
//! durable transaction, or idempotent steps), and refreshes the fixture that
//! `tests/format_fixture.rs` opens, so a change cannot slip through unnoticed.
//!
//! Opening decides, before sealing, snapshots or the writer touch the file:
//! - no record and no table other than `store/meta`: a fresh store, stamped with the current
//!   version;
//! - the current version: opened;
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

/// Check the format of `db` and stamp a fresh store; refuses what this build cannot read.
pub(crate) fn check_or_stamp(db: &Database) -> Result<(), StoreError> {
    match found(db)? {
        Found::Fresh => stamp(db),
        Found::Version(v) if v == FORMAT_VERSION => Ok(()),
        Found::Version(v) if v > FORMAT_VERSION => {
            Err(StoreError::FormatTooNew { found: v, supported: FORMAT_VERSION })
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

fn stamp(db: &Database) -> Result<(), StoreError> {
    let bytes = encode_sealed(&FORMAT_VERSION)?;
    let mut txn = db.begin_write().map_err(redb_error)?;
    txn.set_durability(redb::Durability::Immediate).map_err(|e| StoreError::Redb(e.to_string()))?;
    {
        let mut meta = txn.open_table(STORE_META).map_err(redb_error)?;
        meta.insert(STORE_META_FORMAT, bytes.as_slice()).map_err(redb_error)?;
    }
    txn.commit().map_err(redb_error)
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
        check_or_stamp(&db).unwrap();
        assert_eq!(read_version(&db).unwrap(), Some(FORMAT_VERSION));
        check_or_stamp(&db).unwrap();
    }

    #[test]
    fn a_newer_format_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        write_format(&db, FORMAT_VERSION + 1);
        let err = check_or_stamp(&db).unwrap_err();
        assert_eq!(err, StoreError::FormatTooNew { found: FORMAT_VERSION + 1, supported: FORMAT_VERSION });
        let text = err.to_string();
        assert!(text.contains(&format!("format {}", FORMAT_VERSION + 1)), "{text}");
        assert!(text.contains(&format!("format {FORMAT_VERSION}")), "{text}");
    }

    #[test]
    fn tables_without_a_record_are_format_zero_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let txn = db.begin_write().unwrap();
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv/alpha");
        txn.open_table(def).unwrap().insert(b"k".as_slice(), b"v".as_slice()).unwrap();
        txn.commit().unwrap();
        let err = check_or_stamp(&db).unwrap_err();
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
        check_or_stamp(&db).unwrap();
        assert_eq!(read_version(&db).unwrap(), Some(FORMAT_VERSION));
    }
}
