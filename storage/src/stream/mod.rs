//! Streams' storage: an append-only log of messages per stream, in segment files beside the
//! database (`<data dir>/streams/<queue id>/<first offset>.segment`), each a run of chunks
//! ([`chunk`]) of messages appended together.
//!
//! Why files and not redb: a stream is written once and read many times in order, and retention
//! drops whole segments — a file append, a sequential read and an unlink, where a B-tree would
//! rewrite pages on insert and on delete, and pin old pages for open readers (see the
//! measurement in `benches/stream-storage.md`).
//!
//! One [`StreamLog`] appends (on a blocking thread: it writes and fsyncs); any number of
//! [`StreamReader`]s read what is durable, each with its own file handles. They share the
//! layout (`Layout`): which segments exist, a sparse index into each, and how far the log is durable.

pub mod chunk;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

use chunk::ChunkHeader;

use crate::crypto::Cipher;

/// In a stream's directory when its chunks are sealed (encryption at rest): a log that holds
/// chunks opens only under the same choice (with a key or without).
const SEALED_MARKER: &str = "encrypted";

/// How a stream's chunks are sealed: each chunk's data under the broker's key, bound to the
/// stream (its queue id) and the chunk's first offset, so that a chunk cannot be passed off as
/// another's. The header stays plain (retention, seeking and recovery read headers only) and
/// its checksum covers the sealed bytes (a torn chunk is told without the key).
#[derive(Clone)]
struct Sealing {
    cipher: Arc<Cipher>,
    stream: u64,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealing(stream {})", self.stream)
    }
}

impl Sealing {
    fn aad(&self, first_offset: u64) -> [u8; 16] {
        let mut aad = [0u8; 16];
        aad[..8].copy_from_slice(&self.stream.to_be_bytes());
        aad[8..].copy_from_slice(&first_offset.to_be_bytes());
        aad
    }
}

/// A chunk holds at most this much data (and [`MAX_CHUNK_ENTRIES`] entries), so a reader holds
/// little at a time; one entry bigger than this is a chunk of its own.
pub const MAX_CHUNK_DATA: usize = 1024 * 1024;
pub const MAX_CHUNK_ENTRIES: usize = 512;
/// The sparse index has a point about every this many bytes of a segment.
const INDEX_EVERY: u64 = 1024 * 1024;
/// RabbitMQ's default `x-stream-max-segment-size-bytes`.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 500_000_000;
const SUFFIX: &str = ".segment";

