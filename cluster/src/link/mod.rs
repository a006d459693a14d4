//! The cluster link: one TCP connection per pair of nodes, carrying every kind of traffic between
//! them (Raft messages of every group, proposals sent to a leader, the application's forwarded
//! queue operations) as numbered requests and responses in both directions.
//!
//! - One connection per pair: of two nodes, the one whose name sorts first dials, the other
//!   waits to be called; the dialer calls again (with a growing pause, up to a second) whenever
//!   the connection drops. So a restarted node is called back within a second of listening.
//! - Writes are batched: one task per connection drains everything queued into one buffer and
//!   one write (`connection.rs`).
//! - A dead peer is noticed within seconds: each side sends a ping when it has sent nothing for
//!   [`LinkConfig::heartbeat`], and a side that hears nothing for [`LinkConfig::dead_after`]
//!   closes the connection, which fails every request waiting on it.
//! - Only nodes that know the cluster's secret get past the handshake (`handshake.rs`), and at
//!   most [`LinkConfig::max_handshakes`] sockets are in it at once: a flood of sockets that
//!   never finish it (each dropped after [`handshake::TIMEOUT`]) costs a bounded number of tasks
//!   and buffers, and connections already made carry on.

mod connection;
pub mod frame;
pub mod handshake;
mod throttle;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use frame::{GroupId, ProposeRefused, RaftReply, RaftRpc, Request, Response};

use connection::Connection;
use throttle::LogThrottle;

#[derive(Debug, Error)]
pub enum LinkError {
    #[error("cluster link I/O: {0}")]
    Io(#[source] std::io::Error),
    #[error("cannot encode a cluster frame: {0}")]
    Encode(#[source] postcard::Error),
    #[error("cannot decode a cluster frame: {0}")]
    Decode(#[source] postcard::Error),
    #[error("a cluster frame of {0} bytes is over the limit")]
    TooLarge(u32),
    #[error("the peer closed the cluster link")]
    Closed,
    #[error("refused: {0}")]
    Refused(String),
    #[error("unexpected handshake message: {0}")]
    Unexpected(String),
    #[error("the handshake did not finish in time")]
    HandshakeTimeout,
    #[error("node {0} is not a known peer")]
    UnknownPeer(String),
    #[error("node {0} is not connected")]
    NotConnected(String),
    #[error("node {0} did not answer in time")]
    Timeout(String),
    #[error("the connection to node {0} closed before it answered")]
    Lost(String),
}

/// How long a request waits for a connection to its peer before it is reported as not connected.
const CONNECT_WAIT: Duration = Duration::from_millis(500);
/// Sockets in the handshake at once, by default. A cluster's own nodes need one each when they
/// (re)connect; the rest of the room absorbs scanners and health checks.
pub const MAX_HANDSHAKES: usize = 64;
/// A kind of trouble that a flood could repeat many times a second is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A future a handler answers with.
pub type Answer = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// What the node does with requests its peers send.
pub trait Handler: Send + Sync + 'static {
    /// Called in the order requests arrive on a connection (the returned futures run
    /// concurrently): work queued before returning keeps that order.
    fn handle(&self, from: &str, request: Request) -> Answer;
}

#[derive(Clone)]
pub struct LinkConfig {
    /// This node's name.
    pub name: String,
    /// Where peers call this node (as they know it).
    pub addr: String,
    pub secret: Vec<u8>,
    pub heartbeat: Duration,
    pub dead_after: Duration,
    /// TLS on every connection (both ways: a peer's certificate is checked as a server's).
    pub tls: Option<LinkTls>,
    /// Accepted sockets in the handshake (TLS included) at once; one accepted beyond that is
    /// closed at once (its node, if it is one, calls again within a second).
    pub max_handshakes: usize,
}

/// The link's TLS: what accepts peers' connections and what calls them.
#[derive(Clone)]
pub struct LinkTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

/// A connection to a peer, over TLS or not.
pub(crate) trait PeerStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerStream for T {}
pub(crate) type BoxStream = Box<dyn PeerStream>;

impl LinkConfig {
    pub fn new(name: impl Into<String>, addr: impl Into<String>, secret: Vec<u8>) -> Self {
        LinkConfig {
            name: name.into(),
            addr: addr.into(),
            secret,
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(4),
            tls: None,
            max_handshakes: MAX_HANDSHAKES,
        }
    }
}

/// A peer's connection as [`Link::watch_peer`] follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLink {
    pub up: bool,
    /// Changes with every connection made or lost.
    pub generation: u64,
}

/// What the link knows of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub name: String,
    pub addr: String,
    pub connected: bool,
}

