//! Declaring and deleting queues and exchanges, with RabbitMQ's checks and texts: reserved
//! names, the equivalence of a repeated declare, exclusivity. Apart from routing and bindings
//! because it is where queues and exchanges come into being and go.

use std::sync::Arc;

use warren_amqp::types::{AMQPValue, FieldTable};
use warren_amqp::AmqpError;

use crate::definitions::{DefinitionCommand, ExchangeDefinition, QueueDefinition};
use crate::exchange::ExchangeKind;
use crate::policy::{resolve, ObjectKind};
use crate::queue::args::{type_name, Dedup, LeaderLocator, QueueType};
use crate::queue::{ConnectionId, QueueArgs, QueueHandle};

use super::topology::exchange_args;
use super::{default_exchange_refused, Vhost};

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
    /// Declares (or checks) a queue; returns it and whether it was created.
    pub async fn declare_queue(
        self: &Arc<Self>,
        req: DeclareQueue<'_>,
    ) -> Result<(Arc<QueueHandle>, bool), AmqpError> {
        // RabbitMQ's `augment_declare_args`: the vhost's default queue type, where none is named
        // and the type fits the declare, is as if declared (for the equivalence checks too).
        let augmented = self.with_default_queue_type(&req);
        let req = match &augmented {
            Some(arguments) => DeclareQueue { arguments, ..req },
            None => req,
        };
        // Most declares find their queue: they are answered without waiting for the change lock.
        if let Some(q) = self.existing_queue(&req)? {
            return Ok((q, false));
        }
        if req.passive {
            return Err(self.no_queue(req.name));
        }
        let change = self.begin_change().await;
        // Another declare may have created it while this one waited.
        if let Some(q) = self.existing_queue(&req)? {
            return Ok((q, false));
        }
        // Only a queue that does not exist counts against the limit, as in RabbitMQ.
        self.check_queue_limit(req.name)?;
        let definition = self.new_queue(&req)?;
        let started = self
            .commit(change, vec![DefinitionCommand::DeclareQueue(definition)])
            .await?;
        let q = started
            .into_iter()
            .next()
            .ok_or_else(|| AmqpError::internal_error("the declared queue did not start"))?;
        // Every queue is bound to the default exchange under its own name; that binding is
        // implicit (routing looks the queue up by name).
        Ok((q, true))
    }

    /// The declare's arguments with the vhost's default `x-queue-type` added, when it has one,
    /// the declare names none, and the type fits (quorum and stream queues are durable, never
    /// exclusive nor auto-delete; classic fits any).
    fn with_default_queue_type(&self, req: &DeclareQueue<'_>) -> Option<FieldTable> {
        let default = self.default_queue_type()?;
        if req.arguments.inner().contains_key("x-queue-type") {
            return None;
        }
        let fits = default == "classic" || (req.durable && !req.exclusive && !req.auto_delete);
        if !fits {
            return None;
        }
        let mut arguments = req.arguments.clone();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(default.as_str().into()),
        );
        Some(arguments)
    }

    /// The queue a declare names, if it exists, once the declare's checks against it pass.
    fn existing_queue(
        &self,
        req: &DeclareQueue<'_>,
    ) -> Result<Option<Arc<QueueHandle>>, AmqpError> {
        let Some(q) = self.read().queues.get(req.name).cloned() else {
            return Ok(None);
        };
        q.check_reachable(&self.name)?;
        if let Some(owner) = q.exclusive_owner {
            if owner != req.connection {
                return Err(self.locked(req.name));
            }
        }
        if req.passive {
            return Ok(Some(q));
        }
        if req.exclusive != q.is_exclusive() {
            return Err(self.locked(req.name));
        }
        self.check_equivalent(&q, req)?;
        Ok(Some(q))
    }

    /// RabbitMQ's `max-queues` vhost limit: a new queue is refused once the vhost has that many.
    fn check_queue_limit(&self, name: &str) -> Result<(), AmqpError> {
        let Some(limit) = self.limit("max-queues") else {
            return Ok(());
        };
        if (self.read().queues.len() as u64) < limit {
            return Ok(());
        }
        Err(AmqpError::precondition_failed(format!(
            "cannot declare queue '{name}': queue limit in vhost '{}' ({limit}) is reached",
            self.name
        )))
    }

    /// The definition of the queue a (not passive) declare creates, once its checks pass.
    fn new_queue(&self, req: &DeclareQueue<'_>) -> Result<QueueDefinition, AmqpError> {
        let declared = check_new_queue(&self.name, req)?;
        // Where a quorum queue's leader goes: its argument, else its policy's
        // `queue-leader-locator`, as RabbitMQ takes it.
        let effective = {
            let topology = self.read();
            let policies = topology.policies.for_object(ObjectKind::Queue, req.name);
            resolve::queue_args(req.arguments, &declared, &policies.effective_definition())
        };
        let balanced = effective.queue_type == QueueType::Quorum
            && effective.leader_locator == Some(LeaderLocator::Balanced);
        Ok(QueueDefinition {
            name: req.name.to_owned(),
            // Exclusive queues die with their connection, so they never go to disk.
            storage_id: (req.durable && !req.exclusive).then(|| self.store.next_queue_id()),
            durable: req.durable,
            exclusive_owner: req.exclusive.then_some(req.connection),
            auto_delete: req.auto_delete,
            arguments: crate::definitions::shared_arguments::shared(req.arguments.clone()),
            home: self.placement.home_for(req.name, balanced),
            // Set when the metadata log applies the declare.
            incarnation: 0,
            members: None,
        })
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
        for arg in q.args.queue_type.compared_arguments() {
            let new = req.arguments.inner().get(arg);
            let old = q.arguments.inner().get(arg);
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

    pub async fn declare_exchange(
        self: &Arc<Self>,
        req: DeclareExchange<'_>,
    ) -> Result<(), AmqpError> {
        if req.name.is_empty() {
            return Err(default_exchange_refused());
        }
        if self.existing_exchange(&req)? {
            return Ok(());
        }
        if req.passive {
            return Err(self.no_exchange(req.name));
        }
        let change = self.begin_change().await;
        // Another declare may have created it while this one waited.
        if self.existing_exchange(&req)? {
            return Ok(());
        }
        let definition = self.new_exchange(&req)?;
        self.commit(change, vec![DefinitionCommand::DeclareExchange(definition)])
            .await?;
        Ok(())
    }

    /// Whether the exchange a declare names exists, once the declare's checks against it pass.
    fn existing_exchange(&self, req: &DeclareExchange<'_>) -> Result<bool, AmqpError> {
        let topo = self.read();
        let Some(ex) = topo.exchanges.get(req.name) else {
            return Ok(false);
        };
        if req.passive {
            return Ok(true);
        }
        if ex.kind.as_str() != req.kind {
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
        Ok(true)
    }

    /// The definition of the exchange a (not passive) declare creates, once its checks pass.
    fn new_exchange(&self, req: &DeclareExchange<'_>) -> Result<ExchangeDefinition, AmqpError> {
        Ok(ExchangeDefinition {
            name: req.name.to_owned(),
            kind: check_new_exchange(&self.name, req)?,
            durable: req.durable,
            auto_delete: req.auto_delete,
            internal: req.internal,
            arguments: req.arguments.clone(),
        })
    }

    pub async fn delete_exchange(
        self: &Arc<Self>,
        name: &str,
        if_unused: bool,
    ) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let change = self.begin_change().await;
        let commands = {
            let topo = self.read();
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
            topo.with_cascade(DefinitionCommand::DeleteExchange {
                name: name.to_owned(),
                durable: ex.durable,
            })
        };
        self.commit(change, commands).await?;
        Ok(())
    }
}

/// The checks of a queue a declare creates that need nothing but the declare (its name, its
/// arguments, its queue type's properties), with RabbitMQ's texts: apart so that a definitions
/// import can make them before the vhost it fills exists.
pub fn check_new_queue(vhost: &str, req: &DeclareQueue<'_>) -> Result<QueueArgs, AmqpError> {
    if req.name.starts_with("amq.") && !req.server_named {
        return Err(AmqpError::access_refused(format!(
            "queue name '{}' contains reserved prefix 'amq.*'",
            req.name
        )));
    }
    let args = QueueArgs::parse_declared(req.arguments, req.name, vhost)?;
    if args.queue_type.needs_plain_durable() {
        let refused = [
            (!req.durable, "non-durable"),
            (req.exclusive, "exclusive-owner"),
            (req.auto_delete, "auto-delete"),
        ];
        if let Some((_, property)) = refused.iter().find(|(bad, _)| *bad) {
            return Err(AmqpError::precondition_failed(format!(
                "invalid property '{property}' for queue '{}' in vhost '{vhost}'",
                req.name
            )));
        }
    }
    Ok(args)
}

/// The checks of an exchange a declare creates (its type, its name, its arguments), as
/// [`check_new_queue`] for queues; the type it names.
pub fn check_new_exchange(
    vhost: &str,
    req: &DeclareExchange<'_>,
) -> Result<ExchangeKind, AmqpError> {
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
    Dedup::parse(&exchange_args(req.arguments, req.name, vhost))?;
    Ok(kind)
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
