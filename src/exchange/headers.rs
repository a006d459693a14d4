//! Headers routing: `x-match` and the matching of a binding's table against a message's headers,
//! with RabbitMQ's equality of values across types; and `LazyHeaders`, so the headers are decoded
//! only when a headers exchange looks at them. Apart from `Exchange` as the one kind that reads
//! the message's properties rather than its routing key.

use warren_amqp::types::{AMQPValue, FieldTable};
use warren_amqp::AmqpError;

/// A message's headers table, decoded only if a headers exchange looks at it.
pub struct LazyHeaders<'a> {
    raw: Option<&'a [u8]>,
    parsed: std::cell::OnceCell<FieldTable>,
}

impl<'a> LazyHeaders<'a> {
    /// `raw` is the table's content as in the content header, without its length prefix.
    pub fn new(raw: Option<&'a [u8]>) -> Self {
        LazyHeaders {
            raw,
            parsed: std::cell::OnceCell::new(),
        }
    }

    pub fn get(&self) -> &FieldTable {
        self.parsed.get_or_init(|| {
            self.raw
                .and_then(warren_amqp::encode::decode_table_entries)
                .unwrap_or_default()
        })
    }
}

fn x_match(binding: &FieldTable) -> Option<String> {
    match binding.inner().get("x-match")? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => Some(String::new()),
    }
}

pub(super) fn validate_x_match(arguments: &FieldTable) -> Result<(), AmqpError> {
    match x_match(arguments).as_deref() {
        None | Some("all" | "any" | "all-with-x" | "any-with-x") => Ok(()),
        Some(other) => Err(AmqpError::precondition_failed(format!(
            "Invalid x-match field value <<\"{other}\">>; expected all, any, all-with-x, or any-with-x"
        ))),
    }
}

/// Values compare as RabbitMQ (Erlang `==`) compares them: numbers by value whatever their
/// width or kind (5 equals 5.0), strings and byte arrays by their octets; other types exactly.
pub fn same_value(a: &AMQPValue, b: &AMQPValue) -> bool {
    fn int(v: &AMQPValue) -> Option<i128> {
        crate::queue::args::integer(v).map(i128::from)
    }
    fn number(v: &AMQPValue) -> Option<f64> {
        match v {
            AMQPValue::Float(f) => Some(f64::from(*f)),
            AMQPValue::Double(d) => Some(*d),
            other => int(other).map(|n| n as f64),
        }
    }
    fn text(v: &AMQPValue) -> Option<&[u8]> {
        match v {
            AMQPValue::LongString(s) => Some(s.as_bytes()),
            AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
            AMQPValue::ByteArray(b) => Some(b.as_slice()),
            _ => None,
        }
    }
    if let (Some(x), Some(y)) = (int(a), int(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (text(a), text(b)) {
        return x == y;
    }
    a == b
}

/// Headers exchange matching: `x-match` all (default), any, all-with-x or any-with-x; `x-` keys
/// take part only in the `-with-x` modes; a void binding value matches the header's presence.
pub fn headers_match(binding: &FieldTable, headers: &FieldTable) -> bool {
    let mode = x_match(binding).unwrap_or_else(|| "all".to_owned());
    let any = mode.starts_with("any");
    let with_x = mode.ends_with("-with-x");
    let mut tests = binding
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")))
        .map(|(k, v)| match (headers.inner().get(k.as_str()), v) {
            (Some(_), AMQPValue::Void) => true,
            (Some(h), v) => same_value(h, v),
            (None, _) => false,
        });
    if any {
        tests.any(|t| t)
    } else {
        tests.all(|t| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Destination, Exchange, ExchangeKind};

    fn dest(name: &str) -> Destination {
        Destination::Exchange(name.into())
    }

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(v.into())
    }

    #[test]
    fn headers_table() {
        use AMQPValue::{Boolean, Double, Float, LongInt, LongLongInt, ShortShortInt, Void};
        let cases: Vec<(FieldTable, FieldTable, bool)> = vec![
            (table(&[("a", s("1"))]), table(&[("a", s("1"))]), true),
            (table(&[("a", s("1"))]), table(&[("a", s("2"))]), false),
            (table(&[("a", s("1"))]), table(&[]), false),
            (
                table(&[("x-match", s("all")), ("a", s("1")), ("b", s("2"))]),
                table(&[("a", s("1")), ("b", s("2"))]),
                true,
            ),
            (
                table(&[("x-match", s("all")), ("a", s("1")), ("b", s("2"))]),
                table(&[("a", s("1"))]),
                false,
            ),
            (
                table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]),
                table(&[("a", s("1"))]),
                true,
            ),
            (
                table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]),
                table(&[("c", s("1"))]),
                false,
            ),
            (
                table(&[("x-match", s("any"))]),
                table(&[("a", s("1"))]),
                false,
            ),
            (
                table(&[("x-match", s("all"))]),
                table(&[("a", s("1"))]),
                true,
            ),
            (table(&[]), table(&[]), true),
            (table(&[("a", Void)]), table(&[("a", s("anything"))]), true),
            (table(&[("a", Void)]), table(&[("b", s("x"))]), false),
            (
                table(&[("a", LongInt(5))]),
                table(&[("a", ShortShortInt(5))]),
                true,
            ),
            (
                table(&[("a", LongInt(5))]),
                table(&[("a", LongLongInt(5))]),
                true,
            ),
            (
                table(&[("a", LongInt(5))]),
                table(&[("a", LongInt(6))]),
                false,
            ),
            (table(&[("a", LongInt(5))]), table(&[("a", s("5"))]), false),
            (
                table(&[("a", LongInt(5))]),
                table(&[("a", Double(5.0))]),
                true,
            ),
            (
                table(&[("a", Double(1.5))]),
                table(&[("a", Float(1.5))]),
                true,
            ),
            (
                table(&[("a", Boolean(true))]),
                table(&[("a", Boolean(true))]),
                true,
            ),
            (
                table(&[("a", Boolean(true))]),
                table(&[("a", Boolean(false))]),
                false,
            ),
            (
                table(&[("x-match", s("all")), ("x-k", s("1"))]),
                table(&[("x-k", s("2"))]),
                true,
            ),
            (
                table(&[("x-match", s("all-with-x")), ("x-k", s("1"))]),
                table(&[("x-k", s("2"))]),
                false,
            ),
            (
                table(&[("x-match", s("all-with-x")), ("x-k", s("1"))]),
                table(&[("x-k", s("1"))]),
                true,
            ),
            (
                table(&[("x-match", s("any-with-x")), ("x-k", s("1")), ("a", s("z"))]),
                table(&[("x-k", s("1"))]),
                true,
            ),
            (
                table(&[("x-match", s("any")), ("x-k", s("1"))]),
                table(&[("x-k", s("1"))]),
                false,
            ),
        ];
        for (i, (binding, headers, expected)) in cases.iter().enumerate() {
            assert_eq!(headers_match(binding, headers), *expected, "case {i}");
        }
    }

    #[test]
    fn invalid_x_match_is_refused() {
        let mut ex = Exchange::new(
            "h",
            ExchangeKind::Headers,
            false,
            false,
            false,
            FieldTable::default(),
        );
        let err = ex
            .bind(dest("d"), "", table(&[("x-match", s("some"))]))
            .unwrap_err();
        assert_eq!(err.code, warren_amqp::ReplyCode::PreconditionFailed);
    }
}
