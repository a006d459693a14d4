//! Streams in a cluster: replicated to their members (a Raft group per stream), read from any
//! node at the same offsets, through the loss of their leader and a member that was away while
//! the group's log was truncated.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{FuturesUnordered, StreamExt};
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, LongString};

use super::*;

pub(super) async fn declare_stream(
    conn: &lapin::Connection,
    name: &str,
    extra: &[(&str, AMQPValue)],
) {
    crate::common::lapin_channel(conn)
        .await
        .queue_declare(name.into(), durable(), crate::streams::stream_args(extra))
        .await
        .expect("stream declare");
}

/// Every entry of `stream` as `node`'s copy has it, from its first: (offset, the number of its
/// body). Read once the node's copy holds `count` entries.
pub(super) async fn read_copy(node: &ChildBroker, stream: &str, count: u32) -> Vec<(i64, usize)> {
    let conn = node.connect().await;
    eventually_async(
        || async { passive(&conn, stream).await.ok().map(|c| c.0) },
        Some(count),
    )
    .await;
    let first = AMQPValue::LongString(LongString::from("first"));
    let (_ch, mut consumer) = crate::streams::consume_from(&conn, stream, 1000, Some(first)).await;
    let out = take_entries(&mut consumer, count as usize).await;
    let _ = conn.close(200, "bye".into()).await;
    out
}

/// A consumer of `stream` through `conn` from its first entry (`prefetch` deliveries at a time),
/// once the connection's node knows the stream.
async fn follow_from_first(
    conn: &lapin::Connection,
    stream: &str,
    prefetch: u16,
) -> (lapin::Channel, lapin::Consumer) {
    eventually_async(|| async { passive(conn, stream).await.is_ok() }, true).await;
    let first = AMQPValue::LongString(LongString::from("first"));
    crate::streams::consume_from(conn, stream, prefetch, Some(first)).await
}

/// The next `n` deliveries of a stream consumer as (offset, the number of its body), each acked.
async fn take_entries(consumer: &mut lapin::Consumer, n: usize) -> Vec<(i64, usize)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let d = crate::common::lapin_next(consumer).await;
        out.push((
            crate::streams::offset_of(&d),
            crate::common::body_number(&d.data),
        ));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    out
}

/// Offsets follow each other without a gap.
fn assert_contiguous(copy: &[(i64, usize)], node: &str) {
    for pair in copy.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "{node}: a gap in the offsets");
    }
}

/// Publishes numbered messages through `node` with confirms (up to 200 in flight) until `stop`;
/// the numbers confirmed, and how many were sent.
async fn publish_until_stopped(
    node_uri: String,
    stream: &'static str,
    stop: Arc<AtomicBool>,
    confirmed: Arc<Mutex<HashSet<usize>>>,
) -> usize {
    let conn = lapin::Connection::connect(&node_uri, lapin::ConnectionProperties::default())
        .await
        .expect("publisher connects");
    let ch = confirm_channel(&conn).await;
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        let confirm = ch
            .basic_publish(
                "".into(),
                stream.into(),
                BasicPublishOptions::default(),
                &crate::common::numbered_body(sent, 32),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
        let n = sent;
        in_flight.push(async move { (n, confirm.await) });
        sent += 1;
        while in_flight.len() >= 200 {
            if let Some((n, Ok(c))) = in_flight.next().await {
                if c.is_ack() {
                    confirmed.lock().unwrap().insert(n);
                }
            }
        }
    }
    crate::common::within_long("the last confirms", async {
        while let Some((n, result)) = in_flight.next().await {
            if matches!(result, Ok(c) if c.is_ack()) {
                confirmed.lock().unwrap().insert(n);
            }
        }
    })
    .await;
    sent
}

