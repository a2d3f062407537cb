//! [`BackupMeta`]: what a backup file says about itself, in its header.

use serde::{Deserialize, Serialize};

/// The metadata header of a backup file (see [`crate::Backup`]), stored as JSON so that an
/// operator (and a later restore) can read it without this crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    /// Version of the backup file layout ([`crate::BACKUP_FORMAT_VERSION`] when written).
    pub format_version: u32,
    /// The store format of the rows in the body ([`crate::FORMAT_VERSION`] when written): a
    /// restore refuses, or migrates, rows of another format as the store does.
    pub store_format: u32,
    /// The namespace backed up.
    pub namespace: String,
    /// The cluster of the namespace the node belonged to (empty when it had none yet).
    pub cluster_id: String,
    /// Index of the last log entry applied to the state backed up (0: none).
    pub index: u64,
    /// Term of that entry (0: none).
    pub term: u64,
    /// The namespace's KV revision in the state backed up (1, as for a namespace never
    /// written, for one that does not run the built-in KV state machine; 0 in backups taken
    /// before revisions started at 1).
    pub revision: u64,
    /// When the backup's view was taken, in milliseconds since the Unix epoch.
    pub taken_at_unix_ms: u64,
    /// Version of the flotilla that wrote the backup.
    pub flotilla_version: String,
}

/// What the store cannot know of a backup and the node supplies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupSource {
    /// The cluster id of the namespace on this node.
    pub cluster_id: String,
    /// The flotilla version of this node.
    pub flotilla_version: String,
}
