//! The topology behind a vhost's lock: exchanges (with their bindings) and queues by name. Its
//! helpers keep memory and the store in step (a binding is recorded when both ends are durable)
//! and cascade auto-delete; they are apart from `Vhost` because they run with the lock held.

use std::collections::HashMap;
use std::sync::Arc;

use warren_amqp::encode::encode_table;
use warren_amqp::types::FieldTable;
use warren_amqp::AmqpError;
use warren_storage::{BindingRecord, Op, Store};

use crate::exchange::{Destination, Exchange};
use crate::queue::dedup;
use crate::queue::QueueHandle;

pub(super) struct Topology {
    pub(super) vhost: String,
    pub(super) store: Store,
    pub(super) exchanges: HashMap<String, Exchange>,
    pub(super) queues: HashMap<String, Arc<QueueHandle>>,
}

impl Topology {
    fn is_durable(&self, d: &Destination) -> bool {
        match d {
            Destination::Queue(q) => q.is_durable_on_disk(),
            Destination::Exchange(name) => self.exchanges.get(&**name).is_some_and(|e| e.durable),
        }
    }

    fn binding_record(
        &self,
        source: &str,
        d: &Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> BindingRecord {
        let (destination, destination_is_queue) = match d {
            Destination::Queue(q) => (q.name.to_string(), true),
            Destination::Exchange(name) => (name.to_string(), false),
        };
        BindingRecord {
            vhost: self.vhost.clone(),
            source: source.to_owned(),
            destination,
            destination_is_queue,
            routing_key: routing_key.to_owned(),
            arguments: encode_table(arguments),
        }
    }

    /// Adds a binding, recording it when both ends are durable (as RabbitMQ does).
    pub(super) fn bind(
        &mut self,
        source: &str,
        d: Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        let durable = self.exchanges.get(source).is_some_and(|e| e.durable) && self.is_durable(&d);
        let record = durable.then(|| self.binding_record(source, &d, routing_key, arguments));
        let Some(ex) = self.exchanges.get_mut(source) else {
            return Err(AmqpError::not_found(format!(
                "no exchange '{source}' in vhost '{}'",
                self.vhost
            )));
        };
        ex.bind(d, routing_key, arguments.clone())?;
        if let Some(record) = record {
            self.store.submit(Op::PutBinding(record), None);
        }
        Ok(())
    }

    /// Removes one binding from `source`; an auto-delete source left without bindings goes too.
    pub(super) fn unbind(
        &mut self,
        source: &str,
        destination: &Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) {
        let durable =
            self.exchanges.get(source).is_some_and(|e| e.durable) && self.is_durable(destination);
        let record =
            durable.then(|| self.binding_record(source, destination, routing_key, arguments));
        let Some(ex) = self.exchanges.get_mut(source) else {
            return;
        };
        if !ex.unbind(destination, routing_key, arguments) {
            return;
        }
        if let Some(record) = record {
            self.store.submit(Op::DeleteBinding(record), None);
        }
        if ex.auto_delete && ex.bindings().is_empty() {
            self.remove_exchange(source);
        }
    }

    /// Deletes an exchange with its bindings, in memory and on disk.
    pub(super) fn remove_exchange(&mut self, name: &str) {
        let Some(ex) = self.exchanges.remove(name) else {
            return;
        };
        if ex.durable {
            let vhost = self.vhost.clone();
            if ex.dedup.is_some() {
                let owner = dedup::exchange_owner(&vhost, name);
                self.store.submit(Op::ForgetAllIds { owner }, None);
            }
            self.store.submit(
                Op::DeleteExchange {
                    vhost: vhost.clone(),
                    name: name.to_owned(),
                },
                None,
            );
            self.store.submit(
                Op::DeleteBindingsFrom {
                    vhost,
                    exchange: name.to_owned(),
                },
                None,
            );
        }
        self.remove_bindings_to(&Destination::Exchange(name.into()), ex.durable);
    }

    /// Removes every binding leading to `destination` (it is gone), cascading auto-delete.
    pub(super) fn remove_bindings_to(&mut self, destination: &Destination, durable: bool) {
        if durable {
            let (name, is_queue) = match destination {
                Destination::Queue(q) => (q.name.to_string(), true),
                Destination::Exchange(name) => (name.to_string(), false),
            };
            self.store.submit(
                Op::DeleteBindingsTo {
                    vhost: self.vhost.clone(),
                    name,
                    is_queue,
                },
                None,
            );
        }
        let mut emptied = Vec::new();
        for ex in self.exchanges.values_mut() {
            if ex.unbind_destination(destination) && ex.auto_delete && ex.bindings().is_empty() {
                emptied.push(ex.name.clone());
            }
        }
        for name in emptied {
            self.remove_exchange(&name);
        }
    }
}