async fn confirmed_at_least(confirmed: &Mutex<HashSet<usize>>, n: usize) {
    crate::common::within_long("confirms", async {
        while confirmed.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The stream's count once every copy of `nodes` holds the same entries and holds still (no
/// publisher left).
pub(super) fn settled_count(nodes: &[&ChildBroker], stream: &str) -> u32 {
    let path = format!("/api/queues/%2F/{stream}");
    let figures = || -> Vec<(Option<u64>, Option<u64>)> {
        nodes
            .iter()
            .map(|node| {
                let (_, q) = api(node, "GET", &path, None);
                (q["committed_offset"].as_u64(), q["messages"].as_u64())
            })
            .collect()
    };
    let mut last = Vec::new();
    let settled = eventually(
        "the copies agree",
        || {
            let before = std::mem::replace(&mut last, figures());
            (before, last.clone())
        },
        |(before, now)| before == now && now.windows(2).all(|w| w[0] == w[1]) && now[0].0.is_some(),
    );
    settled.1[0].1.expect("messages") as u32
}

fn stream_logs(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir.join("streams")) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A stream declared on n1 is replicated to the three nodes. A publisher on n2 goes on while
/// n1 (its leader) is killed: every confirmed message is in every copy exactly once, the copies
/// agree offset for offset, and n1 back catches up. The management API shows its members;
/// deleted through n3, it is gone from every node, its logs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_replicated_and_loses_no_confirmed_message_when_its_leader_is_killed() {
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_stream(&c1, "events", &[]).await;
    let c3 = n3.connect().await;
    eventually_async(|| async { passive(&c3, "events").await.is_ok() }, true).await;
    let shown = |node: &ChildBroker| {
        let (_, q) = api(node, "GET", "/api/queues/%2F/events", None);
        (
            q["type"].as_str().map(str::to_owned),
            q["leader"].as_str().map(str::to_owned),
            q["members"].to_string(),
        )
    };
    eventually(
        "n3 shows the stream's members and its leader",
        || shown(&n3),
        |(kind, leader, members)| {
            kind.as_deref() == Some("stream")
                && leader.as_deref() == Some("n1")
                && members == r#"["n1","n2","n3"]"#
        },
    );

    let stop = Arc::new(AtomicBool::new(false));
    let confirmed = Arc::new(Mutex::new(HashSet::new()));
    let publisher = tokio::spawn(publish_until_stopped(
        n2.uri(),
        "events",
        stop.clone(),
        confirmed.clone(),
    ));
    confirmed_at_least(&confirmed, 300).await;
    drop(c1);
    n1.kill9();
    // The two left are a majority: confirms go on.
    let before = confirmed.lock().unwrap().len();
    confirmed_at_least(&confirmed, before + 500).await;
    stop.store(true, Ordering::Relaxed);
    let sent = publisher.await.expect("publisher");
    let confirmed = confirmed.lock().unwrap().clone();

    let kept = settled_count(&[&n2, &n3], "events");
    let on_n2 = read_copy(&n2, "events", kept).await;
    let on_n3 = read_copy(&n3, "events", kept).await;
    assert_eq!(on_n2, on_n3, "the copies agree offset for offset");
    assert_eq!(on_n2.first().map(|e| e.0), Some(0));
    assert_contiguous(&on_n2, "n2");
    let numbers: Vec<usize> = on_n2.iter().map(|e| e.1).collect();
    let distinct: HashSet<usize> = numbers.iter().copied().collect();
    assert_eq!(distinct.len(), numbers.len(), "a message appended twice");
    let lost: Vec<&usize> = confirmed.difference(&distinct).collect();
    assert!(lost.is_empty(), "confirmed and lost: {lost:?}");
    assert!(
        numbers.len() <= sent,
        "{} kept of {sent} sent",
        numbers.len()
    );
    assert_eq!(
        shown(&n3).1.as_deref().map(|l| l != "n1"),
        Some(true),
        "another member leads"
    );

    // n1 back: its copy catches up with the others'.
    let n1 = cluster.start(0);
    let on_n1 = read_copy(&n1, "events", kept).await;
    assert_eq!(on_n1, on_n2, "n1's copy after its restart");

    let ch3 = crate::common::lapin_channel(&c3).await;
    ch3.queue_delete("events".into(), Default::default())
        .await
        .expect("delete");
    let c1 = n1.connect().await;
    let c2 = n2.connect().await;
    for conn in [&c1, &c2, &c3] {
        eventually_async(|| async { passive(conn, "events").await.is_err() }, true).await;
    }
    for (i, name) in ["n1", "n2", "n3"].iter().enumerate() {
        eventually(
            &format!("{name}'s copy removed"),
            || stream_logs(cluster.dirs[i].path()),
            Vec::is_empty,
        );
    }
}

/// A member away while the others appended enough for their group to truncate its log comes
/// back to a snapshot: it fills its copy from another member's, starting where theirs start
/// (retention dropped what it had), and then follows the group as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_after_its_group_truncated_the_log_fills_its_copy_from_another() {
    const EARLY: usize = 100;
    // More appends than the group's snapshot interval (4096 entries): each publish confirmed
    // before the next is an entry of its own.
    const LATER: usize = 4_400;
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    let small = [
        (
            "x-stream-max-segment-size-bytes",
            AMQPValue::LongLongInt(40_000),
        ),
        ("x-max-length-bytes", AMQPValue::LongLongInt(150_000)),
    ];
    declare_stream(&c1, "away", &small).await;
    let c3 = n3.connect().await;
    eventually_async(|| async { passive(&c3, "away").await.is_ok() }, true).await;
    let ch1 = confirm_channel(&c1).await;
    publish_numbered(&ch1, "away", 0..EARLY, 32).await;
    let early = read_copy(&n3, "away", EARLY as u32).await;
    assert_eq!(early.len(), EARLY);
    drop(c3);
    n3.kill9();

    publish_numbered(&ch1, "away", EARLY..EARLY + LATER, 32).await;
    let on_n1 = read_copy(&n1, "away", settled_count(&[&n1, &n2], "away")).await;
    let first_kept = on_n1.first().map(|e| e.0).expect("n1 keeps some");
    assert!(
        first_kept > EARLY as i64,
        "retention dropped the early ones on n1 (first kept {first_kept})"
    );
    assert_eq!(on_n1.last().map(|e| e.0), Some((EARLY + LATER - 1) as i64));

    let n3 = cluster.start(2);
    let c3 = n3.connect().await;
    let ch3 = confirm_channel(&c3).await;
    // Appended through n3 once it is back: every copy takes it after the rest.
    publish_numbered(&ch3, "away", EARLY + LATER..EARLY + LATER + 10, 32).await;
    // n3's copy ends where the others' end (once it has filled what it missed), and agrees
    // with n1's at every offset both keep.
    let end = (EARLY + LATER + 10) as u64;
    let figures = |node: &ChildBroker| {
        let (_, q) = api(node, "GET", "/api/queues/%2F/away", None);
        (q["committed_offset"].as_u64(), q["messages"].as_u64())
    };
    let (_, kept) = eventually(
        "n3's copy ends with the last append",
        || figures(&n3),
        |(committed, _)| *committed == Some(end),
    );
    let kept = kept.expect("messages") as u32;
    let on_n3 = read_copy(&n3, "away", kept).await;
    assert_contiguous(&on_n3, "n3");
    assert_eq!(on_n3.last().map(|e| e.0), Some(end as i64 - 1));
    let by_offset: BTreeMap<i64, usize> = on_n1.iter().copied().collect();
    for (offset, number) in &on_n3 {
        assert_eq!(
            *number as i64, *offset,
            "offset {offset} holds message {number}"
        );
        if let Some(n1s) = by_offset.get(offset) {
            assert_eq!(n1s, number, "n1 and n3 differ at offset {offset}");
        }
    }

    // Deleted while n2 is down: back, n2 lets go of its copy and of the group's log.
    n2.stop();
    confirm_channel(&c1)
        .await
        .queue_delete("away".into(), Default::default())
        .await
        .expect("delete");
    let n2 = cluster.start(1);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    eventually(
        "n2 has no stream away",
        || api(&n2, "GET", "/api/queues/%2F/away", None).0,
        |status| *status == 404,
    );
    eventually(
        "n2's copy removed",
        || stream_logs(cluster.dirs[1].path()),
        Vec::is_empty,
    );
    n2.stop();
    let groups =
        warren_cluster::LogDb::open(cluster.dirs[1].path().join("cluster").join("raft.redb"))
            .expect("n2's raft database")
            .group_names();
    assert!(!groups.iter().any(|g| g.starts_with("s/")), "{groups:?}");
}

/// Publishes without confirms through n1 to a stream led by n2, while n2 is killed and started
/// again and then its successor is frozen past the commit timeout: every message the
/// connection took is in the stream once (a leader change neither loses nor doubles an
/// append), and a reader on n3 that followed the stream all along got each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_stream_publishes_through_leader_changes_are_neither_lost_nor_duplicated() {
    let (cluster, n1, n2, n3) = three_formed().await;
    declare_stream(&n2.connect().await, "flow", &[]).await;
    leader_among(&n1, "flow", &["n2"]);
    let c3 = n3.connect().await;
    let (_reader, mut following) = follow_from_first(&c3, "flow", 500).await;

    // Longer than a proposal waits for its commit (10 s): what n1 had sent to it fails there.
    let (n2, published) = publish_unconfirmed_through_leader_changes(
        &cluster,
        [&n1, &n3],
        n2,
        "flow",
        Duration::from_secs(12),
    )
    .await;

    let kept = settled_count(&[&n1, &n2, &n3], "flow");
    assert!(kept as usize >= published, "{kept} kept of {published}");
    let copy = read_copy(&n3, "flow", kept).await;
    assert_contiguous(&copy, "n3");
    let bodies: Vec<(Vec<u8>, bool)> = copy
        .iter()
        .map(|(_, n)| (numbered_body(*n, 64), false))
        .collect();
    exactly_once(&bodies, 0..published);
    // The reader on n3 followed it all: the same entries, in the same order.
    let followed = take_entries(&mut following, copy.len()).await;
    assert_eq!(followed, copy);
    assert_eq!(read_copy(&n2, "flow", kept).await, copy, "n2's copy");
    drop(n1);
}

