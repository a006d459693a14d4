//! A virtual host: its exchanges, queues and bindings, and routing a publish to queues. The
//! topology sits behind one read-write lock; routing takes the read side and never awaits.
//!
//! Layout, one concern a file (each adds its own `impl Vhost` block):
//! - `mod.rs`: the `Vhost` struct, its constructor and small accessors, the lock helpers and
//!   errors the other files share, and `Vhost::spawn_queue`, the one place queues are started.
//! - `topology.rs`: the `Topology` behind the lock, with its bind / unbind / remove helpers
//!   (the durable records they write included).
//! - `declare.rs`: declare and delete of queues and exchanges, and the equivalence checks of a
//!   repeated declare.
//! - `bindings.rs`: queue.bind / queue.unbind and exchange.bind / exchange.unbind.
//! - `routing.rs`: routing a publish to its queues, deduplicating exchanges, the publish checks.
//! - `recovery.rs`: rebuilding the durable topology and queues at start-up.
//! - `info.rs`: listings for the management API.

mod bindings;
mod declare;
mod info;
mod recovery;
mod routing;
mod topology;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use warren_amqp::types::FieldTable;
use warren_amqp::AmqpError;
use warren_storage::Store;

use crate::exchange::{Exchange, ExchangeKind};
use crate::queue::recovery::Recovery;
use crate::queue::{factory, ConnectionId, QueueHandle, QueueSpec};

pub use declare::{DeclareExchange, DeclareQueue};
pub use info::{BindingInfo, ExchangeInfo};
pub use routing::Routing;
use topology::Topology;

pub struct Vhost {
    pub name: String,
    store: Store,
    /// Body bytes of ready messages each durable queue keeps in memory (see `QueueSpec`).
    queue_memory_limit: u64,
    topology: RwLock<Topology>,
    /// Description and tags, as the management API shows them.
    meta: RwLock<(String, Vec<String>)>,
    /// Becomes true when the vhost is deleted: its connections close (320).
    deleted: tokio::sync::watch::Sender<bool>,
}

impl Vhost {
    pub fn new(name: impl Into<String>, store: Store, queue_memory_limit: u64) -> Arc<Self> {
        let name = name.into();
        let mut topology = Topology {
            vhost: name.clone(),
            store: store.clone(),
            exchanges: HashMap::new(),
            queues: HashMap::new(),
        };
        let empty = FieldTable::default;
        // RabbitMQ's predeclared exchanges; amq.rabbitmq.trace (internal) is the firehose's.
        for (name, kind, internal) in [
            ("", ExchangeKind::Direct, false),
            ("amq.direct", ExchangeKind::Direct, false),
            ("amq.fanout", ExchangeKind::Fanout, false),
            ("amq.topic", ExchangeKind::Topic, false),
            ("amq.headers", ExchangeKind::Headers, false),
            ("amq.match", ExchangeKind::Headers, false),
            ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
        ] {
            topology.exchanges.insert(
                name.to_owned(),
                Exchange::new(name, kind, true, false, internal, empty()),
            );
        }
        Arc::new(Vhost {
            name,
            store,
            queue_memory_limit,
            topology: RwLock::new(topology),
            meta: RwLock::new((String::new(), Vec::new())),
            deleted: tokio::sync::watch::channel(false).0,
        })
    }

    /// The description and tags.
    pub fn metadata(&self) -> (String, Vec<String>) {
        self.meta.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_metadata(&self, description: String, tags: Vec<String>) {
        *self.meta.write().unwrap_or_else(|e| e.into_inner()) = (description, tags);
    }

    /// Becomes true once the vhost is deleted (connections to it watch this).
    pub fn deleted_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.deleted.subscribe()
    }

    /// Marks the vhost deleted and empties it: its connections are told to close, its exchanges
    /// go (records included); returns its queues, for the caller to delete (with their messages).
    pub fn delete_contents(&self) -> Vec<Arc<QueueHandle>> {
        let _ = self.deleted.send(true);
        let mut topo = self.write();
        let names: Vec<String> = topo.exchanges.keys().cloned().collect();
        for name in names {
            topo.remove_exchange(&name);
        }
        topo.queues.values().cloned().collect()
    }

    fn read(&self) -> RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Topology> {
        self.topology.write().unwrap_or_else(|e| e.into_inner())
    }

    fn no_queue(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn locked(&self, name: &str) -> AmqpError {
        AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            self.name
        ))
    }

    /// Finds a queue the connection may use (exclusive queues belong to their connection).
    pub fn queue(
        &self,
        name: &str,
        connection: ConnectionId,
    ) -> Result<Arc<QueueHandle>, AmqpError> {
        let q = self
            .read()
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_queue(name))?;
        match q.exclusive_owner {
            Some(owner) if owner != connection => Err(self.locked(name)),
            _ => Ok(q),
        }
    }

    /// Starts a queue through the queue factory: the one place the vhost creates queues
    /// (declared or recovered).
    fn spawn_queue(
        self: &Arc<Self>,
        spec: QueueSpec,
        recovery: Option<Recovery>,
    ) -> Arc<QueueHandle> {
        factory::create(spec, Arc::downgrade(self), &self.store, recovery)
    }
}

fn default_exchange_refused() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}
