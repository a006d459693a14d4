use super::*;

fn entry(i: u64) -> Vec<u8> {
    format!("message {i}").into_bytes()
}

fn append_range(log: &mut StreamLog, range: std::ops::Range<u64>, ts: i64) {
    let mut batch = EntryBatch::default();
    for i in range {
        batch.push(&entry(i));
    }
    log.append(&batch, ts).unwrap();
}

fn read_all(reader: &StreamReader, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let end = reader
            .read(next, 1000, usize::MAX, |o, e| out.push((o, e.to_vec())))
            .unwrap();
        if end.next == next {
            return out;
        }
        next = end.next;
    }
}

#[test]
fn appended_entries_are_read_back_from_any_offset_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), 200).unwrap();
    for (i, start) in (0..50).step_by(5).enumerate() {
        append_range(&mut log, start..start + 5, 1000 + i as i64);
    }
    let reader = log.reader();
    let figures = reader.figures();
    assert_eq!(figures.first_offset, 0);
    assert_eq!(figures.end_offset, 50);
    assert_eq!(figures.last_chunk, 45);
    assert!(figures.segments > 1, "small segments roll: {figures:?}");
    for from in [0, 1, 17, 49] {
        let got = read_all(&reader, from);
        let want: Vec<(u64, Vec<u8>)> = (from..50).map(|i| (i, entry(i))).collect();
        assert_eq!(got, want, "from {from}");
    }
    assert!(read_all(&reader, 50).is_empty());
    assert_eq!(reader.offset_at(0).unwrap(), 0);
    assert_eq!(reader.offset_at(1003).unwrap(), 15);
    assert_eq!(reader.offset_at(5000).unwrap(), 50);
    drop(log);

    let log = StreamLog::open(dir.path(), 200).unwrap();
    assert_eq!(log.next_offset(), 50);
    assert_eq!(log.figures(), figures);
    assert_eq!(read_all(&log.reader(), 13).len(), 37);
}

/// Cuts the last three bytes off the segment that starts at offset 0, as a crash mid-write.
fn tear_first_segment(dir: &Path) {
    let path = segment_path(dir, 0);
    let len = fs::metadata(&path).unwrap().len();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 3).unwrap();
}

#[test]
fn a_torn_tail_is_cut_off_and_its_offsets_given_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
    append_range(&mut log, 0..3, 1);
    append_range(&mut log, 3..6, 2);
    drop(log);
    // A crash in the middle of the second chunk's write.
    tear_first_segment(dir.path());
    let mut log = StreamLog::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
    assert_eq!(log.next_offset(), 3);
    assert_eq!(log.figures().last_chunk, 0);
    append_range(&mut log, 3..4, 3);
    let got = read_all(&log.reader(), 0);
    assert_eq!(got.len(), 4);
    assert_eq!(got[3], (3, entry(3)));

    // A chunk whose bytes were changed fails its checksum: cut off as well.
    drop(log);
    let path = segment_path(dir.path(), 0);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let log = StreamLog::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
    assert_eq!(log.next_offset(), 3);
}

#[test]
fn retention_drops_whole_old_segments_never_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), 100).unwrap();
    for i in 0..10 {
        append_range(&mut log, i * 2..i * 2 + 2, i as i64 * 1000);
    }
    let before = log.figures();
    assert_eq!(before.segments, 10);
    // By size: at most about three segments' worth.
    let last_three: u64 = log.layout().segments[7..].iter().map(|s| s.bytes).sum();
    assert_eq!(log.retain(Some(last_three), None, 0).unwrap(), 7);
    let after = log.figures();
    assert_eq!(after.first_offset, 14);
    assert_eq!(after.segments, 3);
    let reader = log.reader();
    // A reader behind the first kept offset goes on from there.
    assert_eq!(read_all(&reader, 0).first().map(|e| e.0), Some(14));
    // By age: segments whose newest chunk is older than 1.5 s before 9,000 ms go.
    assert_eq!(log.retain(None, Some(1500), 9000).unwrap(), 1);
    assert_eq!(log.figures().first_offset, 16);
    // Everything old, but the last segment stays.
    assert_eq!(log.retain(None, Some(1), 1_000_000).unwrap(), 1);
    assert_eq!(log.figures().segments, 1);
    assert_eq!(log.figures().first_offset, 18);
    drop(log);
    let log = StreamLog::open(dir.path(), 100).unwrap();
    assert_eq!(log.figures().first_offset, 18);
    assert_eq!(log.next_offset(), 20);
}

#[test]
fn reads_are_bounded_and_chunks_split_big_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
    let big = vec![7u8; 300 * 1024];
    let mut batch = EntryBatch::default();
    for _ in 0..10 {
        batch.push(&big);
    }
    log.append(&batch, 5).unwrap();
    // 300 KiB entries: three to a 1 MiB chunk.
    assert_eq!(log.figures().last_chunk, 9);
    let mut n = 0;
    let end = log
        .reader()
        .read(0, 100, 500 * 1024, |_, e| {
            assert_eq!(e.len(), big.len());
            n += 1;
        })
        .unwrap();
    assert_eq!(
        (n, end.next),
        (2, 2),
        "stops after the entry that passes max_bytes"
    );
    let mut offsets = Vec::new();
    log.reader()
        .read(4, 3, usize::MAX, |o, _| offsets.push(o))
        .unwrap();
    assert_eq!(offsets, vec![4, 5, 6]);
}

