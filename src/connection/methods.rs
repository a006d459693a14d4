//! Channel-level commands: channel lifecycle, exchanges, queues, basic, confirm.

use std::collections::HashMap;
use std::sync::Arc;

use rand::Rng;
use warren_amqp::protocol::{basic, channel as chan, confirm, exchange, queue, tx, AMQPClass};
use warren_amqp::types::{AMQPValue, FieldTable};
use warren_amqp::{
    encode, AmqpError, Content, Frame, FrameKind, Method, PropertiesView, ReplyCode,
};

use super::channel::{Channel, ConsumerEntry, Settlement, TxPublish};
use super::Connection;
use crate::auth::Access;
use crate::exchange::LazyHeaders;
use crate::message::Message;
use crate::queue::args::{check_consume_args, integer};
use crate::queue::{Consumer, PublishConfirm, QueueCommand, QueueHandle};
use crate::reply_to;
use crate::vhost::{DeclareExchange, DeclareQueue, Routing, Vhost};
use warren_storage::Op;

/// `amq.gen-…` / `amq.ctag-…`: a prefix and 22 random URL-safe characters, like RabbitMQ.
fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + 22);
    s.push_str(prefix);
    for _ in 0..22 {
        s.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    s
}

/// A resource name as permission checks and refusals see it: the default exchange is
/// `amq.default`, as in RabbitMQ.
fn resource_name(kind: &str, name: &str) -> String {
    if kind == "exchange" && name.is_empty() {
        "amq.default".to_owned()
    } else {
        name.to_owned()
    }
}

impl Connection {
    /// RabbitMQ's permission check: the user's configure, write or read regex in this vhost must
    /// match the queue's or exchange's name, else 403 ACCESS_REFUSED. Answers are cached for the
    /// connection until users or permissions change (so changes apply without reconnecting).
    pub(super) fn check_access(
        &mut self,
        access: Access,
        kind: &'static str,
        name: &str,
    ) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        let name = resource_name(kind, name);
        let generation = self.broker.users.generation();
        if self.access_cache.0 != generation || self.access_cache.1.len() > 1024 {
            self.access_cache = (generation, HashMap::new());
        }
        let key = (access, kind == "queue", name);
        let allowed = match self.access_cache.1.get(&key) {
            Some(&allowed) => allowed,
            None => {
                let allowed = self
                    .broker
                    .users
                    .permitted(&self.user, &vhost.name, access, &key.2);
                self.access_cache.1.insert(key.clone(), allowed);
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(AmqpError::access_refused(format!(
                "access to {kind} '{}' in vhost '{}' refused for user '{}'",
                key.2, vhost.name, self.user
            )))
        }
    }

    fn vhost(&self) -> Result<Arc<Vhost>, AmqpError> {
        self.vhost
            .clone()
            .ok_or_else(|| AmqpError::channel_error("connection not open"))
    }

    fn channel(&mut self, ch: u16) -> Result<&mut Channel, AmqpError> {
        self.channels
            .get_mut(&ch)
            .ok_or_else(|| AmqpError::channel_error(format!("channel {ch} is not open")))
    }

