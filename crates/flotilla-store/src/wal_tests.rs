//! The write-ahead log's contract across segments: appends read back before and after a
//! reopen, a full segment rolls over, truncations and purges survive a reopen, a torn tail is
//! dropped and cleared, damage before the end fails the open, and a log never opens without
//! its salt.

use super::*;

const SEGMENT: u64 = 8 * crate::wal_batch::BLOCK as u64;

fn entry(namespace: u32, index: u64, len: usize) -> Record {
    Record { kind: RecordKind::Entry, namespace, index, term: 1, payload: vec![(index % 251) as u8; len] }
}

fn marker(kind: RecordKind, namespace: u32, index: u64) -> Record {
    Record { kind, namespace, index, term: 0, payload: Vec::new() }
}

/// The segments in `dir`, without touching anything (unlike `list_segments`, which removes
/// the temporary file a segment being made lives in).
fn segments_in(dir: &Path) -> Vec<u64> {
    let mut found: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.unwrap().file_name().to_str()?.strip_suffix(".wal").map(|h| u64::from_str_radix(h, 16).unwrap())
        })
        .collect();
    found.sort_unstable();
    found
}

fn read_all(wal: &WriteAheadLog, namespace: u32) -> Vec<(u64, Vec<u8>)> {
    let reader = wal.reader();
    let Some((first, last)) = reader.bounds(namespace) else { return Vec::new() };
    (first..=last).map(|i| (i, reader.read(namespace, i).unwrap().expect("a retained entry reads back"))).collect()
}

fn expected(namespace: u32, indexes: std::ops::RangeInclusive<u64>, len: usize) -> Vec<(u64, Vec<u8>)> {
    indexes.map(|i| (i, entry(namespace, i, len).payload)).collect()
}

/// A log in `dir` holding entries 1 to 6 of namespace 1, synced: one batch of two blocks each,
/// so four fill segment 1 and the last two are in segment 2.
fn six_entries_over_two_segments(dir: &Path) -> WriteAheadLog {
    let mut wal = WriteAheadLog::open(dir, SEGMENT).unwrap();
    for i in 1..=6 {
        wal.append(&[entry(1, i, 5000)]).unwrap();
    }
    wal.sync().unwrap();
    wal
}

#[test]
fn entries_of_several_namespaces_read_back_before_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    let batch: Vec<Record> = (1..=3).flat_map(|i| [entry(1, i, 40), entry(2, i + 10, 70)]).collect();
    wal.append(&batch).unwrap();
    assert_eq!(read_all(&wal, 1), expected(1, 1..=3, 40), "readable before the sync");
    wal.sync().unwrap();
    drop(wal);
    let wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    assert_eq!(read_all(&wal, 1), expected(1, 1..=3, 40));
    assert_eq!(read_all(&wal, 2), expected(2, 11..=13, 70));
    assert_eq!(wal.reader().read(3, 1).unwrap(), None, "a namespace with no record");
}

#[test]
fn a_full_segment_rolls_over_and_both_are_read_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let wal = six_entries_over_two_segments(dir.path());
    // Segments 1 and 2 hold the entries; 3 may be made ahead already.
    let segments = segments_in(dir.path());
    assert!(segments == [1, 2] || segments == [1, 2, 3], "{segments:?}");
    assert_eq!(wal.reader().location(1, 5).unwrap().segment, 2);
    drop(wal);
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    assert_eq!(read_all(&wal, 1), expected(1, 1..=6, 5000));
    wal.append(&[entry(1, 7, 10)]).unwrap();
    assert_eq!(wal.reader().location(1, 7).unwrap().segment, 2, "appends go on in the last segment");
}

#[test]
fn truncations_and_purges_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    wal.append(&(1..=5).map(|i| entry(1, i, 10)).collect::<Vec<_>>()).unwrap();
    wal.append(&[marker(RecordKind::Truncate, 1, 4), entry(1, 4, 20), marker(RecordKind::Purge, 1, 2)]).unwrap();
    wal.sync().unwrap();
    let check = |wal: &WriteAheadLog| {
        let reader = wal.reader();
        assert_eq!(reader.bounds(1), Some((3, 4)));
        assert_eq!(reader.purged(1), Some(2));
        assert_eq!(reader.read(1, 4).unwrap(), Some(entry(1, 4, 20).payload), "the entry written after the truncation");
        assert_eq!(reader.read(1, 2).unwrap(), None, "purged");
    };
    check(&wal);
    drop(wal);
    check(&WriteAheadLog::open(dir.path(), SEGMENT).unwrap());
}

