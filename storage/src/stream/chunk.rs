//! A stream's chunk: the messages appended together, as they lie in a segment file.
//!
//! ```text
//! magic u32 | first offset u64 | count u32 | timestamp ms i64 | data length u32 | crc32 u32
//! data: (length u32, entry)*   — each entry a message as the store encodes it
//! ```
//! All integers big-endian. The header is read alone to skip over a chunk (recovery, seeking to
//! an offset); the checksum covers the data, so a chunk torn by a crash is told from a whole one.

use std::io::{self, Read};

/// "WSC1": Warren stream chunk, format 1.
pub const MAGIC: u32 = 0x5753_4331;
pub const HEADER_LEN: usize = 32;
/// A chunk's data is at most this much (bigger entries are refused when appended): it bounds
/// what one read holds in memory.
pub const MAX_DATA_LEN: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub first_offset: u64,
    pub count: u32,
    pub timestamp_ms: i64,
    pub data_len: u32,
    pub crc: u32,
}

impl ChunkHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4..12].copy_from_slice(&self.first_offset.to_be_bytes());
        out[12..16].copy_from_slice(&self.count.to_be_bytes());
        out[16..24].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out[24..28].copy_from_slice(&self.data_len.to_be_bytes());
        out[28..32].copy_from_slice(&self.crc.to_be_bytes());
        out
    }

    /// None when the bytes are not a chunk header (a torn or foreign tail).
    pub fn decode(b: &[u8; HEADER_LEN]) -> Option<ChunkHeader> {
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            x
        };
        if u32_at(0) != MAGIC {
            return None;
        }
        let header = ChunkHeader {
            first_offset: u64::from_be_bytes(u64_at(4)),
            count: u32_at(12),
            timestamp_ms: i64::from_be_bytes(u64_at(16)),
            data_len: u32_at(24),
            crc: u32_at(28),
        };
        (header.count > 0 && header.data_len as usize <= MAX_DATA_LEN).then_some(header)
    }

    /// The offset after its last entry.
    pub fn end_offset(&self) -> u64 {
        self.first_offset + u64::from(self.count)
    }

    /// Its length in the file, header included.
    pub fn stored_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.data_len)
    }
}

/// Encodes entries as one chunk starting at `first_offset` into `out` (cleared first).
#[cfg(test)]
pub fn encode<'a>(
    first_offset: u64,
    timestamp_ms: i64,
    entries: impl Iterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> ChunkHeader {
    out.clear();
    out.resize(HEADER_LEN, 0);
    let mut count = 0u32;
    for entry in entries {
        out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        out.extend_from_slice(entry);
        count += 1;
    }
    let data = &out[HEADER_LEN..];
    let header = ChunkHeader {
        first_offset,
        count,
        timestamp_ms,
        data_len: data.len() as u32,
        crc: crc32fast::hash(data),
    };
    out[..HEADER_LEN].copy_from_slice(&header.encode());
    header
}

/// The entries of a chunk's data, in order; an error if the data does not hold `count` of them
/// exactly.
pub fn entries(data: &[u8], count: u32) -> io::Result<Vec<&[u8]>> {
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "corrupt stream chunk");
    let mut out = Vec::with_capacity(count as usize);
    let mut at = 0usize;
    for _ in 0..count {
        let len = data.get(at..at + 4).ok_or_else(corrupt)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        at += 4;
        let end = at.checked_add(len).ok_or_else(corrupt)?;
        out.push(data.get(at..end).ok_or_else(corrupt)?);
        at = end;
    }
    if at != data.len() {
        return Err(corrupt());
    }
    Ok(out)
}

/// Reads a chunk header at the reader's position: None at a clean end of file or a tail that is
/// not a whole header.
pub fn read_header(r: &mut impl Read) -> io::Result<Option<ChunkHeader>> {
    let mut b = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match r.read(&mut b[filled..])? {
            0 => return Ok(None),
            n => filled += n,
        }
    }
    Ok(ChunkHeader::decode(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_encodes_and_decodes() {
        let mut buf = Vec::new();
        let header = encode(
            7,
            1234,
            [&b"one"[..], &b""[..], &b"three"[..]].into_iter(),
            &mut buf,
        );
        assert_eq!(header.count, 3);
        assert_eq!(header.end_offset(), 10);
        let mut fixed = [0u8; HEADER_LEN];
        fixed.copy_from_slice(&buf[..HEADER_LEN]);
        assert_eq!(ChunkHeader::decode(&fixed), Some(header));
        let data = &buf[HEADER_LEN..];
        assert_eq!(crc32fast::hash(data), header.crc);
        assert_eq!(
            entries(data, 3).unwrap(),
            vec![&b"one"[..], &b""[..], &b"three"[..]]
        );
        assert!(entries(data, 2).is_err());
        assert!(entries(&data[..data.len() - 1], 3).is_err());
    }

    #[test]
    fn garbage_is_no_header() {
        assert_eq!(ChunkHeader::decode(&[0u8; HEADER_LEN]), None);
        let mut b = ChunkHeader {
            first_offset: 0,
            count: 1,
            timestamp_ms: 0,
            data_len: u32::MAX,
            crc: 0,
        }
        .encode();
        assert_eq!(ChunkHeader::decode(&b), None, "too long");
        b[12..16].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(ChunkHeader::decode(&b), None, "empty");
    }
}
