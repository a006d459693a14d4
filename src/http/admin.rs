//! The management API's administration: users, vhosts and permissions (GET, PUT, DELETE), with
//! RabbitMQ 3.10's paths, bodies and status codes (201 when created, 204 when updated or
//! deleted, 400 `bad_request` with its reasons). Only `administrator` users may use them.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use warren_storage::{PermissionRecord, UserRecord};

use super::api::{ApiError, Shared, User};
use crate::auth::{hash_password, SHA256};
use crate::broker::Broker;

/// A request by an administrator: handlers that take one answer 401 to anyone else.
pub struct Admin(pub String);

impl FromRequestParts<Arc<Broker>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        broker: &Arc<Broker>,
    ) -> Result<Self, Self::Rejection> {
        let User(name) = User::from_request_parts(parts, broker).await?;
        if broker
            .users
            .tags(&name)
            .iter()
            .any(|t| t == "administrator")
        {
            Ok(Admin(name))
        } else {
            Err(ApiError::NotAuthorised("Not administrator user"))
        }
    }
}

pub(super) type Answer = Result<Json<Value>, ApiError>;
pub(super) type Done = Result<StatusCode, ApiError>;

pub(super) fn stored<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::Internal(e.to_string()))
}

/// A JSON object body; anything else is RabbitMQ's `not_json`. An empty body is `{}`.
pub(super) fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::BadRequest(json!("not_json"))),
    }
}

/// The string values of `keys` in a body, all required: RabbitMQ's `key_missing` list names
/// every missing one.
pub(super) fn required_strings<const N: usize>(
    body: &Map<String, Value>,
    keys: [&str; N],
) -> Result<[String; N], ApiError> {
    let values = super::access::required(body, &keys)?;
    let mut strings = keys.map(|_| String::new());
    for ((string, value), key) in strings.iter_mut().zip(values).zip(keys) {
        *string = value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::BadRequest(json!(format!("{key} must be a string"))))?;
    }
    Ok(strings)
}

