//! Quorum queues against the worst moments: consumers that vanish holding everything while
//! their dead-letters are confirmed through a killed leader, a node frozen while its members
//! sleep, a new queue's leader-to-be lost before any use, and a node killed while most of its
//! queues were never used.

use lapin::types::{AMQPValue, FieldTable};

use super::*;

/// Publishes `numbers` to `queue` with confirms, each awaited for up to a minute (a leader
/// frozen or killed first has to be noticed and replaced).
async fn publish_through_a_leader_change(
    ch: &lapin::Channel,
    queue: &str,
    numbers: std::ops::Range<usize>,
) {
    for i in numbers {
        let props = lapin::BasicProperties::default().with_delivery_mode(2);
        let confirm = crate::common::within_long(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                queue.into(),
                Default::default(),
                &numbered_body(i, 64),
                props,
            ),
        )
        .await
        .expect("basic.publish");
        let confirmation = crate::common::within_long("the confirm", confirm)
            .await
            .expect("confirm");
        assert!(
            confirmation.is_ack(),
            "message {i} nacked: {confirmation:?}"
        );
    }
}

/// A consumer on `node` (its socket reset when it goes, as when its process is killed) that
/// takes all `n` messages of `queue` and vanishes without settling one.
async fn take_all_and_vanish(node: &ChildBroker, queue: &str, n: usize) {
    let mut consumer = resetting_client(node).await;
    consumer.open_channel(1).await;
    consumer.qos(1, n as u16, false).await;
    consumer.consume(1, queue, "vanishing", false, false).await;
    for _ in 0..n {
        consumer.expect_deliver().await;
    }
    drop(consumer);
}

/// (messages_ready, messages_unacknowledged, messages_dlx) of `queue` as `node` reports them.
fn ready_unacked_held(node: &ChildBroker, queue: &str) -> (u64, u64, u64) {
    let (status, q) = api(node, "GET", &format!("/api/queues/%2f/{queue}"), None);
    assert_eq!(status, 200, "{q}");
    let count = |field: &str| q[field].as_u64().unwrap_or(u64::MAX);
    (
        count("messages_ready"),
        count("messages_unacknowledged"),
        count("messages_dlx"),
    )
}

/// A quorum queue with `x-delivery-limit: 1` and at-least-once dead-lettering to a target with
/// room for a third of them: two consumers on other nodes take every message and vanish (socket
/// reset), the second return passes the limit and dead-letters them all; most are held, routed
/// again as a consumer drains the target, and the source's leader is killed while that goes on.
/// Every published message reaches the target (a dead-letter confirmed whose release the kill
/// lost may come twice: at-least-once), none is left in the source, and the killed node, back,
/// agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_consumers_dead_letters_survive_the_source_leaders_kill() {
    const N: usize = 240;
    const ROOM: usize = N / 3;
    let (cluster, n1, n2, n3) = three_formed().await;
    let c2 = n2.connect().await;
    let mut limited = FieldTable::default();
    limited.insert("x-max-length".into(), AMQPValue::LongInt(ROOM as i32));
    limited.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    declare_quorum_with(&c2, "vanish.target", limited).await;
    let c1 = n1.connect().await;
    let mut args = FieldTable::default();
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(1));
    dead_letter_to(&mut args, "vanish.target", "at-least-once");
    declare_quorum_with(&c1, "vanish.src", args).await;
    leader_among(&n2, "vanish.src", &["n1"]);
    leader_among(&n3, "vanish.target", &["n2"]);
    let ch = confirm_channel(&c2).await;
    publish_numbered(&ch, "vanish.src", 0..N, 64).await;
    // Returned once: every message back, ready.
    take_all_and_vanish(&n3, "vanish.src", N).await;
    eventually(
        "every message returned once",
        || ready_unacked_held(&n2, "vanish.src"),
        |&c| c == (N as u64, 0, 0),
    );
    // Returned twice: past the limit, dead-lettered; the target takes a third, the source holds
    // the rest.
    take_all_and_vanish(&n2, "vanish.src", N).await;
    eventually(
        "a third in the target, the rest held",
        || {
            (
                queue_counts(&n3, "vanish.target").0,
                ready_unacked_held(&n3, "vanish.src"),
            )
        },
        |&(target, src)| target == ROOM as u64 && src == (0, 0, (N - ROOM) as u64),
    );
    // A consumer drains the target as the held ones are routed to it; the source's leader is
    // killed half way.
    drop((ch, c1, c2));
    let c3 = n3.connect().await;
    let ch3 = crate::common::lapin_channel(&c3).await;
    ch3.basic_qos(20, Default::default()).await.expect("qos");
    let mut consumer = consume(&ch3, "vanish.target", "draining").await;
    let mut got = take_numbers(&mut consumer, N / 2).await;
    n1.kill9();
    let mut seen: std::collections::BTreeSet<usize> = got.iter().copied().collect();
    while seen.len() < N {
        let more = take_numbers(&mut consumer, 1).await;
        seen.extend(more.iter().copied());
        got.extend(more);
    }
    eventually(
        "nothing left in the source",
        || ready_unacked_held(&n2, "vanish.src"),
        |&c| c == (0, 0, 0),
    );
    drop((consumer, ch3, c3));
    // What the target still has is what was routed twice; the numbers are all of 0..N.
    let rest = n3.drain("vanish.target").await;
    got.extend(rest.iter().map(|(body, _)| body_number(body)));
    let duplicates = got.len() - N;
    eprintln!("dead-letters routed twice through the kill: {duplicates}");
    assert_eq!(seen, (0..N).collect());
    let n1 = cluster.start(0);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    eventually(
        "the restarted node agrees: nothing in the source or the target",
        || {
            (
                ready_unacked_held(&n1, "vanish.src"),
                queue_counts(&n1, "vanish.target").0,
            )
        },
        |&c| c == ((0, 0, 0), 0),
    );
}

