//! The queue owner task: one per queue, the only thing that touches its [`QueueCore`]. It turns
//! the [`QueueCommand`]s channels send into state-machine commands, drains its inbox in batches
//! (one dispatch and one log write per batch), answers the senders (a logged publish's confirm once
//! the log says it is durable), and is the state machine's
//! [`Context`]: the clock, consumers' credit, the queue's log, and the effects carried out —
//! deliveries to connections, dead-letters routed through the vhost, deletion.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use warren_amqp::PropertiesView;
use warren_storage::Store;

use super::core::{
    Command, Context, CoreSpec, DeadLetter, Effect, Outcome, QueueCore, RecoveredEntry, Taken,
};
use super::dead_letter;
use super::host::QueueHost;
use super::log::{durable_form, NoLog, QueueLog, StoreLog};
use super::recovery::Recovery;
use super::{
    ConnEvent, Consumer, ConsumerOutbox, PublishConfirm, QueueCommand, QueueHandle, QueueSpec,
};
use crate::message::{self, Message};

/// Messages waiting to be paged out beyond which the queue waits for the disk.
const PAGE_OUT_BACKLOG: usize = 2048;

/// Consumer ids are unique counters: a multiplicative hash spreads them well enough, and a
/// delivery looks its consumer up a few times (credit, then send), so the lookup stays cheap.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type ConsumerMap = HashMap<u64, ConsumerOutbox, IdHash>;

/// Hashing for maps keyed by counters.
pub(super) type IdHash = std::hash::BuildHasherDefault<IdHasher>;

/// The state machine's world: everything [`QueueCore`] may not touch itself.
struct World {
    handle: Arc<QueueHandle>,
    host: Weak<dyn QueueHost>,
    store: Store,
    log: Box<dyn QueueLog + Send>,
    consumers: ConsumerMap,
    started: Instant,
    /// Ack-mode deliveries whose connection was gone when they were sent.
    undelivered: Vec<(u64, u64)>,
    /// Consumers whose connection is gone.
    gone: Vec<u64>,
    /// The dead-letters the queue holds until their targets confirm them (see
    /// [`DeadLetter::held`]), by hold id.
    held: HashMap<u64, HeldRoute>,
    /// Where the queues a held dead-letter reached confirm it.
    dead_letter_confirms: DeadLetterConfirms,
    /// When the held dead-letters that reached no queue or were refused are routed again (None:
    /// none is waiting; most queues never need the timer).
    dead_letter_retry: Option<tokio::time::Instant>,
    /// The queue is being restored (its task not yet running): held dead-letters wait for it.
    starting: bool,
}

/// A held dead-letter and where its routing stands.
struct HeldRoute {
    dead: DeadLetter,
    /// The confirms still to come from the queues it reached, and whether those that came were
    /// all acks; None: to be routed (again) at the next retry.
    confirming: Option<(usize, bool)>,
}

/// How often a queue routes again the held dead-letters that reached no queue or were refused,
/// as a quorum queue's leader does.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// Creates a queue and starts its owner task. `recovered` holds the messages a durable queue had
/// on disk, in order.
pub fn spawn<H: QueueHost + 'static>(
    spec: QueueSpec,
    host: Weak<H>,
    store: &Store,
    recovered: Option<Recovery>,
) -> Arc<QueueHandle> {
    let host: Weak<dyn QueueHost> = host;
    let (tx, rx) = mpsc::channel(super::INBOX);
    let storage_id = spec.storage_id;
    let memory_limit = spec.memory_limit;
    let handle = Arc::new(QueueHandle::new(spec, tx));
    let vhost: Arc<str> = host
        .upgrade()
        .map(|h| h.vhost_name().into())
        .unwrap_or_else(|| "".into());
    let log: Box<dyn QueueLog + Send> = match storage_id {
        Some(id) => Box::new(StoreLog::new(
            store.clone(),
            id,
            vhost.to_string(),
            handle.name.to_string(),
        )),
        None => Box::new(NoLog),
    };
    let mut world = World {
        handle: handle.clone(),
        host,
        store: store.clone(),
        log,
        consumers: ConsumerMap::default(),
        started: Instant::now(),
        undelivered: Vec::new(),
        gone: Vec::new(),
        held: HashMap::new(),
        dead_letter_confirms: DeadLetterConfirms::default(),
        dead_letter_retry: None,
        starting: true,
    };
    let core_spec = CoreSpec {
        name: handle.name.clone(),
        vhost,
        args: handle.effective_args(),
        auto_delete: handle.auto_delete,
        logged: storage_id.is_some(),
        memory_limit,
    };
    let mut core = QueueCore::new(core_spec, world.now_ms());
    let recovered = recovered.unwrap_or_else(|| Recovery::new(0));
    if let (Some(cache), Some((_, remembered))) = (core.dedup_mut(), recovered.dedup) {
        // What the queue remembered, and the ids of the messages still in it (in case the
        // broker stopped before it wrote down what it remembered).
        let now = world.wall_clock_ms();
        cache.restore(remembered, now);
        for key in recovered.dedup_keys {
            cache.is_duplicate(key, now);
        }
    }
    for m in recovered.messages {
        let entry = RecoveredEntry {
            slot: m.slot,
            expiration_ms: m.expiration_ms,
            redelivered: m.redelivered,
            dead_lettered: m.dead_lettered,
        };
        core.recover(entry, &mut world);
    }
    world.starting = false;
    tokio::spawn(
        Owner {
            core,
            world,
            waiting: Vec::new(),
        }
        .run(rx),
    );
    handle
}

