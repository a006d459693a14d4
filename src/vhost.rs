//! A virtual host: its exchanges, queues and bindings, and routing a publish to queues. The
//! topology sits behind one read-write lock; routing takes the read side and never awaits.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use warren_amqp::types::{AMQPValue, FieldTable};
use warren_amqp::AmqpError;

use crate::exchange::{Exchange, ExchangeKind};
use crate::queue::{engine, ConnectionId, QueueHandle, QueueSpec};

pub struct Vhost {
    pub name: String,
    topology: RwLock<Topology>,
}

#[derive(Default)]
struct Topology {
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, Arc<QueueHandle>>,
}

/// Queue arguments RabbitMQ compares when a queue is declared again.
const COMPARED_QUEUE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-delivery-limit",
];

/// The queue.declare request, as the vhost needs it.
pub struct DeclareQueue<'a> {
    pub name: &'a str,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: &'a FieldTable,
    pub connection: ConnectionId,
    /// The broker chose the name (`amq.gen-…`), so the reserved prefix is allowed.
    pub server_named: bool,
}

/// The exchange.declare request.
pub struct DeclareExchange<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: &'a FieldTable,
}

impl Vhost {
    pub fn new(name: impl Into<String>) -> Arc<Self> {
        let mut topology = Topology::default();
        let empty = FieldTable::default;
        for (name, kind) in [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            topology
                .exchanges
                .insert(name.to_owned(), Exchange::new(name, kind, true, false, false, empty()));
        }
        Arc::new(Vhost {
            name: name.into(),
            topology: RwLock::new(topology),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Topology> {
        self.topology.write().unwrap_or_else(|e| e.into_inner())
    }

    fn no_queue(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn locked(&self, name: &str) -> AmqpError {
        AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            self.name
        ))
    }

    /// Finds a queue the connection may use (exclusive queues belong to their connection).
    pub fn queue(&self, name: &str, connection: ConnectionId) -> Result<Arc<QueueHandle>, AmqpError> {
        let q = self.read().queues.get(name).cloned().ok_or_else(|| self.no_queue(name))?;
        match q.exclusive_owner {
            Some(owner) if owner != connection => Err(self.locked(name)),
            _ => Ok(q),
        }
    }

    pub fn queues(&self) -> Vec<Arc<QueueHandle>> {
        self.read().queues.values().cloned().collect()
    }

    /// Declares (or checks) a queue; returns it and whether it was created.
    pub fn declare_queue(self: &Arc<Self>, req: DeclareQueue<'_>) -> Result<(Arc<QueueHandle>, bool), AmqpError> {
        let mut topo = self.write();
        if let Some(q) = topo.queues.get(req.name) {
            let q = q.clone();
            drop(topo);
            if let Some(owner) = q.exclusive_owner {
                if owner != req.connection {
                    return Err(self.locked(req.name));
                }
            }
            if req.passive {
                return Ok((q, false));
            }
            if req.exclusive != q.is_exclusive() {
                return Err(self.locked(req.name));
            }
            self.check_equivalent(&q, &req)?;
            return Ok((q, false));
        }
        if req.passive {
            return Err(self.no_queue(req.name));
        }
        if req.name.starts_with("amq.") && !req.server_named {
            return Err(AmqpError::access_refused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                req.name
            )));
        }
        let handle = engine::spawn(
            QueueSpec {
                name: req.name.to_owned(),
                durable: req.durable,
                exclusive_owner: req.exclusive.then_some(req.connection),
                auto_delete: req.auto_delete,
                arguments: req.arguments.clone(),
            },
            Arc::downgrade(self),
        );
        topo.queues.insert(req.name.to_owned(), handle.clone());
        // Every queue is bound to the default exchange under its own name; that binding is
        // implicit (routing looks the queue up by name).
        Ok((handle, true))
    }