#[derive(Debug, Error)]
pub enum StreamError {
    #[error("stream log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("stream log {path}: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("stream entry of {0} bytes is too large")]
    TooLarge(usize),
    /// Its chunks are sealed and no key was given, or the other way round.
    #[error("stream log {path}: {why}")]
    Key { path: PathBuf, why: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StreamError + '_ {
    move |source| StreamError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where one chunk starts in its segment: a point of the sparse index.
#[derive(Debug, Clone, Copy)]
struct IndexPoint {
    offset: u64,
    position: u64,
    timestamp_ms: i64,
}

#[derive(Debug, Clone)]
struct Segment {
    first_offset: u64,
    /// The offset after its last entry.
    end_offset: u64,
    bytes: u64,
    last_timestamp_ms: i64,
    /// The first chunk, then about one chunk every [`INDEX_EVERY`] bytes.
    index: Vec<IndexPoint>,
}

impl Segment {
    fn empty(first_offset: u64) -> Segment {
        Segment {
            first_offset,
            end_offset: first_offset,
            bytes: 0,
            last_timestamp_ms: i64::MIN,
            index: Vec::new(),
        }
    }

    fn add_chunk(&mut self, header: &ChunkHeader, position: u64) {
        let due = self
            .index
            .last()
            .is_none_or(|p| position - p.position >= INDEX_EVERY);
        if due {
            self.index.push(IndexPoint {
                offset: header.first_offset,
                position,
                timestamp_ms: header.timestamp_ms,
            });
        }
        self.end_offset = header.end_offset();
        self.bytes = position + header.stored_len();
        self.last_timestamp_ms = self.last_timestamp_ms.max(header.timestamp_ms);
    }

    /// Where to start scanning for `offset`: the last index point at or before it.
    fn position_for(&self, offset: u64) -> u64 {
        match self.index.partition_point(|p| p.offset <= offset) {
            0 => 0,
            n => self.index[n - 1].position,
        }
    }

    fn position_for_time(&self, timestamp_ms: i64) -> u64 {
        match self
            .index
            .partition_point(|p| p.timestamp_ms < timestamp_ms)
        {
            0 => 0,
            n => self.index[n - 1].position,
        }
    }
}

fn segment_path(dir: &Path, first_offset: u64) -> PathBuf {
    dir.join(format!("{first_offset:020}{SUFFIX}"))
}

/// What readers and the appender share.
#[derive(Debug)]
struct Layout {
    dir: PathBuf,
    /// Oldest first; the last is the one appended to. Never empty.
    segments: Vec<Segment>,
    /// Offsets below this are on disk (fsynced): readers see nothing beyond.
    durable_end: u64,
    /// The first offset of the last chunk made durable (the `last` of `x-stream-offset`).
    last_chunk: u64,
    sealing: Option<Sealing>,
}

impl Layout {
    fn first_offset(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.first_offset)
    }
}

/// How big a stream is, as the management API shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamFigures {
    pub first_offset: u64,
    /// The offset the next message gets; `end - first` messages are kept.
    pub end_offset: u64,
    pub last_chunk: u64,
    pub segments: usize,
    pub bytes: u64,
}

/// Entries to append, each encoded straight into one buffer as a chunk's data holds them
/// (`length u32, entry`), so that appending copies nothing per entry and allocates nothing once
/// the buffer has grown. Reused from append to append.
#[derive(Debug, Default)]
pub struct EntryBatch {
    data: Vec<u8>,
    /// Where each entry's record ends in `data`.
    ends: Vec<usize>,
}

impl EntryBatch {
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of the entries so far.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Adds one entry, written by `write` at the end of the buffer it is given.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.data.len();
        self.data.extend_from_slice(&[0; 4]);
        write(&mut self.data);
        let len = (self.data.len() - start - 4) as u32;
        self.data[start..start + 4].copy_from_slice(&len.to_be_bytes());
        self.ends.push(self.data.len());
    }

    pub fn push(&mut self, entry: &[u8]) {
        self.push_with(|out| out.extend_from_slice(entry));
    }

    /// The batch cut into chunks: (entries, data) each.
    fn chunks(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        let mut first = 0;
        let mut start = 0;
        std::iter::from_fn(move || {
            if first == self.ends.len() {
                return None;
            }
            let mut n = 1;
            while first + n < self.ends.len()
                && n < MAX_CHUNK_ENTRIES
                && self.ends[first + n] - start <= MAX_CHUNK_DATA
            {
                n += 1;
            }
            let end = self.ends[first + n - 1];
            let chunk = (n as u32, &self.data[start..end]);
            first += n;
            start = end;
            Some(chunk)
        })
    }
}

/// The appending side of a stream's log.
pub struct StreamLog {
    layout: Arc<Mutex<Layout>>,
    /// The last segment, open for appending.
    file: File,
    max_segment_bytes: u64,
    /// The offset the next entry gets (written, maybe not yet durable).
    next_offset: u64,
    buf: Vec<u8>,
    sealing: Option<Sealing>,
}

impl StreamLog {
    /// Opens (or creates) the log in `dir`. A chunk torn by a crash at the end of the last
    /// segment (short, or failing its checksum) is cut off: it was never reported durable.
    pub fn open(dir: &Path, max_segment_bytes: u64) -> Result<StreamLog, StreamError> {
        Self::open_sealed(dir, max_segment_bytes, None)
    }