struct Owner {
    core: QueueCore,
    world: World,
    /// What waits for the batch's log writes to be durable: confirms of logged publishes, syncs.
    waiting: Vec<Waiter>,
}

/// Something answered once the log has what the queue was told before it.
enum Waiter {
    Confirm {
        confirm: PublishConfirm,
        message: u64,
    },
    Sync(oneshot::Sender<bool>),
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::Receiver<QueueCommand>) {
        let mut batch = Vec::with_capacity(256);
        while !self.core.is_deleted() && !self.world.handle.is_deleted() {
            let wake = self
                .core
                .next_wakeup(|| self.world.now_ms())
                .map(|ms| self.world.started + Duration::from_millis(ms));
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = rx.recv_many(&mut batch, 256) => {
                    if received == 0 {
                        break;
                    }
                    // All of them, even once the queue is deleted: the deleted queue answers
                    // what it is asked (publishes are confirmed, gets find nothing).
                    for cmd in batch.drain(..) {
                        self.handle(cmd);
                    }
                }
                _ = timer => {}
                Some(event) = self.world.dead_letter_confirms.next() => {
                    self.on_dead_letter_confirm(event);
                }
                _ = super::sleep_until_some(self.world.dead_letter_retry) => {
                    self.world.route_held_dead_letters();
                }
            }
            if self.core.is_deleted() {
                break;
            }
            self.apply(Command::Tick);
            self.release_when_durable();
            if self.core.page_out_backlog() >= PAGE_OUT_BACKLOG {
                // Publishing faster than the disk takes the copies would only move the backlog
                // into the writer's queue: wait for the disk (publishers wait on this queue).
                let _ = self.world.store.sync().await;
                self.apply(Command::Tick);
            }
        }
        // The queue is gone: what it took is settled with it (RabbitMQ confirms a publish whose
        // queue is deleted), and so is what is still in its inbox.
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            self.handle(cmd);
        }
        for waiter in self.waiting.drain(..) {
            waiter.answer(true);
        }
        self.world.handle.mark_deleted();
        tracing::debug!(queue = %self.world.handle.name, "queue task stopped");
    }

    /// A queue a held dead-letter reached answered: once all have, and all took it, the queue
    /// lets go of it; a refusal has it routed again at the next retry.
    fn on_dead_letter_confirm(&mut self, event: ConnEvent) {
        let ConnEvent::Settled { seq: id, ok, .. } = event else {
            return;
        };
        let Some(route) = self.world.held.get_mut(&id) else {
            return;
        };
        let Some((remaining, all_ok)) = &mut route.confirming else {
            return;
        };
        *remaining = remaining.saturating_sub(1);
        *all_ok &= ok;
        if *remaining > 0 {
            return;
        }
        if !*all_ok {
            route.confirming = None;
            self.world.retry_dead_letters();
            return;
        }
        self.world.held.remove(&id);
        self.apply(Command::DeadLettersReleased(vec![id]));
    }

    /// Hands what waits to the log, answered once the batch's writes are durable.
    fn release_when_durable(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting);
        self.world
            .log
            .when_durable(Box::new(move |written, durable| {
                for waiter in waiting {
                    let ok = match &waiter {
                        Waiter::Confirm { message, .. } => durable(*message),
                        // (Not an earlier batch's failure: the disk alarm shows that.)
                        Waiter::Sync(_) => written,
                    };
                    waiter.answer(ok);
                }
            }));
    }

    /// Applies a command, then takes back what could not be delivered.
    fn apply(&mut self, command: Command) -> Outcome {
        let outcome = self.core.apply(command, &mut self.world);
        while !(self.world.undelivered.is_empty() && self.world.gone.is_empty()) {
            let mut undelivered = std::mem::take(&mut self.world.undelivered);
            let mut gone = std::mem::take(&mut self.world.gone);
            gone.extend(undelivered.iter().map(|(c, _)| *c));
            gone.sort_unstable();
            gone.dedup();
            undelivered.sort_unstable();
            for consumer in gone {
                let deliveries = undelivered
                    .iter()
                    .filter(|(c, _)| *c == consumer)
                    .map(|(_, d)| *d)
                    .collect();
                self.core.apply(
                    Command::Undelivered {
                        consumer: Some(consumer),
                        deliveries,
                    },
                    &mut self.world,
                );
                self.world.consumers.remove(&consumer);
            }
        }
        outcome
    }

    fn handle(&mut self, cmd: QueueCommand) {
        if self.core.is_deleted() {
            cmd.answer_as_deleted();
            return;
        }
        match cmd {
            QueueCommand::Publish {
                message,
                logged,
                confirm,
            } => {
                let id = logged.as_ref().map(|l| l.id);
                let Outcome::Published(taken) = self.apply(Command::Publish { message, logged })
                else {
                    return;
                };
                let Some(confirm) = confirm else {
                    return;
                };
                match (taken, id) {
                    (Taken::Logged, Some(message)) => {
                        self.waiting.push(Waiter::Confirm { confirm, message })
                    }
                    (taken, _) => confirm.answer(taken != Taken::Refused),
                }
            }
            QueueCommand::Sync(reply) => self.waiting.push(Waiter::Sync(reply)),
            QueueCommand::Consume(consumer, reply) => {
                let Consumer { spec, outbox, .. } = consumer;
                let id = spec.id;
                self.world.consumers.insert(id, outbox);
                let result = match self.apply(Command::Consume(spec)) {
                    Outcome::Consumed(result) => result,
                    _ => Ok(()),
                };
                if result.is_err() {
                    self.world.consumers.remove(&id);
                }
                let _ = reply.send(result);
            }
            QueueCommand::Cancel { consumer_id, done } => {
                self.apply(Command::Cancel {
                    consumer: consumer_id,
                });
                self.world.consumers.remove(&consumer_id);
                let _ = done.send(());
            }
            QueueCommand::Get { no_ack, reply } => {
                let Outcome::Got(got) = self.apply(Command::Get { no_ack }) else {
                    return;
                };
                if let Err(Some(got)) = reply.send(got) {
                    // The channel stopped waiting: the message was never handed out.
                    if !no_ack {
                        self.apply(Command::Undelivered {
                            consumer: None,
                            deliveries: vec![got.id],
                        });
                    }
                }
            }
            QueueCommand::Ack(ids) => {
                self.apply(Command::Ack(ids));
            }
            QueueCommand::Reject(ids) => {
                self.apply(Command::Reject(ids));
            }
            QueueCommand::Requeue(ids) => {
                self.apply(Command::Requeue(ids));
            }
            QueueCommand::Purge(reply) => {
                if let Outcome::Purged(n) = self.apply(Command::Purge) {
                    let _ = reply.send(n);
                }
            }
            QueueCommand::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                if let Outcome::Deleted(result) = self.apply(Command::Delete {
                    if_unused,
                    if_empty,
                }) {
                    let _ = reply.send(result);
                }
            }
            QueueCommand::Stats { used, reply } => {
                if let Outcome::Stats(stats) = self.apply(Command::Stats { used }) {
                    let _ = reply.send(stats);
                }
            }
            // The batch's tick dispatches.
            QueueCommand::Resume => {}
            QueueCommand::PoliciesChanged => {
                let args = self.world.handle.effective_args();
                self.apply(Command::Configure(args));
            }
        }
    }
}

