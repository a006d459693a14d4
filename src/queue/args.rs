//! Queue arguments (`x-…`) as the queue engine uses them, validated with RabbitMQ's wording.
//! Unknown `x-` arguments are accepted and kept, as RabbitMQ does.

use serde::{Deserialize, Serialize};
use warren_amqp::types::{AMQPValue, FieldTable};
use warren_amqp::AmqpError;

/// What happens to a publish that would take a queue over its length limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// The oldest message goes (dead-lettered if the queue has a dead-letter exchange).
    #[default]
    DropHead,
    /// The new message is refused (nacked to a confirming publisher).
    RejectPublish,
    /// Refused and dead-lettered.
    RejectPublishDlx,
}

/// `x-queue-type`: which kind of queue a declare asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
    Stream,
}

impl QueueType {
    /// Its `x-queue-type` name (and the management API's `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }

    /// Replicated kinds are durable, never exclusive or auto-delete (RabbitMQ refuses those).
    pub fn needs_plain_durable(self) -> bool {
        self != QueueType::Classic
    }
}

/// The arguments a queue acts on (serializable: a replicated queue's state carries the ones in
/// effect, which a policy change replaces).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueArgs {
    pub queue_type: QueueType,
    pub message_ttl: Option<u64>,
    pub expires: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub max_priority: Option<u8>,
    pub single_active_consumer: bool,
    pub delivery_limit: Option<u64>,
    /// `x-message-deduplication`: drop publishes whose id was seen recently.
    pub deduplication: Option<Dedup>,
}

/// Deduplication settings (Warren's own; the arguments follow RabbitMQ's deduplication plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dedup {
    /// How many ids are remembered (the oldest are forgotten first).
    pub cache_size: usize,
    /// How long an id is remembered, in milliseconds (None: until pushed out).
    pub ttl_ms: Option<u64>,
    /// The header holding the id; the `message-id` property when None.
    pub header: Option<String>,
}

impl QueueArgs {
    /// Publishes to this queue may be refused (so confirms wait for the queue's answer).
    pub fn may_reject_publish(&self) -> bool {
        self.overflow != Overflow::DropHead
            && (self.max_length.is_some() || self.max_length_bytes.is_some())
    }

