//! The management API's exchange writes, as RabbitMQ 3.10's plugin answers them: `PUT` (declare;
//! `amq.*` names and the default exchange refused, as exchange.declare refuses them), `DELETE`
//! (with `if-unused`) and `POST …/publish`, which routes a message as basic.publish with
//! `mandatory` would and answers `{"routed": bool}` once the queues have it (on disk for a
//! persistent message to a durable queue: the plugin waits for the publisher confirm).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use warren_amqp::encode::encode_properties;
use warren_amqp::PropertiesView;

use super::access::required;
use super::access::{
    arguments, body_object, check, closed_channel, direct_error, flag, read_vhost, short_name,
    text, write_vhost,
};
use super::api::{ApiError, Shared, User};
use super::message_json::{payload_from_json, properties_from_json};
use super::queues::query_true;
use crate::auth::Access;
use crate::broker::Broker;
use crate::exchange::LazyHeaders;
use crate::message::Message;
use crate::queue::log::durable_form;
use crate::queue::{ConnEvent, PublishConfirm};
use crate::vhost::{DeclareExchange, Routing, Vhost};

type Done = Result<StatusCode, ApiError>;

/// RabbitMQ names the default exchange `amq.default` in URLs.
pub(super) fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

/// `PUT /api/exchanges/{vhost}/{name}`: `type` (required), `durable`, `auto_delete`,
/// `internal`, `arguments`.
pub async fn put(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> Done {
    let vhost = write_vhost(&broker, &user, &vhost_name)?;
    let body = body_object(&body)?;
    let name = exchange_name(&name);
    short_name("exchange", name)?;
    let kind = text(&body, "type")?;
    let durable = flag(&body, "durable")?;
    let auto_delete = flag(&body, "auto_delete")?;
    let internal = flag(&body, "internal")?;
    let arguments = arguments(&body)?;
    check(
        &broker,
        &user,
        &vhost.name,
        Access::Configure,
        "exchange",
        name,
    )
    .map_err(direct_error)?;
    let existed = vhost.has_exchange(name);
    vhost
        .declare_exchange(DeclareExchange {
            name,
            kind,
            passive: false,
            durable,
            auto_delete,
            internal,
            arguments: &arguments,
        })
        .await
        .map_err(direct_error)?;
    Ok(super::admin::created(!existed))
}

/// `DELETE /api/exchanges/{vhost}/{name}[?if-unused=true]`.
pub async fn delete(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, name)): Path<(String, String)>,
    uri: Uri,
) -> Done {
    let vhost = read_vhost(&broker, &user, &vhost_name)?;
    let name = exchange_name(&name);
    if !vhost.has_exchange(name) {
        return Err(ApiError::NotFound);
    }
    check(
        &broker,
        &user,
        &vhost.name,
        Access::Configure,
        "exchange",
        name,
    )
    .map_err(direct_error)?;
    vhost
        .delete_exchange(name, query_true(&uri, "if-unused"))
        .await
        .map_err(direct_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/exchanges/{vhost}/{name}/publish`: `routing_key`, `properties`, `payload`,
/// `payload_encoding` (`string` or `base64`), all required.
pub async fn publish(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let vhost = write_vhost(&broker, &user, &vhost_name)?;
    let body = body_object(&body)?;
    let fields = required(
        &body,
        &["routing_key", "properties", "payload", "payload_encoding"],
    )?;
    let (routing_key, properties, payload, encoding) = (fields[0], fields[1], fields[2], fields[3]);
    let Value::String(payload) = payload else {
        return Err(ApiError::BadRequest(json!("payload_not_string")));
    };
    let routing_key = match routing_key {
        Value::String(s) if s.len() <= 255 => s.as_str(),
        _ => return Err(ApiError::BadRequest(json!(["not_string", "routing_key"]))),
    };
    let properties = properties_from_json(properties)?;
    let body = payload_from_json(payload, encoding)?;
    if body.len() as u64 > broker.config.max_message_size {
        return Err(closed_channel(warren_amqp::AmqpError::precondition_failed(
            format!(
                "message size {} is larger than configured max size {}",
                body.len(),
                broker.config.max_message_size
            ),
        )));
    }
    let raw = encode_properties(&properties)
        .map_err(|e| ApiError::BadRequest(json!(format!("cannot encode properties: {e}"))))?;
    // The plugin opens a channel as the user: it needs the vhost even as an administrator.
    if !broker.users.may_use_vhost(&user, &vhost.name) {
        return Err(ApiError::NotAuthorised("Access refused."));
    }
    let exchange = exchange_name(&name);
    // A refusal closes the plugin's channel under the publish: reported as the channel's close.
    check(
        &broker,
        &user,
        &vhost.name,
        Access::Write,
        "exchange",
        exchange,
    )
    .map_err(closed_channel)?;
    let routed = publish_message(&broker, &vhost, &user, exchange, routing_key, &raw, body).await?;
    Ok(Json(json!({ "routed": routed })))
}

/// Routes one message and hands it to its queues, waiting for the answers a publisher confirm
/// would wait for; whether any queue took it.
async fn publish_message(
    broker: &Broker,
    vhost: &Vhost,
    user: &str,
    exchange: &str,
    routing_key: &str,
    properties: &[u8],
    body: Vec<u8>,
) -> Result<bool, ApiError> {
    let view = PropertiesView::parse(properties).unwrap_or_default();
    crate::connection::methods::publish::validate_properties(&view).map_err(closed_channel)?;
    if let Some(user_id) = view.user_id {
        if user_id != user.as_bytes() {
            return Err(closed_channel(warren_amqp::AmqpError::precondition_failed(
                format!(
                    "user_id property set to '{}' but authenticated user was '{user}'",
                    String::from_utf8_lossy(user_id)
                ),
            )));
        }
    }
    let headers = LazyHeaders::new(view.headers);
    let mut targets = Vec::new();
    let routing = vhost
        .route_publish(exchange, &[routing_key], &headers, &view, &mut targets)
        .map_err(closed_channel)?;
    drop(headers);
    if routing == Routing::Duplicate {
        // Dropped as a duplicate: its first copy was routed.
        return Ok(true);
    }
    if targets.is_empty() {
        return Ok(false);
    }
    let durable_targets = if view.persistent() {
        targets.iter().filter(|q| q.logs_in_store()).count()
    } else {
        0
    };
    let store = &broker.store;
    let id = (durable_targets > 0).then(|| store.next_message_id());
    let message = Message::from_parts(
        exchange.as_bytes(),
        routing_key.as_bytes(),
        properties,
        body.into(),
        id,
    );
    let logged = match id {
        Some(id) => Some(
            durable_form(store, &message, id, durable_targets).map_err(|e| {
                tracing::error!("cannot store a message published over HTTP: {e}");
                rejected()
            })?,
        ),
        None => None,
    };
    let (events, mut answers) = mpsc::unbounded_channel();
    let mut waits = 0;
    for q in targets {
        let logged = q.logs_in_store().then(|| logged.clone()).flatten();
        let confirm = (logged.is_some() || q.args.may_reject_publish()).then(|| {
            waits += 1;
            PublishConfirm::new(events.clone(), 0, 1)
        });
        q.publish(message.clone(), logged, confirm).await;
    }
    drop(events);
    let mut all_ok = true;
    for _ in 0..waits {
        match answers.recv().await {
            Some(ConnEvent::Settled { ok, .. }) => all_ok &= ok,
            Some(_) => {}
            None => break,
        }
    }
    if all_ok {
        Ok(true)
    } else {
        Err(rejected())
    }
}

/// A nack, as the plugin reports it.
fn rejected() -> ApiError {
    ApiError::BadRequest(json!(
        "rejected Unable to publish message. Check queue limits."
    ))
}
