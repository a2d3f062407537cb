//! The store's error type and its conversions.
//!
//! [`StoreError`] is `Clone` on purpose: when a group commit fails, every waiter of that batch
//! receives the same error, so it carries messages and kinds rather than the (non-`Clone`)
//! source errors of redb and std.

use std::io;

/// What can go wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("I/O error: {message}")]
    Io {
        /// The kind of the underlying I/O error.
        kind: io::ErrorKind,
        /// What was being done, and the underlying error.
        message: String,
    },
    /// The disk (or the quota) is full: nothing of the failed operation was acknowledged.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// redb reported an error (other than I/O).
    #[error("database error: {0}")]
    Redb(String),
    /// Stored or received bytes failed their checksum or do not decode.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A value could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The caller passed something the store refuses (for example a value too large for redb).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A namespace's state machine failed (`Err` from `StateMachine::apply`, or a panic).
    #[error("state machine failed: {0}")]
    StateMachine(String),
    /// The store has been shut down (or its writer thread is gone).
    #[error("store is closed")]
    Closed,
    /// A snapshot is being installed into the namespace: its state is partial until the
    /// install ends. Retry, or read linearizably (which waits for the install).
    #[error("namespace {0} is installing a snapshot; retry shortly")]
    Installing(String),
    /// The disk failed while recent commits were not yet durable: the store refuses every
    /// further write, and the node must restart to recover from what is on disk.
    #[error("store stopped after a disk failure: {0}; restart the node to recover from what is on disk")]
    Stopped(String),
    /// The data directory is encrypted at rest and the store was opened without a cipher.
    #[error(
        "data dir is encrypted at rest (key ids {}); start with the cluster key",
        crate::at_rest::key_ids_hex(.key_ids)
    )]
    AtRestRequired {
        /// The ids of the keys the data directory is sealed with.
        key_ids: Vec<[u8; 8]>,
    },
    /// Sealed data names a key the cipher does not hold.
    #[error(
        "at-rest key {} is missing: data is sealed with it (add it to the keys, and reseal before retiring it)",
        crate::at_rest::key_id_hex(.id)
    )]
    AtRestKeyMissing {
        /// The id of the missing key.
        id: [u8; 8],
    },
    /// The key given under an id is not the key the data directory was sealed with under it.
    #[error("at-rest key {} is not the key this data dir was sealed with", crate::at_rest::key_id_hex(.id))]
    AtRestWrongKey {
        /// The id whose key does not match.
        id: [u8; 8],
    },
    /// The store was written by a newer Flotilla, in a format this build cannot read.
    #[error(
        "the store is in format {found}, written by a newer Flotilla; this build reads formats up to {supported}: \
         run the newer version (downgrades are not supported)"
    )]
    FormatTooNew {
        /// The format recorded in the store.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
    /// The store was written in an older format that this build neither reads nor migrates.
    #[error(
        "the store is in format {found}{}, which this build (format {supported}) cannot read or migrate: \
         start this node with an empty data directory and let it join (or restore a backup)",
        if *.found == 0 { " (written before store format versions)" } else { "" }
    )]
    FormatTooOld {
        /// The format recorded in the store (0: none recorded).
        found: u32,
        /// The format this build reads and writes.
        supported: u32,
    },
    /// The store's file is open in another process (redb locks it): an agent runs on this data
    /// directory.
    #[error("{0} is in use by another process (is an agent running on this data directory?)")]
    AlreadyOpen(String),
    /// Sealed data failed authentication: edited, damaged, or moved to another key or file.
    #[error("sealed data failed authentication: {0}")]
    AtRestCorrupt(String),
}

impl StoreError {
    /// An I/O error with `context` describing what was being done.
    pub(crate) fn io(context: impl std::fmt::Display, err: io::Error) -> Self {
        if is_disk_full(&err) {
            return StoreError::DiskFull(format!("{context}: {err}"));
        }
        StoreError::Io { kind: err.kind(), message: format!("{context}: {err}") }
    }

    /// The store error an `io::Error` from reading or writing a snapshot stream stands for: the
    /// [`StoreError`] it wraps (a damaged segment, a checksum), a truncation as corrupt data,
    /// anything else as an I/O error of `context`.
    pub(crate) fn from_io(context: impl std::fmt::Display, err: io::Error) -> Self {
        if let Some(inner) = err.get_ref().and_then(|e| e.downcast_ref::<StoreError>()) {
            return inner.clone();
        }
        if err.kind() == io::ErrorKind::UnexpectedEof {
            return StoreError::corrupt(format!("{context}: the data ends early"));
        }
        StoreError::io(context, err)
    }

    /// Whether the disk failed (full, or an I/O error): the operation did not happen, and may
    /// succeed once the disk works and the database is reopened.
    pub(crate) fn is_disk_failure(&self) -> bool {
        matches!(self, StoreError::Io { .. } | StoreError::DiskFull(_))
    }

    /// Corrupt data, described by `message`.
    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        StoreError::Corrupt(message.into())
    }

    /// The `io::Error` openraft's storage traits expect, with a kind that keeps the cause visible.
    pub fn to_io(&self) -> io::Error {
        let kind = match self {
            StoreError::Io { kind, .. } => *kind,
            StoreError::DiskFull(_) => io::ErrorKind::StorageFull,
            StoreError::Corrupt(_) | StoreError::AtRestCorrupt(_) => io::ErrorKind::InvalidData,
            StoreError::AtRestRequired { .. }
            | StoreError::AtRestKeyMissing { .. }
            | StoreError::AtRestWrongKey { .. } => io::ErrorKind::PermissionDenied,
            StoreError::Invalid(_) => io::ErrorKind::InvalidInput,
            StoreError::FormatTooNew { .. } | StoreError::FormatTooOld { .. } => io::ErrorKind::Unsupported,
            StoreError::Installing(_) => io::ErrorKind::WouldBlock,
            StoreError::AlreadyOpen(_) => io::ErrorKind::ResourceBusy,
            StoreError::Closed | StoreError::Stopped(_) => io::ErrorKind::BrokenPipe,
            StoreError::Redb(_) | StoreError::Encode(_) | StoreError::StateMachine(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, self.clone())
    }
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> Self {
        e.to_io()
    }
}

/// ENOSPC and EDQUOT: the two ways a write runs out of room.
fn is_disk_full(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// Map any redb error, keeping disk-full and corruption recognisable.
pub(crate) fn redb_error(err: impl Into<redb::Error>) -> StoreError {
    match err.into() {
        redb::Error::Io(e) => StoreError::io("redb", e),
        redb::Error::Corrupted(msg) => StoreError::Corrupt(format!("redb: {msg}")),
        redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen("the store".into()),
        redb::Error::ValueTooLarge(n) => StoreError::Invalid(format!("value of {n} bytes is too large for redb")),
        // An I/O condition: the store's writer reopens the database when it meets it.
        redb::Error::PreviousIo => StoreError::Io {
            kind: io::ErrorKind::Other,
            message: "an earlier I/O error left the database unusable until it is reopened".into(),
        },
        other => StoreError::Redb(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_recognised_and_maps_back_to_storage_full() {
        let e = redb_error(redb::StorageError::Io(io::Error::from(io::ErrorKind::StorageFull)));
        assert!(matches!(e, StoreError::DiskFull(_)), "{e:?}");
        assert_eq!(e.to_io().kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn corruption_maps_to_invalid_data() {
        assert_eq!(StoreError::corrupt("x").to_io().kind(), io::ErrorKind::InvalidData);
    }
}
