//! Hostile and broken clients against a live broker. Each test plays a client RabbitMQ users meet
//! in production (one that vanishes with deliveries in flight, one that freezes, one that sends a
//! pathological routing key or an oversize message) and asserts what RabbitMQ's clients observe:
//! every message accounted for (published = still queued + consumed), other clients unaffected,
//! only the offending channel or connection closed.
//!
//! `WARREN_SOAK_ROUNDS=N cargo test --release --test integration adversarial::soak -- --ignored`
//! runs the vanishing-consumer cases N times with random timing (outside CI).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::net::TcpStream;
use warren_amqp::protocol::{
    basic, channel as chan, connection as conn, exchange, queue, AMQPClass,
};
use warren_amqp::types::{AMQPValue, FieldTable, LongString};

/// How long the broker may take to hand back what a vanished client held.
const SETTLE: Duration = Duration::from_secs(30);

/// The kinds of queue a vanishing consumer is tried on.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Transient messages on a non-durable queue.
    Transient,
    /// Persistent messages on a durable queue, paged out beyond a small memory limit.
    DurablePaged,
    /// A priority queue (x-max-priority 5), messages of every priority.
    Priority,
}

fn declare_kind(q: &str, kind: Kind) -> AMQPClass {
    let mut arguments = FieldTable::default();
    if let Kind::Priority = kind {
        arguments.insert("x-max-priority".into(), AMQPValue::ShortShortInt(5));
    }
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: q.into(),
        passive: false,
        durable: matches!(kind, Kind::DurablePaged),
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments,
    }))
}

/// Publishes `n` messages to `q` (declared non-durable) and waits until the queue holds them all.
async fn fill(addr: SocketAddr, q: &str, n: usize, size: usize) -> Raw {
    fill_kind(addr, q, n, size, Kind::Transient).await
}

