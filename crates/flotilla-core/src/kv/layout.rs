//! How the KV state machine lays out its state in the namespace's table.
//!
//! ```text
//! 0x00 "rev"                          -> 2 u64 BE current and compacted (oldest readable) revision
//! 0x00 "compact.next"                 -> event key where the compaction's cleanup resumes
//! 0x01 key                            -> Current  the key's state now (or its deletion)
//! 0x03 rev sub                        -> Event    what the write `sub` of revision `rev` did
//! 0x04 lease                          -> Lease    a lease and its time to live
//! 0x05 lease key                      -> empty    `key` is attached to `lease`
//! 0x00 "lease.next"                   -> u64 BE   the next lease id handed out
//! 0x06 escaped(queue) 0x00 0x00 id    -> value    an item waiting in a queue
//! 0x07 escaped(queue) 0x00 0x00 id    -> InFlight an item popped with a visibility lease
//! 0x08 lease escaped(queue) 0x00 0x00 id -> empty an in-flight item of that lease
//! 0x09 escaped(queue)                 -> QueueMeta its counts
//! 0x00 "queue.next"                   -> u64 BE   the next item id
//! ```
//!
//! Current rows hold a key's revisions and version, and point at the event that made its state,
//! which holds the value: a read at the current revision is two lookups, a put stores its value
//! once (a current row with the value doubled the size of the randomly updated rows, which cost
//! a put about a third more store time: `cargo bench -p flotilla-store --bench apply`). Event
//! rows, ordered by revision, are the history a watch replays. Each event and each current row points at the
//! key's previous event (`prev`), so the state of a key at a past revision is found by walking
//! that chain back from its current row; a deleted key keeps a tombstone current row (until
//! compaction removes its deletion) so the walk starts somewhere. A put thus writes two rows
//! (one small random insert, one append), not three. A missing event ends the chain: compaction
//! removed it, and nothing older than the compacted revision is read. Compaction removes events
//! no readable revision needs, never the event of a live key's current state. Queue
//! names are escaped (0x00 becomes 0x00 0xFF, and 0x00 0x00 ends it) so that order and
//! prefixes are preserved whatever bytes they hold.

use std::io;

use serde::{Deserialize, Serialize};

use super::types::KeyValue;

/// Largest record the layout decodes, a guard against damaged rows.
const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// Row of the current and the compacted revision, in one row: every command reads both, and
/// one lookup is cheaper than two.
pub(crate) const REVISION: &[u8] = b"\x00rev";

/// The revisions row: current then compacted, big-endian.
pub(crate) fn encode_revisions(current: u64, compacted: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&current.to_be_bytes());
    out[8..].copy_from_slice(&compacted.to_be_bytes());
    out
}

/// `(current, compacted)` from the revisions row.
pub(crate) fn decode_revisions(row: &[u8]) -> io::Result<(u64, u64)> {
    let damaged = || io::Error::new(io::ErrorKind::InvalidData, "damaged KV revisions row");
    let current = row.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).ok_or_else(damaged)?;
    let compacted = row.get(8..).and_then(|b| <[u8; 8]>::try_from(b).ok()).ok_or_else(damaged)?;
    Ok((u64::from_be_bytes(current), u64::from_be_bytes(compacted)))
}
/// Row of the compaction's cleanup cursor.
pub(crate) const COMPACT_NEXT: &[u8] = b"\x00compact.next";

/// Prefix of current rows.
pub(crate) const CURRENT: u8 = 0x01;
/// Prefix of event rows.
pub(crate) const EVENT: u8 = 0x03;
/// Prefix of lease rows.
pub(crate) const LEASE: u8 = 0x04;
/// Prefix of lease attachment rows.
pub(crate) const LEASE_KEY: u8 = 0x05;
/// Row of the next lease id.
pub(crate) const LEASE_NEXT: &[u8] = b"\x00lease.next";

/// Prefix of waiting queue items.
pub(crate) const QUEUE_READY: u8 = 0x06;
/// Prefix of in-flight queue items.
pub(crate) const QUEUE_IN_FLIGHT: u8 = 0x07;
/// Prefix of in-flight items by lease.
pub(crate) const QUEUE_BY_LEASE: u8 = 0x08;
/// Prefix of queue counts.
pub(crate) const QUEUE_META: u8 = 0x09;
/// Row of the next queue item id.
pub(crate) const QUEUE_NEXT: &[u8] = b"\x00queue.next";

/// An item popped with a visibility lease: it comes back when the lease ends unacknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InFlight {
    #[serde(with = "crate::byte_vec")]
    pub(crate) value: Vec<u8>,
    pub(crate) lease: u64,
}

/// The counts of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueMeta {
    pub(crate) ready: u64,
    pub(crate) in_flight: u64,
}

/// `kind` then `name` escaped and terminated: the start of a queue's rows of that kind.
pub(crate) fn queue_rows(kind: u8, name: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    push_escaped(&mut out, name);
    out.extend_from_slice(&[0, 0]);
    out
}

