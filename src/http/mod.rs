//! The HTTP listener: health checks ([`health`]), RabbitMQ's management API as far as it goes
//! ([`api`]: the read-only listings; [`admin`]: users, vhosts, permissions;
//! [`topic_permissions`]; [`limits`]: vhost and user limits; [`policies`]: policies and operator
//! policies; [`queues`],
//! [`exchanges`], [`bindings`]: declaring, deleting, purging, binding, publishing and getting,
//! with [`access`] deciding who may and how refusals read; [`definitions`]: export and import;
//! [`connections`] and [`channels`]: the live connections, channels and consumers; [`members`]:
//! quorum queues' members; [`listing`]: RabbitMQ's paging, filtering and sorting of the lists),
//! Prometheus metrics ([`metrics`]) and the web UI ([`ui`]: the page at `/` and its files), on an
//! accept loop of its own that bounds what HTTP clients can hold: a request-head (and idle)
//! timeout, a cap on connections and on request bodies.

mod access;
mod admin;
mod api;
mod binding_key;
mod bindings;
mod channels;
mod connections;
mod definitions;
mod exchanges;
mod health;
mod limits;
mod listing;
mod members;
mod message_json;
mod metrics;
mod policies;
mod queues;
mod stall;
mod topic_permissions;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::{delete, get, post, put};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutBody;

use crate::broker::Broker;
use crate::queue::{QueueHandle, QueueStats};
use crate::vhost::Vhost;

/// How long an HTTP connection may take to send a complete request head: from accept, and from
/// the end of each response on a kept-alive connection (so it is the idle timeout as well).
/// RabbitMQ's listener closed idle and half-sent requests within 5 s as well.
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP connections served at once; more wait, unaccepted, until one closes.
pub const MAX_CONNECTIONS: usize = 256;
/// A request body that stops coming this long fails its request; a connection whose response
/// is not read for this long is closed. Waiting for a handler's answer, however long, is not a
/// stall.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest request body read (a definitions file, a published message), in octets; a
/// larger one is answered 413 before it is read. RabbitMQ 3.10 has no limit; this one bounds what
/// the connection cap (256) lets HTTP clients hold.
pub const MAX_BODY: usize = 32 << 20;

/// A queue as the listings and metrics show it: its vhost, its handle, its counts.
struct QueueSnapshot {
    vhost: String,
    queue: Arc<QueueHandle>,
    stats: QueueStats,
}

/// One queue's snapshot; asking for it is not a use of the queue (`x-expires`).
async fn queue_snapshot(vhost: &str, queue: Arc<QueueHandle>) -> QueueSnapshot {
    let stats = queue.stats(false).await.unwrap_or_default();
    QueueSnapshot {
        vhost: vhost.to_owned(),
        queue,
        stats,
    }
}

/// Every queue of these vhosts, by vhost and then by name.
async fn queue_snapshots(vhosts: &[Arc<Vhost>]) -> Vec<QueueSnapshot> {
    queue_snapshots_where(vhosts, |_| true).await
}

/// The queues of these vhosts that `keep` keeps, by vhost and then by name.
async fn queue_snapshots_where(
    vhosts: &[Arc<Vhost>],
    keep: impl Fn(&QueueHandle) -> bool,
) -> Vec<QueueSnapshot> {
    let mut out = Vec::new();
    for v in vhosts {
        let mut queues = v.queues();
        queues.retain(|q| keep(q));
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        for q in queues {
            out.push(queue_snapshot(&v.name, q).await);
        }
    }
    out
}

