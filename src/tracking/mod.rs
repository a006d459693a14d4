//! Connection tracking: the live AMQP connections as the management API and the broker's
//! administration see them (RabbitMQ's `rabbit_connection_tracking`), without asking the
//! connection tasks anything. Each connection publishes a shared [`ConnectionInfo`] that it
//! updates as its handshake, channels and consumers change (never per message: traffic and
//! unacked counts are atomics read on demand); the tracker maps ids to them, and closing one
//! is a request the connection's own loop acts on.
//!
//! Layout:
//! - `mod.rs`: the [`Tracker`] (register, list, find by name, close a user's connections)
//! - `connection.rs`: [`ConnectionInfo`], one connection's shared handle, and its close request
//! - `channel.rs`: [`ChannelInfo`] and [`ConsumerInfo`], what a connection shows of its channels
//! - `counts.rs`: [`MessageCounts`], a channel's message counts (bumped without locked
//!   instructions: one writer)

mod channel;
mod connection;
mod counts;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use channel::{ChannelInfo, ChannelView, ConsumerInfo};
pub use connection::{ConnectionInfo, ConnectionState, Session};
pub use counts::{bump, MessageCounts, MessageTotals};

/// The live connections, by id.
#[derive(Default)]
pub struct Tracker {
    connections: RwLock<HashMap<u64, Arc<ConnectionInfo>>>,
}

impl Tracker {
    /// Tracks a connection until the returned guard is dropped (when its task ends, or
    /// unwinds: a connection that panicked does not stay listed).
    pub fn register(self: &Arc<Self>, info: Arc<ConnectionInfo>) -> Tracked {
        let id = info.id;
        self.connections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, info);
        Tracked {
            tracker: self.clone(),
            id,
        }
    }

    /// Every connection past connection.open, with its session, sorted by vhost and then name
    /// (RabbitMQ's default order for listings). Connections still in their handshake are not
    /// shown, as RabbitMQ tracks a connection from its open.
    pub fn open_connections(&self) -> Vec<(Arc<ConnectionInfo>, Session)> {
        let all: Vec<Arc<ConnectionInfo>> = self
            .connections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        // Sessions are read after the tracker's lock is released: a listing never holds it
        // while it visits every connection.
        let mut open: Vec<(Arc<ConnectionInfo>, Session)> = all
            .into_iter()
            .filter_map(|c| c.session().map(|s| (c, s)))
            .collect();
        open.sort_by(|(a, sa), (b, sb)| (&sa.vhost, &a.name).cmp(&(&sb.vhost, &b.name)));
        open
    }

    /// The open connection with this name.
    pub fn find(&self, name: &str) -> Option<(Arc<ConnectionInfo>, Session)> {
        let found = self
            .connections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|c| c.name == name)
            .cloned()?;
        let session = found.session()?;
        Some((found, session))
    }

    /// Asks every open connection of `user` to close (320 with `reason`); how many were asked.
    pub fn close_user(&self, user: &str, reason: &str) -> usize {
        let mut asked = 0;
        for (c, session) in self.open_connections() {
            if session.user == user {
                c.request_close(reason);
                asked += 1;
            }
        }
        asked
    }

    fn unregister(&self, id: u64) {
        self.connections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// A connection's place in the [`Tracker`], given up when dropped.
pub struct Tracked {
    tracker: Arc<Tracker>,
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.tracker.unregister(self.id);
    }
}
