//! The management API's policies and operator policies, with RabbitMQ 3.10's paths, bodies,
//! status codes and authorisation:
//!
//! - `GET /api/policies[/{vhost}]` and `/api/operator-policies[/{vhost}]`: any management user,
//!   for the vhosts it may use (every vhost for administrators), sorted by priority.
//! - `GET/PUT/DELETE /api/policies/{vhost}/{name}`: administrators, and `policymaker` users in
//!   the vhosts they may use (`User not authorised to access object` otherwise, even to read one).
//! - `GET/PUT/DELETE /api/operator-policies/{vhost}/{name}`: administrators only; a PUT must be
//!   `application/json` (415 otherwise, as RabbitMQ).
//!
//! A PUT answers 201 when it created the policy and 204 when it replaced one; a bad body is a 400
//! with RabbitMQ's texts (`crate::policy::parse_policy`) and changes nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::api::{has_tag, ApiError, Shared, User};
use crate::broker::Broker;
use crate::policy::{parse_policy, PolicyDefinition, PolicyKind};
use crate::vhost::Vhost;

type Answer = Result<Json<Value>, ApiError>;
type Done = Result<StatusCode, ApiError>;

fn is_admin(broker: &Broker, user: &str) -> bool {
    has_tag(broker, user, &["administrator"])
}

fn is_policymaker(broker: &Broker, user: &str) -> bool {
    has_tag(broker, user, &["administrator", "policymaker"])
}

/// `is_authorized_policies` for user policies, `is_authorized_admin` for operator policies.
fn authorise_object(
    broker: &Broker,
    user: &str,
    kind: PolicyKind,
    vhost: &str,
) -> Result<(), ApiError> {
    match kind {
        PolicyKind::Operator if is_admin(broker, user) => Ok(()),
        PolicyKind::Operator => Err(ApiError::NotAuthorised("Not administrator user")),
        PolicyKind::User
            if is_admin(broker, user)
                || (is_policymaker(broker, user)
                    && (broker.vhost(vhost).is_none()
                        || broker.users.may_use_vhost(user, vhost))) =>
        {
            Ok(())
        }
        PolicyKind::User => Err(ApiError::NotAuthorised(
            "User not authorised to access object",
        )),
    }
}

/// Policies as RabbitMQ lists them: by priority, then vhost and name.
fn listing(vhosts: &[Arc<Vhost>], kind: PolicyKind) -> Value {
    let mut all: Vec<(&str, PolicyDefinition)> = vhosts
        .iter()
        .flat_map(|v| v.policies(kind).into_iter().map(|p| (v.name.as_str(), p)))
        .collect();
    all.sort_by(|(va, a), (vb, b)| {
        a.priority_value()
            .total_cmp(&b.priority_value())
            .then_with(|| va.cmp(vb))
            .then_with(|| a.name.cmp(&b.name))
    });
    Value::Array(all.iter().map(|(v, p)| p.to_json(v)).collect())
}

async fn list_all(broker: &Broker, user: &str, kind: PolicyKind) -> Answer {
    let visible: Vec<Arc<Vhost>> = broker
        .vhosts()
        .into_iter()
        .filter(|v| super::api::sees_objects_of(broker, user, &v.name))
        .collect();
    Ok(Json(listing(&visible, kind)))
}

async fn list_in(broker: &Broker, user: &str, kind: PolicyKind, vhost: &str) -> Answer {
    super::api::authorise_vhost(broker, user, vhost)?;
    let v = super::api::vhost(broker, vhost)?;
    Ok(Json(listing(&[v], kind)))
}

async fn get_one(broker: &Broker, user: &str, kind: PolicyKind, vhost: &str, name: &str) -> Answer {
    authorise_object(broker, user, kind, vhost)?;
    let v = super::api::vhost(broker, vhost)?;
    let p = v.policy(kind, name).ok_or(ApiError::NotFound)?;
    Ok(Json(p.to_json(&v.name)))
}

async fn put_one(
    broker: &Broker,
    user: &str,
    kind: PolicyKind,
    (vhost, name): (&str, &str),
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Done {
    authorise_object(broker, user, kind, vhost)?;
    if kind == PolicyKind::Operator && !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let v = broker.vhost(vhost).ok_or(ApiError::VhostNotFound)?;
    // A body over the limit is refused before it is read in full (RabbitMQ's text).
    let body =
        body.map_err(|_| ApiError::BadRequest(json!("Exceeded HTTP request body size limit")))?;
    let policy =
        parse_policy(kind, name, &body).map_err(|e| ApiError::BadRequest(json!(e.reason(kind))))?;
    let added = v
        .set_policy(policy)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(if added {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    })
}

async fn delete_one(
    broker: &Broker,
    user: &str,
    kind: PolicyKind,
    vhost: &str,
    name: &str,
) -> Done {
    authorise_object(broker, user, kind, vhost)?;
    let v = super::api::vhost(broker, vhost)?;
    match v.clear_policy(kind, name).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::NotFound),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// `application/json`, with or without parameters (RabbitMQ accepts `{application, json, '*'}`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// The kind a route serves: the handlers below serve both, `OPERATOR` picks which.
fn kind<const OPERATOR: bool>() -> PolicyKind {
    if OPERATOR {
        PolicyKind::Operator
    } else {
        PolicyKind::User
    }
}

pub async fn list<const OPERATOR: bool>(State(broker): Shared, User(user): User) -> Answer {
    list_all(&broker, &user, kind::<OPERATOR>()).await
}

pub async fn list_vhost<const OPERATOR: bool>(
    State(broker): Shared,
    User(user): User,
    Path(vhost): Path<String>,
) -> Answer {
    list_in(&broker, &user, kind::<OPERATOR>(), &vhost).await
}

pub async fn get<const OPERATOR: bool>(
    State(broker): Shared,
    User(user): User,
    Path((vhost, name)): Path<(String, String)>,
) -> Answer {
    get_one(&broker, &user, kind::<OPERATOR>(), &vhost, &name).await
}

pub async fn put<const OPERATOR: bool>(
    State(broker): Shared,
    User(user): User,
    Path((vhost, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Done {
    let kind = kind::<OPERATOR>();
    put_one(&broker, &user, kind, (&vhost, &name), &headers, body).await
}

pub async fn delete<const OPERATOR: bool>(
    State(broker): Shared,
    User(user): User,
    Path((vhost, name)): Path<(String, String)>,
) -> Done {
    delete_one(&broker, &user, kind::<OPERATOR>(), &vhost, &name).await
}
