//! Method decoding. `basic.publish` and `basic.ack` — one per message on the hot path — are read
//! by hand into zero-copy fields; every other method goes through `amq-protocol`'s parser. The
//! property tests at the bottom check the fast paths against `amq-protocol` field by field.

use amq_protocol::protocol::{parse_class, AMQPClass};
use bytes::Bytes;
use thiserror::Error;

use crate::error::{AmqpError, ReplyCode};

/// `basic.publish` with the exchange and routing key still in the frame's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub exchange: Bytes,
    pub routing_key: Bytes,
    pub mandatory: bool,
    pub immediate: bool,
}

/// A decoded method frame payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Publish(Publish),
    Ack {
        delivery_tag: u64,
        multiple: bool,
    },
    /// Decoded here because `amq-protocol` drops `prefetch_size`, which RabbitMQ refuses unless 0.
    Qos {
        prefetch_size: u32,
        prefetch_count: u16,
        global: bool,
    },
    Other(AMQPClass),
}

impl Method {
    pub fn ids(&self) -> (u16, u16) {
        match self {
            Method::Publish(_) => (60, 40),
            Method::Ack { .. } => (60, 80),
            Method::Qos { .. } => (60, 10),
            Method::Other(class) => (class.get_amqp_class_id(), class.get_amqp_method_id()),
        }
    }

    /// Methods that carry content (a header and body frames follow).
    pub fn has_content(&self) -> bool {
        matches!(self, Method::Publish(_))
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum MethodError {
    #[error("method frame too short ({0} octets)")]
    TooShort(usize),
    #[error("unknown class/method {0}/{1}")]
    Unknown(u16, u16),
    #[error("malformed arguments for method {0}/{1}")]
    Malformed(u16, u16),
}

impl From<MethodError> for AmqpError {
    fn from(e: MethodError) -> Self {
        match e {
            MethodError::TooShort(_) => AmqpError::frame_error(e.to_string()),
            MethodError::Unknown(c, m) => AmqpError::new(
                ReplyCode::CommandInvalid,
                format!("unknown method {c}/{m} (class/method)"),
            )
            .on_method(c, m),
            MethodError::Malformed(c, m) => AmqpError::new(
                ReplyCode::FrameError,
                format!("cannot decode arguments of method {c}/{m}"),
            )
            .on_method(c, m),
        }
    }
}

/// Is (class, method) one AMQP 0-9-1 defines?
pub fn is_known(class_id: u16, method_id: u16) -> bool {
    matches!(
        (class_id, method_id),
        (
            10,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71
        ) | (20, 10 | 11 | 20 | 21 | 40 | 41)
            | (30, 10 | 11)
            | (40, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51)
            | (50, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51)
            | (
                60,
                10 | 11
                    | 20
                    | 21
                    | 30
                    | 31
                    | 40
                    | 50
                    | 60
                    | 70
                    | 71
                    | 72
                    | 80
                    | 90
                    | 100
                    | 110
                    | 111
                    | 120
            )
            | (85, 10 | 11)
            | (90, 10 | 11 | 20 | 21 | 30 | 31)
    )
}

/// A cursor over a method payload with bounds-checked reads.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }
    fn u16(&mut self) -> Option<u16> {
        let s = self.buf.get(self.pos..self.pos + 2)?;
        self.pos += 2;
        Some(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let s = self.buf.get(self.pos..self.pos + 8)?;
        self.pos += 8;
        Some(u64::from_be_bytes(s.try_into().ok()?))
    }
    fn short_str(&mut self) -> Option<Bytes> {
        let len = self.u8()? as usize;
        if self.pos + len > self.buf.len() {
            return None;
        }
        let s = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Some(s)
    }
    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// Decodes one method frame payload.
pub fn decode_method(payload: &Bytes) -> Result<Method, MethodError> {
    if payload.len() < 4 {
        return Err(MethodError::TooShort(payload.len()));
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    if !is_known(class_id, method_id) {
        return Err(MethodError::Unknown(class_id, method_id));
    }
    let malformed = || MethodError::Malformed(class_id, method_id);
    let mut r = Reader {
        buf: payload,
        pos: 4,
    };
    match (class_id, method_id) {
        (60, 40) => {
            r.u16().ok_or_else(malformed)?;
            let exchange = r.short_str().ok_or_else(malformed)?;
            let routing_key = r.short_str().ok_or_else(malformed)?;
            let bits = r.u8().ok_or_else(malformed)?;
            if !r.done() {
                return Err(malformed());
            }
            Ok(Method::Publish(Publish {
                exchange,
                routing_key,
                mandatory: bits & 1 != 0,
                immediate: bits & 2 != 0,
            }))
        }
        (60, 80) => {
            let delivery_tag = r.u64().ok_or_else(malformed)?;
            let bits = r.u8().ok_or_else(malformed)?;
            if !r.done() {
                return Err(malformed());
            }
            Ok(Method::Ack {
                delivery_tag,
                multiple: bits & 1 != 0,
            })
        }
        (60, 10) => {
            let size = r.u16().zip(r.u16()).ok_or_else(malformed)?;
            let prefetch_size = (u32::from(size.0) << 16) | u32::from(size.1);
            let prefetch_count = r.u16().ok_or_else(malformed)?;
            let bits = r.u8().ok_or_else(malformed)?;
            if !r.done() {
                return Err(malformed());
            }
            Ok(Method::Qos {
                prefetch_size,
                prefetch_count,
                global: bits & 1 != 0,
            })
        }
        _ => match parse_class(&payload[..]) {
            Ok(([], class)) => Ok(Method::Other(class)),
            _ => Err(malformed()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::encode_class;
    use amq_protocol::protocol::basic;
    use proptest::prelude::*;

    fn short() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._-]{0,40}"
    }

    proptest! {
        #[test]
        fn publish_fast_path_matches_amq_protocol(ex in short(), rk in short(), mandatory: bool, immediate: bool) {
            let class = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: ex.clone().into(), routing_key: rk.clone().into(), mandatory, immediate,
            }));
            let payload = Bytes::from(encode_class(&class).unwrap());
            let Method::Publish(p) = decode_method(&payload).unwrap() else { panic!("not publish") };
            prop_assert_eq!(&p.exchange[..], ex.as_bytes());
            prop_assert_eq!(&p.routing_key[..], rk.as_bytes());
            prop_assert_eq!((p.mandatory, p.immediate), (mandatory, immediate));
        }

        #[test]
        fn ack_fast_path_matches_amq_protocol(tag: u64, multiple: bool) {
            let class = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: tag, multiple }));
            let payload = Bytes::from(encode_class(&class).unwrap());
            prop_assert_eq!(decode_method(&payload).unwrap(), Method::Ack { delivery_tag: tag, multiple });
        }

