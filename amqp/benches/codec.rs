//! Codec micro-benchmarks: decoding a publish (method + header + body) and encoding a delivery.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use warren_amqp::encode::{write_content, write_deliver, write_method};
use warren_amqp::protocol::{basic, AMQPClass};
use warren_amqp::{ContentAssembler, FrameDecoder, FrameKind, Method};

fn publish_stream(n: usize, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "".into(),
        routing_key: "bench-queue".into(),
        mandatory: false,
        immediate: false,
    }));
    for _ in 0..n {
        write_method(&mut buf, 1, &publish).unwrap();
        write_content(&mut buf, 1, &[0x10, 0, 2], body, 131_072);
    }
    buf
}

fn decode_publishes(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode publish+header+body");
    for size in [16usize, 1024] {
        let body = vec![7u8; size];
        let stream = publish_stream(1000, &body);
        g.throughput(Throughput::Elements(1000));
        g.bench_function(format!("{size} B x1000"), |b| {
            b.iter(|| {
                let mut buf = stream.clone();
                let decoder = FrameDecoder::new(131_072);
                let mut assembler = ContentAssembler::default();
                let mut done = 0;
                while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                    let complete = match frame.kind {
                        FrameKind::Method => {
                            match warren_amqp::decode_method(&frame.payload).unwrap() {
                                Method::Publish(p) => {
                                    assembler.start(p);
                                    None
                                }
                                _ => None,
                            }
                        }
                        FrameKind::Header => assembler.header(frame.payload, u64::MAX).unwrap(),
                        FrameKind::Body => assembler.body(frame.payload).unwrap(),
                        FrameKind::Heartbeat => None,
                    };
                    if let Some(content) = complete {
                        black_box(&content);
                        done += 1;
                    }
                }
                assert_eq!(done, 1000);
            })
        });
    }
    g.finish();
}

fn encode_deliveries(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode deliver+header+body");
    for size in [16usize, 1024] {
        let body = vec![7u8; size];
        g.throughput(Throughput::Elements(1000));
        g.bench_function(format!("{size} B x1000"), |b| {
            let mut buf = BytesMut::with_capacity(1 << 20);
            b.iter(|| {
                buf.clear();
                for tag in 0..1000u64 {
                    write_deliver(
                        &mut buf,
                        1,
                        b"amq.ctag-abcdefghijklmnopqrstuv",
                        tag,
                        false,
                        b"",
                        b"bench-queue",
                    );
                    write_content(&mut buf, 1, &[0x10, 0, 2], &body, 131_072);
                }
                black_box(buf.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode_publishes, encode_deliveries);
criterion_main!(benches);
