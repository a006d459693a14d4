//! A virtual host: its exchanges, queues and bindings, and routing a publish to queues. The
//! topology sits behind one read-write lock; routing takes the read side and never awaits.
//! Definitions change through commands made durable in a definition log before they are applied
//! (`change.rs`; the commands and the log are in `crate::definitions`).
//!
//! Layout, one concern a file (each adds its own `impl Vhost` block):
//! - `mod.rs`: the `Vhost` struct, its constructor and small accessors, the lock helpers and
//!   errors the other files share, and `Vhost::start_queue`, the one place queues are started.
//! - `topology.rs`: the `Topology` behind the lock, and applying a command to it (pure).
//! - `cascade.rs`: the auto-delete cascade, planned as further commands.
//! - `change.rs`: check → commit → apply, the change lock, and queues that delete themselves.
//! - `declare.rs`: declare and delete of queues and exchanges, and the equivalence checks of a
//!   repeated declare.
//! - `bindings.rs`: queue.bind / queue.unbind and exchange.bind / exchange.unbind.
//! - `routing.rs`: routing a publish to its queues, deduplicating exchanges, the publish checks.
//! - `recovery.rs`: rebuilding the durable topology and queues at start-up.
//! - `info.rs`: listings for the management API.
//! - `policies.rs`: setting and clearing policies, and listing them.
//! - `members.rs`: changing a quorum queue's members.

mod bindings;
mod cascade;
mod change;
mod declare;
mod info;
mod members;
mod policies;
mod recovery;
mod routing;
mod topology;

#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use warren_amqp::AmqpError;
use warren_storage::{Store, VhostRecord};

use crate::definitions::{DefinitionLog, QueueDefinition};
use crate::policy::Applied;
use crate::queue::factory::Placement;
use crate::queue::recovery::Recovery;
use crate::queue::{factory, ConnectionId, QueueArgs, QueueHandle, QueueSpec};

pub use declare::{check_new_exchange, check_new_queue, DeclareExchange, DeclareQueue};
pub use info::{BindingInfo, ExchangeInfo};
pub use members::{MemberChange, MembersChanged, MembersError};
pub use routing::Routing;
use topology::Topology;
pub use topology::PREDECLARED;

pub struct Vhost {
    pub name: String,
    /// Queues keep their messages here; durable exchanges their deduplication memory.
    store: Store,
    /// Where definition changes are made durable before they are applied.
    log: Arc<dyn DefinitionLog>,
    /// Held from a change's checks to its apply: changes are serialized (`change.rs`).
    changes: Arc<tokio::sync::Mutex<()>>,
    /// Body bytes of ready messages each durable queue keeps in memory (see `QueueSpec`).
    queue_memory_limit: u64,
    topology: RwLock<Topology>,
    /// Description, tags and limits, as stored.
    record: RwLock<VhostRecord>,
    /// Becomes true when the vhost is deleted: its connections close (320).
    deleted: tokio::sync::watch::Sender<bool>,
    /// Alone, or a member of a cluster: where new queues live, and how to reach others'.
    placement: Placement,
}

impl Vhost {
    pub fn new(
        name: impl Into<String>,
        store: Store,
        log: Arc<dyn DefinitionLog>,
        queue_memory_limit: u64,
    ) -> Arc<Self> {
        Self::new_in(name, store, log, queue_memory_limit, Placement::Alone)
    }

    /// A vhost of a cluster member (`placement`).
    pub fn new_in(
        name: impl Into<String>,
        store: Store,
        log: Arc<dyn DefinitionLog>,
        queue_memory_limit: u64,
        placement: Placement,
    ) -> Arc<Self> {
        let name = name.into();
        Arc::new(Vhost {
            name: name.clone(),
            topology: RwLock::new(Topology::new(&name)),
            store,
            log,
            changes: Arc::new(tokio::sync::Mutex::new(())),
            queue_memory_limit,
            record: RwLock::new(VhostRecord {
                name: name.clone(),
                ..VhostRecord::default()
            }),
            deleted: tokio::sync::watch::channel(false).0,
            placement,
        })
    }

    /// The description and tags.
    pub fn metadata(&self) -> (String, Vec<String>) {
        let record = self.record();
        (record.description, record.tags)
    }

    /// The vhost as stored: description, tags, limits.
    pub fn record(&self) -> VhostRecord {
        self.record
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes a stored record's description, tags and limits (its name is this vhost's).
    pub fn set_record(&self, record: VhostRecord) {
        *self.record.write().unwrap_or_else(|e| e.into_inner()) = VhostRecord {
            name: self.name.clone(),
            ..record
        };
    }

    /// The queue type declares naming none get where it fits (`default_queue_type`).
    pub fn default_queue_type(&self) -> Option<String> {
        let record = self.record.read().unwrap_or_else(|e| e.into_inner());
        record.default_queue_type.clone()
    }

    /// A limit (`max-connections`, `max-queues`), when the vhost has one: negative values are
    /// none, as in RabbitMQ.
    pub fn limit(&self, limit: &str) -> Option<u64> {
        let record = self.record.read().unwrap_or_else(|e| e.into_inner());
        let value = *record.limits.as_ref()?.get(limit)?;
        u64::try_from(value).ok()
    }

    /// Tells the vhost's connections it is deleted (they close, 320).
    pub fn mark_deleted(&self) {
        let _ = self.deleted.send(true);
    }

    /// Becomes true once the vhost is deleted (connections to it watch this).
    pub fn deleted_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.deleted.subscribe()
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
        q.check_reachable(&self.name)?;
        match q.exclusive_owner {
            Some(owner) if owner != connection => Err(self.locked(name)),
            _ => Ok(q),
        }
    }

    /// Starts a declared (or, with `recovery`, recovered) queue through the queue factory: the
    /// one place the vhost creates queues.
    fn start_queue(
        self: &Arc<Self>,
        definition: &QueueDefinition,
        policies: Applied,
        recovery: Option<Recovery>,
    ) -> Arc<QueueHandle> {
        // Checked before a declare is committed; stored arguments that no longer parse act as
        // none, as recovery always had them.
        let args = QueueArgs::parse(&definition.arguments, &definition.name, &self.name)
            .unwrap_or_default();
        // In a cluster, a durable queue of this node's is declared again by the metadata log
        // at every start: its messages are read back from the store then.
        let here = !self.placement.is_remote(definition.home.as_deref());
        let recovery = match (recovery, definition.storage_id) {
            (None, Some(id)) if self.placement.is_member() && here => {
                match self.recover_queue(id, &args) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::error!(queue = %definition.name, "cannot read the queue's messages back: {e}");
                        None
                    }
                }
            }
            (recovery, _) => recovery,
        };
        let spec = QueueSpec {
            name: definition.name.clone(),
            args,
            storage_id: definition.storage_id,
            durable: definition.durable,
            exclusive_owner: definition.exclusive_owner,
            auto_delete: definition.auto_delete,
            arguments: definition.arguments.clone(),
            memory_limit: self.queue_memory_limit,
            policies,
            incarnation: definition.incarnation,
            home: definition.home.clone(),
            members: definition.members.clone(),
        };
        factory::create(
            spec,
            Arc::downgrade(self),
            &self.store,
            recovery,
            &self.placement,
            definition.home.as_deref(),
        )
    }
}

fn default_exchange_refused() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}
