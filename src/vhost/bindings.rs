//! Bindings: queue.bind / queue.unbind and exchange.bind / exchange.unbind, checked in
//! RabbitMQ's order and with its leniency on unbinding what is not there. Each is a change
//! (`change.rs`): checked under the change lock, committed, then applied.

use std::sync::Arc;

use warren_amqp::types::FieldTable;
use warren_amqp::AmqpError;

use crate::definitions::{BindingDefinition, DefinitionCommand, DestinationKind};
use crate::exchange::Destination;
use crate::queue::ConnectionId;

use super::topology::Topology;
use super::{default_exchange_refused, Vhost};

/// A binding as a method names it.
struct Named<'a> {
    source: &'a str,
    destination: &'a str,
    destination_kind: DestinationKind,
    routing_key: &'a str,
    arguments: &'a FieldTable,
}

impl<'a> Named<'a> {
    /// queue.bind / queue.unbind's binding.
    fn to_queue(
        exchange: &'a str,
        queue: &'a str,
        routing_key: &'a str,
        arguments: &'a FieldTable,
    ) -> Self {
        Named {
            source: exchange,
            destination: queue,
            destination_kind: DestinationKind::Queue,
            routing_key,
            arguments,
        }
    }

    /// exchange.bind / exchange.unbind's binding.
    fn to_exchange(
        source: &'a str,
        destination: &'a str,
        routing_key: &'a str,
        arguments: &'a FieldTable,
    ) -> Self {
        Named {
            source,
            destination,
            destination_kind: DestinationKind::Exchange,
            routing_key,
            arguments,
        }
    }

    fn definition(&self) -> BindingDefinition {
        BindingDefinition {
            source: self.source.to_owned(),
            destination: self.destination.to_owned(),
            destination_kind: self.destination_kind,
            routing_key: self.routing_key.to_owned(),
            arguments: self.arguments.clone(),
        }
    }

    /// The bind command, once the checks that need the topology pass: the source takes such
    /// arguments (a headers exchange's `x-match`). Both ends exist.
    fn bind(
        &self,
        topo: &Topology,
        destination: &Destination,
    ) -> Result<DefinitionCommand, AmqpError> {
        if let Some(ex) = topo.exchanges.get(self.source) {
            ex.check_binding(self.arguments)?;
        }
        Ok(DefinitionCommand::Bind {
            binding: self.definition(),
            durable: topo.is_durable_binding(self.source, destination),
        })
    }

    /// The unbind command with its cascade, or nothing when there is no such binding (RabbitMQ
    /// answers unbind-ok all the same).
    fn unbind(&self, topo: &Topology, destination: &Destination) -> Vec<DefinitionCommand> {
        let bound = topo
            .exchanges
            .get(self.source)
            .is_some_and(|ex| ex.has_binding(destination, self.routing_key, self.arguments));
        if !bound {
            return Vec::new();
        }
        topo.with_cascade(DefinitionCommand::Unbind {
            binding: self.definition(),
            durable: topo.is_durable_binding(self.source, destination),
        })
    }
}

impl Vhost {
    /// Binds a queue (or, with [`Vhost::bind_exchange`], an exchange) to an exchange.
    /// queue.bind, checked in RabbitMQ's order: default exchange, exchange, queue, exclusivity.
    pub async fn bind_queue(
        self: &Arc<Self>,
        queue: &str,
        connection: ConnectionId,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if exchange.is_empty() {
            return Err(default_exchange_refused());
        }
        let named = Named::to_queue(exchange, queue, routing_key, arguments);
        let change = self.begin_change().await;
        let command = {
            let topo = self.read();
            if !topo.exchanges.contains_key(exchange) {
                return Err(self.no_exchange(exchange));
            }
            let q = topo
                .queues
                .get(queue)
                .cloned()
                .ok_or_else(|| self.no_queue(queue))?;
            if q.exclusive_owner.is_some_and(|owner| owner != connection) {
                return Err(self.locked(queue));
            }
            named.bind(&topo, &Destination::Queue(q))?
        };
        self.commit(change, vec![command]).await?;
        Ok(())
    }

    /// queue.unbind: like RabbitMQ, unbinding a missing queue, exchange or binding succeeds;
    /// removing an existing binding of another connection's exclusive queue is refused (405).
    pub async fn unbind_queue(
        self: &Arc<Self>,
        queue: &str,
        connection: ConnectionId,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if exchange.is_empty() {
            return Err(default_exchange_refused());
        }
        let named = Named::to_queue(exchange, queue, routing_key, arguments);
        let change = self.begin_change().await;
        let commands = {
            let topo = self.read();
            let Some(q) = topo.queues.get(queue).cloned() else {
                return Ok(());
            };
            let locked = q.exclusive_owner.is_some_and(|owner| owner != connection);
            let commands = named.unbind(&topo, &Destination::Queue(q));
            if locked && !commands.is_empty() {
                return Err(self.locked(queue));
            }
            commands
        };
        self.commit_unless_empty(change, commands).await
    }

    /// The checks of exchange.bind, in RabbitMQ's order: neither end is the default exchange,
    /// the destination exists, the source exists.
    fn check_exchange_pair(
        &self,
        topo: &Topology,
        destination: &str,
        source: &str,
    ) -> Result<(), AmqpError> {
        if destination.is_empty() || source.is_empty() {
            return Err(default_exchange_refused());
        }
        for name in [destination, source] {
            if !topo.exchanges.contains_key(name) {
                return Err(self.no_exchange(name));
            }
        }
        Ok(())
    }

    /// exchange.bind: messages routed by `source` also go through `destination`.
    pub async fn bind_exchange(
        self: &Arc<Self>,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        let named = Named::to_exchange(source, destination, routing_key, arguments);
        let change = self.begin_change().await;
        let command = {
            let topo = self.read();
            self.check_exchange_pair(&topo, destination, source)?;
            named.bind(&topo, &Destination::Exchange(destination.into()))?
        };
        self.commit(change, vec![command]).await?;
        Ok(())
    }

    /// exchange.unbind: like RabbitMQ, unbinding a missing source, destination or binding
    /// succeeds; only the default exchange is refused at either end.
    pub async fn unbind_exchange(
        self: &Arc<Self>,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if destination.is_empty() || source.is_empty() {
            return Err(default_exchange_refused());
        }
        let named = Named::to_exchange(source, destination, routing_key, arguments);
        let change = self.begin_change().await;
        let commands = named.unbind(&self.read(), &Destination::Exchange(destination.into()));
        self.commit_unless_empty(change, commands).await
    }
}