#[test]
fn a_change_that_breaks_a_logs_shape_is_refused_and_not_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    wal.append(&[entry(1, 1, 10)]).unwrap();
    // A batch whose last record breaks the log is refused whole, before anything is written.
    let err = wal.append(&[entry(1, 2, 10), entry(2, 1, 10), entry(1, 4, 10)]).unwrap_err();
    assert!(
        matches!(err, WalError::Index { namespace: 1, error: IndexError::OutOfOrder { expected: 3, got: 4 } }),
        "{err}"
    );
    assert_eq!(wal.reader().bounds(1), Some((1, 1)));
    assert!(wal.namespace_ids().iter().all(|&id| id != 2), "namespace 2 was never indexed");
    wal.sync().unwrap();
    drop(wal);
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    assert_eq!(read_all(&wal, 1), expected(1, 1..=1, 10), "nothing of the refused batch was written");
    wal.append(&[entry(1, 2, 10)]).unwrap();
}

#[test]
fn a_torn_tail_is_dropped_and_cleared_so_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    wal.append(&[entry(1, 1, 10)]).unwrap();
    wal.sync().unwrap();
    wal.append(&[entry(1, 2, 6000)]).unwrap(); // two blocks, never synced
    drop(wal);
    // The crash lost the batch's first block and kept its second.
    let path = dir.path().join(segment_file_name(1));
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0u8; crate::wal_batch::BLOCK], crate::wal_batch::BLOCK as u64).unwrap();

    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    assert_eq!(read_all(&wal, 1), expected(1, 1..=1, 10));
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes[crate::wal_batch::BLOCK..].iter().all(|&b| b == 0), "the torn batch is cleared");
    // The log goes on, across a roll-over, and opens cleanly again.
    for i in 2..=8 {
        wal.append(&[entry(1, i, 5000)]).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    let mut all = expected(1, 1..=1, 10);
    all.extend(expected(1, 2..=8, 5000));
    assert_eq!(read_all(&wal, 1), all);
}

#[test]
fn damage_in_an_earlier_segment_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(six_entries_over_two_segments(dir.path()));
    // Two blocks a batch, four batches a segment: the last batch of segment 1 (at block 6)
    // loses a byte. Nothing good follows it in its segment, but segment 2 holds batches, so it
    // was acknowledged.
    let file = std::fs::OpenOptions::new().write(true).open(dir.path().join(segment_file_name(1))).unwrap();
    file.write_all_at(&[0xff], 6 * crate::wal_batch::BLOCK as u64 + 100).unwrap();
    let err = WriteAheadLog::open(dir.path(), SEGMENT).unwrap_err();
    assert!(
        matches!(err, WalError::Corrupt { segment: 1, offset, .. } if offset == 6 * crate::wal_batch::BLOCK as u64),
        "{err}"
    );
}

