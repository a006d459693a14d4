//! From one metadata state to another as the changes that make it: what installing a snapshot
//! applies to the broker, through the paths log entries take (access changes, definition
//! commands), so that what is equal in both is left alone.
//!
//! The order is one the broker accepts: users deleted, vhosts deleted and made again, vhosts and
//! users made first; in each vhost, policies cleared, bindings unbound, then queues and
//! exchanges deleted (with what is bound to them), then policies set, exchanges and queues
//! declared and bindings bound (both ends are there by then); vhosts deleted last, and
//! permissions deleted and set after.
//!
//! The diff is computed on a copy of the old state that each change is applied to as it is
//! planned, so that what a deletion takes with it (the bindings of a queue declared again under
//! its name) is made again.

use std::collections::BTreeMap;

use super::{DeclaredQueue, MetadataState, VhostDefinitions};
use crate::access_change::AccessChange;
use crate::definitions::{BindingDefinition, DefinitionCommand, DestinationKind};

/// One step from a state to another.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    ClusterName(Option<String>),
    /// `index`: the entry's whose deletion this is (the state keeps it), else 0.
    Access {
        change: AccessChange,
        index: u64,
    },
    /// Definition commands for a vhost, applied as a committed entry's are; no queue declares.
    Definitions {
        vhost: String,
        commands: Vec<DefinitionCommand>,
    },
    /// Queues declared, exactly as committed, with the proposals that declared them.
    DeclareQueues {
        vhost: String,
        queues: Vec<DeclaredQueue>,
    },
}

/// The changes that turn `old` into `new`.
pub fn diff(old: &MetadataState, new: &MetadataState) -> Vec<Change> {
    let mut plan = Plan {
        working: old.clone(),
        changes: Vec::new(),
    };
    if old.cluster_name != new.cluster_name {
        plan.push(Change::ClusterName(new.cluster_name.clone()));
    }
    plan.access_before_definitions(new);
    for (vhost, definitions) in &new.definitions {
        plan.vhost(vhost, definitions);
    }
    plan.access_after_definitions(new);
    plan.changes
}

/// The changes so far, and the old state with them applied.
struct Plan {
    working: MetadataState,
    changes: Vec<Change>,
}

/// Whether a vhost is there (`/` is, until deleted, without a record in the log).
fn exists(state: &MetadataState, vhost: &str) -> bool {
    state.definitions.contains_key(vhost) || state.access.vhosts.contains_key(vhost)
}

/// The deletions in `to` that `from` has not seen: (name, index).
fn unseen(from: &BTreeMap<String, u64>, to: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    to.iter()
        .filter(|(name, index)| from.get(*name) != Some(*index))
        .map(|(name, index)| (name.clone(), *index))
        .collect()
}

impl Plan {
    fn push(&mut self, change: Change) {
        self.working.apply_change(&change);
        self.changes.push(change);
    }

    /// An access change, as the entry at `index` made it (a deletion's index is kept).
    fn access(&mut self, change: AccessChange, index: u64) {
        self.push(Change::Access { change, index });
    }

    /// Users deleted since (made again or not) and vhosts deleted and made again since, then
    /// vhosts and users made or changed.
    fn access_before_definitions(&mut self, new: &MetadataState) {
        let to = &new.access;
        for (user, index) in unseen(&self.working.access.deleted_users, &to.deleted_users) {
            self.access(AccessChange::DeleteUser(user), index);
        }
        for (vhost, index) in unseen(&self.working.access.deleted_vhosts, &to.deleted_vhosts) {
            if exists(new, &vhost) {
                self.access(AccessChange::DeleteVhost(vhost), index);
            }
        }
        for (name, record) in &to.vhosts {
            if self.working.access.vhosts.get(name) != Some(record) {
                self.access(AccessChange::PutVhost(record.clone()), 0);
            }
        }
        for (name, record) in &to.users {
            if self.working.access.users.get(name) != Some(record) {
                self.access(AccessChange::PutUser(record.clone()), 0);
            }
        }
    }

    /// Vhosts deleted, then permissions deleted and set, and topic permissions set (after the
    /// vhosts' deletion, which takes the permissions in them: a permission committed for a vhost
    /// since deleted stays, as it did in the log).
    fn access_after_definitions(&mut self, new: &MetadataState) {
        let to = &new.access;
        for (vhost, index) in unseen(&self.working.access.deleted_vhosts, &to.deleted_vhosts) {
            self.access(AccessChange::DeleteVhost(vhost), index);
        }
        for (vhost, users) in &to.deleted_permissions {
            let seen = self.working.access.deleted_permissions.get(vhost);
            for (user, index) in unseen(seen.unwrap_or(&BTreeMap::new()), users) {
                let change = AccessChange::DeletePermission {
                    vhost: vhost.clone(),
                    user,
                };
                self.access(change, index);
            }
        }
        for (vhost, users) in &to.permissions {
            for (user, record) in users {
                let now = self
                    .working
                    .access
                    .permissions
                    .get(vhost)
                    .and_then(|u| u.get(user));
                if now != Some(record) {
                    self.access(AccessChange::PutPermission(record.clone()), 0);
                }
            }
        }
        // Topic permissions that go (set to none), then those set.
        let mut topic = Vec::new();
        for (vhost, users) in &self.working.access.topic_permissions {
            for user in users.keys() {
                let kept = to
                    .topic_permissions
                    .get(vhost)
                    .is_some_and(|u| u.contains_key(user));
                if !kept {
                    topic.push((vhost.clone(), user.clone(), Vec::new()));
                }
            }
        }
        for (vhost, users) in &to.topic_permissions {
            for (user, permissions) in users {
                let now = self
                    .working
                    .access
                    .topic_permissions
                    .get(vhost)
                    .and_then(|u| u.get(user));
                if now != Some(permissions) {
                    topic.push((vhost.clone(), user.clone(), permissions.clone()));
                }
            }
        }
        for (vhost, user, permissions) in topic {
            let change = AccessChange::SetTopicPermissions {
                vhost,
                user,
                permissions,
            };
            self.access(change, 0);
        }
    }

