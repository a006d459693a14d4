//! Queues, connections, definitions and the node's state.

use std::io::Read as _;

use serde_json::{json, Value};

use super::client::{segment, ClientError, Method, Request};
use super::table::{cell, render_table};
use super::{Ctl, CtlError};

fn queue_request(ctl: &Ctl, method: Method, queue: &str, suffix: &str) -> Request {
    let v = &ctl.vhost;
    Request::new(
        method,
        format!("/api/queues/{}/{}{suffix}", segment(v), segment(queue)),
        format!("queue '{queue}' in vhost '{v}'"),
    )
    .in_vhost(v)
}

pub async fn purge_queue(ctl: &Ctl, queue: &str) -> Result<(), CtlError> {
    ctl.say(&format!(
        "Purging queue '{queue}' in vhost '{}' ...",
        ctl.vhost
    ));
    ctl.client
        .call(queue_request(ctl, Method::Delete, queue, "/contents"))
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
        .call(queue_request(ctl, Method::Delete, queue, &query))
        .await?;
    Ok(())
}

pub async fn close_connection(ctl: &Ctl, name: &str, reason: &str) -> Result<(), CtlError> {
    ctl.say(&format!("Closing connection {name}, reason: {reason} ..."));
    let mut request = Request::new(
        Method::Delete,
        format!("/api/connections/{}", segment(name)),
        format!("connection '{name}'"),
    );
    request.reason = Some(reason.to_owned());
    ctl.client.call(request).await?;
    Ok(())
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
    let rows: Vec<Vec<Value>> = pairs
        .into_iter()
        .map(|(k, v)| vec![json!(k), json!(cell(&v))])
        .collect();
    ctl.print(&render_table(&["key", "value"], &rows))
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
