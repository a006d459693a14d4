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
use super::{QueueHandle, QueueSpec};

/// Creates a queue of the type its arguments name and starts it. `recovered` holds the messages
/// a durable queue had on disk, in order.
pub fn create<H: QueueHost + 'static>(
    spec: QueueSpec,
    host: Weak<H>,
    store: &Store,
    recovered: Option<Recovery>,
) -> Arc<QueueHandle> {
    match spec.args.queue_type {
        QueueType::Classic | QueueType::Quorum | QueueType::Stream => {
            owner::spawn(spec, host, store, recovered)
        }
    }
}