    /// One vhost's definitions turned into `to`'s.
    fn vhost(&mut self, vhost: &str, to: &VhostDefinitions) {
        let Some(from) = self.working.definitions.get(vhost) else {
            // The vhost is made before: only a state that skipped its put lacks it.
            return;
        };
        let removals = removals(from, to);
        if !removals.is_empty() {
            self.push(Change::Definitions {
                vhost: vhost.to_owned(),
                commands: removals,
            });
        }
        let Some(from) = self.working.definitions.get(vhost) else {
            return;
        };
        let mut additions: Vec<DefinitionCommand> = to
            .all_policies()
            .filter(|p| from.policy(p.kind, &p.name) != Some(*p))
            .map(|p| DefinitionCommand::SetPolicy(p.clone()))
            .collect();
        additions.extend(
            to.exchanges
                .values()
                .filter(|e| !from.exchanges.contains_key(&e.name))
                .map(|e| DefinitionCommand::DeclareExchange(e.clone())),
        );
        // A queue's members changed (it was not deleted: see `removals`).
        additions.extend(
            to.queues
                .values()
                .filter(|q| {
                    from.queues
                        .get(&q.definition.name)
                        .is_some_and(|f| f.definition.members != q.definition.members)
                })
                .filter_map(|q| {
                    Some(DefinitionCommand::SetQueueMembers {
                        name: q.definition.name.clone(),
                        incarnation: q.definition.incarnation,
                        members: q.definition.members.clone()?,
                    })
                }),
        );
        let queues: Vec<DeclaredQueue> = to
            .queues
            .values()
            .filter(|q| !from.queues.contains_key(&q.definition.name))
            .cloned()
            .collect();
        let bindings: Vec<DefinitionCommand> = to
            .bindings
            .iter()
            .filter(|b| !from.bindings.contains(b))
            .map(|b| DefinitionCommand::Bind {
                binding: b.clone(),
                durable: is_durable(to, b),
            })
            .collect();
        if !additions.is_empty() {
            self.push(Change::Definitions {
                vhost: vhost.to_owned(),
                commands: additions,
            });
        }
        if !queues.is_empty() {
            self.push(Change::DeclareQueues {
                vhost: vhost.to_owned(),
                queues,
            });
        }
        if !bindings.is_empty() {
            self.push(Change::Definitions {
                vhost: vhost.to_owned(),
                commands: bindings,
            });
        }
    }
}

/// What goes from `from` to reach `to`: policies cleared, bindings unbound, queues and exchanges
/// that are not there or not the same deleted.
fn removals(from: &VhostDefinitions, to: &VhostDefinitions) -> Vec<DefinitionCommand> {
    let mut commands: Vec<DefinitionCommand> = from
        .all_policies()
        .filter(|p| to.policy(p.kind, &p.name).is_none())
        .map(|p| DefinitionCommand::ClearPolicy {
            kind: p.kind,
            name: p.name.clone(),
        })
        .collect();
    commands.extend(
        from.bindings
            .iter()
            .filter(|b| !to.bindings.contains(b))
            .map(|b| DefinitionCommand::Unbind {
                binding: b.clone(),
                durable: is_durable(from, b),
            }),
    );
    commands.extend(
        from.queues
            .values()
            .filter(|q| {
                !to.queues
                    .get(&q.definition.name)
                    .is_some_and(|t| same_but_members(q, t))
            })
            .map(|q| DefinitionCommand::DeleteQueue {
                name: q.definition.name.clone(),
                storage_id: q.definition.storage_id,
                incarnation: q.definition.incarnation,
            }),
    );
    commands.extend(
        from.exchanges
            .values()
            .filter(|e| to.exchanges.get(&e.name) != Some(*e))
            .map(|e| DefinitionCommand::DeleteExchange {
                name: e.name.clone(),
                durable: e.durable,
            }),
    );
    commands
}

/// Whether two queues are the same declare, their members (which change) aside.
fn same_but_members(a: &DeclaredQueue, b: &DeclaredQueue) -> bool {
    let mut b = b.clone();
    b.definition.members = a.definition.members.clone();
    *a == b
}

/// Whether a binding is kept on disk: both ends durable, as the topology decides it.
fn is_durable(definitions: &VhostDefinitions, binding: &BindingDefinition) -> bool {
    let source = definitions
        .exchanges
        .get(&binding.source)
        .is_some_and(|e| e.durable);
    let destination = match binding.destination_kind {
        DestinationKind::Queue => definitions
            .queues
            .get(&binding.destination)
            .is_some_and(|q| q.definition.storage_id.is_some()),
        DestinationKind::Exchange => definitions
            .exchanges
            .get(&binding.destination)
            .is_some_and(|e| e.durable),
    };
    source && destination
}
