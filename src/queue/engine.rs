//! The queue owner task: ready messages in order, deliveries awaiting settlement, consumers served
//! round-robin within their prefetch, and the queue's own lifetime (auto-delete, delete). It
//! drains its inbox in batches and dispatches once per batch.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use warren_amqp::AmqpError;

use super::{Consumer, GetReply, QueueCommand, QueueHandle, QueueSpec, QueueStats};
use crate::connection::{ConnEvent, Delivery};
use crate::message::MessageRef;
use crate::vhost::Vhost;
use warren_storage::{Op, Store};

struct Entry {
    id: u64,
    message: MessageRef,
    redelivered: bool,
}

/// A delivery awaiting ack, and which consumer's prefetch it counts against.
struct Outstanding {
    entry: Entry,
    consumer: Option<u64>,
}

struct ActiveConsumer {
    spec: Consumer,
    unacked: u32,
}

struct QueueState {
    handle: Arc<QueueHandle>,
    vhost: Weak<Vhost>,
    /// Set for durable queues: where acks, deliveries and deletion are recorded.
    store: Option<(Store, u64)>,
    /// Storage ids settled during the current batch, written once per batch.
    removed: Vec<u64>,
    /// The highest storage id handed to a consumer, and the highest already recorded.
    delivered_through: u64,
    delivered_recorded: u64,
    ready: VecDeque<Entry>,
    outstanding: HashMap<u64, Outstanding>,
    consumers: Vec<ActiveConsumer>,
    next_consumer: usize,
    next_id: u64,
    had_consumer: bool,
}

/// Creates a queue and starts its owner task. `recovered` are the messages a durable queue had
/// on disk (with their delivered flag), in order.
pub fn spawn(
    spec: QueueSpec,
    vhost: Weak<Vhost>,
    store: &Store,
    recovered: Vec<(MessageRef, bool)>,
) -> Arc<QueueHandle> {
    let (tx, rx) = mpsc::channel(super::INBOX);
    let storage_id = spec.storage_id;
    let handle = Arc::new(QueueHandle {
        name: spec.name.into(),
        storage_id,
        durable: spec.durable,
        exclusive_owner: spec.exclusive_owner,
        auto_delete: spec.auto_delete,
        arguments: spec.arguments,
        tx,
        deleted: Default::default(),
    });
    let ready: VecDeque<Entry> = recovered
        .into_iter()
        .enumerate()
        .map(|(i, (message, redelivered))| Entry {
            id: i as u64,
            message,
            redelivered,
        })
        .collect();
    let state = QueueState {
        handle: handle.clone(),
        vhost,
        store: storage_id.map(|id| (store.clone(), id)),
        removed: Vec::new(),
        delivered_through: 0,
        delivered_recorded: 0,
        next_id: ready.len() as u64,
        ready,
        outstanding: HashMap::new(),
        consumers: Vec::new(),
        next_consumer: 0,
        had_consumer: false,
    };
    tokio::spawn(state.run(rx));
    handle
}

enum Flow {
    Continue,
    Stop,
}

