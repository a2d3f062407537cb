//! [`LogIndex`]: where each retained entry of one namespace's log lies in the write-ahead log
//! (`DESIGN-log.md`). Rebuilt at open by replaying the namespace's records in log order, then
//! kept up to date by appends, truncations and purges; it is the only map from a log index to
//! the bytes of its entry, so every change to it is checked against the Raft log's shape: the
//! retained entries are contiguous, an entry follows the one before it, nothing is truncated
//! that was purged.
//!
//! Memory: one [`Location`] (32 bytes) per retained entry; the snapshot policy bounds how many
//! entries a namespace retains.

use std::collections::VecDeque;

/// Where one entry lies: its segment, the offset and length of its payload, and its term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) segment: u64,
    pub(crate) payload: u64,
    pub(crate) len: u32,
    pub(crate) term: u64,
}

/// A change the index refused: the log would no longer be a Raft log. Seen at open, it means
/// the write-ahead log is damaged; seen on a live append, it is a bug upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IndexError {
    /// An entry that does not follow the last one (a gap, or an overwrite without a truncation).
    #[error("entry {got} does not follow the log, whose next index is {expected}")]
    OutOfOrder { expected: u64, got: u64 },
    /// A truncation that would remove entries already purged (covered by a snapshot).
    #[error("truncating from {since} would remove entries up to {purged}, which are purged")]
    TruncatesPurged { since: u64, purged: u64 },
    /// An index with no successor: no entry could follow it.
    #[error("index {0} is the last possible one")]
    Overflow(u64),
}

/// The shape of a namespace's log, without its entries: which index comes next and what is
/// purged. It decides whether a change keeps the log a Raft log, so that a batch of records
/// can be checked before any of it is written ([`LogIndex::shape`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogShape {
    /// The index the next entry must have; `None` until the log's first entry or purge.
    next: Option<u64>,
    /// Every entry up to this index is purged.
    purged: Option<u64>,
}

impl LogShape {
    /// Take entry `index`, which must be the next one.
    pub(crate) fn entry(&mut self, index: u64) -> Result<(), IndexError> {
        if let Some(expected) = self.next.filter(|&next| next != index) {
            return Err(IndexError::OutOfOrder { expected, got: index });
        }
        self.next = Some(index.checked_add(1).ok_or(IndexError::Overflow(index))?);
        Ok(())
    }

    /// Take a truncation from `since`; `true` when it removes anything.
    pub(crate) fn truncate(&mut self, since: u64) -> Result<bool, IndexError> {
        if let Some(purged) = self.purged.filter(|&p| since <= p) {
            return Err(IndexError::TruncatesPurged { since, purged });
        }
        if self.next.is_none_or(|next| since >= next) {
            return Ok(false);
        }
        self.next = Some(since);
        Ok(true)
    }

    /// Take a copy of entry `index` (see [`LogIndex::copy`]).
    pub(crate) fn copy(&mut self, index: u64) -> Result<(), IndexError> {
        if self.purged.is_some_and(|p| index <= p) {
            return Ok(());
        }
        match self.next {
            Some(next) if index > next => Err(IndexError::OutOfOrder { expected: next, got: index }),
            Some(next) if index < next => Ok(()),
            _ => self.entry(index),
        }
    }

    /// Take a purge up to `upto`; `true` when it is newer than the last one.
    pub(crate) fn purge(&mut self, upto: u64) -> Result<bool, IndexError> {
        if self.purged.is_some_and(|p| p >= upto) {
            return Ok(false);
        }
        let after = upto.checked_add(1).ok_or(IndexError::Overflow(upto))?;
        self.purged = Some(upto);
        if self.next.is_none_or(|next| next <= upto) {
            self.next = Some(after);
        }
        Ok(true)
    }
}

/// The retained entries of one namespace's log, by index.
#[derive(Debug, Default)]
pub(crate) struct LogIndex {
    /// Index of `entries[0]`, when there is one.
    first: u64,
    entries: VecDeque<Location>,
    shape: LogShape,
}

impl LogIndex {
    /// Record that entry `index` lies at `location`.
    pub(crate) fn append(&mut self, index: u64, location: Location) -> Result<(), IndexError> {
        self.shape.entry(index)?;
        if self.entries.is_empty() {
            self.first = index;
        }
        self.entries.push_back(location);
        Ok(())
    }

