//! Shared harness for the integration tests: an in-process broker on free loopback ports, lapin
//! and amqprs connection helpers, and a raw-socket AMQP client that can send arbitrary bytes and
//! read back decoded frames.
//!
//! Every wait on the network is bounded (see [`T`]), so a broker bug fails a test instead of
//! hanging it.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use warren_amqp::protocol::{
    access, basic, channel as chan, confirm, connection as conn, exchange, queue, tx, AMQPClass,
};
use warren_amqp::types::{AMQPValue, FieldTable, LongString};
use warren_amqp::{encode, FrameDecoder, FrameKind};

/// How long any single expected reply may take.
pub const T: Duration = Duration::from_secs(5);
/// How long we listen to conclude that nothing (more) is coming.
pub const QUIET: Duration = Duration::from_millis(400);

/// Awaits `fut`, failing the test (not hanging it) after [`T`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(T, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {T:?} waiting for {what}"),
    }
}

/// [`within`] with a longer bound: for a broker process that may be recovering, or a debug build
/// on a loaded machine moving hundreds of megabytes.
/// Takes `n` messages from `queue` with `basic.get` and rejects each without requeue (to the
/// queue's dead-letter exchange).
pub async fn get_and_reject(ch: &lapin::Channel, queue: &str, n: usize) {
    for _ in 0..n {
        let got = within(
            "basic.get",
            ch.basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: false },
            ),
        )
        .await
        .expect("basic.get")
        .expect("a message");
        got.delivery
            .nack(lapin::options::BasicNackOptions {
                requeue: false,
                ..Default::default()
            })
            .await
            .expect("nack");
    }
}

pub async fn within_long<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after 60 s waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The broker

/// `GET path` over HTTP/1.1 (with basic credentials if given): the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str, auth: Option<(&str, &str)>) -> (u16, String) {
    http_request(addr, "GET", path, &[], None, auth)
}

/// `METHOD path` over HTTP/1.1 with these extra headers, a JSON body (or none) and basic
/// credentials (if given): the status code and the body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    auth: Option<(&str, &str)>,
) -> (u16, String) {
    let (status, _, body) =
        http_exchange(addr, method, path, headers, body.map(str::as_bytes), auth);
    (status, body)
}

/// As [`http_request`], with any body (octets) and the response's head (status line and
/// headers) as well: status, head, body.
pub fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    auth: Option<(&str, &str)>,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("http connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = String::new();
    if let Some((user, pass)) = auth {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        head.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{head}Connection: close\r\n\r\n")
            .into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    // A server that answers before reading a whole (too large) body may close meanwhile.
    let _ = s.write_all(&request);
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("http status line");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_owned(), body.to_owned())
}

/// `METHOD path` with a JSON body (an empty one when none: a body-less write still says it has
/// none) and basic credentials: the status and the decoded body (`Null` when it is not JSON).
pub fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    auth: (&str, &str),
) -> (u16, serde_json::Value) {
    let (status, body) = http_request(
        addr,
        method,
        path,
        &[],
        Some(body.unwrap_or("")),
        Some(auth),
    );
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

pub struct TestBroker {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The AMQPS listener, when the configuration has one.
    pub amqps_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    dir: PathBuf,
}

fn unique_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("warren-it-{}-{n}-{nanos}", std::process::id()))
}

/// Starts a broker with the default (RabbitMQ-like) settings.
pub async fn start() -> TestBroker {
    start_with(|_| {}).await
}

/// Starts a broker after `tweak` has adjusted its configuration.
pub async fn start_with(tweak: impl FnOnce(&mut warren::Config)) -> TestBroker {
    let dir = unique_dir();
    let _ = std::fs::create_dir_all(&dir);
    let mut config = warren::Config::ephemeral(dir.clone());
    tweak(&mut config);
    let server = warren::Server::bind(config).await.expect("bind broker");
    let addr = server.amqp_addr();
    let amqps_addr = server.amqps_addr();
    let http_addr = server.http_addr();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    TestBroker {
        addr,
        http_addr,
        amqps_addr,
        stop: Some(stop_tx),
        task: Some(task),
        dir,
    }
}

