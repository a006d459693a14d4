//! Hot-path frame building and parsing for the load generator.
//!
//! A publish (method, content header and body frames) is encoded once with the codec crate into a
//! [`PublishTemplate`]; each message is then one `memcpy` of the template plus an 8-octet
//! timestamp patched into the body. Deliveries, publisher confirms and consumer acks — one per
//! message or per batch — are read and written by hand here, without going through
//! `amq-protocol`'s allocating parser.

use std::time::{SystemTime, UNIX_EPOCH};

use amq_protocol::protocol::{basic, AMQPClass, BasicProperties};
use bytes::{BufMut, BytesMut};
use warren_amqp::encode;
use warren_amqp::frame::{FRAME_END, FRAME_METHOD, FRAME_OVERHEAD};
use warren_amqp::BASIC_CLASS;

/// Octets of the send timestamp at the start of each body (nanoseconds since the Unix epoch,
/// big-endian). Bodies shorter than this carry no timestamp and yield no latency samples.
pub const TIMESTAMP_LEN: usize = 8;

/// Wall-clock nanoseconds since the Unix epoch: comparable across processes on one host.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The frames of one `basic.publish` with its content, ready to be copied per message.
#[derive(Clone, Debug)]
pub struct PublishTemplate {
    bytes: Vec<u8>,
    /// Where the body's first octet is in `bytes`, if the body can hold a timestamp.
    timestamp_at: Option<usize>,
}

impl PublishTemplate {
    /// Encodes `basic.publish` to `exchange`/`routing_key` with a zero-filled body of `body_size`
    /// octets, split into body frames no longer than `frame_max` (0 = unlimited).
    pub fn new(
        channel: u16,
        exchange: &str,
        routing_key: &str,
        body_size: usize,
        props: &BasicProperties,
        frame_max: u32,
    ) -> anyhow::Result<Self> {
        let mut buf = BytesMut::with_capacity(body_size + 128);
        let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        }));
        encode::write_method(&mut buf, channel, &publish)
            .map_err(|e| anyhow::anyhow!("encoding basic.publish: {e}"))?;
        let props = encode::encode_properties(props)
            .map_err(|e| anyhow::anyhow!("encoding properties: {e}"))?;
        let header_at = buf.len();
        encode::write_content(&mut buf, channel, &props, &vec![0u8; body_size], frame_max);
        // The content header frame: 7 octets of frame header, 12 of class/weight/size, properties,
        // frame end; the first body frame's payload starts 7 octets after that.
        let body_at = header_at + FRAME_OVERHEAD + 12 + props.len() + 7;
        let timestamp_at = (body_size >= TIMESTAMP_LEN).then_some(body_at);
        Ok(Self {
            bytes: buf.to_vec(),
            timestamp_at,
        })
    }

    /// Octets one message takes on the wire.
    pub fn wire_len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one message stamped with `timestamp`.
    #[inline]
    pub fn put(&self, buf: &mut BytesMut, timestamp: u64) {
        let start = buf.len();
        buf.extend_from_slice(&self.bytes);
        if let Some(at) = self.timestamp_at {
            buf[start + at..start + at + TIMESTAMP_LEN].copy_from_slice(&timestamp.to_be_bytes());
        }
    }
}

/// Reads the timestamp at the start of a body, if it has room for one.
#[inline]
pub fn body_timestamp(body: &[u8]) -> Option<u64> {
    let raw: [u8; TIMESTAMP_LEN] = body.get(..TIMESTAMP_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(raw))
}

/// Class and method ids of a method frame payload.
#[inline]
pub fn method_ids(payload: &[u8]) -> Option<(u16, u16)> {
    let p = payload.get(..4)?;
    Some((
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    ))
}

/// The delivery tag of a `basic.deliver` payload (class 60, method 60), or `None` if the payload
/// is some other method or truncated.
#[inline]
pub fn parse_deliver(payload: &[u8]) -> Option<u64> {
    if method_ids(payload)? != (BASIC_CLASS, 60) {
        return None;
    }
    let tag_len = usize::from(*payload.get(4)?);
    let at = 5 + tag_len;
    let tag: [u8; 8] = payload.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(tag))
}

