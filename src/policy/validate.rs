//! A policy as the management API receives it (`PUT /api/policies/{vhost}/{name}`, and the same
//! shape in a definitions file), checked as RabbitMQ 3.10 checks it, with its error texts: first
//! the body (JSON, `pattern` and `definition` present), then every field at once (`Validation
//! failed` with one line per bad field: definition, apply-to, pattern, priority), the definition's
//! keys in order with the first bad value reported, and keys no validator knows last.
//!
//! Where RabbitMQ crashes with a 500 (a definition that is not an object, an `apply-to` or a
//! `max-age` of the wrong type) this refuses with a 400 and the text RabbitMQ's own validation
//! would have used.

use serde_json::{Map, Number, Value};
use thiserror::Error;

use super::erlang;
use super::{ApplyTo, Definition, PolicyDefinition, PolicyKind};

/// Why a policy was refused: each is a 400 whose reason is [`PolicyError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("not_json")]
    NotJson,
    #[error("invalid payload: the request body JSON-decoded to a string. Is the input doubly-JSON-encoded?")]
    DoublyEncoded,
    /// `pattern` and/or `definition` missing.
    #[error("{}", missing_text(.0))]
    KeysMissing(Vec<&'static str>),
    /// One line per bad field.
    #[error("{}", validation_text(.0))]
    Invalid(Vec<String>),
}

fn missing_text(keys: &[&str]) -> String {
    let items: Vec<String> = keys
        .iter()
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    format!("[{}]", items.join(","))
}

fn validation_text(lines: &[String]) -> String {
    let mut out = String::from("Validation failed\n\n");
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl PolicyError {
    /// The `reason` of the 400: RabbitMQ escapes HTML in user policies' texts (not in operator
    /// policies').
    pub fn reason(&self, kind: PolicyKind) -> String {
        let text = self.to_string();
        match kind {
            PolicyKind::User => escape_html(&text),
            PolicyKind::Operator => text,
        }
    }
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The keys a user policy may set (RabbitMQ 3.10's core validators), and what each takes. The
/// classic mirroring keys (`ha-*`) are taken and kept, with no effect (Warren replicates with
/// quorum queues instead), so that definitions from RabbitMQ 3.x import unchanged.
const USER_KEYS: [&str; 24] = [
    "alternate-exchange",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "dead-letter-strategy",
    "delivery-limit",
    "expires",
    "ha-mode",
    "ha-params",
    "ha-promote-on-failure",
    "ha-promote-on-shutdown",
    "ha-sync-batch-size",
    "ha-sync-mode",
    "initial-cluster-size",
    "max-age",
    "max-in-memory-bytes",
    "max-in-memory-length",
    "max-length",
    "max-length-bytes",
    "message-ttl",
    "overflow",
    "queue-leader-locator",
    "queue-mode",
    "queue-version",
    "stream-max-segment-size-bytes",
];

/// The keys an operator policy may set: limits, merged with a user policy's by taking the smaller.
const OPERATOR_KEYS: [&str; 7] = [
    "delivery-limit",
    "expires",
    "max-in-memory-bytes",
    "max-in-memory-length",
    "max-length",
    "max-length-bytes",
    "message-ttl",
];

/// RabbitMQ's largest stream segment.
const MAX_STREAM_SEGMENT_SIZE: u64 = 3_000_000_000;

/// A policy from a request body: parsed, checked, and nothing half-taken.
pub fn parse_policy(
    kind: PolicyKind,
    name: &str,
    body: &[u8],
) -> Result<PolicyDefinition, PolicyError> {
    policy_from_json(kind, name, &decode(body)?)
}

/// The body as RabbitMQ's management API decodes it: empty, `null` and other atoms are `{}`.
fn decode(body: &[u8]) -> Result<Map<String, Value>, PolicyError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null | Value::Bool(_)) => Ok(Map::new()),
        Ok(Value::String(_)) => Err(PolicyError::DoublyEncoded),
        _ => Err(PolicyError::NotJson),
    }
}