    pub fn parse(args: &FieldTable, queue: &str, vhost: &str) -> Result<QueueArgs, AmqpError> {
        let reader = ArgReader {
            args,
            kind: "queue",
            name: queue,
            vhost,
        };
        let invalid = |arg: &str, why: String| reader.invalid(arg, why);
        let get = |arg: &str| args.inner().get(arg);
        let non_negative = |arg: &str| reader.non_negative(arg);
        // Checked in RabbitMQ's order: the dead-letter exchange's type first (its channel looks
        // at it before the queue's own checks), then each argument in turn.
        if let Some(v) = get("x-dead-letter-exchange").filter(|v| string(v).is_none()) {
            return Err(AmqpError::precondition_failed(format!(
                "invalid type '{}' for arg 'x-dead-letter-exchange' in queue '{queue}' in vhost '{vhost}'",
                type_name(v)
            )));
        }
        let mut out = QueueArgs {
            expires: non_negative("x-expires")?,
            ..Default::default()
        };
        if out.expires == Some(0) {
            return Err(invalid("x-expires", "{value_zero,0}".into()));
        }
        out.message_ttl = non_negative("x-message-ttl")?;
        out.dead_letter_exchange = get("x-dead-letter-exchange").and_then(string);
        out.dead_letter_routing_key = reader.string_or_unacceptable("x-dead-letter-routing-key")?;
        if out.dead_letter_routing_key.is_some() && out.dead_letter_exchange.is_none() {
            return Err(invalid(
                "x-dead-letter-routing-key",
                "routing_key_but_no_dlx_defined".into(),
            ));
        }
        out.max_length = non_negative("x-max-length")?;
        out.max_length_bytes = non_negative("x-max-length-bytes")?;
        if let Some(n) = non_negative("x-max-priority")? {
            if n > 255 {
                return Err(invalid(
                    "x-max-priority",
                    format!("{{max_value_exceeded,{n}}}"),
                ));
            }
            out.max_priority = (n > 0).then_some(n as u8);
        }
        out.overflow = match reader.string_or_unacceptable("x-overflow")?.as_deref() {
            None | Some("drop-head") => Overflow::DropHead,
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            Some(_) => return Err(invalid("x-overflow", "invalid_overflow".into())),
        };
        out.queue_type = match reader.string_or_unacceptable("x-queue-type")?.as_deref() {
            None | Some("classic") => QueueType::Classic,
            Some("quorum") => QueueType::Quorum,
            Some("stream") => QueueType::Stream,
            Some(other) => {
                return Err(invalid(
                    "x-queue-type",
                    format!("\"unsupported queue type '{other}'\""),
                ))
            }
        };
        // Paging is Warren's own (by memory use), so the mode is only checked.
        match reader.string_or_unacceptable("x-queue-mode")?.as_deref() {
            None | Some("default") | Some("lazy") => {}
            Some(other) => {
                return Err(invalid(
                    "x-queue-mode",
                    format!("\"unsupported queue mode '{other}'\""),
                ))
            }
        }
        out.single_active_consumer = match get("x-single-active-consumer") {
            None => false,
            Some(AMQPValue::Boolean(b)) => *b,
            Some(v) => {
                return Err(invalid(
                    "x-single-active-consumer",
                    format!("{{unacceptable_type,{}}}", type_name(v)),
                ))
            }
        };
        out.delivery_limit = non_negative("x-delivery-limit")?;
        out.deduplication = Dedup::parse(&reader)?;
        Ok(out)
    }
}

/// The arguments of basic.consume RabbitMQ checks (after finding the queue): `x-priority` must
/// be an integer, `x-cancel-on-ha-failover` a boolean.
pub fn check_consume_args(args: &FieldTable, queue: &str, vhost: &str) -> Result<(), AmqpError> {
    let reader = ArgReader {
        args,
        kind: "queue",
        name: queue,
        vhost,
    };
    reader.any_integer("x-priority")?;
    match args.inner().get("x-cancel-on-ha-failover") {
        None | Some(AMQPValue::Boolean(_)) => Ok(()),
        Some(v) => Err(reader.invalid(
            "x-cancel-on-ha-failover",
            format!("{{unacceptable_type,{}}}", type_name(v)),
        )),
    }
}

/// A string-typed field value's text.
fn string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

impl Dedup {
    /// `x-message-deduplication` and its settings, from a queue's or an exchange's arguments.
    pub fn parse(reader: &ArgReader<'_>) -> Result<Option<Dedup>, AmqpError> {
        let on = match reader.args.inner().get("x-message-deduplication") {
            None => false,
            Some(AMQPValue::Boolean(b)) => *b,
            Some(v) => {
                return Err(reader.invalid(
                    "x-message-deduplication",
                    format!("\"expected bool, got {}\"", type_name(v)),
                ))
            }
        };
        if !on {
            return Ok(None);
        }
        Ok(Some(Dedup {
            cache_size: reader
                .non_negative("x-cache-size")?
                .unwrap_or(DEFAULT_DEDUP_CACHE) as usize,
            ttl_ms: reader.non_negative("x-cache-ttl")?,
            header: reader.text("x-deduplication-header")?,
        }))
    }
}

/// Reads `x-` arguments of a queue or exchange, refusing wrong types with RabbitMQ's wording.
pub struct ArgReader<'a> {
    pub args: &'a FieldTable,
    /// "queue" or "exchange".
    pub kind: &'a str,
    pub name: &'a str,
    pub vhost: &'a str,
}

