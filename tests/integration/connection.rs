//! Connection and channel lifecycle (issue "Core broker", points 3, 4 and 9): protocol header,
//! connection.start, SASL, tune, open, heartbeats, update-secret, access.request, close both ways,
//! graceful shutdown, channel open/close/flow, channel_max, methods on channels not open.

use std::time::{Duration, Instant};

use crate::common::*;
use warren_amqp::protocol::{access, channel as chan, connection as conn, AMQPClass};
use warren_amqp::types::{AMQPValue, LongString};

fn mechanisms(start: &conn::Start) -> Vec<String> {
    let mut m: Vec<String> = String::from_utf8_lossy(start.mechanisms.as_bytes())
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    m.sort();
    m
}

// ------------------------------------------------------------------------------------------
// Protocol header

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_header_gets_supported_header_then_close() {
    let b = start().await;
    for header in [
        &b"AMQP\x00\x00\x09\x00"[..],
        b"AMQP\x00\x00\x08\x00",
        b"AMQP\x00\x01\x00\x00",
        b"HTTP/1.1",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut r = Raw::connect(b.addr).await;
        r.send(header).await;
        let (bytes, closed) = r.read_raw(64, Duration::from_secs(3)).await;
        assert_eq!(bytes, b"AMQP\x00\x00\x09\x01", "reply to header {header:?}");
        assert!(
            closed,
            "socket should be closed after answering header {header:?}"
        );
    }
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_0_9_header_is_accepted_as_0_9_1() {
    // RabbitMQ takes "AMQP 1 1 0 9" as 0-9-1 and answers connection.start 0-9.
    let b = start().await;
    let mut r = Raw::connect(b.addr).await;
    r.send(b"AMQP\x01\x01\x00\x09").await;
    match r.recv().await {
        In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Start(s))) => {
            assert_eq!((s.version_major, s.version_minor), (0, 9));
        }
        other => panic!("expected connection.start, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// connection.start

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_start_advertises_properties_and_capabilities() {
    let b = start().await;
    let r = Raw::start(b.addr).await;
    let s = r.start.as_ref().unwrap();
    assert_eq!((s.version_major, s.version_minor), (0, 9));
    assert_eq!(
        mechanisms(s),
        vec!["AMQPLAIN".to_owned(), "PLAIN".to_owned()]
    );
    assert_eq!(s.locales.as_bytes(), b"en_US");
    let props = s.server_properties.inner();
    let Some(AMQPValue::FieldTable(caps)) = props.get("capabilities") else {
        panic!("no capabilities table in {props:?}");
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(
            caps.inner().get(cap),
            Some(&AMQPValue::Boolean(true)),
            "capability {cap}"
        );
    }
    for key in [
        "product",
        "version",
        "platform",
        "copyright",
        "information",
        "cluster_name",
    ] {
        assert!(
            matches!(props.get(key), Some(AMQPValue::LongString(_))),
            "server property {key} should be a long string: {:?}",
            props.get(key)
        );
    }

    // The same seen through amqprs' parser.
    let c = amqprs_connect(&b).await;
    let caps = c.server_properties().capabilities();
    assert!(caps.publisher_confirms());
    assert!(caps.exchange_exchange_bindings());
    assert!(caps.basic_nack());
    assert!(caps.consumer_cancel_notify());
    assert!(caps.connection_blocked());
    assert!(caps.consumer_priorities());
    assert!(caps.authentication_failure_close());
    assert!(caps.per_consumer_qos());
    assert!(caps.direct_reply_to());
    amqprs_close(c).await;
}

// ------------------------------------------------------------------------------------------
// SASL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_and_amqplain_are_accepted() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.ping(1).await;
    r.close().await;

    let h = Handshake {
        mechanism: "AMQPLAIN".into(),
        response: amqplain("guest", "guest"),
        ..Handshake::default()
    };
    let mut r = Raw::open_with(b.addr, h).await;
    r.open_channel(1).await;
    r.ping(1).await;
    r.close().await;

    // amqprs with AMQPLAIN, lapin with PLAIN.
    let mut args = amqprs::connection::OpenConnectionArguments::new(
        "127.0.0.1",
        b.addr.port(),
        "guest",
        "guest",
    );
    args.credentials(amqprs::security::SecurityCredentials::new_amqplain(
        "guest", "guest",
    ));
    let c = within(
        "amqprs AMQPLAIN",
        amqprs::connection::Connection::open(&args),
    )
    .await
    .expect("AMQPLAIN login");
    let (ch, _ev) = amqprs_channel(&c).await;
    amqprs_declare(&ch, "sasl.amqplain").await;
    amqprs_close(c).await;

    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    lapin_declare(&ch, "sasl.plain").await;
    l.close(200, "bye".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_get_403_access_refused() {
    let b = start().await;
    // With authentication_failure_close: connection.close 403 (0,0), RabbitMQ's wording.
    for (mech, resp) in [
        ("PLAIN", plain("guest", "wrong")),
        ("PLAIN", plain("nobody", "guest")),
        ("AMQPLAIN", amqplain("guest", "wrong")),
    ] {
        let mut r = Raw::start(b.addr).await;
        let h = Handshake {
            mechanism: mech.into(),
            response: resp,
            ..Handshake::default()
        };
        r.start_ok(&h).await;
        let c = r.expect_connection_close_ok().await;
        c.assert(403, 0, 0);
        c.assert_text(&format!(
            "ACCESS_REFUSED - Login was refused using authentication mechanism {mech}. For details see the broker logfile."
        ));
    }
    // Without the capability RabbitMQ just closes the socket.
    let mut r = Raw::start(b.addr).await;
    let h = Handshake {
        response: plain("guest", "wrong"),
        capabilities: false,
        ..Handshake::default()
    };
    r.start_ok(&h).await;
    r.expect_eof_without_close(Duration::from_secs(4)).await;

    // Clients see a failed login.
    let uri = format!("amqp://guest:wrong@{}/%2f", b.addr);
    let res = within(
        "lapin bad login",
        lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
    )
    .await;
    let e = assert_lapin_code(res.map(|_| ()), 403);
    assert!(lapin_text(&e).starts_with("ACCESS_REFUSED"), "{e:?}");
    let args = amqprs::connection::OpenConnectionArguments::new(
        "127.0.0.1",
        b.addr.port(),
        "guest",
        "wrong",
    );
    assert!(within(
        "amqprs bad login",
        amqprs::connection::Connection::open(&args)
    )
    .await
    .is_err());

    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_user_and_rabbit_cr_demo_when_configured() {
    use warren::auth::Mechanism;
    // amqprs's own test broker: user/bitnami, RABBIT-CR-DEMO enabled (compat-tests/suites/amqprs).
    let b = start_with(|c| {
        c.default_user = "user".into();
        c.default_pass = "bitnami".into();
        c.auth_mechanisms = vec![Mechanism::Plain, Mechanism::RabbitCrDemo];
    })
    .await;
    let r = Raw::start(b.addr).await;
    let offered =
        String::from_utf8_lossy(r.start.as_ref().unwrap().mechanisms.as_bytes()).into_owned();
    assert_eq!(
        offered, "PLAIN RABBIT-CR-DEMO",
        "offered in the configured order"
    );
    drop(r);

    // start-ok names the login, connection.secure asks for the password, secure-ok gives it.
    let cr_demo = |password: &str| {
        let password = password.to_owned();
        async move {
            let mut r = Raw::start(b.addr).await;
            let h = Handshake {
                mechanism: "RABBIT-CR-DEMO".into(),
                response: b"user".to_vec(),
                ..Handshake::default()
            };
            r.start_ok(&h).await;
            match r.recv().await {
                In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Secure(s))) => {
                    assert_eq!(s.challenge.as_bytes(), b"Please tell me your password")
                }
                other => panic!("expected connection.secure, got {other:?}"),
            }
            r.send_method(
                0,
                AMQPClass::Connection(conn::AMQPMethod::SecureOk(conn::SecureOk {
                    response: LongString::from(format!("My password is {password}").into_bytes()),
                })),
            )
            .await;
            r
        }
    };
    let mut r = cr_demo("bitnami").await;
    let tune = r.expect_tune().await;
    r.tune_ok(&Handshake::default(), &tune).await;
    r.connection_open("/").await;
    r.open_channel(1).await;
    r.ping(1).await;
    r.close().await;

    let mut r = cr_demo("wrong").await;
    let c = r.expect_connection_close_ok().await;
    c.assert(403, 0, 0);
    c.assert_text("ACCESS_REFUSED - Login was refused using authentication mechanism RABBIT-CR-DEMO. For details see the broker logfile.");

    // The default user replaces guest; a mechanism not offered closes the socket, as RabbitMQ.
    let mut r = Raw::start(b.addr).await;
    r.start_ok(&Handshake::default()).await;
    r.expect_connection_close_ok().await.assert(403, 0, 0);
    let mut r = Raw::start(b.addr).await;
    r.start_ok(&Handshake {
        mechanism: "AMQPLAIN".into(),
        response: amqplain("user", "bitnami"),
        ..Handshake::default()
    })
    .await;
    r.expect_eof_without_close(Duration::from_secs(4)).await;
    let mut r = Raw::open_with(
        b.addr,
        Handshake {
            response: plain("user", "bitnami"),
            ..Handshake::default()
        },
    )
    .await;
    r.close().await;
}

// ------------------------------------------------------------------------------------------
// Tune

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_offers_rabbitmq_defaults() {
    let b = start().await;
    let mut r = Raw::start(b.addr).await;
    r.start_ok(&Handshake::default()).await;
    let t = r.expect_tune().await;
    assert_eq!(
        (t.channel_max, t.frame_max, t.heartbeat),
        (2047, 131_072, 60)
    );

    let l = lapin_connect(&b).await;
    let cfg = l.configuration();
    assert_eq!(cfg.channel_max(), 2047);
    assert_eq!(cfg.frame_max(), 131_072);
    assert_eq!(cfg.heartbeat(), 60);
    l.close(200, "bye".into()).await.unwrap();

    let c = amqprs_connect(&b).await;
    assert_eq!(c.channel_max(), 2047);
    assert_eq!(c.frame_max(), 131_072);
    amqprs_close(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lower_frame_max_wins() {
    let b = start().await;
    let h = Handshake {
        frame_max: Some(4096),
        ..Handshake::default()
    };
    let mut r = Raw::open_with(b.addr, h).await;
    r.open_channel(1).await;
    let q = name("tune.fm");
    r.declare(1, &q, QOpts::default()).await;
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    r.publish(1, "", &q, &body).await;
    let m = r.get(1, &q, true).await.expect("message");
    assert_eq!(m.body, body);
    assert!(
        m.body_frames.len() >= 5,
        "20000 octets in frames of at most 4096: {:?}",
        m.body_frames
    );
    for n in &m.body_frames {
        assert!(
            n + 8 <= 4096,
            "body frame of {n} octets exceeds the negotiated frame_max 4096"
        );
    }
    // The server also enforces the lower frame_max on what it receives.
    let big = body_bytes(1, &vec![0u8; 5000]);
    r.publish_full(1, "", &q, false, false, &[]).await; // a complete empty message first
    let mut bytes = method_bytes(
        1,
        &AMQPClass::Basic(warren_amqp::protocol::basic::AMQPMethod::Publish(
            warren_amqp::protocol::basic::Publish {
                exchange: "".into(),
                routing_key: q.as_str().into(),
                mandatory: false,
                immediate: false,
            },
        )),
    );
    bytes.extend(header_bytes(1, 5000));
    bytes.extend(big);
    r.send(&bytes).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(501, 0, 0);
    c.assert_text_starts("FRAME_ERROR");
    assert_alive(b.addr).await;
}

/// A frame larger than frame_max: connection.close 501 FRAME_ERROR, and, as RabbitMQ, the
/// socket stays open while the client reads it (what it sends meanwhile is discarded, not
/// answered with a reset) until its close-ok or its own close (the Java client's
/// `FrameMax.rejectExceedingFrameMax` writes basic.qos after the big frame and expects the 501,
/// not a broken pipe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_oversized_frame_the_socket_stays_open_for_the_close() {
    let b = start().await;
    let h = Handshake {
        frame_max: Some(4096),
        ..Handshake::default()
    };
    let mut r = Raw::open_with(b.addr, h).await;
    r.open_channel(1).await;
    let mut bytes = method_bytes(
        1,
        &AMQPClass::Basic(warren_amqp::protocol::basic::AMQPMethod::Publish(
            warren_amqp::protocol::basic::Publish {
                exchange: "".into(),
                routing_key: "big".into(),
                mandatory: false,
                immediate: false,
            },
        )),
    );
    bytes.extend(header_bytes(1, 10_000));
    bytes.extend(body_bytes(1, &vec![0u8; 10_000]));
    r.send(&bytes).await;
    let c = r.expect_connection_close().await;
    c.assert(501, 0, 0);
    // Open still: what the client sends now is taken (and dropped), nothing comes back.
    r.send(&method_bytes(
        1,
        &AMQPClass::Basic(warren_amqp::protocol::basic::AMQPMethod::Qos(
            warren_amqp::protocol::basic::Qos {
                prefetch_count: 1,
                global: false,
            },
        )),
    ))
    .await;
    r.expect_silence(Duration::from_millis(500)).await;
    // close-ok ends it (or, framing lost, the close times out after 3 s).
    let _ = r
        .try_send(&method_bytes(
            0,
            &AMQPClass::Connection(warren_amqp::protocol::connection::AMQPMethod::CloseOk(
                warren_amqp::protocol::connection::CloseOk {},
            )),
        ))
        .await;
    r.expect_eof(Duration::from_secs(5)).await;
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lower_heartbeat_and_channel_max_win() {
    let b = start().await;
    // lapin asks for a 5 s heartbeat: the negotiated value is the client's.
    let uri = format!("{}?heartbeat=5", b.uri());
    let l = within(
        "lapin connect",
        lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
    )
    .await
    .unwrap();
    assert_eq!(l.configuration().heartbeat(), 5);
    l.close(200, "bye".into()).await.unwrap();

    // amqprs asks for 7 s.
    let mut args = amqprs::connection::OpenConnectionArguments::new(
        "127.0.0.1",
        b.addr.port(),
        "guest",
        "guest",
    );
    args.heartbeat(7);
    let c = within(
        "amqprs connect",
        amqprs::connection::Connection::open(&args),
    )
    .await
    .unwrap();
    assert_eq!(c.heartbeat(), 7);
    amqprs_close(c).await;

    // channel_max 2: two channels may be open at once, a third is refused (RabbitMQ: 530
    // NOT_ALLOWED, "operation none", i.e. class 0 method 0).
    let h = Handshake {
        channel_max: Some(2),
        ..Handshake::default()
    };
    let mut r = Raw::open_with(b.addr, h).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    r.close_channel(2).await;
    r.open_channel(5).await; // numbers are not bounded, the count is
    r.send_method(3, channel_open()).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(530, 0, 0);
    c.assert_text(
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)",
    );
    assert_alive(b.addr).await;
}

// ------------------------------------------------------------------------------------------
// connection.open

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_is_530_not_allowed() {
    let b = start().await;
    let mut r = Raw::start(b.addr).await;
    let h = Handshake::default();
    r.start_ok(&h).await;
    let t = r.expect_tune().await;
    r.tune_ok(&h, &t).await;
    r.send_method(
        0,
        AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open {
            virtual_host: "/nope".into(),
        })),
    )
    .await;
    let c = r.expect_connection_close_ok().await;
    c.assert(530, 10, 40);
    c.assert_text("NOT_ALLOWED - vhost /nope not found");

    let uri = format!("amqp://guest:guest@{}/nope", b.addr);
    let res = within(
        "lapin unknown vhost",
        lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
    )
    .await;
    assert_lapin_code(res.map(|_| ()), 530);

    let mut args = amqprs::connection::OpenConnectionArguments::new(
        "127.0.0.1",
        b.addr.port(),
        "guest",
        "guest",
    );
    args.virtual_host("nope");
    assert!(within(
        "amqprs unknown vhost",
        amqprs::connection::Connection::open(&args)
    )
    .await
    .is_err());

    assert_alive(b.addr).await;
}

// ------------------------------------------------------------------------------------------
// Heartbeats

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_sent_and_a_silent_client_is_dropped() {
    let b = start().await;
    let h = Handshake {
        heartbeat: 1,
        ..Handshake::default()
    };
    let mut r = Raw::open_with(b.addr, h).await;
    r.open_channel(1).await;

    // Phase 1: the client heartbeats every 400 ms for 3 s; the server sends heartbeats too and
    // keeps the connection.
    let mut server_beats = 0;
    let phase1 = Instant::now() + Duration::from_secs(3);
    let mut next_beat = Instant::now();
    while Instant::now() < phase1 {
        if Instant::now() >= next_beat {
            r.send(&frame_bytes(8, 0, &[])).await;
            next_beat += Duration::from_millis(400);
        }
        match r.recv_within(Duration::from_millis(100)).await {
            Ok(In::Heartbeat(0)) => server_beats += 1,
            Ok(other) => panic!("unexpected frame {other:?}"),
            Err(RecvError::Timeout) => {}
            Err(e) => panic!("connection dropped although the client sent heartbeats: {e:?}"),
        }
    }
    assert!(
        server_beats >= 2,
        "server sent {server_beats} heartbeats in 3 s with a 1 s interval"
    );
    r.ping(1).await;

    // Phase 2: the client goes silent; the server keeps sending heartbeats, then drops the socket
    // after about two missed intervals (RabbitMQ closes it without a close frame).
    let silent_from = Instant::now();
    let mut beats = 0;
    loop {
        match r.recv_within(Duration::from_secs(6)).await {
            Ok(In::Heartbeat(0)) => beats += 1,
            Ok(In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Close(c)))) => {
                panic!("RabbitMQ drops the socket on missed heartbeats without connection.close, got {c:?}")
            }
            Ok(other) => panic!("unexpected frame {other:?}"),
            Err(RecvError::Closed) => break,
            Err(e) => panic!("socket not closed 6 s after the client went silent: {e:?}"),
        }
    }
    let after = silent_from.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "dropped too early, after {after:?}"
    );
    assert!(
        after <= Duration::from_millis(4500),
        "dropped too late, after {after:?}"
    );
    assert!(
        beats >= 1,
        "no heartbeat from the server while the client was silent"
    );
    assert_alive(b.addr).await;
}

