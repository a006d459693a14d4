//! Management over AMQP: any AMQP 0-9-1 client administers Warren with messages. A message
//! published to the reserved exchange [`EXCHANGE`] is a request, answered by a message to its
//! `reply_to` (a queue, through the default exchange, or direct reply-to) with its
//! `correlation_id`. The request names a management API call, which runs exactly as over HTTP
//! (the same handlers, checks and answers: `crate::http::call_as`), authorised as the
//! connection's user with its tags. Nothing about a request closes the channel: a bad one gets an
//! answer with status 400.
//!
//! Request body (JSON): `{"method": "GET"|"PUT"|"POST"|"DELETE", "path": "/api/...", "body":
//! {...}}`; `method` defaults to GET, `body` to none. Answer: the API's JSON body (empty for a
//! 204), `content_type` `application/json`, and the HTTP status in the `status` header.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use warren_amqp::encode::encode_properties;
use warren_amqp::protocol::basic::AMQPProperties;
use warren_amqp::types::{AMQPValue, FieldTable, ShortString};
use warren_amqp::PropertiesView;

use crate::broker::Broker;
use crate::exchange::LazyHeaders;
use crate::message::Message;
use crate::reply_to;
use crate::vhost::Vhost;

/// The exchange management requests are published to, in every vhost (it is not listed: it is
/// not an exchange messages are routed through). Publishing to it needs write permission on it,
/// as on any exchange.
pub const EXCHANGE: &str = "amq.warren.management";

/// Requests answered at once, broker-wide; a connection publishing more waits (stops reading)
/// until one is done, so requests cannot pile up in memory.
pub const CONCURRENT_REQUESTS: usize = 8;

/// A request, read from a message's body.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub method: axum::http::Method,
    pub path: String,
    pub body: Vec<u8>,
}

/// The answer to a request that cannot be made: 400 with RabbitMQ's `bad_request` body.
fn bad_request(reason: &str) -> (u16, Bytes) {
    let body = json!({"error": "bad_request", "reason": reason});
    (400, body.to_string().into())
}

/// Reads a request body; the answer to give instead when it is not one.
pub fn parse(body: &[u8]) -> Result<Request, (u16, Bytes)> {
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad_request("not_json"));
    };
    let method = match request.get("method") {
        None => axum::http::Method::GET,
        Some(Value::String(m)) => match m.to_ascii_uppercase().as_str() {
            "GET" => axum::http::Method::GET,
            "PUT" => axum::http::Method::PUT,
            "POST" => axum::http::Method::POST,
            "DELETE" => axum::http::Method::DELETE,
            _ => return Err(bad_request("method must be GET, PUT, POST or DELETE")),
        },
        Some(_) => return Err(bad_request("method must be a string")),
    };
    let path = match request.get("path") {
        Some(Value::String(p)) if p.starts_with("/api/") => p.clone(),
        _ => return Err(bad_request("path must be a string starting with /api/")),
    };
    let body = match request.remove("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(b) => b.to_string().into_bytes(),
    };
    Ok(Request { method, path, body })
}

/// Answers a request published on a connection of `user`: runs it, then sends the answer to
/// `reply_to` with `correlation_id`. Runs apart from the connection (a request may take long,
/// e.g. an import), so the connection goes on reading meanwhile, once one of the
/// [`CONCURRENT_REQUESTS`] places is free (the caller waits for it). A request in a transaction
/// runs at once too: it is not a message to route at commit.
pub async fn spawn_request(
    broker: Arc<Broker>,
    vhost: Arc<Vhost>,
    user: String,
    peer: SocketAddr,
    body: Bytes,
    reply_to: Option<String>,
    correlation_id: Option<Vec<u8>>,
) {
    let Ok(place) = broker.management_requests.clone().acquire_owned().await else {
        return;
    };
    tokio::spawn(async move {
        let (status, answer) = match parse(&body) {
            Ok(request) => {
                crate::http::call_as(
                    broker.clone(),
                    user,
                    peer,
                    request.method,
                    &request.path,
                    request.body,
                )
                .await
            }
            Err(answer) => answer,
        };
        // Answered: the place is free while the answer is sent.
        drop(place);
        let Some(reply_to) = reply_to else {
            tracing::debug!(
                status,
                "management request without reply_to: answer dropped"
            );
            return;
        };
        let properties = match answer_properties(status, correlation_id) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("cannot encode a management answer's properties: {e}");
                return;
            }
        };
        deliver(&broker, &vhost, &reply_to, &properties, answer).await;
    });
}

fn answer_properties(status: u16, correlation_id: Option<Vec<u8>>) -> Result<Vec<u8>, String> {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("status"),
        AMQPValue::LongInt(i32::from(status)),
    );
    let mut properties = AMQPProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_headers(headers);
    if let Some(id) = correlation_id {
        properties = properties
            .with_correlation_id(ShortString::from(String::from_utf8_lossy(&id).into_owned()));
    }
    encode_properties(&properties).map_err(|e| e.to_string())
}

/// Sends an answer as a publish to the default exchange with `reply_to` as routing key would
/// go (or to a direct reply-to requester); dropped, as an unroutable publish is, when nothing
/// takes it.
async fn deliver(broker: &Broker, vhost: &Vhost, reply_to: &str, properties: &[u8], body: Bytes) {
    let message = Message::from_parts(b"", reply_to.as_bytes(), properties, body, None);
    if reply_to.starts_with(reply_to::PREFIX) {
        broker.replies.deliver(reply_to, message);
        return;
    }
    let view = PropertiesView::parse(properties).unwrap_or_default();
    let headers = LazyHeaders::new(view.headers);
    let mut targets = Vec::new();
    if vhost
        .route_publish("", &[reply_to], &headers, &view, &mut targets)
        .is_err()
    {
        return;
    }
    drop(headers);
    for q in targets {
        q.publish(message.clone(), None, None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_and_bad_ones_answered_400() {
        let r = parse(br#"{"method":"put","path":"/api/vhosts/v","body":{"description":"d"}}"#)
            .unwrap();
        assert_eq!(r.method, axum::http::Method::PUT);
        assert_eq!(r.path, "/api/vhosts/v");
        assert_eq!(r.body, br#"{"description":"d"}"#);
        let r = parse(br#"{"path":"/api/overview"}"#).unwrap();
        assert_eq!((r.method, r.body), (axum::http::Method::GET, vec![]));
        for bad in [
            &b"not json"[..],
            br#"[1]"#,
            br#"{"path":"/metrics"}"#,
            br#"{"path":7}"#,
            br#"{"path":"/api/overview","method":"PATCH"}"#,
            br#"{"path":"/api/overview","method":1}"#,
        ] {
            let (status, body) = parse(bad).unwrap_err();
            assert_eq!(status, 400);
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                body["error"],
                "bad_request",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
