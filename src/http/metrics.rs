//! Prometheus metrics in the text exposition format, with the names RabbitMQ's
//! `rabbitmq_prometheus` plugin uses (so that its dashboards and alerts apply): `/metrics` gives
//! node-wide totals, `/metrics/per-object` adds per-queue series. Unauthenticated, as RabbitMQ's.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::broker::Broker;
use crate::queue::QueueStats;

/// One metric family being written: its `# HELP` / `# TYPE` header once, then its samples.
struct Exposition(String);

impl Exposition {
    fn gauge(&mut self, name: &str, help: &str, samples: &[(String, f64)]) {
        let _ = writeln!(self.0, "# TYPE {name} gauge\n# HELP {name} {help}");
        for (labels, value) in samples {
            let _ = writeln!(self.0, "{name}{labels} {value}");
        }
    }

    fn single(&mut self, name: &str, help: &str, value: f64) {
        self.gauge(name, help, &[(String::new(), value)]);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let _ = writeln!(
            self.0,
            "# TYPE {name} counter\n# HELP {name} {help}\n{name} {value}"
        );
    }
}

/// `{k="v",...}` with the values escaped as the format requires.
fn labels(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

async fn render(broker: &Broker, per_object: bool) -> String {
    // Each node reports the queues that live on it (as RabbitMQ's Prometheus plugin does): a
    // cluster's figures are the sum of its nodes'.
    let queues = super::queue_snapshots_where(&broker.vhosts(), |q| {
        q.home
            .as_deref()
            .is_none_or(|home| home == broker.node_name())
    })
    .await;
    let total =
        |f: fn(&QueueStats) -> u32| queues.iter().map(|q| f64::from(f(&q.stats))).sum::<f64>();
    let alarms = *broker.alarms().borrow();
    let c = &broker.config;
    let node = broker.node_name().to_owned();
    let cluster = super::api::cluster_name(broker);
    let mut out = Exposition(String::new());
    out.gauge(
        "rabbitmq_identity_info",
        "RabbitMQ node & cluster identity info",
        &[(
            labels(&[("rabbitmq_node", &node), ("rabbitmq_cluster", &cluster)]),
            1.0,
        )],
    );
    out.gauge(
        "rabbitmq_build_info",
        "RABBITMQ-SERVER build info",
        &[(
            labels(&[
                ("product", "Warren"),
                ("product_version", env!("CARGO_PKG_VERSION")),
            ]),
            1.0,
        )],
    );
    out.single(
        "rabbitmq_connections",
        "Connections currently open",
        broker.connection_count() as f64,
    );
    out.single("rabbitmq_queues", "Queues available", queues.len() as f64);
    out.single(
        "rabbitmq_consumers",
        "Consumers currently connected",
        total(|i| i.consumers),
    );
    // Totals, or one series per queue (a family appears once either way, as the format requires).
    let series = |f: fn(&QueueStats) -> u64| -> Vec<(String, f64)> {
        if per_object {
            queues
                .iter()
                .map(|s| {
                    let labels = labels(&[("vhost", &s.vhost), ("queue", &s.queue.name)]);
                    (labels, f(&s.stats) as f64)
                })
                .collect()
        } else {
            vec![(
                String::new(),
                queues.iter().map(|s| f(&s.stats) as f64).sum(),
            )]
        }
    };
    out.gauge(
        "rabbitmq_queue_messages_ready",
        "Messages ready to be delivered to consumers",
        &series(|i| u64::from(i.ready)),
    );
    out.gauge(
        "rabbitmq_queue_messages_unacked",
        "Messages delivered to consumers but not yet acknowledged",
        &series(|i| u64::from(i.unacked)),
    );
    out.gauge(
        "rabbitmq_queue_messages",
        "Sum of ready and unacknowledged messages - total queue depth",
        &series(|i| u64::from(i.ready) + u64::from(i.unacked)),
    );
    // Streams' logs (Warren's own series).
    let streams = |f: fn(&warren_storage::stream::StreamFigures) -> u64| -> Vec<(String, f64)> {
        let figures = queues
            .iter()
            .filter_map(|s| s.queue.stream_figures().map(|f| (s, f)));
        if per_object {
            figures
                .map(|(s, fig)| {
                    let labels = labels(&[("vhost", &s.vhost), ("queue", &s.queue.name)]);
                    (labels, f(&fig) as f64)
                })
                .collect()
        } else {
            vec![(String::new(), figures.map(|(_, fig)| f(&fig) as f64).sum())]
        }
    };
    out.gauge(
        "warren_stream_segments",
        "Segment files of streams",
        &streams(|f| f.segments as u64),
    );
    out.gauge(
        "warren_stream_disk_bytes",
        "Bytes of streams' segment files",
        &streams(|f| f.bytes),
    );
    out.single(
        "warren_stream_read_ahead_bytes",
        "Bytes stream consumers have read ahead from disk and not yet delivered, reads under way included",
        crate::queue::stream::read_ahead_bytes() as f64,
    );
    if let Some(cluster) = broker.cluster.get() {
        out.single(
            "warren_raft_group_logs",
            "Raft groups whose log this node's database holds: the metadata's, and each quorum queue's and replicated stream's member here, until it lets go of it",
            cluster.raft_db().group_count() as f64,
        );
    }
    out.single(
        "warren_quorum_members_asleep",
        "Quorum queue members of this node asleep while idle (their tasks and channels let go)",
        crate::queue::quorum::members_asleep() as f64,
    );
    out.single(
        "warren_quorum_machines_packed",
        "Quorum queue members of this node asleep with nothing in their queue, their state machine packed into its snapshot's bytes",
        crate::queue::quorum::machines_packed() as f64,
    );
    let t = broker.counters.totals();
    for (name, help, value) in [
        ("received", "Total number of messages received from publishers", t.received),
        ("routed", "Total number of messages routed to queues or streams", t.routed),
        (
            "unroutable_dropped",
            "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
            t.unroutable_dropped,
        ),
        (
            "unroutable_returned",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            t.unroutable_returned,
        ),
        ("delivered", "Total number of messages delivered to consumers", t.delivered),
        (
            "acknowledged",
            "Total number of messages acknowledged by consumers",
            t.acknowledged,
        ),
        (
            "confirmed",
            "Total number of messages confirmed to publishers",
            t.confirmed,
        ),
    ] {
        out.counter(&format!("rabbitmq_global_messages_{name}_total"), help, value);
    }
    if per_object {
        out.gauge(
            "rabbitmq_queue_consumers",
            "Consumers on a queue",
            &series(|i| u64::from(i.consumers)),
        );
    }
    out.single(
        "rabbitmq_alarms_memory_used_watermark",
        "is 1 if VM memory watermark alarm is in effect",
        f64::from(u8::from(alarms.memory)),
    );
    out.single(
        "rabbitmq_alarms_free_disk_space_watermark",
        "is 1 if free disk space watermark alarm is in effect",
        f64::from(u8::from(alarms.disk)),
    );
    if let Some(rss) = resident_memory_bytes() {
        out.single(
            "rabbitmq_process_resident_memory_bytes",
            "Memory used in bytes",
            rss as f64,
        );
    }
    if let Some(limit) = broker.memory_limit.get() {
        out.single(
            "rabbitmq_resident_memory_limit_bytes",
            "Memory high watermark in bytes",
            limit as f64,
        );
    }
    if let Some(free) = crate::alarm::free_bytes(&c.data_dir) {
        out.single(
            "rabbitmq_disk_space_available_bytes",
            "Disk space available in bytes",
            free as f64,
        );
    }
    out.single(
        "rabbitmq_disk_space_available_limit_bytes",
        "Free disk space low watermark in bytes",
        c.disk_free_limit as f64,
    );
    out.0
}

fn text(body: String) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

pub async fn totals(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    text(render(&broker, false).await)
}

pub async fn per_object(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    text(render(&broker, true).await)
}