impl Waiter {
    fn answer(self, ok: bool) {
        match self {
            Waiter::Confirm { confirm, .. } => confirm.answer(ok),
            Waiter::Sync(reply) => {
                let _ = reply.send(ok);
            }
        }
    }
}

impl World {
    fn deliver(
        &mut self,
        consumer: u64,
        delivery: u64,
        redelivered: bool,
        no_ack: bool,
        message: message::MessageRef,
    ) {
        let Some(io) = self.consumers.get(&consumer) else {
            if !no_ack {
                self.undelivered.push((consumer, delivery));
            }
            return;
        };
        if !io.deliver(
            &self.handle,
            consumer,
            delivery,
            redelivered,
            no_ack,
            message,
        ) {
            // The connection went away since it was asked for room.
            if !no_ack {
                io.channel_flow.give_back(1);
                self.undelivered.push((consumer, delivery));
            }
        }
    }

    fn dead_letter(&mut self, d: DeadLetter) {
        let Some(id) = d.held else {
            route_dead_letter(&self.handle, &self.host, &self.store, d);
            return;
        };
        self.held.insert(
            id,
            HeldRoute {
                dead: d,
                confirming: None,
            },
        );
        if self.starting {
            // Dead-letters held before a restart: routed once the queue's task runs (the vhost
            // is still being restored, its exchanges maybe not yet).
            self.dead_letter_retry = Some(tokio::time::Instant::now());
            return;
        }
        self.route_held_dead_letter(id);
    }

