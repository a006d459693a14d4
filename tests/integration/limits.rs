//! Vhost limits, user limits and topic permissions as clients meet them: refusals with
//! RabbitMQ's codes and texts (530 at connection.open and channel.open, 406 at queue.declare,
//! 403 on a topic key), only the offending channel or connection closed, slots freed by
//! connections that vanish, changes in effect without reconnecting, and everything kept across
//! a restart. (The API's bodies and errors are compared with RabbitMQ's in compat-tests'
//! differential scenarios, `scenarios_limits.py`.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use warren_amqp::protocol::{channel as chan, AMQPClass};

const GUEST: (&str, &str) = ("guest", "guest");

fn put(addr: SocketAddr, path: &str, body: &str) -> u16 {
    http_request(addr, "PUT", path, &[], Some(body), Some(GUEST)).0
}

fn delete(addr: SocketAddr, path: &str) -> u16 {
    http_request(addr, "DELETE", path, &[], Some(""), Some(GUEST)).0
}

/// A user `name` (password `pp`) with every permission on `/`.
fn add_user(addr: SocketAddr, name: &str) {
    assert_eq!(
        put(
            addr,
            &format!("/api/users/{name}"),
            r#"{"password":"pp","tags":""}"#
        ),
        201
    );
    assert_eq!(
        put(
            addr,
            &format!("/api/permissions/%2F/{name}"),
            r#"{"configure":".*","write":".*","read":".*"}"#
        ),
        201
    );
}

fn as_user(name: &str) -> Handshake {
    Handshake {
        response: plain(name, "pp"),
        ..Handshake::default()
    }
}

