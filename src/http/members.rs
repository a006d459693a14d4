//! A quorum queue's members changed through the management API, as RabbitMQ's plugin takes it:
//! `POST /api/queues/quorum/{vhost}/{name}/replicas/add` and `DELETE …/replicas/delete` with
//! `{"node": N}` (`rabbitmq-queues add_member` / `delete_member`), `POST
//! /api/queues/quorum/replicas/on/{node}/grow` with `strategy` (`all` or `even`),
//! `queue_pattern` and `vhost_pattern`, and `DELETE /api/queues/quorum/replicas/on/{node}/shrink`.
//! Administrators only. Each answers once the queue's group has its new members as voters (a
//! member added has caught up), or 503 if that did not happen in time (the change is committed
//! and completes once it can). `POST /api/rebalance/queues` spreads quorum queue leaders over
//! the nodes (`rabbitmq-queues rebalance`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

use super::admin::{object, required_strings, Admin, Done};
use super::api::{ApiError, Shared};
use crate::queue::quorum::rebalance::{plan, Led};
use crate::vhost::{MemberChange, MembersChanged, MembersError, Vhost};

/// How long a change may take to be in place before the answer says it is not yet (within
/// `warren ctl`'s default timeout of a minute).
const IN_PLACE_WITHIN: Duration = Duration::from_secs(50);

/// How long a rebalance waits for one queue's new leader, and how many move at once.
const LEADER_MOVED_WITHIN: Duration = Duration::from_secs(10);
const REBALANCE_CONCURRENCY: usize = 16;

fn refused(e: MembersError) -> ApiError {
    match e {
        MembersError::NoQueue { .. } => ApiError::NotFoundBecause(e.to_string()),
        MembersError::NotCommitted(e) => ApiError::Unavailable(e.text),
        e => ApiError::BadRequest(json!(e.to_string())),
    }
}

/// Waits until every change is in place.
async fn in_place(changes: &[(Arc<Vhost>, String, MembersChanged)]) -> Result<(), ApiError> {
    let waits = changes
        .iter()
        .map(|(vhost, _, changed)| vhost.members_in_place(changed, IN_PLACE_WITHIN));
    let done = futures::future::join_all(waits).await;
    let late: Vec<&str> = changes
        .iter()
        .zip(done)
        .filter(|(_, done)| !done)
        .map(|((_, queue, _), _)| queue.as_str())
        .collect();
    match late.is_empty() {
        true => Ok(()),
        false => Err(ApiError::Unavailable(format!(
            "the new members are committed, but the groups of {late:?} have not taken them yet \
             (a member down?): they will once they can"
        ))),
    }
}

fn vhost_named(broker: &crate::broker::Broker, name: &str) -> Result<Arc<Vhost>, ApiError> {
    broker
        .vhost(name)
        .ok_or_else(|| ApiError::NotFoundBecause("vhost_not_found".into()))
}

async fn change_one(
    broker: &crate::broker::Broker,
    vhost_name: &str,
    name: &str,
    body: &Bytes,
    change: impl FnOnce(String) -> MemberChange,
) -> Result<(), ApiError> {
    let vhost = vhost_named(broker, vhost_name)?;
    let [node] = required_strings(&object(body)?, ["node"])?;
    let changed = vhost
        .change_queue_members(name, &change(node))
        .await
        .map_err(refused)?;
    in_place(&[(vhost, name.to_owned(), changed)]).await
}

