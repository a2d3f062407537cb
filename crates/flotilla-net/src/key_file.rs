//! The format of `node.key`: the node's keypair and the namespaces its identity was admitted to.
//!
//! Two formats are read:
//!
//! - version 1 (every key written before memberships existed): the protobuf encoding of the
//!   keypair, nothing else;
//! - version 2: `FLKY`, a version byte `2`, the key (`u32` length, protobuf bytes), the
//!   memberships (`u32` count; per entry a `u8`-length namespace and a `u16`-length cluster
//!   id), and a CRC-32 of everything before it (big-endian integers throughout).
//!
//! The memberships live in the key file on purpose: they are facts about the identity, so they
//! must survive whatever survives the key (an operator who wipes a data directory but keeps
//! `node.key` keeps them) and must vanish with it (a new key is a new node). A protobuf
//! keypair starts with the byte `0x08`, so the magic cannot be mistaken for a version-1 file.

use std::collections::BTreeMap;

/// Namespace name -> id of the cluster that last admitted this identity to it.
pub type Memberships = BTreeMap<String, String>;

/// Start of a version-2 key file.
const MAGIC: &[u8; 4] = b"FLKY";
/// The version written.
const VERSION: u8 = 2;
/// Most memberships kept (a node serves far fewer namespaces; the bound keeps the file small).
pub const MAX_MEMBERSHIPS: usize = 16_384;
/// Longest cluster id kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_CLUSTER_BYTES: usize = 255;
/// Longest namespace name kept, in bytes.
const MAX_NAMESPACE_BYTES: usize = 255;

/// What a key file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyFileContents {
    /// The protobuf encoding of the keypair.
    pub(crate) key: Vec<u8>,
    /// Namespaces this identity was admitted to.
    pub(crate) memberships: Memberships,
}

impl KeyFileContents {
    /// Parse either format. A version-1 file is taken as a key without memberships (the caller
    /// decodes the key and reports a bad one).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        if !bytes.starts_with(MAGIC) {
            return Ok(Self { key: bytes.to_vec(), memberships: Memberships::new() });
        }
        if bytes.len() < MAGIC.len() + 1 + 4 {
            return Err("truncated".into());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_be_bytes() != crc {
            return Err("fails its checksum".into());
        }
        let mut r = Reader { bytes: &body[MAGIC.len()..] };
        let version = r.take(1)?[0];
        if version != VERSION {
            return Err(format!("unknown key file version {version}"));
        }
        let key_len = r.u32()? as usize;
        let key = r.take(key_len)?.to_vec();
        let count = r.u32()? as usize;
        if count > MAX_MEMBERSHIPS {
            return Err(format!("{count} memberships (at most {MAX_MEMBERSHIPS})"));
        }
        let mut memberships = Memberships::new();
        for _ in 0..count {
            let ns_len = r.take(1)?[0] as usize;
            let ns = r.string(ns_len)?;
            let cl_len = r.u16()? as usize;
            let cluster = r.string(cl_len)?;
            memberships.insert(ns, cluster);
        }
        if !r.bytes.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(Self { key, memberships })
    }

    /// Encode: version 1 when there are no memberships (so a key that was never admitted
    /// anywhere stays readable by older versions), version 2 otherwise.
    pub(crate) fn encode(&self) -> Vec<u8> {
        if self.memberships.is_empty() {
            return self.key.clone();
        }
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        out.extend((self.key.len() as u32).to_be_bytes());
        out.extend(&self.key);
        out.extend((self.memberships.len() as u32).to_be_bytes());
        for (ns, cluster) in &self.memberships {
            out.push(ns.len() as u8);
            out.extend(ns.as_bytes());
            out.extend((cluster.len() as u16).to_be_bytes());
            out.extend(cluster.as_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend(crc.to_be_bytes());
        out
    }

    /// Add or replace a membership, within the bounds. Returns whether anything changed.
    pub(crate) fn insert(&mut self, namespace: &str, cluster: &str) -> Result<bool, String> {
        if namespace.is_empty() || namespace.len() > MAX_NAMESPACE_BYTES {
            return Err(format!("namespace name of {} bytes", namespace.len()));
        }
        let cluster = truncate(cluster, MAX_CLUSTER_BYTES);
        if self.memberships.get(namespace).map(String::as_str) == Some(cluster) {
            return Ok(false);
        }
        if !self.memberships.contains_key(namespace) && self.memberships.len() >= MAX_MEMBERSHIPS {
            return Err(format!("already {MAX_MEMBERSHIPS} memberships"));
        }
        self.memberships.insert(namespace.to_string(), cluster.to_string());
        Ok(true)
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_round_trip_and_damage_is_detected() {
        let key = vec![0x08, 0x01, 0x12, 0x03, 1, 2, 3];
        let v1 = KeyFileContents { key: key.clone(), memberships: Memberships::new() };
        assert_eq!(v1.encode(), key, "no memberships: the version-1 format, byte for byte");
        assert_eq!(KeyFileContents::parse(&key).unwrap(), v1);

        let mut v2 = v1.clone();
        assert!(v2.insert("default", "12D3KooW/00000000000000ff").unwrap());
        assert!(!v2.insert("default", "12D3KooW/00000000000000ff").unwrap(), "unchanged");
        assert!(v2.insert("other", &"x".repeat(1000)).unwrap());
        assert_eq!(v2.memberships["other"].len(), MAX_CLUSTER_BYTES);
        let bytes = v2.encode();
        assert!(bytes.starts_with(MAGIC));
        assert_eq!(KeyFileContents::parse(&bytes).unwrap(), v2);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(KeyFileContents::parse(&bad) != Ok(v2.clone()), "flipping byte {i} went unnoticed");
        }
        assert!(KeyFileContents::parse(&bytes[..bytes.len() - 1]).is_err());
    }
}