async fn publish_ids(conn: &lapin::Connection, messages: &[(&str, &str)]) {
    let ch = confirm_channel(conn).await;
    crate::streams::publish_with_ids(&ch, "once", messages).await;
}

/// A deduplicating stream in a cluster drops a message id it holds whichever node the repeat
/// comes through, also once its leader was killed (the ids are the group's state, not a node's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_deduplicating_stream_drops_repeats_sent_through_any_node() {
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    let dedup = ("x-message-deduplication", AMQPValue::Boolean(true));
    declare_stream(&c1, "once", &[dedup]).await;
    let (c2, c3) = (n2.connect().await, n3.connect().await);
    eventually_async(|| async { passive(&c3, "once").await.is_ok() }, true).await;
    publish_ids(&c1, &[("a", "m0000000-a"), ("b", "m0000001-b")]).await;
    publish_ids(&c2, &[("a", "m0000000-a again"), ("c", "m0000002-c")]).await;
    drop(c1);
    n1.kill9();
    publish_ids(&c3, &[("b", "m0000001-b again"), ("d", "m0000003-d")]).await;
    publish_ids(&c2, &[("c", "m0000002-c again")]).await;
    let kept = settled_count(&[&n2, &n3], "once");
    assert_eq!(kept, 4);
    let copy = read_copy(&n2, "once", kept).await;
    assert_eq!(copy, vec![(0, 0), (1, 1), (2, 2), (3, 3)]);
    assert_eq!(read_copy(&n3, "once", kept).await, copy);
}

