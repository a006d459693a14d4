//! The read-only part of RabbitMQ's management API: overview, nodes, vhosts, whoami, queues,
//! exchanges and bindings, with the field names and shapes RabbitMQ 3.10 uses, behind HTTP basic
//! authentication. Vhost names in paths are percent-encoded (`%2F` for `/`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};

use super::listing::{self, ListQuery};
use super::QueueSnapshot;
use crate::broker::Broker;
use crate::queue::args::QueueType;
use crate::queue::{QueueCounts, QueueHandle, QueueStats};
use crate::stats::RateSampler;
use crate::vhost::Vhost;

pub type Shared = State<Arc<Broker>>;

/// The user of an AMQP connection a management request came on (set only in-process, by
/// [`super::call_as`]; never from an HTTP request).
#[derive(Clone)]
pub struct AuthenticatedOverAmqp(pub String);

/// A request with right basic credentials: handlers that take one answer 401 otherwise.
pub struct User(pub String);

impl FromRequestParts<Arc<Broker>> for User {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        broker: &Arc<Broker>,
    ) -> Result<Self, Self::Rejection> {
        // A request made over AMQP (`crate::management`) comes from a connection whose user
        // already logged in; its tags are checked below as any other's.
        let name = match parts.extensions.get::<AuthenticatedOverAmqp>() {
            Some(AuthenticatedOverAmqp(name)) => name.clone(),
            None => {
                let peer = parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0)
                    .ok_or(ApiError::Unauthorized)?;
                user(broker, &parts.headers, peer)?
            }
        };
        // As RabbitMQ's plugin: a user without a management tag may not use the API.
        let tags = broker.users.tags(&name);
        let management = ["administrator", "monitoring", "policymaker", "management"];
        if !tags.iter().any(|t| management.contains(&t.as_str())) {
            return Err(ApiError::NotAuthorised("Not management user"));
        }
        Ok(User(name))
    }
}

/// An answer that is not the listing asked for.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    /// Right credentials, but a user whose tags do not allow this (401, as RabbitMQ).
    NotAuthorised(&'static str),
    NotFound,
    /// A change to something in a vhost that does not exist (404 `vhost_not_found`).
    VhostNotFound,
    /// A body of a type the resource does not take (415, no body, as cowboy answers).
    UnsupportedMediaType,
    /// 404 with a reason, as RabbitMQ answers a write whose vhost or target is missing
    /// (`{"error":"not_found","reason":...}`).
    NotFoundBecause(String),
    /// 401 with a reason of the moment (an AMQP refusal's text).
    Refused(String),
    /// 400 with RabbitMQ's `bad_request` body.
    BadRequest(Value),
    /// 400 with an error of its own name, as RabbitMQ answers some (`page_out_of_range`).
    Invalid(&'static str, String),
    /// The change could not be stored.
    Internal(String),
    /// No majority of the cluster confirmed a change in time (503, `timeout`, as RabbitMQ's
    /// management API answers when its metadata store has no quorum).
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"RabbitMQ Management\"",
                )],
                Json(json!({"error": "not_authorized", "reason": "Login failed"})),
            )
                .into_response(),
            ApiError::NotAuthorised(reason) => (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"RabbitMQ Management\"",
                )],
                Json(json!({"error": "not_authorised", "reason": reason})),
            )
                .into_response(),
            ApiError::Refused(reason) => (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "not_authorised", "reason": reason})),
            )
                .into_response(),
            ApiError::NotFoundBecause(reason) => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not_found", "reason": reason})),
            )
                .into_response(),
            ApiError::BadRequest(reason) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "bad_request", "reason": reason})),
            )
                .into_response(),
            ApiError::Invalid(error, reason) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": error, "reason": reason})),
            )
                .into_response(),
            ApiError::Internal(reason) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "internal_server_error", "reason": reason})),
            )
                .into_response(),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "Object Not Found", "reason": "Not Found"})),
            )
                .into_response(),
            ApiError::VhostNotFound => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not_found", "reason": "vhost_not_found"})),
            )
                .into_response(),
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response(),
            ApiError::Unavailable(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "timeout", "reason": reason})),
            )
                .into_response(),
        }
    }
}

type Answer = Result<Json<Value>, ApiError>;

/// The user named by the request's basic credentials, if they are right.
fn user(broker: &Broker, headers: &HeaderMap, peer: SocketAddr) -> Result<String, ApiError> {
    let encoded = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials)
        .ok_or(ApiError::Unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or(ApiError::Unauthorized)?;
    let (login, password) = decoded.split_once(':').ok_or(ApiError::Unauthorized)?;
    broker
        .users
        .check_password(login, password, peer.ip())
        .map_err(|_| ApiError::Unauthorized)
}

