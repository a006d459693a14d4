//! The Raft type configuration every group of the cluster uses, and the node identity.
//!
//! A node is known by its name (`n1`, `warren@host`), as RabbitMQ nodes are; Raft wants a number,
//! so a node's id is derived from its name (the first eight bytes of its SHA-256): every node
//! computes the same id for a name without asking anyone.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A node's Raft id: derived from its name ([`node_id`]).
pub type NodeId = u64;

/// What a group's membership knows of a node: its name and where its cluster link listens.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub addr: String,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// One entry an application proposes to a group: opaque bytes (the application chooses their
/// encoding), with the node that proposed it and a number of its own, so the proposer can tell its
/// entry when it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Proposal {
    pub origin: NodeId,
    pub number: u64,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "proposal {} of node {:x} ({} bytes)",
            self.number,
            self.origin,
            self.payload.len()
        )
    }
}

openraft::declare_raft_types!(
    /// Warren's Raft types: entries are [`Proposal`]s, applying one answers nothing (the
    /// proposer learns the outcome when its own node applies it).
    pub TypeConfig:
        D = Proposal,
        R = (),
        NodeId = NodeId,
        Node = Node,
);

pub type Raft<SM> = openraft::Raft<TypeConfig, SM>;
pub type Entry = openraft::Entry<
    <<TypeConfig as openraft::RaftTypeConfig>::LeaderId as openraft::vote::RaftLeaderId>::Committed,
    <TypeConfig as openraft::RaftTypeConfig>::Payload,
>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// A node's id: the first eight bytes of the SHA-256 of its name.
pub fn node_id(name: &str) -> NodeId {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(node_id("n1"), node_id("n1"));
        assert_ne!(node_id("n1"), node_id("n2"));
    }
}
