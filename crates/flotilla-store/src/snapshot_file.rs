//! Crash-safe snapshot files: `<data_dir>/snapshots/<ns>/current.snap`.
//!
//! A new snapshot is written to a temporary file (`current.snap.<n>.tmp`, unique per write),
//! fsynced, renamed over `current.snap`, and the directory is fsynced, so after a crash
//! `current.snap` is either the old snapshot or the new one, whole. An install saves the file
//! before it commits the installed state, so the file is never older than the state the log
//! was purged to (see [`crate::state_machine_store`]). The namespace name is validated
//! (`[a-z0-9][a-z0-9._-]*`), so it is a safe single path component.
//!
//! Snapshots received from a leader are written to `<data_dir>/snapshots/.incoming/` (a name
//! no namespace can have) until they are installed; they are temporary files, removed when
//! their [`SnapshotData`] is dropped. Temporary files left by a crash are removed when the
//! store opens ([`SnapshotFiles::remove_stale`]).
//!
//! Every file is written and read as a stream, in bounded memory. In a store encrypted at
//! rest, current and received files alike are sealed in segments (see
//! [`crate::snapshot_segments`]); callers only ever read plaintext snapshots.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flotilla_core::Namespace;

use crate::at_rest::AtRestCipher;
use crate::codec::Codec;
use crate::error::StoreError;
use crate::snapshot::SEALED_MAGIC;
use crate::snapshot_data::SnapshotData;
use crate::snapshot_segments::{LAYOUT_SEGMENTED, LAYOUT_WHOLE};
use crate::snapshot_writer::SnapshotWriter;
use crate::tables::NsTables;

/// Name of the current snapshot inside a namespace's directory.
pub(crate) const CURRENT: &str = "current.snap";
/// Suffix of the temporary files a new snapshot is written to before it replaces [`CURRENT`].
const TEMP_SUFFIX: &str = ".tmp";
/// Directory of the snapshots being received, under the snapshot root.
const INCOMING: &str = ".incoming";
/// Bytes read at a time when a file is copied.
const COPY_BUFFER: usize = 256 << 10;

