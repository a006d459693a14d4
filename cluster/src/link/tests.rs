use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::*;

struct Echo;

impl Handler for Echo {
    fn handle(&self, from: &str, request: Request) -> Answer {
        let from = from.to_owned();
        Box::pin(async move {
            match request {
                Request::App(mut bytes) => {
                    bytes.extend_from_slice(from.as_bytes());
                    Response::App(Ok(bytes))
                }
                other => Response::refusal(&other, "echo only"),
            }
        })
    }
}

async fn node(name: &str, secret: &[u8]) -> Link {
    node_with(name, secret, |_| {}).await
}

/// A node whose configuration `tweak` changes first.
async fn node_with(name: &str, secret: &[u8], tweak: impl FnOnce(&mut LinkConfig)) -> Link {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = LinkConfig::new(name, addr, secret.to_vec());
    config.heartbeat = Duration::from_millis(100);
    config.dead_after = Duration::from_millis(500);
    tweak(&mut config);
    let link = Link::start(config, Some(listener));
    link.set_handler(Arc::new(Echo));
    link
}

async fn ask(link: &Link, peer: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    match link
        .request(peer, Request::App(bytes.to_vec()), Duration::from_secs(5))
        .await
    {
        Ok(Response::App(answer)) => answer,
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn meet(a: &Link, b: &Link) {
    a.add_peer(b.name(), b.addr());
    b.add_peer(a.name(), a.addr());
}

#[tokio::test]
async fn requests_go_both_ways_over_one_connection() {
    let a = node("a", b"s").await;
    let b = node("b", b"s").await;
    meet(&a, &b);
    assert_eq!(ask(&a, "b", b"hi ").await.unwrap(), b"hi a");
    assert_eq!(ask(&b, "a", b"hey ").await.unwrap(), b"hey b");
    assert!(a.peers()[0].connected && b.peers()[0].connected);
}

#[tokio::test]
async fn many_requests_at_once_each_get_their_own_answer() {
    let a = node("a", b"s").await;
    let b = node("b", b"s").await;
    meet(&a, &b);
    let asks = (0..2000u32).map(|i| {
        let b = b.clone();
        async move { (i, ask(&b, "a", &i.to_be_bytes()).await) }
    });
    for (i, answer) in futures::future::join_all(asks).await {
        let answer = answer.unwrap();
        assert_eq!(&answer[..4], &i.to_be_bytes());
    }
}

#[tokio::test]
async fn a_node_with_another_secret_is_never_connected() {
    let a = node("a", b"right").await;
    let b = node("b", b"wrong").await;
    meet(&a, &b);
    let answer = a
        .request("b", Request::App(vec![]), Duration::from_millis(800))
        .await;
    assert!(
        matches!(answer, Err(LinkError::NotConnected(_))),
        "{answer:?}"
    );
    assert!(!a.peers()[0].connected);
    assert!(!b.peers()[0].connected);
}

#[tokio::test]
async fn an_unknown_peer_is_an_error() {
    let a = node("a", b"s").await;
    assert!(matches!(
        a.request("zz", Request::App(vec![]), Duration::from_millis(100))
            .await,
        Err(LinkError::UnknownPeer(_))
    ));
}

#[tokio::test]
async fn a_restarted_peer_is_called_back() {
    let a = node("a", b"s").await;
    let b = node("b", b"s").await;
    meet(&a, &b);
    assert!(ask(&a, "b", b"1").await.is_ok());
    let mut watch = a.watch_peer("b").expect("a known peer");
    assert!(watch.borrow_and_update().up);
    // b goes away; a new b listens on the same address.
    let addr = b.addr().to_owned();
    b.stop();
    drop(b);
    let listener = loop {
        // The old listener task may take a moment to drop its socket.
        match TcpListener::bind(&addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let b2 = Link::start(LinkConfig::new("b", addr, b"s".to_vec()), Some(listener));
    b2.set_handler(Arc::new(Echo));
    assert_eq!(ask(&a, "b", b"2 ").await.unwrap(), b"2 a");
    assert_eq!(ask(&b2, "a", b"3 ").await.unwrap(), b"3 b");
    // The watcher saw the old connection go and a new one come: up, two changes on.
    let now = *watch
        .wait_for(|l| l.up && l.generation >= 2)
        .await
        .expect("watch");
    assert!(now.up && now.generation >= 2, "{now:?}");
}

/// A peer that passes the handshake, then never says anything again (a SIGSTOPped process): it
/// is taken for dead after `dead_after`, and a request waiting on it fails then, not later.
#[tokio::test]
async fn a_silent_peer_is_taken_for_dead() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = listener.local_addr().unwrap().to_string();
    // "a" sorts before "z", so a calls z.
    let a = node("a", b"s").await;
    a.add_peer("z", &silent_addr);
    let (mut stream, _) = listener.accept().await.unwrap();
    handshake::accept(&mut stream, b"s", "z").await.unwrap();
    let started = std::time::Instant::now();
    let answer = a
        .request("z", Request::App(vec![]), Duration::from_secs(10))
        .await;
    assert!(matches!(answer, Err(LinkError::Lost(_))), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(stream);
}

/// Garbage after the handshake closes that connection only.
#[tokio::test]
async fn garbage_from_a_peer_closes_its_connection() {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rogue_addr = listener.local_addr().unwrap().to_string();
    let a = node("a", b"s").await;
    let b = node("b", b"s").await;
    meet(&a, &b);
    a.add_peer("z", &rogue_addr);
    let (mut stream, _) = listener.accept().await.unwrap();
    handshake::accept(&mut stream, b"s", "z").await.unwrap();
    stream
        .write_all(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    // a closes it: reads reach the end (pings may arrive first).
    use tokio::io::AsyncReadExt;
    while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
    assert_eq!(ask(&a, "b", b"ok ").await.unwrap(), b"ok a");
}

/// Whether the other end closes `stream` within `limit` (whatever it sends first is read and
/// passed over).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A thousand sockets that say nothing: the first `max_handshakes` wait in the handshake, every
/// other one is closed at once, the connection already made carries on, and once the waiting
/// ones go their slots serve a node that calls.
#[tokio::test]
async fn sockets_beyond_the_handshake_cap_are_closed_at_once_and_peers_carry_on() {
    const CAP: usize = 4;
    const FLOOD: usize = 1000;
    // "a" and "b" sort before "m": they call it, through its capped accept loop.
    let m = node_with("m", b"s", |c| c.max_handshakes = CAP).await;
    let a = node("a", b"s").await;
    meet(&a, &m);
    assert_eq!(ask(&a, "m", b"before ").await.unwrap(), b"before a");
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(
            tokio::net::TcpStream::connect(m.addr())
                .await
                .expect("connect"),
        );
    }
    // Well within the handshake timeout: only sockets closed for the cap are closed by then.
    let closed = futures::future::join_all(
        flood
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(2))),
    )
    .await;
    let waiting: Vec<_> = flood
        .into_iter()
        .zip(&closed)
        .filter(|(_, closed)| !**closed)
        .map(|(s, _)| s)
        .collect();
    assert_eq!(waiting.len(), CAP, "sockets left in the handshake");
    assert_eq!(ask(&a, "m", b"during ").await.unwrap(), b"during a");
    assert_eq!(ask(&m, "a", b"back ").await.unwrap(), b"back m");
    // The waiting ones go: their slots are free again for a node that calls.
    drop(waiting);
    let b = node("b", b"s").await;
    meet(&b, &m);
    assert_eq!(ask(&b, "m", b"joined ").await.unwrap(), b"joined b");
}

/// Before the handshake: a length over the handshake's 4 KiB, bytes that are no handshake
/// message, and a hello for another node are closed at once; half a frame, and silence, at the
/// handshake timeout. None of it touches the connection already made.
#[tokio::test]
async fn garbage_before_the_handshake_is_closed_and_the_node_carries_on() {
    use tokio::io::AsyncWriteExt;
    let m = node("m", b"s").await;
    let a = node("a", b"s").await;
    meet(&a, &m);
    assert_eq!(ask(&a, "m", b"before ").await.unwrap(), b"before a");
    let mut hello_elsewhere = Vec::new();
    frame::encode(
        &frame::Handshake::Hello {
            version: handshake::VERSION,
            name: "x".into(),
            addr: "x:1".into(),
            expects: "not-m".into(),
            nonce: [0; 32],
        },
        &mut hello_elsewhere,
    )
    .unwrap();
    let too_long = (frame::HANDSHAKE_FRAME_MAX + 1).to_be_bytes().to_vec();
    let at_once: [(&str, Vec<u8>); 4] = [
        ("a length over the limit", too_long),
        ("a 4 GiB length", vec![0xff; 4]),
        (
            "no handshake message",
            vec![0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
        ("a hello for another node", hello_elsewhere.clone()),
    ];
    let at_timeout: [(&str, Vec<u8>); 3] = [
        (
            "half a hello",
            hello_elsewhere[..hello_elsewhere.len() / 2].to_vec(),
        ),
        ("half a length", vec![0, 0]),
        ("silence", Vec::new()),
    ];
    let mut quick = Vec::new();
    let mut slow = Vec::new();
    for (kinds, sockets) in [(&at_once[..], &mut quick), (&at_timeout[..], &mut slow)] {
        for (what, bytes) in kinds.iter() {
            let mut s = tokio::net::TcpStream::connect(m.addr())
                .await
                .expect("connect");
            s.write_all(bytes).await.expect("write");
            sockets.push((*what, s));
        }
    }
    for (what, s) in &mut quick {
        assert!(
            closed_within(s, Duration::from_secs(2)).await,
            "{what}: still open"
        );
    }
    assert_eq!(ask(&a, "m", b"during ").await.unwrap(), b"during a");
    for (what, s) in &mut slow {
        let limit = handshake::TIMEOUT + Duration::from_secs(3);
        assert!(
            closed_within(s, limit).await,
            "{what}: open after the handshake timeout"
        );
    }
    assert_eq!(ask(&m, "a", b"after ").await.unwrap(), b"after m");
}

mod over_tls {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    /// A CA and, for each name, a certificate for 127.0.0.1 it signs: PEM files in `dir`.
    fn certificates(dir: &std::path::Path, names: &[&str]) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        for name in names {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
    }

    async fn tls_node(name: &str, dir: &std::path::Path) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut config = LinkConfig::new(name, addr, b"s".to_vec());
        config.tls = Some(
            LinkTls::from_pem_files(
                &dir.join(format!("{name}.pem")),
                &dir.join(format!("{name}.key")),
                &dir.join("ca.pem"),
            )
            .unwrap(),
        );
        let link = Link::start(config, Some(listener));
        link.set_handler(Arc::new(Echo));
        link
    }

    #[tokio::test]
    async fn nodes_with_certificates_of_the_cluster_ca_talk_over_tls() {
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path(), &["a", "b"]);
        let a = tls_node("a", dir.path()).await;
        let b = tls_node("b", dir.path()).await;
        meet(&a, &b);
        assert_eq!(ask(&a, "b", b"hi ").await.unwrap(), b"hi a");
        assert_eq!(ask(&b, "a", b"yo ").await.unwrap(), b"yo b");
    }

    #[tokio::test]
    async fn a_node_without_tls_or_with_another_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path(), &["a"]);
        let other = tempfile::tempdir().unwrap();
        certificates(other.path(), &["c"]);
        let a = tls_node("a", dir.path()).await;
        let plain = node("b", b"s").await;
        let stranger = tls_node("c", other.path()).await;
        meet(&a, &plain);
        meet(&a, &stranger);
        for peer in ["b", "c"] {
            let answer = a
                .request(peer, Request::App(vec![]), Duration::from_millis(800))
                .await;
            assert!(answer.is_err(), "{peer} answered: {answer:?}");
        }
    }
}

