//! Three Warren processes on loopback forming one cluster: membership as `/api/nodes` shows it,
//! a change made on one node read back on the others, a node with the wrong secret refused, a
//! minority refusing changes, and a node killed with SIGKILL rejoining with what it missed.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    body_bytes, body_number, free_port, header_bytes, http_json, numbered_body, publish_bytes,
    ChildBroker, Handshake, In, QOpts, Raw,
};
use warren_amqp::protocol::{basic, AMQPClass};

mod quorum_faults;
mod streams;

const SECRET: &str = "integration-test-cookie";
/// How long a cluster may take to form (or catch up) with debug builds on a busy 2-core machine.
const FORM: Duration = Duration::from_secs(90);

struct Cluster {
    _turn: tokio::sync::SemaphorePermit<'static>,
    dirs: Vec<tempfile::TempDir>,
    cluster_ports: Vec<u16>,
    /// The metadata log's entries between snapshots (`WARREN_CLUSTER_SNAPSHOT_EVERY`), when not
    /// the default.
    snapshot_every: Option<u64>,
    /// How often its nodes sample message rates (`WARREN_COLLECT_STATISTICS_INTERVAL`, ms),
    /// when not the default.
    statistics_every: Option<u64>,
    /// Quorum queue members go dormant after this many idle milliseconds.
    dormant_after: Option<u64>,
    /// The last node's link proxy, when the test cuts it off (see [`Cluster::cut_off_last`]).
    last_behind: Option<LinkProxy>,
}

