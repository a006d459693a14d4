//! The home node's side of forwarded queue operations: what other nodes' proxies of this node's
//! queues ask (`crate::queue::remote`), done to the local queue as a local channel would do it;
//! and this node's side of deliveries relayed to its own proxies' consumers.
//!
//! - Publishes from one peer to one queue go through one worker, in the order they arrived (the
//!   link hands requests over in order), each message stored when persistent and the queue
//!   durable, and answered once the queue's log has it.
//! - A peer's consumers share one relay: deliveries go back in batches, one consumer's a
//!   request, and count in that consumer's transit credit until the peer answers, which it does
//!   once the consumer's connection there has room for more: a client there that stops reading
//!   stops its queue here as a local client would, and holds up no other consumer.
//! - What a peer holds unsettled (deliveries, gets) is remembered; when its link goes down its
//!   consumers are cancelled and all of that is requeued, as when a connection closes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use warren_cluster::link::{Link, Request, Response};
use warren_cluster::node::AppHandler;

use crate::broker::Broker;
use crate::message::Message;
use crate::queue::log::durable_form;
use crate::queue::remote::wire::{
    self, ConsumeTerms, Forward, QueueRef, Reply, Settle, Taken, WireDelivery, WireError, WireGot,
    WireMessage,
};
use crate::queue::remote::Proxies;
use crate::queue::{
    ChannelFlow, ConnEvent, ConnectionFlow, Consumer, ConsumerOutbox, PublishConfirm, QueueCommand,
    QueueHandle,
};

/// Deliveries relayed to a peer in one request, at most.
const RELAY_BATCH: usize = 256;
const TIMEOUT: Duration = Duration::from_secs(30);

/// A peer's consumer of a queue here, as the relay sees it.
struct Relayed {
    /// Its id on the peer.
    remote_id: u64,
    /// Its deliveries sent and not yet answered for (the queue's back-pressure).
    flow: Arc<ConnectionFlow>,
}

pub struct Forwarding {
    broker: Weak<Broker>,
    link: Link,
    proxies: Arc<Proxies>,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
}

