//! The node key: created once, kept forever.
//!
//! The key's PeerId is the node's identity and its Raft node id, so losing or replacing the key
//! turns the node into a stranger to its own cluster. Hence: the key is written atomically and
//! durably, and a key file that exists but cannot be used is an error, never a reason to mint a
//! new key.
//!
//! The key file also keeps the namespaces the identity was admitted to ([`record_membership`],
//! [`load_memberships`]; format in `key_file.rs`): a node that lost its store but kept its key
//! must know that it was a member, so that it rejoins instead of founding a second cluster.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;
use libp2p::PeerId;

use crate::error::NetError;
use crate::key_file::KeyFileContents;
pub use crate::key_file::{Memberships, MAX_CLUSTER_BYTES, MAX_MEMBERSHIPS};

/// Name of the key file inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// Load the node key from `<data_dir>/node.key`, or create a new ed25519 key there.
///
/// A new file holds the protobuf encoding of the keypair and is created with mode 0600; a file
/// that also records memberships has the version-2 format of `key_file.rs`; both are read. A
/// file that cannot be read or decoded is reported as [`NetError::KeyFile`] and left untouched.
/// A readable key whose file permits access to group or others is used, with a warning.
pub fn load_or_create_keypair(data_dir: &Path) -> Result<Keypair, NetError> {
    let path = data_dir.join(KEY_FILE);
    match read_key_file(&path)? {
        Some((keypair, _)) => {
            warn_if_exposed(&path);
            Ok(keypair)
        }
        None => create(data_dir, &path),
    }
}

/// The namespaces the identity `peer` was admitted to, from `<data_dir>/node.key`, with the id
/// of the cluster that admitted it to each. `None` when there is no key file or it holds
/// another identity (the node's key is kept elsewhere): then nothing can be recorded.
pub fn load_memberships(data_dir: &Path, peer: &PeerId) -> Result<Option<Memberships>, NetError> {
    let path = data_dir.join(KEY_FILE);
    Ok(read_key_file(&path)?.filter(|(k, _)| k.public().to_peer_id() == *peer).map(|(_, c)| c.memberships))
}

/// Record in `<data_dir>/node.key` that the identity `peer` was admitted to `namespace` by
/// `cluster` (cut to [`MAX_CLUSTER_BYTES`]). The file is replaced atomically and durably (mode
/// 0600, fsync, rename, directory fsync) with the same key; the call returns once the fact is
/// on disk. Returns `false` (and writes nothing) when it was already recorded. Callers
/// serialize their calls for one data directory.
pub fn record_membership(data_dir: &Path, peer: &PeerId, namespace: &str, cluster: &str) -> Result<bool, NetError> {
    let path = data_dir.join(KEY_FILE);
    let key_err = |reason: String| NetError::KeyFile { path: path.clone(), reason };
    let Some((keypair, mut contents)) = read_key_file(&path)? else {
        return Err(key_err("no key file to record a membership in".into()));
    };
    if keypair.public().to_peer_id() != *peer {
        return Err(key_err(format!("holds {}, not {peer}", keypair.public().to_peer_id())));
    }
    if !contents.insert(namespace, cluster).map_err(key_err)? {
        return Ok(false);
    }
    write_atomically(data_dir, &path, &contents.encode())?;
    Ok(true)
}

/// Forget in `<data_dir>/node.key` that the identity `peer` was admitted to `namespace` (it
/// left the namespace cleanly: its removal from the membership is committed). Replaced
/// atomically and durably like [`record_membership`]; returns `false` (and writes nothing)
/// when nothing was recorded. Callers serialize their calls for one data directory.
pub fn forget_membership(data_dir: &Path, peer: &PeerId, namespace: &str) -> Result<bool, NetError> {
    let path = data_dir.join(KEY_FILE);
    let key_err = |reason: String| NetError::KeyFile { path: path.clone(), reason };
    let Some((keypair, mut contents)) = read_key_file(&path)? else {
        return Ok(false);
    };
    if keypair.public().to_peer_id() != *peer {
        return Err(key_err(format!("holds {}, not {peer}", keypair.public().to_peer_id())));
    }
    if contents.memberships.remove(namespace).is_none() {
        return Ok(false);
    }
    write_atomically(data_dir, &path, &contents.encode())?;
    Ok(true)
}

/// One change to the memberships kept in the key file (see [`apply_memberships`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// The identity was admitted to this namespace by this cluster (cut to [`MAX_CLUSTER_BYTES`]).
    Record {
        /// The namespace.
        namespace: String,
        /// The cluster that admitted the identity.
        cluster: String,
    },
    /// The identity left this namespace cleanly.
    Forget {
        /// The namespace.
        namespace: String,
    },
}

