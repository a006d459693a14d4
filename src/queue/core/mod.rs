//! The queue as a state machine that does no I/O: ready messages in order (by priority level when
//! the queue has priorities), deliveries awaiting settlement, consumers served by priority and
//! round-robin within their prefetch (or one at a time with single active consumer), and
//! everything that removes messages on its own: TTL, length limits, delivery limits,
//! dead-lettering, `x-expires`, auto-delete.
//!
//! [`QueueCore::apply`] takes a [`Command`] and a [`Context`]. Everything the outcome depends on
//! beyond the queue's own state comes from the context (the clock, whether a consumer's
//! connection and channel have room, what the queue's log holds); everything it does to the world
//! goes out through the context as data ([`Effect`]s for consumers, dead-letters and deletion,
//! [`LogRecord`]s for the queue's durable log). The same commands with the same answers give the
//! same state and the same effects on every copy, which is what a replicated queue needs; the
//! owner task ([`super::owner`]) is the context that carries them out.
//!
//! A queue without a log can be copied whole: [`QueueCore::replica_state`] and
//! [`QueueCore::from_replica_state`] (a replicated queue's snapshot).
//!
//! Files: `dispatch.rs` (consumers and deliveries), `removal.rs` (publish, limits, expiry,
//! settlement, dead-lettering, purge and delete), `paging.rs` (paging out and in, log writes),
//! `replica.rs` (the state as a value).

mod dispatch;
mod paging;
mod removal;
mod replica;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warren_amqp::AmqpError;

use super::args::QueueType;
use super::dead_letter::Reason;
use super::dedup::DedupCache;
use super::log::QueueLog;
use super::ready::{Entry, Ready, Slot};
use super::{GetReply, QueueArgs, QueueStats};
use crate::message::MessageRef;
use warren_storage::Enqueued;

pub use replica::{
    ReplicaConsumer, ReplicaDelivery, ReplicaEntry, ReplicaMessage, ReplicaState, ReplicaStateError,
};

/// What a queue is told to do.
pub enum Command {
    /// A message routed to the queue; `logged` is its durable form when the queue should log it
    /// (a persistent message for a durable queue; the one who routed it made it, once for all
    /// of the message's queues).
    Publish {
        message: MessageRef,
        logged: Option<Enqueued>,
    },
    Consume(ConsumerSpec),
    Cancel {
        consumer: u64,
    },
    Get {
        no_ack: bool,
    },
    /// Deliveries settled by ack.
    Ack(Vec<u64>),
    /// Deliveries refused without requeue (reject/nack): dead-lettered or dropped.
    Reject(Vec<u64>),
    /// Deliveries handed back, to be delivered again with `redelivered` set.
    Requeue(Vec<u64>),
    /// Deliveries that never reached the consumer (its connection was gone when they were
    /// sent): they go back where they were, not marked redelivered, and the consumer goes.
    /// `consumer` is `None` for a `basic.get` whose channel stopped waiting for the answer.
    Undelivered {
        consumer: Option<u64>,
        deliveries: Vec<u64>,
    },
    Purge,
    Delete {
        if_unused: bool,
        if_empty: bool,
    },
    /// The queue's counts. `used`: a declare, which counts as a use for `x-expires`.
    Stats {
        used: bool,
    },
    /// The end of a batch of commands, or a timer: expire, dispatch, write the log, page out.
    Tick,
    /// The queue's settings changed (a policy was set, changed or cleared): act on these
    /// arguments from now on.
    Configure(QueueArgs),
    /// Held dead-letters (see [`DeadLetter::held`]) that every queue they reached has
    /// confirmed: the queue lets go of them.
    DeadLettersReleased(Vec<u64>),
}

/// A consumer as the state machine sees it; where its deliveries go is the context's business.
/// Serializable as part of a [`ReplicaState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerSpec {
    /// Unique in the broker.
    pub id: u64,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Per-consumer prefetch (0 = unlimited).
    pub prefetch: u32,
    /// `x-priority`: higher-priority consumers are served first.
    pub priority: i32,
}

/// What a command answers.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// A publish was taken or refused by `x-overflow`; a duplicate counts as taken.
    Published(Taken),
    Consumed(Result<(), AmqpError>),
    Got(Option<GetReply>),
    Purged(u32),
    Deleted(Result<u32, AmqpError>),
    Stats(QueueStats),
}