    /// Has the held dead-letters waiting for a route routed again [`DEAD_LETTER_RETRY`] from now,
    /// unless a retry is due already.
    fn retry_dead_letters(&mut self) {
        self.dead_letter_retry
            .get_or_insert_with(|| tokio::time::Instant::now() + DEAD_LETTER_RETRY);
    }

    /// Routes again the held dead-letters that reached no queue or were refused.
    fn route_held_dead_letters(&mut self) {
        self.dead_letter_retry = None;
        let unrouted: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, route)| route.confirming.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in unrouted {
            self.route_held_dead_letter(id);
        }
    }

    /// Routes held dead-letter `id` with confirms; one that reached no queue waits for the next
    /// retry.
    fn route_held_dead_letter(&mut self, id: u64) {
        let Some(route) = self.held.get_mut(&id) else {
            return;
        };
        let reached = self.dead_letter_confirms.route(
            &self.handle,
            &self.host,
            &self.store,
            route.dead.clone(),
            id,
        );
        match reached {
            0 => self.retry_dead_letters(),
            _ => route.confirming = Some((reached, true)),
        }
    }
}

/// Routes a dead-lettered message through the queue's dead-letter exchange (stored once for the
/// durable queues it reaches, when persistent), skipping queues it would cycle back to.
pub(super) fn route_dead_letter(
    handle: &QueueHandle,
    host: &Weak<dyn QueueHost>,
    store: &Store,
    d: DeadLetter,
) {
    route_dead_letter_confirmed(handle, host, store, d, None);
}

