//! A connection's life around its loop: accepting the socket (plain or TLS), the protocol
//! header, starting the writer task and the tracking the management API sees, and after the
//! loop ends, giving back what the connection held and letting the last words reach the client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use warren_amqp::FrameDecoder;

use super::handshake::{self, ClientCaps, FRAME_MIN_SIZE};
use super::writer::{write_loop, WRITER_QUEUE};
use super::{Connection, Ending, Phase, LINGER, READ_CHUNK};
use crate::broker::Broker;
use crate::queue::ConnectionFlow;
use crate::tracking::ConnectionInfo;

/// Serves one accepted socket until it closes.
pub async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(broker.config.amqp_listen);
    let (rd, wr) = stream.into_split();
    serve_split(broker, rd, wr, peer, local, false).await;
}

/// Serves one connection over TLS (the handshake done) until it closes.
pub async fn serve_tls(
    broker: Arc<Broker>,
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
) {
    let _ = stream.get_ref().0.set_nodelay(true);
    let local = stream
        .get_ref()
        .0
        .local_addr()
        .ok()
        .or(broker.config.amqps_listen)
        .unwrap_or(broker.config.amqp_listen);
    let (rd, wr) = tokio::io::split(stream);
    serve_split(broker, rd, wr, peer, local, true).await;
}

async fn serve_split<R, W>(
    broker: Arc<Broker>,
    mut rd: R,
    mut wr: W,
    peer: SocketAddr,
    local: SocketAddr,
    ssl: bool,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let _guard = broker.connection_opened();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    if !handshake::read_protocol_header(&mut rd, &mut wr, &mut rbuf, peer).await {
        return;
    }
    let info = Arc::new(ConnectionInfo::new(broker.next_id(), peer, local, ssl));
    // The header and whatever came with it.
    info.received(8 + rbuf.len());
    let tracked = broker.tracker.register(info.clone());

    let (wtx, wrx) = mpsc::channel::<Bytes>(WRITER_QUEUE);
    let mut writer = tokio::spawn(write_loop(wr, wrx, info.clone()));
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut conn = Connection {
        id: info.id,
        broker: broker.clone(),
        peer,
        info,
        phase: Phase::AwaitStartOk,
        user: String::new(),
        pending_login: None,
        vhost: None,
        // Until tune-ok, frames are held to the protocol's minimum (as in RabbitMQ): a client
        // that has not logged in cannot make the broker buffer large frames.
        decoder: FrameDecoder::new(FRAME_MIN_SIZE),
        framing_lost: None,
        consumed: Default::default(),
        frame_max: broker.config.frame_max,
        channel_max: broker.config.channel_max,
        heartbeat: 0,
        caps: ClientCaps::default(),
        channels: HashMap::new(),
        out: BytesMut::with_capacity(READ_CHUNK),
        events_tx,
        flow: Arc::new(ConnectionFlow::default()),
        exclusive_queues: Vec::new(),
        confirms_due: Vec::new(),
        route_buf: Vec::new(),
        tx_logged: None,
        close_deadline: None,
        published: false,
        blocked: false,
        alarms: broker.alarms(),
        counts: crate::stats::Counts::default(),
        exchange_tally: Default::default(),
        close_handshake_done: false,
        sent_close_ok: false,
        pending: std::collections::VecDeque::new(),
        pending_replies: std::collections::VecDeque::new(),
        access_cache: (0, HashMap::new()),
        publish_allowed: None,
    };
    conn.send_start();
    let ending = conn.run(&mut rd, &mut rbuf, wtx, &mut events_rx).await;
    // Closed as far as its client and the listings are concerned; what is left is cleaning up.
    drop(tracked);
    // Everything the connection held goes back to its queues before anything else can fail:
    // consumers, unacked deliveries, and deliveries queues sent that were never encoded.
    conn.release_all().await;
    conn.requeue_undelivered(&mut events_rx).await;
    broker.counters.flush(&mut conn.counts);
    conn.flush_exchange_tally();
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
