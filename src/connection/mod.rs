//! One client connection: a reader loop (this task) that decodes frames, runs the handshake and
//! the channels, and encodes deliveries from queues; and a writer task that puts batches of
//! encoded frames on the socket, one write per batch.
//!
//! Layout:
//! - `mod.rs`: the connection's state, its loop (reading, timers, events, closing) and frame
//!   dispatch by channel
//! - `serve.rs`: a socket's life around that loop: accepting, the writer task, tracking, the
//!   cleaning up and lingering after it
//! - `handshake.rs`: protocol header, start/start-ok, SASL, tune/tune-ok, open; the connection
//!   class on channel 0 (close, update-secret)
//! - `writer.rs`: the writer task, and the encoding of what goes out (methods, deliveries,
//!   direct replies, confirms), held back while the socket is full
//! - `blocked.rs`: resource alarms blocking a publishing connection
//! - `channel.rs`: one channel's state (delivery tags, unacked, consumers, confirms, tx)
//! - `methods/`: the channel-level commands, one AMQP class a file (see its `mod.rs`)

mod blocked;
mod channel;
mod handshake;
pub(crate) mod methods;
mod serve;
mod writer;

pub use serve::{serve, serve_tls};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use warren_amqp::protocol::{connection as conn_methods, AMQPClass};
use warren_amqp::{encode, AmqpError, Frame, FrameDecoder, FrameKind, Method, ReplyCode};

use crate::broker::Broker;
use crate::message::MessageRef;
use crate::queue::{ConnEvent, ConnectionFlow, ConnectionId, Delivery, QueueHandle};
use crate::tracking::{ConnectionInfo, ConnectionState};
use crate::vhost::Vhost;
use channel::Channel;
use handshake::ClientCaps;

pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `connection.close-ok` on the wire: a method frame on channel 0 of 4 octets, class 10 method
/// 51, frame end.
const CLOSE_OK_FRAME: [u8; 12] = [1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, 0xCE];
/// How long to wait for `connection.close-ok` after sending `connection.close`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
const READ_CHUNK: usize = 64 * 1024;
/// How often the connection looks at its timers.
const TICK: Duration = Duration::from_secs(1);

