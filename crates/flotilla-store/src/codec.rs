//! How values are laid out in redb: the project codec ([`flotilla_core::encode`]) wrapped in a
//! CRC32 frame, so a flipped bit on disk is reported as corruption instead of decoding into a
//! wrong value (or a panic further up).
//!
//! Records that may hold client data (log entries, kv values, dedup records) go through a
//! [`Codec`] instead: in a store encrypted at rest it seals them with XChaCha20-Poly1305 (whose tag also
//! replaces the CRC), bound to where they live; in a plaintext store it keeps the layout above
//! (and kv values raw, as they always were). Sealing happens here, at the encode/decode
//! boundary, so the rest of the store handles plaintext only.

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::at_rest::AtRestCipher;
use crate::error::StoreError;

/// Bytes of the CRC32 prefix.
const CRC_LEN: usize = 4;

/// `[crc32(payload) as u32 LE][payload]`.
pub(crate) fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CRC_LEN + payload.len());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Check the CRC32 frame written by [`seal`] and return the payload. `what` names the value in
/// the error message (namespace, table and key), so an operator can find it.
pub(crate) fn unseal<'a>(sealed: &'a [u8], what: &dyn Fn() -> String) -> Result<&'a [u8], StoreError> {
    let Some((crc, payload)) = sealed.split_first_chunk::<CRC_LEN>() else {
        return Err(StoreError::corrupt(format!("{}: {} bytes is too short for its checksum", what(), sealed.len())));
    };
    let stored = u32::from_le_bytes(*crc);
    let actual = crc32fast::hash(payload);
    if stored != actual {
        return Err(StoreError::corrupt(format!(
            "{}: checksum mismatch (stored {stored:08x}, computed {actual:08x})",
            what()
        )));
    }
    Ok(payload)
}

/// Encode `value` with the project codec and seal it.
pub(crate) fn encode_sealed<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let bytes = flotilla_core::encode(value).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(seal(&bytes))
}

/// Unseal and decode a value written by [`encode_sealed`]. The decoder may not allocate more
/// than the stored bytes could describe, so a corrupted length cannot exhaust memory.
pub(crate) fn decode_sealed<T: DeserializeOwned>(sealed: &[u8], what: &dyn Fn() -> String) -> Result<T, StoreError> {
    let payload = unseal(sealed, what)?;
    decode_bounded(payload, what)
}

/// Decode `bytes` with the project codec, bounded by their length.
pub(crate) fn decode_bounded<T: DeserializeOwned>(bytes: &[u8], what: &dyn Fn() -> String) -> Result<T, StoreError> {
    flotilla_core::decode(bytes, bytes.len() as u64).map_err(|e| StoreError::corrupt(format!("{}: {e}", what())))
}

/// Protects the records of one store: plaintext (CRC frames) or sealed at rest. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Codec {
    cipher: Option<Arc<AtRestCipher>>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("sealed", &self.cipher.is_some()).finish()
    }
}

impl Codec {
    /// Seal with `cipher`, or keep plaintext with `None`.
    pub(crate) fn new(cipher: Option<Arc<AtRestCipher>>) -> Self {
        Self { cipher }
    }

    /// The cipher, in a store encrypted at rest.
    pub(crate) fn cipher(&self) -> Option<&Arc<AtRestCipher>> {
        self.cipher.as_ref()
    }

    /// The stored form of an encoded record (log entry, dedup record) living at `context`.
    pub(crate) fn protect(&self, context: &[u8], payload: &[u8]) -> Result<Vec<u8>, StoreError> {
        match &self.cipher {
            Some(c) => c.seal(context, payload),
            None => Ok(seal(payload)),
        }
    }