/// Every route: health checks, the management API, the metrics, the web UI.
fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .route("/api/health/checks/alarms", get(health::alarms))
        .route("/api/health/checks/local-alarms", get(health::local_alarms))
        .route(
            "/api/health/checks/virtual-hosts",
            get(health::virtual_hosts),
        )
        .route(
            "/api/health/checks/node-is-mirror-sync-critical",
            get(health::single_node),
        )
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(health::single_node),
        )
        .route(
            "/api/health/checks/port-listener/{port}",
            get(health::port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(health::protocol_listener),
        )
        .route(
            "/api/health/checks/certificate-expiration/{within}/{unit}",
            get(health::certificate_expiration),
        )
        .route("/api/aliveness-test/{vhost}", get(health::aliveness_test))
        .route("/api/overview", get(api::overview))
        .route("/api/whoami", get(api::whoami))
        .route("/api/nodes", get(api::nodes))
        .route(
            "/api/cluster-name",
            get(api::get_cluster_name).put(api::put_cluster_name),
        )
        .route(
            "/api/vm-memory-high-watermark",
            put(api::put_vm_memory_high_watermark),
        )
        .route("/api/vhosts", get(api::vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(api::vhost_one)
                .put(admin::put_vhost)
                .delete(admin::delete_vhost),
        )
        .route(
            "/api/vhosts/{vhost}/permissions",
            get(admin::vhost_permissions),
        )
        .route("/api/users", get(admin::users))
        .route(
            "/api/users/{name}",
            get(admin::user_one)
                .put(admin::put_user)
                .delete(admin::delete_user),
        )
        .route(
            "/api/users/{name}/permissions",
            get(admin::user_permissions),
        )
        .route("/api/permissions", get(admin::permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(admin::permission_one)
                .put(admin::put_permission)
                .delete(admin::delete_permission),
        )
        .route("/api/topic-permissions", get(topic_permissions::all))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(topic_permissions::of_user_in_vhost)
                .put(topic_permissions::put)
                .delete(topic_permissions::delete),
        )
        .route(
            "/api/topic-permissions/{vhost}/{user}/{exchange}",
            get(topic_permissions::of_user_in_vhost_on).delete(topic_permissions::delete_on),
        )
        .route(
            "/api/users/{name}/topic-permissions",
            get(topic_permissions::of_user),
        )
        .route(
            "/api/vhosts/{vhost}/topic-permissions",
            get(topic_permissions::in_vhost),
        )
        .route("/api/vhost-limits", get(limits::vhost_limits))
        .route("/api/vhost-limits/{vhost}", get(limits::vhost_limits_in))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            axum::routing::put(limits::put_vhost_limit).delete(limits::delete_vhost_limit),
        )
        .route("/api/user-limits", get(limits::user_limits))
        .route("/api/user-limits/{user}", get(limits::user_limits_of_one))
        .route(
            "/api/user-limits/{user}/{name}",
            axum::routing::put(limits::put_user_limit).delete(limits::delete_user_limit),
        )
        // User policies, then operator policies: the same handlers (`policies.rs`).
        .route("/api/policies", get(policies::list::<false>))
        .route("/api/policies/{vhost}", get(policies::list_vhost::<false>))
        .route(
            "/api/policies/{vhost}/{name}",
            get(policies::get::<false>)
                .put(policies::put::<false>)
                .delete(policies::delete::<false>),
        )
        .route("/api/operator-policies", get(policies::list::<true>))
        .route(
            "/api/operator-policies/{vhost}",
            get(policies::list_vhost::<true>),
        )
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(policies::get::<true>)
                .put(policies::put::<true>)
                .delete(policies::delete::<true>),
        )
        .route("/api/queues", get(api::queues_all))
        .route("/api/queues/{vhost}", get(api::queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(api::queue_one).put(queues::put).delete(queues::delete),
        )
        .route(
            "/api/queues/quorum/{vhost}/{name}/status",
            get(queues::quorum_status),
        )
        .route(
            "/api/queues/quorum/{vhost}/{name}/replicas/add",
            post(members::add),
        )
        .route(
            "/api/queues/quorum/{vhost}/{name}/replicas/delete",
            delete(members::delete),
        )
        .route(
            "/api/queues/quorum/replicas/on/{node}/grow",
            post(members::grow),
        )
        .route(
            "/api/queues/quorum/replicas/on/{node}/shrink",
            delete(members::shrink),
        )
        .route("/api/rebalance/queues", post(members::rebalance))
        .route("/api/queues/{vhost}/{name}/contents", delete(queues::purge))
        .route("/api/queues/{vhost}/{name}/get", post(queues::get))
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            get(bindings::to_queue),
        )
        .route("/api/exchanges", get(api::exchanges_all))
        .route("/api/exchanges/{vhost}", get(api::exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(api::exchange_one)
                .put(exchanges::put)
                .delete(exchanges::delete),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            post(exchanges::publish),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(bindings::from_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(bindings::to_exchange),
        )
        .route("/api/bindings", get(bindings::all))
        .route("/api/bindings/{vhost}", get(bindings::in_vhost))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(bindings::between).post(bindings::create),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(bindings::get_one).delete(bindings::delete),
        )
        .route(
            "/api/definitions",
            get(definitions::export_all).post(definitions::import_all),
        )
        .route(
            "/api/definitions/{vhost}",
            get(definitions::export_vhost).post(definitions::import_vhost),
        )
        .route("/api/connections", get(connections::all))
        .route(
            "/api/connections/{name}",
            get(connections::get_one).delete(connections::delete),
        )
        .route(
            "/api/connections/{name}/channels",
            get(channels::of_connection),
        )
        .route(
            "/api/vhosts/{vhost}/connections",
            get(connections::in_vhost),
        )
        .route("/api/channels", get(channels::all))
        .route("/api/channels/{name}", get(channels::get_one))
        .route("/api/vhosts/{vhost}/channels", get(channels::in_vhost))
        .route("/api/consumers", get(channels::consumers_all))
        .route("/api/consumers/{vhost}", get(channels::consumers_in))
        .route("/metrics", get(metrics::totals))
        .route("/metrics/per-object", get(metrics::per_object))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(broker)
}

