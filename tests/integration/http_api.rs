//! The read-only management API: the listings RabbitMQ's management plugin gives (field names and
//! values as RabbitMQ 3.10 shows them for the same state), behind basic authentication.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};
use warren_amqp::protocol::{queue, AMQPClass};
use warren_amqp::types::{AMQPValue, FieldTable, LongString};

/// queue.declare with arguments.
fn declare_with(q: &str, durable: bool, arguments: FieldTable) -> AMQPClass {
    match declare(
        q,
        QOpts {
            durable,
            ..Default::default()
        },
    ) {
        AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => {
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                arguments,
                ..d
            }))
        }
        other => other,
    }
}

fn api(b: &TestBroker, path: &str) -> (u16, Value) {
    let (status, body) = http_get(b.http_addr, path, Some(("guest", "guest")));
    let value = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_queues_exchanges_bindings_and_counts() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    r.call(1, declare_with("http.q", true, args)).await;
    r.call(1, exchange_declare("http.x", "topic", false, false))
        .await;
    let mut bind_args = FieldTable::default();
    bind_args.insert("k".into(), AMQPValue::LongString(LongString::from("v")));
    let with_args = match bind("http.q", "http.x", "a.#") {
        AMQPClass::Queue(queue::AMQPMethod::Bind(b)) => {
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                arguments: bind_args,
                ..b
            }))
        }
        other => other,
    };
    r.call(1, with_args).await;
    for _ in 0..3 {
        r.publish(1, "", "http.q", b"x").await;
    }
    // One delivered and not acked.
    assert!(r.get(1, "http.q", false).await.is_some());

    let (status, q) = api(&b, "/api/queues/%2F/http.q");
    assert_eq!(status, 200, "{q}");
    for (key, want) in [
        ("name", json!("http.q")),
        ("vhost", json!("/")),
        ("durable", json!(true)),
        ("auto_delete", json!(false)),
        ("exclusive", json!(false)),
        ("arguments", json!({"x-max-length": 10})),
        ("messages", json!(3)),
        ("messages_ready", json!(2)),
        ("messages_unacknowledged", json!(1)),
        ("consumers", json!(0)),
        ("state", json!("running")),
        ("type", json!("classic")),
    ] {
        assert_eq!(q[key], want, "queue field {key}: {q}");
    }
    let (_, all) = api(&b, "/api/queues");
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");

    let (status, x) = api(&b, "/api/exchanges/%2F/amq.default");
    assert_eq!(status, 200);
    assert_eq!(x["name"], json!(""));
    assert_eq!(x["type"], json!("direct"));
    let (_, xs) = api(&b, "/api/exchanges/%2F");
    let names: Vec<&str> = xs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "",
            "amq.direct",
            "amq.fanout",
            "amq.headers",
            "amq.match",
            "amq.rabbitmq.trace",
            "amq.topic",
            "http.x"
        ]
    );

    let (_, bindings) = api(&b, "/api/bindings/%2F");
    let bindings = bindings.as_array().unwrap();
    assert_eq!(bindings.len(), 2, "{bindings:?}");
    assert_eq!(bindings[0]["source"], json!(""));
    assert_eq!(bindings[0]["routing_key"], json!("http.q"));
    assert_eq!(bindings[0]["properties_key"], json!("http.q"));
    assert_eq!(bindings[1]["source"], json!("http.x"));
    assert_eq!(bindings[1]["destination_type"], json!("queue"));
    assert_eq!(bindings[1]["arguments"], json!({"k": "v"}));

    let (_, overview) = api(&b, "/api/overview");
    assert_eq!(
        overview["queue_totals"],
        json!({"messages": 3, "messages_ready": 2, "messages_unacknowledged": 1})
    );
    assert_eq!(overview["object_totals"]["queues"], json!(1));
    let (_, me) = api(&b, "/api/whoami");
    assert_eq!(me, json!({"name": "guest", "tags": ["administrator"]}));
    let (_, nodes) = api(&b, "/api/nodes");
    assert_eq!(nodes[0]["mem_alarm"], json!(false));
    assert_eq!(nodes[0]["disk_free_alarm"], json!(false));

    // Errors as RabbitMQ gives them.
    let (status, body) = http_get(b.http_addr, "/api/queues", Some(("guest", "nope")));
    assert_eq!(status, 401);
    assert!(body.contains("not_authorized"), "{body}");
    assert_eq!(http_get(b.http_addr, "/api/queues", None).0, 401);
    let (status, body) = api(&b, "/api/queues/%2F/nope");
    assert_eq!(status, 404);
    assert_eq!(body["error"], json!("Object Not Found"));
    assert_eq!(api(&b, "/api/queues/nope").0, 404);
    r.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_counters_in_metrics_and_overview() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.declare(1, "counted", QOpts::default()).await;
    r.confirm_select(1).await;
    for _ in 0..3 {
        r.publish(1, "", "counted", b"m").await;
    }
    r.publish(1, "amq.direct", "nowhere", b"dropped").await;
    r.publish_full(1, "amq.direct", "nowhere", true, false, b"returned")
        .await;
    // Gets and the ack on another connection (this one is busy with confirms and a return).
    let mut c = Raw::open(b.addr).await;
    c.open_channel(1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        match c.get(1, "counted", false).await {
            Some(m) => break m,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            None => panic!("the published messages never arrived"),
        }
    };
    c.ack(1, got.delivery_tag(), false).await;
    assert!(c.get(1, "counted", true).await.is_some());

    let want = [
        ("rabbitmq_global_messages_received_total", 5.0),
        ("rabbitmq_global_messages_routed_total", 3.0),
        ("rabbitmq_global_messages_unroutable_dropped_total", 1.0),
        ("rabbitmq_global_messages_unroutable_returned_total", 1.0),
        ("rabbitmq_global_messages_delivered_total", 2.0),
        ("rabbitmq_global_messages_acknowledged_total", 1.0),
        ("rabbitmq_global_messages_confirmed_total", 5.0),
    ];
    // Connections add their counts once per turn of their loop: wait for them.
    let read = || {
        let (_, text) = http_get(b.http_addr, "/metrics", None);
        want.map(|(name, _)| {
            let v = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok());
            (name, v.unwrap_or(-1.0))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = read();
    while seen != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = read();
    }
    assert_eq!(seen, want);
    let (_, overview) = api(&b, "/api/overview");
    let stats = &overview["message_stats"];
    for (key, n) in [
        ("publish", 5),
        ("confirm", 5),
        ("deliver_get", 2),
        ("ack", 1),
        ("return_unroutable", 1),
        ("drop_unroutable", 1),
    ] {
        assert_eq!(stats[key], n, "{key}: {stats}");
        assert!(
            stats[format!("{key}_details")]["rate"].is_number(),
            "{key}: {stats}"
        );
    }
    c.close().await;
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_message_rates_that_follow_the_traffic() {
    let b = start_with(|c| c.collect_statistics_interval = 200).await;
    let conn = lapin_connect(&b).await;
    let ch = lapin_channel(&conn).await;
    lapin_declare(&ch, "rated").await;
    let rate = |key: &str| {
        let (_, overview) = api(&b, "/api/overview");
        overview["message_stats"][format!("{key}_details")]["rate"]
            .as_f64()
            .expect("a rate")
    };
    // Publishing steadily (about 500/s): the publish rate shows it.
    let publishing = {
        let ch = lapin_channel(&conn).await;
        tokio::spawn(async move {
            for _ in 0..750 {
                lapin_publish(&ch, "", "rated", b"x").await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = rate("publish");
    while seen <= 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = rate("publish");
    }
    assert!(seen > 0.0, "a publish rate while publishing: {seen}");
    assert_eq!(rate("ack"), 0.0, "nothing acknowledged");
    within("the publisher", publishing)
        .await
        .expect("publisher");
    // Stopped: two intervals later the rate is back to zero.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = rate("publish");
    while last > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = rate("publish");
    }
    assert_eq!(last, 0.0);
    b.stop().await;
}

/// A queue's `message_stats` count what it took in and handed out (publish, deliver, get with
/// and without acks, redeliver, ack, deliver_get) and carry their rates, and its depths have
/// rates too (`messages_details`): while a publisher fills it, both rise; stopped, they are
/// back to zero. A stream counts its appends, deliveries and acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_shows_its_message_counts_and_rates() {
    use lapin::options::BasicRejectOptions;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions};
    let b = start_with(|c| c.collect_statistics_interval = 200).await;
    let conn = lapin_connect(&b).await;
    let ch = lapin_channel(&conn).await;
    lapin_declare(&ch, "counted").await;
    for i in 0..10 {
        lapin_publish(&ch, "", "counted", format!("m{i}").as_bytes()).await;
    }
    let get = |no_ack| ch.basic_get("counted".into(), BasicGetOptions { no_ack });
    let first = get(false).await.expect("get").expect("a message");
    first
        .delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    let second = get(false).await.expect("get").expect("a message");
    second
        .delivery
        .reject(BasicRejectOptions { requeue: true })
        .await
        .expect("reject");
    get(true).await.expect("get").expect("a message");
    // A consumer gets the other seven and the one put back (redelivered), and acks them.
    ch.basic_qos(100, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = ch
        .basic_consume(
            "counted".into(),
            "counter".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    for _ in 0..8 {
        let d = lapin_next(&mut consumer).await;
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let stats = |queue: &str| {
        let (status, q) = api(&b, &format!("/api/queues/%2F/{queue}"));
        assert_eq!(status, 200, "{q}");
        q
    };
    let expected = json!({"publish": 10, "deliver": 8, "deliver_no_ack": 0, "get": 2,
        "get_no_ack": 1, "deliver_get": 11, "redeliver": 1, "ack": 9});
    let counts = |q: &Value| {
        let m = &q["message_stats"];
        let keys = [
            "publish",
            "deliver",
            "deliver_no_ack",
            "get",
            "get_no_ack",
            "deliver_get",
            "redeliver",
            "ack",
        ];
        Value::Object(
            keys.iter()
                .map(|k| (k.to_string(), m[*k].clone()))
                .collect(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while counts(&stats("counted")) != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts(&stats("counted")), expected);
    // Filling another queue steadily: its publish rate and its depth's rate rise.
    lapin_declare(&ch, "filling").await;
    let publishing = {
        let ch = lapin_channel(&conn).await;
        tokio::spawn(async move {
            for _ in 0..750 {
                lapin_publish(&ch, "", "filling", b"x").await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let rate = |q: &Value, path: [&str; 2]| q[path[0]][path[1]]["rate"].as_f64().expect("a rate");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut q = stats("filling");
    while rate(&q, ["message_stats", "publish_details"]) <= 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        q = stats("filling");
    }
    assert!(rate(&q, ["message_stats", "publish_details"]) > 0.0, "{q}");
    assert!(
        q["messages_details"]["rate"].as_f64().expect("a rate") > 0.0,
        "{q}"
    );
    within("the publisher", publishing)
        .await
        .expect("publisher");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut q = stats("filling");
    while rate(&q, ["message_stats", "publish_details"]) > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        q = stats("filling");
    }
    assert_eq!(rate(&q, ["message_stats", "publish_details"]), 0.0, "{q}");
    assert_eq!(q["messages_details"]["rate"], 0.0, "{q}");
    assert_eq!(q["message_stats"]["publish"], 750, "{q}");
    // A stream: what it appended, delivered and had acked.
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    ch.queue_declare(
        "counted.stream".into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("declare stream");
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    for _ in 0..5 {
        let confirm = ch
            .basic_publish(
                "".into(),
                "counted.stream".into(),
                Default::default(),
                b"s",
                Default::default(),
            )
            .await
            .expect("publish");
        assert!(confirm.await.expect("confirm").is_ack());
    }
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let mut reader = ch
        .basic_consume(
            "counted.stream".into(),
            "reader".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .expect("consume");
    for _ in 0..5 {
        let d = lapin_next(&mut reader).await;
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let sums = |q: &Value| {
        let m = &q["message_stats"];
        (m["publish"].clone(), m["deliver"].clone(), m["ack"].clone())
    };
    while sums(&stats("counted.stream")) != (json!(5), json!(5), json!(5))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sums(&stats("counted.stream")),
        (json!(5), json!(5), json!(5))
    );
    // The vhost: its queues together (750 ready in one, 5 in the stream).
    let (status, v) = api(&b, "/api/vhosts/%2F");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["messages"], 755, "{v}");
    assert_eq!(v["message_stats"]["publish"], 10 + 750 + 5, "{v}");
    assert_eq!(v["message_stats"]["deliver_get"], 11 + 5, "{v}");
    assert!(v["messages_details"]["rate"].is_number(), "{v}");
    b.stop().await;
}

/// A channel's `message_stats` count what went through it (publish, confirm, get_no_ack,
/// deliver, ack, deliver_get, an unroutable publish dropped), with rates; its connection's sum
/// its channels', closed ones included, and carry traffic rates (`recv_oct_details`); an
/// exchange's count what was published into it and what it routed (`publish_in`,
/// `publish_out`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_connections_show_their_message_counts() {
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions};
    let b = start_with(|c| c.collect_statistics_interval = 200).await;
    let conn = lapin_connect(&b).await;
    let ch = lapin_channel(&conn).await;
    lapin_declare(&ch, "via.channel").await;
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    for i in 0..20 {
        let confirm = ch
            .basic_publish(
                "".into(),
                "via.channel".into(),
                Default::default(),
                format!("m{i}").as_bytes(),
                Default::default(),
            )
            .await
            .expect("publish");
        assert!(confirm.await.expect("confirm").is_ack());
    }
    lapin_publish(&ch, "", "nowhere", b"dropped").await;
    for _ in 0..2 {
        ch.basic_get("via.channel".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
            .expect("a message");
    }
    let mut consumer = ch
        .basic_consume(
            "via.channel".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    for _ in 0..18 {
        let d = lapin_next(&mut consumer).await;
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let expected = json!({"publish": 21, "confirm": 21, "drop_unroutable": 1,
        "return_unroutable": 0, "get": 0, "get_no_ack": 2, "deliver": 18, "deliver_no_ack": 0,
        "redeliver": 0, "ack": 18, "deliver_get": 20});
    let pick = |m: &Value| {
        let keys = expected.as_object().expect("an object").keys();
        Value::Object(keys.map(|k| (k.clone(), m[k].clone())).collect())
    };
    let channel_stats = || {
        let (status, list) = api(&b, "/api/channels");
        assert_eq!(status, 200, "{list}");
        list[0]["message_stats"].clone()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while pick(&channel_stats()) != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pick(&channel_stats()), expected);
    // A steady publisher on another channel: its channel and the connection show a rate.
    lapin_declare(&ch, "via.other").await;
    let publishing = {
        let ch = lapin_channel(&conn).await;
        tokio::spawn(async move {
            for _ in 0..500 {
                lapin_publish(&ch, "", "via.other", b"x").await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let publish_rate = |m: &Value| m["publish_details"]["rate"].as_f64().unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut rated = (false, false);
    while rated != (true, true) && Instant::now() < deadline {
        let (_, channels) = api(&b, "/api/channels");
        let (_, connections) = api(&b, "/api/connections");
        rated.0 |= channels
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| publish_rate(&c["message_stats"]) > 0.0);
        rated.1 |= publish_rate(&connections[0]["message_stats"]) > 0.0;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rated,
        (true, true),
        "publish rates of the channel and the connection"
    );
    within("the publisher", publishing)
        .await
        .expect("publisher");
    let connection = || {
        let (status, list) = api(&b, "/api/connections");
        assert_eq!(status, 200, "{list}");
        list[0].clone()
    };
    assert!(connection()["recv_oct_details"]["rate"].is_number());
    // Closed, the channel's counts stay with its connection.
    ch.close(200, "done".into()).await.expect("close");
    let deadline = Instant::now() + Duration::from_secs(5);
    while api(&b, "/api/channels")
        .1
        .as_array()
        .is_some_and(|l| !l.is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut with_steady = expected.clone();
    with_steady["publish"] = json!(21 + 500);
    assert_eq!(pick(&connection()["message_stats"]), with_steady);
    // The exchanges: the default one took 521 and routed 520 (one went nowhere); a direct
    // exchange took 3 and routed 2 (one key unbound).
    let ch = lapin_channel(&conn).await;
    ch.exchange_declare(
        "ex.counted".into(),
        lapin::ExchangeKind::Direct,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    ch.queue_bind(
        "via.other".into(),
        "ex.counted".into(),
        "k".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    for key in ["k", "k", "unbound"] {
        lapin_publish(&ch, "ex.counted", key, b"e").await;
    }
    let exchange = |name: &str| {
        let (_, list) = api(&b, "/api/exchanges/%2F");
        let found = list
            .as_array()
            .and_then(|l| l.iter().find(|e| e["name"] == name).cloned());
        let m = found
            .map(|e| e["message_stats"].clone())
            .unwrap_or_default();
        (m["publish_in"].clone(), m["publish_out"].clone())
    };
    let want = [
        ("", (json!(521), json!(520))),
        ("ex.counted", (json!(3), json!(2))),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    while want.iter().any(|(n, w)| exchange(n) != *w) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, w) in want {
        assert_eq!(exchange(name), w, "exchange '{name}'");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_a_queue_is_not_a_use_of_it() {
    // x-expires counts consumers, gets and declares as use; the management API does not.
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(1500));
    r.call(1, declare_with("http.expiring", false, args)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut gone = false;
    while !gone && Instant::now() < deadline {
        gone = api(&b, "/api/queues/%2F/http.expiring").0 == 404;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone, "polling the queue's listing kept it alive");
    r.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_with_rabbitmq_names() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    // A name that needs escaping in a label value.
    let name = "metrics \"q\" \\ 1";
    r.declare(1, name, QOpts::default()).await;
    for _ in 0..2 {
        r.publish(1, "", name, b"m").await;
    }
    r.declare(1, name, QOpts::default()).await; // a round trip: both publishes are in

    let sample = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    let (status, totals) = http_get(b.http_addr, "/metrics", None);
    assert_eq!(status, 200);
    assert_eq!(sample(&totals, "rabbitmq_queues"), Some(1.0), "{totals}");
    assert_eq!(sample(&totals, "rabbitmq_queue_messages_ready"), Some(2.0));
    assert_eq!(sample(&totals, "rabbitmq_queue_messages"), Some(2.0));
    assert_eq!(sample(&totals, "rabbitmq_connections"), Some(1.0));
    assert_eq!(
        sample(&totals, "rabbitmq_alarms_memory_used_watermark"),
        Some(0.0)
    );
    let (_, per_object) = http_get(b.http_addr, "/metrics/per-object", None);
    assert_eq!(
        sample(
            &per_object,
            r#"rabbitmq_queue_messages_ready{vhost="/",queue="metrics \"q\" \\ 1"}"#
        ),
        Some(2.0),
        "{per_object}"
    );
    // Each family is declared once, and every sample line is `name{labels} value`.
    for text in [&totals, &per_object] {
        let mut families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        let n = families.len();
        families.sort_unstable();
        families.dedup();
        assert_eq!(families.len(), n, "a family declared twice: {text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
    r.close().await;
}

/// A raw HTTP/1.1 exchange (`Connection: close`): the status, the headers (names in lower case)
/// and the body.
fn http_exchange(
    b: &TestBroker,
    path: &str,
    authorization: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(b.http_addr).expect("http connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let authorization = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n"
    )
    .expect("http request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("http response");
    let (head, body) = response.split_once("\r\n\r\n").expect("http head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("http status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn basic(scheme: &str, user: &str, pass: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("{scheme} {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_need_credentials_like_the_other_routes() {
    let b = start().await;
    // The refusal every API route gives: status, WWW-Authenticate header and body.
    let (status, headers, body) = http_exchange(&b, "/api/overview", None);
    assert_eq!(status, 401);
    let challenge = |headers: &[(String, String)]| {
        headers
            .iter()
            .find(|(k, _)| k == "www-authenticate")
            .map(|(_, v)| v.clone())
    };
    let reference = (challenge(&headers), body);
    assert_eq!(
        reference.0.as_deref(),
        Some("Basic realm=\"RabbitMQ Management\"")
    );
    for path in [
        "/api/aliveness-test/%2F",
        "/api/aliveness-test/no-such-vhost",
        "/api/health/checks/alarms",
        "/api/health/checks/local-alarms",
        "/api/health/checks/virtual-hosts",
        "/api/health/checks/port-listener/5672",
        "/api/health/checks/certificate-expiration/1/months",
    ] {
        for authorization in [None, Some(basic("Basic", "guest", "nope"))] {
            let (status, headers, body) = http_exchange(&b, path, authorization.as_deref());
            assert_eq!(status, 401, "{path} with {authorization:?}: {body}");
            assert_eq!(
                (challenge(&headers), body),
                reference,
                "{path} with {authorization:?}"
            );
        }
    }
    let (status, health) = api(&b, "/api/health/checks/alarms");
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    // The other checks, with RabbitMQ 3.10's answers.
    let ok = json!({"status": "ok"});
    for path in [
        "local-alarms",
        "virtual-hosts",
        "certificate-expiration/1/months",
    ] {
        assert_eq!(
            api(&b, &format!("/api/health/checks/{path}")),
            (200, ok.clone()),
            "{path}"
        );
    }
    for path in ["node-is-quorum-critical", "node-is-mirror-sync-critical"] {
        assert_eq!(
            api(&b, &format!("/api/health/checks/{path}")),
            (
                200,
                json!({"status": "ok", "reason": "single node cluster"})
            )
        );
    }
    let (amqp, http) = (b.addr.port(), b.http_addr.port());
    assert_eq!(
        api(&b, &format!("/api/health/checks/port-listener/{amqp}")),
        (200, json!({"status": "ok", "port": amqp}))
    );
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    assert_eq!(
        api(&b, &format!("/api/health/checks/port-listener/{free}")),
        (
            503,
            json!({"status": "failed", "reason": "No active listener", "missing": free, "ports": [amqp, http]})
        )
    );
    assert_eq!(
        api(&b, "/api/health/checks/protocol-listener/amqp"),
        (200, json!({"status": "ok", "protocol": "amqp"}))
    );
    assert_eq!(
        api(&b, "/api/health/checks/protocol-listener/mqtt"),
        (
            503,
            json!({"status": "failed", "reason": "No active listener", "missing": "mqtt", "protocols": ["amqp", "http"]})
        )
    );
    assert_eq!(
        api(&b, "/api/health/checks/certificate-expiration/1/foo"),
        (
            400,
            json!({"error": "bad_request", "reason": "Time unit not recognised. Supported units: days, weeks, months, years."})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_scheme_is_case_insensitive() {
    let b = start().await;
    for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
        let (status, _, body) =
            http_exchange(&b, "/api/whoami", Some(&basic(scheme, "guest", "guest")));
        assert_eq!(status, 200, "scheme {scheme}: {body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["name"],
            json!("guest")
        );
    }
    // Still basic credentials, and still checked.
    for authorization in [
        basic("basic", "guest", "nope"),
        basic("Bearer", "guest", "guest"),
        "Basicx".to_owned(),
    ] {
        let (status, _, _) = http_exchange(&b, "/api/whoami", Some(&authorization));
        assert_eq!(status, 401, "{authorization}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliveness_test_round_trips_a_message_in_the_vhost() {
    let b = start().await;
    // A vhost that does not exist: RabbitMQ's 404.
    let (status, body) = api(&b, "/api/aliveness-test/no-such-vhost");
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error": "Object Not Found", "reason": "Not Found"})
    );
    assert_eq!(api(&b, "/api/queues/no-such-vhost/aliveness-test").0, 404);

    // The default vhost: declares aliveness-test (transient, left in place), publishes to it
    // through the default exchange and gets the message back.
    let (status, body) = api(&b, "/api/aliveness-test/%2F");
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, q) = api(&b, "/api/queues/%2F/aliveness-test");
    assert_eq!(status, 200, "the check declared no queue");
    assert_eq!(q["durable"], json!(false));
    assert_eq!(q["auto_delete"], json!(false));
    assert_eq!(q["messages"], json!(0), "{q}");

    // The message really goes through the queue: a message already there is what the check's
    // basic.get takes, and the check's own message stays for the next reader.
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.publish(1, "", "aliveness-test", b"first").await;
    r.declare(1, "aliveness-test", QOpts::default()).await; // a round trip: the publish is in
    let (status, body) = api(&b, "/api/aliveness-test/%2F");
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let left = r
        .get(1, "aliveness-test", true)
        .await
        .expect("a message left");
    assert_eq!(left.body, b"test_message");
    assert!(r.get(1, "aliveness-test", true).await.is_none());

    r.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliveness_test_reports_an_inequivalent_queue_as_a_bad_request() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.declare(
        1,
        "aliveness-test",
        QOpts {
            durable: true,
            ..QOpts::default()
        },
    )
    .await;
    // The check's transient declare is refused, as a client's would be: RabbitMQ's management
    // plugin answers such a channel error 400 with its code and text.
    let (status, body) = api(&b, "/api/aliveness-test/%2F");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], json!("bad_request"));
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("406 PRECONDITION_FAILED - inequivalent arg 'durable'"),
        "{body}"
    );
    r.close().await;
}

/// The names of a listing's items (a page's or a plain array's), as `vhost/name`.
fn listed(answer: &Value) -> Vec<String> {
    answer
        .get("items")
        .unwrap_or(answer)
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    format!(
                        "{}/{}",
                        i["vhost"].as_str().unwrap_or("?"),
                        i["name"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// RabbitMQ's pagination of the queue listings (`page`, `page_size`, `name`, `use_regex`,
/// `sort`, `sort_reverse`, `columns`), with the answers and refusals RabbitMQ 3.10.8 gave for
/// the same queues: twelve `pq.NN` in `/` and one `pq.x` in vhost `pv`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_listings_page_filter_and_sort_as_rabbitmq_s_do() {
    let b = start_with(|c| c.collect_statistics_interval = 100).await;
    let guest = ("guest", "guest");
    let put = |path: &str, body: &str| {
        let (status, answer) = http_json(b.http_addr, "PUT", path, Some(body), guest);
        assert!(
            status == 201 || status == 204,
            "PUT {path}: {status} {answer}"
        );
    };
    for i in 0..12 {
        put(&format!("/api/queues/%2F/pq.{i:02}"), "{}");
    }
    put("/api/vhosts/pv", "{}");
    put("/api/queues/pv/pq.x", "{}");
    for (queue, count) in [("pq.03", 5), ("pq.07", 2), ("pq.05", 9)] {
        for _ in 0..count {
            let body = json!({"properties": {}, "routing_key": queue, "payload": "x", "payload_encoding": "string"});
            let (status, answer) = http_json(
                b.http_addr,
                "POST",
                "/api/exchanges/%2F/amq.default/publish",
                Some(&body.to_string()),
                guest,
            );
            assert_eq!((status, answer), (200, json!({"routed": true})));
        }
    }

    let (status, page) = api(&b, "/api/queues?page=1&page_size=5");
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (
            &page["filtered_count"],
            &page["item_count"],
            &page["page"],
            &page["page_count"],
            &page["page_size"],
            &page["total_count"]
        ),
        (
            &json!(13),
            &json!(5),
            &json!(1),
            &json!(3),
            &json!(5),
            &json!(13)
        )
    );
    assert_eq!(
        listed(&page),
        ["//pq.00", "//pq.01", "//pq.02", "//pq.03", "//pq.04"]
    );
    // The page's queues carry their counts, as in the plain listing.
    assert_eq!(page["items"][3]["messages"], json!(5), "{page}");
    let (_, last) = api(&b, "/api/queues?page=3&page_size=5");
    assert_eq!(listed(&last), ["//pq.10", "//pq.11", "pv/pq.x"]);
    assert_eq!(last["item_count"], json!(3));
    let (_, of_vhost) = api(&b, "/api/queues/%2F?page=2&page_size=10");
    assert_eq!(
        (listed(&of_vhost), &of_vhost["total_count"]),
        (vec!["//pq.10".to_owned(), "//pq.11".to_owned()], &json!(12))
    );

    // Refusals, as RabbitMQ words them.
    for (query, error, reason) in [
        (
            "page=4&page_size=5",
            "page_out_of_range",
            "Page out of range, page: 4 page size: 5, len: 13",
        ),
        (
            "page=0",
            "invalid_pagination_parameters",
            "Invalid pagination parameters: page number 0, page size undefined",
        ),
        (
            "page=1&page_size=501",
            "invalid_pagination_parameters",
            "Invalid pagination parameters: page number 1, page size 501",
        ),
        ("page=x", "bad_request", "Pagination parameters are invalid"),
        (
            "page=1&name=%5B&use_regex=true",
            "bad_request",
            "Pagination parameters are invalid",
        ),
    ] {
        let (status, answer) = api(&b, &format!("/api/queues?{query}"));
        assert_eq!(
            (status, answer),
            (400, json!({"error": error, "reason": reason})),
            "{query}"
        );
    }
    // An empty first page is a page (of none); the second is out of range.
    let (status, none) = api(&b, "/api/queues?page=1&name=nothing");
    assert_eq!(
        (status, &none["page_count"], &none["items"]),
        (200, &json!(0), &json!([]))
    );
    assert_eq!(api(&b, "/api/queues?page=2&name=nothing").0, 400);

    // Names: a part of the name, whatever its case; or a regular expression, ignoring case.
    let names = |query: &str| listed(&api(&b, &format!("/api/queues?page=1&{query}")).1);
    assert_eq!(names("name=PQ.1"), ["//pq.10", "//pq.11"]);
    assert_eq!(
        names("name=.").len(),
        13,
        "a dot is a dot without use_regex"
    );
    assert_eq!(
        names("name=%5EPQ%5C.1&use_regex=true"),
        ["//pq.10", "//pq.11"]
    );
    assert_eq!(names("name=x%24&use_regex=true"), ["pv/pq.x"]);
    let (_, filtered) = api(&b, "/api/queues?page=1&name=pq.1");
    assert_eq!(
        (&filtered["filtered_count"], &filtered["total_count"]),
        (&json!(2), &json!(13))
    );
    // Without `page` the name filter does not apply (RabbitMQ's listing ignores it too).
    assert_eq!(listed(&api(&b, "/api/queues?name=pq.1").1).len(), 13);

    // Sorting: by name, reversed; by a count (from the queues' last samples, taken every
    // 100 ms here), ties in the listing's order.
    assert_eq!(
        names("sort=name&sort_reverse=true&page_size=3"),
        ["pv/pq.x", "//pq.11", "//pq.10"]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let by_depth = loop {
        let top = names("sort=messages&sort_reverse=true&page_size=4");
        if top[..3] == ["//pq.05", "//pq.03", "//pq.07"] || Instant::now() > deadline {
            break top;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(by_depth, ["//pq.05", "//pq.03", "//pq.07", "pv/pq.x"]);
    assert_eq!(names("sort=messages&page_size=2"), ["//pq.00", "//pq.01"]);
    assert_eq!(
        names("sort=no.such.field&page_size=2"),
        ["//pq.00", "//pq.01"]
    );
    // The plain listing sorts as well.
    let (_, sorted) = api(&b, "/api/queues?sort=messages&sort_reverse=true");
    assert_eq!(listed(&sorted)[..3], ["//pq.05", "//pq.03", "//pq.07"]);

    // Columns: only those fields, nested ones kept nested.
    let (_, cut) = api(
        &b,
        "/api/queues?page=1&page_size=1&columns=name,messages,message_stats.publish",
    );
    assert_eq!(
        cut["items"],
        json!([{"name": "pq.00", "messages": 0, "message_stats": {"publish": 0}}])
    );
    let (_, cut) = api(&b, "/api/queues/pv?columns=name");
    assert_eq!(cut, json!([{"name": "pq.x"}]));
    b.stop().await;
}

/// Exchanges, connections and channels page, filter and sort as queues do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_listings_page_too() {
    let b = start().await;
    let (_, page) = api(&b, "/api/exchanges?page=2&page_size=3&sort=name");
    assert_eq!(
        listed(&page),
        ["//amq.headers", "//amq.match", "//amq.rabbitmq.trace"]
    );
    assert_eq!(
        (&page["total_count"], &page["page_count"]),
        (&json!(7), &json!(3))
    );
    let (_, page) = api(&b, "/api/exchanges/%2F?page=1&name=topic");
    assert_eq!(listed(&page), ["//amq.topic"]);

    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    let (_, connections) = api(&b, "/api/connections?page=1&columns=name,user");
    assert_eq!(
        (
            &connections["total_count"],
            &connections["items"][0]["user"]
        ),
        (&json!(1), &json!("guest"))
    );
    assert_eq!(
        connections["items"][0].as_object().map(|o| o.len()),
        Some(2),
        "{connections}"
    );
    let (_, channels) = api(
        &b,
        "/api/channels?page=1&page_size=1&sort=number&sort_reverse=true",
    );
    assert_eq!(
        (&channels["total_count"], &channels["items"][0]["number"]),
        (&json!(2), &json!(2))
    );
    assert_eq!(api(&b, "/api/channels?page=3&page_size=1").0, 400);
    b.stop().await;
}

/// The web UI: its page at `/` and its files under `/ui/`, without credentials (they hold no
/// data), with their types, a policy that keeps the page to this origin, and revalidation by
/// entity tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_is_served_with_its_files() {
    let b = start().await;
    let (status, head, body) =
        crate::common::http_exchange(b.http_addr, "GET", "/", &[], None, None);
    assert_eq!(status, 200);
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(
        body.contains("/ui/app.js") && body.contains("/ui/app.css"),
        "{body}"
    );
    let tag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("an etag")
        .to_owned();
    let (status, _, body) = crate::common::http_exchange(
        b.http_addr,
        "GET",
        "/",
        &[("If-None-Match", &tag)],
        None,
        None,
    );
    assert_eq!((status, body.as_str()), (304, ""));

    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("queues.js", "text/javascript"),
        ("app.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let (status, head, body) = crate::common::http_exchange(
            b.http_addr,
            "GET",
            &format!("/ui/{file}"),
            &[],
            None,
            None,
        );
        assert_eq!(status, 200, "{file}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-type: {kind}")),
            "{file}: {head}"
        );
        assert!(!body.is_empty(), "{file}");
    }
    // Every module the page imports is served.
    let (_, _, app) =
        crate::common::http_exchange(b.http_addr, "GET", "/ui/app.js", &[], None, None);
    for module in app
        .lines()
        .filter_map(|l| l.split("from './").nth(1)?.split('\'').next())
    {
        assert_eq!(
            http_get(b.http_addr, &format!("/ui/{module}"), None).0,
            200,
            "{module}"
        );
    }
    assert_eq!(http_get(b.http_addr, "/ui/nope.js", None).0, 404);
    assert_eq!(http_get(b.http_addr, "/ui/../Cargo.toml", None).0, 404);
    b.stop().await;
}