/// A publisher confirm from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm {
    pub delivery_tag: u64,
    pub multiple: bool,
    pub ack: bool,
}

/// `basic.ack` (60/80) or `basic.nack` (60/120) from the server, or `None`.
#[inline]
pub fn parse_confirm(payload: &[u8]) -> Option<Confirm> {
    let ack = match method_ids(payload)? {
        (BASIC_CLASS, 80) => true,
        (BASIC_CLASS, 120) => false,
        _ => return None,
    };
    let tag: [u8; 8] = payload.get(4..12)?.try_into().ok()?;
    let bits = *payload.get(12)?;
    Some(Confirm {
        delivery_tag: u64::from_be_bytes(tag),
        multiple: bits & 1 != 0,
        ack,
    })
}

/// The body size a content header payload announces.
#[inline]
pub fn header_body_size(payload: &[u8]) -> Option<u64> {
    let size: [u8; 8] = payload.get(4..12)?.try_into().ok()?;
    Some(u64::from_be_bytes(size))
}

/// Appends a consumer's `basic.ack` for `delivery_tag`.
pub fn put_ack(buf: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool) {
    buf.put_u8(FRAME_METHOD);
    buf.put_u16(channel);
    buf.put_u32(13);
    buf.put_u16(BASIC_CLASS);
    buf.put_u16(80);
    buf.put_u64(delivery_tag);
    buf.put_u8(u8::from(multiple));
    buf.put_u8(FRAME_END);
}

/// Outstanding publisher confirms of one channel: which delivery tags the server has settled
/// (acked or nacked), for a window of at most `capacity` unsettled tags.
#[derive(Debug)]
pub struct ConfirmTracker {
    /// The lowest tag not yet settled (tags start at 1).
    lowest: u64,
    /// Tags at or above `lowest` settled out of order, by `tag & mask`.
    settled: Vec<bool>,
    mask: u64,
}

impl ConfirmTracker {
    pub fn new(capacity: usize) -> Self {
        let size = capacity.max(1).next_power_of_two();
        Self {
            lowest: 1,
            settled: vec![false; size],
            mask: size as u64 - 1,
        }
    }