    /// Record that entry `index`, copied forward, now lies at `location` (a [`RecordKind::Copy`]
    /// record, `crate::wal_record`). A copy of a retained entry moves it; a copy of the next
    /// entry appends it; a copy of a purged one is dropped. A copy before the first retained
    /// entry, of one that is not purged, means the log is being replayed from segments that
    /// begin after the originals were recycled: copies always cover a namespace's whole
    /// retained log, in order, so the index starts again from it and the copies that follow
    /// fill it in.
    ///
    /// [`RecordKind::Copy`]: crate::wal_record::RecordKind::Copy
    pub(crate) fn copy(&mut self, index: u64, location: Location) -> Result<(), IndexError> {
        if self.shape.purged.is_some_and(|p| index <= p) {
            return Ok(());
        }
        if let Some(at) = index.checked_sub(self.first).filter(|_| !self.entries.is_empty()) {
            if let Some(slot) = usize::try_from(at).ok().and_then(|at| self.entries.get_mut(at)) {
                *slot = location;
                return Ok(());
            }
            return self.append(index, location);
        }
        // Before the first retained entry (or the log is empty): start again from it.
        self.entries.clear();
        self.first = index;
        self.shape.next = None;
        self.append(index, location)
    }

    /// Forget every entry from `since` on (a no-op past the last one).
    pub(crate) fn truncate(&mut self, since: u64) -> Result<(), IndexError> {
        if self.shape.truncate(since)? {
            let keep = since.saturating_sub(self.first).min(self.entries.len() as u64) as usize;
            self.entries.truncate(keep);
        }
        Ok(())
    }

    /// Forget every entry up to and including `upto` (a snapshot covers them). Purging past the
    /// last entry is allowed: the log then continues after `upto`.
    pub(crate) fn purge(&mut self, upto: u64) -> Result<(), IndexError> {
        if self.shape.purge(upto)? {
            let drop = upto.saturating_add(1).saturating_sub(self.first).min(self.entries.len() as u64) as usize;
            self.entries.drain(..drop);
            self.first = self.first.max(upto.saturating_add(1));
        }
        Ok(())
    }

    /// The log's shape, to check changes against before making them.
    pub(crate) fn shape(&self) -> LogShape {
        self.shape
    }

    /// Where entry `index` lies, if it is retained.
    pub(crate) fn get(&self, index: u64) -> Option<Location> {
        let at = index.checked_sub(self.first)?;
        self.entries.get(usize::try_from(at).ok()?).copied()
    }

    /// The first and last retained indexes, if any entry is retained.
    pub(crate) fn bounds(&self) -> Option<(u64, u64)> {
        let len = self.entries.len() as u64;
        (len > 0).then(|| (self.first, self.first + len - 1))
    }

    #[cfg(test)]
    /// The last purged index.
    pub(crate) fn purged(&self) -> Option<u64> {
        self.shape.purged
    }

    /// The bytes of the retained entries' payloads, if they are at most `limit` (`None`
    /// above it, found without walking past it).
    pub(crate) fn retained_bytes_within(&self, limit: u64) -> Option<u64> {
        self.entries.iter().try_fold(0u64, |sum, l| Some(sum + u64::from(l.len)).filter(|&s| s <= limit))
    }

