//! The HTTP listener: health checks, RabbitMQ's management API as far as it goes ([`api`]: the
//! read-only listings) and Prometheus metrics ([`metrics`]).

mod api;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::queue::{QueueCommand, QueueHandle, QueueStats};
use crate::vhost::Vhost;

/// A queue as the listings and metrics show it: its vhost, its handle, its counts.
struct QueueSnapshot {
    vhost: String,
    queue: Arc<QueueHandle>,
    stats: QueueStats,
}

/// One queue's snapshot; asking for it is not a use of the queue (`x-expires`).
async fn queue_snapshot(vhost: &str, queue: Arc<QueueHandle>) -> QueueSnapshot {
    let stats = queue
        .ask(|reply| QueueCommand::Stats { used: false, reply })
        .await
        .unwrap_or_default();
    QueueSnapshot {
        vhost: vhost.to_owned(),
        queue,
        stats,
    }
}

/// Every queue of these vhosts, by vhost and then by name.
async fn queue_snapshots(vhosts: &[Arc<Vhost>]) -> Vec<QueueSnapshot> {
    let mut out = Vec::new();
    for v in vhosts {
        let mut queues = v.queues();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        for q in queues {
            out.push(queue_snapshot(&v.name, q).await);
        }
    }
    out
}

/// RabbitMQ's answer: 200 `{"status":"ok"}`, or 503 with the alarms in effect.
fn alarms_health_check(broker: &Broker) -> (StatusCode, Json<serde_json::Value>) {
    let alarms = *broker.alarms().borrow();
    if !alarms.any() {
        return (StatusCode::OK, Json(json!({"status": "ok"})));
    }
    let node = node_name();
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

/// This node's name as the management API shows it, `warren@HOST` like RabbitMQ's `rabbit@HOST`.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let short = host.trim().split('.').next().unwrap_or_default();
    format!(
        "warren@{}",
        if short.is_empty() { "localhost" } else { short }
    )
}

pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    let app = Router::new()
        .route(
            "/api/health/checks/alarms",
            get(|State(broker): State<Arc<Broker>>| async move { alarms_health_check(&broker) }),
        )
        .route(
            "/api/aliveness-test/{vhost}",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route("/api/overview", get(api::overview))
        .route("/api/whoami", get(api::whoami))
        .route("/api/nodes", get(api::nodes))
        .route("/api/vhosts", get(api::vhosts))
        .route("/api/vhosts/{vhost}", get(api::vhost_one))
        .route("/api/queues", get(api::queues_all))
        .route("/api/queues/{vhost}", get(api::queues_in))
        .route("/api/queues/{vhost}/{name}", get(api::queue_one))
        .route("/api/exchanges", get(api::exchanges_all))
        .route("/api/exchanges/{vhost}", get(api::exchanges_in))
        .route("/api/exchanges/{vhost}/{name}", get(api::exchange_one))
        .route("/api/bindings", get(api::bindings_all))
        .route("/api/bindings/{vhost}", get(api::bindings_in))
        .route("/metrics", get(metrics::totals))
        .route("/metrics/per-object", get(metrics::per_object))
        .with_state(broker);
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service).await {
        tracing::error!("http listener failed: {e}");
    }
}
