//! Queue arguments (`x-…`) as the queue engine uses them, validated with RabbitMQ's wording.
//! Unknown `x-` arguments are accepted and kept, as RabbitMQ does; an argument RabbitMQ knows
//! for another queue type only is refused when a queue is declared (not when it is read back).

use serde::{Deserialize, Serialize};
use warren_amqp::types::{AMQPValue, FieldTable};
use warren_amqp::AmqpError;

/// Ages and intervals (`x-max-age`, `x-stream-offset`) read as policies read `max-age`.
pub use crate::policy::parse_age;

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

/// `x-dead-letter-strategy` of a quorum queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetterStrategy {
    /// Dead-lettered messages are published once, unconfirmed (as classic queues do).
    #[default]
    AtMostOnce,
    /// The queue keeps a dead-lettered message until the target queues confirm it.
    AtLeastOnce,
}

impl DeadLetterStrategy {
    fn from_name(name: &str) -> Option<DeadLetterStrategy> {
        match name {
            "at-most-once" => Some(DeadLetterStrategy::AtMostOnce),
            "at-least-once" => Some(DeadLetterStrategy::AtLeastOnce),
            _ => None,
        }
    }
}

/// `x-queue-leader-locator`: where a replicated queue's leader is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderLocator {
    /// On the node of the declaring connection.
    ClientLocal,
    /// On the node leading the fewest queues (or a random one, with many queues).
    Balanced,
}

impl LeaderLocator {
    pub fn from_name(name: &str) -> Option<LeaderLocator> {
        match name {
            "client-local" => Some(LeaderLocator::ClientLocal),
            // RabbitMQ 3.10 takes its older names as synonyms of balanced.
            "balanced" | "random" | "least-leaders" => Some(LeaderLocator::Balanced),
            _ => None,
        }
    }
}

/// `x-queue-type`: which kind of queue a declare asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
    Stream,
}

/// The arguments RabbitMQ 3.10 knows for each queue type (each type's `queue_arguments`
/// capability), in its order, which is the order a redeclare compares them in.
const RABBITMQ_CLASSIC_ARGUMENTS: [&str; 13] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
];
const RABBITMQ_QUORUM_ARGUMENTS: [&str; 15] = [
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-message-ttl",
    "x-queue-leader-locator",
];
const RABBITMQ_STREAM_ARGUMENTS: [&str; 6] = [
    "x-queue-type",
    "x-max-length-bytes",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

impl QueueType {
    /// Its `x-queue-type` name (and the management API's `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }

    /// The name of RabbitMQ's module for the type, as its error texts print it.
    fn rabbitmq_module(self) -> &'static str {
        match self {
            QueueType::Classic => "rabbit_classic_queue",
            QueueType::Quorum => "rabbit_quorum_queue",
            QueueType::Stream => "rabbit_stream_queue",
        }
    }

    /// Replicated kinds are durable, never exclusive or auto-delete (RabbitMQ refuses those).
    pub fn needs_plain_durable(self) -> bool {
        self != QueueType::Classic
    }

    /// The arguments a redeclare of a queue of this type compares with the queue's, in order:
    /// RabbitMQ's for the type, and those Warren supports beyond RabbitMQ (delivery limits on
    /// classic queues, priorities on quorum queues).
    pub fn compared_arguments(self) -> impl Iterator<Item = &'static str> {
        let (rabbitmq, warren): (&[&str], &[&str]) = match self {
            QueueType::Classic => (&RABBITMQ_CLASSIC_ARGUMENTS, &["x-delivery-limit"]),
            QueueType::Stream => (&RABBITMQ_STREAM_ARGUMENTS, &[]),
            QueueType::Quorum => (&RABBITMQ_QUORUM_ARGUMENTS, &["x-max-priority"]),
        };
        rabbitmq.iter().chain(warren).copied()
    }

    /// Whether a declare of this type refuses `arg`: an argument RabbitMQ knows for another
    /// type only (unknown ones are accepted).
    fn refuses_argument(self, arg: &str) -> bool {
        let known = RABBITMQ_CLASSIC_ARGUMENTS
            .iter()
            .chain(&RABBITMQ_QUORUM_ARGUMENTS)
            .chain(&RABBITMQ_STREAM_ARGUMENTS)
            .any(|known| *known == arg);
        known && !self.compared_arguments().any(|own| own == arg)
    }
}

