//! Queues, connections, definitions and the node's state.

use std::io::Read as _;

use serde_json::{json, Value};

use super::client::{segment, ClientError, Method, Missing, Request};
use super::table::{cell, pid, render_table};
use super::{Ctl, CtlError};

fn queue_request(
    ctl: &Ctl,
    method: Method,
    queue: &str,
    suffix: &str,
    missing: Missing,
) -> Request {
    let v = &ctl.vhost;
    Request::new(
        method,
        format!("/api/queues/{}/{}{suffix}", segment(v), segment(queue)),
        format!("queue '{queue}' in vhost '{v}'"),
    )
    .in_vhost(v)
    .missing(missing)
}

pub async fn purge_queue(ctl: &Ctl, queue: &str) -> Result<(), CtlError> {
    ctl.say(&format!(
        "Purging queue '{queue}' in vhost '{}' ...",
        ctl.vhost
    ));
    ctl.client
        .call(queue_request(
            ctl,
            Method::Delete,
            queue,
            "/contents",
            Missing::Unavailable,
        ))
        .await?;
    Ok(())
}

pub async fn delete_queue(
    ctl: &Ctl,
    queue: &str,
    if_empty: bool,
    if_unused: bool,
) -> Result<(), CtlError> {
    ctl.say(&format!(
        "Deleting queue '{queue}' on vhost '{}' ...",
        ctl.vhost
    ));
    let conditions: Vec<&str> = [(if_empty, "if-empty=true"), (if_unused, "if-unused=true")]
        .into_iter()
        .filter_map(|(on, q)| on.then_some(q))
        .collect();
    let query = if conditions.is_empty() {
        String::new()
    } else {
        format!("?{}", conditions.join("&"))
    };
    ctl.client
        .call(queue_request(
            ctl,
            Method::Delete,
            queue,
            &query,
            Missing::DeletedQueue,
        ))
        .await?;
    Ok(())
}