/// What this node does for one peer's proxies.
struct Peer {
    name: String,
    publishers: Mutex<HashMap<QueueRef, mpsc::UnboundedSender<PublishWork>>>,
    /// The peer's consumers of queues here: its consumer id → (queue, the id here).
    consumers: Mutex<HashMap<u64, (Arc<QueueHandle>, u64)>>,
    /// The ids here of the peer's consumers → what the relay needs of them.
    consumer_ids: Mutex<HashMap<u64, Relayed>>,
    /// Deliveries the peer holds unsettled, by queue.
    unsettled: Mutex<Vec<(Arc<QueueHandle>, HashSet<u64>)>>,
    /// Where queues deliver to the peer's consumers.
    events: mpsc::UnboundedSender<ConnEvent>,
    channel_flow: Arc<ChannelFlow>,
    /// The peer's cancels whose queue has taken them, by consumer id here: told once the relay
    /// has sent what the queue delivered before (see [`Forwarding::relay`]).
    cancels: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

/// Deliveries gathered for one relay turn, by consumer.
#[derive(Default)]
struct RelayBatches {
    by_consumer: Vec<RelayBatch>,
    /// How many, all consumers together.
    deliveries: usize,
}

/// One consumer's deliveries (a consumer reads from one queue).
struct RelayBatch {
    consumer: u64,
    flow: Arc<ConnectionFlow>,
    queue: Arc<QueueHandle>,
    deliveries: Vec<WireDelivery>,
}

impl RelayBatches {
    fn add(
        &mut self,
        consumer: u64,
        flow: Arc<ConnectionFlow>,
        queue: &Arc<QueueHandle>,
        delivery: WireDelivery,
    ) {
        self.deliveries += 1;
        match self.by_consumer.iter_mut().find(|b| b.consumer == consumer) {
            Some(batch) => batch.deliveries.push(delivery),
            None => self.by_consumer.push(RelayBatch {
                consumer,
                flow,
                queue: queue.clone(),
                deliveries: vec![delivery],
            }),
        }
    }
}

/// What a peer's publisher worker for one queue does, in the order it was asked.
enum PublishWork {
    Batch {
        messages: Vec<WireMessage>,
        answer: oneshot::Sender<Reply>,
    },
    /// Answered once everything published before is in the queue's log.
    Sync(oneshot::Sender<Reply>),
    /// A consumer's cancel: the publishes before it reach the queue first, as a channel's
    /// methods take effect in the order they were sent.
    Cancel {
        consumer: u64,
        answer: oneshot::Sender<Reply>,
    },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Forwarding {
    pub fn new(broker: Weak<Broker>, link: Link, proxies: Arc<Proxies>) -> Arc<Forwarding> {
        Arc::new(Forwarding {
            broker,
            link,
            proxies,
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// The local queue a request names.
    fn queue(&self, q: &QueueRef) -> Option<Arc<QueueHandle>> {
        let broker = self.broker.upgrade()?;
        broker.vhost(&q.vhost)?.find_queue(&q.name)
    }

    fn peer(self: &Arc<Self>, name: &str) -> Arc<Peer> {
        if let Some(p) = lock(&self.peers).get(name) {
            return p.clone();
        }
        let (events, relayed) = mpsc::unbounded_channel();
        let peer = Arc::new(Peer {
            name: name.to_owned(),
            publishers: Mutex::new(HashMap::new()),
            consumers: Mutex::new(HashMap::new()),
            consumer_ids: Mutex::new(HashMap::new()),
            unsettled: Mutex::new(Vec::new()),
            events,
            channel_flow: Arc::new(ChannelFlow::default()),
            cancels: Mutex::new(HashMap::new()),
        });
        lock(&self.peers).insert(name.to_owned(), peer.clone());
        tokio::spawn(self.clone().relay(peer.clone(), relayed));
        if let Some(mut link) = self.link.watch_peer(name) {
            let this = self.clone();
            let watched = peer.clone();
            tokio::spawn(async move {
                // The connection this peer's requests came on goes (down, or replaced by another
                // at once): what it held is given back.
                let _ = link.changed().await;
                this.peer_lost(&watched);
            });
        }
        peer
    }

    /// The peer's link went down: its consumers here are cancelled and what it held unsettled
    /// is requeued, as for a connection that closes.
    fn peer_lost(&self, peer: &Arc<Peer>) {
        {
            let mut peers = lock(&self.peers);
            if peers.get(&peer.name).is_some_and(|p| Arc::ptr_eq(p, peer)) {
                peers.remove(&peer.name);
            }
        }
        for (_, (queue, id)) in lock(&peer.consumers).drain() {
            let (done, _) = oneshot::channel();
            queue.send_now(QueueCommand::Cancel {
                consumer_id: id,
                done,
            });
        }
        for (queue, ids) in lock(&peer.unsettled).drain(..) {
            if !ids.is_empty() {
                queue.send_now(QueueCommand::Requeue(ids.into_iter().collect()));
            }
        }
        lock(&peer.publishers).clear();
    }

    /// Sends the peer's consumers their deliveries, in batches.
    async fn relay(
        self: Arc<Self>,
        peer: Arc<Peer>,
        mut events: mpsc::UnboundedReceiver<ConnEvent>,
    ) {
        while let Some(first) = events.recv().await {
            let mut batches = RelayBatches::default();
            let mut next = Some(first);
            while let Some(event) = next.take() {
                match event {
                    ConnEvent::Deliver(d) => {
                        let relayed = lock(&peer.consumer_ids)
                            .get(&d.consumer_id)
                            .map(|c| (c.remote_id, c.flow.clone()));
                        let Some((consumer, flow)) = relayed else {
                            // Cancelled meanwhile: back to the queue (its credit went with it).
                            if !d.no_ack {
                                d.queue.send_now(QueueCommand::Requeue(vec![d.id]));
                            }
                            continue;
                        };
                        if !d.no_ack {
                            peer.hold(&d.queue, d.id);
                        }
                        let delivery = WireDelivery {
                            consumer,
                            id: d.id,
                            redelivered: d.redelivered,
                            message: WireMessage::of(&d.message),
                        };
                        batches.add(consumer, flow, &d.queue, delivery);
                    }
                    ConnEvent::ConsumerCancelled { consumer_id, .. } => {
                        let consumer = lock(&peer.consumer_ids).remove(&consumer_id);
                        if let Some(consumer) = consumer {
                            lock(&peer.consumers).remove(&consumer.remote_id);
                            // Its deliveries first: the peer forgets the consumer at the cancel.
                            self.send_batches(&peer, std::mem::take(&mut batches)).await;
                            let cancelled = Forward::Cancelled {
                                consumer: consumer.remote_id,
                            };
                            self.send(&peer.name, &cancelled).await;
                        }
                    }
                    // A peer's cancel that its queue has taken: what the queue delivered
                    // before is ahead of it, and goes to the peer before the cancel's answer
                    // (the link keeps their order), so the peer's client gets those
                    // deliveries before cancel-ok, as from a local queue.
                    ConnEvent::Cancelled { consumer_id, .. } => {
                        self.send_batches(&peer, std::mem::take(&mut batches)).await;
                        lock(&peer.consumer_ids).remove(&consumer_id);
                        if let Some(relayed) = lock(&peer.cancels).remove(&consumer_id) {
                            let _ = relayed.send(());
                        }
                    }
                    // A connection's own markers; never sent here.
                    ConnEvent::DirectReply { .. } | ConnEvent::Settled { .. } => {}
                }
                if batches.deliveries < RELAY_BATCH {
                    next = events.try_recv().ok();
                }
            }
            self.send_batches(&peer, batches).await;
        }
    }

    /// Sends each consumer's batch as one request; its deliveries stay in transit (holding back
    /// the queue once there are many) until the peer answers, for as long as the link lasts.
    async fn send_batches(self: &Arc<Self>, peer: &Arc<Peer>, batches: RelayBatches) {
        for batch in batches.by_consumer {
            let n = batch.deliveries.len() as u32;
            let deliver = Forward::Deliver {
                deliveries: batch.deliveries,
            };
            let sent = match wire::encode(&deliver) {
                Ok(bytes) => self.link.call(&peer.name, Request::App(bytes)).await.ok(),
                Err(_) => None,
            };
            let this = self.clone();
            let relayed_to = peer.clone();
            tokio::spawn(async move {
                let answer = match sent {
                    Some(call) => call.answer_while_connected().await.ok(),
                    None => None,
                };
                batch.flow.drained(n);
                let not_taken = match answer {
                    Some(Response::App(Ok(bytes))) => match wire::decode::<Reply>(&bytes) {
                        Ok(Reply::Relayed { not_taken }) => not_taken,
                        // Any other answer (a node of an older version): all taken.
                        _ => Vec::new(),
                    },
                    Some(_) => Vec::new(),
                    None => {
                        // Lost on the way: the peer is taken for gone, and everything it held
                        // (these included) goes back to the queues.
                        this.peer_lost(&relayed_to);
                        return;
                    }
                };
                let held = relayed_to.release(&batch.queue, &not_taken);
                if !held.is_empty() {
                    batch.queue.send_now(QueueCommand::Requeue(held));
                }
            });
        }
    }

    /// The peer's consumer `consumer` is cancelled: once the queue has taken the cancel and
    /// the relay has sent what the queue delivered before it.
    async fn cancel(&self, peer: &Peer, consumer: u64) -> Reply {
        let found = lock(&peer.consumers).remove(&consumer);
        if let Some((q, id)) = found {
            // The relay still knows the consumer: what the queue delivers before it takes the
            // cancel reaches the peer's consumer (no-ack deliveries are no longer the queue's
            // to take back).
            let _ = q
                .ask(|done| QueueCommand::Cancel {
                    consumer_id: id,
                    done,
                })
                .await;
            let (relayed, sent) = oneshot::channel();
            lock(&peer.cancels).insert(id, relayed);
            let marker = ConnEvent::Cancelled {
                channel: 0,
                consumer_id: id,
                consumer_tag: Arc::from(""),
                nowait: true,
            };
            match peer.events.send(marker) {
                Ok(()) => {
                    let _ = tokio::time::timeout(TIMEOUT, sent).await;
                }
                Err(_) => {
                    lock(&peer.cancels).remove(&id);
                    lock(&peer.consumer_ids).remove(&id);
                }
            }
        }
        Reply::Done
    }

    async fn send(&self, peer: &str, forward: &Forward) {
        if let Ok(bytes) = wire::encode(forward) {
            if let Ok(call) = self.link.call(peer, Request::App(bytes)).await {
                let _ = call.answer(TIMEOUT).await;
            }
        }
    }

    /// The worker that publishes one peer's batches for one queue, in order.
    fn publisher(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        queue: &QueueRef,
    ) -> mpsc::UnboundedSender<PublishWork> {
        let mut publishers = lock(&peer.publishers);
        if let Some(tx) = publishers.get(queue) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<PublishWork>();
        publishers.insert(queue.clone(), tx.clone());
        let this = self.clone();
        let queue = queue.clone();
        // Weak: the peer holds this worker's sender.
        let peer = Arc::downgrade(peer);
        tokio::spawn(async move {
            while let Some(work) = rx.recv().await {
                match work {
                    PublishWork::Cancel { consumer, answer } => {
                        let reply = match peer.upgrade() {
                            Some(peer) => this.cancel(&peer, consumer).await,
                            None => Reply::Gone,
                        };
                        let _ = answer.send(reply);
                    }
                    PublishWork::Batch { messages, answer } => {
                        let _ = answer.send(this.publish(&queue, messages).await);
                    }
                    PublishWork::Sync(answer) => {
                        let reply = match this.queue(&queue) {
                            Some(q) => {
                                Reply::Synced(q.ask(QueueCommand::Sync).await.unwrap_or(false))
                            }
                            None => Reply::Gone,
                        };
                        let _ = answer.send(reply);
                    }
                }
            }
        });
        tx
    }

    /// Publishes forwarded messages to a local queue; answers once each is taken (and durable,
    /// where it must be).
    async fn publish(&self, queue: &QueueRef, messages: Vec<WireMessage>) -> Reply {
        let (Some(broker), Some(q)) = (self.broker.upgrade(), self.queue(queue)) else {
            return Reply::Published(vec![Taken::No; messages.len()]);
        };
        let (events, mut settled) = mpsc::unbounded_channel();
        let count = messages.len();
        let mut waits = 0;
        let mut taken = vec![Taken::Yes; count];
        for (seq, m) in messages.into_iter().enumerate() {
            let persistent =
                warren_amqp::PropertiesView::parse(&m.properties).is_ok_and(|v| v.persistent());
            let storage_id =
                (persistent && q.logs_in_store()).then(|| broker.store.next_message_id());
            let message = Message::from_parts(
                &m.exchange,
                &m.routing_key,
                &m.properties,
                m.body.into(),
                storage_id,
            );
            let logged = match storage_id.map(|id| durable_form(&broker.store, &message, id, 1)) {
                Some(Ok(logged)) => Some(logged),
                Some(Err(e)) => {
                    tracing::error!("cannot store a forwarded message, refused: {e}");
                    taken[seq] = Taken::No;
                    continue;
                }
                None => None,
            };
            let confirm = (logged.is_some() || q.may_reject_publish()).then(|| {
                waits += 1;
                PublishConfirm::new(events.clone(), 0, seq as u64)
            });
            q.publish(message, logged, confirm).await;
        }
        drop(events);
        for _ in 0..waits {
            match settled.recv().await {
                Some(ConnEvent::Settled { seq, ok, .. }) => {
                    if !ok {
                        if let Some(t) = taken.get_mut(seq as usize) {
                            *t = Taken::No;
                        }
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        Reply::Published(taken)
    }

    /// A consumer on `peer`'s node of a queue here (of a stream, from `stream_start`).
    async fn consume(
        &self,
        peer: Arc<Peer>,
        queue: QueueRef,
        consumer: u64,
        terms: ConsumeTerms,
        stream_start: Option<crate::queue::stream::StreamStart>,
    ) -> Reply {
        let (Some(broker), Some(q)) = (self.broker.upgrade(), self.queue(&queue)) else {
            return Reply::Gone;
        };
        let id = broker.next_id();
        let flow = Arc::new(ConnectionFlow::default());
        let relayed = Relayed {
            remote_id: consumer,
            flow: flow.clone(),
        };
        lock(&peer.consumer_ids).insert(id, relayed);
        lock(&peer.consumers).insert(consumer, (q.clone(), id));
        let spec = terms.spec(id);
        let outbox = ConsumerOutbox {
            channel: 0,
            tag: Arc::from(""),
            channel_flow: peer.channel_flow.clone(),
            connection_flow: flow,
            events: peer.events.clone(),
        };
        let result = q
            .ask(|reply| {
                QueueCommand::Consume(
                    Consumer {
                        spec,
                        outbox,
                        stream_start,
                    },
                    reply,
                )
            })
            .await;
        match result {
            Ok(Ok(())) => Reply::Done,
            other => {
                lock(&peer.consumer_ids).remove(&id);
                lock(&peer.consumers).remove(&consumer);
                match other {
                    Ok(Err(e)) => Reply::Refused(WireError::from(&e)),
                    _ => Reply::Gone,
                }
            }
        }
    }

    async fn answer(self: Arc<Self>, peer: Arc<Peer>, forward: Forward) -> Reply {
        match forward {
            // Handled before (in order); never reaches here.
            Forward::Publish { .. } => Reply::Done,
            // Handled before (in order); never reaches here.
            Forward::Deliver { .. } => Reply::Done,
            Forward::Cancelled { consumer } => {
                self.proxies.cancelled(consumer);
                Reply::Done
            }
            Forward::NodeFigures => match self.broker.upgrade() {
                Some(broker) => {
                    Reply::Json(serde_json::to_vec(&broker.figures()).unwrap_or_default())
                }
                None => Reply::Gone,
            },
            Forward::DirectReply {
                routing_key,
                message,
            } => {
                if let Some(broker) = self.broker.upgrade() {
                    broker.replies.deliver(&routing_key, message.into_message());
                }
                Reply::Done
            }
            Forward::Get { queue, no_ack } => {
                let Some(q) = self.queue(&queue) else {
                    return Reply::Gone;
                };
                match q.ask(|reply| QueueCommand::Get { no_ack, reply }).await {
                    Ok(Some(got)) => {
                        if !no_ack {
                            peer.hold(&q, got.id);
                        }
                        Reply::Got(Some(WireGot {
                            id: got.id,
                            redelivered: got.redelivered,
                            remaining: got.remaining,
                            message: WireMessage::of(&got.message),
                        }))
                    }
                    Ok(None) => Reply::Got(None),
                    Err(_) => Reply::Gone,
                }
            }
            Forward::Settle { queue, how, ids } => {
                let Some(q) = self.queue(&queue) else {
                    return Reply::Gone;
                };
                let _ = peer.release(&q, &ids);
                q.send_now(match how {
                    Settle::Ack => QueueCommand::Ack(ids),
                    Settle::Reject => QueueCommand::Reject(ids),
                    Settle::Requeue => QueueCommand::Requeue(ids),
                });
                Reply::Done
            }
            Forward::Purge { queue } => match self.queue(&queue) {
                Some(q) => match q.ask(QueueCommand::Purge).await {
                    Ok(n) => Reply::Purged(n),
                    Err(_) => Reply::Gone,
                },
                None => Reply::Gone,
            },
            Forward::Delete {
                queue,
                if_unused,
                if_empty,
            } => match self.queue(&queue) {
                Some(q) => match q
                    .ask(|reply| QueueCommand::Delete {
                        if_unused,
                        if_empty,
                        reply,
                    })
                    .await
                {
                    Ok(Ok(n)) => Reply::Deleted(n),
                    Ok(Err(e)) => Reply::Refused(WireError::from(&e)),
                    Err(_) => Reply::Gone,
                },
                None => Reply::Gone,
            },
            Forward::Figures { queue, used } => match self.queue(&queue) {
                Some(q) => match q.stats(used).await {
                    Ok(now) => Reply::Figures {
                        now,
                        sampled: q.rates.pair().map(|(between, earlier, later)| {
                            (between.as_micros() as u64, earlier, later)
                        }),
                    },
                    Err(_) => Reply::Gone,
                },
                None => Reply::Gone,
            },
            Forward::Stats { queue, used } => match self.queue(&queue) {
                Some(q) => match q.stats(used).await {
                    Ok(s) => Reply::Stats {
                        ready: s.ready,
                        unacked: s.unacked,
                        consumers: s.consumers,
                    },
                    Err(_) => Reply::Gone,
                },
                None => Reply::Gone,
            },
            // Handled before (in order, with the publishes); never reaches here.
            Forward::Sync { .. } => Reply::Done,
            Forward::Consume {
                queue,
                consumer,
                terms,
            } => self.consume(peer, queue, consumer, terms, None).await,
            Forward::ConsumeStream {
                queue,
                consumer,
                terms,
                start,
            } => {
                self.consume(peer, queue, consumer, terms, Some(start))
                    .await
            }
            // Taken in order with the publishes, before it reaches here.
            Forward::Cancel { .. } => Reply::Done,
            Forward::ReadStream {
                queue,
                from,
                max_bytes,
            } => match self.queue(&queue).and_then(|q| q.stream_reader()) {
                Some(reader) => {
                    let read = tokio::task::spawn_blocking(move || {
                        crate::queue::stream::read_for_replica(&reader, from, max_bytes)
                    })
                    .await;
                    match read {
                        Ok(Ok(reply)) => reply,
                        Ok(Err(e)) => {
                            tracing::warn!(queue = %queue.name, "stream not read for a member: {e}");
                            Reply::Gone
                        }
                        Err(_) => Reply::Gone,
                    }
                }
                None => Reply::Gone,
            },
        }
    }
}

impl Peer {
    fn hold(&self, queue: &Arc<QueueHandle>, id: u64) {
        let mut unsettled = lock(&self.unsettled);
        match unsettled.iter_mut().find(|(q, _)| Arc::ptr_eq(q, queue)) {
            Some((_, ids)) => {
                ids.insert(id);
            }
            None => unsettled.push((queue.clone(), HashSet::from([id]))),
        }
    }

    /// Forgets deliveries settled; gives back those of `ids` that were held.
    fn release(&self, queue: &Arc<QueueHandle>, ids: &[u64]) -> Vec<u64> {
        let mut unsettled = lock(&self.unsettled);
        match unsettled.iter_mut().find(|(q, _)| Arc::ptr_eq(q, queue)) {
            Some((_, held)) => ids.iter().copied().filter(|id| held.remove(id)).collect(),
            None => Vec::new(),
        }
    }
}

/// The link's application requests, answered by [`Forwarding`].
pub struct ForwardingHandler(pub Arc<Forwarding>);

type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send>>;

impl AppHandler for ForwardingHandler {
    fn handle(&self, from: &str, request: Vec<u8>) -> Answer {
        let forward: Forward = match wire::decode(&request) {
            Ok(f) => f,
            Err(e) => return Box::pin(async move { Err(format!("undecodable request: {e}")) }),
        };
        let peer = self.0.peer(from);
        // Publishes (and the syncs and cancels that follow them) are queued here, in the order
        // they arrived.
        let (work, queue, answered) = match forward {
            Forward::Publish { queue, messages } => {
                let (answer, answered) = oneshot::channel();
                (PublishWork::Batch { messages, answer }, queue, answered)
            }
            Forward::Sync { queue } => {
                let (answer, answered) = oneshot::channel();
                (PublishWork::Sync(answer), queue, answered)
            }
            Forward::Cancel { queue, consumer } => {
                let (answer, answered) = oneshot::channel();
                (PublishWork::Cancel { consumer, answer }, queue, answered)
            }
            Forward::Deliver { deliveries } => {
                // Handed to the connections here, in the order the batches came; answered when
                // they have room for more.
                let handed = self.0.proxies.deliver(deliveries);
                return Box::pin(async move { wire::encode(&handed.answer().await) });
            }
            forward => {
                let this = self.0.clone();
                return Box::pin(async move { wire::encode(&this.answer(peer, forward).await) });
            }
        };
        let _ = self.0.publisher(&peer, &queue).send(work);
        Box::pin(async move {
            let reply = answered.await.unwrap_or(Reply::Gone);
            wire::encode(&reply)
        })
    }
}