/// The credentials of a `Basic` authorization header; the scheme's name is case-insensitive
/// (RFC 7617), as RabbitMQ takes it.
fn basic_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("basic")
        .then(|| rest.trim_start_matches([' ', '\t']))
}

/// Whether the user has one of these tags.
pub(super) fn has_tag(broker: &Broker, user: &str, tags: &[&str]) -> bool {
    broker
        .users
        .tags(user)
        .iter()
        .any(|t| tags.contains(&t.as_str()))
}

/// RabbitMQ's `filter_vhost`: administrators see the objects (queues, exchanges, bindings) of
/// every vhost, other users those of the vhosts they may log in to (have permissions in).
pub(super) fn sees_objects_of(broker: &Broker, user: &str, vhost: &str) -> bool {
    has_tag(broker, user, &["administrator"]) || broker.users.may_use_vhost(user, vhost)
}

/// RabbitMQ's `is_authorized_vhost`: administrators, or users that may log in to the vhost; 401
/// otherwise. A vhost that does not exist passes here, and is a 404 later.
pub(super) fn authorise_vhost(broker: &Broker, user: &str, vhost: &str) -> Result<(), ApiError> {
    if broker.vhost(vhost).is_none() || sees_objects_of(broker, user, vhost) {
        Ok(())
    } else {
        Err(ApiError::NotAuthorised(
            "User not authorised to access virtual host",
        ))
    }
}

/// RabbitMQ's `list_visible_vhosts`: monitoring users and administrators know of every vhost,
/// others of those they may log in to.
pub(super) fn sees_vhost(broker: &Broker, user: &str, vhost: &str) -> bool {
    has_tag(broker, user, &["administrator", "monitoring"])
        || broker.users.may_use_vhost(user, vhost)
}

pub(super) fn vhost(broker: &Broker, name: &str) -> Result<Arc<Vhost>, ApiError> {
    broker.vhost(name).ok_or(ApiError::NotFound)
}

pub use crate::definitions::json::table_to_json as table_json;

fn queue_json(s: &QueueSnapshot, node: &str) -> Value {
    let (q, stats) = (&s.queue, &s.stats);
    let replica = q.replica_status();
    // In a cluster, the node the queue lives on (a quorum queue's: its leader, as RabbitMQ's).
    let node = replica
        .as_ref()
        .and_then(|r| r.leader.as_deref())
        .or(q.home.as_deref())
        .unwrap_or(node)
        .to_owned();
    let policies = q.applied_policies();
    let mut out = json!({
        "name": &*q.name,
        "vhost": &s.vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.is_exclusive(),
        "arguments": table_json(&q.arguments),
        "policy": policies.policy_name(),
        "operator_policy": policies.operator_policy_name(),
        "effective_policy_definition": policies.effective_definition(),
        "messages": u64::from(stats.ready) + u64::from(stats.unacked),
        "messages_ready": stats.ready,
        "messages_unacknowledged": stats.unacked,
        "consumers": stats.consumers,
        "state": "running",
        "type": q.args.queue_type.as_str(),
        "node": node,
    });
    if let Some(map) = out.as_object_mut() {
        rates_json(&[(stats, &q.rates)], map);
    }
    if let (QueueType::Quorum, Some(map)) = (q.args.queue_type, out.as_object_mut()) {
        map.insert("messages_dlx".into(), json!(stats.held_dead_letters));
        map.insert(
            "message_bytes_dlx".into(),
            json!(stats.held_dead_letter_bytes),
        );
    }
    let replicated = replica.is_some();
    if let (Some(r), Some(map)) = (replica, out.as_object_mut()) {
        map.insert("leader".into(), json!(r.leader));
        map.insert("members".into(), json!(r.members));
        map.insert("online".into(), json!(r.online));
    } else if let (Some(members), Some(map)) = (q.members(), out.as_object_mut()) {
        // A quorum queue without a member on this node: its members as the cluster has them.
        map.insert("members".into(), json!(members));
    }
    if let (Some(f), Some(map)) = (q.stream_figures(), out.as_object_mut()) {
        // A stream on one node: RabbitMQ's members and readers; and Warren's figures of its
        // log (a replicated stream's: of its copy here).
        if !replicated {
            map.insert("members".into(), json!([node]));
            map.insert("online".into(), json!([node]));
        }
        map.insert("readers".into(), json!({ node.as_str(): stats.consumers }));
        map.insert("first_offset".into(), json!(f.first_offset));
        map.insert("committed_offset".into(), json!(f.end_offset));
        map.insert("segments".into(), json!(f.segments));
        map.insert("disk_bytes".into(), json!(f.bytes));
    }
    out
}