// ------------------------------------------------------------------------------------------
// update-secret, access.request

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_secret_and_access_request_are_answered() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let m = r
        .call(
            0,
            AMQPClass::Connection(conn::AMQPMethod::UpdateSecret(conn::UpdateSecret {
                new_secret: LongString::from("guest"),
                reason: "rotation".into(),
            })),
        )
        .await;
    assert!(
        matches!(
            m,
            AMQPClass::Connection(conn::AMQPMethod::UpdateSecretOk(_))
        ),
        "{m:?}"
    );
    let m = r.call(1, access_request()).await;
    assert!(
        matches!(m, AMQPClass::Access(access::AMQPMethod::RequestOk(_))),
        "{m:?}"
    );
    r.ping(1).await;
    r.close().await;

    let l = lapin_connect(&b).await;
    within(
        "lapin update_secret",
        l.update_secret("guest".into(), "rotation".into()),
    )
    .await
    .expect("update-secret-ok");
    let ch = lapin_channel(&l).await;
    within(
        "lapin access.request",
        ch.access_request(
            "/data".into(),
            lapin::options::AccessRequestOptions::default(),
        ),
    )
    .await
    .expect("access.request-ok");
    lapin_declare(&ch, "").await;
    l.close(200, "bye".into()).await.unwrap();
    // (amqprs' update_secret is left out: its connection handler sometimes shuts itself down
    // right after a byte-correct update-secret-ok, a client-side race.)
}

