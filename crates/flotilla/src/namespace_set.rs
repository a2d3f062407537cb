//! The set of namespaces a node serves, kept durably so a restart reopens exactly that set.
//!
//! One small file, `<data_dir>/namespaces.set`, replaced atomically (temp file, fsync, rename,
//! directory fsync) and checked with a CRC on load, like the founding records. It lists the
//! namespaces that are open and those closed with `keep_data` (their data stays on disk and is
//! not cleaned at start). `--namespace` flags only seed the file of a node that has none.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use flotilla_core::Namespace;
use serde::{Deserialize, Serialize};

/// Name of the file inside the data directory.
///
/// ```
/// use std::path::Path;
///
/// let path = Path::new("/var/lib/flotilla").join(flotilla::namespace_set::NAMESPACE_SET_FILE);
/// assert_eq!(path, Path::new("/var/lib/flotilla/namespaces.set"));
/// ```
pub const NAMESPACE_SET_FILE: &str = "namespaces.set";
/// Largest file accepted on load (a name is at most 64 bytes).
const MAX_SET_BYTES: u64 = 8 * 1024 * 1024;

/// The namespaces a node serves and those whose data it keeps while closed.
///
/// ```
/// use flotilla::{namespace_set::NamespaceSet, Namespace};
///
/// let ns = |name: &str| Namespace::new(name).expect("a valid name");
/// let set = NamespaceSet { open: [ns("orders")].into(), kept: [ns("archive")].into() };
/// assert!(set.holds(&ns("archive")) && !set.holds(&ns("users")));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceSet {
    /// Open: served, reopened at every start.
    pub open: BTreeSet<Namespace>,
    /// Closed with `keep_data`: not served, but their data is not cleaned at start.
    pub kept: BTreeSet<Namespace>,
}

impl NamespaceSet {
    /// Whether the node holds data of `ns` on purpose (open or kept).
    ///
    /// ```
    /// use flotilla::{namespace_set::NamespaceSet, Namespace};
    ///
    /// let orders = Namespace::new("orders").expect("a valid name");
    /// let set = NamespaceSet { kept: [orders.clone()].into(), ..Default::default() };
    /// assert!(set.holds(&orders)); // closed, but its data stays
    /// ```
    pub fn holds(&self, ns: &Namespace) -> bool {
        self.open.contains(ns) || self.kept.contains(ns)
    }
}

/// The encoded form: names as strings, validated again on load.
#[derive(Serialize, Deserialize)]
struct Encoded {
    open: Vec<String>,
    kept: Vec<String>,
}

/// The file holding a node's [`NamespaceSet`].
///
/// ```
/// use flotilla::namespace_set::{NamespaceSet, NamespaceSetFile};
///
/// let dir = tempfile::tempdir().expect("a temporary directory");
/// let file = NamespaceSetFile::new(dir.path());
/// let set = NamespaceSet { open: [flotilla::Namespace::new("orders").expect("valid")].into(), ..Default::default() };
/// file.save(&set).expect("saved");
/// assert_eq!(file.load().expect("readable"), Some(set));
/// ```
#[derive(Debug, Clone)]
pub struct NamespaceSetFile {
    path: PathBuf,
}

impl NamespaceSetFile {
    /// The file under `data_dir`.
    ///
    /// ```no_run
    /// let file = flotilla::namespace_set::NamespaceSetFile::new(std::path::Path::new("/var/lib/flotilla"));
    /// ```
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join(NAMESPACE_SET_FILE) }
    }

    /// Load the set; `None` when the file does not exist (a fresh node, or one that ran a
    /// version without it), an error when it is damaged (starting with a guessed set could
    /// drop a namespace's data).
    ///
    /// ```
    /// let dir = tempfile::tempdir().expect("a temporary directory");
    /// let file = flotilla::namespace_set::NamespaceSetFile::new(dir.path());
    /// assert_eq!(file.load(), Ok(None)); // a fresh node: no file yet
    /// ```
    pub fn load(&self) -> Result<Option<NamespaceSet>, String> {
        let Some(encoded) = crate::checked_file::read::<Encoded>(&self.path, MAX_SET_BYTES)? else {
            return Ok(None);
        };
        let names = |list: Vec<String>| -> Result<BTreeSet<Namespace>, String> {
            list.iter().map(|n| Namespace::new(n).map_err(|e| format!("{}: {e}", self.path.display()))).collect()
        };
        Ok(Some(NamespaceSet { open: names(encoded.open)?, kept: names(encoded.kept)? }))
    }

    /// Replace the set durably: once this returns, a crash leaves this set or a later one.
    ///
    /// ```no_run
    /// # fn example(file: flotilla::namespace_set::NamespaceSetFile, mut set: flotilla::namespace_set::NamespaceSet) -> Result<(), String> {
    /// set.open.insert(flotilla::Namespace::new("users").map_err(|e| e.to_string())?);
    /// file.save(&set)?; // durable once it returns
    /// # Ok(()) }
    /// ```
    pub fn save(&self, set: &NamespaceSet) -> Result<(), String> {
        let strings = |s: &BTreeSet<Namespace>| s.iter().map(|n| n.as_str().to_string()).collect();
        crate::checked_file::write(&self.path, &Encoded { open: strings(&set.open), kept: strings(&set.kept) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_round_trips_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let file = NamespaceSetFile::new(dir.path());
        assert_eq!(file.load().unwrap(), None, "no file: a fresh node");
        let ns = |n: &str| Namespace::new(n).unwrap();
        let set = NamespaceSet { open: [ns("a"), ns("b")].into(), kept: [ns("c")].into() };
        file.save(&set).unwrap();
        assert_eq!(file.load().unwrap(), Some(set.clone()));
        assert!(set.holds(&ns("c")) && !set.holds(&ns("d")));
        let path = dir.path().join(NAMESPACE_SET_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(file.load().is_err(), "a damaged set is refused, never guessed");
    }
}