/// The timer period for a heartbeat interval: fine enough to send a heartbeat after half of it.
fn tick_period_for(heartbeat: u16) -> Duration {
    if heartbeat > 0 && heartbeat <= 2 {
        Duration::from_millis(250)
    } else {
        TICK
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitStartOk,
    /// We sent connection.secure (a challenge-response mechanism) and wait for secure-ok.
    AwaitSecureOk,
    AwaitTuneOk,
    AwaitOpen,
    Open,
    /// We sent connection.close and wait for close-ok.
    Closing,
    Done,
}

/// An error that ends the connection, and how: a typed value (not a marker in an error's text),
/// so that a close without a close frame cannot be mistaken for an error with a like text.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    /// An error the connection answers with connection.close (its code, text and method).
    #[error(transparent)]
    Close(#[from] AmqpError),
    /// A violation RabbitMQ answers by closing the socket without a close frame (during the
    /// handshake, or an unknown class or method).
    #[error("close without a close frame")]
    SilentClose,
}

/// Decodes a method frame; an unknown class or method drops the connection, as in RabbitMQ.
fn decode(payload: &bytes::Bytes) -> Result<Method, ConnectionError> {
    match warren_amqp::decode_method(payload) {
        Ok(m) => Ok(m),
        Err(warren_amqp::MethodError::Unknown(class_id, method_id)) => {
            tracing::info!(
                class_id,
                method_id,
                "unknown method; closing the connection"
            );
            Err(ConnectionError::SilentClose)
        }
        Err(e) => Err(AmqpError::from(e).into()),
    }
}

pub(crate) struct Connection {
    id: ConnectionId,
    broker: Arc<Broker>,
    peer: SocketAddr,
    /// What the management API sees of this connection (kept up to date as it changes).
    info: Arc<ConnectionInfo>,
    phase: Phase,
    user: String,
    /// The login named in start-ok while a challenge is outstanding.
    pending_login: Option<String>,
    vhost: Option<Arc<Vhost>>,
    decoder: FrameDecoder,
    /// Its consumers per queue, shared by its channels.
    consumed: channel::ConsumedQueues,
    /// After a frame error framing is lost: input is discarded, but searched for the client's
    /// close-ok (a fixed 12 octets); these are the last octets discarded, for one that
    /// straddles two reads.
    framing_lost: Option<Vec<u8>>,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    caps: ClientCaps,
    channels: HashMap<u16, Channel>,
    out: BytesMut,
    events_tx: mpsc::UnboundedSender<ConnEvent>,
    flow: Arc<ConnectionFlow>,
    exclusive_queues: Vec<Arc<QueueHandle>>,
    /// Channels with publisher confirms to send at the next flush.
    confirms_due: Vec<u16>,
    route_buf: Vec<Arc<QueueHandle>>,
    /// During a transaction's commit: the queues that logged its publishes (the commit waits
    /// for their logs).
    tx_logged: Option<Vec<Arc<QueueHandle>>>,
    close_deadline: Option<Instant>,
    /// This connection has published: a resource alarm blocks it.
    published: bool,
    /// Blocked by an alarm: not read from until it clears.
    blocked: bool,
    alarms: tokio::sync::watch::Receiver<crate::alarm::Alarms>,
    /// Message counts not yet added to the broker's totals (once per loop turn).
    counts: crate::stats::Counts,
    /// Publishes to the last exchange published to, not yet added to its stats (on a change of
    /// exchange, every tick and at the end).
    exchange_tally: crate::exchange::stats::ExchangeTally,
    /// connection.close and close-ok were exchanged (either way round).
    close_handshake_done: bool,
    /// The client closed and we answered close-ok: it closes the socket first (as with
    /// RabbitMQ); after our own close and its close-ok, we close at once.
    sent_close_ok: bool,
    /// Deliveries taken from queues while the socket was full, not yet encoded (bounded by the
    /// connection's delivery credit). Taking them keeps the event queue moving, so a channel
    /// that closes meanwhile hands its deliveries back at once.
    pending: std::collections::VecDeque<Delivery>,
    /// Direct replies held back likewise (bounded by the memory alarm: they are messages).
    pending_replies: std::collections::VecDeque<(u16, Arc<str>, MessageRef)>,
    /// Permission answers (access, is a queue, name) at a generation of the users' state.
    access_cache: (u64, HashMap<(crate::auth::Access, bool, String), bool>),
    /// The exchange last published to with write permission, at a generation.
    publish_allowed: Option<PublishAllowed>,
}

/// What a publish to the exchange last published to needs checked, while the users' state is
/// at `generation`: nothing more, or (`topic_restricted`) the user's topic permission there.
pub(super) struct PublishAllowed {
    pub(super) generation: u64,
    pub(super) exchange: Bytes,
    pub(super) topic_restricted: bool,
}

/// Encoded output beyond which the connection stops reading and taking deliveries until the
/// writer catches up.
const OUT_HIGH_WATER: usize = 1 << 20;
/// How much a blocked connection reads ahead (without handling it) to notice a closed socket.
const BLOCKED_READ_CAP: usize = 256 * 1024;
/// How long a closing connection waits for its last writes and for the client to close.
const LINGER: Duration = Duration::from_secs(2);

/// How the connection loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The client closed and got close-ok: it is given a moment to close its side first.
    Closed,
    /// Anything else (the socket ended, failed or went silent, or the broker closed): the
    /// socket is closed at once.
    Lost,
}

