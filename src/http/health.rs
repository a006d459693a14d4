//! Health checks as RabbitMQ's management plugin answers them, behind the same basic
//! authentication as the rest of the API: the alarms check, and the aliveness test, which does a
//! real round trip (declare, publish through the default exchange, get) in the vhost asked for.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::json;
use warren_amqp::types::FieldTable;
use warren_amqp::AmqpError;

use super::api::{ApiError, Shared, User};
use crate::broker::Broker;
use crate::exchange::LazyHeaders;
use crate::message::Message;
use crate::queue::QueueCommand;
use crate::vhost::{DeclareQueue, Vhost};

/// The queue the aliveness test declares (and leaves in place, as RabbitMQ does, so that a
/// frequent probe does not create and delete a queue each time).
pub const ALIVENESS_QUEUE: &str = "aliveness-test";
const ALIVENESS_BODY: &[u8] = b"test_message";
/// How long the round trip may take before the check answers that it failed: a queue that does
/// not answer is a broken queue, not a slow one.
pub const ALIVENESS_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /api/health/checks/alarms`: 200 `{"status":"ok"}`, or 503 with the alarms in effect.
pub async fn alarms(State(broker): Shared, _user: User) -> Response {
    alarms_answer(&broker).into_response()
}

fn alarms_answer(broker: &Broker) -> (StatusCode, Json<serde_json::Value>) {
    let alarms = *broker.alarms().borrow();
    if !alarms.any() {
        return (StatusCode::OK, Json(json!({"status": "ok"})));
    }
    let node = broker.node_name().to_owned();
    let mut list = Vec::new();
    if alarms.disk {
        list.push(json!({"node": node, "resource": "disk space"}));
    }
    if alarms.memory {
        list.push(json!({"node": node, "resource": "memory"}));
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "failed",
            "reason": "There are alarms in effect in the cluster",
            "alarms": list,
        })),
    )
}

/// `GET /api/health/checks/local-alarms`: this node's alarms (a one-node cluster: the same).
pub async fn local_alarms(State(broker): Shared, _user: User) -> Response {
    alarms_answer(&broker).into_response()
}

/// `GET /api/health/checks/virtual-hosts`: every vhost runs (a vhost here has no supervisor
/// that can be down), so `ok`.
pub async fn virtual_hosts(_user: User) -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /api/health/checks/node-is-mirror-sync-critical` and `.../node-is-quorum-critical`:
/// stopping a one-node cluster's node loses no replica.
pub async fn single_node(_user: User) -> Response {
    Json(json!({"status": "ok", "reason": "single node cluster"})).into_response()
}

/// `GET /api/health/checks/port-listener/{port}`: 200 when a listener is bound to it, else 503
/// with the ports there are.
pub async fn port_listener(
    State(broker): Shared,
    _user: User,
    Path(port): Path<String>,
) -> Response {
    let Ok(port) = port.parse::<u16>() else {
        return ApiError::BadRequest(json!(format!("Invalid port: {port}"))).into_response();
    };
    let listeners = broker.listeners.get().cloned().unwrap_or_default();
    if listeners.iter().any(|(_, p)| *p == port) {
        return Json(json!({"status": "ok", "port": port})).into_response();
    }
    let ports: Vec<u16> = listeners.iter().map(|(_, p)| *p).collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "failed", "reason": "No active listener", "missing": port, "ports": ports})),
    )
        .into_response()
}

/// `GET /api/health/checks/protocol-listener/{protocol}`: 200 when a listener speaks it
/// (`amqp`, `amqp/ssl` as `amqp%2Fssl`, `http`), else 503 with the protocols there are.
pub async fn protocol_listener(
    State(broker): Shared,
    _user: User,
    Path(protocol): Path<String>,
) -> Response {
    let listeners = broker.listeners.get().cloned().unwrap_or_default();
    // RabbitMQ's names: `amqp091` and `amqp` are one protocol.
    let wanted = if protocol == "amqp091" {
        "amqp"
    } else {
        protocol.as_str()
    };
    if listeners.iter().any(|(p, _)| *p == wanted) {
        return Json(json!({"status": "ok", "protocol": protocol})).into_response();
    }
    let protocols: Vec<&str> = listeners.iter().map(|(p, _)| *p).collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "failed", "reason": "No active listener", "missing": protocol, "protocols": protocols})),
    )
        .into_response()
}

