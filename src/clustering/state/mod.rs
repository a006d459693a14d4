//! The metadata group's replicated state: what the committed log adds up to, the same on every
//! node. It is pure (no I/O, nothing of the broker's): every committed entry changes it in the
//! same way on every node, whatever the entry does to the node's broker (an entry applied at its
//! origin already, a declare of this node's dropped after a restart: the broker skips them, the
//! state does not). It is what the group's snapshot holds, so that the log can be compacted.
//!
//! - Definitions follow `crate::vhost`'s topology rules (`Topology::apply`): a declare of a name
//!   taken is skipped, a binding needs both ends, deleting a queue or exchange takes the bindings
//!   to (and from) it, a queue removal naming another incarnation is skipped. The corrections a
//!   broker makes when applying (an unbind for a binding whose end went meanwhile, an auto-delete
//!   exchange left empty) are not made here: their origin records them, and they arrive later as
//!   entries. The state may lag the broker by them, never lead it.
//! - A queue keeps the proposal that declared it, so that installing a snapshot can tell this
//!   node's transient queues from before a restart (dropped, as replaying their declare drops
//!   them) from those of the running process.
//! - The last deletion of each user, vhost and permission is remembered (by its entry's index):
//!   a node's default user, `/` and the permission between them are its own, seeded on its disk
//!   and not in the log, and a snapshot that comes after their deletion must still delete them;
//!   and one deleted and made again since an older state is deleted and made again by the diff
//!   (what went with it goes), as the entries did.
//! - `/` has definitions from the start, as every node seeds it; a vhost put creates the
//!   definitions of one not there, a vhost deletion drops them, and definitions for a vhost
//!   without them are skipped, as the broker skips them.
//!
//! `diff.rs` turns one state into another as changes the broker applies (installing a snapshot).

mod diff;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use warren_amqp::types::FieldTable;
use warren_cluster::NodeId;
use warren_storage::{PermissionRecord, TopicPermissionRecord, UserRecord, VhostRecord};

use super::metadata::{MetadataCommand, CLUSTER_QUEUE_IDS};
use crate::access_change::AccessChange;
use crate::definitions::{
    removal_meant_for, BindingDefinition, DefinitionCommand, DestinationKind, ExchangeDefinition,
    QueueDefinition,
};
use crate::policy::{PolicyDefinition, PolicyKind};
use crate::vhost::PREDECLARED;

pub use diff::{diff, Change};

/// The vhost every node seeds on a fresh data directory.
const DEFAULT_VHOST: &str = "/";

/// Everything the metadata log has committed, as one value (the snapshot is this, serialized).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataState {
    pub cluster_name: Option<String>,
    pub access: AccessState,
    /// Each vhost's definitions, by vhost name.
    pub definitions: BTreeMap<String, VhostDefinitions>,
}

impl Default for MetadataState {
    fn default() -> Self {
        MetadataState {
            cluster_name: None,
            access: AccessState::default(),
            definitions: BTreeMap::from([(DEFAULT_VHOST.to_owned(), VhostDefinitions::default())]),
        }
    }
}

/// Users, vhosts and permissions, as the records the log carries (limits included).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessState {
    pub users: BTreeMap<String, UserRecord>,
    /// The index of each user's last deletion.
    pub deleted_users: BTreeMap<String, u64>,
    pub vhosts: BTreeMap<String, VhostRecord>,
    /// The index of each vhost's last deletion.
    pub deleted_vhosts: BTreeMap<String, u64>,
    /// By vhost, then user.
    pub permissions: BTreeMap<String, BTreeMap<String, PermissionRecord>>,
    /// The index of each permission's last deletion (forgotten with its user or vhost), by
    /// vhost, then user.
    pub deleted_permissions: BTreeMap<String, BTreeMap<String, u64>>,
    /// A user's topic permissions in a vhost (never empty), by vhost, then user.
    pub topic_permissions: BTreeMap<String, BTreeMap<String, Vec<TopicPermissionRecord>>>,
}

