//! The memory alarm: a publisher that outruns its consumers on a queue that keeps messages in
//! memory is blocked (`connection.blocked`, "low on memory", as RabbitMQ says it) once the
//! messages held pass the high watermark; connections that do not publish keep working; when the
//! backlog is consumed the publisher is unblocked, and nothing it sent meanwhile is lost.
//!
//! A broker process of its own: the count of message bytes is per process.

use std::time::{Duration, Instant};

use crate::common::*;
use warren_amqp::protocol::{connection as conn, queue, AMQPClass};

const BODY: usize = 8 * 1024;

/// What the publisher heard: the blocked reason, and whether it was unblocked.
#[derive(Default)]
struct Heard {
    blocked: Option<String>,
    unblocked: bool,
}

impl Heard {
    /// Reads what the broker sends for up to `d`, returning early once `done` holds.
    async fn listen(&mut self, raw: &mut Raw, d: Duration, done: impl Fn(&Heard) -> bool) {
        let deadline = Instant::now() + d;
        while !done(self) && Instant::now() < deadline {
            match raw.recv_within(Duration::from_millis(50)).await {
                Ok(In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Blocked(b)))) => {
                    self.blocked = Some(b.reason.to_string())
                }
                Ok(In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Unblocked(_)))) => {
                    self.unblocked = true
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => {}
            }
        }
    }
}

