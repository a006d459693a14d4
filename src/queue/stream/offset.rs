//! Where a stream consumer starts: basic.consume's `x-stream-offset` argument, as RabbitMQ reads
//! it.

use warren_amqp::types::{AMQPValue, FieldTable};
use warren_amqp::AmqpError;

use crate::queue::args::{integer, parse_age};

pub const ARGUMENT: &str = "x-stream-offset";

/// The first message a consumer of a stream gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StreamStart {
    /// The oldest message kept.
    First,
    /// The first message of the last chunk written (a batch appended together).
    Last,
    /// The next message published (the default).
    Next,
    /// This offset (the oldest kept if it is gone; waits for it if it is not there yet).
    Offset(u64),
    /// The first chunk written at or after this time (Unix milliseconds).
    Timestamp(i64),
}

impl StreamStart {
    /// From a consumer's arguments: `first`, `last`, `next`, an offset (negative ones read as the
    /// first), a timestamp (seconds, AMQP's), or an interval back from `now_ms` (`"10m"`, as
    /// `x-max-age` writes them).
    pub fn of(
        args: &FieldTable,
        queue: &str,
        vhost: &str,
        now_ms: i64,
    ) -> Result<StreamStart, AmqpError> {
        let Some(value) = args.inner().get(ARGUMENT) else {
            return Ok(StreamStart::Next);
        };
        if let AMQPValue::Timestamp(seconds) = value {
            return Ok(StreamStart::Timestamp(
                i64::try_from(*seconds).unwrap_or(i64::MAX / 1000) * 1000,
            ));
        }
        if let Some(n) = integer(value) {
            return Ok(StreamStart::Offset(u64::try_from(n).unwrap_or(0)));
        }
        let text = match value {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_owned(),
            _ => String::new(),
        };
        match text.as_str() {
            "first" => Ok(StreamStart::First),
            "last" => Ok(StreamStart::Last),
            "next" => Ok(StreamStart::Next),
            interval => match parse_age(interval) {
                Some(ms) => Ok(StreamStart::Timestamp(
                    now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)),
                )),
                // RabbitMQ 3.10 fails with an internal error (541) here; a precondition failure
                // of the channel tells the client what it got wrong.
                None => Err(AmqpError::precondition_failed(format!(
                    "invalid arg '{ARGUMENT}' for queue '{queue}' in vhost '{vhost}'"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(value: Option<AMQPValue>) -> Result<StreamStart, AmqpError> {
        let mut args = FieldTable::default();
        if let Some(v) = value {
            args.insert(ARGUMENT.into(), v);
        }
        StreamStart::of(&args, "s", "/", 1_000_000)
    }

    #[test]
    fn every_kind_of_start_reads_as_rabbitmq_reads_it() {
        let text = |t: &str| Some(AMQPValue::LongString(t.into()));
        assert_eq!(start(None).unwrap(), StreamStart::Next);
        assert_eq!(start(text("first")).unwrap(), StreamStart::First);
        assert_eq!(start(text("last")).unwrap(), StreamStart::Last);
        assert_eq!(start(text("next")).unwrap(), StreamStart::Next);
        assert_eq!(
            start(Some(AMQPValue::LongInt(7))).unwrap(),
            StreamStart::Offset(7)
        );
        assert_eq!(
            start(Some(AMQPValue::LongLongInt(-1))).unwrap(),
            StreamStart::Offset(0)
        );
        assert_eq!(
            start(Some(AMQPValue::Timestamp(60))).unwrap(),
            StreamStart::Timestamp(60_000)
        );
        assert_eq!(
            start(text("10m")).unwrap(),
            StreamStart::Timestamp(1_000_000 - 600_000)
        );
        assert!(start(text("bogus")).is_err());
        assert!(start(Some(AMQPValue::Boolean(true))).is_err());
    }
}
