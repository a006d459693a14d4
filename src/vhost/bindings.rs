//! Bindings: queue.bind / queue.unbind and exchange.bind / exchange.unbind, checked in
//! RabbitMQ's order and with its leniency on unbinding what is not there.

use warren_amqp::types::FieldTable;
use warren_amqp::AmqpError;

use crate::exchange::Destination;
use crate::queue::ConnectionId;

use super::topology::Topology;
use super::{default_exchange_refused, Vhost};

impl Vhost {
    /// Binds a queue (or, with [`Vhost::bind_exchange`], an exchange) to an exchange.
    /// queue.bind, checked in RabbitMQ's order: default exchange, exchange, queue, exclusivity.
    pub fn bind_queue(
        &self,
        queue: &str,
        connection: ConnectionId,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if exchange.is_empty() {
            return Err(default_exchange_refused());
        }
        let mut topo = self.write();
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
        topo.bind(exchange, Destination::Queue(q), routing_key, arguments)
    }

    /// queue.unbind: like RabbitMQ, unbinding a missing queue, exchange or binding succeeds;
    /// removing an existing binding of another connection's exclusive queue is refused (405).
    pub fn unbind_queue(
        &self,
        queue: &str,
        connection: ConnectionId,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if exchange.is_empty() {
            return Err(default_exchange_refused());
        }
        let mut topo = self.write();
        let Some(q) = topo.queues.get(queue).cloned() else {
            return Ok(());
        };
        let locked = q.exclusive_owner.is_some_and(|owner| owner != connection);
        let destination = Destination::Queue(q);
        if locked
            && topo
                .exchanges
                .get(exchange)
                .is_some_and(|ex| ex.has_binding(&destination, routing_key, arguments))
        {
            return Err(self.locked(queue));
        }
        topo.unbind(exchange, &destination, routing_key, arguments);
        Ok(())
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
    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        let mut topo = self.write();
        self.check_exchange_pair(&topo, destination, source)?;
        topo.bind(
            source,
            Destination::Exchange(destination.into()),
            routing_key,
            arguments,
        )
    }

    /// exchange.unbind: like RabbitMQ, unbinding a missing source, destination or binding
    /// succeeds; only the default exchange is refused at either end.
    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if destination.is_empty() || source.is_empty() {
            return Err(default_exchange_refused());
        }
        let mut topo = self.write();
        topo.unbind(
            source,
            &Destination::Exchange(destination.into()),
            routing_key,
            arguments,
        );
        Ok(())
    }
}
