//! basic.consume and basic.cancel, for queues and for direct reply-to (`amq.rabbitmq.reply-to`).

use std::sync::Arc;

use warren_amqp::protocol::{basic, AMQPClass};
use warren_amqp::AmqpError;

use super::{generated_name, gone};
use crate::auth::Access;
use crate::connection::channel::ConsumerEntry;
use crate::connection::Connection;
use crate::queue::args::{check_consume_args, integer};
use crate::queue::core::ConsumerSpec;
use crate::queue::{ConnEvent, Consumer, ConsumerOutbox, QueueCommand};
use crate::reply_to;
use crate::tracking::ConsumerInfo;

impl Connection {
    pub(super) async fn consume(&mut self, ch: u16, c: basic::Consume) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        if c.queue.as_str() == reply_to::PSEUDO_QUEUE {
            return self.consume_replies(ch, c);
        }
        let name = self.queue_name(ch, c.queue.as_str())?;
        self.check_access(Access::Read, "queue", &name)?;
        let q = vhost.queue(&name, self.id)?;
        check_consume_args(&c.arguments, &name, &vhost.name)?;
        let tag = consumer_tag(&c);
        let (id, connection_flow, events) = (
            self.broker.next_id(),
            self.flow.clone(),
            self.events_tx.clone(),
        );
        let channel = self.channel(ch)?;
        let stream_start = match q.is_stream() {
            true => Some(crate::queue::stream::check_consume(
                &c.arguments,
                channel.consumer_prefetch,
                c.no_ack,
                &name,
                &vhost.name,
            )?),
            false => None,
        };
        if channel.consumers().contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let consumer = Consumer {
            spec: ConsumerSpec {
                id,
                no_ack: c.no_ack,
                exclusive: c.exclusive,
                prefetch: u32::from(channel.consumer_prefetch),
                priority: c
                    .arguments
                    .inner()
                    .get("x-priority")
                    .and_then(integer)
                    .unwrap_or(0)
                    .clamp(i64::from(i32::MIN), i64::from(i32::MAX))
                    as i32,
            },
            outbox: ConsumerOutbox {
                channel: ch,
                tag: tag.clone(),
                channel_flow: channel.flow.clone(),
                connection_flow,
                events,
            },
            stream_start,
        };
        // Registered before the queue can deliver, so the first delivery finds its consumer.
        let shown = ConsumerInfo {
            tag: tag.clone(),
            queue: q.name.clone(),
            ack_required: !c.no_ack,
            exclusive: c.exclusive,
            prefetch_count: channel.consumer_prefetch,
            arguments: c.arguments.clone(),
        };
        channel.add_consumer(
            ConsumerEntry {
                id,
                queue: q.clone(),
            },
            shown,
        );
        let added = q
            .ask(|reply| QueueCommand::Consume(consumer, reply))
            .await
            .unwrap_or_else(|_| Err(gone(&vhost, &name)));
        if let Err(e) = added {
            self.channel(ch)?.remove_consumer(&tag);
            return Err(e);
        }
        self.consume_ok(ch, c.nowait, &tag);
        Ok(())
    }

    /// basic.cancel of a queue's consumer or of the direct reply-to consumer.
    pub(super) async fn cancel(&mut self, ch: u16, c: basic::Cancel) -> Result<(), AmqpError> {
        let tag = c.consumer_tag.as_str();
        let is_reply_consumer = self
            .channel(ch)?
            .reply_consumer
            .as_ref()
            .is_some_and(|(t, _)| &**t == tag);
        if is_reply_consumer {
            self.drop_reply_consumer(ch);
        }
        let channel = self.channel(ch)?;
        let entry = channel.remove_consumer(tag);
        if let Some(entry) = entry {
            // As in RabbitMQ, what the queue sent the consumer before it took the cancel is
            // delivered before cancel-ok (a no-ack consumer's would be lost otherwise): those
            // deliveries are in the events channel already when the queue answers, so a marker
            // sent after them says when cancel-ok goes out.
            channel.cancelling.push(entry.id);
            let _ = entry
                .queue
                .ask(|done| QueueCommand::Cancel {
                    consumer_id: entry.id,
                    done,
                })
                .await;
            let _ = self.events_tx.send(ConnEvent::Cancelled {
                channel: ch,
                consumer_id: entry.id,
                consumer_tag: tag.into(),
                nowait: c.nowait,
            });
            return Ok(());
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

    /// basic.consume of `amq.rabbitmq.reply-to`: this channel receives direct replies.
    fn consume_replies(&mut self, ch: u16, c: basic::Consume) -> Result<(), AmqpError> {
        if !c.no_ack {
            return Err(AmqpError::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        let tag = consumer_tag(&c);
        let events = self.events_tx.clone();
        let key = self.broker.replies.new_key(generated_name(""));
        let channel = self.channel(ch)?;
        if channel.reply_consumer.is_some() {
            return Err(AmqpError::precondition_failed("reply consumer already set"));
        }
        channel.reply_consumer = Some((tag.clone(), key.clone()));
        self.broker.replies.register(key, events, ch, tag.clone());
        self.consume_ok(ch, c.nowait, &tag);
        Ok(())
    }

    /// consume-ok, unless the client asked for none.
    fn consume_ok(&mut self, ch: u16, nowait: bool, tag: &str) {
        if !nowait {
            self.send_method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.into(),
                })),
            );
        }
    }

    /// Forgets a channel's direct reply-to consumer (cancelled, or the channel is closing).
    pub(in crate::connection) fn drop_reply_consumer(&mut self, ch: u16) {
        if let Some((_, key)) = self
            .channels
            .get_mut(&ch)
            .and_then(|c| c.reply_consumer.take())
        {
            self.broker.replies.unregister(&key);
        }
    }
}

/// The consumer's tag: the client's, or `amq.ctag-…` when it left it empty.
fn consumer_tag(c: &basic::Consume) -> Arc<str> {
    if c.consumer_tag.as_str().is_empty() {
        generated_name("amq.ctag-").into()
    } else {
        c.consumer_tag.as_str().into()
    }
}
