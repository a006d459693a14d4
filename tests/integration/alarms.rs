//! The disk alarm: below the free-space limit, publishing connections get `connection.blocked`
//! and are no longer read from (and show as `blocked`); connections that only consume keep
//! working.

use std::time::Duration;

use crate::common::*;
use warren_amqp::protocol::{connection as conn, AMQPClass};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_blocked_while_disk_is_low_and_consumers_are_not() {
    // A limit no disk can meet keeps the alarm on.
    let b = start_with(|c| c.disk_free_limit = u64::MAX).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut publisher = Raw::open(b.addr).await;
    publisher.open_channel(1).await;
    publisher.declare(1, "alarmed", QOpts::default()).await;
    publisher.publish(1, "", "alarmed", b"first").await;
    let (ch, m) = publisher.expect_method().await;
    assert_eq!(ch, 0);
    match m {
        AMQPClass::Connection(conn::AMQPMethod::Blocked(b)) => {
            assert_eq!(b.reason.as_str(), "low on disk")
        }
        other => panic!("expected connection.blocked, got {other:?}"),
    }
    // The management API shows it blocked, as RabbitMQ does.
    let (_, listing) = http_get(b.http_addr, "/api/connections", Some(("guest", "guest")));
    let listing: serde_json::Value = serde_json::from_str(&listing).expect("json");
    assert_eq!(listing[0]["state"], "blocked", "{listing}");
    // Further publishes are not read while the alarm lasts.
    publisher.publish(1, "", "alarmed", b"second").await;
    publisher.publish(1, "", "alarmed", b"third").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A connection that never published is not blocked: it reads the queue.
    let c = lapin_connect(&b).await;
    let consumer = lapin_channel(&c).await;
    assert_eq!(
        lapin_count(&consumer, "alarmed").await,
        1,
        "only the publish read before blocking arrived"
    );
    let got = lapin_get(&consumer, "alarmed")
        .await
        .expect("the first message");
    assert_eq!(got.delivery.data, b"first");
}
