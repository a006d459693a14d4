//! Publisher confirms (issue "Core broker", point 8): confirm.select, every publish acked in
//! order (multiple acks allowed), unroutable mandatory → basic.return then basic.ack, and the
//! tx/confirm exclusivity.

use std::collections::BTreeSet;

use crate::common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::Confirmation;
use warren_amqp::protocol::{basic, confirm, AMQPClass};

/// Tracks confirms: every tag acked once, acks never go backwards, never beyond what was
/// published.
#[derive(Default)]
struct Tracker {
    acked: BTreeSet<u64>,
    highest: u64,
}

impl Tracker {
    fn ack(&mut self, tag: u64, multiple: bool, published: u64) {
        assert!(
            tag <= published,
            "ack for tag {tag} but only {published} published"
        );
        assert!(
            tag > self.highest,
            "acks went backwards or repeated: {tag} after {}",
            self.highest
        );
        if multiple {
            for t in 1..=tag {
                self.acked.insert(t);
            }
        } else {
            assert!(self.acked.insert(tag), "tag {tag} acked twice");
            // In order: a single ack may not skip over unacked tags.
            assert_eq!(
                self.acked.len() as u64,
                tag,
                "single ack {tag} leaves earlier tags unconfirmed: {:?}",
                self.acked
            );
        }
        self.highest = tag;
    }

