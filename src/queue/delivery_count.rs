//! Quorum queues' `x-delivery-count` header: how many times a message was handed back (nacked or
//! rejected with requeue, or left unacked by a consumer that went). RabbitMQ 3.10 adds it to a
//! consumer's delivery once the count is above zero, and to every `basic.get` answer, even the
//! first (count 0).

use warren_amqp::types::AMQPValue;

use crate::message::MessageRef;

pub const HEADER: &str = "x-delivery-count";

/// `message` with its `x-delivery-count` header set to `count` (any earlier value replaced: a
/// message dead-lettered from one quorum queue to another starts counting again). Properties
/// that cannot be parsed are left as they are.
pub fn with_delivery_count(message: &MessageRef, count: u16) -> MessageRef {
    crate::message::with_header(message, HEADER, AMQPValue::LongLongInt(i64::from(count)))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use warren_amqp::protocol::basic::{parse_properties, AMQPProperties};
    use warren_amqp::types::{FieldTable, ShortString};

    use super::*;
    use crate::message::Message;

    #[test]
    fn the_header_is_added_and_the_rest_kept() {
        let mut headers = FieldTable::default();
        headers.insert("h".into(), AMQPValue::LongInt(1));
        headers.insert(HEADER.into(), AMQPValue::LongLongInt(7));
        let props = AMQPProperties::default()
            .with_headers(headers)
            .with_expiration(ShortString::from("6000".to_owned()))
            .with_delivery_mode(2);
        let raw = warren_amqp::encode::encode_properties(&props).unwrap();
        let m = Message::from_parts(b"ex", b"rk", &raw, Bytes::from_static(b"body"), Some(3));

        let counted = with_delivery_count(&m, 2);
        let (_, out) = parse_properties(counted.properties()).unwrap();
        let headers = out.headers().clone().unwrap();
        assert_eq!(headers.inner().get("h"), Some(&AMQPValue::LongInt(1)));
        assert_eq!(
            headers.inner().get(HEADER),
            Some(&AMQPValue::LongLongInt(2))
        );
        assert_eq!(out.delivery_mode(), &Some(2));
        assert_eq!(counted.expiration_ms(), Some(6000));
        assert_eq!(counted.body(), b"body");
        assert_eq!(counted.exchange(), b"ex");
        assert_eq!(counted.routing_key(), b"rk");
        assert_eq!(counted.storage_id(), Some(3));
    }

    #[test]
    fn unparsable_properties_are_left_alone() {
        let m = Message::from_parts(b"", b"q", b"\xff", Bytes::from_static(b"b"), None);
        assert_eq!(with_delivery_count(&m, 1).properties(), b"\xff");
    }
}
