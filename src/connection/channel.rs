//! Per-channel state: delivery tags and unacknowledged deliveries, consumers, prefetch, publisher
//! confirm sequence, and the content being assembled.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_amqp::{AmqpError, ContentAssembler};

use super::Delivery;
use crate::message::HeldCharge;
use crate::queue::{ChannelFlow, QueueCommand, QueueHandle};
use crate::tracking::{ChannelInfo, ConsumerInfo};

/// A delivery the client has not settled yet.
pub(super) struct Unacked {
    pub queue: Arc<QueueHandle>,
    pub id: u64,
    /// Counted against the channel's prefetch (consumer deliveries, not basic.get).
    pub from_consumer: bool,
    /// For the consumer timeout.
    pub delivered_at: Instant,
}

pub(super) struct ConsumerEntry {
    pub id: u64,
    pub queue: Arc<QueueHandle>,
}

/// A confirm-mode publish and how many answers it still waits for.
struct Awaiting {
    seq: u64,
    waits: u32,
    ok: bool,
}

/// What to tell a queue about deliveries the client settled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Settlement {
    Ack,
    Requeue,
    /// Rejected or nacked without requeue: dead-lettered or dropped.
    Reject,
}

#[derive(Default)]
pub(super) struct Channel {
    /// We sent channel.close and wait for close-ok.
    pub closing: bool,
    /// While closing, the client's own channel.close crossed ours (and was answered).
    pub crossed_close: bool,
    pub assembler: ContentAssembler,
    next_tag: u64,
    /// (Changed only through the methods below, which keep `info`'s count of it.)
    unacked: BTreeMap<u64, Unacked>,
    /// (Changed only through the methods below, which keep `info`'s list of them.)
    consumers: HashMap<Arc<str>, ConsumerEntry>,
    /// What the management API sees of this channel.
    pub info: Arc<ChannelInfo>,
    /// basic.qos global=false: the prefetch of consumers created from now on.
    pub consumer_prefetch: u16,
    pub flow: Arc<ChannelFlow>,
    pub confirm: bool,
    /// Sequence number of the last publish in confirm mode.
    pub published: u64,
    /// Everything up to this sequence number has been acked or nacked.
    confirmed: u64,
    /// Confirm-mode publishes still waiting (for the disk, or for queues that may refuse them),
    /// in order: confirms stop before the first that still waits.
    awaiting: VecDeque<Awaiting>,
    /// The last queue declared on this channel (an empty queue name refers to it).
    pub last_queue: Option<String>,
    /// In transaction mode (tx.select): publishes and settlements wait for tx.commit.
    pub tx: Option<TxBuffer>,
    /// The direct reply-to consumer: its tag and the key replies are addressed with.
    pub reply_consumer: Option<(Arc<str>, String)>,
    /// The body octets of the message being received, counted by the memory alarm.
    pub partial_body: HeldCharge,
    /// Which of the channel's queues is resumed first when channel-wide credit comes back.
    resume_turn: usize,
    /// The connection's count of its consumers per queue (shared by its channels).
    pub consumed: ConsumedQueues,
    /// Consumers cancelled whose cancel-ok has not gone out: the deliveries their queues sent
    /// before taking the cancel are still theirs (see `ConnEvent::Cancelled`).
    pub cancelling: Vec<u64>,
}

/// How many consumers a connection has on each queue (by the queue handle's address): a
/// confirm-mode publish to a queue the connection consumes from is confirmed by the queue,
/// after the deliveries it makes, as RabbitMQ orders them; others are confirmed at once.
#[derive(Default, Clone)]
pub(super) struct ConsumedQueues(Arc<Consumed>);

#[derive(Default)]
struct Consumed {
    by_queue: std::sync::Mutex<HashMap<usize, u32>>,
    /// Consumers in all: a publisher-only connection (the common case) answers without the lock.
    total: std::sync::atomic::AtomicUsize,
}