/// A queue as its declare was committed, and the proposal that declared it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeclaredQueue {
    /// With the incarnation and storage id the log gave it.
    pub definition: QueueDefinition,
    pub declarer: Declarer,
}

/// The proposal that made an entry: the proposing node and its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declarer {
    pub node: NodeId,
    pub number: u64,
}

impl Declarer {
    /// For a declare whose proposal is not known: no node takes it for one of its own.
    pub const UNKNOWN: Declarer = Declarer {
        node: NodeId::MAX,
        number: 0,
    };
}

/// One vhost's definitions as committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VhostDefinitions {
    pub policies: BTreeMap<String, PolicyDefinition>,
    pub operator_policies: BTreeMap<String, PolicyDefinition>,
    /// RabbitMQ's predeclared exchanges among them, as a vhost's topology has them.
    pub exchanges: BTreeMap<String, ExchangeDefinition>,
    pub queues: BTreeMap<String, DeclaredQueue>,
    pub bindings: Bindings,
}

/// A vhost's bindings, each once, in an order of their own (serialized as a list).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<BindingDefinition>", into = "Vec<BindingDefinition>")]
pub struct Bindings(BTreeMap<BindingKey, BindingDefinition>);

/// What tells bindings apart, as the topology does: source, destination (a queue and an exchange
/// of one name are two), routing key and arguments (as encoded: argument tables hold floats,
/// which have no order of their own).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct BindingKey {
    source: String,
    to_exchange: bool,
    destination: String,
    routing_key: String,
    arguments: Vec<u8>,
}

impl BindingKey {
    fn of(binding: &BindingDefinition) -> Self {
        BindingKey {
            source: binding.source.clone(),
            to_exchange: binding.destination_kind == DestinationKind::Exchange,
            destination: binding.destination.clone(),
            routing_key: binding.routing_key.clone(),
            arguments: warren_amqp::encode::encode_table(&binding.arguments),
        }
    }
}

impl From<Vec<BindingDefinition>> for Bindings {
    fn from(list: Vec<BindingDefinition>) -> Self {
        Bindings(list.into_iter().map(|b| (BindingKey::of(&b), b)).collect())
    }
}

impl From<Bindings> for Vec<BindingDefinition> {
    fn from(bindings: Bindings) -> Self {
        bindings.0.into_values().collect()
    }
}

impl Bindings {
    pub fn iter(&self) -> impl Iterator<Item = &BindingDefinition> {
        self.0.values()
    }

    pub fn contains(&self, binding: &BindingDefinition) -> bool {
        self.0.contains_key(&BindingKey::of(binding))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn insert(&mut self, binding: &BindingDefinition) {
        self.0.insert(BindingKey::of(binding), binding.clone());
    }

    fn remove(&mut self, binding: &BindingDefinition) {
        self.0.remove(&BindingKey::of(binding));
    }

    fn retain(&mut self, keep: impl Fn(&BindingDefinition) -> bool) {
        self.0.retain(|_, b| keep(b));
    }
}

/// Gives a committed queue declare what the log gives it, the same on every node: its entry's
/// index as its incarnation and, when kept on disk, a storage id made from that index.
pub fn stamp_declare(definition: &mut QueueDefinition, index: u64) {
    definition.incarnation = index;
    if definition.storage_id.is_some() {
        definition.storage_id = Some(CLUSTER_QUEUE_IDS | index);
    }
}

impl MetadataState {
    /// Applies one committed entry: `index` its log index, `declarer` the proposal it came in.
    pub fn apply(&mut self, index: u64, declarer: Declarer, command: &MetadataCommand) {
        match command {
            MetadataCommand::SetClusterName(name) => self.cluster_name = Some(name.clone()),
            MetadataCommand::Definitions {
                vhost, commands, ..
            } => {
                let Some(definitions) = self.definitions.get_mut(vhost) else {
                    return;
                };
                for command in commands {
                    match command {
                        DefinitionCommand::DeclareQueue(q) => {
                            let mut q = q.clone();
                            stamp_declare(&mut q, index);
                            definitions.declare_queue(q, declarer);
                        }
                        other => definitions.apply(other),
                    }
                }
            }
            MetadataCommand::Access(change) => self.apply_access(change, index),
        }
    }