/// What became of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Refused (`x-overflow` reject-publish): a confirming publisher gets a nack.
    Refused,
    /// Taken (or a duplicate, dropped as already there): nothing to wait for.
    Taken,
    /// Taken and appended to the queue's log: durable once the log says so.
    Logged,
}

/// What the queue does to the world, carried out by its owner.
#[derive(Debug)]
pub enum Effect {
    Deliver {
        consumer: u64,
        delivery: u64,
        redelivered: bool,
        no_ack: bool,
        message: MessageRef,
    },
    /// The queue cancels a consumer (the queue is being deleted).
    ConsumerCancelled { consumer: u64 },
    /// A message leaves for the dead-letter exchange.
    DeadLetter(DeadLetter),
    /// The queue is gone; no command changes it any more.
    Deleted,
}

/// A message on its way to the queue's dead-letter exchange.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub exchange: String,
    /// The first is the key it is delivered with.
    pub routing_keys: Vec<String>,
    /// The message's properties with its `x-death` history.
    pub properties: Vec<u8>,
    pub reason: Reason,
    /// The original message (its body goes along).
    pub message: MessageRef,
    /// Held by the queue until every queue it reaches has confirmed it (a quorum queue's
    /// at-least-once dead-lettering, alone: the log keeps the message until then), by this id:
    /// routed with confirms, again after a refusal, released with
    /// [`Command::DeadLettersReleased`]. None: the queue has let go of it.
    pub held: Option<u64>,
}

/// The state machine's view of the world: inputs it asks for, outputs it hands over.
pub trait Context {
    /// A monotonic clock in milliseconds (TTLs, `x-expires`).
    fn now_ms(&self) -> u64;
    /// Milliseconds since the Unix epoch (the `time` of an `x-death` entry, deduplication).
    fn wall_clock_ms(&self) -> u64;
    /// Whether the consumer's connection and channel can take one more delivery now (a no-ack
    /// consumer takes no channel credit, but a channel whose channel-wide limit is used up sends
    /// nothing, to it either: RabbitMQ's limiter blocks the whole channel).
    fn consumer_has_room(&mut self, consumer: u64) -> bool;
    /// Takes one unit of the consumer's channel-wide credit (`basic.qos` global); false when the
    /// channel's limit is used up. Not asked for no-ack consumers.
    fn take_channel_credit(&mut self, consumer: u64) -> bool;
    fn emit(&mut self, effect: Effect);
    /// The queue's durable log (only used by queues that have one).
    fn log(&mut self) -> &mut dyn QueueLog;
}

/// A delivery awaiting ack, and which consumer's prefetch it counts against.
struct Outstanding {
    entry: Entry,
    consumer: Option<u64>,
}

struct ActiveConsumer {
    spec: ConsumerSpec,
    unacked: u32,
}

/// An entry to page out once the log has made its message durable.
struct PageOut {
    /// The log's position once the message was written ([`UNSTAMPED`] until the batch's log
    /// write has appended it).
    written_at: u64,
    entry: u64,
    level: usize,
    /// The id of a transient message's copy.
    copy: Option<u64>,
}

/// The position of a page-out whose message is not appended to the log yet.
const UNSTAMPED: u64 = u64::MAX;

/// How many entries near the head are read back together when the head is paged out.
const PAGE_IN_WINDOW: usize = 256;

/// While messages wait to be paged out, the queue looks at the log's progress this often even
/// when idle.
const PAGE_OUT_POLL_MS: u64 = 20;

/// After a failed read of paged-out messages, try again this much later.
const PAGE_IN_RETRY_MS: u64 = 500;

/// Re-base the TTL clock when it passes this many milliseconds (about 24 days).
const CLOCK_REBASE_AT: u32 = 1 << 31;

/// What a queue needs to know about itself to start.
#[derive(Debug, Clone)]
pub struct CoreSpec {
    pub name: Arc<str>,
    /// For error texts.
    pub vhost: Arc<str>,
    pub args: QueueArgs,
    pub auto_delete: bool,
    /// Whether the queue keeps its messages in a durable log.
    pub logged: bool,
    /// Body bytes of ready messages a logged queue keeps in memory; messages beyond it are paged
    /// out to the log and read back when they near the head.
    pub memory_limit: u64,
}

/// A message a logged queue held at start-up.
pub struct RecoveredEntry {
    pub slot: Slot,
    pub expiration_ms: Option<u32>,
    pub redelivered: bool,
    /// Held as a dead-letter its targets had not confirmed, and why it was dead-lettered.
    pub dead_lettered: Option<Reason>,
}

