//! Validated namespace names.
//!
//! A namespace is an independent Raft group. Its name ends up in storage table names and in
//! wire frames, so it is validated once, here, and carried as a [`Namespace`] afterwards.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted namespace name, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;

/// Why a namespace name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum NamespaceError {
    /// The name was empty.
    #[error("namespace name is empty")]
    Empty,
    /// The name was longer than [`MAX_NAMESPACE_LEN`].
    #[error("namespace name is {0} bytes long; at most {MAX_NAMESPACE_LEN} are allowed")]
    TooLong(usize),
    /// The name contained a character outside `[a-z0-9._-]` or did not start with `[a-z0-9]`.
    #[error("namespace name {0:?} must match [a-z0-9][a-z0-9._-]{{0,63}}")]
    BadCharacter(String),
}

/// A namespace name matching `[a-z0-9][a-z0-9._-]{0,63}`.
///
/// ```
/// use flotilla_core::Namespace;
///
/// let orders = Namespace::new("orders").expect("a valid name");
/// assert_eq!(orders.to_string(), "orders");
/// assert!(Namespace::new("Orders").is_err()); // lower case, digits, `.`, `_` and `-` only
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Namespace(String);

impl Namespace {
    /// Validate `name` and wrap it.
    ///
    /// ```
    /// use flotilla_core::{Namespace, NamespaceError};
    ///
    /// assert!(Namespace::new("tenant-4711").is_ok());
    /// assert_eq!(Namespace::new(""), Err(NamespaceError::Empty));
    /// assert!(matches!(Namespace::new("-leading-dash"), Err(NamespaceError::BadCharacter(_))));
    /// ```
    pub fn new(name: impl Into<String>) -> Result<Self, NamespaceError> {
        let name = name.into();
        validate(&name)?;
        Ok(Self(name))
    }

    /// The name as a string slice.
    ///
    /// ```
    /// let ns = flotilla_core::Namespace::new("orders").expect("valid");
    /// assert_eq!(ns.as_str(), "orders");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(name: &str) -> Result<(), NamespaceError> {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return Err(NamespaceError::Empty);
    };
    if bytes.len() > MAX_NAMESPACE_LEN {
        return Err(NamespaceError::TooLong(bytes.len()));
    }
    let leading_ok = first.is_ascii_lowercase() || first.is_ascii_digit();
    let rest_ok = bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if !leading_ok || !rest_ok {
        return Err(NamespaceError::BadCharacter(name.to_string()));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Namespace::new(name).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Namespace {
    type Err = NamespaceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Namespace::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_simple_names() {
        for name in ["default", "a", "0", "jobs.v2", "a_b-c", &"x".repeat(64)] {
            assert!(Namespace::new(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_hostile_names() {
        assert_eq!(Namespace::new(""), Err(NamespaceError::Empty));
        assert_eq!(Namespace::new("x".repeat(65)), Err(NamespaceError::TooLong(65)));
        for name in ["..", "../x", "a/b", "A", "-a", ".a", "a\0", "a b", "é"] {
            assert!(matches!(Namespace::new(name), Err(NamespaceError::BadCharacter(_))), "{name:?}");
        }
    }

    #[test]
    fn deserialization_validates() {
        let bytes = crate::encode(&"../etc".to_string()).unwrap();
        assert!(crate::decode::<Namespace>(&bytes, 1024).is_err());
        let bytes = crate::encode(&"ok".to_string()).unwrap();
        assert_eq!(crate::decode::<Namespace>(&bytes, 1024).unwrap().as_str(), "ok");
    }
}
