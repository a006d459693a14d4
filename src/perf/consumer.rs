//! Consumer connections. Each connection carries one channel per consumer and is driven by one
//! task: it reads whatever the socket has, walks the frames (`basic.deliver` → content header →
//! body frames) per channel, takes the send timestamp from the first body frame into the
//! connection's latency histogram, and — with manual acks — acknowledges every `ack_every`
//! messages with one `basic.ack` (`multiple = true`), written once per read.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amq_protocol::uri::AMQPUri;
use anyhow::{anyhow, bail};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use warren_amqp::FrameKind;

use super::client::{close_method, consume_method, describe_close, Conn};
use super::stats::SharedHistogram;
use super::wire;
use super::RunContext;

/// Timestamps further than this in the future, or older than an hour, are not ours.
const CLOCK_SLACK_NS: u64 = 1_000_000_000;
const MAX_AGE_NS: u64 = 3_600_000_000_000;

/// Settings shared by all consumers.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    pub auto_ack: bool,
    /// `basic.qos` prefetch count per consumer (manual acks only; 0 = unlimited).
    pub prefetch: u16,
    /// Acknowledge after this many messages (one `basic.ack` with `multiple`).
    pub ack_every: u64,
    /// basic.consume's arguments (`--consumer-args`), e.g. `x-stream-offset=first`.
    pub arguments: warren_amqp::types::FieldTable,
    /// With `--latency-log`: every connection's (send time ns, latency µs) pairs, added at its end.
    pub latency_log: Option<LatencyLog>,
}

/// `--latency-log`'s samples: (send time ns since the epoch, end-to-end latency µs).
pub type LatencyLog = Arc<Mutex<Vec<(u64, u64)>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Deliver,
    Header,
    Body { remaining: u64, first: bool },
}

struct Channel {
    expect: Expect,
    last_tag: u64,
    unacked: u64,
}

/// A set-up consumer connection, not yet consuming.
pub struct ConsumerConn {
    conn: Conn,
    queues: Vec<String>,
    opts: ConsumerOptions,
}

/// Connects and opens one channel (with `basic.qos` for manual acks) per queue to consume from.
pub async fn setup(
    uri: AMQPUri,
    name: String,
    queues: Vec<String>,
    opts: ConsumerOptions,
) -> anyhow::Result<ConsumerConn> {
    let mut conn = Conn::open(&uri, &name).await?;
    for ch in 1..=queues.len() as u16 {
        conn.open_channel(ch).await?;
        if !opts.auto_ack && opts.prefetch > 0 {
            conn.qos(ch, opts.prefetch).await?;
        }
    }
    Ok(ConsumerConn { conn, queues, opts })
}