/// Which checks a parse makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checks {
    /// Every check RabbitMQ makes when a queue is declared.
    Declare,
    /// Arguments stored before read back: checks added since are skipped (their arguments read
    /// as absent when invalid), so that a queue stored before does not lose all its arguments.
    Stored,
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
    /// `x-dead-letter-strategy` (quorum queues).
    pub dead_letter_strategy: DeadLetterStrategy,
    pub max_priority: Option<u8>,
    pub single_active_consumer: bool,
    pub delivery_limit: Option<u64>,
    /// `x-quorum-initial-group-size`: how many replicas a quorum queue starts with.
    pub initial_group_size: Option<u32>,
    /// `x-queue-leader-locator` (quorum queues).
    pub leader_locator: Option<LeaderLocator>,
    /// `x-message-deduplication`: drop publishes whose id was seen recently.
    /// Boxed: few queues have it, and a queue keeps several copies of its arguments.
    pub deduplication: Option<Box<Dedup>>,
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

    /// The arguments of a queue being declared, with every check RabbitMQ makes.
    pub fn parse_declared(
        args: &FieldTable,
        queue: &str,
        vhost: &str,
    ) -> Result<QueueArgs, AmqpError> {
        Self::read(args, queue, vhost, Checks::Declare)
    }

    /// The arguments of a queue declared before (stored, replicated): the checks added since it
    /// was declared are skipped, see [`Checks::Stored`].
    pub fn parse(args: &FieldTable, queue: &str, vhost: &str) -> Result<QueueArgs, AmqpError> {
        Self::read(args, queue, vhost, Checks::Stored)
    }

    fn read(
        args: &FieldTable,
        queue: &str,
        vhost: &str,
        checks: Checks,
    ) -> Result<QueueArgs, AmqpError> {
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
        // at it before the queue's own checks), then the queue type, then each argument the
        // type knows in turn; arguments of other types last.
        if let Some(v) = get("x-dead-letter-exchange").filter(|v| string(v).is_none()) {
            return Err(AmqpError::precondition_failed(format!(
                "invalid type '{}' for arg 'x-dead-letter-exchange' in queue '{queue}' in vhost '{vhost}'",
                type_name(v)
            )));
        }
        let queue_type = match reader.string_or_unacceptable("x-queue-type")?.as_deref() {
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
        let quorum = queue_type == QueueType::Quorum;
        // Quorum queues' own arguments are checked at declare only: queues stored before these
        // checks came may hold values they refuse.
        let declared_quorum = quorum && checks == Checks::Declare;
        let mut out = QueueArgs {
            queue_type,
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
        out.dead_letter_strategy = reader
            .named(
                "x-dead-letter-strategy",
                DeadLetterStrategy::from_name,
                "invalid_dlx_strategy",
                declared_quorum,
            )?
            .unwrap_or_default();
        out.max_length = non_negative("x-max-length")?;
        out.max_length_bytes = non_negative("x-max-length-bytes")?;
        let declared_stream = queue_type == QueueType::Stream && checks == Checks::Declare;
        if declared_stream {
            // Kept in the arguments, read by the stream itself (StreamArgs).
            if let Some(age) = reader.string_or_unacceptable("x-max-age")? {
                if parse_age(&age).is_none() {
                    return Err(invalid("x-max-age", "invalid_max_age".into()));
                }
            }
            non_negative("x-stream-max-segment-size-bytes")?;
        }
        if declared_quorum {
            // Only checked: Warren pages by memory use, whatever the queue type.
            non_negative("x-max-in-memory-length")?;
            non_negative("x-max-in-memory-bytes")?;
        }
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
        // Paging is Warren's own (by memory use), so the mode is only checked. Quorum queues
        // have no mode: RabbitMQ refuses the argument by name, whatever its value.
        if !quorum {
            match reader.string_or_unacceptable("x-queue-mode")?.as_deref() {
                None | Some("default") | Some("lazy") => {}
                Some(other) => {
                    return Err(invalid(
                        "x-queue-mode",
                        format!("\"unsupported queue mode '{other}'\""),
                    ))
                }
            }
        }
        if queue_type == QueueType::Classic && checks == Checks::Declare {
            // Only checked: Warren has one message store, whatever the version asked for.
            if let Some(version) = non_negative("x-queue-version")? {
                if !(1..=2).contains(&version) {
                    return Err(invalid(
                        "x-queue-version",
                        format!("\"unsupported queue version '{version}'\""),
                    ));
                }
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
        out.initial_group_size = if declared_quorum {
            match reader.any_integer("x-quorum-initial-group-size")? {
                Some(0) => {
                    return Err(invalid(
                        "x-quorum-initial-group-size",
                        "{value_zero,0}".into(),
                    ))
                }
                Some(n) if n < 0 => {
                    return Err(invalid(
                        "x-quorum-initial-group-size",
                        format!("{{value_negative,{n}}}"),
                    ))
                }
                n => n.map(group_size),
            }
        } else {
            get("x-quorum-initial-group-size")
                .and_then(integer)
                .filter(|n| *n > 0)
                .map(group_size)
        };
        out.leader_locator = reader.named(
            "x-queue-leader-locator",
            LeaderLocator::from_name,
            "invalid_queue_locator_arg",
            declared_quorum || declared_stream,
        )?;
        out.delivery_limit = if quorum {
            // RabbitMQ does not check a quorum queue's limit; one that is not a count is none.
            get("x-delivery-limit")
                .and_then(integer)
                .and_then(|n| u64::try_from(n).ok())
        } else {
            non_negative("x-delivery-limit")?
        };
        out.deduplication = Dedup::parse(&reader)?.map(Box::new);
        if checks == Checks::Declare {
            // The first in the table's order (RabbitMQ's is the order the client sent).
            if let Some(arg) = args
                .inner()
                .keys()
                .find(|arg| queue_type.refuses_argument(arg.as_str()))
            {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid arg '{}' for queue '{queue}' in vhost '{vhost}' of queue type {}",
                    arg.as_str(),
                    queue_type.rabbitmq_module()
                )));
            }
        }
        Ok(out)
    }
}