/// Closes a connection named by its pid (as `list_connections pid` prints it) or its name.
/// A pid no open connection has is not an error: rabbitmqctl, too, exits 0 for a connection
/// that is already gone.
pub async fn close_connection(ctl: &Ctl, connection: &str, reason: &str) -> Result<(), CtlError> {
    ctl.say(&format!(
        "Closing connection {connection}, reason: {reason}..."
    ));
    let looks_like_pid = connection.starts_with('<') && connection.ends_with('>');
    if !looks_like_pid {
        return close_named(ctl, connection, reason).await;
    }
    let open = open_connections(ctl, None).await?;
    match open
        .iter()
        .find(|c| connection_pid(c).as_deref() == Some(connection))
    {
        Some(c) => match c.get("name").and_then(Value::as_str) {
            Some(name) => close_named(ctl, name, reason).await,
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// The pid `list_connections pid` prints for this item of `/api/connections`.
fn connection_pid(connection: &Value) -> Option<String> {
    let node = connection.get("node").and_then(Value::as_str)?;
    let name = connection.get("name").and_then(Value::as_str)?;
    Some(pid(node, name))
}

/// The open connections: of one vhost, or of all.
async fn open_connections(ctl: &Ctl, vhost: Option<&str>) -> Result<Vec<Value>, CtlError> {
    let request = match vhost {
        Some(v) => Request::get(
            format!("/api/vhosts/{}/connections", segment(v)),
            format!("vhost '{v}'"),
        )
        .in_vhost(v)
        .missing(Missing::Unavailable),
        None => Request::get("/api/connections".into(), "connections"),
    };
    match ctl.client.call(request).await? {
        Value::Array(items) => Ok(items),
        _ => Ok(Vec::new()),
    }
}

async fn close_named(ctl: &Ctl, name: &str, reason: &str) -> Result<(), CtlError> {
    let mut request = Request::new(
        Method::Delete,
        format!("/api/connections/{}", segment(name)),
        format!("connection '{name}'"),
    );
    request.reason = Some(reason.to_owned());
    ctl.client.call(request).await?;
    Ok(())
}

/// Closes the connections of `vhost` (None: of every vhost), at most `limit` of them.
pub async fn close_all_connections(
    ctl: &Ctl,
    vhost: Option<&str>,
    limit: Option<usize>,
    reason: &str,
) -> Result<(), CtlError> {
    match vhost {
        Some(v) => ctl.say(&format!(
            "Closing all connections in vhost {v}, reason: {reason}..."
        )),
        None => ctl.say(&format!(
            "Closing all connections to node {} (across all vhosts), reason: {reason}...",
            ctl.client.target()
        )),
    }
    let open = open_connections(ctl, vhost).await?;
    let mut closed = 0;
    for name in open
        .iter()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .take(limit.unwrap_or(usize::MAX))
    {
        match close_named(ctl, name, reason).await {
            Ok(()) => closed += 1,
            // Gone since the listing: nothing left to close.
            Err(CtlError::Client(ClientError::NotFound { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    ctl.say(&format!("Closed {closed} connections"));
    Ok(())
}

/// What `set_vm_memory_high_watermark` sets: a fraction of the memory, or a size in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Watermark {
    Relative(f64),
    Absolute(u64),
}

impl Watermark {
    /// rabbitmqctl's arguments: `FRACTION` or `absolute SIZE` (bytes, or with a unit: k, KiB,
    /// KB, M, MiB, MB, G, GiB, GB).
    pub fn parse(first: &str, size: Option<&str>) -> Result<Watermark, CtlError> {
        match (first, size) {
            ("absolute", Some(size)) => parse_size(size).map(Watermark::Absolute).ok_or_else(|| {
                CtlError::BadArgument(format!(
                    "the memory limit must be a number of bytes, with an optional unit (such as 512MB): {size}"
                ))
            }),
            ("absolute", None) => Err(CtlError::Usage(
                "absolute needs a size: set_vm_memory_high_watermark absolute SIZE".into(),
            )),
            (fraction, None) => match fraction.parse::<f64>() {
                Ok(f) if (0.0..=1.0).contains(&f) => Ok(Watermark::Relative(f)),
                _ => Err(CtlError::BadArgument(
                    "The threshold should be a fraction between 0.0 and 1.0".into(),
                )),
            },
            (_, Some(_)) => Err(CtlError::Usage(
                "expected a FRACTION or `absolute SIZE`".into(),
            )),
        }
    }
}

/// `1073741824`, `1GB` (10^9), `1GiB` or `1G` (2^30), as RabbitMQ reads memory sizes.
fn parse_size(text: &str) -> Option<u64> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit {
        "" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "KB" | "kB" => 1_000,
        "M" | "MiB" => 1 << 20,
        "MB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

pub async fn set_vm_memory_high_watermark(ctl: &Ctl, watermark: Watermark) -> Result<(), CtlError> {
    let target = ctl.client.target().to_owned();
    let body = match watermark {
        Watermark::Relative(fraction) => {
            ctl.say(&format!(
                "Setting memory threshold on {target} to {fraction} ..."
            ));
            json!({ "relative": fraction })
        }
        Watermark::Absolute(bytes) => {
            ctl.say(&format!(
                "Setting memory threshold on {target} to {bytes} bytes ..."
            ));
            json!({ "absolute": bytes })
        }
    };
    let request = Request::new(
        Method::Put,
        "/api/vm-memory-high-watermark".into(),
        "the memory high watermark",
    )
    .body(body);
    ctl.client.call(request).await?;
    Ok(())
}

pub async fn set_cluster_name(ctl: &Ctl, name: &str) -> Result<(), CtlError> {
    ctl.say(&format!("Setting cluster name to {name} ..."));
    let request = Request::new(Method::Put, "/api/cluster-name".into(), "cluster name")
        .body(json!({ "name": name }));
    ctl.client.call(request).await?;
    Ok(())
}

fn overview_request() -> Request {
    Request::get("/api/overview".into(), "overview")
}

/// Asks the node for its overview: "Ping succeeded" when it answers, as rabbitmqctl's `ping`.
pub async fn ping(ctl: &Ctl) -> Result<(), CtlError> {
    ctl.say(&format!("Will ping {}.", ctl.client.target()));
    ctl.client.call(overview_request()).await?;
    ctl.print("Ping succeeded\n")
}

/// Waits until the node answers (a node still starting refuses connections), up to the
/// timeout: then the last failure.
pub async fn await_startup(ctl: &Ctl) -> Result<(), CtlError> {
    let deadline = tokio::time::Instant::now() + ctl.timeout;
    loop {
        match ctl.client.call(overview_request()).await {
            Ok(_) => return Ok(()),
            Err(e @ (ClientError::Unreachable { .. } | ClientError::Status { .. }))
                if tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(error = %e, "the node is not up yet");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn definitions_request(method: Method) -> Request {
    Request::new(method, "/api/definitions".into(), "definitions")
}

pub async fn export_definitions(ctl: &Ctl, file: &str) -> Result<(), CtlError> {
    ctl.say(&format!("Exporting definitions to {file} ..."));
    let definitions = ctl.client.call(definitions_request(Method::Get)).await?;
    let text = serde_json::to_string_pretty(&definitions)
        .map_err(|e| ClientError::BadResponse(e.to_string()))?
        + "\n";
    if file == "-" {
        return ctl.print(&text);
    }
    std::fs::write(file, text).map_err(|source| CtlError::File {
        action: "cannot write",
        path: file.to_owned(),
        source,
    })
}

pub async fn import_definitions(ctl: &Ctl, file: &str) -> Result<(), CtlError> {
    ctl.say(&format!("Importing definitions from {file} ..."));
    let read_error = |source| CtlError::File {
        action: "cannot read",
        path: file.to_owned(),
        source,
    };
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_error)?;
        text
    } else {
        std::fs::read_to_string(file).map_err(read_error)?
    };
    let definitions = super::parse_json(file, &text)?;
    ctl.client
        .call(definitions_request(Method::Post).body(definitions))
        .await?;
    Ok(())
}

/// Prints `pairs` as a two-column table (or one JSON object).
fn print_pairs(ctl: &Ctl, pairs: Vec<(&str, Value)>) -> Result<(), CtlError> {
    if ctl.json {
        let object: serde_json::Map<String, Value> =
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        return ctl.print(&format!("{}\n", Value::Object(object)));
    }
    let rows: Vec<Vec<String>> = pairs
        .into_iter()
        .map(|(k, v)| vec![k.to_owned(), cell(&v)])
        .collect();
    ctl.print(&render_table(&["key", "value"], &rows, ctl.headers))
}

/// The overview's main facts (with `--json`, the whole overview).
pub async fn status(ctl: &Ctl) -> Result<(), CtlError> {
    let overview = ctl
        .client
        .call(Request::get("/api/overview".into(), "overview"))
        .await?;
    if ctl.json {
        return ctl.print(&format!("{overview}\n"));
    }
    let field = |path: &[&str]| {
        path.iter()
            .try_fold(&overview, |v, key| v.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    print_pairs(
        ctl,
        vec![
            ("node", field(&["node"])),
            ("cluster_name", field(&["cluster_name"])),
            ("product_name", field(&["product_name"])),
            ("product_version", field(&["product_version"])),
            ("rabbitmq_version", field(&["rabbitmq_version"])),
            ("management_version", field(&["management_version"])),
            ("connections", field(&["object_totals", "connections"])),
            ("channels", field(&["object_totals", "channels"])),
            ("exchanges", field(&["object_totals", "exchanges"])),
            ("queues", field(&["object_totals", "queues"])),
            ("consumers", field(&["object_totals", "consumers"])),
            ("messages", field(&["queue_totals", "messages"])),
            ("messages_ready", field(&["queue_totals", "messages_ready"])),
            (
                "messages_unacknowledged",
                field(&["queue_totals", "messages_unacknowledged"]),
            ),
            ("listeners", field(&["listeners"])),
        ],
    )
}

/// The cluster's name and nodes (from /api/overview and /api/nodes), and which are running.
pub async fn cluster_status(ctl: &Ctl) -> Result<(), CtlError> {
    let overview = ctl
        .client
        .call(Request::get("/api/overview".into(), "overview"))
        .await?;
    let nodes = ctl
        .client
        .call(Request::get("/api/nodes".into(), "nodes"))
        .await?;
    let nodes = nodes.as_array().cloned().unwrap_or_default();
    let name = |n: &Value| n.get("name").cloned().unwrap_or(Value::Null);
    let all: Vec<Value> = nodes.iter().map(name).collect();
    let running: Vec<Value> = nodes
        .iter()
        .filter(|n| n.get("running").and_then(Value::as_bool).unwrap_or(false))
        .map(name)
        .collect();
    let disk: Vec<Value> = nodes
        .iter()
        .filter(|n| n.get("type").and_then(Value::as_str) != Some("ram"))
        .map(name)
        .collect();
    print_pairs(
        ctl,
        vec![
            (
                "cluster_name",
                overview.get("cluster_name").cloned().unwrap_or(Value::Null),
            ),
            ("nodes", Value::Array(all)),
            ("disk_nodes", Value::Array(disk)),
            ("running_nodes", Value::Array(running)),
        ],
    )
}

/// A request about quorum queue `queue`'s members (`/api/queues/quorum/V/Q/replicas/ACTION`).
fn members_request(ctl: &Ctl, method: Method, queue: &str, action: &str, node: &str) -> Request {
    let v = &ctl.vhost;
    Request::new(
        method,
        format!(
            "/api/queues/quorum/{}/{}/replicas/{action}",
            segment(v),
            segment(queue)
        ),
        format!("queue '{queue}' in vhost '{v}'"),
    )
    .body(json!({ "node": node }))
    .in_vhost(v)
    .missing(Missing::Unavailable)
}

pub async fn add_member(ctl: &Ctl, queue: &str, node: &str) -> Result<(), CtlError> {
    ctl.say(&format!(
        "Adding a replica for queue {queue} on node {node}..."
    ));
    let request = members_request(ctl, Method::Post, queue, "add", node);
    ctl.client.call(request).await?;
    Ok(())
}

pub async fn delete_member(ctl: &Ctl, queue: &str, node: &str) -> Result<(), CtlError> {
    ctl.say(&format!(
        "Removing a replica of queue {queue} in vhost {} on node {node}...",
        ctl.vhost
    ));
    let request = members_request(ctl, Method::Delete, queue, "delete", node);
    ctl.client.call(request).await?;
    Ok(())
}

pub async fn grow(
    ctl: &Ctl,
    node: &str,
    strategy: &str,
    vhost_pattern: &str,
    queue_pattern: &str,
) -> Result<(), CtlError> {
    ctl.say(&format!(
        "Growing {strategy} quorum queues matching {queue_pattern} in vhosts matching {vhost_pattern} to {node}..."
    ));
    let request = Request::new(
        Method::Post,
        format!("/api/queues/quorum/replicas/on/{}/grow", segment(node)),
        format!("node '{node}'"),
    )
    .body(json!({
        "strategy": strategy,
        "vhost_pattern": vhost_pattern,
        "queue_pattern": queue_pattern,
    }));
    ctl.client.call(request).await?;
    Ok(())
}

pub async fn shrink(ctl: &Ctl, node: &str) -> Result<(), CtlError> {
    ctl.say(&format!("Shrinking all quorum queues on {node}..."));
    let request = Request::new(
        Method::Delete,
        format!("/api/queues/quorum/replicas/on/{}/shrink", segment(node)),
        format!("node '{node}'"),
    );
    ctl.client.call(request).await?;
    Ok(())
}

/// `rabbitmq-queues rebalance TYPE`: the leaders of the quorum queues the patterns match spread
/// over the running nodes (classic queues are not replicated: nothing moves), then how many of
/// them each running node leads.
pub async fn rebalance(
    ctl: &Ctl,
    kind: &str,
    vhost_pattern: &str,
    queue_pattern: &str,
) -> Result<(), CtlError> {
    let (vhosts, queues) = (pattern(vhost_pattern)?, pattern(queue_pattern)?);
    ctl.say(match kind {
        "all" => "Re-balancing leaders of all replicated queues...",
        "classic" => {
            "Re-balancing leaders of replicated (mirrored, non-exclusive) classic queues..."
        }
        _ => "Re-balancing leaders of quorum queues...",
    });
    let request =
        Request::new(Method::Post, "/api/rebalance/queues".into(), "rebalance").body(json!({
            "type": kind,
            "vhost_pattern": vhost_pattern,
            "queue_pattern": queue_pattern,
        }));
    ctl.client.call(request).await?;
    let nodes = ctl
        .client
        .call(Request::get("/api/nodes".into(), "nodes"))
        .await?;
    let all = ctl
        .client
        .call(Request::get("/api/queues".into(), "queues"))
        .await?;
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let led: Vec<String> = all
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| text(q, "type").as_deref() == Some("quorum"))
        .filter(|q| text(q, "vhost").is_some_and(|v| vhosts.is_match(&v)))
        .filter(|q| text(q, "name").is_some_and(|n| queues.is_match(&n)))
        .filter_map(|q| text(q, "leader"))
        .collect();
    let header = ["Node name", "Number of quorum queues"];
    let rows: Vec<Vec<Value>> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n.get("running").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|n| text(n, "name"))
        .map(|name| {
            let count = led.iter().filter(|l| **l == name).count();
            vec![json!(name), json!(count)]
        })
        .collect();
    if ctl.json {
        return ctl.print(&super::table::render_json(&header, &rows));
    }
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(cell).collect()).collect();
    ctl.print(&render_table(&header, &cells, ctl.headers))
}

/// A `--vhost-pattern` or `--queue-pattern`, checked here as the broker will read it.
fn pattern(text: &str) -> Result<regex::Regex, CtlError> {
    regex::Regex::new(text)
        .map_err(|e| CtlError::Usage(format!("{text} is not a regular expression: {e}")))
}
