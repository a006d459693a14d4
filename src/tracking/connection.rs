//! One connection's shared handle: what it was accepted with (fixed), what its handshake
//! settled (a [`Session`], written a few times while it opens), its state and traffic (atomics
//! the connection bumps per read or write batch and listings read), its channels, and the close
//! request through which the management API or the broker ends it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use warren_amqp::types::FieldTable;

use super::channel::ChannelInfo;

/// What the handshake settled. `vhost` is set at connection.open: before that the connection is
/// not listed.
#[derive(Clone, Debug, Default)]
pub struct Session {
    pub user: String,
    pub vhost: String,
    pub auth_mechanism: String,
    pub client_properties: FieldTable,
    pub frame_max: u32,
    pub channel_max: u16,
    /// The heartbeat interval agreed in tune-ok, in seconds (RabbitMQ's `timeout`).
    pub heartbeat: u16,
}

/// The connection's state as RabbitMQ names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    Starting,
    Running,
    /// A resource alarm stopped reading from it.
    Blocked,
    /// It sent connection.close and waits for close-ok.
    Closing,
}

impl ConnectionState {
    pub fn name(self) -> &'static str {
        match self {
            ConnectionState::Starting => "starting",
            ConnectionState::Running => "running",
            ConnectionState::Blocked => "blocked",
            ConnectionState::Closing => "closing",
        }
    }

    fn from_u8(n: u8) -> Self {
        match n {
            1 => ConnectionState::Running,
            2 => ConnectionState::Blocked,
            3 => ConnectionState::Closing,
            _ => ConnectionState::Starting,
        }
    }
}

pub struct ConnectionInfo {
    pub id: u64,
    /// RabbitMQ's name for it: `PEER_IP:PORT -> LOCAL_IP:PORT`.
    pub name: String,
    pub peer: SocketAddr,
    /// The listener's side of the socket.
    pub local: SocketAddr,
    pub ssl: bool,
    /// When it was accepted, in milliseconds since the epoch.
    pub connected_at: u64,
    /// None until connection.open; then what the handshake settled.
    session: Mutex<Option<Session>>,
    /// Filled in during the handshake, published as the session at open.
    pending: Mutex<Session>,
    state: AtomicU8,
    recv_oct: AtomicU64,
    recv_cnt: AtomicU64,
    send_oct: AtomicU64,
    send_cnt: AtomicU64,
    channels: Mutex<BTreeMap<u16, Arc<ChannelInfo>>>,
    /// The message counts of its channels closed so far (the open ones count on their own).
    closed_channels: super::MessageCounts,
    /// Its message counts and traffic (as [`ConnectionInfo::traffic`]) sampled every
    /// `collect_statistics_interval`, for their rates.
    pub rates: crate::stats::RateSampler<(super::MessageTotals, (u64, u64, u64, u64))>,
    /// The reason of the first close asked for; the connection watches it.
    close: watch::Sender<Option<Arc<str>>>,
}

/// Milliseconds since the epoch, now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ConnectionInfo {
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr, ssl: bool) -> Self {
        ConnectionInfo {
            id,
            name: format!("{peer} -> {local}"),
            peer,
            local,
            ssl,
            connected_at: now_ms(),
            session: Mutex::new(None),
            pending: Mutex::new(Session::default()),
            state: AtomicU8::new(0),
            recv_oct: AtomicU64::new(0),
            recv_cnt: AtomicU64::new(0),
            send_oct: AtomicU64::new(0),
            send_cnt: AtomicU64::new(0),
            channels: Mutex::new(BTreeMap::new()),
            closed_channels: super::MessageCounts::default(),
            rates: crate::stats::RateSampler::default(),
            close: watch::channel(None).0,
        }
    }

    /// Changes what the handshake has settled so far.
    pub fn update_handshake(&self, f: impl FnOnce(&mut Session)) {
        f(&mut self.pending.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// connection.open in `vhost`: from now on the connection is listed, and a user's deletion
    /// finds it.
    pub fn opened(&self, vhost: &str) {
        let mut session = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        session.vhost = vhost.to_owned();
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
    }

    /// What the handshake settled, once the connection is open.
    pub fn session(&self) -> Option<Session> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn state(&self) -> ConnectionState {
        ConnectionState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: ConnectionState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// `n` octets read from the socket (one read).
    pub fn received(&self, n: usize) {
        self.recv_oct.fetch_add(n as u64, Ordering::Relaxed);
        self.recv_cnt.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` octets written to the socket (one write).
    pub fn sent(&self, n: usize) {
        self.send_oct.fetch_add(n as u64, Ordering::Relaxed);
        self.send_cnt.fetch_add(1, Ordering::Relaxed);
    }

    /// (recv_oct, recv_cnt, send_oct, send_cnt)
    pub fn traffic(&self) -> (u64, u64, u64, u64) {
        (
            self.recv_oct.load(Ordering::Relaxed),
            self.recv_cnt.load(Ordering::Relaxed),
            self.send_oct.load(Ordering::Relaxed),
            self.send_cnt.load(Ordering::Relaxed),
        )
    }

    /// A channel opened (or reopened) as `number`.
    pub fn channel_opened(&self, number: u16, channel: Arc<ChannelInfo>) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(number, channel);
    }

    /// Channel `number` closed; its message counts stay with the connection's. By the
    /// connection's own task.
    pub fn channel_closed(&self, number: u16) {
        let closed = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&number);
        if let Some(channel) = closed {
            self.closed_channels.add_totals(&channel.counts.totals());
        }
    }

    /// The message counts of all its channels, open and closed.
    pub fn message_totals(&self) -> super::MessageTotals {
        let open = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        open.values().fold(self.closed_channels.totals(), |sum, c| {
            sum + c.counts.totals()
        })
    }

    /// The open channels, by number.
    pub fn channels(&self) -> Vec<(u16, Arc<ChannelInfo>)> {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, c)| (*n, c.clone()))
            .collect()
    }

    pub fn channel_count(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Asks the connection to close with 320 CONNECTION_FORCED and `reason`. Only the first
    /// request counts: a connection already asked (or already closing) is not closed twice.
    pub fn request_close(&self, reason: &str) {
        self.close.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(reason.into());
            true
        });
    }

    /// What the connection watches for close requests.
    pub fn close_requests(&self) -> watch::Receiver<Option<Arc<str>>> {
        self.close.subscribe()
    }
}