/// A dead-letter a logged queue holds (see [`DeadLetter::held`]).
#[derive(Debug)]
pub(super) struct HeldEntry {
    /// Where the log has its message (see [`Entry::stored_as`]).
    stored: Option<(u64, bool)>,
    bytes: u64,
}

pub struct QueueCore {
    name: Arc<str>,
    vhost: Arc<str>,
    args: QueueArgs,
    auto_delete: bool,
    logged: bool,
    ready: Ready,
    outstanding: HashMap<u64, Outstanding>,
    /// In registration order (the first is the single active consumer when that is on).
    consumers: Vec<ActiveConsumer>,
    next_consumer: usize,
    next_id: u64,
    had_consumer: bool,
    /// The context's clock when the queue's TTL clock read 0 (re-based before it overflows).
    epoch: u64,
    /// Last use (consume, get, declare) for `x-expires`, on the context's clock.
    last_used: u64,
    /// Boxed: most queues have none, and an idle queue's core is kept by every member.
    dedup: Option<Box<DedupCache>>,
    memory_limit: u64,
    /// Entries to page out once the log has their message, oldest first.
    page_out: VecDeque<PageOut>,
    /// How many of the newest `page_out` entries await the batch's log write for a position.
    unstamped: usize,
    /// Persistent messages taken since the last log write, appended once per batch.
    enqueued: Vec<Enqueued>,
    /// When reading paged-out messages failed: try again then (context clock).
    retry_at: Option<u64>,
    /// Log ids settled since the last write, written once per batch.
    removed: Vec<u64>,
    /// Transient messages' paged-out copies no longer needed, removed once per batch.
    removed_copies: Vec<u64>,
    /// The highest log id handed to a consumer, and the highest already written.
    delivered_through: u64,
    delivered_recorded: u64,
    deleted: bool,
    /// Dead-letters kept outside the ready list until their targets confirm them (a quorum
    /// queue's at-least-once dead-lettering), by count and body bytes: they count against the
    /// length limits, as RabbitMQ's do, so reject-publish pushes back while a target is away.
    held_dead_letters: (u64, u64),
    /// The dead-letters this queue holds itself (a logged quorum queue alone: a replicated one's
    /// machine holds them), by hold id: where the log has each, and its body bytes.
    held: HashMap<u64, HeldEntry>,
    next_hold: u64,
    /// Messages held as dead-letters, and held dead-letters let go, since the last log write
    /// (written once per batch): a restart dead-letters the held ones again.
    held_logged: Vec<(u64, Reason)>,
    released_logged: Vec<u64>,
    /// Messages in and out so far, for the management API's rates.
    counts: super::QueueCounts,
}

impl QueueCore {
    /// What it was made from (with the arguments in effect now), to make another like it.
    pub fn spec(&self) -> CoreSpec {
        CoreSpec {
            name: self.name.clone(),
            vhost: self.vhost.clone(),
            args: self.args.clone(),
            auto_delete: self.auto_delete,
            logged: self.logged,
            memory_limit: self.memory_limit,
        }
    }

    pub fn new(spec: CoreSpec, now_ms: u64) -> Self {
        let dedup = spec
            .args
            .deduplication
            .as_ref()
            .map(|d| Box::new(DedupCache::new(d, spec.logged)));
        QueueCore {
            ready: Ready::new(spec.args.max_priority),
            memory_limit: if spec.logged {
                spec.memory_limit
            } else {
                u64::MAX
            },
            name: spec.name,
            vhost: spec.vhost,
            args: spec.args,
            auto_delete: spec.auto_delete,
            logged: spec.logged,
            outstanding: HashMap::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            next_id: 0,
            had_consumer: false,
            epoch: now_ms,
            last_used: now_ms,
            dedup,
            page_out: VecDeque::new(),
            unstamped: 0,
            enqueued: Vec::new(),
            retry_at: None,
            removed: Vec::new(),
            removed_copies: Vec::new(),
            delivered_through: 0,
            delivered_recorded: 0,
            deleted: false,
            held_dead_letters: (0, 0),
            held: HashMap::new(),
            next_hold: 0,
            held_logged: Vec::new(),
            released_logged: Vec::new(),
            counts: super::QueueCounts::default(),
        }
    }

    /// How many dead-letters (and body bytes) the queue keeps until their targets confirm them;
    /// they count against `x-max-length` and `x-max-length-bytes`.
    pub fn set_held_dead_letters(&mut self, count: u64, bytes: u64) {
        self.held_dead_letters = (count, bytes);
    }

