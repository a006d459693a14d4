//! One client connection: a reader loop (this task) that decodes frames, runs the handshake and
//! the channels, and encodes deliveries from queues; and a writer task that puts batches of
//! encoded frames on the socket, one write per batch.

mod channel;
mod methods;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use warren_amqp::protocol::{connection as conn_methods, AMQPClass};
use warren_amqp::types::{AMQPValue, FieldTable, LongString};
use warren_amqp::{
    encode, AmqpError, Frame, FrameDecoder, FrameKind, Method, ReplyCode, PROTOCOL_HEADER,
};

use warren_storage::CommitListener;

use crate::auth::{AuthError, StartOutcome};
use crate::broker::Broker;
use crate::message::MessageRef;
use crate::queue::{ConnEvent, ConnectionFlow, ConnectionId, Delivery, QueueCommand, QueueHandle};
use crate::vhost::Vhost;
use channel::Channel;

/// Relays storage commits of a connection's confirmed publishes back to it as events. The token
/// carries the channel in its top 16 bits and the publish sequence number below.
struct ConfirmRelay(mpsc::UnboundedSender<ConnEvent>);

impl CommitListener for ConfirmRelay {
    fn committed(&self, token: u64, ok: bool) {
        let _ = self.0.send(ConnEvent::Settled {
            channel: (token >> 48) as u16,
            seq: token & ((1 << 48) - 1),
            ok,
        });
    }
}

fn confirm_token(channel: u16, seq: u64) -> u64 {
    (u64::from(channel) << 48) | (seq & ((1 << 48) - 1))
}

pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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
/// Before tune-ok, frames are limited to the server's maximum.
const FRAME_MIN_SIZE: u32 = 4096;

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

const SILENT_CLOSE: &str = "close without a close frame";

/// A violation RabbitMQ answers by closing the socket without a close frame (during the
/// handshake, or an unknown class or method).
fn handshake_violation() -> AmqpError {
    AmqpError::internal_error(SILENT_CLOSE)
}

/// Decodes a method frame; an unknown class or method drops the connection, as in RabbitMQ.
fn decode(payload: &bytes::Bytes) -> Result<Method, AmqpError> {
    match warren_amqp::decode_method(payload) {
        Ok(m) => Ok(m),
        Err(warren_amqp::MethodError::Unknown(class_id, method_id)) => {
            tracing::info!(
                class_id,
                method_id,
                "unknown method; closing the connection"
            );
            Err(handshake_violation())
        }
        Err(e) => Err(e.into()),
    }
}

/// RabbitMQ's rule for a value the client answers in tune-ok: at least `min` unless 0, and when
/// the server set a limit (not 0), neither 0 ("no limit") nor above it.
fn negotiated_ok(server: u32, client: u32, min: u32) -> bool {
    let below_min = client != 0 && client < min;
    let over_limit = server != 0 && (client == 0 || client > server);
    !below_min && !over_limit
}

/// What the client said it supports in `client_properties.capabilities`.
#[derive(Debug, Default, Clone, Copy)]
struct ClientCaps {
    consumer_cancel_notify: bool,
    authentication_failure_close: bool,
    connection_blocked: bool,
}

pub(crate) struct Connection {
    id: ConnectionId,
    broker: Arc<Broker>,
    peer: SocketAddr,
    phase: Phase,
    user: String,
    /// The login named in start-ok while a challenge is outstanding.
    pending_login: Option<String>,
    vhost: Option<Arc<Vhost>>,
    decoder: FrameDecoder,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    caps: ClientCaps,
    channels: HashMap<u16, Channel>,
    out: BytesMut,
    events_tx: mpsc::UnboundedSender<ConnEvent>,
    confirm_relay: Arc<dyn CommitListener>,
    flow: Arc<ConnectionFlow>,
    exclusive_queues: Vec<Arc<QueueHandle>>,
    /// Channels with publisher confirms to send at the next flush.
    confirms_due: Vec<u16>,
    route_buf: Vec<Arc<QueueHandle>>,
    close_deadline: Option<Instant>,
    /// This connection has published: a resource alarm blocks it.
    published: bool,
    /// Blocked by an alarm: not read from until it clears.
    blocked: bool,
    alarms: tokio::sync::watch::Receiver<crate::alarm::Alarms>,
    /// Message counts not yet added to the broker's totals (once per loop turn).
    counts: crate::stats::Counts,
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
    publish_allowed: Option<(u64, Bytes)>,
}