/// Quorum queues led by n1, every member asleep; n1 frozen (SIGSTOP). Publishers and a getter on
/// the other nodes wake their members, which elect a leader among themselves and confirm and
/// deliver; n1 thawed catches up (its members woken by the new leader), serves every message
/// once, and every member sleeps again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_while_its_members_sleep_is_led_around_and_catches_up() {
    const QUEUES: [&str; 3] = ["frozen.a", "frozen.b", "frozen.c"];
    let cluster = Cluster {
        dormant_after: Some(1000),
        ..Cluster::new(3).await
    };
    let (_cluster, n1, n2, n3) = three_formed_of(cluster).await;
    let c1 = n1.connect().await;
    let ch1 = confirm_channel(&c1).await;
    for queue in QUEUES {
        declare_quorum(&c1, queue).await;
        publish_numbered(&ch1, queue, 0..10, 64).await;
    }
    drop((ch1, c1));
    let all_asleep = |node: &ChildBroker| {
        eventually(
            "every member asleep",
            || members_asleep(node),
            |n| *n == Some(QUEUES.len() as u64),
        )
    };
    for node in [&n1, &n2, &n3] {
        all_asleep(node);
    }
    for queue in QUEUES {
        leader_among(&n2, queue, &["n1"]);
    }
    n1.signal("STOP");
    let c2 = n2.connect().await;
    let ch2 = confirm_channel(&c2).await;
    for queue in QUEUES {
        publish_through_a_leader_change(&ch2, queue, 10..20).await;
    }
    let c3 = n3.connect().await;
    let getter = crate::common::lapin_channel(&c3).await;
    let mut got: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for queue in QUEUES {
        for _ in 0..5 {
            let m = crate::common::within_long(
                "basic.get",
                getter.basic_get(queue.into(), Default::default()),
            )
            .await
            .expect("basic.get")
            .expect("a message");
            got.entry(queue)
                .or_default()
                .push(body_number(&m.delivery.data));
            m.delivery.ack(Default::default()).await.expect("ack");
        }
    }
    drop((ch2, c2, getter, c3));
    n1.signal("CONT");
    for queue in QUEUES {
        eventually(
            "the thawed node has caught up",
            || queue_counts(&n1, queue).0,
            |&ready| ready == 15,
        );
        let rest = n1.drain(queue).await;
        let taken = got.entry(queue).or_default();
        taken.extend(rest.iter().map(|(body, _)| body_number(body)));
        taken.sort_unstable();
        assert_eq!(*taken, (0..20).collect::<Vec<_>>(), "{queue}");
    }
    for node in [&n1, &n2, &n3] {
        all_asleep(node);
    }
}

/// A quorum queue's leader killed and started again replays its log: what that log dead-lettered
/// long ago (rejected messages, at-most-once) is not dead-lettered again, whether the restarted
/// node leads again or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_does_not_dead_letter_again_what_its_log_replays() {
    const N: usize = 10;
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "replayed.target").await;
    let mut args = FieldTable::default();
    for (key, value) in [
        ("x-dead-letter-exchange", ""),
        ("x-dead-letter-routing-key", "replayed.target"),
    ] {
        args.insert(key.into(), AMQPValue::LongString(value.into()));
    }
    declare_quorum_with(&c1, "replayed.src", args).await;
    leader_among(&n2, "replayed.src", &["n1"]);
    let ch = confirm_channel(&c1).await;
    publish_numbered(&ch, "replayed.src", 0..N, 64).await;
    crate::common::get_and_reject(&crate::common::lapin_channel(&c1).await, "replayed.src", N)
        .await;
    eventually(
        "every message dead-lettered",
        || queue_counts(&n2, "replayed.target").0,
        |&n| n == N as u64,
    );
    let drained = n2.drain("replayed.target").await;
    exactly_once(&drained, 0..N);
    drop((ch, c1));
    n1.kill9();
    leader_among(&n2, "replayed.src", &["n2", "n3"]);
    let n1 = cluster.start(0);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    let c1 = n1.connect().await;
    let ch = confirm_channel(&c1).await;
    publish_numbered(&ch, "replayed.target", N..N + 1, 64).await;
    eventually(
        "n1 has the marker",
        || queue_counts(&n1, "replayed.target").0,
        |&n| n >= 1,
    );
    let drained = n3.drain("replayed.target").await;
    exactly_once(&drained, N..N + 1);
}

