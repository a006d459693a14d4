//! Channel-level commands, one AMQP class a file (one command a file where a class is large).
//! This file takes every frame on a channel other than 0 and hands its method to the class that
//! handles it; it also holds what several classes share (permission checks, the channel and
//! vhost look-ups, answers that wait for the disk, name helpers).
//!
//! - `channel.rs`: channel.open/close/flow, channel errors, consumer timeouts
//! - `exchange.rs`: exchange.declare/delete/bind/unbind
//! - `queue.rs`: queue.declare/bind/unbind/purge/delete
//! - `basic.rs`: the basic class's dispatch, and basic.qos
//! - `publish.rs`: basic.publish: checks, routing, storing, returns
//! - `consume.rs`: basic.consume/cancel, direct reply-to consumers
//! - `get.rs`: basic.get
//! - `settle.rs`: basic.ack/reject/nack/recover
//! - `confirm.rs`: confirm.select, and the relay of storage commits to publisher confirms
//! - `tx.rs`: tx.select/commit/rollback

mod basic;
mod channel;
mod confirm;
mod consume;
mod exchange;
mod get;
pub(crate) mod publish;
mod queue;
mod settle;
mod tx;

use std::collections::HashMap;
use std::sync::Arc;

use rand::Rng;
use warren_amqp::protocol::{channel as chan, AMQPClass};
use warren_amqp::{AmqpError, Frame, FrameKind, Method};

use super::channel::Channel;
use super::{Connection, ConnectionError};
use crate::auth::Access;
use crate::vhost::Vhost;

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

    /// RabbitMQ's topic permission check: on a topic exchange, a user with a topic permission
    /// there may publish only with routing keys its `write` pattern matches (`access` Write),
    /// and bind only with keys its `read` pattern matches (Read); 403 ACCESS_REFUSED otherwise.
    /// Not checked on a missing exchange, nor for a publish to an internal one (their own
    /// errors come first, as in RabbitMQ).
    pub(super) fn check_topic_access(
        &self,
        access: Access,
        exchange: &str,
        key: &str,
    ) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        let users = &self.broker.users;
        if !users.has_topic_permission(&self.user, &vhost.name, exchange) {
            return Ok(());
        }
        let applies = match vhost.topic_exchange(exchange) {
            Some((is_topic, internal)) => is_topic && !(internal && access == Access::Write),
            None => false,
        };
        if !applies || users.topic_permitted(&self.user, &vhost.name, exchange, access, key) {
            return Ok(());
        }
        Err(AmqpError::access_refused(format!(
            "access to topic '{key}' in exchange '{exchange}' in vhost '{}' refused for user '{}'",
            vhost.name, self.user
        )))
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
    pub(super) async fn channel_frame(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        let ch = frame.channel;
        let Some(channel) = self.channels.get_mut(&ch) else {
            if frame.kind != FrameKind::Method {
                return Err(AmqpError::unexpected_frame(
                    "expected method frame, got non method frame instead",
                )
                .into());
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
                    ))
                    .into());
                }
                if let Some(limit) = self.broker.user_channel_limit_reached(&self.user) {
                    return Err(AmqpError::not_allowed(format!(
                        "number of channels opened for user '{}' has reached the maximum allowed user limit of ({limit})",
                        self.user
                    ))
                    .into());
                }
                self.insert_channel(ch);
                self.send_method(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})),
                );
                return Ok(());
            }
            return Err(AmqpError::channel_error("expected 'channel.open'")
                .on_method(class_id, method_id)
                .into());
        };
        if channel.closing {
            // Waiting for close-ok: commands are dropped, but frames must still make sense (a
            // dropped publish still owns its header and body frames, as in RabbitMQ).
            match frame.kind {
                FrameKind::Header => {
                    let max = self.broker.config.max_message_size;
                    match channel.assembler.header(frame.payload, max) {
                        // An oversize message on a closing channel is just skipped.
                        Err(e) if e.closes_connection() => return Err(e.into()),
                        _ => {}
                    }
                }
                FrameKind::Body => {
                    channel.assembler.body(frame.payload)?;
                }
                FrameKind::Heartbeat => {}
                FrameKind::Method => {
                    if !channel.assembler.is_idle() {
                        return Err(channel.assembler.interrupted().into());
                    }
                    match super::decode(&frame.payload)? {
                        Method::Publish(p) => channel.assembler.start(p),
                        Method::Other(AMQPClass::Channel(chan::AMQPMethod::CloseOk(_))) => {
                            self.remove_channel(ch);
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
                            self.insert_channel(ch);
                            self.send_method(
                                ch,
                                AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})),
                            );
                        }
                        Method::Other(AMQPClass::Channel(chan::AMQPMethod::Open(_))) => {
                            return Err(AmqpError::channel_error("second 'channel.open' seen")
                                .on_method(20, 10)
                                .into());
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
                    return Err(channel.assembler.interrupted().into());
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
            other => Ok(other?),
        }
    }

    /// A method on an open channel, by class (publish, ack and qos come decoded apart: they are
    /// the busiest).
    async fn channel_method(&mut self, ch: u16, method: Method) -> Result<(), AmqpError> {
        match method {
            Method::Publish(p) => self.start_publish(ch, p),
            Method::Ack {
                delivery_tag,
                multiple,
            } => self.ack(ch, delivery_tag, multiple).await,
            Method::Qos {
                prefetch_size,
                prefetch_count,
                global,
            } => self.qos(ch, prefetch_size, prefetch_count, global),
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
            AMQPClass::Confirm(m) => self.confirm_method(ch, m),
            AMQPClass::Tx(m) => self.tx_method(ch, m).await,
            _ => Err(unimplemented_method()),
        }
    }

    /// Answers a command that may have changed durable state: once that is on disk, and only
    /// if the client wants an answer. (A definition change is durable once its vhost call
    /// returns, its commit awaited: it answers with [`Connection::reply`].)
    async fn durable_reply(
        &mut self,
        ch: u16,
        nowait: bool,
        reply: AMQPClass,
    ) -> Result<(), AmqpError> {
        self.sync_storage().await?;
        self.reply(ch, nowait, reply);
        Ok(())
    }

    /// Answers a command, unless the client asked for no answer.
    fn reply(&mut self, ch: u16, nowait: bool, reply: AMQPClass) {
        if !nowait {
            self.send_method(ch, reply);
        }
    }

    /// Waits until this connection's writes are on disk (before answering a purge, a queue delete
    /// or a commit that changed something durable); free when nothing is pending.
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
