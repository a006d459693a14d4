//! Listings of a vhost's queues, exchanges and bindings, as the management API shows them;
//! read-only views, apart from the AMQP operations.

use std::sync::Arc;

use warren_amqp::types::FieldTable;

use crate::exchange::{Destination, Exchange};
use crate::queue::QueueHandle;

use super::topology::Topology;
use super::Vhost;

/// An exchange as the management API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeInfo {
    pub name: String,
    pub kind: &'static str,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// The name of the (user) policy that applies to it, if any.
    pub policy: Option<String>,
}

/// A binding as the management API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingInfo {
    pub source: String,
    pub destination: String,
    pub destination_is_queue: bool,
    pub routing_key: String,
    pub arguments: FieldTable,
}

impl Vhost {
    pub fn queues(&self) -> Vec<Arc<QueueHandle>> {
        self.read().queues.values().cloned().collect()
    }

    /// The queue of that name, whoever owns it (the management API looks at any).
    pub fn find_queue(&self, name: &str) -> Option<Arc<QueueHandle>> {
        self.read().queues.get(name).cloned()
    }

    /// Whether an exchange of that name exists (the default exchange, `""`, always does).
    pub fn has_exchange(&self, name: &str) -> bool {
        self.read().exchanges.contains_key(name)
    }

    /// Every exchange, as the management API lists them (sorted by name).
    pub fn exchanges_info(&self) -> Vec<ExchangeInfo> {
        self.read().exchanges_info()
    }

    /// Adds a connection's tally of publishes to exchange `name` (gone meanwhile: dropped).
    pub fn count_exchange_publishes(&self, name: &str, published: u64, routed: u64) {
        if let Some(exchange) = self.read().exchanges.get(name) {
            exchange.stats.add(published, routed);
        }
    }

    /// Each exchange's stats, by name.
    pub fn exchange_stats(
        &self,
    ) -> std::collections::HashMap<String, std::sync::Arc<crate::exchange::stats::ExchangeStats>>
    {
        let topo = self.read();
        topo.exchanges
            .values()
            .map(|e| (e.name.clone(), e.stats.clone()))
            .collect()
    }

    /// Every binding, the default exchange's implicit ones to each queue first, as RabbitMQ
    /// lists them.
    pub fn bindings_info(&self) -> Vec<BindingInfo> {
        self.read().bindings_info()
    }
}

impl Topology {
    pub(super) fn exchanges_info(&self) -> Vec<ExchangeInfo> {
        let mut out: Vec<ExchangeInfo> = self
            .exchanges
            .values()
            .map(|e| ExchangeInfo {
                name: e.name.clone(),
                kind: e.kind.as_str(),
                durable: e.durable,
                auto_delete: e.auto_delete,
                internal: e.internal,
                arguments: e.arguments.clone(),
                policy: e.policies().policy_name().map(str::to_owned),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub(super) fn bindings_info(&self) -> Vec<BindingInfo> {
        let mut queues: Vec<&str> = self.queues.keys().map(String::as_str).collect();
        queues.sort_unstable();
        let mut out: Vec<BindingInfo> = queues
            .into_iter()
            .map(|q| BindingInfo {
                source: String::new(),
                destination: q.to_owned(),
                destination_is_queue: true,
                routing_key: q.to_owned(),
                arguments: FieldTable::default(),
            })
            .collect();
        let mut exchanges: Vec<&Exchange> = self.exchanges.values().collect();
        exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        for e in exchanges.into_iter().filter(|e| !e.name.is_empty()) {
            for b in e.bindings() {
                let (destination, destination_is_queue) = match &b.destination {
                    Destination::Queue(q) => (q.name.to_string(), true),
                    Destination::Exchange(x) => (x.to_string(), false),
                };
                out.push(BindingInfo {
                    source: e.name.clone(),
                    destination,
                    destination_is_queue,
                    routing_key: b.routing_key.clone(),
                    arguments: b.arguments.clone(),
                });
            }
        }
        out
    }
}