/// Every node killed (SIGKILL) at once and started again: no member restores a leadership of
/// before, so each group elects a leader among the restarted; a quorum queue keeps every
/// confirmed message not acked (those held unacked back, redelivered), and an at-least-once
/// source keeps the dead-letters it held, routed once a target is declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_killed_and_started_again_keeps_what_was_confirmed() {
    const N: usize = 100;
    const HELD: usize = 20;
    const ACKED: usize = 10;
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "all.q").await;
    let mut args = FieldTable::default();
    dead_letter_to(&mut args, "all.target", "at-least-once");
    declare_quorum_with(&c1, "all.src", args).await;
    let c2 = n2.connect().await;
    let ch2 = confirm_channel(&c2).await;
    publish_numbered(&ch2, "all.q", 0..N, 64).await;
    publish_numbered(&ch2, "all.src", 0..HELD, 64).await;
    crate::common::get_and_reject(&crate::common::lapin_channel(&c2).await, "all.src", HELD).await;
    // n3's consumer takes 20 and acks the first 10: 10 more come, 20 held.
    let c3 = n3.connect().await;
    let (_ch3, _consumer, held) = hold_unacked(&c3, "all.q", "holder", HELD as u16).await;
    let acked: Vec<usize> = held[..ACKED].iter().map(|d| body_number(&d.data)).collect();
    for d in &held[..ACKED] {
        d.ack(Default::default()).await.expect("ack");
    }
    eventually(
        "the acks applied, the dead-letters held",
        || {
            (
                queue_counts(&n1, "all.q"),
                ready_unacked_held(&n1, "all.src"),
            )
        },
        |&(q, src)| {
            (q.0, q.1) == ((N - HELD - ACKED) as u64, HELD as u64) && src == (0, 0, HELD as u64)
        },
    );
    drop((ch2, c1, c2, c3));
    for node in [n1, n2, n3] {
        node.kill9();
    }
    let (n1, n2, n3) = (cluster.start(0), cluster.start(1), cluster.start(2));
    formed(&cluster, &[&n1, &n2, &n3]).await;
    for queue in ["all.q", "all.src"] {
        leader_among(&n2, queue, &["n1", "n2", "n3"]);
    }
    // The consumer's node, started again, gives back what its previous life held.
    eventually(
        "what n3's consumer held back in the queue",
        || queue_counts(&n2, "all.q"),
        |&c| c == ((N - ACKED) as u64, 0, 0),
    );
    let drained = n2.drain("all.q").await;
    let redelivered = exactly_once(&drained, (0..N).filter(|n| !acked.contains(n)));
    assert_eq!(redelivered.len(), HELD, "{redelivered:?}");
    let c1 = n1.connect().await;
    declare_quorum(&c1, "all.target").await;
    eventually(
        "the held dead-letters routed",
        || {
            (
                queue_counts(&n3, "all.target").0,
                ready_unacked_held(&n3, "all.src"),
            )
        },
        |&c| c == (HELD as u64, (0, 0, 0)),
    );
    let drained = n3.drain("all.target").await;
    exactly_once(&drained, 0..HELD);
}

/// A consumer's node frozen (SIGSTOP) while the consumer holds every message of a quorum queue
/// with `x-delivery-limit: 0` and at-least-once dead-lettering: taken for gone, its deliveries
/// come back past the limit and are dead-lettered while it is frozen. Thawed, the consumer is
/// cancelled and its late acks settle nothing twice: the target has every message once, the
/// source nothing (published = in the target), on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_consumers_deliveries_are_dead_lettered_once_and_its_late_acks_settle_nothing() {
    const N: u16 = 30;
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum_with(&c1, "frozen.target", FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(0));
    dead_letter_to(&mut args, "frozen.target", "at-least-once");
    declare_quorum_with(&c1, "frozen.src", args).await;
    leader_among(&n2, "frozen.src", &["n1"]);
    let ch = confirm_channel(&c1).await;
    publish_numbered(&ch, "frozen.src", 0..usize::from(N), 64).await;
    let c3 = n3.connect().await;
    let (holder_channel, mut holder, held) = hold_unacked(&c3, "frozen.src", "holder", N).await;
    assert_eq!(ready_unacked_held(&n1, "frozen.src"), (0, u64::from(N), 0));
    n3.signal("STOP");
    eventually(
        "the frozen consumer's deliveries dead-lettered to the target",
        || {
            (
                ready_unacked_held(&n1, "frozen.src"),
                queue_counts(&n1, "frozen.target").0,
            )
        },
        |&c| c == ((0, 0, 0), u64::from(N)),
    );
    n3.signal("CONT");
    formed(&cluster, &[&n1, &n2, &n3]).await;
    cancelled_then_late_acks(&mut holder, held).await;
    // One more publish, left ready (no consumer): the late acks must not touch it either.
    publish_numbered(&ch, "frozen.src", usize::from(N)..usize::from(N) + 1, 64).await;
    for node in [&n1, &n2, &n3] {
        eventually(
            "every node: the source holding the last publish only, the target each message once",
            || {
                (
                    ready_unacked_held(node, "frozen.src"),
                    queue_counts(node, "frozen.target").0,
                )
            },
            |&c| c == ((1, 0, 0), u64::from(N)),
        );
    }
    let got = n2.drain("frozen.target").await;
    let numbers: std::collections::BTreeSet<usize> =
        got.iter().map(|(body, _)| body_number(body)).collect();
    assert_eq!(got.len(), usize::from(N), "each dead-lettered once");
    assert_eq!(numbers, (0..usize::from(N)).collect());
    drop((holder_channel, c3));
}