    /// As [`StreamLog::open`], its chunks sealed under `cipher` if there is one (the log must
    /// have been written under the same choice, unless it is empty).
    pub(crate) fn open_sealed(
        dir: &Path,
        max_segment_bytes: u64,
        cipher: Option<Arc<Cipher>>,
    ) -> Result<StreamLog, StreamError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let mut firsts = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let name = entry.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            firsts.push(first);
        }
        firsts.sort_unstable();
        let mut segments = Vec::with_capacity(firsts.len().max(1));
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let path = segment_path(dir, first);
            let last = i + 1 == count;
            let segment = scan_segment(&path, first, last)?;
            if let Some(previous) = segments.last() {
                let previous: &Segment = previous;
                if previous.end_offset != segment.first_offset {
                    return Err(StreamError::Corrupt {
                        path,
                        why: format!(
                            "starts at offset {} where the previous segment ends at {}",
                            segment.first_offset, previous.end_offset
                        ),
                    });
                }
            }
            segments.push(segment);
        }
        if segments.is_empty() {
            segments.push(Segment::empty(0));
        }
        let active = segments.last().map(|s| s.first_offset).unwrap_or(0);
        let path = segment_path(dir, active);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        let next_offset = segments.last().map_or(0, |s| s.end_offset);
        let has_chunks = segments.iter().any(|s| s.bytes > 0);
        let sealing = sealing_of(dir, cipher, has_chunks)?;
        let last_chunk = last_chunk_of(dir, &segments)?;
        Ok(StreamLog {
            layout: Arc::new(Mutex::new(Layout {
                dir: dir.to_owned(),
                segments,
                durable_end: next_offset,
                last_chunk,
                sealing: sealing.clone(),
            })),
            file,
            max_segment_bytes: max_segment_bytes.max(1),
            next_offset,
            buf: Vec::new(),
            sealing,
        })
    }

    fn layout(&self) -> MutexGuard<'_, Layout> {
        self.layout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reader of what this log has made durable.
    pub fn reader(&self) -> StreamReader {
        StreamReader {
            layout: self.layout.clone(),
        }
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    pub fn set_max_segment_bytes(&mut self, max: u64) {
        self.max_segment_bytes = max.max(1);
    }

    /// Appends the batch's entries (given the offsets from [`StreamLog::next_offset`] on) as
    /// chunks stamped `timestamp_ms`, written and fsynced before it returns; readers see them
    /// then. On an error nothing of it is kept (the file is cut back) and the offsets will be
    /// given again.
    pub fn append(&mut self, batch: &EntryBatch, timestamp_ms: i64) -> Result<(), StreamError> {
        let before = self.clone_state();
        match self.write_all(batch, timestamp_ms) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.restore(before);
                Err(e)
            }
        }
    }

    fn write_all(&mut self, batch: &EntryBatch, timestamp_ms: i64) -> Result<(), StreamError> {
        let dir = self.dir();
        // Each chunk written: its header, its segment (by first offset), its position there.
        let mut chunks: Vec<(ChunkHeader, u64, u64)> = Vec::new();
        let (mut segment_first, mut segment_size) = {
            let layout = self.layout();
            let active = layout.segments.last().expect("never empty");
            (active.first_offset, active.bytes)
        };
        // What goes to the current segment, written at once.
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        let mut result = Ok(());
        for (count, plain) in batch.chunks() {
            let sealed;
            let data = match &self.sealing {
                None => plain,
                Some(sealing) => {
                    let aad = sealing.aad(self.next_offset);
                    match sealing.cipher.seal_bound(&aad, plain) {
                        Ok(s) => sealed = s,
                        Err(e) => {
                            result = Err(StreamError::Key {
                                path: dir.clone(),
                                why: e.to_string(),
                            });
                            break;
                        }
                    }
                    &sealed[..]
                }
            };
            if data.len() > chunk::MAX_DATA_LEN {
                // Nothing of the batch is kept (cut back by the caller).
                result = Err(StreamError::TooLarge(data.len()));
                break;
            }
            let header = ChunkHeader {
                first_offset: self.next_offset,
                count,
                timestamp_ms,
                data_len: data.len() as u32,
                crc: crc32fast::hash(data),
            };
            if segment_size > 0 && segment_size + header.stored_len() > self.max_segment_bytes {
                // A new segment, named by its first offset; the one before is whole on disk.
                let full = segment_path(&dir, segment_first);
                result = self
                    .file
                    .write_all(&out)
                    .and_then(|()| self.file.sync_data())
                    .map_err(io_at(&full));
                out.clear();
                if result.is_err() {
                    break;
                }
                segment_first = self.next_offset;
                let path = segment_path(&dir, segment_first);
                match OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(file) => self.file = file,
                    Err(e) => {
                        result = Err(io_at(&path)(e));
                        break;
                    }
                }
                if let Err(e) = sync_dir(&dir) {
                    result = Err(e);
                    break;
                }
                segment_size = 0;
            }
            out.extend_from_slice(&header.encode());
            out.extend_from_slice(data);
            chunks.push((header, segment_first, segment_size));
            segment_size += header.stored_len();
            self.next_offset = header.end_offset();
        }
        if result.is_ok() {
            result = self
                .file
                .write_all(&out)
                .and_then(|()| self.file.sync_data())
                .map_err(io_at(&segment_path(&dir, segment_first)));
        }
        out.clear();
        self.buf = out;
        result?;
        // Durable: now readers may see it.
        let mut layout = self.layout();
        for (header, segment_first, position) in chunks {
            if layout.segments.last().map(|s| s.first_offset) != Some(segment_first) {
                layout.segments.push(Segment::empty(segment_first));
            }
            let active = layout.segments.last_mut().expect("just pushed");
            active.add_chunk(&header, position);
            layout.last_chunk = header.first_offset;
        }
        layout.durable_end = self.next_offset;
        Ok(())
    }

    fn dir(&self) -> PathBuf {
        self.layout().dir.clone()
    }

    fn clone_state(&self) -> (u64, u64, u64) {
        let layout = self.layout();
        let active = layout.segments.last().expect("never empty");
        (self.next_offset, active.first_offset, active.bytes)
    }

    /// After a failed append: the active segment cut back to what the layout has, any segment
    /// begun by the append removed.
    fn restore(&mut self, (next_offset, active_first, active_bytes): (u64, u64, u64)) {
        self.next_offset = next_offset;
        let dir = self.dir();
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let first = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(SUFFIX))
                    .and_then(|n| n.parse::<u64>().ok());
                if first.is_some_and(|f| f > active_first) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let path = segment_path(&dir, active_first);
        if let Ok(file) = OpenOptions::new().append(true).open(&path) {
            let _ = file.set_len(active_bytes);
            self.file = file;
        }
    }

    /// Drops the oldest segments (never the one appended to) while the log holds more than
    /// `max_bytes`, or while a segment's newest chunk is older than `max_age_ms` before
    /// `now_ms`. How many it dropped.
    pub fn retain(
        &mut self,
        max_bytes: Option<u64>,
        max_age_ms: Option<u64>,
        now_ms: i64,
    ) -> Result<usize, StreamError> {
        let mut dropped = 0;
        loop {
            let mut layout = self.layout();
            if layout.segments.len() < 2 {
                break;
            }
            let total: u64 = layout.segments.iter().map(|s| s.bytes).sum();
            let oldest = &layout.segments[0];
            let too_big = max_bytes.is_some_and(|max| total > max);
            let too_old = max_age_ms.is_some_and(|age| {
                oldest.last_timestamp_ms
                    < now_ms.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX))
            });
            if !(too_big || too_old) {
                break;
            }
            let path = segment_path(&layout.dir, oldest.first_offset);
            layout.segments.remove(0);
            drop(layout);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
            dropped += 1;
        }
        Ok(dropped)
    }

    pub fn figures(&self) -> StreamFigures {
        self.reader().figures()
    }

    /// Drops every entry and starts the log again, empty, at `offset` (a replica whose copy
    /// ends before what the others still keep: what it has would leave a gap). The old segments
    /// go oldest first, so a crash meanwhile leaves a log that opens (what is left of the old
    /// entries, or none), which the caller restarts again.
    pub fn restart_at(&mut self, offset: u64) -> Result<(), StreamError> {
        let dir = self.dir();
        let old: Vec<u64> = self
            .layout()
            .segments
            .iter()
            .map(|s| s.first_offset)
            .collect();
        {
            // Readers see an empty log from here on.
            let mut layout = self.layout();
            layout.segments = vec![Segment::empty(offset)];
            layout.durable_end = offset;
            layout.last_chunk = offset;
        }
        self.next_offset = offset;
        for first in old {
            let path = segment_path(&dir, first);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        let path = segment_path(&dir, offset);
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&dir))?;
        Ok(())
    }

    /// Removes the whole log (the stream was deleted).
    pub fn remove(self) -> Result<(), StreamError> {
        let dir = self.dir();
        drop(self.file);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at(&dir)(e)),
        }
    }
}

