//! The HTTP listener. For now it answers the health checks; the management API grows here.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::broker::Broker;

pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    let app = Router::new()
        .route(
            "/api/health/checks/alarms",
            get(|| async { Json(json!({"status": "ok"})) }),
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
