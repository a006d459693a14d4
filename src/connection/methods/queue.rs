//! The queue class: declare (including direct reply-to names), bind, unbind, purge, delete, and
//! how a method's queue name is read.

use warren_amqp::protocol::{queue, AMQPClass};
use warren_amqp::{AmqpError, ReplyCode};

use super::{generated_name, gone, strip_cr_lf, unimplemented_method};
use crate::auth::Access;
use crate::connection::Connection;
use crate::queue::QueueCommand;
use crate::reply_to;
use crate::vhost::DeclareQueue;

impl Connection {
    /// Resolves a queue name from a method: empty means the channel's last declared queue.
    /// (Names are not stripped of CR/LF here: see [`Connection::stripped_queue_name`].)
    pub(super) fn queue_name(&mut self, ch: u16, name: &str) -> Result<String, AmqpError> {
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

    pub(super) async fn queue_method(
        &mut self,
        ch: u16,
        m: queue::AMQPMethod,
    ) -> Result<(), AmqpError> {
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
                let (q, created) = vhost
                    .declare_queue(DeclareQueue {
                        name: &name,
                        passive: d.passive,
                        durable: d.durable,
                        exclusive: d.exclusive,
                        auto_delete: d.auto_delete,
                        arguments: &d.arguments,
                        connection: self.id,
                        server_named,
                    })
                    .await?;
                if created && q.is_exclusive() {
                    self.exclusive_queues.push(q.clone());
                }
                self.channel(ch)?.last_queue = Some(name.clone());
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
                            // RabbitMQ's streams count no consumers here.
                            consumer_count: if q.is_stream() { 0 } else { stats.consumers },
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
                self.check_topic_access(Access::Read, &strip_cr_lf(b.exchange.as_str()), &key)?;
                vhost
                    .bind_queue(
                        &name,
                        self.id,
                        &strip_cr_lf(b.exchange.as_str()),
                        &key,
                        &b.arguments,
                    )
                    .await?;
                self.reply(
                    ch,
                    b.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                );
                Ok(())
            }
            queue::AMQPMethod::Unbind(u) => {
                let (name, key) =
                    self.binding_queue_and_key(ch, u.queue.as_str(), u.routing_key.as_str())?;
                self.check_access(Access::Write, "queue", &name)?;
                self.check_access(Access::Read, "exchange", &strip_cr_lf(u.exchange.as_str()))?;
                self.check_topic_access(Access::Read, &strip_cr_lf(u.exchange.as_str()), &key)?;
                vhost
                    .unbind_queue(
                        &name,
                        self.id,
                        &strip_cr_lf(u.exchange.as_str()),
                        &key,
                        &u.arguments,
                    )
                    .await?;
                let ok = AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {}));
                self.reply(ch, false, ok);
                Ok(())
            }
            queue::AMQPMethod::Purge(p) => {
                let name = self.queue_name(ch, p.queue.as_str())?;
                self.check_access(Access::Read, "queue", &name)?;
                let q = vhost.queue(&name, self.id)?;
                if q.is_stream() {
                    return Err(crate::queue::stream::not_supported(
                        "queue.purge",
                        &name,
                        &vhost.name,
                    ));
                }
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
}