/// A new quorum queue's members are born dormant and asleep (no Raft instance runs until it is
/// used; the declaring node is shown as its leader), and its first use elects that node. Its
/// leader-to-be lost before any use: frozen (SIGSTOP) while another node publishes, the other
/// two elect one of themselves and confirm; killed, they go on; started again with the log it
/// was born with, it catches up with what they did meanwhile. Every confirmed message is
/// consumed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_quorum_queues_leader_to_be_frozen_or_killed_before_any_use_loses_nothing() {
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "unborn").await;
    declare_quorum(&c1, "first-use").await;
    let (c2, c3) = (n2.connect().await, n3.connect().await);
    for conn in [&c2, &c3] {
        for q in ["unborn", "first-use"] {
            eventually_async(|| async { passive(conn, q).await.ok() }, Some((0, 0))).await;
        }
    }
    for node in [&n1, &n2, &n3] {
        eventually(
            "every member asleep",
            || members_asleep(node),
            |n| *n == Some(2),
        );
        let (_, q) = api(node, "GET", "/api/queues/%2F/unborn", None);
        assert_eq!(q["leader"].as_str(), Some("n1"), "{q}");
    }
    assert_eq!(dormant_members(&n2, "unborn"), ["n1", "n2", "n3"]);
    // Its first use elects the declaring node.
    let ch2 = confirm_channel(&c2).await;
    publish_numbered(&ch2, "first-use", 0..5, 64).await;
    let status = api(&n2, "GET", "/api/queues/quorum/%2F/first-use/status", None).1;
    let n1_row = &status[0];
    assert_eq!(
        (n1_row["node"].as_str(), n1_row["raft_state"].as_str()),
        (Some("n1"), Some("leader")),
        "{status}"
    );
    assert!(n1_row["term"].as_u64() >= Some(1), "{status}");

    // Frozen before any use of "unborn": the others elect one of themselves and confirm.
    n1.signal("STOP");
    publish_through_a_leader_change(&ch2, "unborn", 0..20).await;
    let ch3 = crate::common::lapin_channel(&c3).await;
    let mut consumer = consume(&ch3, "unborn", "c3").await;
    let mut got = take_numbers(&mut consumer, 10).await;
    n1.signal("CONT");
    drop(c1);
    n1.kill9();
    publish_through_a_leader_change(&ch2, "unborn", 20..30).await;
    got.extend(take_numbers(&mut consumer, 15).await);
    drop((consumer, ch3));
    let _ = c3.close(200, "bye".into()).await;
    // Back with the log it was born with: it catches up with the 5 left.
    let n1 = cluster.start(0);
    let c1 = n1.connect().await;
    eventually_async(|| async { passive(&c1, "unborn").await.ok() }, Some((5, 0))).await;
    let ch1 = crate::common::lapin_channel(&c1).await;
    let mut consumer = consume(&ch1, "unborn", "c1").await;
    got.extend(take_numbers(&mut consumer, 5).await);
    got.sort_unstable();
    assert_eq!(got, (0..30).collect::<Vec<_>>());
    // published = consumed + still queued, on every node.
    for conn in [&c1, &c2] {
        eventually_async(
            || async { passive(conn, "unborn").await.ok() },
            Some((0, 1)),
        )
        .await;
    }
    drop(ch1);
}

/// A delivery's `x-delivery-count` header, as a number (none on a first delivery).
fn delivery_count(d: &lapin::message::Delivery) -> Option<i64> {
    let value = d
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get("x-delivery-count")?
        .clone();
    match value {
        AMQPValue::LongLongInt(n) => Some(n),
        AMQPValue::LongInt(n) => Some(i64::from(n)),
        AMQPValue::LongUInt(n) => Some(i64::from(n)),
        AMQPValue::ShortInt(n) => Some(i64::from(n)),
        other => panic!("x-delivery-count is {other:?}"),
    }
}

/// The numbers of `taken`, sorted, once each was checked: `redelivered` with `x-delivery-count`
/// 1 if a frozen consumer held it before (`held`), neither otherwise.
fn redelivered_once_if_held(
    taken: &[lapin::message::Delivery],
    held: &std::collections::BTreeSet<usize>,
) -> Vec<usize> {
    let mut numbers = Vec::new();
    for d in taken {
        let n = body_number(&d.data);
        let was_held = held.contains(&n);
        assert_eq!(d.redelivered, was_held, "message {n}: redelivered");
        assert_eq!(
            delivery_count(d),
            was_held.then_some(1),
            "message {n}: x-delivery-count"
        );
        numbers.push(n);
    }
    numbers.sort_unstable();
    numbers
}