/// A stream on two of the three nodes (`x-initial-cluster-size: 2`): the third has no copy and
/// serves its clients through a member, publishes and reads from an offset alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_copy_serves_a_stream_through_its_members() {
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    let two = ("x-initial-cluster-size", AMQPValue::LongInt(2));
    declare_stream(&c1, "pair", &[two]).await;
    let c3 = n3.connect().await;
    eventually_async(|| async { passive(&c3, "pair").await.is_ok() }, true).await;
    eventually(
        "n3 shows the stream's two members",
        || api(&n3, "GET", "/api/queues/%2F/pair", None).1["members"].to_string(),
        |members| members == r#"["n1","n2"]"#,
    );
    publish_numbered(&confirm_channel(&c3).await, "pair", 0..50, 32).await;
    let kept = settled_count(&[&n1, &n2], "pair");
    assert_eq!(kept, 50);
    let through_n3 = read_copy(&n3, "pair", kept).await;
    let expected: Vec<(i64, usize)> = (0..50).map(|i| (i as i64, i as usize)).collect();
    assert_eq!(through_n3, expected);
    assert!(
        stream_logs(cluster.dirs[2].path()).is_empty(),
        "n3 keeps no copy"
    );
    drop((n1, n2));
}

/// A member frozen (SIGSTOP) past the election timeout while a reader on its node follows the
/// stream and confirmed publishes go on through another node: the others confirm meanwhile; back,
/// its copy catches up and the reader goes on from where it was, every entry once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_catches_up_and_its_reader_misses_nothing() {
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_stream(&c1, "thaw", &[]).await;
    let c3 = n3.connect().await;
    let (_reader, mut following) = follow_from_first(&c3, "thaw", 100).await;
    let ch1 = confirm_channel(&c1).await;
    publish_numbered(&ch1, "thaw", 0..200, 32).await;
    let mut followed = take_entries(&mut following, 200).await;
    n3.signal("STOP");
    // n1 and n2 confirm without n3.
    publish_numbered(&ch1, "thaw", 200..700, 32).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    n3.signal("CONT");
    publish_numbered(&ch1, "thaw", 700..800, 32).await;
    followed.extend(take_entries(&mut following, 600).await);
    let expected: Vec<(i64, usize)> = (0..800).map(|i| (i as i64, i as usize)).collect();
    assert_eq!(followed, expected, "what the reader on n3 got");
    let kept = settled_count(&[&n1, &n2, &n3], "thaw");
    assert_eq!(kept, 800);
    assert_eq!(read_copy(&n3, "thaw", kept).await, expected, "n3's copy");
}