// ------------------------------------------------------------------------------------------
// Closing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_gets_close_ok_and_socket_closes() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    r.close().await;
    // After close-ok the broker gives the client up to 2 s to close its side first (so no reset
    // overtakes close-ok); this client never does, so the broker's close comes after that.
    r.expect_eof(Duration::from_secs(6)).await;

    let l = lapin_connect(&b).await;
    let _ch = lapin_channel(&l).await;
    within("lapin close", l.close(200, "bye".into()))
        .await
        .expect("close-ok");

    let c = amqprs_connect(&b).await;
    let (ch, _ev) = amqprs_channel(&c).await;
    amqprs_declare(&ch, "").await; // see amqprs_close: no close right after channel.open-ok
    within("amqprs close", c.close()).await.expect("close-ok");
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_waits_for_close_ok() {
    // A hard error: the server sends connection.close, the client answers close-ok, the socket
    // closes; meanwhile frames other than close/close-ok are ignored.
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.send_method(1, channel_open()).await; // second channel.open: 504
    let c = r.expect_connection_close().await;
    c.assert(504, 20, 10);
    c.assert_text("CHANNEL_ERROR - second 'channel.open' seen");
    // Ignored while closing.
    r.send_method(1, declare("ignored.q", QOpts::default()))
        .await;
    r.expect_silence(Duration::from_millis(300)).await;
    r.send(&method_bytes(
        0,
        &AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
    ))
    .await;
    r.expect_eof(Duration::from_secs(2)).await;
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_sends_320_connection_forced() {
    let mut b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let l = lapin_connect(&b).await;
    let lch = lapin_channel(&l).await;
    lapin_declare(&lch, "shutdown.q").await;

    b.begin_stop();
    let c = r.expect_connection_close_ok().await;
    c.assert(320, 0, 0);
    c.assert_text("CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'");

    // lapin sees its connection closed by the server.
    let deadline = Instant::now() + T;
    while l.status().connected() {
        assert!(
            Instant::now() < deadline,
            "lapin connection still open after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
}

// ------------------------------------------------------------------------------------------
// Channels

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_open_and_close_both_ways() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    // Client-initiated.
    r.open_channel(1).await;
    r.open_channel(2).await;
    r.close_channel(1).await;
    r.open_channel(1).await;
    r.ping(1).await;
    // Server-initiated (soft error): only channel 1 closes.
    r.send_method(1, passive("chan.missing")).await;
    let c = r.expect_channel_close_ok(1).await;
    c.assert(404, 50, 10);
    c.assert_text("NOT_FOUND - no queue 'chan.missing' in vhost '/'");
    r.ping(2).await;
    r.open_channel(1).await;
    r.ping(1).await;
    // A channel.close crossing the server's: answered with close-ok (RabbitMQ case 24.11).
    r.send_method(1, passive("chan.missing")).await;
    r.expect_channel_close(1).await;
    r.send_method(1, channel_close()).await;
    match r.recv().await {
        In::Method(1, AMQPClass::Channel(chan::AMQPMethod::CloseOk(_))) => {}
        other => panic!("expected channel.close-ok, got {other:?}"),
    }
    r.open_channel(1).await;
    r.ping(1).await;
    r.close().await;

    // Same through lapin and amqprs.
    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    within("lapin channel close", ch.close(200, "bye".into()))
        .await
        .unwrap();
    let ch2 = lapin_channel(&l).await;
    lapin_declare(&ch2, "").await;
    let c = amqprs_connect(&b).await;
    let (ch, _ev) = amqprs_channel(&c).await;
    amqprs_declare(&ch, "").await;
    within("amqprs channel close", ch.close()).await.unwrap();
    let (ch, _ev) = amqprs_channel(&c).await;
    amqprs_declare(&ch, "").await;
    amqprs_close(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_after_server_channel_close_are_ignored_until_close_ok() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let q = name("chan.ignored");
    r.declare(1, &q, QOpts::default()).await;
    r.send_method(1, passive("chan.missing")).await;
    r.expect_channel_close(1).await;
    // RabbitMQ drops these silently (cases 24.2 - 24.4).
    r.send_method(1, declare("chan.ignored.other", QOpts::default()))
        .await;
    r.publish(1, "", &q, b"dropped").await;
    r.send_method(1, ack(99, false)).await;
    r.expect_silence(QUIET).await;
    r.send_method(
        1,
        AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
    )
    .await;
    r.open_channel(1).await;
    let ok = r
        .declare(
            1,
            &q,
            QOpts {
                passive: true,
                ..QOpts::default()
            },
        )
        .await;
    assert_eq!(
        ok.message_count, 0,
        "a publish sent before close-ok must be dropped"
    );
    r.send_method(1, passive("chan.ignored.other")).await;
    r.expect_channel_close_ok(1).await.assert(404, 50, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    let m = r
        .call(
            1,
            AMQPClass::Channel(chan::AMQPMethod::Flow(chan::Flow { active: true })),
        )
        .await;
    assert!(
        matches!(
            m,
            AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk { active: true }))
        ),
        "{m:?}"
    );
    r.ping(1).await;

    let l = lapin_connect(&b).await;
    let ch = lapin_channel(&l).await;
    let active = within(
        "lapin channel.flow",
        ch.channel_flow(lapin::options::ChannelFlowOptions { active: true }),
    )
    .await
    .unwrap();
    assert!(active);

    // RabbitMQ refuses to stop sending to a consumer: 540 NOT_IMPLEMENTED, a connection error.
    r.send_method(
        1,
        AMQPClass::Channel(chan::AMQPMethod::Flow(chan::Flow { active: false })),
    )
    .await;
    let c = r.expect_connection_close_ok().await;
    c.assert(540, 20, 20);
    c.assert_text("NOT_IMPLEMENTED - active=false");
    // The lapin connection is unaffected.
    lapin_declare(&ch, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_on_unopened_channel_is_504() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.send_method(5, declare("never.opened", QOpts::default()))
        .await;
    let c = r.expect_connection_close_ok().await;
    c.assert(504, 50, 10);
    c.assert_text("CHANNEL_ERROR - expected 'channel.open'");

    let mut r = Raw::open(b.addr).await;
    r.send_method(7, channel_close()).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(504, 20, 40);
    c.assert_text("CHANNEL_ERROR - expected 'channel.open'");

    // A channel closed by the client is no longer open either.
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.close_channel(1).await;
    r.send_method(1, get("whatever", true)).await;
    r.expect_connection_close_ok().await.assert(504, 60, 70);
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_channel_open_is_504() {
    let b = start().await;
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r.send_method(1, channel_open()).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(504, 20, 10);
    c.assert_text("CHANNEL_ERROR - second 'channel.open' seen");
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_channel_ops_after_hard_error_fail_but_others_work() {
    // Point 9: a hard error closes only its connection.
    let b = start().await;
    let l1 = lapin_connect(&b).await;
    let l2 = lapin_connect(&b).await;
    let ch1 = lapin_channel(&l1).await;
    let ch2 = lapin_channel(&l2).await;
    lapin_declare(&ch1, "hard.q").await;
    // immediate=true: 540, a connection error.
    let r = within(
        "immediate publish",
        ch1.basic_publish(
            "".into(),
            "hard.q".into(),
            lapin::options::BasicPublishOptions {
                mandatory: false,
                immediate: true,
            },
            b"x",
            lapin::BasicProperties::default(),
        ),
    )
    .await;
    // The publish itself may be accepted locally; the next synchronous call sees the close.
    if r.is_ok() {
        let res = within(
            "declare after hard error",
            ch1.queue_declare("hard.q".into(), Default::default(), Default::default()),
        )
        .await;
        let e = res.expect_err("connection should be closed");
        assert!(
            lapin_code(&e).is_none_or(|c| c == 540),
            "expected 540 or a closed-connection error, got {e:?}"
        );
    }
    let deadline = Instant::now() + T;
    while l1.status().connected() {
        assert!(
            Instant::now() < deadline,
            "connection 1 still open after a hard error"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lapin_publish(&ch2, "", "hard.q", b"ok").await;
    let m = lapin_get(&ch2, "hard.q")
        .await
        .expect("message on the other connection");
    assert_eq!(m.delivery.data, b"ok");
}
