//! Which policy applies to an object, and what a queue or an exchange does once its own arguments
//! and its policies are put together: pure functions, as RabbitMQ 3.10 decides.
//!
//! - One policy of each kind applies: among those whose `apply-to` covers the object and whose
//!   pattern matches its name, the one of highest priority (`rabbit_policy:match_all`). RabbitMQ
//!   breaks ties by its table's hash order, which nobody can rely on; here the first by name wins,
//!   so the choice is at least stable.
//! - A user policy and an operator policy are merged key by key (`merge_operator_definitions`):
//!   a key only one of them sets is taken from it; for a key both set (operator policies only know
//!   numeric limits) the smaller value wins.
//! - The merged definition meets the queue's own `x-` arguments key by key
//!   (`rabbit_amqqueue_process:process_args_policy`): for `expires`, `message-ttl`, `max-length`,
//!   `max-length-bytes` and `delivery-limit` (as quorum queues take it) the smaller value wins; for
//!   `dead-letter-exchange`, `dead-letter-routing-key` and `overflow` the argument wins. An
//!   exchange's `alternate-exchange` argument wins over a policy's (`rabbit_policy:get_arg`).

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::Value;
use warren_amqp::types::FieldTable;

use super::{Definition, ObjectKind, Policy};
use crate::queue::args::LeaderLocator;
use crate::queue::{Overflow, QueueArgs};

/// The keys for which the smaller of two values wins, when a user policy and an operator policy
/// both set them (`rabbit_policies:merge_policy_value`).
const SMALLER_WINS: [&str; 7] = [
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "expires",
    "delivery-limit",
];

/// The policy that applies to `name`: the matching one of highest priority, the first by name
/// among equals (`policies` come by name).
pub fn select<'a>(
    policies: impl IntoIterator<Item = &'a Arc<Policy>>,
    object: ObjectKind,
    name: &str,
) -> Option<&'a Arc<Policy>> {
    let mut best: Option<&Arc<Policy>> = None;
    for p in policies {
        if !p.matches(object, name) {
            continue;
        }
        let better = best.is_none_or(|b| {
            p.definition
                .priority_value()
                .total_cmp(&b.definition.priority_value())
                == Ordering::Greater
        });
        if better {
            best = Some(p);
        }
    }
    best
}

/// A user policy's and an operator policy's definitions merged.
pub fn merge_definitions(policy: Option<&Definition>, operator: Option<&Definition>) -> Definition {
    let mut out = policy.cloned().unwrap_or_default();
    for (key, op_value) in operator.into_iter().flatten() {
        let merged = match out.get(key) {
            Some(value) if SMALLER_WINS.contains(&key.as_str()) => smaller(value, op_value),
            // Not reachable with the keys operator policies accept; RabbitMQ takes the
            // operator's value for booleans.
            _ => op_value.clone(),
        };
        out.insert(key.clone(), merged);
    }
    out
}

fn smaller(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if y < x => b.clone(),
        _ => a.clone(),
    }
}

/// What a queue acts on: its arguments as declared (`arguments`, parsed into `declared`) with its
/// effective policy definition applied.
pub fn queue_args(
    arguments: &FieldTable,
    declared: &QueueArgs,
    effective: &Definition,
) -> QueueArgs {
    let number = |key: &str| effective.get(key).and_then(Value::as_u64);
    let text = |key: &str| {
        effective
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let min = |arg: Option<u64>, key: &str| match (arg, number(key)) {
        (Some(a), Some(p)) => Some(a.min(p)),
        (a, p) => a.or(p),
    };
    let mut out = declared.clone();
    out.expires = min(declared.expires, "expires");
    out.message_ttl = min(declared.message_ttl, "message-ttl");
    out.max_length = min(declared.max_length, "max-length");
    out.max_length_bytes = min(declared.max_length_bytes, "max-length-bytes");
    out.delivery_limit = min(declared.delivery_limit, "delivery-limit");
    if declared.dead_letter_exchange.is_none() {
        out.dead_letter_exchange = text("dead-letter-exchange");
    }
    if declared.dead_letter_routing_key.is_none() {
        out.dead_letter_routing_key = text("dead-letter-routing-key");
    }
    if declared.leader_locator.is_none() {
        out.leader_locator = text("queue-leader-locator")
            .as_deref()
            .and_then(LeaderLocator::from_name);
    }
    // `overflow` parses to drop-head when absent: whether the argument was given is in the table.
    if !arguments.inner().contains_key("x-overflow") {
        out.overflow = match text("overflow").as_deref() {
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            _ => Overflow::DropHead,
        };
    }
    out
}

/// Where an exchange sends what it cannot route: its `alternate-exchange` argument, else its
/// policy's.
pub fn alternate_exchange(declared: Option<&str>, effective: &Definition) -> Option<String> {
    declared.map(str::to_owned).or_else(|| {
        effective
            .get("alternate-exchange")?
            .as_str()
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests;