/// Sends the handshake up to connection.open and expects the open refused with `text` (530).
async fn expect_open_refused(addr: SocketAddr, h: Handshake, text: &str) {
    let vhost = h.vhost.clone();
    let mut r = Raw::start(addr).await;
    r.start_ok(&h).await;
    let tune = r.expect_tune().await;
    r.tune_ok(&h, &tune).await;
    r.send_connection_open(&vhost).await;
    let close = r.expect_connection_close_ok().await;
    close.assert(530, 10, 40);
    close.assert_text(text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_connection_frees_its_place_under_the_vhost_limit() {
    let b = start().await;
    assert_eq!(
        put(
            b.http_addr,
            "/api/vhost-limits/%2F/max-connections",
            r#"{"value":1}"#
        ),
        204
    );
    let first = Raw::open(b.addr).await;
    let refused = "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (1) is reached";
    expect_open_refused(b.addr, Handshake::default(), refused).await;
    // The first client vanishes without closing anything; its place is given back once the
    // broker sees the socket go (the next open may race that, so it is retried until then).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut second = loop {
        let mut r = Raw::start(b.addr).await;
        let h = Handshake::default();
        r.start_ok(&h).await;
        let tune = r.expect_tune().await;
        r.tune_ok(&h, &tune).await;
        r.send_connection_open("/").await;
        match r.recv().await {
            In::Method(
                0,
                AMQPClass::Connection(warren_amqp::protocol::connection::AMQPMethod::OpenOk(_)),
            ) => break r,
            _ => assert!(
                Instant::now() < deadline,
                "the vanished connection still counts after 10 s"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The one admitted works.
    second.open_channel(1).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_channel_limit_counts_every_connection_and_closes_only_the_one_over_it() {
    let b = start().await;
    add_user(b.http_addr, "chans");
    assert_eq!(
        put(
            b.http_addr,
            "/api/user-limits/chans/max-channels",
            r#"{"value":3}"#
        ),
        204
    );
    let mut a = Raw::open_with(b.addr, as_user("chans")).await;
    a.open_channel(1).await;
    a.open_channel(2).await;
    let mut c = Raw::open_with(b.addr, as_user("chans")).await;
    c.open_channel(1).await;
    c.send_method(2, AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {})))
        .await;
    let close = c.expect_connection_close_ok().await;
    close.assert(530, 0, 0);
    close.assert_text("NOT_ALLOWED - number of channels opened for user 'chans' has reached the maximum allowed user limit of (3)");
    // The other connection goes on, and the closed one's channel was given back.
    let q = "limits-chan-q";
    a.send_method(
        1,
        AMQPClass::Queue(warren_amqp::protocol::queue::AMQPMethod::Declare(
            warren_amqp::protocol::queue::Declare {
                queue: q.into(),
                ..Default::default()
            },
        )),
    )
    .await;
    let _ = a.expect_method().await;
    a.publish(1, "", q, b"still here").await;
    let got = a.get(2, q, true).await.expect("the message");
    assert_eq!(got.body, b"still here");
    let mut d = Raw::open_with(b.addr, as_user("chans")).await;
    d.open_channel(1).await;
    // Other users are not limited.
    let mut g = Raw::open(b.addr).await;
    for ch in 1..=5 {
        g.open_channel(ch).await;
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_connection_limit_and_vhost_queue_limit_refuse_with_rabbitmq_texts() {
    let b = start().await;
    add_user(b.http_addr, "conns");
    assert_eq!(
        put(
            b.http_addr,
            "/api/user-limits/conns/max-connections",
            r#"{"value":2}"#
        ),
        204
    );
    let _one = Raw::open_with(b.addr, as_user("conns")).await;
    let _two = Raw::open_with(b.addr, as_user("conns")).await;
    expect_open_refused(
        b.addr,
        as_user("conns"),
        "NOT_ALLOWED - connection refused for user 'conns': user connection limit (2) is reached",
    )
    .await;
    // A limit of -1 is none; a change applies at the next open.
    assert_eq!(
        put(
            b.http_addr,
            "/api/user-limits/conns/max-connections",
            r#"{"value":-1}"#
        ),
        204
    );
    let _three = Raw::open_with(b.addr, as_user("conns")).await;

    // Queues: the vhost's existing ones count; redeclaring one that exists is fine.
    let conn = lapin_connect(&b).await;
    let ch = lapin_channel(&conn).await;
    lapin_declare(&ch, "limits-q1").await;
    assert_eq!(
        put(
            b.http_addr,
            "/api/vhost-limits/%2F/max-queues",
            r#"{"value":1}"#
        ),
        204
    );
    lapin_declare(&ch, "limits-q1").await;
    let err = ch
        .queue_declare(
            "limits-q2".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("over the queue limit");
    assert_eq!(lapin_code(&err), Some(406));
    assert_eq!(
        lapin_text(&err),
        "PRECONDITION_FAILED - cannot declare queue 'limits-q2': queue limit in vhost '/' (1) is reached"
    );
    // Only that channel closed; deleting a queue makes room.
    let ch = lapin_channel(&conn).await;
    ch.queue_delete("limits-q1".into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
    lapin_declare(&ch, "limits-q2").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions_refuse_only_the_offending_publishes_and_apply_without_reconnecting() {
    let b = start().await;
    add_user(b.http_addr, "alice");
    assert_eq!(
        put(
            b.http_addr,
            "/api/topic-permissions/%2F/alice",
            r#"{"exchange":"amq.topic","write":"^{username}\\.","read":".*"}"#
        ),
        201
    );
    let uri = format!("amqp://alice:pp@{}/%2f", b.addr);
    let conn = within(
        "connect",
        lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
    )
    .await
    .expect("alice connects");
    let ch = lapin_channel(&conn).await;
    let q = lapin_declare(&ch, "").await;
    let q = q.name().as_str().to_owned();
    ch.queue_bind(
        q.as_str().into(),
        "amq.topic".into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind (read is .*)");
    // Published = consumed + refused: every allowed key arrives (lapin's connection), each
    // refused one closes only its own channel (a raw connection, for the exact close).
    let mut raw = Raw::open_with(b.addr, as_user("alice")).await;
    raw.open_channel(1).await;
    let mut allowed = 0;
    for i in 0..20u16 {
        if i % 5 == 4 {
            let bad = 100 + i;
            raw.open_channel(bad).await;
            raw.publish(bad, "amq.topic", &format!("bob.{i}"), b"refused")
                .await;
            let close = raw.expect_channel_close(bad).await;
            close.assert(403, 60, 40);
            close.assert_text(&format!("ACCESS_REFUSED - access to topic 'bob.{i}' in exchange 'amq.topic' in vhost '/' refused for user 'alice'"));
            raw.send_method(
                bad,
                AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
            )
            .await;
        } else {
            lapin_publish(&ch, "amq.topic", &format!("alice.{i}"), b"ok").await;
            raw.publish(1, "amq.topic", &format!("alice.raw.{i}"), b"ok")
                .await;
            allowed += 2;
        }
    }
    // The raw connection's publishes are in once a round trip on their channel is done.
    raw.send_method(
        1,
        AMQPClass::Queue(warren_amqp::protocol::queue::AMQPMethod::Declare(
            warren_amqp::protocol::queue::Declare {
                queue: q.as_str().into(),
                passive: true,
                ..Default::default()
            },
        )),
    )
    .await;
    let _ = raw.expect_method().await;
    assert_eq!(lapin_count(&ch, &q).await, allowed);
    // Loosened over the API: the same open connection may now publish bob's key.
    assert_eq!(
        put(
            b.http_addr,
            "/api/topic-permissions/%2F/alice",
            r#"{"exchange":"amq.topic","write":".*","read":".*"}"#
        ),
        204
    );
    lapin_publish(&ch, "amq.topic", "bob.1", b"now allowed").await;
    assert_eq!(lapin_count(&ch, &q).await, allowed + 1);
    // Tightened again, then removed.
    assert_eq!(
        put(
            b.http_addr,
            "/api/topic-permissions/%2F/alice",
            r#"{"exchange":"amq.topic","write":"^$","read":".*"}"#
        ),
        204
    );
    // The raw connection stays open through all this: its cached permission is renewed too.
    raw.open_channel(99).await;
    raw.publish(99, "amq.topic", "alice.x", b"refused").await;
    let close = raw.expect_channel_close(99).await;
    close.assert(403, 60, 40);
    assert_eq!(delete(b.http_addr, "/api/topic-permissions/%2F/alice"), 204);
    lapin_publish(&ch, "amq.topic", "anyone", b"unrestricted").await;
    assert_eq!(lapin_count(&ch, &q).await, allowed + 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_topic_permissions_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = ChildBroker::start(dir.path(), &[]);
    let http: SocketAddr = ([127, 0, 0, 1], broker.http_port).into();
    add_user(http, "kept");
    assert_eq!(
        put(http, "/api/vhost-limits/%2F/max-queues", r#"{"value":1}"#),
        204
    );
    assert_eq!(
        put(http, "/api/user-limits/kept/max-channels", r#"{"value":1}"#),
        204
    );
    assert_eq!(
        put(
            http,
            "/api/topic-permissions/%2F/kept",
            r#"{"exchange":"amq.topic","write":"^k","read":"^k"}"#
        ),
        201
    );
    // A password change keeps the user's limits.
    assert_eq!(
        put(
            http,
            "/api/users/kept",
            r#"{"password":"pp","tags":"management"}"#
        ),
        204
    );
    broker.stop();
    let broker = ChildBroker::start(dir.path(), &[]);
    let (status, body) = broker.http_get("/api/vhost-limits");
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        listed,
        serde_json::json!([{"vhost": "/", "value": {"max-queues": 1}}])
    );
    let (_, body) = broker.http_get("/api/users/kept");
    let user: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(user["limits"], serde_json::json!({"max-channels": 1}));
    let (_, body) = broker.http_get("/api/topic-permissions");
    let topic: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        topic,
        serde_json::json!([{"user": "kept", "vhost": "/", "exchange": "amq.topic", "write": "^k", "read": "^k"}])
    );
    // And in effect: one channel for `kept`.
    let addr: SocketAddr = ([127, 0, 0, 1], broker.port).into();
    let mut r = Raw::open_with(addr, as_user("kept")).await;
    r.open_channel(1).await;
    r.send_method(2, AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {})))
        .await;
    r.expect_connection_close_ok().await.assert(530, 0, 0);
    broker.stop();
}