    /// Records a confirm; returns how many tags it settled that were not settled before.
    pub fn settle(&mut self, delivery_tag: u64, multiple: bool) -> u64 {
        if delivery_tag < self.lowest || delivery_tag - self.lowest > self.mask {
            return 0;
        }
        let mut newly = 0;
        if multiple {
            for tag in self.lowest..=delivery_tag {
                let slot = &mut self.settled[(tag & self.mask) as usize];
                if !std::mem::take(slot) {
                    newly += 1;
                }
            }
            self.lowest = delivery_tag + 1;
        } else {
            let slot = &mut self.settled[(delivery_tag & self.mask) as usize];
            if *slot {
                return 0;
            }
            *slot = true;
            newly = 1;
        }
        while std::mem::take(&mut self.settled[(self.lowest & self.mask) as usize]) {
            self.lowest += 1;
        }
        newly
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use warren_amqp::{decode_method, FrameDecoder, FrameKind, Method};

    #[test]
    fn publish_template_decodes_as_publish_header_and_stamped_body() {
        let t = PublishTemplate::new(
            3,
            "ex",
            "rk",
            300,
            &BasicProperties::default().with_delivery_mode(2),
            128,
        )
        .unwrap();
        let mut buf = BytesMut::new();
        t.put(&mut buf, 0x0102_0304_0506_0708);
        t.put(&mut buf, 42);
        assert_eq!(buf.len(), 2 * t.wire_len());
        let dec = FrameDecoder::new(128);
        for stamp in [0x0102_0304_0506_0708u64, 42] {
            let m = dec.decode(&mut buf).unwrap().unwrap();
            assert_eq!((m.kind, m.channel), (FrameKind::Method, 3));
            let Method::Publish(p) = decode_method(&m.payload).unwrap() else {
                panic!("not a publish")
            };
            assert_eq!(
                (&p.exchange[..], &p.routing_key[..]),
                (&b"ex"[..], &b"rk"[..])
            );
            let h = dec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(h.kind, FrameKind::Header);
            assert_eq!(header_body_size(&h.payload), Some(300));
            let view = warren_amqp::PropertiesView::parse(&h.payload[12..]).unwrap();
            assert!(view.persistent());
            let mut body = Vec::new();
            while body.len() < 300 {
                let b = dec.decode(&mut buf).unwrap().unwrap();
                assert_eq!(b.kind, FrameKind::Body);
                body.extend_from_slice(&b.payload);
            }
            assert_eq!(body.len(), 300);
            assert_eq!(body_timestamp(&body), Some(stamp));
            assert!(body[TIMESTAMP_LEN..].iter().all(|&b| b == 0));
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn tiny_bodies_carry_no_timestamp() {
        let t = PublishTemplate::new(1, "", "q", 4, &BasicProperties::default(), 0).unwrap();
        let mut a = BytesMut::new();
        t.put(&mut a, u64::MAX);
        let mut b = BytesMut::new();
        t.put(&mut b, 0);
        assert_eq!(a, b);
        assert_eq!(body_timestamp(&[1, 2, 3]), None);
    }

    #[test]
    fn deliver_round_trip() {
        let mut buf = BytesMut::new();
        encode::write_deliver(
            &mut buf,
            7,
            b"perf-c-1",
            123_456_789,
            true,
            b"amq.fanout",
            b"key",
        );
        let f = FrameDecoder::new(0).decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.channel, 7);
        assert_eq!(parse_deliver(&f.payload), Some(123_456_789));
        assert_eq!(parse_deliver(&f.payload[..15]), None); // cut inside the delivery tag
        assert_eq!(parse_deliver(&[0, 60, 0, 80, 0]), None);
    }

    #[test]
    fn confirms_round_trip() {
        for (tag, multiple, ack) in [(1, false, true), (u64::MAX, true, true), (77, true, false)] {
            let mut buf = BytesMut::new();
            encode::write_confirm(&mut buf, 2, tag, multiple, ack);
            let f = FrameDecoder::new(0).decode(&mut buf).unwrap().unwrap();
            assert_eq!(
                parse_confirm(&f.payload),
                Some(Confirm {
                    delivery_tag: tag,
                    multiple,
                    ack
                })
            );
        }
        assert_eq!(parse_confirm(&[0, 60, 0, 80, 1]), None);
    }

    #[test]
    fn ack_is_what_the_broker_decodes() {
        let mut buf = BytesMut::new();
        put_ack(&mut buf, 9, 1 << 40, true);
        let f = FrameDecoder::new(0).decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.kind, f.channel), (FrameKind::Method, 9));
        assert_eq!(
            decode_method(&f.payload).unwrap(),
            Method::Ack {
                delivery_tag: 1 << 40,
                multiple: true
            }
        );
        assert!(buf.is_empty());
        assert_eq!(
            method_ids(&Bytes::from_static(&[0, 10, 0, 50])),
            Some((10, 50))
        );
    }

    #[test]
    fn tracker_counts_each_tag_once() {
        let mut t = ConfirmTracker::new(5); // rounded up to 8 slots
        assert_eq!(t.settle(2, false), 1);
        assert_eq!(t.settle(2, false), 0);
        assert_eq!(t.settle(4, true), 3); // 1, 3, 4
        assert_eq!(t.settle(3, false), 0);
        assert_eq!(t.settle(6, false), 1);
        assert_eq!(t.settle(5, false), 1); // lowest moves past 6
        assert_eq!(t.lowest, 7);
        assert_eq!(t.settle(100, true), 0); // outside the window: ignored
        assert_eq!(t.settle(14, true), 8);
        assert_eq!(t.lowest, 15);
    }
}