/// Tags as RabbitMQ takes them: a comma-separated string or a list.
fn tags(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn created(was_created: bool) -> StatusCode {
    if was_created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
}

fn user_json(broker: &Broker, u: &UserRecord) -> Value {
    crate::definitions::export::user_json(broker, u)
}

use crate::definitions::export::permission_json;

pub async fn users(State(broker): Shared, _admin: Admin) -> Answer {
    Ok(Json(
        broker
            .users
            .users()
            .iter()
            .map(|u| user_json(&broker, u))
            .collect(),
    ))
}

pub async fn user_one(State(broker): Shared, _admin: Admin, Path(name): Path<String>) -> Answer {
    let u = broker.users.user(&name).ok_or(ApiError::NotFound)?;
    Ok(Json(user_json(&broker, &u)))
}

/// `{"password": P, "tags": T}` or `{"password_hash": H, "hashing_algorithm": A, "tags": T}`;
/// neither makes a user without a password. `tags` is required, as in RabbitMQ.
pub async fn put_user(
    State(broker): Shared,
    _admin: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> Done {
    let body = object(&body)?;
    if !body.contains_key("tags") {
        return Err(ApiError::BadRequest(json!("tags_not_present")));
    }
    let algorithm = body
        .get("hashing_algorithm")
        .and_then(Value::as_str)
        .unwrap_or(SHA256)
        .to_owned();
    let password_hash = match (body.get("password"), body.get("password_hash")) {
        (Some(Value::String(p)), _) => hash_password(p, SHA256),
        (_, Some(Value::String(h))) => {
            use base64::Engine as _;
            if base64::engine::general_purpose::STANDARD.decode(h).is_err() {
                return Err(ApiError::BadRequest(json!(["not_base64", h])));
            }
            h.clone()
        }
        _ => String::new(),
    };
    let hashing_algorithm = if body.get("password").is_some() {
        SHA256.to_owned()
    } else {
        algorithm
    };
    // A user that exists keeps its limits (they are set apart, with /api/user-limits).
    let limits = broker
        .users
        .user(&name)
        .map(|u| u.limits)
        .unwrap_or_default();
    let record = UserRecord {
        name,
        password_hash,
        hashing_algorithm,
        tags: tags(body.get("tags")),
        limits,
    };
    Ok(created(stored(broker.put_user(record).await)?))
}

pub async fn delete_user(State(broker): Shared, _admin: Admin, Path(name): Path<String>) -> Done {
    if stored(broker.delete_user(&name).await)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// Creates a vhost (the creating user gets every permission on it, as RabbitMQ's plugin
/// grants) or updates its description and tags.
pub async fn put_vhost(
    State(broker): Shared,
    Admin(acting): Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> Done {
    let body = object(&body)?;
    let description = body
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // RabbitMQ's plugin reads it as `defaultqueuetype`.
    let default_queue_type = match body.get("defaultqueuetype") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if ["classic", "quorum", "stream"].contains(&t.as_str()) => {
            Some(t.clone())
        }
        Some(_) => return Err(ApiError::BadRequest(json!("invalid_queue_type"))),
    };
    let was_created = stored(
        broker
            .put_vhost(
                &name,
                description,
                tags(body.get("tags")),
                default_queue_type,
            )
            .await,
    )?;
    if was_created {
        let all = PermissionRecord {
            user: acting,
            vhost: name,
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        };
        let _ = stored(broker.set_permission(all).await)?;
    }
    Ok(created(was_created))
}

pub async fn delete_vhost(State(broker): Shared, _admin: Admin, Path(name): Path<String>) -> Done {
    if stored(broker.delete_vhost(&name).await)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

pub async fn permissions(State(broker): Shared, _admin: Admin) -> Answer {
    Ok(Json(
        broker
            .users
            .permissions()
            .iter()
            .map(permission_json)
            .collect(),
    ))
}

pub async fn vhost_permissions(
    State(broker): Shared,
    _admin: Admin,
    Path(vhost): Path<String>,
) -> Answer {
    super::api::vhost(&broker, &vhost)?;
    Ok(Json(
        broker
            .users
            .permissions()
            .iter()
            .filter(|p| p.vhost == vhost)
            .map(permission_json)
            .collect(),
    ))
}

pub async fn user_permissions(
    State(broker): Shared,
    _admin: Admin,
    Path(user): Path<String>,
) -> Answer {
    broker.users.user(&user).ok_or(ApiError::NotFound)?;
    Ok(Json(
        broker
            .users
            .permissions()
            .iter()
            .filter(|p| p.user == user)
            .map(permission_json)
            .collect(),
    ))
}

pub async fn permission_one(
    State(broker): Shared,
    _admin: Admin,
    Path((vhost, user)): Path<(String, String)>,
) -> Answer {
    let p = broker
        .users
        .permission(&vhost, &user)
        .ok_or(ApiError::NotFound)?;
    Ok(Json(permission_json(&p)))
}

/// `{"configure": RE, "write": RE, "read": RE}`, all three required; an invalid regex is
/// refused and nothing changes.
pub async fn put_permission(
    State(broker): Shared,
    _admin: Admin,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> Done {
    let [configure, write, read] =
        required_strings(&object(&body)?, ["configure", "write", "read"])?;
    let record = PermissionRecord {
        configure,
        write,
        read,
        user,
        vhost,
    };
    if broker.vhost(&record.vhost).is_none() || broker.users.user(&record.user).is_none() {
        return Err(ApiError::BadRequest(json!("vhost_or_user_not_found")));
    }
    match stored(broker.set_permission(record).await)? {
        Ok(was_created) => Ok(created(was_created)),
        Err(reason) => Err(ApiError::BadRequest(json!(["invalid_regexp", reason]))),
    }
}

pub async fn delete_permission(
    State(broker): Shared,
    _admin: Admin,
    Path((vhost, user)): Path<(String, String)>,
) -> Done {
    if stored(broker.delete_permission(&vhost, &user).await)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
