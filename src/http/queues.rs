//! The management API's queue writes, as RabbitMQ 3.10's plugin answers them: `PUT` (declare:
//! 201 created, 204 when an equivalent one exists, 400 with the precondition's text otherwise),
//! `DELETE` (with `if-unused` / `if-empty`), `DELETE …/contents` (purge) and `POST …/get`, each
//! run as the AMQP method would be for the requesting user (configure to declare and delete,
//! read to purge and get).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::Json;
use serde_json::{json, Value};
use warren_amqp::AmqpError;

use super::access::{
    arguments, body_object, channel_error, check, direct_error, flag, read_vhost, required,
    short_name, write_vhost,
};
use super::api::{ApiError, Shared, User};
use super::message_json::{payload_to_json, properties_to_json, PayloadEncoding};
use crate::auth::Access;
use crate::queue::QueueCommand;
use crate::vhost::DeclareQueue;

type Done = Result<StatusCode, ApiError>;

/// Whether a query string sets `key=true` (RabbitMQ takes only `true`).
pub(super) fn query_true(uri: &Uri, key: &str) -> bool {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.split_once('=') == Some((key, "true")))
}

/// `PUT /api/queues/{vhost}/{name}`: `durable`, `auto_delete`, `arguments` (`node` is ignored:
/// there is one node).
pub async fn put(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> Done {
    let vhost = write_vhost(&broker, &user, &vhost_name)?;
    let body = body_object(&body)?;
    short_name("queue", &name)?;
    let durable = flag(&body, "durable")?;
    let auto_delete = flag(&body, "auto_delete")?;
    let arguments = arguments(&body)?;
    check(
        &broker,
        &user,
        &vhost.name,
        Access::Configure,
        "queue",
        &name,
    )
    .map_err(direct_error)?;
    let (_, created) = vhost
        .declare_queue(DeclareQueue {
            name: &name,
            passive: false,
            durable,
            exclusive: false,
            auto_delete,
            arguments: &arguments,
            // Not exclusive, so no connection owns it; a fresh id matches no exclusive owner.
            connection: broker.next_id(),
            server_named: false,
        })
        .await
        .map_err(direct_error)?;
    Ok(super::admin::created(created))
}

/// `DELETE /api/queues/{vhost}/{name}[?if-unused=true][&if-empty=true]`.
pub async fn delete(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, name)): Path<(String, String)>,
    uri: Uri,
) -> Done {
    let vhost = read_vhost(&broker, &user, &vhost_name)?;
    vhost.find_queue(&name).ok_or(ApiError::NotFound)?;
    check(
        &broker,
        &user,
        &vhost.name,
        Access::Configure,
        "queue",
        &name,
    )
    .map_err(direct_error)?;
    let q = vhost.queue(&name, broker.next_id()).map_err(direct_error)?;
    let outcome = q
        .ask(|reply| QueueCommand::Delete {
            if_unused: query_true(&uri, "if-unused"),
            if_empty: query_true(&uri, "if-empty"),
            reply,
        })
        .await;
    match outcome {
        Ok(Err(e)) => Err(direct_error(e)),
        // Deleted, or gone meanwhile: either way it is no more.
        Ok(Ok(_)) | Err(_) => Ok(StatusCode::NO_CONTENT),
    }
}