struct PeerState {
    addr: String,
    /// The current connection: `Some` while one is open.
    connection: watch::Sender<Option<Arc<Connection>>>,
}

pub(crate) struct Inner {
    config: LinkConfig,
    handler: Mutex<Option<Arc<dyn Handler>>>,
    peers: Mutex<HashMap<String, PeerState>>,
    next_request: AtomicU64,
    stopped: watch::Sender<bool>,
    failed_handshakes: LogThrottle,
}

/// This node's end of the cluster link. Cheap to clone.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

impl Link {
    /// Starts accepting peers on `listener` (none: a node alone, which only ever calls out).
    pub fn start(config: LinkConfig, listener: Option<TcpListener>) -> Link {
        let link = Link {
            inner: Arc::new(Inner {
                config,
                handler: Mutex::new(None),
                peers: Mutex::new(HashMap::new()),
                next_request: AtomicU64::new(1),
                stopped: watch::channel(false).0,
                failed_handshakes: LogThrottle::new(LOG_EVERY),
            }),
        };
        if let Some(listener) = listener {
            tokio::spawn(link.clone().accept_loop(listener));
        }
        link
    }

    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    pub fn addr(&self) -> &str {
        &self.inner.config.addr
    }

    /// Sets what answers peers' requests (until it is set, they get an error).
    pub fn set_handler(&self, handler: Arc<dyn Handler>) {
        *lock(&self.inner.handler) = Some(handler);
    }

    /// Makes a node a peer: if this node's name sorts first, it calls it (and keeps calling).
    pub fn add_peer(&self, name: &str, addr: &str) {
        if name == self.inner.config.name {
            return;
        }
        let mut peers = lock(&self.inner.peers);
        if let Some(peer) = peers.get_mut(name) {
            peer.addr = addr.to_owned();
            return;
        }
        peers.insert(
            name.to_owned(),
            PeerState {
                addr: addr.to_owned(),
                connection: watch::channel(None).0,
            },
        );
        drop(peers);
        if self.inner.config.name.as_str() < name {
            tokio::spawn(self.clone().dial_loop(name.to_owned()));
        }
    }