impl QueueState {
    async fn run(mut self, mut rx: mpsc::Receiver<QueueCommand>) {
        let mut batch = Vec::with_capacity(256);
        'outer: while rx.recv_many(&mut batch, 256).await > 0 {
            for cmd in batch.drain(..) {
                if let Flow::Stop = self.handle_command(cmd) {
                    break 'outer;
                }
            }
            self.dispatch();
            self.write_to_store();
            if self.handle.is_deleted() {
                break;
            }
        }
        self.handle.mark_deleted();
        tracing::debug!(queue = %self.handle.name, "queue task stopped");
    }

    /// The storage id of a message if this queue keeps it on disk.
    fn on_disk(&self, message: &MessageRef) -> Option<u64> {
        self.store.as_ref().and(message.storage_id)
    }

    /// Writes what this batch settled and delivered (no waiting: acks need no fsync of their own).
    fn write_to_store(&mut self) {
        let Some((store, queue)) = &self.store else {
            return;
        };
        if self.delivered_through > self.delivered_recorded {
            self.delivered_recorded = self.delivered_through;
            store.submit(
                Op::MarkDelivered {
                    queue: *queue,
                    through: self.delivered_through,
                },
                None,
            );
        }
        if !self.removed.is_empty() {
            let messages = std::mem::take(&mut self.removed);
            store.submit(
                Op::Remove {
                    queue: *queue,
                    messages,
                },
                None,
            );
        }
    }

    fn handle_command(&mut self, cmd: QueueCommand) -> Flow {
        match cmd {
            QueueCommand::Publish(message) => {
                let id = self.next_id;
                self.next_id += 1;
                self.ready.push_back(Entry {
                    id,
                    message,
                    redelivered: false,
                });
            }
            QueueCommand::Consume(consumer, reply) => {
                let _ = reply.send(self.add_consumer(consumer));
            }
            QueueCommand::Cancel { consumer_id, done } => {
                let flow = self.remove_consumer(consumer_id);
                let _ = done.send(());
                return flow;
            }
            QueueCommand::Forget { consumer_id } => return self.remove_consumer(consumer_id),
            QueueCommand::Get { no_ack, reply } => {
                let got = self.ready.pop_front().map(|entry| {
                    let reply = GetReply {
                        id: entry.id,
                        message: entry.message.clone(),
                        redelivered: entry.redelivered,
                        remaining: self.ready.len() as u32,
                    };
                    let on_disk = self.on_disk(&entry.message);
                    if no_ack {
                        self.removed.extend(on_disk);
                    } else {
                        self.delivered_through = self.delivered_through.max(on_disk.unwrap_or(0));
                        self.outstanding.insert(
                            entry.id,
                            Outstanding {
                                entry,
                                consumer: None,
                            },
                        );
                    }
                    reply
                });
                let _ = reply.send(got);
            }
            QueueCommand::Ack(ids) => {
                for id in ids {
                    if let Some(o) = self.outstanding.remove(&id) {
                        self.settled(o.consumer);
                        if let Some(sid) = self.on_disk(&o.entry.message) {
                            self.removed.push(sid);
                        }
                    }
                }
            }
            QueueCommand::Requeue(ids) => self.requeue(ids),
            QueueCommand::Purge(reply) => {
                let n = self.ready.len() as u32;
                for entry in std::mem::take(&mut self.ready) {
                    if let Some(sid) = self.on_disk(&entry.message) {
                        self.removed.push(sid);
                    }
                }
                let _ = reply.send(n);
            }
            QueueCommand::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                if if_unused && !self.consumers.is_empty() {
                    let _ = reply.send(Err(AmqpError::precondition_failed(format!(
                        "queue '{}' in vhost '{}' in use",
                        self.handle.name,
                        self.vhost_name()
                    ))));
                } else if if_empty && !self.ready.is_empty() {
                    let _ = reply.send(Err(AmqpError::precondition_failed(format!(
                        "queue '{}' in vhost '{}' not empty",
                        self.handle.name,
                        self.vhost_name()
                    ))));
                } else {
                    let n = self.ready.len() as u32;
                    self.delete();
                    let _ = reply.send(Ok(n));
                    return Flow::Stop;
                }
            }
            QueueCommand::Stats(reply) => {
                let _ = reply.send(QueueStats {
                    messages: self.ready.len() as u32,
                    consumers: self.consumers.len() as u32,
                });
            }
            QueueCommand::Resume => {}
        }
        Flow::Continue
    }

    fn vhost_name(&self) -> String {
        self.vhost
            .upgrade()
            .map(|v| v.name.clone())
            .unwrap_or_default()
    }

    fn add_consumer(&mut self, consumer: Consumer) -> Result<(), AmqpError> {
        let exclusive_in_use = self.consumers.iter().any(|c| c.spec.exclusive);
        if exclusive_in_use || (consumer.exclusive && !self.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.handle.name,
                self.vhost_name()
            )));
        }
        self.had_consumer = true;
        self.consumers.push(ActiveConsumer {
            spec: consumer,
            unacked: 0,
        });
        Ok(())
    }

    fn remove_consumer(&mut self, consumer_id: u64) -> Flow {
        let before = self.consumers.len();
        self.consumers.retain(|c| c.spec.id != consumer_id);
        if self.consumers.len() < before
            && self.consumers.is_empty()
            && self.handle.auto_delete
            && self.had_consumer
        {
            tracing::debug!(queue = %self.handle.name, "auto-deleting queue after its last consumer");
            self.delete();
            return Flow::Stop;
        }
        Flow::Continue
    }

    /// A delivery was settled: its consumer may take another.
    fn settled(&mut self, consumer: Option<u64>) {
        if let Some(cid) = consumer {
            if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.id == cid) {
                c.unacked = c.unacked.saturating_sub(1);
            }
        }
    }

    fn requeue(&mut self, mut ids: Vec<u64>) {
        ids.sort_unstable();
        for id in ids.into_iter().rev() {
            if let Some(o) = self.outstanding.remove(&id) {
                self.settled(o.consumer);
                let mut entry = o.entry;
                entry.redelivered = true;
                // Back to its original position: ready stays ordered by id.
                let at = self.ready.partition_point(|e| e.id < entry.id);
                self.ready.insert(at, entry);
            }
        }
    }

    /// Cancels every consumer (telling their channels), drops the queue from its vhost.
    fn delete(&mut self) {
        self.handle.mark_deleted();
        for c in self.consumers.drain(..) {
            let _ = c.spec.events.send(ConnEvent::ConsumerCancelled {
                channel: c.spec.channel,
                consumer_id: c.spec.id,
            });
        }
        self.ready.clear();
        self.outstanding.clear();
        self.removed.clear();
        if let Some((store, id)) = &self.store {
            let op = Op::DeleteQueue {
                vhost: self.vhost_name(),
                name: self.handle.name.to_string(),
                id: *id,
            };
            store.submit(op, None);
        }
        if let Some(vhost) = self.vhost.upgrade() {
            vhost.forget_queue(&self.handle);
        }
    }

    /// Hands ready messages to consumers, round-robin, as far as their credit allows.
    fn dispatch(&mut self) {
        let n = self.consumers.len();
        let mut idle = 0;
        while !self.ready.is_empty() && n > 0 && idle < n {
            let i = self.next_consumer % n;
            self.next_consumer = (i + 1) % n;
            if !self.can_deliver(i) {
                idle += 1;
                continue;
            }
            idle = 0;
            let Some(entry) = self.ready.pop_front() else {
                break;
            };
            let c = &mut self.consumers[i];
            let no_ack = c.spec.no_ack;
            let delivery = Delivery {
                channel: c.spec.channel,
                consumer_id: c.spec.id,
                consumer_tag: c.spec.tag.clone(),
                queue: self.handle.clone(),
                id: entry.id,
                redelivered: entry.redelivered,
                no_ack,
                message: entry.message.clone(),
            };
            c.spec
                .connection_flow
                .in_transit
                .fetch_add(1, Ordering::Relaxed);
            if c.spec.events.send(ConnEvent::Deliver(delivery)).is_err() {
                // The connection is gone: the message stays, the consumer goes.
                c.spec
                    .connection_flow
                    .in_transit
                    .fetch_sub(1, Ordering::Relaxed);
                if !no_ack {
                    c.spec.channel_flow.give_back(1);
                }
                let cid = c.spec.id;
                self.ready.push_front(entry);
                if let Flow::Stop = self.remove_consumer(cid) {
                    return;
                }
                continue;
            }
            let on_disk = self.store.as_ref().and(entry.message.storage_id);
            if no_ack {
                self.removed.extend(on_disk);
            } else {
                c.unacked += 1;
                let consumer = Some(c.spec.id);
                self.delivered_through = self.delivered_through.max(on_disk.unwrap_or(0));
                self.outstanding
                    .insert(entry.id, Outstanding { entry, consumer });
            }
        }
    }

    fn can_deliver(&mut self, i: usize) -> bool {
        let c = &self.consumers[i];
        if !c.spec.connection_flow.has_room() {
            c.spec.connection_flow.wait(&self.handle);
            return false;
        }
        if c.spec.no_ack {
            return true;
        }
        if c.spec.prefetch != 0 && c.unacked >= c.spec.prefetch {
            return false;
        }
        c.spec.channel_flow.try_take()
    }
}
