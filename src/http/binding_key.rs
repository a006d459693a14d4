//! A binding's key in URLs (`properties_key`), formed as RabbitMQ's `pack_binding_props/2`: the
//! routing key quoted as a query value (`quote_plus`, with `~` escaped), `~` when it is empty,
//! then `~` and a hash of the arguments when there are any. Read back as its `unpack/3` does:
//! split at `~`, the key unquoted, the hash compared with each candidate binding's.
//!
//! The hash is not RabbitMQ's (`erlang:phash2` of its argument list, base64url): six characters
//! from SHA-256 of the arguments as JSON, which stays the same across builds and restarts, so a
//! key listed once names the same binding later. Clients take keys from listings, never make them.

use base64::Engine as _;
use sha2::Digest as _;
use warren_amqp::types::FieldTable;

use crate::definitions::json::table_to_json;

/// RabbitMQ's `rabbit_http_util:quote_plus`: letters, digits and `.-~_` as they are, a space as
/// `+`, every other octet `%XX`.
pub fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'~' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `quote_plus`, then `~` as `%7E` (the key's separator).
fn quote_binding(s: &str) -> String {
    quote_plus(s).replace('~', "%7E")
}

/// RabbitMQ's `unquote`: `+` is a space, `%XX` an octet; a malformed escape stays as it is.
pub fn unquote(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The hash of a binding's arguments in its key.
pub fn args_hash(arguments: &FieldTable) -> String {
    let digest = sha2::Sha256::digest(table_to_json(arguments).to_string().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..4])
}

/// A binding's `properties_key`.
pub fn properties_key(routing_key: &str, arguments: &FieldTable) -> String {
    match (routing_key.is_empty(), arguments.inner().is_empty()) {
        (true, true) => "~".to_owned(),
        (false, true) => quote_binding(routing_key),
        _ => format!(
            "{}~{}",
            quote_binding(routing_key),
            quote_binding(&args_hash(arguments))
        ),
    }
}

/// A `properties_key` read back: the routing key, and the arguments' hash when there is one.
/// More than one `~` is RabbitMQ's `too_many_tokens`.
pub fn unpack(props: &str) -> Result<(String, Option<String>), String> {
    let parts: Vec<&str> = props.split('~').collect();
    match parts.as_slice() {
        [key] => Ok((unquote(key), None)),
        ["", ""] => Ok((String::new(), None)),
        [key, hash] => Ok((unquote(key), Some(unquote(hash)))),
        _ => Err(format!("{{too_many_tokens,\"{props}\"}}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_amqp::types::{AMQPValue, LongString};

    #[test]
    fn keys_are_formed_and_read_back_as_rabbitmq_does() {
        let none = FieldTable::default();
        // Seen on RabbitMQ 3.10.8 for these routing keys.
        assert_eq!(properties_key("", &none), "~");
        assert_eq!(properties_key("a.b c~d/é", &none), "a.b+c%7Ed%2F%C3%A9");
        assert_eq!(properties_key("r", &none), "r");
        assert_eq!(unpack("~"), Ok((String::new(), None)));
        assert_eq!(unpack("a.b+c%7Ed%2F%C3%A9"), Ok(("a.b c~d/é".into(), None)));
        let mut args = FieldTable::default();
        args.insert("x".into(), AMQPValue::LongString(LongString::from("y")));
        let key = properties_key("k", &args);
        let (rk, hash) = unpack(&key).unwrap();
        assert_eq!((rk.as_str(), hash), ("k", Some(args_hash(&args))));
        assert_eq!(properties_key("", &args), format!("~{}", args_hash(&args)));
        assert!(unpack("a~b~c").is_err());
        assert_eq!(unquote("%zz+%41"), "%zz A");
    }
}