impl TestBroker {
    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Tells the server to stop (graceful shutdown) without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the server and waits for `run` to return.
    pub async fn stop(mut self) {
        self.begin_stop();
        if let Some(task) = self.task.take() {
            // The server gives connections up to 5 s to answer its connection.close.
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server did not stop within 10 s")
                .expect("server task");
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.begin_stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// A broker as a separate process (for restarts, `kill -9` and memory measurements)

/// Turns for the tests that load the machine most, so that they do not starve each other: a
/// cluster of three broker processes takes one of its two permits ([`HEAVY_CLUSTER`]), a backlog
/// of hundreds of megabytes both ([`HEAVY_ALONE`]). Two clusters at once fit on two cores: their
/// tests mostly wait (for elections, timeouts, a node's restart), and taking turns made them
/// most of the suite's time.
pub static HEAVY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HEAVY_ALONE as usize);
/// The permits of [`HEAVY`] a cluster test takes.
pub const HEAVY_CLUSTER: u32 = 1;
/// The permits of [`HEAVY`] a test that must run alone among the heavy ones takes.
pub const HEAVY_ALONE: u32 = 2;

/// How long a broker process may take to be ready for clients.
pub const READY: Duration = Duration::from_secs(180);

/// A port free now and outside the kernel's range for outgoing connections' local ports, so
/// that a port a test keeps for a broker it restarts (a cluster node's link port) cannot be
/// taken meanwhile by some client's connection. Ports are handed out once per test process,
/// from a start that differs between processes.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_start.max(12_000));
    let span = high - low;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (start + offset) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

pub struct ChildBroker {
    child: std::process::Child,
    pub port: u16,
    pub http_port: u16,
}

impl ChildBroker {
    /// Starts `warren server` on a free port with `dir` as its data directory, plus `args`.
    pub fn start(dir: &std::path::Path, args: &[&str]) -> ChildBroker {
        ChildBroker::start_with_env(dir, args, &[])
    }

    /// As [`ChildBroker::start`], with these environment variables set for the broker.
    pub fn start_with_env(
        dir: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ChildBroker {
        // A free port can be taken by another test's broker between our look and the broker's
        // bind: a broker that exits at once is started again on other ports.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (port, http_port) = (free_port(), free_port());
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
                .args([
                    "server",
                    "--amqp-listen",
                    &format!("127.0.0.1:{port}"),
                    "--http-listen",
                    &format!("127.0.0.1:{http_port}"),
                ])
                .arg("--data-dir")
                .arg(dir)
                .args(args)
                .envs(env.iter().copied())
                .env(
                    "RUST_LOG",
                    std::env::var("WARREN_TEST_RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                // The brokers' logs are shown only when asked for (tracing a failure).
                .stdout(match std::env::var_os("WARREN_TEST_RUST_LOG") {
                    Some(_) => std::process::Stdio::inherit(),
                    None => std::process::Stdio::null(),
                })
                .spawn()
                .expect("start warren");
            let deadline = Instant::now() + READY;
            let exited = loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break None;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    break Some(status);
                }
                assert!(Instant::now() < deadline, "broker did not start listening");
                std::thread::sleep(Duration::from_millis(20));
            };
            match exited {
                None => {
                    return ChildBroker {
                        child,
                        port,
                        http_port,
                    }
                }
                Some(status) if attempts < 5 => {
                    eprintln!("broker exited at start ({status}); starting it on other ports");
                }
                Some(status) => panic!("broker exited at start ({status}), {attempts} times"),
            }
        }
    }

    /// `GET path` on the HTTP listener as guest: the status code and the body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(
            ([127, 0, 0, 1], self.http_port).into(),
            path,
            Some(("guest", "guest")),
        )
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// A lapin connection, once the broker answers: a broker process that is recovering a large
    /// store, or a debug build on a busy 2-core machine, may take a while to complete a
    /// handshake, so attempts are repeated until [`READY`] has passed.
    pub async fn connect(&self) -> lapin::Connection {
        let deadline = Instant::now() + READY;
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(30),
                lapin::Connection::connect(&self.uri(), lapin::ConnectionProperties::default()),
            )
            .await;
            match attempt {
                Ok(Ok(conn)) => return conn,
                Ok(Err(e)) if Instant::now() >= deadline => panic!("cannot connect: {e}"),
                Err(_) if Instant::now() >= deadline => {
                    panic!("no handshake within {READY:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Every message body in `queue`, in order, with its redelivered flag (consumed with no-ack).
    pub async fn drain(&self, queue: &str) -> Vec<(Vec<u8>, bool)> {
        use futures::StreamExt;
        let conn = self.connect().await;
        let ch = lapin_channel(&conn).await;
        let count = lapin_count(&ch, queue).await;
        let mut consumer = within(
            "basic.consume",
            ch.basic_consume(
                queue.into(),
                "drain".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .expect("consume");
        let mut out = Vec::with_capacity(count as usize);
        while out.len() < count as usize {
            let d = within_long("delivery", consumer.next())
                .await
                .expect("consumer ended")
                .expect("delivery");
            out.push((d.data, d.redelivered));
        }
        let _ = conn.close(200, "bye".into()).await;
        out
    }

    /// Resident memory of the broker process, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    /// Sends a signal by name (`STOP`, `CONT`) to the broker process.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// The broker process's exit code, if it has exited.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// lapin

pub async fn lapin_connect(b: &TestBroker) -> lapin::Connection {
    within(
        "lapin connect",
        lapin::Connection::connect(&b.uri(), lapin::ConnectionProperties::default()),
    )
    .await
    .expect("lapin connect")
}

pub async fn lapin_channel(c: &lapin::Connection) -> lapin::Channel {
    within("lapin create_channel", c.create_channel())
        .await
        .expect("lapin channel")
}

/// The AMQP reply code carried by a lapin error, if it is a protocol error.
pub fn lapin_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

pub fn lapin_text(e: &lapin::Error) -> String {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => p.get_message().as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

/// Asserts that a lapin operation failed with the given reply code.
#[track_caller]
pub fn assert_lapin_code<T: std::fmt::Debug>(
    r: Result<T, lapin::Error>,
    code: u16,
) -> lapin::Error {
    match r {
        Ok(v) => panic!("expected AMQP error {code}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(
                lapin_code(&e),
                Some(code),
                "expected reply code {code}, got error {e:?}"
            );
            e
        }
    }
}

pub async fn lapin_declare(ch: &lapin::Channel, name: &str) -> lapin::Queue {
    within(
        "queue.declare",
        ch.queue_declare(
            name.into(),
            lapin::options::QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.declare")
}

pub async fn lapin_publish(ch: &lapin::Channel, exchange: &str, rk: &str, body: &[u8]) {
    within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            rk.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish");
}

/// Gets one message (no ack) or None.
pub async fn lapin_get(ch: &lapin::Channel, q: &str) -> Option<lapin::message::BasicGetMessage> {
    within(
        "basic.get",
        ch.basic_get(q.into(), lapin::options::BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get")
}

/// Messages ready in `q`, as a passive declare reports them.
pub async fn lapin_count(ch: &lapin::Channel, q: &str) -> u32 {
    within(
        "passive queue.declare",
        ch.queue_declare(
            q.into(),
            lapin::options::QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive declare")
    .message_count()
}

/// The next delivery of a lapin consumer, failing after [`T`].
pub async fn lapin_next(c: &mut lapin::Consumer) -> lapin::message::Delivery {
    use futures::StreamExt;
    within("a delivery", c.next())
        .await
        .expect("consumer stream ended")
        .expect("delivery error")
}

/// Asserts that a lapin consumer receives nothing for [`QUIET`].
pub async fn lapin_none(c: &mut lapin::Consumer) {
    use futures::StreamExt;
    if let Ok(Some(d)) = tokio::time::timeout(QUIET, c.next()).await {
        panic!(
            "unexpected delivery: {:?}",
            d.map(|d| (
                d.delivery_tag,
                String::from_utf8_lossy(&d.data).into_owned()
            ))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// amqprs

pub async fn amqprs_connect(b: &TestBroker) -> amqprs::connection::Connection {
    let args = amqprs::connection::OpenConnectionArguments::new(
        "127.0.0.1",
        b.addr.port(),
        "guest",
        "guest",
    );
    within(
        "amqprs connect",
        amqprs::connection::Connection::open(&args),
    )
    .await
    .expect("amqprs connect")
}

/// Closes an amqprs connection, ignoring the result: amqprs 2.1.5 sometimes shuts its own
/// connection handler down right after channel.open-ok (or update-secret-ok) and then reports
/// "channel closed" from `close()` without having sent connection.close; a logging proxy showed
/// Warren's bytes to be correct in those runs. Tests that check closing itself use the raw client
/// and lapin.
pub async fn amqprs_close(c: amqprs::connection::Connection) {
    let _ = within("amqprs close", c.close()).await;
}

/// What the server sent a channel asynchronously, as seen through amqprs' callbacks.
#[derive(Debug, Clone, PartialEq)]
pub enum ChanEvent {
    Close(CloseInfo),
    Cancel(String),
    Ack(u64, bool),
    Nack(u64, bool),
    Return {
        code: u16,
        text: String,
        exchange: String,
        routing_key: String,
        body: Vec<u8>,
    },
}

pub struct Capture(pub mpsc::UnboundedSender<ChanEvent>);

type BoxFut<'a, O> = Pin<Box<dyn Future<Output = O> + Send + 'a>>;

// `ChannelCallback` is an `async_trait`; written out by hand (async-trait is no dev-dependency).
impl amqprs::callbacks::ChannelCallback for Capture {
    fn close<'l0, 'l1, 'a>(
        &'l0 mut self,
        _channel: &'l1 amqprs::channel::Channel,
        close: amqprs::CloseChannel,
    ) -> BoxFut<'a, Result<(), amqprs::error::Error>>
    where
        'l0: 'a,
        'l1: 'a,
        Self: 'a,
    {
        let _ = self.0.send(ChanEvent::Close(CloseInfo {
            code: close.reply_code(),
            text: close.reply_text().clone(),
            class_id: close.class_id(),
            method_id: close.method_id(),
        }));
        Box::pin(async { Ok(()) })
    }

    fn cancel<'l0, 'l1, 'a>(
        &'l0 mut self,
        _channel: &'l1 amqprs::channel::Channel,
        cancel: amqprs::Cancel,
    ) -> BoxFut<'a, Result<(), amqprs::error::Error>>
    where
        'l0: 'a,
        'l1: 'a,
        Self: 'a,
    {
        let _ = self
            .0
            .send(ChanEvent::Cancel(cancel.consumer_tag().clone()));
        Box::pin(async { Ok(()) })
    }

    fn flow<'l0, 'l1, 'a>(
        &'l0 mut self,
        _channel: &'l1 amqprs::channel::Channel,
        active: bool,
    ) -> BoxFut<'a, Result<bool, amqprs::error::Error>>
    where
        'l0: 'a,
        'l1: 'a,
        Self: 'a,
    {
        Box::pin(async move { Ok(active) })
    }

    fn publish_ack<'l0, 'l1, 'a>(
        &'l0 mut self,
        _channel: &'l1 amqprs::channel::Channel,
        ack: amqprs::Ack,
    ) -> BoxFut<'a, ()>
    where
        'l0: 'a,
        'l1: 'a,
        Self: 'a,
    {
        let _ = self
            .0
            .send(ChanEvent::Ack(ack.delivery_tag(), ack.mutiple()));
        Box::pin(async {})
    }

    fn publish_nack<'l0, 'l1, 'a>(
        &'l0 mut self,
        _channel: &'l1 amqprs::channel::Channel,
        nack: amqprs::Nack,
    ) -> BoxFut<'a, ()>
    where
        'l0: 'a,
        'l1: 'a,
        Self: 'a,
    {
        let _ = self
            .0
            .send(ChanEvent::Nack(nack.delivery_tag(), nack.multiple()));
        Box::pin(async {})
    }

    fn publish_return<'l0, 'l1, 'a>(
        &'l0 mut self,
        _channel: &'l1 amqprs::channel::Channel,
        ret: amqprs::Return,
        _basic_properties: amqprs::BasicProperties,
        content: Vec<u8>,
    ) -> BoxFut<'a, ()>
    where
        'l0: 'a,
        'l1: 'a,
        Self: 'a,
    {
        let _ = self.0.send(ChanEvent::Return {
            code: ret.reply_code(),
            text: ret.reply_text().clone(),
            exchange: ret.exchange().clone(),
            routing_key: ret.routing_key().clone(),
            body: content,
        });
        Box::pin(async {})
    }
}

/// Connection-level closes seen by amqprs.
pub struct ConnCapture(pub mpsc::UnboundedSender<CloseInfo>);

impl amqprs::callbacks::ConnectionCallback for ConnCapture {
    fn close<'l0, 'l1, 'a>(
        &'l0 mut self,
        _connection: &'l1 amqprs::connection::Connection,
        close: amqprs::Close,
    ) -> BoxFut<'a, Result<(), amqprs::error::Error>>
    where
        'l0: 'a,
        'l1: 'a,
        Self: 'a,
    {
        let _ = self.0.send(CloseInfo {
            code: close.reply_code(),
            text: close.reply_text().clone(),
            class_id: close.class_id(),
            method_id: close.method_id(),
        });
        Box::pin(async { Ok(()) })
    }

    fn blocked<'l0, 'l1, 'a>(
        &'l0 mut self,
        _connection: &'l1 amqprs::connection::Connection,
        _reason: String,
    ) -> BoxFut<'a, ()>
    where
        'l0: 'a,
        'l1: 'a,
        Self: 'a,
    {
        Box::pin(async {})
    }

    fn unblocked<'l0, 'l1, 'a>(
        &'l0 mut self,
        _connection: &'l1 amqprs::connection::Connection,
    ) -> BoxFut<'a, ()>
    where
        'l0: 'a,
        'l1: 'a,
        Self: 'a,
    {
        Box::pin(async {})
    }

    fn secret_updated<'l0, 'l1, 'a>(
        &'l0 mut self,
        _connection: &'l1 amqprs::connection::Connection,
    ) -> BoxFut<'a, ()>
    where
        'l0: 'a,
        'l1: 'a,
        Self: 'a,
    {
        Box::pin(async {})
    }
}

/// A channel whose server-sent closes, cancels, confirms and returns arrive on the receiver.
pub async fn amqprs_channel(
    c: &amqprs::connection::Connection,
) -> (amqprs::channel::Channel, mpsc::UnboundedReceiver<ChanEvent>) {
    let ch = within("amqprs open_channel", c.open_channel(None))
        .await
        .expect("open channel");
    let (tx, rx) = mpsc::unbounded_channel();
    within("register callback", ch.register_callback(Capture(tx)))
        .await
        .expect("register callback");
    (ch, rx)
}

/// The next channel event (close, cancel, confirm, return).
pub async fn next_event(rx: &mut mpsc::UnboundedReceiver<ChanEvent>) -> ChanEvent {
    within("a channel event", rx.recv())
        .await
        .expect("event channel closed")
}

/// Waits for the server's channel.close on an amqprs channel.
pub async fn amqprs_channel_close(rx: &mut mpsc::UnboundedReceiver<ChanEvent>) -> CloseInfo {
    loop {
        if let ChanEvent::Close(c) = next_event(rx).await {
            return c;
        }
    }
}

pub async fn amqprs_declare(ch: &amqprs::channel::Channel, name: &str) -> (String, u32, u32) {
    within(
        "amqprs queue.declare",
        ch.queue_declare(amqprs::channel::QueueDeclareArguments::new(name)),
    )
    .await
    .expect("queue.declare")
    .expect("declare-ok")
}

pub async fn amqprs_publish(ch: &amqprs::channel::Channel, exchange: &str, rk: &str, body: &[u8]) {
    within(
        "amqprs publish",
        ch.basic_publish(
            amqprs::BasicProperties::default(),
            body.to_vec(),
            amqprs::channel::BasicPublishArguments::new(exchange, rk),
        ),
    )
    .await
    .expect("publish");
}

// ---------------------------------------------------------------------------------------------
// Raw socket client

/// `connection.close` or `channel.close` as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl CloseInfo {
    #[track_caller]
    pub fn assert(&self, code: u16, class_id: u16, method_id: u16) {
        assert_eq!(
            (self.code, self.class_id, self.method_id),
            (code, class_id, method_id),
            "expected close {code} ({class_id},{method_id}), got {self:?}"
        );
    }

    #[track_caller]
    pub fn assert_text(&self, text: &str) {
        assert_eq!(self.text, text, "reply text of {self:?}");
    }

    #[track_caller]
    pub fn assert_text_starts(&self, prefix: &str) {
        assert!(
            self.text.starts_with(prefix),
            "reply text {:?} should start with {prefix:?}",
            self.text
        );
    }
}

/// A frame from the server.
#[derive(Debug)]
pub enum In {
    Method(u16, AMQPClass),
    Header {
        channel: u16,
        class_id: u16,
        body_size: u64,
        properties: basic::AMQPProperties,
    },
    Body(u16, Bytes),
    Heartbeat(u16),
}

#[derive(Debug)]
pub enum RecvError {
    Timeout,
    /// EOF or reset: the server closed the socket.
    Closed,
    Bad(String),
}

/// A message as received with get-ok or deliver.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub method: basic::AMQPMethod,
    pub properties: basic::AMQPProperties,
    pub body: Vec<u8>,
    /// Sizes of the body frames, as sent.
    pub body_frames: Vec<usize>,
}

impl RawMessage {
    pub fn delivery_tag(&self) -> u64 {
        match &self.method {
            basic::AMQPMethod::Deliver(d) => d.delivery_tag,
            basic::AMQPMethod::GetOk(g) => g.delivery_tag,
            other => panic!("no delivery tag on {other:?}"),
        }
    }

    pub fn redelivered(&self) -> bool {
        match &self.method {
            basic::AMQPMethod::Deliver(d) => d.redelivered,
            basic::AMQPMethod::GetOk(g) => g.redelivered,
            other => panic!("no redelivered flag on {other:?}"),
        }
    }
}

/// Client-side handshake choices.
#[derive(Clone, Debug)]
pub struct Handshake {
    pub mechanism: String,
    pub response: Vec<u8>,
    /// Announce `authentication_failure_close` and `consumer_cancel_notify`.
    pub capabilities: bool,
    /// tune-ok values; `None` = echo the server's.
    pub channel_max: Option<u16>,
    pub frame_max: Option<u32>,
    /// tune-ok heartbeat (0 by default so that idle raw clients are not dropped).
    pub heartbeat: u16,
    pub vhost: String,
}

impl Default for Handshake {
    fn default() -> Self {
        Handshake {
            mechanism: "PLAIN".into(),
            response: plain("guest", "guest"),
            capabilities: true,
            channel_max: None,
            frame_max: None,
            heartbeat: 0,
            vhost: "/".into(),
        }
    }
}

/// SASL PLAIN response.
pub fn plain(user: &str, pass: &str) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(user.as_bytes());
    v.push(0);
    v.extend_from_slice(pass.as_bytes());
    v
}

/// AMQPLAIN response: a field table without its length prefix.
pub fn amqplain(user: &str, pass: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for (k, val) in [("LOGIN", user), ("PASSWORD", pass)] {
        v.push(k.len() as u8);
        v.extend_from_slice(k.as_bytes());
        v.push(b'S');
        v.extend_from_slice(&(val.len() as u32).to_be_bytes());
        v.extend_from_slice(val.as_bytes());
    }
    v
}

/// What a raw client talks over: TCP, or TLS on top of it.
pub trait RawStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RawStream for T {}

pub struct Raw {
    stream: Box<dyn RawStream>,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// Negotiated frame_max (for splitting bodies we publish).
    pub frame_max: u32,
    pub tune: Option<conn::Tune>,
    pub start: Option<conn::Start>,
}

/// Raw bytes of one frame.
pub fn frame_bytes(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(0xCE);
    v
}

pub fn method_bytes(channel: u16, class: &AMQPClass) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode::write_method(&mut b, channel, class).expect("encode method");
    b.to_vec()
}

/// The method frame of a basic.publish (its content frames are up to the caller).
pub fn publish_bytes(channel: u16, exchange: &str, rk: &str) -> Vec<u8> {
    method_bytes(
        channel,
        &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: rk.into(),
            mandatory: false,
            immediate: false,
        })),
    )
}