    /// The oldest segment holding a retained entry: no older segment may be recycled for this
    /// namespace's sake. Entries are appended to ever newer segments and only the tail is ever
    /// truncated, so the first entry's segment is the oldest.
    pub(crate) fn oldest_segment(&self) -> Option<u64> {
        self.entries.front().map(|l| l.segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64, index: u64) -> Location {
        Location { segment, payload: index.wrapping_mul(100), len: 10, term: 1 }
    }

    /// One step of a log's life, and what the index must say after it.
    enum Step {
        Append(u64, u64),
        Truncate(u64),
        Purge(u64),
    }
    use Step::*;

    /// A case: its name, its steps, then the bounds, purged index and oldest segment after them.
    type Case = (&'static str, Vec<Step>, Option<(u64, u64)>, Option<u64>, Option<u64>);

    fn run(steps: &[Step]) -> Result<LogIndex, IndexError> {
        let mut index = LogIndex::default();
        for step in steps {
            match *step {
                Append(i, segment) => index.append(i, at(segment, i))?,
                Truncate(since) => index.truncate(since)?,
                Purge(upto) => index.purge(upto)?,
            }
        }
        Ok(index)
    }

    #[test]
    fn a_copy_moves_a_retained_entry_appends_the_next_drops_a_purged_one_and_restarts_before_the_first() {
        let mut index = run(&[Append(1, 1), Append(2, 1), Append(3, 1), Purge(1)]).unwrap();
        index.copy(2, at(5, 2)).unwrap();
        assert_eq!(index.get(2).unwrap().segment, 5, "moved");
        index.copy(1, at(5, 1)).unwrap();
        assert_eq!(index.get(1), None, "a purged entry stays purged");
        index.copy(4, at(5, 4)).unwrap();
        assert_eq!(index.bounds(), Some((2, 4)), "the next entry is appended");
        assert_eq!(index.copy(6, at(5, 6)), Err(IndexError::OutOfOrder { expected: 5, got: 6 }));
        // A replay that begins after the originals' segment was recycled: entry 9 came first,
        // then the copies of the whole log from 7 on.
        let mut replay = run(&[Append(9, 8)]).unwrap();
        for i in 7..=9 {
            replay.copy(i, at(10, i)).unwrap();
        }
        assert_eq!(replay.bounds(), Some((7, 9)));
        assert!((7..=9).all(|i| replay.get(i).unwrap().segment == 10));
        replay.append(10, at(10, 10)).unwrap();
        let mut shape = LogShape::default();
        shape.entry(3).unwrap();
        assert_eq!(shape.copy(2), Ok(()));
        assert_eq!(shape.copy(4), Ok(()));
        assert_eq!(shape.copy(6), Err(IndexError::OutOfOrder { expected: 5, got: 6 }));
    }

    #[test]
    fn the_index_follows_the_logs_shape() {
        // (steps, bounds after, purged after, oldest segment after)
        let cases: Vec<Case> = vec![
            ("empty", vec![], None, None, None),
            ("a fresh log starts anywhere", vec![Append(0, 1), Append(1, 1)], Some((0, 1)), None, Some(1)),
            ("appends", vec![Append(1, 1), Append(2, 1), Append(3, 2)], Some((1, 3)), None, Some(1)),
            (
                "truncate the tail",
                vec![Append(1, 1), Append(2, 1), Append(3, 2), Truncate(2)],
                Some((1, 1)),
                None,
                Some(1),
            ),
            ("truncate everything", vec![Append(1, 1), Append(2, 1), Truncate(1)], None, None, None),
            ("truncate past the end is a no-op", vec![Append(1, 1), Truncate(5)], Some((1, 1)), None, Some(1)),
            (
                "overwrite after a truncation",
                vec![Append(1, 1), Append(2, 1), Truncate(2), Append(2, 3)],
                Some((1, 2)),
                None,
                Some(1),
            ),
            (
                "purge the head",
                vec![Append(1, 1), Append(2, 2), Append(3, 3), Purge(2)],
                Some((3, 3)),
                Some(2),
                Some(3),
            ),
            ("purge everything", vec![Append(1, 1), Append(2, 1), Purge(2)], None, Some(2), None),
            (
                "purge past the end (a snapshot installed)",
                vec![Append(1, 1), Purge(10), Append(11, 4)],
                Some((11, 11)),
                Some(10),
                Some(4),
            ),
            (
                "a purge behind an earlier one is a no-op",
                vec![Append(1, 1), Append(2, 1), Append(3, 1), Purge(2), Purge(1)],
                Some((3, 3)),
                Some(2),
                Some(1),
            ),
            ("a log that starts with a purge", vec![Purge(5), Append(6, 2)], Some((6, 6)), Some(5), Some(2)),
            (
                "a purge before a log's start keeps it",
                vec![Append(5, 1), Append(6, 1), Purge(2)],
                Some((5, 6)),
                Some(2),
                Some(1),
            ),
        ];
        for (name, steps, bounds, purged, oldest) in cases {
            let index = run(&steps).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(index.bounds(), bounds, "{name}: bounds");
            assert_eq!(index.purged(), purged, "{name}: purged");
            assert_eq!(index.oldest_segment(), oldest, "{name}: oldest segment");
            if let Some((first, last)) = bounds {
                for i in first..=last {
                    assert_eq!(index.get(i).map(|l| l.payload), Some(i * 100), "{name}: entry {i}");
                }
                assert_eq!(index.get(last + 1), None, "{name}: past the end");
                assert_eq!(index.get(first.wrapping_sub(1)), None, "{name}: before the start");
            }
        }
    }

    #[test]
    fn changes_that_break_the_logs_shape_are_refused() {
        let cases: Vec<(&str, Vec<Step>, IndexError)> = vec![
            ("a gap", vec![Append(1, 1), Append(3, 1)], IndexError::OutOfOrder { expected: 2, got: 3 }),
            (
                "an overwrite without truncation",
                vec![Append(1, 1), Append(2, 1), Append(2, 1)],
                IndexError::OutOfOrder { expected: 3, got: 2 },
            ),
            (
                "an entry inside a purged range",
                vec![Append(1, 1), Purge(4), Append(3, 1)],
                IndexError::OutOfOrder { expected: 5, got: 3 },
            ),
            (
                "a truncation of purged entries",
                vec![Append(1, 1), Append(2, 1), Purge(1), Truncate(1)],
                IndexError::TruncatesPurged { since: 1, purged: 1 },
            ),
            ("an entry with no successor", vec![Append(u64::MAX, 1)], IndexError::Overflow(u64::MAX)),
            ("a purge with no successor", vec![Purge(u64::MAX)], IndexError::Overflow(u64::MAX)),
        ];
        for (name, steps, expected) in cases {
            assert_eq!(run(&steps).err(), Some(expected), "{name}");
        }
    }
}