/// Removes the logs in `streams` (a directory per stream, named by its queue id) of the
/// queues `known` does not know: a stream whose delete was cut short by a crash after its
/// record went, or whose vhost went while the broker was down. Entries not named as a
/// stream's are left alone. The ids removed.
pub fn remove_unknown(
    streams: &Path,
    known: impl Fn(u64) -> bool,
) -> Result<Vec<u64>, StreamError> {
    let entries = match fs::read_dir(streams) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(streams)(e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_at(streams))?;
        let path = entry.path();
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if known(id) || !entry.file_type().map_err(io_at(&path))?.is_dir() {
            continue;
        }
        fs::remove_dir_all(&path).map_err(io_at(&path))?;
        removed.push(id);
    }
    Ok(removed)
}

/// How the log in `dir` is sealed, checked against how its chunks were written: a log with
/// chunks opens only under the same choice it was written under (its marker says which); an
/// empty one takes the choice given.
fn sealing_of(
    dir: &Path,
    cipher: Option<Arc<Cipher>>,
    has_chunks: bool,
) -> Result<Option<Sealing>, StreamError> {
    let marker = dir.join(SEALED_MARKER);
    let marked = marker.exists();
    match (cipher.is_some(), marked, has_chunks) {
        (true, false, true) => {
            return Err(StreamError::Key {
                path: dir.to_owned(),
                why: "its chunks are not encrypted, and an encryption key was given: \
                      a stream is not encrypted in place"
                    .into(),
            })
        }
        (false, true, true) => {
            return Err(StreamError::Key {
                path: dir.to_owned(),
                why: "its chunks are encrypted, and no encryption key was given".into(),
            })
        }
        (true, false, false) => {
            File::create(&marker).map_err(io_at(&marker))?;
            sync_dir(dir)?;
        }
        (false, true, false) => {
            fs::remove_file(&marker).map_err(io_at(&marker))?;
            sync_dir(dir)?;
        }
        _ => {}
    }
    let stream = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(cipher.map(|cipher| Sealing { cipher, stream }))
}