/// A content header frame for class 60 with empty properties.
pub fn header_bytes(channel: u16, body_size: u64) -> Vec<u8> {
    let mut p = vec![0, 60, 0, 0];
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    frame_bytes(2, channel, &p)
}

pub fn body_bytes(channel: u16, body: &[u8]) -> Vec<u8> {
    frame_bytes(3, channel, body)
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        let _ = stream.set_nodelay(true);
        Raw::over(stream)
    }

    /// A raw client over an established stream (e.g. TLS), nothing sent yet.
    pub fn over(stream: impl RawStream + 'static) -> Raw {
        Raw {
            stream: Box::new(stream),
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: FrameDecoder::new(0),
            frame_max: 131_072,
            tune: None,
            start: None,
        }
    }

    /// Connects and sends the protocol header; returns with connection.start received.
    pub async fn start(addr: SocketAddr) -> Raw {
        Raw::connect(addr).await.begin().await
    }

    /// Sends the protocol header; returns with connection.start received.
    pub async fn begin(mut self) -> Raw {
        self.send(b"AMQP\x00\x00\x09\x01").await;
        match self.recv().await {
            In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Start(s))) => {
                self.start = Some(s)
            }
            other => panic!("expected connection.start, got {other:?}"),
        }
        self
    }

    /// A fully opened connection (vhost "/"), no channels open.
    pub async fn open(addr: SocketAddr) -> Raw {
        Raw::open_with(addr, Handshake::default()).await
    }

    pub async fn open_with(addr: SocketAddr, h: Handshake) -> Raw {
        Raw::connect(addr).await.open_as(h).await
    }

    /// The whole handshake over this stream: header, start-ok, tune-ok, open (vhost of `h`).
    pub async fn open_as(self, h: Handshake) -> Raw {
        let mut r = self.begin().await;
        r.start_ok(&h).await;
        let tune = r.expect_tune().await;
        r.tune_ok(&h, &tune).await;
        r.connection_open(&h.vhost).await;
        r
    }

    /// Sends connection.open for `vhost`.
    pub async fn send_connection_open(&mut self, vhost: &str) {
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open {
                virtual_host: vhost.into(),
            })),
        )
        .await;
    }

    /// connection.open for `vhost`, answered with open-ok (panics on anything else).
    pub async fn connection_open(&mut self, vhost: &str) {
        self.send_connection_open(vhost).await;
        match self.recv().await {
            In::Method(0, AMQPClass::Connection(conn::AMQPMethod::OpenOk(_))) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
    }

    pub async fn start_ok(&mut self, h: &Handshake) {
        let mut props = FieldTable::default();
        if h.capabilities {
            let mut caps = FieldTable::default();
            caps.insert(
                "authentication_failure_close".into(),
                AMQPValue::Boolean(true),
            );
            caps.insert("consumer_cancel_notify".into(), AMQPValue::Boolean(true));
            caps.insert("publisher_confirms".into(), AMQPValue::Boolean(true));
            caps.insert("basic.nack".into(), AMQPValue::Boolean(true));
            caps.insert("connection.blocked".into(), AMQPValue::Boolean(true));
            props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        }
        props.insert(
            "product".into(),
            AMQPValue::LongString(LongString::from("warren-it raw")),
        );
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::StartOk(conn::StartOk {
                client_properties: props,
                mechanism: h.mechanism.as_str().into(),
                response: LongString::from(h.response.clone()),
                locale: "en_US".into(),
            })),
        )
        .await;
    }

    pub async fn expect_tune(&mut self) -> conn::Tune {
        match self.recv().await {
            In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Tune(t))) => {
                self.tune = Some(t.clone());
                t
            }
            other => panic!("expected connection.tune, got {other:?}"),
        }
    }

    pub async fn tune_ok(&mut self, h: &Handshake, tune: &conn::Tune) {
        let frame_max = h.frame_max.unwrap_or(tune.frame_max);
        self.frame_max = frame_max;
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::TuneOk(conn::TuneOk {
                channel_max: h.channel_max.unwrap_or(tune.channel_max),
                frame_max,
                heartbeat: h.heartbeat,
            })),
        )
        .await;
    }

    // --- sending

    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        within("socket write", self.stream.write_all(bytes))
            .await
            .expect("socket write");
    }

    pub async fn send_method(&mut self, channel: u16, class: AMQPClass) {
        let b = method_bytes(channel, &class);
        self.send(&b).await;
    }

    /// basic.publish + header + body frames split to the negotiated frame_max.
    pub async fn publish_full(
        &mut self,
        channel: u16,
        exchange: &str,
        rk: &str,
        mandatory: bool,
        immediate: bool,
        body: &[u8],
    ) {
        let mut b = BytesMut::new();
        let class = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: rk.into(),
            mandatory,
            immediate,
        }));
        encode::write_method(&mut b, channel, &class).expect("encode publish");
        encode::write_content(&mut b, channel, &[0, 0], body, self.frame_max);
        self.send(&b).await;
    }

    /// basic.publish with `delivery-mode` 2.
    pub async fn publish_persistent(&mut self, channel: u16, rk: &str, body: &[u8]) {
        let mut b = BytesMut::new();
        let class = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: rk.into(),
            mandatory: false,
            immediate: false,
        }));
        encode::write_method(&mut b, channel, &class).expect("encode publish");
        // Property flags with only delivery-mode (0x1000), then its value.
        encode::write_content(&mut b, channel, &[0x10, 0x00, 2], body, self.frame_max);
        self.send(&b).await;
    }

    pub async fn publish(&mut self, channel: u16, exchange: &str, rk: &str, body: &[u8]) {
        self.publish_full(channel, exchange, rk, false, false, body)
            .await;
    }

    /// Shuts down the write side (the server sees EOF).
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    // --- receiving

    /// Raw bytes, for answers that are not frames (protocol header); returns what arrived
    /// before EOF or the timeout, up to `max` bytes.
    pub async fn read_raw(&mut self, max: usize, d: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + d;
        let mut out = self.buf.split().to_vec();
        let mut closed = false;
        while out.len() < max {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline.into(), self.stream.read(&mut chunk)).await {
                Err(_) => break,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            }
        }
        (out, closed)
    }

    fn decode_one(&mut self) -> Result<Option<In>, RecvError> {
        let frame = match self.decoder.decode(&mut self.buf) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(RecvError::Bad(format!(
                    "undecodable frame from server: {e}"
                )))
            }
        };
        let ch = frame.channel;
        Ok(Some(match frame.kind {
            FrameKind::Method => match warren_amqp::protocol::parse_class(&frame.payload[..]) {
                Ok(([], class)) => In::Method(ch, class),
                _ => {
                    return Err(RecvError::Bad(format!(
                        "undecodable method from server: {:?}",
                        &frame.payload[..]
                    )))
                }
            },
            FrameKind::Header => {
                let p = &frame.payload[..];
                if p.len() < 14 {
                    return Err(RecvError::Bad("short content header".into()));
                }
                let class_id = u16::from_be_bytes([p[0], p[1]]);
                let body_size = u64::from_be_bytes(p[4..12].try_into().unwrap());
                let properties = match basic::parse_properties(&p[12..]) {
                    Ok((_, props)) => props,
                    Err(_) => return Err(RecvError::Bad("undecodable properties".into())),
                };
                In::Header {
                    channel: ch,
                    class_id,
                    body_size,
                    properties,
                }
            }
            FrameKind::Body => In::Body(ch, frame.payload),
            FrameKind::Heartbeat => In::Heartbeat(ch),
        }))
    }

    /// The next frame (heartbeats included), within `d`.
    pub async fn recv_within(&mut self, d: Duration) -> Result<In, RecvError> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(f) = self.decode_one()? {
                return Ok(f);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            match tokio::time::timeout_at(deadline.into(), self.stream.read_buf(&mut self.buf))
                .await
            {
                Err(_) => return Err(RecvError::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(RecvError::Closed),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next non-heartbeat frame within `d`.
    pub async fn next_within(&mut self, d: Duration) -> Result<In, RecvError> {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await? {
                In::Heartbeat(0) => continue,
                f => return Ok(f),
            }
        }
    }

    /// The next non-heartbeat frame; panics after [`T`] or on close.
    pub async fn recv(&mut self) -> In {
        match self.next_within(T).await {
            Ok(f) => f,
            Err(e) => panic!("expected a frame from the server, got {e:?}"),
        }
    }

    pub async fn expect_method(&mut self) -> (u16, AMQPClass) {
        match self.recv().await {
            In::Method(ch, m) => (ch, m),
            other => panic!("expected a method frame, got {other:?}"),
        }
    }

    /// A whole message: the method already received, then header and body frames.
    pub async fn read_content(&mut self, method: basic::AMQPMethod) -> RawMessage {
        let (properties, size) = match self.recv().await {
            In::Header {
                properties,
                body_size,
                class_id: 60,
                ..
            } => (properties, body_size),
            other => panic!("expected a content header after {method:?}, got {other:?}"),
        };
        let mut body = Vec::new();
        let mut body_frames = Vec::new();
        while (body.len() as u64) < size {
            match self.recv().await {
                In::Body(_, b) => {
                    body_frames.push(b.len());
                    body.extend_from_slice(&b);
                }
                other => panic!("expected a body frame, got {other:?}"),
            }
        }
        RawMessage {
            method,
            properties,
            body,
            body_frames,
        }
    }

    /// basic.deliver + content.
    pub async fn expect_deliver(&mut self) -> RawMessage {
        match self.recv().await {
            In::Method(_, AMQPClass::Basic(m @ basic::AMQPMethod::Deliver(_))) => {
                self.read_content(m).await
            }
            other => panic!("expected basic.deliver, got {other:?}"),
        }
    }

    /// basic.get on `ch`; returns the message or None for get-empty.
    pub async fn get(&mut self, ch: u16, q: &str, no_ack: bool) -> Option<RawMessage> {
        self.send_method(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: q.into(),
                no_ack,
            })),
        )
        .await;
        match self.recv().await {
            In::Method(c, AMQPClass::Basic(m @ basic::AMQPMethod::GetOk(_))) if c == ch => {
                Some(self.read_content(m).await)
            }
            In::Method(c, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(_))) if c == ch => None,
            other => panic!("expected get-ok or get-empty on channel {ch}, got {other:?}"),
        }
    }

    /// Waits for connection.close (skipping any other frames, e.g. deliveries in flight).
    pub async fn expect_connection_close(&mut self) -> CloseInfo {
        let mut skipped = Vec::new();
        loop {
            match self.next_within(T).await {
                Ok(In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Close(c)))) => {
                    return CloseInfo {
                        code: c.reply_code,
                        text: c.reply_text.as_str().to_owned(),
                        class_id: c.class_id,
                        method_id: c.method_id,
                    }
                }
                Ok(other) => {
                    skipped.push(format!("{other:?}"));
                    if skipped.len() > 1000 {
                        panic!("no connection.close after 1000 frames: {:?}", &skipped[..5]);
                    }
                }
                Err(e) => panic!("expected connection.close, got {e:?} after frames {skipped:?}"),
            }
        }
    }

    /// Waits for connection.close, answers close-ok, and checks the server then closes the socket.
    pub async fn expect_connection_close_ok(&mut self) -> CloseInfo {
        let c = self.expect_connection_close().await;
        let _ = self
            .try_send(&method_bytes(
                0,
                &AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
            ))
            .await;
        self.expect_eof(Duration::from_secs(2)).await;
        c
    }

    /// Waits for channel.close on `ch` (skipping other frames).
    pub async fn expect_channel_close(&mut self, ch: u16) -> CloseInfo {
        let mut skipped = Vec::new();
        loop {
            match self.next_within(T).await {
                Ok(In::Method(c, AMQPClass::Channel(chan::AMQPMethod::Close(m)))) if c == ch => {
                    return CloseInfo {
                        code: m.reply_code,
                        text: m.reply_text.as_str().to_owned(),
                        class_id: m.class_id,
                        method_id: m.method_id,
                    }
                }
                Ok(In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Close(c)))) => {
                    panic!("expected channel.close on {ch}, got connection.close {c:?} (after {skipped:?})")
                }
                Ok(other) => {
                    skipped.push(format!("{other:?}"));
                    if skipped.len() > 1000 {
                        panic!("no channel.close after 1000 frames");
                    }
                }
                Err(e) => {
                    panic!("expected channel.close on {ch}, got {e:?} after frames {skipped:?}")
                }
            }
        }
    }

    /// Waits for channel.close on `ch` and answers close-ok.
    pub async fn expect_channel_close_ok(&mut self, ch: u16) -> CloseInfo {
        let c = self.expect_channel_close(ch).await;
        self.send_method(
            ch,
            AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
        )
        .await;
        c
    }

    /// Expects the server to close the socket within `d`; returns the frames seen before
    /// (heartbeats excluded).
    pub async fn expect_eof(&mut self, d: Duration) -> Vec<In> {
        let deadline = Instant::now() + d;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await {
                Err(RecvError::Closed) => return seen,
                Err(RecvError::Timeout) => {
                    panic!("socket still open after {d:?}; frames seen: {seen:?}")
                }
                Err(RecvError::Bad(b)) => panic!("{b}"),
                Ok(In::Heartbeat(0)) => {}
                Ok(f) => seen.push(f),
            }
        }
    }

    /// Expects the socket to be closed within `d` with no connection.close frame before it.
    pub async fn expect_eof_without_close(&mut self, d: Duration) {
        let seen = self.expect_eof(d).await;
        for f in &seen {
            if let In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Close(c))) = f {
                panic!("expected the socket to be closed without a close frame (as RabbitMQ does), got connection.close {c:?}");
            }
        }
    }

    /// Nothing but heartbeats arrives for `d`, and the socket stays open.
    pub async fn expect_silence(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await {
                Err(RecvError::Timeout) => return,
                Err(e) => panic!("expected silence, got {e:?}"),
                Ok(In::Heartbeat(0)) => {}
                Ok(f) => panic!("expected silence, got {f:?}"),
            }
        }
    }

    // --- common commands

    pub async fn open_channel(&mut self, ch: u16) {
        self.send_method(
            ch,
            AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {})),
        )
        .await;
        match self.recv().await {
            In::Method(c, AMQPClass::Channel(chan::AMQPMethod::OpenOk(_))) if c == ch => {}
            other => panic!("expected channel.open-ok on {ch}, got {other:?}"),
        }
    }

    pub async fn close_channel(&mut self, ch: u16) {
        self.send_method(
            ch,
            AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        )
        .await;
        loop {
            match self.recv().await {
                In::Method(c, AMQPClass::Channel(chan::AMQPMethod::CloseOk(_))) if c == ch => {
                    return
                }
                In::Method(c, _) | In::Body(c, _) | In::Header { channel: c, .. } if c == ch => {}
                other => panic!("expected channel.close-ok on {ch}, got {other:?}"),
            }
        }
    }

    /// Sends connection.close and waits for close-ok.
    pub async fn close(&mut self) {
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        )
        .await;
        loop {
            match self.recv().await {
                In::Method(0, AMQPClass::Connection(conn::AMQPMethod::CloseOk(_))) => return,
                In::Method(0, other) => panic!("expected connection.close-ok, got {other:?}"),
                _ => {}
            }
        }
    }

    /// queue.declare; returns declare-ok (panics on anything else).
    pub async fn declare(&mut self, ch: u16, q: &str, opts: QOpts) -> queue::DeclareOk {
        self.send_method(ch, declare(q, opts)).await;
        match self.recv().await {
            In::Method(c, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) if c == ch => ok,
            other => panic!("expected queue.declare-ok for {q:?} on {ch}, got {other:?}"),
        }
    }

    /// Sends a method and expects the given reply method (compared by class/method id).
    pub async fn call(&mut self, ch: u16, class: AMQPClass) -> AMQPClass {
        self.send_method(ch, class).await;
        match self.recv().await {
            In::Method(c, m) if c == ch => m,
            other => panic!("expected a reply on channel {ch}, got {other:?}"),
        }
    }

    pub async fn consume(
        &mut self,
        ch: u16,
        q: &str,
        tag: &str,
        no_ack: bool,
        exclusive: bool,
    ) -> String {
        self.send_method(ch, consume(q, tag, no_ack, exclusive))
            .await;
        match self.recv().await {
            In::Method(c, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok))) if c == ch => {
                ok.consumer_tag.as_str().to_owned()
            }
            other => panic!("expected basic.consume-ok on {ch}, got {other:?}"),
        }
    }

    pub async fn qos(&mut self, ch: u16, prefetch_count: u16, global: bool) {
        let m = self
            .call(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                    prefetch_count,
                    global,
                })),
            )
            .await;
        assert!(
            matches!(m, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))),
            "expected qos-ok, got {m:?}"
        );
    }

    pub async fn ack(&mut self, ch: u16, tag: u64, multiple: bool) {
        self.send_method(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: tag,
                multiple,
            })),
        )
        .await;
    }

    pub async fn confirm_select(&mut self, ch: u16) {
        let m = self
            .call(
                ch,
                AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                    nowait: false,
                })),
            )
            .await;
        assert!(
            matches!(m, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))),
            "expected select-ok, got {m:?}"
        );
    }

    /// Round trip on `ch` proving the channel (and connection) still work.
    pub async fn ping(&mut self, ch: u16) {
        let ok = self
            .declare(
                ch,
                "",
                QOpts {
                    exclusive: true,
                    ..QOpts::default()
                },
            )
            .await;
        assert!(ok.queue.as_str().starts_with("amq.gen-"));
    }
}