/// Serves one accepted socket until it closes.
pub async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    serve_split(broker, rd, wr, peer).await;
}

/// Serves one connection over TLS (the handshake done) until it closes.
pub async fn serve_tls(
    broker: Arc<Broker>,
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
) {
    let _ = stream.get_ref().0.set_nodelay(true);
    let (rd, wr) = tokio::io::split(stream);
    serve_split(broker, rd, wr, peer).await;
}

async fn serve_split<R, W>(broker: Arc<Broker>, mut rd: R, mut wr: W, peer: SocketAddr)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let _guard = broker.connection_opened();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let header = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        while rbuf.len() < PROTOCOL_HEADER.len() {
            match rd.read_buf(&mut rbuf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        true
    })
    .await;
    if !matches!(header, Ok(true)) {
        return;
    }
    // RabbitMQ also takes the older "AMQP 1 1 0 9" header as 0-9-1.
    if rbuf[..8] != PROTOCOL_HEADER[..] && rbuf[..8] != b"AMQP\x01\x01\x00\x09"[..] {
        // RabbitMQ answers an unsupported protocol header with the one it speaks, then closes.
        tracing::debug!(%peer, header = ?&rbuf[..8], "bad protocol header");
        let _ = wr.write_all(PROTOCOL_HEADER).await;
        let _ = wr.shutdown().await;
        return;
    }
    let _ = rbuf.split_to(8);

    let (wtx, wrx) = mpsc::channel::<Bytes>(WRITER_QUEUE);
    let mut writer = tokio::spawn(write_loop(wr, wrx));
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut conn = Connection {
        id: broker.next_id(),
        broker: broker.clone(),
        peer,
        phase: Phase::AwaitStartOk,
        user: String::new(),
        pending_login: None,
        vhost: None,
        // Until tune-ok, frames are held to the protocol's minimum (as in RabbitMQ): a client
        // that has not logged in cannot make the broker buffer large frames.
        decoder: FrameDecoder::new(FRAME_MIN_SIZE),
        frame_max: broker.config.frame_max,
        channel_max: broker.config.channel_max,
        heartbeat: 0,
        caps: ClientCaps::default(),
        channels: HashMap::new(),
        out: BytesMut::with_capacity(READ_CHUNK),
        confirm_relay: Arc::new(ConfirmRelay(events_tx.clone())),
        events_tx,
        flow: Arc::new(ConnectionFlow::default()),
        exclusive_queues: Vec::new(),
        confirms_due: Vec::new(),
        route_buf: Vec::new(),
        close_deadline: None,
        published: false,
        blocked: false,
        alarms: broker.alarms(),
        counts: crate::stats::Counts::default(),
        close_handshake_done: false,
        sent_close_ok: false,
        pending: std::collections::VecDeque::new(),
        pending_replies: std::collections::VecDeque::new(),
        access_cache: (0, HashMap::new()),
        publish_allowed: None,
    };
    conn.send_start();
    let ending = conn.run(&mut rd, &mut rbuf, wtx, &mut events_rx).await;
    // Everything the connection held goes back to its queues before anything else can fail:
    // consumers, unacked deliveries, and deliveries queues sent that were never encoded.
    conn.release_all().await;
    conn.requeue_undelivered(&mut events_rx).await;
    broker.counters.flush(&mut conn.counts);
    // Let the writer flush what is left (close-ok above all). After a clean close, read and
    // discard until the client closes its side, so it never sees a reset before close-ok; a
    // writer stuck on a client that does not read is abandoned.
    let lingering = async {
        if ending == Ending::Closed {
            loop {
                rbuf.clear();
                match rd.read_buf(&mut rbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    };
    let flushed = tokio::time::timeout(LINGER, async {
        let wr = (&mut writer).await.ok().flatten();
        lingering.await;
        wr
    })
    .await;
    match flushed {
        // The client has closed (or had its time): now our side closes too.
        Ok(Some(mut wr)) => {
            let _ = tokio::time::timeout(LINGER, wr.shutdown()).await;
        }
        Ok(None) => {}
        Err(_) => writer.abort(),
    }
    tracing::debug!(%peer, id = conn.id, "connection closed");
}

/// Frames encoded for the socket may wait in this many batches before the connection stops
/// taking more work (deliveries, client frames) for it.
const WRITER_QUEUE: usize = 64;
/// Encoded output beyond which the connection stops reading and taking deliveries until the
/// writer catches up.
const OUT_HIGH_WATER: usize = 1 << 20;
/// A write that makes no progress for this long ends the connection (RabbitMQ's `send_timeout`).
const SEND_TIMEOUT: Duration = Duration::from_secs(15);
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

/// Writes what the connection sends until it stops sending; gives the socket's write half back
/// (still open: RabbitMQ closes only once the client has) unless writing failed.
async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Bytes>) -> Option<W> {
    let mut batch = Vec::with_capacity(16);
    while rx.recv_many(&mut batch, 16).await > 0 {
        for chunk in batch.drain(..) {
            if !write_with_progress(&mut wr, &chunk).await {
                return None;
            }
        }
        // A no-op on TCP; over TLS it pushes out records the TLS layer may still hold.
        match tokio::time::timeout(SEND_TIMEOUT, wr.flush()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
    Some(wr)
}

/// Writes all of `chunk`, giving up when a write makes no progress within [`SEND_TIMEOUT`] (a
/// client that stopped reading) or fails.
async fn write_with_progress<W: AsyncWrite + Unpin>(wr: &mut W, mut chunk: &[u8]) -> bool {
    while !chunk.is_empty() {
        match tokio::time::timeout(SEND_TIMEOUT, wr.write(chunk)).await {
            Ok(Ok(n)) if n > 0 => chunk = &chunk[n..],
            Ok(_) => return false,
            Err(_) => {
                tracing::info!(
                    "closing a connection whose client has not read for {SEND_TIMEOUT:?}"
                );
                return false;
            }
        }
    }
    true
}

impl Connection {
    fn send_method(&mut self, channel: u16, class: AMQPClass) {
        if let Err(e) = encode::write_method(&mut self.out, channel, &class) {
            tracing::error!("cannot encode {class:?}: {e}");
        }
    }

    fn server_properties() -> FieldTable {
        let mut caps = FieldTable::default();
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
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        let mut props = FieldTable::default();
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        props.insert("product".into(), text("Warren"));
        props.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
        props.insert("platform".into(), text("Rust"));
        props.insert("cluster_name".into(), text("warren"));
        props.insert("copyright".into(), text("Warren contributors"));
        props.insert(
            "information".into(),
            text("Licensed under the Apache License 2.0"),
        );
        props
    }

    fn send_start(&mut self) {
        let mechanisms = self
            .broker
            .config
            .auth_mechanisms
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(" ");
        self.send_method(
            0,
            AMQPClass::Connection(conn_methods::AMQPMethod::Start(conn_methods::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: Self::server_properties(),
                mechanisms: mechanisms.into(),
                locales: "en_US".into(),
            })),
        );
    }

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
                    Ok(_) if self.blocked || !room => {
                        last_read = Instant::now();
                        unhandled = true;
                    }
                    Ok(_) => {
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

    /// Encodes deliveries held back while the socket was full, as far as there is room.
    fn encode_pending(&mut self) {
        let mut encoded = 0;
        while self.out.len() < OUT_HIGH_WATER {
            let Some(d) = self.pending.pop_front() else {
                break;
            };
            encoded += 1;
            self.deliver(d);
        }
        if encoded > 0 {
            self.flow.drained(encoded);
        }
        while self.out.len() < OUT_HIGH_WATER {
            let Some((channel, consumer_tag, message)) = self.pending_replies.pop_front() else {
                break;
            };
            self.direct_reply(channel, &consumer_tag, &message);
        }
    }

    /// Held-back deliveries whose consumer or channel has gone go back to their queues now.
    fn requeue_dead_pending(&mut self) {
        let mut returned = 0;
        let channels = &self.channels;
        self.pending.retain(|d| {
            let live = channels
                .get(&d.channel)
                .is_some_and(|c| c.accepts_delivery(d));
            if !live {
                returned += 1;
                if !d.no_ack {
                    d.queue.send_now(QueueCommand::Requeue(vec![d.id]));
                }
            }
            live
        });
        if returned > 0 {
            self.flow.drained(returned);
        }
    }

    /// Deliveries queues sent that the connection never encoded go back to their queues (the
    /// receiver is closed first, so a queue that tries to send more keeps the message itself).
    async fn requeue_undelivered(&mut self, events: &mut mpsc::UnboundedReceiver<ConnEvent>) {
        events.close();
        let mut back: Vec<(Arc<QueueHandle>, Vec<u64>)> = Vec::new();
        let mut undelivered: Vec<Delivery> = self.pending.drain(..).collect();
        while let Ok(event) = events.try_recv() {
            if let ConnEvent::Deliver(d) = event {
                undelivered.push(d);
            }
        }
        for d in undelivered {
            if d.no_ack {
                continue;
            }
            match back.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &d.queue)) {
                Some((_, ids)) => ids.push(d.id),
                None => back.push((d.queue.clone(), vec![d.id])),
            }
        }
        for (queue, ids) in back {
            let _ = queue.send(QueueCommand::Requeue(ids)).await;
        }
    }

    /// Decodes and handles every complete frame in the read buffer.
    async fn process_input(&mut self, rbuf: &mut BytesMut) -> Result<(), AmqpError> {
        loop {
            if self.phase == Phase::Done {
                return Ok(());
            }
            let frame = match self.decoder.decode(rbuf) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => {
                    if self.phase == Phase::Closing {
                        self.phase = Phase::Done;
                        return Ok(());
                    }
                    if matches!(
                        self.phase,
                        Phase::AwaitStartOk | Phase::AwaitSecureOk | Phase::AwaitTuneOk
                    ) {
                        // Before tune-ok RabbitMQ drops a client that breaks framing (a frame
                        // over 4096 octets, say) without a word.
                        tracing::info!(peer = %self.peer, "bad frame during the handshake: {e}");
                        return Err(handshake_violation());
                    }
                    return Err(AmqpError::frame_error(e.to_string()));
                }
            };
            self.handle_frame(frame).await?;
        }
    }

    /// A connection error: send connection.close and wait (a little) for close-ok.
    fn fail(&mut self, e: AmqpError) {
        if matches!(self.phase, Phase::Closing | Phase::Done) {
            return;
        }
        if e.code == ReplyCode::InternalError && e.text == SILENT_CLOSE {
            self.phase = Phase::Done;
            return;
        }
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
        self.close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
    }

    async fn handle_frame(&mut self, frame: Frame) -> Result<(), AmqpError> {
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
                    )));
                }
                if frame.channel != 0 {
                    return Err(AmqpError::unexpected_frame("type 8, all octets = <<>>"));
                }
                Ok(())
            }
            _ if frame.channel == 0 => {
                if frame.kind != FrameKind::Method {
                    return Err(AmqpError::unexpected_frame("content frame on channel 0"));
                }
                let method = decode(&frame.payload)?;
                self.connection_method(method).await
            }
            _ => {
                if self.phase != Phase::Open {
                    return Err(AmqpError::unexpected_frame(format!(
                        "frame on channel {} before connection.open",
                        frame.channel
                    )));
                }
                self.channel_frame(frame).await
            }
        }
    }

    /// Methods on channel 0: the handshake and connection-level commands.
    async fn connection_method(&mut self, method: Method) -> Result<(), AmqpError> {
        let (class_id, method_id) = method.ids();
        let Method::Other(AMQPClass::Connection(m)) = method else {
            if self.phase != Phase::Open {
                return Err(handshake_violation());
            }
            return Err(
                AmqpError::channel_error("unexpected method in connection state running")
                    .on_method(class_id, method_id),
            );
        };
        use conn_methods::AMQPMethod as M;
        match (self.phase, m) {
            (Phase::AwaitStartOk, M::StartOk(ok)) => self.start_ok(ok),
            (Phase::AwaitSecureOk, M::SecureOk(ok)) => {
                let login = self.pending_login.take().unwrap_or_default();
                let outcome = self.broker.users.answer_challenge(
                    &login,
                    ok.response.as_bytes(),
                    self.peer.ip(),
                );
                self.logged_in(outcome.map(StartOutcome::LoggedIn))
            }
            (Phase::AwaitTuneOk, M::TuneOk(ok)) => {
                let c = &self.broker.config;
                // RabbitMQ drops the connection (no close frame) when the client asks for more
                // than it offered, for "no limit" when it offered one, or for a frame_max below
                // the 4096 minimum.
                if !negotiated_ok(c.channel_max.into(), ok.channel_max.into(), 1)
                    || !negotiated_ok(c.frame_max, ok.frame_max, FRAME_MIN_SIZE)
                {
                    tracing::info!(peer = %self.peer, frame_max = ok.frame_max, channel_max = ok.channel_max, "refusing tune-ok");
                    return Err(handshake_violation());
                }
                self.channel_max = match ok.channel_max {
                    0 => u16::MAX,
                    n => n,
                };
                self.frame_max = ok.frame_max;
                self.decoder.set_frame_max(self.frame_max);
                self.heartbeat = ok.heartbeat;
                self.phase = Phase::AwaitOpen;
                Ok(())
            }
            (Phase::AwaitOpen, M::Open(open)) => {
                let name = open.virtual_host.as_str();
                let Some(vhost) = self.broker.vhost(name) else {
                    return Err(
                        AmqpError::not_allowed(format!("vhost {name} not found")).on_method(10, 40)
                    );
                };
                if !self.broker.users.may_use_vhost(&self.user, name) {
                    return Err(AmqpError::not_allowed(format!(
                        "access to vhost '{name}' refused for user '{}'",
                        self.user
                    ))
                    .on_method(10, 40));
                }
                self.vhost = Some(vhost);
                self.phase = Phase::Open;
                self.send_method(0, AMQPClass::Connection(M::OpenOk(conn_methods::OpenOk {})));
                Ok(())
            }
            (_, M::Close(_)) => {
                self.close_handshake_done = true;
                self.sent_close_ok = true;
                self.send_method(
                    0,
                    AMQPClass::Connection(M::CloseOk(conn_methods::CloseOk {})),
                );
                self.phase = Phase::Done;
                Ok(())
            }
            (Phase::Open, M::UpdateSecret(_)) => {
                self.send_method(
                    0,
                    AMQPClass::Connection(M::UpdateSecretOk(conn_methods::UpdateSecretOk {})),
                );
                Ok(())
            }
            (Phase::Open, m) => {
                let method_id = AMQPClass::Connection(m).get_amqp_method_id();
                Err(
                    AmqpError::channel_error("unexpected method in connection state running")
                        .on_method(10, method_id),
                )
            }
            _ => Err(handshake_violation()),
        }
    }

    fn start_ok(&mut self, ok: conn_methods::StartOk) -> Result<(), AmqpError> {
        if let Some(AMQPValue::FieldTable(caps)) = ok.client_properties.inner().get("capabilities")
        {
            let flag = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
            self.caps.consumer_cancel_notify = flag("consumer_cancel_notify");
            self.caps.authentication_failure_close = flag("authentication_failure_close");
            self.caps.connection_blocked = flag("connection.blocked");
        }
        let outcome = self.broker.users.start(
            ok.mechanism.as_str(),
            &self.broker.config.auth_mechanisms,
            ok.response.as_bytes(),
            self.peer.ip(),
        );
        self.logged_in(outcome)
    }

    /// Goes on from start-ok or secure-ok: tune once a user is known, a challenge if the
    /// mechanism asks one, or the refusal RabbitMQ gives.
    fn logged_in(&mut self, outcome: Result<StartOutcome, AuthError>) -> Result<(), AmqpError> {
        match outcome {
            Ok(StartOutcome::Challenge { login, challenge }) => {
                self.pending_login = Some(login);
                self.send_method(
                    0,
                    AMQPClass::Connection(conn_methods::AMQPMethod::Secure(conn_methods::Secure {
                        challenge: challenge.into(),
                    })),
                );
                self.phase = Phase::AwaitSecureOk;
                Ok(())
            }
            Ok(StartOutcome::LoggedIn(user)) => {
                self.user = user;
                let c = &self.broker.config;
                let (channel_max, frame_max, heartbeat) = (c.channel_max, c.frame_max, c.heartbeat);
                self.send_method(
                    0,
                    AMQPClass::Connection(conn_methods::AMQPMethod::Tune(conn_methods::Tune {
                        channel_max,
                        frame_max,
                        heartbeat,
                    })),
                );
                self.phase = Phase::AwaitTuneOk;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, "authentication failed: {e}");
                let refusal = matches!(e, AuthError::Refused(_) | AuthError::LoopbackOnly(_));
                if refusal && self.caps.authentication_failure_close {
                    Err(AmqpError::access_refused(e.to_string()))
                } else {
                    // As RabbitMQ: without the capability (or for a mechanism it does not offer,
                    // or a response it cannot read), the socket is just closed.
                    self.phase = Phase::Done;
                    Ok(())
                }
            }
        }
    }

    /// Handles deliveries and notices from queues, a batch at a time.
    async fn on_events(
        &mut self,
        first: ConnEvent,
        events: &mut mpsc::UnboundedReceiver<ConnEvent>,
    ) {
        let mut delivered = 0u32;
        let mut next = Some(first);
        let mut budget = 512;
        while let Some(event) = next {
            match event {
                ConnEvent::Deliver(d) => {
                    if self.out.len() >= OUT_HIGH_WATER || !self.pending.is_empty() {
                        self.pending.push_back(d);
                    } else {
                        delivered += 1;
                        self.deliver(d);
                    }
                }
                ConnEvent::ConsumerCancelled {
                    channel,
                    consumer_id,
                } => self.consumer_cancelled(channel, consumer_id),
                ConnEvent::Settled { channel, seq, ok } => self.publish_settled(channel, seq, ok),
                ConnEvent::DirectReply {
                    channel,
                    consumer_tag,
                    message,
                } => {
                    if self.out.len() >= OUT_HIGH_WATER || !self.pending_replies.is_empty() {
                        self.pending_replies
                            .push_back((channel, consumer_tag, message));
                    } else {
                        self.direct_reply(channel, &consumer_tag, &message);
                    }
                }
            }
            budget -= 1;
            next = if budget > 0 && self.out.len() < READ_CHUNK * 4 {
                events.try_recv().ok()
            } else {
                None
            };
        }
        if delivered > 0 {
            self.flow.drained(delivered);
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let live = self
            .channels
            .get(&d.channel)
            .is_some_and(|c| c.accepts_delivery(&d));
        if !live {
            // Sent before its consumer or channel went away: back to the queue.
            if !d.no_ack {
                d.queue.send_now(QueueCommand::Requeue(vec![d.id]));
            }
            return;
        }
        let Some(c) = self.channels.get_mut(&d.channel) else {
            return;
        };
        let tag = c.record_delivery(&d);
        self.counts.delivered += 1;
        let m = &d.message;
        encode::write_deliver(
            &mut self.out,
            d.channel,
            d.consumer_tag.as_bytes(),
            tag,
            d.redelivered,
            m.exchange(),
            m.routing_key(),
        );
        encode::write_content(
            &mut self.out,
            d.channel,
            m.properties(),
            m.body(),
            self.frame_max,
        );
    }

    fn direct_reply(&mut self, ch: u16, consumer_tag: &str, m: &MessageRef) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        if c.closing
            || c.reply_consumer
                .as_ref()
                .is_none_or(|(tag, _)| &**tag != consumer_tag)
        {
            return;
        }
        let tag = c.untracked_tag();
        encode::write_deliver(
            &mut self.out,
            ch,
            consumer_tag.as_bytes(),
            tag,
            false,
            m.exchange(),
            m.routing_key(),
        );
        encode::write_content(&mut self.out, ch, m.properties(), m.body(), self.frame_max);
    }

    fn consumer_cancelled(&mut self, channel: u16, consumer_id: u64) {
        let Some(c) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some(tag) = c.remove_consumer_by_id(consumer_id) else {
            return;
        };
        if self.caps.consumer_cancel_notify && !c.closing {
            self.send_method(
                channel,
                AMQPClass::Basic(warren_amqp::protocol::basic::AMQPMethod::Cancel(
                    warren_amqp::protocol::basic::Cancel {
                        consumer_tag: tag.as_ref().into(),
                        nowait: true,
                    },
                )),
            );
        }
    }

    fn publish_settled(&mut self, ch: u16, seq: u64, ok: bool) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        c.publish_settled(seq, ok);
        if !self.confirms_due.contains(&ch) {
            self.confirms_due.push(ch);
        }
    }

    /// A publisher that just took the broker past its memory watermark is blocked at once,
    /// not at the watcher's next look (a fast client can send a lot in half a second).
    fn check_memory(&mut self) {
        let Some(limit) = self.broker.memory_limit else {
            return;
        };
        if crate::message::held_bytes() >= limit && self.broker.set_memory_alarm(true) {
            tracing::warn!(
                limit_bytes = limit,
                "memory alarm set: publishers are blocked"
            );
        }
        self.update_blocked();
    }

    /// Blocks a publishing connection while an alarm is on (telling a client that understands
    /// `connection.blocked`), and unblocks it when the alarm clears.
    fn update_blocked(&mut self) {
        let alarms = *self.alarms.borrow();
        let block = alarms.any() && self.published && self.phase == Phase::Open;
        if block == self.blocked {
            return;
        }
        self.blocked = block;
        if self.caps.connection_blocked {
            let method = if block {
                conn_methods::AMQPMethod::Blocked(conn_methods::Blocked {
                    reason: alarms.reason().into(),
                })
            } else {
                conn_methods::AMQPMethod::Unblocked(conn_methods::Unblocked {})
            };
            self.send_method(0, AMQPClass::Connection(method));
        }
    }

    /// Sends the publisher confirms that are due, one `multiple` ack per channel.
    fn flush_confirms(&mut self) {
        for ch in std::mem::take(&mut self.confirms_due) {
            if let Some(c) = self.channels.get_mut(&ch) {
                let mut through = c.confirmed_through();
                for (tag, multiple, ack) in c.take_due_confirms() {
                    encode::write_confirm(&mut self.out, ch, tag, multiple, ack);
                    if ack {
                        self.counts.confirmed += if multiple { tag - through } else { 1 };
                    }
                    through = tag;
                }
            }
        }
    }

    /// Gives back everything the connection held: consumers, unacked deliveries, exclusive queues.
    async fn release_all(&mut self) {
        let channels: Vec<u16> = self.channels.keys().copied().collect();
        for ch in channels {
            if let Some(mut c) = self.channels.remove(&ch) {
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
}
