//! Definitions as commands: every change to a vhost's exchanges, queues, bindings and policies is a
//! [`DefinitionCommand`], made durable through a [`DefinitionLog`] first and applied to the
//! vhost's topology after (propose → durable → apply). The node's store implements the log today
//! ([`StoreDefinitionLog`]); a replicated metadata log can implement the same trait tomorrow and
//! carry the same commands to other nodes, which apply them as this node does.
//!
//! Layout, one concept a file:
//! - `command.rs`: the commands and the definitions they carry (serde, so they can cross a
//!   network).
//! - `records.rs`: definitions to and from the store's records (what the store log writes, what
//!   recovery reads back).
//! - `log.rs`: the `DefinitionLog` trait and its error.
//! - `store_log.rs`: the log in the node's store: each command as the storage writes it implies.
//! - `format.rs`: RabbitMQ 3.10's definitions file (users, vhosts, permissions, queues,
//!   exchanges, bindings, and the sections other features own), as import reads it.
//! - `json.rs`: AMQP argument tables to and from JSON, as the file and the HTTP API write them.
//! - `export.rs` / `import.rs`: the broker's definitions as such a file, and such a file applied
//!   to the broker (checked whole first).
//! - `shared_arguments.rs`: one copy of each queue argument table for all queues declared alike.
//! - `sections.rs`: the file's sections whose features are not here yet (policies, topic
//!   permissions, parameters, limits): refused on import, empty on export.
//!
//! The vhost side (checks, the cascade, applying) is in `src/vhost/change.rs`.

mod command;
pub mod export;
pub mod format;
pub mod import;
pub mod json;
mod log;
mod records;
pub mod sections;
pub mod shared_arguments;
mod store_log;

pub use command::{
    removal_meant_for, BindingDefinition, DefinitionCommand, DestinationKind, ExchangeDefinition,
    QueueDefinition,
};
pub use import::{ImportError, Scope};
pub use log::{Commit, CommitError, Committed, DefinitionLog};
pub use store_log::StoreDefinitionLog;

#[cfg(test)]
mod tests;