impl ConsumerConn {
    /// Starts the consumers (reporting on `ready` once the server has confirmed all of them)
    /// and consumes until the context's consumer stop signal.
    pub async fn run(
        self,
        ctx: Arc<RunContext>,
        latency: SharedHistogram,
        ready: oneshot::Sender<()>,
    ) -> anyhow::Result<()> {
        let ConsumerConn {
            mut conn,
            queues,
            opts,
        } = self;
        let tag_base = rand::random::<u32>();
        for (i, queue) in queues.iter().enumerate() {
            let tag = format!("perf-{tag_base:08x}-{i}");
            conn.queue_method(
                i as u16 + 1,
                &consume_method(queue, &tag, opts.auto_ack, &opts.arguments),
            )?;
        }
        conn.flush().await?;

        let mut channels: Vec<Channel> = queues
            .iter()
            .map(|_| Channel {
                expect: Expect::Deliver,
                last_tag: 0,
                unacked: 0,
            })
            .collect();
        let mut ready = Some(ready);
        let mut consume_oks = 0;
        let mut stop = ctx.stop_consumers.clone();
        let mut stream = conn.stream;
        let mut rbuf = conn.rbuf;
        let decoder = conn.decoder;
        let mut wbuf = BytesMut::with_capacity(4096);
        let mut read_size = 16 * 1024;
        let mut samples: Vec<(u64, u64)> = Vec::new();
        let keep_samples = opts.latency_log.is_some();
        loop {
            let now = wire::now_nanos();
            let mut consumed = 0;
            {
                let mut hist = latency
                    .lock()
                    .map_err(|_| anyhow!("latency histogram poisoned"))?;
                while let Some(frame) = decoder.decode(&mut rbuf)? {
                    let i = usize::from(frame.channel).wrapping_sub(1);
                    let Some(ch) = channels.get_mut(i) else {
                        if frame.kind == FrameKind::Method {
                            if let Some((10, 50)) = wire::method_ids(&frame.payload) {
                                bail!("{}", describe_close(&frame.payload));
                            }
                        }
                        continue;
                    };
                    let done = match (frame.kind, ch.expect) {
                        (FrameKind::Method, _) => {
                            if let Some(tag) = wire::parse_deliver(&frame.payload) {
                                ch.last_tag = tag;
                                ch.expect = Expect::Header;
                            } else {
                                match wire::method_ids(&frame.payload) {
                                    Some((60, 21)) => consume_oks += 1,
                                    Some((60, 30)) => bail!(
                                        "the server cancelled consumer on queue {:?}",
                                        queues[i]
                                    ),
                                    Some((20, 40)) => bail!(
                                        "{} (queue {:?})",
                                        describe_close(&frame.payload),
                                        queues[i]
                                    ),
                                    _ => {}
                                }
                            }
                            false
                        }
                        (FrameKind::Header, Expect::Header) => {
                            match wire::header_body_size(&frame.payload) {
                                Some(0) | None => true,
                                Some(size) => {
                                    ch.expect = Expect::Body {
                                        remaining: size,
                                        first: true,
                                    };
                                    false
                                }
                            }
                        }
                        (FrameKind::Body, Expect::Body { remaining, first }) => {
                            if first {
                                if let Some(sent) = wire::body_timestamp(&frame.payload) {
                                    if sent <= now + CLOCK_SLACK_NS
                                        && now.saturating_sub(sent) < MAX_AGE_NS
                                    {
                                        let micros = (now.saturating_sub(sent) / 1000).max(1);
                                        hist.saturating_record(micros);
                                        if keep_samples {
                                            samples.push((sent, micros));
                                        }
                                    }
                                }
                            }
                            let remaining = remaining.saturating_sub(frame.payload.len() as u64);
                            ch.expect = Expect::Body {
                                remaining,
                                first: false,
                            };
                            remaining == 0
                        }
                        _ => false, // heartbeats, or content we are not waiting for
                    };
                    if done {
                        ch.expect = Expect::Deliver;
                        consumed += 1;
                        if !opts.auto_ack {
                            ch.unacked += 1;
                            if ch.unacked >= opts.ack_every {
                                wire::put_ack(&mut wbuf, frame.channel, ch.last_tag, true);
                                ch.unacked = 0;
                            }
                        }
                    }
                }
            }
            if consumed > 0 {
                ctx.counters.consumed.fetch_add(consumed, Ordering::Relaxed);
            }
            if consume_oks >= channels.len() {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            if !wbuf.is_empty() {
                stream.write_all(&wbuf).await?;
                wbuf.clear();
            }
            // Grow the read size while reads fill it, up to 1 MiB.
            if rbuf.capacity() - rbuf.len() < read_size / 2 {
                rbuf.reserve(read_size);
            }
            let n = tokio::select! {
                r = stream.read_buf(&mut rbuf) => r?,
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break;
                    }
                    continue;
                }
            };
            if n == 0 {
                bail!("server closed the socket");
            }
            if n >= read_size && read_size < 1 << 20 {
                read_size *= 2;
            }
        }

        if let Some(log) = &opts.latency_log {
            if let Ok(mut all) = log.lock() {
                all.append(&mut samples);
            }
        }
        // Settle what this connection still holds, then close.
        for (i, ch) in channels.iter().enumerate() {
            if ch.unacked > 0 {
                wire::put_ack(&mut wbuf, i as u16 + 1, ch.last_tag, true);
            }
        }
        warren_amqp::encode::write_method(&mut wbuf, 0, &close_method())
            .map_err(|e| anyhow!("encoding close: {e}"))?;
        stream.write_all(&wbuf).await?;
        let mut conn = Conn::resume(stream, rbuf, decoder);
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.wait_close_ok()).await;
        Ok(())
    }
}
