//! Producer connections. Each connection carries one channel per producer; after setup its socket
//! is split in two tasks: a writer that stamps publishes from each channel's
//! [`PublishTemplate`] into one buffer and writes many messages per syscall (holding back a
//! channel at its confirm window or rate), and a reader that takes publisher confirms
//! (`basic.ack`/`basic.nack`, `multiple` or not) off the socket at the same time and reopens the
//! window.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::uri::AMQPUri;
use anyhow::{anyhow, bail, Context};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::time::Instant;
use warren_amqp::{FrameDecoder, FrameKind};

use super::client::{close_method, describe_close, Conn};
use super::wire::{self, ConfirmTracker, PublishTemplate};
use super::RunContext;

/// Target size of one socket write.
const BATCH_BYTES: usize = 128 * 1024;
/// How long a stopping producer waits for its outstanding confirms.
const CONFIRM_DRAIN: Duration = Duration::from_secs(5);

/// Where one producer publishes.
#[derive(Clone, Debug)]
pub struct ProducerSpec {
    pub exchange: String,
    pub routing_key: String,
}

/// Settings shared by all producers.
#[derive(Clone, Debug)]
pub struct ProducerOptions {
    pub body_size: usize,
    /// The properties messages cycle through (one entry: every message alike).
    pub variants: Vec<BasicProperties>,
    /// Most unconfirmed publishes per channel; `None` = no publisher confirms.
    pub confirm_window: Option<u64>,
    /// Messages per second per producer; `None` = as fast as the broker takes them.
    pub rate: Option<f64>,
}

/// Spreads a channel's publishes evenly: message `k` is due `k / rate` seconds after `start`.
#[derive(Clone, Copy, Debug)]
struct Pacer {
    start: Instant,
    rate: f64,
}

impl Pacer {
    /// How many of the messages due by `now` are not sent yet.
    fn due(&self, now: Instant, sent: u64) -> u64 {
        if now < self.start {
            return 0;
        }
        let by_now = (now.duration_since(self.start).as_secs_f64() * self.rate).floor() as u64 + 1;
        by_now.saturating_sub(sent)
    }

    /// When message number `sent` (0-based) is due.
    fn next_at(&self, sent: u64) -> Instant {
        self.start + Duration::from_secs_f64(sent as f64 / self.rate)
    }
}

struct Channel {
    /// One per message variant; message `k` uses `templates[k % len]`.
    templates: Vec<PublishTemplate>,
    /// Messages per batch so that a batch is about [`BATCH_BYTES`].
    batch: u64,
    window: Option<u64>,
    pacer: Option<Pacer>,
    /// Publishes encoded so far (= the last delivery tag used).
    published: u64,
}

/// State the writer and reader of one connection share.
struct Shared {
    /// Per channel: tags the server has acked or nacked.
    settled: Vec<AtomicU64>,
    /// Wakes the writer when confirms free window space, or the reader stops.
    notify: Notify,
    reader_done: AtomicBool,
    closing: AtomicBool,
}

/// A set-up producer connection, not yet publishing.
pub struct ProducerConn {
    conn: Conn,
    specs: Vec<ProducerSpec>,
    opts: ProducerOptions,
}

/// Connects and opens one channel per spec (with `confirm.select` if confirms are on).
pub async fn setup(
    uri: AMQPUri,
    name: String,
    specs: Vec<ProducerSpec>,
    opts: ProducerOptions,
) -> anyhow::Result<ProducerConn> {
    let mut conn = Conn::open(&uri, &name).await?;
    for ch in 1..=specs.len() as u16 {
        conn.open_channel(ch).await?;
        if opts.confirm_window.is_some() {
            conn.confirm_select(ch).await?;
        }
    }
    Ok(ProducerConn { conn, specs, opts })
}

