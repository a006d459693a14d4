//! The queue factory: the one place a queue is created, by its `x-queue-type`.
//!
//! Every type runs on the single-node engine ([`super::owner`]) for now; the declare-time rules
//! of each type (quorum and stream queues are durable, never exclusive nor auto-delete) are
//! enforced when the arguments are parsed ([`super::args`]). Replicated types get their own
//! engines here when the cluster exists.

use std::sync::{Arc, Weak};

use warren_storage::Store;

use super::args::QueueType;
use super::host::QueueHost;
use super::owner;
use super::recovery::Recovery;
use super::remote::{self, Remote};
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

/// Creates a queue of the type its arguments name and starts it: here, or (homed on another
/// node) as a proxy of it. `recovered` holds the messages a durable queue had on disk, in order.
pub fn create<H: QueueHost + 'static>(
    spec: QueueSpec,
    host: Weak<H>,
    store: &Store,
    recovered: Option<Recovery>,
    placement: &Placement,
    home: Option<&str>,
) -> Arc<QueueHandle> {
    if let (Placement::Member { remote, .. }, Some(home)) = (placement, home) {
        if placement.is_remote(Some(home)) {
            let vhost = host
                .upgrade()
                .map(|h| h.vhost_name().to_owned())
                .unwrap_or_default();
            return remote::spawn(spec, &vhost, home.to_owned(), remote.clone());
        }
    }
    match spec.args.queue_type {
        QueueType::Classic | QueueType::Quorum | QueueType::Stream => {
            owner::spawn(spec, host, store, recovered)
        }
    }
}