fn sync_dir(dir: &Path) -> Result<(), StreamError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// Reads a segment's chunk headers. In the last segment (`verify`) each chunk's data is checked
/// too, and a torn tail cut off; elsewhere a bad header ends the segment.
fn scan_segment(path: &Path, first_offset: u64, verify: bool) -> Result<Segment, StreamError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(verify)
        .open(path)
        .map_err(io_at(path))?;
    let len = file.metadata().map_err(io_at(path))?.len();
    let mut reader = io::BufReader::with_capacity(64 * 1024, &mut file);
    let mut segment = Segment::empty(first_offset);
    let mut position = 0u64;
    let mut data = Vec::new();
    loop {
        let header = match chunk::read_header(&mut reader).map_err(io_at(path))? {
            Some(h) if h.first_offset == segment.end_offset && position + h.stored_len() <= len => {
                h
            }
            _ => break,
        };
        if verify {
            data.resize(header.data_len as usize, 0);
            reader.read_exact(&mut data).map_err(io_at(path))?;
            if crc32fast::hash(&data) != header.crc {
                break;
            }
        } else {
            reader
                .seek_relative(i64::from(header.data_len))
                .map_err(io_at(path))?;
        }
        segment.add_chunk(&header, position);
        position += header.stored_len();
    }
    drop(reader);
    if position < len {
        if !verify {
            return Err(StreamError::Corrupt {
                path: path.to_owned(),
                why: format!("unreadable chunk at byte {position}"),
            });
        }
        tracing::warn!(path = %path.display(), "stream segment: cutting off a torn tail at byte {position} of {len}");
        file.set_len(position).map_err(io_at(path))?;
        file.sync_all().map_err(io_at(path))?;
    }
    Ok(segment)
}

