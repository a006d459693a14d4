//! How messages arrive and leave: publish (with deduplication and `x-overflow`), length limits,
//! TTL expiry, settlement (ack, reject, requeue), dead-lettering, purge and delete.

use warren_amqp::AmqpError;

use warren_storage::Enqueued;

use super::{Context, DeadLetter, Effect, HeldEntry, PageOut, QueueCore, Taken, UNSTAMPED};
use crate::message::MessageRef;
use crate::queue::args::{DeadLetterStrategy, QueueType};
use crate::queue::dead_letter::{self, Reason};
use crate::queue::log::LogRecord;
use crate::queue::ready::{Entry, Slot};
use crate::queue::{Overflow, QueueArgs};

impl QueueCore {
    /// Takes a message in, or refuses it (`x-overflow` reject-publish). A taken message with a
    /// `logged` form is appended to the log with the batch's other writes.
    pub(super) fn publish(
        &mut self,
        message: MessageRef,
        logged: Option<Enqueued>,
        ctx: &mut impl Context,
    ) -> Taken {
        let logged = logged.filter(|_| self.logged);
        debug_assert_eq!(
            logged.as_ref().map(|l| l.id),
            self.logged_id(&message),
            "a logged queue logs exactly the messages stored for it"
        );
        if let Some(cache) = self.dedup.as_mut() {
            if let Some(key) = cache.key_of(&message.properties_view()) {
                if cache.is_duplicate(key, ctx.wall_clock_ms()) {
                    // Dropped, but confirmed: the publisher's message is (already) here.
                    return Taken::Taken;
                }
            }
        }
        let args = &self.args;
        let (held, held_bytes) = self.held_dead_letters;
        let over_length = args
            .max_length
            .is_some_and(|max| self.ready.len() as u64 + held >= max);
        let over_bytes = args
            .max_length_bytes
            .is_some_and(|max| self.ready.bytes() + held_bytes + message.body().len() as u64 > max);
        let overflow = args.overflow;
        let ttl_zero = args.message_ttl == Some(0) || message.expiration_ms() == Some(0);
        if (over_length || over_bytes) && overflow != Overflow::DropHead {
            // Refused: nacked to a confirming publisher, dead-lettered with reject-publish-dlx.
            if overflow == Overflow::RejectPublishDlx {
                // Never logged here, so nothing to remove from the log.
                let expiration = message.expiration_ms();
                let entry = self.new_entry(Slot::Loaded(message), expiration, false, ctx);
                self.emit_dead_letter(entry, Reason::MaxLen, None, ctx);
            }
            return Taken::Refused;
        }
        // Over the memory limit, a message is paged out as soon as the log has it: a persistent
        // one is logged with the batch, a transient one gets a copy of its own.
        let page_out = self.logged
            && self.ready.loaded_bytes() + message.body().len() as u64 > self.memory_limit;
        let taken = match logged {
            Some(record) => {
                self.enqueued.push(record);
                Taken::Logged
            }
            None => Taken::Taken,
        };
        let copy = if page_out && taken == Taken::Taken {
            let log = ctx.log();
            let id = log.next_message_id();
            log.append(LogRecord::Copy {
                id,
                message: message.clone(),
            });
            Some(id)
        } else {
            None
        };
        let level = self.ready.level_of(message.priority);
        let expiration = message.expiration_ms();
        let entry = self.new_entry(Slot::Loaded(message), expiration, false, ctx);
        if page_out {
            self.page_out.push_back(PageOut {
                written_at: UNSTAMPED,
                entry: entry.id,
                level,
                copy,
            });
            self.unstamped += 1;
        }
        self.ready.push_back(entry);
        self.counts.published += 1;
        self.enforce_limits(ctx);
        if ttl_zero {
            // A zero TTL means "deliver now or never": hand it out before it expires.
            self.dispatch(ctx);
        }
        taken
    }

    /// New settings, as RabbitMQ's queue takes a policy change: a TTL applies to messages
    /// published from now on (those already in keep the expiry they got); a lower length limit
    /// drops (dead-letters) from the head at once with `drop-head`; a new `x-expires` counts
    /// from now.
    pub(super) fn configure(&mut self, args: QueueArgs, ctx: &mut impl Context) {
        if args.expires != self.args.expires {
            self.last_used = ctx.now_ms();
        }
        self.args = args;
        if self.args.overflow == Overflow::DropHead {
            self.enforce_limits(ctx);
        }
    }