#[test]
fn a_log_without_its_salt_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    wal.append(&[entry(1, 1, 10)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    std::fs::remove_file(dir.path().join("salt")).unwrap();
    let err = WriteAheadLog::open(dir.path(), SEGMENT).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    std::fs::write(dir.path().join("salt"), "not hex\n").unwrap();
    assert!(WriteAheadLog::open(dir.path(), SEGMENT).unwrap_err().to_string().contains("does not hold a salt"));
    // A leftover of an interrupted segment creation is removed.
    std::fs::write(dir.path().join("salt"), "0000000000000001\n").unwrap();
    std::fs::write(dir.path().join("0000000000000009.wal.tmp"), b"partial").unwrap();
    let _ = WriteAheadLog::open(dir.path(), SEGMENT);
    assert!(!dir.path().join("0000000000000009.wal.tmp").exists());
}

#[test]
fn a_group_commit_larger_than_a_batch_is_written_as_several() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WriteAheadLog::open(dir.path(), 64 * 1024 * 1024).unwrap();
    let big = 6 * 1024 * 1024;
    wal.append(&(1..=3).map(|i| entry(1, i, big)).collect::<Vec<_>>()).unwrap();
    wal.sync().unwrap();
    let reader = wal.reader();
    let at = |i| reader.location(1, i).unwrap();
    let next_in_same_batch = (big + RECORD_HEADER_LEN) as u64;
    assert_eq!(at(2).segment, at(1).segment);
    assert_eq!(at(2).payload - at(1).payload, next_in_same_batch, "the first two share a batch");
    // The third, which would pass the batch bound, starts the next batch: right after the
    // first, or at the start of a new segment when the first fills its segment.
    let next_batch = (at(2).payload + big as u64).next_multiple_of(crate::wal_batch::BLOCK as u64)
        + (BATCH_HEADER_LEN + RECORD_HEADER_LEN) as u64;
    let first_in_segment = (BATCH_HEADER_LEN + RECORD_HEADER_LEN) as u64;
    let third = at(3);
    assert!(
        (third.segment == at(2).segment && third.payload == next_batch)
            || (third.segment > at(2).segment && third.payload == first_in_segment),
        "{third:?} after {:?}",
        at(2)
    );
    drop(wal);
    let wal = WriteAheadLog::open(dir.path(), 64 * 1024 * 1024).unwrap();
    assert_eq!(read_all(&wal, 1), expected(1, 1..=3, big));
}

#[test]
fn the_next_segment_is_made_ahead_and_taken_at_the_roll_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    // The helper makes segment 2 while segment 1 is still empty (generous bound, polled).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while segments_in(dir.path()) != [1, 2] {
        assert!(std::time::Instant::now() < deadline, "segment 2 was not made ahead");
        std::thread::yield_now();
    }
    let made = std::fs::metadata(dir.path().join(segment_file_name(2))).unwrap();
    for i in 1..=5 {
        wal.append(&[entry(1, i, 5000)]).unwrap();
    }
    wal.sync().unwrap();
    assert_eq!(wal.reader().location(1, 5).unwrap().segment, 2);
    let used = std::fs::metadata(dir.path().join(segment_file_name(2))).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(used.ino(), made.ino(), "the roll-over took the prepared file instead of making another");
    drop(wal);
    let wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    assert_eq!(read_all(&wal, 1), expected(1, 1..=5, 5000));
}

#[test]
fn recycling_deletes_the_oldest_segments_no_namespace_needs_and_the_log_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    // Namespace 2 has one entry in segment 1; namespace 1 fills segments 1 to 3.
    wal.append(&[entry(2, 1, 10)]).unwrap();
    for i in 1..=10 {
        wal.append(&[entry(1, i, 5000)]).unwrap();
    }
    wal.sync().unwrap();
    assert_eq!(wal.reader().location(1, 10).unwrap().segment, 3);
    // Segment 1 holds namespace 2's entry and entries 1-3, segment 2 entries 4-7.
    wal.purge_index(1, 6).unwrap();
    assert_eq!(wal.recycle().unwrap(), 0, "namespace 2's entry keeps segment 1, and so every later one");
    wal.forget(2);
    assert_eq!(wal.recycle().unwrap(), 1, "segment 1 goes; segment 2 holds entry 7");
    assert!(!dir.path().join(segment_file_name(1)).exists());
    assert_eq!(read_all(&wal, 1), expected(1, 7..=10, 5000));
    wal.purge_index(1, 10).unwrap();
    assert_eq!(wal.recycle().unwrap(), 1, "segment 2 goes; segment 3 is the active one and stays");
    drop(wal);
    // Reopened, the log is a run of segments from 3 on: namespace 1 appears from its entry 8
    // (not purged by any record: that purge is the caller's to apply again) and goes on.
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    assert_eq!(wal.reader().bounds(1), Some((8, 10)));
    wal.purge_index(1, 10).unwrap();
    assert_eq!(wal.reader().bounds(1), None);
    wal.append(&[entry(1, 11, 10)]).unwrap();
    assert_eq!(wal.reader().read(1, 11).unwrap(), Some(entry(1, 11, 10).payload));
}

