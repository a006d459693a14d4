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
//!
//! The vhost side (checks, the cascade, applying) is in `src/vhost/change.rs`.

mod command;
mod log;
mod records;
mod store_log;

pub use command::{
    BindingDefinition, DefinitionCommand, DestinationKind, ExchangeDefinition, QueueDefinition,
};
pub use log::{Commit, CommitError, DefinitionLog};
pub use store_log::StoreDefinitionLog;

#[cfg(test)]
mod tests;
