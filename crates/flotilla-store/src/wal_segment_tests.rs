//! The segment's contract: what was appended and synced reads back in order; a torn last batch
//! ends the log; damage before good batches is reported, never skipped; a reused segment's old
//! batches are not read as new ones; a full segment refuses a batch without writing it.

use super::*;
use crate::wal_record::RecordKind;

const SIZE: u64 = 64 * BLOCK as u64;
const SALT: u64 = 0xfeed_f00d;

fn entry(index: u64, len: usize) -> Record {
    Record { kind: RecordKind::Entry, namespace: 3, index, term: 2, payload: vec![index as u8; len] }
}

fn batch(indexes: std::ops::RangeInclusive<u64>, len: usize) -> (WalBatch, Vec<Record>) {
    let mut batch = WalBatch::new();
    let records: Vec<Record> = indexes.map(|i| entry(i, len)).collect();
    for r in &records {
        batch.push(r).unwrap();
    }
    (batch, records)
}

/// Open `segment`'s file again as `sequence`: the records found with their batch offsets, and
/// where the scan ended.
fn reopen(dir: &Path, sequence: u64) -> (Segment, Vec<(u64, Record)>, ScanEnd) {
    let (segment, found, end) = reopen_at(dir, sequence);
    (segment, found.into_iter().map(|(at, r)| (at.batch, r)).collect(), end)
}

/// [`reopen`], with where each record lies.
fn reopen_at(dir: &Path, sequence: u64) -> (Segment, Vec<(RecordAt, Record)>, ScanEnd) {
    let mut found = Vec::new();
    let path = dir.join(segment_file_name(sequence));
    let (segment, end) = Segment::open(&path, sequence, SALT, |at, r| found.push((at, r))).unwrap();
    (segment, found, end)
}

fn flip_byte(dir: &Path, sequence: u64, at: u64) {
    let file = OpenOptions::new().read(true).write(true).open(dir.join(segment_file_name(sequence))).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
}

#[test]
fn a_new_segment_is_whole_zeros_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let segment = Segment::create(dir.path(), 5, SIZE, SALT).unwrap();
    assert_eq!(segment.tail(), 0);
    let bytes = std::fs::read(dir.path().join(segment_file_name(5))).unwrap();
    assert_eq!(bytes.len() as u64, SIZE);
    assert!(bytes.iter().all(|&b| b == 0));
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [std::ffi::OsString::from("0000000000000005.wal")]);
    assert!(Segment::create(dir.path(), 6, SIZE + 1, SALT).is_err(), "a size that is not whole blocks");
}

#[test]
fn appended_batches_read_back_in_order_and_the_tail_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = Segment::create(dir.path(), 1, SIZE, SALT).unwrap();
    let (first, mut expected) = batch(1..=3, 100);
    let (second, more) = batch(4..=4, 3 * BLOCK); // spans several blocks
    expected.extend(more);
    assert_eq!(segment.append(&first).unwrap(), 0);
    assert_eq!(segment.append(&second).unwrap(), BLOCK as u64);
    segment.sync().unwrap();
    let tail = segment.tail();
    assert_eq!(tail, 5 * BLOCK as u64);
    drop(segment);

    let (mut segment, found, end) = reopen(dir.path(), 1);
    assert_eq!(found.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), expected);
    assert_eq!(found.iter().map(|(at, _)| *at).collect::<Vec<_>>(), [0, 0, 0, BLOCK as u64]);
    assert_eq!(end, ScanEnd::Tail { offset: tail, blank: true });
    assert_eq!(segment.tail(), tail);
    assert_eq!(segment.sequence(), 1);
    // Appending goes on after what was found.
    let (third, _) = batch(5..=5, 10);
    assert_eq!(segment.append(&third).unwrap(), tail);
}

#[test]
fn a_torn_last_batch_ends_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = Segment::create(dir.path(), 1, SIZE, SALT).unwrap();
    let (first, expected) = batch(1..=2, 50);
    let (second, _) = batch(3..=3, 2 * BLOCK);
    segment.append(&first).unwrap();
    let torn_at = segment.append(&second).unwrap();
    drop(segment);
    // The crash kept the second batch's first block and lost the rest of it.
    let file = OpenOptions::new().write(true).open(dir.path().join(segment_file_name(1))).unwrap();
    file.write_all_at(&vec![0u8; 2 * BLOCK], torn_at + BLOCK as u64).unwrap();

    let (segment, found, end) = reopen(dir.path(), 1);
    assert_eq!(found.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), expected);
    assert_eq!(end, ScanEnd::Tail { offset: torn_at, blank: false });
    assert_eq!(segment.tail(), torn_at, "the next batch overwrites the torn one");
}

#[test]
fn damage_before_good_batches_is_corruption_not_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = Segment::create(dir.path(), 1, SIZE, SALT).unwrap();
    for i in 0..3 {
        segment.append(&batch(i * 10 + 1..=i * 10 + 2, 64).0).unwrap();
    }
    drop(segment);
    flip_byte(dir.path(), 1, BLOCK as u64 + 100); // inside the second batch's body
    let (segment, found, end) = reopen(dir.path(), 1);
    assert_eq!(found.len(), 2, "only the first batch is served");
    assert!(
        matches!(&end, ScanEnd::Corrupt { offset, reason } if *offset == BLOCK as u64 && reason.contains("checksum")),
        "{end:?}"
    );
    assert_eq!(segment.tail(), BLOCK as u64);

    // A block of zeros where an acknowledged batch was, before good ones, is damage too.
    let file = OpenOptions::new().write(true).open(dir.path().join(segment_file_name(1))).unwrap();
    file.write_all_at(&[0u8; BLOCK], BLOCK as u64).unwrap();
    let (_, _, end) = reopen(dir.path(), 1);
    assert!(matches!(&end, ScanEnd::Corrupt { offset, .. } if *offset == BLOCK as u64), "{end:?}");
}