/// A stream's own arguments (`x-max-age`, `x-stream-max-segment-size-bytes`), as it acts on
/// them: kept out of [`QueueArgs`], whose serialized form replicated queues carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamArgs {
    pub max_age_ms: Option<u64>,
    pub max_segment_bytes: Option<u64>,
    /// `x-initial-cluster-size`: on how many nodes a stream in a cluster is replicated.
    pub initial_cluster_size: Option<u32>,
}

impl StreamArgs {
    /// From a stream's arguments, checked when it was declared (anything unreadable reads as
    /// absent).
    pub fn of(args: &FieldTable) -> StreamArgs {
        let get = |arg: &str| args.inner().get(arg);
        StreamArgs {
            max_age_ms: get("x-max-age")
                .and_then(string)
                .and_then(|age| parse_age(&age)),
            max_segment_bytes: get("x-stream-max-segment-size-bytes")
                .and_then(integer)
                .and_then(|n| u64::try_from(n).ok()),
            initial_cluster_size: get("x-initial-cluster-size")
                .and_then(integer)
                .filter(|n| *n > 0)
                .map(group_size),
        }
    }
}

/// A replica count as stored: any larger count means every node anyway.
fn group_size(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
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

    /// A string argument naming one of a set of values (`from_name` knows them). With `strict`,
    /// another string is refused with `why` and another type with `{unacceptable_type,…}`;
    /// without, either reads as absent.
    fn named<T>(
        &self,
        arg: &str,
        from_name: fn(&str) -> Option<T>,
        why: &str,
        strict: bool,
    ) -> Result<Option<T>, AmqpError> {
        if !strict {
            let value = self.args.inner().get(arg).and_then(string);
            return Ok(value.as_deref().and_then(from_name));
        }
        match self.string_or_unacceptable(arg)? {
            None => Ok(None),
            Some(name) => from_name(&name)
                .map(Some)
                .ok_or_else(|| self.invalid(arg, why.to_owned())),
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

    /// The reply text of a declare's arguments RabbitMQ refuses.
    fn declare_error(args: &FieldTable) -> String {
        QueueArgs::parse_declared(args, "q", "/")
            .unwrap_err()
            .reply_text()
    }

    /// The arguments of a quorum queue's declare.
    fn quorum_table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut args = table(entries);
        args.insert("x-queue-type".into(), text_value("quorum"));
        args
    }

    fn text_value(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    #[test]
    fn quorum_arguments_are_checked_as_rabbitmq_does() {
        let invalid = |arg: &str, why: &str| {
            format!("PRECONDITION_FAILED - invalid arg '{arg}' for queue 'q' in vhost '/': {why}")
        };
        let quorum = |entries: &[(&str, AMQPValue)]| declare_error(&quorum_table(entries));
        let expected_integer = "\"expected integer, got longstr\"";
        let (strategy, group_size, locator) = (
            "x-dead-letter-strategy",
            "x-quorum-initial-group-size",
            "x-queue-leader-locator",
        );
        let int = AMQPValue::LongInt;
        for (arg, value, why) in [
            (strategy, text_value("bogus"), "invalid_dlx_strategy"),
            (strategy, int(5), "{unacceptable_type,signedint}"),
            (group_size, int(0), "{value_zero,0}"),
            (group_size, int(-1), "{value_negative,-1}"),
            (group_size, text_value("3"), expected_integer),
            (locator, text_value("bogus"), "invalid_queue_locator_arg"),
            (locator, int(5), "{unacceptable_type,signedint}"),
            ("x-max-in-memory-length", int(-1), "{value_negative,-1}"),
            ("x-max-in-memory-bytes", text_value("x"), expected_integer),
            ("x-expires", int(0), "{value_zero,0}"),
        ] {
            assert_eq!(quorum(&[(arg, value)]), invalid(arg, why));
        }
        // RabbitMQ's order of the checks: the strategy before the length limits and overflow,
        // the group size after them, the locator after the group size.
        for (entries, arg, why) in [
            (
                [
                    ("x-dead-letter-strategy", text_value("bogus")),
                    ("x-max-length", AMQPValue::LongInt(-1)),
                ],
                "x-dead-letter-strategy",
                "invalid_dlx_strategy",
            ),
            (
                [
                    ("x-quorum-initial-group-size", text_value("x")),
                    ("x-max-length", AMQPValue::LongInt(-1)),
                ],
                "x-max-length",
                "{value_negative,-1}",
            ),
            (
                [
                    ("x-quorum-initial-group-size", AMQPValue::LongInt(0)),
                    ("x-queue-leader-locator", text_value("bogus")),
                ],
                "x-quorum-initial-group-size",
                "{value_zero,0}",
            ),
        ] {
            assert_eq!(quorum(&entries), invalid(arg, why));
        }
        let ok = QueueArgs::parse_declared(
            &quorum_table(&[
                ("x-dead-letter-strategy", text_value("at-least-once")),
                ("x-quorum-initial-group-size", AMQPValue::LongInt(3)),
                ("x-queue-leader-locator", text_value("least-leaders")),
                ("x-max-in-memory-length", AMQPValue::LongInt(10)),
                ("x-max-in-memory-bytes", AMQPValue::LongInt(10)),
                ("x-delivery-limit", AMQPValue::LongInt(4)),
                ("x-max-priority", AMQPValue::LongInt(5)),
                ("x-ha-policy", text_value("all")),
                ("x-message-deduplication", AMQPValue::Boolean(true)),
            ]),
            "q",
            "/",
        )
        .unwrap();
        assert_eq!(ok.dead_letter_strategy, DeadLetterStrategy::AtLeastOnce);
        assert_eq!(ok.initial_group_size, Some(3));
        assert_eq!(ok.leader_locator, Some(LeaderLocator::Balanced));
        assert_eq!(ok.delivery_limit, Some(4));
        assert_eq!(ok.max_priority, Some(5));
        assert!(ok.deduplication.is_some());
        // RabbitMQ does not check a quorum queue's delivery limit: one that is no count is none.
        for limit in [AMQPValue::LongInt(-1), text_value("x")] {
            let args = quorum_table(&[("x-delivery-limit", limit)]);
            let parsed = QueueArgs::parse_declared(&args, "q", "/").unwrap();
            assert_eq!(parsed.delivery_limit, None);
        }
    }

    #[test]
    fn arguments_of_other_queue_types_are_refused_by_name() {
        let of_type = |arg: &str, module: &str| {
            format!("PRECONDITION_FAILED - invalid arg '{arg}' for queue 'q' in vhost '/' of queue type {module}")
        };
        let quorum = |entries: &[(&str, AMQPValue)]| declare_error(&quorum_table(entries));
        for (arg, value) in [
            ("x-queue-mode", text_value("lazy")),
            ("x-queue-mode", text_value("bogus")),
            ("x-queue-mode", AMQPValue::LongInt(5)),
            ("x-queue-master-locator", text_value("min-masters")),
            ("x-queue-version", AMQPValue::LongInt(2)),
            ("x-max-age", text_value("1D")),
            ("x-initial-cluster-size", AMQPValue::LongInt(3)),
            ("x-stream-max-segment-size-bytes", AMQPValue::LongInt(3)),
        ] {
            assert_eq!(quorum(&[(arg, value)]), of_type(arg, "rabbit_quorum_queue"));
        }
        // A type's own checks come first; among several arguments of other types, the first.
        assert_eq!(
            quorum(&[
                ("x-queue-mode", text_value("lazy")),
                ("x-overflow", text_value("bogus")),
            ]),
            "PRECONDITION_FAILED - invalid arg 'x-overflow' for queue 'q' in vhost '/': invalid_overflow"
        );
        assert_eq!(
            quorum(&[
                ("x-queue-mode", text_value("lazy")),
                ("x-max-age", text_value("1D")),
            ]),
            of_type("x-max-age", "rabbit_quorum_queue")
        );
        for (arg, value) in [
            ("x-dead-letter-strategy", text_value("at-least-once")),
            ("x-quorum-initial-group-size", AMQPValue::LongInt(0)),
            ("x-queue-leader-locator", text_value("balanced")),
            ("x-max-in-memory-length", AMQPValue::LongInt(1)),
            ("x-max-in-memory-bytes", AMQPValue::LongInt(1)),
            ("x-max-age", text_value("bogus")),
            ("x-initial-cluster-size", AMQPValue::LongInt(1)),
            ("x-stream-max-segment-size-bytes", text_value("x")),
        ] {
            assert_eq!(
                declare_error(&table(&[(arg, value.clone())])),
                of_type(arg, "rabbit_classic_queue")
            );
            // Read back, the same arguments are kept (a queue stored before keeps the others).
            let stored = QueueArgs::parse(
                &table(&[(arg, value), ("x-max-length", AMQPValue::LongInt(1))]),
                "q",
                "/",
            )
            .unwrap();
            assert_eq!(stored.max_length, Some(1));
        }
        // Warren's own: delivery limits on classic queues (checked), and arguments RabbitMQ
        // knows for no queue type.
        let classic = QueueArgs::parse_declared(
            &table(&[
                ("x-delivery-limit", AMQPValue::LongInt(2)),
                ("x-queue-version", AMQPValue::LongInt(2)),
                ("x-queue-master-locator", text_value("min-masters")),
                ("x-foo", text_value("kept")),
            ]),
            "q",
            "/",
        )
        .unwrap();
        assert_eq!(classic.delivery_limit, Some(2));
        assert_eq!(
            declare_error(&table(&[("x-delivery-limit", AMQPValue::LongInt(-1))])),
            "PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue 'q' in vhost '/': {value_negative,-1}"
        );
        let version = |value| declare_error(&table(&[("x-queue-version", value)]));
        let prefix =
            "PRECONDITION_FAILED - invalid arg 'x-queue-version' for queue 'q' in vhost '/'";
        assert_eq!(
            version(AMQPValue::LongInt(3)),
            format!("{prefix}: \"unsupported queue version '3'\"")
        );
        assert_eq!(
            version(AMQPValue::LongInt(-1)),
            format!("{prefix}: {{value_negative,-1}}")
        );
        assert_eq!(
            version(AMQPValue::Boolean(true)),
            format!("{prefix}: \"expected integer, got bool\"")
        );
        // Streams take their own (as RabbitMQ 3.10 answered them) and refuse the others.
        let stream =
            |extra: (&str, AMQPValue)| table(&[("x-queue-type", text_value("stream")), extra]);
        for age in ["14D", "12h", "30m", "45s", "1Y", "2M", "100000000Y"] {
            assert!(
                QueueArgs::parse_declared(&stream(("x-max-age", text_value(age))), "q", "/")
                    .is_ok(),
                "{age}"
            );
        }
        for age in ["0s", "10", "1d", "5 s", "-1h", "abc", ""] {
            assert_eq!(
                declare_error(&stream(("x-max-age", text_value(age)))),
                "PRECONDITION_FAILED - invalid arg 'x-max-age' for queue 'q' in vhost '/': invalid_max_age",
                "{age}"
            );
        }
        assert_eq!(
            declare_error(&stream(("x-max-age", AMQPValue::LongInt(5)))),
            "PRECONDITION_FAILED - invalid arg 'x-max-age' for queue 'q' in vhost '/': {unacceptable_type,signedint}"
        );
        assert_eq!(
            declare_error(&stream(("x-queue-mode", text_value("lazy")))),
            "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue 'q' in vhost '/' of queue type rabbit_stream_queue"
        );
        assert_eq!(
            declare_error(&stream(("x-stream-max-segment-size-bytes", AMQPValue::LongInt(-5)))),
            "PRECONDITION_FAILED - invalid arg 'x-stream-max-segment-size-bytes' for queue 'q' in vhost '/': {value_negative,-5}"
        );
        assert_eq!(parse_age("2M"), Some(30 * 2 * 86_400_000));
        // The queue type is checked before the other arguments.
        assert_eq!(
            declare_error(&table(&[
                ("x-queue-type", text_value("bogus")),
                ("x-expires", AMQPValue::LongInt(0)),
            ])),
            "PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'bogus'\""
        );
    }

    #[test]
    fn stored_quorum_arguments_read_back_leniently() {
        let stored = QueueArgs::parse(
            &quorum_table(&[
                ("x-dead-letter-strategy", text_value("bogus")),
                ("x-quorum-initial-group-size", AMQPValue::LongInt(0)),
                ("x-queue-leader-locator", AMQPValue::LongInt(1)),
                ("x-max-in-memory-length", AMQPValue::LongInt(-1)),
                ("x-queue-mode", text_value("bogus")),
                ("x-max-length", AMQPValue::LongInt(7)),
            ]),
            "q",
            "/",
        )
        .unwrap();
        assert_eq!(stored.dead_letter_strategy, DeadLetterStrategy::AtMostOnce);
        assert_eq!(stored.initial_group_size, None);
        assert_eq!(stored.leader_locator, None);
        assert_eq!(stored.max_length, Some(7));
        let stored = QueueArgs::parse(
            &quorum_table(&[
                ("x-dead-letter-strategy", text_value("at-least-once")),
                (
                    "x-quorum-initial-group-size",
                    AMQPValue::LongLongInt(1 << 40),
                ),
                ("x-queue-leader-locator", text_value("client-local")),
            ]),
            "q",
            "/",
        )
        .unwrap();
        assert_eq!(stored.dead_letter_strategy, DeadLetterStrategy::AtLeastOnce);
        assert_eq!(stored.initial_group_size, Some(u32::MAX));
        assert_eq!(stored.leader_locator, Some(LeaderLocator::ClientLocal));
    }
}