/// The first offset of the last chunk of the log.
fn last_chunk_of(dir: &Path, segments: &[Segment]) -> Result<u64, StreamError> {
    let Some(segment) = segments.iter().rev().find(|s| s.bytes > 0) else {
        return Ok(segments.last().map_or(0, |s| s.end_offset));
    };
    let path = segment_path(dir, segment.first_offset);
    let mut file = File::open(&path).map_err(io_at(&path))?;
    let start = segment.index.last().map_or(0, |p| p.position);
    file.seek(SeekFrom::Start(start)).map_err(io_at(&path))?;
    let mut reader = io::BufReader::new(file);
    let mut last = segment.first_offset;
    while let Some(h) = chunk::read_header(&mut reader).map_err(io_at(&path))? {
        if h.first_offset >= segment.end_offset {
            break;
        }
        last = h.first_offset;
        reader
            .seek_relative(i64::from(h.data_len))
            .map_err(io_at(&path))?;
    }
    Ok(last)
}

/// Reads what a stream's log has made durable (cheap to clone; each read opens its own file).
#[derive(Clone)]
pub struct StreamReader {
    layout: Arc<Mutex<Layout>>,
}

/// Where a read stopped, to go on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadEnd {
    /// The offset after the last entry read (where the next read starts).
    pub next: u64,
}

impl StreamReader {
    fn layout(&self) -> MutexGuard<'_, Layout> {
        self.layout.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn figures(&self) -> StreamFigures {
        let layout = self.layout();
        StreamFigures {
            first_offset: layout.first_offset(),
            end_offset: layout.durable_end,
            last_chunk: layout.last_chunk,
            segments: layout.segments.iter().filter(|s| s.bytes > 0).count(),
            bytes: layout.segments.iter().map(|s| s.bytes).sum(),
        }
    }