#[test]
fn a_removed_log_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streams").join("7");
    let mut log = StreamLog::open(&path, 100).unwrap();
    append_range(&mut log, 0..5, 0);
    log.remove().unwrap();
    assert!(!path.exists());
}

/// Encryption at rest: a sealed log's segments hold none of its entries in the clear, read back
/// (after a reopen, a torn tail cut off as in a plain log) under its key; a log with chunks
/// opens only under the choice it was written under; a chunk moved to another stream's log, or
/// to another offset, does not open.
#[test]
fn a_sealed_log_keeps_nothing_in_the_clear_and_opens_only_under_its_key() {
    let key = crate::EncryptionKey::from_hex(&"ab".repeat(32)).unwrap();
    let cipher = Some(Arc::new(Cipher::new(&key)));
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("7");
    let mut log = StreamLog::open_sealed(&dir, 300, cipher.clone()).unwrap();
    for start in (0..30).step_by(3) {
        append_range(&mut log, start..start + 3, 1000 + start as i64);
    }
    let want: Vec<(u64, Vec<u8>)> = (0..30).map(|i| (i, entry(i))).collect();
    assert_eq!(read_all(&log.reader(), 0), want);
    assert!(log.figures().segments > 1);
    drop(log);
    let mut segments = Vec::new();
    for e in fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let bytes = fs::read(&path).unwrap();
        assert!(
            !bytes.windows(7).any(|w| w == b"message"),
            "{path:?} holds an entry in the clear"
        );
        if path.extension().is_some() {
            segments.push(path);
        }
    }
    segments.sort();

    let log = StreamLog::open_sealed(&dir, 300, cipher.clone()).unwrap();
    assert_eq!(read_all(&log.reader(), 5), want[5..]);
    assert_eq!(log.reader().offset_at(1010).unwrap(), 12);
    drop(log);
    match StreamLog::open(&dir, 300) {
        Err(StreamError::Key { .. }) => {}
        other => panic!("opened without its key: {:?}", other.map(|l| l.figures())),
    }

    // The same chunks under another stream's directory (another queue id) do not open.
    let other = root.path().join("8");
    fs::create_dir_all(&other).unwrap();
    for path in &segments {
        fs::copy(path, other.join(path.file_name().unwrap())).unwrap();
    }
    fs::write(other.join(SEALED_MARKER), b"").unwrap();
    let moved = StreamLog::open_sealed(&other, 300, cipher.clone()).unwrap();
    let read = moved.reader().read(0, 10, usize::MAX, |_, _| {});
    assert!(matches!(read, Err(StreamError::Key { .. })), "{read:?}");

    // A plain log with chunks does not open with a key; an empty one takes either.
    let plain = root.path().join("9");
    append_range(&mut StreamLog::open(&plain, 300).unwrap(), 0..1, 1);
    assert!(matches!(
        StreamLog::open_sealed(&plain, 300, cipher.clone()),
        Err(StreamError::Key { .. })
    ));
    let empty = root.path().join("10");
    drop(StreamLog::open(&empty, 300).unwrap());
    let mut sealed = StreamLog::open_sealed(&empty, 300, cipher.clone()).unwrap();
    append_range(&mut sealed, 0..2, 1);
    append_range(&mut sealed, 2..4, 2);
    drop(sealed);
    // A crash in the middle of the second chunk's write: cut off without the key's help.
    tear_first_segment(&empty);
    let sealed = StreamLog::open_sealed(&empty, 300, cipher).unwrap();
    assert_eq!(sealed.next_offset(), 2);
    assert_eq!(read_all(&sealed.reader(), 0), want[..2]);
}

#[test]
fn a_log_restarted_further_on_drops_what_it_had_and_appends_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), 100).unwrap();
    for start in (0..40).step_by(5) {
        append_range(&mut log, start..start + 5, 1000);
    }
    let reader = log.reader();
    assert!(reader.figures().segments > 1);
    log.restart_at(500).unwrap();
    assert_eq!(log.next_offset(), 500);
    let figures = reader.figures();
    assert_eq!((figures.first_offset, figures.end_offset), (500, 500));
    assert!(read_all(&reader, 0).is_empty(), "nothing left before 500");
    append_range(&mut log, 500..503, 2000);
    let want: Vec<(u64, Vec<u8>)> = (500..503).map(|i| (i, entry(i))).collect();
    assert_eq!(read_all(&reader, 0), want);
    drop(log);
    // Reopened: only the new segment, at 500.
    let log = StreamLog::open(dir.path(), 100).unwrap();
    assert_eq!(log.next_offset(), 503);
    assert_eq!(read_all(&log.reader(), 0), want);
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(SUFFIX))
        .count();
    assert_eq!(segments, 1);
}
