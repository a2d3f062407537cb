//! [`Record`]: one record of the node's write-ahead log (`DESIGN-log.md`): an entry of a
//! namespace's Raft log, or the truncation or purge of that log from or up to an index.
//!
//! Layout, little-endian: `[payload length u32][kind u8][namespace id u32][index u64][term u64]
//! [payload]`. A record carries no checksum of its own: the batch that holds it does
//! ([`crate::wal_batch`]), and a record is only ever decoded from a batch whose checksum held.
//! Decoding still checks every length, so no input can make it panic or read out of bounds.

/// Bytes of a record before its payload.
pub(crate) const RECORD_HEADER_LEN: usize = 4 + 1 + 4 + 8 + 8;

/// What a record says happened to a namespace's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// The entry at `index` (the payload is the entry, encoded and sealed as the log stores it).
    Entry,
    /// Every entry from `index` on is gone (a follower's log conflicted with its leader's).
    Truncate,
    /// Every entry up to and including `index` is gone (covered by a snapshot).
    Purge,
    /// The entry at `index`, copied forward from an older segment so that segment can be
    /// recycled (`crate::wal`, "copying forward"); the payload is the entry as first written.
    Copy,
}

impl RecordKind {
    fn to_byte(self) -> u8 {
        match self {
            RecordKind::Entry => 1,
            RecordKind::Truncate => 2,
            RecordKind::Purge => 3,
            RecordKind::Copy => 4,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(RecordKind::Entry),
            2 => Some(RecordKind::Truncate),
            3 => Some(RecordKind::Purge),
            4 => Some(RecordKind::Copy),
            _ => None,
        }
    }
}

/// One record: what happened to which namespace's log, at which index and term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) kind: RecordKind,
    /// The namespace's small id (recorded in the store's metadata), not its name.
    pub(crate) namespace: u32,
    pub(crate) index: u64,
    pub(crate) term: u64,
    /// The entry for [`RecordKind::Entry`]; empty otherwise.
    pub(crate) payload: Vec<u8>,
}

impl Record {
    /// Bytes this record takes in a batch.
    pub(crate) fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload.len()
    }

    /// Append this record's encoding to `out`. The payload must fit a `u32` length, which
    /// [`crate::wal_batch::WalBatch::push`] checks before calling this.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let len = u32::try_from(self.payload.len()).expect("the batch checked the payload's length");
        out.extend_from_slice(&len.to_le_bytes());
        out.push(self.kind.to_byte());
        out.extend_from_slice(&self.namespace.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.term.to_le_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// Decode the record at the start of `buf`; returns it and the bytes it took.
    pub(crate) fn decode(buf: &[u8]) -> Result<(Record, usize), String> {
        let header = buf
            .get(..RECORD_HEADER_LEN)
            .ok_or_else(|| format!("{} bytes left, a record header takes {RECORD_HEADER_LEN}", buf.len()))?;
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let kind = RecordKind::from_byte(header[4]).ok_or_else(|| format!("unknown record kind {}", header[4]))?;
        let namespace = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes"));
        let index = u64::from_le_bytes(header[9..17].try_into().expect("8 bytes"));
        let term = u64::from_le_bytes(header[17..25].try_into().expect("8 bytes"));
        let end = RECORD_HEADER_LEN.checked_add(len).filter(|&end| end <= buf.len()).ok_or_else(|| {
            format!("a payload of {len} bytes runs past the batch ({} bytes left)", buf.len() - RECORD_HEADER_LEN)
        })?;
        if !matches!(kind, RecordKind::Entry | RecordKind::Copy) && len != 0 {
            return Err(format!("a {kind:?} record with a payload of {len} bytes"));
        }
        let payload = buf[RECORD_HEADER_LEN..end].to_vec();
        Ok((Record { kind, namespace, index, term, payload }, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, payload: &[u8]) -> Record {
        Record { kind: RecordKind::Entry, namespace: 7, index, term: 3, payload: payload.to_vec() }
    }

    #[test]
    fn a_record_decodes_to_itself() {
        for record in [
            entry(1, b"value"),
            entry(u64::MAX, b""),
            Record { kind: RecordKind::Truncate, namespace: 0, index: 9, term: 0, payload: Vec::new() },
            Record { kind: RecordKind::Purge, namespace: u32::MAX, index: 4, term: 2, payload: Vec::new() },
            Record { kind: RecordKind::Copy, namespace: 2, index: 5, term: 0, payload: b"moved".to_vec() },
        ] {
            let mut buf = Vec::new();
            record.encode_into(&mut buf);
            buf.extend_from_slice(b"next");
            assert_eq!(buf.len(), record.encoded_len() + 4);
            assert_eq!(Record::decode(&buf), Ok((record.clone(), record.encoded_len())));
        }
    }

    #[test]
    fn short_or_malformed_input_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        entry(5, b"payload").encode_into(&mut buf);
        for cut in 0..buf.len() {
            assert!(Record::decode(&buf[..cut]).is_err(), "a record cut at {cut} bytes decoded");
        }
        let mut bad_kind = buf.clone();
        bad_kind[4] = 9;
        assert!(Record::decode(&bad_kind).unwrap_err().contains("unknown record kind 9"));
        let mut huge = buf.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Record::decode(&huge).unwrap_err().contains("runs past"));
        let mut purge_with_payload = buf;
        purge_with_payload[4] = 3;
        assert!(Record::decode(&purge_with_payload).unwrap_err().contains("Purge record with a payload"));
    }
}
