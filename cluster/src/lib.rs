//! Warren's cluster: nodes that act as one broker.
//!
//! Layout, one concept a module:
//! - `types.rs`: the Raft type configuration, node names and ids.
//! - `log_store.rs`: a group's Raft log, vote and commit point in redb (openraft's
//!   `RaftLogStorage`).
//! - `state_machine.rs`: openraft's `RaftStateMachine` around an [`Applier`] the application
//!   supplies (what a committed entry does is the application's business).

pub mod group;
pub mod link;
pub mod network;
pub mod node;
pub mod types;

pub use types::{node_id, Node, NodeId, Proposal, TypeConfig};
