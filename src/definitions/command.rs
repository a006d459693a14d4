//! The commands: one per kind of change to a vhost's definitions, each carrying what applying it
//! needs and what a log needs to write it (whether the store keeps it), so that neither has to
//! look anything up.

use serde::{Deserialize, Serialize};
use warren_amqp::types::FieldTable;

use crate::exchange::ExchangeKind;
use crate::policy::{PolicyDefinition, PolicyKind};
use crate::queue::ConnectionId;

/// One change to a vhost's exchanges, queues, bindings or policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DefinitionCommand {
    DeclareQueue(QueueDefinition),
    /// The queue goes, with every binding to it.
    DeleteQueue {
        name: String,
        /// Its id in the store, when it is kept on disk.
        storage_id: Option<u64>,
        /// Which queue of that name (its declare's [`QueueDefinition::incarnation`]); 0: whichever
        /// is there.
        #[serde(default)]
        incarnation: u64,
    },
    DeclareExchange(ExchangeDefinition),
    /// The exchange goes, with every binding from it and to it.
    DeleteExchange {
        name: String,
        durable: bool,
    },
    /// `durable`: both ends are durable, so the binding is kept on disk (as RabbitMQ does).
    Bind {
        binding: BindingDefinition,
        durable: bool,
    },
    Unbind {
        binding: BindingDefinition,
        durable: bool,
    },
    /// A policy or operator policy is added or replaced; it applies to the queues and exchanges
    /// it matches at once.
    SetPolicy(PolicyDefinition),
    /// A policy or operator policy goes; what it matched falls back on the next one, if any.
    ClearPolicy {
        kind: PolicyKind,
        name: String,
    },
    /// A quorum queue's members are now `members` (in a cluster only: nothing of it is kept in
    /// the node's store). Skipped if the queue is not that incarnation.
    SetQueueMembers {
        name: String,
        incarnation: u64,
        members: Vec<String>,
    },
}

/// A queue as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDefinition {
    pub name: String,
    /// The queue's id in the store: set for the queues kept on disk, durable and not exclusive
    /// (an exclusive queue dies with its connection).
    pub storage_id: Option<u64>,
    pub durable: bool,
    /// The connection an exclusive queue belongs to.
    pub exclusive_owner: Option<ConnectionId>,
    pub auto_delete: bool,
    /// Shared with the queue's handle (see `QueueHandle::arguments`), and with every queue
    /// declared with the same (see [`super::shared_arguments`]).
    #[serde(deserialize_with = "super::shared_arguments::deserialize")]
    pub arguments: std::sync::Arc<FieldTable>,
    /// The node the queue lives on, in a cluster (where it was declared, as RabbitMQ places a
    /// classic queue); the other nodes reach it over the cluster link. None: this node, alone.
    #[serde(default)]
    pub home: Option<String>,
    /// In a cluster, the metadata log's index of the declare that created this queue (0 alone):
    /// a removal names it, so that one meant for a queue since deleted and declared again under
    /// the same name leaves the new one be.
    #[serde(default)]
    pub incarnation: u64,
    /// A quorum queue's members, by node name, once they were changed (`add_member`,
    /// `delete_member`, `grow`, `shrink`); None: those chosen at its declare (see
    /// `Replication::group_members`).
    #[serde(default)]
    pub members: Option<Vec<String>>,
}

/// An exchange as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDefinition {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// What a binding leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DestinationKind {
    Queue,
    /// An exchange-to-exchange binding.
    Exchange,
}

/// A binding from an exchange to a queue or another exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingDefinition {
    pub source: String,
    pub destination: String,
    pub destination_kind: DestinationKind,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// Whether a queue removal naming `named` (its [`DefinitionCommand::DeleteQueue`] incarnation, 0
/// for whichever) is meant for the queue of incarnation `queue`.
pub fn removal_meant_for(named: u64, queue: u64) -> bool {
    named == 0 || named == queue
}

impl DefinitionCommand {
    /// Whether the store keeps what this command changes: a durable exchange, a queue kept on
    /// disk, a binding between durable ends. The others still go through the log (a replicated
    /// log carries them to other nodes) but write nothing to disk.
    pub fn is_durable(&self) -> bool {
        match self {
            DefinitionCommand::DeclareQueue(q) => q.storage_id.is_some(),
            DefinitionCommand::DeleteQueue { storage_id, .. } => storage_id.is_some(),
            DefinitionCommand::DeclareExchange(e) => e.durable,
            DefinitionCommand::DeleteExchange { durable, .. }
            | DefinitionCommand::Bind { durable, .. }
            | DefinitionCommand::Unbind { durable, .. } => *durable,
            // Policies are kept whatever they match, as RabbitMQ keeps them.
            DefinitionCommand::SetPolicy(_) | DefinitionCommand::ClearPolicy { .. } => true,
            // The metadata log holds it: a node alone has no members to change.
            DefinitionCommand::SetQueueMembers { .. } => false,
        }
    }
}
