//! Durability against a real broker process: definitions and persistent messages survive a
//! restart and a `kill -9`; transient ones do not; no confirmed message is ever lost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rand::Rng;

use crate::common::ChildBroker;

type Broker = ChildBroker;

async fn connect(b: &Broker) -> Connection {
    b.connect().await
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_and_persistent_messages_survive_restart_transient_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &[]);
    let conn = connect(&b).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.exchange_declare(
        "dur.x".into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare("dur.q".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_declare(
        "trans.q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "dur.q".into(),
        "dur.x".into(),
        "k.#".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for i in 0..100u32 {
        let props = if i % 2 == 0 {
            persistent()
        } else {
            BasicProperties::default()
        };
        ch.basic_publish(
            "dur.x".into(),
            "k.a".into(),
            BasicPublishOptions::default(),
            &i.to_be_bytes(),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // Message 0 is delivered and not acked (comes back redelivered); 1 (transient) and 2
    // (persistent) are acked (gone).
    let first = ch
        .basic_get("dur.q".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.delivery.data, 0u32.to_be_bytes());
    for expected in [1u32, 2] {
        let got = ch
            .basic_get("dur.q".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.delivery.data, expected.to_be_bytes());
        got.delivery.acker.ack(Default::default()).await.unwrap();
    }
    // The ack has no confirm to wait for: a round trip on the channel orders it before the stop.
    ch.queue_declare(
        "dur.q".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    drop(conn);
    b.stop();

    let b = Broker::start(dir.path(), &[]);
    let conn = connect(&b).await;
    let ch = conn.create_channel().await.unwrap();
    let gone = ch
        .queue_declare(
            "trans.q".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(gone.is_err(), "transient queue must not survive a restart");
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        "dur.x".into(),
        "k.after".into(),
        BasicPublishOptions::default(),
        b"after",
        persistent(),
    )
    .await
    .unwrap();
    drop(conn);
    let got = b.drain("dur.q").await;
    let expected: Vec<(Vec<u8>, bool)> = std::iter::once((0u32.to_be_bytes().to_vec(), true))
        .chain(
            (4..100u32)
                .step_by(2)
                .map(|i| (i.to_be_bytes().to_vec(), false)),
        )
        .chain(std::iter::once((b"after".to_vec(), false)))
        .collect();
    assert_eq!(
        got, expected,
        "persistent messages in order, the unacked one redelivered, the binding restored"
    );
}

/// Publishes persistent messages (ids 0, 1, …) to `exchange` with up to 500 unconfirmed until
/// the broker dies; records the ids it saw confirmed.
pub(crate) async fn publish_until_killed(
    uri: String,
    exchange: &'static str,
    routing_key: &'static str,
    confirmed: Arc<Mutex<HashSet<u64>>>,
) {
    let Ok(conn) = Connection::connect(&uri, ConnectionProperties::default()).await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    if ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .is_err()
    {
        return;
    }
    let mut in_flight = FuturesUnordered::new();
    for id in 0u64.. {
        let Ok(confirm) = ch
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &id.to_be_bytes(),
                persistent(),
            )
            .await
        else {
            break;
        };
        in_flight.push(async move { (id, confirm.await) });
        while in_flight.len() >= 500 {
            match in_flight.next().await {
                Some((id, Ok(c))) if c.is_ack() => {
                    confirmed.lock().unwrap().insert(id);
                }
                Some((_, Ok(_))) => {}
                _ => return,
            }
        }
    }
    while let Some((id, result)) = in_flight.next().await {
        if let Ok(c) = result {
            if c.is_ack() {
                confirmed.lock().unwrap().insert(id);
            }
        }
    }
}

/// Publishes to `exchange` until the broker is killed (`kill -9`) at a random moment; the ids
/// that were confirmed.
async fn kill_9_while_publishing(
    b: Broker,
    exchange: &'static str,
    routing_key: &'static str,
) -> HashSet<u64> {
    let confirmed = Arc::new(Mutex::new(HashSet::new()));
    let publisher = tokio::spawn(publish_until_killed(
        b.uri(),
        exchange,
        routing_key,
        confirmed.clone(),
    ));
    let delay = rand::rng().random_range(100..1200);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    b.kill9();
    let _ = tokio::time::timeout(Duration::from_secs(10), publisher).await;
    let confirmed = confirmed.lock().unwrap().clone();
    confirmed
}

/// The number of kill -9 rounds: 10 in CI; `WARREN_CRASH_ROUNDS` raises it for a soak.
fn rounds() -> usize {
    std::env::var("WARREN_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_confirmed_message_is_lost_on_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut total_confirmed = 0;
    let mut survivors: HashSet<u64> = HashSet::new();
    for round in 0..rounds() {
        let b = Broker::start(dir.path(), &[]);
        {
            let conn = connect(&b).await;
            let ch = conn.create_channel().await.unwrap();
            ch.queue_declare("crash".into(), durable(), FieldTable::default())
                .await
                .unwrap();
            // Each round starts from an empty queue, so ids of different rounds cannot mix.
            ch.queue_purge("crash".into(), Default::default())
                .await
                .unwrap();
            let _ = conn.close(200, "bye".into()).await;
        }
        let confirmed = kill_9_while_publishing(b, "", "crash").await;
        total_confirmed += confirmed.len();

        let b = Broker::start(dir.path(), &[]);
        let ids = drain_ids(&b, "crash").await;
        let present: HashSet<u64> = ids.iter().copied().collect();
        let lost = missing(&confirmed, &present);
        assert!(lost.is_empty(), "round {round}: confirmed messages lost after kill -9 (e.g. {lost:?}); {} confirmed, {} recovered", confirmed.len(), ids.len());
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(
            ids, sorted,
            "round {round}: recovered messages out of order"
        );
        survivors.extend(present);
        b.stop();
    }
    assert!(
        total_confirmed > 0,
        "the publisher never got a confirm: the test exercised nothing"
    );
    eprintln!(
        "{} rounds, {total_confirmed} confirmed messages, none lost",
        rounds()
    );
}

/// Up to ten confirmed ids that are not `present`.
fn missing(confirmed: &HashSet<u64>, present: &HashSet<u64>) -> Vec<u64> {
    confirmed
        .iter()
        .filter(|id| !present.contains(id))
        .take(10)
        .copied()
        .collect()
}

/// The ids of the messages in a queue, in order.
async fn drain_ids(b: &Broker, queue: &str) -> Vec<u64> {
    b.drain(queue)
        .await
        .iter()
        .map(|(body, _)| u64::from_be_bytes(body[..8].try_into().unwrap()))
        .collect()
}

/// A persistent message fanned out to several durable queues is stored once and logged by each
/// queue on its own; its confirm waits for all of them. Killed at random, every confirmed message
/// is in every queue after the restart, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_fanned_out_message_is_in_every_queue_after_kill_9() {
    const QUEUES: [&str; 3] = ["fan.1", "fan.2", "fan.3"];
    let dir = tempfile::tempdir().unwrap();
    let mut total_confirmed = 0;
    for round in 0..(rounds() / 2).max(1) {
        let b = Broker::start(dir.path(), &[]);
        {
            let conn = connect(&b).await;
            let ch = conn.create_channel().await.unwrap();
            let options = lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.exchange_declare(
                "crash.fan".into(),
                lapin::ExchangeKind::Fanout,
                options,
                FieldTable::default(),
            )
            .await
            .unwrap();
            for q in QUEUES {
                ch.queue_declare(q.into(), durable(), FieldTable::default())
                    .await
                    .unwrap();
                ch.queue_bind(
                    q.into(),
                    "crash.fan".into(),
                    "".into(),
                    Default::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
                ch.queue_purge(q.into(), Default::default()).await.unwrap();
            }
            let _ = conn.close(200, "bye".into()).await;
        }
        let confirmed = kill_9_while_publishing(b, "crash.fan", "").await;
        total_confirmed += confirmed.len();

        let b = Broker::start(dir.path(), &[]);
        for q in QUEUES {
            let ids = drain_ids(&b, q).await;
            let present: HashSet<u64> = ids.iter().copied().collect();
            let lost = missing(&confirmed, &present);
            assert!(
                lost.is_empty(),
                "round {round}: confirmed messages missing from {q} after kill -9 (e.g. {lost:?}); {} confirmed, {} recovered",
                confirmed.len(),
                ids.len()
            );
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "round {round}: {q} recovered out of order or twice"
            );
        }
        b.stop();
    }
    assert!(
        total_confirmed > 0,
        "the publisher never got a confirm: the test exercised nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_store_restarts_with_its_key_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{}\n", "3c".repeat(32))).unwrap();
    let key_arg = key_file.to_str().unwrap().to_owned();
    let marker = "ENCRYPTED-BODY-MARKER-".repeat(4);

    let b = Broker::start(&data, &["--encryption-key-file", &key_arg]);
    {
        let conn = connect(&b).await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        ch.queue_declare("enc.q".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        for i in 0..3 {
            let body = format!("{i}:{marker}");
            let confirm = ch
                .basic_publish(
                    "".into(),
                    "enc.q".into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    persistent(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack());
        }
        let _ = conn.close(200, "bye".into()).await;
    }
    b.stop();
    let file = std::fs::read(data.join("warren.redb")).unwrap();
    assert!(
        !file.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "message bodies are in the database file in plaintext"
    );

    // Another key, or none: the broker refuses to start and says why.
    let other = dir.path().join("other-key");
    std::fs::write(&other, "c3".repeat(32)).unwrap();
    for (args, expected) in [
        (
            vec!["--encryption-key-file", other.to_str().unwrap()],
            "wrong encryption key",
        ),
        (vec![], "is encrypted"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args([
                "server",
                "--amqp-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data)
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run warren");
        assert!(!out.status.success(), "started with {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "stderr: {stderr}");
    }

    // The right key: everything is back, in order.
    let b = Broker::start(&data, &["--encryption-key-file", &key_arg]);
    let got: Vec<String> = b
        .drain("enc.q")
        .await
        .into_iter()
        .map(|(body, _)| String::from_utf8(body).unwrap())
        .collect();
    assert_eq!(
        got,
        (0..3).map(|i| format!("{i}:{marker}")).collect::<Vec<_>>()
    );
    b.stop();
}

/// The ready and held (`messages_dlx`) counts of queue `queue`, as the management API shows them.
fn ready_and_held(b: &Broker, queue: &str) -> (u64, u64) {
    let (status, q) = crate::common::http_json(
        ([127, 0, 0, 1], b.http_port).into(),
        "GET",
        &format!("/api/queues/%2F/{queue}"),
        None,
        ("guest", "guest"),
    );
    assert_eq!(status, 200, "{q}");
    (
        q["messages_ready"].as_u64().unwrap_or(u64::MAX),
        // Only quorum queues show it.
        q["messages_dlx"].as_u64().unwrap_or(0),
    )
}

async fn eventually_counts(b: &Broker, queue: &str, want: (u64, u64)) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = ready_and_held(b, queue);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{queue}: (ready, held) {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A connection and a channel in confirm mode on it.
async fn confirming_channel(b: &Broker) -> (Connection, lapin::Channel) {
    let conn = connect(b).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

/// A quorum queue's arguments dead-lettering to `target` through the default exchange with
/// `strategy`, refusing publishes at its limits (which RabbitMQ requires for at-least-once).
fn dead_lettering_quorum_args(target: &str, strategy: &str) -> FieldTable {
    use lapin::types::AMQPValue;
    let mut args = FieldTable::default();
    for (key, value) in [
        ("x-queue-type", "quorum"),
        ("x-dead-letter-exchange", ""),
        ("x-dead-letter-routing-key", target),
        ("x-dead-letter-strategy", strategy),
        ("x-overflow", "reject-publish"),
    ] {
        args.insert(key.into(), AMQPValue::LongString(value.into()));
    }
    args
}

/// Publishes messages 0..n (persistent) to `queue`, each confirmed before the next.
async fn publish_numbered_confirmed(ch: &lapin::Channel, queue: &str, n: usize) {
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &crate::common::numbered_body(i, 64),
            persistent(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}

/// A quorum queue alone with `x-dead-letter-strategy: at-least-once` (and `x-overflow:
/// reject-publish`, which RabbitMQ requires for it) keeps its dead-letters until a queue confirms
/// them, as RabbitMQ's quorum queues do: while no queue is bound they wait (`messages_dlx`),
/// a target that refuses (reject-publish at its limit) gets them as it makes room, and a kill -9
/// loses none: the log keeps each held until its release, and the restarted queue dead-letters
/// them again (RabbitMQ's quorum queues send theirs again), not back among its ready messages.
/// At-most-once drops them. Every message is counted once: drained from the target, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_dead_letters_wait_for_a_queue_that_takes_them() {
    use lapin::types::AMQPValue;
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &[]);
    let (conn, ch) = confirming_channel(&b).await;
    for (queue, strategy) in [("dl.src", "at-least-once"), ("dl.amo", "at-most-once")] {
        let args = dead_lettering_quorum_args("dl.target", strategy);
        ch.queue_declare(queue.into(), durable(), args)
            .await
            .unwrap();
        publish_numbered_confirmed(&ch, queue, N).await;
        // Every message rejected without requeue: dead-lettered to a queue not there yet.
        crate::common::get_and_reject(&ch, queue, N).await;
    }
    eventually_counts(&b, "dl.src", (0, N as u64)).await;
    eventually_counts(&b, "dl.amo", (0, 0)).await;
    // A target with room for five, refusing the rest: five taken, the others still held.
    let mut limited = FieldTable::default();
    limited.insert("x-max-length".into(), AMQPValue::LongInt(5));
    limited.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare("dl.target".into(), durable(), limited)
        .await
        .unwrap();
    eventually_counts(&b, "dl.target", (5, 0)).await;
    eventually_counts(&b, "dl.src", (0, N as u64 - 5)).await;
    // Room for five more: the next retry fills it.
    let mut seen: Vec<usize> = b
        .drain("dl.target")
        .await
        .iter()
        .map(|(body, _)| crate::common::body_number(body))
        .collect();
    assert_eq!(seen.len(), 5);
    eventually_counts(&b, "dl.target", (5, 0)).await;
    eventually_counts(&b, "dl.src", (0, N as u64 - 10)).await;
    drop((ch, conn));
    b.kill9();
    // Back: what the target took is there, what was held is held again (none ready in the
    // source), and goes to the target five at a time as it is drained; nothing lost, nothing
    // twice.
    let b = Broker::start(dir.path(), &[]);
    eventually_counts(&b, "dl.target", (5, 0)).await;
    eventually_counts(&b, "dl.src", (0, N as u64 - 10)).await;
    for left in [N as u64 - 10, N as u64 - 15, 0] {
        eventually_counts(&b, "dl.target", (5, 0)).await;
        eventually_counts(&b, "dl.src", (0, left)).await;
        let taken = b.drain("dl.target").await;
        assert_eq!(taken.len(), 5);
        seen.extend(
            taken
                .iter()
                .map(|(body, _)| crate::common::body_number(body)),
        );
    }
    eventually_counts(&b, "dl.src", (0, 0)).await;
    eventually_counts(&b, "dl.target", (0, 0)).await;
    seen.sort_unstable();
    assert_eq!(seen, (0..N).collect::<Vec<_>>());
    assert_eq!(ready_and_held(&b, "dl.amo"), (0, 0));
    b.stop();
}

/// A consumer on `queue` (prefetch `take`) that reads `take` deliveries, acks none, and is
/// returned still connected: dropping it resets its socket, as when its process is killed.
async fn greedy_consumer(b: &Broker, queue: &str, take: u16) -> crate::common::Raw {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", b.port))
        .await
        .expect("connect");
    #[allow(deprecated)] // a blocking close is what we want here: RST at once
    stream.set_linger(Some(Duration::ZERO)).expect("linger");
    let mut c = crate::common::Raw::over(stream)
        .open_as(crate::common::Handshake::default())
        .await;
    c.open_channel(1).await;
    c.qos(1, take, false).await;
    c.consume(1, queue, "greedy", false, false).await;
    for _ in 0..take {
        c.expect_deliver().await;
    }
    c
}

/// The hostile round of a quorum queue's delivery limit: consumers vanish (socket reset) with
/// deliveries in flight, again and again, until messages pass `x-delivery-limit` and are
/// dead-lettered at-least-once with no queue to take them (held); then the broker is killed -9
/// while another consumer holds deliveries. After the restart every message is counted once
/// (acked + ready + held = published), the held ones stay held, and when a target queue comes
/// each message reaches a consumer exactly once; the ones left in the source come redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanishing_consumers_and_a_kill_9_lose_nothing_past_the_delivery_limit() {
    use lapin::types::AMQPValue;
    const N: usize = 40;
    const ACKED: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &[]);
    let (conn, ch) = confirming_channel(&b).await;
    let mut args = dead_lettering_quorum_args("lim.target", "at-least-once");
    // Dead-lettered on the second delivery lost.
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(1));
    ch.queue_declare("lim.src".into(), durable(), args)
        .await
        .unwrap();
    publish_numbered_confirmed(&ch, "lim.src", N).await;
    // A well-behaved client takes five and acks them.
    let mut seen = Vec::new();
    for _ in 0..ACKED {
        let got = ch
            .basic_get("lim.src".into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("a message");
        seen.push(crate::common::body_number(&got.delivery.data));
        got.delivery
            .ack(lapin::options::BasicAckOptions::default())
            .await
            .unwrap();
    }
    let left = (N - ACKED) as u64;
    // Every message left is delivered once and lost: all back, none past the limit yet.
    drop(greedy_consumer(&b, "lim.src", left as u16).await);
    eventually_counts(&b, "lim.src", (left, 0)).await;
    // Twenty of them lost a second time: past the limit, dead-lettered and held.
    drop(greedy_consumer(&b, "lim.src", 20).await);
    eventually_counts(&b, "lim.src", (left - 20, 20)).await;
    // Ten more in flight when the broker dies.
    let in_flight = greedy_consumer(&b, "lim.src", 10).await;
    drop((ch, conn));
    b.kill9();
    drop(in_flight);
    let b = Broker::start(dir.path(), &[]);
    // The ten in flight are back (Warren does not count a consumer lost with the broker as a
    // failed delivery; whether it does is not what this test is about: held is fine too); the
    // twenty held are still held.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (ready, held) = loop {
        let (ready, held) = ready_and_held(&b, "lim.src");
        if ready + held == left || std::time::Instant::now() > deadline {
            break (ready, held);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready + held, left, "ready {ready} + held {held}");
    assert!(held >= 20, "the twenty held before the kill: {held} held");
    // A target comes: the held ones reach it, the ready ones stay.
    let conn = connect(&b).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("lim.target".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    eventually_counts(&b, "lim.src", (ready, 0)).await;
    let dead = b.drain("lim.target").await;
    assert_eq!(dead.len() as u64, held);
    let rest = b.drain("lim.src").await;
    assert_eq!(rest.len() as u64, ready);
    assert!(
        rest.iter().all(|(_, redelivered)| *redelivered),
        "every message left in the source was delivered before"
    );
    seen.extend(
        dead.iter()
            .chain(&rest)
            .map(|(body, _)| crate::common::body_number(body)),
    );
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..N).collect::<Vec<_>>(),
        "each message exactly once"
    );
    drop((ch, conn));
    b.stop();
}