impl ConsumedQueues {
    fn key(queue: &Arc<QueueHandle>) -> usize {
        Arc::as_ptr(queue) as usize
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, u32>> {
        self.0.by_queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, queue: &Arc<QueueHandle>) {
        *self.lock().entry(Self::key(queue)).or_insert(0) += 1;
        self.0.total.fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&self, queue: &Arc<QueueHandle>) {
        let mut map = self.lock();
        if let std::collections::hash_map::Entry::Occupied(mut e) = map.entry(Self::key(queue)) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
            self.0.total.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether the connection has a consumer on `queue`.
    pub fn contains(&self, queue: &Arc<QueueHandle>) -> bool {
        self.0.total.load(Ordering::Relaxed) > 0 && self.lock().contains_key(&Self::key(queue))
    }
}

/// What a transaction holds until commit.
#[derive(Default)]
pub(super) struct TxBuffer {
    pub publishes: Vec<TxPublish>,
    /// Settlements (acks, nacks, rejects), in order.
    pub settlements: Vec<(Vec<(u64, Unacked)>, Settlement)>,
}

/// A publish held until commit, when it is routed and delivered (as in RabbitMQ).
pub(super) struct TxPublish {
    pub content: warren_amqp::Content,
    /// What it holds until commit, counted by the memory alarm.
    pub _held: HeldCharge,
}

impl TxPublish {
    pub fn new(content: warren_amqp::Content) -> Self {
        let bytes =
            content.properties.len() + content.body.len() + content.publish.routing_key.len();
        TxPublish {
            content,
            _held: HeldCharge::new(bytes as u64 + TX_PUBLISH_OVERHEAD),
        }
    }
}

/// What a buffered publish costs beyond its octets.
const TX_PUBLISH_OVERHEAD: u64 = 128;

impl Channel {
    pub fn accepts_delivery(&self, d: &Delivery) -> bool {
        !self.closing
            && (self
                .consumers
                .get(&d.consumer_tag)
                .is_some_and(|c| c.id == d.consumer_id)
                || self.cancelling.contains(&d.consumer_id))
    }

    /// Assigns the next delivery tag, remembering the delivery until it is settled.
    pub fn record_delivery(&mut self, d: &Delivery) -> u64 {
        self.next_tag(d.queue.clone(), d.id, !d.no_ack, true)
    }

    pub fn next_tag(
        &mut self,
        queue: Arc<QueueHandle>,
        id: u64,
        track: bool,
        from_consumer: bool,
    ) -> u64 {
        self.next_tag += 1;
        if track {
            self.unacked.insert(
                self.next_tag,
                Unacked {
                    queue,
                    id,
                    from_consumer,
                    delivered_at: Instant::now(),
                },
            );
            self.info.set_unacked(self.unacked.len());
        }
        self.next_tag
    }

    /// The consumers, by tag.
    pub fn consumers(&self) -> &HashMap<Arc<str>, ConsumerEntry> {
        &self.consumers
    }

    /// Registers a consumer (and shows it).
    pub fn add_consumer(&mut self, entry: ConsumerEntry, shown: ConsumerInfo) {
        self.consumed.add(&entry.queue);
        self.consumers.insert(shown.tag.clone(), entry);
        self.info.add_consumer(shown);
    }

    /// Forgets a consumer (cancelled, or refused by its queue).
    pub fn remove_consumer(&mut self, tag: &str) -> Option<ConsumerEntry> {
        let entry = self.consumers.remove(tag)?;
        self.consumed.remove(&entry.queue);
        self.info.remove_consumer(tag);
        Some(entry)
    }

    /// How long the oldest unacknowledged delivery has waited.
    pub fn oldest_unacked_age(&self, now: Instant) -> Option<Duration> {
        self.unacked
            .values()
            .next()
            .map(|u| now.saturating_duration_since(u.delivered_at))
    }

    /// A delivery tag for a delivery that needs no settling (direct replies).
    pub fn untracked_tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    pub fn remove_consumer_by_id(&mut self, consumer_id: u64) -> Option<Arc<str>> {
        let tag = self
            .consumers
            .iter()
            .find(|(_, c)| c.id == consumer_id)?
            .0
            .clone();
        self.remove_consumer(&tag);
        Some(tag)
    }

    /// Takes the deliveries an ack/nack/reject settles: one tag, or every tag up to it with
    /// `multiple` (tag 0 with `multiple` means all). Unknown tags are a 406, as in RabbitMQ.
    pub fn take_settled(
        &mut self,
        tag: u64,
        multiple: bool,
    ) -> Result<Vec<(u64, Unacked)>, AmqpError> {
        let everything = multiple && tag == 0;
        if !everything && !self.unacked.contains_key(&tag) {
            return Err(AmqpError::precondition_failed(format!(
                "unknown delivery tag {tag}"
            )));
        }
        let settled = if everything {
            std::mem::take(&mut self.unacked).into_iter().collect()
        } else if multiple {
            let rest = self.unacked.split_off(&(tag + 1));
            std::mem::replace(&mut self.unacked, rest)
                .into_iter()
                .collect()
        } else {
            self.unacked.remove_entry(&tag).into_iter().collect()
        };
        self.info.set_unacked(self.unacked.len());
        Ok(settled)
    }

    /// An ack, nack or reject: settled now, or at commit in a transaction.
    pub async fn settle_or_buffer(&mut self, settled: Vec<(u64, Unacked)>, how: Settlement) {
        match self.tx.as_mut() {
            Some(tx) => tx.settlements.push((settled, how)),
            None => self.settle(settled, how).await,
        }
    }

    /// tx.rollback: buffered settlements are undone (their deliveries are unacked again).
    pub fn rollback(&mut self) {
        if let Some(tx) = self.tx.as_mut() {
            let buffered = std::mem::take(tx);
            for (settled, _) in buffered.settlements {
                self.unacked.extend(settled);
            }
            self.info.set_unacked(self.unacked.len());
        }
    }

    /// Publish `seq` must wait for `waits` answers before it is confirmed.
    pub fn expect_answers(&mut self, seq: u64, waits: u32) {
        if waits > 0 {
            self.awaiting.push_back(Awaiting {
                seq,
                waits,
                ok: true,
            });
        }
    }

    /// One answer about publish `seq`: stored, or taken by a queue (`ok`), or not.
    pub fn publish_settled(&mut self, seq: u64, ok: bool) {
        if let Some(a) = self.awaiting.iter_mut().find(|a| a.seq == seq) {
            a.waits = a.waits.saturating_sub(1);
            a.ok &= ok;
        }
    }

    /// Publisher confirms owed since the last flush, as (tag, multiple, ack): runs of acks
    /// folded into one `multiple` ack, each failed publish nacked on its own. A publish still
    /// waiting holds back its own confirm and every later one.
    /// The highest publish sequence number answered so far.
    pub fn confirmed_through(&self) -> u64 {
        self.confirmed
    }

    pub fn take_due_confirms(&mut self) -> Vec<(u64, bool, bool)> {
        let mut out = Vec::new();
        while let Some(front) = self.awaiting.front() {
            if front.waits > 0 {
                break;
            }
            let (seq, ok) = (front.seq, front.ok);
            self.awaiting.pop_front();
            if !ok {
                out.extend(
                    self.confirm_through(seq - 1)
                        .map(|(tag, multiple)| (tag, multiple, true)),
                );
                out.push((seq, false, false));
                self.confirmed = seq;
            }
        }
        let through = self
            .awaiting
            .front()
            .map_or(self.published, |first| first.seq - 1);
        out.extend(
            self.confirm_through(through)
                .map(|(tag, multiple)| (tag, multiple, true)),
        );
        out
    }

    fn confirm_through(&mut self, through: u64) -> Option<(u64, bool)> {
        if through <= self.confirmed {
            return None;
        }
        let multiple = through - self.confirmed > 1;
        self.confirmed = through;
        Some((through, multiple))
    }

    /// Settles deliveries with their queues: acked (dropped) or requeued. Returns the queues to
    /// resume when channel-wide prefetch credit came back.
    pub async fn settle(&mut self, settled: Vec<(u64, Unacked)>, how: Settlement) {
        let from_consumers = settled.iter().filter(|(_, u)| u.from_consumer).count() as u32;
        for (queue, ids) in group_by_queue(settled) {
            let cmd = match how {
                Settlement::Ack => QueueCommand::Ack(ids),
                Settlement::Requeue => QueueCommand::Requeue(ids),
                Settlement::Reject => QueueCommand::Reject(ids),
            };
            let _ = queue.send(cmd).await;
        }
        if from_consumers > 0 && self.flow.give_back(from_consumers) {
            let mut queues: Vec<&Arc<QueueHandle>> = Vec::new();
            for c in self.consumers.values() {
                if !queues.iter().any(|q| Arc::ptr_eq(q, &c.queue)) {
                    queues.push(&c.queue);
                }
            }
            // The first queue told takes the credit that came back: take turns, so that one
            // queue is not starved by the others (RabbitMQ spreads a channel's prefetch).
            if !queues.is_empty() {
                let first = self.resume_turn % queues.len();
                self.resume_turn = self.resume_turn.wrapping_add(1);
                queues.rotate_left(first);
            }
            for q in queues {
                q.resume();
            }
        }
    }

    /// Cancels the channel's consumers and requeues its unacked deliveries (channel closing).
    pub async fn release(&mut self) {
        // Cancelled and answered, so that the queue has let go of them (an auto-delete queue has
        // gone) before the channel's or connection's close-ok is sent.
        // (Bounded: a queue stuck on a full disk does not hold the close forever; the cancel
        // stays in its inbox.)
        self.info.clear_consumers();
        for (_, c) in self.consumers.drain() {
            self.consumed.remove(&c.queue);
            let cancel = c.queue.ask(|done| QueueCommand::Cancel {
                consumer_id: c.id,
                done,
            });
            let _ = tokio::time::timeout(CANCEL_WAIT, cancel).await;
        }
        // Settlements a transaction had not committed are undone: those deliveries go back too.
        self.rollback();
        self.tx = None;
        let unacked = std::mem::take(&mut self.unacked).into_iter().collect();
        self.info.set_unacked(0);
        self.settle(unacked, Settlement::Requeue).await;
        self.flow.unacked.store(0, Ordering::Relaxed);
        self.assembler.reset();
        self.partial_body.set(0);
    }
}

/// How long a closing channel waits for each of its queues to confirm a consumer's cancel.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Groups settled deliveries by queue, keeping tag order within each queue.
fn group_by_queue(settled: Vec<(u64, Unacked)>) -> Vec<(Arc<QueueHandle>, Vec<u64>)> {
    let mut groups: Vec<(Arc<QueueHandle>, Vec<u64>)> = Vec::new();
    for (_, u) in settled {
        match groups.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
            Some((_, ids)) => ids.push(u.id),
            None => groups.push((u.queue, vec![u.id])),
        }
    }
    groups
}
