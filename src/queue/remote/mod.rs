//! A queue that lives on another node of the cluster, as this node holds it: a proxy with the
//! same [`QueueHandle`] as a local queue, whose task forwards every command to the queue's home
//! node over the cluster link and relays the answers, so that channels, exchanges and the
//! management API use it as they use a local queue (RabbitMQ does the same through Erlang
//! distribution).
//!
//! - Publishes are batched (everything queued, up to [`BATCH`]), sent in order, a few batches in
//!   flight at once; a confirm is answered when the home node has the message (on disk, for a
//!   persistent message on a durable queue), so the proxy always takes the confirms
//!   (`may_reject_publish`).
//! - A consumer here is registered in [`Proxies`] under its id; the home node relays its
//!   deliveries, which reach the channel as a local queue's would (the proxy is their queue, so
//!   acks come back through it).
//! - When the home node is unreachable, the proxy's consumers are cancelled (`basic.cancel` for
//!   those that asked) and its commands fail as for a deleted queue.
//!
//! `wire.rs` holds the messages nodes exchange.

pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use warren_amqp::AmqpError;
use warren_cluster::link::{Link, PeerLink, Request, Response};

use super::{
    ConnEvent, ConnectionFlow, ConsumerOutbox, GetReply, PublishConfirm, QueueCommand, QueueHandle,
    QueueSpec, QueueStats,
};
use wire::{ConsumeTerms, Forward, QueueRef, Reply, Settle, Taken, WireDelivery, WireMessage};

/// Publishes sent to the home node in one request, at most.
const BATCH: usize = 256;
/// Publish batches awaiting the home node's answer at once.
const IN_FLIGHT: usize = 8;
/// How often a replicated queue's proxy whose member in use is down looks for another.
const HOME_CHECK: Duration = Duration::from_secs(1);
/// How long a forwarded command may wait for the home node.
const TIMEOUT: Duration = Duration::from_secs(30);

/// This node's proxies' consumers, by consumer id: where the home nodes' relayed deliveries go.
#[derive(Default)]
pub struct Proxies {
    consumers: Mutex<HashMap<u64, RemoteConsumer>>,
}

struct RemoteConsumer {
    queue: Weak<QueueHandle>,
    home: String,
    no_ack: bool,
    outbox: ConsumerOutbox,
}

impl Proxies {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, RemoteConsumer>> {
        self.consumers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands relayed deliveries to their consumers' connections, as a local queue does (so they
    /// count in those connections' in-transit credit).
    pub fn deliver(&self, deliveries: Vec<WireDelivery>) -> Handed {
        let mut handed = Handed::default();
        let consumers = self.lock();
        for d in deliveries {
            let Some((c, queue)) = consumers
                .get(&d.consumer)
                .and_then(|c| Some((c, c.queue.upgrade()?)))
            else {
                // Cancelled here while it was on its way: the home node takes it back.
                handed.not_taken.push(d.id);
                continue;
            };
            let message = d.message.into_message();
            let sent = c
                .outbox
                .deliver(&queue, d.consumer, d.id, d.redelivered, c.no_ack, message);
            if !sent {
                // Its connection has just closed.
                handed.not_taken.push(d.id);
                continue;
            }
            let flow = &c.outbox.connection_flow;
            if !handed.connections.iter().any(|(f, _)| Arc::ptr_eq(f, flow)) {
                handed
                    .connections
                    .push((flow.clone(), c.outbox.events.clone()));
            }
        }
        handed
    }

    /// The home node cancelled a consumer (its queue was deleted).
    pub fn cancelled(&self, consumer: u64) {
        if let Some(c) = self.lock().remove(&consumer) {
            let _ = c.outbox.events.send(ConnEvent::ConsumerCancelled {
                channel: c.outbox.channel,
                consumer_id: consumer,
            });
        }
    }

    /// The home node is unreachable: its queues' consumers here are cancelled.
    fn home_lost(&self, home: &str) {
        let gone: Vec<u64> = self
            .lock()
            .iter()
            .filter(|(_, c)| c.home == home)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.cancelled(id);
        }
    }
}

/// What became of a batch of relayed deliveries.
#[derive(Default)]
pub struct Handed {
    /// The ids of those whose consumer (or its connection) had gone here: the home node takes
    /// them back.
    not_taken: Vec<u64>,
    /// The connections that took the others, each with its events (closed when it goes).
    connections: Vec<(Arc<ConnectionFlow>, mpsc::UnboundedSender<ConnEvent>)>,
}