/// `GET /api/health/checks/certificate-expiration/{within}/{unit}`: 503 when the TLS
/// listener's certificate expires within that time (`days`, `weeks`, `months`, `years`), else
/// 200 (also without TLS).
pub async fn certificate_expiration(
    State(broker): Shared,
    _user: User,
    Path((within, unit)): Path<(String, String)>,
) -> Response {
    let Ok(within) = within.parse::<u64>() else {
        return ApiError::BadRequest(json!("Time period should be an integer")).into_response();
    };
    let days_per_unit = match unit.as_str() {
        "days" => 1,
        "weeks" => 7,
        "months" => 30,
        "years" => 365,
        _ => {
            return ApiError::BadRequest(json!(
                "Time unit not recognised. Supported units: days, weeks, months, years."
            ))
            .into_response()
        }
    };
    let (Some(path), Some(port)) = (
        broker.config.tls_cert_file.clone(),
        broker.listeners.get().and_then(|l| {
            l.iter()
                .find(|(p, _)| *p == "amqp/ssl")
                .map(|(_, port)| *port)
        }),
    ) else {
        return Json(json!({"status": "ok"})).into_response();
    };
    let horizon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .saturating_add(within.saturating_mul(days_per_unit * 86_400));
    let expires = crate::tls::certificates(&path).ok().and_then(|chain| {
        let leaf = chain.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        u64::try_from(cert.validity().not_after.timestamp()).ok()
    });
    match expires {
        Some(at) if at > horizon => Json(json!({"status": "ok"})).into_response(),
        // Expiring within the period, or a certificate that cannot be read: failed, naming it.
        expires => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "failed",
                "reason": "Certificates expiring",
                "expired": [{
                    "node": broker.node_name().to_owned(),
                    "protocol": "amqp/ssl",
                    "port": port,
                    "certfile": path.display().to_string(),
                    "expires_unix": expires,
                }],
            })),
        )
            .into_response(),
    }
}

/// Why a round trip did not complete.
enum Failure {
    /// The broker refused a step (an inequivalent or locked `aliveness-test` queue): RabbitMQ's
    /// management plugin answers these 400, with the code and reply text.
    Refused(AmqpError),
    /// The queue did not give the message back: 503 `{"status":"failed"}`.
    Failed(String),
}

/// `GET /api/aliveness-test/{vhost}`: 401 without credentials, 404 for a vhost that does not
/// exist, else declares `aliveness-test`, publishes `test_message` to it through the default
/// exchange and gets it back (no-ack): 200 `{"status":"ok"}` when it comes back, 503
/// `{"status":"failed","reason":...}` when it does not.
pub async fn aliveness_test(
    State(broker): Shared,
    _user: User,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let vhost = broker.vhost(&name).ok_or(ApiError::NotFound)?;
    let outcome = tokio::time::timeout(ALIVENESS_TIMEOUT, round_trip(&broker, &vhost))
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Failed(format!(
                "aliveness-test queue did not answer within {} s",
                ALIVENESS_TIMEOUT.as_secs()
            )))
        });
    Ok(match outcome {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(Failure::Failed(reason)) => {
            tracing::warn!(vhost = %name, "aliveness test failed: {reason}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "failed", "reason": reason})),
            )
                .into_response()
        }
        Err(Failure::Refused(e)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "bad_request",
                "reason": format!("{} {}", e.code.code(), e.reply_text()),
            })),
        )
            .into_response(),
    })
}

/// The round trip a client would make, through the same vhost and queue paths a connection uses.
async fn round_trip(broker: &Broker, vhost: &Arc<Vhost>) -> Result<(), Failure> {
    let (queue, _) = vhost
        .declare_queue(DeclareQueue {
            name: ALIVENESS_QUEUE,
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments: &FieldTable::default(),
            // Not exclusive, so no connection owns it; a fresh id matches no exclusive owner.
            connection: broker.next_id(),
            server_named: false,
        })
        .await
        .map_err(Failure::Refused)?;
    let mut targets = Vec::new();
    vhost
        .route(
            "",
            &[ALIVENESS_QUEUE],
            &LazyHeaders::new(None),
            &mut targets,
        )
        .map_err(Failure::Refused)?;
    // No property set (flags 0): a transient message, as RabbitMQ's test publishes.
    let message = Message::from_parts(
        b"",
        ALIVENESS_QUEUE.as_bytes(),
        &[0, 0],
        Bytes::from_static(ALIVENESS_BODY),
        None,
    );
    for q in targets {
        q.send(QueueCommand::Publish {
            message: message.clone(),
            logged: None,
            confirm: None,
        })
        .await
        .map_err(|e| Failure::Failed(format!("aliveness-test queue error: {e}")))?;
    }
    let got = queue
        .ask(|reply| QueueCommand::Get {
            no_ack: true,
            reply,
        })
        .await
        .map_err(|e| Failure::Failed(format!("aliveness-test queue error: {e}")))?;
    match got {
        Some(_) => Ok(()),
        None => Err(Failure::Failed("aliveness-test queue is empty".to_owned())),
    }
}