/// The row of item `id` of queue `name`, of `kind` (ready or in flight).
pub(crate) fn queue_item(kind: u8, name: &[u8], id: u64) -> Vec<u8> {
    let mut out = queue_rows(kind, name);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// The id of a queue item row starting with `rows`.
pub(crate) fn queue_item_id(row: &[u8], rows: &[u8]) -> io::Result<u64> {
    row.strip_prefix(rows)
        .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "damaged KV queue row"))
}

/// The row marking item `id` of queue `name` as in flight under `lease`.
pub(crate) fn queue_by_lease(lease: u64, name: &[u8], id: u64) -> Vec<u8> {
    let mut out = vec![QUEUE_BY_LEASE];
    out.extend_from_slice(&lease.to_be_bytes());
    out.extend_from_slice(&queue_item(0, name, id)[1..]);
    out
}

/// The first row of the in-flight items of `lease`.
pub(crate) fn queue_by_lease_of(lease: u64) -> Vec<u8> {
    let mut out = vec![QUEUE_BY_LEASE];
    out.extend_from_slice(&lease.to_be_bytes());
    out
}

/// Split a by-lease row (after its 9-byte prefix) into the queue name and the item id.
pub(crate) fn parse_queue_by_lease(row: &[u8]) -> io::Result<(Vec<u8>, u64)> {
    let damaged = || io::Error::new(io::ErrorKind::InvalidData, "damaged KV queue lease row");
    parse_escaped(row.get(9..).ok_or_else(damaged)?)
}

/// A lease as stored: its time to live. When it runs out is the leader's business (in
/// memory, never in the log): see `flotilla`'s lease clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub(crate) ttl_secs: u64,
}

/// The row of lease `id`.
pub(crate) fn lease_key(id: u64) -> Vec<u8> {
    let mut out = vec![LEASE];
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// The id of a lease row.
pub(crate) fn parse_lease_key(row: &[u8]) -> io::Result<u64> {
    row.strip_prefix(&[LEASE])
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "damaged KV lease row"))
}

/// The first attachment row of lease `id` (followed by the key).
pub(crate) fn lease_keys_of(id: u64) -> Vec<u8> {
    let mut out = vec![LEASE_KEY];
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// The row attaching `key` to lease `id`.
pub(crate) fn lease_key_row(id: u64, key: &[u8]) -> Vec<u8> {
    let mut out = lease_keys_of(id);
    out.extend_from_slice(key);
    out
}

/// A pointer to an event: its revision and sub.
pub(crate) type EventPtr = (u64, u32);

/// The state of a key now: live, or deleted (a tombstone, kept for past reads). The value is
/// not here but in the event that made this state (`own_event`): stored once per write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Current {
    pub(crate) create_revision: u64,
    pub(crate) mod_revision: u64,
    pub(crate) version: u64,
    pub(crate) lease: u64,
    /// The sub of the event that made this state (at `mod_revision`).
    pub(crate) sub: u32,
    /// The key's event before that one.
    pub(crate) prev: Option<EventPtr>,
    /// A deletion: the key does not exist now.
    pub(crate) deleted: bool,
}

impl Current {
    /// As a [`KeyValue`] of `key` holding `value` (empty in a keys-only listing).
    pub(crate) fn into_key_value(self, key: Vec<u8>, value: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }

    /// The event that made this state.
    pub(crate) fn own_event(&self) -> EventPtr {
        (self.mod_revision, self.sub)
    }
}

/// What one write did to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Event {
    /// The key got this state (its mod revision is the event's revision).
    Put {
        #[serde(with = "crate::byte_vec")]
        key: Vec<u8>,
        create_revision: u64,
        version: u64,
        lease: u64,
        #[serde(with = "crate::byte_vec")]
        value: Vec<u8>,
        prev: Option<EventPtr>,
    },
    /// The key was deleted.
    Delete {
        #[serde(with = "crate::byte_vec")]
        key: Vec<u8>,
        prev: Option<EventPtr>,
    },
}

/// [`Event::Put`] over borrowed bytes, encoded the same way (the variant is the first of
/// [`Event`], as here).
#[derive(Serialize)]
pub(crate) enum EventRef<'a> {
    Put {
        #[serde(serialize_with = "crate::byte_vec::serialize")]
        key: &'a [u8],
        create_revision: u64,
        version: u64,
        lease: u64,
        #[serde(serialize_with = "crate::byte_vec::serialize")]
        value: &'a [u8],
        prev: Option<EventPtr>,
    },
}

impl Event {
    /// The key the event is about.
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Event::Put { key, .. } | Event::Delete { key, .. } => key,
        }
    }

    /// The key's event before this one.
    pub(crate) fn prev(&self) -> Option<EventPtr> {
        match self {
            Event::Put { prev, .. } | Event::Delete { prev, .. } => *prev,
        }
    }

    /// The key's state after the event at `revision`, `None` for a delete.
    pub(crate) fn state(self, revision: u64, keys_only: bool) -> Option<KeyValue> {
        match self {
            Event::Put { key, create_revision, version, lease, value, .. } => Some(KeyValue {
                key,
                value: if keys_only { Vec::new() } else { value },
                create_revision,
                mod_revision: revision,
                version,
                lease,
            }),
            Event::Delete { .. } => None,
        }
    }
}