impl Handed {
    /// The answer to the home node, once every connection that took deliveries has room for
    /// more (or has closed): the home node counts relayed deliveries in transit until then, so
    /// it sends a client that stopped reading no more than a local queue would.
    pub async fn answer(self) -> Reply {
        for (flow, events) in self.connections {
            tokio::select! {
                _ = flow.until_room() => {}
                _ = events.closed() => {}
            }
        }
        Reply::Relayed {
            not_taken: self.not_taken,
        }
    }
}

/// Where the proxy sends, and what it needs to relay.
#[derive(Clone)]
pub struct Remote {
    pub link: Link,
    pub proxies: Arc<Proxies>,
}

/// Starts the proxy of a queue homed on `homes`: its home node, or a replicated queue's members
/// (the declaring node first). The proxy uses the first of them it reaches, and another when
/// that one becomes unreachable.
pub fn spawn(
    mut spec: QueueSpec,
    vhost: &str,
    homes: Vec<String>,
    remote: Remote,
) -> Arc<QueueHandle> {
    // Nothing of it is stored here: the home node stores its messages.
    spec.storage_id = None;
    // An exclusive queue belongs to a connection of its home node: no connection here has this
    // id (they count up from 1), so every use from here is refused as RabbitMQ refuses it.
    spec.exclusive_owner = spec.exclusive_owner.map(|_| super::ConnectionId::MAX);
    let (tx, rx) = mpsc::channel(super::INBOX);
    let queue = QueueRef {
        vhost: vhost.to_owned(),
        name: spec.name.clone(),
    };
    // Confirms wait for the home node's answer.
    let handle = Arc::new(QueueHandle {
        forwards: true,
        ..QueueHandle::new(spec, tx)
    });
    let proxy = Proxy {
        handle: Arc::downgrade(&handle),
        queue,
        homes,
        current: AtomicUsize::new(0),
        remote,
        in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
    };
    tokio::spawn(proxy.run(rx));
    handle
}

/// Resolves when the watched home node's connection changes: whether one is up now, and whether
/// one was lost (went down, or was replaced by another) rather than merely made.
async fn link_changed(
    link: &mut Option<tokio::sync::watch::Receiver<PeerLink>>,
    seen: &mut Option<PeerLink>,
) -> (bool, bool) {
    let (Some(link), Some(before)) = (link.as_mut(), seen.as_mut()) else {
        return std::future::pending().await;
    };
    if link.changed().await.is_err() {
        return std::future::pending().await;
    }
    let now = *link.borrow_and_update();
    // From up, the connection went; two changes or more since the last look: whatever was up
    // meanwhile went too.
    let lost = before.up || now.generation > before.generation + 1;
    *before = now;
    (now.up, lost)
}

struct Proxy {
    handle: Weak<QueueHandle>,
    queue: QueueRef,
    /// The nodes that serve the queue (one but for a replicated queue), and the one in use.
    homes: Vec<String>,
    current: AtomicUsize,
    remote: Remote,
    in_flight: Arc<Semaphore>,
}

type Batch = Vec<(WireMessage, Option<PublishConfirm>)>;

impl Proxy {
    /// The node in use.
    fn home(&self) -> &str {
        &self.homes[self
            .current
            .load(Ordering::Relaxed)
            .min(self.homes.len() - 1)]
    }

    /// Another of the homes whose link is up, if the one in use is not.
    fn reachable_home(&self) -> Option<usize> {
        let up = |name: &str| self.remote.link.is_connected(name);
        if up(self.home()) {
            return None;
        }
        self.homes.iter().position(|h| up(h))
    }

