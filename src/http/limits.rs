//! `/api/vhost-limits` and `/api/user-limits`, as RabbitMQ 3.10's plugin serves them: any
//! management user reads them (vhost limits of the vhosts it may see), administrators set and
//! clear them one at a time (`PUT .../{name}` with `{"value": N}`, `DELETE .../{name}`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};

use super::admin::{object, Admin, Answer, Done};
use super::api::{ApiError, Shared, User};
use crate::broker::Broker;
use crate::limits::LimitError;

fn limits_json(limits: &std::collections::BTreeMap<String, i64>) -> Value {
    Value::Object(limits.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

fn vhost_limits_of(broker: &Broker, user: &str, only: Option<&str>) -> Vec<Value> {
    let mut vhosts = broker.vhosts();
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    vhosts
        .iter()
        .filter(|v| only.is_none_or(|name| v.name == name))
        .filter(|v| super::api::sees_vhost(broker, user, &v.name))
        .filter_map(|v| {
            let limits = v.record().limits.filter(|l| !l.is_empty())?;
            Some(json!({"vhost": v.name, "value": limits_json(&limits)}))
        })
        .collect()
}

pub async fn vhost_limits(State(broker): Shared, User(user): User) -> Answer {
    Ok(Json(json!(vhost_limits_of(&broker, &user, None))))
}

pub async fn vhost_limits_in(
    State(broker): Shared,
    User(user): User,
    Path(vhost): Path<String>,
) -> Answer {
    super::api::vhost(&broker, &vhost)?;
    Ok(Json(json!(vhost_limits_of(&broker, &user, Some(&vhost)))))
}

/// The `value` of a limit's body, required.
fn value(body: &Map<String, Value>) -> Result<&Value, ApiError> {
    body.get("value")
        .ok_or_else(|| ApiError::BadRequest(json!("[{key_missing,value}]")))
}

/// A vhost limit's error: the limits are a runtime parameter, whose validation errors RabbitMQ
/// frames so.
fn vhost_limit_error(e: LimitError) -> ApiError {
    match e {
        LimitError::NoSuchVhost => ApiError::VhostNotFound,
        LimitError::Commit(e) => ApiError::Internal(e.to_string()),
        e => ApiError::BadRequest(json!(format!("Validation failed\n\n{e}\n"))),
    }
}

fn user_limit_error(e: LimitError, user: &str) -> ApiError {
    match e {
        LimitError::NoSuchUser => ApiError::BadRequest(json!(["no_such_user", user])),
        LimitError::Commit(e) => ApiError::Internal(e.to_string()),
        e => ApiError::BadRequest(json!(e.to_string())),
    }
}

pub async fn put_vhost_limit(
    State(broker): Shared,
    _admin: Admin,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Done {
    super::api::vhost(&broker, &vhost).map_err(|_| ApiError::VhostNotFound)?;
    let body = object(&body)?;
    broker
        .set_vhost_limit(&vhost, &name, value(&body)?)
        .await
        .map_err(vhost_limit_error)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_vhost_limit(
    State(broker): Shared,
    _admin: Admin,
    Path((vhost, name)): Path<(String, String)>,
) -> Done {
    broker
        .clear_vhost_limit(&vhost, &name)
        .await
        .map_err(vhost_limit_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn user_limits_of(broker: &Broker, only: Option<&str>) -> Vec<Value> {
    broker
        .users
        .users()
        .iter()
        .filter(|u| only.is_none_or(|name| u.name == name))
        .filter(|u| !u.limits.is_empty())
        .map(|u| json!({"user": u.name, "value": limits_json(&u.limits)}))
        .collect()
}

pub async fn user_limits(State(broker): Shared, _user: User) -> Answer {
    Ok(Json(json!(user_limits_of(&broker, None))))
}

pub async fn user_limits_of_one(
    State(broker): Shared,
    _user: User,
    Path(user): Path<String>,
) -> Answer {
    broker.users.user(&user).ok_or(ApiError::NotFound)?;
    Ok(Json(json!(user_limits_of(&broker, Some(&user)))))
}

pub async fn put_user_limit(
    State(broker): Shared,
    _admin: Admin,
    Path((user, name)): Path<(String, String)>,
    body: Bytes,
) -> Done {
    let body = object(&body)?;
    broker
        .set_user_limit(&user, &name, value(&body)?)
        .await
        .map_err(|e| user_limit_error(e, &user))?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_user_limit(
    State(broker): Shared,
    _admin: Admin,
    Path((user, name)): Path<(String, String)>,
) -> Done {
    broker
        .clear_user_limit(&user, &name)
        .await
        .map_err(|e| match e {
            LimitError::NoSuchUser => ApiError::NotFound,
            e => user_limit_error(e, &user),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