        #[test]
        fn qos_fast_path_matches_amq_protocol(count: u16, global: bool) {
            let class = AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: count, global }));
            let payload = Bytes::from(encode_class(&class).unwrap());
            prop_assert_eq!(decode_method(&payload).unwrap(), Method::Qos { prefetch_size: 0, prefetch_count: count, global });
        }

        #[test]
        fn truncated_methods_never_panic(cut in 0usize..40, tag: u64) {
            let class = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "ex".into(), routing_key: "key".into(), mandatory: true, immediate: false,
            }));
            let full = encode_class(&class).unwrap();
            let payload = Bytes::copy_from_slice(&full[..cut.min(full.len())]);
            let _ = decode_method(&payload);
            let mut ack = encode_class(&AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: tag, multiple: false }))).unwrap();
            ack.truncate(cut.min(ack.len()));
            let _ = decode_method(&Bytes::from(ack));
        }
    }

    #[test]
    fn unknown_methods_are_reported_with_ids() {
        let payload = Bytes::from_static(&[0, 99, 0, 10]);
        assert_eq!(decode_method(&payload), Err(MethodError::Unknown(99, 10)));
        let payload = Bytes::from_static(&[0, 60, 0, 99]);
        assert_eq!(decode_method(&payload), Err(MethodError::Unknown(60, 99)));
    }
}