    /// Drops (dead-letters) messages from the head until the queue is within its limits.
    fn enforce_limits(&mut self, ctx: &mut impl Context) {
        loop {
            let args = &self.args;
            let over = args
                .max_length
                .is_some_and(|max| self.ready.len() as u64 > max)
                || args
                    .max_length_bytes
                    .is_some_and(|max| self.ready.bytes() > max);
            if !over {
                return;
            }
            let Some(head) = self.ready.pop_front() else {
                return;
            };
            self.dead_letter(head, Reason::MaxLen, ctx);
        }
    }

    /// Removes expired messages from the heads of the queue.
    pub(super) fn expire(&mut self, ctx: &mut impl Context) {
        if self.ready.next_expiry().is_none() {
            return;
        }
        let now = self.clock(ctx.now_ms());
        while let Some(entry) = self.ready.pop_expired(now) {
            self.dead_letter(entry, Reason::Expired, ctx);
        }
    }

    /// Whether the head expired before this millisecond (a message is still deliverable in the
    /// millisecond it expires: a TTL of 0 means "now or never", and a consumer that can take it
    /// now gets it; the batch's `expire` drops it otherwise).
    pub(super) fn head_expired(&mut self, expires_at: u32, ctx: &impl Context) -> bool {
        expires_at != 0 && expires_at < self.clock(ctx.now_ms())
    }

    pub(super) fn ack(&mut self, ids: Vec<u64>) {
        for id in ids {
            if let Some(o) = self.outstanding.remove(&id) {
                self.counts.acked += 1;
                self.settled(o.consumer);
                self.forget_logged_copy(&o.entry);
            }
        }
    }

    pub(super) fn reject(&mut self, ids: Vec<u64>, ctx: &mut impl Context) {
        for id in ids {
            if let Some(o) = self.outstanding.remove(&id) {
                self.settled(o.consumer);
                self.dead_letter(o.entry, Reason::Rejected, ctx);
            }
        }
    }

    pub(super) fn requeue(&mut self, mut ids: Vec<u64>, ctx: &mut impl Context) {
        ids.sort_unstable();
        let limit = self.args.delivery_limit;
        let to_the_back = self.is_quorum();
        if !to_the_back {
            // Back to their original positions, each found from the end.
            ids.reverse();
        }
        for id in ids {
            if let Some(o) = self.outstanding.remove(&id) {
                self.settled(o.consumer);
                let mut entry = o.entry;
                entry.redelivered = true;
                entry.returns = entry.returns.saturating_add(1);
                if limit.is_some_and(|limit| u64::from(entry.returns) > limit) {
                    self.dead_letter(entry, Reason::DeliveryLimit, ctx);
                    continue;
                }
                if to_the_back {
                    // A quorum queue's returned message goes behind the others, in delivery
                    // order, as RabbitMQ's does: a poison message does not block the queue. It
                    // takes the position there (entries stay in position order).
                    entry.id = self.next_id;
                    self.next_id += 1;
                    self.ready.push_back(entry);
                } else {
                    self.ready.insert_sorted(entry);
                }
            }
        }
        // Requeued messages count towards the length limits too: with drop-head, RabbitMQ drops
        // from the head (a queue that refuses publishes keeps what comes back).
        if self.args.overflow == Overflow::DropHead {
            self.enforce_limits(ctx);
        }
    }

    /// Deliveries that never left: back to their positions as they were.
    pub(super) fn undelivered(&mut self, ids: Vec<u64>) {
        for id in ids {
            if let Some(o) = self.outstanding.remove(&id) {
                self.settled(o.consumer);
                self.ready.insert_sorted(o.entry);
            }
        }
    }

    pub(super) fn purge(&mut self) -> u32 {
        let n = self.ready.len() as u32;
        for entry in self.ready.drain() {
            self.forget_logged_copy(&entry);
        }
        for p in self.page_out.drain(..) {
            self.removed_copies.extend(p.copy);
        }
        n
    }

    /// A message leaves the queue for good (rejected, expired, over a limit): it goes to the
    /// dead-letter exchange if the queue has one, and is dropped otherwise.
    /// A queue that holds its dead-letters until they are confirmed (see [`DeadLetter::held`])
    /// keeps the message in its log until then.
    pub(super) fn dead_letter(&mut self, entry: Entry, reason: Reason, ctx: &mut impl Context) {
        let stored = entry.stored_as();
        if self.holds_dead_letters() {
            let hold = self.next_hold;
            if let Some(bytes) = self.emit_dead_letter(entry, reason, Some(hold), ctx) {
                self.next_hold += 1;
                // A transient message's paged-out copy does not outlive a restart anyway.
                if let Some((id, false)) = stored {
                    self.held_logged.push((id, reason));
                }
                self.held.insert(hold, HeldEntry { stored, bytes });
                self.held_dead_letters.0 += 1;
                self.held_dead_letters.1 += bytes;
                return;
            }
        } else {
            self.emit_dead_letter(entry, reason, None, ctx);
        }
        self.forget_stored(stored);
    }

