//! Users, vhosts, permissions, topic permissions, policies and limits.
//!
//! The management API changes a user only whole (`PUT /api/users/U` with a password or a hash,
//! and tags), so changing the password keeps the tags and changing the tags keeps the hash: both
//! read the user first.

use serde_json::{json, Value};

use super::client::{segment, ClientError, Method, Missing, Request};
use super::{parse_json, Ctl, CtlError, PolicyArgs};

fn user_path(user: &str) -> String {
    format!("/api/users/{}", segment(user))
}

fn user_object(user: &str) -> String {
    format!("user '{user}'")
}

/// A request about the user `user` (a 404 is "no such user", exit 67).
fn user_request(method: Method, user: &str) -> Request {
    Request::new(method, user_path(user), user_object(user)).missing(Missing::User)
}

/// Adds a user; one that exists already is left as it is and refused, as rabbitmqctl does
/// (the API's PUT would replace its password and tags).
pub async fn add_user(ctl: &Ctl, user: &str, password: &str) -> Result<(), CtlError> {
    ctl.say(&format!("Adding user \"{user}\" ..."));
    match get_user(ctl, user).await {
        Ok(_) => {
            return Err(CtlError::AlreadyExists {
                what: format!("user '{user}'"),
            })
        }
        Err(CtlError::Client(ClientError::NotFound { .. })) => {}
        Err(e) => return Err(e),
    }
    let body = json!({"password": password, "tags": ""});
    let request = user_request(Method::Put, user).body(body);
    ctl.client.call(request).await?;
    Ok(())
}

pub async fn delete_user(ctl: &Ctl, user: &str) -> Result<(), CtlError> {
    ctl.say(&format!("Deleting user \"{user}\" ..."));
    ctl.client.call(user_request(Method::Delete, user)).await?;
    Ok(())
}

/// The user as the API shows it (with its hash and tags).
async fn get_user(ctl: &Ctl, user: &str) -> Result<Value, CtlError> {
    Ok(ctl.client.call(user_request(Method::Get, user)).await?)
}

/// Sets a new password (`None`: none at all), keeping the user's tags.
pub async fn change_password(
    ctl: &Ctl,
    user: &str,
    password: Option<&str>,
) -> Result<(), CtlError> {
    let current = get_user(ctl, user).await?;
    let tags = current.get("tags").cloned().unwrap_or(json!(""));
    let body = match password {
        Some(password) => {
            ctl.say(&format!("Changing password for user \"{user}\" ..."));
            json!({"password": password, "tags": tags})
        }
        None => {
            ctl.say(&format!("Clearing password for user \"{user}\" ..."));
            json!({"password_hash": "", "tags": tags})
        }
    };
    let request = user_request(Method::Put, user).body(body);
    ctl.client.call(request).await?;
    Ok(())
}

/// Replaces the user's tags, keeping its password hash.
pub async fn set_user_tags(ctl: &Ctl, user: &str, tags: &[String]) -> Result<(), CtlError> {
    ctl.say(&format!(
        "Setting tags for user \"{user}\" to [{}] ...",
        tags.join(", ")
    ));
    let current = get_user(ctl, user).await?;
    let field = |key: &str| current.get(key).cloned().unwrap_or(json!(""));
    let body = json!({
        "password_hash": field("password_hash"),
        "hashing_algorithm": field("hashing_algorithm"),
        "tags": tags.join(","),
    });
    let request = user_request(Method::Put, user).body(body);
    ctl.client.call(request).await?;
    Ok(())
}

fn vhost_path(vhost: &str) -> String {
    format!("/api/vhosts/{}", segment(vhost))
}

pub async fn add_vhost(ctl: &Ctl, name: &str, description: Option<&str>) -> Result<(), CtlError> {
    ctl.say(&format!("Adding vhost \"{name}\" ..."));
    let mut request = Request::new(Method::Put, vhost_path(name), format!("vhost '{name}'"));
    if let Some(description) = description {
        request = request.body(json!({"description": description}));
    }
    ctl.client.call(request).await?;
    Ok(())
}