    /// Takes the counts of a copy of this queue (they are not part of its replicated state: a
    /// quorum queue's machine packed while its member sleeps keeps them beside it).
    pub fn restore_counts(&mut self, counts: super::QueueCounts) {
        self.counts = counts;
    }

    /// The deduplication cache, for restoring what a logged queue remembered.
    pub fn dedup_mut(&mut self) -> Option<&mut DedupCache> {
        self.dedup.as_deref_mut()
    }

    /// Puts back a message the queue held before a restart. Recovered messages start their TTL
    /// afresh, as RabbitMQ's do. A dead-letter it held unconfirmed is dead-lettered again, as
    /// RabbitMQ's quorum queues send theirs again (if the queue holds dead-letters no more, it
    /// goes back among the ready ones rather than be lost).
    pub fn recover(&mut self, m: RecoveredEntry, ctx: &mut impl Context) {
        let entry = self.new_entry(m.slot, m.expiration_ms, m.redelivered, ctx);
        match m.dead_lettered {
            Some(reason) if self.holds_dead_letters() => self.dead_letter(entry, reason, ctx),
            _ => self.ready.push_back(entry),
        }
    }

    /// Whether the queue has quorum queues' rules: returned messages go to the back, deliveries
    /// carry `x-delivery-count`.
    fn is_quorum(&self) -> bool {
        self.args.queue_type == QueueType::Quorum
    }

