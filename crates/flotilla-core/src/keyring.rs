//! The cluster keyring: the shared secrets that seal node-to-node traffic (and, optionally, the
//! data at rest).
//!
//! A keyring file (`--cluster-key-file`) holds one key per line; blank lines and lines starting
//! with `#` are ignored. A key is either 64 hex digits (32 random bytes, as written by
//! `flotilla keygen`) or `passphrase: <text>`, stretched with PBKDF2-HMAC-SHA256
//! ([`PASSPHRASE_ITERATIONS`] rounds, a fixed salt: every node must derive the same key).
//!
//! The **first** key is the sealing key: new sessions are opened with it. The others are only
//! accepted, which is what makes rotation possible without downtime (add a key everywhere,
//! make it first everywhere, remove the old one everywhere; see `docs/SECURITY.md`).
//!
//! A key is known by its [`KeyId`], derived from the key with HKDF: it can be logged and shown
//! in status without revealing anything about the key.

use std::fmt;
use std::path::Path;

use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::config::ConfigError;
use crate::secret_file::read_secret_file;

/// Length of a cluster key in bytes.
pub const KEY_BYTES: usize = 32;
/// Most keys a keyring may hold; a rotation needs two.
pub const MAX_KEYS: usize = 8;
/// PBKDF2 rounds for passphrase keys (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
pub const PASSPHRASE_ITERATIONS: u32 = 600_000;
/// Shortest accepted passphrase, in bytes.
pub const MIN_PASSPHRASE_BYTES: usize = 12;
/// Largest keyring file accepted.
const MAX_KEYRING_FILE_BYTES: usize = 16 * 1024;
/// PBKDF2 salt. Fixed because every node must turn the same passphrase into the same key.
const PASSPHRASE_SALT: &[u8] = b"flotilla cluster key v1";

/// The public name of a key: the first 8 bytes of HKDF(key, "flotilla key id").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// One 32-byte cluster key. Its bytes never appear in `Debug` output.
#[derive(Clone)]
pub struct ClusterKey {
    id: KeyId,
    secret: [u8; KEY_BYTES],
}

impl ClusterKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(secret: [u8; KEY_BYTES]) -> Self {
        let mut id = [0u8; 8];
        Self::expand(&secret, b"flotilla key id", &mut id);
        Self { id: KeyId(id), secret }
    }

    /// A key stretched from a passphrase of at least [`MIN_PASSPHRASE_BYTES`] bytes.
    pub fn from_passphrase(passphrase: &str) -> Result<Self, ConfigError> {
        Self::from_passphrase_rounds(passphrase, PASSPHRASE_ITERATIONS)
    }

    fn from_passphrase_rounds(passphrase: &str, rounds: u32) -> Result<Self, ConfigError> {
        if passphrase.len() < MIN_PASSPHRASE_BYTES {
            return Err(ConfigError(format!(
                "a passphrase is {} bytes long; at least {MIN_PASSPHRASE_BYTES} are required",
                passphrase.len()
            )));
        }
        Ok(Self::from_bytes(pbkdf2_sha256(passphrase.as_bytes(), PASSPHRASE_SALT, rounds)))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut secret = [0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self::from_bytes(secret)
    }

    /// The key's public name.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key as it is written in a keyring file (64 hex digits).
    pub fn to_hex(&self) -> String {
        to_hex(&self.secret)
    }

    /// Fill `out` with key material derived from this key for the purpose named by `label`
    /// (HKDF-SHA256, no salt). Different labels give independent keys.
    pub fn derive(&self, label: &[u8], out: &mut [u8]) {
        Self::expand(&self.secret, label, out);
    }

    /// Derive key material bound to `salt` (e.g. a session's nonces) and `label`.
    pub fn derive_salted(&self, salt: &[u8], label: &[u8], out: &mut [u8]) {
        // Output lengths are at most 64 bytes here, far below HKDF's 255 * 32 limit.
        let _ = Hkdf::<Sha256>::new(Some(salt), &self.secret).expand(label, out);
    }

    fn expand(secret: &[u8; KEY_BYTES], label: &[u8], out: &mut [u8]) {
        let _ = Hkdf::<Sha256>::new(None, secret).expand(label, out);
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey({}, <redacted>)", self.id)
    }
}

/// The keys a node holds: the first seals, all are accepted.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<ClusterKey>,
}

