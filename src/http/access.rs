//! Who may change what through the management API, and how refusals read: RabbitMQ's plugin
//! answers a write only for a management user who is an administrator or has permissions in the
//! vhost (`is_authorized_vhost`), then runs the change as an AMQP method on that user's behalf,
//! so the same configure / write / read checks apply. Its answers to a refused or failed method
//! depend on the path it took: a "direct request" (declare, delete, bind, purge) says
//! `Access refused.`; a method on a channel of its own (get, publish) gives the AMQP reply text.

use std::sync::Arc;

use axum::body::Bytes;
use serde_json::{json, Map, Value};
use warren_amqp::{AmqpError, ReplyCode};

use super::api::ApiError;
use crate::auth::Access;
use crate::broker::Broker;
use crate::vhost::Vhost;

/// RabbitMQ's `is_authorized_vhost`: an administrator, or a user with permissions in the vhost.
/// A vhost that does not exist passes, so that the request is answered 404 after.
pub(super) fn authorise_vhost(broker: &Broker, user: &str, vhost: &str) -> Result<(), ApiError> {
    let admin = broker.users.tags(user).iter().any(|t| t == "administrator");
    if admin || broker.vhost(vhost).is_none() || broker.users.may_use_vhost(user, vhost) {
        Ok(())
    } else {
        Err(ApiError::NotAuthorised(
            "User not authorised to access virtual host",
        ))
    }
}

/// The vhost a write names, once the user may use it: 404 `vhost_not_found` (the answer of
/// RabbitMQ's writes; its reads answer a plain 404).
pub(super) fn write_vhost(broker: &Broker, user: &str, name: &str) -> Result<Arc<Vhost>, ApiError> {
    authorise_vhost(broker, user, name)?;
    broker
        .vhost(name)
        .ok_or_else(|| ApiError::NotFoundBecause("vhost_not_found".into()))
}

/// The vhost a read or a `DELETE` names, once the user may use it: 404 as for a missing object.
pub(super) fn read_vhost(broker: &Broker, user: &str, name: &str) -> Result<Arc<Vhost>, ApiError> {
    authorise_vhost(broker, user, name)?;
    broker.vhost(name).ok_or(ApiError::NotFound)
}

/// The name RabbitMQ checks permissions against: the default exchange is `amq.default`.
fn resource_name(kind: &str, name: &str) -> String {
    if kind == "exchange" && name.is_empty() {
        "amq.default".to_owned()
    } else {
        name.to_owned()
    }
}

/// The AMQP permission check a method makes, as the refusal it would close its channel with.
pub(super) fn check(
    broker: &Broker,
    user: &str,
    vhost: &str,
    access: Access,
    kind: &str,
    name: &str,
) -> Result<(), AmqpError> {
    let name = resource_name(kind, name);
    if broker.users.permitted(user, vhost, access, &name) {
        Ok(())
    } else {
        Err(AmqpError::access_refused(format!(
            "access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'"
        )))
    }
}

/// A direct request's failure as RabbitMQ's plugin answers it: 404 with the explanation for a
/// missing object, 401 `Access refused.` for a refusal, 400 with the explanation otherwise.
pub(super) fn direct_error(e: AmqpError) -> ApiError {
    match e.code {
        ReplyCode::NotFound => ApiError::NotFoundBecause(e.text),
        ReplyCode::AccessRefused | ReplyCode::NotAllowed => {
            ApiError::NotAuthorised("Access refused.")
        }
        _ => ApiError::BadRequest(json!(e.text)),
    }
}

/// A failure on a channel of the plugin's own (basic.get) as it answers it: 404 and 401 with the
/// reply text, 400 with the code and reply text otherwise.
pub(super) fn channel_error(e: AmqpError) -> ApiError {
    match e.code {
        ReplyCode::NotFound => ApiError::NotFoundBecause(e.reply_text()),
        ReplyCode::AccessRefused => ApiError::Refused(e.reply_text()),
        _ => closed_channel(e),
    }
}

/// A channel that closed under a publish, as the plugin reports it: 400 `CODE TEXT`.
pub(super) fn closed_channel(e: AmqpError) -> ApiError {
    ApiError::BadRequest(json!(format!("{} {}", e.code.code(), e.reply_text())))
}

/// A JSON object body as RabbitMQ's plugin decodes one: empty, `null` or `undefined` are `{}`,
/// a string is refused as doubly encoded, anything else that is not an object is `not_json`.
pub(super) fn body_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" || trimmed == b"undefined" {
        return Ok(Map::new());
    }
    match serde_json::from_slice(trimmed) {
        Ok(Value::Object(map)) => Ok(map),
        // RabbitMQ takes `true`, `false` (JSON atoms) as `{}`.
        Ok(Value::Bool(_)) => Ok(Map::new()),
        Ok(Value::String(_)) => Err(ApiError::BadRequest(json!(
            "invalid payload: the request body JSON-decoded to a string. Is the input doubly-JSON-encoded?"
        ))),
        _ => Err(ApiError::BadRequest(json!("not_json"))),
    }
}

/// A boolean field as RabbitMQ reads one (`true`, `false`, or those strings); absent is false.
pub(super) fn flag(body: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(ApiError::BadRequest(json!(["not_boolean", other]))),
    }
}

/// A string field; absent is empty.
pub(super) fn text<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ApiError::BadRequest(json!(["not_string", key, other]))),
    }
}

/// The `arguments` field as an AMQP table.
pub(super) fn arguments(
    body: &Map<String, Value>,
) -> Result<warren_amqp::types::FieldTable, ApiError> {
    crate::definitions::json::table_from_json(body.get("arguments").unwrap_or(&Value::Null))
        .map_err(|e| ApiError::BadRequest(json!(e.to_string())))
}

/// A name from a path: AMQP names are short strings (RabbitMQ refuses longer ones).
pub(super) fn short_name(kind: &str, name: &str) -> Result<(), ApiError> {
    if name.len() > 255 {
        return Err(ApiError::BadRequest(json!(format!(
            "{kind} name too long: {} octets (at most 255)",
            name.len()
        ))));
    }
    Ok(())
}

/// The required keys of a body, or RabbitMQ's `[{key_missing,K},…]` for those that are not there.
pub(super) fn required<'a>(
    body: &'a Map<String, Value>,
    keys: &[&str],
) -> Result<Vec<&'a Value>, ApiError> {
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| body.get(**k).is_none_or(Value::is_null))
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::BadRequest(json!(format!(
            "[{}]",
            missing.join(",")
        ))));
    }
    Ok(keys.iter().filter_map(|k| body.get(*k)).collect())
}