// ---------------------------------------------------------------------------------------------
// Method builders

#[derive(Clone, Copy, Debug, Default)]
pub struct QOpts {
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
}

pub fn declare(q: &str, o: QOpts) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: q.into(),
        passive: o.passive,
        durable: o.durable,
        exclusive: o.exclusive,
        auto_delete: o.auto_delete,
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

pub fn passive(q: &str) -> AMQPClass {
    declare(
        q,
        QOpts {
            passive: true,
            ..QOpts::default()
        },
    )
}

pub fn bind(q: &str, ex: &str, rk: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: q.into(),
        exchange: ex.into(),
        routing_key: rk.into(),
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

pub fn purge(q: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
        queue: q.into(),
        nowait: false,
    }))
}

pub fn delete(q: &str, if_unused: bool, if_empty: bool) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
        queue: q.into(),
        if_unused,
        if_empty,
        nowait: false,
    }))
}

pub fn consume(q: &str, tag: &str, no_ack: bool, exclusive: bool) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
        queue: q.into(),
        consumer_tag: tag.into(),
        no_local: false,
        no_ack,
        exclusive,
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

pub fn get(q: &str, no_ack: bool) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
        queue: q.into(),
        no_ack,
    }))
}

pub fn ack(tag: u64, multiple: bool) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
        delivery_tag: tag,
        multiple,
    }))
}