    /// Every frame on a channel other than 0.
    pub(super) async fn channel_frame(&mut self, frame: Frame) -> Result<(), AmqpError> {
        let ch = frame.channel;
        let Some(channel) = self.channels.get_mut(&ch) else {
            if frame.kind != FrameKind::Method {
                return Err(AmqpError::unexpected_frame(
                    "expected method frame, got non method frame instead",
                ));
            }
            let method = super::decode(&frame.payload)?;
            let (class_id, method_id) = method.ids();
            if let Method::Other(AMQPClass::Channel(chan::AMQPMethod::Open(_))) = method {
                // Like RabbitMQ, channel_max bounds how many channels are open, not their numbers.
                if self.channels.len() >= usize::from(self.channel_max) {
                    return Err(AmqpError::not_allowed(format!(
                        "number of channels opened ({}) has reached the negotiated channel_max ({})",
                        self.channels.len(),
                        self.channel_max
                    )));
                }
                self.channels.insert(ch, Channel::default());
                self.send_method(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})),
                );
                return Ok(());
            }
            return Err(
                AmqpError::channel_error("expected 'channel.open'").on_method(class_id, method_id)
            );
        };
        if channel.closing {
            // Waiting for close-ok: commands are dropped, but frames must still make sense (a
            // dropped publish still owns its header and body frames, as in RabbitMQ).
            match frame.kind {
                FrameKind::Header => {
                    let max = self.broker.config.max_message_size;
                    match channel.assembler.header(frame.payload, max) {
                        // An oversize message on a closing channel is just skipped.
                        Err(e) if e.closes_connection() => return Err(e),
                        _ => {}
                    }
                }
                FrameKind::Body => {
                    channel.assembler.body(frame.payload)?;
                }
                FrameKind::Heartbeat => {}
                FrameKind::Method => {
                    if !channel.assembler.is_idle() {
                        return Err(channel.assembler.interrupted());
                    }
                    match super::decode(&frame.payload)? {
                        Method::Publish(p) => channel.assembler.start(p),
                        Method::Other(AMQPClass::Channel(chan::AMQPMethod::CloseOk(_))) => {
                            self.channels.remove(&ch);
                        }
                        Method::Other(AMQPClass::Channel(chan::AMQPMethod::Close(_))) => {
                            // The closes crossed: answer the client's, and (as RabbitMQ) still
                            // wait for its close-ok to ours before the channel is gone.
                            channel.crossed_close = true;
                            self.send_method(
                                ch,
                                AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                            );
                        }
                        Method::Other(AMQPClass::Channel(chan::AMQPMethod::Open(_)))
                            if channel.crossed_close =>
                        {
                            // A client that took our close-ok as the end of the channel reopens
                            // it without answering our close: the open implies that answer.
                            self.channels.insert(ch, Channel::default());
                            self.send_method(
                                ch,
                                AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})),
                            );
                        }
                        Method::Other(AMQPClass::Channel(chan::AMQPMethod::Open(_))) => {
                            return Err(AmqpError::channel_error("second 'channel.open' seen")
                                .on_method(20, 10));
                        }
                        _ => {}
                    }
                }
            }
            return Ok(());
        }
        let result = match frame.kind {
            FrameKind::Method => {
                if !channel.assembler.is_idle() {
                    return Err(channel.assembler.interrupted());
                }
                let method = super::decode(&frame.payload)?;
                let ids = method.ids();
                self.channel_method(ch, method)
                    .await
                    .map_err(|e| e.on_method(ids.0, ids.1))
            }
            FrameKind::Header | FrameKind::Body => {
                let assembled = if frame.kind == FrameKind::Header {
                    let max = self.broker.config.max_message_size;
                    channel.assembler.header(frame.payload, max)
                } else {
                    channel.assembler.body(frame.payload)
                };
                channel
                    .partial_body
                    .set(channel.assembler.buffered() as u64);
                match assembled {
                    Ok(Some(content)) => self
                        .publish(ch, content)
                        .await
                        .map_err(|e| e.on_method(60, 40)),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            FrameKind::Heartbeat => Ok(()),
        };
        match result {
            Err(e) if !e.closes_connection() => {
                self.channel_error(ch, e).await;
                Ok(())
            }
            other => other,
        }
    }

    /// Closes channels whose oldest unacknowledged delivery is older than the consumer timeout.
    pub(super) async fn check_consumer_timeouts(&mut self, now: std::time::Instant) {
        let timeout_ms = self.broker.config.consumer_timeout;
        if timeout_ms == 0 {
            return;
        }
        let timeout = std::time::Duration::from_millis(timeout_ms);
        let late: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, c)| {
                !c.closing && c.oldest_unacked_age(now).is_some_and(|age| age > timeout)
            })
            .map(|(ch, _)| *ch)
            .collect();
        for ch in late {
            let e = AmqpError::precondition_failed(format!(
                "delivery acknowledgement on channel {ch} timed out. Timeout value used: {timeout_ms} ms. This timeout value can be configured, see consumers doc guide to learn more"
            ));
            self.channel_error(ch, e).await;
        }
    }

    /// A soft error: close just this channel.
    async fn channel_error(&mut self, ch: u16, e: AmqpError) {
        tracing::debug!(channel = ch, "channel error: {}", e.reply_text());
        self.flush_confirms();
        self.drop_reply_consumer(ch);
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        c.closing = true;
        c.release().await;
        self.requeue_dead_pending();
        self.send_method(
            ch,
            AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
                reply_code: e.code.code(),
                reply_text: e.reply_text().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }

    async fn channel_method(&mut self, ch: u16, method: Method) -> Result<(), AmqpError> {
        match method {
            Method::Publish(p) => {
                self.channel(ch)?.assembler.start(p);
                // A publisher from its first publish: an alarm blocks it before its body is in.
                if !self.published {
                    self.published = true;
                    self.update_blocked();
                }
                Ok(())
            }
            Method::Ack {
                delivery_tag,
                multiple,
            } => {
                let c = self.channel(ch)?;
                let settled = c.take_settled(delivery_tag, multiple)?;
                self.counts.acknowledged += settled.len() as u64;
                let c = self.channel(ch)?;
                c.settle_or_buffer(settled, Settlement::Ack).await;
                Ok(())
            }
            Method::Qos {
                prefetch_size,
                prefetch_count,
                global,
            } => {
                if prefetch_size != 0 {
                    return Err(AmqpError::not_implemented(format!(
                        "prefetch_size!=0 ({prefetch_size})"
                    )));
                }
                let c = self.channel(ch)?;
                if global {
                    c.flow.global_prefetch.store(
                        u32::from(prefetch_count),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    for q in c.consumers.values() {
                        q.queue.resume();
                    }
                } else {
                    c.consumer_prefetch = prefetch_count;
                }
                self.send_method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
                Ok(())
            }
            Method::Other(class) => self.class_method(ch, class).await,
        }
    }

    async fn class_method(&mut self, ch: u16, class: AMQPClass) -> Result<(), AmqpError> {
        match class {
            AMQPClass::Channel(m) => self.channel_class(ch, m).await,
            AMQPClass::Access(warren_amqp::protocol::access::AMQPMethod::Request(_)) => {
                self.send_method(
                    ch,
                    AMQPClass::Access(warren_amqp::protocol::access::AMQPMethod::RequestOk(
                        warren_amqp::protocol::access::RequestOk {},
                    )),
                );
                Ok(())
            }
            AMQPClass::Exchange(m) => self.exchange_method(ch, m).await,
            AMQPClass::Queue(m) => self.queue_method(ch, m).await,
            AMQPClass::Basic(m) => self.basic_method(ch, m).await,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(sel)) => {
                let c = self.channel(ch)?;
                if c.tx.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                c.confirm = true;
                if !sel.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Tx(m) => self.tx_method(ch, m).await,
            _ => Err(unimplemented_method()),
        }
    }

    async fn channel_class(&mut self, ch: u16, m: chan::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            chan::AMQPMethod::Open(_) => {
                Err(AmqpError::channel_error("second 'channel.open' seen"))
            }
            chan::AMQPMethod::Close(_) => {
                self.drop_reply_consumer(ch);
                if let Some(mut c) = self.channels.remove(&ch) {
                    self.confirms_due.retain(|due| *due != ch);
                    c.release().await;
                    self.requeue_dead_pending();
                }
                self.send_method(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                );
                Ok(())
            }
            chan::AMQPMethod::CloseOk(_) => Err(unimplemented_method()),
            chan::AMQPMethod::Flow(flow) => {
                if !flow.active {
                    return Err(AmqpError::not_implemented("active=false"));
                }
                self.send_method(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk { active: true })),
                );
                Ok(())
            }
            _ => Err(unimplemented_method()),
        }
    }

    async fn exchange_method(&mut self, ch: u16, m: exchange::AMQPMethod) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        match m {
            exchange::AMQPMethod::Declare(d) => {
                let name = strip_cr_lf(d.exchange.as_str());
                if !d.passive && !name.is_empty() {
                    self.check_access(Access::Configure, "exchange", &name)?;
                }
                vhost.declare_exchange(DeclareExchange {
                    name: &strip_cr_lf(d.exchange.as_str()),
                    kind: d.kind.as_str(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: &d.arguments,
                })?;
                let ok =
                    AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}));
                self.durable_reply(ch, d.nowait, ok).await
            }
            exchange::AMQPMethod::Delete(d) => {
                let name = strip_cr_lf(d.exchange.as_str());
                if !name.is_empty() {
                    self.check_access(Access::Configure, "exchange", &name)?;
                }
                match vhost.delete_exchange(&name, d.if_unused) {
                    // Deleting a missing exchange succeeds, as in RabbitMQ.
                    Err(e) if e.code == ReplyCode::NotFound => {}
                    other => other?,
                }
                self.durable_reply(
                    ch,
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                )
                .await
            }
            exchange::AMQPMethod::Bind(b) => {
                self.check_access(
                    Access::Write,
                    "exchange",
                    &strip_cr_lf(b.destination.as_str()),
                )?;
                self.check_access(Access::Read, "exchange", &strip_cr_lf(b.source.as_str()))?;
                vhost.bind_exchange(
                    &strip_cr_lf(b.destination.as_str()),
                    &strip_cr_lf(b.source.as_str()),
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                self.durable_reply(
                    ch,
                    b.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                )
                .await
            }
            exchange::AMQPMethod::Unbind(u) => {
                self.check_access(
                    Access::Write,
                    "exchange",
                    &strip_cr_lf(u.destination.as_str()),
                )?;
                self.check_access(Access::Read, "exchange", &strip_cr_lf(u.source.as_str()))?;
                vhost.unbind_exchange(
                    &strip_cr_lf(u.destination.as_str()),
                    &strip_cr_lf(u.source.as_str()),
                    u.routing_key.as_str(),
                    &u.arguments,
                )?;
                self.durable_reply(
                    ch,
                    u.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                )
                .await
            }
            _ => Err(unimplemented_method()),
        }
    }

    async fn tx_method(&mut self, ch: u16, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        let c = self.channel(ch)?;
        match m {
            tx::AMQPMethod::Select(_) => {
                if c.confirm {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                c.tx.get_or_insert_with(Default::default);
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            tx::AMQPMethod::Commit(_) => {
                let Some(buffer) = c.tx.as_mut().map(std::mem::take) else {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                };
                for (settled, how) in buffer.settlements {
                    self.channel(ch)?.settle(settled, how).await;
                }
                let vhost = self.vhost()?;
                for p in buffer.publishes {
                    let content = p.content;
                    let raw_properties = content.properties.clone();
                    let props = PropertiesView::parse(&raw_properties).unwrap_or_default();
                    if let Err(e) = self.route_and_deliver(ch, &vhost, content, &props).await {
                        // The exchange went away after the publish: nothing to route to.
                        tracing::debug!(
                            channel = ch,
                            "transactional publish dropped at commit: {}",
                            e.reply_text()
                        );
                    }
                }
                self.sync_storage().await?;
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            }
            tx::AMQPMethod::Rollback(_) => {
                if c.tx.is_none() {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                }
                c.rollback();
                self.send_method(
                    ch,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
            }
            _ => return Err(unimplemented_method()),
        }
        Ok(())
    }

    /// Resolves a queue name from a method: empty means the channel's last declared queue.
    /// (Names are not stripped of CR/LF here: see [`Connection::stripped_queue_name`].)
    fn queue_name(&mut self, ch: u16, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        self.channel(ch)?
            .last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    /// The queue a declare, bind, unbind or delete names, as RabbitMQ reads it: an empty name is
    /// the channel's last declared queue, and carriage returns and line feeds are dropped from
    /// any other (`"que\nue"` is `queue`; `"\n"` is the queue named `""`).
    fn stripped_queue_name(&mut self, ch: u16, name: &str) -> Result<String, AmqpError> {
        if name.is_empty() {
            self.queue_name(ch, name)
        } else {
            Ok(strip_cr_lf(name).into_owned())
        }
    }

    /// queue.bind and queue.unbind: the queue, and the routing key, which is the queue's name
    /// when both the queue and the key are empty (RabbitMQ's "last declared queue" shortcut).
    fn binding_queue_and_key(
        &mut self,
        ch: u16,
        queue: &str,
        routing_key: &str,
    ) -> Result<(String, String), AmqpError> {
        let name = self.stripped_queue_name(ch, queue)?;
        let key = if queue.is_empty() && routing_key.is_empty() {
            name.clone()
        } else {
            routing_key.to_owned()
        };
        Ok((name, key))
    }

    /// queue.declare of a direct reply-to name: the pseudo-queue itself always exists; a
    /// requester's `amq.rabbitmq.reply-to.<key>` exists while its channel consumes replies
    /// (declare-ok with 0 messages and 1 consumer, whatever the flags), and is otherwise
    /// missing (404), as in RabbitMQ.
    fn declare_reply_to(&mut self, ch: u16, d: queue::Declare) -> Result<(), AmqpError> {
        let name = strip_cr_lf(d.queue.as_str()).into_owned();
        let exists = name == reply_to::PSEUDO_QUEUE
            || name
                .strip_prefix(reply_to::PREFIX)
                .is_some_and(|key| self.broker.replies.contains(key));
        if !exists {
            return Err(gone(&*self.vhost()?, &name));
        }
        if !d.nowait {
            self.send_method(
                ch,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: name.into(),
                    message_count: 0,
                    consumer_count: 1,
                })),
            );
        }
        Ok(())
    }

    async fn queue_method(&mut self, ch: u16, m: queue::AMQPMethod) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        match m {
            // Matched before CR/LF are stripped, as RabbitMQ does.
            queue::AMQPMethod::Declare(d)
                if d.queue.as_str().starts_with(reply_to::PSEUDO_QUEUE) =>
            {
                self.declare_reply_to(ch, d)
            }
            queue::AMQPMethod::Declare(d) => {
                let stripped = strip_cr_lf(d.queue.as_str());
                let server_named = stripped.is_empty() && !d.passive;
                let name = if server_named {
                    generated_name("amq.gen-")
                } else {
                    self.stripped_queue_name(ch, d.queue.as_str())?
                };
                if !d.passive {
                    self.check_access(Access::Configure, "queue", &name)?;
                }
                let (q, created) = vhost.declare_queue(DeclareQueue {
                    name: &name,
                    passive: d.passive,
                    durable: d.durable,
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    arguments: &d.arguments,
                    connection: self.id,
                    server_named,
                })?;
                if created && q.is_exclusive() {
                    self.exclusive_queues.push(q.clone());
                }
                self.channel(ch)?.last_queue = Some(name.clone());
                self.sync_storage().await?;
                if !d.nowait {
                    let stats = q
                        .ask(|reply| QueueCommand::Stats { used: true, reply })
                        .await
                        .unwrap_or_default();
                    self.send_method(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                            queue: name.into(),
                            message_count: stats.ready,
                            consumer_count: stats.consumers,
                        })),
                    );
                }
                Ok(())
            }
            queue::AMQPMethod::Bind(b) => {
                let (name, key) =
                    self.binding_queue_and_key(ch, b.queue.as_str(), b.routing_key.as_str())?;
                self.check_access(Access::Write, "queue", &name)?;
                self.check_access(Access::Read, "exchange", &strip_cr_lf(b.exchange.as_str()))?;
                vhost.bind_queue(
                    &name,
                    self.id,
                    &strip_cr_lf(b.exchange.as_str()),
                    &key,
                    &b.arguments,
                )?;
                self.durable_reply(
                    ch,
                    b.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                )
                .await
            }
            queue::AMQPMethod::Unbind(u) => {
                let (name, key) =
                    self.binding_queue_and_key(ch, u.queue.as_str(), u.routing_key.as_str())?;
                self.check_access(Access::Write, "queue", &name)?;
                self.check_access(Access::Read, "exchange", &strip_cr_lf(u.exchange.as_str()))?;
                vhost.unbind_queue(
                    &name,
                    self.id,
                    &strip_cr_lf(u.exchange.as_str()),
                    &key,
                    &u.arguments,
                )?;
                let ok = AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {}));
                self.durable_reply(ch, false, ok).await
            }
            queue::AMQPMethod::Purge(p) => {
                let name = self.queue_name(ch, p.queue.as_str())?;
                self.check_access(Access::Read, "queue", &name)?;
                let q = vhost.queue(&name, self.id)?;
                let n = q
                    .ask(QueueCommand::Purge)
                    .await
                    .map_err(|_| gone(&vhost, &name))?;
                self.durable_reply(
                    ch,
                    p.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                        message_count: n,
                    })),
                )
                .await
            }
            queue::AMQPMethod::Delete(d) => {
                let name = self.stripped_queue_name(ch, d.queue.as_str())?;
                self.check_access(Access::Configure, "queue", &name)?;
                let n = match vhost.queue(&name, self.id) {
                    Ok(q) => q
                        .ask(|reply| QueueCommand::Delete {
                            if_unused: d.if_unused,
                            if_empty: d.if_empty,
                            reply,
                        })
                        .await
                        .unwrap_or(Ok(0))?,
                    // Deleting a missing queue succeeds with a count of 0, as in RabbitMQ.
                    Err(e) if e.code == ReplyCode::NotFound => 0,
                    Err(e) => return Err(e),
                };
                self.durable_reply(
                    ch,
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                        message_count: n,
                    })),
                )
                .await
            }
            _ => Err(unimplemented_method()),
        }
    }

    async fn basic_method(&mut self, ch: u16, m: basic::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            basic::AMQPMethod::Consume(c) => self.consume(ch, c).await,
            basic::AMQPMethod::Cancel(c) => {
                let tag = c.consumer_tag.as_str();
                let is_reply_consumer = self
                    .channel(ch)?
                    .reply_consumer
                    .as_ref()
                    .is_some_and(|(t, _)| &**t == tag);
                if is_reply_consumer {
                    self.drop_reply_consumer(ch);
                }
                let entry = self.channel(ch)?.consumers.remove(tag);
                if let Some(entry) = entry {
                    let _ = entry
                        .queue
                        .ask(|done| QueueCommand::Cancel {
                            consumer_id: entry.id,
                            done,
                        })
                        .await;
                    self.requeue_dead_pending();
                }
                if !c.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
                Ok(())
            }
            basic::AMQPMethod::Get(g) => {
                let vhost = self.vhost()?;
                let name = self.queue_name(ch, g.queue.as_str())?;
                self.check_access(Access::Read, "queue", &name)?;
                let q = vhost.queue(&name, self.id)?;
                let no_ack = g.no_ack;
                let got = q
                    .ask(|reply| QueueCommand::Get { no_ack, reply })
                    .await
                    .map_err(|_| gone(&vhost, &name))?;
                match got {
                    Some(r) => {
                        self.counts.delivered += 1;
                        let tag = self.channel(ch)?.next_tag(q.clone(), r.id, !no_ack, false);
                        let m = &r.message;
                        encode::write_get_ok(
                            &mut self.out,
                            ch,
                            tag,
                            r.redelivered,
                            m.exchange(),
                            m.routing_key(),
                            r.remaining,
                        );
                        encode::write_content(
                            &mut self.out,
                            ch,
                            m.properties(),
                            m.body(),
                            self.frame_max,
                        );
                    }
                    None => self.send_method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                    ),
                }
                Ok(())
            }
            basic::AMQPMethod::Reject(r) => {
                let c = self.channel(ch)?;
                let settled = c.take_settled(r.delivery_tag, false)?;
                c.settle_or_buffer(
                    settled,
                    if r.requeue {
                        Settlement::Requeue
                    } else {
                        Settlement::Reject
                    },
                )
                .await;
                Ok(())
            }
            basic::AMQPMethod::Nack(n) => {
                let c = self.channel(ch)?;
                let settled = c.take_settled(n.delivery_tag, n.multiple)?;
                c.settle_or_buffer(
                    settled,
                    if n.requeue {
                        Settlement::Requeue
                    } else {
                        Settlement::Reject
                    },
                )
                .await;
                Ok(())
            }
            basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue })
            | basic::AMQPMethod::Recover(basic::Recover { requeue }) => {
                if !requeue {
                    return Err(AmqpError::not_implemented("requeue=false"));
                }
                let c = self.channel(ch)?;
                let all = c.take_settled(0, true)?;
                c.settle(all, Settlement::Requeue).await;
                if matches!(m, basic::AMQPMethod::Recover(_)) {
                    self.send_method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                    );
                }
                Ok(())
            }
            _ => Err(unimplemented_method()),
        }
    }

    async fn consume(&mut self, ch: u16, c: basic::Consume) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        if c.queue.as_str() == reply_to::PSEUDO_QUEUE {
            return self.consume_replies(ch, c);
        }
        let name = self.queue_name(ch, c.queue.as_str())?;
        self.check_access(Access::Read, "queue", &name)?;
        let q = vhost.queue(&name, self.id)?;
        check_consume_args(&c.arguments, &name, &vhost.name)?;
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            generated_name("amq.ctag-").into()
        } else {
            c.consumer_tag.as_str().into()
        };
        let (id, connection, connection_flow, events) = (
            self.broker.next_id(),
            self.id,
            self.flow.clone(),
            self.events_tx.clone(),
        );
        let channel = self.channel(ch)?;
        if channel.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let consumer = Consumer {
            id,
            tag: tag.clone(),
            connection,
            channel: ch,
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            prefetch: u32::from(channel.consumer_prefetch),
            priority: c
                .arguments
                .inner()
                .get("x-priority")
                .and_then(integer)
                .unwrap_or(0)
                .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            channel_flow: channel.flow.clone(),
            connection_flow,
            events,
        };
        // Registered before the queue can deliver, so the first delivery finds its consumer.
        channel.consumers.insert(
            tag.clone(),
            ConsumerEntry {
                id,
                queue: q.clone(),
            },
        );
        let added = q
            .ask(|reply| QueueCommand::Consume(consumer, reply))
            .await
            .unwrap_or_else(|_| Err(gone(&vhost, &name)));
        if let Err(e) = added {
            self.channel(ch)?.consumers.remove(&tag);
            return Err(e);
        }
        if !c.nowait {
            self.send_method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.as_ref().into(),
                })),
            );
        }
        Ok(())
    }

    /// basic.consume of `amq.rabbitmq.reply-to`: this channel receives direct replies.
    fn consume_replies(&mut self, ch: u16, c: basic::Consume) -> Result<(), AmqpError> {
        if !c.no_ack {
            return Err(AmqpError::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            generated_name("amq.ctag-").into()
        } else {
            c.consumer_tag.as_str().into()
        };
        let events = self.events_tx.clone();
        let channel = self.channel(ch)?;
        if channel.reply_consumer.is_some() {
            return Err(AmqpError::precondition_failed("reply consumer already set"));
        }
        let key = generated_name("");
        channel.reply_consumer = Some((tag.clone(), key.clone()));
        self.broker.replies.register(key, events, ch, tag.clone());
        if !c.nowait {
            self.send_method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.as_ref().into(),
                })),
            );
        }
        Ok(())
    }

    /// Forgets a channel's direct reply-to consumer (cancelled, or the channel is closing).
    pub(super) fn drop_reply_consumer(&mut self, ch: u16) {
        if let Some((_, key)) = self
            .channels
            .get_mut(&ch)
            .and_then(|c| c.reply_consumer.take())
        {
            self.broker.replies.unregister(&key);
        }
    }

    /// A complete message from the client: route it, store it in its queues (at commit in a
    /// transaction), confirm it.
    async fn publish(&mut self, ch: u16, mut content: Content) -> Result<(), AmqpError> {
        if content.publish.immediate {
            // RabbitMQ refuses it once the whole message is in.
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        if !self.published {
            self.published = true;
            self.update_blocked();
        }
        self.counts.received += 1;
        let vhost = self.vhost()?;
        // The last exchange allowed is remembered, so a steady publisher costs a compare.
        let generation = self.broker.users.generation();
        let known = self
            .publish_allowed
            .as_ref()
            .is_some_and(|(g, x)| *g == generation && *x == content.publish.exchange);
        if !known {
            self.check_access(
                Access::Write,
                "exchange",
                &String::from_utf8_lossy(&content.publish.exchange),
            )?;
            self.publish_allowed = Some((generation, content.publish.exchange.clone()));
        }
        let asks_direct_reply = PropertiesView::parse(&content.properties)
            .is_ok_and(|p| p.reply_to == Some(reply_to::PSEUDO_QUEUE.as_bytes()));
        if asks_direct_reply {
            let key = self
                .channel(ch)?
                .reply_consumer
                .as_ref()
                .map(|(_, key)| key.clone());
            let Some(key) = key else {
                return Err(AmqpError::precondition_failed(
                    "fast reply consumer does not exist",
                ));
            };
            content.properties =
                with_reply_to(&content.properties, &format!("{}{key}", reply_to::PREFIX))
                    .ok_or_else(|| {
                        AmqpError::precondition_failed("cannot rewrite the reply_to property")
                    })?;
        }
        // Parsed from a handle of its own, so that `content` can move on while `props` lives.
        let raw_properties = content.properties.clone();
        let props = PropertiesView::parse(&raw_properties).unwrap_or_default();
        validate_properties(&props)?;
        if let Some(user_id) = props.user_id {
            if user_id != self.user.as_bytes() {
                return Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    String::from_utf8_lossy(user_id),
                    self.user
                )));
            }
        }
        if content.publish.exchange.is_empty()
            && content
                .publish
                .routing_key
                .starts_with(reply_to::PREFIX.as_bytes())
        {
            return self.publish_direct_reply(ch, content);
        }
        if self.channel(ch)?.tx.is_some() {
            // A transaction's publishes are routed at commit, as in RabbitMQ (a queue deleted
            // meanwhile makes a mandatory one come back, one declared meanwhile takes it); the
            // exchange and the CC/BCC headers are checked now.
            vhost.check_publish_target(&String::from_utf8_lossy(&content.publish.exchange))?;
            if props.headers.is_some_and(may_have_sender_selected_keys) {
                sender_selected_keys(LazyHeaders::new(props.headers).get())?;
            }
            if let Some(tx) = self.channel(ch)?.tx.as_mut() {
                tx.publishes.push(TxPublish::new(content));
            }
            return Ok(());
        }
        self.route_and_deliver(ch, &vhost, content, &props).await
    }

    /// Routes a complete message and hands it to its queues (or returns it), confirming it in
    /// confirm mode.
    async fn route_and_deliver(
        &mut self,
        ch: u16,
        vhost: &Vhost,
        mut content: Content,
        props: &PropertiesView<'_>,
    ) -> Result<(), AmqpError> {
        let headers = LazyHeaders::new(props.headers);
        let sender_selected = props.headers.is_some_and(may_have_sender_selected_keys);
        let (extra_keys, strip_bcc) = if sender_selected {
            sender_selected_keys(headers.get())?
        } else {
            (Vec::new(), false)
        };
        let exchange = String::from_utf8_lossy(&content.publish.exchange);
        let routing_key = String::from_utf8_lossy(&content.publish.routing_key);
        let rk: &str = &routing_key;
        let mut keys: Vec<&str> = Vec::new();
        let keys: &[&str] = if extra_keys.is_empty() {
            std::slice::from_ref(&rk)
        } else {
            keys.push(&routing_key);
            keys.extend(extra_keys.iter().map(String::as_str));
            &keys
        };
        let mut targets = std::mem::take(&mut self.route_buf);
        targets.clear();
        let routing = match vhost.route_publish(&exchange, keys, &headers, props, &mut targets) {
            Ok(routing) => routing,
            Err(e) => {
                self.route_buf = targets;
                return Err(e);
            }
        };
        drop(headers);
        if targets.is_empty() && routing == Routing::Routed {
            if content.publish.mandatory {
                self.counts.unroutable_returned += 1;
            } else {
                self.counts.unroutable_dropped += 1;
            }
        } else {
            self.counts.routed += 1;
        }
        if strip_bcc {
            content.properties = without_bcc(&content.properties).unwrap_or(content.properties);
        }
        let channel = self.channel(ch)?;
        let confirm_seq = channel.confirm.then(|| {
            channel.published += 1;
            channel.published
        });
        if confirm_seq.is_some() && !self.confirms_due.contains(&ch) {
            self.confirms_due.push(ch);
        }
        if routing == Routing::Duplicate {
            // Dropped, but confirmed (nothing to wait for): the message is already there.
            self.route_buf = targets;
            return Ok(());
        }
        let targets = self
            .deliver_publish(ch, targets, content, confirm_seq)
            .await;
        self.route_buf = targets;
        Ok(())
    }

    /// A reply to a direct reply-to request: straight to the requester's channel.
    fn publish_direct_reply(&mut self, ch: u16, content: Content) -> Result<(), AmqpError> {
        let routing_key = String::from_utf8_lossy(&content.publish.routing_key).into_owned();
        let mandatory = content.publish.mandatory;
        let (exchange, properties, body) = (
            content.publish.exchange.clone(),
            content.properties.clone(),
            content.body.clone(),
        );
        let delivered = self
            .broker
            .replies
            .deliver(&routing_key, Message::from_content(content, None));
        if !delivered && mandatory {
            encode::write_return(
                &mut self.out,
                ch,
                312,
                "NO_ROUTE",
                &exchange,
                routing_key.as_bytes(),
            );
            encode::write_content(&mut self.out, ch, &properties, &body, self.frame_max);
        }
        let channel = self.channel(ch)?;
        if channel.confirm && channel.tx.is_none() {
            channel.published += 1;
            if !self.confirms_due.contains(&ch) {
                self.confirms_due.push(ch);
            }
        }
        Ok(())
    }

    /// Hands a routed message to its queues, or returns it (mandatory, no route). A persistent
    /// message bound for durable queues is stored first (once, for all of them); its confirm, if
    /// `confirm_seq` asks for one, waits for the disk. Gives the emptied target list back.
    async fn deliver_publish(
        &mut self,
        ch: u16,
        mut targets: Vec<Arc<QueueHandle>>,
        content: Content,
        confirm_seq: Option<u64>,
    ) -> Vec<Arc<QueueHandle>> {
        if targets.is_empty() {
            if content.publish.mandatory {
                encode::write_return(
                    &mut self.out,
                    ch,
                    312,
                    "NO_ROUTE",
                    &content.publish.exchange,
                    &content.publish.routing_key,
                );
                encode::write_content(
                    &mut self.out,
                    ch,
                    &content.properties,
                    &content.body,
                    self.frame_max,
                );
            }
            return targets;
        }
        let persistent = PropertiesView::parse(&content.properties).is_ok_and(|p| p.persistent());
        let durable: Vec<u64> = if persistent {
            targets.iter().filter_map(|q| q.storage_id).collect()
        } else {
            Vec::new()
        };
        let mut waits = 0;
        let message = if durable.is_empty() {
            Message::from_content(content, None)
        } else {
            let store = &self.broker.store;
            let id = store.next_message_id();
            let message = Message::from_content(content, Some(id));
            let listener =
                confirm_seq.map(|seq| (self.confirm_relay.clone(), super::confirm_token(ch, seq)));
            let data = message.to_stored();
            store.submit(
                Op::PutMessage {
                    id,
                    data,
                    queues: durable,
                },
                listener,
            );
            waits += 1;
            message
        };
        for q in targets.drain(..) {
            // A queue that may refuse the publish (x-overflow reject-publish) answers the confirm.
            let confirm = match confirm_seq {
                Some(seq) if q.args.may_reject_publish() => {
                    waits += 1;
                    Some(PublishConfirm {
                        events: self.events_tx.clone(),
                        channel: ch,
                        seq,
                    })
                }
                _ => None,
            };
            let _ = q
                .send(QueueCommand::Publish {
                    message: message.clone(),
                    confirm,
                })
                .await;
        }
        if let (Some(seq), Some(c)) = (confirm_seq, self.channels.get_mut(&ch)) {
            c.expect_answers(seq, waits);
        }
        targets
    }
}

