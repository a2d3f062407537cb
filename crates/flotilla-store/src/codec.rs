//! How values are laid out in redb: the project codec ([`flotilla_core::encode`]) wrapped in a
//! CRC32 frame, so a flipped bit on disk is reported as corruption instead of decoding into a
//! wrong value (or a panic further up).

use serde::de::DeserializeOwned;
use serde::Serialize;

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
}
