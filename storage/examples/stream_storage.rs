//! Streams in segment files or in redb: the measurement behind the choice (see
//! `benches/stream-storage.md`). Appends the same entries both ways in fsynced batches, reads
//! them all back in order, then drops the oldest half (retention).
//!
//!   cargo run --release -p warren-storage --example stream_storage -- [ENTRIES] [SIZE] [BATCH]

use std::time::Instant;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use warren_storage::stream::{EntryBatch, StreamLog, DEFAULT_MAX_SEGMENT_BYTES};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("stream");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let entries = args.next().transpose()?.unwrap_or(200_000);
    let size = args.next().transpose()?.unwrap_or(1024);
    let batch_len = args.next().transpose()?.unwrap_or(512);
    let dir = tempfile::tempdir()?;
    let body = vec![0x5au8; size];
    println!("{entries} entries of {size} B, fsynced every {batch_len}");

    // Segment files (what Warren uses), 64 MB segments so that retention has some to drop.
    let t = Instant::now();
    let mut log = StreamLog::open(&dir.path().join("files"), 64 * 1024 * 1024)?;
    let mut batch = EntryBatch::default();
    for chunk in 0..entries.div_ceil(batch_len) {
        batch.clear();
        for _ in 0..batch_len.min(entries - chunk * batch_len) {
            batch.push(&body);
        }
        log.append(&batch, 0)?;
    }
    let append = t.elapsed();
    let t = Instant::now();
    let reader = log.reader();
    let (mut next, mut read) = (0, 0usize);
    loop {
        let end = reader.read(next, 4096, 4 << 20, |_, e| read += e.len())?;
        if end.next == next {
            break;
        }
        next = end.next;
    }
    let read_time = t.elapsed();
    let figures = log.figures();
    let t = Instant::now();
    log.retain(Some(figures.bytes / 2), None, 0)?;
    let retain = t.elapsed();
    println!(
        "files: append {:.0} entries/s, read {:.0} entries/s ({} MB), drop half {:.1} ms, {} MB on disk before, {} after",
        entries as f64 / append.as_secs_f64(),
        (read / size) as f64 / read_time.as_secs_f64(),
        read >> 20,
        retain.as_secs_f64() * 1000.0,
        figures.bytes >> 20,
        log.figures().bytes >> 20
    );
    drop(log);
    let _ = DEFAULT_MAX_SEGMENT_BYTES;

    // redb: one table keyed by offset, one durable commit per batch.
    let path = dir.path().join("stream.redb");
    let db = Database::create(&path)?;
    let t = Instant::now();
    let mut offset = 0u64;
    for chunk in 0..entries.div_ceil(batch_len) {
        let mut w = db.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        {
            let mut table = w.open_table(ENTRIES)?;
            for _ in 0..batch_len.min(entries - chunk * batch_len) {
                table.insert(offset, body.as_slice())?;
                offset += 1;
            }
        }
        w.commit()?;
    }
    let append = t.elapsed();
    let t = Instant::now();
    let mut read = 0usize;
    {
        let r = db.begin_read()?;
        let table = r.open_table(ENTRIES)?;
        for entry in table.range(0u64..)? {
            read += entry?.1.value().len();
        }
    }
    let read_time = t.elapsed();
    let before = std::fs::metadata(&path)?.len();
    let t = Instant::now();
    {
        let mut w = db.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        {
            let mut table = w.open_table(ENTRIES)?;
            table.retain_in(0..offset / 2, |_, _| false)?;
        }
        w.commit()?;
    }
    let retain = t.elapsed();
    println!(
        "redb:  append {:.0} entries/s, read {:.0} entries/s ({} MB), drop half {:.1} ms, {} MB on disk before, {} after",
        entries as f64 / append.as_secs_f64(),
        (read / size) as f64 / read_time.as_secs_f64(),
        read >> 20,
        retain.as_secs_f64() * 1000.0,
        before >> 20,
        std::fs::metadata(&path)?.len() >> 20
    );
    Ok(())
}
