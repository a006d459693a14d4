//! Dead-lettering: the properties a dead-lettered message carries (RabbitMQ's `x-death` history,
//! `x-first-death-*`, and no more `expiration`), and the history used to detect cycles.

use warren_amqp::protocol::basic::{parse_properties, AMQPProperties};
use warren_amqp::types::{AMQPValue, FieldArray, FieldTable, LongString};

/// Why a message was dead-lettered, as `x-death` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reason {
    Rejected,
    Expired,
    MaxLen,
    DeliveryLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::MaxLen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }

    /// Its code in the store (a held dead-letter's reason, see [`warren_storage::Op::Hold`]).
    pub fn code(self) -> u8 {
        match self {
            Reason::Rejected => 0,
            Reason::Expired => 1,
            Reason::MaxLen => 2,
            Reason::DeliveryLimit => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Reason> {
        match code {
            0 => Some(Reason::Rejected),
            1 => Some(Reason::Expired),
            2 => Some(Reason::MaxLen),
            3 => Some(Reason::DeliveryLimit),
            _ => None,
        }
    }
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Copies every property but `expiration` and `headers`.
fn rebuild(p: &AMQPProperties, headers: FieldTable) -> AMQPProperties {
    let mut out = AMQPProperties::default().with_headers(headers);
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

/// A dead-lettered message's new properties and the routing keys it goes to its dead-letter
/// exchange with (the first is the one it is delivered with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLettered {
    pub properties: Vec<u8>,
    pub routing_keys: Vec<String>,
}

/// Dead-letters a message published with `routing_key` (its `CC` header adds more keys) from
/// `queue`, as RabbitMQ does: with `x-dead-letter-routing-key` the message goes with that key
/// alone and loses its `CC` header; without it, it goes with its own key and its `CC` keys. The
/// properties are those of [`properties`]. `None` when the properties cannot be decoded.
pub fn dead_letter(
    raw: &[u8],
    reason: Reason,
    queue: &str,
    exchange: &str,
    routing_key: &str,
    dead_letter_routing_key: Option<&str>,
    now_secs: u64,
) -> Option<DeadLettered> {
    let (_, props) = parse_properties(raw).ok()?;
    let cc = props.headers().as_ref().map(cc_keys).unwrap_or_default();
    let death_keys: Vec<String> = std::iter::once(routing_key.to_owned())
        .chain(cc.iter().cloned())
        .collect();
    let routing_keys = match dead_letter_routing_key {
        Some(key) => vec![key.to_owned()],
        None => death_keys.clone(),
    };
    let properties = with_death(
        &props,
        reason,
        queue,
        exchange,
        &death_keys,
        dead_letter_routing_key.is_some(),
        now_secs,
    )?;
    Some(DeadLettered {
        properties,
        routing_keys,
    })
}

/// The routing keys a `CC` header adds (an array of strings; anything else adds none).
fn cc_keys(headers: &FieldTable) -> Vec<String> {
    match headers.inner().get("CC") {
        Some(AMQPValue::FieldArray(values)) => values.as_slice().iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}

/// The properties of a message dead-lettered from `queue`: `x-death` gains (or counts again) an
/// entry for this queue and reason, moved to the front, whose `routing-keys` are
/// `routing_keys` followed by the keys of the message's `CC` header; `x-first-death-*` are set
/// the first time; a per-message `expiration` is dropped (kept as `original-expiration`). `None`
/// when the properties cannot be decoded (the message then keeps its own). (The `CC` header
/// stays: [`dead_letter`] removes it when the queue has a dead-letter routing key.) The engine
/// goes through [`dead_letter`]; this is its x-death part on its own, for the unit tests.
#[cfg(test)]
fn properties(
    raw: &[u8],
    reason: Reason,
    queue: &str,
    exchange: &str,
    routing_keys: &[String],
    now_secs: u64,
) -> Option<Vec<u8>> {
    let (_, props) = parse_properties(raw).ok()?;
    let cc = props.headers().as_ref().map(cc_keys).unwrap_or_default();
    let keys: Vec<String> = routing_keys.iter().cloned().chain(cc).collect();
    with_death(&props, reason, queue, exchange, &keys, false, now_secs)
}

fn with_death(
    props: &AMQPProperties,
    reason: Reason,
    queue: &str,
    exchange: &str,
    routing_keys: &[String],
    remove_cc: bool,
    now_secs: u64,
) -> Option<Vec<u8>> {
    let mut headers = props.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = deaths.iter().position(|d| match d {
        AMQPValue::FieldTable(t) => {
            t.inner().get("queue").and_then(text).as_deref() == Some(queue)
                && t.inner().get("reason").and_then(text).as_deref() == Some(reason.as_str())
        }
        _ => false,
    });
    let entry = match same {
        Some(i) => {
            let AMQPValue::FieldTable(mut t) = deaths.remove(i) else {
                unreachable!("matched a table")
            };
            let count = match t.inner().get("count") {
                Some(v) => crate::queue::args::integer(v).unwrap_or(0),
                None => 0,
            };
            t.insert("count".into(), AMQPValue::LongLongInt(count + 1));
            t.insert("time".into(), AMQPValue::Timestamp(now_secs));
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert(
                "reason".into(),
                AMQPValue::LongString(reason.as_str().into()),
            );
            t.insert("queue".into(), AMQPValue::LongString(queue.into()));
            t.insert("time".into(), AMQPValue::Timestamp(now_secs));
            t.insert("exchange".into(), AMQPValue::LongString(exchange.into()));
            let keys: Vec<AMQPValue> = routing_keys
                .iter()
                .map(|k| AMQPValue::LongString(k.as_str().into()))
                .collect();
            t.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(keys)),
            );
            if let Some(exp) = props.expiration() {
                t.insert(
                    "original-expiration".into(),
                    AMQPValue::LongString(exp.as_str().into()),
                );
            }
            t
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    if remove_cc {
        let mut kept = FieldTable::default();
        for (k, v) in headers.inner() {
            if k.as_str() != "CC" {
                kept.insert(k.clone(), v.clone());
            }
        }
        headers = kept;
    }
    for (key, value) in [
        ("x-first-death-reason", reason.as_str()),
        ("x-first-death-queue", queue),
        ("x-first-death-exchange", exchange),
    ] {
        if !headers.contains_key(key) {
            headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
        }
    }
    warren_amqp::encode::encode_properties(&rebuild(props, headers)).ok()
}

/// Would dead-lettering for `reason` to `target` close a cycle? As in RabbitMQ: the message has
/// died in `target` before and no death on the way was a rejection (a client decision breaks
/// cycles; automatic ones — expiry, length limits — would loop forever).
pub fn is_cycle(headers: Option<&FieldTable>, reason: Reason, target: &str) -> bool {
    if reason == Reason::Rejected {
        return false;
    }
    let Some(AMQPValue::FieldArray(deaths)) = headers.and_then(|h| h.inner().get("x-death")) else {
        return false;
    };
    let mut seen_target = false;
    for d in deaths.as_slice() {
        let AMQPValue::FieldTable(t) = d else {
            continue;
        };
        if t.inner().get("reason").and_then(text).as_deref() == Some("rejected") {
            return false;
        }
        if t.inner().get("queue").and_then(text).as_deref() == Some(target) {
            seen_target = true;
        }
    }
    seen_target
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_amqp::encode::encode_properties;

    fn headers_of(raw: &[u8]) -> FieldTable {
        let (_, p) = parse_properties(raw).unwrap();
        p.headers().clone().unwrap()
    }

    #[test]
    fn x_death_is_added_counted_and_moved_to_front() {
        let start = encode_properties(
            &AMQPProperties::default()
                .with_expiration("5000".into())
                .with_delivery_mode(2),
        )
        .unwrap();
        let once = properties(&start, Reason::Expired, "q1", "ex", &["rk".into()], 100).unwrap();
        let (_, p) = parse_properties(&once[..]).unwrap();
        assert!(p.expiration().is_none(), "expiration is dropped");
        assert_eq!(*p.delivery_mode(), Some(2));
        let h = headers_of(&once);
        assert_eq!(
            h.inner().get("x-first-death-reason"),
            Some(&AMQPValue::LongString("expired".into()))
        );
        let twice = properties(&once, Reason::Rejected, "q2", "dlx", &["rk".into()], 101).unwrap();
        let thrice = properties(&twice, Reason::Expired, "q1", "ex", &["rk".into()], 102).unwrap();
        let h = headers_of(&thrice);
        let Some(AMQPValue::FieldArray(deaths)) = h.inner().get("x-death") else {
            panic!("no x-death")
        };
        assert_eq!(deaths.as_slice().len(), 2);
        let AMQPValue::FieldTable(first) = &deaths.as_slice()[0] else {
            panic!()
        };
        assert_eq!(
            first.inner().get("queue"),
            Some(&AMQPValue::LongString("q1".into()))
        );
        assert_eq!(first.inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(
            first.inner().get("original-expiration"),
            Some(&AMQPValue::LongString("5000".into()))
        );
        assert_eq!(
            h.inner().get("x-first-death-queue"),
            Some(&AMQPValue::LongString("q1".into()))
        );
    }

    #[test]
    fn a_dead_letter_routing_key_replaces_the_cc_keys_and_header() {
        let mut h = FieldTable::default();
        h.insert(
            "CC".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString("cc".into())])),
        );
        h.insert("other".into(), AMQPValue::LongString("x".into()));
        let start = encode_properties(&AMQPProperties::default().with_headers(h)).unwrap();
        let death_keys = |raw: &[u8]| {
            let h = headers_of(raw);
            let Some(AMQPValue::FieldArray(deaths)) = h.inner().get("x-death") else {
                panic!("no x-death")
            };
            let AMQPValue::FieldTable(first) = &deaths.as_slice()[0] else {
                panic!()
            };
            first.inner().get("routing-keys").cloned()
        };
        let both = Some(AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongString("rk".into()),
            AMQPValue::LongString("cc".into()),
        ])));

        let with = dead_letter(&start, Reason::Rejected, "q", "ex", "rk", Some("dl"), 1).unwrap();
        assert_eq!(with.routing_keys, vec!["dl".to_owned()]);
        assert!(!headers_of(&with.properties).contains_key("CC"));
        assert!(headers_of(&with.properties).contains_key("other"));
        assert_eq!(death_keys(&with.properties), both);

        let without = dead_letter(&start, Reason::Rejected, "q", "ex", "rk", None, 1).unwrap();
        assert_eq!(without.routing_keys, vec!["rk".to_owned(), "cc".to_owned()]);
        assert!(headers_of(&without.properties).contains_key("CC"));
        assert_eq!(death_keys(&without.properties), both);

        let plain = properties(&start, Reason::Rejected, "q", "ex", &["rk".into()], 1).unwrap();
        assert_eq!(death_keys(&plain), both);
    }

    #[test]
    fn cycles_are_broken_only_without_rejections() {
        let start = encode_properties(&AMQPProperties::default()).unwrap();
        let expired = properties(&start, Reason::Expired, "a", "", &[], 1).unwrap();
        let h = headers_of(&expired);
        assert!(is_cycle(Some(&h), Reason::Expired, "a"));
        assert!(!is_cycle(Some(&h), Reason::Expired, "b"));
        assert!(!is_cycle(Some(&h), Reason::Rejected, "a"));
        let rejected = properties(&expired, Reason::Rejected, "b", "", &[], 2).unwrap();
        assert!(!is_cycle(
            Some(&headers_of(&rejected)),
            Reason::Expired,
            "a"
        ));
    }
}
