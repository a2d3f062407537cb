//! Crash-safe snapshot files: `<data_dir>/snapshots/<ns>/current.snap`.
//!
//! A new snapshot is written to a temporary file, fsynced, renamed over `current.snap`, and the
//! directory is fsynced, so after a crash `current.snap` is either the old snapshot or the new
//! one, whole. The namespace name is validated (`[a-z0-9][a-z0-9._-]*`), so it is a safe single
//! path component.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flotilla_core::Namespace;

use crate::error::StoreError;

/// Name of the current snapshot inside a namespace's directory.
pub(crate) const CURRENT: &str = "current.snap";
/// Name of the file a new snapshot is written to before it replaces [`CURRENT`].
const TEMP: &str = "current.snap.tmp";

/// The snapshot directory of a node.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFiles {
    root: PathBuf,
}

impl SnapshotFiles {
    /// Snapshots live under `<data_dir>/snapshots`.
    pub(crate) fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.join("snapshots") }
    }

    fn dir(&self, ns: &Namespace) -> PathBuf {
        self.root.join(ns.as_str())
    }

    /// Path of the current snapshot of `ns`.
    pub(crate) fn current_path(&self, ns: &Namespace) -> PathBuf {
        self.dir(ns).join(CURRENT)
    }

    /// Replace the current snapshot of `ns` with `data`, crash-safely.
    pub(crate) fn save(&self, ns: &Namespace, data: &[u8]) -> Result<(), StoreError> {
        let dir = self.dir(ns);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
            // Make the new directory entries themselves durable.
            sync_dir(&self.root)?;
            if let Some(parent) = self.root.parent() {
                sync_dir(parent)?;
            }
        }
        let temp = dir.join(TEMP);
        let current = dir.join(CURRENT);
        let write = || -> io::Result<()> {
            let mut f = File::create(&temp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        write().map_err(|e| StoreError::io(format!("writing {}", temp.display()), e))?;
        fs::rename(&temp, &current)
            .map_err(|e| StoreError::io(format!("renaming {} to {}", temp.display(), current.display()), e))?;
        sync_dir(&dir)
    }

    /// The bytes of the current snapshot of `ns`, if there is one. Not verified here.
    pub(crate) fn load(&self, ns: &Namespace) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.current_path(ns);
        match fs::read(&path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Remove every snapshot file of `ns`.
    pub(crate) fn remove_all(&self, ns: &Namespace) -> Result<(), StoreError> {
        let dir = self.dir(ns);
        match fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.root),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("removing {}", dir.display()), e)),
        }
    }

    /// Remove a temporary file left by a crash in the middle of [`Self::save`].
    pub(crate) fn remove_stale_temp(&self, ns: &Namespace) {
        let temp = self.dir(ns).join(TEMP);
        match fs::remove_file(&temp) {
            Ok(()) => tracing::info!(path = %temp.display(), "removed an unfinished snapshot file"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %temp.display(), error = %e, "cannot remove an unfinished snapshot file"),
        }
    }
}

/// fsync a directory, making renames and creations inside it durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing directory {}", dir.display()), e))
}