/// The `message_stats` (counts and their rates, as RabbitMQ's) and the depths' rates
/// (`messages_details` and the like) of some queues together: one queue's, or a vhost's. Each
/// queue's counts with its samples, taken every `collect_statistics_interval`.
fn rates_json(
    queues: &[(&QueueStats, &RateSampler<QueueStats>)],
    map: &mut serde_json::Map<String, Value>,
) {
    type Counter = (&'static str, fn(&QueueCounts) -> u64);
    let counters: [Counter; 8] = [
        ("publish", |c| c.published),
        ("deliver", |c| c.delivered),
        ("deliver_no_ack", |c| c.delivered_no_ack),
        ("get", |c| c.got),
        ("get_no_ack", |c| c.got_no_ack),
        ("deliver_get", |c| {
            c.delivered + c.delivered_no_ack + c.got + c.got_no_ack
        }),
        ("redeliver", |c| c.redelivered),
        ("ack", |c| c.acked),
    ];
    let mut message_stats = serde_json::Map::new();
    for (name, of) in counters {
        let total: u64 = queues.iter().map(|(s, _)| of(&s.counts)).sum();
        let rate: f64 = queues.iter().map(|(_, r)| r.rate(|s| of(&s.counts))).sum();
        message_stats.insert(name.into(), json!(total));
        message_stats.insert(format!("{name}_details"), json!({ "rate": rate }));
    }
    map.insert("message_stats".into(), Value::Object(message_stats));
    type Depth = (&'static str, fn(&QueueStats) -> f64);
    let depths: [Depth; 3] = [
        ("messages_details", |s| {
            f64::from(s.ready) + f64::from(s.unacked)
        }),
        ("messages_ready_details", |s| f64::from(s.ready)),
        ("messages_unacknowledged_details", |s| f64::from(s.unacked)),
    ];
    for (name, of) in depths {
        let rate: f64 = queues.iter().map(|(_, r)| r.signed_rate(of)).sum();
        map.insert(name.into(), json!({ "rate": rate }));
    }
}

/// The queues of these vhosts as a list query asks for them (see [`ListQuery`]). A page asks
/// only its own queues for their counts: the name filter and the order come first, and ordering
/// by a figure (a depth, a rate) reads each queue's last sample (at most one
/// `collect_statistics_interval` old), so that a page of 10,000 queues does not wait for 10,000
/// queues' answers.
async fn queues_json(
    vhosts: &[Arc<Vhost>],
    node: &str,
    query: &ListQuery,
) -> Result<Value, ApiError> {
    let mut queues: Vec<(&str, Arc<QueueHandle>)> = Vec::new();
    for v in vhosts {
        let mut of_vhost = v.queues();
        of_vhost.sort_by(|a, b| a.name.cmp(&b.name));
        queues.extend(of_vhost.into_iter().map(|q| (v.name.as_str(), q)));
    }
    let total = queues.len();
    if !query.is_paged() {
        let mut items = Vec::with_capacity(total);
        for (vhost, q) in queues {
            items.push(queue_json(&super::queue_snapshot(vhost, q).await, node));
        }
        return query.apply(items);
    }
    queues.retain(|(_, q)| query.keeps(&q.name));
    let filtered = queues.len();
    query.order(&mut queues, |(vhost, q), path| match path {
        [key] if key == "name" => json!(&*q.name),
        [key] if key == "vhost" => json!(vhost),
        _ => {
            let sampled = QueueSnapshot {
                vhost: (*vhost).to_owned(),
                queue: q.clone(),
                stats: q.rates.latest().unwrap_or_default(),
            };
            listing::field(&queue_json(&sampled, node), path).clone()
        }
    });
    let range = query.page_range(filtered)?;
    let mut items = Vec::with_capacity(range.len());
    for (vhost, q) in queues.drain(range) {
        items.push(queue_json(&super::queue_snapshot(vhost, q).await, node));
    }
    Ok(query.answer(total, filtered, items))
}

fn exchanges_json(v: &Vhost) -> Vec<Value> {
    let stats = v.exchange_stats();
    v.exchanges_info()
        .into_iter()
        .map(|e| {
            let message_stats = stats.get(&e.name).map(|s| {
                let (published, routed) = s.totals();
                json!({
                    "publish_in": published,
                    "publish_in_details": {"rate": s.rates.rate(|t| t.0)},
                    "publish_out": routed,
                    "publish_out_details": {"rate": s.rates.rate(|t| t.1)},
                })
            });
            let mut out = json!({
                "name": e.name,
                "vhost": &v.name,
                "type": e.kind,
                "durable": e.durable,
                "auto_delete": e.auto_delete,
                "internal": e.internal,
                "arguments": table_json(&e.arguments),
                "message_stats": message_stats,
            });
            // RabbitMQ shows an exchange's policy only when one applies.
            if let (Some(policy), Some(map)) = (e.policy, out.as_object_mut()) {
                map.insert("policy".into(), json!(policy));
            }
            out
        })
        .collect()
}

pub async fn overview(State(broker): Shared, _user: User) -> Answer {
    let vhosts = broker.vhosts();
    let queues = super::queue_snapshots(&vhosts).await;
    let sum =
        |f: fn(&QueueStats) -> u32| queues.iter().map(|q| u64::from(f(&q.stats))).sum::<u64>();
    let exchanges: usize = vhosts.iter().map(|v| v.exchanges_info().len()).sum();
    let t = broker.counters.totals();
    let r = broker.rates.rates();
    // Connections, channels and listeners are every node's (those that answer), as RabbitMQ's
    // overview shows the cluster's.
    let nodes = node_figures(&broker).await;
    let activity = || {
        nodes
            .iter()
            .filter_map(|(name, f)| Some((name, &f.as_ref()?.activity)))
    };
    let listeners: Vec<Value> = activity()
        .flat_map(|(node, a)| {
            a.listeners.iter().map(move |(protocol, port)| {
                json!({"node": node, "protocol": protocol, "ip_address": "::", "port": port})
            })
        })
        .collect();
    Ok(Json(json!({
        "management_version": env!("CARGO_PKG_VERSION"),
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "node": broker.node_name(),
        "cluster_name": cluster_name(&broker),
        "listeners": listeners,
        "object_totals": {
            "connections": activity().map(|(_, a)| a.connections).sum::<usize>(),
            "channels": activity().map(|(_, a)| a.channels).sum::<usize>(),
            "exchanges": exchanges,
            "queues": queues.len(),
            "consumers": sum(|s| s.consumers),
        },
        "message_stats": {
            "publish": t.received,
            "publish_details": {"rate": r.received},
            "confirm": t.confirmed,
            "confirm_details": {"rate": r.confirmed},
            "deliver_get": t.delivered,
            "deliver_get_details": {"rate": r.delivered},
            "ack": t.acknowledged,
            "ack_details": {"rate": r.acknowledged},
            "return_unroutable": t.unroutable_returned,
            "return_unroutable_details": {"rate": r.unroutable_returned},
            "drop_unroutable": t.unroutable_dropped,
            "drop_unroutable_details": {"rate": r.unroutable_dropped},
        },
        "queue_totals": {
            "messages": sum(|s| s.ready) + sum(|s| s.unacked),
            "messages_ready": sum(|s| s.ready),
            "messages_unacknowledged": sum(|s| s.unacked),
        },
    })))
}

/// Every member's name and, for this node and the others that answer within a second (asked
/// together), its figures; alone, just this node's.
async fn node_figures(broker: &Broker) -> Vec<(String, Option<crate::broker::NodeFigures>)> {
    let Some(cluster) = broker.cluster.get().filter(|c| !c.alone()) else {
        return vec![(broker.node_name().to_owned(), Some(broker.figures()))];
    };
    let members = cluster.members();
    let figures = futures::future::join_all(members.iter().map(|m| async {
        match (m.name == broker.node_name(), m.reachable) {
            (true, _) => Some(broker.figures()),
            (false, true) => cluster.figures_of(&m.name).await,
            (false, false) => None,
        }
    }))
    .await;
    members.into_iter().map(|m| m.name).zip(figures).collect()
}

pub async fn whoami(State(broker): Shared, User(name): User) -> Answer {
    let tags = broker.users.tags(&name);
    Ok(Json(json!({"name": name, "tags": tags})))
}

/// The cluster's members: this node with its own figures, the others with whether this node
/// reaches them over the cluster link (RabbitMQ's `running` as this node sees it). `partitions`
/// stays empty: a node cut off from the majority cannot change anything (the metadata group has
/// no quorum there), so there is never a split to heal.
pub async fn nodes(State(broker): Shared, _user: User) -> Answer {
    let running: HashMap<String, bool> = match broker.cluster.get() {
        Some(cluster) => cluster
            .members()
            .into_iter()
            .map(|m| (m.name, m.reachable))
            .collect(),
        None => HashMap::new(),
    };
    let list = node_figures(&broker)
        .await
        .into_iter()
        .map(|(name, figures)| {
            let here = name == broker.node_name();
            let running = here || running.get(&name).copied().unwrap_or(false);
            let mut n = json!({"name": name, "type": "disc", "running": running, "partitions": []});
            if let Some(map) = n.as_object_mut() {
                if let Some(Value::Object(mut fields)) = figures.map(|f| json!(f)) {
                    // The overview's, not a node field of RabbitMQ's.
                    fields.remove("activity");
                    map.extend(fields);
                }
                // Warren's own: how long this node's metadata log is (snapshots keep it short).
                if let (true, Some(cluster)) = (here, broker.cluster.get()) {
                    map.insert("metadata_log".to_owned(), json!(cluster.metadata_log()));
                }
            }
            n
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// The cluster's name: the one set (`PUT /api/cluster-name`), else its first node's.
pub(super) fn cluster_name(broker: &Broker) -> String {
    match broker.cluster.get() {
        Some(cluster) => cluster.cluster_name(),
        None => broker.node_name().to_owned(),
    }
}

pub async fn get_cluster_name(State(broker): Shared, _user: User) -> Answer {
    Ok(Json(json!({"name": cluster_name(&broker)})))
}

/// Sets the cluster's name, for every node (through the metadata group).
pub async fn put_cluster_name(
    State(broker): Shared,
    _admin: super::admin::Admin,
    body: axum::body::Bytes,
) -> Result<axum::http::StatusCode, ApiError> {
    let body = super::admin::object(&body)?;
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return Err(ApiError::BadRequest(json!("[{key_missing,name}]")));
    };
    let Some(cluster) = broker.cluster.get() else {
        return Err(ApiError::Internal("the node is starting".into()));
    };
    let command = crate::clustering::MetadataCommand::SetClusterName(name.to_owned());
    match cluster.metadata.commit(&command).await {
        Ok(()) => Ok(axum::http::StatusCode::NO_CONTENT),
        Err(warren_cluster::group::ProposeError::Timeout(_)) => Err(ApiError::Unavailable(
            "no majority of the cluster's nodes confirmed the change".into(),
        )),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// `PUT /api/vm-memory-high-watermark` with `{"relative": FRACTION}` or `{"absolute": BYTES}`:
/// changes this node's memory high watermark until it restarts (RabbitMQ has no API for it;
/// this is what `warren ctl set_vm_memory_high_watermark` calls, as rabbitmqctl's command does
/// over Erlang distribution). 204.
pub async fn put_vm_memory_high_watermark(
    State(broker): Shared,
    _admin: super::admin::Admin,
    body: axum::body::Bytes,
) -> Result<axum::http::StatusCode, ApiError> {
    let body = super::admin::object(&body)?;
    let limit =
        match (body.get("relative"), body.get("absolute")) {
            (Some(relative), None) => match relative.as_f64() {
                Some(fraction) if (0.0..=1.0).contains(&fraction) => {
                    crate::alarm::memory_high_watermark(fraction, None)
                }
                _ => {
                    return Err(ApiError::BadRequest(json!(
                        "relative must be a fraction between 0.0 and 1.0"
                    )))
                }
            },
            (None, Some(absolute)) => Some(absolute.as_u64().ok_or_else(|| {
                ApiError::BadRequest(json!("absolute must be a number of bytes"))
            })?),
            _ => {
                return Err(ApiError::BadRequest(json!(
                    "expected one of relative or absolute"
                )))
            }
        };
    broker.memory_limit.set(limit);
    tracing::info!(limit_bytes = ?limit, "memory high watermark changed");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// A vhost as RabbitMQ 3.10 shows it (the metadata twice, as it does), with its queues' depths
/// and message counts together, and their rates.
fn vhost_json(v: &Vhost, queues: &[QueueSnapshot]) -> Value {
    let record = v.record();
    let mut metadata = json!({"description": record.description, "tags": record.tags});
    if let (Some(t), Some(m)) = (&record.default_queue_type, metadata.as_object_mut()) {
        m.insert("default_queue_type".into(), json!(t));
    }
    let sum =
        |f: fn(&QueueStats) -> u32| queues.iter().map(|q| u64::from(f(&q.stats))).sum::<u64>();
    let mut out = json!({
        "name": &v.name,
        "description": record.description,
        "tags": record.tags,
        "default_queue_type": record.default_queue_type.as_deref().unwrap_or("undefined"),
        "metadata": metadata,
        "tracing": false,
        "messages": sum(|s| s.ready) + sum(|s| s.unacked),
        "messages_ready": sum(|s| s.ready),
        "messages_unacknowledged": sum(|s| s.unacked),
    });
    if let Some(map) = out.as_object_mut() {
        let sampled: Vec<_> = queues.iter().map(|q| (&q.stats, &q.queue.rates)).collect();
        rates_json(&sampled, map);
    }
    out
}

pub async fn vhosts(State(broker): Shared, User(user): User) -> Answer {
    let mut list = Vec::new();
    for v in broker.vhosts() {
        if sees_vhost(&broker, &user, &v.name) {
            let queues = super::queue_snapshots(std::slice::from_ref(&v)).await;
            list.push(vhost_json(&v, &queues));
        }
    }
    Ok(Json(Value::Array(list)))
}

pub async fn vhost_one(
    State(broker): Shared,
    User(user): User,
    Path(name): Path<String>,
) -> Answer {
    // One vhost is for administrators only, as in RabbitMQ 3.10 (the listing is for all).
    if !has_tag(&broker, &user, &["administrator"]) {
        return Err(ApiError::NotAuthorised("Not administrator user"));
    }
    let v = vhost(&broker, &name)?;
    let queues = super::queue_snapshots(std::slice::from_ref(&v)).await;
    Ok(Json(vhost_json(&v, &queues)))
}

/// The vhosts whose objects `user` sees in listings across vhosts.
fn object_vhosts(broker: &Broker, user: &str) -> Vec<Arc<Vhost>> {
    broker
        .vhosts()
        .into_iter()
        .filter(|v| sees_objects_of(broker, user, &v.name))
        .collect()
}

pub async fn queues_all(State(broker): Shared, User(user): User, uri: Uri) -> Answer {
    let query = ListQuery::parse(&uri)?;
    let vhosts = object_vhosts(&broker, &user);
    Ok(Json(
        queues_json(&vhosts, broker.node_name(), &query).await?,
    ))
}

pub async fn queues_in(
    State(broker): Shared,
    User(user): User,
    Path(name): Path<String>,
    uri: Uri,
) -> Answer {
    authorise_vhost(&broker, &user, &name)?;
    let v = vhost(&broker, &name)?;
    let query = ListQuery::parse(&uri)?;
    Ok(Json(queues_json(&[v], broker.node_name(), &query).await?))
}

pub async fn queue_one(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, queue)): Path<(String, String)>,
) -> Answer {
    authorise_vhost(&broker, &user, &vhost_name)?;
    let v = vhost(&broker, &vhost_name)?;
    let q = v
        .queues()
        .into_iter()
        .find(|q| *q.name == *queue)
        .ok_or(ApiError::NotFound)?;
    let snapshot = super::queue_snapshot(&v.name, q).await;
    Ok(Json(queue_json(&snapshot, broker.node_name())))
}

pub async fn exchanges_all(State(broker): Shared, User(user): User, uri: Uri) -> Answer {
    let query = ListQuery::parse(&uri)?;
    let all: Vec<Value> = object_vhosts(&broker, &user)
        .iter()
        .flat_map(|v| exchanges_json(v))
        .collect();
    Ok(Json(query.apply(all)?))
}

pub async fn exchanges_in(
    State(broker): Shared,
    User(user): User,
    Path(name): Path<String>,
    uri: Uri,
) -> Answer {
    authorise_vhost(&broker, &user, &name)?;
    let v = vhost(&broker, &name)?;
    let query = ListQuery::parse(&uri)?;
    Ok(Json(query.apply(exchanges_json(&v))?))
}

pub async fn exchange_one(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, exchange)): Path<(String, String)>,
) -> Answer {
    authorise_vhost(&broker, &user, &vhost_name)?;
    let v = vhost(&broker, &vhost_name)?;
    // RabbitMQ names the default exchange `amq.default` in URLs.
    let wanted = if exchange == "amq.default" {
        ""
    } else {
        exchange.as_str()
    };
    exchanges_json(&v)
        .into_iter()
        .find(|e| e["name"] == wanted)
        .map(Json)
        .ok_or(ApiError::NotFound)
}
