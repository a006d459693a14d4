//! The topology behind a vhost's lock: exchanges (with their bindings) and queues by name, and
//! applying a definition command to them. Applying is pure (no I/O, no waiting: the command was
//! made durable before), total (a command naming something missing, or a name already taken, is
//! skipped) and deterministic, so the same commands in the same order give the same topology:
//! a log replays onto a fresh one. The one thing it cannot make itself is a queue, which is a
//! running task: the caller starts it (`StartQueue`) and the topology keeps its handle.
//!
//! The vhost's policies live here too: a queue or exchange gets the ones that match it when it is
//! declared, and every queue and exchange is matched again when a policy is set or cleared (a
//! queue told of a change acts on it in its own task).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use warren_amqp::types::FieldTable;

use crate::definitions::{
    removal_meant_for, BindingDefinition, DefinitionCommand, DestinationKind, ExchangeDefinition,
    QueueDefinition,
};
use crate::exchange::{Destination, Exchange, ExchangeKind};
use crate::policy::{Applied as AppliedPolicies, ObjectKind, Policies};
use crate::queue::args::{ArgReader, Dedup, QueueType};
use crate::queue::dedup::DedupCache;
use crate::queue::QueueHandle;

pub(super) struct Topology {
    pub(super) vhost: String,
    pub(super) exchanges: HashMap<String, Exchange>,
    pub(super) queues: HashMap<String, Arc<QueueHandle>>,
    pub(super) policies: Policies,
}

/// Starts the queue a declare defines, under the policies that match it; `None` when it cannot
/// (the declare is then skipped).
pub(super) type StartQueue<'a> =
    dyn FnMut(&QueueDefinition, AppliedPolicies) -> Option<Arc<QueueHandle>> + 'a;

/// What applying a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    Changed,
    /// It already was so: a binding bound again, an unbind of what is not bound.
    Unchanged,
    /// Not applied: what it names (a binding's end included) is missing, or the name it declares
    /// is taken.
    Skipped,
}

/// The exchange arguments as the argument checks read them (for their error texts).
pub(super) fn exchange_args<'a>(
    args: &'a FieldTable,
    name: &'a str,
    vhost: &'a str,
) -> ArgReader<'a> {
    ArgReader {
        args,
        kind: "exchange",
        name,
        vhost,
    }
}

/// RabbitMQ's predeclared exchanges, in every vhost: name, type, internal (amq.rabbitmq.trace,
/// internal, is the firehose's).
pub const PREDECLARED: &[(&str, ExchangeKind, bool)] = &[
    ("", ExchangeKind::Direct, false),
    ("amq.direct", ExchangeKind::Direct, false),
    ("amq.fanout", ExchangeKind::Fanout, false),
    ("amq.topic", ExchangeKind::Topic, false),
    ("amq.headers", ExchangeKind::Headers, false),
    ("amq.match", ExchangeKind::Headers, false),
    ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
];

impl Topology {
    /// A vhost's topology before anything is declared: RabbitMQ's predeclared exchanges
    /// (amq.rabbitmq.trace, internal, is the firehose's).
    pub(super) fn new(vhost: &str) -> Self {
        let mut exchanges = HashMap::new();
        for &(name, kind, internal) in PREDECLARED {
            exchanges.insert(
                name.to_owned(),
                Exchange::new(name, kind, true, false, internal, FieldTable::default()),
            );
        }
        Topology {
            vhost: vhost.to_owned(),
            exchanges,
            queues: HashMap::new(),
            policies: Policies::default(),
        }
    }

    /// Applies one command. Deleting a queue or an exchange removes the bindings to it (and an
    /// exchange's own go with it); the auto-delete cascade is not applied here but planned as
    /// further commands (`cascade.rs`).
    pub(super) fn apply(
        &mut self,
        command: &DefinitionCommand,
        start_queue: &mut StartQueue<'_>,
    ) -> Applied {
        match command {
            DefinitionCommand::DeclareQueue(q) => {
                if self.queues.contains_key(&q.name) {
                    return Applied::Skipped;
                }
                let policies = self.policies.for_object(ObjectKind::Queue, &q.name);
                let Some(handle) = start_queue(q, policies) else {
                    return Applied::Skipped;
                };
                self.queues.insert(q.name.clone(), handle);
                Applied::Changed
            }
            DefinitionCommand::DeleteQueue {
                name, incarnation, ..
            } => {
                let same = self
                    .queues
                    .get(name)
                    .is_some_and(|q| removal_meant_for(*incarnation, q.incarnation));
                match same.then(|| self.queues.remove(name)).flatten() {
                    Some(q) => {
                        delete_if_live(&q);
                        self.unbind_destination(&Destination::Queue(q));
                        Applied::Changed
                    }
                    None => Applied::Skipped,
                }
            }
            DefinitionCommand::DeclareExchange(e) => {
                if self.exchanges.contains_key(&e.name) {
                    return Applied::Skipped;
                }
                let exchange = self.exchange(e);
                self.exchanges.insert(e.name.clone(), exchange);
                Applied::Changed
            }
            DefinitionCommand::DeleteExchange { name, .. } => {
                if self.exchanges.remove(name).is_none() {
                    return Applied::Skipped;
                }
                self.unbind_destination(&Destination::Exchange(name.as_str().into()));
                Applied::Changed
            }
            DefinitionCommand::Bind { binding, .. } => self.bind(binding),
            DefinitionCommand::Unbind { binding, .. } => {
                let Some(destination) = self.destination(binding) else {
                    return Applied::Unchanged;
                };
                let Some(ex) = self.exchanges.get_mut(&binding.source) else {
                    return Applied::Unchanged;
                };
                if ex.unbind(&destination, &binding.routing_key, &binding.arguments) {
                    Applied::Changed
                } else {
                    Applied::Unchanged
                }
            }
            DefinitionCommand::SetPolicy(policy) => {
                if !self.policies.set(policy.clone()) {
                    return Applied::Skipped;
                }
                self.apply_policies();
                Applied::Changed
            }
            DefinitionCommand::ClearPolicy { kind, name } => {
                if !self.policies.clear(*kind, name) {
                    return Applied::Unchanged;
                }
                self.apply_policies();
                Applied::Changed
            }
            DefinitionCommand::SetQueueMembers {
                name,
                incarnation,
                members,
            } => {
                let Some(old) = self
                    .queues
                    .get(name)
                    .filter(|q| removal_meant_for(*incarnation, q.incarnation))
                    .filter(|q| q.args.queue_type == QueueType::Quorum)
                    .cloned()
                else {
                    return Applied::Skipped;
                };
                if old.set_members(members) {
                    return Applied::Changed;
                }
                // This node's part changes (a member here or not), or a proxy's members do: a
                // new handle takes the queue's name and bindings. The old one serves the
                // consumers it has until they go (a member that leaves cancels its own).
                let definition = old.definition(Some(members.clone()));
                let policies = self.policies.for_object(ObjectKind::Queue, name);
                let Some(new) = start_queue(&definition, policies) else {
                    return Applied::Skipped;
                };
                let (from, to) = (Destination::Queue(old), Destination::Queue(new.clone()));
                for ex in self.exchanges.values_mut() {
                    ex.repoint(&from, &to);
                }
                self.queues.insert(name.clone(), new);
                Applied::Changed
            }
        }
    }