/// A policy from its JSON object (`pattern`, `definition`, and optionally `priority` and
/// `apply-to`; other keys are ignored, as RabbitMQ does): the API's body, or an entry of a
/// definitions file.
pub fn policy_from_json(
    kind: PolicyKind,
    name: &str,
    body: &Map<String, Value>,
) -> Result<PolicyDefinition, PolicyError> {
    let missing: Vec<&'static str> = ["pattern", "definition"]
        .into_iter()
        .filter(|k| body.get(*k).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(PolicyError::KeysMissing(missing));
    }
    let definition = check_definition(kind, &body["definition"]);
    let apply_to = check_apply_to(body.get("apply-to"));
    let pattern = check_pattern(&body["pattern"]);
    let priority = check_priority(body.get("priority"));
    match (definition, apply_to, pattern, priority) {
        (Ok(definition), Ok(apply_to), Ok(pattern), Ok(priority)) => Ok(PolicyDefinition {
            name: name.to_owned(),
            kind,
            pattern,
            apply_to,
            priority,
            definition,
        }),
        (definition, apply_to, pattern, priority) => Err(PolicyError::Invalid(
            [
                definition.err(),
                apply_to.err(),
                pattern.err(),
                priority.err(),
            ]
            .into_iter()
            .flatten()
            .collect(),
        )),
    }
}

fn check_priority(v: Option<&Value>) -> Result<Number, String> {
    match v {
        None => Ok(Number::from(0)),
        Some(Value::Number(n)) => Ok(n.clone()),
        Some(other) => Err(format!(
            "priority should be a number, actually was {}",
            erlang::flat(other)
        )),
    }
}

fn check_apply_to(v: Option<&Value>) -> Result<ApplyTo, String> {
    let unrecognised = |shown: &str| {
        format!("apply-to '{shown}' unrecognised; should be 'queues', 'exchanges' or 'all'")
    };
    match v {
        None => Ok(ApplyTo::All),
        Some(Value::String(s)) => ApplyTo::parse(s).ok_or_else(|| unrecognised(s)),
        Some(other) => Err(unrecognised(&erlang::flat(other))),
    }
}

fn check_pattern(v: &Value) -> Result<String, String> {
    const INVALID: &str = "pattern should be regular expression but is invalid: ";
    let Value::String(pattern) = v else {
        return Err(format!(
            "pattern should be a binary but was {}",
            erlang::flat(v)
        ));
    };
    match regex::Regex::new(pattern) {
        Ok(_) => Ok(pattern.clone()),
        Err(e) => {
            let (text, at) = pcre_error(pattern, &e);
            Err(format!(
                "{INVALID}{}",
                erlang::pretty_error_tuple(&text, at, INVALID.len())
            ))
        }
    }
}

/// The error PCRE (RabbitMQ's `re`) gives for a pattern this broker's regex engine refused, for
/// the common mistakes; the engine's own words otherwise.
fn pcre_error(pattern: &str, e: &regex::Error) -> (String, usize) {
    use regex_syntax::ast::ErrorKind as K;
    let end = pattern.len();
    let Err(ast) = regex_syntax::ast::parse::Parser::new().parse(pattern) else {
        let text = e.to_string();
        let first = text.lines().last().unwrap_or_default().trim();
        return (first.trim_start_matches("error: ").to_owned(), 0);
    };
    let span = ast.span();
    let (start, last) = (span.start.offset, span.end.offset.saturating_sub(1));
    match ast.kind() {
        K::GroupUnclosed => ("missing )".into(), end),
        K::GroupUnopened => ("unmatched parentheses".into(), start),
        K::ClassUnclosed => ("missing terminating ] for character class".into(), end),
        K::RepetitionMissing => ("nothing to repeat".into(), start),
        K::ClassRangeInvalid => ("range out of order in character class".into(), last),
        K::EscapeUnexpectedEof => ("\\ at end of pattern".into(), end),
        K::RepetitionCountInvalid => ("numbers out of order in {} quantifier".into(), last),
        K::GroupNameUnexpectedEof => (
            "syntax error in subpattern name (missing terminator)".into(),
            end,
        ),
        other => (other.to_string(), start),
    }
}