    /// The arguments it acts on (its declare's, with its policies).
    pub fn args(&self) -> &QueueArgs {
        &self.args
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// Messages waiting for the log before they can be paged out.
    pub fn page_out_backlog(&self) -> usize {
        self.page_out.len()
    }

    /// The deliveries awaiting settlement that `consumer` holds (`None`: those handed out by
    /// `basic.get`), in delivery order.
    pub fn unsettled_of(&self, consumer: Option<u64>) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.consumer == consumer)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            ready: self.ready.len() as u32,
            unacked: self.outstanding.len() as u32,
            consumers: self.consumers.len() as u32,
            held_dead_letters: self.held_dead_letters.0 as u32,
            held_dead_letter_bytes: self.held_dead_letters.1,
            counts: self.counts,
        }
    }

    /// Carries out one command.
    pub fn apply(&mut self, command: Command, ctx: &mut impl Context) -> Outcome {
        if self.deleted {
            return match command {
                Command::Delete { .. } => Outcome::Deleted(Ok(0)),
                Command::Stats { .. } => Outcome::Stats(self.stats()),
                _ => Outcome::Done,
            };
        }
        // A channel's methods take effect in the order they were sent: messages published before
        // a get, a cancel, a consume or a count reach the consumers that could take them first,
        // as they would have in RabbitMQ (a batch's own dispatch comes only at its end).
        if !matches!(
            command,
            Command::Publish { .. }
                | Command::Ack(_)
                | Command::Reject(_)
                | Command::Requeue(_)
                | Command::Undelivered { .. }
                | Command::Tick
                | Command::Configure(_)
        ) {
            self.dispatch(ctx);
        }
        match command {
            Command::Publish { message, logged } => {
                Outcome::Published(self.publish(message, logged, ctx))
            }
            Command::Consume(spec) => {
                self.last_used = ctx.now_ms();
                Outcome::Consumed(self.add_consumer(spec))
            }
            Command::Cancel { consumer } => {
                self.remove_consumer(consumer, ctx);
                Outcome::Done
            }
            Command::Get { no_ack } => Outcome::Got(self.get(no_ack, ctx)),
            Command::Ack(ids) => {
                self.ack(ids);
                Outcome::Done
            }
            Command::Reject(ids) => {
                self.reject(ids, ctx);
                Outcome::Done
            }
            Command::Requeue(ids) => {
                self.requeue(ids, ctx);
                Outcome::Done
            }
            Command::Undelivered {
                consumer,
                deliveries,
            } => {
                self.undelivered(deliveries);
                if let Some(consumer) = consumer {
                    self.remove_consumer(consumer, ctx);
                }
                Outcome::Done
            }
            Command::Purge => Outcome::Purged(self.purge()),
            Command::Delete {
                if_unused,
                if_empty,
            } => Outcome::Deleted(self.delete_if(if_unused, if_empty, ctx)),
            Command::Stats { used } => {
                if used {
                    self.last_used = ctx.now_ms();
                    self.expire(ctx);
                }
                Outcome::Stats(self.stats())
            }
            Command::Tick => {
                self.tick(ctx);
                Outcome::Done
            }
            Command::Configure(args) => {
                self.configure(args, ctx);
                Outcome::Done
            }
            Command::DeadLettersReleased(ids) => {
                self.release_dead_letters(ids);
                Outcome::Done
            }
        }
    }

    /// What a batch ends with (and what a timer runs).
    fn tick(&mut self, ctx: &mut impl Context) {
        if self.expires_at().is_some_and(|at| ctx.now_ms() >= at) {
            tracing::debug!(queue = %self.name, "queue expired (x-expires)");
            self.delete(ctx);
            return;
        }
        self.expire(ctx);
        self.dispatch(ctx);
        self.write_log(ctx);
        self.page_out_committed(ctx);
    }

    /// When the queue next needs a [`Command::Tick`] without being told anything (context
    /// clock): a message expires, `x-expires` runs out, paging waits for the log or retries.
    /// `now_ms` is asked only when paging waits (reading the clock is a call).
    pub fn next_wakeup(&self, now_ms: impl FnOnce() -> u64) -> Option<u64> {
        if self.deleted {
            return None;
        }
        let expiry = self
            .ready
            .next_expiry()
            .map(|ms| self.epoch + u64::from(ms));
        let unused = self.expires_at();
        let paging = (!self.page_out.is_empty()).then(|| now_ms() + PAGE_OUT_POLL_MS);
        [expiry, unused, paging, self.retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// When `x-expires` deletes the queue, if it stays unused.
    fn expires_at(&self) -> Option<u64> {
        let ms = self.args.expires?;
        self.consumers
            .is_empty()
            .then(|| self.last_used.saturating_add(ms))
    }

    /// Milliseconds on the queue's TTL clock (never 0, which means "no expiry").
    fn clock(&mut self, now_ms: u64) -> u32 {
        let mut ms = now_ms.saturating_sub(self.epoch);
        if ms >= u64::from(CLOCK_REBASE_AT) {
            let by = CLOCK_REBASE_AT / 2;
            self.epoch += u64::from(by);
            self.ready.rebase(by);
            for o in self.outstanding.values_mut() {
                o.entry.expires_at = o.entry.expires_at.saturating_sub(by).max(1);
            }
            ms = now_ms.saturating_sub(self.epoch);
        }
        (ms.min(u64::from(u32::MAX)) as u32).max(1)
    }

    fn new_entry(
        &mut self,
        slot: Slot,
        expiration_ms: Option<u32>,
        redelivered: bool,
        ctx: &impl Context,
    ) -> Entry {
        let ttl = match (self.args.message_ttl, expiration_ms) {
            (Some(q), Some(m)) => Some(q.min(u64::from(m))),
            (q, m) => q.or(m.map(u64::from)),
        };
        let expires_at = match ttl {
            // TTL 0 expires at once unless a consumer can take it right away (see `publish`).
            // The clock is read only for messages that can expire (it is a call per message).
            Some(ttl) => self
                .clock(ctx.now_ms())
                .saturating_add(ttl.min(u64::from(u32::MAX / 4)) as u32),
            None => 0,
        };
        let id = self.next_id;
        self.next_id += 1;
        Entry {
            id,
            slot,
            expires_at,
            returns: 0,
            redelivered,
        }
    }

    /// The log id of a message if this queue keeps it in its log.
    fn logged_id(&self, message: &MessageRef) -> Option<u64> {
        self.logged.then(|| message.storage_id()).flatten()
    }

    /// The log id of an entry's message if this queue keeps it in its log as persistent.
    fn entry_logged_id(&self, entry: &Entry) -> Option<u64> {
        let (id, transient) = entry.stored_as()?;
        (self.logged && !transient).then_some(id)
    }

    /// An entry leaves the queue for good: its copy in the log (if any) goes at the next write.
    fn forget_logged_copy(&mut self, entry: &Entry) {
        self.forget_stored(entry.stored_as());
    }

    /// Drops a message from the log (see [`Entry::stored_as`]) with the batch's writes.
    fn forget_stored(&mut self, stored: Option<(u64, bool)>) {
        if !self.logged {
            return;
        }
        match stored {
            Some((id, false)) => self.removed.push(id),
            Some((id, true)) => self.removed_copies.push(id),
            None => {}
        }
    }

    fn in_use_error(&self, what: &str) -> AmqpError {
        AmqpError::precondition_failed(format!(
            "queue '{}' in vhost '{}' {what}",
            self.name, self.vhost
        ))
    }
}
