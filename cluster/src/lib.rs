//! Warren's cluster: nodes that act as one broker.
//!
//! Layout, one concept a module:
//! - `types.rs`: the Raft type configuration, node names and ids.
//! - `error.rs`: [`ClusterError`], what the crate's own functions fail with (openraft's storage
//!   traits want `io::Error`, into which it converts).
//! - `log_store.rs`: a group's Raft log, vote, commit and purge points in one redb file
//!   ([`LogStore`], openraft's `RaftLogStorage`). Appends return once readable and report
//!   durability later, so openraft can pipeline them; writes are group-committed on the blocking
//!   pool.
//! - `state_machine.rs`: openraft's `RaftStateMachine` ([`StateMachine`]) around an [`Applier`]
//!   the application supplies (what a committed entry does is the application's business). Only
//!   snapshots are persisted: on start the last one is installed and openraft re-applies the
//!   committed log after it.

mod error;
mod log_store;
mod state_machine;
pub mod types;

#[cfg(test)]
mod tests;

pub use error::ClusterError;
pub use log_store::LogStore;
pub use state_machine::{Applier, StateMachine};
pub use types::{node_id, Node, NodeId, Proposal, TypeConfig};