/// Publishes `body` to `queue` in batches of `batch`, listening between batches, until the
/// broker says connection.blocked or `max` messages have gone; then listens up to 5 s more.
/// Returns what was heard and how many were published.
async fn publish_until_blocked(
    publisher: &mut Raw,
    queue: &str,
    body: &[u8],
    batch: u64,
    max: u64,
) -> (Heard, u64) {
    let (mut heard, mut published) = (Heard::default(), 0u64);
    while heard.blocked.is_none() && published < max {
        for _ in 0..batch {
            publisher.publish(1, "", queue, body).await;
            published += 1;
        }
        heard
            .listen(publisher, Duration::from_millis(20), |h| {
                h.blocked.is_some()
            })
            .await;
    }
    heard
        .listen(publisher, Duration::from_secs(5), |h| h.blocked.is_some())
        .await;
    (heard, published)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_beyond_the_memory_watermark_is_blocked_until_the_backlog_drains() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 8 MB of messages: about a thousand 8 KiB bodies.
    let broker = ChildBroker::start(
        dir.path(),
        &["--vm-memory-high-watermark-absolute", "8000000"],
    );
    let addr = ([127, 0, 0, 1], broker.port).into();

    let mut publisher = Raw::open(addr).await;
    publisher.open_channel(1).await;
    publisher.declare(1, "backlog", QOpts::default()).await;
    let mut other = Raw::open(addr).await;
    other.open_channel(1).await;

    // Transient messages, no consumer: the backlog stays in memory until the alarm goes off.
    let body = vec![b'm'; BODY];
    let (mut heard, mut published) =
        publish_until_blocked(&mut publisher, "backlog", &body, 50, 5_000).await;
    assert_eq!(
        heard.blocked.as_deref(),
        Some("low on memory"),
        "no connection.blocked after {published} messages of {BODY} bytes"
    );
    assert!(
        published * (BODY as u64) >= 8_000_000,
        "blocked before the watermark"
    );
    // The health check reports it as RabbitMQ's does.
    let (status, health) = broker.http_get("/api/health/checks/alarms");
    assert_eq!(status, 503, "{health}");
    assert!(
        health.contains(r#""resource":"memory""#) && health.contains(r#""status":"failed""#),
        "{health}"
    );
    // Sent while blocked: the broker does not read it until the alarm clears.
    for _ in 0..10 {
        publisher.publish(1, "", "backlog", &body).await;
        published += 1;
    }

    // A connection that has not published is not blocked: it drains the backlog.
    let purged = match other
        .call(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
                queue: "backlog".into(),
                nowait: false,
            })),
        )
        .await
    {
        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok)) => u64::from(ok.message_count),
        other => panic!("expected purge-ok, got {other:?}"),
    };
    assert!(purged > 0);
    heard
        .listen(&mut publisher, Duration::from_secs(10), |h| h.unblocked)
        .await;
    assert!(
        heard.unblocked,
        "no connection.unblocked once the backlog was purged"
    );

    // What was sent while blocked arrives now: purged + left = every publish.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = 0;
    while purged + left < published && Instant::now() < deadline {
        left = u64::from(
            other
                .declare(
                    1,
                    "backlog",
                    QOpts {
                        passive: true,
                        ..Default::default()
                    },
                )
                .await
                .message_count,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(purged + left, published, "a publish was lost");
    publisher.close().await;
    other.close().await;
    broker.stop();
}

/// Sends as much of `bytes` as the broker takes within `d`; returns whether all of it went.
async fn send_while_read(raw: &mut Raw, bytes: &[u8], d: Duration) -> bool {
    tokio::time::timeout(d, raw.send(bytes)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_transactions_count_towards_the_memory_alarm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = ChildBroker::start(
        dir.path(),
        &["--vm-memory-high-watermark-absolute", "20000000"],
    );
    let addr = ([127, 0, 0, 1], broker.port).into();
    let rss_before = broker.rss();
    let mut publisher = Raw::open(addr).await;
    publisher.open_channel(1).await;
    publisher.declare(1, "tx-backlog", QOpts::default()).await;
    publisher.call(1, tx_select()).await;
    // 1 MB messages that are never committed: RabbitMQ's alarm sees them, so must ours.
    let body = vec![b't'; 1_000_000];
    let (heard, sent) = publish_until_blocked(&mut publisher, "tx-backlog", &body, 1, 200).await;
    assert_eq!(
        heard.blocked.as_deref(),
        Some("low on memory"),
        "no connection.blocked after {sent} uncommitted 1 MB publishes"
    );
    let grown = broker.rss().saturating_sub(rss_before);
    assert!(grown < 150_000_000, "RSS grew by {grown} bytes");
    // Dropping the connection drops the transaction: the alarm clears.
    drop(publisher);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = broker.http_get("/api/health/checks/alarms");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the alarm never cleared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_received_bodies_count_towards_the_memory_alarm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = ChildBroker::start(
        dir.path(),
        &["--vm-memory-high-watermark-absolute", "20000000"],
    );
    let addr = ([127, 0, 0, 1], broker.port).into();
    let rss_before = broker.rss();
    // Connections that each start a 120 MB message and send part of its body.
    let mut clients = Vec::new();
    let mut blocked = 0;
    for _ in 0..8 {
        let mut r = Raw::open(addr).await;
        r.open_channel(1).await;
        let mut bytes = publish_bytes(1, "", "nowhere");
        bytes.extend(header_bytes(1, 120_000_000));
        r.send(&bytes).await;
        let chunk = body_bytes(1, &vec![b'p'; 100_000]);
        for _ in 0..100 {
            if !send_while_read(&mut r, &chunk, Duration::from_millis(500)).await {
                break;
            }
        }
        let mut heard = Heard::default();
        heard
            .listen(&mut r, Duration::from_millis(500), |h| h.blocked.is_some())
            .await;
        blocked += usize::from(heard.blocked.is_some());
        clients.push(r);
    }
    assert!(blocked > 0, "no connection was blocked");
    let grown = broker.rss().saturating_sub(rss_before);
    assert!(grown < 250_000_000, "RSS grew by {grown} bytes");
    // Clients that do not publish are still served.
    let mut other = Raw::open(addr).await;
    other.open_channel(1).await;
    other.declare(1, "still-served", QOpts::default()).await;
    other.close().await;
    drop(clients);
    broker.stop();
}