/// A TCP proxy in front of one node's cluster port, through which the other nodes reach it:
/// cut, it forwards nothing and leaves its sockets open and silent, as a partition does (each
/// side notices only from the silence); healed, it closes them, and the nodes call again
/// through it. The node that sorts last is the one behind it: a link's dialer is the node whose
/// name sorts first, so every connection to the last node goes through its advertised address.
///
/// It runs on a runtime of its own, so that a test blocked in a wait does not stall the link.
struct LinkProxy {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl LinkProxy {
    fn start(target: u16) -> LinkProxy {
        let port = free_port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the link proxy's runtime");
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the link proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let (cut, _) = tokio::sync::watch::channel(false);
        let watch = cut.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("the link proxy");
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = watch.subscribe();
                tokio::spawn(async move {
                    if !*cut.borrow_and_update() {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                        {
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                                _ = cut.wait_for(|cut| *cut) => {}
                            }
                            // Silent until healed, then closed with the inbound side.
                            let _ = cut.wait_for(|cut| !*cut).await;
                            return;
                        }
                    }
                    let _ = cut.wait_for(|cut| !*cut).await;
                });
            }
        });
        LinkProxy {
            port,
            cut,
            runtime: Some(runtime),
        }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Cluster {
    /// A cluster's directories and link ports; its tests take turns with the other heavy ones
    /// (`_turn` is held until the cluster is dropped).
    async fn new(nodes: usize) -> Cluster {
        Cluster {
            _turn: crate::common::HEAVY
                .acquire_many(crate::common::HEAVY_CLUSTER)
                .await
                .expect("the heavy tests' turns are never closed"),
            dirs: (0..nodes).map(|_| tempfile::tempdir().unwrap()).collect(),
            cluster_ports: (0..nodes).map(|_| free_port()).collect(),
            snapshot_every: None,
            statistics_every: None,
            dormant_after: None,
            last_behind: None,
        }
    }

    /// As [`Cluster::new`], the last node behind a [`LinkProxy`] (its links to the others can
    /// be cut while its clients still reach it).
    async fn with_last_behind_a_proxy(nodes: usize) -> Cluster {
        let mut cluster = Cluster::new(nodes).await;
        let last = *cluster.cluster_ports.last().expect("a node");
        cluster.last_behind = Some(LinkProxy::start(last));
        cluster
    }

    /// Cuts the last node off from the others (`true`) or heals the cut (`false`).
    fn cut_off_last(&self, cut: bool) {
        self.last_behind
            .as_ref()
            .expect("the last node is behind a proxy")
            .set_cut(cut);
    }

    /// As [`Cluster::new`], its nodes compacting the metadata log every `every` entries.
    async fn snapshotting_every(nodes: usize, every: u64) -> Cluster {
        Cluster {
            snapshot_every: Some(every),
            ..Cluster::new(nodes).await
        }
    }

    fn peers(&self) -> String {
        let last = self.cluster_ports.len() - 1;
        self.cluster_ports
            .iter()
            .enumerate()
            .map(|(i, port)| match &self.last_behind {
                Some(proxy) if i == last => proxy.port,
                _ => *port,
            })
            .enumerate()
            .map(|(i, port)| format!("n{}@127.0.0.1:{port}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `i` (0-based; named n1, n2, ...) with `secret`.
    fn start_with_secret(&self, i: usize, secret: &str) -> ChildBroker {
        self.start_with(i, secret, "10000")
    }

    /// As [`Cluster::start_with_secret`], with this commit timeout (ms).
    fn start_with(&self, i: usize, secret: &str, commit_timeout: &str) -> ChildBroker {
        let name = format!("n{}", i + 1);
        let listen = format!("127.0.0.1:{}", self.cluster_ports[i]);
        let peers = self.peers();
        let snapshot_every = self.snapshot_every.map(|n| n.to_string());
        let statistics_every = self.statistics_every.map(|n| n.to_string());
        let dormant_after = self.dormant_after.map(|n| n.to_string());
        let mut env = vec![("WARREN_CLUSTER_SECRET", secret)];
        if let Some(after) = &dormant_after {
            env.push(("WARREN_QUORUM_DORMANT_AFTER", after));
        }
        if let Some(every) = &snapshot_every {
            env.push(("WARREN_CLUSTER_SNAPSHOT_EVERY", every));
        }
        if let Some(every) = &statistics_every {
            env.push(("WARREN_COLLECT_STATISTICS_INTERVAL", every));
        }
        ChildBroker::start_with_env(
            self.dirs[i].path(),
            &[
                "--node-name",
                &name,
                "--cluster-listen",
                &listen,
                "--cluster-peers",
                &peers,
                "--cluster-commit-timeout",
                commit_timeout,
            ],
            &env,
        )
    }

    fn start(&self, i: usize) -> ChildBroker {
        self.start_with_secret(i, SECRET)
    }
}

fn api(node: &ChildBroker, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    http_json(
        ([127, 0, 0, 1], node.http_port).into(),
        method,
        path,
        body,
        ("guest", "guest"),
    )
}

/// The nodes `node` lists and whether it sees each running, sorted by name.
fn nodes(node: &ChildBroker) -> Vec<(String, bool)> {
    let (status, list) = api(node, "GET", "/api/nodes", None);
    assert_eq!(status, 200, "{list}");
    let mut all: Vec<(String, bool)> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_owned(),
                n["running"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    all.sort();
    all
}

/// Waits until `check` holds, failing after [`FORM`] with `what` and the last value seen.
fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + FORM;
    loop {
        let value = probe();
        if check(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: still {value:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cluster_name(node: &ChildBroker) -> String {
    let (status, body) = api(node, "GET", "/api/cluster-name", None);
    assert_eq!(status, 200, "{body}");
    body["name"].as_str().unwrap_or_default().to_owned()
}

/// n1, n2 and n3, each running or not.
fn running(up: [bool; 3]) -> Vec<(String, bool)> {
    (1..=3).map(|i| (format!("n{i}"), up[i - 1])).collect()
}

fn all_running(names: &[&str]) -> Vec<(String, bool)> {
    names.iter().map(|n| (n.to_string(), true)).collect()
}

#[tokio::test]
async fn three_nodes_form_one_cluster_and_agree_on_a_change_made_on_any() {
    let cluster = Cluster::new(3).await;
    // Started in reverse order: the order does not matter.
    let nodes_up: Vec<ChildBroker> = (0..3).rev().map(|i| cluster.start(i)).collect();
    let (n3, n2, n1) = (&nodes_up[0], &nodes_up[1], &nodes_up[2]);
    for node in [n1, n2, n3] {
        eventually(
            "every node sees the three running",
            || nodes(node),
            |n| *n == all_running(&["n1", "n2", "n3"]),
        );
    }
    // Every node's own figures, on any node.
    let (_, list) = api(n2, "GET", "/api/nodes", None);
    for n in list.as_array().expect("a list") {
        assert!(n["mem_used"].as_u64().is_some(), "{n}");
        assert!(n["disk_free"].as_u64().is_some_and(|d| d > 0), "{n}");
        assert_eq!(n["disk_free_alarm"], false, "{n}");
    }
    // `warren ctl cluster-status` on any node: every node running.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "ctl",
            "--port",
            &n3.http_port.to_string(),
            "--json",
            "cluster-status",
        ])
        .output()
        .expect("warren ctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        status["running_nodes"],
        serde_json::json!(["n1", "n2", "n3"]),
        "{status}"
    );
    // Before any is set, every node names the cluster after its first node.
    for node in [n1, n2, n3] {
        assert_eq!(cluster_name(node), "n1");
    }
    let (status, body) = api(
        n2,
        "PUT",
        "/api/cluster-name",
        Some(r#"{"name":"orchard"}"#),
    );
    assert_eq!(status, 204, "{body}");
    // The node that made the change reads it back at once; the others once they apply it.
    assert_eq!(cluster_name(n2), "orchard");
    for node in [n1, n3] {
        eventually(
            "the name reaches every node",
            || cluster_name(node),
            |n| n == "orchard",
        );
    }
    let (status, overview) = api(n3, "GET", "/api/overview", None);
    assert_eq!(status, 200);
    assert_eq!(overview["cluster_name"], "orchard");
    assert_eq!(overview["node"], "n3");
    // The overview lists every node's listeners and counts every node's connections, on any
    // node: one connection on n1 and two on n2, seen from n3.
    let mut listeners: Vec<(String, String, u64)> = overview["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            (
                l["node"].as_str().unwrap_or_default().to_owned(),
                l["protocol"].as_str().unwrap_or_default().to_owned(),
                l["port"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    listeners.sort();
    let mut expected: Vec<(String, String, u64)> = [("n1", n1), ("n2", n2), ("n3", n3)]
        .iter()
        .flat_map(|(name, node)| {
            [
                (name.to_string(), "amqp".to_owned(), u64::from(node.port)),
                (
                    name.to_string(),
                    "http".to_owned(),
                    u64::from(node.http_port),
                ),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(listeners, expected, "{overview}");
    let _c1 = n1.connect().await;
    let (_c2a, _c2b) = (n2.connect().await, n2.connect().await);
    eventually(
        "the overview counts every node's connections",
        || api(n3, "GET", "/api/overview", None).1["object_totals"]["connections"].as_u64(),
        |n| *n == Some(3),
    );
    // A body without a name is refused, as RabbitMQ refuses it.
    let (status, _) = api(n1, "PUT", "/api/cluster-name", Some(r#"{"other":1}"#));
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_node_with_the_wrong_secret_is_refused_and_cannot_change_anything() {
    let cluster = Cluster::new(3).await;
    let n1 = cluster.start(0);
    let n2 = cluster.start(1);
    // A commit timeout well within the HTTP client's 10 s.
    let n3 = cluster.start_with(2, "not-the-cookie", "3000");
    eventually(
        "n1 and n2 see each other, not n3",
        || nodes(&n1),
        |n| *n == running([true, true, false]),
    );
    // n1 and n2 are a majority of three: changes go through.
    let (status, body) = api(&n1, "PUT", "/api/cluster-name", Some(r#"{"name":"kept"}"#));
    assert_eq!(status, 204, "{body}");
    eventually("n2 has it", || cluster_name(&n2), |n| n == "kept");
    // n3 reaches nobody, and nobody takes its changes.
    assert_eq!(nodes(&n3), running([false, false, true]));
    let (status, body) = api(&n3, "PUT", "/api/cluster-name", Some(r#"{"name":"rogue"}"#));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "timeout");
    assert_eq!(cluster_name(&n1), "kept");
    assert_ne!(cluster_name(&n3), "rogue");
}

#[tokio::test]
async fn a_killed_node_rejoins_with_what_it_missed_and_a_lone_node_refuses_changes() {
    let cluster = Cluster::new(3).await;
    // n1 is left alone at the end: its refusal must come within the HTTP client's 10 s.
    let n1 = cluster.start_with(0, SECRET, "5000");
    let n2 = cluster.start(1);
    let n3 = cluster.start(2);
    eventually(
        "the three see each other",
        || nodes(&n1),
        |n| *n == all_running(&["n1", "n2", "n3"]),
    );
    let (status, _) = api(
        &n3,
        "PUT",
        "/api/cluster-name",
        Some(r#"{"name":"before"}"#),
    );
    assert_eq!(status, 204);

    n3.kill9();
    eventually(
        "n1 sees n3 down",
        || nodes(&n1),
        |n| *n == running([true, true, false]),
    );
    // Two of three: the cluster goes on without n3.
    let (status, body) = api(
        &n2,
        "PUT",
        "/api/cluster-name",
        Some(r#"{"name":"while-away"}"#),
    );
    assert_eq!(status, 204, "{body}");

    // n3 comes back with its data directory, and catches up.
    let n3 = cluster.start(2);
    eventually("n3 catches up", || cluster_name(&n3), |n| n == "while-away");
    eventually(
        "n3 sees everyone",
        || nodes(&n3),
        |n| *n == all_running(&["n1", "n2", "n3"]),
    );

    // Two nodes go: the one left is a minority and refuses changes instead of diverging.
    n2.kill9();
    n3.kill9();
    let (status, body) = api(&n1, "PUT", "/api/cluster-name", Some(r#"{"name":"alone"}"#));
    assert_eq!(status, 503, "{body}");
    assert_eq!(cluster_name(&n1), "while-away");
}

/// A node started without cluster flags is a cluster of one: it lists itself, and its changes
/// need no one else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alone_is_a_cluster_of_one() {
    let b = crate::common::start().await;
    let (status, list) = http_json(b.http_addr, "GET", "/api/nodes", None, ("guest", "guest"));
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["running"], true);
    let (status, body) = http_json(
        b.http_addr,
        "PUT",
        "/api/cluster-name",
        Some(r#"{"name":"solo"}"#),
        ("guest", "guest"),
    );
    assert_eq!(status, 204, "{body}");
    let (_, body) = http_json(
        b.http_addr,
        "GET",
        "/api/cluster-name",
        None,
        ("guest", "guest"),
    );
    assert_eq!(body["name"], "solo");
    b.stop().await;
}

/// n1, n2 and n3 started with the same seeds, once each sees the three running.
async fn three_formed() -> (Cluster, ChildBroker, ChildBroker, ChildBroker) {
    three_formed_of(Cluster::new(3).await).await
}

/// As [`three_formed`], of `cluster`'s nodes.
async fn three_formed_of(cluster: Cluster) -> (Cluster, ChildBroker, ChildBroker, ChildBroker) {
    let n1 = cluster.start(0);
    let n2 = cluster.start(1);
    let n3 = cluster.start(2);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    (cluster, n1, n2, n3)
}

/// A consumer of `queue` on `ch`, manual acks.
async fn consume(ch: &lapin::Channel, queue: &str, tag: &str) -> lapin::Consumer {
    ch.basic_consume(
        queue.into(),
        tag.into(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("consume")
}

/// A consumer (with prefetch `n`) that has taken `n` deliveries and acks none of them.
async fn take_unacked(conn: &lapin::Connection, queue: &str, tag: &str, n: u16) -> lapin::Consumer {
    hold_unacked(conn, queue, tag, n).await.1
}

/// As [`take_unacked`], with the consumer's channel and the deliveries it holds (to ack later).
async fn hold_unacked(
    conn: &lapin::Connection,
    queue: &str,
    tag: &str,
    n: u16,
) -> (
    lapin::Channel,
    lapin::Consumer,
    Vec<lapin::message::Delivery>,
) {
    use futures::StreamExt;
    let ch = crate::common::lapin_channel(conn).await;
    ch.basic_qos(n, Default::default()).await.expect("qos");
    let mut consumer = consume(&ch, queue, tag).await;
    let mut held = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        held.push(
            crate::common::within_long("a delivery", consumer.next())
                .await
                .expect("stream")
                .expect("delivery"),
        );
    }
    (ch, consumer, held)
}

/// A consumer that held `held` unacked while its node was frozen and taken for gone: waits for
/// the broker to cancel it (its stream ends) with nothing more delivered to it meanwhile, then
/// acks what it held, late (its deliveries were given back already: the acks must settle
/// nothing).
async fn cancelled_then_late_acks(
    holder: &mut lapin::Consumer,
    held: Vec<lapin::message::Delivery>,
) {
    use futures::StreamExt;
    let more = crate::common::within_long("the holder's cancel", async {
        let mut more = 0;
        while let Some(Ok(_)) = holder.next().await {
            more += 1;
        }
        more
    })
    .await;
    assert_eq!(more, 0, "the holder got more while frozen out");
    for delivery in held {
        let _ = delivery.ack(Default::default()).await;
    }
}

/// A consumer of `queue` on `ch` that has taken `n` deliveries and acked each: their bodies,
/// each delivered once.
async fn consume_acking(
    ch: &lapin::Channel,
    queue: &str,
    tag: &str,
    n: usize,
) -> (lapin::Consumer, std::collections::BTreeSet<Vec<u8>>) {
    use futures::StreamExt;
    let mut consumer = consume(ch, queue, tag).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < n {
        let d = crate::common::within_long("a delivery", consumer.next())
            .await
            .expect("consumer ended")
            .expect("delivery");
        assert!(seen.insert(d.data.clone()), "delivered twice");
        d.ack(Default::default()).await.expect("ack");
    }
    (consumer, seen)
}

async fn formed(cluster: &Cluster, nodes: &[&ChildBroker]) {
    let names: Vec<String> = (1..=cluster.dirs.len()).map(|i| format!("n{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for node in nodes {
        eventually(
            "the cluster formed",
            || self::nodes(node),
            |n| *n == all_running(&names),
        );
    }
}

async fn confirm_channel(conn: &lapin::Connection) -> lapin::Channel {
    let ch = crate::common::lapin_channel(conn).await;
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    ch
}

/// Publishes messages numbered `numbers` (each `size` bytes, persistent) to `queue` through the
/// default exchange, each confirmed before the next.
async fn publish_numbered(
    ch: &lapin::Channel,
    queue: &str,
    numbers: std::ops::Range<usize>,
    size: usize,
) {
    for i in numbers {
        publish_confirmed(ch, "", queue, &crate::common::numbered_body(i, size), true).await;
    }
}

async fn publish_confirmed(
    ch: &lapin::Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    persistent: bool,
) {
    let props = match persistent {
        true => lapin::BasicProperties::default().with_delivery_mode(2),
        false => lapin::BasicProperties::default(),
    };
    let confirm = crate::common::within(
        "basic.publish",
        ch.basic_publish(exchange.into(), key.into(), Default::default(), body, props),
    )
    .await
    .expect("basic.publish");
    let confirmation = crate::common::within("the confirm", confirm)
        .await
        .expect("confirm");
    assert!(confirmation.is_ack(), "nacked: {confirmation:?}");
}

/// Declares durable `queue` on `node` (its home).
async fn declare_durable(node: &ChildBroker, queue: &str) {
    let conn = node.connect().await;
    crate::common::lapin_channel(&conn)
        .await
        .queue_declare(queue.into(), durable(), Default::default())
        .await
        .expect("declare");
    let _ = conn.close(200, "bye".into()).await;
}

fn durable() -> lapin::options::QueueDeclareOptions {
    lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// A queue declared on n1 lives there; n2 publishes to it (directly and through an exchange
/// declared on n2 and bound on n3), n3 consumes and acks: every message arrives once, counts
/// agree on every node, and a get and a purge work from afar.
#[tokio::test]
async fn a_queue_on_one_node_is_published_to_and_consumed_from_the_others() {
    use lapin::options::*;
    let (_cluster, n1, n2, n3) = three_formed().await;
    let (c1, c2, c3) = (n1.connect().await, n2.connect().await, n3.connect().await);
    let ch1 = crate::common::lapin_channel(&c1).await;
    ch1.queue_declare("orders".into(), durable(), Default::default())
        .await
        .expect("declare on n1");
    let ch2 = confirm_channel(&c2).await;
    ch2.exchange_declare(
        "fan".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .expect("exchange on n2");
    let ch3 = crate::common::lapin_channel(&c3).await;
    // The queue and the exchange reach n3 once committed; the bind waits for neither.
    ch3.queue_bind(
        "orders".into(),
        "fan".into(),
        "".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("bind on n3");
    for i in 0..50u32 {
        publish_confirmed(
            &ch2,
            "",
            "orders",
            format!("direct {i}").as_bytes(),
            i % 2 == 0,
        )
        .await;
        publish_confirmed(
            &ch2,
            "fan",
            "",
            format!("fanout {i}").as_bytes(),
            i % 2 == 1,
        )
        .await;
    }
    for node in [&ch1, &ch3] {
        assert_eq!(crate::common::lapin_count(node, "orders").await, 100);
    }
    // A get from n2 and an ack.
    let got = ch2
        .basic_get("orders".into(), BasicGetOptions::default())
        .await
        .expect("get")
        .expect("a message");
    assert_eq!(got.delivery.data, b"direct 0");
    got.delivery.ack(Default::default()).await.expect("ack");

    let (_consumer, seen) = consume_acking(&ch3, "orders", "c3", 99).await;
    assert!(!seen.contains(b"direct 0".as_slice()));
    // Everything settled: nothing left anywhere, and the consumer counts where the queue is.
    eventually_async(|| async { passive(&c1, "orders").await.ok() }, Some((0, 1))).await;
    // A purge from n2 of what n2 publishes next.
    publish_confirmed(&ch2, "", "orders", b"late", true).await;
    ch3.basic_cancel("c3".into(), Default::default())
        .await
        .expect("cancel");
    publish_confirmed(&ch2, "", "orders", b"later", true).await;
    let purged = ch2
        .queue_purge("orders".into(), Default::default())
        .await
        .expect("purge");
    assert!(purged >= 1, "purged {purged}");
    // Deleted from n3: gone on every node.
    ch3.queue_delete("orders".into(), Default::default())
        .await
        .expect("delete");
    for conn in [&c1, &c2, &c3] {
        eventually_async(|| async { passive(conn, "orders").await.is_err() }, true).await;
    }

    // A stream on n1, published to through n2 and read from an offset through n3.
    let mut stream_args = lapin::types::FieldTable::default();
    stream_args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("stream".into()),
    );
    ch1.queue_declare("events".into(), durable(), stream_args)
        .await
        .expect("stream on n1");
    eventually_async(|| async { passive(&c2, "events").await.is_ok() }, true).await;
    for i in 0..10u32 {
        publish_confirmed(&ch2, "", "events", format!("event {i}").as_bytes(), false).await;
    }
    let reader = crate::common::lapin_channel(&c3).await;
    // Through n3 too, a stream's rules: a consumer needs a prefetch.
    let refused = reader
        .basic_consume(
            "events".into(),
            "".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .expect_err("no prefetch");
    assert_eq!(crate::common::lapin_code(&refused), Some(406), "{refused}");
    let reader = crate::common::lapin_channel(&c3).await;
    reader.basic_qos(5, Default::default()).await.expect("qos");
    let mut from = lapin::types::FieldTable::default();
    from.insert(
        "x-stream-offset".into(),
        lapin::types::AMQPValue::LongLongInt(6),
    );
    let mut consumer = reader
        .basic_consume("events".into(), "".into(), Default::default(), from)
        .await
        .expect("consume through n3");
    for i in 6..10u32 {
        let d = crate::common::lapin_next(&mut consumer).await;
        assert_eq!(d.data, format!("event {i}").into_bytes());
        let offset = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned());
        assert_eq!(
            offset,
            Some(lapin::types::AMQPValue::LongLongInt(i64::from(i)))
        );
        d.ack(Default::default()).await.expect("ack");
    }
}

async fn eventually_async<T, F, Fut>(mut probe: F, expected: T)
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + FORM;
    loop {
        let value = probe().await;
        if value == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {value:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn passive(conn: &lapin::Connection, queue: &str) -> Result<(u32, u32), lapin::Error> {
    let ch = crate::common::lapin_channel(conn).await;
    let q = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    Ok((q.message_count(), q.consumer_count()))
}

/// The home node of a queue is killed: consumers elsewhere are cancelled, uses from elsewhere get
/// RabbitMQ's "home node is down" 404, the other nodes keep serving; back with its data, it has
/// every message it confirmed (those delivered unacked included), and its transient queue is gone.
#[tokio::test]
async fn a_killed_home_node_comes_back_with_its_confirmed_messages() {
    use futures::StreamExt;
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    let ch1 = crate::common::lapin_channel(&c1).await;
    ch1.queue_declare("kept".into(), durable(), Default::default())
        .await
        .expect("durable on n1");
    ch1.queue_declare("temp".into(), Default::default(), Default::default())
        .await
        .expect("transient on n1");
    let c2 = n2.connect().await;
    let ch2 = confirm_channel(&c2).await;
    for i in 0..200u32 {
        publish_confirmed(&ch2, "", "kept", format!("m{i}").as_bytes(), true).await;
    }
    // n3 takes ten and holds them unacked.
    let c3 = n3.connect().await;
    let mut consumer = take_unacked(&c3, "kept", "held", 10).await;

    n1.kill9();
    // The consumer on n3 is cancelled by the broker.
    let ended = crate::common::within_long("the consumer's cancel", consumer.next()).await;
    assert!(ended.is_none(), "still delivering: {ended:?}");
    // From n2: RabbitMQ's 404 for a durable queue whose node is down.
    let err = eventually_err(&c2, "kept").await;
    assert!(err.contains("NOT_FOUND") || err.contains("404"), "{err}");
    assert!(err.contains("home node 'n1'"), "{err}");
    // n2 and n3 are a majority: they keep serving, definitions included.
    let ch = crate::common::lapin_channel(&c2).await;
    ch.queue_declare("on-n2".into(), durable(), Default::default())
        .await
        .expect("declare while n1 is down");
    publish_confirmed(&ch2, "", "on-n2", b"x", true).await;
    assert_eq!(passive(&c3, "on-n2").await.expect("n3 sees it"), (1, 0));

    let n1 = cluster.start(0);
    let c1 = n1.connect().await;
    // Every confirmed message is back, the ten n3 held among them (requeued).
    eventually_async(|| async { passive(&c1, "kept").await.ok() }, Some((200, 0))).await;
    eventually_async(|| async { passive(&c2, "kept").await.ok() }, Some((200, 0))).await;
    // The transient queue died with n1's process, on every node.
    for conn in [&c1, &c2, &c3] {
        eventually_async(|| async { passive(conn, "temp").await.is_err() }, true).await;
    }
    // n1 learns what was declared while it was away.
    eventually_async(|| async { passive(&c1, "on-n2").await.ok() }, Some((1, 0))).await;
}

/// Waits until a passive declare of `queue` fails, and gives its error.
async fn eventually_err(conn: &lapin::Connection, queue: &str) -> String {
    let deadline = Instant::now() + FORM;
    loop {
        if let Err(e) = passive(conn, queue).await {
            return e.to_string();
        }
        assert!(Instant::now() < deadline, "{queue} still answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node cut off from the majority refuses declares (541, as RabbitMQ's metadata store
/// timeouts close the connection) instead of making a change the others never see.
#[tokio::test]
async fn a_minority_node_refuses_declares() {
    let cluster = Cluster::new(3).await;
    let n1 = cluster.start_with(0, SECRET, "2000");
    let n2 = cluster.start(1);
    let n3 = cluster.start(2);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    n2.kill9();
    n3.kill9();
    let c1 = n1.connect().await;
    let ch = crate::common::lapin_channel(&c1).await;
    let err = ch
        .queue_declare("never".into(), Default::default(), Default::default())
        .await
        .expect_err("declared without a majority");
    let text = err.to_string();
    assert!(text.contains("majority"), "{text}");
    assert_eq!(crate::common::lapin_code(&err), Some(541), "{text}");
}

/// Users, vhosts and permissions made on one node hold on every node.
#[tokio::test]
async fn users_vhosts_and_permissions_are_the_clusters() {
    let (_cluster, n1, n2, n3) = three_formed().await;
    let (status, body) = api(
        &n1,
        "PUT",
        "/api/users/alice",
        Some(r#"{"password":"s3cret","tags":""}"#),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = api(&n2, "PUT", "/api/vhosts/shop", Some("{}"));
    assert_eq!(status, 201, "{body}");
    let (status, body) = api(
        &n3,
        "PUT",
        "/api/permissions/shop/alice",
        Some(r#"{"configure":".*","write":".*","read":".*"}"#),
    );
    assert_eq!(status, 201, "{body}");
    // Alice uses the vhost from every node, a queue declared on one seen from the others.
    let uri = |node: &ChildBroker| format!("amqp://alice:s3cret@127.0.0.1:{}/shop", node.port);
    let mut conns = Vec::new();
    for node in [&n1, &n2, &n3] {
        let conn = lapin::Connection::connect(&uri(node), Default::default()).await;
        conns.push(conn.expect("alice connects to every node"));
    }
    let ch = crate::common::lapin_channel(&conns[0]).await;
    ch.queue_declare("cart".into(), durable(), Default::default())
        .await
        .expect("declare in shop");
    for conn in &conns[1..] {
        assert_eq!(passive(conn, "cart").await.expect("seen"), (0, 0));
    }
    for node in [&n1, &n2, &n3] {
        let (status, list) = api(node, "GET", "/api/vhosts", None);
        assert_eq!(status, 200);
        assert!(list.as_array().unwrap().iter().any(|v| v["name"] == "shop"));
    }
    // The permission goes on n2: n1 refuses alice's next connection.
    let (status, _) = api(&n2, "DELETE", "/api/permissions/shop/alice", None);
    assert_eq!(status, 204);
    let refused = lapin::Connection::connect(&uri(&n1), Default::default()).await;
    assert!(refused.is_err(), "alice still gets in");
    // The vhost goes on n3: gone on n1 too.
    let (status, _) = api(&n3, "DELETE", "/api/vhosts/shop", None);
    assert_eq!(status, 204);
    let (status, _) = api(&n1, "GET", "/api/vhosts/shop", None);
    assert_eq!(status, 404);
    // The user goes on n1: n3 no longer knows her.
    let (status, _) = api(&n1, "DELETE", "/api/users/alice", None);
    assert_eq!(status, 204);
    let (status, _) = api(&n3, "GET", "/api/users/alice", None);
    assert_eq!(status, 404);
}

/// `--cluster-tls`: the cluster forms and works over mutual TLS with the nodes' certificates; a
/// node of the same cluster without TLS is not let in.
#[tokio::test]
async fn the_cluster_link_runs_over_tls() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let cluster = Cluster::new(3).await;
    let certs = tempfile::tempdir().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let path = |name: &str| certs.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    for i in 1..=3 {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(path(&format!("n{i}.pem")), cert.pem()).unwrap();
        std::fs::write(path(&format!("n{i}.key")), key.serialize_pem()).unwrap();
    }
    let peers = cluster.peers();
    let start = |i: usize, tls: bool| {
        let listen = format!("127.0.0.1:{}", cluster.cluster_ports[i]);
        let name = format!("n{}", i + 1);
        let (cert, key, ca) = (
            path(&format!("{name}.pem")),
            path(&format!("{name}.key")),
            path("ca.pem"),
        );
        let mut args = vec![
            "--node-name",
            &name,
            "--cluster-listen",
            &listen,
            "--cluster-peers",
            &peers,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-file",
            &ca,
        ];
        if tls {
            args.push("--cluster-tls");
        }
        ChildBroker::start_with_env(
            cluster.dirs[i].path(),
            &args,
            &[("WARREN_CLUSTER_SECRET", SECRET)],
        )
    };
    let n1 = start(0, true);
    let n2 = start(1, true);
    let n3 = start(2, false);
    eventually(
        "n1 and n2 meet over TLS, n3 (plain) is left out",
        || nodes(&n1),
        |n| *n == running([true, true, false]),
    );
    let (status, body) = api(
        &n2,
        "PUT",
        "/api/cluster-name",
        Some(r#"{"name":"sealed"}"#),
    );
    assert_eq!(status, 204, "{body}");
    eventually("n1 has it", || cluster_name(&n1), |n| n == "sealed");
    drop(n3);
}

/// Direct reply-to across nodes: the client consumes `amq.rabbitmq.reply-to` on n3, its request
/// goes to a queue homed on n2, the server answers from n1, and the reply reaches n3's channel.
#[tokio::test]
async fn direct_replies_cross_nodes() {
    use futures::StreamExt;
    use lapin::options::*;
    let (_cluster, n1, n2, n3) = three_formed().await;
    let (c1, c2, c3) = (n1.connect().await, n2.connect().await, n3.connect().await);
    crate::common::lapin_channel(&c2)
        .await
        .queue_declare("requests".into(), Default::default(), Default::default())
        .await
        .expect("declare on n2");
    let client = crate::common::lapin_channel(&c3).await;
    let mut replies = client
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("consume replies");
    for i in 0..5u8 {
        client
            .basic_publish(
                "".into(),
                "requests".into(),
                Default::default(),
                &[i],
                lapin::BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
            )
            .await
            .expect("request");
    }
    let server = crate::common::lapin_channel(&c1).await;
    let mut requests = server
        .basic_consume(
            "requests".into(),
            "server".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .expect("serve on n1");
    for _ in 0..5 {
        let request = crate::common::within_long("a request", requests.next())
            .await
            .expect("stream")
            .expect("request");
        let reply_to = request.properties.reply_to().clone().expect("reply_to");
        assert!(reply_to.as_str().starts_with("amq.rabbitmq.reply-to."));
        server
            .basic_publish(
                "".into(),
                reply_to.as_str().into(),
                Default::default(),
                &[request.data[0] * 2],
                Default::default(),
            )
            .await
            .expect("reply");
        request.ack(Default::default()).await.expect("ack");
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let reply = crate::common::within_long("a reply", replies.next())
            .await
            .expect("stream")
            .expect("reply");
        got.push(reply.data[0]);
    }
    got.sort();
    assert_eq!(got, vec![0, 2, 4, 6, 8]);
}

/// The node of a consumer goes (SIGKILL) with deliveries unacked: the queue's home node takes
/// them back, and every message is still there (published = queued).
#[tokio::test]
async fn a_consumer_node_killed_gives_its_unacked_deliveries_back() {
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    let ch1 = confirm_channel(&c1).await;
    ch1.queue_declare("jobs".into(), durable(), Default::default())
        .await
        .expect("declare on n1");
    for i in 0..100u32 {
        publish_confirmed(&ch1, "", "jobs", format!("j{i}").as_bytes(), i % 2 == 0).await;
    }
    let c3 = n3.connect().await;
    let _consumer = take_unacked(&c3, "jobs", "greedy", 25).await;
    assert_eq!(passive(&c1, "jobs").await.expect("counts"), (75, 1));
    n3.kill9();
    // All back on n1: 100 ready, no consumer left; n2 agrees.
    eventually_async(|| async { passive(&c1, "jobs").await.ok() }, Some((100, 0))).await;
    let c2 = n2.connect().await;
    assert_eq!(
        passive(&c2, "jobs").await.expect("counts from n2"),
        (100, 0)
    );
    drop(c3);
}

/// The cluster form of `basic::deliveries_sent_before_a_cancel_reach_the_cancelled_consumer_before_cancel_ok`:
/// the queue on n1, the client on n2, whose consumers are proxies of n1's queue. Deliveries
/// relayed before the cancel reach the cancelled consumer before cancel-ok: n1 forgot the
/// consumer before its queue took the cancel and dropped the no-ack deliveries still on their
/// way, and n2 forgot it before n1 answered.
#[tokio::test]
async fn deliveries_relayed_before_a_cancel_reach_the_cancelled_consumer_before_cancel_ok() {
    let (_cluster, n1, n2, _n3) = three_formed().await;
    let mut home = Raw::open(amqp_addr(&n1)).await;
    home.open_channel(1).await;
    home.declare(1, "cancel.relayed", QOpts::default()).await;
    let mut r = Raw::open(amqp_addr(&n2)).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    r.consume(2, "cancel.relayed", "low", true, false).await;
    crate::common::cancel_rounds_with_deliveries_in_flight(&mut r, "cancel.relayed", 100).await;
    r.expect_silence(Duration::from_millis(200)).await;
    drop(home);
}

/// A queue's message counts and rates read through another node are its home node's: the
/// proxy's stats carried no counts, so `/api/queues` on n2 showed a queue of n1's with no
/// `message_stats` and zero rates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_on_another_node_shows_its_home_nodes_counts_and_rates() {
    let cluster = Cluster {
        statistics_every: Some(200),
        ..Cluster::new(3).await
    };
    let (_cluster, n1, n2, _n3) = three_formed_of(cluster).await;
    declare_durable(&n1, "counted").await;
    let c1 = n1.connect().await;
    let ch = confirm_channel(&c1).await;
    publish_numbered(&ch, "counted", 0..20, 64).await;
    let (_consumer, _) = consume_acking(&ch, "counted", "acking", 20).await;
    let seen = |node: &ChildBroker| {
        let (_, q) = api(node, "GET", "/api/queues/%2F/counted", None);
        let stats = &q["message_stats"];
        let count = |k: &str| stats[k].as_u64().unwrap_or(0);
        (count("publish"), count("deliver"), count("ack"))
    };
    eventually("n1 counts them", || seen(&n1), |c| *c == (20, 20, 20));
    assert_eq!(seen(&n2), (20, 20, 20), "n2 shows n1's counts");
    // Rates: published while n2 looks, the home node's rate shows on n2 as well.
    let publishing = {
        let ch = ch.clone();
        tokio::spawn(async move {
            publish_numbered(&ch, "counted", 20..2000, 64).await;
        })
    };
    eventually(
        "n2 shows a publish rate",
        || {
            let (_, q) = api(&n2, "GET", "/api/queues/%2F/counted", None);
            q["message_stats"]["publish_details"]["rate"]
                .as_f64()
                .unwrap_or(0.0)
        },
        |rate| *rate > 0.0,
    );
    publishing.abort();
}

/// A transaction on n2 publishing persistent messages to a durable queue on n1: commit-ok comes
/// once n1 has them on disk, so a SIGKILL of n1 right after loses none.
#[tokio::test]
async fn a_transaction_commits_to_a_queue_on_another_node_durably() {
    let (cluster, n1, n2, n3) = three_formed().await;
    declare_durable(&n1, "ledger").await;
    let c2 = n2.connect().await;
    let ch = crate::common::lapin_channel(&c2).await;
    ch.tx_select().await.expect("tx.select");
    for i in 0..50u32 {
        ch.basic_publish(
            "".into(),
            "ledger".into(),
            Default::default(),
            format!("entry {i}").as_bytes(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish");
    }
    ch.tx_commit().await.expect("tx.commit");
    n1.kill9();
    let n1 = cluster.start(0);
    let c1 = n1.connect().await;
    eventually_async(
        || async { passive(&c1, "ledger").await.ok() },
        Some((50, 0)),
    )
    .await;
    drop(n3);
}

/// A consumer's node frozen (SIGSTOP) with deliveries unacked: the queue's home node takes it for
/// dead within seconds and gives the deliveries back to the queue, where a consumer elsewhere
/// gets every message; thawed, the frozen node's consumer is cancelled and nothing is delivered
/// twice to the live one.
#[tokio::test]
async fn a_frozen_consumer_node_gives_its_unacked_deliveries_back() {
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    let ch1 = confirm_channel(&c1).await;
    ch1.queue_declare("work".into(), durable(), Default::default())
        .await
        .expect("declare on n1");
    for i in 0..60u32 {
        publish_confirmed(&ch1, "", "work", format!("w{i}").as_bytes(), true).await;
    }
    let c3 = n3.connect().await;
    let _frozen = take_unacked(&c3, "work", "frozen", 20).await;
    n3.signal("STOP");
    // n2 drains the queue: the 40 never delivered, then the 20 n3 held, once n1 gives up on it.
    let c2 = n2.connect().await;
    let ch2 = crate::common::lapin_channel(&c2).await;
    let (_live, _) = consume_acking(&ch2, "work", "live", 60).await;
    n3.signal("CONT");
    eventually_async(|| async { passive(&c1, "work").await.ok() }, Some((0, 1))).await;
    drop(c3);
}

// ---------------------------------------------------------------------------------------------
// Hostile clients and sockets against a cluster: every message accounted for (published =
// consumed + still queued), the cluster and other clients unaffected.

fn amqp_addr(node: &ChildBroker) -> std::net::SocketAddr {
    ([127, 0, 0, 1], node.port).into()
}

/// (ready, unacked, consumers) of `queue` in vhost `/`, as `node`'s management API reports them.
fn queue_counts(node: &ChildBroker, queue: &str) -> (u64, u64, u64) {
    let (status, q) = api(node, "GET", &format!("/api/queues/%2f/{queue}"), None);
    assert_eq!(status, 200, "{q}");
    let count = |field: &str| {
        q[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {q}"))
    };
    (
        count("messages_ready"),
        count("messages_unacknowledged"),
        count("consumers"),
    )
}

/// A raw client on `node` whose socket is reset (SO_LINGER 0) when dropped, as when its process
/// is killed.
async fn resetting_client(node: &ChildBroker) -> Raw {
    let stream = tokio::net::TcpStream::connect(amqp_addr(node))
        .await
        .expect("connect");
    #[allow(deprecated)] // a blocking close is what we want here: RST at once
    stream.set_linger(Some(Duration::ZERO)).expect("linger");
    let _ = stream.set_nodelay(true);
    Raw::over(stream).open_as(Handshake::default()).await
}

/// A consumer of `queue` on `node` (from a client reset when dropped) that reads its first
/// [`TAKEN`] deliveries, then nothing more.
async fn reading_then_stuck(node: &ChildBroker, queue: &str, tag: &str, no_ack: bool) -> Raw {
    let mut client = resetting_client(node).await;
    client.open_channel(1).await;
    // A quorum queue's consume-ok comes once the member has applied the consume, behind what it
    // was applying: seconds on a loaded machine, after a fill of this size.
    client
        .send_method(1, crate::common::consume(queue, tag, no_ack, false))
        .await;
    match client.next_within(FORM).await {
        Ok(In::Method(1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))) => {}
        other => panic!("expected basic.consume-ok, got {other:?}"),
    }
    for _ in 0..TAKEN {
        client.expect_deliver().await;
    }
    client
}

/// Publishes messages `0..n` of `size` bytes to `queue` (declared on `node`, not durable) from a
/// raw client, and waits until the queue holds them all.
async fn fill(node: &ChildBroker, queue: &str, n: usize, size: usize) {
    fill_as_declared(node, queue, n, size, true).await
}

/// As [`fill`], `declare` false for a queue declared already (with arguments of its own).
async fn fill_as_declared(node: &ChildBroker, queue: &str, n: usize, size: usize, declare: bool) {
    let mut publisher = Raw::open(amqp_addr(node)).await;
    publisher.open_channel(1).await;
    if declare {
        publisher.declare(1, queue, QOpts::default()).await;
    }
    for i in 0..n {
        publisher
            .publish(1, "", queue, &numbered_body(i, size))
            .await;
    }
    eventually(
        "the queue holds every message published",
        || queue_counts(node, queue),
        |&(ready, _, _)| ready == n as u64,
    );
    publisher.close().await;
}

/// Checks that `drained` holds each of `expected` exactly once and nothing else; gives the
/// numbers of those flagged redelivered.
fn exactly_once(
    drained: &[(Vec<u8>, bool)],
    expected: impl IntoIterator<Item = usize>,
) -> std::collections::BTreeSet<usize> {
    let mut seen = std::collections::BTreeSet::new();
    let mut redelivered = std::collections::BTreeSet::new();
    for (body, flagged) in drained {
        let n = body_number(body);
        assert!(seen.insert(n), "message {n} twice");
        if *flagged {
            redelivered.insert(n);
        }
    }
    let expected: std::collections::BTreeSet<usize> = expected.into_iter().collect();
    let lost: Vec<_> = expected.difference(&seen).take(10).collect();
    let unexpected: Vec<_> = seen.difference(&expected).take(10).collect();
    assert!(
        lost.is_empty() && unexpected.is_empty(),
        "lost (first ten) {lost:?}, unexpected {unexpected:?}, of {} expected",
        expected.len()
    );
    redelivered
}

/// Publishes 20 confirmed messages to a new queue on `home` through `via` and consumes them there
/// with acks: the path through the cluster link still works.
async fn cross_node_round_trip(home: &ChildBroker, via: &ChildBroker, queue: &str) {
    let home_conn = home.connect().await;
    crate::common::lapin_channel(&home_conn)
        .await
        .queue_declare(queue.into(), Default::default(), Default::default())
        .await
        .expect("declare on the home node");
    let conn = via.connect().await;
    let ch = confirm_channel(&conn).await;
    for i in 0..20 {
        publish_confirmed(&ch, "", queue, &numbered_body(i, 64), false).await;
    }
    let (_consumer, seen) = consume_acking(&ch, queue, "round-trip", 20).await;
    let numbers: Vec<usize> = seen.iter().map(|b| body_number(b)).collect();
    assert_eq!(numbers, (0..20).collect::<Vec<_>>());
    let _ = conn.close(200, "bye".into()).await;
    let _ = home_conn.close(200, "bye".into()).await;
}

/// A thousand sockets on a node's cluster port that never get through the handshake (silent,
/// half a hello, bytes that are no handshake message, a 4 GiB length): the node's links to its
/// peers stay up, messages still cross nodes, its memory barely moves, and it closes every one
/// of them within the handshake timeout.
#[tokio::test]
async fn a_flood_on_the_cluster_port_leaves_the_cluster_serving() {
    let (cluster, n1, n2, n3) = three_formed().await;
    let memory_before = n1.rss();
    let port = cluster.cluster_ports[0];
    let mut flood = Vec::new();
    for i in 0..1000 {
        let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the cluster port");
        let mut s = Raw::over(socket);
        let bytes: &[u8] = match i % 4 {
            0 => &[],
            1 => &[0, 0, 0, 200, 0, 1, b'n'],
            2 => &[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff],
            _ => &[0xff, 0xff, 0xff, 0xff],
        };
        // The node may already have closed it (beyond its handshake cap).
        let _ = s.try_send(bytes).await;
        flood.push(s);
    }
    for node in [&n1, &n2, &n3] {
        assert_eq!(nodes(node), all_running(&["n1", "n2", "n3"]));
    }
    cross_node_round_trip(&n1, &n2, "after-flood").await;
    let grown = n1.rss().saturating_sub(memory_before);
    assert!(grown < 32 << 20, "n1 grew by {} MiB", grown >> 20);
    let closed = futures::future::join_all(
        flood
            .iter_mut()
            .map(|s| s.read_raw(usize::MAX, Duration::from_secs(20))),
    )
    .await;
    let open = closed.iter().filter(|(_, closed)| !*closed).count();
    assert_eq!(open, 0, "sockets still open after the handshake timeout");
    for node in [&n1, &n2, &n3] {
        assert_eq!(nodes(node), all_running(&["n1", "n2", "n3"]));
    }
}

/// How many deliveries the consumer that stops reading takes before it stops.
const TAKEN: usize = 10;

/// Waits until `queue`'s counts on `node` stay the same for a second: what a stuck consumer holds
/// once the broker stops sending it more.
fn settled_counts(node: &ChildBroker, queue: &str) -> (u64, u64, u64) {
    let mut last = queue_counts(node, queue);
    let deadline = Instant::now() + FORM;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = queue_counts(node, queue);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// A consumer on n2 without a prefetch limit stops reading its socket while the queue on n1
/// holds 120 MB: n2 takes a fixed part of it (what a client on n1 would pin in its connection's
/// buffers, and the home node's credit for the consumer), not the whole queue; other clients are
/// served through n2 meanwhile; once the stuck client is gone every message is back on n1 and a
/// second consumer gets each exactly once.
#[tokio::test]
async fn a_consumer_on_another_node_that_stops_reading_holds_a_bounded_backlog() {
    const N: usize = 30_000;
    const SIZE: usize = 4096;
    let (_cluster, n1, n2, _n3) = three_formed().await;
    fill(&n1, "flood", N, SIZE).await;
    let memory_before = n2.rss();
    let stuck = reading_then_stuck(&n2, "flood", "stuck", false).await;
    // It reads no more: what n2 holds for it stops growing well short of the queue (about
    // 9000 messages, 7000 of them in its connection's buffers and socket).
    let (ready, unacked, _) = settled_counts(&n1, "flood");
    assert_eq!(ready + unacked, N as u64);
    let grown = n2.rss().saturating_sub(memory_before);
    assert!(
        unacked <= N as u64 / 2 && grown < (N * SIZE) as u64 * 2 / 3,
        "n2 took {unacked} of {N} messages for a client that reads nothing, and grew by {} MiB",
        grown >> 20
    );
    // Other clients are served through n2 meanwhile.
    cross_node_round_trip(&n1, &n2, "beside-the-stuck-one").await;
    // The stuck client vanishes: everything it held is back on n1.
    drop(stuck);
    eventually(
        "every message back in the queue",
        || queue_counts(&n1, "flood"),
        |&c| c == (N as u64, 0, 0),
    );
    let drained = n2.drain("flood").await;
    let redelivered = exactly_once(&drained, 0..N);
    assert!(
        (0..TAKEN).all(|i| redelivered.contains(&i)),
        "the {TAKEN} the client saw come back redelivered"
    );
}

/// A consumer on n3 with manual acks takes 100 deliveries of a queue on n1, acks 30, and its
/// connection is reset: the 30 are gone, the other 70 it saw come back flagged redelivered,
/// and the queue holds every other message exactly once.
#[tokio::test]
async fn a_consumer_reset_on_another_node_gives_back_what_it_held() {
    const N: usize = 2_000;
    const SEEN: usize = 100;
    const ACKED: usize = 30;
    let (_cluster, n1, _n2, n3) = three_formed().await;
    fill(&n1, "reset", N, 512).await;
    let mut consumer = resetting_client(&n3).await;
    consumer.open_channel(1).await;
    consumer.qos(1, 200, false).await;
    consumer
        .consume(1, "reset", "resetting", false, false)
        .await;
    let mut seen = Vec::new();
    for _ in 0..SEEN {
        let m = consumer.expect_deliver().await;
        seen.push((m.delivery_tag(), body_number(&m.body)));
    }
    let (last_acked_tag, _) = seen[ACKED - 1];
    consumer.ack(1, last_acked_tag, true).await;
    // The ack reaches n1 before the reset (more deliveries follow it, unread).
    eventually(
        "the acks reach the queue",
        || queue_counts(&n1, "reset"),
        |&(ready, unacked, _)| ready + unacked == (N - ACKED) as u64,
    );
    drop(consumer);
    eventually(
        "everything it held back in the queue",
        || queue_counts(&n1, "reset"),
        |&c| c == ((N - ACKED) as u64, 0, 0),
    );
    let acked: std::collections::BTreeSet<usize> = seen[..ACKED].iter().map(|&(_, n)| n).collect();
    let drained = n1.drain("reset").await;
    let redelivered = exactly_once(&drained, (0..N).filter(|n| !acked.contains(n)));
    for &(_, n) in &seen[ACKED..] {
        assert!(
            redelivered.contains(&n),
            "message {n} not flagged redelivered"
        );
    }
}

/// A publisher with confirms on n2 to a durable queue on n1 sends a burst, and vanishes (reset)
/// in the middle of a message: every message confirmed to it is in the queue once, the others
/// at most once, the half-sent one nowhere, and the queue takes and delivers new messages.
#[tokio::test]
async fn a_publisher_that_vanishes_mid_message_on_another_node_loses_no_confirmed_message() {
    const N: usize = 1_000;
    const HALF_SENT: usize = 9_999_999;
    let (_cluster, n1, n2, _n3) = three_formed().await;
    declare_durable(&n1, "ledger").await;
    let mut publisher = resetting_client(&n2).await;
    publisher.open_channel(1).await;
    publisher.confirm_select(1).await;
    for i in 0..N {
        publisher
            .publish_persistent(1, "ledger", &numbered_body(i, 256))
            .await;
    }
    // Confirms for at least half of them (tag i + 1 is message i).
    let mut confirmed = std::collections::BTreeSet::new();
    while confirmed.len() < N / 2 {
        match publisher.recv().await {
            In::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(ack))) => {
                let tag = ack.delivery_tag as usize;
                match ack.multiple {
                    true => confirmed.extend(0..tag),
                    false => {
                        confirmed.insert(tag - 1);
                    }
                }
            }
            other => panic!("expected basic.ack, got {other:?}"),
        }
    }
    // Then the method, the header and half the body of one more, and the socket is reset.
    let body = numbered_body(HALF_SENT, 256);
    let mut half = publish_bytes(1, "", "ledger");
    half.extend(header_bytes(1, body.len() as u64));
    half.extend(body_bytes(1, &body)[..body.len() / 2].iter());
    publisher.send(&half).await;
    drop(publisher);
    // The queue goes on: a message published after, through n2, confirmed and last in line.
    let c2 = n2.connect().await;
    let ch2 = confirm_channel(&c2).await;
    publish_confirmed(&ch2, "", "ledger", &numbered_body(N, 256), true).await;
    let drained = n1.drain("ledger").await;
    let numbers: Vec<usize> = drained.iter().map(|(b, _)| body_number(b)).collect();
    assert_eq!(numbers.last(), Some(&N), "the later message is not last");
    let unconfirmed_arrived: Vec<usize> = numbers
        .iter()
        .copied()
        .filter(|n| !confirmed.contains(n) && *n < N)
        .collect();
    exactly_once(
        &drained,
        confirmed
            .iter()
            .copied()
            .chain(unconfirmed_arrived)
            .chain([N]),
    );
    assert!(
        !numbers.contains(&HALF_SENT),
        "the half-sent message arrived"
    );
}

/// A node's metadata log, as its own entry in `/api/nodes` shows it.
#[derive(Debug, Clone, Copy)]
struct LogSpan {
    first: u64,
    last: u64,
    entries: u64,
    snapshot: Option<u64>,
}

fn metadata_log(node: &ChildBroker, name: &str) -> LogSpan {
    let (status, list) = api(node, "GET", "/api/nodes", None);
    assert_eq!(status, 200, "{list}");
    let me = list
        .as_array()
        .and_then(|all| all.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in {list}"));
    let log = &me["metadata_log"];
    let index = |key: &str| {
        log[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {log}"))
    };
    LogSpan {
        first: index("first_index"),
        last: index("last_index"),
        entries: index("entries"),
        snapshot: log["snapshot_index"].as_u64(),
    }
}

/// The names `node` lists under `path` (`/api/queues`, ...) that start with `prefix`, sorted.
fn names_listed(node: &ChildBroker, path: &str, prefix: &str) -> Vec<String> {
    let (status, list) = api(node, "GET", path, None);
    assert_eq!(status, 200, "{list}");
    let mut names: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|item| item["name"].as_str())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// How many bindings `node` lists from exchanges whose name starts with `prefix`.
fn bindings_from(node: &ChildBroker, prefix: &str) -> usize {
    let (status, list) = api(node, "GET", "/api/bindings", None);
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .expect("a list")
        .iter()
        .filter(|b| b["source"].as_str().is_some_and(|s| s.starts_with(prefix)))
        .count()
}

/// Declares durable `queue` on `conn`'s node and publishes `n` persistent messages to it
/// (`m0`, `m1`, ...), confirmed; the confirming channel comes back.
async fn durable_queue_holding(conn: &lapin::Connection, queue: &str, n: u32) -> lapin::Channel {
    let ch = confirm_channel(conn).await;
    ch.queue_declare(queue.into(), durable(), Default::default())
        .await
        .expect("declare");
    for i in 0..n {
        publish_confirmed(&ch, "", queue, format!("m{i}").as_bytes(), true).await;
    }
    ch
}

fn sorted_names(prefix: &str, n: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    names.sort();
    names
}

/// With snapshots every 20 entries: n3 is killed, the others make ~150 changes (queues,
/// exchanges, bindings, users, a vhost; deletions of what n3 had seen) and compact their logs past
/// what n3 has. n3 comes back, is sent a snapshot, and sees every definition; its own durable
/// queue has its persistent messages back; what was deleted is gone. Every node's log stays
/// within twice the interval.
#[tokio::test]
async fn a_node_behind_the_compacted_log_catches_up_from_a_snapshot() {
    use lapin::options::*;
    const EVERY: u64 = 20;
    let (cluster, n1, n2, n3) = three_formed_of(Cluster::snapshotting_every(3, EVERY).await).await;
    let c3 = n3.connect().await;
    durable_queue_holding(&c3, "on-n3", 30).await;
    let c1 = n1.connect().await;
    let ch1 = crate::common::lapin_channel(&c1).await;
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch1.queue_declare("doomed".into(), durable(), Default::default())
        .await
        .expect("declare doomed");
    ch1.exchange_declare(
        "doomed-x".into(),
        lapin::ExchangeKind::Fanout,
        durable_exchange,
        Default::default(),
    )
    .await
    .expect("declare doomed-x");
    let user = r#"{"password":"pw","tags":""}"#;
    let (status, _) = api(&n1, "PUT", "/api/users/doomed-user", Some(user));
    assert_eq!(status, 201);
    // n3 has all that, then goes.
    eventually(
        "n3 has doomed-user",
        || names_listed(&n3, "/api/users", "doomed"),
        |names| *names == ["doomed-user"],
    );
    assert_eq!(passive(&c3, "doomed").await.expect("doomed on n3"), (0, 0));
    let behind = metadata_log(&n3, "n3").last;
    drop(c3);
    n3.kill9();
    // (A change under way to a leader that dies fails: wait for the others to see it gone.)
    eventually(
        "n1 sees n3 down",
        || nodes(&n1),
        |n| *n == running([true, true, false]),
    );

    for x in 0..10 {
        ch1.exchange_declare(
            format!("x{x}").as_str().into(),
            lapin::ExchangeKind::Topic,
            durable_exchange,
            Default::default(),
        )
        .await
        .expect("exchange");
    }
    for q in 0..60 {
        let name = format!("q{q}");
        ch1.queue_declare(name.as_str().into(), durable(), Default::default())
            .await
            .expect("queue");
        ch1.queue_bind(
            name.as_str().into(),
            format!("x{}", q % 10).as_str().into(),
            name.as_str().into(),
            Default::default(),
            Default::default(),
        )
        .await
        .expect("bind");
    }
    for u in 0..5 {
        let (status, _) = api(&n1, "PUT", &format!("/api/users/user-{u}"), Some(user));
        assert_eq!(status, 201);
    }
    let (status, _) = api(&n1, "PUT", "/api/vhosts/shop", Some("{}"));
    assert_eq!(status, 201);
    let (status, body) = api(
        &n1,
        "PUT",
        "/api/queues/shop/cart",
        Some(r#"{"durable":true}"#),
    );
    assert!(status == 201 || status == 204, "{status} {body}");
    ch1.queue_delete("doomed".into(), Default::default())
        .await
        .expect("delete doomed");
    ch1.exchange_delete("doomed-x".into(), Default::default())
        .await
        .expect("delete doomed-x");
    let (status, _) = api(&n1, "DELETE", "/api/users/doomed-user", None);
    assert_eq!(status, 204);
    let (status, _) = api(&n1, "PUT", "/api/users/last-user", Some(user));
    assert_eq!(status, 201);
    // The nodes up compacted their logs past what n3 has, and keep them short.
    for (node, name) in [(&n1, "n1"), (&n2, "n2")] {
        eventually(
            "the log compacted past n3",
            || metadata_log(node, name),
            |log| log.first > behind + 1 && log.entries <= 2 * EVERY + 5,
        );
    }

    let n3 = cluster.start(2);
    // Sent a snapshot: n3's own starts past where it stopped.
    eventually(
        "n3 installs a snapshot past where it was",
        || metadata_log(&n3, "n3"),
        |log| log.snapshot.is_some_and(|s| s > behind),
    );
    // Then the entries after the snapshot: the last change made is seen last.
    eventually(
        "n3 has the last change",
        || names_listed(&n3, "/api/users", "last-user"),
        |names| *names == ["last-user"],
    );
    eventually(
        "n3 lists every queue",
        || names_listed(&n3, "/api/queues", "q"),
        |names| *names == sorted_names("q", 60),
    );
    assert_eq!(
        names_listed(&n3, "/api/exchanges", "x"),
        sorted_names("x", 10)
    );
    assert_eq!(bindings_from(&n3, "x"), 60);
    assert_eq!(
        names_listed(&n3, "/api/users", "user-"),
        sorted_names("user-", 5)
    );
    assert!(names_listed(&n3, "/api/users", "doomed").is_empty());
    assert!(names_listed(&n3, "/api/exchanges", "doomed").is_empty());
    assert_eq!(names_listed(&n3, "/api/queues/shop", "cart"), vec!["cart"]);
    let c3 = n3.connect().await;
    assert!(passive(&c3, "doomed").await.is_err(), "doomed is back");
    for q in [0, 59] {
        assert_eq!(passive(&c3, &format!("q{q}")).await.expect("q"), (0, 0));
    }
    // n3's own durable queue has its messages back, seen from n3 and from n1.
    eventually_async(|| async { passive(&c3, "on-n3").await.ok() }, Some((30, 0))).await;
    eventually_async(|| async { passive(&c1, "on-n3").await.ok() }, Some((30, 0))).await;
    // A binding made before the kill routes on n3: publish through x3 to q13.
    let ch3 = confirm_channel(&c3).await;
    publish_confirmed(&ch3, "x3", "q13", b"routed", true).await;
    assert_eq!(passive(&c1, "q13").await.expect("q13"), (1, 0));
    // Every node's log stays within twice the interval.
    for (node, name) in [(&n1, "n1"), (&n2, "n2"), (&n3, "n3")] {
        eventually(
            "the log stays short",
            || metadata_log(node, name),
            |log| log.entries <= 2 * EVERY + 5,
        );
    }
}

/// A node restarted whose own snapshot holds its durable queue (with persistent messages) and its
/// transient queue, the log behind the snapshot purged: the durable queue comes back with its
/// messages, the transient one is gone on every node.
#[tokio::test]
async fn a_node_restarted_from_its_own_snapshot_keeps_durable_queues_and_drops_transient_ones() {
    const EVERY: u64 = 10;
    let (cluster, n1, n2, n3) = three_formed_of(Cluster::snapshotting_every(3, EVERY).await).await;
    let c1 = n1.connect().await;
    let ch1 = durable_queue_holding(&c1, "kept", 20).await;
    ch1.queue_declare("temp".into(), Default::default(), Default::default())
        .await
        .expect("transient on n1");
    // More changes (from n2) until n1's log no longer holds the declares.
    let declared = metadata_log(&n1, "n1").last;
    let c2 = n2.connect().await;
    let ch2 = crate::common::lapin_channel(&c2).await;
    let mut filler = 0;
    while metadata_log(&n1, "n1").first <= declared {
        assert!(
            filler < 500,
            "n1's log never compacted: {:?}",
            metadata_log(&n1, "n1")
        );
        let name = format!("filler{filler}");
        ch2.queue_declare(name.as_str().into(), durable(), Default::default())
            .await
            .expect("filler");
        filler += 1;
    }
    let snapshot = metadata_log(&n1, "n1").snapshot;
    assert!(snapshot.is_some_and(|s| s >= declared), "{snapshot:?}");

    drop(c1);
    n1.kill9();
    let n1 = cluster.start(0);
    let c1 = n1.connect().await;
    eventually_async(|| async { passive(&c1, "kept").await.ok() }, Some((20, 0))).await;
    eventually_async(|| async { passive(&c2, "kept").await.ok() }, Some((20, 0))).await;
    let c3 = n3.connect().await;
    for conn in [&c1, &c2, &c3] {
        eventually_async(|| async { passive(conn, "temp").await.is_err() }, true).await;
    }
    for node in [&n1, &n2, &n3] {
        eventually(
            "the transient queue is gone from every node's list",
            || names_listed(node, "/api/queues", "temp"),
            |names| names.is_empty(),
        );
        assert_eq!(names_listed(node, "/api/queues", "kept"), vec!["kept"]);
        assert_eq!(
            names_listed(node, "/api/queues", "filler").len(),
            filler,
            "fillers on a node"
        );
    }
    // The messages are n1's: consumed from n3, they come from n1's store.
    let ch3 = crate::common::lapin_channel(&c3).await;
    let got = ch3
        .basic_get("kept".into(), lapin::options::BasicGetOptions::default())
        .await
        .expect("get")
        .expect("a message");
    assert_eq!(got.delivery.data, b"m0");
}

/// A node killed for good loses its transient queues, as in RabbitMQ: the others delete its
/// non-durable and exclusive queues (with their bindings) once it has been unreachable for a
/// while, and keep its durable ones, which come back with it.
#[tokio::test]
async fn a_node_gone_for_good_loses_its_transient_queues_and_keeps_its_durable_ones() {
    let (cluster, n1, n2, n3) = three_formed().await;
    let c3 = n3.connect().await;
    let ch3 = crate::common::lapin_channel(&c3).await;
    ch3.queue_declare("t3".into(), Default::default(), Default::default())
        .await
        .expect("transient");
    let exclusive = lapin::options::QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch3.queue_declare("x3".into(), exclusive, Default::default())
        .await
        .expect("exclusive");
    ch3.queue_bind(
        "t3".into(),
        "amq.direct".into(),
        "to-t3".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("bind");
    declare_durable(&n3, "d3").await;
    for node in [&n1, &n2] {
        eventually(
            "every queue of n3's listed on the others",
            || names_listed(node, "/api/queues", ""),
            |names| {
                ["d3", "t3", "x3"]
                    .iter()
                    .all(|q| names.contains(&q.to_string()))
            },
        );
    }

    // Killed with its connection open: the exclusive queue goes with the node, not the client.
    n3.kill9();
    drop(c3);
    for node in [&n1, &n2] {
        eventually(
            "n3's transient queues deleted, its durable one kept",
            || names_listed(node, "/api/queues", ""),
            |names| *names == ["d3"],
        );
        let (_, bindings) = api(node, "GET", "/api/bindings", None);
        assert!(
            !bindings.to_string().contains("to-t3"),
            "the binding went with its queue: {bindings}"
        );
    }
    let c1 = n1.connect().await;
    assert!(passive(&c1, "t3").await.is_err(), "t3 is gone");

    // Back, n3 has its durable queue and not the others.
    let n3 = cluster.start(2);
    let c3 = n3.connect().await;
    eventually_async(|| async { passive(&c3, "d3").await.ok() }, Some((0, 0))).await;
    eventually(
        "n3 lists what the others do",
        || names_listed(&n3, "/api/queues", ""),
        |names| *names == ["d3"],
    );
}

/// Declares quorum queue `queue` on `conn`'s node.
async fn declare_quorum(conn: &lapin::Connection, queue: &str) {
    declare_quorum_with(conn, queue, lapin::types::FieldTable::default()).await
}

/// As [`declare_quorum`], with arguments of its own.
async fn declare_quorum_with(
    conn: &lapin::Connection,
    queue: &str,
    mut args: lapin::types::FieldTable,
) {
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    crate::common::lapin_channel(conn)
        .await
        .queue_declare(queue.into(), durable(), args)
        .await
        .expect("declare a quorum queue");
}

/// A quorum queue on three nodes: confirmed publishes through any node, consumed through
/// another; its declaring node killed, the others keep every confirmed message and take new
/// ones; back, the killed node catches up with the queue.
#[tokio::test]
async fn a_quorum_queue_keeps_its_confirmed_messages_when_a_member_is_killed() {
    const N: usize = 200;
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "qq").await;
    let c2 = n2.connect().await;
    let ch2 = confirm_channel(&c2).await;
    publish_numbered(&ch2, "qq", 0..N, 64).await;
    let c3 = n3.connect().await;
    for conn in [&c1, &c2, &c3] {
        eventually_async(
            || async { passive(conn, "qq").await.ok() },
            Some((N as u32, 0)),
        )
        .await;
    }
    // The management API shows its members, who leads, who is online, as RabbitMQ's.
    let replica = |node: &ChildBroker| {
        let (_, q) = api(node, "GET", "/api/queues/%2F/qq", None);
        (
            q["type"].as_str().map(str::to_owned),
            q["leader"].as_str().map(str::to_owned),
            q["members"].to_string(),
            q["online"].to_string(),
        )
    };
    let all = r#"["n1","n2","n3"]"#;
    eventually(
        "n2 shows the members",
        || replica(&n2),
        |(kind, leader, members, online)| {
            kind.as_deref() == Some("quorum") && leader.is_some() && members == all && online == all
        },
    );

    drop(c1);
    n1.kill9();
    // Another member leads (if n1 did); n1 is offline.
    eventually(
        "n3 shows a leader other than n1, and n1 offline",
        || replica(&n3),
        |(_, leader, members, online)| {
            matches!(leader.as_deref(), Some("n2" | "n3"))
                && members == all
                && online == r#"["n2","n3"]"#
        },
    );
    // `quorum_status` (the API's and ctl's) shows n1's member down, one leader, the others'
    // logs holding the messages.
    let roles = |members: &Value| -> Vec<(String, String)> {
        members
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| (m["node"].to_string(), m["raft_state"].to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Settled once one member leads (an election may still be under way when n3 first names a
    // leader).
    let members = eventually(
        "the status shows n1 down and one leader",
        || api(&n3, "GET", "/api/queues/quorum/%2F/qq/status", None).1,
        |members| {
            let roles = roles(members);
            roles.first() == Some(&(r#""n1""#.into(), r#""noproc""#.into()))
                && roles.iter().filter(|(_, r)| r == r#""leader""#).count() == 1
        },
    );
    assert!(members[1]["commit_index"].as_u64() >= Some(1), "{members}");
    let ctl = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "ctl",
            "--url",
            &format!("http://127.0.0.1:{}", n2.http_port),
        ])
        .args(["quorum_status", "qq"])
        .output()
        .expect("warren ctl");
    let table = String::from_utf8_lossy(&ctl.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines.get(1).copied(),
        Some("Node Name\tRaft State\tLog Index\tCommit Index\tSnapshot Index\tTerm"),
        "{table}"
    );
    assert!(
        lines.get(2).is_some_and(|l| l.starts_with("n1\tnoproc")),
        "{table}"
    );
    assert_eq!(lines.len(), 5, "{table}");

    // n2 and n3 are a majority: consumed through n3, every confirmed message once.
    let ch3 = crate::common::lapin_channel(&c3).await;
    let (consumer, seen) = consume_acking(&ch3, "qq", "after-kill", N).await;
    assert_eq!(seen.len(), N);
    ch3.basic_cancel("after-kill".into(), Default::default())
        .await
        .expect("cancel");
    drop(consumer);
    // New publishes are confirmed without n1.
    publish_numbered(&ch2, "qq", N..N + 50, 64).await;
    eventually_async(|| async { passive(&c3, "qq").await.ok() }, Some((50, 0))).await;

    let n1 = cluster.start(0);
    let c1 = n1.connect().await;
    eventually_async(
        || async { passive(&c1, "qq").await.ok().map(|s| s.0) },
        Some(50),
    )
    .await;
}

/// A quorum queue's consumer on a member that is killed with deliveries unacked: the others
/// take its node for gone and give those deliveries to a consumer on another node (redelivered,
/// with `x-delivery-count`), every message once.
#[tokio::test]
async fn a_quorum_queue_consumer_killed_with_its_node_gives_its_deliveries_back() {
    use futures::StreamExt;
    const N: usize = 60;
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "qq").await;
    let ch1 = confirm_channel(&c1).await;
    publish_numbered(&ch1, "qq", 0..N, 32).await;
    // n3's consumer takes 20 and acks none.
    let c3 = n3.connect().await;
    let ch3 = crate::common::lapin_channel(&c3).await;
    ch3.basic_qos(20, Default::default()).await.expect("qos");
    let mut held = consume(&ch3, "qq", "holder").await;
    for _ in 0..20 {
        crate::common::within_long("a delivery", held.next())
            .await
            .expect("consumer ended")
            .expect("delivery");
    }
    n3.kill9();
    drop((held, ch3, c3));
    // n2's consumer gets all 60, the 20 n3 held redelivered and counted.
    let c2 = n2.connect().await;
    let ch2 = crate::common::lapin_channel(&c2).await;
    let mut consumer = consume(&ch2, "qq", "taker").await;
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < N {
        let d = crate::common::within_long("a delivery", consumer.next())
            .await
            .expect("consumer ended")
            .expect("delivery");
        let count = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-delivery-count").cloned());
        let body = crate::common::body_number(&d.data);
        assert!(
            seen.insert(body, (d.redelivered, count)).is_none(),
            "message {body} delivered twice"
        );
        d.ack(Default::default()).await.expect("ack");
    }
    let redelivered = seen.values().filter(|(r, _)| *r).count();
    assert_eq!(redelivered, 20, "{seen:?}");
    assert!(seen.values().filter(|(r, _)| *r).all(|(_, c)| c.is_some()));
    eventually_async(|| async { passive(&c1, "qq").await.ok() }, Some((0, 1))).await;
}

/// Confirmed publishing to a quorum queue (through n3, which stays up) while, round after round,
/// a member is killed, paused (SIGSTOP) or restarted — the leader when it is not n3: no
/// confirmed message is lost, none arrives twice, and the queue serves at the end.
#[tokio::test]
async fn a_quorum_queue_loses_no_confirmed_message_through_kills_and_pauses() {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let (cluster, n1, n2, n3) = three_formed().await;
    let c3 = n3.connect().await;
    declare_quorum(&c3, "qq").await;
    let ch3 = confirm_channel(&c3).await;
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (ch, confirmed, stop) = (ch3.clone(), confirmed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = crate::common::numbered_body(i, 32);
                let props = lapin::BasicProperties::default().with_delivery_mode(2);
                let confirm = ch
                    .basic_publish("".into(), "qq".into(), Default::default(), &body, props)
                    .await
                    .expect("publish");
                if confirm.await.expect("confirm").is_ack() {
                    confirmed.lock().unwrap().push(i);
                }
                i += 1;
            }
            i
        })
    };
    let leader = |node: &ChildBroker| {
        api(node, "GET", "/api/queues/%2F/qq", None).1["leader"]
            .as_str()
            .map(str::to_owned)
    };
    // Waits (without blocking the publisher's runtime) until `more` confirms came after `from`.
    let flowing = |what: &'static str, more: usize| {
        let confirmed = confirmed.clone();
        async move {
            let from = confirmed.lock().unwrap().len();
            let deadline = Instant::now() + FORM;
            while confirmed.lock().unwrap().len() < from + more {
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut nodes = [Some(n1), Some(n2)];
    for round in 0..3 {
        flowing("confirms flow", 20).await;
        // The leader if it is n1 or n2, else n1 (a follower).
        let victim = match leader(&n3).as_deref() {
            Some("n2") => 1,
            _ => 0,
        };
        let node = nodes[victim].take().expect("running");
        if round == 1 {
            node.signal("STOP");
            tokio::time::sleep(Duration::from_secs(6)).await;
            node.signal("CONT");
            nodes[victim] = Some(node);
        } else {
            node.kill9();
            flowing("confirms flow without it", 20).await;
            nodes[victim] = Some(cluster.start(victim));
        }
    }
    flowing("confirms flow at the end", 20).await;
    stop.store(true, Ordering::Relaxed);
    let published = publisher.await.expect("publisher");
    let confirmed: std::collections::BTreeSet<usize> =
        confirmed.lock().unwrap().iter().copied().collect();
    // Everything in the queue, through n3 (until it stays quiet): each confirmed message
    // once, nothing twice.
    let mut consumer = consume(&crate::common::lapin_channel(&c3).await, "qq", "drain").await;
    let mut seen = std::collections::BTreeSet::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
        let d = d.expect("delivery");
        let n = crate::common::body_number(&d.data);
        assert!(seen.insert(n), "message {n} delivered twice");
        d.ack(Default::default()).await.expect("ack");
    }
    let lost: Vec<_> = confirmed.difference(&seen).collect();
    assert!(lost.is_empty(), "confirmed and lost: {lost:?}");
    assert!(seen.iter().all(|n| *n < published));
    drop(nodes);
}

/// Publishes without confirms through a member (n1) while the queue's leader is killed, then
/// while the next one is frozen: n1 proposes again the enqueues whose fate it does not know,
/// and the queue applies each once, so every message its connection took is in the queue
/// exactly once (a leader change neither loses nor duplicates an enqueue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_publishes_through_leader_changes_are_neither_lost_nor_duplicated() {
    let (cluster, n1, n2, n3) = three_formed().await;
    declare_quorum(&n2.connect().await, "unconfirmed").await;
    leader_among(&n1, "unconfirmed", &["n2"]);
    // Frozen past the election timeout, then back: its proposals in flight time out on n1.
    let (n2, published) = publish_unconfirmed_through_leader_changes(
        &cluster,
        [&n1, &n3],
        n2,
        "unconfirmed",
        Duration::from_secs(6),
    )
    .await;
    // Duplicates, if any, show in the drain.
    eventually(
        "every message published in the queue",
        || queue_counts(&n3, "unconfirmed").0,
        |&n| n >= published as u64,
    );
    let drained = n3.drain("unconfirmed").await;
    exactly_once(&drained, 0..published);
    drop((n1, n2));
}

/// Publishes numbered messages (64 bytes) to `queue` through `node` with a raw client, without
/// confirms, ten every 10 ms, until `stop`: how many (its close-ok comes once `node` has taken
/// every one).
async fn publish_unconfirmed_until(
    node: &ChildBroker,
    queue: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let mut client = Raw::open(amqp_addr(node)).await;
    client.open_channel(1).await;
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..10 {
                client.publish(1, "", queue, &numbered_body(i, 64)).await;
                i += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        client.close().await;
        i
    })
}

/// A raw publisher without confirms on n1 (`[n1, n3]`) to `queue`, led by `n2`, while n2 is
/// killed and started again, then the leader then (n2 or n3) frozen for `freeze`: the n2
/// started again and how many messages the publisher sent (n1 took every one).
async fn publish_unconfirmed_through_leader_changes(
    cluster: &Cluster,
    [n1, n3]: [&ChildBroker; 2],
    n2: ChildBroker,
    queue: &'static str,
    freeze: Duration,
) -> (ChildBroker, usize) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_unconfirmed_until(n1, queue, stop.clone()).await;
    messages_flow(n1, queue, 500);
    n2.kill9();
    messages_flow(n1, queue, 500);
    let n2 = cluster.start(1);
    messages_flow(n1, queue, 500);
    let candidates = [("n2", &n2), ("n3", n3)];
    freeze_leader(n1, queue, candidates, freeze).await;
    messages_flow(n1, queue, 500);
    stop.store(true, Ordering::Relaxed);
    let published = publisher.await.expect("publisher");
    assert!(published > 2000, "{published}");
    (n2, published)
}

/// Waits until `node` shows `more` messages more in `queue` than it does now.
fn messages_flow(node: &ChildBroker, queue: &str, more: u64) {
    let held = || queue_counts(node, queue).0;
    let from = held();
    eventually("messages flow into the queue", held, |&n| n >= from + more);
}

/// Freezes (SIGSTOP) the leader of `queue` as `via` names it, of `candidates` (by name; the
/// first if it names none of them) for `pause`, then resumes it.
async fn freeze_leader(
    via: &ChildBroker,
    queue: &str,
    candidates: [(&str, &ChildBroker); 2],
    pause: Duration,
) {
    let (_, q) = api(via, "GET", &format!("/api/queues/%2F/{queue}"), None);
    let leader = q["leader"].as_str();
    let frozen = match candidates.iter().find(|(name, _)| Some(*name) == leader) {
        Some((_, node)) => node,
        None => candidates[0].1,
    };
    frozen.signal("STOP");
    tokio::time::sleep(pause).await;
    frozen.signal("CONT");
}

/// Which members of quorum queue `queue` are dormant, as `node`'s status says (by node name).
fn dormant_members(node: &ChildBroker, queue: &str) -> Vec<String> {
    let (_, rows) = api(
        node,
        "GET",
        &format!("/api/queues/quorum/%2F/{queue}/status"),
        None,
    );
    let mut names: Vec<String> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["dormant"].as_bool() == Some(true))
        .filter_map(|r| r["node"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Takes `n` deliveries from `consumer`, acking each: their numbers.
async fn take_numbers(consumer: &mut lapin::Consumer, n: usize) -> Vec<usize> {
    use futures::StreamExt;
    let mut got = Vec::new();
    for _ in 0..n {
        let d = crate::common::within_long("a delivery", consumer.next())
            .await
            .expect("consumer open")
            .expect("delivery");
        got.push(body_number(&d.data));
        d.ack(Default::default()).await.expect("ack");
    }
    got
}

/// How many quorum queue members sleep on `node` (`warren_quorum_members_asleep`).
fn members_asleep(node: &ChildBroker) -> Option<u64> {
    metric(node, "warren_quorum_members_asleep")
}

/// How many quorum queue machines are packed on `node` (`warren_quorum_machines_packed`).
fn machines_packed(node: &ChildBroker) -> Option<u64> {
    metric(node, "warren_quorum_machines_packed")
}

/// The value of `node`'s Prometheus metric `name` (one without labels).
fn metric(node: &ChildBroker, name: &str) -> Option<u64> {
    let (_, text) = node.http_get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Idle quorum queue members go dormant (their Raft instances stopped) and asleep (their tasks
/// ended), and wake when used: a consumer waiting on a dormant queue gets what is published
/// through another node (its members dormant but awake: a consumer keeps them so), a confirm
/// comes for each publish, the counts stay right; asleep again, a count asked and a policy set
/// wake them and they sleep again; then the leader's node killed, the two left wake, elect a
/// leader and take and deliver confirmed publishes; every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dormant_quorum_queues_wake_for_publishers_and_consumers() {
    let cluster = Cluster {
        dormant_after: Some(1500),
        ..Cluster::new(3).await
    };
    let (cluster, n1, n2, n3) = three_formed_of(cluster).await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "sleepy").await;
    let all = ["n1", "n2", "n3"];
    let ch1 = confirm_channel(&c1).await;
    publish_numbered(&ch1, "sleepy", 0..10, 128).await;
    eventually(
        "all three dormant",
        || dormant_members(&n1, "sleepy"),
        |d| *d == all,
    );
    let nodes_asleep = |asleep: u64| {
        for node in [&n1, &n2, &n3] {
            eventually(
                "members asleep",
                || members_asleep(node),
                |n| *n == Some(asleep),
            );
        }
    };
    nodes_asleep(1);
    assert_eq!(queue_counts(&n3, "sleepy").0, 10);
    // A consumer on n3 takes the ten, then waits on a queue that goes dormant again.
    let c3 = n3.connect().await;
    let ch3 = crate::common::lapin_channel(&c3).await;
    let mut consumer = consume(&ch3, "sleepy", "waiting").await;
    let mut seen = Vec::new();
    seen.extend(take_numbers(&mut consumer, 10).await);
    eventually(
        "dormant with a consumer",
        || dormant_members(&n1, "sleepy"),
        |d| *d == all,
    );
    // Dormant, but awake: a consumer in the state keeps every member from sleeping.
    for node in [&n1, &n2, &n3] {
        assert_eq!(members_asleep(node), Some(0));
    }
    let ch2 = confirm_channel(&n2.connect().await).await;
    publish_numbered(&ch2, "sleepy", 10..20, 128).await;
    seen.extend(take_numbers(&mut consumer, 10).await);
    drop((consumer, ch3, c3));
    eventually(
        "dormant again",
        || dormant_members(&n2, "sleepy"),
        |d| *d == all,
    );
    nodes_asleep(1);
    // Woken by what reaches them some other way than a publish (a declare's check of the
    // queue, a policy), they answer and sleep again.
    let c2 = n2.connect().await;
    assert_eq!(
        passive(&c2, "sleepy").await.expect("passive declare"),
        (0, 0)
    );
    let (status, body) = api(
        &n1,
        "PUT",
        "/api/policies/%2F/sleepy-limit",
        Some(r#"{"pattern":"^sleepy$","apply-to":"queues","definition":{"max-length":1000}}"#),
    );
    assert!(status < 300, "{status} {body}");
    nodes_asleep(1);
    drop(c2);
    let leader = api(&n2, "GET", "/api/queues/%2F/sleepy", None).1["leader"]
        .as_str()
        .map(str::to_owned);
    let mut nodes = [Some(n1), Some(n2), Some(n3)];
    let victim = match leader.as_deref() {
        Some("n2") => 1,
        Some("n3") => 2,
        _ => 0,
    };
    drop(ch1);
    nodes[victim].take().expect("running").kill9();
    let via = nodes.iter().flatten().next().expect("a node left");
    let ch = confirm_channel(&via.connect().await).await;
    publish_numbered(&ch, "sleepy", 20..30, 128).await;
    let drained = via.drain("sleepy").await;
    let numbers: Vec<usize> = drained.iter().map(|(b, _)| body_number(b)).collect();
    assert_eq!(numbers, (20..30).collect::<Vec<_>>());
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    drop((cluster, nodes));
}

/// Members put to sleep and woken over and over: a short dormancy, publishes and gets through
/// every node in turn with pauses around it (each use a wake, from the inbox or from an entry
/// applied, racing the member's going to sleep), and every fifth round a wait until all sleep.
/// Every confirmed message is got exactly once, and none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_woken_and_put_to_sleep_over_and_over_lose_nothing() {
    let cluster = Cluster {
        dormant_after: Some(400),
        ..Cluster::new(3).await
    };
    let (_cluster, n1, n2, n3) = three_formed_of(cluster).await;
    let nodes = [&n1, &n2, &n3];
    let mut conns = Vec::new();
    for node in nodes {
        conns.push(node.connect().await);
    }
    declare_quorum(&conns[0], "churn").await;
    let (mut publishers, mut getters) = (Vec::new(), Vec::new());
    for conn in &conns {
        publishers.push(confirm_channel(conn).await);
        getters.push(crate::common::lapin_channel(conn).await);
    }
    let (mut got, mut published) = (Vec::new(), 0);
    for round in 0..15 {
        publish_numbered(
            &publishers[round % 3],
            "churn",
            published..published + 5,
            32,
        )
        .await;
        published += 5;
        // The pause is the point: shorter than the dormancy, about it, past it, and (every fifth
        // round) until every member sleeps.
        if round % 5 == 4 {
            for node in nodes {
                eventually("members asleep", || members_asleep(node), |n| *n == Some(1));
            }
        } else {
            let pause = [100, 380, 450, 1200][round % 5];
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        for _ in 0..4 {
            let getter = &getters[(round + 1) % 3];
            let Some(m) = crate::common::within(
                "basic.get",
                getter.basic_get("churn".into(), lapin::options::BasicGetOptions::default()),
            )
            .await
            .expect("basic.get") else {
                break;
            };
            got.push(body_number(&m.delivery.data));
            m.delivery.ack(Default::default()).await.expect("ack");
        }
    }
    drop((publishers, getters, conns));
    let rest = n3.drain("churn").await;
    got.extend(rest.iter().map(|(body, _)| body_number(body)));
    got.sort_unstable();
    assert_eq!(got, (0..published).collect::<Vec<_>>());
}

/// Quorum queue consumers that stop reading their sockets: one on n2 with manual acks and no
/// prefetch limit, then one on n3 without acks. The queue gives each at most 2000 deliveries at
/// a time (RabbitMQ's credit for such consumers on a quorum queue), not the whole queue, and
/// serves other clients meanwhile; the first gone, what it held is back; the second gone, it
/// has taken only what its connection took; the rest is drained once each.
#[tokio::test]
async fn quorum_queue_consumers_that_stop_reading_are_given_a_bounded_part() {
    const N: usize = 24_000;
    const SIZE: usize = 4096;
    const CREDIT: u64 = 2000;
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "qflood").await;
    fill_as_declared(&n1, "qflood", N, SIZE, false).await;

    let stuck = reading_then_stuck(&n2, "qflood", "stuck", false).await;
    let (ready, unacked, _) = settled_counts(&n1, "qflood");
    assert_eq!(ready + unacked, N as u64);
    assert!(
        unacked <= CREDIT,
        "the queue gave {unacked} of {N} to a consumer that reads nothing"
    );
    cross_node_round_trip(&n1, &n2, "beside-the-stuck-one").await;
    drop(stuck);
    eventually(
        "every message back in the queue",
        || queue_counts(&n1, "qflood"),
        |&c| c == (N as u64, 0, 0),
    );

    let careless = reading_then_stuck(&n3, "qflood", "careless", true).await;
    let (ready, unacked, _) = settled_counts(&n1, "qflood");
    let taken = N as u64 - ready - unacked;
    // What it took is what its connection's buffers and socket hold (about 7500 messages of
    // 4 KiB), as for a classic queue's consumer.
    assert!(
        unacked <= CREDIT && taken + unacked <= N as u64 / 2,
        "a no-ack consumer that reads nothing took {taken} and holds {unacked} of {N}"
    );
    drop(careless);
    let left = eventually(
        "the no-ack consumer gone",
        || queue_counts(&n1, "qflood"),
        |&(_, unacked, consumers)| unacked == 0 && consumers == 0,
    )
    .0;
    let drained = n2.drain("qflood").await;
    let numbers: std::collections::BTreeSet<usize> =
        drained.iter().map(|(body, _)| body_number(body)).collect();
    assert_eq!(numbers.len(), drained.len(), "a message drained twice");
    assert_eq!(drained.len() as u64, left);
    assert!(numbers.iter().all(|&i| i < N));
}

/// A policy set on a quorum queue after its declare applies on every member, at the same entry
/// of the queue's log: `max-length` 5 set through n3, ten confirmed publishes through n2 leave
/// the last five on every node; cleared, the queue takes more again.
#[tokio::test]
async fn a_policy_set_after_declare_applies_to_a_quorum_queue_on_every_member() {
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "qpolicy").await;
    let (status, body) = api(
        &n3,
        "PUT",
        "/api/policies/%2F/short",
        Some(r#"{"pattern":"^qpolicy$","apply-to":"queues","definition":{"max-length":5}}"#),
    );
    assert!(status == 201 || status == 204, "{status} {body}");
    let c2 = n2.connect().await;
    let ch2 = confirm_channel(&c2).await;
    // The policy reaches each member as its metadata does: publish once n2 has it.
    eventually(
        "n2 shows the policy on the queue",
        || api(&n2, "GET", "/api/queues/%2F/qpolicy", None).1["policy"].clone(),
        |policy| policy == "short",
    );
    publish_numbered(&ch2, "qpolicy", 0..10, 64).await;
    for node in [&n1, &n2, &n3] {
        eventually(
            "every member holds the last five",
            || queue_counts(node, "qpolicy"),
            |&(ready, _, _)| ready == 5,
        );
    }
    let drained = n3.drain("qpolicy").await;
    let numbers: Vec<usize> = drained.iter().map(|(b, _)| body_number(b)).collect();
    assert_eq!(numbers, (5..10).collect::<Vec<_>>());
    let (status, body) = api(&n1, "DELETE", "/api/policies/%2F/short", None);
    assert_eq!(status, 204, "{body}");
    eventually(
        "n2 shows no policy on the queue",
        || api(&n2, "GET", "/api/queues/%2F/qpolicy", None).1["policy"].clone(),
        |policy| policy.is_null() || policy == "",
    );
    publish_numbered(&ch2, "qpolicy", 10..20, 64).await;
    eventually(
        "the queue takes ten again",
        || queue_counts(&n1, "qpolicy"),
        |&(ready, _, _)| ready == 10,
    );
}

/// A quorum queue's log stays small however many messages pass through it: a million messages
/// of 1 KiB published with confirms (through n1 and n2) and consumed with acks, the log each
/// member keeps stays within the snapshot interval (4096 entries, or 64 MiB) and its Raft
/// database does not grow with what passed. Minutes in a release build (outside CI):
/// `cargo test --release --test integration -- --ignored million`.
#[tokio::test]
#[ignore]
async fn a_quorum_queues_log_stays_small_over_a_million_messages() {
    const MESSAGES: u64 = 1_000_000;
    const MOST_ENTRIES_KEPT: u64 = 4096 + 64 + 1000;
    const MOST_DB_BYTES: u64 = 512 << 20;
    let (cluster, n1, n2, n3) = three_formed().await;
    declare_quorum(&n1.connect().await, "qlong").await;
    let mut passed = 0;
    while passed < MESSAGES {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args([
                "perf",
                "--uri",
                &n1.uri(),
                "--uri",
                &n2.uri(),
                "-u",
                "qlong",
            ])
            .args(["--queue-args", "x-queue-type=quorum", "-f", "persistent"])
            .args([
                "-c", "1000", "-q", "1000", "-s", "1024", "-z", "10", "--json",
            ])
            .output()
            .expect("warren perf");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: Value = stdout
            .lines()
            .last()
            .and_then(|line| serde_json::from_str(line).ok())
            .unwrap_or_else(|| panic!("a JSON summary: {stdout}"));
        assert_eq!(summary["errors"], 0, "{summary}");
        passed += summary["consumed"].as_u64().expect("consumed");
        let (status, members) = api(&n3, "GET", "/api/queues/quorum/%2F/qlong/status", None);
        assert_eq!(status, 200, "{members}");
        for m in members.as_array().expect("members") {
            let kept =
                m["log_index"].as_u64().unwrap_or(0) + 1 - m["first_index"].as_u64().unwrap_or(0);
            assert!(
                kept <= MOST_ENTRIES_KEPT,
                "after {passed} messages, a member keeps {kept} entries: {m}"
            );
        }
        let mut sizes = Vec::new();
        for dir in &cluster.dirs {
            let db = dir.path().join("cluster").join("raft.redb");
            let bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
            assert!(
                bytes <= MOST_DB_BYTES,
                "after {passed} messages, {} holds {} MiB",
                db.display(),
                bytes >> 20
            );
            sizes.push(bytes >> 20);
        }
        eprintln!("{passed} messages through, Raft databases {sizes:?} MiB, logs: {members}");
    }
}

/// On a node that is not one of a quorum queue's members, the queue is served by any member:
/// four nodes, a queue of three members declared on n1; n4 publishes with confirms and consumes
/// through n1 at first, n1 is killed, and n4 goes on through n2 or n3 (its consumer cancelled
/// with `basic.cancel`, as the member it used went): every confirmed message is consumed.
#[tokio::test]
async fn a_non_member_reaches_a_quorum_queue_through_another_member_when_one_goes() {
    use futures::StreamExt;
    const N: usize = 50;
    let cluster = Cluster::new(4).await;
    let (n1, n2, n3, n4) = (
        cluster.start(0),
        cluster.start(1),
        cluster.start(2),
        cluster.start(3),
    );
    formed(&cluster, &[&n1, &n2, &n3, &n4]).await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "qfar").await;
    eventually(
        "n2 shows three members",
        || api(&n2, "GET", "/api/queues/%2F/qfar", None).1["members"].to_string(),
        |members| members == r#"["n1","n2","n3"]"#,
    );
    let c4 = n4.connect().await;
    let ch4 = confirm_channel(&c4).await;
    publish_numbered(&ch4, "qfar", 0..N, 64).await;
    drop(c1);
    n1.kill9();
    // n4's proxy moves to another member: its publishes are confirmed again.
    let mut confirmed = N;
    let deadline = Instant::now() + FORM;
    while confirmed < 2 * N {
        assert!(Instant::now() < deadline, "n4 never reached another member");
        let ok = ch4
            .basic_publish(
                "".into(),
                "qfar".into(),
                lapin::options::BasicPublishOptions::default(),
                &numbered_body(confirmed, 64),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        if ok.is_ack() {
            confirmed += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let ch = crate::common::lapin_channel(&c4).await;
    let mut consumer = consume(&ch, "qfar", "far").await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 * N {
        let delivery = tokio::time::timeout(FORM, consumer.next())
            .await
            .expect("a delivery in time")
            .expect("a delivery")
            .expect("no error");
        seen.insert(body_number(&delivery.data));
        delivery.ack(Default::default()).await.expect("ack");
    }
    assert_eq!(seen, (0..2 * N).collect());
    drop((n2, n3, n4));
}

/// Deleting a quorum queue removes it on every node, every time, whichever member leads: the
/// members apply the delete before any of them stops (a leader that stopped at once left the
/// others without the commit: the delete hung on them and the queue stayed).
#[tokio::test]
async fn a_deleted_quorum_queue_is_gone_from_every_node() {
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c2 = n2.connect().await;
    let ch2 = confirm_channel(&c2).await;
    for round in 0..8 {
        let queue = format!("qdel-{round}");
        declare_quorum(&n1.connect().await, &queue).await;
        publish_numbered(&ch2, &queue, 0..20, 64).await;
        let (status, body) = api(&n1, "DELETE", &format!("/api/queues/%2F/{queue}"), None);
        assert_eq!(status, 204, "round {round}: {body}");
        for node in [&n1, &n2, &n3] {
            eventually(
                "the queue gone from every node",
                || api(node, "GET", &format!("/api/queues/%2F/{queue}"), None).0,
                |&status| status == 404,
            );
        }
    }
}

/// A quorum queue left idle goes on serving: five confirmed publishes, eight seconds of nothing
/// (the idleness is the case under test, not a wait for readiness), then a get and a confirmed
/// publish through every node (a quiet group's replication stalled after a few idle seconds:
/// every proposal timed out, gets answered 404, publishes nacked).
#[tokio::test]
async fn an_idle_quorum_queue_goes_on_serving() {
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "qidle").await;
    let ch1 = confirm_channel(&c1).await;
    publish_numbered(&ch1, "qidle", 0..5, 64).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    for (i, node) in [&n1, &n2, &n3].into_iter().enumerate() {
        let conn = node.connect().await;
        let ch = confirm_channel(&conn).await;
        let got = crate::common::within("a get after the idle time", async {
            crate::common::lapin_get(&ch, "qidle").await
        })
        .await;
        assert_eq!(got.map(|m| body_number(&m.delivery.data)), Some(i));
        crate::common::within("a confirm after the idle time", async {
            publish_confirmed(&ch, "", "qidle", &numbered_body(10 + i, 64), true).await
        })
        .await;
    }
}

/// A node frozen for a few seconds (SIGSTOP, then SIGCONT) and back: the consumers of quorum
/// queues on the other nodes go on receiving (its links dropped and came back; before, the
/// resumed node took its peers' consumers for gone and every one was cancelled).
#[tokio::test]
async fn a_frozen_node_back_leaves_other_nodes_quorum_consumers_alone() {
    use futures::StreamExt;
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    let c2 = n2.connect().await;
    declare_quorum(&c1, "qp1").await;
    declare_quorum(&c2, "qp2").await;
    let ch1 = crate::common::lapin_channel(&c1).await;
    let ch2 = crate::common::lapin_channel(&c2).await;
    let mut on_n1 = consume(&ch1, "qp1", "on-n1").await;
    let mut on_n2 = consume(&ch2, "qp2", "on-n2").await;
    n3.signal("STOP");
    // Frozen past the link's dead-peer time (4 s): the others drop it, it drops them on waking.
    tokio::time::sleep(Duration::from_secs(6)).await;
    n3.signal("CONT");
    let publisher = confirm_channel(&c1).await;
    for (queue, consumer) in [("qp1", &mut on_n1), ("qp2", &mut on_n2)] {
        publish_confirmed(&publisher, "", queue, &numbered_body(1, 64), true).await;
        let delivery = tokio::time::timeout(FORM, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("the consumer of {queue} still receives"))
            .unwrap_or_else(|| panic!("the consumer of {queue} was cancelled"))
            .expect("a delivery");
        assert_eq!(body_number(&delivery.data), 1);
    }
}

/// A member cut off from the others (a partition: its link sockets silent) for longer than it
/// takes to be taken for gone, then healed. The majority goes on; the cut-off node saw the
/// others gone from its side, and that is not what the queue acts on: the consumers on the
/// majority's nodes are never cancelled, and every confirmed message reaches them once, none
/// redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_and_back_leaves_the_majoritys_consumers_alone() {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let cluster = Cluster::with_last_behind_a_proxy(3).await;
    let (cluster, n1, n2, n3) = three_formed_of(cluster).await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "qcut").await;
    // Consumers on n1 and n2, acking all they get: (number, redelivered) each, and whether
    // their consumer ended (a basic.cancel from the broker).
    let received = Arc::new(Mutex::new(Vec::new()));
    let cancelled = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for (node, tag) in [(&n1, "on-n1"), (&n2, "on-n2")] {
        let conn = node.connect().await;
        let ch = crate::common::lapin_channel(&conn).await;
        ch.basic_qos(50, Default::default()).await.expect("qos");
        let mut consumer = consume(&ch, "qcut", tag).await;
        let (received, cancelled) = (received.clone(), cancelled.clone());
        consumers.push(tokio::spawn(async move {
            let _keep = (conn, ch);
            while let Some(delivery) = consumer.next().await {
                let Ok(delivery) = delivery else { break };
                let n = body_number(&delivery.data);
                received.lock().unwrap().push((n, delivery.redelivered));
                delivery.ack(Default::default()).await.expect("ack");
            }
            cancelled.store(true, Ordering::Relaxed);
        }));
    }
    let ch = confirm_channel(&c1).await;
    let mut confirmed = 0;
    let mut publish_some = |count: usize| {
        let ch = ch.clone();
        let from = confirmed;
        confirmed += count;
        async move {
            publish_numbered(&ch, "qcut", from..from + count, 64).await;
        }
    };
    publish_some(100).await;

    cluster.cut_off_last(true);
    eventually(
        "n3 sees the others down",
        || nodes(&n3),
        |n| n.iter().filter(|(_, running)| *running).count() == 1,
    );
    publish_some(100).await;
    // Past the time a member takes a node whose link stays down for gone (3 s): n3 took the
    // others' consumers for gone, from its side.
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.cut_off_last(false);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    publish_some(100).await;
    eventually(
        "every member holds the queue as the leader does",
        || {
            [&n1, &n2, &n3]
                .iter()
                .map(|node| queue_counts(node, "qcut"))
                .collect::<Vec<_>>()
        },
        |counts| counts.iter().all(|c| *c == (0, 0, 2)),
    );
    // Long enough for anything n3 proposed from its side to have been committed once healed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    publish_some(100).await;
    eventually(
        "every confirmed message consumed",
        || received.lock().unwrap().len(),
        |&n| n >= confirmed,
    );
    eventually(
        "the last acks settled",
        || queue_counts(&n1, "qcut"),
        |&c| c == (0, 0, 2),
    );
    assert!(
        !cancelled.load(Ordering::Relaxed),
        "a consumer was cancelled"
    );
    let received = received.lock().unwrap().clone();
    let numbers: std::collections::BTreeSet<usize> = received.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers.len(), received.len(), "a message delivered twice");
    assert_eq!(numbers, (0..confirmed).collect());
    assert!(received.iter().all(|(_, redelivered)| !redelivered));
    for consumer in consumers {
        consumer.abort();
    }
}

/// A consumer on a member that is cut off and frozen (SIGSTOP) while it holds unacked
/// deliveries: the majority gives them to its own consumers (redelivered) and is not disturbed;
/// back, the frozen consumer is cancelled and its late acks settle nothing. Every confirmed
/// message is consumed, only those it held twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_frozen_members_consumer_gives_back_what_it_held() {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const HELD: u16 = 10;
    let cluster = Cluster::with_last_behind_a_proxy(3).await;
    let (cluster, n1, n2, n3) = three_formed_of(cluster).await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "qheld").await;
    let ch = confirm_channel(&c1).await;
    publish_numbered(&ch, "qheld", 0..HELD as usize, 64).await;
    let c3 = n3.connect().await;
    let (holder_channel, mut holder, held) = hold_unacked(&c3, "qheld", "holder", HELD).await;
    let received = Arc::new(Mutex::new(Vec::new()));
    let cancelled = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for (node, tag) in [(&n1, "on-n1"), (&n2, "on-n2")] {
        let conn = node.connect().await;
        let ch = crate::common::lapin_channel(&conn).await;
        ch.basic_qos(50, Default::default()).await.expect("qos");
        let mut consumer = consume(&ch, "qheld", tag).await;
        let (received, cancelled) = (received.clone(), cancelled.clone());
        consumers.push(tokio::spawn(async move {
            let _keep = (conn, ch);
            while let Some(delivery) = consumer.next().await {
                let Ok(delivery) = delivery else { break };
                let n = body_number(&delivery.data);
                received.lock().unwrap().push((n, delivery.redelivered));
                delivery.ack(Default::default()).await.expect("ack");
            }
            cancelled.store(true, Ordering::Relaxed);
        }));
    }
    let mut confirmed = HELD as usize;
    cluster.cut_off_last(true);
    n3.signal("STOP");
    publish_numbered(&ch, "qheld", confirmed..confirmed + 100, 64).await;
    confirmed += 100;
    eventually(
        "the held ones given to the majority's consumers",
        || received.lock().unwrap().len(),
        |&n| n >= confirmed,
    );
    n3.signal("CONT");
    cluster.cut_off_last(false);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    // The frozen consumer is cancelled; its acks arrive late and settle nothing.
    cancelled_then_late_acks(&mut holder, held).await;
    publish_numbered(&ch, "qheld", confirmed..confirmed + 100, 64).await;
    confirmed += 100;
    eventually(
        "every confirmed message consumed",
        || received.lock().unwrap().len(),
        |&n| n >= confirmed,
    );
    eventually(
        "every member holds the queue as the leader does",
        || {
            [&n1, &n2, &n3]
                .iter()
                .map(|node| queue_counts(node, "qheld"))
                .collect::<Vec<_>>()
        },
        |counts| counts.iter().all(|c| *c == (0, 0, 2)),
    );
    assert!(
        !cancelled.load(Ordering::Relaxed),
        "a majority consumer was cancelled"
    );
    let received = received.lock().unwrap().clone();
    let numbers: std::collections::BTreeSet<usize> = received.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (0..confirmed).collect(), "every confirmed message");
    for (n, redelivered) in &received {
        assert_eq!(
            *redelivered,
            *n < HELD as usize,
            "message {n}'s redelivered flag"
        );
    }
    assert_eq!(received.len(), confirmed, "each once to the majority");
    for consumer in consumers {
        consumer.abort();
    }
    drop((holder_channel, c3, n3));
}

/// Acks in flight to a quorum queue's leader when it is cut off fail there; the consumer's node
/// proposes them again to the next leader. Dropped (as they were), their messages stayed unacked
/// for as long as the consumer lived, and after: its channel, having acked them, had nothing to
/// give back when it closed (a fault run ended with two messages no one could get).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_in_flight_to_a_leader_cut_off_are_applied_through_the_next() {
    const HELD: u16 = 20;
    let cluster = Cluster::with_last_behind_a_proxy(3).await;
    let (cluster, n1, n2, n3) = three_formed_of(cluster).await;
    let c3 = n3.connect().await;
    declare_quorum(&c3, "qacks").await;
    leader_among(&n1, "qacks", &["n3"]);
    let ch = confirm_channel(&c3).await;
    publish_numbered(&ch, "qacks", 0..HELD as usize, 64).await;
    // A consumer on n1 holding every message, unacked.
    let c1 = n1.connect().await;
    let (holder_channel, _holder, held) = hold_unacked(&c1, "qacks", "holder", HELD).await;
    assert_eq!(queue_counts(&n1, "qacks"), (0, u64::from(HELD), 1));
    // The leader cut off, then every delivery acked: n1 sends the acks to n3, which never
    // answers; n1 and n2 elect another leader meanwhile.
    cluster.cut_off_last(true);
    for delivery in held {
        delivery.ack(Default::default()).await.expect("ack");
    }
    leader_among(&n1, "qacks", &["n1", "n2"]);
    eventually(
        "the acks applied through the next leader",
        || queue_counts(&n1, "qacks"),
        |c| *c == (0, 0, 1),
    );
    cluster.cut_off_last(false);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    // Closed, the consumer leaves nothing behind (an ack lost would be a message back).
    holder_channel
        .close(200, "done".into())
        .await
        .expect("close");
    for (name, node) in [("n1", &n1), ("n2", &n2), ("n3", &n3)] {
        eventually(
            &format!("{name} holds the queue empty"),
            || queue_counts(node, "qacks"),
            |c| *c == (0, 0, 0),
        );
    }
    drop((ch, c1, c3));
}

/// `x-queue-leader-locator: balanced` (or a policy's `queue-leader-locator`), as RabbitMQ
/// places such queues: each declared queue is led by the node that leads the fewest; without
/// it, the declaring node leads (`client-local`).
#[tokio::test]
async fn balanced_quorum_queues_are_led_by_the_node_that_leads_the_fewest() {
    use lapin::types::AMQPValue;
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    let ch = crate::common::lapin_channel(&c1).await;
    let leader = |q: &str| {
        let (_, json) = api(&n2, "GET", &format!("/api/queues/%2F/{q}"), None);
        json["leader"].as_str().unwrap_or_default().to_owned()
    };
    let declare = |q: &'static str, locator: Option<&'static str>| {
        let ch = ch.clone();
        async move {
            let mut args = lapin::types::FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            if let Some(locator) = locator {
                args.insert(
                    "x-queue-leader-locator".into(),
                    AMQPValue::LongString(locator.into()),
                );
            }
            ch.queue_declare(q.into(), durable(), args)
                .await
                .expect("declare");
            // Led before the next is declared (a leader not elected yet counts for no node).
            eventually(&format!("{q} led"), || leader(q), |l| !l.is_empty());
        }
    };
    // Two client-local queues: both led from n1, the declaring node.
    for q in ["local.1", "local.2"] {
        declare(q, None).await;
        assert_eq!(leader(q), "n1", "{q}");
    }
    // Four balanced ones through n1: to n2 and n3 first (n1 leads two already), then one each.
    for q in ["bal.1", "bal.2", "bal.3", "bal.4"] {
        declare(q, Some("balanced")).await;
    }
    let led = |node: &str, queues: &[&str]| queues.iter().filter(|q| leader(q) == node).count();
    let all = ["local.1", "local.2", "bal.1", "bal.2", "bal.3", "bal.4"];
    for node in ["n1", "n2", "n3"] {
        assert_eq!(led(node, &all), 2, "{node} leads two of {all:?}");
    }
    // A policy's locator, the older name RabbitMQ takes for balanced: three more, one each.
    let (status, body) = api(
        &n1,
        "PUT",
        "/api/policies/%2F/spread",
        Some(
            r#"{"pattern":"^pol\\.","definition":{"queue-leader-locator":"least-leaders"},"apply-to":"queues"}"#,
        ),
    );
    assert!(status < 300, "{status} {body}");
    for q in ["pol.1", "pol.2", "pol.3"] {
        declare(q, None).await;
    }
    let pol = ["pol.1", "pol.2", "pol.3"];
    for node in ["n1", "n2", "n3"] {
        assert_eq!(led(node, &pol), 1, "{node} leads one of {pol:?}");
    }
    drop((c1, n3));
}

/// The quorum queue groups whose logs node `dir`'s raft database holds (the node stopped).
fn group_logs(dir: &std::path::Path) -> Vec<String> {
    let db = warren_cluster::LogDb::open(dir.join("cluster").join("raft.redb"))
        .expect("the node's raft database");
    db.group_names()
        .into_iter()
        .filter(|name| name.starts_with("q/"))
        .collect()
}

/// A quorum queue deleted while one of its members is down: back, that member lets go of the
/// queue's log (it kept it forever, its disk never given back), and keeps the others'.
#[tokio::test]
async fn a_member_down_while_its_quorum_queue_is_deleted_drops_its_log_when_back() {
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "doomed").await;
    declare_quorum(&c1, "kept").await;
    let ch = confirm_channel(&c1).await;
    for q in ["doomed", "kept"] {
        publish_numbered(&ch, q, 0..50, 1024).await;
    }
    eventually(
        "n3 holds both queues",
        || [queue_counts(&n3, "doomed").0, queue_counts(&n3, "kept").0],
        |c| *c == [50, 50],
    );
    n3.stop();
    let logs = group_logs(cluster.dirs[2].path());
    assert_eq!(logs.len(), 2, "{logs:?}");
    crate::common::lapin_channel(&c1)
        .await
        .queue_delete("doomed".into(), Default::default())
        .await
        .expect("delete");
    let n3 = cluster.start(2);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    eventually(
        "n3 has no queue doomed",
        || api(&n3, "GET", "/api/queues/%2F/doomed", None).0,
        |status| *status == 404,
    );
    assert_eq!(queue_counts(&n3, "kept").0, 50);
    // Looked at with the node stopped.
    n3.stop();
    let left = group_logs(cluster.dirs[2].path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with("/kept"), "{left:?}");
    drop((c1, n1, n2));
}

/// The same with the member asleep and its node cut off rather than stopped: a quorum queue
/// declared on the last node (which leads it) and its members asleep, that node's link cut (its
/// member, the leader, sleeps on; the two others elect one of themselves), the queue deleted
/// through n1 (the two apply their group's delete and leave without it); the link back, the
/// cluster's delete reaches the sleeping member, which wakes, reads it, and lets go of the
/// queue's log (`warren_raft_group_logs` one less); the other queue's stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_member_cut_off_while_its_quorum_queue_is_deleted_drops_its_log_when_back() {
    let cluster = Cluster {
        dormant_after: Some(1000),
        ..Cluster::with_last_behind_a_proxy(3).await
    };
    let (cluster, n1, n2, n3) = three_formed_of(cluster).await;
    let (c1, c3) = (n1.connect().await, n3.connect().await);
    declare_quorum(&c3, "doomed").await;
    declare_quorum(&c3, "kept").await;
    let ch = confirm_channel(&c1).await;
    for q in ["doomed", "kept"] {
        publish_numbered(&ch, q, 0..5, 64).await;
        leader_among(&n1, q, &["n3"]);
    }
    drop(c3);
    for node in [&n1, &n2, &n3] {
        eventually(
            "every member asleep",
            || members_asleep(node),
            |n| *n == Some(2),
        );
    }
    let logs = raft_group_logs(&n3).expect("n3's group logs");
    cluster.cut_off_last(true);
    leader_among(&n1, "doomed", &["n1", "n2"]);
    crate::common::lapin_channel(&c1)
        .await
        .queue_delete("doomed".into(), Default::default())
        .await
        .expect("delete");
    for node in [&n1, &n2] {
        eventually(
            "n1 and n2 have no queue doomed",
            || api(node, "GET", "/api/queues/%2F/doomed", None).0,
            |status| *status == 404,
        );
    }
    assert_eq!(
        members_asleep(&n3),
        Some(2),
        "n3's members slept through the cut"
    );
    cluster.cut_off_last(false);
    eventually(
        "n3 has no queue doomed",
        || api(&n3, "GET", "/api/queues/%2F/doomed", None).0,
        |status| *status == 404,
    );
    eventually(
        "n3's member of doomed has let go of its log",
        || raft_group_logs(&n3),
        |n| *n == Some(logs - 1),
    );
    // Looked at with the node stopped.
    n3.stop();
    let left = group_logs(cluster.dirs[2].path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with("/kept"), "{left:?}");
    drop((c1, n1, n2));
}

/// How many Raft group logs `node`'s database holds (`warren_raft_group_logs`).
fn raft_group_logs(node: &ChildBroker) -> Option<u64> {
    metric(node, "warren_raft_group_logs")
}

/// A consume on a quorum queue whose other members are gone (no majority to commit it) is
/// refused as timed out (541, as RabbitMQ refuses a quorum queue's consume that times out), not
/// as if the queue did not exist (404). The refused consume stays in the leader's log and is
/// committed once a member is back: the queue cancels it, and a consumer that comes then gets
/// every message.
#[tokio::test]
async fn a_consume_without_a_majority_of_members_times_out_rather_than_not_found() {
    use futures::StreamExt;
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "qalone").await;
    n2.kill9();
    n3.kill9();
    let ch = crate::common::lapin_channel(&c1).await;
    let err = ch
        .basic_consume(
            "qalone".into(),
            "alone".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .expect_err("consumed without a majority");
    let text = err.to_string();
    assert_eq!(crate::common::lapin_code(&err), Some(541), "{text}");
    assert!(text.contains("timed out consuming"), "{text}");

    let _n2 = cluster.start(1);
    // 541 closes the connection (as RabbitMQ's does).
    let c1 = n1.connect().await;
    let ch = confirm_channel(&c1).await;
    publish_numbered(&ch, "qalone", 0..10, 32).await;
    eventually(
        "the refused consumer gone, the messages ready",
        || queue_counts(&n1, "qalone"),
        |&c| c == (10, 0, 0),
    );
    let ch = crate::common::lapin_channel(&c1).await;
    let mut consumer = consume(&ch, "qalone", "after").await;
    for i in 0..10 {
        let delivery = tokio::time::timeout(FORM, consumer.next())
            .await
            .expect("a delivery in time")
            .expect("a delivery")
            .expect("no error");
        assert_eq!(body_number(&delivery.data), i);
        assert!(!delivery.redelivered);
        delivery.ack(Default::default()).await.expect("ack");
    }
}

/// The nodes `node` says a quorum queue's members are, sorted.
fn quorum_members(node: &ChildBroker, queue: &str) -> Vec<String> {
    let (_, q) = api(node, "GET", &format!("/api/queues/%2F/{queue}"), None);
    let mut members: Vec<String> = q["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    members.sort();
    members
}

/// The members a quorum queue's status (asked of `node`) lists, sorted.
fn status_members(node: &ChildBroker, queue: &str) -> Vec<String> {
    let (code, rows) = api(
        node,
        "GET",
        &format!("/api/queues/quorum/%2F/{queue}/status"),
        None,
    );
    if code != 200 {
        return vec![format!("{code}: {rows}")];
    }
    let mut names: Vec<String> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["node"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// `POST /api/queues/quorum/%2F/{queue}/replicas/add` (`action` add) or `DELETE
/// .../replicas/delete` with `{"node": member}`, asked of `node`.
fn replicas(node: &ChildBroker, action: &str, queue: &str, member: &str) -> (u16, Value) {
    let method = match action {
        "add" => "POST",
        _ => "DELETE",
    };
    let body = serde_json::json!({ "node": member }).to_string();
    api(
        node,
        method,
        &format!("/api/queues/quorum/%2F/{queue}/replicas/{action}"),
        Some(&body),
    )
}

/// Declares quorum queue `queue` through `conn` with two members (n1 and n2, as the declaring
/// node is n1), and waits until `node` lists them.
async fn declare_quorum_on_two(conn: &lapin::Connection, queue: &str, node: &ChildBroker) {
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-quorum-initial-group-size".into(),
        lapin::types::AMQPValue::LongInt(2),
    );
    declare_quorum_with(conn, queue, args).await;
    eventually(
        &format!("{queue} on n1 and n2"),
        || quorum_members(node, queue),
        |m| *m == ["n1", "n2"],
    );
}

/// Adds `member` to quorum queue `queue` of n1 and n2 through `node`'s management API, and waits
/// until the group's status lists the three.
fn add_member(node: &ChildBroker, queue: &str, member: &str) {
    let (code, answer) = replicas(node, "add", queue, member);
    assert_eq!(code, 204, "add_member {member}: {answer}");
    eventually(
        &format!("{queue}'s status lists {member}"),
        || status_members(node, queue),
        |m| *m == ["n1", "n2", "n3"],
    );
}

/// Membership changed while a node is down. n3 removed from a queue while it is down: the others
/// go on as a group of two, and n3, back, lets go of the queue's log (it keeps serving the
/// queue through the members). n3 added to another queue while it is down is refused (as
/// RabbitMQ refuses it); added once back, it catches up and holds every message (an original
/// member then killed, the two left serve everything, once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_removed_or_added_while_their_node_is_down_settle_when_it_is_back() {
    let (cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "shrunk").await;
    declare_quorum_on_two(&c1, "grows", &n1).await;
    let ch = confirm_channel(&c1).await;
    for q in ["shrunk", "grows"] {
        publish_numbered(&ch, q, 0..50, 512).await;
    }
    eventually(
        "n3 holds shrunk",
        || queue_counts(&n3, "shrunk").0,
        |&c| c == 50,
    );
    n3.stop();

    let (code, answer) = replicas(&n1, "delete", "shrunk", "n3");
    assert_eq!(code, 202, "delete_member of a node that is down: {answer}");
    // As RabbitMQ refuses it (nodedown).
    let (code, answer) = replicas(&n1, "add", "grows", "n3");
    assert_eq!(code, 400, "add_member of a node that is down: {answer}");
    eventually(
        "shrunk's group is n1 and n2",
        || status_members(&n2, "shrunk"),
        |m| *m == ["n1", "n2"],
    );
    for q in ["shrunk", "grows"] {
        publish_numbered(&ch, q, 50..100, 512).await;
    }

    let n3 = cluster.start(2);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    add_member(&n1, "grows", "n3");
    eventually(
        "n3 holds what grows holds",
        || queue_counts(&n3, "grows").0,
        |&c| c == 100,
    );
    eventually(
        "n3 knows it is no member of shrunk",
        || quorum_members(&n3, "shrunk"),
        |m| *m == ["n1", "n2"],
    );
    n3.stop();
    let logs = group_logs(cluster.dirs[2].path());
    assert!(
        logs.len() == 1 && logs[0].ends_with("/grows"),
        "n3's quorum logs: {logs:?}"
    );
    let n3 = cluster.start(2);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    // Through n3, no member of it any more.
    exactly_once(&n3.drain("shrunk").await, 0..100);
    // n1, an original member of grows, goes: n2 and n3 hold it all.
    drop((ch, c1));
    n1.kill9();
    leader_among(&n3, "grows", &["n2", "n3"]);
    exactly_once(&n3.drain("grows").await, 0..100);
}

/// `rabbitmq-queues add_member` / `delete_member` through the management API: a member added to
/// a queue holding messages catches up (it serves them once an original member is gone), a member
/// removed (its node the queue's leader, with a consumer holding unacked deliveries) hands them
/// back with its consumer cancelled, the group no longer counts it (it can be stopped for good),
/// and it can be added again with an empty log. Every confirmed message is consumed once in the
/// end, those that were held redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_members_are_added_and_removed_without_losing_a_message() {
    use futures::StreamExt;
    const N: usize = 300;
    const HELD: u16 = 10;
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    declare_quorum_on_two(&c1, "grown", &n3).await;
    let ch1 = confirm_channel(&c1).await;
    publish_numbered(&ch1, "grown", 0..N, 256).await;
    let mut holder = take_unacked(&c1, "grown", "holder", HELD).await;
    // Through n3 (a proxy, then a member) and on, while the members change.
    let publishing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let confirms = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publisher = {
        let (c3, publishing) = (n3.connect().await, publishing.clone());
        let confirms = confirms.clone();
        tokio::spawn(async move {
            let ch = confirm_channel(&c3).await;
            let (mut confirmed, mut nacked) = (Vec::new(), 0);
            let mut i = N;
            while publishing.load(std::sync::atomic::Ordering::Relaxed) {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        "grown".into(),
                        Default::default(),
                        &numbered_body(i, 256),
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .expect("publish");
                match crate::common::within_long("a confirm", confirm).await {
                    Ok(c) if c.is_ack() => {
                        confirmed.push(i);
                        confirms.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => nacked += 1,
                }
                i += 1;
            }
            let _ = c3.close(200, "bye".into()).await;
            (confirmed, nacked)
        })
    };

    // Wrong requests are refused as RabbitMQ refuses them.
    let (code, _) = replicas(&n2, "add", "grown", "n1");
    assert_eq!(code, 400, "a member already");
    let (code, _) = replicas(&n2, "add", "grown", "n9");
    assert_eq!(code, 400, "no such node");
    let (code, _) = replicas(&n2, "add", "nothing", "n3");
    assert_eq!(code, 404, "no such queue");

    add_member(&n2, "grown", "n3");
    eventually(
        "n1 lists three members",
        || quorum_members(&n1, "grown"),
        |m| *m == ["n1", "n2", "n3"],
    );

    // n1 (the declaring node, its leader) leaves: its consumer is cancelled.
    let (code, answer) = replicas(&n3, "delete", "grown", "n1");
    assert_eq!(code, 202, "delete_member: {answer}");
    eventually(
        "n2's status lists the members",
        || status_members(&n2, "grown"),
        |m| *m == ["n2", "n3"],
    );
    let end = crate::common::within_long("the holder's cancel", async {
        loop {
            match holder.next().await {
                None => return,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("consumer error: {e}"),
            }
        }
    });
    end.await;
    let (code, _) = api(&n1, "GET", "/api/queues/quorum/%2F/grown/status", None);
    assert_eq!(code, 400, "n1 has no member any more");

    // n1 again, at once: the member still leaving there hands its log to the new one (or, once
    // gone, the new one starts from an empty log), which catches up from the others.
    let (code, answer) = replicas(&n1, "add", "grown", "n1");
    assert_eq!(code, 204, "add_member again: {answer}");
    eventually(
        "n1's status lists the members",
        || status_members(&n1, "grown"),
        |m| *m == ["n1", "n2", "n3"],
    );
    // n2, an original member, goes for good: n3 (added) and n1 (added again) hold it all.
    drop((ch1, c1));
    // Publishes went on through the changes (one at a time, each awaiting its confirm: a slow
    // machine may not have confirmed many yet).
    crate::common::within_long("more than 10 publishes confirmed", async {
        while confirms.load(std::sync::atomic::Ordering::Relaxed) <= 10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    publishing.store(false, std::sync::atomic::Ordering::Relaxed);
    let (confirmed, nacked) = publisher.await.expect("publisher");
    assert_eq!(nacked, 0, "publishes nacked while the members changed");
    assert!(
        confirmed.len() > 10,
        "too few publishes: {}",
        confirmed.len()
    );
    n2.kill9();
    leader_among(&n3, "grown", &["n1", "n3"]);
    let drained = n3.drain("grown").await;
    let redelivered = exactly_once(&drained, (0..N).chain(confirmed));
    assert_eq!(
        redelivered.len(),
        HELD as usize,
        "the held deliveries came back"
    );
    let (ready, unacked, _) = queue_counts(&n1, "grown");
    assert_eq!((ready, unacked), (0, 0));
    drop((n1, n3));
}

/// `warren ctl` on `node`: its exit status and standard output.
async fn ctl_on(node: &ChildBroker, args: &[&str]) -> (i32, String) {
    let url = format!("http://127.0.0.1:{}", node.http_port);
    let out = crate::ctl::ctl_raw(&["--url", &url], args).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `rabbitmq-queues shrink` / `grow` / `add_member` / `delete_member` as `warren ctl` commands:
/// a node's members go from every quorum queue that has another, come back to those the
/// patterns and strategy pick, one by one; the queues keep their messages throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_shrink_and_grow_through_ctl() {
    const N: usize = 50;
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    let ch1 = confirm_channel(&c1).await;
    for q in ["g.one", "g.two", "other"] {
        declare_quorum(&c1, q).await;
        publish_numbered(&ch1, q, 0..N, 64).await;
    }
    let all = ["n1", "n2", "n3"];
    for q in ["g.one", "g.two", "other"] {
        eventually("three members", || quorum_members(&n2, q), |m| *m == all);
    }
    let (code, out) = ctl_on(&n3, &["shrink", "n2"]).await;
    assert_eq!(code, 0, "shrink: {out}");
    for q in ["g.one", "g.two", "other"] {
        assert_eq!(quorum_members(&n1, q), ["n1", "n3"], "{q} after shrink");
    }
    // `even`: every queue has two members, so each grows.
    let (code, out) = ctl_on(&n1, &["grow", "n2", "even", "--queue-pattern", "^g\\."]).await;
    assert_eq!(code, 0, "grow: {out}");
    assert_eq!(quorum_members(&n1, "g.one"), all);
    assert_eq!(quorum_members(&n1, "g.two"), all);
    assert_eq!(quorum_members(&n1, "other"), ["n1", "n3"]);
    // `even` again: the three-member queues are left alone.
    let (code, out) = ctl_on(&n1, &["grow", "n2", "even"]).await;
    assert_eq!(code, 0, "grow even: {out}");
    assert_eq!(quorum_members(&n1, "g.one"), all);
    assert_eq!(quorum_members(&n1, "other"), all);
    let (code, out) = ctl_on(&n2, &["delete_member", "g.one", "n1"]).await;
    assert_eq!(code, 0, "delete_member: {out}");
    assert_eq!(quorum_members(&n2, "g.one"), ["n2", "n3"]);
    let (code, out) = ctl_on(&n2, &["delete_member", "g.one", "n1"]).await;
    assert_ne!(code, 0, "not a member any more: {out}");
    let (code, out) = ctl_on(&n2, &["add-member", "g.one", "n1"]).await;
    assert_eq!(code, 0, "add-member: {out}");
    assert_eq!(quorum_members(&n3, "g.one"), all);
    // Leaders spread again (`rabbitmq-queues rebalance`): three more queues declared on n1 are
    // led from n1; after the rebalance each node leads two of the six.
    for q in ["r.1", "r.2", "r.3"] {
        declare_quorum(&c1, q).await;
        publish_confirmed(&ch1, "", q, &numbered_body(0, 64), true).await;
    }
    let queues = ["g.one", "g.two", "other", "r.1", "r.2", "r.3"];
    for q in queues {
        eventually("three members", || quorum_members(&n2, q), |m| *m == all);
    }
    let (code, out) = ctl_on(&n2, &["rebalance", "quorum"]).await;
    assert_eq!(code, 0, "rebalance: {out}");
    assert!(
        out.starts_with("Node name\tNumber of quorum queues\n"),
        "{out}"
    );
    for node in all {
        assert!(
            out.contains(&format!("{node}\t2\n")),
            "{node} leads two: {out}"
        );
    }
    let leaders: Vec<String> = queues
        .iter()
        .map(|q| {
            let (_, json) = api(&n3, "GET", &format!("/api/queues/%2F/{q}"), None);
            json["leader"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    for node in all {
        let led = leaders.iter().filter(|l| *l == node).count();
        assert_eq!(led, 2, "{node} leads two of {leaders:?}");
    }
    // Balanced: nothing moves; a pattern that matches nothing moves nothing.
    let (code, out) = ctl_on(&n1, &["rebalance", "all", "--queue-pattern", "^none$"]).await;
    assert_eq!(code, 0, "rebalance: {out}");
    for q in ["r.1", "r.2", "r.3"] {
        let drained = n1.drain(q).await;
        exactly_once(&drained, 0..1);
    }
    // A node down: its member goes all the same (the others are a majority of the old and the
    // new members); it cannot be added while down.
    n3.kill9();
    let (code, out) = ctl_on(&n1, &["delete_member", "other", "n3"]).await;
    assert_eq!(code, 0, "delete_member of a node down: {out}");
    assert_eq!(quorum_members(&n1, "other"), ["n1", "n2"]);
    let (code, out) = ctl_on(&n1, &["add_member", "other", "n3"]).await;
    assert_ne!(code, 0, "a node down is not added: {out}");
    assert!(out.contains("not running"), "{out}");
    // Each queue still has every message, once.
    drop((ch1, c1));
    for q in ["g.one", "g.two", "other"] {
        leader_among(&n2, q, &["n1", "n2"]);
        let drained = n2.drain(q).await;
        exactly_once(&drained, 0..N);
    }
    drop(n1);
}

/// Adds dead-lettering to `target` through the default exchange with `strategy` (and
/// `x-overflow: reject-publish`, which RabbitMQ requires for at-least-once) to a declare's `args`.
fn dead_letter_to(args: &mut lapin::types::FieldTable, target: &str, strategy: &str) {
    for (key, value) in [
        ("x-dead-letter-exchange", ""),
        ("x-dead-letter-routing-key", target),
        ("x-dead-letter-strategy", strategy),
        ("x-overflow", "reject-publish"),
    ] {
        args.insert(
            key.into(),
            lapin::types::AMQPValue::LongString(value.into()),
        );
    }
}

/// `x-dead-letter-strategy: at-least-once` (with `x-overflow: reject-publish`), as RabbitMQ's
/// quorum queues have it: a dead-letter that reaches no queue is kept by the source queue and
/// routed again until a queue confirms it, through a leader change; at-most-once drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_dead_letters_wait_for_a_queue_through_a_leader_change() {
    use lapin::types::{AMQPValue, FieldTable};
    const N: usize = 20;
    let (_cluster, n1, n2, n3) = three_formed().await;
    let c1 = n1.connect().await;
    let ch1 = confirm_channel(&c1).await;
    for (queue, strategy) in [("dl.src", "at-least-once"), ("dl.amo", "at-most-once")] {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        dead_letter_to(&mut args, "dl.target", strategy);
        ch1.queue_declare(queue.into(), durable(), args)
            .await
            .expect("declare");
        publish_numbered(&ch1, queue, 0..N, 64).await;
        // Every message rejected without requeue: dead-lettered to a queue not there yet.
        let ch = crate::common::lapin_channel(&c1).await;
        crate::common::get_and_reject(&ch, queue, N).await;
        eventually(
            "the source empty",
            || queue_counts(&n2, queue),
            |(ready, unacked, _)| (*ready, *unacked) == (0, 0),
        );
        // What the source holds, as RabbitMQ's API shows it (on a follower too).
        let (status, q) = api(&n2, "GET", &format!("/api/queues/%2f/{queue}"), None);
        assert_eq!(status, 200, "{q}");
        let held = match strategy {
            "at-least-once" => N as u64,
            _ => 0,
        };
        assert_eq!(q["messages_dlx"], held, "{q}");
        assert_eq!(q["message_bytes_dlx"], held * 64, "{q}");
    }
    // The source's leader goes; the next one routes what is held once the target is there.
    drop((ch1, c1));
    n1.kill9();
    leader_among(&n2, "dl.src", &["n2", "n3"]);
    let c2 = n2.connect().await;
    declare_quorum(&c2, "dl.target").await;
    eventually(
        "the target has the held ones",
        || queue_counts(&n3, "dl.target").0,
        |n| *n == N as u64,
    );
    let drained = n3.drain("dl.target").await;
    exactly_once(&drained, 0..N);
    // And nothing more comes (at-most-once dropped its own; the held ones were released).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(queue_counts(&n3, "dl.target").0, 0);
    drop((n2, n3));
}

/// A member whose disk fills up stops (exit status 74: its Raft log takes no more writes) rather
/// than staying up with dead queue members; the others go on confirming; started again once the
/// disk has room, it catches up and serves every confirmed message, of a quorum queue and of a
/// stream (its copy the same as the others', offset for offset). Needs root (a tmpfs for the
/// member's data); elsewhere it says so and passes without running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_disk_fills_stops_and_catches_up_once_started_again() {
    use std::io::Write as _;
    let cluster = Cluster::new(3).await;
    let Some(disk) = crate::disk_full::Tmpfs::mount(cluster.dirs[2].path(), "48m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let (n1, n2, mut n3) = (cluster.start(0), cluster.start(1), cluster.start(2));
    formed(&cluster, &[&n1, &n2, &n3]).await;
    let c1 = n1.connect().await;
    declare_quorum(&c1, "qdisk").await;
    streams::declare_stream(&c1, "sdisk", &[]).await;
    let ch = confirm_channel(&c1).await;
    let mut confirmed = 0;
    let publish = |n: usize| {
        let ch = ch.clone();
        async move {
            for queue in ["qdisk", "sdisk"] {
                publish_confirmed(&ch, "", queue, &numbered_body(n, 1024), true).await;
            }
        }
    };
    for _ in 0..100 {
        publish(confirmed).await;
        confirmed += 1;
    }
    // n3's disk filled to the last byte.
    let ballast = cluster.dirs[2].path().join("ballast");
    {
        let mut f = std::fs::File::create(&ballast).expect("ballast");
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).and_then(|_| f.flush()).is_ok() {}
    }
    let deadline = Instant::now() + FORM;
    while n3.exit_code().is_none() {
        assert!(
            Instant::now() < deadline,
            "n3 did not stop on its full disk"
        );
        publish(confirmed).await;
        confirmed += 1;
    }
    assert_eq!(n3.exit_code(), Some(74), "n3's exit status");
    for _ in 0..100 {
        publish(confirmed).await;
        confirmed += 1;
    }
    std::fs::remove_file(&ballast).expect("ballast removed");
    drop(n3);
    let n3 = cluster.start(2);
    formed(&cluster, &[&n1, &n2, &n3]).await;
    eventually(
        "n3 has every message",
        || queue_counts(&n3, "qdisk").0,
        |&ready| ready == confirmed as u64,
    );
    let kept = streams::settled_count(&[&n1, &n3], "sdisk");
    assert_eq!(kept as usize, confirmed);
    let copy = streams::read_copy(&n3, "sdisk", kept).await;
    let expected: Vec<(i64, usize)> = (0..confirmed).map(|i| (i as i64, i)).collect();
    assert_eq!(copy, expected, "n3's copy of the stream");
    drop((ch, c1));
    // n1 gone too: n3 and n2 hold the queue.
    n1.kill9();
    leader_among(&n3, "qdisk", &["n2", "n3"]);
    let drained = n3.drain("qdisk").await;
    exactly_once(&drained, 0..confirmed);
    drop((n2, n3, disk));
}

/// Waits until `node` says quorum queue `queue`'s leader is one of `nodes` (a failover done).
fn leader_among(node: &ChildBroker, queue: &str, nodes: &[&str]) {
    eventually(
        &format!("{queue} led by one of {nodes:?}"),
        || api(node, "GET", &format!("/api/queues/%2F/{queue}"), None).1["leader"].clone(),
        |leader| nodes.iter().any(|n| leader == n),
    );
}
