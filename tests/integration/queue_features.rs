//! Queue features (RabbitMQ's extensions) as a lapin client sees them: TTL, dead-lettering with
//! x-death, length limits and overflow modes, priorities, single active consumer, delivery
//! limits, x-expires, consumer timeout, direct reply-to and argument validation.

use std::time::Duration;

use crate::common::*;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

fn args(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(v: Option<&AMQPValue>) -> String {
    match v {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => format!("{other:?}"),
    }
}

async fn declare(ch: &lapin::Channel, name: &str, arguments: FieldTable) {
    within(
        "queue.declare",
        ch.queue_declare(name.into(), QueueDeclareOptions::default(), arguments),
    )
    .await
    .expect("queue.declare");
}

async fn publish_with(ch: &lapin::Channel, rk: &str, body: &[u8], props: BasicProperties) {
    within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            rk.into(),
            BasicPublishOptions::default(),
            body,
            props,
        ),
    )
    .await
    .expect("publish");
}

/// Waits until `q` holds `n` ready messages.
async fn wait_count(ch: &lapin::Channel, q: &str, n: u32) {
    for _ in 0..100 {
        if lapin_count(ch, q).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "queue {q} never reached {n} messages (has {})",
        lapin_count(ch, q).await
    );
}

async fn bodies(ch: &lapin::Channel, q: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(m) = lapin_get(ch, q).await {
        out.push(m.delivery.data);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_rejected_messages_are_dead_lettered_with_x_death() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    declare(&ch, "dead", FieldTable::default()).await;
    let dlx = [
        ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
        (
            "x-dead-letter-routing-key",
            AMQPValue::LongString("dead".into()),
        ),
    ];
    let mut ttl = dlx.to_vec();
    ttl.push(("x-message-ttl", AMQPValue::LongInt(100)));
    declare(&ch, "ttl", args(&ttl)).await;
    declare(&ch, "work", args(&dlx)).await;
    publish_with(
        &ch,
        "ttl",
        b"expired",
        BasicProperties::default().with_expiration("50000".into()),
    )
    .await;
    lapin_publish(&ch, "", "work", b"rejected").await;
    let m = ch
        .basic_get("work".into(), Default::default())
        .await
        .unwrap()
        .unwrap();
    m.delivery
        .acker
        .nack(BasicNackOptions {
            requeue: false,
            multiple: false,
        })
        .await
        .unwrap();
    wait_count(&ch, "dead", 2).await;
    let mut reasons = Vec::new();
    while let Some(m) = lapin_get(&ch, "dead").await {
        let headers = m.delivery.properties.headers().clone().expect("headers");
        let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
            panic!("no x-death")
        };
        let AMQPValue::FieldTable(d) = &deaths.as_slice()[0] else {
            panic!("x-death entry is not a table")
        };
        assert_eq!(d.inner().get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert!(
            m.delivery.properties.expiration().is_none(),
            "expiration is dropped when dead-lettered"
        );
        reasons.push((
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            text(d.inner().get("reason")),
            text(d.inner().get("queue")),
        ));
    }
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            ("expired".into(), "expired".into(), "ttl".into()),
            ("rejected".into(), "rejected".into(), "work".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_limits_drop_the_head_or_nack_the_publisher() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    declare(
        &ch,
        "drop",
        args(&[("x-max-length", AMQPValue::LongInt(2))]),
    )
    .await;
    for body in [b"1", b"2", b"3"] {
        lapin_publish(&ch, "", "drop", body).await;
    }
    assert_eq!(
        bodies(&ch, "drop").await,
        vec![b"2".to_vec(), b"3".to_vec()]
    );

    declare(
        &ch,
        "refuse",
        args(&[
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]),
    )
    .await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let first = ch
        .basic_publish(
            "".into(),
            "refuse".into(),
            Default::default(),
            b"in",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let second = ch
        .basic_publish(
            "".into(),
            "refuse".into(),
            Default::default(),
            b"out",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(first.is_ack(), "the first publish fits");
    assert!(second.is_nack(), "the second is refused with a nack");
    assert_eq!(bodies(&ch, "refuse").await, vec![b"in".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_delivers_higher_priorities_first() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    declare(
        &ch,
        "prio",
        args(&[("x-max-priority", AMQPValue::ShortShortUInt(5))]),
    )
    .await;
    for (body, p) in [(b"a", 1u8), (b"b", 5), (b"c", 0), (b"d", 5), (b"e", 9)] {
        publish_with(
            &ch,
            "prio",
            body,
            BasicProperties::default().with_priority(p),
        )
        .await;
    }
    let got: Vec<u8> = bodies(&ch, "prio")
        .await
        .into_iter()
        .map(|b| b[0])
        .collect();
    assert_eq!(
        got,
        b"bdeac".to_vec(),
        "priority above the maximum counts as the maximum; FIFO within a level"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_and_consumer_priorities() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    declare(
        &ch,
        "sac",
        args(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await;
    let opts = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut first = ch
        .basic_consume("sac".into(), "first".into(), opts, FieldTable::default())
        .await
        .unwrap();
    let mut second = ch
        .basic_consume("sac".into(), "second".into(), opts, FieldTable::default())
        .await
        .unwrap();
    for i in 0..3u8 {
        lapin_publish(&ch, "", "sac", &[i]).await;
    }
    for i in 0..3u8 {
        assert_eq!(lapin_next(&mut first).await.data, vec![i]);
    }
    lapin_none(&mut second).await;

    declare(&ch, "cprio", FieldTable::default()).await;
    let mut low = ch
        .basic_consume(
            "cprio".into(),
            "low".into(),
            opts,
            args(&[("x-priority", AMQPValue::LongInt(1))]),
        )
        .await
        .unwrap();
    let mut high = ch
        .basic_consume(
            "cprio".into(),
            "high".into(),
            opts,
            args(&[("x-priority", AMQPValue::LongInt(10))]),
        )
        .await
        .unwrap();
    for i in 0..3u8 {
        lapin_publish(&ch, "", "cprio", &[i]).await;
    }
    for i in 0..3u8 {
        assert_eq!(lapin_next(&mut high).await.data, vec![i]);
    }
    lapin_none(&mut low).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_limit_dead_letters_after_too_many_returns() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    declare(&ch, "limited-dead", FieldTable::default()).await;
    declare(
        &ch,
        "limited",
        args(&[
            ("x-delivery-limit", AMQPValue::LongInt(1)),
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString("limited-dead".into()),
            ),
        ]),
    )
    .await;
    lapin_publish(&ch, "", "limited", b"poison").await;
    for _ in 0..2 {
        let m = ch
            .basic_get("limited".into(), Default::default())
            .await
            .unwrap()
            .expect("message");
        m.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .unwrap();
    }
    wait_count(&ch, "limited-dead", 1).await;
    assert_eq!(lapin_count(&ch, "limited").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_expires_deletes_an_unused_queue() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    declare(
        &ch,
        "ephemeral",
        args(&[("x-expires", AMQPValue::LongInt(200))]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let gone = ch
        .queue_declare(
            "ephemeral".into(),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        )
        .await;
    assert_lapin_code(gone, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_timeout_closes_the_channel_with_406() {
    let b = start_with(|c| c.consumer_timeout = 300).await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    lapin_declare(&ch, "slow").await;
    lapin_publish(&ch, "", "slow", b"x").await;
    let mut consumer = ch
        .basic_consume(
            "slow".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _unacked = lapin_next(&mut consumer).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !ch.status().connected(),
        "the channel is closed after the timeout"
    );
    let err = ch.basic_ack(1, BasicAckOptions::default()).await;
    assert!(err.is_err());
    // The connection and its other channels keep working; the message is back in the queue.
    let other = lapin_channel(&c).await;
    assert_eq!(lapin_count(&other, "slow").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_round_trip() {
    let b = start().await;
    let server_conn = lapin_connect(&b).await;
    let server = lapin_channel(&server_conn).await;
    lapin_declare(&server, "rpc").await;
    let client_conn = lapin_connect(&b).await;
    let client = lapin_channel(&client_conn).await;
    let mut replies = client
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let props = BasicProperties::default()
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_correlation_id("7".into());
    publish_with(&client, "rpc", b"ping", props).await;
    let mut request = None;
    for _ in 0..100 {
        request = lapin_get(&server, "rpc").await;
        if request.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let request = request.expect("request");
    let reply_to = request
        .delivery
        .properties
        .reply_to()
        .clone()
        .expect("reply_to")
        .to_string();
    assert!(
        reply_to.starts_with("amq.rabbitmq.reply-to."),
        "reply_to rewritten: {reply_to}"
    );
    publish_with(
        &server,
        &reply_to,
        b"pong",
        BasicProperties::default().with_correlation_id("7".into()),
    )
    .await;
    let reply = lapin_next(&mut replies).await;
    assert_eq!(reply.data, b"pong");
    assert_eq!(
        reply
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.to_string()),
        Some("7".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_address_can_be_declared_while_its_requester_waits() {
    // Java's DirectReplyTo.roundTrip: the replier checks the reply_to address with a passive
    // declare; RabbitMQ answers declare-ok (0 messages, 1 consumer) while the requester consumes.
    let b = start().await;
    let server_conn = lapin_connect(&b).await;
    let server = lapin_channel(&server_conn).await;
    lapin_declare(&server, "rpc.declare").await;
    let client_conn = lapin_connect(&b).await;
    let client = lapin_channel(&client_conn).await;
    let consumer = within(
        "basic.consume",
        client.basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let props = BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into());
    publish_with(&client, "rpc.declare", b"ping", props).await;
    let mut request = None;
    for _ in 0..100 {
        request = lapin_get(&server, "rpc.declare").await;
        if request.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply_to = request
        .expect("request")
        .delivery
        .properties
        .reply_to()
        .clone()
        .expect("reply_to")
        .to_string();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = within(
        "passive declare",
        server.queue_declare(reply_to.as_str().into(), passive, FieldTable::default()),
    )
    .await
    .expect("the requester's address exists");
    assert_eq!(q.name().as_str(), reply_to);
    assert_eq!((q.message_count(), q.consumer_count()), (0, 1));
    let ch = lapin_channel(&server_conn).await;
    let r = ch
        .queue_declare(
            format!("{reply_to}x").as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await;
    assert_lapin_code(r, 404);
    drop(consumer);
    client_conn.close(200, "bye".into()).await.unwrap();
    let ch = lapin_channel(&server_conn).await;
    let r = within(
        "passive declare after the requester left",
        ch.queue_declare(reply_to.as_str().into(), passive, FieldTable::default()),
    )
    .await;
    let e = assert_lapin_code(r, 404);
    assert_eq!(
        lapin_text(&e),
        format!("NOT_FOUND - no queue '{reply_to}' in vhost '/'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_refused_and_unknown_ones_kept() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    for (arg, value) in [
        ("x-max-length", AMQPValue::LongInt(-1)),
        ("x-message-ttl", AMQPValue::LongString("soon".into())),
        ("x-max-priority", AMQPValue::LongInt(256)),
        ("x-overflow", AMQPValue::LongString("sometimes".into())),
    ] {
        let ch = lapin_channel(&c).await;
        let r = ch
            .queue_declare(
                "bad-args".into(),
                QueueDeclareOptions::default(),
                args(&[(arg, value)]),
            )
            .await;
        let e = assert_lapin_code(r, 406);
        assert!(
            lapin_text(&e).contains(&format!("invalid arg '{arg}'")),
            "{}",
            lapin_text(&e)
        );
    }
    let ch = lapin_channel(&c).await;
    declare(
        &ch,
        "odd-args",
        args(&[("x-something-new", AMQPValue::LongString("kept".into()))]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplication_drops_repeated_ids_and_still_confirms_them() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    declare(
        &ch,
        "dedup",
        args(&[
            ("x-message-deduplication", AMQPValue::Boolean(true)),
            ("x-cache-ttl", AMQPValue::LongInt(60_000)),
        ]),
    )
    .await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (body, id) in [(b"1", "a"), (b"2", "a"), (b"3", "b"), (b"4", "a")] {
        let props = BasicProperties::default().with_message_id(id.into());
        let confirm = ch
            .basic_publish(
                "".into(),
                "dedup".into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "duplicates are confirmed too");
    }
    lapin_publish(&ch, "", "dedup", b"no-id").await;
    lapin_publish(&ch, "", "dedup", b"no-id").await;
    assert_eq!(
        bodies(&ch, "dedup").await,
        vec![
            b"1".to_vec(),
            b"3".to_vec(),
            b"no-id".to_vec(),
            b"no-id".to_vec()
        ],
        "messages without an id are never dropped"
    );

    declare(
        &ch,
        "dedup-h",
        args(&[
            ("x-message-deduplication", AMQPValue::Boolean(true)),
            (
                "x-deduplication-header",
                AMQPValue::LongString("order".into()),
            ),
        ]),
    )
    .await;
    for (body, order) in [(b"x", 7), (b"y", 7), (b"z", 8)] {
        let props =
            BasicProperties::default().with_headers(args(&[("order", AMQPValue::LongInt(order))]));
        publish_with(&ch, "dedup-h", body, props).await;
    }
    assert_eq!(
        bodies(&ch, "dedup-h").await,
        vec![b"x".to_vec(), b"z".to_vec()]
    );
}

/// Publishes with a message id and confirms, asserting the confirm is an ack.
async fn publish_id(ch: &lapin::Channel, exchange: &str, rk: &str, body: &[u8], id: &str) {
    let props = BasicProperties::default()
        .with_message_id(id.into())
        .with_delivery_mode(2);
    let confirm = within(
        "publish",
        ch.basic_publish(
            exchange.into(),
            rk.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        ),
    )
    .await
    .expect("publish");
    let confirm = within("confirm", confirm).await.expect("confirm");
    assert!(confirm.is_ack(), "duplicates are confirmed too");
    assert!(
        confirm.take_message().is_none(),
        "a dropped duplicate is not returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_can_deduplicate_before_routing() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    ch.exchange_declare(
        "dedup-x".into(),
        lapin::ExchangeKind::Fanout,
        Default::default(),
        args(&[("x-message-deduplication", AMQPValue::Boolean(true))]),
    )
    .await
    .unwrap();
    for q in ["dx1", "dx2"] {
        declare(&ch, q, FieldTable::default()).await;
        ch.queue_bind(
            q.into(),
            "dedup-x".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (body, id) in [(b"1", "a"), (b"2", "a"), (b"3", "b"), (b"4", "b")] {
        publish_id(&ch, "dedup-x", "", body, id).await;
    }
    for q in ["dx1", "dx2"] {
        assert_eq!(bodies(&ch, q).await, vec![b"1".to_vec(), b"3".to_vec()]);
    }

    // Settings are checked like a queue's, with the exchange named.
    let c2 = lapin_channel(&c).await;
    let e = assert_lapin_code(
        c2.exchange_declare(
            "dedup-bad".into(),
            lapin::ExchangeKind::Direct,
            Default::default(),
            args(&[
                ("x-message-deduplication", AMQPValue::Boolean(true)),
                ("x-cache-size", AMQPValue::LongString("many".into())),
            ]),
        )
        .await,
        406,
    );
    assert_eq!(
        lapin_text(&e),
        "PRECONDITION_FAILED - invalid arg 'x-cache-size' for exchange 'dedup-bad' in vhost '/': \"expected integer, got longstr\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplication_remembers_consumed_ids_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let durable = || lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dedup_args = |ttl: i32| {
        args(&[
            ("x-message-deduplication", AMQPValue::Boolean(true)),
            ("x-cache-ttl", AMQPValue::LongInt(ttl)),
        ])
    };
    let connect = |uri: String| async move {
        let c = within(
            "connect",
            lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
        )
        .await
        .expect("connect");
        let ch = lapin_channel(&c).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        (c, ch)
    };

    let broker = ChildBroker::start(dir.path(), &[]);
    {
        let (_c, ch) = connect(broker.uri()).await;
        // A durable deduplicating queue (one id short-lived) and a durable deduplicating exchange.
        ch.queue_declare("dq".into(), durable(), dedup_args(600_000))
            .await
            .unwrap();
        ch.queue_declare("dq-short".into(), durable(), dedup_args(1_500))
            .await
            .unwrap();
        ch.exchange_declare(
            "dx".into(),
            lapin::ExchangeKind::Fanout,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            dedup_args(600_000),
        )
        .await
        .unwrap();
        ch.queue_declare("dx-q".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            "dx-q".into(),
            "dx".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish_id(&ch, "", "dq", b"first", "a").await;
        publish_id(&ch, "", "dq-short", b"first", "a").await;
        publish_id(&ch, "dx", "", b"first", "a").await;
        // Consumed: no longer stored as messages, only remembered as ids.
        for q in ["dq", "dq-short", "dx-q"] {
            assert_eq!(bodies(&ch, q).await, vec![b"first".to_vec()]);
        }
        // Kept in the queue: known again from the stored message.
        publish_id(&ch, "", "dq", b"kept", "k").await;
    }
    broker.stop();

    let broker = ChildBroker::start(dir.path(), &[]);
    let (_c, ch) = connect(broker.uri()).await;
    for (exchange, rk) in [("", "dq"), ("", "dq-short"), ("dx", "")] {
        publish_id(&ch, exchange, rk, b"again", "a").await;
        publish_id(&ch, exchange, rk, b"new", "b").await;
    }
    publish_id(&ch, "", "dq", b"kept again", "k").await;
    assert_eq!(
        bodies(&ch, "dq").await,
        vec![b"kept".to_vec(), b"new".to_vec()]
    );
    assert_eq!(bodies(&ch, "dx-q").await, vec![b"new".to_vec()]);
    assert_eq!(bodies(&ch, "dq-short").await, vec![b"new".to_vec()]);
    // The short-lived id expires, after the restart as before it.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    publish_id(&ch, "", "dq-short", b"later", "a").await;
    assert_eq!(bodies(&ch, "dq-short").await, vec![b"later".to_vec()]);
    broker.stop();
}