/// As [`route_dead_letter`]; with `confirms` (a connection's events and a number), each queue
/// it reaches answers a confirm of that number there once it has the message (on disk, when it
/// keeps it so). How many queues it reached.
pub(super) fn route_dead_letter_confirmed(
    handle: &QueueHandle,
    host: &Weak<dyn QueueHost>,
    store: &Store,
    d: DeadLetter,
    confirms: Option<(&mpsc::UnboundedSender<super::ConnEvent>, u64)>,
) -> usize {
    let Some(host) = host.upgrade() else {
        return 0;
    };
    let view = PropertiesView::parse(&d.properties).unwrap_or_default();
    let keys: Vec<&str> = d.routing_keys.iter().map(String::as_str).collect();
    let mut targets = Vec::new();
    if let Err(e) = host.route(&d.exchange, &keys, view.headers, &mut targets) {
        tracing::debug!(queue = %handle.name, "dead-letter exchange unusable, message dropped: {}", e.reply_text());
        return 0;
    }
    let headers = view
        .headers
        .and_then(warren_amqp::encode::decode_table_entries);
    targets.retain(|q| !dead_letter::is_cycle(headers.as_ref(), d.reason, &q.name));
    if targets.is_empty() {
        return 0;
    }
    let original = &d.message;
    let durable_targets = if original.persistent {
        targets.iter().filter(|q| q.logs_in_store()).count()
    } else {
        0
    };
    let storage_id = (durable_targets > 0).then(|| store.next_message_id());
    let routing_key = keys.first().copied().unwrap_or_default();
    let message = Message::from_parts(
        d.exchange.as_bytes(),
        routing_key.as_bytes(),
        &d.properties,
        original.body_bytes(),
        storage_id,
    );
    let logged = match storage_id.map(|id| durable_form(store, &message, id, durable_targets)) {
        Some(Ok(logged)) => Some(logged),
        Some(Err(e)) => {
            tracing::error!(queue = %handle.name, "cannot store a dead-lettered message, dropped: {e}");
            return 0;
        }
        None => None,
    };
    let reached = targets.len();
    for q in targets {
        q.send_now(QueueCommand::Publish {
            logged: q.logs_in_store().then(|| logged.clone()).flatten(),
            message: message.clone(),
            confirm: confirms.map(|(events, seq)| PublishConfirm::new(events.clone(), 0, seq)),
        });
    }
    reached
}

/// Where the queues a held dead-letter reached answer its confirms (see
/// [`route_dead_letter_confirmed`]): made with the first such dead-letter (a channel allocates
/// its first slots when made, and most queues never hold one).
#[derive(Default)]
pub(super) struct DeadLetterConfirms {
    confirms: Option<mpsc::UnboundedSender<ConnEvent>>,
    answers: Option<mpsc::UnboundedReceiver<ConnEvent>>,
}

impl DeadLetterConfirms {
    /// Routes held dead-letter `id` with confirms answered here (their `seq` is `id`): how
    /// many queues it reached.
    pub(super) fn route(
        &mut self,
        handle: &QueueHandle,
        host: &Weak<dyn QueueHost>,
        store: &Store,
        dead: DeadLetter,
        id: u64,
    ) -> usize {
        if self.confirms.is_none() {
            let (confirms, answers) = mpsc::unbounded_channel();
            self.confirms = Some(confirms);
            self.answers = Some(answers);
        }
        let confirms = self.confirms.as_ref().map(|c| (c, id));
        route_dead_letter_confirmed(handle, host, store, dead, confirms)
    }

    /// The next answer; never, if nothing was routed.
    pub(super) async fn next(&mut self) -> Option<ConnEvent> {
        super::recv_if_made(&mut self.answers).await
    }
}

impl Context for World {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn wall_clock_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn consumer_has_room(&mut self, consumer: u64) -> bool {
        let Some(io) = self.consumers.get(&consumer) else {
            return false;
        };
        if io.events.is_closed() {
            self.gone.push(consumer);
            return false;
        }
        if !io.connection_flow.has_room() {
            io.connection_flow.wait(&self.handle);
            return false;
        }
        io.channel_flow.has_room()
    }

    fn take_channel_credit(&mut self, consumer: u64) -> bool {
        self.consumers
            .get(&consumer)
            .is_some_and(|io| io.channel_flow.try_take())
    }

    fn emit(&mut self, effect: Effect) {
        match effect {
            Effect::Deliver {
                consumer,
                delivery,
                redelivered,
                no_ack,
                message,
            } => self.deliver(consumer, delivery, redelivered, no_ack, message),
            Effect::ConsumerCancelled { consumer } => {
                if let Some(io) = self.consumers.remove(&consumer) {
                    let _ = io.events.send(ConnEvent::ConsumerCancelled {
                        channel: io.channel,
                        consumer_id: consumer,
                    });
                }
            }
            Effect::DeadLetter(d) => self.dead_letter(d),
            Effect::Deleted => {
                self.handle.mark_deleted();
                if let Some(host) = self.host.upgrade() {
                    host.forget_queue(&self.handle);
                }
            }
        }
    }

    fn log(&mut self) -> &mut dyn QueueLog {
        &mut *self.log
    }
}
