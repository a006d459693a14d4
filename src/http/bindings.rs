//! The management API's bindings, as RabbitMQ 3.10's plugin serves them: the listings (all, per
//! vhost, between a source and a destination, from or to an exchange, to a queue), `POST` to
//! bind (201 with a `Location` naming the new binding's `properties_key`), and `GET` / `DELETE`
//! of one binding by that key. Binding is queue.bind / exchange.bind for the requesting user:
//! write on the destination, read on the source.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::access::{arguments, body_object, check, direct_error, read_vhost, text, write_vhost};
use super::api::{vhost, ApiError, Shared, User};
use super::binding_key::{args_hash, properties_key, quote_plus, unpack};
use super::exchanges::exchange_name;
use crate::auth::Access;
use crate::broker::Broker;
use crate::vhost::{BindingInfo, Vhost};

type Answer = Result<Json<Value>, ApiError>;

fn binding_json(vhost: &str, b: &BindingInfo) -> Value {
    json!({
        "source": b.source,
        "vhost": vhost,
        "destination": b.destination,
        "destination_type": if b.destination_is_queue { "queue" } else { "exchange" },
        "routing_key": b.routing_key,
        "arguments": super::api::table_json(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

/// The vhost's bindings that `keep` selects, as JSON.
fn listing(v: &Vhost, keep: impl Fn(&BindingInfo) -> bool) -> Value {
    Value::Array(
        v.bindings_info()
            .iter()
            .filter(|b| keep(b))
            .map(|b| binding_json(&v.name, b))
            .collect(),
    )
}

pub async fn all(State(broker): Shared, User(user): User) -> Answer {
    let all: Vec<Value> = broker
        .vhosts()
        .iter()
        .filter(|v| super::api::sees_objects_of(&broker, &user, &v.name))
        .flat_map(|v| match listing(v, |_| true) {
            Value::Array(list) => list,
            _ => Vec::new(),
        })
        .collect();
    Ok(Json(Value::Array(all)))
}

pub async fn in_vhost(State(broker): Shared, User(user): User, Path(name): Path<String>) -> Answer {
    super::api::authorise_vhost(&broker, &user, &name)?;
    Ok(Json(listing(&*vhost(&broker, &name)?, |_| true)))
}

/// `e` or `q` in a path: whether the destination is a queue.
fn destination_is_queue(kind: &str) -> Result<bool, ApiError> {
    match kind {
        "q" => Ok(true),
        "e" => Ok(false),
        _ => Err(ApiError::NotFound),
    }
}

/// `GET /api/bindings/{vhost}/e/{source}/{q|e}/{destination}`.
pub async fn between(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, source, kind, destination)): Path<(String, String, String, String)>,
) -> Answer {
    let v = read_vhost(&broker, &user, &vhost_name)?;
    let to_queue = destination_is_queue(&kind)?;
    let source = exchange_name(&source);
    let destination = if to_queue {
        destination.as_str()
    } else {
        exchange_name(&destination)
    };
    Ok(Json(listing(&v, |b| {
        b.source == source && b.destination == destination && b.destination_is_queue == to_queue
    })))
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/source`.
pub async fn from_exchange(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, name)): Path<(String, String)>,
) -> Answer {
    let v = read_vhost(&broker, &user, &vhost_name)?;
    let name = exchange_name(&name);
    Ok(Json(listing(&v, |b| b.source == name)))
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/destination`.
pub async fn to_exchange(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, name)): Path<(String, String)>,
) -> Answer {
    let v = read_vhost(&broker, &user, &vhost_name)?;
    let name = exchange_name(&name);
    Ok(Json(listing(&v, |b| {
        !b.destination_is_queue && b.destination == name
    })))
}

/// `GET /api/queues/{vhost}/{name}/bindings`. For a queue that does not exist RabbitMQ lists
/// the default exchange's implicit binding to it all the same; so does this.
pub async fn to_queue(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, name)): Path<(String, String)>,
) -> Answer {
    let v = read_vhost(&broker, &user, &vhost_name)?;
    if v.find_queue(&name).is_none() {
        let implicit = BindingInfo {
            source: String::new(),
            destination: name.clone(),
            destination_is_queue: true,
            routing_key: name,
            arguments: Default::default(),
        };
        return Ok(Json(json!([binding_json(&v.name, &implicit)])));
    }
    Ok(Json(listing(&v, |b| {
        b.destination_is_queue && b.destination == name
    })))
}

