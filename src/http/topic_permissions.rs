//! `/api/topic-permissions` (and per user, per vhost), as RabbitMQ 3.10's plugin serves them,
//! for administrators: `PUT /api/topic-permissions/{vhost}/{user}` with `{"exchange": X,
//! "write": RE, "read": RE}` sets the user's permission on that exchange (201 for the user's first
//! in the vhost, else 204); `GET` of that path lists all of them (a trailing exchange is
//! ignored, as RabbitMQ ignores it); `DELETE` removes all of them, or one with the exchange.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use warren_storage::TopicPermissionRecord;

use super::admin::{created, object, required_strings, stored, Admin, Answer, Done};
use super::api::{ApiError, Shared};
use crate::broker::Broker;

fn topic_permission_json(p: &TopicPermissionRecord) -> Value {
    json!({
        "user": p.user,
        "vhost": p.vhost,
        "exchange": p.exchange,
        "write": p.write,
        "read": p.read,
    })
}

fn listed(broker: &Broker, keep: impl Fn(&TopicPermissionRecord) -> bool) -> Vec<Value> {
    broker
        .users
        .topic_permissions()
        .iter()
        .filter(|p| keep(p))
        .map(topic_permission_json)
        .collect()
}

pub async fn all(State(broker): Shared, _admin: Admin) -> Answer {
    Ok(Json(json!(listed(&broker, |_| true))))
}

pub async fn of_user(State(broker): Shared, _admin: Admin, Path(user): Path<String>) -> Answer {
    broker.users.user(&user).ok_or(ApiError::NotFound)?;
    Ok(Json(json!(listed(&broker, |p| p.user == user))))
}

pub async fn in_vhost(State(broker): Shared, _admin: Admin, Path(vhost): Path<String>) -> Answer {
    super::api::vhost(&broker, &vhost)?;
    Ok(Json(json!(listed(&broker, |p| p.vhost == vhost))))
}

/// A user's topic permissions in a vhost; 404 when it has none.
pub async fn of_user_in_vhost(
    State(broker): Shared,
    _admin: Admin,
    Path((vhost, user)): Path<(String, String)>,
) -> Answer {
    let found = listed(&broker, |p| p.vhost == vhost && p.user == user);
    if found.is_empty() {
        return Err(ApiError::NotFound);
    }
    Ok(Json(json!(found)))
}

pub async fn of_user_in_vhost_on(
    state: Shared,
    admin: Admin,
    Path((vhost, user, _exchange)): Path<(String, String, String)>,
) -> Answer {
    of_user_in_vhost(state, admin, Path((vhost, user))).await
}

/// `{"exchange": X, "write": RE, "read": RE}`, all required; an invalid regex is refused and
/// nothing changes.
pub async fn put(
    State(broker): Shared,
    _admin: Admin,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> Done {
    let [exchange, write, read] = required_strings(&object(&body)?, ["exchange", "write", "read"])?;
    let record = TopicPermissionRecord {
        exchange,
        write,
        read,
        user,
        vhost,
    };
    if broker.vhost(&record.vhost).is_none() || broker.users.user(&record.user).is_none() {
        return Err(ApiError::BadRequest(json!("vhost_or_user_not_found")));
    }
    let patterns = [record.write.clone(), record.read.clone()];
    match stored(broker.set_topic_permission(record).await)? {
        Ok(first) => Ok(created(first)),
        Err(reason) => {
            let pattern = patterns
                .iter()
                .find(|p| regex::Regex::new(p).is_err())
                .cloned()
                .unwrap_or_default();
            Err(ApiError::BadRequest(json!([
                "invalid_regexp",
                pattern,
                reason
            ])))
        }
    }
}

/// Removes all the user's topic permissions in the vhost; 404 when it has none.
pub async fn delete(
    State(broker): Shared,
    _admin: Admin,
    Path((vhost, user)): Path<(String, String)>,
) -> Done {
    if stored(broker.delete_topic_permissions(&vhost, &user, None).await)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// Removes the user's topic permission on one exchange: 204 as long as the user has topic
/// permissions in the vhost (even not on that exchange), as RabbitMQ answers; else 404.
pub async fn delete_on(
    State(broker): Shared,
    _admin: Admin,
    Path((vhost, user, exchange)): Path<(String, String, String)>,
) -> Done {
    let has_any = broker
        .users
        .topic_permissions()
        .iter()
        .any(|p| p.vhost == vhost && p.user == user);
    if !has_any {
        return Err(ApiError::NotFound);
    }
    stored(
        broker
            .delete_topic_permissions(&vhost, &user, Some(&exchange))
            .await,
    )?;
    Ok(StatusCode::NO_CONTENT)
}