impl ArgReader<'_> {
    pub fn invalid(&self, arg: &str, why: String) -> AmqpError {
        AmqpError::precondition_failed(format!(
            "invalid arg '{arg}' for {} '{}' in vhost '{}': {why}",
            self.kind, self.name, self.vhost
        ))
    }

    pub fn non_negative(&self, arg: &str) -> Result<Option<u64>, AmqpError> {
        match self.args.inner().get(arg) {
            None => Ok(None),
            Some(v) => match integer(v) {
                Some(n) if n < 0 => Err(self.invalid(arg, format!("{{value_negative,{n}}}"))),
                Some(n) => Ok(Some(n as u64)),
                None => {
                    Err(self.invalid(arg, format!("\"expected integer, got {}\"", type_name(v))))
                }
            },
        }
    }

    /// An integer argument of any sign (`"expected integer, got …"` otherwise).
    pub fn any_integer(&self, arg: &str) -> Result<Option<i64>, AmqpError> {
        match self.args.inner().get(arg) {
            None => Ok(None),
            Some(v) => integer(v).map(Some).ok_or_else(|| {
                self.invalid(arg, format!("\"expected integer, got {}\"", type_name(v)))
            }),
        }
    }

    /// A string argument; another type is `{unacceptable_type,…}` (RabbitMQ's wording for
    /// `x-overflow`, `x-queue-mode`, `x-dead-letter-routing-key`).
    pub fn string_or_unacceptable(&self, arg: &str) -> Result<Option<String>, AmqpError> {
        match self.args.inner().get(arg) {
            None => Ok(None),
            Some(v) => string(v).map(Some).ok_or_else(|| {
                self.invalid(arg, format!("{{unacceptable_type,{}}}", type_name(v)))
            }),
        }
    }

    pub fn text(&self, arg: &str) -> Result<Option<String>, AmqpError> {
        match self.args.inner().get(arg) {
            None => Ok(None),
            Some(AMQPValue::LongString(s)) => {
                Ok(Some(String::from_utf8_lossy(s.as_bytes()).into_owned()))
            }
            Some(AMQPValue::ShortString(s)) => Ok(Some(s.as_str().to_owned())),
            Some(v) => {
                Err(self.invalid(arg, format!("\"expected longstr, got {}\"", type_name(v))))
            }
        }
    }
}

/// Ids remembered by a deduplicating queue when `x-cache-size` is not given.
const DEFAULT_DEDUP_CACHE: u64 = 100_000;

/// Any integer-typed field value.
pub fn integer(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    })
}