/// A cheap look at a raw headers table for `CC` / `BCC` keys before decoding it.
fn may_have_sender_selected_keys(raw: &[u8]) -> bool {
    raw.windows(3).any(|w| w == b"\x02CC") || raw.windows(4).any(|w| w == b"\x03BCC")
}

/// Routing keys added by the `CC` and `BCC` headers (sender-selected distribution), and whether
/// a `BCC` header is there to be removed before delivery.
/// RabbitMQ takes them only as arrays (of long strings); anything else refuses the message.
fn sender_selected_keys(headers: &FieldTable) -> Result<(Vec<String>, bool), AmqpError> {
    let mut keys = Vec::new();
    for name in ["CC", "BCC"] {
        match headers.inner().get(name) {
            None => {}
            Some(AMQPValue::FieldArray(values)) => {
                for v in values.as_slice() {
                    if let AMQPValue::LongString(s) = v {
                        keys.push(String::from_utf8_lossy(s.as_bytes()).into_owned());
                    }
                }
            }
            Some(other) => {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid message: {{unacceptable_type_in_header,\"{name}\",{}}}",
                    crate::queue::args::type_name(other)
                )))
            }
        }
    }
    Ok((keys, headers.contains_key("BCC")))
}

/// The checks RabbitMQ makes on a message's properties before routing it.
fn validate_properties(props: &PropertiesView<'_>) -> Result<(), AmqpError> {
    if let Some(mode) = props.delivery_mode {
        if mode != 1 && mode != 2 {
            return Err(AmqpError::precondition_failed(format!(
                "invalid message: {{delivery_mode_unknown,{mode}}}"
            )));
        }
    }
    if let Some(raw) = props.expiration {
        let text = String::from_utf8_lossy(raw);
        match text.parse::<i64>() {
            Ok(n) if n < 0 => {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid expiration '{text}': {{value_negative,{n}}}"
                )))
            }
            Ok(_) => {}
            Err(_) => {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid expiration '{text}': no_integer"
                )))
            }
        }
    }
    Ok(())
}