#[test]
fn small_old_logs_are_copied_forward_so_their_segments_can_go_and_replay_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    // Namespace 2 writes entries 1-3 and then stays quiet, but for entry 4 much later.
    wal.append(&(1..=3).map(|i| entry(2, i, 10)).collect::<Vec<_>>()).unwrap();
    for i in 1..=12 {
        wal.append(&[entry(1, i, 5000)]).unwrap();
    }
    wal.append(&[entry(2, 4, 10)]).unwrap();
    for i in 13..=24 {
        wal.append(&[entry(1, i, 5000)]).unwrap();
    }
    wal.sync().unwrap();
    wal.purge_index(1, 23).unwrap();
    assert_eq!(wal.recycle().unwrap(), 0, "namespace 2's first entries pin segment 1");
    assert_eq!(wal.copy_forward().unwrap(), 1, "namespace 2 is copied forward");
    let reader = wal.reader();
    assert!(reader.location(2, 1).unwrap().segment >= reader.location(1, 24).unwrap().segment);
    let deleted = wal.recycle().unwrap();
    assert!(deleted >= 6, "the segments before entry 24 go: {deleted}");
    assert_eq!(read_all(&wal, 2), expected(2, 1..=4, 10));
    assert_eq!(wal.copy_forward().unwrap(), 0, "nothing old is left to copy");
    wal.append(&[entry(2, 5, 10)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    // Replayed, the copies start namespace 2's index again and the entry after them follows.
    let wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    assert_eq!(read_all(&wal, 2), expected(2, 1..=5, 10));
    assert_eq!(wal.reader().bounds(1).map(|(_, last)| last), Some(24));
}

#[test]
fn a_group_commit_larger_than_a_segment_spans_several_and_a_record_that_fits_none_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    // Ten records of about 5 KB: six fill a segment's one batch, the rest go to the next.
    wal.append(&(1..=10).map(|i| entry(1, i, 5000)).collect::<Vec<_>>()).unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.reader().location(1, 6).unwrap().segment, 1);
    assert_eq!(wal.reader().location(1, 7).unwrap().segment, 2);
    let too_large = entry(1, 11, SEGMENT as usize);
    let err = wal.append(&[too_large]).unwrap_err();
    assert!(matches!(err, WalError::RecordTooLarge { .. }), "{err}");
    drop(wal);
    let wal = WriteAheadLog::open(dir.path(), SEGMENT).unwrap();
    assert_eq!(read_all(&wal, 1), expected(1, 1..=10, 5000), "nothing of the refused record was written");
}

#[test]
fn segments_grow_from_one_mib_to_the_configured_size_and_fit_a_larger_batch() {
    use crate::wal::{planned_segment_size, FIRST_SEGMENT_BYTES};
    let max = 64 * 1024 * 1024;
    let sizes: Vec<u64> = (1..=9).map(|s| planned_segment_size(max, s) >> 20).collect();
    assert_eq!(sizes, vec![1, 2, 4, 8, 16, 32, 64, 64, 64]);
    assert_eq!(planned_segment_size(64 * 1024, 1), 64 * 1024, "never above the configured size");
    assert_eq!(planned_segment_size(max, u64::MAX), max);

    let dir = tempfile::tempdir().unwrap();
    let mut wal = WriteAheadLog::open(dir.path(), max).unwrap();
    let size_of = |seq: u64| std::fs::metadata(dir.path().join(segment_file_name(seq))).unwrap().len();
    assert_eq!(size_of(1), FIRST_SEGMENT_BYTES);
    // 3 MiB in one record: more than the second segment's planned 2 MiB.
    wal.append(&[entry(1, 1, 3 * 1024 * 1024)]).unwrap();
    wal.sync().unwrap();
    assert_eq!(reader_segment(&wal, 1), 2);
    assert!(size_of(2) >= 3 * 1024 * 1024, "made large enough for the batch: {}", size_of(2));
    drop(wal);
    let wal = WriteAheadLog::open(dir.path(), max).unwrap();
    assert_eq!(read_all(&wal, 1), expected(1, 1..=1, 3 * 1024 * 1024));
}

fn reader_segment(wal: &WriteAheadLog, index: u64) -> u64 {
    wal.reader().location(1, index).unwrap().segment
}