/// Records the order in which Raft messages reach it (on their answer's first poll, where a
/// member hands an append to its Raft core), then answers each after a while of its own.
struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);

impl Handler for Recorder {
    fn handle(&self, _from: &str, request: Request) -> Answer {
        let seen = self.0.clone();
        Box::pin(async move {
            let Request::Raft { group, .. } = request else {
                return Response::App(Err("raft only".into()));
            };
            seen.lock().unwrap().push(group.to_string());
            let n: u64 = group.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_micros(n * 7919 % 2000)).await;
            Response::Raft(Err(group.to_string()))
        })
    }
}

/// Raft messages sent one after another are started by the peer in that order (a follower takes
/// a leader's pipelined appends in order), however long each takes to answer, and each answer
/// reaches its own request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_messages_are_started_in_the_order_sent() {
    let a = node("a", b"s").await;
    let b = node("b", b"s").await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    b.set_handler(Arc::new(Recorder(seen.clone())));
    meet(&a, &b);
    let mut calls = Vec::new();
    for i in 0..500u32 {
        let rpc = RaftRpc::Vote(openraft::raft::VoteRequest::new(
            crate::types::Vote::new_committed(1, 1),
            None,
        ));
        let request = Request::Raft {
            group: i.to_string().into(),
            rpc,
        };
        calls.push(a.call("b", request).await.expect("sent"));
    }
    for (i, call) in calls.into_iter().enumerate() {
        match call.answer(Duration::from_secs(10)).await {
            Ok(Response::Raft(Err(group))) => assert_eq!(group, i.to_string()),
            other => panic!("request {i}: {other:?}"),
        }
    }
    let expected: Vec<String> = (0..500).map(|i| i.to_string()).collect();
    assert_eq!(*seen.lock().unwrap(), expected);
}
