//! Durable queues over their memory limit (`--queue-memory-limit`): persistent messages beyond it
//! are paged out to the store and read back when consumers reach them. What a client sees must
//! not change — order, bodies, priorities, TTL, dead-lettering — and the broker's memory must not
//! grow with the backlog.

use std::time::Duration;

use crate::common::*;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// A body that names its message and is `size` bytes long.
fn body(i: usize, size: usize) -> Vec<u8> {
    let mut b = format!("m{i:08}-").into_bytes();
    while b.len() < size {
        b.push(b'a' + (b.len() % 26) as u8);
    }
    b.truncate(size);
    b
}

async fn publish_confirmed(
    ch: &lapin::Channel,
    queue: &str,
    items: impl IntoIterator<Item = (Vec<u8>, BasicProperties)>,
) {
    let mut pending = Vec::new();
    for (body, props) in items {
        let confirm = within_long(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                props,
            ),
        )
        .await
        .expect("publish");
        pending.push(confirm);
        if pending.len() == 500 {
            for c in pending.drain(..) {
                assert!(within_long("confirm", c).await.expect("confirm").is_ack());
            }
        }
    }
    for c in pending {
        assert!(within_long("confirm", c).await.expect("confirm").is_ack());
    }
}

/// Consumes `n` messages with manual acks, returning their bodies in delivery order.
async fn consume(ch: &lapin::Channel, queue: &str, n: usize) -> Vec<Vec<u8>> {
    within("basic.qos", ch.basic_qos(100, BasicQosOptions::default()))
        .await
        .expect("qos");
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("consume");
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = lapin_next(&mut consumer).await;
        out.push(d.data.clone());
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    lapin_none(&mut consumer).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_out_messages_come_back_in_order_with_their_bodies() {
    let b = start_with(|c| c.queue_memory_limit = 8 * 1024).await;
    let conn = lapin_connect(&b).await;
    let ch = lapin_channel(&conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    within(
        "declare",
        ch.queue_declare("paged".into(), durable(), FieldTable::default()),
    )
    .await
    .unwrap();
    // 3,000 messages of 1 KiB (about 3 MB) against an 8 KiB limit; every tenth is transient,
    // which stays in memory, between persistent ones that are paged out.
    let n = 3000;
    publish_confirmed(
        &ch,
        "paged",
        (0..n).map(|i| {
            let props = if i % 10 == 9 {
                BasicProperties::default()
            } else {
                persistent()
            };
            (body(i, 1024), props)
        }),
    )
    .await;
    assert_eq!(lapin_count(&ch, "paged").await, n as u32);
    // A few by basic.get, the rest by a consumer.
    let mut got: Vec<Vec<u8>> = Vec::new();
    for _ in 0..5 {
        got.push(
            lapin_get(&ch, "paged")
                .await
                .expect("a message")
                .delivery
                .data,
        );
    }
    got.extend(consume(&ch, "paged", n - 5).await);
    let expected: Vec<Vec<u8>> = (0..n).map(|i| body(i, 1024)).collect();
    assert!(got == expected, "bodies or order differ");
    assert_eq!(lapin_count(&ch, "paged").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_ttl_and_dead_lettering_see_paged_messages() {
    let b = start_with(|c| c.queue_memory_limit = 2 * 1024).await;
    let conn = lapin_connect(&b).await;
    let ch = lapin_channel(&conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();

    // Priorities: paged messages keep their level; higher first, FIFO within a level.
    let mut args = FieldTable::default();
    args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(3));
    within("declare", ch.queue_declare("prio".into(), durable(), args))
        .await
        .unwrap();
    let n = 400;
    publish_confirmed(
        &ch,
        "prio",
        (0..n).map(|i| (body(i, 512), persistent().with_priority((i % 4) as u8))),
    )
    .await;
    let got = consume(&ch, "prio", n).await;
    let mut expected: Vec<(u8, usize)> = (0..n).map(|i| ((i % 4) as u8, i)).collect();
    expected.sort_by_key(|(p, i)| (std::cmp::Reverse(*p), *i));
    let expected: Vec<Vec<u8>> = expected.into_iter().map(|(_, i)| body(i, 512)).collect();
    assert!(got == expected, "priority order differs");

    // TTL and dead-lettering: expired paged messages reach the dead-letter queue whole.
    within(
        "declare dlq",
        ch.queue_declare("dlq".into(), durable(), FieldTable::default()),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString("dlq".into()),
    );
    within(
        "declare ttl",
        ch.queue_declare("ttl".into(), durable(), args),
    )
    .await
    .unwrap();
    let n = 200;
    // Even ones expire after 300 ms, odd ones never.
    publish_confirmed(
        &ch,
        "ttl",
        (0..n).map(|i| {
            let props = if i % 2 == 0 {
                persistent().with_expiration(ShortString::from("300"))
            } else {
                persistent()
            };
            (body(i, 512), props)
        }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Expired messages behind live ones leave as consumers reach them (as in RabbitMQ), and are
    // never delivered.
    let live = consume(&ch, "ttl", n / 2).await;
    let expected: Vec<Vec<u8>> = (0..n)
        .filter(|i| i % 2 == 1)
        .map(|i| body(i, 512))
        .collect();
    assert!(live == expected, "live messages differ");
    let mut dead = Vec::new();
    for _ in 0..100 {
        while let Some(m) = lapin_get(&ch, "dlq").await {
            dead.push(m.delivery.data);
        }
        if dead.len() >= n / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expected: Vec<Vec<u8>> = (0..n)
        .filter(|i| i % 2 == 0)
        .map(|i| body(i, 512))
        .collect();
    assert!(
        dead == expected,
        "dead-lettered messages differ ({} of them)",
        dead.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_beyond_the_memory_limit_stays_on_disk_across_a_restart() {
    backlog_beyond_the_memory_limit(true).await;
}

/// Transient messages in a durable queue are paged out too (to copies that are not recovered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_backlog_is_paged_out_and_gone_after_a_restart() {
    backlog_beyond_the_memory_limit(false).await;
}

async fn backlog_beyond_the_memory_limit(persistent_messages: bool) {
    // Hundreds of megabytes through a broker process: on a 2-core machine such tests take turns
    // rather than starve each other (and their brokers' handshakes and memory figures).
    let _turn = HEAVY
        .acquire_many(HEAVY_ALONE)
        .await
        .expect("the heavy tests' turns are never closed");
    // 320 MiB of bodies. Transient messages are confirmed before they reach the queue, so up to
    // a full queue inbox of them (8,192) is in memory too: smaller ones keep that part small.
    let (size, count) = if persistent_messages {
        (16 * 1024, 20_480)
    } else {
        (4 * 1024, 81_920)
    };
    const LIMIT: u64 = 4 << 20;
    // What the broker may hold whatever the backlog: its queue's 4 MiB, redb's 16 MiB page cache,
    // read-back windows, the inbox, buffers and the allocator's slack, and openraft's histogram
    // scale tables (base2histogram: 26 MiB, once per process, since the metadata group). Without
    // paging it would hold the whole backlog (over 400 MiB measured); with it, 40-125 MiB were
    // measured before the metadata group, 130-157 MiB after.
    const BUDGET: u64 = 176 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = ChildBroker::start(dir.path(), &["--queue-memory-limit", &LIMIT.to_string()]);
    let before = broker.rss();
    {
        let conn = broker.connect().await;
        let ch = lapin_channel(&conn).await;
        within(
            "confirm.select",
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .unwrap();
        within(
            "declare",
            ch.queue_declare("backlog".into(), durable(), FieldTable::default()),
        )
        .await
        .unwrap();
        publish_confirmed(
            &ch,
            "backlog",
            (0..count).map(|i| {
                let props = if persistent_messages {
                    persistent()
                } else {
                    BasicProperties::default()
                };
                (body(i, size), props)
            }),
        )
        .await;
        // The queue may still be writing copies of the last transient messages.
        let declared = within_long(
            "passive queue.declare",
            ch.queue_declare(
                "backlog".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .expect("passive declare");
        assert_eq!(declared.message_count(), count as u32);
        let _ = conn.close(200, "bye".into()).await;
    }
    // Give paging a moment to catch up with the last commits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backlog = (size * count) as u64;
    let grown = broker.rss().saturating_sub(before);
    assert!(
        grown < BUDGET,
        "broker memory grew by {grown} bytes for a backlog of {backlog} bytes"
    );
    if !persistent_messages {
        // Read back from disk, in order, then nothing is left after a restart.
        let got = broker.drain("backlog").await;
        assert_eq!(got.len(), count);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, (b, _))| *b == body(i, size)),
            "bodies or order differ"
        );
        let peak = broker.rss();
        assert!(peak < BUDGET, "broker holds {peak} bytes after draining");
        broker.stop();
        let broker = ChildBroker::start(dir.path(), &["--queue-memory-limit", &LIMIT.to_string()]);
        assert!(broker.drain("backlog").await.is_empty());
        broker.stop();
        return;
    }
    broker.stop();

    // After a restart the backlog is indexed, not loaded.
    let broker = ChildBroker::start(dir.path(), &["--queue-memory-limit", &LIMIT.to_string()]);
    let after_recovery = broker.rss();
    assert!(
        after_recovery < BUDGET,
        "broker holds {after_recovery} bytes after recovering a backlog of {backlog} bytes"
    );
    let conn = broker.connect().await;
    let ch = lapin_channel(&conn).await;
    within("basic.qos", ch.basic_qos(200, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            "backlog".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    for i in 0..count {
        let d = within_long("delivery", consumer.next())
            .await
            .expect("stream")
            .expect("delivery");
        assert!(d.data == body(i, size), "message {i} differs");
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let peak = broker.rss();
    assert!(
        peak < BUDGET,
        "broker holds {peak} bytes after draining a backlog of {backlog} bytes"
    );
    drop(conn);
    broker.stop();
}