/// RabbitMQ's names for field value types, as its error messages print them.
pub fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => "byte",
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => "short",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn parses_and_validates_like_rabbitmq() {
        let a = QueueArgs::parse(
            &table(&[
                ("x-message-ttl", AMQPValue::LongInt(1000)),
                ("x-max-length", AMQPValue::LongLongInt(5)),
                ("x-overflow", AMQPValue::LongString("reject-publish".into())),
                (
                    "x-dead-letter-exchange",
                    AMQPValue::LongString("dlx".into()),
                ),
                ("x-max-priority", AMQPValue::ShortShortUInt(10)),
                ("x-single-active-consumer", AMQPValue::Boolean(true)),
                ("x-unknown", AMQPValue::LongString("kept".into())),
            ]),
            "q",
            "/",
        )
        .unwrap();
        assert_eq!(a.message_ttl, Some(1000));
        assert_eq!(a.max_length, Some(5));
        assert_eq!(a.overflow, Overflow::RejectPublish);
        assert!(a.may_reject_publish());
        assert_eq!(a.max_priority, Some(10));
        assert!(a.single_active_consumer);
        let e = QueueArgs::parse(
            &table(&[("x-max-length", AMQPValue::LongInt(-1))]),
            "wp.c16z",
            "/",
        )
        .unwrap_err();
        assert_eq!(e.reply_text(), "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'wp.c16z' in vhost '/': {value_negative,-1}");
        let e = QueueArgs::parse(
            &table(&[("x-max-length", AMQPValue::LongString("abc".into()))]),
            "wp.c16z",
            "/",
        )
        .unwrap_err();
        assert_eq!(e.reply_text(), "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'wp.c16z' in vhost '/': \"expected integer, got longstr\"");
        assert!(QueueArgs::parse(
            &table(&[("x-max-priority", AMQPValue::LongInt(256))]),
            "q",
            "/"
        )
        .is_err());
        assert!(
            QueueArgs::parse(&table(&[("x-expires", AMQPValue::LongInt(0))]), "q", "/").is_err()
        );
        assert!(QueueArgs::parse(
            &table(&[("x-overflow", AMQPValue::LongString("nope".into()))]),
            "q",
            "/"
        )
        .is_err());
        // Texts from RabbitMQ 3.10.
        let text = |entries: &[(&str, AMQPValue)]| {
            QueueArgs::parse(&table(entries), "q", "/")
                .unwrap_err()
                .reply_text()
        };
        let prefix = "PRECONDITION_FAILED - invalid arg";
        assert_eq!(
            text(&[("x-queue-mode", AMQPValue::LongString("bogus".into()))]),
            format!("{prefix} 'x-queue-mode' for queue 'q' in vhost '/': \"unsupported queue mode 'bogus'\"")
        );
        assert_eq!(
            text(&[("x-queue-type", AMQPValue::LongString("bogus".into()))]),
            format!("{prefix} 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'bogus'\"")
        );
        assert_eq!(
            text(&[("x-queue-type", AMQPValue::LongInt(5))]),
            format!("{prefix} 'x-queue-type' for queue 'q' in vhost '/': {{unacceptable_type,signedint}}")
        );
        assert_eq!(
            text(&[("x-queue-mode", AMQPValue::ShortInt(1))]),
            format!(
                "{prefix} 'x-queue-mode' for queue 'q' in vhost '/': {{unacceptable_type,short}}"
            )
        );
        for mode in ["default", "lazy"] {
            let args = table(&[("x-queue-mode", AMQPValue::LongString(mode.into()))]);
            assert!(QueueArgs::parse(&args, "q", "/").is_ok());
        }
        assert_eq!(
            text(&[("x-overflow", AMQPValue::LongString("nope".into()))]),
            format!("{prefix} 'x-overflow' for queue 'q' in vhost '/': invalid_overflow")
        );
        assert_eq!(
            text(&[("x-max-priority", AMQPValue::LongInt(256))]),
            format!(
                "{prefix} 'x-max-priority' for queue 'q' in vhost '/': {{max_value_exceeded,256}}"
            )
        );
        assert_eq!(
            text(&[("x-single-active-consumer", AMQPValue::LongString("x".into()))]),
            format!("{prefix} 'x-single-active-consumer' for queue 'q' in vhost '/': {{unacceptable_type,longstr}}")
        );
        assert_eq!(
            text(&[
                ("x-message-ttl", AMQPValue::LongInt(-1)),
                ("x-dead-letter-exchange", AMQPValue::LongInt(5)),
            ]),
            "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
        );
        let e = check_consume_args(
            &table(&[("x-priority", AMQPValue::LongString("5".into()))]),
            "q",
            "/",
        )
        .unwrap_err();
        assert_eq!(
            e.reply_text(),
            format!("{prefix} 'x-priority' for queue 'q' in vhost '/': \"expected integer, got longstr\"")
        );
        assert!(
            check_consume_args(&table(&[("x-priority", AMQPValue::LongInt(-3))]), "q", "/").is_ok()
        );
        assert!(QueueArgs::parse(
            &table(&[(
                "x-dead-letter-routing-key",
                AMQPValue::LongString("k".into())
            )]),
            "q",
            "/"
        )
        .is_err());
    }
}