impl ProducerConn {
    /// Publishes from `start` until the context's producer stop signal, then waits (a little)
    /// for outstanding confirms and closes the connection.
    pub async fn run(self, ctx: Arc<RunContext>, start: Instant) -> anyhow::Result<()> {
        let ProducerConn { conn, specs, opts } = self;
        let frame_max = conn.frame_max;
        let mut channels = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let templates = opts
                .variants
                .iter()
                .map(|props| {
                    PublishTemplate::new(
                        i as u16 + 1,
                        &spec.exchange,
                        &spec.routing_key,
                        opts.body_size,
                        props,
                        frame_max,
                    )
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let wire_len = templates.first().map_or(1, |t| t.wire_len());
            let batch = (BATCH_BYTES / wire_len).max(1) as u64;
            // A random phase within the first interval keeps many slow producers from firing
            // in lockstep.
            let pacer = opts.rate.map(|rate| Pacer {
                start: start + Duration::from_secs_f64(rand::random::<f64>() / rate),
                rate,
            });
            channels.push(Channel {
                templates,
                batch: opts.confirm_window.map_or(batch, |w| batch.min(w)),
                window: opts.confirm_window,
                pacer,
                published: 0,
            });
        }
        let shared = Arc::new(Shared {
            settled: (0..channels.len()).map(|_| AtomicU64::new(0)).collect(),
            notify: Notify::new(),
            reader_done: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        });
        let trackers = channels
            .iter()
            .map(|c| c.window.map(|w| ConfirmTracker::new(w as usize)))
            .collect();
        let (read_half, write_half) = conn.stream.into_split();
        let reader = tokio::spawn(read_loop(
            read_half,
            conn.rbuf,
            conn.decoder,
            trackers,
            shared.clone(),
            ctx.clone(),
        ));
        let writer = tokio::spawn(write_loop(write_half, channels, shared, ctx));
        let written = writer
            .await
            .map_err(|e| anyhow!("producer writer task: {e}"))?;
        let read = match tokio::time::timeout(Duration::from_secs(5), reader).await {
            Ok(r) => r.map_err(|e| anyhow!("producer reader task: {e}"))?,
            Err(_) => Ok(()), // no close-ok in time: the socket is dropped all the same
        };
        written.and(read)
    }
}

async fn write_loop(
    mut w: OwnedWriteHalf,
    mut channels: Vec<Channel>,
    shared: Arc<Shared>,
    ctx: Arc<RunContext>,
) -> anyhow::Result<()> {
    let mut stop = ctx.stop_producers.clone();
    let mut buf = BytesMut::with_capacity(2 * BATCH_BYTES);
    let mut first = 0;
    let n = channels.len();
    while !*stop.borrow() && !shared.reader_done.load(Ordering::Acquire) {
        let now = Instant::now();
        let stamp = wire::now_nanos();
        let mut sent = 0;
        let mut wake: Option<Instant> = None;
        let mut window_full = false;
        for k in 0..n {
            let i = (first + k) % n;
            let ch = &mut channels[i];
            let mut count = ch.batch;
            if let Some(p) = &ch.pacer {
                let due = p.due(now, ch.published);
                if due == 0 {
                    let at = p.next_at(ch.published);
                    wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
                    continue;
                }
                count = count.min(due);
            }
            if let Some(window) = ch.window {
                let outstanding = ch.published - shared.settled[i].load(Ordering::Acquire);
                let room = window.saturating_sub(outstanding);
                if room == 0 {
                    window_full = true;
                    continue;
                }
                count = count.min(room);
            }
            let variants = ch.templates.len() as u64;
            for k in ch.published..ch.published + count {
                ch.templates[(k % variants) as usize].put(&mut buf, stamp);
            }
            ch.published += count;
            sent += count;
            if buf.len() >= BATCH_BYTES {
                first = (i + 1) % n;
                break;
            }
        }
        if sent > 0 {
            // `write_all_buf` consumes the buffer as it goes.
            let batch_len = buf.len();
            let stopped = tokio::select! {
                r = w.write_all_buf(&mut buf) => {
                    r.context("writing publishes")?;
                    false
                }
                _ = stop.changed() => true,
            };
            if stopped {
                // Finish the write in progress (it may end in half a message) if the broker
                // lets us; otherwise give up on a clean close.
                match tokio::time::timeout(Duration::from_secs(2), w.write_all_buf(&mut buf)).await
                {
                    Ok(r) => r.context("writing publishes")?,
                    Err(_) => {
                        eprintln!(
                            "warren perf: a producer could not finish its last write in 2 s \
                             (the broker stopped reading); dropping the connection"
                        );
                        // Count the messages that went out whole (the batch's messages may
                        // differ a little in size: this is an estimate).
                        let written = batch_len - buf.len();
                        let whole = sent * written as u64 / batch_len.max(1) as u64;
                        ctx.counters.published.fetch_add(whole, Ordering::Relaxed);
                        shared.closing.store(true, Ordering::Release);
                        return Ok(());
                    }
                }
            }
            buf.clear();
            ctx.counters.published.fetch_add(sent, Ordering::Relaxed);
            continue;
        }
        let notified = shared.notify.notified();
        tokio::select! {
            _ = notified, if window_full => {}
            _ = sleep_until_opt(wake) => {}
            r = stop.changed() => if r.is_err() { break },
        }
    }

    // Wait for the confirms of everything sent, then close.
    let deadline = Instant::now() + CONFIRM_DRAIN;
    loop {
        let notified = shared.notify.notified();
        let unsettled = channels.iter().enumerate().any(|(i, c)| {
            c.window.is_some() && shared.settled[i].load(Ordering::Acquire) < c.published
        });
        if !unsettled || shared.reader_done.load(Ordering::Acquire) {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break;
        }
    }
    shared.closing.store(true, Ordering::Release);
    warren_amqp::encode::write_method(&mut buf, 0, &close_method())
        .map_err(|e| anyhow!("encoding close: {e}"))?;
    let _ = tokio::time::timeout(Duration::from_secs(2), w.write_all_buf(&mut buf)).await;
    Ok(())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn read_loop(
    r: OwnedReadHalf,
    rbuf: BytesMut,
    decoder: FrameDecoder,
    trackers: Vec<Option<ConfirmTracker>>,
    shared: Arc<Shared>,
    ctx: Arc<RunContext>,
) -> anyhow::Result<()> {
    let result = read_confirms(r, rbuf, decoder, trackers, &shared, &ctx).await;
    shared.reader_done.store(true, Ordering::Release);
    shared.notify.notify_one();
    result
}

async fn read_confirms(
    mut r: OwnedReadHalf,
    mut rbuf: BytesMut,
    decoder: FrameDecoder,
    mut trackers: Vec<Option<ConfirmTracker>>,
    shared: &Shared,
    ctx: &RunContext,
) -> anyhow::Result<()> {
    loop {
        // Parse what is buffered first: setup may have read past its last reply.
        let (mut confirmed, mut nacked, mut returned) = (0, 0, 0);
        while let Some(frame) = decoder.decode(&mut rbuf)? {
            if frame.kind != FrameKind::Method {
                continue;
            }
            if let Some(c) = wire::parse_confirm(&frame.payload) {
                let i = usize::from(frame.channel).wrapping_sub(1);
                if let Some(Some(tracker)) = trackers.get_mut(i) {
                    let newly = tracker.settle(c.delivery_tag, c.multiple);
                    shared.settled[i].fetch_add(newly, Ordering::Release);
                    if c.ack {
                        confirmed += newly;
                    } else {
                        nacked += newly;
                    }
                }
                continue;
            }
            match wire::method_ids(&frame.payload) {
                Some((10, 51)) => return Ok(()), // connection.close-ok
                Some((60, 50)) => returned += 1,
                Some((10, 50) | (20, 40)) => bail!("{}", describe_close(&frame.payload)),
                _ => {}
            }
        }
        if confirmed + nacked > 0 {
            ctx.counters
                .confirmed
                .fetch_add(confirmed, Ordering::Relaxed);
            ctx.counters.nacked.fetch_add(nacked, Ordering::Relaxed);
            shared.notify.notify_one();
        }
        if returned > 0 {
            ctx.counters.returned.fetch_add(returned, Ordering::Relaxed);
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(16 * 1024);
        }
        let n = match r.read_buf(&mut rbuf).await {
            Ok(n) => n,
            Err(_) if shared.closing.load(Ordering::Acquire) => return Ok(()),
            Err(e) => return Err(e).context("reading confirms"),
        };
        if n == 0 {
            if shared.closing.load(Ordering::Acquire) {
                return Ok(());
            }
            bail!("server closed the socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spreads_messages_over_time() {
        let start = Instant::now();
        let p = Pacer { start, rate: 10.0 };
        assert_eq!(p.due(start, 0), 1);
        assert_eq!(p.due(start + Duration::from_millis(50), 1), 0);
        assert_eq!(p.next_at(1), start + Duration::from_millis(100));
        assert_eq!(p.due(start + Duration::from_millis(1050), 1), 10);
        assert_eq!(p.due(start - Duration::from_millis(1), 0), 0);
    }
}