/// The permission checks of queue.bind / exchange.bind (and their unbinds).
fn check_bind(
    broker: &Broker,
    user: &str,
    v: &Vhost,
    source: &str,
    destination: &str,
    to_queue: bool,
) -> Result<(), ApiError> {
    let kind = if to_queue { "queue" } else { "exchange" };
    check(broker, user, &v.name, Access::Write, kind, destination).map_err(direct_error)?;
    check(broker, user, &v.name, Access::Read, "exchange", source).map_err(direct_error)
}

/// `POST /api/bindings/{vhost}/e/{source}/{q|e}/{destination}`: `routing_key`, `arguments`.
pub async fn create(
    State(broker): Shared,
    User(user): User,
    Path((vhost_name, source, kind, destination)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let to_queue = destination_is_queue(&kind)?;
    let v = write_vhost(&broker, &user, &vhost_name)?;
    let body = body_object(&body)?;
    let routing_key = text(&body, "routing_key")?;
    if routing_key.len() > 255 {
        return Err(ApiError::BadRequest(json!(
            "routing key longer than 255 octets"
        )));
    }
    let arguments = arguments(&body)?;
    let source = exchange_name(&source);
    let destination = if to_queue {
        destination.as_str()
    } else {
        exchange_name(&destination)
    };
    check_bind(&broker, &user, &v, source, destination, to_queue)?;
    let bound = if to_queue {
        v.bind_queue(
            destination,
            broker.next_id(),
            source,
            routing_key,
            &arguments,
        )
        .await
    } else {
        v.bind_exchange(destination, source, routing_key, &arguments)
            .await
    };
    bound.map_err(direct_error)?;
    // Relative to the request's path, as RabbitMQ's plugin makes it.
    let location = format!(
        "{}/{}",
        quote_plus(destination),
        quote_plus(&properties_key(routing_key, &arguments))
    );
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// The binding a `properties_key` names between a source and a destination.
fn find(
    v: &Vhost,
    source: &str,
    destination: &str,
    to_queue: bool,
    props: &str,
) -> Result<BindingInfo, ApiError> {
    // A key that does not parse names nothing (RabbitMQ: the resource does not exist).
    let (routing_key, hash) = unpack(props).map_err(|_| ApiError::NotFound)?;
    v.bindings_info()
        .into_iter()
        .find(|b| {
            b.source == source
                && b.destination == destination
                && b.destination_is_queue == to_queue
                && b.routing_key == routing_key
                && match &hash {
                    None => b.arguments.inner().is_empty(),
                    Some(h) => args_hash(&b.arguments) == *h,
                }
        })
        .ok_or(ApiError::NotFound)
}

/// The path of one binding: vhost, source, `q` or `e`, destination, `properties_key`.
type OnePath = Path<(String, String, String, String, String)>;

/// The binding a path names, with its vhost (404 for a missing vhost, an unknown `q`/`e` or no
/// such binding).
fn one(
    broker: &Broker,
    user: &str,
    Path((vhost_name, source, kind, destination, props)): OnePath,
) -> Result<(std::sync::Arc<Vhost>, BindingInfo), ApiError> {
    let to_queue = destination_is_queue(&kind)?;
    let v = read_vhost(broker, user, &vhost_name)?;
    let destination = if to_queue {
        destination.as_str()
    } else {
        exchange_name(&destination)
    };
    let b = find(&v, exchange_name(&source), destination, to_queue, &props)?;
    Ok((v, b))
}

/// `GET /api/bindings/{vhost}/e/{source}/{q|e}/{destination}/{props}`.
pub async fn get_one(State(broker): Shared, User(user): User, path: OnePath) -> Answer {
    let (v, b) = one(&broker, &user, path)?;
    Ok(Json(binding_json(&v.name, &b)))
}

/// `DELETE /api/bindings/{vhost}/e/{source}/{q|e}/{destination}/{props}`: unbind.
pub async fn delete(
    State(broker): Shared,
    User(user): User,
    path: OnePath,
) -> Result<StatusCode, ApiError> {
    let (v, b) = one(&broker, &user, path)?;
    let (source, destination) = (b.source.as_str(), b.destination.as_str());
    check_bind(
        &broker,
        &user,
        &v,
        source,
        destination,
        b.destination_is_queue,
    )?;
    let unbound = if b.destination_is_queue {
        v.unbind_queue(
            destination,
            broker.next_id(),
            source,
            &b.routing_key,
            &b.arguments,
        )
        .await
    } else {
        v.unbind_exchange(destination, source, &b.routing_key, &b.arguments)
            .await
    };
    unbound.map_err(direct_error)?;
    Ok(StatusCode::NO_CONTENT)
}