fn check_definition(kind: PolicyKind, v: &Value) -> Result<Definition, String> {
    let Value::Object(map) = v else {
        return Err(format!(
            "definition must be a dictionary: {}",
            erlang::flat(v)
        ));
    };
    if map.is_empty() {
        return Err("no policy provided".into());
    }
    let known: &[&str] = match kind {
        PolicyKind::User => &USER_KEYS,
        PolicyKind::Operator => &OPERATOR_KEYS,
    };
    // In key order (serde_json's map is sorted, as Erlang's small maps are): the first bad value
    // of a known key is the answer, then the keys nobody knows.
    for (key, value) in map.iter().filter(|(k, _)| known.contains(&k.as_str())) {
        check_value(key, value)?;
    }
    let unknown: Vec<(&str, &Value)> = map
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "{} are not recognised policy settings",
            erlang::pretty_pairs(unknown.into_iter(), 0)
        ));
    }
    Ok(map.clone())
}

/// One key's value, as `rabbit_policies:validate_policy0` checks it.
fn check_value(key: &str, value: &Value) -> Result<(), String> {
    let integer_at_least = |min: i64| match value {
        // (Integers beyond i64 are large positive ones.)
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i >= min,
            (None, Some(_)) => true,
            _ => false,
        },
        _ => false,
    };
    let one_of = |options: &[&str]| value.as_str().is_some_and(|s| options.contains(&s));
    let (ok, what) = match key {
        "alternate-exchange" => (value.is_string(), "a valid alternate exchange name"),
        "dead-letter-exchange" => (value.is_string(), "a valid dead letter exchange name"),
        "dead-letter-routing-key" => (value.is_string(), "a valid dead letter routing key"),
        "dead-letter-strategy" => (
            one_of(&["at-most-once", "at-least-once"]),
            "a valid dead letter strategy",
        ),
        "message-ttl" => (integer_at_least(0), "a valid message TTL"),
        "expires" => (integer_at_least(1), "a valid queue expiry"),
        "max-length" => (integer_at_least(0), "a valid maximum length"),
        "max-length-bytes" => (integer_at_least(0), "a valid maximum length in bytes"),
        // (RabbitMQ's text for both.)
        "max-in-memory-length" | "max-in-memory-bytes" => {
            (integer_at_least(0), "a valid maximum memory in bytes")
        }
        "queue-mode" => (one_of(&["default", "lazy"]), "a valid queue-mode value"),
        "queue-version" => (
            matches!(value.as_u64(), Some(1 | 2)) && !value.is_f64(),
            "a valid queue-version value",
        ),
        "overflow" => (
            one_of(&["drop-head", "reject-publish", "reject-publish-dlx"]),
            "a valid overflow value",
        ),
        "delivery-limit" => (integer_at_least(0), "a valid delivery limit"),
        "max-age" => (value.as_str().is_some_and(valid_max_age), "a valid max age"),
        "queue-leader-locator" => (
            one_of(&["client-local", "balanced", "random", "least-leaders"]),
            "a valid queue leader locator value",
        ),
        "initial-cluster-size" => (integer_at_least(0), "a valid cluster size"),
        "ha-mode" => (
            one_of(&["all", "exactly", "nodes"]),
            "a valid ha-mode value",
        ),
        "ha-params" => (
            integer_at_least(1)
                || value
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string)),
            "a valid ha-params value",
        ),
        "ha-sync-mode" => (
            one_of(&["manual", "automatic"]),
            "a valid ha-sync-mode value",
        ),
        "ha-sync-batch-size" => (integer_at_least(1), "a valid ha-sync-batch-size value"),
        "ha-promote-on-shutdown" | "ha-promote-on-failure" => (
            one_of(&["when-synced", "always"]),
            "a valid ha-promote-on-shutdown or ha-promote-on-failure value",
        ),
        "stream-max-segment-size-bytes" => (
            integer_at_least(0) && value.as_u64().is_some_and(|n| n <= MAX_STREAM_SEGMENT_SIZE),
            "a valid segment size",
        ),
        _ => (false, "a known setting"),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{} is not {what}", erlang::flat(value)))
    }
}

/// `max-age`: a positive number and a unit, `Y`, `M`, `D`, `h`, `m` or `s` (`7D`).
fn valid_max_age(s: &str) -> bool {
    parse_age(s).is_some()
}