    async fn run(self, mut rx: mpsc::Receiver<QueueCommand>) {
        let mut home_up = self.remote.link.watch_peer(self.home());
        let mut seen = home_up.as_mut().map(|link| *link.borrow_and_update());
        if let (Some(link), Some(handle)) = (seen, self.handle.upgrade()) {
            handle.home_up.store(link.up, Ordering::Release);
        }
        // A replicated queue's proxy looks for another member while the one in use is down.
        let mut look_again = tokio::time::interval(HOME_CHECK);
        look_again.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next: Option<QueueCommand> = None;
        loop {
            let command = match next.take() {
                Some(c) => c,
                None => {
                    tokio::select! {
                        c = rx.recv() => match c {
                            Some(c) => c,
                            None => return,
                        },
                        (up, lost) = link_changed(&mut home_up, &mut seen) => {
                            if let Some(handle) = self.handle.upgrade() {
                                handle.home_up.store(up, Ordering::Release);
                            }
                            if lost {
                                // The connection went (even if another replaced it at once): the
                                // home node forgot its consumers from here, so they are cancelled
                                // here too (basic.cancel to those that asked).
                                self.remote.proxies.home_lost(self.home());
                            }
                            continue;
                        }
                        _ = look_again.tick(), if self.homes.len() > 1 => {
                            if let Some(other) = self.reachable_home() {
                                self.remote.proxies.home_lost(self.home());
                                self.current.store(other, Ordering::Relaxed);
                                home_up = self.remote.link.watch_peer(self.home());
                                seen = home_up.as_mut().map(|link| *link.borrow_and_update());
                                if let (Some(link), Some(handle)) = (seen, self.handle.upgrade()) {
                                    handle.home_up.store(link.up, Ordering::Release);
                                }
                            }
                            continue;
                        }
                    }
                }
            };
            match command {
                QueueCommand::Publish {
                    message, confirm, ..
                } => {
                    let mut batch: Batch = vec![(WireMessage::of(&message), confirm)];
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(QueueCommand::Publish {
                                message, confirm, ..
                            }) => batch.push((WireMessage::of(&message), confirm)),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.publish(batch).await;
                }
                other => self.command(other).await,
            }
        }
    }

