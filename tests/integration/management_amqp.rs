//! Management over AMQP as a client sees it: a request published to `amq.warren.management`
//! with `reply_to` and `correlation_id` gets an answer message (the HTTP API's JSON body, its
//! status in the `status` header), authorised as the connection's user exactly as the HTTP API
//! would; bad requests get a 400 answer, never a closed channel.

use std::time::Duration;

use crate::common::*;
use futures::StreamExt as _;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::{json, Value};

const EXCHANGE: &str = "amq.warren.management";

/// A connection as `user` with a reply queue consumed.
struct Admin {
    _conn: lapin::Connection,
    ch: lapin::Channel,
    reply_queue: String,
    answers: lapin::Consumer,
    next_id: u32,
}

impl Admin {
    async fn connect(b: &TestBroker, user: &str, pass: &str) -> Admin {
        let uri = format!("amqp://{user}:{pass}@{}/%2f", b.addr);
        let conn = within(
            "connect",
            lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
        )
        .await
        .expect("connect");
        let ch = lapin_channel(&conn).await;
        let q = lapin_declare(&ch, "").await.name().as_str().to_owned();
        let answers = ch
            .basic_consume(
                q.as_str().into(),
                "answers".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume answers");
        Admin {
            _conn: conn,
            ch,
            reply_queue: q,
            answers,
            next_id: 0,
        }
    }

    /// Publishes `request` (raw body) with reply_to and a fresh correlation id; the answer's
    /// status and JSON body (Null when empty).
    async fn ask_raw(&mut self, request: &[u8]) -> (i64, Value) {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        self.ch
            .basic_publish(
                EXCHANGE.into(),
                "".into(),
                BasicPublishOptions::default(),
                request,
                lapin::BasicProperties::default()
                    .with_reply_to(self.reply_queue.as_str().into())
                    .with_correlation_id(id.as_str().into()),
            )
            .await
            .expect("publish request");
        let answer = lapin_next(&mut self.answers).await;
        let props = &answer.properties;
        assert_eq!(
            props.correlation_id().as_ref().map(ShortString::as_str),
            Some(id.as_str())
        );
        assert_eq!(
            props.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        let status = props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("status").cloned())
            .and_then(|v| match v {
                AMQPValue::LongInt(n) => Some(i64::from(n)),
                _ => None,
            })
            .expect("status header");
        let body = serde_json::from_slice(&answer.data).unwrap_or(Value::Null);
        (status, body)
    }

    async fn ask(&mut self, request: Value) -> (i64, Value) {
        self.ask_raw(request.to_string().as_bytes()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_manages_the_broker_with_messages() {
    let b = start().await;
    let mut admin = Admin::connect(&b, "guest", "guest").await;
    let (status, overview) = admin.ask(json!({"path": "/api/overview"})).await;
    assert_eq!(status, 200);
    assert!(overview["node"].is_string(), "{overview}");
    assert_eq!(
        admin
            .ask(json!({"method": "PUT", "path": "/api/vhosts/over-amqp", "body": {"description": "made by a message"}}))
            .await,
        (201, Value::Null)
    );
    let (status, vhost) = admin.ask(json!({"path": "/api/vhosts/over-amqp"})).await;
    assert_eq!(
        (status, &vhost["description"]),
        (200, &json!("made by a message"))
    );
    // The same writes as over HTTP: a queue, a publish, a get.
    assert_eq!(
        admin
            .ask(
                json!({"method": "PUT", "path": "/api/queues/%2F/made", "body": {"durable": false}})
            )
            .await
            .0,
        201
    );
    let (status, routed) = admin
        .ask(json!({"method": "POST", "path": "/api/exchanges/%2F/amq.default/publish",
                    "body": {"routing_key": "made", "properties": {}, "payload": "hello", "payload_encoding": "string"}}))
        .await;
    assert_eq!((status, routed), (200, json!({"routed": true})));
    assert_eq!(lapin_count(&admin.ch, "made").await, 1);
    // Errors are answers: the channel stays open.
    assert_eq!(
        admin.ask_raw(b"not json").await,
        (400, json!({"error": "bad_request", "reason": "not_json"}))
    );
    assert_eq!(
        admin.ask(json!({"path": "/api/nonsense/x/y/z"})).await.0,
        404
    );
    assert_eq!(
        admin.ask(json!({"path": "/metrics"})).await,
        (
            400,
            json!({"error": "bad_request", "reason": "path must be a string starting with /api/"})
        )
    );
    assert_eq!(
        admin
            .ask(json!({"method": "PUT", "path": "/api/policies/%2F/p", "body": {"pattern": "(", "definition": {}}}))
            .await
            .0,
        400
    );
    assert_eq!(
        admin
            .ask(json!({"method": "DELETE", "path": "/api/vhosts/over-amqp"}))
            .await
            .0,
        204
    );
    assert_eq!(
        admin.ask(json!({"path": "/api/vhosts/over-amqp"})).await.0,
        404
    );
    // A request without reply_to is carried out; there is nobody to answer.
    lapin_publish(
        &admin.ch,
        EXCHANGE,
        "",
        json!({"method": "PUT", "path": "/api/vhosts/silent"})
            .to_string()
            .as_bytes(),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while admin.ask(json!({"path": "/api/vhosts/silent"})).await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_authorised_as_the_connections_user() {
    let b = start().await;
    let mut admin = Admin::connect(&b, "guest", "guest").await;
    for (user, tags) in [("plain", ""), ("watcher", "monitoring")] {
        assert_eq!(
            admin
                .ask(json!({"method": "PUT", "path": format!("/api/users/{user}"), "body": {"password": "pp", "tags": tags}}))
                .await
                .0,
            201
        );
        assert_eq!(
            admin
                .ask(
                    json!({"method": "PUT", "path": format!("/api/permissions/%2F/{user}"),
                            "body": {"configure": ".*", "write": ".*", "read": ".*"}})
                )
                .await
                .0,
            201
        );
    }
    // No management tag: refused as the HTTP API refuses it.
    let mut plain = Admin::connect(&b, "plain", "pp").await;
    assert_eq!(
        plain.ask(json!({"path": "/api/overview"})).await,
        (
            401,
            json!({"error": "not_authorised", "reason": "Not management user"})
        )
    );
    // Monitoring reads, but may not change users.
    let mut watcher = Admin::connect(&b, "watcher", "pp").await;
    assert_eq!(watcher.ask(json!({"path": "/api/users"})).await.0, 401);
    assert_eq!(watcher.ask(json!({"path": "/api/queues"})).await.0, 200);
    assert_eq!(
        watcher
            .ask(json!({"method": "PUT", "path": "/api/users/x", "body": {"password": "p", "tags": ""}}))
            .await,
        (401, json!({"error": "not_authorised", "reason": "Not administrator user"}))
    );
    // Tags changed over the API apply to the next request on the same connection.
    assert_eq!(
        admin
            .ask(json!({"method": "PUT", "path": "/api/users/plain", "body": {"password": "pp", "tags": "administrator"}}))
            .await
            .0,
        204
    );
    assert_eq!(plain.ask(json!({"path": "/api/users"})).await.0, 200);
    // Publishing to the management exchange needs write permission on it, as on any exchange.
    assert_eq!(
        admin
            .ask(
                json!({"method": "PUT", "path": "/api/permissions/%2F/watcher",
                        "body": {"configure": ".*", "write": "^$", "read": ".*"}})
            )
            .await
            .0,
        204
    );
    let ch = lapin_channel(&watcher._conn).await;
    let _ = ch
        .basic_publish(
            EXCHANGE.into(),
            "".into(),
            BasicPublishOptions::default(),
            br#"{"path":"/api/overview"}"#,
            lapin::BasicProperties::default().with_reply_to(watcher.reply_queue.as_str().into()),
        )
        .await;
    let refused = ch
        .queue_declare(
            watcher.reply_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(refused.is_err(), "the publish was refused");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_go_to_direct_reply_to() {
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = lapin_channel(&conn).await;
    let mut replies = ch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume direct reply-to");
    ch.basic_publish(
        EXCHANGE.into(),
        "".into(),
        BasicPublishOptions::default(),
        br#"{"path":"/api/whoami"}"#,
        lapin::BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id("w".into()),
    )
    .await
    .expect("publish");
    let answer = within("answer", replies.next())
        .await
        .expect("an answer")
        .expect("delivery");
    let body: Value = serde_json::from_slice(&answer.data).expect("json");
    assert_eq!(body["name"], "guest");
    b.stop().await;
}

/// A client that pipelines many requests (more than are answered at once) gets every answer,
/// each with its own correlation id, and another client is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_is_answered_in_full() {
    let b = start().await;
    let mut flooder = Admin::connect(&b, "guest", "guest").await;
    const N: usize = 300;
    for i in 0..N {
        flooder
            .ch
            .basic_publish(
                EXCHANGE.into(),
                "".into(),
                BasicPublishOptions::default(),
                br#"{"path":"/api/overview"}"#,
                lapin::BasicProperties::default()
                    .with_reply_to(flooder.reply_queue.as_str().into())
                    .with_correlation_id(format!("flood-{i}").as_str().into()),
            )
            .await
            .expect("publish");
    }
    let mut other = Admin::connect(&b, "guest", "guest").await;
    assert_eq!(other.ask(json!({"path": "/api/whoami"})).await.0, 200);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..N {
        let answer = lapin_next(&mut flooder.answers).await;
        let id = answer
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .expect("correlation id");
        assert!(seen.insert(id), "one answer per request");
    }
    assert_eq!(seen.len(), N);
    b.stop().await;
}