/// A consumer's node frozen (SIGSTOP) while it holds deliveries of a quorum queue (no delivery
/// limit): taken for gone, what it held goes to a consumer on another node, redelivered with
/// `x-delivery-count` 1, and that consumer holds them too. Thawed, the frozen consumer is
/// cancelled and its late acks settle nothing the other holds; what the other requeues comes
/// back once more (`x-delivery-count` 2 for those the frozen one had). Every message is acked
/// once by a live consumer, and every node ends with the queue empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_consumers_late_acks_settle_nothing_another_consumer_holds() {
    use futures::StreamExt;
    const N: u16 = 30;
    const HELD: u16 = 10;
    const REQUEUED: usize = 5;
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "frozen.held").await;
    let ch = confirm_channel(&c1).await;
    publish_numbered(&ch, "frozen.held", 0..usize::from(N), 64).await;
    let c3 = n3.connect().await;
    let (holder_channel, mut holder, held) = hold_unacked(&c3, "frozen.held", "holder", HELD).await;
    let held_numbers: std::collections::BTreeSet<usize> =
        held.iter().map(|d| body_number(&d.data)).collect();
    eventually(
        "the holder's deliveries unacked",
        || ready_unacked_held(&n1, "frozen.held"),
        |&c| c == (u64::from(N - HELD), u64::from(HELD), 0),
    );

    n3.signal("STOP");
    eventually(
        "the frozen consumer's deliveries back in the queue",
        || queue_counts(&n1, "frozen.held"),
        |&c| c == (u64::from(N), 0, 0),
    );
    let c2 = n2.connect().await;
    let (taker_channel, _taker, taken) = hold_unacked(&c2, "frozen.held", "taker", N).await;
    let numbers = redelivered_once_if_held(&taken, &held_numbers);
    assert_eq!(numbers, (0..usize::from(N)).collect::<Vec<_>>());

    n3.signal("CONT");
    formed(&cluster, &[&n1, &n2, &n3]).await;
    cancelled_then_late_acks(&mut holder, held).await;
    // After the late acks, on their channel: the queue has nothing to give (the taker holds
    // everything), and nothing was settled.
    let got = crate::common::within_long(
        "basic.get after the late acks",
        holder_channel.basic_get("frozen.held".into(), Default::default()),
    )
    .await;
    assert!(matches!(got, Ok(None)), "{got:?}");
    for node in [&n1, &n2, &n3] {
        eventually(
            "every node: everything still unacked by the taker",
            || ready_unacked_held(node, "frozen.held"),
            |&c| c == (0, u64::from(N), 0),
        );
    }

    // The taker stops consuming, requeues a few (the frozen one's first among them) and acks
    // the rest.
    taker_channel
        .basic_cancel("taker".into(), Default::default())
        .await
        .expect("basic.cancel");
    let mut order: Vec<&lapin::message::Delivery> = taken.iter().collect();
    order.sort_by_key(|d| !held_numbers.contains(&body_number(&d.data)));
    let (requeue, ack) = order.split_at(REQUEUED);
    let requeued: std::collections::BTreeMap<usize, Option<i64>> = requeue
        .iter()
        .map(|d| (body_number(&d.data), delivery_count(d)))
        .collect();
    for d in requeue {
        d.nack(lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .expect("nack");
    }
    let mut acked: Vec<usize> = Vec::new();
    for d in ack {
        d.ack(Default::default()).await.expect("ack");
        acked.push(body_number(&d.data));
    }
    let ch1 = crate::common::lapin_channel(&c1).await;
    let mut last = consume(&ch1, "frozen.held", "last").await;
    for _ in 0..REQUEUED {
        let d = crate::common::within_long("a requeued delivery", last.next())
            .await
            .expect("consumer open")
            .expect("delivery");
        let n = body_number(&d.data);
        let before = requeued.get(&n).copied();
        assert!(before.is_some(), "message {n} was not requeued");
        assert!(d.redelivered, "message {n}: redelivered");
        assert_eq!(
            delivery_count(&d),
            Some(before.flatten().unwrap_or(0) + 1),
            "message {n}: x-delivery-count"
        );
        d.ack(Default::default()).await.expect("ack");
        acked.push(n);
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        (0..usize::from(N)).collect::<Vec<_>>(),
        "each acked once"
    );
    for node in [&n1, &n2, &n3] {
        eventually(
            "every node: the queue empty",
            || ready_unacked_held(node, "frozen.held"),
            |&c| c == (0, 0, 0),
        );
    }
    drop((taker_channel, c2, holder_channel, c3, last, ch1));
}