#[cfg(test)]
mod round_trip_tests {
    use super::*;
    use crate::encode::encode_class;
    use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, tx};
    use amq_protocol::types::{AMQPValue, FieldTable};
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._:-]{0,60}"
    }

    fn table() -> impl Strategy<Value = FieldTable> {
        proptest::collection::vec(
            ("[a-z-]{1,12}", any::<i32>(), "[a-z]{0,10}", any::<bool>()),
            0..4,
        )
        .prop_map(|entries| {
            let mut t = FieldTable::default();
            for (k, n, s, b) in entries {
                t.insert(format!("{k}-n").into(), AMQPValue::LongInt(n));
                t.insert(format!("{k}-s").into(), AMQPValue::LongString(s.into()));
                t.insert(format!("{k}-b").into(), AMQPValue::Boolean(b));
            }
            t
        })
    }

    /// Every method a client sends to Warren (the ones Warren reads with amq-protocol).
    fn client_method() -> impl Strategy<Value = AMQPClass> {
        let flags = proptest::collection::vec(any::<bool>(), 6);
        prop_oneof![
            (name(), flags.clone(), table()).prop_map(|(q, f, a)| AMQPClass::Queue(
                queue::AMQPMethod::Declare(queue::Declare {
                    queue: q.into(),
                    passive: f[0],
                    durable: f[1],
                    exclusive: f[2],
                    auto_delete: f[3],
                    nowait: f[4],
                    arguments: a,
                })
            )),
            (name(), name(), name(), any::<bool>(), table()).prop_map(|(q, e, k, nowait, a)| {
                AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                    queue: q.into(),
                    exchange: e.into(),
                    routing_key: k.into(),
                    nowait,
                    arguments: a,
                }))
            }),
            (name(), name(), name(), table()).prop_map(|(q, e, k, a)| AMQPClass::Queue(
                queue::AMQPMethod::Unbind(queue::Unbind {
                    queue: q.into(),
                    exchange: e.into(),
                    routing_key: k.into(),
                    arguments: a,
                })
            )),
            (name(), any::<bool>()).prop_map(|(q, nowait)| AMQPClass::Queue(
                queue::AMQPMethod::Purge(queue::Purge {
                    queue: q.into(),
                    nowait
                })
            )),
            (name(), flags.clone()).prop_map(|(q, f)| AMQPClass::Queue(queue::AMQPMethod::Delete(
                queue::Delete {
                    queue: q.into(),
                    if_unused: f[0],
                    if_empty: f[1],
                    nowait: f[2],
                }
            ))),
            (
                name(),
                "(direct|fanout|topic|headers)",
                flags.clone(),
                table()
            )
                .prop_map(|(e, k, f, a)| AMQPClass::Exchange(
                    exchange::AMQPMethod::Declare(exchange::Declare {
                        exchange: e.into(),
                        kind: k.into(),
                        passive: f[0],
                        durable: f[1],
                        auto_delete: f[2],
                        internal: f[3],
                        nowait: f[4],
                        arguments: a,
                    })
                )),
            (name(), any::<bool>(), any::<bool>()).prop_map(|(e, if_unused, nowait)| {
                AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
                    exchange: e.into(),
                    if_unused,
                    nowait,
                }))
            }),
            (name(), name(), name(), any::<bool>(), table()).prop_map(|(d, s, k, nowait, a)| {
                AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                    destination: d.into(),
                    source: s.into(),
                    routing_key: k.into(),
                    nowait,
                    arguments: a,
                }))
            }),
            (name(), name(), flags.clone(), table()).prop_map(|(q, t, f, a)| AMQPClass::Basic(
                basic::AMQPMethod::Consume(basic::Consume {
                    queue: q.into(),
                    consumer_tag: t.into(),
                    no_local: f[0],
                    no_ack: f[1],
                    exclusive: f[2],
                    nowait: f[3],
                    arguments: a,
                })
            )),
            (name(), any::<bool>()).prop_map(|(t, nowait)| AMQPClass::Basic(
                basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: t.into(),
                    nowait
                })
            )),
            (name(), any::<bool>()).prop_map(|(q, no_ack)| AMQPClass::Basic(
                basic::AMQPMethod::Get(basic::Get {
                    queue: q.into(),
                    no_ack
                })
            )),
            (any::<u64>(), any::<bool>()).prop_map(|(t, requeue)| AMQPClass::Basic(
                basic::AMQPMethod::Reject(basic::Reject {
                    delivery_tag: t,
                    requeue
                })
            )),
            (any::<u64>(), any::<bool>(), any::<bool>()).prop_map(|(t, multiple, requeue)| {
                AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                    delivery_tag: t,
                    multiple,
                    requeue,
                }))
            }),
            any::<bool>().prop_map(|requeue| AMQPClass::Basic(basic::AMQPMethod::Recover(
                basic::Recover { requeue }
            ))),
            any::<bool>().prop_map(|active| AMQPClass::Channel(channel::AMQPMethod::Flow(
                channel::Flow { active }
            ))),
            (300u16..600, "[A-Z_ -]{0,40}", any::<u16>(), any::<u16>()).prop_map(
                |(c, t, cl, m)| AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                    reply_code: c,
                    reply_text: t.into(),
                    class_id: cl,
                    method_id: m,
                }))
            ),
            any::<bool>().prop_map(|nowait| AMQPClass::Confirm(confirm::AMQPMethod::Select(
                confirm::Select { nowait }
            ))),
            Just(AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {}))),
            Just(AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {}))),
            (any::<u16>(), any::<u32>(), any::<u16>()).prop_map(|(c, f, h)| AMQPClass::Connection(
                connection::AMQPMethod::TuneOk(connection::TuneOk {
                    channel_max: c,
                    frame_max: f,
                    heartbeat: h,
                })
            )),
            name().prop_map(|v| AMQPClass::Connection(connection::AMQPMethod::Open(
                connection::Open {
                    virtual_host: v.into()
                }
            ))),
        ]
    }

    proptest! {
        #[test]
        fn every_client_method_round_trips(class in client_method()) {
            let payload = Bytes::from(encode_class(&class).unwrap());
            prop_assert_eq!(decode_method(&payload).unwrap(), Method::Other(class));
        }
    }
}
