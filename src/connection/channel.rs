//! Per-channel state: delivery tags and unacknowledged deliveries, consumers, prefetch, publisher
//! confirm sequence, and the content being assembled.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use warren_amqp::{AmqpError, ContentAssembler};

use super::Delivery;
use crate::queue::{ChannelFlow, QueueCommand, QueueHandle};

/// A delivery the client has not settled yet.
pub(super) struct Unacked {
    pub queue: Arc<QueueHandle>,
    pub id: u64,
    /// Counted against the channel's prefetch (consumer deliveries, not basic.get).
    pub from_consumer: bool,
}

pub(super) struct ConsumerEntry {
    pub id: u64,
    pub queue: Arc<QueueHandle>,
}

#[derive(Default)]
pub(super) struct Channel {
    /// We sent channel.close and wait for close-ok.
    pub closing: bool,
    pub assembler: ContentAssembler,
    next_tag: u64,
    pub unacked: BTreeMap<u64, Unacked>,
    pub consumers: HashMap<Arc<str>, ConsumerEntry>,
    /// basic.qos global=false: the prefetch of consumers created from now on.
    pub consumer_prefetch: u16,
    pub flow: Arc<ChannelFlow>,
    pub confirm: bool,
    /// Sequence number of the last publish in confirm mode.
    pub published: u64,
    /// Everything up to this sequence number has been acked or nacked.
    confirmed: u64,
    /// Confirm-mode publishes waiting for the disk, in order: confirms stop before the first.
    pub awaiting_disk: VecDeque<u64>,
    /// The last queue declared on this channel (an empty queue name refers to it).
    pub last_queue: Option<String>,
    /// In transaction mode (tx.select): publishes and settlements wait for tx.commit.
    pub tx: Option<TxBuffer>,
}

/// What a transaction holds until commit.
#[derive(Default)]
pub(super) struct TxBuffer {
    pub publishes: Vec<TxPublish>,
    /// Settlements (acks, or nacks/rejects with their requeue flag), in order.
    pub settlements: Vec<(Vec<(u64, Unacked)>, bool)>,
}

/// A publish routed at publish time, delivered at commit (as in RabbitMQ).
pub(super) struct TxPublish {
    pub targets: Vec<Arc<QueueHandle>>,
    pub content: warren_amqp::Content,
}

impl Channel {
    pub fn accepts_delivery(&self, d: &Delivery) -> bool {
        !self.closing
            && self
                .consumers
                .get(&d.consumer_tag)
                .is_some_and(|c| c.id == d.consumer_id)
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
                },
            );
        }
        self.next_tag
    }

    pub fn remove_consumer_by_id(&mut self, consumer_id: u64) -> Option<Arc<str>> {
        let tag = self
            .consumers
            .iter()
            .find(|(_, c)| c.id == consumer_id)?
            .0
            .clone();
        self.consumers.remove(&tag);
        Some(tag)
    }

    /// Takes the deliveries an ack/nack/reject settles: one tag, or every tag up to it with
    /// `multiple` (tag 0 with `multiple` means all). Unknown tags are a 406, as in RabbitMQ.
    pub fn take_settled(
        &mut self,
        tag: u64,
        multiple: bool,
    ) -> Result<Vec<(u64, Unacked)>, AmqpError> {
        if multiple && tag == 0 {
            return Ok(std::mem::take(&mut self.unacked).into_iter().collect());
        }
        if !self.unacked.contains_key(&tag) {
            return Err(AmqpError::precondition_failed(format!(
                "unknown delivery tag {tag}"
            )));
        }
        if multiple {
            let rest = self.unacked.split_off(&(tag + 1));
            Ok(std::mem::replace(&mut self.unacked, rest)
                .into_iter()
                .collect())
        } else {
            Ok(self.unacked.remove_entry(&tag).into_iter().collect())
        }
    }

    /// An ack, nack or reject: settled now, or at commit in a transaction.
    pub async fn settle_or_buffer(&mut self, settled: Vec<(u64, Unacked)>, requeue: bool) {
        match self.tx.as_mut() {
            Some(tx) => tx.settlements.push((settled, requeue)),
            None => self.settle(settled, requeue).await,
        }
    }

    /// tx.rollback: buffered settlements are undone (their deliveries are unacked again).
    pub fn rollback(&mut self) {
        if let Some(tx) = self.tx.as_mut() {
            let buffered = std::mem::take(tx);
            for (settled, _) in buffered.settlements {
                self.unacked.extend(settled);
            }
        }
    }

    /// Publisher confirms owed since the last flush: (last tag, multiple). Publishes still
    /// waiting for the disk hold back their own confirm and every later one.
    pub fn take_due_confirms(&mut self) -> Option<(u64, bool)> {
        let through = self
            .awaiting_disk
            .front()
            .map_or(self.published, |first| first - 1);
        self.confirm_through(through)
    }

    fn confirm_through(&mut self, through: u64) -> Option<(u64, bool)> {
        if through <= self.confirmed {
            return None;
        }
        let multiple = through - self.confirmed > 1;
        self.confirmed = through;
        Some((through, multiple))
    }

    /// A publish reached the disk (or failed to): the confirms to send now, as
    /// (tag, multiple, ack). A failure is nacked at once, after acking what precedes it.
    pub fn persisted(&mut self, seq: u64, ok: bool) -> Vec<(u64, bool, bool)> {
        if let Some(at) = self.awaiting_disk.iter().position(|s| *s == seq) {
            self.awaiting_disk.remove(at);
        }
        if ok || seq <= self.confirmed {
            return Vec::new();
        }
        // Storage reports in submission order, so nothing before `seq` still waits for the disk:
        // ack what precedes it, then nack it on its own.
        let mut out = Vec::new();
        if let Some((tag, multiple)) = self.confirm_through(seq - 1) {
            out.push((tag, multiple, true));
        }
        out.push((seq, false, false));
        self.confirmed = seq;
        out
    }

    /// Settles deliveries with their queues: acked (dropped) or requeued. Returns the queues to
    /// resume when channel-wide prefetch credit came back.
    pub async fn settle(&mut self, settled: Vec<(u64, Unacked)>, requeue: bool) {
        let from_consumers = settled.iter().filter(|(_, u)| u.from_consumer).count() as u32;
        for (queue, ids) in group_by_queue(settled) {
            let cmd = if requeue {
                QueueCommand::Requeue(ids)
            } else {
                QueueCommand::Ack(ids)
            };
            let _ = queue.send(cmd).await;
        }
        if from_consumers > 0 && self.flow.give_back(from_consumers) {
            let mut resumed: Vec<&Arc<QueueHandle>> = Vec::new();
            for c in self.consumers.values() {
                if !resumed.iter().any(|q| Arc::ptr_eq(q, &c.queue)) {
                    c.queue.resume();
                    resumed.push(&c.queue);
                }
            }
        }
    }

    /// Cancels the channel's consumers and requeues its unacked deliveries (channel closing).
    pub async fn release(&mut self) {
        for (_, c) in self.consumers.drain() {
            let _ = c
                .queue
                .send(QueueCommand::Forget { consumer_id: c.id })
                .await;
        }
        self.tx = None;
        let unacked = std::mem::take(&mut self.unacked).into_iter().collect();
        self.settle(unacked, true).await;
        self.flow.unacked.store(0, Ordering::Relaxed);
        self.assembler.reset();
    }
}

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