/// Answers one management API request in-process, as `user` (who logged in on an AMQP
/// connection): the same handlers, checks and answers as over HTTP. For management over AMQP
/// (`crate::management`). The status and the body.
pub async fn call_as(
    broker: Arc<Broker>,
    user: String,
    peer: SocketAddr,
    method: axum::http::Method,
    path: &str,
    body: Vec<u8>,
) -> (u16, axum::body::Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .extension(api::AuthenticatedOverAmqp(user))
        .extension(ConnectInfo(peer))
        .body(axum::body::Body::from(body));
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            let answer = serde_json::json!({"error": "bad_request", "reason": e.to_string()});
            return (400, answer.to_string().into());
        }
    };
    let response = match router(broker).oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    // Bodies are the API's answers: bounded like requests.
    let body = axum::body::to_bytes(response.into_body(), MAX_BODY)
        .await
        .unwrap_or_default();
    (status, body)
}

/// Serves HTTP on `listener` until the future is dropped (which closes every HTTP connection).
///
/// A connection has [`REQUEST_HEAD_TIMEOUT`] to send a complete request head, counted from
/// accept and again after each response: an idle keep-alive connection, or one that sends part
/// of a request and stalls, is closed then. At most [`MAX_CONNECTIONS`] are served at once; while
/// that many are open, further ones are not accepted (they wait in the listen backlog, holding no
/// file descriptor of ours), so HTTP clients cannot use up the descriptors AMQP accepts need.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    let app = router(broker);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Owned here so that the connections end with the listener (at shutdown).
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            (stream, peer, slot) = accept(&listener, &slots) => {
                connections.spawn(serve_connection(stream, peer, app.clone(), slot));
            }
        }
    }
}

/// The next connection, once a slot is free for it. Cancel-safe: dropping it loses no
/// connection (`accept` is cancel-safe) and gives the slot back.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let slot = match slots.clone().acquire_owned().await {
        Ok(slot) => slot,
        // The semaphore is never closed.
        Err(_) => return std::future::pending().await,
    };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => return (stream, peer, slot),
            Err(e) => {
                tracing::warn!("http accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One HTTP/1.1 connection; `_slot` is given back when it closes.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    _slot: OwnedSemaphorePermit,
) {
    // Handlers that check credentials need the peer (guest may only log in from loopback). A
    // request body that stops coming for STALL_TIMEOUT fails the handler reading it.
    let service = app.map_request(move |request: Request<Incoming>| {
        let mut request =
            request.map(|body| axum::body::Body::new(TimeoutBody::new(STALL_TIMEOUT, body)));
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_HEAD_TIMEOUT)
        .serve_connection(
            TokioIo::new(stall::Stall::new(stream, STALL_TIMEOUT)),
            TowerToHyperService::new(service),
        );
    if let Err(e) = connection.await {
        tracing::debug!(%peer, "http connection closed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `app` served on one connection, as the listener serves each: the client's end, and the
    /// task that ends when the connection closes.
    async fn one_connection(app: Router) -> (TcpStream, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            let slot = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
            serve_connection(stream, peer, app, slot).await;
        });
        (TcpStream::connect(address).await.unwrap(), server)
    }

    /// A handler that takes longer than the stall timeout (a quorum queue's member change may
    /// take most of a minute) still gets its answer to a client that waits for it: waiting for
    /// the handler is not a stalled peer.
    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_is_answered_on_a_connection_that_waits() {
        let slow = STALL_TIMEOUT * 3;
        let app = Router::new().route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(slow).await;
                "done"
            }),
        );
        let (mut client, server) = one_connection(app).await;
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with("done"), "{answer:?}");
        server.await.unwrap();
    }

    /// A request body that stops coming half-way fails the request once it has not moved for
    /// the stall timeout, and the connection is closed: the client holds no slot for good.
    #[tokio::test(start_paused = true)]
    async fn a_request_body_that_stops_coming_fails_its_request() {
        let app = Router::new().route("/echo", post(|body: String| async move { body }));
        let (mut client, server) = one_connection(app).await;
        let sent = tokio::time::Instant::now();
        client
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nten octets")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
        assert!(sent.elapsed() >= STALL_TIMEOUT, "{:?}", sent.elapsed());
        server.await.unwrap();
    }
}
