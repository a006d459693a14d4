//! Frame splitting: turns a byte stream into [`Frame`]s, checking the frame type, the size claim
//! (against `frame_max`, before a byte of payload is buffered) and the frame-end octet.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Frame type, channel and size before the payload, frame-end octet after it.
pub const FRAME_OVERHEAD: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Method,
    Header,
    Body,
    Heartbeat,
}

/// One frame off the wire; the payload is a zero-copy slice of the read buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub channel: u16,
    pub payload: Bytes,
}

/// Why a byte stream is not a valid frame sequence: all are connection errors (501 FRAME_ERROR).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("type {0}, first 16 octets = {1:?}")]
    UnknownType(u8, Vec<u8>),
    #[error("frame size {size} exceeds frame_max {frame_max}")]
    TooLarge { size: u64, frame_max: u32 },
    #[error("frame end octet is {0:#04x}, expected 0xce")]
    BadFrameEnd(u8),
}

/// Incremental decoder: feed it the read buffer, take frames out until it says it needs more.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    frame_max: u32,
}

impl FrameDecoder {
    /// `frame_max` as negotiated in `connection.tune`; 0 = no limit. A payload may be as large as
    /// `frame_max` (RabbitMQ accepts that much; it sends at most `frame_max` octets per frame).
    pub fn new(frame_max: u32) -> Self {
        Self { frame_max }
    }

    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }

    /// Takes one complete frame off the front of `buf`, or returns `Ok(None)` when `buf` holds
    /// only part of one (having reserved room for the rest, so the next read completes it).
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let kind = match buf[0] {
            FRAME_METHOD => FrameKind::Method,
            FRAME_HEADER => FrameKind::Header,
            FRAME_BODY => FrameKind::Body,
            FRAME_HEARTBEAT => FrameKind::Heartbeat,
            other => {
                let n = buf.len().min(16);
                return Err(FrameError::UnknownType(other, buf[..n].to_vec()));
            }
        };
        if buf.len() < 7 {
            return Ok(None);
        }
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
        // Like RabbitMQ, allow a payload of up to frame_max octets (its "frame size fudge").
        if self.frame_max != 0 && size as u64 > u64::from(self.frame_max) {
            return Err(FrameError::TooLarge {
                size: size as u64,
                frame_max: self.frame_max,
            });
        }
        let total = size + FRAME_OVERHEAD;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let end = buf[total - 1];
        if end != FRAME_END {
            return Err(FrameError::BadFrameEnd(end));
        }
        let mut frame = buf.split_to(total);
        frame.advance(7);
        frame.truncate(size);
        Ok(Some(Frame {
            kind,
            channel,
            payload: frame.freeze(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&channel.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v.push(end);
        v
    }

    #[test]
    fn splits_frames_and_waits_for_partial_ones() {
        let mut bytes = raw(FRAME_BODY, 3, b"hello", FRAME_END);
        bytes.extend(raw(FRAME_HEARTBEAT, 0, b"", FRAME_END));
        let d = FrameDecoder::new(4096);
        let mut buf = BytesMut::from(&bytes[..10]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&bytes[10..]);
        let f = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (f.kind, f.channel, &f.payload[..]),
            (FrameKind::Body, 3, &b"hello"[..])
        );
        let f = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.kind, FrameKind::Heartbeat);
        assert_eq!(d.decode(&mut buf), Ok(None));
    }

    #[test]
    fn rejects_oversized_claim_before_buffering() {
        let d = FrameDecoder::new(4096);
        let mut buf = BytesMut::from(&[FRAME_BODY, 0, 1, 0xFF, 0xFF, 0xFF, 0xF0][..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn rejects_bad_end_and_unknown_type() {
        let d = FrameDecoder::new(4096);
        let mut buf = BytesMut::from(&raw(FRAME_METHOD, 1, b"abcd", 0)[..]);
        assert_eq!(d.decode(&mut buf), Err(FrameError::BadFrameEnd(0)));
        let mut buf = BytesMut::from(&raw(7, 1, b"abcd", FRAME_END)[..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(FrameError::UnknownType(7, _))
        ));
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;
    use crate::encode::{write_content, write_deliver, write_heartbeat, write_method};
    use amq_protocol::protocol::{basic, queue, AMQPClass};
    use proptest::prelude::*;

    /// A stream of several frames of every kind.
    fn stream(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for (i, body) in bodies.iter().enumerate() {
            let ch = (i % 3 + 1) as u16;
            write_deliver(&mut buf, ch, b"ctag", i as u64, i % 2 == 0, b"ex", b"rk");
            write_content(&mut buf, ch, &[0, 0], body, 4096);
            write_heartbeat(&mut buf);
            let declare = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: format!("q{i}").into(),
                ..Default::default()
            }));
            write_method(&mut buf, ch, &declare).unwrap();
            let qos = AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: i as u16,
                global: false,
            }));
            write_method(&mut buf, ch, &qos).unwrap();
        }
        buf.to_vec()
    }

    fn decode_all(chunks: &[&[u8]]) -> Vec<Frame> {
        let d = FrameDecoder::new(4096);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert!(buf.is_empty(), "nothing left over");
        out
    }

    proptest! {
        #[test]
        fn any_split_of_a_stream_gives_the_same_frames(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..9000), 1..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let bytes = stream(&bodies);
            let whole = decode_all(&[&bytes]);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            points.dedup();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            prop_assert_eq!(decode_all(&chunks), whole);
        }
    }
}