/// `POST /api/queues/quorum/{vhost}/{name}/replicas/add`: 204 once the node is a voter.
pub async fn add(
    State(broker): Shared,
    _admin: Admin,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> Done {
    change_one(&broker, &vhost_name, &name, &body, MemberChange::Add).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/queues/quorum/{vhost}/{name}/replicas/delete`: 202, as RabbitMQ answers it.
pub async fn delete(
    State(broker): Shared,
    _admin: Admin,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> Done {
    change_one(&broker, &vhost_name, &name, &body, MemberChange::Delete).await?;
    Ok(StatusCode::ACCEPTED)
}

/// A pattern of the body (`.*` if absent), as RabbitMQ matches it (anywhere in the name).
fn pattern(
    body: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<regex::Regex, ApiError> {
    let text = match body.get(key) {
        None | Some(serde_json::Value::Null) => ".*",
        Some(v) => v
            .as_str()
            .ok_or_else(|| ApiError::BadRequest(json!(format!("{key} must be a string"))))?,
    };
    regex::Regex::new(text)
        .map_err(|e| ApiError::BadRequest(json!(format!("{key} is not a regular expression: {e}"))))
}

/// The quorum queues (vhost, name) of the vhosts and names the patterns match.
fn quorum_queues(
    broker: &crate::broker::Broker,
    vhosts: &regex::Regex,
    queues: &regex::Regex,
) -> Vec<(Arc<Vhost>, String)> {
    let mut found = Vec::new();
    for vhost in broker
        .vhosts()
        .into_iter()
        .filter(|v| vhosts.is_match(&v.name))
    {
        for q in vhost.queues() {
            let quorum = q.args.queue_type == crate::queue::args::QueueType::Quorum;
            if quorum && queues.is_match(&q.name) {
                found.push((vhost.clone(), q.name.to_string()));
            }
        }
    }
    found
}

/// Makes `change` to each of `queues` whose members `wanted` picks, one after the other; the
/// changes made.
async fn change_each(
    queues: Vec<(Arc<Vhost>, String)>,
    change: MemberChange,
    wanted: impl Fn(&[String]) -> bool,
) -> Result<Vec<(Arc<Vhost>, String, MembersChanged)>, ApiError> {
    let mut changes = Vec::new();
    for (vhost, queue) in queues {
        let Ok(members) = vhost.queue_members(&queue) else {
            continue;
        };
        if !wanted(&members) {
            continue;
        }
        match vhost.change_queue_members(&queue, &change).await {
            Ok(changed) => changes.push((vhost, queue, changed)),
            // Deleted meanwhile.
            Err(MembersError::NoQueue { .. }) => {}
            Err(e) => return Err(refused(e)),
        }
    }
    Ok(changes)
}

/// `POST /api/queues/quorum/replicas/on/{node}/grow`: the node becomes a member of every quorum
/// queue the patterns match (`strategy` `all`), or of those with an even number of members
/// (`even`); 204.
pub async fn grow(
    State(broker): Shared,
    _admin: Admin,
    Path(node): Path<String>,
    body: Bytes,
) -> Done {
    let body = object(&body)?;
    let [strategy] = required_strings(&body, ["strategy"])?;
    let even_only = match strategy.as_str() {
        "all" => false,
        "even" => true,
        other => {
            return Err(ApiError::BadRequest(json!(format!(
                "strategy must be all or even, not {other}"
            ))))
        }
    };
    let (vhosts, queues) = (
        pattern(&body, "vhost_pattern")?,
        pattern(&body, "queue_pattern")?,
    );
    let picked = quorum_queues(&broker, &vhosts, &queues);
    let changes = change_each(picked, MemberChange::Add(node.clone()), |members| {
        // `even`: only queues with an even number of members (an odd number once grown).
        let strategy_picks = !even_only || members.len() % 2 == 0;
        !members.contains(&node) && strategy_picks
    })
    .await?;
    in_place(&changes).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/queues/quorum/replicas/on/{node}/shrink`: the node stops being a member of every
/// quorum queue it is one of, but the last (whose queue would be gone); 202.
pub async fn shrink(State(broker): Shared, _admin: Admin, Path(node): Path<String>) -> Done {
    let all = regex::Regex::new(".*").map_err(|e| ApiError::Internal(e.to_string()))?;
    let picked = quorum_queues(&broker, &all, &all);
    let changes = change_each(picked, MemberChange::Delete(node.clone()), |members| {
        members.contains(&node) && members.len() > 1
    })
    .await?;
    in_place(&changes).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /api/rebalance/queues`: the leaders of the quorum queues the patterns match spread
/// over the nodes that are up (`rabbitmq-queues rebalance`), each queue's leadership handed to
/// a member on a node that leads fewer; 204 once the moves are made. `type` `all` (the
/// default) or `quorum`; `classic` queues are not replicated (each lives on its node): nothing
/// moves. Only queues with a member on this node are seen (in a cluster whose queues have a
/// member on every node, all of them).
pub async fn rebalance(State(broker): Shared, _admin: Admin, body: Bytes) -> Done {
    use futures::StreamExt as _;
    let body = object(&body)?;
    let kind = match body.get("type") {
        None | Some(serde_json::Value::Null) => "all",
        Some(v) => v
            .as_str()
            .ok_or_else(|| ApiError::BadRequest(json!("type must be a string")))?,
    };
    match kind {
        "all" | "quorum" => {}
        "classic" => return Ok(StatusCode::NO_CONTENT),
        other => {
            return Err(ApiError::BadRequest(json!(format!(
                "type must be all, classic or quorum, not {other}"
            ))))
        }
    }
    let (vhosts, queues) = (
        pattern(&body, "vhost_pattern")?,
        pattern(&body, "queue_pattern")?,
    );
    let Some(cluster) = broker.cluster.get() else {
        return Ok(StatusCode::NO_CONTENT);
    };
    let nodes: Vec<String> = cluster
        .members()
        .into_iter()
        .filter(|m| m.reachable)
        .map(|m| m.name)
        .collect();
    let mut led = Vec::new();
    for vhost in broker.vhosts().iter().filter(|v| vhosts.is_match(&v.name)) {
        for q in vhost.queues() {
            let quorum = q.args.queue_type == crate::queue::args::QueueType::Quorum;
            if !quorum || !queues.is_match(&q.name) {
                continue;
            }
            let Some(status) = q.replica_status() else {
                continue;
            };
            if let Some(leader) = status.leader {
                led.push(Led {
                    queue: q,
                    leader,
                    members: status.members,
                });
            }
        }
    }
    let moves = plan(&led, &nodes);
    let moved: Vec<bool> = futures::stream::iter(moves)
        .map(|(queue, to)| async move {
            let moved = queue.transfer_leadership(&to, LEADER_MOVED_WITHIN).await;
            if !moved {
                tracing::warn!(
                    "rebalance: the leader of queue {} did not move to {to}",
                    queue.name
                );
            }
            moved
        })
        .buffer_unordered(REBALANCE_CONCURRENCY)
        .collect()
        .await;
    tracing::info!(
        "rebalance: {} of {} quorum queue leaders moved",
        moved.iter().filter(|m| **m).count(),
        moved.len()
    );
    Ok(StatusCode::NO_CONTENT)
}