/// A quorum queue used, emptied and left asleep on every member (each packs its empty machine),
/// then woken by a publish: a consumer on n3 holds deliveries, n3 is frozen (SIGSTOP) at once,
/// and the queue takes it for gone: what it held goes back and is redelivered to a consumer on
/// n2 (`redelivered`, `x-delivery-count` 1), each message once. Thawed, the frozen consumer is
/// cancelled and its late acks settle nothing. Asleep and packed again everywhere, every node
/// counts the queue empty, and a publish through the once-frozen node reaches a consumer on n1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packed_quorum_queues_consumer_frozen_as_it_wakes_loses_and_doubles_nothing() {
    use futures::StreamExt;
    const FIRST: usize = 4;
    const N: u16 = 20;
    const HELD: u16 = 8;
    let q = "packed.frozen";
    let cluster = Cluster {
        dormant_after: Some(1000),
        ..Cluster::new(3).await
    };
    let (cluster, n1, n2, n3) = three_formed_of(cluster).await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, q).await;
    let ch1 = confirm_channel(&c1).await;
    publish_numbered(&ch1, q, 0..FIRST, 64).await;
    let c2 = n2.connect().await;
    let ch2 = crate::common::lapin_channel(&c2).await;
    let mut first = consume(&ch2, q, "first").await;
    let mut got = take_numbers(&mut first, FIRST).await;
    got.sort_unstable();
    assert_eq!(got, (0..FIRST).collect::<Vec<_>>());
    ch2.basic_cancel("first".into(), Default::default())
        .await
        .expect("basic.cancel");
    for node in [&n1, &n2, &n3] {
        eventually(
            "every member asleep and packed, the queue empty",
            || {
                (
                    members_asleep(node),
                    machines_packed(node),
                    queue_counts(node, q),
                )
            },
            |c| *c == (Some(1), Some(1), (0, 0, 0)),
        );
    }

    // Woken by a publish; n3's consumer takes some and its node freezes right away.
    let numbers = FIRST..FIRST + usize::from(N);
    publish_numbered(&ch1, q, numbers.clone(), 64).await;
    let c3 = n3.connect().await;
    let (holder_channel, mut holder, held) = hold_unacked(&c3, q, "holder", HELD).await;
    let held_numbers: std::collections::BTreeSet<usize> =
        held.iter().map(|d| body_number(&d.data)).collect();
    n3.signal("STOP");
    eventually(
        "the frozen consumer's deliveries back in the queue",
        || queue_counts(&n1, q),
        |&c| c == (u64::from(N), 0, 0),
    );
    let (taker_channel, taker, taken) = hold_unacked(&c2, q, "taker", N).await;
    let got = redelivered_once_if_held(&taken, &held_numbers);
    assert_eq!(
        got,
        numbers.clone().collect::<Vec<_>>(),
        "each delivered once"
    );

    n3.signal("CONT");
    formed(&cluster, &[&n1, &n2, &n3]).await;
    cancelled_then_late_acks(&mut holder, held).await;
    for node in [&n1, &n2, &n3] {
        eventually(
            "every node: everything unacked by the taker, nothing settled by the late acks",
            || ready_unacked_held(node, q),
            |&c| c == (0, u64::from(N), 0),
        );
    }
    for d in &taken {
        d.ack(Default::default()).await.expect("ack");
    }
    taker_channel
        .basic_cancel("taker".into(), Default::default())
        .await
        .expect("basic.cancel");
    drop((taker, taker_channel));
    // published = consumed: empty, asleep (and so packed) on every member again.
    for node in [&n1, &n2, &n3] {
        eventually(
            "every node: the queue empty, its member asleep and packed",
            || {
                (
                    members_asleep(node),
                    machines_packed(node),
                    queue_counts(node, q),
                )
            },
            |c| *c == (Some(1), Some(1), (0, 0, 0)),
        );
    }

    // Through the node that was frozen: a publish wakes every member and reaches n1's consumer.
    let last = FIRST + usize::from(N);
    let ch3 = confirm_channel(&c3).await;
    publish_numbered(&ch3, q, last..last + 1, 64).await;
    let ch1c = crate::common::lapin_channel(&c1).await;
    let mut after = consume(&ch1c, q, "after").await;
    let d = crate::common::within_long("the last delivery", after.next())
        .await
        .expect("consumer open")
        .expect("delivery");
    assert_eq!(body_number(&d.data), last);
    assert!(!d.redelivered);
    d.ack(Default::default()).await.expect("ack");
    for node in [&n1, &n2, &n3] {
        eventually(
            "every node: the queue empty but for its consumer, its machine unpacked",
            || (machines_packed(node), queue_counts(node, q)),
            |&c| c == (Some(0), (0, 0, 1)),
        );
    }
    drop((after, ch1c, ch3, holder_channel, c3, ch2, c2, ch1, c1));
}

/// A node killed (SIGKILL) while it is the leader-to-be of many quorum queues born dormant and
/// never used, and the leader of two that were: through another node, a publish to each is
/// confirmed (the two survivors of each group elect one of themselves) and every message is
/// consumed once on the third. Started again with the logs it was born with, the node follows
/// each group, and a queue first used through it afterwards works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_its_unused_quorum_queues_asleep_loses_no_confirmed_message() {
    const QUEUES: usize = 10;
    const USED: usize = 2;
    const EACH: usize = 3;
    let name = |q: usize| format!("unused.{q}");
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    for q in 0..QUEUES {
        declare_quorum(&c1, &name(q)).await;
    }
    let (c2, c3) = (n2.connect().await, n3.connect().await);
    for conn in [&c2, &c3] {
        eventually_async(
            || async { passive(conn, &name(QUEUES - 1)).await.ok() },
            Some((0, 0)),
        )
        .await;
    }
    for node in [&n1, &n2, &n3] {
        eventually(
            "every member asleep",
            || members_asleep(node),
            |n| *n == Some(QUEUES as u64),
        );
    }
    // Two used through n1 (which they elect), the rest never.
    let ch1 = confirm_channel(&c1).await;
    for q in 0..USED {
        publish_numbered(&ch1, &name(q), 0..EACH, 64).await;
    }
    drop(ch1);
    drop(c1);
    n1.kill9();

    let ch2 = confirm_channel(&c2).await;
    for q in 0..QUEUES {
        let from = if q < USED { EACH } else { 0 };
        publish_through_a_leader_change(&ch2, &name(q), from..2 * EACH).await;
    }
    let ch3 = crate::common::lapin_channel(&c3).await;
    for q in 0..QUEUES {
        let mut consumer = consume(&ch3, &name(q), &format!("c3.{q}")).await;
        let mut got = take_numbers(&mut consumer, 2 * EACH).await;
        got.sort_unstable();
        assert_eq!(got, (0..2 * EACH).collect::<Vec<_>>(), "{}", name(q));
        ch3.basic_cancel(format!("c3.{q}").as_str().into(), Default::default())
            .await
            .expect("basic.cancel");
        // published = consumed (nothing ready, nothing delivered twice and unacked).
        for node in [&n2, &n3] {
            eventually(
                "the queue empty",
                || queue_counts(node, &name(q)),
                |&c| c == (0, 0, 0),
            );
        }
    }

    // Back with the logs it was born with: it follows each group and catches up.
    let n1 = cluster.start(0);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    for q in 0..QUEUES {
        eventually(
            "the restarted node's member caught up",
            || queue_counts(&n1, &name(q)),
            |&c| c == (0, 0, 0),
        );
    }
    let c1 = n1.connect().await;
    let ch1 = confirm_channel(&c1).await;
    let last = name(QUEUES - 1);
    publish_through_a_leader_change(&ch1, &last, 2 * EACH..3 * EACH).await;
    let mut consumer = consume(&ch3, &last, "c3.after").await;
    let mut got = take_numbers(&mut consumer, EACH).await;
    got.sort_unstable();
    assert_eq!(got, (2 * EACH..3 * EACH).collect::<Vec<_>>());
    for node in [&n1, &n2, &n3] {
        eventually(
            "every node: the last queue empty but for its consumer",
            || queue_counts(node, &last),
            |&c| c == (0, 0, 1),
        );
    }
    drop((consumer, ch1, ch2, ch3));
}

