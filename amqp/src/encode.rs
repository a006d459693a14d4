//! Frame encoding into a connection's output buffer. Everything a connection writes between two
//! socket writes is appended to one `BytesMut`, so a batch of deliveries costs one syscall.
//! Deliveries, returns, get-ok and confirms are written by hand (one per message); the rest goes
//! through `amq-protocol`'s generator.

use amq_protocol::frame::{GenError, WriteContext};
use amq_protocol::protocol::{gen_class, AMQPClass};
use bytes::{BufMut, BytesMut};

use crate::frame::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD,
};
use crate::BASIC_CLASS;

/// Encodes a method's payload (class id, method id, arguments) with `amq-protocol`.
pub fn encode_class(class: &AMQPClass) -> Result<Vec<u8>, GenError> {
    let ctx = WriteContext::from(Vec::with_capacity(64));
    let (buf, _) = gen_class(class)(ctx)?.into_inner();
    Ok(buf)
}

/// Encodes basic properties (flags and values), as they follow the body size in a content header.
pub fn encode_properties(
    props: &amq_protocol::protocol::BasicProperties,
) -> Result<Vec<u8>, GenError> {
    let ctx = WriteContext::from(Vec::with_capacity(64));
    let (buf, _) = amq_protocol::protocol::basic::gen_properties(props)(ctx)?.into_inner();
    Ok(buf)
}

/// Encodes a field table as on the wire (4-octet length, then entries).
pub fn encode_table(table: &amq_protocol::types::FieldTable) -> Vec<u8> {
    let ctx = WriteContext::from(Vec::with_capacity(64));
    match amq_protocol::types::generation::gen_field_table(table)(ctx) {
        Ok(ctx) => ctx.into_inner().0,
        Err(_) => 0u32.to_be_bytes().to_vec(),
    }
}

/// Decodes a field table as on the wire (with its 4-octet length).
pub fn decode_table(bytes: &[u8]) -> Option<amq_protocol::types::FieldTable> {
    amq_protocol::types::parsing::parse_field_table(bytes)
        .ok()
        .map(|(_, t)| t)
}

/// Decodes a field table's entries without the 4-octet length in front (as properties hold it
/// in [`crate::PropertiesView::headers`]).
pub fn decode_table_entries(entries: &[u8]) -> Option<amq_protocol::types::FieldTable> {
    let mut framed = Vec::with_capacity(entries.len() + 4);
    framed.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    framed.extend_from_slice(entries);
    decode_table(&framed)
}

fn frame_start(buf: &mut BytesMut, kind: u8, channel: u16) -> usize {
    buf.put_u8(kind);
    buf.put_u16(channel);
    let size_at = buf.len();
    buf.put_u32(0);
    size_at
}

