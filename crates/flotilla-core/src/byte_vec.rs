//! Serde support that encodes a `Vec<u8>` as one block of bytes.
//!
//! Serde treats a `Vec<u8>` as a sequence and visits it byte by byte. The bincode output is
//! the same either way (a length, then the bytes), but the per-byte path costs about 150 ms
//! per MiB each way in a debug build, enough to make 1 MiB values miss every replication
//! deadline in tests. Use it on every field that carries user data:
//! `#[serde(with = "crate::byte_vec")]`.

use serde::de::{Deserializer, Error, SeqAccess, Visitor};
use serde::Serializer;

/// Serialize `bytes` as one block.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Deserialize a block of bytes (or, from self-describing formats, a sequence of bytes).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(ByteVecVisitor)
}

struct ByteVecVisitor;

impl<'de> Visitor<'de> for ByteVecVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte array")
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // The size hint comes from the input: cap the reservation so it cannot be abused.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain(Vec<u8>);

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Block(#[serde(with = "crate::byte_vec")] Vec<u8>);

    #[test]
    fn the_encoding_is_the_same_as_a_plain_vec() {
        let data: Vec<u8> = (0..=255).collect();
        let plain = crate::encode(&Plain(data.clone())).unwrap();
        let block = crate::encode(&Block(data.clone())).unwrap();
        assert_eq!(plain, block);
        let back: Block = crate::decode(&plain, 1 << 20).unwrap();
        assert_eq!(back.0, data);
    }
}
