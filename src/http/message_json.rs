//! Messages as the management API shows and takes them (`rabbit_mgmt_format:basic_properties/1`
//! and `to_basic_properties/1`): basic properties as a JSON object, payloads as UTF-8 text or
//! base64. Apart from the handlers because publish and get share the mapping.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use warren_amqp::protocol::basic::{parse_properties, AMQPProperties};
use warren_amqp::types::ShortString;

use super::api::ApiError;
use crate::definitions::json::{table_from_json, table_to_json};

fn bad(reason: Value) -> ApiError {
    ApiError::BadRequest(reason)
}

/// A short-string property: strings only, at most 255 octets.
fn short(key: &str, v: &Value) -> Result<ShortString, ApiError> {
    match v {
        Value::String(s) if s.len() <= 255 => Ok(ShortString::from(s.clone())),
        Value::String(_) => Err(bad(json!(["too_long", key]))),
        _ => Err(bad(json!(["not_string", key]))),
    }
}

/// An integer property, with RabbitMQ's `not_int` refusal.
fn int<T: TryFrom<i64>>(key: &str, v: &Value) -> Result<T, ApiError> {
    v.as_i64()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| bad(json!(["not_int", key])))
}

/// The `properties` of a publish, as the AMQP properties it sets. Unknown keys are ignored, as
/// RabbitMQ ignores them.
pub fn properties_from_json(props: &Value) -> Result<AMQPProperties, ApiError> {
    let map = match props {
        Value::Object(map) => map,
        // RabbitMQ's web UI sends `[]` for none.
        Value::Array(a) if a.is_empty() => return Ok(AMQPProperties::default()),
        _ => return Err(bad(json!("properties must be a JSON object"))),
    };
    let mut p = AMQPProperties::default();
    for (key, v) in map {
        if v.is_null() {
            continue;
        }
        p = match key.as_str() {
            "content_type" => p.with_content_type(short(key, v)?),
            "content_encoding" => p.with_content_encoding(short(key, v)?),
            "headers" => p.with_headers(
                table_from_json(v).map_err(|e| bad(json!(["invalid_headers", e.to_string()])))?,
            ),
            "delivery_mode" => p.with_delivery_mode(int(key, v)?),
            "priority" => p.with_priority(int(key, v)?),
            "correlation_id" => p.with_correlation_id(short(key, v)?),
            "reply_to" => p.with_reply_to(short(key, v)?),
            "expiration" => p.with_expiration(short(key, v)?),
            "message_id" => p.with_message_id(short(key, v)?),
            "timestamp" => p.with_timestamp(int(key, v)?),
            "type" => p.with_type(short(key, v)?),
            "user_id" => p.with_user_id(short(key, v)?),
            "app_id" => p.with_app_id(short(key, v)?),
            "cluster_id" => p.with_cluster_id(short(key, v)?),
            _ => p,
        };
    }
    Ok(p)
}

/// Encoded properties as RabbitMQ's get shows them: only those set, and `[]` (an empty Erlang
/// property list) when none is.
pub fn properties_to_json(raw: &[u8]) -> Value {
    let Ok((_, p)) = parse_properties(raw) else {
        return json!([]);
    };
    let mut out = Map::new();
    let mut text = |key: &str, v: &Option<ShortString>| {
        if let Some(s) = v {
            out.insert(key.to_owned(), json!(s.as_str()));
        }
    };
    text("content_type", p.content_type());
    text("content_encoding", p.content_encoding());
    text("correlation_id", p.correlation_id());
    text("reply_to", p.reply_to());
    text("expiration", p.expiration());
    text("message_id", p.message_id());
    text("type", p.kind());
    text("user_id", p.user_id());
    text("app_id", p.app_id());
    text("cluster_id", p.cluster_id());
    if let Some(h) = p.headers() {
        out.insert("headers".into(), table_to_json(h));
    }
    if let Some(m) = p.delivery_mode() {
        out.insert("delivery_mode".into(), json!(m));
    }
    if let Some(n) = p.priority() {
        out.insert("priority".into(), json!(n));
    }
    if let Some(t) = p.timestamp() {
        out.insert("timestamp".into(), json!(t));
    }
    if out.is_empty() {
        json!([])
    } else {
        Value::Object(out)
    }
}

/// A publish's payload: `string` (as is) or `base64`.
pub fn payload_from_json(payload: &str, encoding: &Value) -> Result<Vec<u8>, ApiError> {
    match encoding.as_str() {
        Some("string") => Ok(payload.as_bytes().to_vec()),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|_| bad(json!(["not_base64", payload]))),
        _ => Err(bad(json!(["unsupported_encoding", encoding]))),
    }
}

/// How a get shows payloads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PayloadEncoding {
    /// Text when the (truncated) payload is UTF-8, base64 otherwise.
    Auto,
    Base64,
}

/// A got payload, cut to `truncate` octets first: `(payload, payload_encoding)`.
pub fn payload_to_json(
    body: &[u8],
    truncate: Option<usize>,
    encoding: PayloadEncoding,
) -> (Value, &'static str) {
    let body = match truncate {
        Some(n) if n < body.len() => &body[..n],
        _ => body,
    };
    match (encoding, std::str::from_utf8(body)) {
        (PayloadEncoding::Auto, Ok(text)) => (json!(text), "string"),
        _ => (
            json!(base64::engine::general_purpose::STANDARD.encode(body)),
            "base64",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_amqp::encode::encode_properties;

    #[test]
    fn properties_round_trip_and_none_shows_as_an_empty_list() {
        let json = json!({
            "content_type": "text/plain", "delivery_mode": 2, "priority": 3, "timestamp": 5,
            "headers": {"a": "b", "n": 1}, "type": "t", "message_id": "m",
        });
        let p = properties_from_json(&json).unwrap();
        let raw = encode_properties(&p).unwrap();
        assert_eq!(properties_to_json(&raw), json);
        let none = encode_properties(&AMQPProperties::default()).unwrap();
        assert_eq!(properties_to_json(&none), json!([]));
        assert!(properties_from_json(&json!({"priority": "a"})).is_err());
        assert!(properties_from_json(&json!({"delivery_mode": 300})).is_err());
        assert!(properties_from_json(&json!({"app_id": 1})).is_err());
    }

    #[test]
    fn payloads_are_text_when_they_can_be() {
        assert_eq!(
            payload_to_json("ÿ\u{1}".as_bytes(), None, PayloadEncoding::Auto),
            (json!("ÿ\u{1}"), "string")
        );
        // Cut inside a character: no longer UTF-8, so base64 (as RabbitMQ shows it).
        assert_eq!(
            payload_to_json("ÿ\u{1}".as_bytes(), Some(1), PayloadEncoding::Auto),
            (json!("ww=="), "base64")
        );
        assert_eq!(payload_from_json("aGk=", &json!("base64")).unwrap(), b"hi");
        assert!(payload_from_json("!!", &json!("base64")).is_err());
        assert!(payload_from_json("x", &json!("foo")).is_err());
    }
}
