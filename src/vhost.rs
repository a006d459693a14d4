//! A virtual host: its exchanges, queues and bindings, and routing a publish to queues. The
//! topology sits behind one read-write lock; routing takes the read side and never awaits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use warren_amqp::types::{AMQPValue, FieldTable};
use warren_amqp::{AmqpError, PropertiesView};

use warren_amqp::encode::{decode_table, encode_table};
use warren_storage::{
    BindingRecord, ExchangeRecord, Op, QueueRecord, Recovered, StorageError, Store,
};

use crate::exchange::{Destination, Exchange, ExchangeKind, LazyHeaders};
use crate::queue::args::type_name;
use crate::queue::args::{ArgReader, Dedup};
use crate::queue::dedup::{self, DedupCache};
use crate::queue::{engine, ConnectionId, QueueArgs, QueueHandle, QueueSpec};

pub struct Vhost {
    pub name: String,
    store: Store,
    /// Body bytes of ready messages each durable queue keeps in memory (see `QueueSpec`).
    queue_memory_limit: u64,
    topology: RwLock<Topology>,
    /// Description and tags, as the management API shows them.
    meta: RwLock<(String, Vec<String>)>,
    /// Becomes true when the vhost is deleted: its connections close (320).
    deleted: tokio::sync::watch::Sender<bool>,
}