fn frame_finish(buf: &mut BytesMut, size_at: usize) {
    let size = (buf.len() - size_at - 4) as u32;
    buf[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    buf.put_u8(FRAME_END);
}

fn put_short_str(buf: &mut BytesMut, s: &[u8]) {
    let len = s.len().min(255);
    buf.put_u8(len as u8);
    buf.put_slice(&s[..len]);
}

/// Appends a method frame encoded by `amq-protocol`.
pub fn write_method(buf: &mut BytesMut, channel: u16, class: &AMQPClass) -> Result<(), GenError> {
    let payload = encode_class(class)?;
    let at = frame_start(buf, FRAME_METHOD, channel);
    buf.put_slice(&payload);
    frame_finish(buf, at);
    Ok(())
}

pub fn write_heartbeat(buf: &mut BytesMut) {
    buf.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// `basic.deliver`.
pub fn write_deliver(
    buf: &mut BytesMut,
    channel: u16,
    consumer_tag: &[u8],
    delivery_tag: u64,
    redelivered: bool,
    exchange: &[u8],
    routing_key: &[u8],
) {
    let at = frame_start(buf, FRAME_METHOD, channel);
    buf.put_u16(BASIC_CLASS);
    buf.put_u16(60);
    put_short_str(buf, consumer_tag);
    buf.put_u64(delivery_tag);
    buf.put_u8(redelivered as u8);
    put_short_str(buf, exchange);
    put_short_str(buf, routing_key);
    frame_finish(buf, at);
}

/// `basic.get-ok`.
pub fn write_get_ok(
    buf: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &[u8],
    routing_key: &[u8],
    message_count: u32,
) {
    let at = frame_start(buf, FRAME_METHOD, channel);
    buf.put_u16(BASIC_CLASS);
    buf.put_u16(71);
    buf.put_u64(delivery_tag);
    buf.put_u8(redelivered as u8);
    put_short_str(buf, exchange);
    put_short_str(buf, routing_key);
    buf.put_u32(message_count);
    frame_finish(buf, at);
}

/// `basic.return`.
pub fn write_return(
    buf: &mut BytesMut,
    channel: u16,
    reply_code: u16,
    reply_text: &str,
    exchange: &[u8],
    routing_key: &[u8],
) {
    let at = frame_start(buf, FRAME_METHOD, channel);
    buf.put_u16(BASIC_CLASS);
    buf.put_u16(50);
    buf.put_u16(reply_code);
    put_short_str(buf, reply_text.as_bytes());
    put_short_str(buf, exchange);
    put_short_str(buf, routing_key);
    frame_finish(buf, at);
}

/// Publisher confirm: `basic.ack` or `basic.nack` from the server.
pub fn write_confirm(
    buf: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    multiple: bool,
    ack: bool,
) {
    let at = frame_start(buf, FRAME_METHOD, channel);
    buf.put_u16(BASIC_CLASS);
    if ack {
        buf.put_u16(80);
        buf.put_u64(delivery_tag);
        buf.put_u8(multiple as u8);
    } else {
        buf.put_u16(120);
        buf.put_u64(delivery_tag);
        buf.put_u8(multiple as u8); // requeue bit is unused in confirms
    }
    frame_finish(buf, at);
}

/// The content header (with the publisher's property bytes, verbatim) and body frames, each body
/// frame at most `frame_max` octets long overall.
pub fn write_content(
    buf: &mut BytesMut,
    channel: u16,
    properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    let at = frame_start(buf, FRAME_HEADER, channel);
    buf.put_u16(BASIC_CLASS);
    buf.put_u16(0);
    buf.put_u64(body.len() as u64);
    buf.put_slice(properties);
    frame_finish(buf, at);
    let chunk = if frame_max == 0 {
        usize::MAX
    } else {
        (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
    };
    buf.reserve(body.len() + (body.len() / chunk + 1) * FRAME_OVERHEAD);
    for part in body.chunks(chunk) {
        buf.put_u8(FRAME_BODY);
        buf.put_u16(channel);
        buf.put_u32(part.len() as u32);
        buf.put_slice(part);
        buf.put_u8(FRAME_END);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameDecoder, FrameKind};
    use amq_protocol::frame::{parse_frame, AMQPFrame};
    use amq_protocol::protocol::basic;
    use proptest::prelude::*;

    fn parse_one(buf: &[u8]) -> AMQPFrame {
        let (rest, frame) = parse_frame(buf).expect("amq-protocol parses our frame");
        assert!(rest.is_empty());
        frame
    }

    proptest! {
        #[test]
        fn deliver_matches_amq_protocol(ct in "[a-z0-9.-]{0,60}", tag: u64, redelivered: bool, ex in "[a-z.]{0,30}", rk in "[a-z.#*]{0,60}", ch in 1u16..2048) {
            let mut buf = BytesMut::new();
            write_deliver(&mut buf, ch, ct.as_bytes(), tag, redelivered, ex.as_bytes(), rk.as_bytes());
            let expected = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: ct.into(), delivery_tag: tag, redelivered, exchange: ex.into(), routing_key: rk.into(),
            }));
            prop_assert_eq!(parse_one(&buf), AMQPFrame::Method(ch, expected));
        }

        #[test]
        fn get_ok_and_return_match_amq_protocol(tag: u64, redelivered: bool, count: u32, code in 300u16..400, text in "[A-Z_ -]{0,50}", ex in "[a-z.]{0,30}", rk in "[a-z.]{0,30}") {
            let mut buf = BytesMut::new();
            write_get_ok(&mut buf, 1, tag, redelivered, ex.as_bytes(), rk.as_bytes(), count);
            let expected = AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: tag, redelivered, exchange: ex.clone().into(), routing_key: rk.clone().into(), message_count: count,
            }));
            prop_assert_eq!(parse_one(&buf), AMQPFrame::Method(1, expected));
            let mut buf = BytesMut::new();
            write_return(&mut buf, 2, code, &text, ex.as_bytes(), rk.as_bytes());
            let expected = AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: code, reply_text: text.into(), exchange: ex.into(), routing_key: rk.into(),
            }));
            prop_assert_eq!(parse_one(&buf), AMQPFrame::Method(2, expected));
        }

        #[test]
        fn confirms_match_amq_protocol(tag: u64, multiple: bool, ack: bool) {
            let mut buf = BytesMut::new();
            write_confirm(&mut buf, 3, tag, multiple, ack);
            let expected = if ack {
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: tag, multiple }))
            } else {
                AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack { delivery_tag: tag, multiple, requeue: false }))
            };
            prop_assert_eq!(parse_one(&buf), AMQPFrame::Method(3, expected));
        }

        #[test]
        fn content_splits_at_frame_max(body in proptest::collection::vec(any::<u8>(), 0..3000), frame_max in 9u32..600) {
            let mut buf = BytesMut::new();
            write_content(&mut buf, 5, &[0, 0], &body, frame_max);
            let dec = FrameDecoder::new(frame_max.max(22));
            let header = dec.decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(header.kind, FrameKind::Header);
            let dec = FrameDecoder::new(frame_max);
            let mut joined = Vec::new();
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                prop_assert_eq!(f.kind, FrameKind::Body);
                prop_assert!(f.payload.len() + FRAME_OVERHEAD <= frame_max as usize);
                joined.extend_from_slice(&f.payload);
            }
            prop_assert_eq!(joined, body);
        }
    }
}
