//! Routing a publish to its queues: through exchange-to-exchange bindings and alternate
//! exchanges without looping, dropping what a deduplicating exchange has seen, and the checks
//! of a publish's exchange. The hot path: it takes the topology's read lock and never awaits.

use std::sync::Arc;

use warren_amqp::{AmqpError, PropertiesView};

use crate::exchange::{Destination, Exchange, ExchangeKind, LazyHeaders};
use crate::queue::dedup;
use crate::queue::QueueHandle;

use super::topology::Topology;
use super::Vhost;

impl Vhost {
    /// The queues a publish reaches, each once, following exchange-to-exchange bindings and
    /// alternate exchanges without looping. Errors: no such exchange (404), internal (403).
    pub fn route(
        &self,
        exchange: &str,
        routing_keys: &[&str],
        headers: &LazyHeaders<'_>,
        out: &mut Vec<Arc<QueueHandle>>,
    ) -> Result<(), AmqpError> {
        self.route_in(&self.read(), exchange, routing_keys, headers, out)
    }

    /// Routes a client's publish: as [`Vhost::route`], unless the exchange deduplicates and
    /// has seen the message's id.
    pub fn route_publish(
        &self,
        exchange: &str,
        routing_keys: &[&str],
        headers: &LazyHeaders<'_>,
        properties: &PropertiesView<'_>,
        out: &mut Vec<Arc<QueueHandle>>,
    ) -> Result<Routing, AmqpError> {
        let topo = self.read();
        let first = topo.exchanges.get(exchange).filter(|ex| !ex.internal);
        if let Some((cache, ex)) = first.and_then(|ex| Some((ex.dedup.as_ref()?, ex))) {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(key) = cache.key_of(properties) {
                if cache.is_duplicate(key, dedup::now_ms()) {
                    return Ok(Routing::Duplicate);
                }
            }
            if ex.durable {
                for op in cache.take_writes(&dedup::exchange_owner(&self.name, exchange)) {
                    self.store.submit(op, None);
                }
            }
        }
        self.route_in(&topo, exchange, routing_keys, headers, out)?;
        Ok(Routing::Routed)
    }

    /// Whether `exchange` is a topic exchange (where topic permissions apply), and whether it
    /// is internal; `None` when there is no such exchange.
    pub fn topic_exchange(&self, exchange: &str) -> Option<(bool, bool)> {
        self.read()
            .exchanges
            .get(exchange)
            .map(|ex| (ex.kind == ExchangeKind::Topic, ex.internal))
    }

    /// Whether a message may be published to `exchange` (the default exchange, or one that
    /// exists and is not internal), with the error RabbitMQ gives otherwise; nothing is routed.
    pub fn check_publish_target(&self, exchange: &str) -> Result<(), AmqpError> {
        if exchange.is_empty() {
            return Ok(());
        }
        self.publish_target(&self.read(), exchange).map(|_| ())
    }

    /// The (non-default) exchange a message is published to, with RabbitMQ's errors for one
    /// that is missing or internal.
    fn publish_target<'t>(
        &self,
        topo: &'t Topology,
        exchange: &str,
    ) -> Result<&'t Exchange, AmqpError> {
        let ex = topo
            .exchanges
            .get(exchange)
            .ok_or_else(|| self.no_exchange(exchange))?;
        if ex.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        Ok(ex)
    }

    fn route_in(
        &self,
        topo: &Topology,
        exchange: &str,
        routing_keys: &[&str],
        headers: &LazyHeaders<'_>,
        out: &mut Vec<Arc<QueueHandle>>,
    ) -> Result<(), AmqpError> {
        let push_queue = |out: &mut Vec<Arc<QueueHandle>>, q: &Arc<QueueHandle>| {
            if !out.iter().any(|o| Arc::ptr_eq(o, q)) {
                out.push(q.clone());
            }
        };
        if exchange.is_empty() {
            for key in routing_keys {
                if let Some(q) = topo.queues.get(*key) {
                    push_queue(out, q);
                }
            }
            return Ok(());
        }
        let first = self.publish_target(topo, exchange)?;
        // Exchanges already visited, and those still to visit: both stay empty (no allocation)
        // unless exchange-to-exchange bindings or alternate exchanges are involved.
        let mut seen: Vec<&str> = Vec::new();
        let mut work: Vec<&Exchange> = Vec::new();
        let mut current = Some(first);
        while let Some(ex) = current.take().or_else(|| work.pop()) {
            let mut routed_any = false;
            ex.route(routing_keys, headers, &mut |d| {
                routed_any = true;
                match d {
                    Destination::Queue(q) => push_queue(out, q),
                    Destination::Exchange(name) => {
                        if &**name != exchange && !seen.contains(&&**name) {
                            if let Some((key, next)) = topo.exchanges.get_key_value(&**name) {
                                seen.push(key);
                                work.push(next);
                            }
                        }
                    }
                }
            });
            if !routed_any {
                if let Some(ae) = ex.alternate() {
                    if ae != exchange && !seen.contains(&ae) {
                        if let Some((key, next)) = topo.exchanges.get_key_value(ae) {
                            seen.push(key);
                            work.push(next);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// What became of a publish at its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    Routed,
    /// Dropped: the exchange deduplicates and had seen the message's id.
    Duplicate,
}

/// What the vhost's queues ask of it: dead-letters are routed like publishes, and a queue that
/// deletes itself leaves the topology.
impl crate::queue::host::QueueHost for Vhost {
    fn vhost_name(&self) -> &str {
        &self.name
    }

    fn route(
        &self,
        exchange: &str,
        routing_keys: &[&str],
        headers: Option<&[u8]>,
        out: &mut Vec<Arc<QueueHandle>>,
    ) -> Result<(), AmqpError> {
        Vhost::route(
            self,
            exchange,
            routing_keys,
            &LazyHeaders::new(headers),
            out,
        )
    }

    fn forget_queue(&self, queue: &Arc<QueueHandle>) {
        Vhost::forget_queue(self, queue)
    }
}
