//! The management API's writes as a client sees them: queues and exchanges declared, deleted and
//! purged over HTTP and then used over AMQP (lapin); messages published over HTTP consumed over
//! AMQP and published over AMQP got over HTTP with each ack mode; bindings made, found by their
//! `properties_key` and removed; RabbitMQ 3.10's status codes and error bodies for bad input and
//! refused users; definitions exported, imported (a file exported by RabbitMQ 3.10.8 included)
//! and loaded at start.

use std::net::SocketAddr;

use crate::common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use serde_json::{json, Value};

const GUEST: (&str, &str) = ("guest", "guest");

/// The definitions RabbitMQ 3.10.8 exported (`GET /api/definitions`) after its topology was made
/// over its management API: three vhosts, users with each kind of tag and both hash algorithms,
/// exchanges of every type, classic queues with arguments, exchange-to-exchange bindings.
const RABBITMQ_DEFINITIONS: &str = include_str!("../fixtures/rabbitmq-3.10-definitions.json");

/// `METHOD path` with a JSON body, off the runtime's threads: status, head, body as JSON (or
/// `Value::String` of the text when it is not JSON).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
    auth: (&str, &str),
) -> (u16, String, Value) {
    let body = body.map(|b| b.to_string());
    raw_call(addr, method, path, body.map(String::into_bytes), auth).await
}

async fn raw_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    auth: (&str, &str),
) -> (u16, String, Value) {
    let (method, path) = (method.to_owned(), path.to_owned());
    let (user, pass) = (auth.0.to_owned(), auth.1.to_owned());
    let (status, head, text) = tokio::task::spawn_blocking(move || {
        http_exchange(
            addr,
            &method,
            &path,
            &[],
            Some(body.as_deref().unwrap_or_default()),
            Some((&user, &pass)),
        )
    })
    .await
    .expect("http call");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, head, value)
}

async fn as_guest(b: &TestBroker, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, _, value) = call(b.http_addr, method, path, body, GUEST).await;
    (status, value)
}

/// A request under way: status and JSON body.
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = (u16, Value)> + Send>>;

/// `PUT path` as guest, from a closure that outlives no borrow of the path.
fn putter(b: &TestBroker) -> impl Fn(&str, Value) -> Pending {
    let addr = b.http_addr;
    move |path: &str, body: Value| {
        let path = path.to_owned();
        Box::pin(async move {
            let (status, _, value) = call(addr, "PUT", &path, Some(body), GUEST).await;
            (status, value)
        })
    }
}