/// An age or interval as RabbitMQ writes them for streams (`x-max-age`, `x-stream-offset`): a
/// positive count and one of the units `Y` (365 days), `M` (30 days), `D`, `h`, `m`, `s`; in
/// milliseconds.
pub fn parse_age(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (count, unit) = text.split_at(digits);
    let count: u64 = count.parse().ok().filter(|n| *n > 0)?;
    let unit_ms: u64 = match unit {
        "Y" => 365 * 86_400_000,
        "M" => 30 * 86_400_000,
        "D" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1000,
        _ => return None,
    };
    Some(count.saturating_mul(unit_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(body: &str) -> Result<PolicyDefinition, String> {
        parse_policy(PolicyKind::User, "p", body.as_bytes()).map_err(|e| e.reason(PolicyKind::User))
    }

    fn operator(body: &str) -> Result<PolicyDefinition, String> {
        parse_policy(PolicyKind::Operator, "p", body.as_bytes())
            .map_err(|e| e.reason(PolicyKind::Operator))
    }

    fn failed(line: &str) -> Result<PolicyDefinition, String> {
        Err(format!("Validation failed\n\n{line}\n"))
    }

    #[test]
    fn a_good_policy_takes_defaults_for_what_it_leaves_out() {
        let p = user(r#"{"pattern":"^q\\.","definition":{"message-ttl":1000},"extra":1}"#).unwrap();
        assert_eq!(p.pattern, "^q\\.");
        assert_eq!(p.apply_to, ApplyTo::All);
        assert_eq!(p.priority, Number::from(0));
        assert_eq!(
            Value::Object(p.definition),
            serde_json::json!({"message-ttl": 1000})
        );
        let p = user(r#"{"pattern":"x","definition":{"max-age":"10D","queue-leader-locator":"balanced"},"priority":1.5,"apply-to":"exchanges"}"#).unwrap();
        assert_eq!(p.apply_to, ApplyTo::Exchanges);
        assert_eq!(p.priority_value(), 1.5);
    }

    /// Texts RabbitMQ 3.10.8 answered with (HTML-escaped for user policies).
    #[test]
    fn bad_input_is_refused_with_rabbitmqs_texts() {
        assert_eq!(user("not json"), Err("not_json".into()));
        assert_eq!(user("[1,2]"), Err("not_json".into()));
        assert_eq!(
            user(r#""str""#),
            Err("invalid payload: the request body JSON-decoded to a string. Is the input doubly-JSON-encoded?".into())
        );
        for body in ["", "{}", "null"] {
            assert_eq!(
                user(body),
                Err("[{key_missing,pattern},{key_missing,definition}]".into())
            );
        }
        assert_eq!(
            user(r#"{"pattern":"x"}"#),
            Err("[{key_missing,definition}]".into())
        );
        assert_eq!(
            user(r#"{"pattern":"x","definition":{"foo":"bar","message-ttl":5}}"#),
            failed("[{&lt;&lt;\"foo\"&gt;&gt;,&lt;&lt;\"bar\"&gt;&gt;}] are not recognised policy settings")
        );
        assert_eq!(
            user(r#"{"pattern":"x","definition":{"foo":"bar","zoo":1}}"#),
            failed("[{&lt;&lt;\"foo\"&gt;&gt;,&lt;&lt;\"bar\"&gt;&gt;},{&lt;&lt;\"zoo\"&gt;&gt;,1}] are not recognised policy settings")
        );
        let cases = [
            (r#"{"message-ttl":-1}"#, "-1 is not a valid message TTL"),
            (
                r#"{"message-ttl":"5"}"#,
                "&lt;&lt;\"5\"&gt;&gt; is not a valid message TTL",
            ),
            (r#"{"message-ttl":1.5}"#, "1.5 is not a valid message TTL"),
            (r#"{"expires":0}"#, "0 is not a valid queue expiry"),
            (r#"{"max-length":-2}"#, "-2 is not a valid maximum length"),
            (
                r#"{"max-length-bytes":"a"}"#,
                "&lt;&lt;\"a\"&gt;&gt; is not a valid maximum length in bytes",
            ),
            (
                r#"{"overflow":"nope"}"#,
                "&lt;&lt;\"nope\"&gt;&gt; is not a valid overflow value",
            ),
            (
                r#"{"dead-letter-exchange":5}"#,
                "5 is not a valid dead letter exchange name",
            ),
            (
                r#"{"dead-letter-routing-key":true}"#,
                "true is not a valid dead letter routing key",
            ),
            (
                r#"{"delivery-limit":-1}"#,
                "-1 is not a valid delivery limit",
            ),
            (
                r#"{"alternate-exchange":[1]}"#,
                "[1] is not a valid alternate exchange name",
            ),
            (
                r#"{"queue-mode":"fast"}"#,
                "&lt;&lt;\"fast\"&gt;&gt; is not a valid queue-mode value",
            ),
            (
                r#"{"max-age":"1X"}"#,
                "&lt;&lt;\"1X\"&gt;&gt; is not a valid max age",
            ),
            (
                r#"{"queue-leader-locator":"x"}"#,
                "&lt;&lt;\"x\"&gt;&gt; is not a valid queue leader locator value",
            ),
            // The first bad key in key order is the one reported.
            (
                r#"{"message-ttl":-1,"expires":0}"#,
                "0 is not a valid queue expiry",
            ),
            (r#"{}"#, "no policy provided"),
        ];
        for (definition, line) in cases {
            let body = format!(r#"{{"pattern":"x","definition":{definition}}}"#);
            assert_eq!(user(&body), failed(line), "{definition}");
        }
        assert_eq!(
            user(r#"{"pattern":"(","definition":{"message-ttl":5}}"#),
            failed("pattern should be regular expression but is invalid: {\"missing )\",1}")
        );
        assert_eq!(
            user(r#"{"pattern":"é(","definition":{"message-ttl":5}}"#),
            failed("pattern should be regular expression but is invalid: {\"missing )\",3}")
        );
        assert_eq!(
            user(r#"{"pattern":"*a","definition":{"message-ttl":5}}"#),
            failed(
                "pattern should be regular expression but is invalid: {\"nothing to repeat\",0}"
            )
        );
        assert_eq!(
            user(r#"{"pattern":5,"definition":{"message-ttl":5}}"#),
            failed("pattern should be a binary but was 5")
        );
        assert_eq!(
            user(r#"{"pattern":"x","definition":{"message-ttl":5},"apply-to":"classic_queues"}"#),
            failed(
                "apply-to 'classic_queues' unrecognised; should be 'queues', 'exchanges' or 'all'"
            )
        );
        assert_eq!(
            user(r#"{"pattern":"x","definition":{"message-ttl":5},"priority":"7"}"#),
            failed("priority should be a number, actually was &lt;&lt;\"7\"&gt;&gt;")
        );
        assert_eq!(
            user(r#"{"pattern":"x","definition":{"message-ttl":5},"priority":null}"#),
            failed("priority should be a number, actually was null")
        );
        // Every bad field at once, in RabbitMQ's order.
        assert_eq!(
            user(r#"{"pattern":"(","definition":{"message-ttl":-5},"priority":"a","apply-to":"x"}"#),
            Err("Validation failed\n\n-5 is not a valid message TTL\napply-to 'x' unrecognised; should be 'queues', 'exchanges' or 'all'\npattern should be regular expression but is invalid: {\"missing )\",1}\npriority should be a number, actually was &lt;&lt;\"a\"&gt;&gt;\n".into())
        );
    }

    #[test]
    fn operator_policies_take_only_limits_and_are_not_escaped() {
        let p = operator(r#"{"pattern":"x","definition":{"delivery-limit":3,"max-length":2,"max-length-bytes":100,"expires":1000,"message-ttl":5}}"#).unwrap();
        assert_eq!(p.kind, PolicyKind::Operator);
        assert_eq!(
            operator(r#"{"pattern":"x","definition":{"dead-letter-exchange":"a"}}"#),
            failed("[{<<\"dead-letter-exchange\">>,<<\"a\">>}] are not recognised policy settings")
        );
        assert_eq!(
            operator(r#"{"pattern":"x","definition":{"message-ttl":-5}}"#),
            failed("-5 is not a valid message TTL")
        );
    }

    #[test]
    fn max_age_takes_a_positive_number_and_a_unit() {
        for ok in ["1Y", "10D", "5h", "30m", "20s", "2M"] {
            assert!(valid_max_age(ok), "{ok}");
        }
        for bad in ["", "Y", "0D", "1X", "1d", "-1D", "1.5D", "D1"] {
            assert!(!valid_max_age(bad), "{bad}");
        }
    }
}
