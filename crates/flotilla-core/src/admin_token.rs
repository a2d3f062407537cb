//! The admin token that guards the HTTP control plane (membership, leadership, dissolve).
//!
//! The token lives in a file named by `--admin-token-file`. [`AdminToken::load`] reads it the
//! way ssh reads a private key: the file must not be accessible by group or others, and its
//! content (surrounding whitespace trimmed) must be at least [`MIN_ADMIN_TOKEN_BYTES`] visible
//! ASCII characters. Generate one with
//! `head -c 32 /dev/urandom | base64 > token && chmod 600 token`.
//!
//! The token never appears in `Debug` output or in error messages.

use std::fmt;
use std::path::Path;

use crate::config::ConfigError;
use crate::secret_file::read_secret_file;

/// Shortest accepted admin token, in bytes.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;
/// Longest accepted admin token, in bytes.
pub const MAX_ADMIN_TOKEN_BYTES: usize = 4096;

/// A shared secret presented as `Authorization: Bearer <token>` on admin routes.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token from its text: surrounding whitespace is trimmed, and the rest must be
    /// [`MIN_ADMIN_TOKEN_BYTES`] to [`MAX_ADMIN_TOKEN_BYTES`] visible ASCII characters (so it
    /// travels unchanged in an HTTP header).
    pub fn new(secret: &str) -> Result<Self, ConfigError> {
        let secret = secret.trim();
        if secret.len() < MIN_ADMIN_TOKEN_BYTES {
            return Err(ConfigError(format!(
                "the admin token is {} bytes long; at least {MIN_ADMIN_TOKEN_BYTES} are required \
                 (generate one with: head -c 32 /dev/urandom | base64)",
                secret.len()
            )));
        }
        if secret.len() > MAX_ADMIN_TOKEN_BYTES {
            return Err(ConfigError(format!("the admin token is longer than {MAX_ADMIN_TOKEN_BYTES} bytes")));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError(
                "the admin token holds characters other than visible ASCII \
                 (generate one with: head -c 32 /dev/urandom | base64)"
                    .into(),
            ));
        }
        Ok(Self(secret.to_string()))
    }

    /// Read the token from `path`. Refuses a file that cannot be read, that is not a regular
    /// file, that group or others may access (mode & 0o077 != 0, as ssh does for keys), or whose
    /// content is not a valid token (see [`AdminToken::new`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        // Twice the longest token: surrounding whitespace is allowed, anything longer is wrong.
        let text = read_secret_file(path, "admin token file", MAX_ADMIN_TOKEN_BYTES * 2)?;
        Self::new(&text).map_err(|ConfigError(why)| ConfigError(format!("{}: {why}", path.display())))
    }

    /// The token's text, for a client to send.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, compared in constant time (see [`constant_time_eq`]).
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Compare two byte strings in time that depends only on their lengths, never on where they
/// first differ. (The length of the secret is not hidden; a token's length is no secret.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abcdef", b"abcde"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn tokens_are_trimmed_and_checked() {
        let t = AdminToken::new("  0123456789abcdef\n").unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeF"));
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new("0123456789 abcdef").is_err(), "inner whitespace");
        assert!(AdminToken::new(&"x".repeat(MAX_ADMIN_TOKEN_BYTES + 1)).is_err());
        assert_eq!(format!("{t:?}"), "AdminToken(<redacted>)");
    }

    #[cfg(unix)]
    #[test]
    fn token_files_are_checked_like_ssh_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("flotilla-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(AdminToken::load(&path).unwrap().matches(b"0123456789abcdef0123"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = AdminToken::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && !err.contains("0123456789abcdef"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "tooshort").unwrap();
        assert!(AdminToken::load(&path).unwrap_err().to_string().contains("at least 16"));
        assert!(AdminToken::load(&dir.join("missing")).unwrap_err().to_string().contains("cannot read"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