/// `DELETE /api/queues/{vhost}/{name}/contents`: queue.purge.
pub async fn purge(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, name)): Path<(String, String)>,
) -> Done {
    let vhost = read_vhost(&broker, &user, &vhost_name)?;
    vhost.find_queue(&name).ok_or(ApiError::NotFound)?;
    check(&broker, &user, &vhost.name, Access::Read, "queue", &name).map_err(direct_error)?;
    let q = vhost.queue(&name, broker.next_id()).map_err(direct_error)?;
    if q.is_stream() {
        // 400 with the text only, as RabbitMQ answers it.
        let refused = crate::queue::stream::not_supported("queue.purge", &name, &vhost.name);
        return Err(direct_error(refused));
    }
    q.ask(QueueCommand::Purge)
        .await
        .map_err(|_| ApiError::NotFound)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/queues/quorum/{vhost}/{name}/status`: a quorum queue's members, each with its Raft
/// role and log as its node says (`rabbitmq-queues quorum_status`'s table; `noproc` for a member
/// whose node did not answer). Asked of a node that is not a member, 400.
pub async fn quorum_status(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vhost = read_vhost(&broker, &user, &vhost_name)?;
    vhost.find_queue(&name).ok_or(ApiError::NotFound)?;
    let q = vhost.queue(&name, broker.next_id()).map_err(direct_error)?;
    let members = q.quorum_status().await.ok_or_else(|| {
        ApiError::BadRequest(json!(format!(
            "{name} in vhost {vhost_name} is not a quorum queue with a member on this node"
        )))
    })?;
    let rows: Vec<Value> = members
        .into_iter()
        .map(|m| match m.figures {
            Some(f) => json!({
                "node": m.name,
                "raft_state": f.role,
                "log_index": f.last.unwrap_or(0),
                "first_index": f.purged.map_or(0, |p| p + 1),
                "commit_index": f.committed.unwrap_or(0),
                "applied_index": f.applied.unwrap_or(0),
                "snapshot_index": f.snapshot.unwrap_or(0),
                "term": f.term,
                "dormant": f.dormant,
            }),
            None => json!({"node": m.name, "raft_state": "noproc"}),
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// What becomes of the messages a get took (RabbitMQ's `ackmode`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum AckMode {
    /// Got without acknowledgement mode, then handed back (`ack_requeue_true`).
    Requeue,
    /// Got in no-ack mode: gone (`ack_requeue_false`).
    Ack,
    /// Rejected with requeue: back, redelivered (`reject_requeue_true`).
    RejectRequeue,
    /// Rejected without requeue: dead-lettered or dropped (`reject_requeue_false`).
    Reject,
}

impl AckMode {
    fn parse(v: &Value) -> Result<Self, ApiError> {
        match v.as_str() {
            Some("ack_requeue_true") => Ok(AckMode::Requeue),
            Some("ack_requeue_false") => Ok(AckMode::Ack),
            Some("reject_requeue_true") => Ok(AckMode::RejectRequeue),
            Some("reject_requeue_false") => Ok(AckMode::Reject),
            // RabbitMQ answers 500 (its parser crashes); a 400 that says why is kinder.
            _ => Err(ApiError::BadRequest(json!(["unknown_ackmode", v]))),
        }
    }
}

/// RabbitMQ's `parse_int`: an integer, or a string holding one.
fn integer(v: &Value) -> Result<i64, ApiError> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| ApiError::BadRequest(json!(["not_integer", v])))
}

/// `POST /api/queues/{vhost}/{name}/get`: `count`, `ackmode`, `encoding` (`auto` or `base64`),
/// optional `truncate`; answers the messages as RabbitMQ lists them.
pub async fn get(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let vhost = write_vhost(&broker, &user, &vhost_name)?;
    let body = body_object(&body)?;
    let fields = required(&body, &["ackmode", "count", "encoding"])?;
    let mode = AckMode::parse(fields[0])?;
    let count = integer(fields[1])?;
    let encoding = match fields[2].as_str() {
        Some("auto") => PayloadEncoding::Auto,
        Some("base64") => PayloadEncoding::Base64,
        _ => {
            return Err(ApiError::BadRequest(json!(
                "Unsupported encoding. Please use auto or base64."
            )))
        }
    };
    let truncate = match body.get("truncate") {
        None | Some(Value::Null) => None,
        Some(v) => Some(usize::try_from(integer(v)?).unwrap_or(0)),
    };
    // The plugin opens a channel as the user: it needs the vhost even as an administrator.
    if !broker.users.may_use_vhost(&user, &vhost.name) {
        return Err(ApiError::NotAuthorised("Access refused."));
    }
    check(&broker, &user, &vhost.name, Access::Read, "queue", &name).map_err(channel_error)?;
    let q = match vhost.find_queue(&name) {
        Some(_) => vhost
            .queue(&name, broker.next_id())
            .map_err(channel_error)?,
        None => {
            return Err(channel_error(AmqpError::not_found(format!(
                "no queue '{name}' in vhost '{}'",
                vhost.name
            ))))
        }
    };
    if q.is_stream() {
        // 400 `540 TEXT`, as RabbitMQ answers it.
        let refused = crate::queue::stream::not_supported("basic.get", &name, &vhost.name);
        return Err(ApiError::BadRequest(json!(format!("540 {}", refused.text))));
    }
    let mut out = Vec::new();
    let mut taken = Vec::new();
    // A negative count takes until the queue is empty, as RabbitMQ's loop does.
    let mut left = count;
    while left != 0 {
        let no_ack = mode == AckMode::Ack;
        let Ok(Some(got)) = q.ask(|reply| QueueCommand::Get { no_ack, reply }).await else {
            break;
        };
        left -= 1;
        let m = &got.message;
        let (payload, payload_encoding) = payload_to_json(m.body(), truncate, encoding);
        out.push(json!({
            "payload_bytes": m.body().len(),
            "redelivered": got.redelivered,
            "exchange": String::from_utf8_lossy(m.exchange()),
            "routing_key": String::from_utf8_lossy(m.routing_key()),
            "message_count": got.remaining,
            "properties": properties_to_json(m.properties()),
            "payload": payload,
            "payload_encoding": payload_encoding,
        }));
        if !no_ack {
            taken.push(got.id);
        }
    }
    // Settled once all are taken, so that a requeued message is not got again.
    if !taken.is_empty() {
        q.send_now(match mode {
            AckMode::Reject => QueueCommand::Reject(taken),
            _ => QueueCommand::Requeue(taken),
        });
    }
    Ok(Json(Value::Array(out)))
}
