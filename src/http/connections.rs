//! The management API's connections: `GET /api/connections` (and per vhost), `GET` and `DELETE
//! /api/connections/{name}`, with RabbitMQ 3.10's fields, as seen through the broker's
//! [`Tracker`](crate::tracking::Tracker). As in RabbitMQ, a `management` user sees only its own
//! connections; `monitoring` and `administrator` users see all, and only an administrator (or
//! the connection's own user) may close one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use serde_json::{json, Value};
use warren_amqp::types::AMQPValue;

use super::api::{table_json, vhost, ApiError, Shared, User};
use super::listing::ListQuery;
use crate::broker::Broker;
use crate::tracking::{ConnectionInfo, Session};

type Answer = Result<Json<Value>, ApiError>;

/// RabbitMQ's answer to a user that may not see or close another user's connection.
const NOT_YOURS: &str = "User not authorised to access object";

/// A connection as the listings show it, with its session.
pub(super) type Open = (Arc<ConnectionInfo>, Session);

/// Whether the user's tags let it see every user's connections (RabbitMQ's `is_monitor`).
fn sees_all(broker: &Broker, user: &str) -> bool {
    super::api::has_tag(broker, user, &["monitoring", "administrator"])
}

/// The open connections `user` may see, in `vhost` when given (404 when it does not exist).
pub(super) fn visible(
    broker: &Broker,
    user: &str,
    in_vhost: Option<&str>,
) -> Result<Vec<Open>, ApiError> {
    if let Some(name) = in_vhost {
        vhost(broker, name)?;
    }
    let all = sees_all(broker, user);
    Ok(broker
        .tracker
        .open_connections()
        .into_iter()
        .filter(|(_, s)| all || s.user == user)
        .filter(|(_, s)| in_vhost.is_none_or(|v| s.vhost == v))
        .collect())
}

/// The connection named `name`, if `user` may see it: 404 when there is none, 401 when it is
/// another user's and `user` may not see all (`administrator` for a `DELETE`).
pub(super) fn one(broker: &Broker, user: &str, name: &str, delete: bool) -> Result<Open, ApiError> {
    let (info, session) = broker.tracker.find(name).ok_or(ApiError::NotFound)?;
    let allowed = session.user == user
        || if delete {
            super::api::has_tag(broker, user, &["administrator"])
        } else {
            sees_all(broker, user)
        };
    if !allowed {
        return Err(ApiError::NotAuthorised(NOT_YOURS));
    }
    Ok((info, session))
}

fn connection_json((info, s): &Open, node: &str) -> Value {
    let (recv_oct, recv_cnt, send_oct, send_cnt) = info.traffic();
    let mut v = json!({
        "name": &info.name,
        "node": node,
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "state": info.state().name(),
        "vhost": &s.vhost,
        "user": &s.user,
        "user_who_performed_action": &s.user,
        "auth_mechanism": &s.auth_mechanism,
        "channels": info.channel_count(),
        "peer_host": info.peer.ip().to_string(),
        "peer_port": info.peer.port(),
        "host": info.local.ip().to_string(),
        "port": info.local.port(),
        "ssl": info.ssl,
        "ssl_protocol": null,
        "ssl_key_exchange": null,
        "ssl_cipher": null,
        "ssl_hash": null,
        "peer_cert_subject": null,
        "peer_cert_issuer": null,
        "peer_cert_validity": null,
        "frame_max": s.frame_max,
        "channel_max": s.channel_max,
        "timeout": s.heartbeat,
        "client_properties": table_json(&s.client_properties),
        "connected_at": info.connected_at,
        "recv_oct": recv_oct,
        "recv_cnt": recv_cnt,
        "send_oct": send_oct,
        "send_cnt": send_cnt,
    });
    // Rates of its traffic, as RabbitMQ's, and its channels' message counts (Warren's own).
    type Octets = (&'static str, fn(&(u64, u64, u64, u64)) -> u64);
    let octets: [Octets; 4] = [
        ("recv_oct_details", |t| t.0),
        ("recv_cnt_details", |t| t.1),
        ("send_oct_details", |t| t.2),
        ("send_cnt_details", |t| t.3),
    ];
    for (name, of) in octets {
        v[name] = json!({ "rate": info.rates.rate(|(_, traffic)| of(traffic)) });
    }
    v["message_stats"] = super::channels::message_stats_json(&info.message_totals(), |of| {
        info.rates.rate(|(totals, _)| of(totals))
    });
    // As RabbitMQ: the name a client gave its connection, when it gave one.
    if let Some(AMQPValue::LongString(name)) = s.client_properties.inner().get("connection_name") {
        v["user_provided_name"] = json!(String::from_utf8_lossy(name.as_bytes()));
    }
    v
}

fn connections_json(list: &[Open], node: &str) -> Vec<Value> {
    list.iter().map(|c| connection_json(c, node)).collect()
}

pub async fn all(State(broker): Shared, User(user): User, uri: Uri) -> Answer {
    let query = ListQuery::parse(&uri)?;
    let list = connections_json(&visible(&broker, &user, None)?, broker.node_name());
    Ok(Json(query.apply(list)?))
}

pub async fn in_vhost(
    State(broker): Shared,
    User(user): User,
    Path(v): Path<String>,
    uri: Uri,
) -> Answer {
    let query = ListQuery::parse(&uri)?;
    let list = connections_json(&visible(&broker, &user, Some(&v))?, broker.node_name());
    Ok(Json(query.apply(list)?))
}

pub async fn get_one(State(broker): Shared, User(user): User, Path(name): Path<String>) -> Answer {
    let c = one(&broker, &user, &name, false)?;
    Ok(Json(connection_json(&c, broker.node_name())))
}

/// Closes the connection with 320 CONNECTION_FORCED, "Closed via management plugin" unless an
/// `X-Reason` header gives the reason (as RabbitMQ); 204 once asked (the close itself goes on
/// in the connection's task: a client that never answers is dropped after its close timeout).
pub async fn delete(
    State(broker): Shared,
    User(user): User,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (info, _) = one(&broker, &user, &name, true)?;
    let reason = headers
        .get("x-reason")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_else(|| "Closed via management plugin".to_owned());
    info.request_close(&reason);
    Ok(StatusCode::NO_CONTENT)
}