/// A follower's node killed (SIGKILL) while its quorum queues sleep, started again: the members
/// whose group was settled, and those of queues never used, start asleep, without running a
/// Raft instance (the node comes back with a dormancy too long to fall asleep again within the
/// test: asleep means never woken), with the state their log holds (counts, and a packed
/// machine for the emptied and the unused queues). A queue the others used while it was down
/// catches up (its leader sends what it lacks). Through the restarted node, every queue takes a
/// publish and gives back exactly what it holds: published = consumed, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_idle_quorum_queues_starts_them_asleep_and_loses_nothing() {
    const QUEUES: usize = 5;
    const UNUSED: usize = 2;
    const EACH: usize = 3;
    // A backlog of 6.25 MiB: replayed from the log in more than one slice.
    const BIG: usize = 40;
    const BIG_BYTES: usize = 160 * 1024;
    let big = "restarted.big";
    let name = |q: usize| format!("restarted.{q}");
    let unused = |q: usize| format!("restarted.unused.{q}");
    let cluster = Cluster {
        dormant_after: Some(1000),
        ..Cluster::new(3).await
    };
    let (mut cluster, n1, n2, n3) = three_formed_of(cluster).await;
    let c1 = n1.connect().await;
    for q in 0..QUEUES {
        declare_quorum(&c1, &name(q)).await;
    }
    for q in 0..UNUSED {
        declare_quorum(&c1, &unused(q)).await;
    }
    declare_quorum(&c1, big).await;
    let ch1 = confirm_channel(&c1).await;
    publish_numbered(&ch1, big, 0..BIG, BIG_BYTES).await;
    // Published through n2 (its enqueuers in every state), one of each consumed through n3
    // (every one of queue 0).
    let c2 = n2.connect().await;
    let ch2 = confirm_channel(&c2).await;
    for q in 0..QUEUES {
        publish_numbered(&ch2, &name(q), 0..EACH, 64).await;
    }
    drop((ch2, c2));
    let c3 = n3.connect().await;
    for q in 0..QUEUES {
        // The channel closed after: what it was sent beyond what it acked goes back.
        let ch3 = crate::common::lapin_channel(&c3).await;
        let taken = if q == 0 { EACH } else { 1 };
        let mut consumer = consume(&ch3, &name(q), &format!("first.{q}")).await;
        assert_eq!(
            take_numbers(&mut consumer, taken).await,
            (0..taken).collect::<Vec<_>>()
        );
        ch3.close(200, "done".into()).await.expect("channel.close");
    }
    let held = |q: usize| if q == 0 { 0 } else { (EACH - 1) as u64 };
    for node in [&n1, &n2, &n3] {
        for q in 0..QUEUES {
            eventually(
                "the queue's counts",
                || queue_counts(node, &name(q)),
                |&c| c == (held(q), 0, 0),
            );
        }
        eventually(
            "every member asleep",
            || members_asleep(node),
            |&n| n == Some((QUEUES + UNUSED + 1) as u64),
        );
    }

    n2.kill9();
    // Queue 1 goes on without n2.
    publish_numbered(&ch1, &name(1), EACH..EACH + 1, 64).await;
    cluster.dormant_after = Some(600_000);
    let n2 = cluster.start(1);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    eventually(
        "n2: queue 1 caught up",
        || queue_counts(&n2, &name(1)),
        |&c| c == (held(1) + 1, 0, 0),
    );
    eventually(
        "n2: every member but queue 1's asleep, never woken (the unused ones too); queue 0's and the unused ones' packed",
        || (members_asleep(&n2), machines_packed(&n2)),
        |&c| c == (Some((QUEUES + UNUSED) as u64), Some(1 + UNUSED as u64)),
    );
    for q in 0..QUEUES {
        assert_eq!(
            queue_counts(&n2, &name(q)),
            (held(q) + u64::from(q == 1), 0, 0),
            "n2: {}",
            name(q)
        );
    }

    // Through n2: a publish to each, then everything each holds consumed there.
    let c2 = n2.connect().await;
    let ch2 = confirm_channel(&c2).await;
    for q in 0..QUEUES {
        publish_numbered(&ch2, &name(q), EACH + 1..EACH + 2, 64).await;
    }
    let ch2c = crate::common::lapin_channel(&c2).await;
    let mut consumers = Vec::new();
    for q in 0..QUEUES {
        let mut expected: Vec<usize> = match q {
            0 => vec![],
            1 => (1..EACH + 1).collect(),
            _ => (1..EACH).collect(),
        };
        expected.push(EACH + 1);
        let tag = format!("after.{q}");
        let mut consumer = consume(&ch2c, &name(q), &tag).await;
        let mut got = take_numbers(&mut consumer, expected.len()).await;
        got.sort_unstable();
        assert_eq!(got, expected, "{}", name(q));
        consumers.push(consumer);
    }
    assert_eq!(queue_counts(&n2, big), (BIG as u64, 0, 0), "n2: {big}");
    let mut consumer = consume(&ch2c, big, "big").await;
    let mut got = take_numbers(&mut consumer, BIG).await;
    got.sort_unstable();
    assert_eq!(got, (0..BIG).collect::<Vec<_>>(), "{big}");
    consumers.push(consumer);
    // The unused ones: first used through n2.
    for q in 0..UNUSED {
        publish_numbered(&ch2, &unused(q), 0..1, 64).await;
        let mut consumer = consume(&ch2c, &unused(q), &format!("unused.{q}")).await;
        assert_eq!(
            take_numbers(&mut consumer, 1).await,
            vec![0],
            "{}",
            unused(q)
        );
        consumers.push(consumer);
    }
    for node in [&n1, &n2, &n3] {
        eventually(
            "every node: the big queue empty but for its consumer",
            || queue_counts(node, big),
            |&c| c == (0, 0, 1),
        );
        for q in 0..UNUSED {
            eventually(
                "every node: the unused queue empty but for its consumer",
                || queue_counts(node, &unused(q)),
                |&c| c == (0, 0, 1),
            );
        }
        for q in 0..QUEUES {
            eventually(
                "every node: the queue empty but for its consumer",
                || queue_counts(node, &name(q)),
                |&c| c == (0, 0, 1),
            );
        }
    }
    drop((consumers, ch2c, ch2, c2, ch1, c3, c1));
}

