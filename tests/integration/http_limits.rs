//! What an HTTP client can hold on the HTTP listener is bounded, as RabbitMQ's is: a connection
//! that does not send a complete request head within `REQUEST_HEAD_TIMEOUT` (idle from the start,
//! idle between keep-alive requests, or stalled half-way through a request) is closed, and at
//! most `MAX_CONNECTIONS` are served at once, so HTTP sockets never use up the file descriptors
//! AMQP connections need.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren::http::{MAX_CONNECTIONS, REQUEST_HEAD_TIMEOUT};

/// How long the server may take to close a connection past its deadline (a loaded machine).
const SLACK: Duration = Duration::from_secs(5);

/// Reads until the server closes the connection (end of stream, or a reset); fails the test if it
/// is still open at `deadline`. Returns what was read.
async fn read_until_closed(s: &mut TcpStream, deadline: Instant) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => panic!(
                "the server kept the connection open (read so far: {:?})",
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(0)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return seen,
            Ok(Err(e)) => panic!("read failed: {e}"),
        }
    }
}

/// A keep-alive `GET` as guest.
fn request(path: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode("guest:guest");
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {token}\r\n\r\n")
}

/// Reads one response (head and a `content-length` body) within `bound`: its status and body.
async fn read_response(s: &mut TcpStream, bound: Duration) -> (u16, String) {
    match tokio::time::timeout(bound, read_whole_response(s)).await {
        Ok(answer) => answer,
        Err(_) => panic!("no whole response within {bound:?}"),
    }
}