pub async fn delete_vhost(ctl: &Ctl, name: &str) -> Result<(), CtlError> {
    ctl.say(&format!("Deleting vhost \"{name}\" ..."));
    let request = Request::new(Method::Delete, vhost_path(name), format!("vhost '{name}'"))
        .missing(Missing::DeletedVhost);
    ctl.client.call(request).await?;
    Ok(())
}

fn permission_request(ctl: &Ctl, method: Method, user: &str) -> Request {
    let v = &ctl.vhost;
    Request::new(
        method,
        format!("/api/permissions/{}/{}", segment(v), segment(user)),
        format!("permissions of user '{user}' in vhost '{v}'"),
    )
    .in_vhost(v)
    .missing(Missing::Unavailable)
}

pub async fn set_permissions(
    ctl: &Ctl,
    user: &str,
    [configure, write, read]: [&str; 3],
) -> Result<(), CtlError> {
    ctl.say(&format!(
        "Setting permissions for user \"{user}\" in vhost \"{}\" ...",
        ctl.vhost
    ));
    // The API answers a missing user or vhost alike (400); rabbitmqctl tells them apart.
    get_user(ctl, user).await?;
    let body = json!({"configure": configure, "write": write, "read": read});
    match ctl
        .client
        .call(permission_request(ctl, Method::Put, user).body(body))
        .await
    {
        // The user exists (see above), so it is the vhost that is missing.
        Err(ClientError::BadRequest { reason }) if reason == "vhost_or_user_not_found" => {
            Err(ClientError::NotFound {
                what: format!("vhost '{}'", ctl.vhost),
                missing: Missing::Unavailable,
            }
            .into())
        }
        answer => answer.map(drop).map_err(CtlError::from),
    }
}

pub async fn clear_permissions(ctl: &Ctl, user: &str) -> Result<(), CtlError> {
    ctl.say(&format!(
        "Clearing permissions for user \"{user}\" in vhost \"{}\" ...",
        ctl.vhost
    ));
    get_user(ctl, user).await?;
    ctl.client
        .call(permission_request(ctl, Method::Delete, user))
        .await?;
    Ok(())
}

pub async fn set_topic_permissions(
    ctl: &Ctl,
    user: &str,
    exchange: &str,
    write: &str,
    read: &str,
) -> Result<(), CtlError> {
    let v = &ctl.vhost;
    ctl.say(&format!(
        "Setting topic permissions on \"{exchange}\" for user \"{user}\" in vhost \"{v}\" ..."
    ));
    get_user(ctl, user).await?;
    let request = Request::new(
        Method::Put,
        format!("/api/topic-permissions/{}/{}", segment(v), segment(user)),
        format!("user '{user}'"),
    )
    .in_vhost(v)
    .body(json!({"exchange": exchange, "write": write, "read": read}));
    ctl.client.call(request).await?;
    Ok(())
}

pub async fn clear_topic_permissions(
    ctl: &Ctl,
    user: &str,
    exchange: Option<&str>,
) -> Result<(), CtlError> {
    let v = &ctl.vhost;
    ctl.say(&format!(
        "Clearing topic permissions for user \"{user}\" in vhost \"{v}\" ..."
    ));
    let mut path = format!("/api/topic-permissions/{}/{}", segment(v), segment(user));
    if let Some(exchange) = exchange {
        path.push('/');
        path.push_str(&segment(exchange));
    }
    let object = format!("topic permissions of user '{user}' in vhost '{v}'");
    let request = Request::new(Method::Delete, path, object).in_vhost(v);
    ctl.client.call(request).await?;
    Ok(())
}

/// Policies and operator policies: the same commands on two API paths.
#[derive(Clone, Copy, Debug)]
pub enum PolicyKind {
    User,
    Operator,
}

impl PolicyKind {
    fn path(self, vhost: &str, name: &str) -> String {
        let kind = match self {
            PolicyKind::User => "policies",
            PolicyKind::Operator => "operator-policies",
        };
        format!("/api/{kind}/{}/{}", segment(vhost), segment(name))
    }

    fn noun(self) -> &'static str {
        match self {
            PolicyKind::User => "policy",
            PolicyKind::Operator => "operator policy",
        }
    }
}