    /// Whether this queue holds its dead-letters itself until their targets confirm them:
    /// RabbitMQ's at-least-once strategy (a quorum queue with `x-overflow` reject-publish) on
    /// a logged queue. A replicated queue's machine holds them in its state instead.
    pub(super) fn holds_dead_letters(&self) -> bool {
        let args = &self.args;
        self.logged
            && args.queue_type == QueueType::Quorum
            && args.dead_letter_strategy == DeadLetterStrategy::AtLeastOnce
            && args.overflow == Overflow::RejectPublish
            && args.dead_letter_exchange.is_some()
    }

    /// Lets go of held dead-letters their targets have confirmed: out of the log.
    pub(super) fn release_dead_letters(&mut self, ids: Vec<u64>) {
        for id in ids {
            if let Some(held) = self.held.remove(&id) {
                if let Some((id, false)) = held.stored {
                    self.released_logged.push(id);
                }
                self.held_dead_letters.0 = self.held_dead_letters.0.saturating_sub(1);
                self.held_dead_letters.1 = self.held_dead_letters.1.saturating_sub(held.bytes);
                self.forget_stored(held.stored);
            }
        }
    }

    /// Sends an entry to the dead-letter exchange, `held` as [`DeadLetter::held`] says: its body
    /// bytes, or None if it went nowhere (no dead-letter exchange, or it could not be read).
    fn emit_dead_letter(
        &mut self,
        entry: Entry,
        reason: Reason,
        held: Option<u64>,
        ctx: &mut impl Context,
    ) -> Option<u64> {
        let exchange = self.args.dead_letter_exchange.clone()?;
        let Some(message) = self.load(&entry, ctx) else {
            tracing::warn!(queue = %self.name, "cannot read a paged-out message to dead-letter it; dropped");
            return None;
        };
        let original_key = String::from_utf8_lossy(message.routing_key()).into_owned();
        let original_exchange = String::from_utf8_lossy(message.exchange()).into_owned();
        let Some(dead) = dead_letter::dead_letter(
            message.properties(),
            reason,
            &self.name,
            &original_exchange,
            &original_key,
            self.args.dead_letter_routing_key.as_deref(),
            ctx.wall_clock_ms() / 1000,
        ) else {
            tracing::warn!(queue = %self.name, "cannot decode the properties of a dead-lettered message; dropped");
            return None;
        };
        let bytes = message.body().len() as u64;
        ctx.emit(Effect::DeadLetter(DeadLetter {
            exchange,
            routing_keys: dead.routing_keys,
            properties: dead.properties,
            reason,
            message,
            held,
        }));
        Some(bytes)
    }

    pub(super) fn delete_if(
        &mut self,
        if_unused: bool,
        if_empty: bool,
        ctx: &mut impl Context,
    ) -> Result<u32, AmqpError> {
        if if_unused && !self.consumers.is_empty() {
            return Err(self.in_use_error("in use"));
        }
        if if_empty && !self.ready.is_empty() {
            return Err(self.in_use_error("not empty"));
        }
        let n = self.ready.len() as u32;
        self.delete(ctx);
        Ok(n)
    }

    /// Cancels every consumer, drops every message, and ends the queue.
    pub(super) fn delete(&mut self, ctx: &mut impl Context) {
        self.deleted = true;
        for c in self.consumers.drain(..) {
            ctx.emit(Effect::ConsumerCancelled {
                consumer: c.spec.id,
            });
        }
        self.ready.drain();
        self.outstanding.clear();
        self.removed.clear();
        self.removed_copies.clear();
        self.page_out.clear();
        self.unstamped = 0;
        // Gone with the queue (the log forgets them with the rest).
        self.held.clear();
        self.held_dead_letters = (0, 0);
        self.held_logged.clear();
        self.released_logged.clear();
        // Taken but not yet written: gone with the queue before they reach the log.
        self.enqueued.clear();
        if self.logged {
            if let Some(cache) = self.dedup.as_mut() {
                // Whatever it was about to write is forgotten with the rest.
                cache.take_changes();
            }
            let remembered_ids = self.dedup.is_some();
            ctx.log().append(LogRecord::Deleted { remembered_ids });
        }
        ctx.emit(Effect::Deleted);
    }
}
