//! The management API's channels and consumers: `GET /api/channels` (per vhost, per connection,
//! one by name) and `GET /api/consumers` (per vhost), with RabbitMQ 3.10's main fields. What a
//! user sees follows its connections (see `connections.rs`): a `management` user sees only its
//! own.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::Json;
use serde_json::{json, Value};

use super::api::{table_json, ApiError, Shared, User};
use super::connections::{one, visible, Open};
use super::listing::ListQuery;
use crate::tracking::{ChannelView, ConsumerInfo, MessageTotals};

type Answer = Result<Json<Value>, ApiError>;

/// One channel of a listed connection.
struct Shown<'a> {
    conn: &'a Open,
    number: u16,
    view: ChannelView,
    info: std::sync::Arc<crate::tracking::ChannelInfo>,
}

impl Shown<'_> {
    /// RabbitMQ's name for a channel: its connection's and its number.
    fn name(&self) -> String {
        format!("{} ({})", self.conn.0.name, self.number)
    }
}

/// Every channel of these connections, by connection and then number.
fn channels_of(conns: &[Open]) -> Vec<Shown<'_>> {
    let mut out = Vec::new();
    for conn in conns {
        for (number, channel) in conn.0.channels() {
            out.push(Shown {
                conn,
                number,
                view: channel.view(),
                info: channel,
            });
        }
    }
    out
}

fn consumer_json(ch: &Shown, c: &ConsumerInfo, node: &str) -> Value {
    let (info, session) = ch.conn;
    json!({
        "consumer_tag": &*c.tag,
        "queue": {"name": &*c.queue, "vhost": &session.vhost},
        "channel_details": {
            "name": ch.name(),
            "number": ch.number,
            "connection_name": &info.name,
            "peer_host": info.peer.ip().to_string(),
            "peer_port": info.peer.port(),
            "user": &session.user,
            "node": node,
        },
        "ack_required": c.ack_required,
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch_count,
        // Single active consumer queues are not told apart yet: every consumer shows as active.
        "active": true,
        "activity_status": "up",
        "arguments": table_json(&c.arguments),
    })
}

fn channel_json(ch: &Shown, node: &str) -> Value {
    let (info, session) = ch.conn;
    let v = &ch.view;
    json!({
        "name": ch.name(),
        "number": ch.number,
        "node": node,
        "connection_details": {
            "name": &info.name,
            "peer_host": info.peer.ip().to_string(),
            "peer_port": info.peer.port(),
        },
        "vhost": &session.vhost,
        "user": &session.user,
        "user_who_performed_action": &session.user,
        "state": "running",
        "consumer_count": v.consumers.len(),
        "messages_unacknowledged": v.unacked,
        "prefetch_count": v.prefetch_count,
        "global_prefetch_count": v.global_prefetch_count,
        "confirm": v.confirm,
        "transactional": v.transactional,
        "message_stats": message_stats_json(&ch.info.counts.totals(), |of| ch.info.rates.rate(of)),
    })
}

fn channels_json(conns: &[Open], node: &str) -> Vec<Value> {
    let mut shown = channels_of(conns);
    // RabbitMQ's default order: by vhost, then name (the connections come sorted so already,
    // but channel 10 sorts before channel 2 by name).
    shown.sort_by_cached_key(|c| (c.conn.1.vhost.clone(), c.name()));
    shown.iter().map(|c| channel_json(c, node)).collect()
}

fn consumers_json(conns: &[Open], node: &str) -> Value {
    let channels = channels_of(conns);
    let mut all: Vec<(&Shown, &ConsumerInfo)> = channels
        .iter()
        .flat_map(|ch| ch.view.consumers.iter().map(move |c| (ch, c)))
        .collect();
    // As RabbitMQ lists them: by queue (vhost, name); then by channel and tag, to be stable.
    all.sort_by_cached_key(|(ch, c)| {
        (
            ch.conn.1.vhost.clone(),
            c.queue.clone(),
            ch.name(),
            c.tag.clone(),
        )
    });
    Value::Array(
        all.into_iter()
            .map(|(ch, c)| consumer_json(ch, c, node))
            .collect(),
    )
}

pub async fn all(State(broker): Shared, User(user): User, uri: Uri) -> Answer {
    let query = ListQuery::parse(&uri)?;
    let list = channels_json(&visible(&broker, &user, None)?, broker.node_name());
    Ok(Json(query.apply(list)?))
}

pub async fn in_vhost(
    State(broker): Shared,
    User(user): User,
    Path(v): Path<String>,
    uri: Uri,
) -> Answer {
    let query = ListQuery::parse(&uri)?;
    let list = channels_json(&visible(&broker, &user, Some(&v))?, broker.node_name());
    Ok(Json(query.apply(list)?))
}

/// `GET /api/connections/{name}/channels`.
pub async fn of_connection(
    State(broker): Shared,
    User(user): User,
    Path(name): Path<String>,
) -> Answer {
    let conn = one(&broker, &user, &name, false)?;
    Ok(Json(Value::Array(channels_json(
        &[conn],
        broker.node_name(),
    ))))
}

/// `GET /api/channels/{name}`: the channel with its consumers.
pub async fn get_one(State(broker): Shared, User(user): User, Path(name): Path<String>) -> Answer {
    let conns = visible(&broker, &user, None)?;
    let node = broker.node_name();
    let ch = channels_of(&conns)
        .into_iter()
        .find(|c| c.name() == name)
        .ok_or(ApiError::NotFound)?;
    let mut v = channel_json(&ch, node);
    v["consumer_details"] = ch
        .view
        .consumers
        .iter()
        .map(|c| consumer_json(&ch, c, node))
        .collect();
    Ok(Json(v))
}

pub async fn consumers_all(State(broker): Shared, User(user): User) -> Answer {
    Ok(Json(consumers_json(
        &visible(&broker, &user, None)?,
        broker.node_name(),
    )))
}

pub async fn consumers_in(
    State(broker): Shared,
    User(user): User,
    Path(v): Path<String>,
) -> Answer {
    Ok(Json(consumers_json(
        &visible(&broker, &user, Some(&v))?,
        broker.node_name(),
    )))
}

/// A channel's or connection's `message_stats`, as RabbitMQ's: each count with its rate over the
/// last sampling interval, and `deliver_get` (deliveries and gets of every kind).
pub(super) fn message_stats_json(
    totals: &MessageTotals,
    rate: impl Fn(fn(&MessageTotals) -> u64) -> f64,
) -> Value {
    let mut out = serde_json::Map::new();
    let deliver_get = |t: &MessageTotals| t.deliver + t.deliver_no_ack + t.get + t.get_no_ack;
    let named = MessageTotals::NAMED
        .iter()
        .copied()
        .chain([("deliver_get", deliver_get as fn(&MessageTotals) -> u64)]);
    for (name, of) in named {
        out.insert(name.into(), json!(of(totals)));
        out.insert(format!("{name}_details"), json!({ "rate": rate(of) }));
    }
    Value::Object(out)
}
