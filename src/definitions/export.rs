//! Exporting definitions in RabbitMQ 3.10's format (what `GET /api/definitions` answers and
//! `POST /api/definitions` or `load_definitions` read back, on Warren or on RabbitMQ). As
//! RabbitMQ exports them: every queue but exclusive ones, every exchange but the default and the
//! `amq.*` ones, every binding but the default exchange's, from an exported exchange to an
//! exported queue or to a (non-default) exchange.

use serde_json::{json, Value};
use warren_storage::{PermissionRecord, UserRecord};

use super::json::table_to_json;
use super::sections;
use crate::broker::Broker;
use crate::vhost::Vhost;

/// The RabbitMQ version whose format the file follows. RabbitMQ reads `rabbit_version` to tell
/// how old a file is (before 3.6 a hash without `hashing_algorithm` was MD5), so Warren names the
/// version whose definitions it writes; `product_name` and `product_version` say what wrote it.
pub const FORMAT_VERSION: &str = "3.10.8";

/// A vhost's queues, exchanges and bindings, each with its `vhost` field when `with_vhost`.
fn topology(v: &Vhost, with_vhost: bool) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let tag = |mut item: Value| {
        if with_vhost {
            item["vhost"] = json!(v.name);
        }
        item
    };
    let mut queues = v.queues();
    queues.retain(|q| !q.is_exclusive());
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    let exported: std::collections::HashSet<&str> = queues.iter().map(|q| &*q.name).collect();
    let exchanges: Vec<Value> = v
        .exchanges_info()
        .into_iter()
        .filter(|e| !e.name.is_empty() && !e.name.starts_with("amq."))
        .map(|e| {
            tag(json!({
                "name": e.name,
                "type": e.kind,
                "durable": e.durable,
                "auto_delete": e.auto_delete,
                "internal": e.internal,
                "arguments": table_to_json(&e.arguments),
            }))
        })
        .collect();
    let bindings = v
        .bindings_info()
        .into_iter()
        .filter(|b| {
            !b.source.is_empty()
                && if b.destination_is_queue {
                    exported.contains(b.destination.as_str())
                } else {
                    !b.destination.is_empty()
                }
        })
        .map(|b| {
            tag(json!({
                "source": b.source,
                "destination": b.destination,
                "destination_type": if b.destination_is_queue { "queue" } else { "exchange" },
                "routing_key": b.routing_key,
                "arguments": table_to_json(&b.arguments),
            }))
        })
        .collect();
    let queues = queues
        .iter()
        .map(|q| {
            tag(json!({
                "name": &*q.name,
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "arguments": table_to_json(&q.arguments),
            }))
        })
        .collect();
    (queues, exchanges, bindings)
}

/// A user as RabbitMQ's definitions (and `GET /api/users`) show one.
pub fn user_json(broker: &Broker, u: &UserRecord) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm,
        "tags": u.tags,
        "limits": sections::export_user_limits(broker, &u.name),
    })
}

/// A user's permissions in a vhost, as the definitions (and `GET /api/permissions`) show them.
pub fn permission_json(p: &PermissionRecord) -> Value {
    json!({
        "user": p.user,
        "vhost": p.vhost,
        "configure": p.configure,
        "write": p.write,
        "read": p.read,
    })
}

/// Everything: users, vhosts, permissions and every vhost's topology.
pub fn export_all(broker: &Broker) -> Value {
    let users: Vec<Value> = broker
        .users
        .users()
        .iter()
        .map(|u| user_json(broker, u))
        .collect();
    let vhosts = broker.vhosts();
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for v in &vhosts {
        let (q, x, b) = topology(v, true);
        queues.extend(q);
        exchanges.extend(x);
        bindings.extend(b);
    }
    let vhosts: Vec<Value> = vhosts
        .iter()
        .map(|v| {
            let (description, tags) = v.metadata();
            json!({"name": v.name, "description": description, "tags": tags})
        })
        .collect();
    let permissions: Vec<Value> = broker
        .users
        .permissions()
        .iter()
        .map(permission_json)
        .collect();
    json!({
        "rabbit_version": FORMAT_VERSION,
        "rabbitmq_version": FORMAT_VERSION,
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": users,
        "vhosts": vhosts,
        "permissions": permissions,
        "topic_permissions": sections::export_topic_permissions(broker),
        "parameters": sections::export_parameters(broker, None),
        "global_parameters": sections::export_global_parameters(broker),
        "policies": sections::export_policies(broker, None),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}

/// One vhost's topology, without `vhost` fields, as RabbitMQ's per-vhost export.
pub fn export_vhost(broker: &Broker, v: &Vhost) -> Value {
    let (queues, exchanges, bindings) = topology(v, false);
    json!({
        "rabbit_version": FORMAT_VERSION,
        "parameters": sections::export_parameters(broker, Some(&v.name)),
        "policies": sections::export_policies(broker, Some(&v.name)),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}