impl Connection {
    /// Serves the connection until it ends. The loop never waits on the writer alone: while the
    /// socket is full, timers (heartbeats, consumer timeouts, close deadlines) and the client's
    /// frames (acks above all) are still handled, up to [`OUT_HIGH_WATER`] of pending output.
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        rbuf: &mut BytesMut,
        wtx: mpsc::Sender<Bytes>,
        events: &mut mpsc::UnboundedReceiver<ConnEvent>,
    ) -> Ending {
        let mut shutdown = self.broker.shutdown_signal();
        // Close requests (the management API, a deleted user); one asked for before this
        // subscription is still seen at the first turn.
        let mut close_requests = self.info.close_requests();
        close_requests.mark_changed();
        let mut close_requested = false;
        // Set once the connection is open: the vhost's deletion closes it (320).
        let mut vhost_deleted: Option<tokio::sync::watch::Receiver<bool>> = None;
        let mut vhost_gone_seen = false;
        // Bytes read ahead but not handled yet (while blocked or backed up).
        let mut unhandled = false;
        // One receiver for the whole loop: `changed` marks what it has seen.
        let mut alarm = self.broker.alarms();
        let mut last_read = Instant::now();
        let mut last_write = Instant::now();
        let started = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick_period = TICK;
        // Frames that came in with the protocol header.
        if let Err(e) = self.process_input(rbuf).await {
            self.fail(e);
        }
        loop {
            self.broker.counters.flush(&mut self.counts);
            if self.phase == Phase::Done {
                if self.close_handshake_done {
                    // As in RabbitMQ, what the connection held is given back before close-ok
                    // goes out: a client that reconnects at once finds its auto-delete queues
                    // already gone and its unacked messages already back.
                    self.release_all().await;
                    self.requeue_undelivered(events).await;
                }
                // The last words (close-ok, or close before a silent drop) still go out.
                if !self.out.is_empty() {
                    let last = self.out.split().freeze();
                    let _ = tokio::time::timeout(LINGER, wtx.send(last)).await;
                }
                return if self.sent_close_ok {
                    Ending::Closed
                } else {
                    Ending::Lost
                };
            }
            let period = tick_period_for(self.heartbeat);
            if period != tick_period {
                tick_period = period;
                tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            if vhost_deleted.is_none() {
                vhost_deleted = self.vhost.as_ref().map(|v| v.deleted_signal());
            }
            let writing = !self.out.is_empty();
            let room = self.out.len() < OUT_HIGH_WATER;
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                permit = wtx.reserve(), if writing => match permit {
                    Ok(permit) => {
                        permit.send(self.out.split().freeze());
                        last_write = Instant::now();
                    }
                    Err(_) => return Ending::Lost,
                },
                // A blocked connection, or one whose output backs up, is not served, but a little
                // is still read ahead (not handled): a client that closes its socket is noticed,
                // and one that still sends (heartbeats) is seen to be alive.
                read = rd.read_buf(rbuf), if (room && !self.blocked) || rbuf.len() < BLOCKED_READ_CAP => match read {
                    Ok(0) | Err(_) => return Ending::Lost,
                    Ok(n) if self.blocked || !room => {
                        self.info.received(n);
                        last_read = Instant::now();
                        unhandled = true;
                    }
                    Ok(n) => {
                        self.info.received(n);
                        last_read = Instant::now();
                        if let Err(e) = self.process_input(rbuf).await {
                            self.fail(e);
                        }
                        if self.published && !self.blocked {
                            self.check_memory();
                        }
                    }
                },
                Some(event) = events.recv() => self.on_events(event, events).await,
                changed = alarm.changed() => {
                    if changed.is_ok() {
                        self.update_blocked();
                        if !self.blocked && !rbuf.is_empty() {
                            // What arrived while blocked is handled below.
                            unhandled = true;
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.flush_exchange_tally();
                    if self.phase == Phase::Open {
                        self.check_consumer_timeouts(now).await;
                    }
                    if self.phase != Phase::Open && self.phase != Phase::Closing && now - started > HANDSHAKE_TIMEOUT {
                        tracing::info!(peer = %self.peer, "handshake timeout");
                        return Ending::Lost;
                    }
                    if self.close_deadline.is_some_and(|d| now > d) {
                        return Ending::Lost;
                    }
                    if self.heartbeat > 0 {
                        let hb = Duration::from_secs(u64::from(self.heartbeat));
                        // Not read from (an alarm blocks it, or it sent more than we can answer
                        // while its output backs up): its heartbeats go unseen. A frozen client
                        // sends nothing, so it never gets here.
                        if self.blocked || rbuf.len() >= BLOCKED_READ_CAP {
                            last_read = now;
                        }
                        if now - last_read > hb * 2 {
                            tracing::info!(peer = %self.peer, "missed heartbeats from client, timeout: {}s", self.heartbeat);
                            return Ending::Lost;
                        }
                        // As RabbitMQ: a heartbeat when nothing was sent for half the interval.
                        if now - last_write >= hb / 2 && self.out.is_empty() {
                            encode::write_heartbeat(&mut self.out);
                        }
                    }
                }
                _ = async {
                    if let Some(rx) = vhost_deleted.as_mut() {
                        let _ = rx.wait_for(|deleted| *deleted).await;
                    }
                }, if vhost_deleted.is_some() && !vhost_gone_seen => {
                    vhost_gone_seen = true;
                    if self.phase != Phase::Closing {
                        let name = self.vhost.as_ref().map(|v| v.name.clone()).unwrap_or_default();
                        self.fail(AmqpError::new(ReplyCode::ConnectionForced, format!("vhost '{name}' is deleted")));
                    }
                }
                changed = close_requests.changed(), if !close_requested => {
                    let reason = close_requests.borrow_and_update().clone();
                    match (changed, reason) {
                        (Ok(()), Some(reason)) => {
                            close_requested = true;
                            // A connection already closing just goes on closing.
                            self.fail(AmqpError::new(ReplyCode::ConnectionForced, &*reason));
                        }
                        (Ok(()), None) => {}
                        // (The sender lives in `self.info`: it cannot be gone.)
                        (Err(_), _) => close_requested = true,
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        if self.phase == Phase::Closing {
                            return Ending::Lost;
                        }
                        self.fail(AmqpError::new(ReplyCode::ConnectionForced, "broker forced connection closure with reason 'shutdown'"));
                    }
                }
            }
            if unhandled && !self.blocked && self.out.len() < OUT_HIGH_WATER {
                // What was read ahead while the connection could not be served.
                unhandled = false;
                if let Err(e) = self.process_input(rbuf).await {
                    self.fail(e);
                }
            }
            // (Room as it is now: the writer may just have taken the output.)
            if self.out.len() < OUT_HIGH_WATER
                && !(self.pending.is_empty() && self.pending_replies.is_empty())
            {
                self.encode_pending();
            }
            self.flush_confirms();
        }
    }

    /// Decodes and handles every complete frame in the read buffer.
    async fn process_input(&mut self, rbuf: &mut BytesMut) -> Result<(), ConnectionError> {
        loop {
            if self.phase == Phase::Done {
                return Ok(());
            }
            if let Some(tail) = self.framing_lost.as_mut() {
                tail.extend_from_slice(rbuf);
                rbuf.clear();
                if tail
                    .windows(CLOSE_OK_FRAME.len())
                    .any(|w| w == CLOSE_OK_FRAME)
                {
                    self.phase = Phase::Done;
                    self.close_handshake_done = true;
                } else {
                    let keep = tail.len().saturating_sub(CLOSE_OK_FRAME.len() - 1);
                    tail.drain(..keep);
                }
                return Ok(());
            }
            let frame = match self.decoder.decode(rbuf) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => {
                    // The socket stays open for the close (as RabbitMQ keeps it after a 501), so
                    // the client reads connection.close rather than a broken pipe; what it
                    // sends is discarded until its close-ok (looked for in what comes), its own
                    // close of the socket, or the close's timeout.
                    self.framing_lost = Some(Vec::new());
                    if self.phase == Phase::Closing {
                        continue;
                    }
                    if matches!(
                        self.phase,
                        Phase::AwaitStartOk | Phase::AwaitSecureOk | Phase::AwaitTuneOk
                    ) {
                        // Before tune-ok RabbitMQ drops a client that breaks framing (a frame
                        // over 4096 octets, say) without a word.
                        tracing::info!(peer = %self.peer, "bad frame during the handshake: {e}");
                        return Err(ConnectionError::SilentClose);
                    }
                    return Err(AmqpError::frame_error(e.to_string()).into());
                }
            };
            self.handle_frame(frame).await?;
        }
    }

    /// A connection error: send connection.close and wait (a little) for close-ok.
    fn fail(&mut self, e: impl Into<ConnectionError>) {
        if matches!(self.phase, Phase::Closing | Phase::Done) {
            return;
        }
        let e = match e.into() {
            ConnectionError::Close(e) => e,
            ConnectionError::SilentClose => {
                self.phase = Phase::Done;
                return;
            }
        };
        tracing::info!(peer = %self.peer, "closing connection: {}", e.reply_text());
        self.send_method(
            0,
            AMQPClass::Connection(conn_methods::AMQPMethod::Close(conn_methods::Close {
                reply_code: e.code.code(),
                reply_text: e.reply_text().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
        self.phase = Phase::Closing;
        self.info.set_state(ConnectionState::Closing);
        self.close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
    }

    async fn handle_frame(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        if self.phase == Phase::Closing {
            // Only close-ok (or a crossing close) matters now.
            if frame.channel == 0 && frame.kind == FrameKind::Method {
                if let Ok(Method::Other(AMQPClass::Connection(m))) =
                    warren_amqp::decode_method(&frame.payload)
                {
                    match m {
                        conn_methods::AMQPMethod::CloseOk(_) => {
                            self.phase = Phase::Done;
                            self.close_handshake_done = true;
                        }
                        conn_methods::AMQPMethod::Close(_) => {
                            self.close_handshake_done = true;
                            self.sent_close_ok = true;
                            self.send_method(
                                0,
                                AMQPClass::Connection(conn_methods::AMQPMethod::CloseOk(
                                    conn_methods::CloseOk {},
                                )),
                            );
                            self.phase = Phase::Done;
                        }
                        _ => {}
                    }
                }
            }
            return Ok(());
        }
        match frame.kind {
            FrameKind::Heartbeat => {
                if !frame.payload.is_empty() {
                    return Err(AmqpError::frame_error(format!(
                        "type 8, all octets = {:?}: unknown_frame",
                        &frame.payload[..frame.payload.len().min(16)]
                    ))
                    .into());
                }
                if frame.channel != 0 {
                    return Err(AmqpError::unexpected_frame("type 8, all octets = <<>>").into());
                }
                Ok(())
            }
            _ if frame.channel == 0 => {
                if frame.kind != FrameKind::Method {
                    return Err(AmqpError::unexpected_frame("content frame on channel 0").into());
                }
                let method = decode(&frame.payload)?;
                self.connection_method(method).await
            }
            _ => {
                if self.phase != Phase::Open {
                    return Err(AmqpError::unexpected_frame(format!(
                        "frame on channel {} before connection.open",
                        frame.channel
                    ))
                    .into());
                }
                self.channel_frame(frame).await
            }
        }
    }

    /// Gives back everything the connection held: consumers, unacked deliveries, exclusive queues.
    async fn release_all(&mut self) {
        let channels: Vec<u16> = self.channels.keys().copied().collect();
        for ch in channels {
            if let Some(mut c) = self.remove_channel(ch) {
                if let Some((_, key)) = c.reply_consumer.take() {
                    self.broker.replies.unregister(&key);
                }
                c.release().await;
            }
        }
        for q in std::mem::take(&mut self.exclusive_queues) {
            if !q.is_deleted() {
                q.delete_unconditionally().await;
            }
        }
    }

    /// Opens channel `ch` (or reopens it, replacing what was there) and shows it.
    fn insert_channel(&mut self, ch: u16) {
        let mut channel = Channel::default();
        channel.consumed = self.consumed.clone();
        self.info.channel_opened(ch, channel.info.clone());
        self.channels.insert(ch, channel);
    }

    /// Takes channel `ch` away (closed), and from the listings.
    fn remove_channel(&mut self, ch: u16) -> Option<Channel> {
        let channel = self.channels.remove(&ch)?;
        self.info.channel_closed(ch);
        Some(channel)
    }
}
