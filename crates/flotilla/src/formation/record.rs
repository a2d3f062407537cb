//! The persisted part of founding: a binding to a coordinator's ballot, or a coordinator's
//! decision to found. Both must survive a crash, or a restarted node could be counted in two
//! founding sets.
//!
//! One small file per namespace under `<data_dir>/formation/`, replaced atomically (write a
//! temp file, fsync it, rename, fsync the directory) and checked with a CRC on load.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use flotilla_core::formation::Ballot;
use flotilla_core::types::NodeId;
use flotilla_core::Namespace;
use serde::{Deserialize, Serialize};

/// Largest record accepted on load.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// What a fresh node has committed to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FoundingRecord {
    /// Nothing.
    #[default]
    Free,
    /// Promised to this ballot.
    Bound(Ballot),
    /// The namespace has had Raft state on this node. If the record says so but the store has
    /// no state, the store was lost: the node must not trust any old admission.
    Member,
    /// Decided to found this ballot with these voters, out of this founding set.
    Founded {
        /// The ballot.
        ballot: Ballot,
        /// Founding voters.
        voters: BTreeSet<NodeId>,
        /// Every founder (voters and learners).
        all: BTreeSet<NodeId>,
    },
}

/// The record file of one namespace.
#[derive(Debug, Clone)]
pub struct RecordFile {
    path: PathBuf,
}

impl RecordFile {
    /// The record of `ns` under `data_dir`.
    pub fn new(data_dir: &Path, ns: &Namespace) -> Self {
        Self { path: data_dir.join("formation").join(format!("{}.rec", ns.as_str())) }
    }

    /// The namespaces with a record under `data_dir`.
    pub fn namespaces(data_dir: &Path) -> Vec<Namespace> {
        let Ok(entries) = fs::read_dir(data_dir.join("formation")) else { return Vec::new() };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?.strip_suffix(".rec")?.to_string();
                Namespace::new(name).ok()
            })
            .collect()
    }

    /// Remove the record durably (the namespace left this node): a missing file reads as
    /// [`FoundingRecord::Free`].
    pub fn remove(&self) -> Result<(), String> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("removing {}: {e}", self.path.display())),
        }
        let dir = self.path.parent().ok_or("record path has no directory")?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("syncing {}: {e}", dir.display()))
    }

    /// Load the record; a missing file is [`FoundingRecord::Free`], a damaged one an error
    /// (refusing to start beats forgetting a promise).
    pub fn load(&self) -> Result<FoundingRecord, String> {
        Ok(crate::checked_file::read(&self.path, MAX_RECORD_BYTES)?.unwrap_or(FoundingRecord::Free))
    }

    /// Replace the record durably.
    pub fn save(&self, record: &FoundingRecord) -> Result<(), String> {
        crate::checked_file::write(&self.path, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let ns = Namespace::new("a").unwrap();
        let file = RecordFile::new(dir.path(), &ns);
        assert_eq!(file.load().unwrap(), FoundingRecord::Free);
        let me = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
        let record = FoundingRecord::Bound(Ballot { coordinator: me, round: 7 });
        file.save(&record).unwrap();
        assert_eq!(file.load().unwrap(), record);
        let path = dir.path().join("formation").join("a.rec");
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert!(file.load().is_err());
    }
}