    /// Follows `peer`'s connection (None: not a known peer): whether one is up, and which one
    /// (a number that changes with every connection made or lost), so that a watcher notices a
    /// connection replaced by another even when it never sees it down.
    pub fn watch_peer(&self, peer: &str) -> Option<watch::Receiver<PeerLink>> {
        let peers = lock(&self.inner.peers);
        let mut connection = peers.get(peer)?.connection.subscribe();
        let mut current = PeerLink {
            up: connection.borrow().is_some(),
            generation: 0,
        };
        let (link, watching) = watch::channel(current);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = connection.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        current = PeerLink {
                            up: connection.borrow_and_update().is_some(),
                            generation: current.generation + 1,
                        };
                        let _ = link.send(current);
                    }
                    _ = link.closed() => return,
                }
            }
        });
        Some(watching)
    }

    /// The peers and whether each is connected now.
    /// Whether `peer`'s connection is up now.
    pub fn is_connected(&self, peer: &str) -> bool {
        lock(&self.inner.peers)
            .get(peer)
            .is_some_and(|p| p.connection.borrow().is_some())
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        let peers = lock(&self.inner.peers);
        let mut all: Vec<PeerStatus> = peers
            .iter()
            .map(|(name, p)| PeerStatus {
                name: name.clone(),
                addr: p.addr.clone(),
                connected: p.connection.borrow().is_some(),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Sends a request to `peer` and waits for its answer, at most `timeout` in all (waiting for a
    /// connection included).
    pub async fn request(
        &self,
        peer: &str,
        body: Request,
        timeout: Duration,
    ) -> Result<Response, LinkError> {
        let started = tokio::time::Instant::now();
        let call = tokio::time::timeout(timeout, self.call(peer, body))
            .await
            .map_err(|_| LinkError::Timeout(peer.to_owned()))??;
        call.answer(timeout.saturating_sub(started.elapsed())).await
    }

    /// Sends a request to `peer` now (waiting for a connection at most a moment), and gives back
    /// the wait for its answer: requests started one after another are sent in that order.
    pub async fn call(&self, peer: &str, body: Request) -> Result<Call, LinkError> {
        let mut connection = {
            let peers = lock(&self.inner.peers);
            peers
                .get(peer)
                .ok_or_else(|| LinkError::UnknownPeer(peer.to_owned()))?
                .connection
                .subscribe()
        };
        let connected =
            tokio::time::timeout(CONNECT_WAIT, connection.wait_for(Option::is_some)).await;
        let connection = connected
            .ok()
            .and_then(|c| c.ok().and_then(|c| c.clone()))
            .ok_or_else(|| LinkError::NotConnected(peer.to_owned()))?;
        let (answer, answered) = oneshot::channel();
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let pending = connection.send_request(id, body, answer).await?;
        Ok(Call {
            peer: peer.to_owned(),
            answered,
            _pending: pending,
        })
    }

    /// Stops accepting and calling, and closes every connection.
    pub fn stop(&self) {
        let _ = self.inner.stopped.send(true);
        for peer in lock(&self.inner.peers).values() {
            if let Some(c) = peer.connection.borrow().as_ref() {
                c.close();
            }
        }
    }

    fn handler(&self) -> Option<Arc<dyn Handler>> {
        lock(&self.inner.handler).clone()
    }

    async fn accept_loop(self, listener: TcpListener) {
        let mut stopped = self.inner.stopped.subscribe();
        let handshakes = Arc::new(Semaphore::new(self.inner.config.max_handshakes));
        let turned_away = LogThrottle::new(LOG_EVERY);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stopped.wait_for(|s| *s) => return,
            };
            match accepted {
                Ok((stream, from)) => match handshakes.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let link = self.clone();
                        tokio::spawn(async move { link.accepted(stream, from, slot).await });
                    }
                    Err(_) => {
                        // Closed at once rather than left in the backlog: a node that meant to
                        // call retries within a second, and the listener keeps draining.
                        drop(stream);
                        if let Some(passed_over) = turned_away.tick() {
                            tracing::warn!(
                                "cluster link from {from} closed: {} handshakes already under way \
                                 ({passed_over} more closed likewise since the last report)",
                                self.inner.config.max_handshakes
                            );
                        }
                    }
                },
                Err(e) => {
                    // Out of file descriptors, most likely: pause rather than spin.
                    tracing::warn!("cluster link accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Runs an accepted socket's handshake (holding one of the handshake `slot`s meanwhile),
    /// then its connection.
    async fn accepted(
        self,
        stream: TcpStream,
        from: std::net::SocketAddr,
        slot: OwnedSemaphorePermit,
    ) {
        let config = &self.inner.config;
        let _ = stream.set_nodelay(true);
        let mut stream: BoxStream = match &config.tls {
            None => Box::new(stream),
            Some(tls) => {
                let accepting = tls.acceptor.accept(stream);
                match tokio::time::timeout(handshake::TIMEOUT, accepting).await {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => {
                        self.handshake_failed(format_args!("refused: TLS: {e}"), from);
                        return;
                    }
                    Err(_) => {
                        self.handshake_failed(format_args!("TLS handshake timeout"), from);
                        return;
                    }
                }
            }
        };
        let peer = match handshake::accept(&mut stream, &config.secret, &config.name).await {
            Ok(peer) => peer,
            Err(LinkError::Refused(reason)) => {
                self.handshake_failed(format_args!("refused: {reason}"), from);
                return;
            }
            Err(e) => {
                self.handshake_failed(format_args!("failed its handshake: {e}"), from);
                return;
            }
        };
        drop(slot);
        // A node that calls is a peer (a node joining with the secret).
        self.add_peer(&peer.name, &peer.addr);
        self.serve(stream, peer.name).await;
    }

    /// Logs a socket that did not get through the handshake (a node with another secret, or
    /// silence, garbage, a frame cut short): at most once per [`LOG_EVERY`], since anyone who
    /// reaches the port can repeat it at will (a misconfigured node, calling every second, is
    /// still reported).
    fn handshake_failed(&self, what: std::fmt::Arguments<'_>, from: std::net::SocketAddr) {
        if let Some(passed_over) = self.inner.failed_handshakes.tick() {
            tracing::warn!(
                "cluster link from {from} {what} ({passed_over} more failed since the last report)"
            );
        }
    }

    async fn dial_loop(self, peer: String) {
        let mut stopped = self.inner.stopped.subscribe();
        let mut pause = Duration::from_millis(50);
        loop {
            if *stopped.borrow() {
                return;
            }
            let Some(addr) = lock(&self.inner.peers).get(&peer).map(|p| p.addr.clone()) else {
                return;
            };
            match self.dial(&peer, &addr).await {
                Ok(stream) => {
                    pause = Duration::from_millis(50);
                    self.serve(stream, peer.clone()).await;
                }
                Err(LinkError::Refused(reason)) => {
                    tracing::warn!("cluster link to {peer} at {addr} refused: {reason}");
                }
                Err(e) => tracing::debug!("cannot reach {peer} at {addr}: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn dial(&self, peer: &str, addr: &str) -> Result<BoxStream, LinkError> {
        let config = &self.inner.config;
        let tcp = tokio::time::timeout(handshake::TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| LinkError::HandshakeTimeout)?
            .map_err(LinkError::Io)?;
        let _ = tcp.set_nodelay(true);
        let mut stream: BoxStream = match &config.tls {
            None => Box::new(tcp),
            Some(tls) => {
                // The peer's certificate must name the host it is called at.
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| LinkError::Refused(format!("TLS: {host}: {e}")))?;
                let connecting = tls.connector.connect(name, tcp);
                let tls = tokio::time::timeout(handshake::TIMEOUT, connecting)
                    .await
                    .map_err(|_| LinkError::HandshakeTimeout)?
                    .map_err(|e| LinkError::Refused(format!("TLS: {e}")))?;
                Box::new(tls)
            }
        };
        handshake::dial(
            &mut stream,
            &config.secret,
            &config.name,
            &config.addr,
            peer,
        )
        .await?;
        Ok(stream)
    }

    /// Runs an authenticated connection to `peer` until it closes.
    async fn serve(&self, stream: BoxStream, peer: String) {
        let (connection, done) = Connection::start(
            stream,
            peer.clone(),
            self.clone(),
            self.inner.config.heartbeat,
            self.inner.config.dead_after,
        );
        let replaced = {
            let peers = lock(&self.inner.peers);
            match peers.get(&peer) {
                Some(state) => state.connection.send_replace(Some(connection.clone())),
                None => None,
            }
        };
        if let Some(old) = replaced {
            old.close();
        }
        tracing::info!("cluster link to {peer} is up");
        let _ = done.await;
        let peers = lock(&self.inner.peers);
        if let Some(state) = peers.get(&peer) {
            state.connection.send_if_modified(|current| match current {
                Some(c) if Arc::ptr_eq(c, &connection) => {
                    *current = None;
                    true
                }
                _ => false,
            });
        }
        tracing::info!("cluster link to {peer} is down");
    }
}

/// A request sent, its answer awaited with [`Call::answer`].
pub struct Call {
    peer: String,
    answered: oneshot::Receiver<Response>,
    _pending: connection::Pending,
}

impl Call {
    pub async fn answer(self, timeout: Duration) -> Result<Response, LinkError> {
        match tokio::time::timeout(timeout, self.answered).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(LinkError::Lost(self.peer)),
            Err(_) => Err(LinkError::Timeout(self.peer)),
        }
    }

    /// Waits for the answer as long as the connection it was sent on lasts (a peer that stops
    /// answering altogether is taken for dead, which fails the wait): for a request the peer
    /// answers only when it is ready for more, however long that takes.
    pub async fn answer_while_connected(self) -> Result<Response, LinkError> {
        self.answered.await.map_err(|_| LinkError::Lost(self.peer))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