#[test]
fn a_reused_segment_does_not_serve_its_previous_lives_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Segment::create(dir.path(), 1, SIZE, SALT).unwrap();
    for i in 0..4 {
        old.append(&batch(i + 1..=i + 1, 32).0).unwrap();
    }
    drop(old);
    // Reuse the file as segment 2: one new batch at the start, the old ones after it.
    std::fs::rename(dir.path().join(segment_file_name(1)), dir.path().join(segment_file_name(2))).unwrap();
    let (mut reused, found, end) = reopen(dir.path(), 2);
    assert!(found.is_empty());
    assert_eq!(end, ScanEnd::Tail { offset: 0, blank: false });
    let (fresh, expected) = batch(100..=100, 32);
    reused.append(&fresh).unwrap();
    drop(reused);

    let (_, found, end) = reopen(dir.path(), 2);
    assert_eq!(found.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), expected);
    assert_eq!(end, ScanEnd::Tail { offset: BLOCK as u64, blank: false });
}

#[test]
fn a_full_segment_refuses_a_batch_without_writing_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = Segment::create(dir.path(), 1, 2 * BLOCK as u64, SALT).unwrap();
    segment.append(&batch(1..=1, 10).0).unwrap();
    let (big, _) = batch(2..=2, BLOCK);
    assert!(
        matches!(segment.append(&big), Err(AppendError::Full { left, needed }) if left == BLOCK as u64 && needed == 2 * BLOCK as u64)
    );
    assert_eq!(segment.tail(), BLOCK as u64);
    segment.append(&batch(2..=2, 10).0).unwrap();
    assert!(matches!(segment.append(&batch(3..=3, 1).0), Err(AppendError::Full { left: 0, .. })));
    drop(segment);
    let (_, found, end) = reopen(dir.path(), 1);
    assert_eq!(found.len(), 2);
    assert_eq!(end, ScanEnd::Tail { offset: 2 * BLOCK as u64, blank: true });
}

#[test]
fn garbage_anywhere_never_panics_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = Segment::create(dir.path(), 9, 16 * BLOCK as u64, SALT).unwrap();
    segment.append(&batch(1..=5, 200).0).unwrap();
    drop(segment);
    // A fixed-seed generator: the same bytes every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..200 {
        for _ in 0..1 + round % 8 {
            let at = next() % (16 * BLOCK as u64);
            flip_byte(dir.path(), 9, at);
        }
        // Whatever the bytes, the scan answers: records of good batches only, then an end.
        let (segment, found, _) = reopen(dir.path(), 9);
        assert!(found.len() <= 5);
        assert!(segment.tail() <= 16 * BLOCK as u64);
    }
}

#[test]
fn each_record_is_found_where_its_payload_lies() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = Segment::create(dir.path(), 4, SIZE, SALT).unwrap();
    let records: Vec<Record> = (1..=3).map(|i| entry(i, 10 * i as usize)).collect();
    let mut first = WalBatch::new();
    for r in &records[..2] {
        first.push(r).unwrap();
    }
    let mut second = WalBatch::new();
    second.push(&records[2]).unwrap();
    segment.append(&first).unwrap();
    segment.append(&second).unwrap();
    drop(segment);
    let (segment, found, _) = reopen_at(dir.path(), 4);
    assert_eq!(found.len(), 3);
    for (at, record) in &found {
        let mut payload = vec![0u8; record.payload.len()];
        segment.file.read_exact_at(&mut payload, at.payload).unwrap();
        assert_eq!(payload, record.payload, "record {} read back from {}", record.index, at.payload);
    }
    assert_eq!(found.iter().map(|(at, _)| at.batch).collect::<Vec<_>>(), [0, 0, BLOCK as u64]);
}

#[test]
fn a_frame_that_this_log_did_not_make_is_not_a_batch() {
    // A client's value could hold the bytes of a well-formed batch, sequence number included;
    // without the log's salt its CRC cannot hold, so the scan neither serves it nor takes it
    // for an acknowledged batch after a blank block.
    let dir = tempfile::tempdir().unwrap();
    let mut segment = Segment::create(dir.path(), 1, SIZE, SALT).unwrap();
    let (first, expected) = batch(1..=1, 10);
    segment.append(&first).unwrap();
    drop(segment);
    let (crafted, _) = batch(2..=2, 10);
    let file = OpenOptions::new().write(true).open(dir.path().join(segment_file_name(1))).unwrap();
    file.write_all_at(&crafted.frame(1, SALT ^ 1), 2 * BLOCK as u64).unwrap();
    file.write_all_at(&crafted.frame(1, SALT ^ 1), BLOCK as u64 * 3).unwrap();
    let (_, found, end) = reopen(dir.path(), 1);
    assert_eq!(found.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), expected);
    assert_eq!(end, ScanEnd::Tail { offset: BLOCK as u64, blank: true });
    // The same frame made with the log's salt would be taken for damage after the blank block.
    file.write_all_at(&crafted.frame(1, SALT), 2 * BLOCK as u64).unwrap();
    let (_, _, end) = reopen(dir.path(), 1);
    assert!(matches!(end, ScanEnd::Corrupt { offset, .. } if offset == BLOCK as u64), "{end:?}");
}
