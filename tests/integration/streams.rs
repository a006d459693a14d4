//! Stream queues (`x-queue-type: stream`) as a lapin client sees them: offsets of every kind,
//! several consumers, acks as credit, retention by size and by age, restarts and `kill -9`
//! (no confirmed entry lost, offsets unchanged), and the hostile cases: a consumer that never
//! acks, one that vanishes, one that reads from the start of a large stream, readers killed or
//! reset mid-read, a thousand readers that stop reading.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection};

use crate::common::*;

pub(crate) fn stream_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn declare_stream(ch: &lapin::Channel, name: &str, extra: &[(&str, AMQPValue)]) -> u32 {
    within(
        "queue.declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            stream_args(extra),
        ),
    )
    .await
    .expect("stream declare")
    .message_count()
}

/// Publishes `bodies` one at a time, each confirmed before the next (so each is a chunk of its
/// own, as with RabbitMQ).
async fn publish_each_confirmed(ch: &lapin::Channel, stream: &str, bodies: &[String]) {
    for body in bodies {
        let confirm = within(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                stream.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            ),
        )
        .await
        .expect("publish");
        assert!(
            within("confirm", confirm).await.expect("confirm").is_ack(),
            "{body} confirmed"
        );
    }
}

/// Publishes `bodies` with up to 500 unconfirmed at a time; every one confirmed.
async fn publish_pipelined(
    ch: &lapin::Channel,
    stream: &str,
    bodies: impl IntoIterator<Item = impl AsRef<[u8]>>,
) {
    let mut confirms = FuturesUnordered::new();
    for body in bodies {
        let c = ch
            .basic_publish(
                "".into(),
                stream.into(),
                BasicPublishOptions::default(),
                body.as_ref(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        confirms.push(c);
        while confirms.len() > 500 {
            assert!(confirms.next().await.unwrap().unwrap().is_ack());
        }
    }
    while let Some(c) = confirms.next().await {
        assert!(c.unwrap().is_ack());
    }
}

async fn confirming_channel(conn: &Connection) -> lapin::Channel {
    let ch = lapin_channel(conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    ch
}

pub(crate) fn offset_of(d: &lapin::message::Delivery) -> i64 {
    let headers = d.properties.headers().as_ref().expect("headers");
    match headers.inner().get("x-stream-offset") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        other => panic!("x-stream-offset: {other:?}"),
    }
}

/// A consumer of `stream` on a channel of its own with prefetch `prefetch`, from `start`.
pub(crate) async fn consume_from(
    conn: &Connection,
    stream: &str,
    prefetch: u16,
    start: Option<AMQPValue>,
) -> (lapin::Channel, lapin::Consumer) {
    let ch = lapin_channel(conn).await;
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut args = FieldTable::default();
    if let Some(start) = start {
        args.insert("x-stream-offset".into(), start);
    }
    let consumer = within(
        "basic.consume",
        ch.basic_consume(
            stream.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        ),
    )
    .await
    .expect("consume");
    (ch, consumer)
}

/// The next `n` deliveries as (offset, body), each acked.
async fn take_acked(consumer: &mut lapin::Consumer, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let d = lapin_next(consumer).await;
        assert!(!d.redelivered, "stream deliveries are never redelivered");
        out.push((offset_of(&d), String::from_utf8_lossy(&d.data).into_owned()));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    out
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn numbered(range: std::ops::Range<u64>) -> Vec<(i64, String)> {
    range.map(|i| (i as i64, format!("m{i}"))).collect()
}

#[tokio::test]
async fn stream_consumers_start_from_every_kind_of_offset() {
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = confirming_channel(&conn).await;
    assert_eq!(declare_stream(&ch, "s", &[]).await, 0);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let bodies: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    publish_each_confirmed(&ch, "s", &bodies).await;
    assert_eq!(
        lapin_count(&ch, "s").await,
        10,
        "declare-ok counts the messages"
    );

    let (_c1, mut first) = consume_from(&conn, "s", 20, Some(text("first"))).await;
    assert_eq!(take_acked(&mut first, 10).await, numbered(0..10));
    let (_c2, mut last) = consume_from(&conn, "s", 20, Some(text("last"))).await;
    assert_eq!(take_acked(&mut last, 1).await, numbered(9..10));
    let (_c3, mut at7) = consume_from(&conn, "s", 20, Some(AMQPValue::LongLongInt(7))).await;
    assert_eq!(take_acked(&mut at7, 3).await, numbered(7..10));
    let (_c4, mut negative) = consume_from(&conn, "s", 20, Some(AMQPValue::LongInt(-1))).await;
    assert_eq!(take_acked(&mut negative, 10).await, numbered(0..10));
    let (_c5, mut since) = consume_from(
        &conn,
        "s",
        20,
        Some(AMQPValue::Timestamp(before.saturating_sub(60))),
    )
    .await;
    assert_eq!(take_acked(&mut since, 10).await, numbered(0..10));
    let (_c6, mut interval) = consume_from(&conn, "s", 20, Some(text("10m"))).await;
    assert_eq!(take_acked(&mut interval, 10).await, numbered(0..10));
    let (_c7, mut future) =
        consume_from(&conn, "s", 20, Some(AMQPValue::Timestamp(before + 3600))).await;
    let (_c8, mut next) = consume_from(&conn, "s", 20, Some(text("next"))).await;
    let (_c9, mut default) = consume_from(&conn, "s", 20, None).await;
    let (_c10, mut ahead) = consume_from(&conn, "s", 20, Some(AMQPValue::LongLongInt(12))).await;
    lapin_none(&mut next).await;
    lapin_none(&mut ahead).await;

    // Consumers at the end get what comes next; one waiting for offset 12 gets it once there.
    let more: Vec<String> = (10..13).map(|i| format!("m{i}")).collect();
    publish_each_confirmed(&ch, "s", &more).await;
    assert_eq!(take_acked(&mut next, 3).await, numbered(10..13));
    assert_eq!(take_acked(&mut default, 3).await, numbered(10..13));
    assert_eq!(take_acked(&mut future, 3).await, numbered(10..13));
    assert_eq!(take_acked(&mut ahead, 1).await, numbered(12..13));
    // And those that read everything see the new ones too: many consumers, every message.
    assert_eq!(take_acked(&mut first, 3).await, numbered(10..13));
    assert_eq!(take_acked(&mut at7, 3).await, numbered(10..13));
    conn.close(200, "bye".into()).await.ok();
    b.stop().await;
}

#[tokio::test]
async fn a_stream_consumer_cancelled_and_started_again_reads_the_same_messages() {
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = confirming_channel(&conn).await;
    declare_stream(&ch, "again", &[]).await;
    let bodies: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    publish_each_confirmed(&ch, "again", &bodies).await;
    for _ in 0..3 {
        let (c, mut consumer) =
            consume_from(&conn, "again", 10, Some(AMQPValue::LongLongInt(1))).await;
        assert_eq!(take_acked(&mut consumer, 4).await, numbered(1..5));
        c.basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .expect("cancel");
    }
    // Acks removed nothing.
    assert_eq!(lapin_count(&ch, "again").await, 5);
    b.stop().await;
}

#[tokio::test]
async fn a_stream_consumer_that_never_acks_stops_at_its_prefetch_and_goes_on_when_it_acks() {
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = confirming_channel(&conn).await;
    declare_stream(&ch, "credit", &[]).await;
    let bodies: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    publish_each_confirmed(&ch, "credit", &bodies).await;
    let (_c, mut consumer) = consume_from(&conn, "credit", 3, Some(text("first"))).await;
    let mut held = Vec::new();
    for i in 0..3 {
        let d = lapin_next(&mut consumer).await;
        assert_eq!(offset_of(&d), i);
        held.push(d);
    }
    lapin_none(&mut consumer).await;
    // One ack, one more delivery.
    held.remove(0)
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    assert_eq!(offset_of(&lapin_next(&mut consumer).await), 3);
    lapin_none(&mut consumer).await;
    // Another consumer is not held up by this one.
    let (_c2, mut other) = consume_from(&conn, "credit", 50, Some(text("first"))).await;
    assert_eq!(take_acked(&mut other, 20).await.len(), 20);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_refuse_what_rabbitmq_refuses() {
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = confirming_channel(&conn).await;
    declare_stream(&ch, "strict", &[]).await;
    publish_each_confirmed(&ch, "strict", &["one".to_owned()]).await;

    // Not durable, or an argument of another queue type: 406, the channel closed.
    let ch2 = lapin_channel(&conn).await;
    let e = ch2
        .queue_declare(
            "loose".into(),
            QueueDeclareOptions::default(),
            stream_args(&[]),
        )
        .await
        .unwrap_err();
    assert_eq!(lapin_code(&e), Some(406), "{e}");
    let ch2 = lapin_channel(&conn).await;
    let e = ch2
        .queue_declare(
            "ttl".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            stream_args(&[("x-message-ttl", AMQPValue::LongInt(1000))]),
        )
        .await
        .unwrap_err();
    assert!(
        lapin_text(&e).contains("of queue type rabbit_stream_queue"),
        "{e}"
    );
    let ch2 = lapin_channel(&conn).await;
    let e = ch2
        .queue_declare(
            "old".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            stream_args(&[("x-max-age", text("10 days"))]),
        )
        .await
        .unwrap_err();
    assert!(lapin_text(&e).contains("invalid_max_age"), "{e}");

    // A consumer without a prefetch: 406.
    let ch2 = lapin_channel(&conn).await;
    let e = ch2
        .basic_consume(
            "strict".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(lapin_code(&e), Some(406), "{e}");
    assert!(
        lapin_text(&e).contains("consumer prefetch count is not set"),
        "{e}"
    );

    // basic.get, queue.purge, automatic acks, nack: 540, the connection closed.
    for refused in ["get", "purge", "no-ack", "nack"] {
        let conn = lapin_connect(&b).await;
        let ch = lapin_channel(&conn).await;
        ch.basic_qos(10, BasicQosOptions::default())
            .await
            .expect("qos");
        let e = match refused {
            "get" => ch
                .basic_get("strict".into(), lapin::options::BasicGetOptions::default())
                .await
                .map(|_| ())
                .unwrap_err(),
            "purge" => ch
                .queue_purge("strict".into(), Default::default())
                .await
                .map(|_| ())
                .unwrap_err(),
            "no-ack" => ch
                .basic_consume(
                    "strict".into(),
                    "".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map(|_| ())
                .unwrap_err(),
            _ => {
                let mut args = FieldTable::default();
                args.insert("x-stream-offset".into(), text("first"));
                let mut consumer = ch
                    .basic_consume(
                        "strict".into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        args,
                    )
                    .await
                    .expect("consume");
                let d = lapin_next(&mut consumer).await;
                d.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .ok();
                // The next method finds the connection closed.
                within("the connection closing", async {
                    loop {
                        if !conn.status().connected() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
                continue;
            }
        };
        assert_eq!(lapin_code(&e), Some(540), "{refused}: {e}");
        assert!(
            lapin_text(&e).contains("not supported by stream queues"),
            "{refused}: {e}"
        );
    }
    // The management API refuses them too, as RabbitMQ 3.10 does: 400 with its texts.
    let guest = ("guest", "guest");
    let (status, body) = http_json(
        b.http_addr,
        "DELETE",
        "/api/queues/%2F/strict/contents",
        None,
        guest,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["reason"],
        "queue.purge not supported by stream queues queue 'strict' in vhost '/'"
    );
    let get = r#"{"count":1,"ackmode":"ack_requeue_true","encoding":"auto"}"#;
    let (status, body) = http_json(
        b.http_addr,
        "POST",
        "/api/queues/%2F/strict/get",
        Some(get),
        guest,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["reason"],
        "540 basic.get not supported by stream queues queue 'strict' in vhost '/'"
    );
    // Nothing of that touched the stream.
    let ch = lapin_channel(&lapin_connect(&b).await).await;
    assert_eq!(lapin_count(&ch, "strict").await, 1);
    b.stop().await;
}

#[tokio::test]
async fn a_vanished_stream_consumer_leaves_the_others_and_the_stream_as_they_were() {
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = confirming_channel(&conn).await;
    declare_stream(&ch, "vanish", &[]).await;
    let bodies: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    publish_each_confirmed(&ch, "vanish", &bodies).await;
    // A raw client: consumes with prefetch 10 and drops its socket without closing anything.
    {
        let doomed = lapin_connect(&b).await;
        let (_dc, mut consumer) = consume_from(&doomed, "vanish", 10, Some(text("first"))).await;
        let _held = lapin_next(&mut consumer).await;
        drop(consumer);
        // lapin has no reset; a connection dropped without close is the closest it comes.
        drop(doomed);
    }
    let (_c, mut survivor) = consume_from(&conn, "vanish", 7, Some(text("first"))).await;
    assert_eq!(take_acked(&mut survivor, 50).await, numbered(0..50));
    assert_eq!(lapin_count(&ch, "vanish").await, 50);
    b.stop().await;
}

#[tokio::test]
async fn retention_drops_the_oldest_segments_by_size_and_by_age() {
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = confirming_channel(&conn).await;
    // Segments of about one message: each confirmed publish rolls a new one.
    let small = [
        ("x-stream-max-segment-size-bytes", AMQPValue::LongInt(200)),
        ("x-max-length-bytes", AMQPValue::LongInt(2000)),
    ];
    declare_stream(&ch, "sized", &small).await;
    let bodies: Vec<String> = (0..100).map(|i| format!("{i:0>100}")).collect();
    publish_each_confirmed(&ch, "sized", &bodies).await;
    let kept = lapin_count(&ch, "sized").await;
    assert!(
        (5..=20).contains(&kept),
        "about 2,000 bytes kept: {kept} messages"
    );
    let (_c, mut consumer) = consume_from(&conn, "sized", 100, Some(text("first"))).await;
    let got = take_acked(&mut consumer, kept as usize).await;
    assert_eq!(got.first().map(|g| g.0), Some(100 - i64::from(kept)));
    assert_eq!(got.last().map(|g| g.0), Some(99), "the newest are kept");

    let aged = [
        ("x-stream-max-segment-size-bytes", AMQPValue::LongInt(100)),
        ("x-max-age", text("1s")),
    ];
    declare_stream(&ch, "aged", &aged).await;
    let bodies: Vec<String> = (0..5).map(|i| format!("old {i}")).collect();
    publish_each_confirmed(&ch, "aged", &bodies).await;
    // Every segment but the last is dropped once a second older than its newest message.
    eventually_count(&ch, "aged", 1).await;
    let (_c, mut consumer) = consume_from(&conn, "aged", 10, Some(text("first"))).await;
    let got = take_acked(&mut consumer, 1).await;
    assert_eq!(got, vec![(4, "old 4".to_owned())]);
    b.stop().await;
}

async fn eventually_count(ch: &lapin::Channel, stream: &str, want: u32) {
    within_long("retention", async {
        loop {
            if lapin_count(ch, stream).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Every message read from the stream from its start: (offset, id).
async fn read_all(b: &ChildBroker, stream: &str) -> Vec<(i64, u64)> {
    let conn = b.connect().await;
    let count = lapin_count(&lapin_channel(&conn).await, stream).await;
    let (_c, mut consumer) = consume_from(&conn, stream, 1000, Some(text("first"))).await;
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let d = lapin_next(&mut consumer).await;
        let id = u64::from_be_bytes(d.data[..8].try_into().expect("an id"));
        out.push((offset_of(&d), id));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_confirmed_stream_entry_is_lost_on_kill_9_and_offsets_do_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut before: Vec<(i64, u64)> = Vec::new();
    for round in 0..3 {
        let b = ChildBroker::start(dir.path(), &[]);
        {
            let conn = b.connect().await;
            declare_stream(&lapin_channel(&conn).await, "crash", &[]).await;
        }
        // What earlier rounds kept is still there, at the same offsets.
        let now = read_all(&b, "crash").await;
        assert_eq!(
            &now[..before.len()],
            &before[..],
            "round {round}: earlier entries unchanged"
        );
        for (i, (offset, _)) in now.iter().enumerate() {
            assert_eq!(
                *offset, i as i64,
                "round {round}: offsets run without a gap"
            );
        }
        let confirmed = Arc::new(Mutex::new(HashSet::new()));
        let publisher = tokio::spawn(crate::durability::publish_until_killed(
            b.uri(),
            "",
            "crash",
            confirmed.clone(),
        ));
        // Killed a moment after the first confirms (not after a fixed time: a loaded machine
        // may confirm nothing in the first few hundred milliseconds).
        within_long("the first confirms", async {
            while confirmed.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let delay = 100 + 300 * round as u64;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        b.kill9();
        let _ = tokio::time::timeout(Duration::from_secs(10), publisher).await;
        let confirmed = confirmed.lock().unwrap().clone();

        let b = ChildBroker::start(dir.path(), &[]);
        let after = read_all(&b, "crash").await;
        // Ids restart at 0 each round: look at this round's part only.
        let this_round: HashSet<u64> = after[now.len()..].iter().map(|e| e.1).collect();
        let lost: Vec<u64> = confirmed.difference(&this_round).copied().collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} confirmed entries lost (e.g. {:?}); {} confirmed, {} kept",
            lost.len(),
            &lost[..lost.len().min(5)],
            confirmed.len(),
            this_round.len()
        );
        assert!(
            !confirmed.is_empty(),
            "round {round}: something was confirmed before the kill"
        );
        before = after;
        b.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reading_from_the_start_of_a_large_stream_gets_everything_in_order_while_publishers_go_on(
) {
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = confirming_channel(&conn).await;
    declare_stream(
        &ch,
        "big",
        &[(
            "x-stream-max-segment-size-bytes",
            AMQPValue::LongInt(4 * 1024 * 1024),
        )],
    )
    .await;
    // 40 MiB in 10,000 messages of 4 KiB: many segments, far more than the broker keeps in memory.
    let body = vec![b'x'; 4096];
    let mut confirms = FuturesUnordered::new();
    for i in 0..10_000u32 {
        let mut data = i.to_be_bytes().to_vec();
        data.extend_from_slice(&body);
        let c = ch
            .basic_publish(
                "".into(),
                "big".into(),
                BasicPublishOptions::default(),
                &data,
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        confirms.push(c);
        while confirms.len() > 1000 {
            assert!(confirms.next().await.unwrap().unwrap().is_ack());
        }
    }
    while let Some(c) = confirms.next().await {
        assert!(c.unwrap().is_ack());
    }
    // A reader from the start, while a publisher keeps publishing.
    let publishing = {
        let ch = confirming_channel(&conn).await;
        tokio::spawn(async move {
            for i in 10_000..12_000u32 {
                let c = ch
                    .basic_publish(
                        "".into(),
                        "big".into(),
                        BasicPublishOptions::default(),
                        &i.to_be_bytes(),
                        BasicProperties::default(),
                    )
                    .await
                    .expect("publish");
                assert!(c.await.expect("confirm").is_ack());
            }
        })
    };
    let (_c, mut consumer) = consume_from(&conn, "big", 200, Some(text("first"))).await;
    for i in 0..12_000u32 {
        let d = lapin_next(&mut consumer).await;
        assert_eq!(offset_of(&d), i64::from(i));
        assert_eq!(&d.data[..4], &i.to_be_bytes());
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    within_long("the publisher", publishing)
        .await
        .expect("publisher");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_set_by_a_policy_applies_to_a_stream_already_holding_messages() {
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = confirming_channel(&conn).await;
    declare_stream(&ch, "ruled", &[]).await;
    let bodies: Vec<String> = (0..30).map(|i| format!("{i:0>100}")).collect();
    publish_each_confirmed(&ch, "ruled", &bodies[..10]).await;
    let info = |b: &TestBroker| {
        let (status, body) = http_json(
            b.http_addr,
            "GET",
            "/api/queues/%2F/ruled",
            None,
            ("guest", "guest"),
        );
        assert_eq!(status, 200, "{body}");
        body
    };
    let before = info(&b);
    assert_eq!(before["type"], "stream");
    assert_eq!(before["messages"], 10);
    assert_eq!(before["committed_offset"], 10);
    assert_eq!(before["segments"], 1);
    assert!(before["disk_bytes"].as_u64().unwrap() > 1000, "{before}");
    // Small segments and a size limit, from a policy: segments roll from now on, and the oldest
    // go once the stream holds more than the limit.
    let policy = serde_json::json!({
        "pattern": "^ruled$",
        "definition": {"stream-max-segment-size-bytes": 200, "max-length-bytes": 3000},
        "apply-to": "queues"
    });
    let (status, body) = http_json(
        b.http_addr,
        "PUT",
        "/api/policies/%2F/streams",
        Some(&policy.to_string()),
        ("guest", "guest"),
    );
    assert_eq!(status, 201, "{body}");
    publish_each_confirmed(&ch, "ruled", &bodies[10..]).await;
    let after = info(&b);
    let first = after["first_offset"].as_u64().unwrap();
    assert!(
        first > 0,
        "the first segment (the ten before the policy) was dropped: {after}"
    );
    assert_eq!(after["committed_offset"], 30);
    assert_eq!(after["messages"].as_u64().unwrap(), 30 - first);
    // Prometheus: the stream's segments and bytes.
    let (_, metrics) = http_get(b.http_addr, "/metrics/per-object", None);
    let series = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("queue=\"ruled\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(
        series("warren_stream_segments"),
        after["segments"].as_f64(),
        "{metrics}"
    );
    assert_eq!(
        series("warren_stream_disk_bytes"),
        after["disk_bytes"].as_f64(),
        "{metrics}"
    );
    let (_c, mut consumer) = consume_from(&conn, "ruled", 50, Some(text("first"))).await;
    let got = take_acked(&mut consumer, (30 - first) as usize).await;
    assert_eq!(got.first().map(|g| g.0 as u64), Some(first));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_stream_reader_holds_up_nobody_and_is_dropped_on_missed_heartbeats() {
    use warren_amqp::protocol::{basic, AMQPClass};
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = confirming_channel(&conn).await;
    declare_stream(&ch, "frozen", &[]).await;
    // 40 MB: more than a socket's buffers and the broker's output buffer for one connection.
    let body = vec![b'f'; 2048];
    publish_pipelined(&ch, "frozen", std::iter::repeat_n(&body, 20_000)).await;
    // Frozen (as with SIGSTOP): subscribes with the largest prefetch, then reads nothing and
    // sends nothing, heartbeats included.
    let mut frozen = Raw::open_with(
        b.addr,
        Handshake {
            heartbeat: 1,
            ..Handshake::default()
        },
    )
    .await;
    frozen.open_channel(1).await;
    frozen.qos(1, u16::MAX, false).await;
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), text("first"));
    frozen
        .send_method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "frozen".into(),
                consumer_tag: "frozen".into(),
                arguments: args,
                ..Default::default()
            })),
        )
        .await;
    // Meanwhile a reader gets everything, and a publisher its confirms.
    let more: Vec<String> = (0..200).map(|i| format!("later {i}")).collect();
    publish_each_confirmed(&ch, "frozen", &more).await;
    let (_c, mut reader) = consume_from(&conn, "frozen", 500, Some(text("first"))).await;
    for i in 0..20_200i64 {
        let d = lapin_next(&mut reader).await;
        assert_eq!(offset_of(&d), i);
        if i % 100 == 99 {
            d.ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
    }
    // The frozen one is dropped once its heartbeats stop: the stream has one consumer left.
    within_long("the frozen reader dropped", async {
        loop {
            let (_, body) = http_json(
                b.http_addr,
                "GET",
                "/api/queues/%2F/frozen",
                None,
                ("guest", "guest"),
            );
            if body["consumers"] == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    drop(frozen);
    b.stop().await;
}

#[tokio::test]
async fn a_deduplicating_stream_keeps_one_of_each_message_id() {
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = confirming_channel(&conn).await;
    declare_stream(
        &ch,
        "dedup",
        &[("x-message-deduplication", AMQPValue::Boolean(true))],
    )
    .await;
    // A duplicate is confirmed too (it is there already).
    publish_with_ids(
        &ch,
        "dedup",
        &[
            ("a", "first a"),
            ("b", "b"),
            ("a", "second a"),
            ("c", "c"),
            ("b", "again b"),
        ],
    )
    .await;
    let (_c, mut consumer) = consume_from(&conn, "dedup", 10, Some(text("first"))).await;
    let got = take_acked(&mut consumer, 3).await;
    assert_eq!(
        got,
        vec![
            (0, "first a".to_owned()),
            (1, "b".to_owned()),
            (2, "c".to_owned())
        ]
    );
    lapin_none(&mut consumer).await;
    b.stop().await;
}

/// Publishes each `(message-id, body)` confirmed (a duplicate is confirmed too).
pub(crate) async fn publish_with_ids(ch: &lapin::Channel, stream: &str, messages: &[(&str, &str)]) {
    for (id, body) in messages {
        let confirm = ch
            .basic_publish(
                "".into(),
                stream.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_message_id((*id).into()),
            )
            .await
            .expect("publish");
        assert!(confirm.await.expect("confirm").is_ack());
    }
}

/// Declares the deduplicating streams "remembers" (a cache of 3 ids) and "forgets" (ids kept
/// 300 ms) on `b` and publishes `each` to them; the connection stays open.
async fn publish_deduplicated(b: &ChildBroker, each: [&[(&str, &str)]; 2]) -> Connection {
    let conn = b.connect().await;
    let ch = confirming_channel(&conn).await;
    let dedup = ("x-message-deduplication", AMQPValue::Boolean(true));
    for ((stream, cache), messages) in [
        ("remembers", ("x-cache-size", AMQPValue::LongInt(3))),
        ("forgets", ("x-cache-ttl", AMQPValue::LongInt(300))),
    ]
    .into_iter()
    .zip(each)
    {
        declare_stream(&ch, stream, &[dedup.clone(), cache]).await;
        publish_with_ids(&ch, stream, messages).await;
    }
    conn
}

/// A deduplicating stream remembers, after `kill -9`, the ids of what it holds: a publisher that
/// sends again after the restart what it had published before it (its confirms lost with the
/// connection) adds nothing; ids past the cache's TTL, or pushed out of its size, are taken
/// again.
#[tokio::test]
async fn a_deduplicating_stream_remembers_its_ids_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(dir.path(), &[]);
    let before = [("a", "a"), ("b", "b"), ("c", "c"), ("d", "d")];
    let conn = publish_deduplicated(&b, [&before, &[("a", "a")]]).await;
    b.kill9();
    drop(conn);
    // Past the second stream's TTL.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = ChildBroker::start(dir.path(), &[]);
    // The first stream's cache holds three: b, c, d, not a.
    let after = [
        ("b", "b again"),
        ("d", "d again"),
        ("a", "a again"),
        ("e", "e"),
    ];
    let conn = publish_deduplicated(&b, [&after, &[("a", "a again")]]).await;
    let bodies = |got: Vec<(i64, String)>| got.into_iter().map(|(_, b)| b).collect::<Vec<_>>();
    let (_c, mut consumer) = consume_from(&conn, "remembers", 10, Some(text("first"))).await;
    assert_eq!(
        bodies(take_acked(&mut consumer, 6).await),
        ["a", "b", "c", "d", "a again", "e"]
    );
    lapin_none(&mut consumer).await;
    let (_f, mut consumer) = consume_from(&conn, "forgets", 10, Some(text("first"))).await;
    assert_eq!(bodies(take_acked(&mut consumer, 2).await), ["a", "a again"]);
    lapin_none(&mut consumer).await;
    b.stop();
}

/// The log of a stream whose queue the broker no longer knows (its delete cut short by a
/// crash after its record went) is removed at start-up; a live stream's log and anything not
/// named as a stream's are kept.
#[tokio::test]
async fn the_log_of_a_stream_deleted_before_a_crash_is_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let streams = dir.path().join("streams");
    let logs = || {
        let mut names: Vec<String> = std::fs::read_dir(&streams)
            .expect("streams")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let b = ChildBroker::start(dir.path(), &[]);
    {
        let conn = b.connect().await;
        let ch = confirming_channel(&conn).await;
        declare_stream(&ch, "kept", &[]).await;
        publish_each_confirmed(&ch, "kept", &["one".to_owned()]).await;
    }
    b.kill9();
    let live = logs();
    assert_eq!(live.len(), 1, "{live:?}");
    let orphan = streams.join("987654");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("00000000000000000000.segment"), vec![7u8; 4096]).unwrap();
    std::fs::create_dir_all(streams.join("notes")).unwrap();
    let b = ChildBroker::start(dir.path(), &[]);
    let conn = b.connect().await;
    let ch = lapin_channel(&conn).await;
    assert_eq!(declare_stream(&ch, "kept", &[]).await, 1);
    let mut expected = [live, vec!["notes".to_owned()]].concat();
    expected.sort();
    assert_eq!(logs(), expected);
    b.stop();
}

/// With an encryption key, a stream's segment files hold none of its messages in the clear;
/// its consumers read them, also after `kill -9` and a restart with the key.
#[tokio::test]
async fn a_stream_is_encrypted_at_rest_with_the_brokers_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "5a".repeat(32)).unwrap();
    let data = dir.path().join("data");
    let args = ["--encryption-key-file", key_file.to_str().unwrap()];
    let secret = "SECRET-STREAM-BODY-".repeat(8);
    let bodies: Vec<String> = (0..20).map(|i| format!("{secret}{i}")).collect();
    let b = ChildBroker::start(&data, &args);
    {
        let conn = b.connect().await;
        let ch = confirming_channel(&conn).await;
        declare_stream(&ch, "sealed", &[]).await;
        publish_each_confirmed(&ch, "sealed", &bodies).await;
    }
    b.kill9();
    let mut files = 0;
    for stream in std::fs::read_dir(data.join("streams")).unwrap() {
        for file in std::fs::read_dir(stream.unwrap().path()).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            assert!(!bytes.windows(13).any(|w| w == b"SECRET-STREAM"));
            files += 1;
        }
    }
    assert!(files > 0);
    let b = ChildBroker::start(&data, &args);
    let conn = b.connect().await;
    let (_c, mut consumer) = consume_from(&conn, "sealed", 50, Some(text("first"))).await;
    let got: Vec<String> = take_acked(&mut consumer, 20)
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert_eq!(got, bodies);
    b.stop();
}

#[tokio::test]
async fn a_transaction_commit_waits_until_its_messages_are_in_the_stream() {
    let b = start().await;
    let conn = lapin_connect(&b).await;
    let ch = lapin_channel(&conn).await;
    declare_stream(&ch, "tx", &[]).await;
    ch.tx_select().await.expect("tx.select");
    for round in 1..=3u32 {
        for i in 0..100 {
            ch.basic_publish(
                "".into(),
                "tx".into(),
                BasicPublishOptions::default(),
                format!("{round}.{i}").as_bytes(),
                // Transient: a stream keeps it all the same.
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        }
        ch.tx_commit().await.expect("tx.commit");
        // Committed means written: counted at once.
        assert_eq!(lapin_count(&ch, "tx").await, round * 100);
    }
    b.stop().await;
}

/// A thousand readers that start at the beginning of a stream (behind the tail kept in memory)
/// with prefetch 1, take one delivery and never read or ack again: what they read ahead from
/// disk stays within the broker's read-ahead budget (64 MiB, `warren_stream_read_ahead_bytes`),
/// where each held a batch of its own before (256 KiB each, 250 MiB in all), and the messages
/// the broker holds stay bounded. A reader that comes after them still reads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_readers_hold_no_more_than_the_read_ahead_budget() {
    use warren_amqp::protocol::{basic, AMQPClass};
    const ENTRIES: usize = 12_000; // 12 MiB: the first 4 MiB are read from disk
    const CONNECTIONS: u16 = 10;
    const CHANNELS: u16 = 100;
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(dir.path(), &[]);
    let conn = b.connect().await;
    let ch = confirming_channel(&conn).await;
    declare_stream(&ch, "idle", &[]).await;
    let body = vec![b'i'; 1024];
    publish_pipelined(&ch, "idle", std::iter::repeat_n(&body, ENTRIES)).await;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], b.port).into();
    let http: std::net::SocketAddr = ([127, 0, 0, 1], b.http_port).into();
    let mut readers = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut raw = Raw::open_with(addr, Handshake::default()).await;
        // Channels first: consume-ok and deliveries then come unread.
        for channel in 1..=CHANNELS {
            raw.open_channel(channel).await;
            raw.qos(channel, 1, false).await;
        }
        for channel in 1..=CHANNELS {
            let mut args = FieldTable::default();
            args.insert("x-stream-offset".into(), text("first"));
            raw.send_method(
                channel,
                AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                    queue: "idle".into(),
                    consumer_tag: format!("idle-{channel}").into(),
                    arguments: args,
                    ..Default::default()
                })),
            )
            .await;
        }
        readers.push(raw);
    }
    let expected = u64::from(CONNECTIONS * CHANNELS);
    let metric = |name: &str| {
        let (_, metrics) = http_get(http, "/metrics", None);
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    // Every reader subscribed and served its first delivery (its read landed).
    within_long("the readers subscribed and served", async {
        loop {
            let (_, q) = http_json(
                http,
                "GET",
                "/api/queues/%2F/idle",
                None,
                ("guest", "guest"),
            );
            let (_, ch) = http_json(http, "GET", "/api/channels", None, ("guest", "guest"));
            let unacked: u64 = ch
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["messages_unacknowledged"].as_u64())
                .sum();
            if q["consumers"] == expected && unacked >= expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let read_ahead = metric("warren_stream_read_ahead_bytes");
    assert!(
        read_ahead <= (64 << 20) as f64,
        "read ahead {read_ahead} bytes, over the 64 MiB budget"
    );
    let (_, nodes) = http_json(http, "GET", "/api/nodes", None, ("guest", "guest"));
    let held = nodes[0]["mem_used"].as_u64().expect("mem_used");
    // The budget, the 8 MiB tail, and a delivery of ~1 KiB (plus its frames) per reader.
    assert!(held < 96 << 20, "the broker holds {held} bytes of messages");
    // A reader after them reads the whole stream.
    let (_c, mut reader) = consume_from(&conn, "idle", 1000, Some(text("first"))).await;
    for i in 0..ENTRIES as i64 {
        let d = lapin_next(&mut reader).await;
        assert_eq!(offset_of(&d), i);
        if i % 500 == 499 {
            d.ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
    }
    drop(readers);
    // Gone, they hold nothing.
    within_long("the readers' read-ahead released", async {
        while metric("warren_stream_read_ahead_bytes") > 0.0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// Readers that vanish in the middle of reading a stream from disk: a client process killed
/// with SIGKILL (`warren perf`, four consumers) and a raw client whose socket is reset
/// (SO_LINGER 0) after a few deliveries. Their consumers go, what they had read ahead is given
/// back, and the stream is as it was: every entry still there at its offset for the next
/// reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_killed_or_reset_mid_read_leave_the_stream_whole() {
    use warren_amqp::protocol::{basic, AMQPClass};
    const ENTRIES: usize = 20_000; // 20 MiB: most of it read from disk
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(dir.path(), &[]);
    let conn = b.connect().await;
    let ch = confirming_channel(&conn).await;
    declare_stream(&ch, "vanishing", &[]).await;
    let bodies: Vec<String> = (0..ENTRIES).map(|i| format!("{i:01024}")).collect();
    publish_pipelined(&ch, "vanishing", &bodies).await;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], b.port).into();
    let http: std::net::SocketAddr = ([127, 0, 0, 1], b.http_port).into();
    let consumers = || {
        let (_, q) = http_json(
            http,
            "GET",
            "/api/queues/%2F/vanishing",
            None,
            ("guest", "guest"),
        );
        q["consumers"].as_u64().unwrap_or(0)
    };
    // A client process reading with four consumers, killed while they read.
    let uri = format!("amqp://guest:guest@127.0.0.1:{}/%2f", b.port);
    let mut perf = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "perf",
            "--uri",
            &uri,
            "-x",
            "0",
            "-y",
            "4",
            "-q",
            "1",
            "-u",
            "vanishing",
        ])
        .args(["-f", "persistent", "--queue-args", "x-queue-type=stream"])
        .args(["--consumer-args", "x-stream-offset=first", "-z", "60"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("warren perf");
    within_long("perf's consumers reading", async {
        while consumers() < 4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Mid-read: with prefetch 1, a consumer reads a few thousand entries a second.
    tokio::time::sleep(Duration::from_millis(200)).await;
    perf.start_kill().expect("SIGKILL perf");
    let _ = perf.wait().await;
    // A raw reader reset after a few deliveries.
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    #[allow(deprecated)] // a blocking close is what we want here: RST at once
    stream.set_linger(Some(Duration::ZERO)).expect("linger");
    let mut raw = Raw::over(stream).open_as(Handshake::default()).await;
    raw.open_channel(1).await;
    raw.qos(1, 50, false).await;
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), text("first"));
    raw.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "vanishing".into(),
            consumer_tag: "reset".into(),
            arguments: args,
            ..Default::default()
        })),
    )
    .await;
    let mut bodies_seen = 0;
    while bodies_seen < 10 {
        if let In::Body(..) = raw.recv().await {
            bodies_seen += 1;
        }
    }
    drop(raw);
    within_long("the vanished readers gone", async {
        while consumers() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    within_long("what they read ahead given back", async {
        loop {
            let (_, metrics) = http_get(http, "/metrics", None);
            let ahead = metrics
                .lines()
                .find(|l| l.starts_with("warren_stream_read_ahead_bytes"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok());
            if ahead == Some(0.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // The stream as it was: the next reader gets every entry at its offset.
    eventually_count(&ch, "vanishing", ENTRIES as u32).await;
    let (_c, mut reader) = consume_from(&conn, "vanishing", 1000, Some(text("first"))).await;
    for (i, body) in bodies.iter().enumerate() {
        let d = lapin_next(&mut reader).await;
        assert_eq!(offset_of(&d), i as i64);
        assert_eq!(d.data, body.as_bytes());
        if i % 500 == 499 {
            d.ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
    }
}
