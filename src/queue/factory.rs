//! The queue factory: the one place a queue is created, by its `x-queue-type`.
//!
//! A quorum queue in a cluster is a Raft group of its own ([`super::quorum`]) on its members
//! (a proxy to one of them elsewhere); so is a stream ([`super::stream::replicated`]), each member
//! keeping a copy of its log. Alone, a stream runs on its own log ([`super::stream`]), and the
//! other types on the single-node engine ([`super::owner`]) (a quorum queue alone is as durable
//! there: its confirms wait for the store's fsync); a classic queue in a cluster lives on its
//! declaring node. The declare-time rules of each type are enforced when the arguments are
//! parsed ([`super::args`]).

use std::sync::{Arc, Weak};

use warren_storage::Store;

use super::args::QueueType;
use super::host::QueueHost;
use super::owner;
use super::quorum;
use super::quorum::host::Replication;
use super::recovery::Recovery;
use super::remote::{self, Remote};
use super::stream;
use super::{QueueHandle, QueueSpec};

/// Where this node stands: alone, or a member of a cluster (whose queues may live elsewhere).
#[derive(Clone, Default)]
pub enum Placement {
    #[default]
    Alone,
    Member {
        /// This node's name.
        me: Arc<str>,
        remote: Remote,
        /// What quorum queues' groups need.
        replication: Replication,
    },
}

impl Placement {
    /// The home of a queue declared on this node now: this node, in a cluster.
    pub fn home_here(&self) -> Option<String> {
        match self {
            Placement::Alone => None,
            Placement::Member { me, .. } => Some(me.to_string()),
        }
    }

    /// The home of a queue `queue` declared on this node now: this node, in a cluster; for a
    /// quorum queue whose leader is to be `balanced`, the node that leads the fewest.
    pub fn home_for(&self, queue: &str, balanced: bool) -> Option<String> {
        match self {
            Placement::Member { replication, .. } if balanced => {
                Some(replication.balanced_home(queue))
            }
            _ => self.home_here(),
        }
    }

    pub fn is_member(&self) -> bool {
        matches!(self, Placement::Member { .. })
    }

    /// Whether a queue homed on `home` lives on another node.
    pub fn is_remote(&self, home: Option<&str>) -> bool {
        match (self, home) {
            (Placement::Member { me, .. }, Some(home)) => home != &**me,
            _ => false,
        }
    }
}

/// The members of a stream declared on `home`: `x-initial-cluster-size` nodes (three by
/// default, at most the cluster's), the declaring node first, as a quorum queue's.
fn stream_members(
    replication: &Replication,
    home: &str,
    spec: &QueueSpec,
) -> Vec<warren_cluster::Node> {
    let size = super::args::StreamArgs::of(&spec.arguments).initial_cluster_size;
    replication.members_of(home, size, spec.members.as_deref())
}

/// Creates a queue of the type its arguments name and starts it: here, or (homed on another
/// node) as a proxy of it. `recovered` holds the messages a durable queue had on disk, in order.
pub fn create<H: QueueHost + 'static>(
    mut spec: QueueSpec,
    host: Weak<H>,
    store: &Store,
    recovered: Option<Recovery>,
    placement: &Placement,
    home: Option<&str>,
) -> Arc<QueueHandle> {
    if let (
        Placement::Member {
            me, replication, ..
        },
        Some(home),
    ) = (placement, home)
    {
        if spec.args.queue_type == QueueType::Quorum {
            let members =
                replication.members_of(home, spec.args.initial_group_size, spec.members.as_deref());
            if members.iter().any(|m| *m.name == **me) {
                let host: Weak<dyn QueueHost> = host.clone();
                // A group whose members were changed exists already: a member added later
                // waits for its leader to add it, its log empty until then.
                let joins = spec.members.is_some();
                return quorum::host::spawn(
                    spec,
                    host,
                    store.clone(),
                    replication.clone(),
                    members,
                    joins,
                );
            }
        }
        if spec.args.queue_type == QueueType::Stream && spec.storage_id.is_some() {
            let members = stream_members(replication, home, &spec);
            if members.iter().any(|m| *m.name == **me) {
                let host: Weak<dyn QueueHost> = host.clone();
                return stream::replicated::spawn(spec, host, store, replication.clone(), members);
            }
        }
    }
    if let (
        Placement::Member {
            remote,
            replication,
            ..
        },
        Some(home),
    ) = (placement, home)
    {
        if placement.is_remote(Some(home)) {
            let vhost = host
                .upgrade()
                .map(|h| h.vhost_name().to_owned())
                .unwrap_or_default();
            // A quorum queue is served by any of its members (the declaring node first, while
            // its members are those chosen at its declare).
            let homes = match spec.args.queue_type {
                QueueType::Quorum => replication
                    .members_of(home, spec.args.initial_group_size, spec.members.as_deref())
                    .into_iter()
                    .map(|m| m.name)
                    .collect(),
                QueueType::Stream if spec.storage_id.is_some() => {
                    stream_members(replication, home, &spec)
                        .into_iter()
                        .map(|m| m.name)
                        .collect()
                }
                _ => Vec::new(),
            };
            let homes = match homes.is_empty() {
                true => vec![home.to_owned()],
                false => {
                    // Shown as the queue's members here too, as on its members' nodes.
                    spec.members = Some(homes.clone());
                    homes
                }
            };
            return remote::spawn(spec, &vhost, homes, remote.clone());
        }
    }
    match spec.args.queue_type {
        // A stream has a log of its own (stored arguments of a non-durable one, from before
        // streams had one, run on the classic engine).
        QueueType::Stream if spec.storage_id.is_some() => stream::spawn(spec, host, store),
        QueueType::Classic | QueueType::Quorum | QueueType::Stream => {
            owner::spawn(spec, host, store, recovered)
        }
    }
}