/// Decode a record of this layout; a damaged row is a storage error.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> io::Result<T> {
    crate::decode(bytes, MAX_RECORD_BYTES)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("damaged KV {what} record: {e}")))
}

/// Encode a record of this layout.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    crate::encode(value).expect("KV records are plain data and always encode")
}

/// Decode a u64 row (revision counters).
pub(crate) fn decode_u64(bytes: &[u8], what: &str) -> io::Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("damaged KV {what} counter")))
}

/// The current row of `key`.
pub(crate) fn current_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(CURRENT);
    out.extend_from_slice(key);
    out
}

/// Append `key` escaped (order- and prefix-preserving) and terminated.
fn push_escaped(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// Split an escaped-name row body (after its prefix) into the name and the 8 bytes after it,
/// as a number.
pub(crate) fn parse_escaped(body: &[u8]) -> io::Result<(Vec<u8>, u64)> {
    let damaged = || io::Error::new(io::ErrorKind::InvalidData, "damaged KV row");
    let mut key = Vec::with_capacity(body.len());
    let mut i = 0;
    loop {
        match (body.get(i), body.get(i + 1)) {
            (Some(0), Some(0)) => break,
            (Some(0), Some(0xFF)) => {
                key.push(0);
                i += 2;
            }
            (Some(&b), _) if b != 0 => {
                key.push(b);
                i += 1;
            }
            _ => return Err(damaged()),
        }
    }
    let rest = body.get(i + 2..).ok_or_else(damaged)?;
    let number = <[u8; 8]>::try_from(rest).map_err(|_| damaged())?;
    Ok((key, u64::from_be_bytes(number)))
}

/// The event row of write `sub` of `revision`.
pub(crate) fn event_key(revision: u64, sub: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.push(EVENT);
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(&sub.to_be_bytes());
    out
}

/// Split an event row into its revision and sub.
pub(crate) fn parse_event_key(row: &[u8]) -> io::Result<(u64, u32)> {
    let damaged = || io::Error::new(io::ErrorKind::InvalidData, "damaged KV event row");
    let body = row.strip_prefix(&[EVENT]).ok_or_else(damaged)?;
    let revision = body.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).ok_or_else(damaged)?;
    let sub = body.get(8..).and_then(|b| <[u8; 4]>::try_from(b).ok()).ok_or_else(damaged)?;
    Ok((u64::from_be_bytes(revision), u32::from_be_bytes(sub)))
}

/// The bounds (start included, end excluded) of the current rows of the range starting at
/// `key` and ending at `end`.
pub(crate) fn current_range(key: &[u8], end: &super::types::RangeEnd) -> (Vec<u8>, Vec<u8>) {
    use super::types::RangeEnd;
    let start = current_key(key);
    let stop = match end {
        RangeEnd::Key => {
            let mut stop = start.clone();
            stop.push(0);
            stop
        }
        RangeEnd::Prefix => prefix_end(&start).expect("0x01 is not 0xFF"),
        RangeEnd::Before(end) => current_key(end),
        RangeEnd::All => vec![CURRENT + 1],
    };
    (start, stop)
}

/// The smallest key greater than every key starting with `prefix`; `None` when there is none
/// (the prefix is all 0xFF).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_keep_order_and_come_back() {
        let names: [&[u8]; 5] = [b"", b"a", b"a\x00", b"a\x00b", b"a\x01"];
        let rows: Vec<Vec<u8>> = names.iter().map(|n| queue_item(QUEUE_READY, n, 7)).collect();
        let mut sorted = rows.clone();
        sorted.sort();
        assert_eq!(sorted, rows, "escaping keeps the names' order");
        for (name, row) in names.iter().zip(&rows) {
            assert_eq!(parse_escaped(&row[1..]).unwrap(), (name.to_vec(), 7));
        }
    }

    #[test]
    fn damaged_rows_are_errors_not_panics() {
        for body in [&b""[..], b"a", b"a\x00", b"a\x00\x00\x01", b"\x00\x01"] {
            assert!(parse_escaped(body).is_err(), "{body:?}");
        }
        for row in [&b""[..], b"\x03", b"\x03\x00\x00\x00\x00\x00\x00\x00\x01\x00"] {
            assert!(parse_event_key(row).is_err(), "{row:?}");
        }
        assert_eq!(parse_event_key(&event_key(5, 2)).unwrap(), (5, 2));
        assert!(decode_u64(b"short", "x").is_err());
    }

    #[test]
    fn borrowed_records_encode_as_the_owned_ones() {
        let prev = Some((2, 5));
        let event =
            Event::Put { key: b"k".to_vec(), create_revision: 3, version: 2, lease: 7, value: b"v".to_vec(), prev };
        let borrowed = EventRef::Put { key: b"k", create_revision: 3, version: 2, lease: 7, value: b"v", prev };
        assert_eq!(encode(&borrowed), encode(&event));
        assert_eq!(decode::<Event>(&encode(&borrowed), "event").unwrap(), event);
    }

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
