//! Client-chosen idempotency keys: a client that retries a write after an unknown outcome
//! sends the same key, and the write is applied at most once within the deduplication window
//! (the last 100 000 deduplicated writes of the namespace).
//!
//! The key becomes the write's [`RequestId`]: a SHA-256 of the namespace and the key, so the
//! same key names the same write on every node, and keys of different namespaces never meet.

use sha2::{Digest, Sha256};

use crate::command::RequestId;
use crate::namespace::Namespace;

/// Longest accepted idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Why an idempotency key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    /// The key was empty.
    #[error("the idempotency key is empty")]
    Empty,
    /// The key was longer than [`MAX_IDEMPOTENCY_KEY_LEN`] bytes.
    #[error("the idempotency key is {0} bytes long; at most {MAX_IDEMPOTENCY_KEY_LEN} are allowed")]
    TooLong(usize),
    /// The key held a byte outside visible ASCII (`!` to `~`).
    #[error("the idempotency key may hold visible ASCII characters only (no spaces or control characters)")]
    BadCharacter,
}

/// A validated idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII characters.
///
/// ```
/// use flotilla_core::{IdempotencyKey, Namespace};
///
/// let key = IdempotencyKey::new("order-42/create").expect("visible ASCII");
/// let (orders, users) = (Namespace::new("orders").unwrap(), Namespace::new("users").unwrap());
/// // The same key names the same write on every node, and different writes in different namespaces.
/// assert_eq!(key.request_id(&orders), IdempotencyKey::new("order-42/create").unwrap().request_id(&orders));
/// assert_ne!(key.request_id(&orders), key.request_id(&users));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validate `key`.
    ///
    /// ```
    /// use flotilla_core::IdempotencyKey;
    ///
    /// assert!(IdempotencyKey::new("3f2a9c1e-retry-safe").is_ok());
    /// assert!(IdempotencyKey::new("has a space").is_err()); // visible ASCII only
    /// ```
    pub fn new(key: impl Into<String>) -> Result<Self, IdempotencyKeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(IdempotencyKeyError::Empty);
        }
        if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(IdempotencyKeyError::TooLong(key.len()));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IdempotencyKeyError::BadCharacter);
        }
        Ok(Self(key))
    }

    /// The key as given.
    ///
    /// ```
    /// let key = flotilla_core::IdempotencyKey::new("order-42").expect("valid");
    /// assert_eq!(key.as_str(), "order-42");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The request id of the write this key names in `namespace`.
    ///
    /// ```
    /// use flotilla_core::{IdempotencyKey, Namespace};
    ///
    /// let key = IdempotencyKey::new("order-42").expect("valid");
    /// let orders = Namespace::new("orders").expect("valid");
    /// assert_eq!(key.request_id(&orders), key.clone().request_id(&orders)); // deterministic
    /// ```
    pub fn request_id(&self, namespace: &Namespace) -> RequestId {
        let mut hash = Sha256::new();
        hash.update(b"flotilla/idempotency-key/v1\0");
        hash.update(namespace.as_str().as_bytes());
        hash.update([0]);
        hash.update(self.0.as_bytes());
        let digest = hash.finalize();
        let word = |i: usize| u64::from_be_bytes(digest[i..i + 8].try_into().expect("8 bytes of a 32-byte digest"));
        RequestId { client: word(0), seq: word(8) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert_eq!(IdempotencyKey::new(""), Err(IdempotencyKeyError::Empty));
        assert_eq!(IdempotencyKey::new("a b"), Err(IdempotencyKeyError::BadCharacter));
        assert_eq!(IdempotencyKey::new("é"), Err(IdempotencyKeyError::BadCharacter));
        assert_eq!(IdempotencyKey::new("x".repeat(256)), Err(IdempotencyKeyError::TooLong(256)));
        assert!(IdempotencyKey::new("x".repeat(255)).is_ok());
        assert!(IdempotencyKey::new("order-42/retry_ok~").is_ok());
    }

    #[test]
    fn the_same_key_names_the_same_write_per_namespace() {
        let a = Namespace::new("a").unwrap();
        let b = Namespace::new("b").unwrap();
        let key = IdempotencyKey::new("order-42").unwrap();
        assert_eq!(key.request_id(&a), IdempotencyKey::new("order-42").unwrap().request_id(&a));
        assert_ne!(key.request_id(&a), key.request_id(&b));
        assert_ne!(key.request_id(&a), IdempotencyKey::new("order-43").unwrap().request_id(&a));
    }
}