pub fn nack(tag: u64, multiple: bool, requeue: bool) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
        delivery_tag: tag,
        multiple,
        requeue,
    }))
}

pub fn reject(tag: u64, requeue: bool) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
        delivery_tag: tag,
        requeue,
    }))
}

pub fn channel_open() -> AMQPClass {
    AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {}))
}

pub fn channel_close() -> AMQPClass {
    AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
        reply_code: 200,
        reply_text: "bye".into(),
        class_id: 0,
        method_id: 0,
    }))
}

pub fn exchange_declare(name: &str, kind: &str, passive: bool, durable: bool) -> AMQPClass {
    AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
        exchange: name.into(),
        kind: kind.into(),
        passive,
        durable,
        auto_delete: false,
        internal: false,
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

pub fn access_request() -> AMQPClass {
    AMQPClass::Access(access::AMQPMethod::Request(access::Request {
        realm: "/data".into(),
        exclusive: false,
        passive: true,
        active: true,
        write: true,
        read: true,
    }))
}

pub fn tx_select() -> AMQPClass {
    AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {}))
}

pub fn confirm_select() -> AMQPClass {
    AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
        nowait: false,
    }))
}

/// Proves the broker still serves a fresh connection: declare, publish, get.
pub async fn assert_alive(addr: SocketAddr) {
    let mut r = Raw::open(addr).await;
    r.open_channel(1).await;
    let q = r
        .declare(
            1,
            "",
            QOpts {
                exclusive: true,
                ..QOpts::default()
            },
        )
        .await
        .queue
        .as_str()
        .to_owned();
    r.publish(1, "", &q, b"still alive").await;
    let m = r
        .get(1, &q, true)
        .await
        .expect("message routed on a fresh connection");
    assert_eq!(m.body, b"still alive");
    r.close().await;
}

