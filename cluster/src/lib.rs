//! Warren's cluster: nodes that act as one broker.
//!
//! Layout, one concept a module:
//! - `types.rs`: the Raft type configuration, node names and ids.
//! - `error.rs`: [`ClusterError`], what the crate's own functions fail with (openraft's storage
//!   traits want `io::Error`, into which it converts).
//! - `log_store/`: the node's Raft database ([`LogDb`], one redb file for every group, one writer
//!   committing what all groups queued in one fsync) and a group's Raft log, vote, commit and
//!   purge points in it ([`LogStore`], openraft's `RaftLogStorage`). Appends return once readable
//!   and report durability later, so openraft can pipeline them.
//! - `state_machine.rs`: openraft's `RaftStateMachine` ([`StateMachine`]) around an [`Applier`]
//!   the application supplies (what a committed entry does is the application's business). Only
//!   snapshots are persisted (in the Raft database): on start the last one is installed and openraft re-applies the
//!   committed log after it.
//! - `shared_copies.rs`: one live copy of each value for all who hold an equal one (group
//!   memberships; the application's queue arguments).
//! - `link/`: the cluster link, one authenticated TCP connection per pair of nodes carrying
//!   every group's Raft messages, proposals and the application's own requests.
//! - `network.rs`: openraft's network for a group, over the link.
//! - `node.rs`: this node's groups and where the link's requests go.
//! - `group.rs`: starting a group member, proposing to the group from any member, its members'
//!   status.

mod error;
pub mod group;
pub mod link;
mod log_store;
pub mod network;
pub mod node;
pub mod shared_copies;
mod state_machine;
pub mod types;

#[cfg(test)]
mod tests;

pub use error::ClusterError;
pub use log_store::{LogDb, LogStore};
pub use state_machine::{Applier, StateMachine};
pub use types::{node_id, Node, NodeId, Proposal, TypeConfig};
