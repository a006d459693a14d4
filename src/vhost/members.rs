//! A quorum queue's members changed (`rabbitmq-queues add_member` / `delete_member`, and `grow`
//! / `shrink` queue by queue): checked against the queue and the cluster, then committed as
//! [`DefinitionCommand::SetQueueMembers`]. Every node applies it (`topology.rs`): the members
//! that stay are told, a node added starts its member, a node removed hands the queue to a proxy;
//! the queue's Raft leader then makes the group's voters the new members (`queue::quorum::host`).

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use warren_amqp::AmqpError;

use super::Vhost;
use crate::definitions::DefinitionCommand;
use crate::queue::args::QueueType;
use crate::queue::factory::Placement;
use crate::queue::quorum::host::{group_name, Replication};
use crate::queue::QueueHandle;

/// One change to a quorum queue's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Add(String),
    Delete(String),
}

/// A change committed: the queue's group and its members now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersChanged {
    pub group: String,
    pub members: Vec<String>,
}

/// Why a change of members was refused (as `rabbitmq-queues` says it).
#[derive(Debug, Error)]
pub enum MembersError {
    #[error("this node is not a member of a cluster")]
    NotClustered,
    #[error("queue '{queue}' in vhost '{vhost}' not found")]
    NoQueue { queue: String, vhost: String },
    #[error("queue '{queue}' in vhost '{vhost}' is not a quorum queue")]
    NotQuorum { queue: String, vhost: String },
    #[error("{node} is not a node of the cluster")]
    UnknownNode { node: String },
    #[error("{node} is not running (or this node does not reach it): a member is added on a running node")]
    NodeDown { node: String },
    #[error("{node} is already a member of quorum queue '{queue}'")]
    AlreadyMember { node: String, queue: String },
    #[error("{node} is not a member of quorum queue '{queue}'")]
    NotMember { node: String, queue: String },
    #[error("{node} is the last member of quorum queue '{queue}': delete the queue instead")]
    LastMember { node: String, queue: String },
    #[error("{0}")]
    NotCommitted(AmqpError),
}

impl Vhost {
    /// Quorum queue `name`, and what its members need of the cluster.
    fn quorum_queue(&self, name: &str) -> Result<(Arc<QueueHandle>, &Replication), MembersError> {
        let Placement::Member { replication, .. } = &self.placement else {
            return Err(MembersError::NotClustered);
        };
        let q = self
            .read()
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| MembersError::NoQueue {
                queue: name.to_owned(),
                vhost: self.name.clone(),
            })?;
        if q.args.queue_type != QueueType::Quorum {
            return Err(MembersError::NotQuorum {
                queue: name.to_owned(),
                vhost: self.name.clone(),
            });
        }
        Ok((q, replication))
    }

    /// The members of quorum queue `name` now (by node name, the first the preferred leader).
    pub fn queue_members(&self, name: &str) -> Result<Vec<String>, MembersError> {
        let (q, replication) = self.quorum_queue(name)?;
        Ok(members_now(&q, replication))
    }

    /// Changes quorum queue `name`'s members, committed through the metadata log (every node
    /// applies it); the queue's leader then changes its group (see the module comment).
    pub async fn change_queue_members(
        self: &Arc<Self>,
        name: &str,
        change: &MemberChange,
    ) -> Result<MembersChanged, MembersError> {
        let held = self.begin_change().await;
        let (q, replication) = self.quorum_queue(name)?;
        let current = members_now(&q, replication);
        let queue = || name.to_owned();
        let members = match change {
            MemberChange::Add(node) => {
                if !replication.nodes.iter().any(|n| n.name == *node) {
                    return Err(MembersError::UnknownNode { node: node.clone() });
                }
                if current.contains(node) {
                    return Err(MembersError::AlreadyMember {
                        node: node.clone(),
                        queue: queue(),
                    });
                }
                let reached =
                    *node == *replication.node.name() || replication.node.link().is_connected(node);
                if !reached {
                    return Err(MembersError::NodeDown { node: node.clone() });
                }
                let mut members = current;
                members.push(node.clone());
                members
            }
            MemberChange::Delete(node) => {
                if !current.contains(node) {
                    return Err(MembersError::NotMember {
                        node: node.clone(),
                        queue: queue(),
                    });
                }
                if current.len() == 1 {
                    return Err(MembersError::LastMember {
                        node: node.clone(),
                        queue: queue(),
                    });
                }
                current.into_iter().filter(|m| m != node).collect()
            }
        };
        let incarnation = q.incarnation;
        let command = DefinitionCommand::SetQueueMembers {
            name: name.to_owned(),
            incarnation,
            members: members.clone(),
        };
        self.commit(held, vec![command])
            .await
            .map_err(MembersError::NotCommitted)?;
        Ok(MembersChanged {
            group: group_name(&self.name, name, incarnation),
            members,
        })
    }
}

/// A quorum queue's members as its handle here knows them.
fn members_now(q: &QueueHandle, replication: &Replication) -> Vec<String> {
    let home = q.home.as_deref().unwrap_or_default();
    replication
        .members_of(home, q.args.initial_group_size, q.members().as_deref())
        .into_iter()
        .map(|n| n.name)
        .collect()
}

impl Vhost {
    /// Waits (at most `within`) until the group of a change has its new members as voters.
    pub async fn members_in_place(&self, changed: &MembersChanged, within: Duration) -> bool {
        let Placement::Member { replication, .. } = &self.placement else {
            return false;
        };
        replication
            .wait_for_members(&changed.group, &changed.members, within)
            .await
    }
}