    fn all(&self, n: u64) -> bool {
        self.acked.len() as u64 == n && self.highest == n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_is_confirmed_in_order() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.declare(1, "conf.q", QOpts::default()).await;
    r.confirm_select(1).await;
    // Pipelined publishes in bursts; the server may coalesce acks with `multiple`.
    let n = 300u64;
    let mut t = Tracker::default();
    let mut published = 0;
    for burst in 0..3 {
        let mut bytes = Vec::new();
        for i in 0..100 {
            let body = format!("m{}", burst * 100 + i);
            let mut b = bytes::BytesMut::new();
            warren_amqp::encode::write_method(
                &mut b,
                1,
                &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                    exchange: "".into(),
                    routing_key: "conf.q".into(),
                    mandatory: false,
                    immediate: false,
                })),
            )
            .unwrap();
            warren_amqp::encode::write_content(&mut b, 1, &[0, 0], body.as_bytes(), 131_072);
            bytes.extend_from_slice(&b);
        }
        r.send(&bytes).await;
        published += 100;
        // Read acks until this burst is covered.
        while t.highest < published {
            match r.recv().await {
                In::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                    t.ack(a.delivery_tag, a.multiple, published)
                }
                In::Method(1, AMQPClass::Basic(basic::AMQPMethod::Nack(nk))) => {
                    panic!("unexpected nack {nk:?}")
                }
                other => panic!("expected basic.ack, got {other:?}"),
            }
        }
    }
    assert!(t.all(n));
    r.expect_silence(QUIET).await;
    let ok = r
        .declare(
            1,
            "conf.q",
            QOpts {
                passive: true,
                ..QOpts::default()
            },
        )
        .await;
    assert_eq!(u64::from(ok.message_count), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_publisher_confirms() {
    let b = start().await;
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    lapin_declare(&ch, "lconf.q").await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    for i in 0..100 {
        let c = within(
            "publish",
            ch.basic_publish(
                "".into(),
                "lconf.q".into(),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                lapin::BasicProperties::default(),
            ),
        )
        .await
        .unwrap();
        pending.push(c);
    }
    for c in pending {
        let conf = within("confirm", c).await.unwrap();
        assert_eq!(conf, Confirmation::Ack(None));
    }
    let returned = within("wait_for_confirms", ch.wait_for_confirms())
        .await
        .unwrap();
    assert!(returned.is_empty());
    assert_eq!(lapin_count(&ch, "lconf.q").await, 100);

    // A publish routed to two queues is still confirmed once.
    lapin_declare(&ch, "lconf.a").await;
    lapin_declare(&ch, "lconf.b").await;
    for q in ["lconf.a", "lconf.b"] {
        within(
            "bind",
            ch.queue_bind(
                q.into(),
                "amq.direct".into(),
                "both".into(),
                Default::default(),
                Default::default(),
            ),
        )
        .await
        .unwrap();
    }
    let c = within(
        "publish",
        ch.basic_publish(
            "amq.direct".into(),
            "both".into(),
            BasicPublishOptions::default(),
            b"2x",
            lapin::BasicProperties::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(within("confirm", c).await.unwrap(), Confirmation::Ack(None));
    assert_eq!(lapin_count(&ch, "lconf.a").await, 1);
    assert_eq!(lapin_count(&ch, "lconf.b").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_publisher_confirms() {
    let b = start().await;
    let a = amqprs_connect(&b).await;
    let (ch, mut ev) = amqprs_channel(&a).await;
    amqprs_declare(&ch, "aconf.q").await;
    within(
        "confirm.select",
        ch.confirm_select(amqprs::channel::ConfirmSelectArguments::new(false)),
    )
    .await
    .unwrap();
    let n = 100u64;
    for i in 0..n {
        amqprs_publish(&ch, "", "aconf.q", format!("{i}").as_bytes()).await;
    }
    let mut t = Tracker::default();
    while t.highest < n {
        match next_event(&mut ev).await {
            ChanEvent::Ack(tag, multiple) => t.ack(tag, multiple, n),
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    assert!(t.all(n));
    // The messages are there.
    let (_, count, _) = within(
        "passive",
        ch.queue_declare(
            amqprs::channel::QueueDeclareArguments::new("aconf.q")
                .passive(true)
                .finish(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(u64::from(count), n);

    // Unroutable mandatory: return first, then the ack.
    let mut args = amqprs::channel::BasicPublishArguments::new("", "aconf.nobody");
    args.mandatory(true);
    within(
        "publish",
        ch.basic_publish(amqprs::BasicProperties::default(), b"back".to_vec(), args),
    )
    .await
    .unwrap();
    match next_event(&mut ev).await {
        ChanEvent::Return { code, body, .. } => {
            assert_eq!(code, 312);
            assert_eq!(body, b"back");
        }
        other => panic!("expected the return before the ack, got {other:?}"),
    }
    assert_eq!(next_event(&mut ev).await, ChanEvent::Ack(n + 1, false));
    amqprs_close(a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_mandatory_is_returned_then_acked() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.declare(1, "cr.q", QOpts::default()).await;
    r.confirm_select(1).await;
    // RabbitMQ case 13.1-13.4: return + content, then ack; then plain acks.
    for (tag, ex, rk) in [(1u64, "", "cr.nonexistent"), (2, "amq.direct", "nobody")] {
        r.publish_full(1, ex, rk, true, false, b"hello").await;
        match r.recv().await {
            In::Method(1, AMQPClass::Basic(m @ basic::AMQPMethod::Return(_))) => {
                let msg = r.read_content(m).await;
                let basic::AMQPMethod::Return(ret) = &msg.method else {
                    unreachable!()
                };
                assert_eq!((ret.reply_code, ret.reply_text.as_str()), (312, "NO_ROUTE"));
                assert_eq!((ret.exchange.as_str(), ret.routing_key.as_str()), (ex, rk));
                assert_eq!(msg.body, b"hello");
            }
            other => panic!("expected basic.return before the ack, got {other:?}"),
        }
        match r.recv().await {
            In::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                assert_eq!((a.delivery_tag, a.multiple), (tag, false));
            }
            other => panic!("expected basic.ack {tag}, got {other:?}"),
        }
    }
    r.publish_full(1, "", "cr.nobody2", false, false, b"x")
        .await;
    match r.recv().await {
        In::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
            assert_eq!((a.delivery_tag, a.multiple), (3, false))
        }
        other => panic!("expected basic.ack 3, got {other:?}"),
    }
    r.publish_full(1, "", "cr.q", true, false, b"x").await;
    match r.recv().await {
        In::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
            assert_eq!((a.delivery_tag, a.multiple), (4, false))
        }
        other => panic!("expected basic.ack 4, got {other:?}"),
    }

    // lapin: the confirmation carries the returned message.
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let c = within(
        "publish",
        ch.basic_publish(
            "".into(),
            "cr.nobody".into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            b"returned",
            lapin::BasicProperties::default(),
        ),
    )
    .await
    .unwrap();
    match within("confirm", c).await.unwrap() {
        Confirmation::Ack(Some(ret)) => {
            assert_eq!(ret.reply_code, 312);
            assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
            assert_eq!(ret.routing_key.as_str(), "cr.nobody");
            assert_eq!(ret.delivery.data, b"returned");
        }
        other => panic!("expected Ack with the returned message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_and_tx_modes_exclude_each_other() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    // confirm.select twice is fine; with nowait there is no reply.
    r.confirm_select(1).await;
    r.confirm_select(1).await;
    r.send_method(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: true,
        })),
    )
    .await;
    r.expect_silence(QUIET).await;
    r.send_method(1, tx_select()).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(406, 90, 10);
    c.assert_text("PRECONDITION_FAILED - cannot switch from confirm to tx mode");
    r.ping(2).await;

    r.open_channel(1).await;
    match r.call(1, tx_select()).await {
        AMQPClass::Tx(_) => {}
        other => panic!("expected tx.select-ok, got {other:?}"),
    }
    r.send_method(1, confirm_select()).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(406, 85, 10);
    c.assert_text("PRECONDITION_FAILED - cannot switch from tx to confirm mode");
    r.ping(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_continue_after_a_soft_error_on_another_channel() {
    // Point 9: a channel error elsewhere does not disturb a confirming channel.
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    r.declare(1, "cs.q", QOpts::default()).await;
    r.confirm_select(1).await;
    r.publish(1, "", "cs.q", b"a").await;
    r.send_method(2, passive("cs.missing")).await;
    let mut acked = 0;
    let mut closed = false;
    while acked < 1 || !closed {
        match r.recv().await {
            In::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => acked = a.delivery_tag,
            In::Method(
                2,
                AMQPClass::Channel(warren_amqp::protocol::channel::AMQPMethod::Close(c)),
            ) => {
                assert_eq!((c.reply_code, c.class_id, c.method_id), (404, 50, 10));
                closed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    r.send_method(
        2,
        AMQPClass::Channel(warren_amqp::protocol::channel::AMQPMethod::CloseOk(
            Default::default(),
        )),
    )
    .await;
    r.publish(1, "", "cs.q", b"b").await;
    match r.recv().await {
        In::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => assert_eq!(a.delivery_tag, 2),
        other => panic!("expected basic.ack 2, got {other:?}"),
    }
}

/// A durable queue deleted while confirmed persistent publishes stream into it: every publish is
/// still answered with an ack (RabbitMQ confirms a publish whose queue is deleted); none is lost
/// with what the deleted queue still had in its inbox, which would hold back every later confirm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_to_a_queue_deleted_meanwhile_are_all_confirmed() {
    let b = start().await;
    let publisher = lapin_connect(&b).await;
    let admin = lapin_connect(&b).await;
    let ch = lapin_channel(&publisher).await;
    let admin = lapin_channel(&admin).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let persistent = lapin::BasicProperties::default().with_delivery_mode(2);
    for round in 0..5 {
        let queue = format!("conf.deleted.{round}");
        let durable = lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        within(
            "queue.declare",
            ch.queue_declare(queue.as_str().into(), durable, Default::default()),
        )
        .await
        .unwrap();
        let mut pending = Vec::new();
        for i in 0..3000u32 {
            if i == 1000 {
                // From another connection, while the first thousand are still arriving.
                let admin = admin.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    let _ = admin
                        .queue_delete(queue.as_str().into(), Default::default())
                        .await;
                });
            }
            let c = within(
                "publish",
                ch.basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &i.to_be_bytes(),
                    persistent.clone(),
                ),
            )
            .await
            .unwrap();
            pending.push(c);
        }
        for (i, c) in pending.into_iter().enumerate() {
            let conf = within("confirm", c).await.unwrap();
            assert!(
                matches!(conf, Confirmation::Ack(_)),
                "round {round}: publish {i} answered {conf:?}"
            );
        }
    }
}

/// A transient message published in confirm mode to a queue consumed on the same connection:
/// the delivery comes before the confirm, every time, as from RabbitMQ (its queue takes the
/// message, hands it to the consumer, then confirms). aiormq's connection tests wait for the
/// delivery after the confirm and counted on it.
#[tokio::test]
async fn a_consumer_on_the_publishers_connection_gets_the_delivery_before_the_confirm() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    r.declare(1, "deliver.first", QOpts::default()).await;
    r.consume(2, "deliver.first", "c", true, false).await;
    r.confirm_select(1).await;
    for i in 0..200u64 {
        r.publish(1, "", "deliver.first", b"m").await;
        match r.recv().await {
            In::Method(2, AMQPClass::Basic(m @ basic::AMQPMethod::Deliver(_))) => {
                r.read_content(m).await;
            }
            other => panic!("publish {i}: expected the delivery first, got {other:?}"),
        }
        match r.recv().await {
            In::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(ack))) => {
                assert_eq!(ack.delivery_tag, i + 1);
            }
            other => panic!("publish {i}: expected the confirm, got {other:?}"),
        }
    }
    r.close().await;
    b.stop().await;
}