pub async fn set_policy(ctl: &Ctl, kind: PolicyKind, p: &PolicyArgs) -> Result<(), CtlError> {
    let v = &ctl.vhost;
    let definition = parse_json("the policy definition", &p.definition)?;
    ctl.say(&format!(
        "Setting {} \"{}\" for pattern \"{}\" to \"{}\" with priority \"{}\" for vhost \"{v}\" ...",
        kind.noun(),
        p.name,
        p.pattern,
        p.definition,
        p.priority
    ));
    let body = json!({
        "pattern": p.pattern,
        "definition": definition,
        "priority": p.priority,
        "apply-to": p.apply_to,
    });
    let object = format!("{} '{}' in vhost '{v}'", kind.noun(), p.name);
    let request = Request::new(Method::Put, kind.path(v, &p.name), object)
        .in_vhost(v)
        .body(body);
    ctl.client.call(request).await?;
    Ok(())
}

pub async fn clear_policy(ctl: &Ctl, kind: PolicyKind, name: &str) -> Result<(), CtlError> {
    let v = &ctl.vhost;
    ctl.say(&format!(
        "Clearing {} \"{name}\" on vhost \"{v}\" ...",
        kind.noun()
    ));
    let object = format!("{} '{name}' in vhost '{v}'", kind.noun());
    let request = Request::new(Method::Delete, kind.path(v, name), object)
        .in_vhost(v)
        .missing(Missing::Unavailable);
    ctl.client.call(request).await?;
    Ok(())
}

/// Whose limits: a vhost's (`/api/vhost-limits`) or a user's (`/api/user-limits`).
#[derive(Clone, Copy, Debug)]
pub enum LimitsOf<'a> {
    Vhost(&'a str),
    User(&'a str),
}

impl LimitsOf<'_> {
    fn path(self) -> String {
        match self {
            LimitsOf::Vhost(v) => format!("/api/vhost-limits/{}", segment(v)),
            LimitsOf::User(u) => format!("/api/user-limits/{}", segment(u)),
        }
    }

    fn object(self) -> String {
        match self {
            LimitsOf::Vhost(v) => format!("vhost '{v}'"),
            LimitsOf::User(u) => format!("user '{u}'"),
        }
    }

    fn request(self, method: Method, path: String) -> Request {
        let request = Request::new(method, path, self.object());
        match self {
            LimitsOf::Vhost(v) => request.in_vhost(v),
            LimitsOf::User(_) => request,
        }
    }
}

/// Sets each limit of a JSON object such as `{"max-connections": 10}` (a negative value: none).
pub async fn set_limits(ctl: &Ctl, of: LimitsOf<'_>, limits: &str) -> Result<(), CtlError> {
    let Value::Object(limits) = parse_json("the limits", limits)? else {
        return Err(CtlError::Usage(
            "the limits must be a JSON object, e.g. {\"max-connections\": 10}".into(),
        ));
    };
    ctl.say(&format!("Setting limits of {} ...", of.object()));
    for (name, value) in limits {
        let path = format!("{}/{}", of.path(), segment(&name));
        let request = of.request(Method::Put, path).body(json!({"value": value}));
        ctl.client.call(request).await?;
    }
    Ok(())
}

/// Clears one limit, or every limit set (`all`).
pub async fn clear_limits(ctl: &Ctl, of: LimitsOf<'_>, limit: &str) -> Result<(), CtlError> {
    ctl.say(&format!(
        "Clearing limit \"{limit}\" of {} ...",
        of.object()
    ));
    let names: Vec<String> = if limit == "all" {
        let set = ctl.client.call(of.request(Method::Get, of.path())).await?;
        // `[{"vhost"|"user": ..., "value": {"max-connections": 10, ...}}]`
        set.as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.get("value").and_then(Value::as_object))
            .flat_map(|limits| limits.keys().cloned())
            .collect()
    } else {
        vec![limit.to_owned()]
    };
    for name in names {
        let path = format!("{}/{}", of.path(), segment(&name));
        ctl.client.call(of.request(Method::Delete, path)).await?;
    }
    Ok(())
}
