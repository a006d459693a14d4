//! Default exchange, amq.direct, and queues (issue "Core broker", points 5, 6 and 9): declare
//! (server-named, passive, durable, exclusive, auto-delete, inequivalent), bind/unbind, purge,
//! delete with if-unused/if-empty, counts in declare-ok.

use std::time::Duration;

use crate::common::*;
use lapin::options::{
    BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use warren_amqp::protocol::{basic, queue, AMQPClass};
use warren_amqp::types::{AMQPValue, FieldTable};

fn q_ok(m: &AMQPClass) -> bool {
    matches!(m, AMQPClass::Queue(_))
}

// ------------------------------------------------------------------------------------------
// Point 5: default exchange and amq.direct

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_routes_by_queue_name() {
    let b = start().await;
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    lapin_declare(&ch, "dx.a").await;
    lapin_declare(&ch, "dx.b").await;
    lapin_publish(&ch, "", "dx.a", b"to a").await;
    lapin_publish(&ch, "", "dx.b", b"to b").await;
    lapin_publish(&ch, "", "dx.nobody", b"dropped").await; // unroutable, not mandatory: dropped
    assert_eq!(
        lapin_get(&ch, "dx.a").await.expect("a").delivery.data,
        b"to a"
    );
    assert_eq!(
        lapin_get(&ch, "dx.b").await.expect("b").delivery.data,
        b"to b"
    );
    assert!(lapin_get(&ch, "dx.a").await.is_none());
    let m = lapin_get(&ch, "dx.b").await;
    assert!(m.is_none());

    // The delivery carries exchange "" and the queue name as routing key.
    let c = amqprs_connect(&b).await;
    let (ach, _ev) = amqprs_channel(&c).await;
    amqprs_publish(&ach, "", "dx.a", b"via amqprs").await;
    let (get_ok, _props, body) = within(
        "amqprs get",
        ach.basic_get(amqprs::channel::BasicGetArguments::new("dx.a")),
    )
    .await
    .unwrap()
    .expect("message");
    assert_eq!(body, b"via amqprs");
    assert_eq!(get_ok.exchange(), "");
    assert_eq!(get_ok.routing_key(), "dx.a");
    amqprs_close(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amq_direct_exists_and_routes_by_binding_key() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let m = r
        .call(1, exchange_declare("amq.direct", "direct", true, false))
        .await;
    assert!(
        matches!(m, AMQPClass::Exchange(_)),
        "passive declare of amq.direct: {m:?}"
    );
    let m = r
        .call(1, exchange_declare("amq.direct", "direct", false, true))
        .await;
    assert!(
        matches!(m, AMQPClass::Exchange(_)),
        "equivalent declare of amq.direct: {m:?}"
    );
    r.declare(1, "direct.a", QOpts::default()).await;
    r.declare(1, "direct.b", QOpts::default()).await;
    assert!(q_ok(&r.call(1, bind("direct.a", "amq.direct", "k1")).await));
    assert!(q_ok(&r.call(1, bind("direct.b", "amq.direct", "k2")).await));
    assert!(q_ok(&r.call(1, bind("direct.b", "amq.direct", "k1")).await));
    r.publish(1, "amq.direct", "k1", b"one").await;
    r.publish(1, "amq.direct", "k2", b"two").await;
    r.publish(1, "amq.direct", "direct.a", b"queue name is no key here")
        .await;
    let a = r.get(1, "direct.a", true).await.expect("a gets k1");
    assert_eq!(a.body, b"one");
    match &a.method {
        basic::AMQPMethod::GetOk(g) => {
            assert_eq!(g.exchange.as_str(), "amq.direct");
            assert_eq!(g.routing_key.as_str(), "k1");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.get(1, "direct.a", true).await.is_none());
    assert_eq!(
        r.get(1, "direct.b", true).await.expect("b gets k1").body,
        b"one"
    );
    assert_eq!(
        r.get(1, "direct.b", true).await.expect("b gets k2").body,
        b"two"
    );
    assert!(r.get(1, "direct.b", true).await.is_none());
}

// ------------------------------------------------------------------------------------------
// Point 6: declare

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queues_are_amq_gen_and_unique() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let a = r
        .declare(
            1,
            "",
            QOpts {
                exclusive: true,
                ..QOpts::default()
            },
        )
        .await;
    let c = r.declare(1, "", QOpts::default()).await;
    for q in [a.queue.as_str(), c.queue.as_str()] {
        assert!(q.starts_with("amq.gen-"), "{q}");
        assert_eq!(
            q.len(),
            "amq.gen-".len() + 22,
            "RabbitMQ names are amq.gen- + 22 characters: {q}"
        );
    }
    assert_ne!(a.queue, c.queue);
    // The empty name means the channel's last declared queue.
    r.publish(1, "", c.queue.as_str(), b"x").await;
    let m = r
        .get(1, "", true)
        .await
        .expect("get from last declared queue");
    assert_eq!(m.body, b"x");

    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    let q = lapin_declare(&ch, "").await;
    assert!(q.name().as_str().starts_with("amq.gen-"));
    let c = amqprs_connect(&b).await;
    let (ach, _ev) = amqprs_channel(&c).await;
    let (n, _, _) = within(
        "amqprs server-named",
        ach.queue_declare(amqprs::channel::QueueDeclareArguments::exclusive_server_named()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(n.starts_with("amq.gen-"), "{n}");
    amqprs_close(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_queue_is_404() {
    let b = start().await;
    // Raw: exact close.
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    r.send_method(1, passive("pq.missing")).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(404, 50, 10);
    c.assert_text("NOT_FOUND - no queue 'pq.missing' in vhost '/'");
    r.ping(2).await;

    // amqprs: the channel callback sees the same close; another channel still works.
    let ac = amqprs_connect(&b).await;
    let (ach, mut ev) = amqprs_channel(&ac).await;
    let res = within(
        "amqprs passive declare",
        ach.queue_declare(
            amqprs::channel::QueueDeclareArguments::new("pq.missing")
                .passive(true)
                .finish(),
        ),
    )
    .await;
    assert!(
        res.is_err(),
        "passive declare of a missing queue should fail: {res:?}"
    );
    amqprs_channel_close(&mut ev).await.assert(404, 50, 10);
    let (ach2, _ev2) = amqprs_channel(&ac).await;
    amqprs_declare(&ach2, "pq.other").await;
    amqprs_close(ac).await;

    // lapin: the reply code; the connection and its other channels still work.
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    let ch2 = lapin_channel(&l).await;
    let res = within(
        "lapin passive",
        ch.queue_declare(
            "pq.missing".into(),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_lapin_code(res, 404);
    lapin_declare(&ch2, "pq.ok").await;
    let ch3 = lapin_channel(&l).await;
    lapin_declare(&ch3, "pq.ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_flag_is_accepted_and_checked_on_redeclare() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let ok = r
        .declare(
            1,
            "dur.q",
            QOpts {
                durable: true,
                ..QOpts::default()
            },
        )
        .await;
    assert_eq!(ok.queue.as_str(), "dur.q");
    // Equivalent redeclare and passive declare are fine.
    r.declare(
        1,
        "dur.q",
        QOpts {
            durable: true,
            ..QOpts::default()
        },
    )
    .await;
    r.declare(
        1,
        "dur.q",
        QOpts {
            passive: true,
            ..QOpts::default()
        },
    )
    .await;
    // Passive ignores the other flags (RabbitMQ case 16.5).
    r.declare(
        1,
        "dur.q",
        QOpts {
            passive: true,
            durable: false,
            auto_delete: true,
            ..QOpts::default()
        },
    )
    .await;
    // Inequivalent durable: 406.
    r.send_method(1, declare("dur.q", QOpts::default())).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(406, 50, 10);
    c.assert_text("PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'dur.q' in vhost '/': received 'false' but current is 'true'");

    r.open_channel(1).await;
    r.declare(1, "nondur.q", QOpts::default()).await;
    r.send_method(
        1,
        declare(
            "nondur.q",
            QOpts {
                durable: true,
                ..QOpts::default()
            },
        ),
    )
    .await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(406, 50, 10);
    c.assert_text("PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'nondur.q' in vhost '/': received 'true' but current is 'false'");

    r.open_channel(1).await;
    r.send_method(
        1,
        declare(
            "nondur.q",
            QOpts {
                auto_delete: true,
                ..QOpts::default()
            },
        ),
    )
    .await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(406, 50, 10);
    c.assert_text("PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue 'nondur.q' in vhost '/': received 'true' but current is 'false'");

    // Exclusive mismatch is RESOURCE_LOCKED (RabbitMQ case 16.4).
    r.open_channel(1).await;
    r.send_method(
        1,
        declare(
            "nondur.q",
            QOpts {
                exclusive: true,
                ..QOpts::default()
            },
        ),
    )
    .await;
    r.expect_channel_close_ok(1).await.assert(405, 50, 10);

    // lapin: durable declare works, inequivalent redeclare 406 closes only that channel.
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    within(
        "durable declare",
        ch.queue_declare(
            "dur.l".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let res = within(
        "inequivalent",
        ch.queue_declare(
            "dur.l".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_lapin_code(res, 406);
    let ch2 = lapin_channel(&l).await;
    within(
        "durable redeclare",
        ch2.queue_declare(
            "dur.l".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_amq_prefix_is_403() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.send_method(1, declare("amq.foo", QOpts::default())).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(403, 50, 10);
    c.assert_text("ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'");
    r.open_channel(1).await;
    r.declare(1, "AMQ.foo", QOpts::default()).await; // case-sensitive, as in RabbitMQ
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_locked_for_other_connections_and_dies_with_its_owner() {
    let b = start().await;
    let mut owner = Raw::open(b.addr).await;
    owner.open_channel(1).await;
    owner.open_channel(2).await;
    owner
        .declare(
            1,
            "excl.q",
            QOpts {
                exclusive: true,
                ..QOpts::default()
            },
        )
        .await;
    // The owner may use it from any of its channels.
    owner
        .declare(
            2,
            "excl.q",
            QOpts {
                exclusive: true,
                ..QOpts::default()
            },
        )
        .await;
    owner.publish(2, "", "excl.q", b"mine").await;

    let mut other = Raw::open(b.addr).await;
    let locked = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'excl.q' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.";
    let cases: Vec<(AMQPClass, u16, u16)> = vec![
        (
            declare(
                "excl.q",
                QOpts {
                    exclusive: true,
                    ..QOpts::default()
                },
            ),
            50,
            10,
        ),
        (declare("excl.q", QOpts::default()), 50, 10),
        (passive("excl.q"), 50, 10),
        (consume("excl.q", "", false, false), 60, 20),
        (bind("excl.q", "amq.direct", "k"), 50, 20),
        (delete("excl.q", false, false), 50, 40),
        (purge("excl.q"), 50, 30),
        (get("excl.q", false), 60, 70),
    ];
    for (i, (method, class_id, method_id)) in cases.into_iter().enumerate() {
        let ch = i as u16 + 1;
        other.open_channel(ch).await;
        other.send_method(ch, method).await;
        let c = other.expect_channel_close_ok(ch).await;
        c.assert(405, class_id, method_id);
        c.assert_text(locked);
    }
    // Publishing to it from elsewhere is allowed (RabbitMQ case 16.24).
    other.open_channel(20).await;
    other.publish(20, "", "excl.q", b"theirs").await;
    other.ping(20).await;
    let ok = owner
        .declare(
            1,
            "excl.q",
            QOpts {
                passive: true,
                ..QOpts::default()
            },
        )
        .await;
    assert_eq!(ok.message_count, 2);

    // lapin sees 405 too.
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    let res = within(
        "lapin exclusive",
        ch.queue_declare(
            "excl.q".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_lapin_code(res, 405);

    // The owner closes: the queue goes with it.
    owner.close().await;
    let deadline = std::time::Instant::now() + T;
    loop {
        other.send_method(20, passive("excl.q")).await;
        match other.recv().await {
            In::Method(20, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "exclusive queue survived its connection"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            In::Method(
                20,
                AMQPClass::Channel(warren_amqp::protocol::channel::AMQPMethod::Close(c)),
            ) => {
                assert_eq!(c.reply_code, 404, "{c:?}");
                other
                    .send_method(
                        20,
                        AMQPClass::Channel(warren_amqp::protocol::channel::AMQPMethod::CloseOk(
                            Default::default(),
                        )),
                    )
                    .await;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Now anyone may declare it.
    other.open_channel(20).await;
    other
        .declare(
            20,
            "excl.q",
            QOpts {
                exclusive: true,
                ..QOpts::default()
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_deleted_when_its_lapin_connection_drops() {
    let b = start().await;
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    let q = within(
        "exclusive",
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let qname = q.name().as_str().to_owned();
    l.close(200, "bye".into()).await.unwrap();
    let mut r = Raw::open(b.addr).await;
    let deadline = std::time::Instant::now() + T;
    let mut ch = 1;
    loop {
        r.open_channel(ch).await;
        r.send_method(ch, passive(&qname)).await;
        match r.recv().await {
            In::Method(_, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "exclusive queue survived its connection"
                );
                r.close_channel(ch).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            In::Method(
                _,
                AMQPClass::Channel(warren_amqp::protocol::channel::AMQPMethod::Close(c)),
            ) => {
                assert_eq!(c.reply_code, 404);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
        ch += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_after_its_last_consumer() {
    let b = start().await;
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    let opts = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    within(
        "declare ad",
        ch.queue_declare("ad.q".into(), opts, FieldTable::default()),
    )
    .await
    .unwrap();
    // Without consumers ever, it stays.
    tokio::time::sleep(Duration::from_millis(100)).await;
    lapin_count(&ch, "ad.q").await;
    let c1 = within(
        "consume 1",
        ch.basic_consume(
            "ad.q".into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let c2 = within(
        "consume 2",
        ch.basic_consume(
            "ad.q".into(),
            "c2".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    within("cancel 1", ch.basic_cancel("c1".into(), Default::default()))
        .await
        .unwrap();
    // One consumer left: still there.
    let q = within(
        "passive",
        ch.queue_declare(
            "ad.q".into(),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(q.consumer_count(), 1);
    within("cancel 2", ch.basic_cancel("c2".into(), Default::default()))
        .await
        .unwrap();
    drop((c1, c2));
    // Gone.
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let deadline = std::time::Instant::now() + T;
    loop {
        r.send_method(1, passive("ad.q")).await;
        match r.recv().await {
            In::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "auto-delete queue survived its last consumer"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            In::Method(
                1,
                AMQPClass::Channel(warren_amqp::protocol::channel::AMQPMethod::Close(c)),
            ) => {
                assert_eq!(c.reply_code, 404);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_when_consumer_channel_closes() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    r.declare(
        1,
        "ad2.q",
        QOpts {
            auto_delete: true,
            ..QOpts::default()
        },
    )
    .await;
    r.consume(2, "ad2.q", "c", false, false).await;
    r.close_channel(2).await;
    let deadline = std::time::Instant::now() + T;
    loop {
        r.send_method(1, passive("ad2.q")).await;
        match r.recv().await {
            In::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "auto-delete queue survived"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            In::Method(
                1,
                AMQPClass::Channel(warren_amqp::protocol::channel::AMQPMethod::Close(c)),
            ) => {
                assert_eq!(c.reply_code, 404);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_reports_message_and_consumer_counts() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    let ok = r.declare(1, "cnt.q", QOpts::default()).await;
    assert_eq!((ok.message_count, ok.consumer_count), (0, 0));
    for i in 0..3 {
        r.publish(1, "", "cnt.q", format!("m{i}").as_bytes()).await;
    }
    let ok = r
        .declare(
            1,
            "cnt.q",
            QOpts {
                passive: true,
                ..QOpts::default()
            },
        )
        .await;
    assert_eq!((ok.message_count, ok.consumer_count), (3, 0));
    let ok = r.declare(1, "cnt.q", QOpts::default()).await;
    assert_eq!((ok.message_count, ok.consumer_count), (3, 0));
    // One unacked get: ready count excludes it (RabbitMQ case 23.5).
    let m = r.get(1, "cnt.q", false).await.unwrap();
    match &m.method {
        basic::AMQPMethod::GetOk(g) => assert_eq!(g.message_count, 2),
        other => panic!("{other:?}"),
    }
    let ok = r
        .declare(
            1,
            "cnt.q",
            QOpts {
                passive: true,
                ..QOpts::default()
            },
        )
        .await;
    assert_eq!((ok.message_count, ok.consumer_count), (2, 0));
    // A consumer with prefetch 1 takes one more.
    r.qos(2, 1, false).await;
    r.consume(2, "cnt.q", "c", false, false).await;
    r.expect_deliver().await;
    let ok = r
        .declare(
            1,
            "cnt.q",
            QOpts {
                passive: true,
                ..QOpts::default()
            },
        )
        .await;
    assert_eq!((ok.message_count, ok.consumer_count), (1, 1));

    // lapin and amqprs read the same counts.
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    let q = within(
        "passive",
        ch.queue_declare(
            "cnt.q".into(),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!((q.message_count(), q.consumer_count()), (1, 1));
    let c = amqprs_connect(&b).await;
    let (ach, _ev) = amqprs_channel(&c).await;
    let (_, msgs, consumers) = within(
        "amqprs passive",
        ach.queue_declare(
            amqprs::channel::QueueDeclareArguments::new("cnt.q")
                .passive(true)
                .finish(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((msgs, consumers), (1, 1));
    amqprs_close(c).await;
}

// ------------------------------------------------------------------------------------------
// bind / unbind

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_and_unbind_on_direct_exchanges() {
    let b = start().await;
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    within(
        "exchange.declare",
        ch.exchange_declare(
            "bx.direct".into(),
            lapin::ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    lapin_declare(&ch, "bx.q").await;
    for ex in ["amq.direct", "bx.direct"] {
        within(
            "bind",
            ch.queue_bind(
                "bx.q".into(),
                ex.into(),
                "key".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        lapin_publish(&ch, ex, "key", b"bound").await;
        lapin_publish(&ch, ex, "other", b"not bound").await;
        assert_eq!(
            lapin_get(&ch, "bx.q")
                .await
                .expect("bound message")
                .delivery
                .data,
            b"bound"
        );
        assert!(lapin_get(&ch, "bx.q").await.is_none());
        // Binding twice is idempotent: still one copy.
        within(
            "bind again",
            ch.queue_bind(
                "bx.q".into(),
                ex.into(),
                "key".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        lapin_publish(&ch, ex, "key", b"once").await;
        assert_eq!(lapin_count(&ch, "bx.q").await, 1);
        lapin_get(&ch, "bx.q").await.unwrap();
        within(
            "unbind",
            ch.queue_unbind(
                "bx.q".into(),
                ex.into(),
                "key".into(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        lapin_publish(&ch, ex, "key", b"after unbind").await;
        assert!(
            lapin_get(&ch, "bx.q").await.is_none(),
            "routed through {ex} after unbind"
        );
    }
    // Unbinding something not bound succeeds (RabbitMQ cases 14.12, 14.13).
    within(
        "unbind missing",
        ch.queue_unbind(
            "bx.q".into(),
            "amq.direct".into(),
            "nope".into(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_errors() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.declare(1, "be.q", QOpts::default()).await;
    r.send_method(1, bind("be.q", "be.nope", "k")).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(404, 50, 20);
    c.assert_text("NOT_FOUND - no exchange 'be.nope' in vhost '/'");
    r.open_channel(1).await;
    r.send_method(1, bind("be.missing", "amq.direct", "k"))
        .await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(404, 50, 20);
    c.assert_text("NOT_FOUND - no queue 'be.missing' in vhost '/'");
    r.open_channel(1).await;
    r.send_method(1, bind("be.q", "", "be.q")).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(403, 50, 20);
    c.assert_text("ACCESS_REFUSED - operation not permitted on the default exchange");
    r.open_channel(1).await;
    r.ping(1).await;
}

// ------------------------------------------------------------------------------------------
// purge / delete

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_returns_the_count() {
    let b = start().await;
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    lapin_declare(&ch, "purge.q").await;
    for i in 0..5 {
        lapin_publish(&ch, "", "purge.q", format!("{i}").as_bytes()).await;
    }
    assert_eq!(lapin_count(&ch, "purge.q").await, 5);
    let n = within(
        "purge",
        ch.queue_purge("purge.q".into(), QueuePurgeOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(n, 5);
    assert_eq!(lapin_count(&ch, "purge.q").await, 0);
    let n = within(
        "purge empty",
        ch.queue_purge("purge.q".into(), QueuePurgeOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(n, 0);

    // Unacked messages are not purged (RabbitMQ case 23.6) and come back on recover.
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    for i in 0..3 {
        r.publish(1, "", "purge.q", format!("{i}").as_bytes()).await;
    }
    r.get(1, "purge.q", false).await.unwrap();
    match r.call(1, purge("purge.q")).await {
        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(p)) => assert_eq!(p.message_count, 2),
        other => panic!("{other:?}"),
    }
    // Missing queue: 404 (50,30).
    r.send_method(1, purge("purge.missing")).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(404, 50, 30);
    c.assert_text("NOT_FOUND - no queue 'purge.missing' in vhost '/'");
    // Closing the channel requeued the unacked one.
    assert_eq!(lapin_count(&ch, "purge.q").await, 1);

    // amqprs purge.
    let c = amqprs_connect(&b).await;
    let (ach, _ev) = amqprs_channel(&c).await;
    amqprs_publish(&ach, "", "purge.q", b"more").await;
    let n = within(
        "amqprs purge",
        ach.queue_purge(amqprs::channel::QueuePurgeArguments::new("purge.q")),
    )
    .await
    .unwrap();
    assert_eq!(n, Some(2));
    amqprs_close(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_returns_the_count_and_honours_if_unused_if_empty() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    r.declare(1, "del.q", QOpts::default()).await;
    r.publish(1, "", "del.q", b"a").await;
    // if-empty with a message: 406.
    r.send_method(1, delete("del.q", false, true)).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(406, 50, 40);
    c.assert_text("PRECONDITION_FAILED - queue 'del.q' in vhost '/' not empty");
    // if-unused with a consumer: 406.
    r.consume(2, "del.q", "c1", false, false).await;
    let d = r.expect_deliver().await;
    r.open_channel(1).await;
    r.send_method(1, delete("del.q", true, false)).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(406, 50, 40);
    c.assert_text("PRECONDITION_FAILED - queue 'del.q' in vhost '/' in use");
    // Both flags: "in use" wins (RabbitMQ case 16.29).
    r.open_channel(1).await;
    r.send_method(1, delete("del.q", true, true)).await;
    r.expect_channel_close_ok(1).await.assert(406, 50, 40);
    r.ack(2, d.delivery_tag(), false).await;

    // Plain delete returns the ready count.
    r.open_channel(1).await;
    r.declare(1, "del.n", QOpts::default()).await;
    for _ in 0..4 {
        r.publish(1, "", "del.n", b"x").await;
    }
    match r.call(1, delete("del.n", false, false)).await {
        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(d)) => assert_eq!(d.message_count, 4),
        other => panic!("{other:?}"),
    }
    // Deleting a missing queue succeeds with 0 (RabbitMQ case 14.9).
    match r.call(1, delete("del.n", false, false)).await {
        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(d)) => assert_eq!(d.message_count, 0),
        other => panic!("{other:?}"),
    }
    r.send_method(1, passive("del.n")).await;
    r.expect_channel_close_ok(1).await.assert(404, 50, 10);

    // lapin: delete count and if-empty error.
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    lapin_declare(&ch, "del.l").await;
    lapin_publish(&ch, "", "del.l", b"1").await;
    lapin_publish(&ch, "", "del.l", b"2").await;
    let res = within(
        "if-empty",
        ch.queue_delete(
            "del.l".into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        ),
    )
    .await;
    assert_lapin_code(res, 406);
    let ch = lapin_channel(&l).await;
    let n = within(
        "delete",
        ch.queue_delete("del.l".into(), QueueDeleteOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(n, 2);

    // amqprs: delete count, if-unused error reported through the close callback.
    let c = amqprs_connect(&b).await;
    let (ach, mut ev) = amqprs_channel(&c).await;
    amqprs_declare(&ach, "del.a").await;
    amqprs_publish(&ach, "", "del.a", b"1").await;
    let (tag, _rx) = within(
        "amqprs consume",
        ach.basic_consume_rx(amqprs::channel::BasicConsumeArguments::new(
            "del.a", "amqprs-c",
        )),
    )
    .await
    .unwrap();
    assert_eq!(tag, "amqprs-c");
    let (ach2, mut ev2) = amqprs_channel(&c).await;
    let res = within(
        "amqprs if-unused",
        ach2.queue_delete(
            amqprs::channel::QueueDeleteArguments::new("del.a")
                .if_unused(true)
                .finish(),
        ),
    )
    .await;
    assert!(res.is_err(), "{res:?}");
    amqprs_channel_close(&mut ev2).await.assert(406, 50, 40);
    let (ach3, _ev3) = amqprs_channel(&c).await;
    let n = within(
        "amqprs delete",
        ach3.queue_delete(amqprs::channel::QueueDeleteArguments::new("del.a")),
    )
    .await
    .unwrap();
    assert_eq!(n, Some(0), "the only message is unacked with the consumer");
    // The consumer's channel got basic.cancel (amqprs announces consumer_cancel_notify).
    match next_event(&mut ev).await {
        ChanEvent::Cancel(t) => assert_eq!(t, "amqprs-c"),
        other => panic!("expected basic.cancel, got {other:?}"),
    }
    amqprs_close(c).await;
}

// ------------------------------------------------------------------------------------------
// RabbitMQ's name shortcuts and clean-ups

fn unbind(q: &str, ex: &str, rk: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
        queue: q.into(),
        exchange: ex.into(),
        routing_key: rk.into(),
        arguments: FieldTable::default(),
    }))
}

fn is_bind_ok(m: &AMQPClass) -> bool {
    matches!(m, AMQPClass::Queue(queue::AMQPMethod::BindOk(_)))
}

fn is_unbind_ok(m: &AMQPClass) -> bool {
    matches!(m, AMQPClass::Queue(queue::AMQPMethod::UnbindOk(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_queue_and_key_bind_the_last_declared_queue_under_its_name() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.declare(1, "short.q", QOpts::default()).await;
    assert!(is_bind_ok(&r.call(1, bind("", "amq.direct", "")).await));
    r.publish(1, "amq.direct", "short.q", b"by name").await;
    r.publish(1, "amq.direct", "", b"by empty key").await;
    let got = r
        .get(1, "short.q", true)
        .await
        .expect("routed by the queue's name");
    assert_eq!(got.body, b"by name");
    assert!(r.get(1, "short.q", true).await.is_none());
    // A key given with an empty queue name is kept as it is.
    assert!(is_bind_ok(&r.call(1, bind("", "amq.direct", "k")).await));
    r.publish(1, "amq.direct", "k", b"by k").await;
    assert_eq!(r.get(1, "short.q", true).await.unwrap().body, b"by k");
    // queue.unbind takes the same shortcut.
    assert!(is_unbind_ok(&r.call(1, unbind("", "amq.direct", "")).await));
    r.publish(1, "amq.direct", "short.q", b"unbound").await;
    assert!(r.get(1, "short.q", true).await.is_none());
    // Without a declared queue on the channel, both are 404.
    for (i, (method, method_id)) in [
        (bind("", "amq.direct", ""), 20),
        (unbind("", "amq.direct", ""), 50),
    ]
    .into_iter()
    .enumerate()
    {
        let ch = 2 + i as u16;
        r.open_channel(ch).await;
        r.send_method(ch, method).await;
        let c = r.expect_channel_close_ok(ch).await;
        c.assert(404, 50, method_id);
        c.assert_text("NOT_FOUND - no previously declared queue");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbinding_another_connections_exclusive_queue_is_locked() {
    let b = start().await;
    let mut owner = Raw::open(b.addr).await;
    owner.open_channel(1).await;
    owner
        .declare(
            1,
            "excl.unbind",
            QOpts {
                exclusive: true,
                ..QOpts::default()
            },
        )
        .await;
    assert!(is_bind_ok(
        &owner.call(1, bind("excl.unbind", "amq.direct", "k")).await
    ));
    let mut other = Raw::open(b.addr).await;
    other.open_channel(1).await;
    other
        .send_method(1, unbind("excl.unbind", "amq.direct", "k"))
        .await;
    let c = other.expect_channel_close_ok(1).await;
    c.assert(405, 50, 50);
    c.assert_text("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'excl.unbind' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.");
    // As in RabbitMQ, a binding the queue does not have (or a missing exchange) is no error.
    other.open_channel(1).await;
    let m = other
        .call(1, unbind("excl.unbind", "amq.direct", "other"))
        .await;
    assert!(is_unbind_ok(&m), "{m:?}");
    let m = other.call(1, unbind("excl.unbind", "no.such.x", "k")).await;
    assert!(is_unbind_ok(&m), "{m:?}");
    owner.publish(1, "amq.direct", "k", b"still bound").await;
    assert_eq!(
        owner.get(1, "excl.unbind", true).await.unwrap().body,
        b"still bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carriage_returns_and_line_feeds_are_dropped_from_declared_names() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let ok = r.declare(1, "que\r\nue_test\n", QOpts::default()).await;
    assert_eq!(ok.queue.as_str(), "queue_test");
    let ok = r
        .declare(
            1,
            "queue\n_test",
            QOpts {
                passive: true,
                ..QOpts::default()
            },
        )
        .await;
    assert_eq!(ok.queue.as_str(), "queue_test");
    assert!(is_bind_ok(
        &r.call(1, bind("queue_\ntest", "amq.\rdirect", "k")).await
    ));
    r.publish(1, "amq.direct", "k", b"routed").await;
    assert_eq!(r.get(1, "queue_test", true).await.unwrap().body, b"routed");
    // basic.get (like publish, consume and purge) takes the name as it is.
    r.send_method(1, get("queue\n_test", true)).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(404, 60, 70);
    c.assert_text("NOT_FOUND - no queue 'queue\n_test' in vhost '/'");
    r.open_channel(1).await;
    // A name of nothing but line feeds is empty: the server names the queue.
    let ok = r
        .declare(
            1,
            "\n",
            QOpts {
                exclusive: true,
                ..QOpts::default()
            },
        )
        .await;
    assert!(ok.queue.as_str().starts_with("amq.gen-"), "{:?}", ok.queue);
    let m = r.call(1, delete("queue_test\r\n", false, false)).await;
    assert!(
        matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_))),
        "{m:?}"
    );
    r.send_method(1, passive("queue_test")).await;
    r.expect_channel_close_ok(1).await.assert(404, 50, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_must_be_default_or_lazy() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    for (i, (mode, ok)) in [
        (AMQPValue::LongString("default".into()), None),
        (AMQPValue::LongString("lazy".into()), None),
        (
            AMQPValue::LongString("bogus".into()),
            Some("\"unsupported queue mode 'bogus'\""),
        ),
        (AMQPValue::ShortInt(1), Some("{unacceptable_type,short}")),
    ]
    .into_iter()
    .enumerate()
    {
        let ch = i as u16 + 1;
        r.open_channel(ch).await;
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-mode".into(), mode);
        let name = format!("mode.{ch}");
        let method = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.as_str().into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments,
        }));
        r.send_method(ch, method).await;
        match ok {
            None => {
                let m = r.recv().await;
                assert!(
                    matches!(m, In::Method(c, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) if c == ch),
                    "{m:?}"
                );
            }
            Some(why) => {
                let c = r.expect_channel_close_ok(ch).await;
                c.assert(406, 50, 10);
                c.assert_text(&format!(
                    "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue '{name}' in vhost '/': {why}"
                ));
            }
        }
    }
}