/// `rounds` times on `r` (channels 1 and 2 open, a no-ack consumer of `queue` on channel 2): a
/// higher-priority no-ack consumer on channel 1, ten publishes, then its basic.cancel at once.
/// Asserts that all ten reach it before cancel-ok, as from RabbitMQ: none to the other
/// consumer, none lost.
pub async fn cancel_rounds_with_deliveries_in_flight(r: &mut Raw, queue: &str, rounds: usize) {
    for round in 0..rounds {
        let tag = format!("high-{round}");
        let mut arguments = FieldTable::default();
        arguments.insert("x-priority".into(), AMQPValue::LongInt(10));
        let consume = AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: queue.into(),
            consumer_tag: tag.as_str().into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments,
        }));
        r.send_method(1, consume).await;
        match r.recv().await {
            In::Method(1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))) => {}
            other => panic!("round {round}: expected consume-ok, got {other:?}"),
        }
        for _ in 0..10 {
            r.publish(1, "", queue, b"m").await;
        }
        let cancel = AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: tag.as_str().into(),
            nowait: false,
        }));
        r.send_method(1, cancel).await;
        let mut to_high = 0;
        loop {
            match r.recv().await {
                In::Method(_, AMQPClass::Basic(m @ basic::AMQPMethod::Deliver(_))) => {
                    let basic::AMQPMethod::Deliver(d) = &m else {
                        unreachable!()
                    };
                    assert_eq!(
                        d.consumer_tag.as_str(),
                        tag,
                        "round {round}: a delivery to another consumer"
                    );
                    to_high += 1;
                    r.read_content(m).await;
                }
                In::Method(1, AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok))) => {
                    assert_eq!(ok.consumer_tag.as_str(), tag);
                    break;
                }
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(to_high, 10, "round {round}: all ten before cancel-ok");
    }
}

/// A distinct body for message `i`, padded to `size`: [`body_number`] reads `i` back.
pub fn numbered_body(i: usize, size: usize) -> Vec<u8> {
    let mut b = format!("m{i:07}-").into_bytes();
    b.resize(size.max(b.len()), b'x');
    b
}

/// The number of a [`numbered_body`].
pub fn body_number(body: &[u8]) -> usize {
    body.get(1..8)
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|s| s.parse().ok())
        .expect("a numbered body")
}

/// A unique name for a test's queues and exchanges.
pub fn name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}.{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Appends a u32 in network order (for hand-built frames).
pub fn put_u32(v: &mut Vec<u8>, n: u32) {
    let mut b = BytesMut::new();
    b.put_u32(n);
    v.extend_from_slice(&b);
}
