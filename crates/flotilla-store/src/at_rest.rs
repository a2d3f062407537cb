//! Encryption at rest: XChaCha20-Poly1305 sealing of the records the store keeps on disk, so a copied
//! data directory reveals no client data without the key.
//!
//! # What is sealed
//!
//! | where                          | sealed | why                                                  |
//! |--------------------------------|--------|------------------------------------------------------|
//! | `log/<ns>` values (entries)    | yes    | entries carry client commands, values included       |
//! | `kv/<ns>` values               | yes    | client values                                        |
//! | `dedup/<ns>` values            | yes    | command results may echo client values               |
//! | `snapshots/<ns>/current.snap`, `snapshots/.incoming/*` | yes | in 1 MiB segments, behind a readable header (`snapshot_segments`) |
//! | `kv/<ns>` keys                 | no     | ordered range scans (`Store::keys`) need them in the clear |
//! | `meta/<ns>` (vote, log ids, membership, snapshot header) | no | Raft bookkeeping, no client data |
//! | `dedup-order/<ns>`, table names | no    | request ids and namespace names                      |
//!
//! Snapshots are sealed only in their file: a [`crate::SnapshotData`] reads as plaintext (its
//! segments are opened as they are read), so what openraft sends to other nodes is plaintext
//! (the transport encrypts it), and nodes need not share a key.
//!
//! # Format
//!
//! A sealed record is `[version 1][key id 8][nonce 24][ciphertext][tag 16]`, sealed with
//! XChaCha20-Poly1305. The key id is in
//! the clear so the right key can be picked (and old keys found by a reseal) without trying
//! every key. The *context* given to [`AtRestCipher::seal`] is the AEAD's associated data:
//! the store passes the table name and the record's key (log index, kv key, request id), so a
//! sealed value moved to another key, entry, table or namespace fails authentication.
//!
//! # Limits
//!
//! - Nonces are random. XChaCha20-Poly1305 is used rather than AES-256-GCM because its nonce
//!   has 192 bits: random nonces never collide in practice (GCM's 96-bit random nonces are
//!   bounded to 2^32 seals per key, which a busy node reaches in weeks, since every write seals
//!   about three records on every replica). A counter nonce would need a persisted counter
//!   that survives crashes without ever going back; a random one needs nothing.
//!   ([`AtRestCipher::seal_count`] still counts the seals of this process.)
//! - No rollback protection: an attacker who can write the data directory can put back an
//!   older sealed value of the same key. Sealing protects confidentiality and detects edits.
//! - Sealing an existing plaintext store rewrites every record, then compacts the redb file so
//!   the pages that held plaintext are released; blocks the file system or the disk kept
//!   (copy-on-write, SSD remapping, backups) are out of reach. Re-seed the node from an empty
//!   data directory when that matters.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::error::StoreError;

/// Bytes of a key id.
pub const KEY_ID_LEN: usize = 8;
/// Version byte of the sealed-record layout.
const VERSION: u8 = 1;
/// Bytes of an XChaCha20-Poly1305 nonce.
const NONCE_LEN: usize = 24;
/// Bytes of a Poly1305 tag.
const TAG_LEN: usize = 16;
/// Bytes before the ciphertext: version, key id, nonce.
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// Bytes a seal adds to its plaintext.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// One 256-bit key and the id sealed records name it by.
#[derive(Clone, PartialEq, Eq)]
pub struct AtRestKey {
    /// Identifies the key in every record sealed with it (stored in the clear).
    pub id: [u8; KEY_ID_LEN],
    /// The 256-bit key.
    pub key: [u8; 32],
}

impl fmt::Debug for AtRestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtRestKey").field("id", &key_id_hex(&self.id)).field("key", &"<redacted>").finish()
    }
}

/// Seals and opens records with a set of keys: new seals use the current key, opening picks
/// the key a record names. Share it as an `Arc` through [`crate::StoreOptions`].
pub struct AtRestCipher {
    keys: Vec<([u8; KEY_ID_LEN], XChaCha20Poly1305)>,
    current: usize,
    seals: AtomicU64,
}

impl fmt::Debug for AtRestCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|(id, _)| key_id_hex(id)).collect();
        f.debug_struct("AtRestCipher")
            .field("key_ids", &ids)
            .field("current", &key_id_hex(&self.current_key_id()))
            .finish_non_exhaustive()
    }
}

impl AtRestCipher {
    /// A cipher over `keys` sealing with the key whose id is `current`. Fails on an empty list,
    /// a repeated id or a `current` id that is not in the list.
    pub fn new(keys: impl IntoIterator<Item = AtRestKey>, current: [u8; KEY_ID_LEN]) -> Result<Self, StoreError> {
        let mut list: Vec<([u8; KEY_ID_LEN], XChaCha20Poly1305)> = Vec::new();
        for k in keys {
            if list.iter().any(|(id, _)| *id == k.id) {
                return Err(StoreError::Invalid(format!("at-rest key id {} is given twice", key_id_hex(&k.id))));
            }
            list.push((k.id, XChaCha20Poly1305::new(&k.key.into())));
        }
        if list.is_empty() {
            return Err(StoreError::Invalid("an at-rest cipher needs at least one key".into()));
        }
        let current = list.iter().position(|(id, _)| *id == current).ok_or_else(|| {
            StoreError::Invalid(format!("the current at-rest key {} is not among the keys", key_id_hex(&current)))
        })?;
        Ok(Self { keys: list, current, seals: AtomicU64::new(0) })
    }

    /// The id of the key new records are sealed with.
    pub fn current_key_id(&self) -> [u8; KEY_ID_LEN] {
        self.keys[self.current].0
    }