    /// Applies one change of a diff (see `diff.rs`).
    pub fn apply_change(&mut self, change: &Change) {
        match change {
            Change::ClusterName(name) => self.cluster_name = name.clone(),
            Change::Access { change, index } => self.apply_access(change, *index),
            Change::Definitions { vhost, commands } => {
                if let Some(definitions) = self.definitions.get_mut(vhost) {
                    for command in commands {
                        definitions.apply(command);
                    }
                }
            }
            Change::DeclareQueues { vhost, queues } => {
                if let Some(definitions) = self.definitions.get_mut(vhost) {
                    for q in queues {
                        definitions.declare_queue(q.definition.clone(), q.declarer);
                    }
                }
            }
        }
    }

    /// Applies an access change committed at `index`.
    fn apply_access(&mut self, change: &AccessChange, index: u64) {
        let access = &mut self.access;
        match change {
            AccessChange::PutUser(record) => {
                access.users.insert(record.name.clone(), record.clone());
            }
            AccessChange::DeleteUser(name) => {
                access.users.remove(name);
                access.deleted_users.insert(name.clone(), index);
                // Its permissions go with it, as the broker's do.
                for users in access.permissions.values_mut() {
                    users.remove(name);
                }
                for users in access.deleted_permissions.values_mut() {
                    users.remove(name);
                }
                for users in access.topic_permissions.values_mut() {
                    users.remove(name);
                }
            }
            AccessChange::PutVhost(record) => {
                access.vhosts.insert(record.name.clone(), record.clone());
                self.definitions.entry(record.name.clone()).or_default();
            }
            AccessChange::DeleteVhost(name) => {
                access.vhosts.remove(name);
                access.deleted_vhosts.insert(name.clone(), index);
                access.permissions.remove(name);
                access.deleted_permissions.remove(name);
                access.topic_permissions.remove(name);
                self.definitions.remove(name);
            }
            AccessChange::PutPermission(record) => {
                access
                    .permissions
                    .entry(record.vhost.clone())
                    .or_default()
                    .insert(record.user.clone(), record.clone());
            }
            AccessChange::DeletePermission { vhost, user } => {
                if let Some(users) = access.permissions.get_mut(vhost) {
                    users.remove(user);
                }
                access
                    .deleted_permissions
                    .entry(vhost.clone())
                    .or_default()
                    .insert(user.clone(), index);
            }
            AccessChange::SetTopicPermissions {
                vhost,
                user,
                permissions,
            } => {
                let users = access.topic_permissions.entry(vhost.clone()).or_default();
                match permissions.is_empty() {
                    true => users.remove(user),
                    false => users.insert(user.clone(), permissions.clone()),
                };
            }
        }
        access.drop_empty();
    }
}

impl AccessState {
    /// Forgets the vhosts left without a (deleted) permission, so that equal states are equal.
    fn drop_empty(&mut self) {
        self.permissions.retain(|_, users| !users.is_empty());
        self.deleted_permissions
            .retain(|_, users| !users.is_empty());
        self.topic_permissions.retain(|_, users| !users.is_empty());
    }
}

impl Default for VhostDefinitions {
    /// A vhost's definitions before anything is declared: the predeclared exchanges.
    fn default() -> Self {
        let exchanges = PREDECLARED
            .iter()
            .map(|&(name, kind, internal)| {
                let exchange = ExchangeDefinition {
                    name: name.to_owned(),
                    kind,
                    durable: true,
                    auto_delete: false,
                    internal,
                    arguments: FieldTable::default(),
                };
                (name.to_owned(), exchange)
            })
            .collect();
        VhostDefinitions {
            policies: BTreeMap::new(),
            operator_policies: BTreeMap::new(),
            exchanges,
            queues: BTreeMap::new(),
            bindings: Bindings::default(),
        }
    }
}

impl VhostDefinitions {
    fn policies_mut(&mut self, kind: PolicyKind) -> &mut BTreeMap<String, PolicyDefinition> {
        match kind {
            PolicyKind::User => &mut self.policies,
            PolicyKind::Operator => &mut self.operator_policies,
        }
    }