    fn check_equivalent(&self, q: &QueueHandle, req: &DeclareQueue<'_>) -> Result<(), AmqpError> {
        let inequivalent = |arg: &str, received: String, current: String| {
            AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received '{received}' but current is '{current}'",
                req.name, self.name
            ))
        };
        if q.durable != req.durable {
            return Err(inequivalent("durable", req.durable.to_string(), q.durable.to_string()));
        }
        if q.auto_delete != req.auto_delete {
            return Err(inequivalent("auto_delete", req.auto_delete.to_string(), q.auto_delete.to_string()));
        }
        for arg in COMPARED_QUEUE_ARGS {
            let new = req.arguments.inner().get(*arg);
            let old = q.arguments.inner().get(*arg);
            if new != old {
                let received = match new {
                    Some(v) => format!("the value '{}' of type '{}'", describe(v), type_name(v)),
                    None => "none".to_owned(),
                };
                let current = match old {
                    Some(v) => format!("the value '{}' of type '{}'", describe(v), type_name(v)),
                    None => "none".to_owned(),
                };
                return Err(AmqpError::precondition_failed(format!(
                    "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received {received} but current is {current}",
                    req.name, self.name
                )));
            }
        }
        Ok(())
    }

    /// Drops a queue from the topology (it deleted itself); no-op if another queue of that name
    /// has replaced it.
    pub fn forget_queue(&self, queue: &Arc<QueueHandle>) {
        let mut topo = self.write();
        let same = topo.queues.get(&*queue.name).is_some_and(|q| Arc::ptr_eq(q, queue));
        if same {
            topo.queues.remove(&*queue.name);
        }
        let mut emptied = Vec::new();
        for ex in topo.exchanges.values_mut() {
            if ex.unbind_queue(queue) && ex.auto_delete && ex.bindings().is_empty() {
                emptied.push(ex.name.clone());
            }
        }
        for name in emptied {
            topo.exchanges.remove(&name);
        }
    }

    pub fn declare_exchange(&self, req: DeclareExchange<'_>) -> Result<(), AmqpError> {
        let mut topo = self.write();
        if let Some(ex) = topo.exchanges.get(req.name) {
            if req.passive {
                return Ok(());
            }
            if req.name.is_empty() || ex.kind.as_str() != req.kind {
                return Err(AmqpError::precondition_failed(format!(
                    "inequivalent arg 'type' for exchange '{}' in vhost '{}': received '{}' but current is '{}'",
                    req.name,
                    self.name,
                    req.kind,
                    ex.kind.as_str()
                )));
            }
            for (arg, new, old) in [
                ("durable", req.durable, ex.durable),
                ("auto_delete", req.auto_delete, ex.auto_delete),
                ("internal", req.internal, ex.internal),
            ] {
                if new != old {
                    return Err(AmqpError::precondition_failed(format!(
                        "inequivalent arg '{arg}' for exchange '{}' in vhost '{}': received '{new}' but current is '{old}'",
                        req.name, self.name
                    )));
                }
            }
            return Ok(());
        }
        if req.passive {
            return Err(self.no_exchange(req.name));
        }
        let Some(kind) = ExchangeKind::parse(req.kind) else {
            return Err(AmqpError::command_invalid(format!("unknown exchange type '{}'", req.kind)));
        };
        if req.name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                req.name
            )));
        }
        topo.exchanges.insert(
            req.name.to_owned(),
            Exchange::new(req.name, kind, req.durable, req.auto_delete, req.internal, req.arguments.clone()),
        );
        Ok(())
    }

    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let mut topo = self.write();
        let Some(ex) = topo.exchanges.get(name) else {
            return Err(self.no_exchange(name));
        };
        if if_unused && !ex.bindings().is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        topo.exchanges.remove(name);
        Ok(())
    }

    pub fn bind_queue(&self, queue: &Arc<QueueHandle>, exchange: &str, routing_key: &str, arguments: &FieldTable) -> Result<(), AmqpError> {
        if exchange.is_empty() {
            return Err(default_exchange_refused());
        }
        let mut topo = self.write();
        if !topo.queues.get(&*queue.name).is_some_and(|q| Arc::ptr_eq(q, queue)) {
            return Err(self.no_queue(&queue.name));
        }
        let ex = topo.exchanges.get_mut(exchange).ok_or_else(|| self.no_exchange(exchange))?;
        ex.bind(queue.clone(), routing_key, arguments.clone());
        Ok(())
    }

    pub fn unbind_queue(&self, queue: &Arc<QueueHandle>, exchange: &str, routing_key: &str, arguments: &FieldTable) -> Result<(), AmqpError> {
        if exchange.is_empty() {
            return Err(default_exchange_refused());
        }
        let mut topo = self.write();
        let ex = topo.exchanges.get_mut(exchange).ok_or_else(|| self.no_exchange(exchange))?;
        if ex.unbind(queue, routing_key, arguments) && ex.auto_delete && ex.bindings().is_empty() {
            topo.exchanges.remove(exchange);
        }
        Ok(())
    }

    /// The queues a publish reaches (each once). Errors: no such exchange (404), internal (403).
    pub fn route(&self, exchange: &str, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Arc<QueueHandle>>) -> Result<(), AmqpError> {
        let topo = self.read();
        if exchange.is_empty() {
            if let Some(q) = topo.queues.get(routing_key) {
                out.push(q.clone());
            }
            return Ok(());
        }
        let ex = topo.exchanges.get(exchange).ok_or_else(|| self.no_exchange(exchange))?;
        if ex.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        ex.route(routing_key, headers, out);
        Ok(())
    }

    /// Whether routing needs the message's headers (any headers exchange by that name).
    pub fn needs_headers(&self, exchange: &str) -> bool {
        self.read()
            .exchanges
            .get(exchange)
            .is_some_and(|e| e.kind == ExchangeKind::Headers)
    }

    pub fn exchange_exists(&self, name: &str) -> bool {
        self.read().exchanges.contains_key(name)
    }
}

fn default_exchange_refused() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}

/// RabbitMQ's names for field value types, as its inequivalence messages print them.
fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => "byte",
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => "short",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

fn describe(v: &AMQPValue) -> String {
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => format!("{other:?}"),
    }
}
