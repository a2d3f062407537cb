//! Crash-safe snapshot files: `<data_dir>/snapshots/<ns>/current.snap`.
//!
//! A new snapshot is written to a temporary file, fsynced, renamed over `current.snap`, and the
//! directory is fsynced, so after a crash `current.snap` is either the old snapshot or the new
//! one, whole. An install saves the file before it commits the installed state, so the file
//! is never older than the state the log was purged to (see [`crate::state_machine_store`]).
//! The namespace name is validated (`[a-z0-9][a-z0-9._-]*`), so it is a safe single
//! path component.
//!
//! In a store encrypted at rest the file is `SEALED_MAGIC` followed by the whole snapshot
//! sealed as one record (see [`crate::snapshot`]); [`SnapshotFiles::save`] seals and
//! [`SnapshotFiles::load`] opens, so callers only ever see plaintext snapshots.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_core::Namespace;

use crate::at_rest::{sealed_key_id, AtRestCipher};
use crate::codec::Codec;
use crate::error::StoreError;
use crate::snapshot::{MAGIC, SEALED_MAGIC};
use crate::tables::NsTables;

/// Name of the current snapshot inside a namespace's directory.
pub(crate) const CURRENT: &str = "current.snap";
/// Name of the file a new snapshot is written to before it replaces [`CURRENT`].
const TEMP: &str = "current.snap.tmp";

/// The snapshot directory of a node.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFiles {
    root: PathBuf,
    /// Seals the files when the store is encrypted at rest.
    codec: Codec,
}

impl SnapshotFiles {
    /// Snapshots live under `<data_dir>/snapshots`; `codec` says whether they are sealed.
    pub(crate) fn new(data_dir: &Path, codec: Codec) -> Self {
        Self { root: data_dir.join("snapshots"), codec }
    }

    fn dir(&self, ns: &Namespace) -> PathBuf {
        self.root.join(ns.as_str())
    }

    /// Path of the current snapshot of `ns`.
    pub(crate) fn current_path(&self, ns: &Namespace) -> PathBuf {
        self.dir(ns).join(CURRENT)
    }

    /// Replace the current snapshot of `ns` with `data` (sealed at rest), crash-safely.
    pub(crate) fn save(&self, ns: &Namespace, data: &[u8]) -> Result<(), StoreError> {
        match self.codec.cipher() {
            Some(cipher) => self.write(ns, &seal_file(cipher, ns, data)?),
            None => self.write(ns, data),
        }
    }

    /// Replace the current snapshot file of `ns` with the bytes `file`, crash-safely.
    fn write(&self, ns: &Namespace, file: &[u8]) -> Result<(), StoreError> {
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
            f.write_all(file)?;
            f.sync_all()
        };
        write().map_err(|e| StoreError::io(format!("writing {}", temp.display()), e))?;
        fs::rename(&temp, &current)
            .map_err(|e| StoreError::io(format!("renaming {} to {}", temp.display(), current.display()), e))?;
        sync_dir(&dir)
    }

    /// The current snapshot of `ns`, if there is one, opened when sealed at rest. Its structure
    /// and checksum are not verified here.
    pub(crate) fn load(&self, ns: &Namespace) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(file) = self.load_file(ns)? else {
            return Ok(None);
        };
        let path = self.current_path(ns);
        match self.codec.cipher() {
            Some(cipher) => open_file(cipher, ns, &file, &path).map(Some),
            None if file.starts_with(&SEALED_MAGIC) => Err(StoreError::corrupt(format!(
                "{} is sealed at rest, but this store is not encrypted",
                path.display()
            ))),
            None => Ok(Some(file)),
        }
    }

    /// The bytes of the current snapshot file of `ns`, as stored.
    fn load_file(&self, ns: &Namespace) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.current_path(ns);
        match fs::read(&path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Rewrite the current snapshot file of `ns` under the current key unless it already is;
    /// `plain_ok` accepts a plaintext file (when a plaintext store is being sealed). Returns
    /// whether the file was rewritten. Callers hold the namespace's snapshot lock.
    pub(crate) fn reseal(&self, ns: &Namespace, plain_ok: bool) -> Result<bool, StoreError> {
        let Some(cipher) = self.codec.cipher() else {
            return Ok(false);
        };
        let Some(file) = self.load_file(ns)? else {
            return Ok(false);
        };
        let sealed_body = file.strip_prefix(&SEALED_MAGIC);
        if sealed_body.is_some_and(|body| sealed_key_id(body).ok() == Some(cipher.current_key_id())) {
            return Ok(false);
        }
        let plain = if plain_ok && file.starts_with(&MAGIC) {
            file
        } else {
            open_file(cipher, ns, &file, &self.current_path(ns))?
        };
        self.save(ns, &plain)?;
        Ok(true)
    }

    /// The namespaces that have a snapshot directory.
    pub(crate) fn namespaces(&self) -> Result<Vec<Namespace>, StoreError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(format!("listing {}", self.root.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(format!("listing {}", self.root.display()), e))?;
            // Anything that is not a namespace's directory is not ours to touch.
            if let Some(ns) = entry.file_name().to_str().and_then(|name| Namespace::new(name).ok()) {
                out.push(ns);
            }
        }
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(out)
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

/// The sealed file of snapshot `data` of `ns`: `SEALED_MAGIC`, then the snapshot sealed as one
/// record bound to the namespace (a file moved to another namespace does not open).
fn seal_file(cipher: &Arc<AtRestCipher>, ns: &Namespace, data: &[u8]) -> Result<Vec<u8>, StoreError> {
    let sealed = cipher.seal(&NsTables::snapshot_context(ns), data)?;
    let mut file = Vec::with_capacity(SEALED_MAGIC.len() + sealed.len());
    file.extend_from_slice(&SEALED_MAGIC);
    file.extend_from_slice(&sealed);
    Ok(file)
}

/// The snapshot inside the sealed `file` of `ns` (read from `path`, named in errors).
fn open_file(cipher: &AtRestCipher, ns: &Namespace, file: &[u8], path: &Path) -> Result<Vec<u8>, StoreError> {
    let Some(sealed) = file.strip_prefix(&SEALED_MAGIC) else {
        // A plaintext file in a sealed store was not written by it: never trust it.
        return Err(StoreError::AtRestCorrupt(format!(
            "{} is not sealed, but this store is encrypted at rest",
            path.display()
        )));
    };
    cipher.open(&NsTables::snapshot_context(ns), sealed).map_err(|e| match e {
        StoreError::AtRestCorrupt(msg) => StoreError::AtRestCorrupt(format!("{}: {msg}", path.display())),
        other => other,
    })
}

/// fsync a directory, making renames and creations inside it durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing directory {}", dir.display()), e))
}