    /// Every policy of both kinds.
    pub fn all_policies(&self) -> impl Iterator<Item = &PolicyDefinition> {
        self.policies
            .values()
            .chain(self.operator_policies.values())
    }

    pub fn policy(&self, kind: PolicyKind, name: &str) -> Option<&PolicyDefinition> {
        match kind {
            PolicyKind::User => self.policies.get(name),
            PolicyKind::Operator => self.operator_policies.get(name),
        }
    }

    /// Declares a queue as committed (stamped already), unless its name is taken.
    fn declare_queue(&mut self, definition: QueueDefinition, declarer: Declarer) {
        if self.queues.contains_key(&definition.name) {
            return;
        }
        self.queues.insert(
            definition.name.clone(),
            DeclaredQueue {
                definition,
                declarer,
            },
        );
    }

    /// Whether a binding's destination is there.
    fn has_destination(&self, binding: &BindingDefinition) -> bool {
        match binding.destination_kind {
            DestinationKind::Queue => self.queues.contains_key(&binding.destination),
            DestinationKind::Exchange => self.exchanges.contains_key(&binding.destination),
        }
    }

    /// Applies one command other than a queue declare (which needs its declarer), as
    /// `Topology::apply` does.
    fn apply(&mut self, command: &DefinitionCommand) {
        match command {
            DefinitionCommand::DeclareQueue(q) => {
                self.declare_queue(q.clone(), Declarer::UNKNOWN);
            }
            DefinitionCommand::DeleteQueue {
                name, incarnation, ..
            } => {
                let meant = self
                    .queues
                    .get(name)
                    .is_some_and(|q| removal_meant_for(*incarnation, q.definition.incarnation));
                if meant {
                    self.queues.remove(name);
                    self.bindings.retain(|b| {
                        !(b.destination_kind == DestinationKind::Queue && b.destination == *name)
                    });
                }
            }
            DefinitionCommand::DeclareExchange(e) => {
                self.exchanges
                    .entry(e.name.clone())
                    .or_insert_with(|| e.clone());
            }
            DefinitionCommand::DeleteExchange { name, .. } => {
                if self.exchanges.remove(name).is_some() {
                    self.bindings.retain(|b| {
                        b.source != *name
                            && !(b.destination_kind == DestinationKind::Exchange
                                && b.destination == *name)
                    });
                }
            }
            DefinitionCommand::Bind { binding, .. } => {
                if self.exchanges.contains_key(&binding.source) && self.has_destination(binding) {
                    self.bindings.insert(binding);
                }
            }
            DefinitionCommand::Unbind { binding, .. } => self.bindings.remove(binding),
            DefinitionCommand::SetPolicy(policy) => {
                self.policies_mut(policy.kind)
                    .insert(policy.name.clone(), policy.clone());
            }
            DefinitionCommand::ClearPolicy { kind, name } => {
                self.policies_mut(*kind).remove(name);
            }
            DefinitionCommand::SetQueueMembers {
                name,
                incarnation,
                members,
            } => {
                if let Some(q) = self.queues.get_mut(name) {
                    if removal_meant_for(*incarnation, q.definition.incarnation) {
                        q.definition.members = Some(members.clone());
                    }
                }
            }
        }
    }
}