struct Topology {
    vhost: String,
    store: Store,
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, Arc<QueueHandle>>,
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
    fn bind(
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
    fn unbind(
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
    fn remove_exchange(&mut self, name: &str) {
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
    fn remove_bindings_to(&mut self, destination: &Destination, durable: bool) {
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
/// An exchange as the management API shows it.
pub struct ExchangeInfo {
    pub name: String,
    pub kind: &'static str,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// A binding as the management API shows it.
pub struct BindingInfo {
    pub source: String,
    pub destination: String,
    pub destination_is_queue: bool,
    pub routing_key: String,
    pub arguments: FieldTable,
}

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
    pub fn new(name: impl Into<String>, store: Store, queue_memory_limit: u64) -> Arc<Self> {
        let name = name.into();
        let mut topology = Topology {
            vhost: name.clone(),
            store: store.clone(),
            exchanges: HashMap::new(),
            queues: HashMap::new(),
        };
        let empty = FieldTable::default;
        // RabbitMQ's predeclared exchanges; amq.rabbitmq.trace (internal) is the firehose's.
        for (name, kind, internal) in [
            ("", ExchangeKind::Direct, false),
            ("amq.direct", ExchangeKind::Direct, false),
            ("amq.fanout", ExchangeKind::Fanout, false),
            ("amq.topic", ExchangeKind::Topic, false),
            ("amq.headers", ExchangeKind::Headers, false),
            ("amq.match", ExchangeKind::Headers, false),
            ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
        ] {
            topology.exchanges.insert(
                name.to_owned(),
                Exchange::new(name, kind, true, false, internal, empty()),
            );
        }
        Arc::new(Vhost {
            name,
            store,
            queue_memory_limit,
            topology: RwLock::new(topology),
            meta: RwLock::new((String::new(), Vec::new())),
            deleted: tokio::sync::watch::channel(false).0,
        })
    }

    /// The description and tags.
    pub fn metadata(&self) -> (String, Vec<String>) {
        self.meta.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_metadata(&self, description: String, tags: Vec<String>) {
        *self.meta.write().unwrap_or_else(|e| e.into_inner()) = (description, tags);
    }

    /// Becomes true once the vhost is deleted (connections to it watch this).
    pub fn deleted_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.deleted.subscribe()
    }

    /// Marks the vhost deleted and empties it: its connections are told to close, its exchanges
    /// go (records included); returns its queues, for the caller to delete (with their messages).
    pub fn delete_contents(&self) -> Vec<Arc<QueueHandle>> {
        let _ = self.deleted.send(true);
        let mut topo = self.write();
        let names: Vec<String> = topo.exchanges.keys().cloned().collect();
        for name in names {
            topo.remove_exchange(&name);
        }
        topo.queues.values().cloned().collect()
    }

    /// Rebuilds the durable topology and queues of this vhost from what the store held.
    pub fn restore(self: &Arc<Self>, recovered: &Recovered) -> Result<(), StorageError> {
        let mut topo = self.write();
        for e in recovered.exchanges.iter().filter(|e| e.vhost == self.name) {
            let Some(kind) = ExchangeKind::parse(&e.kind) else {
                tracing::warn!(exchange = %e.name, kind = %e.kind, "stored exchange of unknown type skipped");
                continue;
            };
            let arguments = decode_table(&e.arguments).unwrap_or_default();
            let mut ex = Exchange::new(
                e.name.clone(),
                kind,
                true,
                e.auto_delete,
                e.internal,
                arguments,
            );
            if let Ok(Some(settings)) = Dedup::parse(&self.exchange_args(&ex.arguments, &e.name)) {
                let mut cache = DedupCache::new(&settings, true);
                let remembered = self
                    .store
                    .dedup_ids(&dedup::exchange_owner(&self.name, &e.name))?;
                cache.restore(remembered, dedup::now_ms());
                ex.dedup = Some(Mutex::new(cache));
            }
            topo.exchanges.insert(e.name.clone(), ex);
        }
        let mut messages = 0usize;
        for q in recovered.queues.iter().filter(|q| q.vhost == self.name) {
            let arguments = decode_table(&q.arguments).unwrap_or_default();
            let args = QueueArgs::parse(&arguments, &q.name, &self.name).unwrap_or_default();
            let mut recovery = engine::Recovery::new(self.queue_memory_limit);
            if let Some(settings) = &args.deduplication {
                let remembered = self.store.dedup_ids(&dedup::queue_owner(q.id))?;
                recovery = recovery.with_dedup(settings, remembered);
            }
            self.store
                .for_each_queue_message(q.id, |id, redelivered, parts| {
                    recovery.push(id, redelivered, parts)
                })?;
            messages += recovery.len();
            let spec = QueueSpec {
                name: q.name.clone(),
                args,
                storage_id: Some(q.id),
                durable: true,
                exclusive_owner: None,
                auto_delete: q.auto_delete,
                arguments,
                memory_limit: self.queue_memory_limit,
            };
            let handle = engine::spawn(spec, Arc::downgrade(self), &self.store, Some(recovery));
            topo.queues.insert(q.name.clone(), handle);
        }
        for b in recovered.bindings.iter().filter(|b| b.vhost == self.name) {
            let destination = if b.destination_is_queue {
                topo.queues
                    .get(&b.destination)
                    .cloned()
                    .map(Destination::Queue)
            } else {
                topo.exchanges
                    .contains_key(&b.destination)
                    .then(|| Destination::Exchange(b.destination.as_str().into()))
            };
            let arguments = decode_table(&b.arguments).unwrap_or_default();
            match (destination, topo.exchanges.get_mut(&b.source)) {
                (Some(d), Some(ex)) => {
                    let _ = ex.bind(d, &b.routing_key, arguments);
                }
                _ => {
                    tracing::warn!(source = %b.source, destination = %b.destination, "stored binding with a missing end skipped")
                }
            }
        }
        tracing::info!(
            vhost = %self.name,
            exchanges = topo.exchanges.len(),
            queues = topo.queues.len(),
            messages,
            "recovered"
        );
        Ok(())
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
    pub fn queue(
        &self,
        name: &str,
        connection: ConnectionId,
    ) -> Result<Arc<QueueHandle>, AmqpError> {
        let q = self
            .read()
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_queue(name))?;
        match q.exclusive_owner {
            Some(owner) if owner != connection => Err(self.locked(name)),
            _ => Ok(q),
        }
    }

    pub fn queues(&self) -> Vec<Arc<QueueHandle>> {
        self.read().queues.values().cloned().collect()
    }

    /// Every exchange, as the management API lists them (sorted by name).
    pub fn exchanges_info(&self) -> Vec<ExchangeInfo> {
        let topology = self.read();
        let mut out: Vec<ExchangeInfo> = topology
            .exchanges
            .values()
            .map(|e| ExchangeInfo {
                name: e.name.clone(),
                kind: e.kind.as_str(),
                durable: e.durable,
                auto_delete: e.auto_delete,
                internal: e.internal,
                arguments: e.arguments.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every binding, the default exchange's implicit ones to each queue first, as RabbitMQ
    /// lists them.
    pub fn bindings_info(&self) -> Vec<BindingInfo> {
        let topology = self.read();
        let mut queues: Vec<&str> = topology.queues.keys().map(String::as_str).collect();
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
        let mut exchanges: Vec<&Exchange> = topology.exchanges.values().collect();
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

    /// Declares (or checks) a queue; returns it and whether it was created.
    pub fn declare_queue(
        self: &Arc<Self>,
        req: DeclareQueue<'_>,
    ) -> Result<(Arc<QueueHandle>, bool), AmqpError> {
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
        let args = QueueArgs::parse(req.arguments, req.name, &self.name)?;
        if args.queue_type.needs_plain_durable() {
            let refused = [
                (!req.durable, "non-durable"),
                (req.exclusive, "exclusive-owner"),
                (req.auto_delete, "auto-delete"),
            ];
            if let Some((_, property)) = refused.iter().find(|(bad, _)| *bad) {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid property '{property}' for queue '{}' in vhost '{}'",
                    req.name, self.name
                )));
            }
        }
        // Exclusive queues die with their connection, so they never go to disk.
        let storage_id = (req.durable && !req.exclusive).then(|| {
            let id = self.store.next_queue_id();
            let record = QueueRecord {
                vhost: self.name.clone(),
                name: req.name.to_owned(),
                id,
                auto_delete: req.auto_delete,
                arguments: encode_table(req.arguments),
            };
            self.store.submit(Op::PutQueue(record), None);
            id
        });
        let handle = engine::spawn(
            QueueSpec {
                name: req.name.to_owned(),
                args,
                storage_id,
                durable: req.durable,
                exclusive_owner: req.exclusive.then_some(req.connection),
                auto_delete: req.auto_delete,
                arguments: req.arguments.clone(),
                memory_limit: self.queue_memory_limit,
            },
            Arc::downgrade(self),
            &self.store,
            None,
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
            return Err(inequivalent(
                "durable",
                req.durable.to_string(),
                q.durable.to_string(),
            ));
        }
        if q.auto_delete != req.auto_delete {
            return Err(inequivalent(
                "auto_delete",
                req.auto_delete.to_string(),
                q.auto_delete.to_string(),
            ));
        }
        for arg in COMPARED_QUEUE_ARGS {
            let new = req.arguments.inner().get(*arg);
            let old = q.arguments.inner().get(*arg);
            let (received, current) = match (new, old) {
                (None, None) => continue,
                (Some(n), Some(o))
                    if crate::exchange::same_value(n, o) && type_class(n) == type_class(o) =>
                {
                    continue
                }
                (Some(n), Some(o)) => (format!("'{}'", describe(n)), format!("'{}'", describe(o))),
                (Some(n), None) => (
                    format!("the value '{}' of type '{}'", describe(n), type_name(n)),
                    "none".to_owned(),
                ),
                (None, Some(o)) => (
                    "none".to_owned(),
                    format!("the value '{}' of type '{}'", describe(o), type_name(o)),
                ),
            };
            return Err(AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received {received} but current is {current}",
                req.name, self.name
            )));
        }
        Ok(())
    }

    /// Drops a queue from the topology (it deleted itself); no-op if another queue of that name
    /// has replaced it.
    pub fn forget_queue(&self, queue: &Arc<QueueHandle>) {
        let mut topo = self.write();
        let same = topo
            .queues
            .get(&*queue.name)
            .is_some_and(|q| Arc::ptr_eq(q, queue));
        if same {
            topo.queues.remove(&*queue.name);
        }
        topo.remove_bindings_to(
            &Destination::Queue(queue.clone()),
            queue.is_durable_on_disk(),
        );
    }

    pub fn declare_exchange(&self, req: DeclareExchange<'_>) -> Result<(), AmqpError> {
        if req.name.is_empty() {
            return Err(default_exchange_refused());
        }
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
            // RabbitMQ's wording differs for plugin-style (x-) type names.
            let what = if req.kind.starts_with("x-") {
                "unknown"
            } else {
                "invalid"
            };
            return Err(AmqpError::command_invalid(format!(
                "{what} exchange type '{}'",
                req.kind
            )));
        };
        if req.name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                req.name
            )));
        }
        let dedup = Dedup::parse(&self.exchange_args(req.arguments, req.name))?;
        if req.durable {
            let record = ExchangeRecord {
                vhost: self.name.clone(),
                name: req.name.to_owned(),
                kind: kind.as_str().to_owned(),
                auto_delete: req.auto_delete,
                internal: req.internal,
                arguments: encode_table(req.arguments),
            };
            self.store.submit(Op::PutExchange(record), None);
        }
        let mut exchange = Exchange::new(
            req.name,
            kind,
            req.durable,
            req.auto_delete,
            req.internal,
            req.arguments.clone(),
        );
        exchange.dedup = dedup.map(|d| Mutex::new(DedupCache::new(&d, req.durable)));
        topo.exchanges.insert(req.name.to_owned(), exchange);
        Ok(())
    }

    fn exchange_args<'a>(&'a self, args: &'a FieldTable, name: &'a str) -> ArgReader<'a> {
        ArgReader {
            args,
            kind: "exchange",
            name,
            vhost: &self.name,
        }
    }

    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let mut topo = self.write();
        let Some(ex) = topo.exchanges.get(name) else {
            return Err(self.no_exchange(name));
        };
        // "In use" means bindings from it, as in RabbitMQ (being a destination does not count).
        if if_unused && !ex.bindings().is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        topo.remove_exchange(name);
        Ok(())
    }

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

fn default_exchange_refused() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}

/// Values RabbitMQ compares as equal across types: all integers, all floats.
fn type_class(v: &AMQPValue) -> &'static str {
    match type_name(v) {
        "byte" | "short" | "signedint" | "unsignedint" | "long" => "int",
        "float" | "double" => "float",
        other => other,
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
