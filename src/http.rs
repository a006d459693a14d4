//! The HTTP listener. For now it answers the health checks; the management API grows here.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::broker::Broker;

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
    let alarms_broker = broker.clone();
    let app = Router::new()
        .route(
            "/api/health/checks/alarms",
            get(move || {
                let broker = alarms_broker.clone();
                async move { alarms_health_check(&broker) }
            }),
        )
        .route(
            "/api/aliveness-test/{vhost}",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route(
            "/api/overview",
            get(move || {
                let broker = broker.clone();
                async move {
                    Json(json!({
                        "product_name": "Warren",
                        "product_version": env!("CARGO_PKG_VERSION"),
                        "object_totals": {"connections": broker.connection_count()},
                    }))
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("http listener failed: {e}");
    }
}
