//! Routing as a lapin client sees it: every exchange type, exchange-to-exchange bindings (cycles
//! deliver once), alternate exchanges, internal and auto-delete exchanges, CC/BCC, transactions.

use crate::common::*;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions,
    QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

async fn exchange(ch: &lapin::Channel, name: &str, kind: ExchangeKind, args: FieldTable) {
    within(
        "exchange.declare",
        ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), args),
    )
    .await
    .expect("exchange.declare");
}

async fn bind(ch: &lapin::Channel, q: &str, ex: &str, key: &str, args: FieldTable) {
    within(
        "queue.bind",
        ch.queue_bind(
            q.into(),
            ex.into(),
            key.into(),
            QueueBindOptions::default(),
            args,
        ),
    )
    .await
    .expect("queue.bind");
}

async fn publish(ch: &lapin::Channel, ex: &str, key: &str, body: &[u8], props: BasicProperties) {
    within(
        "publish",
        ch.basic_publish(
            ex.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        ),
    )
    .await
    .expect("publish");
}

/// Bodies in `q` (drained).
async fn drain(ch: &lapin::Channel, q: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(m) = lapin_get(ch, q).await {
        out.push(m.delivery.data);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_fanout_and_headers_exchanges_route_like_rabbitmq() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    exchange(&ch, "t", ExchangeKind::Topic, FieldTable::default()).await;
    for (q, pattern) in [
        ("t.star", "a.*.c"),
        ("t.hash", "a.#"),
        ("t.all", "#"),
        ("t.exact", "a.b"),
    ] {
        lapin_declare(&ch, q).await;
        bind(&ch, q, "t", pattern, FieldTable::default()).await;
    }
    for key in ["a.b.c", "a", "a.b", "x.y"] {
        publish(&ch, "t", key, key.as_bytes(), BasicProperties::default()).await;
    }
    assert_eq!(drain(&ch, "t.star").await, vec![b"a.b.c".to_vec()]);
    assert_eq!(
        drain(&ch, "t.hash").await,
        vec![b"a.b.c".to_vec(), b"a".to_vec(), b"a.b".to_vec()]
    );
    assert_eq!(drain(&ch, "t.all").await.len(), 4);
    assert_eq!(drain(&ch, "t.exact").await, vec![b"a.b".to_vec()]);

    exchange(&ch, "f", ExchangeKind::Fanout, FieldTable::default()).await;
    for q in ["f1", "f2"] {
        lapin_declare(&ch, q).await;
        bind(&ch, q, "f", "ignored", FieldTable::default()).await;
    }
    publish(&ch, "f", "any", b"x", BasicProperties::default()).await;
    assert_eq!(
        (drain(&ch, "f1").await.len(), drain(&ch, "f2").await.len()),
        (1, 1)
    );

    exchange(&ch, "h", ExchangeKind::Headers, FieldTable::default()).await;
    lapin_declare(&ch, "h.all").await;
    lapin_declare(&ch, "h.any").await;
    bind(
        &ch,
        "h.all",
        "h",
        "",
        table(&[
            ("x-match", s("all")),
            ("a", s("1")),
            ("b", AMQPValue::LongInt(2)),
        ]),
    )
    .await;
    bind(
        &ch,
        "h.any",
        "h",
        "",
        table(&[
            ("x-match", s("any")),
            ("a", s("1")),
            ("b", AMQPValue::LongInt(2)),
        ]),
    )
    .await;
    let headers = |t: FieldTable| BasicProperties::default().with_headers(t);
    publish(
        &ch,
        "h",
        "",
        b"both",
        headers(table(&[("a", s("1")), ("b", AMQPValue::LongLongInt(2))])),
    )
    .await;
    publish(&ch, "h", "", b"one", headers(table(&[("a", s("1"))]))).await;
    publish(&ch, "h", "", b"none", headers(table(&[("c", s("1"))]))).await;
    assert_eq!(
        drain(&ch, "h.all").await,
        vec![b"both".to_vec()],
        "integers of any width compare equal"
    );
    assert_eq!(
        drain(&ch, "h.any").await,
        vec![b"both".to_vec(), b"one".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_cycles_deliver_once_and_alternate_exchanges_catch_the_rest() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    exchange(&ch, "e1", ExchangeKind::Fanout, FieldTable::default()).await;
    exchange(&ch, "e2", ExchangeKind::Fanout, FieldTable::default()).await;
    let opts = ExchangeBindOptions::default;
    ch.exchange_bind(
        "e2".into(),
        "e1".into(),
        "".into(),
        opts(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        "e1".into(),
        "e2".into(),
        "".into(),
        opts(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    lapin_declare(&ch, "cyc").await;
    bind(&ch, "cyc", "e1", "", FieldTable::default()).await;
    bind(&ch, "cyc", "e2", "", FieldTable::default()).await;
    publish(&ch, "e1", "", b"once", BasicProperties::default()).await;
    assert_eq!(drain(&ch, "cyc").await, vec![b"once".to_vec()]);

    exchange(&ch, "alt", ExchangeKind::Fanout, FieldTable::default()).await;
    exchange(
        &ch,
        "main",
        ExchangeKind::Direct,
        table(&[("alternate-exchange", s("alt"))]),
    )
    .await;
    lapin_declare(&ch, "routed").await;
    lapin_declare(&ch, "unrouted").await;
    bind(&ch, "routed", "main", "k", FieldTable::default()).await;
    bind(&ch, "unrouted", "alt", "", FieldTable::default()).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = ch
        .basic_publish(
            "main".into(),
            "other".into(),
            mandatory,
            b"to-alt",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    assert!(
        confirm.take_message().is_none(),
        "the alternate exchange routed it: no basic.return"
    );
    publish(&ch, "main", "k", b"direct", BasicProperties::default()).await;
    assert_eq!(drain(&ch, "routed").await, vec![b"direct".to_vec()]);
    assert_eq!(drain(&ch, "unrouted").await, vec![b"to-alt".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_exchanges_refuse_publishes_and_auto_delete_exchanges_go_with_their_last_binding()
{
    let b = start().await;
    let c = lapin_connect(&b).await;
    // Seen on the wire: the publish closes the channel with 403 (a lapin call racing the close
    // may report the closed channel instead of the code).
    let mut raw = Raw::open(b.addr).await;
    raw.open_channel(1).await;
    let declare = warren_amqp::protocol::AMQPClass::Exchange(
        warren_amqp::protocol::exchange::AMQPMethod::Declare(
            warren_amqp::protocol::exchange::Declare {
                exchange: "inner".into(),
                kind: "fanout".into(),
                internal: true,
                ..Default::default()
            },
        ),
    );
    raw.call(1, declare).await;
    raw.publish(1, "inner", "", b"x").await;
    let close = raw.expect_channel_close(1).await;
    close.assert(403, 60, 40);
    close.assert_text("ACCESS_REFUSED - cannot publish to internal exchange 'inner' in vhost '/'");

    let ch = lapin_channel(&c).await;
    let auto = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    ch.exchange_declare(
        "fleeting".into(),
        ExchangeKind::Direct,
        auto,
        FieldTable::default(),
    )
    .await
    .unwrap();
    lapin_declare(&ch, "fq").await;
    bind(&ch, "fq", "fleeting", "k", FieldTable::default()).await;
    ch.queue_unbind(
        "fq".into(),
        "fleeting".into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let r = ch
        .exchange_declare(
            "fleeting".into(),
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await;
    assert_lapin_code(r, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_and_bcc_add_routing_keys_and_bcc_is_removed() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    for q in ["to", "cc", "bcc"] {
        lapin_declare(&ch, q).await;
    }
    let headers = table(&[
        ("CC", AMQPValue::FieldArray(FieldArray::from(vec![s("cc")]))),
        (
            "BCC",
            AMQPValue::FieldArray(FieldArray::from(vec![s("bcc")])),
        ),
    ]);
    publish(
        &ch,
        "",
        "to",
        b"m",
        BasicProperties::default().with_headers(headers),
    )
    .await;
    for q in ["to", "cc", "bcc"] {
        let m = lapin_get(&ch, q)
            .await
            .unwrap_or_else(|| panic!("nothing in {q}"));
        let h = m.delivery.properties.headers().clone().unwrap_or_default();
        assert!(h.inner().contains_key("CC"), "CC stays");
        assert!(!h.inner().contains_key("BCC"), "BCC is never delivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_roll_back_publishes_and_acks() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    let probe = lapin_channel(&c).await;
    lapin_declare(&ch, "txq").await;
    ch.tx_select().await.unwrap();
    publish(&ch, "", "txq", b"dropped", BasicProperties::default()).await;
    ch.tx_rollback().await.unwrap();
    publish(&ch, "", "txq", b"kept", BasicProperties::default()).await;
    assert_eq!(lapin_count(&probe, "txq").await, 0, "nothing before commit");
    ch.tx_commit().await.unwrap();
    assert_eq!(lapin_count(&probe, "txq").await, 1);
    let m = ch
        .basic_get("txq".into(), Default::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, b"kept");
    m.delivery.acker.ack(Default::default()).await.unwrap();
    ch.tx_rollback().await.unwrap();
    // The rolled-back ack left the message unacked; closing the channel requeues it.
    ch.close(200, "bye".into()).await.unwrap();
    assert_eq!(lapin_count(&probe, "txq").await, 1);
    let r = probe.confirm_select(ConfirmSelectOptions::default()).await;
    assert!(r.is_ok());
    let r = probe.tx_select().await;
    assert_lapin_code(r, 406);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_unbind_with_a_missing_end_succeeds() {
    // As RabbitMQ (aio-pika's clean-up relies on it): only exchange.bind checks both ends.
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    exchange(&ch, "eu.x", ExchangeKind::Direct, FieldTable::default()).await;
    for (destination, source) in [
        ("eu.x", "eu.missing"),
        ("eu.missing", "eu.x"),
        ("eu.missing", "eu.missing2"),
    ] {
        within(
            "exchange.unbind",
            ch.exchange_unbind(
                destination.into(),
                source.into(),
                "k".into(),
                Default::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("unbind {destination} from {source}: {e:?}"));
    }
    let r = ch
        .exchange_bind(
            "eu.x".into(),
            "eu.missing".into(),
            "k".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    let e = assert_lapin_code(r, 404);
    assert!(
        lapin_text(&e).contains("no exchange 'eu.missing'"),
        "{}",
        lapin_text(&e)
    );
    // The default exchange is still refused at either end.
    let ch = lapin_channel(&c).await;
    let r = ch
        .exchange_unbind(
            "eu.x".into(),
            "".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await;
    assert_lapin_code(r, 403);
}