    /// Sends a batch in order and answers its confirms when the home node does.
    async fn publish(&self, batch: Batch) {
        if !self.home_up() {
            // Not taken: confirms are nacks (dropping them answers so).
            return;
        }
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let (messages, confirms): (Vec<WireMessage>, Vec<Option<PublishConfirm>>) =
            batch.into_iter().unzip();
        let call = match wire::encode(&Forward::Publish {
            queue: self.queue.clone(),
            messages,
        }) {
            Ok(bytes) => {
                self.remote
                    .link
                    .call(self.home(), Request::App(bytes))
                    .await
            }
            Err(e) => {
                tracing::error!(queue = %self.queue.name, "cannot forward publishes: {e}");
                return;
            }
        };
        tokio::spawn(async move {
            let _permit = permit;
            let taken = match call {
                Ok(call) => match call.answer(TIMEOUT).await {
                    Ok(Response::App(Ok(bytes))) => match wire::decode::<Reply>(&bytes) {
                        Ok(Reply::Published(taken)) => taken,
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                },
                Err(_) => Vec::new(),
            };
            // Unanswered ones (the home node unreachable) are nacks: dropping a confirm is one.
            for (i, confirm) in confirms.into_iter().enumerate() {
                if let Some(confirm) = confirm {
                    confirm.answer(taken.get(i) == Some(&Taken::Yes));
                }
            }
        });
    }

    /// Whether the home node's link is up (a command to a node known down fails at once).
    fn home_up(&self) -> bool {
        self.handle
            .upgrade()
            .is_some_and(|h| h.home_up.load(Ordering::Acquire))
    }

    /// Sends one request and waits for its answer.
    async fn ask(&self, forward: Forward) -> Option<Reply> {
        if !self.home_up() {
            return None;
        }
        let bytes = wire::encode(&forward).ok()?;
        let call = self
            .remote
            .link
            .call(self.home(), Request::App(bytes))
            .await
            .ok()?;
        match call.answer(TIMEOUT).await {
            Ok(Response::App(Ok(bytes))) => wire::decode(&bytes).ok(),
            _ => None,
        }
    }

    /// Sends one request without waiting for its answer (settlements).
    async fn tell(&self, forward: Forward) {
        let Ok(bytes) = wire::encode(&forward) else {
            return;
        };
        if let Ok(call) = self
            .remote
            .link
            .call(self.home(), Request::App(bytes))
            .await
        {
            tokio::spawn(async move {
                let _ = call.answer(TIMEOUT).await;
            });
        }
    }

    fn unreachable(&self) -> AmqpError {
        AmqpError::not_found(format!(
            "queue '{}' in vhost '{}' is on node {}, which cannot be reached",
            self.queue.name,
            self.queue.vhost,
            self.home()
        ))
    }

    async fn command(&self, command: QueueCommand) {
        let queue = self.queue.clone();
        match command {
            QueueCommand::Publish { .. } => {}
            QueueCommand::Sync(reply) => {
                let synced = matches!(
                    self.ask(Forward::Sync { queue }).await,
                    Some(Reply::Synced(true))
                );
                let _ = reply.send(synced);
            }
            QueueCommand::Consume(consumer, reply) => {
                let id = consumer.spec.id;
                let spec = consumer.spec;
                self.remote.proxies.lock().insert(
                    id,
                    RemoteConsumer {
                        queue: self.handle.clone(),
                        home: self.home().to_owned(),
                        no_ack: spec.no_ack,
                        outbox: consumer.outbox,
                    },
                );
                let terms = ConsumeTerms::of(&spec);
                let forward = match consumer.stream_start {
                    Some(start) => Forward::ConsumeStream {
                        queue,
                        consumer: id,
                        terms,
                        start,
                    },
                    None => Forward::Consume {
                        queue,
                        consumer: id,
                        terms,
                    },
                };
                let answer = self.ask(forward).await;
                let result = match answer {
                    Some(Reply::Done) => Ok(()),
                    Some(Reply::Refused(e)) => Err(e.into_error()),
                    _ => Err(self.unreachable()),
                };
                if result.is_err() {
                    self.remote.proxies.lock().remove(&id);
                }
                let _ = reply.send(result);
            }
            // The consumer is forgotten here once the home node has answered: the deliveries
            // it relayed before the cancel come ahead of the answer, and reach the consumer.
            QueueCommand::Cancel { consumer_id, done } => {
                let _ = self
                    .ask(Forward::Cancel {
                        queue,
                        consumer: consumer_id,
                    })
                    .await;
                self.remote.proxies.lock().remove(&consumer_id);
                let _ = done.send(());
            }
            QueueCommand::Get { no_ack, reply } => {
                let got = match self.ask(Forward::Get { queue, no_ack }).await {
                    Some(Reply::Got(Some(g))) => Some(GetReply {
                        id: g.id,
                        message: g.message.into_message(),
                        redelivered: g.redelivered,
                        remaining: g.remaining,
                    }),
                    _ => None,
                };
                let _ = reply.send(got);
            }
            QueueCommand::Ack(ids) => self.settle(Settle::Ack, ids).await,
            QueueCommand::Reject(ids) => self.settle(Settle::Reject, ids).await,
            QueueCommand::Requeue(ids) => self.settle(Settle::Requeue, ids).await,
            QueueCommand::Purge(reply) => {
                let purged = match self.ask(Forward::Purge { queue }).await {
                    Some(Reply::Purged(n)) => n,
                    _ => 0,
                };
                let _ = reply.send(purged);
            }
            QueueCommand::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                let result = match self
                    .ask(Forward::Delete {
                        queue,
                        if_unused,
                        if_empty,
                    })
                    .await
                {
                    Some(Reply::Deleted(n)) => Ok(n),
                    // Already gone at home: nothing was in it.
                    Some(Reply::Gone) => Ok(0),
                    Some(Reply::Refused(e)) => Err(e.into_error()),
                    _ => Err(self.unreachable()),
                };
                if result.is_ok() {
                    if let Some(handle) = self.handle.upgrade() {
                        handle.mark_deleted();
                    }
                }
                let _ = reply.send(result);
            }
            QueueCommand::Stats { used, reply } => {
                // With its counts and the home node's last samples (the rates the API shows
                // here are the home node's); a node of a version before answers only `Stats`.
                let figures = self
                    .ask(Forward::Figures {
                        queue: queue.clone(),
                        used,
                    })
                    .await;
                if let Some(Reply::Figures { now, sampled }) = figures {
                    if let (Some((micros, earlier, later)), Some(handle)) =
                        (sampled, self.handle.upgrade())
                    {
                        handle
                            .rates
                            .set_pair(Duration::from_micros(micros), earlier, later);
                    }
                    let _ = reply.send(now);
                    return;
                }
                let stats = match self.ask(Forward::Stats { queue, used }).await {
                    Some(Reply::Stats {
                        ready,
                        unacked,
                        consumers,
                    }) => QueueStats {
                        ready,
                        unacked,
                        consumers,
                        ..QueueStats::default()
                    },
                    _ => QueueStats::default(),
                };
                let _ = reply.send(stats);
            }
            // Flow and policies are the home node's business.
            QueueCommand::Resume | QueueCommand::PoliciesChanged => {}
        }
    }

    async fn settle(&self, how: Settle, ids: Vec<u64>) {
        self.tell(Forward::Settle {
            queue: self.queue.clone(),
            how,
            ids,
        })
        .await;
    }
}
