//! JSON values written as Erlang terms, the way RabbitMQ's error texts show them (`~p`): strings
//! as binaries (`<<"a">>`), `true`/`false`/`null` as atoms, objects as maps, and a term that does
//! not fit on the line broken one element a line, as `io_lib_pretty` does for the common cases.

use serde_json::Value;

/// Erlang's line length for `~p`.
const LINE: usize = 80;

/// `value` as `~p` prints it when it starts at column `column`.
pub fn pretty(value: &Value, column: usize) -> String {
    let flat = flat(value);
    if column + flat.chars().count() <= LINE {
        return flat;
    }
    let (open, close, items): (&str, &str, Vec<String>) = match value {
        Value::Array(items) if !is_printable_list(items) => (
            "[",
            "]",
            items.iter().map(|v| pretty(v, column + 1)).collect(),
        ),
        _ => return flat,
    };
    broken(open, close, items, column)
}

/// A list of `{Key, Value}` pairs, as RabbitMQ shows the settings it does not know.
pub fn pretty_pairs<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a Value)>,
    column: usize,
) -> String {
    let pairs: Vec<(&str, &Value)> = pairs.collect();
    let flat_items: Vec<String> = pairs.iter().map(|(k, v)| pair(k, v)).collect();
    let flat = format!("[{}]", flat_items.join(","));
    if column + flat.chars().count() <= LINE {
        return flat;
    }
    let items = pairs
        .iter()
        .map(|(k, v)| {
            let key = binary(k);
            let one = pair(k, v);
            if column + 1 + one.chars().count() <= LINE {
                one
            } else {
                // The tuple broken too: its value under its key.
                broken("{", "}", vec![key, pretty(v, column + 2)], column + 1)
            }
        })
        .collect();
    broken("[", "]", items, column)
}

/// A tuple of a string and an integer (`{"missing )",1}`), as regular-expression errors show.
pub fn pretty_error_tuple(text: &str, at: usize, column: usize) -> String {
    let quoted = string(text);
    let flat = format!("{{{quoted},{at}}}");
    if column + flat.chars().count() <= LINE {
        return flat;
    }
    broken("{", "}", vec![quoted, at.to_string()], column)
}

fn broken(open: &str, close: &str, items: Vec<String>, column: usize) -> String {
    let separator = format!(",\n{}", " ".repeat(column + 1));
    format!("{open}{}{close}", items.join(&separator))
}

fn pair(key: &str, value: &Value) -> String {
    format!("{{{},{}}}", binary(key), flat(value))
}

/// `value` on one line.
pub fn flat(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => float(f),
            _ => n.to_string(),
        },
        Value::String(s) => binary(s),
        Value::Array(items) if is_printable_list(items) => {
            let text: String = items
                .iter()
                .filter_map(|v| v.as_u64().and_then(|c| char::from_u32(c as u32)))
                .collect();
            string(&text)
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(flat).collect();
            format!("[{}]", parts.join(","))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} => {}", binary(k), flat(v)))
                .collect();
            format!("#{{{}}}", parts.join(","))
        }
    }
}

/// A JSON string as the Erlang binary it decodes to.
fn binary(s: &str) -> String {
    let printable = s.chars().all(|c| {
        !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0b' | '\x08' | '\x0c' | '\x1b')
    });
    if printable {
        format!("<<{}>>", string(s))
    } else {
        let bytes: Vec<String> = s.bytes().map(|b| b.to_string()).collect();
        format!("<<{}>>", bytes.join(","))
    }
}

/// A quoted Erlang string.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x1b' => out.push_str("\\e"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Erlang prints a list of character codes as a string (`[104,105]` is `"hi"`): printable Latin-1
/// with the usual escapes, under the default `+pc latin1`.
fn is_printable_list(items: &[Value]) -> bool {
    !items.is_empty()
        && items.iter().all(|v| {
            v.as_u64()
                .is_some_and(|c| matches!(c, 32..=126 | 160..=255 | 8..=13 | 27))
        })
}

/// A float as Erlang's shortest round-trip form: `1.5`, `1.0e10`, `-0.25` (the shorter of the
/// plain and the scientific notation, plain when they tie).
fn float(f: f64) -> String {
    let sci = format!("{f:e}");
    let Some((mantissa, exponent)) = sci.split_once('e') else {
        return sci;
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return sci;
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let scientific = {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        format!("{sign}{first}.{rest}e{exponent}")
    };
    let plain = {
        let point = exponent + 1;
        if point <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!(
                "{sign}{digits}{}.0",
                "0".repeat(point as usize - digits.len())
            )
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{sign}{int}.{frac}")
        }
    };
    if scientific.len() < plain.len() {
        scientific
    } else {
        plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_print_as_rabbitmq_shows_them() {
        assert_eq!(flat(&json!("bar")), r#"<<"bar">>"#);
        assert_eq!(flat(&json!(-1)), "-1");
        assert_eq!(flat(&json!(1.5)), "1.5");
        assert_eq!(flat(&json!(1e10)), "1.0e10");
        assert_eq!(flat(&json!(-0.25)), "-0.25");
        assert_eq!(flat(&json!(100.0)), "100.0");
        assert_eq!(flat(&json!(0.1)), "0.1");
        assert_eq!(flat(&json!(true)), "true");
        assert_eq!(flat(&json!(null)), "null");
        assert_eq!(flat(&json!([1])), "[1]");
        assert_eq!(flat(&json!([104, 105])), r#""hi""#);
        assert_eq!(
            flat(&json!({"b": [1, 2.5, null, false]})),
            r#"#{<<"b">> => [1,2.5,null,false]}"#
        );
        assert_eq!(flat(&json!("a\"b")), r#"<<"a\"b">>"#);
    }

    #[test]
    fn long_lists_break_one_element_a_line() {
        // As RabbitMQ 3.10 answered for these unknown keys.
        let v = json!({"a": {"b": [1, 2.5, null, false]}, "c": 1e10, "d": -0.25, "e": "é<"});
        let map = v.as_object().unwrap();
        assert_eq!(
            pretty_pairs(map.iter().map(|(k, v)| (k.as_str(), v)), 0),
            "[{<<\"a\">>,#{<<\"b\">> => [1,2.5,null,false]}},\n {<<\"c\">>,1.0e10},\n {<<\"d\">>,-0.25},\n {<<\"e\">>,<<\"é<\">>}]"
        );
        let v = json!({"foo": "bar", "zoo": 1});
        let map = v.as_object().unwrap();
        assert_eq!(
            pretty_pairs(map.iter().map(|(k, v)| (k.as_str(), v)), 0),
            r#"[{<<"foo">>,<<"bar">>},{<<"zoo">>,1}]"#
        );
        assert_eq!(
            pretty_error_tuple("missing terminating ] for character class", 3, 53),
            format!(
                "{{\"missing terminating ] for character class\",\n{}3}}",
                " ".repeat(54)
            )
        );
        assert_eq!(pretty_error_tuple("missing )", 1, 53), r#"{"missing )",1}"#);
    }
}