    /// The payload of a record stored by [`Codec::protect`] at `context`; `what` names it in
    /// errors.
    pub(crate) fn unprotect<'a>(
        &self,
        context: &[u8],
        stored: &'a [u8],
        what: &dyn Fn() -> String,
    ) -> Result<Cow<'a, [u8]>, StoreError> {
        match &self.cipher {
            Some(c) => open_at(c, context, stored, what).map(Cow::Owned),
            None => unseal(stored, what).map(Cow::Borrowed),
        }
    }

    /// The stored form of a kv value: sealed at rest, raw in a plaintext store (kv values never
    /// had a CRC frame; the state machine's own encoding is opaque to the store).
    pub(crate) fn protect_value<'a>(&self, context: &[u8], value: &'a [u8]) -> Result<Cow<'a, [u8]>, StoreError> {
        match &self.cipher {
            Some(c) => c.seal(context, value).map(Cow::Owned),
            None => Ok(Cow::Borrowed(value)),
        }
    }

    /// The value of a kv record stored by [`Codec::protect_value`] at `context`.
    pub(crate) fn unprotect_value<'a>(
        &self,
        context: &[u8],
        stored: &'a [u8],
        what: &dyn Fn() -> String,
    ) -> Result<Cow<'a, [u8]>, StoreError> {
        match &self.cipher {
            Some(c) => open_at(c, context, stored, what).map(Cow::Owned),
            None => Ok(Cow::Borrowed(stored)),
        }
    }

    /// Encode `value` with the project codec and protect it.
    pub(crate) fn encode<T: Serialize>(&self, context: &[u8], value: &T) -> Result<Vec<u8>, StoreError> {
        let bytes = flotilla_core::encode(value).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.protect(context, &bytes)
    }

    /// Unprotect and decode a record written by [`Codec::encode`].
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        context: &[u8],
        stored: &[u8],
        what: &dyn Fn() -> String,
    ) -> Result<T, StoreError> {
        let payload = self.unprotect(context, stored, what)?;
        decode_bounded(&payload, what)
    }
}

/// Open a sealed record, naming it in an authentication failure.
fn open_at(
    cipher: &AtRestCipher,
    context: &[u8],
    stored: &[u8],
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>, StoreError> {
    cipher.open(context, stored).map_err(|e| match e {
        StoreError::AtRestCorrupt(msg) => StoreError::AtRestCorrupt(format!("{}: {msg}", what())),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_flip_detection() {
        let sealed = encode_sealed(&("hello".to_string(), 42u64)).unwrap();
        let what = || "test value".to_string();
        let back: (String, u64) = decode_sealed(&sealed, &what).unwrap();
        assert_eq!(back, ("hello".to_string(), 42));

        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = decode_sealed::<(String, u64)>(&bad, &what).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt(_)), "byte {i}: {err:?}");
        }
        assert!(unseal(&[1, 2], &what).is_err());
    }

    #[test]
    fn a_sealing_codec_binds_records_to_their_context() {
        use crate::at_rest::AtRestKey;
        let cipher = AtRestCipher::new([AtRestKey { id: [1; 8], key: [9; 32] }], [1; 8]).unwrap();
        let codec = Codec::new(Some(Arc::new(cipher)));
        let what = || "test value".to_string();
        let stored = codec.encode(b"log/a\0one", &("hello".to_string(), 42u64)).unwrap();
        assert!(!stored.windows(5).any(|w| w == b"hello"));
        let back: (String, u64) = codec.decode(b"log/a\0one", &stored, &what).unwrap();
        assert_eq!(back.0, "hello");
        let err = codec.decode::<(String, u64)>(b"log/a\0two", &stored, &what).unwrap_err();
        assert!(matches!(&err, StoreError::AtRestCorrupt(m) if m.contains("test value")), "{err:?}");

        let value = codec.protect_value(b"kv/a\0k", b"v").unwrap();
        assert_eq!(codec.unprotect_value(b"kv/a\0k", &value, &what).unwrap().as_ref(), b"v");
        let plain = Codec::default();
        assert_eq!(plain.protect_value(b"kv/a\0k", b"v").unwrap().as_ref(), b"v");
    }
}