impl Keyring {
    /// A keyring of `keys`, the first being the sealing key. Refuses an empty list, more than
    /// [`MAX_KEYS`] keys, and the same key twice.
    pub fn new(keys: Vec<ClusterKey>) -> Result<Self, ConfigError> {
        if keys.is_empty() {
            return Err(ConfigError("the keyring holds no key (generate one with: flotilla keygen)".into()));
        }
        if keys.len() > MAX_KEYS {
            return Err(ConfigError(format!("the keyring holds {} keys; at most {MAX_KEYS} are allowed", keys.len())));
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(ConfigError(format!("the keyring holds key {} twice", key.id)));
            }
        }
        Ok(Self { keys })
    }

    /// Parse the text of a keyring file (see the module documentation).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at_line = |ConfigError(why)| ConfigError(format!("line {}: {why}", n + 1));
            keys.push(parse_key(line).map_err(at_line)?);
        }
        Self::new(keys)
    }

    /// Read and parse the keyring file at `path`; it must be mode 0600 or stricter.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_secret_file(path, "cluster key file", MAX_KEYRING_FILE_BYTES)?;
        Self::parse(&text).map_err(|ConfigError(why)| ConfigError(format!("{}: {why}", path.display())))
    }

    /// The sealing key.
    pub fn current(&self) -> &ClusterKey {
        &self.keys[0]
    }

    /// The key named `id`, if this keyring holds it.
    pub fn get(&self, id: KeyId) -> Option<&ClusterKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Every key, the sealing key first.
    pub fn keys(&self) -> &[ClusterKey] {
        &self.keys
    }

    /// The ids of every key, the sealing key first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id).collect()
    }
}

fn parse_key(line: &str) -> Result<ClusterKey, ConfigError> {
    if let Some(passphrase) = line.strip_prefix("passphrase:") {
        return ClusterKey::from_passphrase(passphrase.trim());
    }
    let hex = line.strip_prefix("hex:").unwrap_or(line).trim();
    let bytes = from_hex(hex).ok_or_else(|| {
        ConfigError("a key is 64 hex digits or `passphrase: <text>` (generate one with: flotilla keygen)".into())
    })?;
    let secret: [u8; KEY_BYTES] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| ConfigError(format!("a key is {KEY_BYTES} bytes (64 hex digits), not {}", b.len())))?;
    Ok(ClusterKey::from_bytes(secret))
}

/// PBKDF2-HMAC-SHA256 (RFC 8018) with one 32-byte output block.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], rounds: u32) -> [u8; KEY_BYTES] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let Ok(prf) = hmac::Hmac::<Sha256>::new_from_slice(password) else { unreachable!("HMAC takes keys of any length") };
    let mut u: [u8; KEY_BYTES] =
        prf.clone().chain_update(salt).chain_update(1u32.to_be_bytes()).finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..rounds {
        u = prf.clone().chain_update(u).finalize().into_bytes().into();
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() & 1 == 1 || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn pbkdf2_matches_the_rfc_7914_vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1, first 32 bytes.
        let out = pbkdf2_sha256(b"passwd", b"salt", 1);
        assert_eq!(to_hex(&out), "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc");
        // Also c=2 would differ from c=1: the loop runs.
        assert_ne!(pbkdf2_sha256(b"passwd", b"salt", 2), out);
    }

    #[test]
    fn keyring_files_parse_with_the_first_key_sealing() {
        let other = ClusterKey::generate();
        let text = format!("# rotation in progress\n{}\n\nhex:{K1}\n", other.to_hex());
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.ids(), vec![other.id(), Keyring::parse(K1).unwrap().current().id()]);
        assert_eq!(ring.current().id(), other.id());
        assert!(ring.get(other.id()).is_some());
        assert!(ring.get(KeyId([0; 8])).is_none());
    }

    #[test]
    fn bad_keyrings_are_refused_without_showing_keys() {
        assert!(Keyring::parse("# nothing\n").unwrap_err().0.contains("no key"));
        assert!(Keyring::parse(&K1[..62]).unwrap_err().0.contains("32 bytes"));
        let err = Keyring::parse(&format!("{K1}\n{}zz", &K1[..62])).unwrap_err().0;
        assert!(err.contains("line 2") && !err.contains(&K1[..16]), "{err}");
        assert!(Keyring::parse(&format!("{K1}\nhex:{K1}")).unwrap_err().0.contains("twice"));
        assert!(Keyring::parse("passphrase: short").unwrap_err().0.contains("at least"));
        let key = Keyring::parse(K1).unwrap();
        assert!(!format!("{key:?}").contains("0001020304"));
    }

    #[test]
    fn passphrases_give_stable_distinct_keys() {
        let a = ClusterKey::from_passphrase_rounds("correct horse battery", 10).unwrap();
        let b = ClusterKey::from_passphrase_rounds("correct horse battery", 10).unwrap();
        let c = ClusterKey::from_passphrase_rounds("correct horse battery!", 10).unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
    }

    #[test]
    fn derived_keys_depend_on_label_and_salt() {
        let key = Keyring::parse(K1).unwrap().current().clone();
        let (mut a, mut b, mut c) = ([0u8; 32], [0u8; 32], [0u8; 32]);
        key.derive(b"one", &mut a);
        key.derive(b"two", &mut b);
        key.derive_salted(b"salt", b"one", &mut c);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(&a[..8], &key.id().0[..]);
    }
}