async fn connect_as(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    vhost: &str,
) -> lapin::Result<lapin::Connection> {
    let uri = format!(
        "amqp://{}:{}@{addr}/{}",
        urlencode(user),
        urlencode(pass),
        urlencode(vhost)
    );
    within(
        "connect",
        lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
    )
    .await
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn bad_request(reason: Value) -> (u16, Value) {
    (400, json!({"error": "bad_request", "reason": reason}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_put_over_http_is_a_queue_over_amqp_and_redeclares_answer_as_rabbitmq() {
    let b = start().await;
    let body = json!({"durable": true, "auto_delete": false, "arguments": {"x-max-length": 2}, "node": "rabbit@x"});
    let path = "/api/queues/%2F/mw.q";
    assert_eq!(as_guest(&b, "PUT", path, Some(body.clone())).await.0, 201);
    assert_eq!(
        as_guest(&b, "PUT", path, Some(body)).await.0,
        204,
        "equivalent"
    );
    assert_eq!(
        as_guest(&b, "PUT", path, Some(json!({"durable": false}))).await,
        bad_request(json!("inequivalent arg 'durable' for queue 'mw.q' in vhost '/': received 'false' but current is 'true'"))
    );
    assert_eq!(
        as_guest(&b, "PUT", path, Some(json!({"durable": true}))).await,
        bad_request(json!("inequivalent arg 'x-max-length' for queue 'mw.q' in vhost '/': received none but current is the value '2' of type 'long'"))
    );
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    for body in [b"1", b"2", b"3"] {
        lapin_publish(&ch, "", "mw.q", body).await;
    }
    assert_eq!(
        lapin_count(&ch, "mw.q").await,
        2,
        "x-max-length from the PUT"
    );
    let (status, q) = as_guest(&b, "GET", path, None).await;
    assert_eq!(
        (status, &q["durable"], &q["arguments"]),
        (200, &json!(true), &json!({"x-max-length": 2}))
    );

    // Bad input, as RabbitMQ answers it.
    for (body, want) in [
        ("{\"durable\":tru", bad_request(json!("not_json"))),
        ("[1]", bad_request(json!("not_json"))),
        ("\"abc\"", bad_request(json!("invalid payload: the request body JSON-decoded to a string. Is the input doubly-JSON-encoded?"))),
        ("{\"durable\":\"yes\"}", bad_request(json!(["not_boolean", "yes"]))),
        ("{\"arguments\":{\"x-max-length\":\"abc\"}}", bad_request(json!("invalid arg 'x-max-length' for queue 'mw.q2' in vhost '/': \"expected integer, got longstr\""))),
    ] {
        let (status, _, value) = raw_call(b.http_addr, "PUT", "/api/queues/%2F/mw.q2", Some(body.into()), GUEST).await;
        assert_eq!((status, value), want, "PUT {body}");
    }
    assert_eq!(
        as_guest(&b, "PUT", "/api/queues/nosuch/q", Some(json!({}))).await,
        (
            404,
            json!({"error": "not_found", "reason": "vhost_not_found"})
        )
    );
    assert_eq!(
        as_guest(&b, "PUT", "/api/queues/%2F/amq.q", Some(json!({}))).await,
        (
            401,
            json!({"error": "not_authorised", "reason": "Access refused."})
        )
    );
    // An empty body declares with the defaults.
    assert_eq!(
        as_guest(&b, "PUT", "/api/queues/%2F/mw.empty", None)
            .await
            .0,
        201
    );
    assert_eq!(lapin_count(&ch, "mw.empty").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_purges_over_http_with_rabbitmq_conditions() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    lapin_declare(&ch, "mw.del").await;
    lapin_publish(&ch, "", "mw.del", b"x").await;
    // In the queue before the HTTP request (another connection) looks: a round trip after it.
    assert_eq!(lapin_count(&ch, "mw.del").await, 1);
    assert_eq!(
        as_guest(&b, "DELETE", "/api/queues/%2F/mw.del?if-empty=true", None).await,
        bad_request(json!("queue 'mw.del' in vhost '/' not empty"))
    );
    let mut consumer = ch
        .basic_consume(
            "mw.del".into(),
            "tag".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let first = lapin_next(&mut consumer).await;
    first.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(
        as_guest(&b, "DELETE", "/api/queues/%2F/mw.del?if-unused=true", None).await,
        bad_request(json!("queue 'mw.del' in vhost '/' in use"))
    );
    lapin_publish(&ch, "", "mw.del", b"y").await;
    lapin_next(&mut consumer).await;
    drop(consumer);
    let ch2 = lapin_channel(&c).await;
    lapin_declare(&ch2, "mw.purge").await;
    for _ in 0..3 {
        lapin_publish(&ch2, "", "mw.purge", b"p").await;
    }
    assert_eq!(lapin_count(&ch2, "mw.purge").await, 3);
    assert_eq!(
        as_guest(&b, "DELETE", "/api/queues/%2F/mw.purge/contents", None)
            .await
            .0,
        204
    );
    assert_eq!(lapin_count(&ch2, "mw.purge").await, 0);
    assert_eq!(
        as_guest(&b, "DELETE", "/api/queues/%2F/mw.del", None)
            .await
            .0,
        204
    );
    let not_found = (
        404,
        json!({"error": "Object Not Found", "reason": "Not Found"}),
    );
    assert_eq!(
        as_guest(&b, "DELETE", "/api/queues/%2F/mw.del", None).await,
        not_found
    );
    assert_eq!(
        as_guest(&b, "DELETE", "/api/queues/nosuch/mw.del", None).await,
        not_found
    );
    assert_eq!(
        as_guest(&b, "DELETE", "/api/queues/%2F/nosuch/contents", None).await,
        not_found
    );
    assert_lapin_code(
        ch2.queue_declare(
            "mw.del".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await,
        404,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_over_http_is_consumed_over_amqp_with_its_properties() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    ch.queue_declare(
        "mw.pub".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let mut consumer = ch
        .basic_consume(
            "mw.pub".into(),
            "t".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let publish = |exchange: &str, body: Value| {
        let path = format!("/api/exchanges/%2F/{exchange}/publish");
        let addr = b.http_addr;
        async move {
            let (status, _, value) = call(addr, "POST", &path, Some(body), GUEST).await;
            (status, value)
        }
    };
    let body = json!({
        "routing_key": "mw.pub",
        "payload": "aGVsbG8=",
        "payload_encoding": "base64",
        "properties": {"content_type": "text/plain", "delivery_mode": 2, "priority": 3,
                       "headers": {"h": 1, "s": "v"}, "correlation_id": "c1", "timestamp": 7},
    });
    assert_eq!(
        publish("amq.default", body).await,
        (200, json!({"routed": true}))
    );
    let d = lapin_next(&mut consumer).await;
    assert_eq!(d.data, b"hello");
    assert_eq!(
        d.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    assert_eq!(*d.properties.delivery_mode(), Some(2));
    assert_eq!(*d.properties.priority(), Some(3));
    assert_eq!(*d.properties.timestamp(), Some(7));
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|s| s.as_str()),
        Some("c1")
    );
    let headers = d.properties.headers().clone().expect("headers");
    assert_eq!(
        headers.inner().get("h"),
        Some(&lapin::types::AMQPValue::LongLongInt(1))
    );
    assert_eq!(d.routing_key.as_str(), "mw.pub");

    let plain = |rk: &str| json!({"routing_key": rk, "payload": "x", "payload_encoding": "string", "properties": {}});
    assert_eq!(
        publish("amq.direct", plain("nowhere")).await,
        (200, json!({"routed": false}))
    );
    assert_eq!(
        publish("nosuchx", plain("k")).await,
        bad_request(json!("404 NOT_FOUND - no exchange 'nosuchx' in vhost '/'"))
    );
    assert_eq!(
        publish(
            "amq.direct",
            json!({"routing_key": "k", "payload": "x", "properties": {}})
        )
        .await,
        bad_request(json!("[{key_missing,payload_encoding}]"))
    );
    assert_eq!(
        publish("amq.direct", json!({"routing_key": "k", "payload": 1, "payload_encoding": "string", "properties": {}})).await,
        bad_request(json!("payload_not_string"))
    );
    assert_eq!(
        publish("amq.direct", json!({"routing_key": "k", "payload": "!!", "payload_encoding": "base64", "properties": {}})).await,
        bad_request(json!(["not_base64", "!!"]))
    );
    assert_eq!(
        publish(
            "amq.direct",
            json!({"routing_key": "k", "payload": "x", "payload_encoding": "foo", "properties": {}})
        )
        .await,
        bad_request(json!(["unsupported_encoding", "foo"]))
    );
    assert_eq!(
        publish("amq.direct", json!({"routing_key": "k", "payload": "x", "payload_encoding": "string", "properties": {"priority": "a"}})).await,
        bad_request(json!(["not_int", "priority"]))
    );
    lapin_none(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_over_http_with_each_ack_mode() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    lapin_declare(&ch, "mw.get").await;
    for body in ["one", "two", "three"] {
        lapin_publish(&ch, "", "mw.get", body.as_bytes()).await;
    }
    // In the queue before the HTTP gets (another connection) look: a round trip after them.
    assert_eq!(lapin_count(&ch, "mw.get").await, 3);
    let get = |count: Value, ackmode: &str, extra: Value| {
        let mut body = json!({"count": count, "ackmode": ackmode, "encoding": "auto"});
        if let (Value::Object(m), Value::Object(e)) = (&mut body, extra) {
            m.extend(e);
        }
        let addr = b.http_addr;
        async move {
            let (status, _, value) = call(
                addr,
                "POST",
                "/api/queues/%2F/mw.get/get",
                Some(body),
                GUEST,
            )
            .await;
            assert_eq!(status, 200, "{value}");
            value
        }
    };
    let got = get(json!(2), "ack_requeue_true", json!({})).await;
    assert_eq!(
        got[0],
        json!({"payload_bytes": 3, "redelivered": false, "exchange": "", "routing_key": "mw.get",
               "message_count": 2, "properties": [], "payload": "one", "payload_encoding": "string"})
    );
    assert_eq!(
        (got[1]["payload"].clone(), got[1]["message_count"].clone()),
        (json!("two"), json!(1))
    );
    assert_eq!(lapin_count(&ch, "mw.get").await, 3, "requeued");
    let got = get(json!("1"), "reject_requeue_true", json!({"truncate": 2})).await;
    assert_eq!(
        (got[0]["payload"].clone(), got[0]["redelivered"].clone()),
        (json!("on"), json!(true))
    );
    assert_eq!(
        got[0]["payload_bytes"],
        json!(3),
        "the whole size, whatever was shown"
    );
    let got = get(json!(1), "reject_requeue_false", json!({})).await;
    assert_eq!(got[0]["payload"], json!("one"));
    assert_eq!(
        lapin_count(&ch, "mw.get").await,
        2,
        "rejected without requeue"
    );
    let got = get(
        json!(10),
        "ack_requeue_false",
        json!({"encoding": "base64"}),
    )
    .await;
    let payloads: Vec<&Value> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["payload"])
        .collect();
    assert_eq!(payloads, [&json!("dHdv"), &json!("dGhyZWU=")]);
    assert_eq!(lapin_count(&ch, "mw.get").await, 0);
    assert_eq!(
        get(json!(1), "ack_requeue_false", json!({})).await,
        json!([])
    );

    let post = |body: Value, queue: &str| {
        let path = format!("/api/queues/%2F/{queue}/get");
        let addr = b.http_addr;
        async move {
            let (status, _, value) = call(addr, "POST", &path, Some(body), GUEST).await;
            (status, value)
        }
    };
    assert_eq!(
        post(json!({"count": 1, "ackmode": "ack_requeue_true"}), "mw.get").await,
        bad_request(json!("[{key_missing,encoding}]"))
    );
    assert_eq!(
        post(
            json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "x"}),
            "mw.get"
        )
        .await,
        bad_request(json!("Unsupported encoding. Please use auto or base64."))
    );
    assert_eq!(
        post(
            json!({"count": "x", "ackmode": "ack_requeue_true", "encoding": "auto"}),
            "mw.get"
        )
        .await,
        bad_request(json!(["not_integer", "x"]))
    );
    assert_eq!(
        post(
            json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}),
            "nosuch"
        )
        .await,
        (
            404,
            json!({"error": "not_found", "reason": "NOT_FOUND - no queue 'nosuch' in vhost '/'"})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_and_bindings_over_http_route_amqp_publishes() {
    let b = start().await;
    let x = "/api/exchanges/%2F/mw.x";
    assert_eq!(
        as_guest(
            &b,
            "PUT",
            x,
            Some(json!({"type": "topic", "durable": true}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        as_guest(
            &b,
            "PUT",
            x,
            Some(json!({"type": "topic", "durable": true}))
        )
        .await
        .0,
        204
    );
    assert_eq!(
        as_guest(&b, "PUT", x, Some(json!({"type": "fanout", "durable": true}))).await,
        bad_request(json!("inequivalent arg 'type' for exchange 'mw.x' in vhost '/': received 'fanout' but current is 'topic'"))
    );
    assert_eq!(
        as_guest(
            &b,
            "PUT",
            "/api/exchanges/%2F/mw.bogus",
            Some(json!({"type": "bogus"}))
        )
        .await,
        bad_request(json!("invalid exchange type 'bogus'"))
    );
    let refused = (
        401,
        json!({"error": "not_authorised", "reason": "Access refused."}),
    );
    assert_eq!(
        as_guest(
            &b,
            "PUT",
            "/api/exchanges/%2F/amq.foo",
            Some(json!({"type": "direct"}))
        )
        .await,
        refused
    );
    assert_eq!(
        as_guest(
            &b,
            "PUT",
            "/api/exchanges/%2F/amq.default",
            Some(json!({"type": "direct"}))
        )
        .await,
        refused
    );
    assert_eq!(
        as_guest(&b, "DELETE", "/api/exchanges/%2F/amq.direct", None).await,
        refused
    );
    assert_eq!(
        as_guest(&b, "DELETE", "/api/exchanges/%2F/amq.default", None).await,
        refused
    );
    assert_eq!(
        as_guest(
            &b,
            "PUT",
            "/api/exchanges/%2F/mw.x2",
            Some(json!({"type": "fanout"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        as_guest(&b, "PUT", "/api/queues/%2F/mw.bq", Some(json!({})))
            .await
            .0,
        201
    );

    // Bind with a key RabbitMQ must escape, and with arguments.
    let (status, head, _) = call(
        b.http_addr,
        "POST",
        "/api/bindings/%2F/e/mw.x/q/mw.bq",
        Some(json!({"routing_key": "a.b c~d", "arguments": {}})),
        GUEST,
    )
    .await;
    assert_eq!(status, 201);
    assert!(
        head.to_ascii_lowercase()
            .contains("location: mw.bq/a.b%2bc%257ed"),
        "{head}"
    );
    let (status, head, _) = call(
        b.http_addr,
        "POST",
        "/api/bindings/%2F/e/mw.x/q/mw.bq",
        Some(json!({"routing_key": "k.*", "arguments": {"x": "y"}})),
        GUEST,
    )
    .await;
    assert_eq!(status, 201);
    let location = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .expect("Location")
        .trim()
        .to_owned();
    let (status, one) = as_guest(
        &b,
        "GET",
        &format!("/api/bindings/%2F/e/mw.x/q/{location}"),
        None,
    )
    .await;
    assert_eq!(
        (status, &one["routing_key"], &one["arguments"]),
        (200, &json!("k.*"), &json!({"x": "y"}))
    );
    let (status, _, _) = call(
        b.http_addr,
        "POST",
        "/api/bindings/%2F/e/mw.x/e/mw.x2",
        Some(json!({"routing_key": "e.#"})),
        GUEST,
    )
    .await;
    assert_eq!(status, 201);
    let (_, between) = as_guest(&b, "GET", "/api/bindings/%2F/e/mw.x/q/mw.bq", None).await;
    let keys: Vec<&Value> = between
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["properties_key"])
        .collect();
    assert!(keys.contains(&&json!("a.b+c%7Ed")), "{between}");
    let (_, source) = as_guest(&b, "GET", "/api/exchanges/%2F/mw.x/bindings/source", None).await;
    assert_eq!(source.as_array().map(Vec::len), Some(3), "{source}");
    let (_, dest) = as_guest(
        &b,
        "GET",
        "/api/exchanges/%2F/mw.x2/bindings/destination",
        None,
    )
    .await;
    assert_eq!(dest[0]["destination_type"], json!("exchange"));
    let (_, to_queue) = as_guest(&b, "GET", "/api/queues/%2F/mw.bq/bindings", None).await;
    assert_eq!(
        to_queue.as_array().map(Vec::len),
        Some(3),
        "default + two: {to_queue}"
    );
    // Errors, as RabbitMQ's.
    let (status, _, body) = call(
        b.http_addr,
        "POST",
        "/api/bindings/%2F/e/nosuchx/q/mw.bq",
        Some(json!({})),
        GUEST,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "not_found", "reason": "no exchange 'nosuchx' in vhost '/'"})
        )
    );
    let (status, _, body) = call(
        b.http_addr,
        "POST",
        "/api/bindings/%2F/e/mw.x/q/nosuchq",
        Some(json!({})),
        GUEST,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "not_found", "reason": "no queue 'nosuchq' in vhost '/'"})
        )
    );
    let (status, _, body) = call(
        b.http_addr,
        "POST",
        "/api/bindings/%2F/e/amq.default/q/mw.bq",
        Some(json!({})),
        GUEST,
    )
    .await;
    assert_eq!((status, body), refused);

    // The bindings route publishes made over AMQP.
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    lapin_publish(&ch, "mw.x", "k.1", b"via-args-binding").await;
    lapin_publish(&ch, "mw.x", "a.b c~d", b"via-escaped-key").await;
    assert_eq!(lapin_count(&ch, "mw.bq").await, 2);
    assert_eq!(
        as_guest(
            &b,
            "DELETE",
            &format!("/api/bindings/%2F/e/mw.x/q/{location}"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        as_guest(
            &b,
            "DELETE",
            "/api/bindings/%2F/e/mw.x/q/mw.bq/a.b+c%257Ed",
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        as_guest(
            &b,
            "GET",
            &format!("/api/bindings/%2F/e/mw.x/q/{location}"),
            None
        )
        .await
        .0,
        404
    );
    lapin_publish(&ch, "mw.x", "k.1", b"unrouted").await;
    assert_eq!(lapin_count(&ch, "mw.bq").await, 2, "unbound");
    assert_eq!(
        as_guest(&b, "DELETE", "/api/exchanges/%2F/mw.x?if-unused=true", None).await,
        bad_request(json!("exchange 'mw.x' in vhost '/' in use"))
    );
    assert_eq!(as_guest(&b, "DELETE", x, None).await.0, 204);
    assert_lapin_code(
        ch.exchange_declare(
            "mw.x".into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await,
        404,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_management_user_with_the_permission_rabbitmq_checks() {
    let b = start().await;
    let put = putter(&b);
    assert_eq!(put("/api/vhosts/other", json!({})).await.0, 201);
    assert_eq!(
        put(
            "/api/users/mgr",
            json!({"password": "p", "tags": "management"})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        put("/api/users/plain", json!({"password": "p", "tags": ""}))
            .await
            .0,
        201
    );
    assert_eq!(
        put(
            "/api/permissions/%2F/mgr",
            json!({"configure": "^mgr-", "write": "^mgr-", "read": "^mgr-"})
        )
        .await
        .0,
        201
    );
    let mgr = ("mgr", "p");
    let at = |method: &str, path: &str, body: Option<Value>, auth: (&'static str, &'static str)| {
        let (addr, method, path) = (b.http_addr, method.to_owned(), path.to_owned());
        async move {
            let (status, _, value) = call(addr, &method, &path, body, auth).await;
            (status, value)
        }
    };
    assert_eq!(
        at("PUT", "/api/queues/%2F/mgr-q", Some(json!({})), mgr)
            .await
            .0,
        201
    );
    let refused = (
        401,
        json!({"error": "not_authorised", "reason": "Access refused."}),
    );
    assert_eq!(
        at("PUT", "/api/queues/%2F/other-q", Some(json!({})), mgr).await,
        refused
    );
    assert_eq!(
        at(
            "PUT",
            "/api/exchanges/%2F/other-x",
            Some(json!({"type": "direct"})),
            mgr
        )
        .await,
        refused
    );
    assert_eq!(
        at("DELETE", "/api/queues/%2F/mgr-q/contents", None, mgr)
            .await
            .0,
        204
    );
    assert_eq!(
        at("POST", "/api/exchanges/%2F/amq.direct/publish", Some(json!({"routing_key": "k", "payload": "x", "payload_encoding": "string", "properties": {}})), mgr).await,
        bad_request(json!("403 ACCESS_REFUSED - access to exchange 'amq.direct' in vhost '/' refused for user 'mgr'"))
    );
    assert_eq!(
        at(
            "POST",
            "/api/queues/%2F/mw-any/get",
            Some(json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})),
            mgr
        )
        .await,
        (
            401,
            json!({"error": "not_authorised", "reason": "ACCESS_REFUSED - access to queue 'mw-any' in vhost '/' refused for user 'mgr'"})
        )
    );
    let no_vhost = (
        401,
        json!({"error": "not_authorised", "reason": "User not authorised to access virtual host"}),
    );
    assert_eq!(
        at("PUT", "/api/queues/other/mgr-q", Some(json!({})), mgr).await,
        no_vhost
    );
    assert_eq!(
        at("DELETE", "/api/queues/other/mgr-q", None, mgr).await,
        no_vhost
    );
    assert_eq!(
        at(
            "PUT",
            "/api/queues/%2F/mgr-q2",
            Some(json!({})),
            ("plain", "p")
        )
        .await,
        (
            401,
            json!({"error": "not_authorised", "reason": "Not management user"})
        )
    );
    assert_eq!(
        at(
            "PUT",
            "/api/queues/%2F/mgr-q2",
            Some(json!({})),
            ("mgr", "wrong")
        )
        .await,
        (
            401,
            json!({"error": "not_authorized", "reason": "Login failed"})
        )
    );
    assert_eq!(
        at("GET", "/api/definitions", None, mgr).await,
        (
            401,
            json!({"error": "not_authorised", "reason": "Not administrator user"})
        )
    );
    assert_eq!(
        at("POST", "/api/definitions", Some(json!({})), mgr).await.0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_the_limit_are_refused_before_they_are_read() {
    let b = start().await;
    let huge = vec![b' '; warren::http::MAX_BODY + 1];
    let (status, _, _) = raw_call(b.http_addr, "POST", "/api/definitions", Some(huge), GUEST).await;
    assert_eq!(status, 413);
    let (status, _, value) = raw_call(
        b.http_addr,
        "POST",
        "/api/definitions",
        Some(b"{\"x".to_vec()),
        GUEST,
    )
    .await;
    assert_eq!((status, value), bad_request(json!("failed_to_parse_json")));
}

/// A topology made over AMQP and HTTP, exported, imported into another broker: both export the
/// same, and the copy routes as the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_round_trip_between_brokers() {
    let a = start().await;
    let put = putter(&a);
    assert_eq!(
        put(
            "/api/vhosts/rt",
            json!({"description": "round trip", "tags": "t1,t2"})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        put(
            "/api/users/rt-user",
            json!({"password": "rt-pass", "tags": "monitoring"})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        put(
            "/api/permissions/rt/rt-user",
            json!({"configure": "", "write": "^rt", "read": ".*"})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        put(
            "/api/exchanges/rt/rt.h",
            json!({"type": "headers", "durable": true, "arguments": {"alternate-exchange": "rt.f"}})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        put(
            "/api/exchanges/rt/rt.f",
            json!({"type": "fanout", "durable": false, "auto_delete": true})
        )
        .await
        .0,
        201
    );
    assert_eq!(put("/api/queues/rt/rt.q", json!({"durable": true, "arguments": {"x-message-ttl": 5000, "x-dead-letter-exchange": "rt.f"}})).await.0, 201);
    assert_eq!(
        put("/api/queues/rt/rt.transient", json!({"durable": false}))
            .await
            .0,
        201
    );
    let bind = |path: &str, body: Value| {
        let (addr, path) = (a.http_addr, path.to_owned());
        async move { call(addr, "POST", &path, Some(body), GUEST).await.0 }
    };
    assert_eq!(
        bind(
            "/api/bindings/rt/e/rt.h/q/rt.q",
            json!({"arguments": {"x-match": "any", "k": 1.5}})
        )
        .await,
        201
    );
    assert_eq!(
        bind("/api/bindings/rt/e/rt.f/q/rt.transient", json!({})).await,
        201
    );
    assert_eq!(
        bind(
            "/api/bindings/rt/e/amq.topic/e/rt.h",
            json!({"routing_key": "h.#"})
        )
        .await,
        201
    );
    // An exclusive queue is not exported, nor its bindings.
    let c = connect_as(a.addr, "guest", "guest", "rt")
        .await
        .expect("connect");
    let ch = lapin_channel(&c).await;
    ch.queue_declare(
        "rt.excl".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");

    let (status, exported) = as_guest(&a, "GET", "/api/definitions", None).await;
    assert_eq!(status, 200);
    for key in [
        "rabbit_version",
        "rabbitmq_version",
        "product_name",
        "product_version",
    ] {
        assert!(exported[key].is_string(), "{key}: {exported}");
    }
    for key in [
        "topic_permissions",
        "parameters",
        "global_parameters",
        "policies",
    ] {
        assert_eq!(exported[key], json!([]), "{key}");
    }
    let names = |list: &Value| -> Vec<String> {
        let mut v: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{}:{}", i["vhost"], i["name"]))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&exported["queues"]),
        ["\"rt\":\"rt.q\"", "\"rt\":\"rt.transient\""]
    );
    assert_eq!(
        names(&exported["exchanges"]),
        ["\"rt\":\"rt.f\"", "\"rt\":\"rt.h\""]
    );
    assert_eq!(
        exported["bindings"].as_array().map(Vec::len),
        Some(3),
        "{}",
        exported["bindings"]
    );

    let b = start().await;
    let (status, _, body) = call(
        b.http_addr,
        "POST",
        "/api/definitions",
        Some(exported.clone()),
        GUEST,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (_, copy) = as_guest(&b, "GET", "/api/definitions", None).await;
    assert_eq!(copy, exported, "the copy exports the same definitions");
    // The copy's user logs in with its password and routes as the original.
    // (rt-user may not write to amq.topic: guest publishes.)
    connect_as(b.addr, "rt-user", "rt-pass", "rt")
        .await
        .expect("rt-user logs in");
    let gc = connect_as(b.addr, "guest", "guest", "rt")
        .await
        .expect("guest");
    let gch = lapin_channel(&gc).await;
    gch.basic_publish(
        "amq.topic".into(),
        "h.1".into(),
        BasicPublishOptions::default(),
        b"m",
        lapin::BasicProperties::default().with_headers({
            let mut h = FieldTable::default();
            h.insert("k".into(), lapin::types::AMQPValue::Double(1.5));
            h
        }),
    )
    .await
    .expect("publish");
    assert_eq!(
        lapin_count(&gch, "rt.q").await,
        1,
        "amq.topic -> rt.h -> rt.q (x-match any)"
    );

    // A vhost's own export and import.
    let (status, one) = as_guest(&a, "GET", "/api/definitions/rt", None).await;
    assert_eq!(status, 200);
    assert!(one["queues"][0].get("vhost").is_none(), "{one}");
    assert_eq!(put("/api/vhosts/rt2", json!({})).await.0, 201);
    let (status, _, body) = call(
        a.http_addr,
        "POST",
        "/api/definitions/rt2",
        Some(one),
        GUEST,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (_, rt2) = as_guest(&a, "GET", "/api/definitions/rt2", None).await;
    let (_, rt) = as_guest(&a, "GET", "/api/definitions/rt", None).await;
    assert_eq!(rt2, rt);
    assert_eq!(
        as_guest(&a, "GET", "/api/definitions/nosuch", None).await,
        bad_request(json!("vhost_not_found"))
    );
    let (status, _, body) = call(
        a.http_addr,
        "POST",
        "/api/definitions/nosuch",
        Some(json!({})),
        GUEST,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "not_found", "reason": "vhost_not_found"})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_definitions_file_changes_nothing() {
    let b = start().await;
    let import = |defs: Value| {
        let addr = b.http_addr;
        async move {
            let (status, _, value) =
                call(addr, "POST", "/api/definitions", Some(defs), GUEST).await;
            (status, value)
        }
    };
    let queue = json!({"name": "bad.q", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}});
    let user = json!({"name": "bad.user", "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []});
    for (defs, reason) in [
        (json!({"users": [user], "queues": [queue], "bindings": [
            {"source": "nosuchx", "vhost": "/", "destination": "bad.q", "destination_type": "queue", "routing_key": "", "arguments": {}}]}),
            json!(["amqp_error", "not_found", "no exchange 'nosuchx' in vhost '/'", "none"])),
        (json!({"queues": [queue], "exchanges": [{"name": "bad.x", "vhost": "/", "type": "bogus"}]}),
            json!(["amqp_error", "command_invalid", "invalid exchange type 'bogus'", "none"])),
        (json!({"queues": [{"name": "bad.q2", "vhost": "nosuch", "durable": true}]}), json!(["no_such_vhost", "nosuch"])),
        (json!({"users": [user], "permissions": [{"user": "nobody", "vhost": "/", "configure": "", "write": "", "read": ""}]}),
            json!(["no_such_user", "nobody"])),
        (json!({"users": [{"name": "u", "password_hash": "xx", "tags": ""}]}), json!(["not_base64", "xx"])),
        (json!({"queues": [queue], "queues_extra": 1, "policies": [{"vhost": "/", "name": "p", "pattern": ".*", "definition": {"message-ttl": "x"}}]}),
            json!("Validation failed\n\n<<\"x\">> is not a valid message TTL\n (//p)")),
        (json!({"queues": [queue], "policies": [{"vhost": "nosuch", "name": "p", "pattern": ".*", "definition": {"message-ttl": 1}}]}),
            json!(["no_such_vhost", "nosuch"])),
        (json!({"queues": [queue], "topic_permissions": [{"user": "guest", "vhost": "/", "exchange": "amq.topic", "write": "(", "read": ".*"}]}),
            json!("topic permission of user 'guest' in vhost '/' on exchange 'amq.topic': invalid regular expression: regex parse error:\n    (\n    ^\nerror: unclosed group")),
        (json!({"queues": [queue], "parameters": [{"vhost": "/", "component": "shovel", "name": "s", "value": {}}]}),
            json!("parameters: 1 entries, which this version of Warren cannot import yet")),
        (json!({"queues": [queue], "parameters": [{"vhost": "/", "component": "vhost-limits", "name": "limits", "value": {"max-queues": "many"}}]}),
            json!("max-queues should be a number, actually was <<\"many\">> (vhost '/')")),
        (json!({"users": [{"name": "lim", "password_hash": "", "tags": "", "limits": {"max-channels": 1.5}}]}),
            json!("max-channels should be a number, actually was 1.5 (user 'lim')")),
        (json!({"queues": [{"name": "bad.q3", "vhost": "/", "arguments": {"x-max-length": "abc"}}]}),
            json!(["amqp_error", "precondition_failed", "invalid arg 'x-max-length' for queue 'bad.q3' in vhost '/': \"expected integer, got longstr\"", "none"])),
    ] {
        assert_eq!(import(defs.clone()).await, bad_request(reason), "{defs}");
    }
    let (_, after) = as_guest(&b, "GET", "/api/definitions", None).await;
    assert_eq!(after["queues"], json!([]), "nothing half-applied");
    assert_eq!(
        after["users"].as_array().map(Vec::len),
        Some(1),
        "{}",
        after["users"]
    );
    // RabbitMQ's cluster id is taken (and changes nothing); amq.* entries are skipped.
    let ok = json!({"global_parameters": [{"name": "internal_cluster_id", "value": "rabbitmq-cluster-id-x"}],
                    "queues": [{"name": "amq.skipped", "vhost": "/", "durable": true}],
                    "exchanges": [{"name": "amq.direct", "vhost": "/", "type": "fanout"}]});
    assert_eq!(import(ok).await.0, 204);
    let (_, after) = as_guest(&b, "GET", "/api/definitions", None).await;
    assert_eq!(after["queues"], json!([]));
}

/// The file RabbitMQ 3.10.8 exported, imported: the same queues, exchanges and bindings, users
/// that log in with their passwords (SHA-256 and SHA-512 hashes), and routing through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_3_10_definitions_import_with_their_topology_and_passwords() {
    let b = start().await;
    let fixture: Value = serde_json::from_str(RABBITMQ_DEFINITIONS).expect("fixture");
    let (status, _, body) = raw_call(
        b.http_addr,
        "POST",
        "/api/definitions",
        Some(RABBITMQ_DEFINITIONS.into()),
        GUEST,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_same_topology(&b, &fixture).await;
    assert_fixture_users(b.addr).await;
    // Routing through the imported topology: topic → queues, topic → headers (e2e) → queue.
    let c = connect_as(b.addr, "guest", "guest", "orders")
        .await
        .expect("guest on orders");
    let ch = lapin_channel(&c).await;
    lapin_publish(&ch, "orders.topic", "order.eu.created", b"o1").await;
    assert_eq!(lapin_count(&ch, "orders.new").await, 1);
    assert_eq!(lapin_count(&ch, "orders.audit").await, 1);
    let mut headers = FieldTable::default();
    headers.insert(
        "region".into(),
        lapin::types::AMQPValue::LongString("eu".into()),
    );
    headers.insert("priority".into(), lapin::types::AMQPValue::LongLongInt(1));
    ch.basic_publish(
        "orders.topic".into(),
        "order.priority.x".into(),
        BasicPublishOptions::default(),
        b"p",
        lapin::BasicProperties::default().with_headers(headers),
    )
    .await
    .expect("publish");
    assert_eq!(
        lapin_count(&ch, "orders.priority").await,
        1,
        "through orders.headers (x-match all)"
    );
    // Importing it again changes nothing.
    let (status, _, _) = raw_call(
        b.http_addr,
        "POST",
        "/api/definitions",
        Some(RABBITMQ_DEFINITIONS.into()),
        GUEST,
    )
    .await;
    assert_eq!(status, 204);
    assert_same_topology(&b, &fixture).await;
}

/// Warren's export lists the fixture's queues, exchanges, bindings, vhosts, users and
/// permissions (as sets: orders differ).
async fn assert_same_topology(b: &TestBroker, fixture: &Value) {
    let (status, ours) = as_guest(b, "GET", "/api/definitions", None).await;
    assert_eq!(status, 200);
    for (section, fields) in [
        (
            "queues",
            &["vhost", "name", "durable", "auto_delete", "arguments"][..],
        ),
        (
            "exchanges",
            &[
                "vhost",
                "name",
                "type",
                "durable",
                "auto_delete",
                "internal",
                "arguments",
            ][..],
        ),
        (
            "bindings",
            &[
                "vhost",
                "source",
                "destination",
                "destination_type",
                "routing_key",
                "arguments",
            ][..],
        ),
        (
            "permissions",
            &["user", "vhost", "configure", "write", "read"][..],
        ),
        (
            "users",
            &["name", "password_hash", "hashing_algorithm", "tags"][..],
        ),
    ] {
        let pick = |v: &Value| -> Vec<String> {
            let mut out: Vec<String> = v[section]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| {
                    fields
                        .iter()
                        .map(|f| item[*f].to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            out.sort();
            out
        };
        assert_eq!(pick(&ours), pick(fixture), "{section}");
    }
    let vhosts = |v: &Value| -> Vec<String> {
        let mut out: Vec<String> = v["vhosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].to_string())
            .collect();
        out.sort();
        out
    };
    assert_eq!(vhosts(&ours), vhosts(fixture));
}

/// The fixture's users: alice (SHA-256, orders), bob (SHA-512, `/`), carol (a non-ASCII
/// password, orders) log in; a wrong password and dave (no password) do not.
async fn assert_fixture_users(addr: SocketAddr) {
    for (user, pass, vhost) in [
        ("alice", "alice-pass", "orders"),
        ("bob", "bob-secret", "/"),
        ("carol", "carol pässword", "orders"),
        ("guest", "guest", "analytics"),
    ] {
        let c = connect_as(addr, user, pass, vhost).await;
        assert!(c.is_ok(), "{user} logs in to {vhost}: {:?}", c.err());
    }
    assert_eq!(
        lapin_code(
            &connect_as(addr, "alice", "wrong", "orders")
                .await
                .unwrap_err()
        ),
        Some(403)
    );
    assert!(connect_as(addr, "dave", "", "/").await.is_err());
    assert_eq!(
        lapin_code(
            &connect_as(addr, "carol", "carol pässword", "analytics")
                .await
                .unwrap_err()
        ),
        Some(530),
        "no permissions there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_definitions_at_start_and_a_bad_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defs.json");
    std::fs::write(&file, RABBITMQ_DEFINITIONS).unwrap();
    let data = dir.path().join("data");
    let broker = ChildBroker::start(&data, &["--load-definitions", file.to_str().unwrap()]);
    let addr: SocketAddr = ([127, 0, 0, 1], broker.port).into();
    // The listener accepts only once the file is in: the users are there at the first connect.
    assert_fixture_users(addr).await;
    broker.stop();

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"queues": [{"name": "q", "vhost": "nosuch"}]}"#).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "server",
            "--amqp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data2"))
        .env("WARREN_LOAD_DEFINITIONS", &bad)
        .output()
        .expect("run warren");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.json") && stderr.contains("nosuch"),
        "{stderr}"
    );
}

/// Policies, topic permissions, vhost limits (as `vhost-limits` parameters) and user limits go
/// out with an export and come back with an import, in RabbitMQ's shapes, and are in effect in
/// the broker that imported them; a RabbitMQ 3.x file's classic mirroring policy imports too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_carry_policies_topic_permissions_and_limits() {
    let a = start().await;
    let put = putter(&a);
    assert_eq!(
        put("/api/users/lim", json!({"password": "pp", "tags": ""}))
            .await
            .0,
        201
    );
    assert_eq!(
        put(
            "/api/permissions/%2F/lim",
            json!({"configure": ".*", "write": ".*", "read": ".*"})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        put("/api/user-limits/lim/max-channels", json!({"value": 2}))
            .await
            .0,
        204
    );
    assert_eq!(
        put("/api/vhost-limits/%2F/max-queues", json!({"value": 1}))
            .await
            .0,
        204
    );
    assert_eq!(
        put(
            "/api/topic-permissions/%2F/lim",
            json!({"exchange": "amq.topic", "write": "^{username}\\.", "read": ".*"})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        put("/api/policies/%2F/cap", json!({"pattern": "^capped", "definition": {"max-length": 1}, "apply-to": "queues", "priority": 3})).await.0,
        201
    );
    let (status, exported) = as_guest(&a, "GET", "/api/definitions", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        exported["parameters"],
        json!([{"value": {"max-queues": 1}, "vhost": "/", "component": "vhost-limits", "name": "limits"}])
    );
    assert_eq!(
        exported["topic_permissions"],
        json!([{"user": "lim", "vhost": "/", "exchange": "amq.topic", "write": "^{username}\\.", "read": ".*"}])
    );
    assert_eq!(
        exported["policies"],
        json!([{"vhost": "/", "name": "cap", "pattern": "^capped", "apply-to": "queues", "definition": {"max-length": 1}, "priority": 3}])
    );
    let user = exported["users"]
        .as_array()
        .and_then(|users| users.iter().find(|u| u["name"] == "lim"))
        .cloned()
        .expect("lim exported");
    assert_eq!(user["limits"], json!({"max-channels": 2}));

    let b = start().await;
    let (status, _) = as_guest(&b, "POST", "/api/definitions", Some(exported.clone())).await;
    assert_eq!(status, 204);
    let (_, copy) = as_guest(&b, "GET", "/api/definitions", None).await;
    for section in ["parameters", "topic_permissions", "policies"] {
        assert_eq!(copy[section], exported[section], "{section}");
    }
    // In effect: the queue limit (the policy's queue counts), the policy on it, the channel
    // limit, the topic permission.
    let conn = lapin_connect(&b).await;
    let ch = lapin_channel(&conn).await;
    lapin_declare(&ch, "capped.q").await;
    for body in [b"1".as_slice(), b"2"] {
        lapin_publish(&ch, "", "capped.q", body).await;
    }
    assert_eq!(
        lapin_count(&ch, "capped.q").await,
        1,
        "max-length 1 from the policy"
    );
    assert_lapin_code(
        ch.queue_declare(
            "second".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        406,
    );
    let copied = copy["users"]
        .as_array()
        .and_then(|users| users.iter().find(|u| u["name"] == "lim"))
        .cloned()
        .expect("lim imported");
    assert_eq!(copied["limits"], json!({"max-channels": 2}));
    let mut lim = Raw::open_with(
        b.addr,
        Handshake {
            response: plain("lim", "pp"),
            ..Handshake::default()
        },
    )
    .await;
    lim.open_channel(1).await;
    lim.open_channel(2).await;
    lim.send_method(
        3,
        warren_amqp::protocol::AMQPClass::Channel(
            warren_amqp::protocol::channel::AMQPMethod::Open(
                warren_amqp::protocol::channel::Open {},
            ),
        ),
    )
    .await;
    lim.expect_connection_close_ok().await.assert(530, 0, 0);

    // RabbitMQ 3.x files often carry classic mirroring policies: taken, with no effect.
    let ha = json!({"policies": [{"vhost": "/", "name": "ha-all", "pattern": ".*", "apply-to": "all",
                                  "definition": {"ha-mode": "all", "ha-sync-mode": "automatic"}, "priority": 0}]});
    assert_eq!(
        as_guest(&b, "POST", "/api/definitions", Some(ha)).await.0,
        204
    );
    let (status, policy) = as_guest(&b, "GET", "/api/policies/%2F/ha-all", None).await;
    assert_eq!(
        (status, &policy["definition"]["ha-mode"]),
        (200, &json!("all"))
    );
}