/// Re-encodes properties with another `reply_to`.
fn with_reply_to(raw: &[u8], reply_to: &str) -> Option<bytes::Bytes> {
    use warren_amqp::protocol::basic::parse_properties;
    let (_, props) = parse_properties(raw).ok()?;
    let props = props.with_reply_to(reply_to.into());
    encode::encode_properties(&props).ok().map(Into::into)
}

/// Re-encodes properties without the `BCC` header (never delivered, as in RabbitMQ).
fn without_bcc(raw: &[u8]) -> Option<bytes::Bytes> {
    use warren_amqp::protocol::basic::parse_properties;
    let (_, props) = parse_properties(raw).ok()?;
    let mut headers = props.headers().clone()?;
    let mut kept = FieldTable::default();
    for (k, v) in headers.inner() {
        if k.as_str() != "BCC" {
            kept.insert(k.clone(), v.clone());
        }
    }
    headers = kept;
    let props = props.with_headers(headers);
    encode::encode_properties(&props).ok().map(Into::into)
}

impl Connection {
    /// Answers a command that may have changed durable state: once that is on disk, and only
    /// if the client wants an answer.
    async fn durable_reply(
        &mut self,
        ch: u16,
        nowait: bool,
        reply: AMQPClass,
    ) -> Result<(), AmqpError> {
        self.sync_storage().await?;
        if !nowait {
            self.send_method(ch, reply);
        }
        Ok(())
    }

    /// Waits until this connection's writes are on disk (before answering a declare, bind, delete
    /// or commit that changed something durable); free when nothing is pending.
    async fn sync_storage(&self) -> Result<(), AmqpError> {
        self.broker.store.sync().await.map_err(|e| {
            tracing::error!("storage sync failed: {e}");
            AmqpError::internal_error("could not write to disk")
        })
    }
}

/// A queue or exchange name without its carriage returns and line feeds, which RabbitMQ drops
/// from the names in declare, delete, bind and unbind (not in publish, get, consume or purge).
fn strip_cr_lf(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains(['\r', '\n']) {
        name.replace(['\r', '\n'], "").into()
    } else {
        name.into()
    }
}

/// A method only a server may send (RabbitMQ's answer when a client sends one).
fn unimplemented_method() -> AmqpError {
    AmqpError::command_invalid("unimplemented method")
}

fn gone(vhost: &Vhost, name: &str) -> AmqpError {
    AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", vhost.name))
}
