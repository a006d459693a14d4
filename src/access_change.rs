//! Changes to users, vhosts and permissions as one command type: on a node alone they are
//! written to the store and applied; on a cluster member they go through the metadata log and
//! every node applies them (and writes them to its own store, for its restarts), so that a user
//! made on one node logs in on every node.

use serde::{Deserialize, Serialize};
use warren_storage::{Op, PermissionRecord, TopicPermissionRecord, UserRecord, VhostRecord};

use crate::broker::Broker;
use crate::clustering::MetadataCommand;
use crate::definitions::CommitError;
use crate::vhost::Vhost;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccessChange {
    /// A user is created or replaced (tags, password hash, limits).
    PutUser(UserRecord),
    /// A user goes, with its permissions; its connections are closed.
    DeleteUser(String),
    /// A vhost is created, or its description, tags, limits or default queue type change.
    PutVhost(VhostRecord),
    /// A vhost goes (its contents went first, through its definition log): its connections are
    /// closed and the permissions in it forgotten.
    DeleteVhost(String),
    PutPermission(PermissionRecord),
    DeletePermission {
        vhost: String,
        user: String,
    },
    /// A user's topic permissions in a vhost, all of them (empty: none left).
    SetTopicPermissions {
        vhost: String,
        user: String,
        permissions: Vec<TopicPermissionRecord>,
    },
}

impl AccessChange {
    /// The store's write of it.
    fn op(&self) -> Op {
        match self.clone() {
            AccessChange::PutUser(r) => Op::PutUser(r),
            AccessChange::DeleteUser(name) => Op::DeleteUser { name },
            AccessChange::PutVhost(r) => Op::PutVhost(r),
            AccessChange::DeleteVhost(name) => Op::DeleteVhost { name },
            AccessChange::PutPermission(r) => Op::PutPermission(r),
            AccessChange::DeletePermission { vhost, user } => Op::DeletePermission { vhost, user },
            AccessChange::SetTopicPermissions {
                vhost,
                user,
                permissions,
            } => Op::SetTopicPermissions {
                vhost,
                user,
                permissions,
            },
        }
    }
}

impl Broker {
    /// Makes a change durable, then applies it: through the metadata log on a cluster member
    /// (every node applies it; answered once this node has), else written to the store first.
    pub(crate) async fn change_access(&self, change: AccessChange) -> Result<(), CommitError> {
        if let Some(cluster) = self.cluster.get().filter(|c| !c.alone()) {
            return cluster
                .metadata
                .commit(&MetadataCommand::Access(change))
                .await
                .map_err(|e| match e {
                    warren_cluster::group::ProposeError::Timeout(_) => CommitError::NoQuorum,
                    warren_cluster::group::ProposeError::Failed(e) => CommitError::Refused(e),
                });
        }
        self.store.write(change.op()).await?;
        self.apply_access(&change);
        Ok(())
    }

    /// Applies a change the metadata log committed (on every node): to this node's store (not
    /// waited for: the log has it) and to what it serves.
    pub fn apply_replicated_access(&self, change: &AccessChange) {
        self.store.submit(change.op(), None);
        self.apply_access(change);
    }

    fn apply_access(&self, change: &AccessChange) {
        match change {
            AccessChange::PutUser(r) => {
                self.users.put_user(r.clone());
            }
            AccessChange::DeleteUser(name) => {
                self.users.delete_user(name);
                // After the user is gone: a connection that opens meanwhile is either seen here
                // (it is tracked before it checks its permissions) or refused by that check.
                self.tracker
                    .close_user(name, &format!("user '{name}' is deleted"));
            }
            AccessChange::PutVhost(r) => {
                let mut vhosts = self.vhosts_mut();
                match vhosts.get(&r.name) {
                    Some(v) => v.set_record(r.clone()),
                    None => {
                        let vhost: std::sync::Arc<Vhost> = self.new_vhost(&r.name);
                        vhost.set_record(r.clone());
                        vhosts.insert(r.name.clone(), vhost);
                    }
                }
            }
            AccessChange::DeleteVhost(name) => {
                let removed = self.vhosts_mut().remove(name);
                if let Some(v) = removed {
                    v.mark_deleted();
                }
                self.users.forget_vhost(name);
            }
            AccessChange::PutPermission(r) => {
                // Checked before it was proposed.
                let _ = self.users.set_permission(r.clone());
            }
            AccessChange::DeletePermission { vhost, user } => {
                self.users.delete_permission(vhost, user);
            }
            AccessChange::SetTopicPermissions {
                vhost,
                user,
                permissions,
            } => {
                self.users.delete_topic_permissions(vhost, user, None);
                for p in permissions {
                    let _ = self.users.set_topic_permission(p.clone());
                }
            }
        }
    }
}