/// A consumer's node killed (SIGKILL) while the consumer holds deliveries of a quorum queue
/// whose group is dormant (settled: every member idle), and started again at once: what the
/// consumer held comes back redelivered (`x-delivery-count` 1), whichever notices first (the
/// leader taking the node for gone, or the restarted member finding its earlier process's
/// consumer in the state it replayed), and each message is consumed once through the restarted
/// node; every node ends with the queue empty but for the new consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_node_killed_while_its_queue_sleeps_gets_its_deliveries_back_once() {
    const N: u16 = 10;
    const HELD: u16 = 4;
    let q = "held.restart";
    let cluster = Cluster {
        dormant_after: Some(1000),
        ..Cluster::new(3).await
    };
    let (mut cluster, n1, n2, n3) = three_formed_of(cluster).await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, q).await;
    let ch1 = confirm_channel(&c1).await;
    publish_numbered(&ch1, q, 0..usize::from(N), 64).await;
    let c2 = n2.connect().await;
    let (_holder_channel, _holder, held) = hold_unacked(&c2, q, "holder", HELD).await;
    let held_numbers: std::collections::BTreeSet<usize> =
        held.iter().map(|d| body_number(&d.data)).collect();
    eventually(
        "every member dormant, the holder's deliveries unacked",
        || {
            let (_, rows) = api(
                &n1,
                "GET",
                &format!("/api/queues/quorum/%2F/{q}/status"),
                None,
            );
            let dormant = rows
                .as_array()
                .map(|rows| rows.iter().filter(|r| r["dormant"] == true).count());
            (dormant, ready_unacked_held(&n1, q))
        },
        |c| *c == (Some(3), (u64::from(N - HELD), u64::from(HELD), 0)),
    );

    // Killed with the client still connected: nothing is closed or cancelled first.
    n2.kill9();
    drop((held, c2));
    cluster.dormant_after = Some(600_000);
    let n2 = cluster.start(1);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    for node in [&n1, &n2, &n3] {
        eventually(
            "every node: the held deliveries back, no consumer",
            || queue_counts(node, q),
            |&c| c == (u64::from(N), 0, 0),
        );
    }
    let c2 = n2.connect().await;
    let (_taker_channel, _taker, taken) = hold_unacked(&c2, q, "taker", N).await;
    let got = redelivered_once_if_held(&taken, &held_numbers);
    assert_eq!(got, (0..usize::from(N)).collect::<Vec<_>>(), "each once");
    for d in &taken {
        d.ack(Default::default()).await.expect("ack");
    }
    for node in [&n1, &n2, &n3] {
        eventually(
            "every node: the queue empty but for the taker",
            || queue_counts(node, q),
            |&c| c == (0, 0, 1),
        );
    }
    drop((taken, c2, ch1, c1));
}