    /// The ids of every key this cipher can open records with.
    pub fn key_ids(&self) -> Vec<[u8; KEY_ID_LEN]> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }

    /// Whether this cipher holds the key `id`.
    pub fn has_key(&self, id: &[u8; KEY_ID_LEN]) -> bool {
        self.keys.iter().any(|(k, _)| k == id)
    }

    /// Seals performed by this cipher since it was built (see the nonce bound in the module
    /// documentation).
    pub fn seal_count(&self) -> u64 {
        self.seals.load(Ordering::Relaxed)
    }

    /// Seal `plain` with the current key, bound to `context` (authenticated, not stored):
    /// `[version][key id][nonce][ciphertext][tag]`. Fails only for a plaintext beyond the
    /// cipher's 256 GiB limit.
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (id, aead) = &self.keys[self.current];
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plain.len());
        out.push(VERSION);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = aead
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), context, &mut out[HEADER_LEN..])
            .map_err(|_| StoreError::Invalid(format!("{} bytes are too many to seal", plain.len())))?;
        out.extend_from_slice(&tag);
        self.seals.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// Open a record written by [`AtRestCipher::seal`] with the same `context`.
    ///
    /// Errors: [`StoreError::AtRestKeyMissing`] when the record names a key this cipher does
    /// not hold, [`StoreError::AtRestCorrupt`] when it is malformed or fails authentication
    /// (edited, damaged, sealed under another context, or a different key with the same id).
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let id = sealed_key_id(sealed)?;
        let (_, aead) = self.keys.iter().find(|(k, _)| *k == id).ok_or(StoreError::AtRestKeyMissing { id })?;
        let nonce = XNonce::from_slice(&sealed[1 + KEY_ID_LEN..HEADER_LEN]);
        let (body, tag) = sealed[HEADER_LEN..].split_at(sealed.len() - SEAL_OVERHEAD);
        let mut plain = body.to_vec();
        aead.decrypt_in_place_detached(nonce, context, &mut plain, Tag::from_slice(tag))
            .map_err(|_| StoreError::AtRestCorrupt("authentication failed".into()))?;
        Ok(plain)
    }
}

/// The key id a sealed record names, after checking its length and version.
pub fn sealed_key_id(sealed: &[u8]) -> Result<[u8; KEY_ID_LEN], StoreError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(StoreError::AtRestCorrupt(format!(
            "{} bytes is shorter than a sealed record ({SEAL_OVERHEAD})",
            sealed.len()
        )));
    }
    if sealed[0] != VERSION {
        return Err(StoreError::AtRestCorrupt(format!("unknown sealed-record version {}", sealed[0])));
    }
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&sealed[1..1 + KEY_ID_LEN]);
    Ok(id)
}

/// A key id as 16 hex digits, the form errors and logs show.
pub fn key_id_hex(id: &[u8; KEY_ID_LEN]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Key ids as a comma-separated list of hex ids.
pub(crate) fn key_ids_hex(ids: &[[u8; KEY_ID_LEN]]) -> String {
    ids.iter().map(key_id_hex).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> AtRestKey {
        AtRestKey { id: [n; 8], key: [n.wrapping_mul(31); 32] }
    }

    #[test]
    fn round_trip_binds_context_and_names_the_key() {
        let c = AtRestCipher::new([key(1), key(2)], [2; 8]).unwrap();
        let sealed = c.seal(b"kv/a\0k", b"secret").unwrap();
        assert_eq!(sealed.len(), SEAL_OVERHEAD + 6);
        assert_eq!(sealed_key_id(&sealed).unwrap(), [2; 8]);
        assert_eq!(c.open(b"kv/a\0k", &sealed).unwrap(), b"secret");
        assert!(matches!(c.open(b"kv/a\0j", &sealed), Err(StoreError::AtRestCorrupt(_))));
        assert_ne!(c.seal(b"x", b"same").unwrap(), c.seal(b"x", b"same").unwrap(), "fresh nonce per seal");
        assert_eq!(c.seal_count(), 3);
    }

    #[test]
    fn every_flip_and_truncation_is_an_error() {
        let c = AtRestCipher::new([key(1)], [1; 8]).unwrap();
        let sealed = c.seal(b"ctx", b"value").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = c.open(b"ctx", &bad).unwrap_err();
            assert!(
                matches!(err, StoreError::AtRestCorrupt(_) | StoreError::AtRestKeyMissing { .. }),
                "byte {i}: {err:?}"
            );
        }
        for len in 0..sealed.len() {
            assert!(c.open(b"ctx", &sealed[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn a_missing_key_is_named() {
        let old = AtRestCipher::new([key(1)], [1; 8]).unwrap();
        let new = AtRestCipher::new([key(2)], [2; 8]).unwrap();
        let sealed = old.seal(b"c", b"v").unwrap();
        assert_eq!(new.open(b"c", &sealed).unwrap_err(), StoreError::AtRestKeyMissing { id: [1; 8] });
        let msg = new.open(b"c", &sealed).unwrap_err().to_string();
        assert!(msg.contains("0101010101010101"), "{msg}");
    }

    #[test]
    fn bad_key_lists_are_refused_and_debug_hides_keys() {
        assert!(AtRestCipher::new([], [1; 8]).is_err());
        assert!(AtRestCipher::new([key(1), key(1)], [1; 8]).is_err());
        assert!(AtRestCipher::new([key(1)], [2; 8]).is_err());
        let k = key(7);
        let shown = format!("{k:?} {:?}", AtRestCipher::new([k.clone()], [7; 8]).unwrap());
        assert!(!shown.contains(&format!("{:?}", k.key)) && !shown.contains("217"), "{shown}");
    }
}