    /// Matches every exchange and queue against the policies again, after a change to them; a
    /// queue whose policies changed is told (RabbitMQ re-applies only to those).
    fn apply_policies(&mut self) {
        for (name, exchange) in self.exchanges.iter_mut() {
            exchange.set_policies(self.policies.for_object(ObjectKind::Exchange, name));
        }
        for (name, queue) in &self.queues {
            queue.set_policies(self.policies.for_object(ObjectKind::Queue, name));
        }
    }

    fn bind(&mut self, binding: &BindingDefinition) -> Applied {
        let Some(destination) = self.destination(binding) else {
            return Applied::Skipped;
        };
        let Some(ex) = self.exchanges.get_mut(&binding.source) else {
            return Applied::Skipped;
        };
        if ex.has_binding(&destination, &binding.routing_key, &binding.arguments) {
            return Applied::Unchanged;
        }
        match ex.bind(destination, &binding.routing_key, binding.arguments.clone()) {
            Ok(()) => Applied::Changed,
            // Checked before the command was committed; one that fails here binds nothing.
            Err(_) => Applied::Skipped,
        }
    }

    /// Where a binding leads, if that queue or exchange exists.
    pub(super) fn destination(&self, binding: &BindingDefinition) -> Option<Destination> {
        match binding.destination_kind {
            DestinationKind::Queue => self
                .queues
                .get(&binding.destination)
                .cloned()
                .map(Destination::Queue),
            DestinationKind::Exchange => self
                .exchanges
                .contains_key(&binding.destination)
                .then(|| Destination::Exchange(binding.destination.as_str().into())),
        }
    }

    /// Whether a binding from `source` to `destination` is kept on disk: both ends are durable
    /// (as RabbitMQ records bindings).
    pub(super) fn is_durable_binding(&self, source: &str, destination: &Destination) -> bool {
        self.exchanges.get(source).is_some_and(|e| e.durable)
            && match destination {
                Destination::Queue(q) => q.is_durable_on_disk(),
                Destination::Exchange(name) => {
                    self.exchanges.get(&**name).is_some_and(|e| e.durable)
                }
            }
    }

    fn exchange(&self, e: &ExchangeDefinition) -> Exchange {
        let mut exchange = Exchange::new(
            e.name.clone(),
            e.kind,
            e.durable,
            e.auto_delete,
            e.internal,
            e.arguments.clone(),
        );
        // Checked before the command was committed; stored arguments that no longer parse
        // deduplicate nothing.
        if let Ok(Some(settings)) = Dedup::parse(&exchange_args(&e.arguments, &e.name, &self.vhost))
        {
            exchange.dedup = Some(Mutex::new(DedupCache::new(&settings, e.durable)));
        }
        exchange.set_policies(self.policies.for_object(ObjectKind::Exchange, &e.name));
        exchange
    }

    fn unbind_destination(&mut self, destination: &Destination) {
        for ex in self.exchanges.values_mut() {
            ex.unbind_destination(destination);
        }
    }
}

/// A queue of this node's that the cluster deleted without the queue deleting itself first (its
/// node was taken for gone, or a snapshot installed without it) is told to go now, with its
/// consumers cancelled, rather than left running unreachable. A queue that deleted itself (the
/// usual path) and another node's proxy have nothing to do.
fn delete_if_live(queue: &Arc<QueueHandle>) {
    if queue.forwards() || queue.is_deleted() {
        return;
    }
    // A replicated queue's group had the delete (the metadata's comes after it), or its others
    // are gone: the member here need not wait for it.
    if queue.drop_member() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let queue = queue.clone();
        runtime.spawn(async move { queue.delete_unconditionally().await });
    }
}
