//! Reading secrets from files the way ssh reads private keys.
//!
//! Shared by the admin token and the cluster keyring: the file must be a regular file that
//! neither group nor others may access, and it is read with a size cap so a wrong path (a
//! device, a huge log) cannot exhaust memory.

use std::io::Read;
use std::path::Path;

use crate::config::ConfigError;

/// Read the text of the secret file at `path`, naming it `what` in errors.
///
/// Refuses a file that cannot be read, is not a regular file, is accessible by group or others
/// (mode & 0o077 != 0), is longer than `max_bytes`, or is not UTF-8. The content never appears
/// in an error.
pub fn read_secret_file(path: &Path, what: &str, max_bytes: usize) -> Result<String, ConfigError> {
    let shown = path.display();
    let cannot_read = |e: std::io::Error| ConfigError(format!("cannot read the {what} {shown}: {e}"));
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    // Checked on the open file, so the file read is the file checked.
    let meta = file.metadata().map_err(cannot_read)?;
    if !meta.is_file() {
        return Err(ConfigError(format!("the {what} {shown} is not a regular file")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError(format!(
                "the {what} {shown} is accessible by group or others (mode {mode:04o}); run: chmod 600 {shown}"
            )));
        }
    }
    let mut bytes = Vec::new();
    file.take(max_bytes as u64 + 1).read_to_end(&mut bytes).map_err(cannot_read)?;
    if bytes.len() > max_bytes {
        return Err(ConfigError(format!("the {what} {shown} is longer than {max_bytes} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| ConfigError(format!("the {what} {shown} is not text (use base64 or hex)")))
}
