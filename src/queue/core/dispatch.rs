//! Consumers and deliveries: who is registered, who gets the next message, and what a delivery
//! leaves behind until it is settled.

use warren_amqp::AmqpError;

use super::{ActiveConsumer, ConsumerSpec, Context, Effect, Outstanding, QueueCore};
use crate::queue::delivery_count::with_delivery_count;
use crate::queue::ready::Entry;
use crate::queue::GetReply;

impl QueueCore {
    pub(super) fn add_consumer(&mut self, spec: ConsumerSpec) -> Result<(), AmqpError> {
        let exclusive_in_use = self.consumers.iter().any(|c| c.spec.exclusive);
        if exclusive_in_use || (spec.exclusive && !self.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        self.had_consumer = true;
        self.consumers.push(ActiveConsumer { spec, unacked: 0 });
        Ok(())
    }

    /// Drops a consumer; the queue deletes itself when that was the last consumer of an
    /// auto-delete queue.
    pub(super) fn remove_consumer(&mut self, consumer: u64, ctx: &mut impl Context) {
        let before = self.consumers.len();
        self.consumers.retain(|c| c.spec.id != consumer);
        if self.consumers.len() == before {
            return;
        }
        self.last_used = ctx.now_ms();
        if self.consumers.is_empty() && self.auto_delete && self.had_consumer {
            tracing::debug!(queue = %self.name, "auto-deleting queue after its last consumer");
            self.delete(ctx);
        }
    }

    /// A delivery was settled: its consumer may take another.
    pub(super) fn settled(&mut self, consumer: Option<u64>) {
        if let Some(cid) = consumer {
            if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.id == cid) {
                c.unacked = c.unacked.saturating_sub(1);
            }
        }
    }

    /// `basic.get`: the head of the queue, if any.
    pub(super) fn get(&mut self, no_ack: bool, ctx: &mut impl Context) -> Option<GetReply> {
        self.last_used = ctx.now_ms();
        self.expire(ctx);
        if !self.prepare_head(ctx) {
            return None;
        }
        let entry = self.ready.pop_front()?;
        // Messages behind it that expired leave now, so the count is what remains.
        self.expire(ctx);
        let mut message = entry.message().cloned()?;
        if self.is_quorum() {
            message = with_delivery_count(&message, entry.returns);
        }
        let got = GetReply {
            id: entry.id,
            message,
            redelivered: entry.redelivered,
            remaining: self.ready.len() as u32,
        };
        match no_ack {
            true => self.counts.got_no_ack += 1,
            false => self.counts.got += 1,
        }
        self.counts.redelivered += u64::from(got.redelivered);
        self.handed_out(entry, no_ack, None);
        Some(got)
    }

    /// A message leaves the ready list for a client: forgotten at once with no-ack, otherwise
    /// held until settled.
    fn handed_out(&mut self, entry: Entry, no_ack: bool, consumer: Option<u64>) {
        let logged = self.entry_logged_id(&entry);
        if no_ack {
            self.removed.extend(logged);
        } else {
            self.delivered_through = self.delivered_through.max(logged.unwrap_or(0));
            self.outstanding
                .insert(entry.id, Outstanding { entry, consumer });
        }
    }

    /// Hands ready messages to consumers as far as their credit allows: highest consumer
    /// priority first, round-robin among equals; only the first consumer with single active
    /// consumer.
    pub(super) fn dispatch(&mut self, ctx: &mut impl Context) {
        while !self.deleted && self.prepare_head(ctx) {
            let Some(i) = self.pick_consumer(ctx) else {
                break;
            };
            let Some(entry) = self.ready.pop_front() else {
                break;
            };
            // `prepare_head` made the head an unexpired message in memory.
            let Some(mut message) = entry.message().cloned() else {
                self.ready.insert_sorted(entry);
                break;
            };
            if self.is_quorum() && entry.returns > 0 {
                message = with_delivery_count(&message, entry.returns);
            }
            let c = &mut self.consumers[i];
            let no_ack = c.spec.no_ack;
            let consumer = c.spec.id;
            if !no_ack {
                c.unacked += 1;
            }
            let (delivery, redelivered) = (entry.id, entry.redelivered);
            match no_ack {
                true => self.counts.delivered_no_ack += 1,
                false => self.counts.delivered += 1,
            }
            self.counts.redelivered += u64::from(redelivered);
            self.handed_out(entry, no_ack, (!no_ack).then_some(consumer));
            ctx.emit(Effect::Deliver {
                consumer,
                delivery,
                redelivered,
                no_ack,
                message,
            });
        }
    }

    /// The consumer to deliver the next message to, with one unit of its channel's credit taken.
    fn pick_consumer(&mut self, ctx: &mut impl Context) -> Option<usize> {
        let n = self.consumers.len();
        let candidates = if self.args.single_active_consumer {
            n.min(1)
        } else {
            n
        };
        loop {
            let mut best: Option<usize> = None;
            for k in 0..candidates {
                let i = if candidates == n {
                    (self.next_consumer + k) % n
                } else {
                    k
                };
                let better = best.is_none_or(|b| {
                    self.consumers[i].spec.priority > self.consumers[b].spec.priority
                });
                if better && self.has_credit(i, ctx) {
                    best = Some(i);
                }
            }
            let i = best?;
            let spec = &self.consumers[i].spec;
            // Channel-wide credit is shared with other queues: taking it can still fail.
            if spec.no_ack || ctx.take_channel_credit(spec.id) {
                self.next_consumer = (i + 1) % n;
                return Some(i);
            }
        }
    }

    fn has_credit(&self, i: usize, ctx: &mut impl Context) -> bool {
        let c = &self.consumers[i];
        if !c.spec.no_ack && c.spec.prefetch != 0 && c.unacked >= c.spec.prefetch {
            return false;
        }
        ctx.consumer_has_room(c.spec.id)
    }
}
