//! The management API's live objects: `/api/connections` (list, one, DELETE), `/api/channels` and
//! `/api/consumers`, with RabbitMQ 3.10's fields, status codes and bodies; closing a connection
//! over HTTP (320 and RabbitMQ's text) and deleting a user (its connections closed, no one
//! else's); what a `management` user may see; and connections caught mid-handshake or closing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use warren_amqp::protocol::{basic, connection as conn, AMQPClass};
use warren_amqp::types::{AMQPValue, FieldTable};

const GUEST: (&str, &str) = ("guest", "guest");

/// `METHOD path` (with extra headers) as `auth`: the status and the JSON body (Null if none).
fn call(
    b: &TestBroker,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    auth: (&str, &str),
) -> (u16, Value) {
    let (status, body) = http_request(b.http_addr, method, path, headers, None, Some(auth));
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A listing as `auth`, which must answer 200 with an array.
fn list(b: &TestBroker, path: &str, auth: (&str, &str)) -> Vec<Value> {
    match call(b, "GET", path, &[], auth) {
        (200, Value::Array(items)) => items,
        other => panic!("GET {path}: {other:?}"),
    }
}

/// The names in a listing.
fn names(items: &[Value]) -> Vec<&str> {
    items.iter().filter_map(|i| i["name"].as_str()).collect()
}

/// Polls a listing until `done` holds for it (the broker's view of a client that just closed
/// follows a moment later).
async fn eventually(b: &TestBroker, path: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + T;
    loop {
        let items = list(b, path, GUEST);
        if done(&items) {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} never got there: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `s` percent-encoded for a path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn connection_path(name: &str) -> String {
    format!("/api/connections/{}", encode(name))
}

/// The name the broker gives a connection from `local`: RabbitMQ's `PEER -> LOCAL`.
fn connection_name(b: &TestBroker, local: SocketAddr) -> String {
    format!("{local} -> {}", b.addr)
}

/// A TCP connection to the broker, nothing sent, and the name it will be listed under.
async fn dial(b: &TestBroker) -> (TcpStream, String) {
    let stream = within("tcp connect", TcpStream::connect(b.addr))
        .await
        .expect("tcp connect");
    let name = connection_name(b, stream.local_addr().expect("local addr"));
    (stream, name)
}

/// A raw client opened on `/` as `user`, and its connection's name.
async fn open_as(b: &TestBroker, user: &str, pass: &str) -> (Raw, String) {
    let (stream, name) = dial(b).await;
    let h = Handshake {
        response: plain(user, pass),
        ..Handshake::default()
    };
    (Raw::over(stream).open_as(h).await, name)
}

/// Creates a user (password = its name) with these tags and every permission on `/`.
fn add_user(b: &TestBroker, name: &str, tags: &str) {
    let body = json!({"password": name, "tags": tags}).to_string();
    let (status, _) = http_request(
        b.http_addr,
        "PUT",
        &format!("/api/users/{name}"),
        &[],
        Some(&body),
        Some(GUEST),
    );
    assert_eq!(status, 201, "create user {name}");
    let all = r#"{"configure":".*","write":".*","read":".*"}"#;
    let (status, _) = http_request(
        b.http_addr,
        "PUT",
        &format!("/api/permissions/%2F/{name}"),
        &[],
        Some(all),
        Some(GUEST),
    );
    assert_eq!(status, 201, "permissions of {name}");
}

fn find<'a>(items: &'a [Value], name: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {items:?}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_listed_with_rabbitmq_fields() {
    let b = start().await;
    add_user(&b, "alice", "");
    let before = now_ms();
    let (mut r1, n1) = open_as(&b, "guest", "guest").await;
    let (mut r2, n2) = open_as(&b, "alice", "alice").await;
    let after = now_ms();
    r1.open_channel(1).await;
    r1.open_channel(2).await;
    r2.open_channel(1).await;
    let tune = r1.tune.clone().expect("tune");

    let all = list(&b, "/api/connections", GUEST);
    assert_eq!(all.len(), 2, "{all:?}");
    let c1 = find(&all, &n1);
    let local1: SocketAddr = n1.split(" -> ").next().unwrap().parse().unwrap();
    for (key, want) in [
        ("user", json!("guest")),
        ("vhost", json!("/")),
        ("state", json!("running")),
        ("protocol", json!("AMQP 0-9-1")),
        ("type", json!("network")),
        ("auth_mechanism", json!("PLAIN")),
        ("channels", json!(2)),
        ("peer_host", json!("127.0.0.1")),
        ("peer_port", json!(local1.port())),
        ("host", json!("127.0.0.1")),
        ("port", json!(b.addr.port())),
        ("ssl", json!(false)),
        ("frame_max", json!(tune.frame_max)),
        ("channel_max", json!(tune.channel_max)),
        ("timeout", json!(0)),
    ] {
        assert_eq!(c1[key], want, "field {key}: {c1}");
    }
    assert_eq!(c1["client_properties"]["product"], json!("warren-it raw"));
    assert_eq!(
        c1["client_properties"]["capabilities"]["publisher_confirms"],
        json!(true)
    );
    let at = c1["connected_at"].as_u64().expect("connected_at");
    assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
    assert!(c1["recv_oct"].as_u64() > Some(0) && c1["send_oct"].as_u64() > Some(0));
    assert!(c1["node"].as_str().unwrap().starts_with("warren@"));
    let c2 = find(&all, &n2);
    assert_eq!((&c2["user"], &c2["channels"]), (&json!("alice"), &json!(1)));

    let (status, one) = call(&b, "GET", &connection_path(&n2), &[], GUEST);
    assert_eq!(status, 200);
    assert_eq!(one["name"], json!(n2));
    assert_eq!(one["user"], json!("alice"));
    assert_eq!(list(&b, "/api/vhosts/%2F/connections", GUEST).len(), 2);
    // The overview counts them too.
    let (_, overview) = call(&b, "GET", "/api/overview", &[], GUEST);
    assert_eq!(overview["object_totals"]["connections"], json!(2));
    assert_eq!(overview["object_totals"]["channels"], json!(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_closes_that_connection_with_320_and_no_other() {
    let b = start().await;
    let (mut r1, n1) = open_as(&b, "guest", "guest").await;
    let (mut r2, n2) = open_as(&b, "guest", "guest").await;
    r1.open_channel(1).await;
    r2.open_channel(1).await;

    let (status, body) = call(&b, "DELETE", &connection_path(&n1), &[], GUEST);
    assert_eq!((status, body), (204, Value::Null));
    let close = r1.expect_connection_close_ok().await;
    assert_eq!(close.code, 320);
    assert_eq!(
        close.text,
        "CONNECTION_FORCED - Closed via management plugin"
    );
    r2.ping(1).await;
    let left = eventually(&b, "/api/connections", |l| l.len() == 1).await;
    assert_eq!(names(&left), [n2.as_str()]);
    let not_found = json!({"error": "Object Not Found", "reason": "Not Found"});
    assert_eq!(
        call(&b, "GET", &connection_path(&n1), &[], GUEST),
        (404, not_found.clone())
    );
    assert_eq!(
        call(&b, "DELETE", &connection_path(&n1), &[], GUEST),
        (404, not_found)
    );

    // An X-Reason header is the reason, as in RabbitMQ.
    let reason = [("X-Reason", "maintenance window")];
    assert_eq!(
        call(&b, "DELETE", &connection_path(&n2), &reason, GUEST).0,
        204
    );
    let close = r2.expect_connection_close_ok().await;
    assert_eq!(
        (close.code, close.text.as_str()),
        (320, "CONNECTION_FORCED - maintenance window")
    );
    eventually(&b, "/api/connections", |l| l.is_empty()).await;
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_objects_are_404_and_listings_need_credentials() {
    let b = start().await;
    let _r = open_as(&b, "guest", "guest").await;
    let not_found = json!({"error": "Object Not Found", "reason": "Not Found"});
    for (method, path) in [
        ("GET", "/api/connections/nope"),
        ("DELETE", "/api/connections/nope"),
        ("GET", "/api/connections/nope/channels"),
        ("GET", "/api/vhosts/nope/connections"),
        ("GET", "/api/vhosts/nope/channels"),
        ("GET", "/api/consumers/nope"),
        ("GET", "/api/channels/nope"),
    ] {
        assert_eq!(
            call(&b, method, path, &[], GUEST),
            (404, not_found.clone()),
            "{method} {path}"
        );
    }
    for path in ["/api/connections", "/api/channels", "/api/consumers"] {
        let (status, _) = http_get(b.http_addr, path, None);
        assert_eq!(status, 401, "{path}");
        assert_eq!(call(&b, "GET", path, &[], ("guest", "wrong")).0, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_user_sees_and_closes_only_its_own() {
    let b = start().await;
    add_user(&b, "mgr", "management");
    add_user(&b, "mon", "monitoring");
    let (mut rg, ng) = open_as(&b, "guest", "guest").await;
    let (mut rm, nm) = open_as(&b, "mgr", "mgr").await;
    rg.open_channel(1).await;
    rm.open_channel(1).await;
    let mgr = ("mgr", "mgr");
    let mon = ("mon", "mon");

    assert_eq!(names(&list(&b, "/api/connections", mgr)), [nm.as_str()]);
    assert_eq!(list(&b, "/api/connections", mon).len(), 2);
    assert_eq!(list(&b, "/api/connections", GUEST).len(), 2);
    let mgr_channels = list(&b, "/api/channels", mgr);
    assert_eq!(names(&mgr_channels), [format!("{nm} (1)").as_str()]);
    assert_eq!(list(&b, "/api/channels", mon).len(), 2);

    let refused =
        json!({"error": "not_authorised", "reason": "User not authorised to access object"});
    assert_eq!(
        call(&b, "GET", &connection_path(&ng), &[], mgr),
        (401, refused.clone())
    );
    assert_eq!(call(&b, "GET", &connection_path(&ng), &[], mon).0, 200);
    // Seeing is not closing: only an administrator closes another user's connection.
    assert_eq!(
        call(&b, "DELETE", &connection_path(&ng), &[], mon),
        (401, refused.clone())
    );
    assert_eq!(
        call(&b, "DELETE", &connection_path(&ng), &[], mgr),
        (401, refused)
    );
    rg.ping(1).await;
    assert_eq!(call(&b, "GET", &connection_path(&nm), &[], mgr).0, 200);
    assert_eq!(call(&b, "DELETE", &connection_path(&nm), &[], mgr).0, 204);
    assert_eq!(rm.expect_connection_close_ok().await.code, 320);
    rg.ping(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_closes_exactly_its_connections() {
    let b = start().await;
    add_user(&b, "doomed", "");
    add_user(&b, "other", "");
    let (mut d1, _) = open_as(&b, "doomed", "doomed").await;
    let (mut d2, _) = open_as(&b, "doomed", "doomed").await;
    let (mut o, no) = open_as(&b, "other", "other").await;
    let (mut g, ng) = open_as(&b, "guest", "guest").await;
    // One more of the doomed user's, logged in but not yet open when the user goes.
    let (stream, _) = dial(&b).await;
    let h = Handshake {
        response: plain("doomed", "doomed"),
        ..Handshake::default()
    };
    let mut half = Raw::over(stream).begin().await;
    half.start_ok(&h).await;
    let tune = half.expect_tune().await;
    half.tune_ok(&h, &tune).await;
    for r in [&mut d1, &mut d2, &mut o, &mut g] {
        r.open_channel(1).await;
    }

    assert_eq!(call(&b, "DELETE", "/api/users/doomed", &[], GUEST).0, 204);
    for r in [&mut d1, &mut d2] {
        let close = r.expect_connection_close_ok().await;
        assert_eq!(
            (close.code, close.text.as_str()),
            (320, "CONNECTION_FORCED - user 'doomed' is deleted")
        );
    }
    o.ping(1).await;
    g.ping(1).await;
    let left = eventually(&b, "/api/connections", |l| l.len() == 2).await;
    let mut left = names(&left);
    left.sort_unstable();
    let mut want = [no.as_str(), ng.as_str()];
    want.sort_unstable();
    assert_eq!(left, want);
    // The half-open one cannot open any more (the user has no permissions left).
    half.send_connection_open("/").await;
    assert_eq!(half.expect_connection_close().await.code, 530);
}

/// basic.consume with arguments.
fn consume_with(q: &str, tag: &str, arguments: FieldTable) -> AMQPClass {
    match consume(q, tag, false, false) {
        AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => {
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                arguments,
                ..c
            }))
        }
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_consumers_follow_the_clients() {
    let b = start().await;
    let (mut r, n) = open_as(&b, "guest", "guest").await;
    let local: SocketAddr = n.split(" -> ").next().unwrap().parse().unwrap();
    for ch in 1..=3 {
        r.open_channel(ch).await;
    }
    r.qos(1, 5, false).await;
    let q = "conns.consumed";
    r.declare(1, q, QOpts::default()).await;
    let mut args = FieldTable::default();
    args.insert("x-priority".into(), AMQPValue::LongInt(3));
    r.send_method(1, consume_with(q, "c1", args)).await;
    match r.recv().await {
        In::Method(1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))) => {}
        other => panic!("expected consume-ok, got {other:?}"),
    }
    r.confirm_select(2).await;
    r.call(3, tx_select()).await;
    r.qos(3, 9, true).await;

    let channels = list(&b, "/api/channels", GUEST);
    assert_eq!(channels.len(), 3, "{channels:?}");
    let c1 = find(&channels, &format!("{n} (1)"));
    for (key, want) in [
        ("number", json!(1)),
        (
            "connection_details",
            json!({"name": n, "peer_host": "127.0.0.1", "peer_port": local.port()}),
        ),
        ("vhost", json!("/")),
        ("user", json!("guest")),
        ("state", json!("running")),
        ("consumer_count", json!(1)),
        ("messages_unacknowledged", json!(0)),
        ("prefetch_count", json!(5)),
        ("global_prefetch_count", json!(0)),
        ("confirm", json!(false)),
        ("transactional", json!(false)),
    ] {
        assert_eq!(c1[key], want, "channel field {key}: {c1}");
    }
    let c2 = find(&channels, &format!("{n} (2)"));
    assert_eq!(
        (&c2["confirm"], &c2["consumer_count"]),
        (&json!(true), &json!(0))
    );
    let c3 = find(&channels, &format!("{n} (3)"));
    assert_eq!(c3["transactional"], json!(true));
    assert_eq!(c3["global_prefetch_count"], json!(9));
    assert_eq!(list(&b, "/api/vhosts/%2F/channels", GUEST).len(), 3);
    let path = format!("{}/channels", connection_path(&n));
    assert_eq!(list(&b, &path, GUEST).len(), 3);

    let consumers = list(&b, "/api/consumers", GUEST);
    assert_eq!(consumers.len(), 1, "{consumers:?}");
    assert_eq!(
        consumers[0],
        json!({
            "consumer_tag": "c1",
            "queue": {"name": q, "vhost": "/"},
            "channel_details": {
                "name": format!("{n} (1)"),
                "number": 1,
                "connection_name": n,
                "peer_host": "127.0.0.1",
                "peer_port": local.port(),
                "user": "guest",
                "node": c1["node"],
            },
            "ack_required": true,
            "exclusive": false,
            "prefetch_count": 5,
            "active": true,
            "activity_status": "up",
            "arguments": {"x-priority": 3},
        })
    );
    assert_eq!(list(&b, "/api/consumers/%2F", GUEST).len(), 1);

    // A delivery not yet acked is counted on its channel until the ack.
    r.publish(1, "", q, b"m").await;
    let tag = match r.expect_deliver().await.method {
        basic::AMQPMethod::Deliver(d) => d.delivery_tag,
        other => panic!("expected deliver, got {other:?}"),
    };
    let one_path = format!("/api/channels/{}", encode(&format!("{n} (1)")));
    let (status, one) = call(&b, "GET", &one_path, &[], GUEST);
    assert_eq!(status, 200);
    assert_eq!(one["messages_unacknowledged"], json!(1));
    assert_eq!(one["consumer_details"][0]["consumer_tag"], json!("c1"));
    r.ack(1, tag, false).await;
    eventually(&b, "/api/channels", |l| {
        find(l, &format!("{n} (1)"))["messages_unacknowledged"] == json!(0)
    })
    .await;

    // Cancelled and closed: gone from the listings.
    let cancel = AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
        consumer_tag: "c1".into(),
        nowait: false,
    }));
    r.call(1, cancel).await;
    assert!(list(&b, "/api/consumers", GUEST).is_empty());
    r.close_channel(2).await;
    let channels = list(&b, "/api/channels", GUEST);
    assert_eq!(channels.len(), 2, "{channels:?}");
    assert_eq!(
        find(&channels, &format!("{n} (1)"))["consumer_count"],
        json!(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_mid_handshake_or_while_closing_neither_hangs_nor_closes_twice() {
    let b = start().await;
    // Connected, nothing sent: not a listed connection yet.
    let (mut silent, silent_name) = dial(&b).await;
    assert_eq!(
        call(&b, "DELETE", &connection_path(&silent_name), &[], GUEST).0,
        404
    );
    // Past start: still not listed (RabbitMQ tracks a connection from its open), and the
    // handshake goes on unharmed.
    let (stream, name) = dial(&b).await;
    let mut r = Raw::over(stream).begin().await;
    assert_eq!(
        call(&b, "DELETE", &connection_path(&name), &[], GUEST).0,
        404
    );
    let h = Handshake::default();
    r.start_ok(&h).await;
    let tune = r.expect_tune().await;
    assert_eq!(
        call(&b, "DELETE", &connection_path(&name), &[], GUEST).0,
        404
    );
    r.tune_ok(&h, &tune).await;
    r.connection_open("/").await;
    r.open_channel(1).await;
    r.ping(1).await;

    // Closing already (the broker's close unanswered): DELETE answers at once, and no second
    // close is sent.
    r.send_method(
        0,
        AMQPClass::Connection(conn::AMQPMethod::TuneOk(conn::TuneOk {
            channel_max: 0,
            frame_max: 131_072,
            heartbeat: 0,
        })),
    )
    .await;
    assert_eq!(r.expect_connection_close().await.code, 504);
    let (_, one) = call(&b, "GET", &connection_path(&name), &[], GUEST);
    assert_eq!(one["state"], json!("closing"));
    let asked = Instant::now();
    assert_eq!(
        call(&b, "DELETE", &connection_path(&name), &[], GUEST).0,
        204
    );
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(r.next_within(QUIET).await, Err(RecvError::Timeout)),
        "a second close was sent"
    );
    // Its close timeout ends it.
    eventually(&b, "/api/connections", |l| l.is_empty()).await;

    // Two DELETEs at once: one close.
    let (mut twice, twice_name) = open_as(&b, "guest", "guest").await;
    let path = connection_path(&twice_name);
    let addr = b.http_addr;
    let both = [0, 1].map(|_| {
        let path = path.clone();
        std::thread::spawn(move || http_request(addr, "DELETE", &path, &[], None, Some(GUEST)).0)
    });
    for t in both {
        let status = t.join().unwrap();
        assert!(status == 204 || status == 404, "{status}");
    }
    assert_eq!(twice.expect_connection_close().await.code, 320);
    assert!(
        matches!(twice.next_within(QUIET).await, Err(RecvError::Timeout)),
        "a second close was sent"
    );
    twice
        .send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
        )
        .await;
    twice.expect_eof(Duration::from_secs(2)).await;

    // The silent socket is still there, unharmed, until it times out in its handshake.
    use tokio::io::AsyncWriteExt;
    assert!(silent.write_all(b"AMQP").await.is_ok());
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_are_listed_without_stalling_the_broker() {
    const N: usize = 1000;
    let b = start().await;
    let mut idle = Vec::with_capacity(N);
    for _ in 0..N / 50 {
        let batch = (0..50).map(|_| Raw::open(b.addr));
        idle.extend(within_long("50 handshakes", futures::future::join_all(batch)).await);
    }
    let mut busy = Raw::open(b.addr).await;
    busy.open_channel(1).await;

    // The listing is built while the busy client goes on being served.
    let addr = b.http_addr;
    let listing = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (status, body) = http_get(addr, "/api/connections", Some(GUEST));
        (status, body, started.elapsed())
    });
    for _ in 0..20 {
        within("a round trip while listing", busy.ping(1)).await;
    }
    let (status, body, took) = within_long("the listing", listing).await.unwrap();
    assert_eq!(status, 200);
    let all: Vec<Value> = serde_json::from_str(&body).expect("json");
    assert_eq!(all.len(), N + 1);
    assert!(took < Duration::from_secs(10), "listing took {took:?}");
    drop(idle);
    busy.ping(1).await;
}