/// Numbers temporary files, so concurrent writes (a build and an install) never share one.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// How a snapshot file is stored, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A plaintext snapshot (or something that is no snapshot at all: verification says so).
    Plain,
    /// Sealed in segments.
    Segmented,
    /// Sealed as one record (the layout before segments).
    Whole,
}

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

    /// Create `dir` (under the snapshot root) durably if it does not exist.
    fn ensure_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if dir.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(dir).map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        // Make the new directory entries themselves durable.
        sync_dir(&self.root)?;
        if let Some(parent) = self.root.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    fn writer(&self, ns: &Namespace, path: PathBuf) -> Result<SnapshotWriter, StoreError> {
        SnapshotWriter::create(path, self.codec.cipher().cloned(), NsTables::snapshot_context(ns))
    }

    /// A new temporary file for a snapshot of `ns`, to [`Self::commit`] once written.
    pub(crate) fn create_temp(&self, ns: &Namespace) -> Result<SnapshotWriter, StoreError> {
        let dir = self.dir(ns);
        self.ensure_dir(&dir)?;
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        self.writer(ns, dir.join(format!("{CURRENT}.{n}{TEMP_SUFFIX}")))
    }

    /// A new temporary file for a snapshot of `ns` being received.
    pub(crate) fn create_incoming(&self, ns: &Namespace) -> Result<SnapshotWriter, StoreError> {
        let dir = self.root.join(INCOMING);
        self.ensure_dir(&dir)?;
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        self.writer(ns, dir.join(format!("{}.{n}.part", ns.as_str())))
    }

    /// Make `data`, written (and fsynced) by a writer of [`Self::create_temp`], the current
    /// snapshot of `ns`, crash-safely. Callers hold the namespace's snapshot lock.
    pub(crate) fn commit(&self, ns: &Namespace, data: &SnapshotData) -> Result<(), StoreError> {
        let temp = data
            .temp_path()
            .ok_or_else(|| StoreError::Invalid("only a snapshot in a temporary file can become current".into()))?;
        let current = self.current_path(ns);
        fs::rename(temp, &current)
            .map_err(|e| StoreError::io(format!("renaming {} to {}", temp.display(), current.display()), e))?;
        data.keep_file();
        sync_dir(&self.dir(ns))
    }

    /// The current snapshot of `ns`, if there is one. Its structure and checksum are not
    /// verified here (nor, when sealed, its segments: they are opened as they are read).
    pub(crate) fn load(&self, ns: &Namespace) -> Result<Option<SnapshotData>, StoreError> {
        let path = self.current_path(ns);
        let Some((file, len, kind)) = open_current(&path)? else {
            return Ok(None);
        };
        let data = match (self.codec.cipher(), kind) {
            (None, Kind::Plain) => SnapshotData::plain(file, len, None),
            (None, _) => {
                return Err(StoreError::corrupt(format!(
                    "{} is sealed at rest, but this store is not encrypted",
                    path.display()
                )))
            }
            (Some(cipher), Kind::Segmented) => {
                SnapshotData::sealed(file, len, cipher.clone(), &NsTables::snapshot_context(ns), None)
                    .map_err(|e| in_file(e, &path))?
            }
            (Some(_), Kind::Whole) => {
                // Converted when the store opens (Self::upgrade), unless it failed to open.
                return Err(StoreError::AtRestCorrupt(format!(
                    "{} is sealed in the layout before segments and could not be converted (see the log)",
                    path.display()
                )));
            }
            (Some(_), Kind::Plain) => {
                // A plaintext file in a sealed store was not written by it: never trust it.
                return Err(StoreError::AtRestCorrupt(format!(
                    "{} is not sealed, but this store is encrypted at rest",
                    path.display()
                )));
            }
        };
        Ok(Some(data))
    }

    /// Rewrite the current snapshot file of `ns` under the current key unless it already is;
    /// `plain_ok` accepts a plaintext file (when a plaintext store is being sealed). Returns
    /// whether the file was rewritten. Streams, except for a file in the layout before
    /// segments (read whole once, as the version that wrote it did). Callers hold the
    /// namespace's snapshot lock, or run before the store serves.
    pub(crate) fn reseal(&self, ns: &Namespace, plain_ok: bool) -> Result<bool, StoreError> {
        let Some(cipher) = self.codec.cipher() else {
            return Ok(false);
        };
        let path = self.current_path(ns);
        let Some((file, len, kind)) = open_current(&path)? else {
            return Ok(false);
        };
        match kind {
            Kind::Whole => self.convert_whole(ns, cipher, &path)?,
            Kind::Plain if plain_ok => self.rewrite(ns, SnapshotData::plain(file, len, None).reader())?,
            Kind::Plain => {
                return Err(StoreError::AtRestCorrupt(format!(
                    "{} is not sealed, but this store is encrypted at rest",
                    path.display()
                )))
            }
            Kind::Segmented => {
                let mut first = [0u8; SEALED_MAGIC.len() + 1 + 4 + 1 + crate::at_rest::KEY_ID_LEN];
                read_prefix(&file, &mut first, &path)?;
                let key_at = first.len() - crate::at_rest::KEY_ID_LEN;
                if first[key_at..] == cipher.current_key_id() {
                    return Ok(false);
                }
                let data = SnapshotData::sealed(file, len, cipher.clone(), &NsTables::snapshot_context(ns), None)
                    .map_err(|e| in_file(e, &path))?;
                self.rewrite(ns, data.reader()).map_err(|e| in_file(e, &path))?;
            }
        }
        Ok(true)
    }

    /// Convert the current snapshot file of `ns` from the layout before segments (sealed as
    /// one record) to segments, if it is in that layout. Run when the store opens, before it
    /// serves. Returns whether the file was converted.
    pub(crate) fn upgrade(&self, ns: &Namespace) -> Result<bool, StoreError> {
        let (Some(cipher), path) = (self.codec.cipher(), self.current_path(ns)) else {
            return Ok(false);
        };
        match open_current(&path)? {
            Some((_, _, Kind::Whole)) => {
                self.convert_whole(ns, cipher, &path)?;
                tracing::info!(path = %path.display(), "snapshot file converted to sealed segments");
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Replace the file at `path`, sealed as one record, with the same snapshot in segments.
    fn convert_whole(&self, ns: &Namespace, cipher: &AtRestCipher, path: &Path) -> Result<(), StoreError> {
        let file = fs::read(path).map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
        let sealed = file.get(SEALED_MAGIC.len()..).unwrap_or_default();
        let plain = cipher.open(&NsTables::snapshot_context(ns), sealed).map_err(|e| in_file(e, path))?;
        drop(file);
        self.rewrite(ns, &plain[..])
    }

    /// Make the snapshot read from `src` the current one of `ns`, written anew (under the
    /// current key when sealed).
    fn rewrite(&self, ns: &Namespace, src: impl Read) -> Result<(), StoreError> {
        let mut writer = self.create_temp(ns)?;
        let mut src = BufReader::with_capacity(COPY_BUFFER, src);
        io::copy(&mut src, &mut writer).map_err(|e| StoreError::from_io("copying a snapshot", e))?;
        let data = writer.finish(true)?;
        self.commit(ns, &data)
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

    /// Remove the temporary files a crash left: unfinished saves and snapshots being received.
    /// Run when the store opens, before anything writes.
    pub(crate) fn remove_stale(&self) -> Result<(), StoreError> {
        let mut dirs = vec![self.root.join(INCOMING)];
        dirs.extend(self.namespaces()?.iter().map(|ns| self.dir(ns)));
        for dir in dirs {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("listing {}", dir.display()), e)),
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(TEMP_SUFFIX) || name.ends_with(".part") {
                    let path = entry.path();
                    match fs::remove_file(&path) {
                        Ok(()) => tracing::info!(path = %path.display(), "removed an unfinished snapshot file"),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot remove an unfinished snapshot file")
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The file at `path` opened for reading, its length and how it is stored; `None` if absent.
fn open_current(path: &Path) -> Result<Option<(File, u64, Kind)>, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(format!("opening {}", path.display()), e)),
    };
    let len = file.metadata().map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?.len();
    let mut head = [0u8; SEALED_MAGIC.len() + 1];
    let kind = if len >= head.len() as u64 {
        read_prefix(&file, &mut head, path)?;
        match (head[..SEALED_MAGIC.len()] == SEALED_MAGIC, head[SEALED_MAGIC.len()]) {
            (true, LAYOUT_SEGMENTED) => Kind::Segmented,
            (true, LAYOUT_WHOLE) => Kind::Whole,
            // An unknown layout: reading it as segments reports it.
            (true, _) => Kind::Segmented,
            (false, _) => Kind::Plain,
        }
    } else {
        Kind::Plain
    };
    Ok(Some((file, len, kind)))
}

/// Fill `buf` from the start of `file` (read from `path`, named in errors).
fn read_prefix(file: &File, buf: &mut [u8], path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, 0).map_err(|e| StoreError::from_io(format!("reading {}", path.display()), e))
}

/// Name the file an authentication or structure failure is about.
fn in_file(e: StoreError, path: &Path) -> StoreError {
    match e {
        StoreError::AtRestCorrupt(msg) => StoreError::AtRestCorrupt(format!("{}: {msg}", path.display())),
        StoreError::Corrupt(msg) => StoreError::Corrupt(format!("{}: {msg}", path.display())),
        other => other,
    }
}

/// fsync a directory, making renames and creations inside it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing directory {}", dir.display()), e))
}
