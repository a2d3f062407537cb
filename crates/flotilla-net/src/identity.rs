//! The node key: created once, kept forever.
//!
//! The key's PeerId is the node's identity and its Raft node id, so losing or replacing the key
//! turns the node into a stranger to its own cluster. Hence: the key is written atomically and
//! durably, and a key file that exists but cannot be used is an error, never a reason to mint a
//! new key.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use crate::error::NetError;

/// Name of the key file inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// Load the node key from `<data_dir>/node.key`, or create a new ed25519 key there.
///
/// The file holds the protobuf encoding of the keypair and is created with mode 0600. A file
/// that cannot be read or decoded is reported as [`NetError::KeyFile`] and left untouched. A
/// readable key whose file permits access to group or others is used, with a warning.
pub fn load_or_create_keypair(data_dir: &Path) -> Result<Keypair, NetError> {
    let path = data_dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            warn_if_exposed(&path);
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| NetError::KeyFile {
                path: path.clone(),
                reason: format!("not a valid key ({e}); refusing to replace it, since the key is the node's identity"),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(data_dir, &path),
        Err(e) => Err(NetError::KeyFile { path, reason: format!("cannot read: {e}") }),
    }
}

fn create(data_dir: &Path, path: &Path) -> Result<Keypair, NetError> {
    fs::create_dir_all(data_dir).map_err(io_err("creating data directory", data_dir))?;

    let keypair = Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| NetError::KeyFile { path: path.to_path_buf(), reason: format!("cannot encode new key: {e}") })?;

    // Write a temporary file and rename it into place, so a crash mid-write leaves either no
    // key (a fresh one is made next time) or a complete one, never a truncated file that the
    // next start would have to refuse.
    let tmp = tmp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing stale temporary key", &tmp)(e)),
    }
    let mut file = private_file(&tmp).map_err(io_err("creating key file", &tmp))?;
    file.write_all(&bytes).map_err(io_err("writing key file", &tmp))?;
    file.sync_all().map_err(io_err("syncing key file", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("installing key file", path))?;
    sync_dir(data_dir).map_err(io_err("syncing data directory", data_dir))?;

    tracing::info!(peer_id = %keypair.public().to_peer_id(), path = %path.display(), "created a new node key");
    Ok(keypair)
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