async fn fill_kind(addr: SocketAddr, q: &str, n: usize, size: usize, kind: Kind) -> Raw {
    let mut r = Raw::open(addr).await;
    r.open_channel(1).await;
    let ok = r.call(1, declare_kind(q, kind)).await;
    assert!(
        matches!(ok, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
        "{ok:?}"
    );
    for i in 0..n {
        let b = numbered_body(i, size);
        match kind {
            Kind::Transient => r.publish(1, "", q, &b).await,
            Kind::DurablePaged => r.publish_persistent(1, q, &b).await,
            Kind::Priority => {
                // Property flags with only priority (0x0800), then its value.
                let mut bytes = publish_bytes(1, "", q);
                let mut header = vec![0, 60, 0, 0];
                header.extend_from_slice(&(b.len() as u64).to_be_bytes());
                header.extend_from_slice(&[0x08, 0x00, (i % 7) as u8]);
                bytes.extend(frame_bytes(2, 1, &header));
                bytes.extend(body_bytes(1, &b));
                r.send(&bytes).await;
            }
        }
    }
    let (ready, _) = wait_for(&mut r, q, Duration::from_secs(60), |ready, _| ready == n).await;
    assert_eq!(ready, n, "queue {q} never held the {n} messages published");
    r
}

/// (ready messages, consumers) of `q`, from a passive declare.
async fn counts(r: &mut Raw, q: &str) -> (usize, usize) {
    match r.call(1, passive(q)).await {
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => {
            (ok.message_count as usize, ok.consumer_count as usize)
        }
        other => panic!("expected declare-ok for {q}, got {other:?}"),
    }
}

/// Polls the queue's counts until `done` holds or `limit` passes; returns the last counts.
async fn wait_for(
    r: &mut Raw,
    q: &str,
    limit: Duration,
    done: impl Fn(usize, usize) -> bool,
) -> (usize, usize) {
    let deadline = Instant::now() + limit;
    loop {
        let (ready, consumers) = counts(r, q).await;
        if done(ready, consumers) || Instant::now() >= deadline {
            return (ready, consumers);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Drains `q` with basic.get and checks that it holds each of messages 0..n exactly once;
/// returns how many came back flagged redelivered.
async fn drain_exactly(r: &mut Raw, q: &str, n: usize) -> usize {
    let mut seen = HashSet::new();
    let mut redelivered = 0;
    while let Some(m) = r.get(1, q, true).await {
        let id = body_number(&m.body);
        assert!(seen.insert(id), "message {id} twice");
        redelivered += usize::from(m.redelivered());
    }
    assert_eq!(seen.len(), n, "messages lost");
    redelivered
}

/// A consumer without a prefetch limit on `q` that reads `take` deliveries and acks none.
async fn greedy_consumer(addr: SocketAddr, q: &str, h: Handshake, take: usize) -> Raw {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let mut c = Raw::over(stream).open_as(h).await;
    c.open_channel(1).await;
    c.consume(1, q, "greedy", false, false).await;
    for _ in 0..take {
        c.expect_deliver().await;
    }
    c
}

/// How the consumer goes away.
#[derive(Debug, Clone, Copy)]
enum Vanish {
    /// connection.close without closing its channel first (the Java and Go clients do this).
    CloseWithoutChannelClose,
    /// The socket is reset (SO_LINGER 0), as when the process is killed.
    Reset,
    /// The client half-closes its socket (EOF) without a word.
    Eof,
}

async fn vanish_with_deliveries_in_flight(how: Vanish, n: usize, take: usize) {
    vanish_from(how, n, take, Kind::Transient, 0).await;
}

/// A consumer (prefetch `prefetch`, 0 for none) on a queue of `kind` with `n` messages reads
/// `take` deliveries and goes away `how`: every message is back, the seen ones redelivered.
async fn vanish_from(how: Vanish, n: usize, take: usize, kind: Kind, prefetch: u16) {
    let b = start_with(|c| c.queue_memory_limit = 256 * 1024).await;
    let q = name("vanish");
    let mut observer = fill_kind(b.addr, &q, n, 512, kind).await;
    let stream = TcpStream::connect(b.addr).await.expect("connect");
    if matches!(how, Vanish::Reset) {
        #[allow(deprecated)] // a blocking close is what we want here: RST at once
        stream.set_linger(Some(Duration::ZERO)).expect("linger");
    }
    let mut c = Raw::over(stream).open_as(Handshake::default()).await;
    c.open_channel(1).await;
    if prefetch > 0 {
        c.qos(1, prefetch, false).await;
    }
    c.consume(1, &q, "greedy", false, false).await;
    for _ in 0..take {
        c.expect_deliver().await;
    }
    match how {
        Vanish::CloseWithoutChannelClose => c.close().await,
        Vanish::Reset => drop(c),
        Vanish::Eof => c.shutdown_write().await,
    }
    let (ready, consumers) = wait_for(&mut observer, &q, SETTLE, |ready, consumers| {
        ready == n && consumers == 0
    })
    .await;
    assert_eq!(
        (ready, consumers),
        (n, 0),
        "{how:?} on {kind:?}: every delivery must be back in the queue"
    );
    let redelivered = drain_exactly(&mut observer, &q, n).await;
    assert!(
        redelivered >= take,
        "{how:?} on {kind:?}: the {take} deliveries the client saw come back redelivered ({redelivered})"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_vanishing_from_durable_paged_and_priority_queues_lose_nothing() {
    for kind in [Kind::DurablePaged, Kind::Priority] {
        for (how, prefetch) in [
            (Vanish::CloseWithoutChannelClose, 0),
            (Vanish::Reset, 100),
            (Vanish::Eof, 0),
        ] {
            vanish_from(how, 3000, 50, kind, prefetch).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_closing_its_connection_without_channel_close_loses_nothing() {
    vanish_with_deliveries_in_flight(Vanish::CloseWithoutChannelClose, 5000, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_whose_socket_is_reset_loses_nothing() {
    vanish_with_deliveries_in_flight(Vanish::Reset, 5000, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_whose_socket_ends_loses_nothing() {
    vanish_with_deliveries_in_flight(Vanish::Eof, 5000, 50).await;
}

/// Enough 2 KiB messages (40 MB) to fill the socket buffers of a client that stops reading and
/// everything the broker queues for its writer, so that the writer is blocked.
const FLOOD: usize = 20_000;
const FLOOD_BODY: usize = 2048;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_consumer_is_dropped_on_missed_heartbeats_and_its_deliveries_requeued() {
    let b = start().await;
    let q = name("frozen");
    let mut observer = fill(b.addr, &q, FLOOD, FLOOD_BODY).await;
    let h = Handshake {
        heartbeat: 1,
        ..Handshake::default()
    };
    // Frozen (as with SIGSTOP): it neither reads nor sends anything, heartbeats included.
    let frozen = greedy_consumer(b.addr, &q, h, 10).await;
    let (ready, consumers) = wait_for(&mut observer, &q, SETTLE, |ready, consumers| {
        ready == FLOOD && consumers == 0
    })
    .await;
    assert_eq!((ready, consumers), (FLOOD, 0));
    // Other clients were served meanwhile, and still are.
    assert_alive(b.addr).await;
    drop(frozen);
    drain_exactly(&mut observer, &q, FLOOD).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_timeout_applies_to_a_consumer_that_stopped_reading() {
    let b = start_with(|c| c.consumer_timeout = 1000).await;
    let q = name("stalled");
    let mut observer = fill(b.addr, &q, FLOOD, FLOOD_BODY).await;
    // No heartbeats: only the consumer timeout can take the deliveries back.
    let stalled = greedy_consumer(b.addr, &q, Handshake::default(), 10).await;
    let (ready, consumers) = wait_for(&mut observer, &q, SETTLE, |ready, consumers| {
        ready == FLOOD && consumers == 0
    })
    .await;
    assert_eq!((ready, consumers), (FLOOD, 0));
    drop(stalled);
    drain_exactly(&mut observer, &q, FLOOD).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_topic_binding_does_not_stall_the_broker() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let q = name("topic");
    r.declare(1, &q, QOpts::default()).await;
    let matching = name("topic-match");
    r.declare(1, &matching, QOpts::default()).await;
    for (queue, pattern) in [(&q, "#.#.#.#.#.#.nomatch"), (&matching, "#.#.#.#.#.#.w99")] {
        let m = r
            .call(
                1,
                AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                    queue: queue.as_str().into(),
                    exchange: "amq.topic".into(),
                    routing_key: pattern.into(),
                    nowait: false,
                    arguments: FieldTable::default(),
                })),
            )
            .await;
        assert!(matches!(m, AMQPClass::Queue(queue::AMQPMethod::BindOk(_))));
    }
    // A 100-word key (within the 255-octet limit: one-letter words, then `w99`).
    let mut words: Vec<String> = (0..99)
        .map(|i| ((b'a' + i % 26) as char).to_string())
        .collect();
    words.push("w99".into());
    let key = words.join(".");
    assert!(key.len() <= 255);
    let mut other = Raw::open(b.addr).await;
    other.open_channel(1).await;
    for _ in 0..20 {
        r.publish(1, "amq.topic", &key, b"x").await;
    }
    // Another client is served at once (within the usual 5 s), and routing was right.
    let (ready, _) = counts(&mut other, &matching).await;
    let (ready, _) = if ready < 20 {
        wait_for(&mut other, &matching, Duration::from_secs(5), |r, _| {
            r == 20
        })
        .await
    } else {
        (ready, 0)
    };
    assert_eq!(ready, 20);
    assert_eq!(counts(&mut other, &q).await.0, 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_closes_only_its_channel() {
    let b = start_with(|c| c.max_message_size = 1000).await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    let q = name("big");
    r.declare(2, &q, QOpts::default()).await;
    // Header and body frames go out together, as any client sends them.
    let big = vec![b'b'; 5000];
    let mut bytes = publish_bytes(1, "", q.as_str());
    bytes.extend(header_bytes(1, big.len() as u64));
    for part in big.chunks(1000) {
        bytes.extend(body_bytes(1, part));
    }
    r.send(&bytes).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(406, 60, 40);
    c.assert_text(
        "PRECONDITION_FAILED - message size 5000 is larger than configured max size 1000",
    );
    // The connection lives on: the other channel works, the closed one can be opened again.
    r.publish(2, "", &q, b"small").await;
    r.open_channel(1).await;
    r.publish(1, "", &q, b"small again").await;
    assert_eq!(r.get(2, &q, true).await.expect("first").body, b"small");
    assert_eq!(
        r.get(2, &q, true).await.expect("second").body,
        b"small again"
    );
    r.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_longer_than_its_header_is_505_at_the_next_frame() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let mut bytes = publish_bytes(1, "", "nowhere");
    bytes.extend(header_bytes(1, 5));
    bytes.extend(body_bytes(1, b"0123456789"));
    r.send(&bytes).await;
    // As RabbitMQ: the extra octets are swallowed; the next method is the error.
    r.expect_silence(QUIET).await;
    r.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 1,
            global: false,
        })),
    )
    .await;
    let c = r.expect_connection_close_ok().await;
    assert_eq!(c.code, 505, "{c:?}");
    assert_alive(b.addr).await;
    b.stop().await;
}

fn start_ok_with_padding(padding: usize) -> Vec<u8> {
    let mut props = FieldTable::default();
    props.insert(
        "padding".into(),
        AMQPValue::LongString(LongString::from(vec![b'p'; padding])),
    );
    method_bytes(
        0,
        &AMQPClass::Connection(conn::AMQPMethod::StartOk(conn::StartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: LongString::from(plain("guest", "guest")),
            locale: "en_US".into(),
        })),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_tune_are_limited_to_4096_octets() {
    let b = start().await;
    // 128 KiB before logging in: dropped without a word, nothing buffered.
    let mut r = Raw::start(b.addr).await;
    let big = start_ok_with_padding(128 * 1024);
    let _ = r.try_send(&big).await;
    r.expect_eof_without_close(T).await;
    // Just over the limit is refused too; just under it is fine.
    let mut r = Raw::start(b.addr).await;
    let over = start_ok_with_padding(4096);
    let _ = r.try_send(&over).await;
    r.expect_eof_without_close(T).await;
    let mut r = Raw::start(b.addr).await;
    let under = start_ok_with_padding(3500);
    assert!(under.len() - 8 <= 4096);
    r.send(&under).await;
    r.expect_tune().await;
    assert_alive(b.addr).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_declare_storm_on_a_vanishing_connection_leaves_the_broker_serving() {
    // A client that opens channels, declares, publishes and resets mid-way, many times over.
    let b = start().await;
    let q = name("storm");
    let mut observer = Raw::open(b.addr).await;
    observer.open_channel(1).await;
    observer.declare(1, &q, QOpts::default()).await;
    let mut published = 0;
    for round in 0..20 {
        let stream = TcpStream::connect(b.addr).await.expect("connect");
        #[allow(deprecated)]
        stream.set_linger(Some(Duration::ZERO)).expect("linger");
        let mut r = Raw::over(stream).open_as(Handshake::default()).await;
        r.open_channel(1).await;
        r.send_method(
            1,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: format!("storm-{round}").as_str().into(),
                kind: "fanout".into(),
                passive: false,
                durable: false,
                auto_delete: false,
                internal: false,
                nowait: true,
                arguments: FieldTable::default(),
            })),
        )
        .await;
        for i in 0..50 {
            r.publish(1, "", &q, &numbered_body(published + i, 16))
                .await;
        }
        r.ping(1).await;
        published += 50;
        // Half a frame, then the reset.
        let half = method_bytes(
            1,
            &AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
                queue: q.as_str().into(),
                nowait: false,
            })),
        );
        let _ = r.try_send(&half[..half.len() / 2]).await;
        drop(r);
    }
    let (ready, _) = wait_for(&mut observer, &q, SETTLE, |ready, _| ready == published).await;
    assert_eq!(ready, published);
    drain_exactly(&mut observer, &q, published).await;
    b.stop().await;
}

/// The vanishing-consumer cases over and over with random timing: how many deliveries the client
/// reads before it goes, and how it goes. Outside CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn soak_vanishing_consumers() {
    use rand::Rng;
    let rounds: usize = std::env::var("WARREN_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    for round in 0..rounds {
        let (how, take, n) = {
            let mut rng = rand::rng();
            let how = match rng.random_range(0..3) {
                0 => Vanish::CloseWithoutChannelClose,
                1 => Vanish::Reset,
                _ => Vanish::Eof,
            };
            (how, rng.random_range(0..500), rng.random_range(500..10_000))
        };
        eprintln!("round {round}: {how:?}, {n} messages, client reads {take}");
        vanish_with_deliveries_in_flight(how, n, take.min(n)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_max_zero_means_no_limit() {
    let b = start_with(|c| c.channel_max = 0).await;
    let mut r = Raw::start(b.addr).await;
    r.start_ok(&Handshake::default()).await;
    let tune = r.expect_tune().await;
    assert_eq!(tune.channel_max, 0);
    let h = Handshake {
        channel_max: Some(0),
        ..Handshake::default()
    };
    r.tune_ok(&h, &tune).await;
    r.send_method(
        0,
        AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open {
            virtual_host: "/".into(),
        })),
    )
    .await;
    assert!(matches!(
        r.recv().await,
        In::Method(0, AMQPClass::Connection(conn::AMQPMethod::OpenOk(_)))
    ));
    for ch in 1..=3000 {
        r.open_channel(ch).await;
    }
    r.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_ok_asking_for_no_channel_limit_when_the_server_has_one_is_refused() {
    // RabbitMQ: a client may not answer 0 ("no limit") to a limit the server offered.
    let b = start().await;
    let mut r = Raw::start(b.addr).await;
    r.start_ok(&Handshake::default()).await;
    let tune = r.expect_tune().await;
    let h = Handshake {
        channel_max: Some(0),
        ..Handshake::default()
    };
    r.tune_ok(&h, &tune).await;
    r.expect_eof_without_close(T).await;
    assert_alive(b.addr).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_sockets_are_closed_and_never_starve_real_clients() {
    let b = start().await;
    // Sockets that say nothing, half a protocol header, or stop in the middle of start-ok.
    let mut idle = Vec::new();
    for i in 0..600 {
        let mut s = TcpStream::connect(b.addr).await.expect("connect");
        use tokio::io::AsyncWriteExt;
        match i % 3 {
            0 => {}
            1 => s.write_all(b"AMQP").await.expect("write"),
            _ => {
                s.write_all(b"AMQP\x00\x00\x09\x01").await.expect("write");
                let start_ok = start_ok_with_padding(10);
                s.write_all(&start_ok[..start_ok.len() / 2])
                    .await
                    .expect("write");
            }
        }
        idle.push(s);
    }
    // Real clients are served meanwhile.
    assert_alive(b.addr).await;
    // And the broker closes every one of them once the handshake timeout (10 s) has passed.
    let deadline = Instant::now() + Duration::from_secs(30);
    for mut s in idle {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, s.read(&mut buf)).await {
                Err(_) => panic!("an idle socket was still open after 30 s"),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {} // connection.start for those that sent a header
            }
        }
    }
    assert_alive(b.addr).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_channel_closes_leave_the_connection_working() {
    // amqp091-go's test for its issue 43: an error on channel 1 and the client's own close of
    // channel 1 cross on the wire; the client answers the broker's close with close-ok.
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    let mut bytes = publish_bytes(1, "no-such-exchange", "k");
    bytes.extend(header_bytes(1, 1));
    bytes.extend(body_bytes(1, b"x"));
    bytes.extend(method_bytes(1, &channel_close()));
    r.send(&bytes).await;
    let (mut closed, mut close_ok) = (None, false);
    while closed.is_none() || !close_ok {
        match r.recv().await {
            In::Method(1, AMQPClass::Channel(chan::AMQPMethod::Close(c))) => closed = Some(c),
            In::Method(1, AMQPClass::Channel(chan::AMQPMethod::CloseOk(_))) => close_ok = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(closed.map(|c| c.reply_code), Some(404));
    r.send_method(
        1,
        AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
    )
    .await;
    // The connection is fine: channel 2 works and channel 1 opens again.
    r.ping(2).await;
    r.open_channel(1).await;
    r.ping(1).await;
    r.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_replies_to_a_requester_that_is_not_reading_arrive_in_order_later() {
    // A responder floods replies to a requester that stopped reading: they wait (as messages,
    // counted by the memory alarm) and arrive in order once it reads again.
    let b = start().await;
    let requests = name("requests");
    let mut requester = Raw::open(b.addr).await;
    requester.open_channel(1).await;
    requester.declare(1, &requests, QOpts::default()).await;
    requester
        .consume(1, "amq.rabbitmq.reply-to", "replies", true, false)
        .await;
    let mut bytes = publish_bytes(1, "", requests.as_str());
    // Properties: reply-to (flag bit 9) = amq.rabbitmq.reply-to.
    let reply_to = b"amq.rabbitmq.reply-to";
    let mut header = vec![0, 60, 0, 0];
    header.extend_from_slice(&7u64.to_be_bytes());
    header.extend_from_slice(&[0x02, 0x00, reply_to.len() as u8]);
    header.extend_from_slice(reply_to);
    bytes.extend(frame_bytes(2, 1, &header));
    bytes.extend(body_bytes(1, b"request"));
    requester.send(&bytes).await;
    requester.ping(1).await;

    let mut responder = Raw::open(b.addr).await;
    responder.open_channel(1).await;
    let request = responder
        .get(1, &requests, true)
        .await
        .expect("the request");
    let address = request
        .properties
        .reply_to()
        .as_ref()
        .expect("reply_to")
        .as_str()
        .to_owned();
    assert!(address.starts_with("amq.rabbitmq.reply-to."), "{address}");
    const REPLIES: usize = 10_000;
    for i in 0..REPLIES {
        responder
            .publish(1, "", &address, &numbered_body(i, 2048))
            .await;
    }
    responder.ping(1).await;
    assert_alive(b.addr).await;
    for i in 0..REPLIES {
        let m = requester.expect_deliver().await;
        assert_eq!(body_number(&m.body), i, "replies out of order");
    }
    requester.close().await;
    responder.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_ok_is_never_lost_to_a_reset() {
    // amqp091-go's TestConcurrentClose: frames still arriving after connection.close must not
    // make the broker reset the socket before the client has read close-ok. The broker lingers
    // (up to 2 s) for the client to close its side, so the attempts run side by side.
    let b = start().await;
    let attempts = (0..20).map(|_| async {
        let mut r = Raw::open(b.addr).await;
        r.open_channel(1).await;
        let close = method_bytes(
            0,
            &AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        );
        let mut bytes = close.clone();
        for _ in 0..32 {
            bytes.extend(&close);
            bytes.extend(frame_bytes(8, 0, &[]));
        }
        r.send(&bytes).await;
        let (raw, closed) = r.read_raw(1 << 20, T).await;
        assert!(closed, "the broker did not close the socket");
        let close_ok = method_bytes(
            0,
            &AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
        );
        assert!(
            raw.windows(close_ok.len())
                .any(|w| w == close_ok.as_slice()),
            "no connection.close-ok before the end of the stream: {raw:?}"
        );
    });
    futures::future::join_all(attempts).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_that_keeps_reading_is_not_taken_for_a_dead_one() {
    // Heartbeat 1 s, a large backlog, and a consumer that reads slowly: while its output backs
    // up the broker does not read its heartbeats, but the bytes it takes show it is alive.
    let b = start().await;
    let q = name("slow");
    // More than the writer's queue and the socket buffers hold, so that output backs up.
    let n = FLOOD;
    let mut observer = fill(b.addr, &q, n, FLOOD_BODY).await;
    let h = Handshake {
        heartbeat: 1,
        ..Handshake::default()
    };
    let mut c = greedy_consumer(b.addr, &q, h, 1).await;
    let heartbeat = frame_bytes(8, 0, &[]);
    let started = Instant::now();
    let mut last_beat = Instant::now();
    let mut got = 1;
    // Slowly for the first 5 s (far longer than two heartbeat intervals), then at full speed.
    while got < n {
        c.expect_deliver().await;
        got += 1;
        if last_beat.elapsed() > Duration::from_millis(300) {
            c.send(&heartbeat).await;
            last_beat = Instant::now();
        }
        if started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Still its consumer: nothing went back to the queue.
    assert_eq!(counts(&mut observer, &q).await, (0, 1));
    c.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_close_ok_the_broker_waits_for_the_client_to_close_first() {
    // As RabbitMQ: no FIN right behind close-ok (amqp091-go reports that as 501 EOF to anyone
    // still waiting on the connection); the broker closes once the client has.
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.close().await;
    let (rest, closed) = r.read_raw(1, Duration::from_millis(500)).await;
    assert!(!closed && rest.is_empty(), "the broker closed first");
    r.shutdown_write().await;
    let (_, closed) = r.read_raw(1, T).await;
    assert!(closed, "the broker did not close after the client did");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_delete_queue_is_gone_when_its_consumers_connection_gets_close_ok() {
    // A client that reconnects at once must not find the old auto-delete queue still there
    // (and see it vanish between its declare and its consume).
    let b = start().await;
    for round in 0..20 {
        let q = format!("{}-{round}", name("autodel"));
        let mut c = Raw::open(b.addr).await;
        c.open_channel(1).await;
        c.declare(
            1,
            &q,
            QOpts {
                auto_delete: true,
                ..QOpts::default()
            },
        )
        .await;
        c.consume(1, &q, "c", false, false).await;
        c.close().await;
        let mut other = Raw::open(b.addr).await;
        other.open_channel(1).await;
        other.send_method(1, passive(&q)).await;
        other.expect_channel_close(1).await.assert(404, 50, 10);
    }
    b.stop().await;
}
