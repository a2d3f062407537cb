//! Small durable files with a checksum: the founding record of a namespace and the set of
//! namespaces a node serves. A file is replaced whole (temp file, fsync, rename, fsync of the
//! directory), so a crash leaves the old contents or the new ones; a CRC-32 in front of the
//! encoded body tells a damaged file from a valid one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Read and decode the file at `path` (a body of at most `max_bytes`); `None` when it does not
/// exist. A truncated or damaged file is an error: callers refuse to guess its contents.
pub(crate) fn read<T: DeserializeOwned>(path: &Path, max_bytes: u64) -> Result<Option<T>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    if bytes.len() < 4 {
        return Err(format!("{} is truncated", path.display()));
    }
    let (crc, body) = bytes.split_at(4);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(format!("{} fails its checksum", path.display()));
    }
    flotilla_core::decode(body, max_bytes).map(Some).map_err(|e| format!("decoding {}: {e}", path.display()))
}

/// Replace the file at `path` with `value`, durably: once this returns, a crash leaves this
/// value or a later one.
pub(crate) fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let body = flotilla_core::encode(value).map_err(|e| e.to_string())?;
    let mut bytes = crc32fast::hash(&body).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let dir = path.parent().ok_or_else(|| format!("{} has no directory", path.display()))?;
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut file = File::create(&tmp).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}