/// What [`apply_memberships`] did: the memberships the key file holds afterwards, and per
/// change (in order) why it was refused, if it was (e.g. too many memberships).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedMemberships {
    /// The memberships on disk once the call returned.
    pub memberships: Memberships,
    /// `Some(reason)` for each change that was refused, `None` for one applied (or already true).
    pub refused: Vec<Option<String>>,
}

/// Apply `changes`, in order, to the memberships of the identity `peer` in
/// `<data_dir>/node.key`, with one atomic and durable rewrite of the file for all of them (none
/// when nothing changed). A change the file cannot take is refused alone; the others are
/// applied. Returns once the file on disk says every applied change. The group-commit form of
/// [`record_membership`] and [`forget_membership`]; callers serialize their calls for one data
/// directory.
pub fn apply_memberships(
    data_dir: &Path,
    peer: &PeerId,
    changes: &[MembershipChange],
) -> Result<AppliedMemberships, NetError> {
    let path = data_dir.join(KEY_FILE);
    let key_err = |reason: String| NetError::KeyFile { path: path.clone(), reason };
    let Some((keypair, mut contents)) = read_key_file(&path)? else {
        return Err(key_err("no key file to record memberships in".into()));
    };
    if keypair.public().to_peer_id() != *peer {
        return Err(key_err(format!("holds {}, not {peer}", keypair.public().to_peer_id())));
    }
    let mut changed = false;
    let mut refused = Vec::with_capacity(changes.len());
    for change in changes {
        let outcome = match change {
            MembershipChange::Record { namespace, cluster } => contents.insert(namespace, cluster),
            MembershipChange::Forget { namespace } => Ok(contents.memberships.remove(namespace).is_some()),
        };
        match outcome {
            Ok(c) => {
                changed |= c;
                refused.push(None);
            }
            Err(reason) => refused.push(Some(reason)),
        }
    }
    if changed {
        write_atomically(data_dir, &path, &contents.encode())?;
    }
    Ok(AppliedMemberships { memberships: contents.memberships, refused })
}

/// Read and decode the key file; `None` if it does not exist.
fn read_key_file(path: &Path) -> Result<Option<(Keypair, KeyFileContents)>, NetError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NetError::KeyFile { path: path.to_path_buf(), reason: format!("cannot read: {e}") }),
    };
    let invalid = |e: String| NetError::KeyFile {
        path: path.to_path_buf(),
        reason: format!("not a valid key ({e}); refusing to replace it, since the key is the node's identity"),
    };
    let contents = KeyFileContents::parse(&bytes).map_err(invalid)?;
    let keypair = Keypair::from_protobuf_encoding(&contents.key).map_err(|e| invalid(e.to_string()))?;
    Ok(Some((keypair, contents)))
}

fn create(data_dir: &Path, path: &Path) -> Result<Keypair, NetError> {
    fs::create_dir_all(data_dir).map_err(io_err("creating data directory", data_dir))?;

    let keypair = Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| NetError::KeyFile { path: path.to_path_buf(), reason: format!("cannot encode new key: {e}") })?;
    write_atomically(data_dir, path, &bytes)?;
    tracing::info!(peer_id = %keypair.public().to_peer_id(), path = %path.display(), "created a new node key");
    Ok(keypair)
}

/// Replace `path` with `bytes`: write a temporary file (mode 0600 from creation), fsync it,
/// rename it into place and fsync the directory. A crash mid-write leaves the old file or the
/// new one, never a truncated file that the next start would have to refuse.
fn write_atomically(data_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let tmp = tmp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing stale temporary key", &tmp)(e)),
    }
    let mut file = private_file(&tmp).map_err(io_err("creating key file", &tmp))?;
    file.write_all(bytes).map_err(io_err("writing key file", &tmp))?;
    file.sync_all().map_err(io_err("syncing key file", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("installing key file", path))?;
    sync_dir(data_dir).map_err(io_err("syncing data directory", data_dir))
}

/// Wrap an I/O error of `what` on `path`.
fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NetError {
    let path = path.to_path_buf();
    move |source| NetError::Io { what, path, source }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(unix)]
fn private_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // The mode is applied at creation, so the key is never readable by others, not even for
    // the moment between creating and chmod-ing the file.
    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    // The rename is only durable once the directory entry is.
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:o}"),
                "node key is accessible to other users; it should have mode 600"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path) {}