    /// Calls `each(offset, entry)` for the durable entries from `from` on (from the first one
    /// kept, if `from` was dropped by retention), at most `max_entries` of them and stopping
    /// after the entry that passes `max_bytes`; reads one segment at most. Where it stopped.
    pub fn read(
        &self,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<ReadEnd, StreamError> {
        self.read_stamped(from, max_entries, max_bytes, |offset, _, entry| {
            each(offset, entry)
        })
    }

    /// As [`StreamReader::read`], each entry with the time its chunk was appended (Unix ms).
    pub fn read_stamped(
        &self,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
        mut each: impl FnMut(u64, i64, &[u8]),
    ) -> Result<ReadEnd, StreamError> {
        let (path, position, end, from, sealing) = {
            let layout = self.layout();
            let from = from.max(layout.first_offset());
            let end = layout.durable_end;
            if from >= end || max_entries == 0 {
                return Ok(ReadEnd { next: from });
            }
            let i = layout
                .segments
                .partition_point(|s| s.first_offset <= from)
                .saturating_sub(1);
            let segment = &layout.segments[i];
            (
                segment_path(&layout.dir, segment.first_offset),
                segment.position_for(from),
                end.min(segment.end_offset),
                from,
                layout.sealing.clone(),
            )
        };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            // Dropped by retention since: the caller starts again from the first kept.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadEnd { next: from }),
            Err(e) => return Err(io_at(&path)(e)),
        };
        file.seek(SeekFrom::Start(position)).map_err(io_at(&path))?;
        let mut reader = io::BufReader::with_capacity(64 * 1024, file);
        let mut next = from;
        let mut taken = 0;
        let mut bytes = 0;
        let mut data = Vec::new();
        while next < end && taken < max_entries && bytes < max_bytes {
            let Some(h) = chunk::read_header(&mut reader).map_err(io_at(&path))? else {
                break;
            };
            if h.end_offset() <= next {
                reader
                    .seek_relative(i64::from(h.data_len))
                    .map_err(io_at(&path))?;
                continue;
            }
            data.resize(h.data_len as usize, 0);
            reader.read_exact(&mut data).map_err(io_at(&path))?;
            if crc32fast::hash(&data) != h.crc {
                return Err(StreamError::Corrupt {
                    path,
                    why: format!("chunk at offset {} fails its checksum", h.first_offset),
                });
            }
            let opened;
            let plain = match &sealing {
                None => &data[..],
                Some(sealing) => {
                    opened = sealing
                        .cipher
                        .open_bound(&sealing.aad(h.first_offset), &data)
                        .ok_or_else(|| StreamError::Key {
                            path: path.clone(),
                            why: format!(
                                "chunk at offset {} does not open under this key",
                                h.first_offset
                            ),
                        })?;
                    &opened[..]
                }
            };
            let entries = chunk::entries(plain, h.count).map_err(|e| StreamError::Corrupt {
                path: path.clone(),
                why: e.to_string(),
            })?;
            for (offset, entry) in (h.first_offset..).zip(entries) {
                if offset < next {
                    continue;
                }
                if taken == max_entries || bytes >= max_bytes || offset >= end {
                    break;
                }
                each(offset, h.timestamp_ms, entry);
                bytes += entry.len();
                taken += 1;
                next = offset + 1;
            }
        }
        Ok(ReadEnd { next })
    }

    /// The first offset of the first durable chunk stamped at or after `timestamp_ms` (the end
    /// of the log if none is).
    pub fn offset_at(&self, timestamp_ms: i64) -> Result<u64, StreamError> {
        let (path, position, segment_end) = {
            let layout = self.layout();
            let Some(segment) = layout
                .segments
                .iter()
                .find(|s| s.bytes > 0 && s.last_timestamp_ms >= timestamp_ms)
            else {
                return Ok(layout.durable_end);
            };
            (
                segment_path(&layout.dir, segment.first_offset),
                segment.position_for_time(timestamp_ms),
                segment.end_offset,
            )
        };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(self.figures().first_offset)
            }
            Err(e) => return Err(io_at(&path)(e)),
        };
        file.seek(SeekFrom::Start(position)).map_err(io_at(&path))?;
        let mut reader = io::BufReader::new(file);
        while let Some(h) = chunk::read_header(&mut reader).map_err(io_at(&path))? {
            if h.timestamp_ms >= timestamp_ms || h.end_offset() >= segment_end {
                return Ok(h.first_offset);
            }
            reader
                .seek_relative(i64::from(h.data_len))
                .map_err(io_at(&path))?;
        }
        Ok(segment_end)
    }
}

#[cfg(test)]
mod tests;
