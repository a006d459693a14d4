//! What goes out to the client: the writer task, which puts batches of encoded frames on the
//! socket (one write a batch), and the encoding of what the connection sends: methods,
//! deliveries from queues and direct replies (held back while the socket is full), consumer
//! cancellations and publisher confirms.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Duration;
use warren_amqp::encode;
use warren_amqp::protocol::AMQPClass;

use super::{Connection, OUT_HIGH_WATER, READ_CHUNK};
use crate::message::MessageRef;
use crate::queue::{ConnEvent, Delivery, QueueCommand, QueueHandle};
use crate::tracking::{bump, ConnectionInfo};

/// Frames encoded for the socket may wait in this many batches before the connection stops
/// taking more work (deliveries, client frames) for it.
pub(super) const WRITER_QUEUE: usize = 64;
/// A write that makes no progress for this long ends the connection (RabbitMQ's `send_timeout`).
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Writes what the connection sends until it stops sending; gives the socket's write half back
/// (still open: RabbitMQ closes only once the client has) unless writing failed.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Bytes>,
    info: Arc<ConnectionInfo>,
) -> Option<W> {
    let mut batch = Vec::with_capacity(16);
    while rx.recv_many(&mut batch, 16).await > 0 {
        for chunk in batch.drain(..) {
            if !write_with_progress(&mut wr, &chunk).await {
                return None;
            }
            info.sent(chunk.len());
        }
        // A no-op on TCP; over TLS it pushes out records the TLS layer may still hold.
        match tokio::time::timeout(SEND_TIMEOUT, wr.flush()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
    Some(wr)
}

/// Writes all of `chunk`, giving up when a write makes no progress within [`SEND_TIMEOUT`] (a
/// client that stopped reading) or fails.
async fn write_with_progress<W: AsyncWrite + Unpin>(wr: &mut W, mut chunk: &[u8]) -> bool {
    while !chunk.is_empty() {
        match tokio::time::timeout(SEND_TIMEOUT, wr.write(chunk)).await {
            Ok(Ok(n)) if n > 0 => chunk = &chunk[n..],
            Ok(_) => return false,
            Err(_) => {
                tracing::info!(
                    "closing a connection whose client has not read for {SEND_TIMEOUT:?}"
                );
                return false;
            }
        }
    }
    true
}

impl Connection {
    pub(super) fn send_method(&mut self, channel: u16, class: AMQPClass) {
        if let Err(e) = encode::write_method(&mut self.out, channel, &class) {
            tracing::error!("cannot encode {class:?}: {e}");
        }
    }

    /// Handles deliveries and notices from queues, a batch at a time.
    pub(super) async fn on_events(
        &mut self,
        first: ConnEvent,
        events: &mut mpsc::UnboundedReceiver<ConnEvent>,
    ) {
        let mut delivered = 0u32;
        let mut next = Some(first);
        let mut budget = 512;
        while let Some(event) = next {
            match event {
                ConnEvent::Deliver(d) => {
                    if self.out.len() >= OUT_HIGH_WATER || !self.pending.is_empty() {
                        self.pending.push_back(d);
                    } else {
                        delivered += 1;
                        self.deliver(d);
                    }
                }
                ConnEvent::ConsumerCancelled {
                    channel,
                    consumer_id,
                } => self.consumer_cancelled(channel, consumer_id),
                ConnEvent::Settled { channel, seq, ok } => self.publish_settled(channel, seq, ok),
                ConnEvent::Cancelled {
                    channel,
                    consumer_id,
                    consumer_tag,
                    nowait,
                } => self.cancel_done(channel, consumer_id, consumer_tag, nowait),
                ConnEvent::DirectReply {
                    channel,
                    consumer_tag,
                    message,
                } => {
                    if self.out.len() >= OUT_HIGH_WATER || !self.pending_replies.is_empty() {
                        self.pending_replies
                            .push_back((channel, consumer_tag, message));
                    } else {
                        self.direct_reply(channel, &consumer_tag, &message);
                    }
                }
            }
            budget -= 1;
            next = if budget > 0 && self.out.len() < READ_CHUNK * 4 {
                events.try_recv().ok()
            } else {
                None
            };
        }
        if delivered > 0 {
            self.flow.drained(delivered);
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let live = self
            .channels
            .get(&d.channel)
            .is_some_and(|c| c.accepts_delivery(&d));
        if !live {
            // Sent before its consumer or channel went away: back to the queue.
            if !d.no_ack {
                d.queue.send_now(QueueCommand::Requeue(vec![d.id]));
            }
            return;
        }
        let Some(c) = self.channels.get_mut(&d.channel) else {
            return;
        };
        let tag = c.record_delivery(&d);
        let counts = &c.info.counts;
        bump(
            match d.no_ack {
                true => &counts.deliver_no_ack,
                false => &counts.deliver,
            },
            1,
        );
        if d.redelivered {
            bump(&counts.redeliver, 1);
        }
        self.counts.delivered += 1;
        let m = &d.message;
        encode::write_deliver(
            &mut self.out,
            d.channel,
            d.consumer_tag.as_bytes(),
            tag,
            d.redelivered,
            m.exchange(),
            m.routing_key(),
        );
        encode::write_content(
            &mut self.out,
            d.channel,
            m.properties(),
            m.body(),
            self.frame_max,
        );
    }

    fn direct_reply(&mut self, ch: u16, consumer_tag: &str, m: &MessageRef) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        if c.closing
            || c.reply_consumer
                .as_ref()
                .is_none_or(|(tag, _)| &**tag != consumer_tag)
        {
            return;
        }
        let tag = c.untracked_tag();
        encode::write_deliver(
            &mut self.out,
            ch,
            consumer_tag.as_bytes(),
            tag,
            false,
            m.exchange(),
            m.routing_key(),
        );
        encode::write_content(&mut self.out, ch, m.properties(), m.body(), self.frame_max);
    }

    fn consumer_cancelled(&mut self, channel: u16, consumer_id: u64) {
        let Some(c) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some(tag) = c.remove_consumer_by_id(consumer_id) else {
            return;
        };
        if self.caps.consumer_cancel_notify && !c.closing {
            self.send_method(
                channel,
                AMQPClass::Basic(warren_amqp::protocol::basic::AMQPMethod::Cancel(
                    warren_amqp::protocol::basic::Cancel {
                        consumer_tag: tag.as_ref().into(),
                        nowait: true,
                    },
                )),
            );
        }
    }

    fn publish_settled(&mut self, ch: u16, seq: u64, ok: bool) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        c.publish_settled(seq, ok);
        if !self.confirms_due.contains(&ch) {
            self.confirms_due.push(ch);
        }
    }

    /// Sends the publisher confirms that are due, one `multiple` ack per channel.
    pub(super) fn flush_confirms(&mut self) {
        for ch in std::mem::take(&mut self.confirms_due) {
            if let Some(c) = self.channels.get_mut(&ch) {
                let mut through = c.confirmed_through();
                for (tag, multiple, ack) in c.take_due_confirms() {
                    encode::write_confirm(&mut self.out, ch, tag, multiple, ack);
                    if ack {
                        let n = if multiple { tag - through } else { 1 };
                        self.counts.confirmed += n;
                        bump(&c.info.counts.confirm, n);
                    }
                    through = tag;
                }
            }
        }
    }

    /// A cancelled consumer's queue has taken the cancel and what it sent before has been
    /// handled: its deliveries held back (the socket was full) go out now, then cancel-ok.
    fn cancel_done(&mut self, ch: u16, consumer_id: u64, tag: Arc<str>, nowait: bool) {
        let mut held = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].channel == ch && self.pending[i].consumer_id == consumer_id {
                held.extend(self.pending.remove(i));
            } else {
                i += 1;
            }
        }
        if !held.is_empty() {
            self.flow.drained(held.len() as u32);
            for d in held {
                self.deliver(d);
            }
        }
        let Some(channel) = self.channels.get_mut(&ch) else {
            return;
        };
        let before = channel.cancelling.len();
        channel.cancelling.retain(|id| *id != consumer_id);
        // A channel closed and opened again meanwhile has no such cancel: nothing to answer.
        if !nowait && channel.cancelling.len() < before {
            self.send_method(
                ch,
                AMQPClass::Basic(warren_amqp::protocol::basic::AMQPMethod::CancelOk(
                    warren_amqp::protocol::basic::CancelOk {
                        consumer_tag: tag.as_ref().into(),
                    },
                )),
            );
        }
    }

    /// Encodes deliveries held back while the socket was full, as far as there is room.
    pub(super) fn encode_pending(&mut self) {
        let mut encoded = 0;
        while self.out.len() < OUT_HIGH_WATER {
            let Some(d) = self.pending.pop_front() else {
                break;
            };
            encoded += 1;
            self.deliver(d);
        }
        if encoded > 0 {
            self.flow.drained(encoded);
        }
        while self.out.len() < OUT_HIGH_WATER {
            let Some((channel, consumer_tag, message)) = self.pending_replies.pop_front() else {
                break;
            };
            self.direct_reply(channel, &consumer_tag, &message);
        }
    }

    /// Held-back deliveries whose consumer or channel has gone go back to their queues now.
    pub(super) fn requeue_dead_pending(&mut self) {
        let mut returned = 0;
        let channels = &self.channels;
        self.pending.retain(|d| {
            let live = channels
                .get(&d.channel)
                .is_some_and(|c| c.accepts_delivery(d));
            if !live {
                returned += 1;
                if !d.no_ack {
                    d.queue.send_now(QueueCommand::Requeue(vec![d.id]));
                }
            }
            live
        });
        if returned > 0 {
            self.flow.drained(returned);
        }
    }

    /// Deliveries queues sent that the connection never encoded go back to their queues (the
    /// receiver is closed first, so a queue that tries to send more keeps the message itself).
    pub(super) async fn requeue_undelivered(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<ConnEvent>,
    ) {
        events.close();
        let mut back: Vec<(Arc<QueueHandle>, Vec<u64>)> = Vec::new();
        let mut undelivered: Vec<Delivery> = self.pending.drain(..).collect();
        while let Ok(event) = events.try_recv() {
            if let ConnEvent::Deliver(d) = event {
                undelivered.push(d);
            }
        }
        for d in undelivered {
            if d.no_ack {
                continue;
            }
            match back.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &d.queue)) {
                Some((_, ids)) => ids.push(d.id),
                None => back.push((d.queue.clone(), vec![d.id])),
            }
        }
        for (queue, ids) in back {
            let _ = queue.send(QueueCommand::Requeue(ids)).await;
        }
    }
}
