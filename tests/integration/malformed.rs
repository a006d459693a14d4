//! Malformed input on a raw socket (issue "Core broker", malformed-input list). Each case gets
//! RabbitMQ 3.10's reply (code, class id, method id; see notes/rabbit-replies.md for the captured
//! originals) or RabbitMQ's plain socket close, never a panic; and a fresh connection works
//! afterwards.

use std::time::Duration;

use crate::common::*;
use warren_amqp::protocol::{basic, channel as chan, connection as conn, AMQPClass};

/// A connection with channel 1 open.
async fn open1(b: &TestBroker) -> Raw {
    let mut r = Raw::open(b.addr).await;
    r.open_channel(1).await;
    r
}

fn publish_method(ch: u16, rk: &str) -> Vec<u8> {
    method_bytes(
        ch,
        &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: rk.into(),
            mandatory: false,
            immediate: false,
        })),
    )
}

/// A method frame from raw payload octets.
fn raw_method(ch: u16, payload: &[u8]) -> Vec<u8> {
    frame_bytes(1, ch, payload)
}

const NOT_METHOD: &str = "UNEXPECTED_FRAME - expected method frame, got non method frame instead";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_header() {
    let b = start().await;
    let mut r = Raw::connect(b.addr).await;
    r.send(b"AMQP\x00\x00\x09\x00").await;
    let (bytes, closed) = r.read_raw(64, Duration::from_secs(3)).await;
    assert_eq!(bytes, b"AMQP\x00\x00\x09\x01");
    assert!(closed);
    // Garbage that is not even "AMQP".
    let mut r = Raw::connect(b.addr).await;
    r.send(&[0xFF; 8]).await;
    let (bytes, closed) = r.read_raw(64, Duration::from_secs(3)).await;
    assert_eq!(bytes, b"AMQP\x00\x00\x09\x01");
    assert!(closed);
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frame_end_octet_is_501() {
    let b = start().await;
    // basic.qos(prefetch_count=1) on channel 1 with frame-end 0x00 (RabbitMQ case 2.2).
    let mut r = open1(&b).await;
    let mut f = raw_method(1, &[0, 60, 0, 10, 0, 0, 0, 0, 0, 1, 0]);
    *f.last_mut().unwrap() = 0x00;
    r.send(&f).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(501, 0, 0);
    c.assert_text_starts("FRAME_ERROR - ");
    // Heartbeat with frame-end 0xFF (case 2.4).
    let mut r = open1(&b).await;
    r.send(&[8, 0, 0, 0, 0, 0, 0, 0xFF]).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(501, 0, 0);
    c.assert_text_starts("FRAME_ERROR - ");
    // Channel.open on an unopened channel with a bad end (case 2.3): the frame error wins.
    let mut r = open1(&b).await;
    let mut f = raw_method(3, &[0, 20, 0, 10, 0]);
    *f.last_mut().unwrap() = 0x00;
    r.send(&f).await;
    r.expect_connection_close_ok().await.assert(501, 0, 0);
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_larger_than_frame_max_is_501() {
    let b = start().await;
    // A whole oversized body frame (RabbitMQ case 3.1).
    let mut r = open1(&b).await;
    r.declare(1, "big.q", QOpts::default()).await;
    let mut bytes = publish_method(1, "big.q");
    bytes.extend(header_bytes(1, 200_000));
    bytes.extend(body_bytes(1, &vec![7u8; 200_000]));
    let _ = r.try_send(&bytes).await; // the server may close before reading it all
    let c = r.expect_connection_close_ok().await;
    c.assert(501, 0, 0);
    c.assert_text_starts("FRAME_ERROR - ");
    // Only a frame header claiming ~4 GiB (cases 3.2, 3.3): refused before the payload.
    for ch in [1u16, 0] {
        let mut r = open1(&b).await;
        let mut h = vec![1u8];
        h.extend_from_slice(&ch.to_be_bytes());
        h.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        r.send(&h).await;
        let c = r.expect_connection_close_ok().await;
        c.assert(501, 0, 0);
        c.assert_text_starts("FRAME_ERROR - ");
    }
    // A payload of frame_max - 7 octets is still accepted, as by RabbitMQ (case 3.5).
    let mut r = open1(&b).await;
    let body = vec![1u8; 131_065];
    let mut bytes = publish_method(1, "big.q");
    bytes.extend(header_bytes(1, body.len() as u64));
    bytes.extend(body_bytes(1, &body));
    r.send(&bytes).await;
    let m = r
        .get(1, "big.q", true)
        .await
        .expect("message with a 131065-octet body frame");
    assert_eq!(m.body.len(), 131_065);
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_class_or_method_closes_the_socket() {
    // RabbitMQ 3.10 drops the TCP connection without a close frame (cases 4.1, 4.2, 4.6).
    let b = start().await;
    for (ch, payload) in [
        (1u16, [0u8, 99, 0, 10]),
        (1, [0, 60, 0, 99]),
        (0, [0, 99, 0, 10]),
    ] {
        let mut r = open1(&b).await;
        r.send(&raw_method(ch, &payload)).await;
        r.expect_eof_without_close(Duration::from_secs(4)).await;
    }
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_method_arguments_are_501() {
    let b = start().await;
    // (payload, class, method): cases 4.3, 4.4, 4.5, 4.8.
    for (payload, class_id, method_id) in [
        (&[0u8, 60, 0, 10, 0, 0][..], 60, 10),
        (&[0, 60, 0, 10][..], 60, 10),
        (&[0, 50, 0, 10, 0, 0, 10, b'a', b'b', b'c'][..], 50, 10),
        (&[0, 60, 0, 10, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3][..], 60, 10),
    ] {
        let mut r = open1(&b).await;
        r.send(&raw_method(1, payload)).await;
        let c = r.expect_connection_close_ok().await;
        c.assert(501, class_id, method_id);
        c.assert_text_starts("FRAME_ERROR - ");
    }
    // A method frame too short to hold class and method ids (case 4.7).
    let mut r = open1(&b).await;
    r.send(&raw_method(1, &[0, 60])).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(501, 0, 0);
    c.assert_text_starts("FRAME_ERROR - ");
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_header_without_publish_is_505() {
    let b = start().await;
    // Case 5.1.
    let mut r = open1(&b).await;
    r.send(&header_bytes(1, 5)).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(505, 0, 0);
    c.assert_text(NOT_METHOD);
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_header_on_channel_0_is_505() {
    // Case 5.3.
    let b = start().await;
    let mut r = open1(&b).await;
    r.send(&header_bytes(0, 5)).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(505, 0, 0);
    c.assert_text_starts("UNEXPECTED_FRAME - ");
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_without_publish_is_505() {
    let b = start().await;
    // Case 5.2.
    let mut r = open1(&b).await;
    r.send(&body_bytes(1, b"hello")).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(505, 0, 0);
    c.assert_text(NOT_METHOD);
    assert_alive(b.addr).await;
}

const QOS1: [u8; 11] = [0, 60, 0, 10, 0, 0, 0, 0, 0, 1, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_instead_of_content_body_is_505_on_publish() {
    // publish + header, then a method instead of the body (case 6.3).
    let b = start().await;
    let mut r = open1(&b).await;
    let mut bytes = publish_method(1, "x");
    bytes.extend(header_bytes(1, 5));
    bytes.extend(raw_method(1, &QOS1));
    r.send(&bytes).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(505, 60, 40);
    c.assert_text("UNEXPECTED_FRAME - expected content body, got non content body frame instead");
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_instead_of_content_header_is_505_on_publish() {
    // publish, then a method instead of the header (case 6.4).
    let b = start().await;
    let mut r = open1(&b).await;
    let mut bytes = publish_method(1, "x");
    bytes.extend(raw_method(1, &QOS1));
    r.send(&bytes).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(505, 60, 40);
    c.assert_text(
        "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead",
    );
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_header_of_wrong_class_is_505_on_publish() {
    // A content header of class 50 after basic.publish (case 6.7).
    let b = start().await;
    let mut r = open1(&b).await;
    let mut bytes = publish_method(1, "x");
    let mut p = vec![0, 50, 0, 0];
    p.extend_from_slice(&5u64.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    bytes.extend(frame_bytes(2, 1, &p));
    r.send(&bytes).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(505, 60, 40);
    c.assert_text(
        "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead",
    );
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_on_another_channel_than_its_publish_is_505() {
    // publish + header on channel 1, the body on (open) channel 2 (case 6.8).
    let b = start().await;
    let mut r = open1(&b).await;
    r.open_channel(2).await;
    let mut bytes = publish_method(1, "x");
    bytes.extend(header_bytes(1, 5));
    bytes.extend(body_bytes(2, b"hello"));
    r.send(&bytes).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(505, 0, 0);
    c.assert_text(NOT_METHOD);
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_longer_than_declared_by_an_empty_header_is_505() {
    // The header declares 0 octets, so the message is complete; the body frame that follows
    // is a content frame where a method is expected (RabbitMQ case 6.6).
    let b = start().await;
    let mut r = open1(&b).await;
    r.declare(1, "long.q", QOpts::default()).await;
    let mut bytes = publish_method(1, "long.q");
    bytes.extend(header_bytes(1, 0));
    bytes.extend(body_bytes(1, b"abc"));
    r.send(&bytes).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(505, 0, 0);
    c.assert_text(NOT_METHOD);
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_longer_than_declared_is_ignored_or_closed_cleanly() {
    // RabbitMQ 3.10 sends nothing for header(5) + a 10-octet body (case 6.1) or 3 + 3 octets
    // (case 6.2): the channel waits for more body forever, other channels keep working. We accept
    // that, or a clean connection-level close (frame/unexpected-frame error answered with
    // close-ok then a closed socket); never a silent drop or a panic.
    let b = start().await;
    for bodies in [vec![vec![0u8; 10]], vec![vec![0u8; 3], vec![0u8; 3]]] {
        let mut r = open1(&b).await;
        r.open_channel(2).await;
        r.declare(2, "longer.q", QOpts::default()).await;
        let mut bytes = publish_method(1, "longer.q");
        bytes.extend(header_bytes(1, 5));
        for body in &bodies {
            bytes.extend(body_bytes(1, body));
        }
        r.send(&bytes).await;
        match r.next_within(Duration::from_millis(700)).await {
            Err(RecvError::Timeout) => {
                // RabbitMQ's way: the connection and its other channels still work.
                r.ping(2).await;
            }
            Ok(In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Close(c)))) => {
                assert!(
                    (c.reply_code == 501 || c.reply_code == 505)
                        && c.reply_text.as_str().starts_with(if c.reply_code == 501 {
                            "FRAME_ERROR - "
                        } else {
                            "UNEXPECTED_FRAME - "
                        }),
                    "unexpected close {c:?}"
                );
                r.send(&method_bytes(
                    0,
                    &AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                ))
                .await;
                r.expect_eof(Duration::from_secs(2)).await;
            }
            other => panic!("expected silence or connection.close, got {other:?}"),
        }
    }
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_method_on_channel_0_is_504() {
    let b = start().await;
    let running = "CHANNEL_ERROR - unexpected method in connection state running";
    // queue.declare, channel.open, basic.qos on channel 0 (cases 7.1, 7.3, 22.6).
    for (bytes, class_id, method_id) in [
        (method_bytes(0, &declare("ch0.q", QOpts::default())), 50, 10),
        (method_bytes(0, &channel_open()), 20, 10),
        (raw_method(0, &[0, 60, 0, 10, 0, 0, 0, 0, 0, 1, 0]), 60, 10),
    ] {
        let mut r = open1(&b).await;
        r.send(&bytes).await;
        let c = r.expect_connection_close_ok().await;
        c.assert(504, class_id, method_id);
        c.assert_text(running);
    }
    // basic.publish with its content on channel 0 (case 7.2).
    let mut r = open1(&b).await;
    let mut bytes = publish_method(0, "ch0.q");
    bytes.extend(header_bytes(0, 2));
    bytes.extend(body_bytes(0, b"hi"));
    r.send(&bytes).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(504, 60, 40);
    c.assert_text(running);
    // Handshake methods again after open (cases 7.8, 7.9, 7.11).
    for (class, method_id) in [
        (
            AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open {
                virtual_host: "/".into(),
            })),
            40,
        ),
        (
            AMQPClass::Connection(conn::AMQPMethod::TuneOk(conn::TuneOk {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 0,
            })),
            31,
        ),
        (
            AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
            51,
        ),
    ] {
        let mut r = open1(&b).await;
        r.send_method(0, class).await;
        let c = r.expect_connection_close_ok().await;
        c.assert(504, 10, method_id);
        c.assert_text(running);
    }
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_method_on_a_channel_is_503() {
    let b = start().await;
    // Cases 7.4 - 7.6, 7.10, 7.12, 11.3.
    let cases: Vec<(AMQPClass, u16, u16)> = vec![
        (
            AMQPClass::Connection(conn::AMQPMethod::TuneOk(conn::TuneOk {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 0,
            })),
            10,
            31,
        ),
        (
            AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
            10,
            50,
        ),
        (
            AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
            20,
            41,
        ),
        (
            AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})),
            20,
            11,
        ),
        (
            AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk { active: true })),
            20,
            21,
        ),
    ];
    for (class, class_id, method_id) in cases {
        let mut r = open1(&b).await;
        r.send_method(1, class).await;
        let c = r.expect_connection_close_ok().await;
        c.assert(503, class_id, method_id);
        c.assert_text("COMMAND_INVALID - unimplemented method");
    }
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_on_an_unopened_channel() {
    let b = start().await;
    // A method (case 8.1): 504 naming the method.
    let mut r = open1(&b).await;
    r.send_method(5, declare("unopened.q", QOpts::default()))
        .await;
    let c = r.expect_connection_close_ok().await;
    c.assert(504, 50, 10);
    c.assert_text("CHANNEL_ERROR - expected 'channel.open'");
    // A body frame (case 5.4) and a content header: 505.
    for bytes in [body_bytes(4, b"hello"), header_bytes(4, 5)] {
        let mut r = open1(&b).await;
        r.send(&bytes).await;
        let c = r.expect_connection_close_ok().await;
        c.assert(505, 0, 0);
        c.assert_text(NOT_METHOD);
    }
    // A heartbeat on a channel other than 0, opened or not (cases 10.1, 10.2).
    for ch in [1u16, 3] {
        let mut r = open1(&b).await;
        r.send(&frame_bytes(8, ch, &[])).await;
        let c = r.expect_connection_close_ok().await;
        c.assert(505, 0, 0);
        c.assert_text("UNEXPECTED_FRAME - type 8, all octets = <<>>");
    }
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_frame_types_and_bad_heartbeats_are_501() {
    let b = start().await;
    // Cases 10.3 (heartbeat with payload), 10.5 (type 4), 10.6 (type 7).
    for bytes in [
        frame_bytes(8, 0, b"abcd"),
        frame_bytes(4, 1, &[]),
        frame_bytes(7, 0, b"xx"),
    ] {
        let mut r = open1(&b).await;
        r.send(&bytes).await;
        let c = r.expect_connection_close_ok().await;
        c.assert(501, 0, 0);
        c.assert_text_starts("FRAME_ERROR - ");
    }
    // A well-formed heartbeat on channel 0 is fine even when none was negotiated (case 10.4).
    let mut r = open1(&b).await;
    r.send(&frame_bytes(8, 0, &[])).await;
    r.expect_silence(QUIET).await;
    r.ping(1).await;
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_frame_before_connection_open_is_505() {
    // Case 20.11: tune-ok, then channel.open before connection.open.
    let b = start().await;
    let mut r = Raw::start(b.addr).await;
    let h = Handshake::default();
    r.start_ok(&h).await;
    let t = r.expect_tune().await;
    r.tune_ok(&h, &t).await;
    r.send_method(1, channel_open()).await;
    let c = r.expect_connection_close_ok().await;
    c.assert(505, 0, 0);
    c.assert_text_starts("UNEXPECTED_FRAME - ");
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_then_eof() {
    let b = start().await;
    let declare_frame = method_bytes(1, &declare("trunc.q", QOpts::default()));
    // 12 octets of a queue.declare frame, then EOF (case 9.1); 3 octets (case 9.2); nothing (9.3).
    for cut in [12usize, 3, 0] {
        let mut r = open1(&b).await;
        r.send(&declare_frame[..cut]).await;
        r.shutdown_write().await;
        r.expect_eof_without_close(Duration::from_secs(3)).await;
    }
    // Without EOF the server just waits for the rest (case 9.4), and completing it works.
    let mut r = open1(&b).await;
    r.send(&declare_frame[..12]).await;
    r.expect_silence(QUIET).await;
    r.send(&declare_frame[12..]).await;
    match r.recv().await {
        In::Method(1, AMQPClass::Queue(_)) => {}
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
    // Nothing was left behind by the truncated declares.
    r.send_method(1, passive("trunc.never")).await;
    r.expect_channel_close_ok(1).await.assert(404, 50, 10);
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_dropped_mid_message_leaves_no_trace() {
    let b = start().await;
    let mut r = open1(&b).await;
    r.declare(1, "mid.q", QOpts::default()).await;
    let mut bytes = publish_method(1, "mid.q");
    bytes.extend(header_bytes(1, 10));
    bytes.extend(body_bytes(1, b"hello"));
    r.send(&bytes).await;
    drop(r);
    let mut r = open1(&b).await;
    let ok = r
        .declare(
            1,
            "mid.q",
            QOpts {
                passive: true,
                ..QOpts::default()
            },
        )
        .await;
    assert_eq!(
        ok.message_count, 0,
        "a half-received message must not be enqueued"
    );
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_flood_does_not_hurt_other_connections() {
    // A burst of random-looking octets after the handshake: the server answers with an error
    // close (or drops the socket) without affecting a concurrent healthy connection.
    let b = start().await;
    let mut healthy = open1(&b).await;
    healthy.declare(1, "flood.q", QOpts::default()).await;
    let mut r = open1(&b).await;
    let mut x: u32 = 0x1234_5678;
    let junk: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let _ = r.try_send(&junk).await;
    let seen = r.expect_eof(Duration::from_secs(5)).await;
    for f in &seen {
        if let In::Method(0, AMQPClass::Connection(conn::AMQPMethod::Close(c))) = f {
            assert!(c.reply_code >= 500, "{c:?}");
        }
    }
    healthy.publish(1, "", "flood.q", b"fine").await;
    assert_eq!(
        healthy.get(1, "flood.q", true).await.expect("message").body,
        b"fine"
    );
    assert_alive(b.addr).await;
}