async fn read_whole_response(s: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .expect("status line");
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .expect("content-length");
            if data.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned();
                return (status, body);
            }
        }
        let n = s.read(&mut buf).await.expect("read response");
        assert!(n > 0, "closed before a whole response");
        data.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed() {
    let b = start().await;
    let opened = Instant::now();
    let mut s = TcpStream::connect(b.http_addr).await.expect("connect");
    let seen = read_until_closed(&mut s, opened + REQUEST_HEAD_TIMEOUT + SLACK).await;
    assert!(seen.is_empty(), "{:?}", String::from_utf8_lossy(&seen));
    // Closed by the timeout, not at once.
    assert!(opened.elapsed() >= REQUEST_HEAD_TIMEOUT - Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed() {
    let b = start().await;
    // Part of a request head, then nothing.
    let opened = Instant::now();
    let mut s = TcpStream::connect(b.http_addr).await.expect("connect");
    s.write_all(b"GET /api/overview HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let seen = read_until_closed(&mut s, opened + REQUEST_HEAD_TIMEOUT + SLACK).await;
    assert!(seen.is_empty(), "{:?}", String::from_utf8_lossy(&seen));

    // A head dribbled out a byte at a time does not keep the connection open either: the time
    // allowed is for the whole head, not per byte.
    let opened = Instant::now();
    let s = TcpStream::connect(b.http_addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let dribble = tokio::spawn(async move {
        let head = format!(
            "GET /api/overview HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(200)
        );
        for byte in head.bytes() {
            if wr.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = opened + REQUEST_HEAD_TIMEOUT + SLACK;
    loop {
        match tokio::time::timeout_at(deadline.into(), rd.read(&mut buf)).await {
            Err(_) => panic!("a dribbling client kept its connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
    assert!(seen.is_empty(), "{:?}", String::from_utf8_lossy(&seen));
    dribble.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_requests_work_and_an_idle_keep_alive_connection_is_closed() {
    let b = start().await;
    let mut s = TcpStream::connect(b.http_addr).await.expect("connect");
    for (i, path) in ["/api/whoami", "/api/overview", "/api/whoami"]
        .into_iter()
        .enumerate()
    {
        if i == 2 {
            // A pause shorter than the timeout between requests is fine.
            tokio::time::sleep(REQUEST_HEAD_TIMEOUT / 2).await;
        }
        s.write_all(request(path).as_bytes()).await.expect("write");
        let (status, body) = read_response(&mut s, T).await;
        assert_eq!(
            status, 200,
            "request {i} ({path}) on the same connection: {body}"
        );
    }
    let answered = Instant::now();
    let seen = read_until_closed(&mut s, answered + REQUEST_HEAD_TIMEOUT + SLACK).await;
    assert!(seen.is_empty(), "{:?}", String::from_utf8_lossy(&seen));
    assert!(answered.elapsed() >= REQUEST_HEAD_TIMEOUT - Duration::from_millis(500));
}

// ---------------------------------------------------------------------------------------------
// The connection cap, against a broker process with few file descriptors

/// Whether an HTTP request to `addr` gets a response (any status), on a connection the broker
/// then closes.
fn answers(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /api/whoami HTTP/1.1\r\nHost: warren\r\nConnection: close\r\n\r\n";
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    response.starts_with(b"HTTP/1.1 ")
}

/// `warren server` on free ports, run with at most `fd_limit` open files.
struct LimitedBroker {
    child: std::process::Child,
    amqp: SocketAddr,
    http: SocketAddr,
}

impl LimitedBroker {
    fn start(data: &Path, fd_limit: usize) -> LimitedBroker {
        let free = || std::net::SocketAddr::from(([127, 0, 0, 1], crate::common::free_port()));
        let (amqp, http) = (free(), free());
        let child = std::process::Command::new("sh")
            .args(["-c", "ulimit -n \"$0\" && exec \"$@\""])
            .arg(fd_limit.to_string())
            .arg(env!("CARGO_BIN_EXE_warren"))
            .args(["server", "--amqp-listen", &amqp.to_string()])
            .args(["--http-listen", &http.to_string(), "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start warren");
        // Ready once it answers a request: a bound listener takes connections into its backlog
        // before the broker's accept loop runs (a slow start on a busy machine).
        let deadline = Instant::now() + Duration::from_secs(120);
        while !answers(http) {
            assert!(
                Instant::now() < deadline,
                "broker did not start serving HTTP"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        LimitedBroker { child, amqp, http }
    }

    /// Files the broker process has open.
    fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("/proc/PID/fd")
            .count()
    }
}

impl Drop for LimitedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sockets_beyond_the_cap_leave_amqp_and_the_api_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Room for the broker's own files and the cap's worth of HTTP connections, but not for all the
    // sockets opened below: without a cap they would take every descriptor left.
    let fd_limit = MAX_CONNECTIONS + 60;
    let broker = LimitedBroker::start(dir.path(), fd_limit);
    let baseline = broker.open_files();
    assert!(
        baseline + MAX_CONNECTIONS + 20 < fd_limit,
        "{baseline} files open at start"
    );

    // Those beyond the cap wait in the listen backlog (which holds over a hundred): connecting
    // them does not block.
    let idle: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS + 100)
        .map(|_| std::net::TcpStream::connect(broker.http).expect("http connect"))
        .collect();
    // The broker takes up to the cap of them...
    // (A few descriptors of slack: the baseline may have counted a socket or file of the
    // broker's start that has closed since.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.open_files() + 5 < baseline + MAX_CONNECTIONS {
        assert!(
            Instant::now() < deadline,
            "the broker took only {} of the sockets",
            broker.open_files().saturating_sub(baseline)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and no more, while all of them are open.
    let held = broker.open_files();
    assert!(
        held <= baseline + MAX_CONNECTIONS + 10,
        "{held} files open with {} idle HTTP sockets (cap {MAX_CONNECTIONS}, {baseline} at start)",
        idle.len()
    );

    // AMQP clients still connect and work.
    assert_alive(broker.amqp).await;
    let lapin = within(
        "lapin connect",
        lapin::Connection::connect(
            &format!("amqp://guest:guest@{}/%2f", broker.amqp),
            lapin::ConnectionProperties::default(),
        ),
    )
    .await
    .expect("lapin connect beside the idle HTTP sockets");
    let _ = lapin.close(200, "bye".into()).await;

    // The API answers too, once the idle connections ahead of this one have timed out (they are
    // still open on this side).
    let mut s = TcpStream::connect(broker.http).await.expect("http connect");
    s.write_all(request("/api/overview").as_bytes())
        .await
        .expect("write");
    let (status, body) = read_response(&mut s, REQUEST_HEAD_TIMEOUT * 2 + SLACK).await;
    assert_eq!(status, 200, "{body}");

    // Once they are closed on this side, it answers at once.
    drop(idle);
    let (status, _) = http_get(broker.http, "/api/overview", Some(("guest", "guest")));
    assert_eq!(status, 200);
}
