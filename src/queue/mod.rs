//! Queues: the handle every channel and exchange holds, and the commands it accepts.
//!
//! Layout: [`core`] is the queue as a state machine with no I/O (commands in, effects out);
//! [`owner`] is the one task per queue that feeds it and carries out its effects; [`log`] is the
//! queue's durable log (the store today); [`host`] is what a queue needs from its vhost;
//! [`recovery`] gathers a durable queue's messages at start-up;
//! `ready.rs` holds the ready messages in order; [`args`], [`dead_letter`], [`dedup`] and
//! [`delivery_count`] are the RabbitMQ features' rules; `delivery.rs` is what a queue sends to a connection.

pub mod args;
pub mod core;
pub mod dead_letter;
pub mod dedup;
mod delivery;
pub mod delivery_count;
pub mod factory;
pub mod host;
pub mod log;
pub mod owner;
pub mod quorum;
mod ready;
pub mod recovery;
pub mod remote;
pub mod stream;

pub use args::{Overflow, QueueArgs};
pub use delivery::{ConnEvent, Delivery};

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use warren_amqp::types::FieldTable;
use warren_amqp::AmqpError;

use crate::message::MessageRef;
use crate::policy::{resolve, Applied};
use warren_storage::Enqueued;

/// Identifies a connection inside the broker.
pub type ConnectionId = u64;

/// Commands queued to a queue's owner task.
pub enum QueueCommand {
    Publish {
        message: MessageRef,
        /// The message's durable form, when this queue is to log it (a persistent message for
        /// a durable queue), made once by whoever routed it.
        logged: Option<Enqueued>,
        /// Asks for an answer: once the queue's log has the message, or at once when the queue
        /// refuses it (`x-overflow` reject-publish) or has nothing to log.
        confirm: Option<PublishConfirm>,
    },
    /// Answered once everything the queue was told before is in its log (a transaction's
    /// commit, a clean shutdown): false if a write failed.
    Sync(oneshot::Sender<bool>),
    Consume(Consumer, oneshot::Sender<Result<(), AmqpError>>),
    Cancel {
        consumer_id: u64,
        done: oneshot::Sender<()>,
    },
    Get {
        no_ack: bool,
        reply: oneshot::Sender<Option<GetReply>>,
    },
    /// Deliveries settled by ack.
    Ack(Vec<u64>),
    /// Deliveries refused without requeue (reject/nack): dead-lettered or dropped.
    Reject(Vec<u64>),
    /// Deliveries handed back, to be delivered again with `redelivered` set.
    Requeue(Vec<u64>),
    Purge(oneshot::Sender<u32>),
    Delete {
        if_unused: bool,
        if_empty: bool,
        reply: oneshot::Sender<Result<u32, AmqpError>>,
    },
    /// The queue's counts. `used`: this counts as a use of the queue for `x-expires` (a declare
    /// does; the management API's listings do not).
    Stats {
        used: bool,
        reply: oneshot::Sender<QueueStats>,
    },
    /// A connection or channel has room for deliveries again.
    Resume,
    /// The policies that apply to the queue changed: act on the handle's effective arguments
    /// (the latest, whichever order such commands arrive in).
    PoliciesChanged,
}

impl QueueCommand {
    /// The answer of a queue that is deleted: a publish is confirmed (as RabbitMQ confirms a
    /// publish whose queue is deleted), a sync succeeds; anything else finds no queue, its answer
    /// dropped so that the asker sees the queue gone.
    pub(crate) fn answer_as_deleted(self) {
        match self {
            QueueCommand::Publish {
                confirm: Some(confirm),
                ..
            } => confirm.answer(true),
            QueueCommand::Sync(reply) => {
                let _ = reply.send(true);
            }
            _ => {}
        }
    }
}

/// Where a queue answers a confirm-mode publish once it has taken the message (logged it, when it
/// logs it) or refused it (`x-overflow` reject-publish).
/// Answered exactly once: one that is dropped unanswered (its queue's task died) is a nack, so
/// the publisher's later confirms never wait for it.
pub struct PublishConfirm {
    events: Option<mpsc::UnboundedSender<ConnEvent>>,
    channel: u16,
    seq: u64,
}

impl PublishConfirm {
    pub fn new(events: mpsc::UnboundedSender<ConnEvent>, channel: u16, seq: u64) -> Self {
        PublishConfirm {
            events: Some(events),
            channel,
            seq,
        }
    }

    /// Tells the publisher's connection the queue's answer: taken (and durable, when logged) or
    /// not.
    pub fn answer(mut self, ok: bool) {
        self.send(ok);
    }

    fn send(&mut self, ok: bool) {
        if let Some(events) = self.events.take() {
            let _ = events.send(ConnEvent::Settled {
                channel: self.channel,
                seq: self.seq,
                ok,
            });
        }
    }
}

impl Drop for PublishConfirm {
    fn drop(&mut self) {
        self.send(false);
    }
}

/// What a queue has taken in and handed out since it started on this node (RabbitMQ's
/// per-queue `message_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueCounts {
    /// Messages taken in (`publish`).
    pub published: u64,
    /// Delivered to consumers that ack (`deliver`), and to those that do not (`deliver_no_ack`).
    pub delivered: u64,
    pub delivered_no_ack: u64,
    /// Fetched with `basic.get` (`get`, `get_no_ack`).
    pub got: u64,
    pub got_no_ack: u64,
    /// Of the deliveries and gets, those flagged redelivered (`redeliver`).
    pub redelivered: u64,
    /// Deliveries acknowledged (`ack`).
    pub acked: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueStats {
    /// Ready messages (declare-ok's message_count).
    pub ready: u32,
    /// Delivered and not yet settled.
    pub unacked: u32,
    pub consumers: u32,
    /// A quorum queue's dead-letters held until their targets confirm them (at-least-once), and
    /// their body bytes: RabbitMQ's `messages_dlx` and `message_bytes_dlx`.
    pub held_dead_letters: u32,
    pub held_dead_letter_bytes: u64,
    pub counts: QueueCounts,
}

#[derive(Debug)]
pub struct GetReply {
    pub id: u64,
    pub message: MessageRef,
    pub redelivered: bool,
    pub remaining: u32,
}

/// Delivery credit shared by a channel's consumers across queues: `basic.qos` with
/// `global = true` limits the channel's unacknowledged deliveries as a whole.
#[derive(Debug, Default)]
pub struct ChannelFlow {
    pub global_prefetch: AtomicU32,
    pub unacked: AtomicU32,
}

impl ChannelFlow {
    /// Whether the channel's limit would allow one more delivery (without taking it).
    pub fn has_room(&self) -> bool {
        let limit = self.global_prefetch.load(Ordering::Relaxed);
        limit == 0 || self.unacked.load(Ordering::Relaxed) < limit
    }

    /// Takes one unit of channel-wide credit, if the channel's limit allows.
    pub fn try_take(&self) -> bool {
        let limit = self.global_prefetch.load(Ordering::Relaxed);
        if limit == 0 {
            self.unacked.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.unacked
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back `n` units; true when the channel was at its limit (queues should be resumed).
    pub fn give_back(&self, n: u32) -> bool {
        let before = self
            .unacked
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            })
            .unwrap_or(0);
        let limit = self.global_prefetch.load(Ordering::Relaxed);
        limit != 0 && before >= limit
    }
}

/// How many deliveries a connection may have in transit (sent by queues, not yet encoded for its
/// socket) before queues stop pushing to it: the back-pressure from a slow client.
pub const CONNECTION_CREDIT: u32 = 2000;

/// Back-pressure between queues and one connection.
#[derive(Default)]
pub struct ConnectionFlow {
    pub in_transit: AtomicU32,
    /// Queues that found the connection full; resumed when it drains.
    pub waiting: Mutex<Vec<Arc<QueueHandle>>>,
    /// Woken with the waiting queues: relayed deliveries from another node wait here
    /// ([`ConnectionFlow::until_room`]).
    room: tokio::sync::Notify,
}

impl ConnectionFlow {
    pub fn has_room(&self) -> bool {
        self.in_transit.load(Ordering::Relaxed) < CONNECTION_CREDIT
    }

    /// Called by a connection after encoding `n` deliveries.
    pub fn drained(&self, n: u32) {
        let before = self.in_transit.fetch_sub(n, Ordering::AcqRel);
        if before >= CONNECTION_CREDIT / 2 && before - n < CONNECTION_CREDIT / 2 {
            let waiting =
                std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
            for q in waiting {
                q.resume();
            }
            self.room.notify_waiters();
        }
    }

    /// Resolves once the connection has room for more deliveries: at once if it has, else
    /// when it has drained to half its credit (as queues are resumed).
    pub async fn until_room(&self) {
        loop {
            // Registered before the check, so a drain between the two is not missed.
            let drained = self.room.notified();
            if self.has_room() {
                return;
            }
            drained.await;
        }
    }

    fn wait(&self, queue: &Arc<QueueHandle>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if !waiting.iter().any(|q| Arc::ptr_eq(q, queue)) {
            waiting.push(queue.clone());
        }
        drop(waiting);
        // The connection may have drained between our check and registering: look again.
        if self.has_room() {
            queue.resume();
        }
    }
}

/// A consumer as its queue sees it.
pub struct Consumer {
    /// What the queue's state machine decides with.
    pub spec: core::ConsumerSpec,
    /// Where its deliveries go.
    pub outbox: ConsumerOutbox,
    /// Where a stream's consumer starts (`x-stream-offset`); None for other queues.
    pub stream_start: Option<stream::StreamStart>,
}

/// Where a consumer's deliveries go, and the credit they take.
pub struct ConsumerOutbox {
    pub channel: u16,
    pub tag: Arc<str>,
    pub channel_flow: Arc<ChannelFlow>,
    pub connection_flow: Arc<ConnectionFlow>,
    pub events: mpsc::UnboundedSender<ConnEvent>,
}

impl ConsumerOutbox {
    /// Hands delivery `id` of `queue` to the consumer's connection, counted among the
    /// connection's deliveries in transit until written; false (nothing counted) if the
    /// connection has gone.
    pub fn deliver(
        &self,
        queue: &Arc<QueueHandle>,
        consumer: u64,
        id: u64,
        redelivered: bool,
        no_ack: bool,
        message: MessageRef,
    ) -> bool {
        let delivery = Delivery {
            channel: self.channel,
            consumer_id: consumer,
            consumer_tag: self.tag.clone(),
            queue: queue.clone(),
            id,
            redelivered,
            no_ack,
            message,
        };
        let in_transit = &self.connection_flow.in_transit;
        in_transit.fetch_add(1, Ordering::Relaxed);
        if self.events.send(ConnEvent::Deliver(delivery)).is_err() {
            in_transit.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// What a queue is, as declared; shared by everything that routes to or reads from it.
pub struct QueueHandle {
    pub name: Arc<str>,
    /// The queue's id in the store: set for durable (non-exclusive) queues.
    pub storage_id: Option<u64>,
    pub durable: bool,
    pub exclusive_owner: Option<ConnectionId>,
    pub auto_delete: bool,
    /// As declared (shared with the queue's definition).
    pub arguments: Arc<FieldTable>,
    /// The arguments as declared, parsed (shared with `effective` while no policy changes
    /// them: a broker may hold thousands of queues).
    pub args: Arc<QueueArgs>,
    /// The policies that apply to the queue, and what it acts on with them.
    policies: Mutex<QueuePolicies>,
    /// Whether publishes may be refused (`x-overflow` reject-publish, from an argument or a
    /// policy), so confirms wait for the queue's answer: read on every confirmed publish.
    may_reject_publish: AtomicBool,
    tx: Inbox,
    deleted: AtomicBool,
    /// Which declare of its name it is, in a cluster (0 alone).
    pub incarnation: u64,
    /// The node it lives on, in a cluster (None alone).
    pub home: Option<Arc<str>>,
    /// A quorum queue's members once changed (see `QueueDefinition::members`).
    members: Mutex<Option<Vec<String>>>,
    /// False while the node it lives on cannot be reached (a proxy's; always true here).
    home_up: AtomicBool,
    /// A proxy of a queue on another node: it answers every confirm itself (once the home node
    /// has the message), whatever its policies say.
    forwards: bool,
    /// A replicated (quorum) queue's member: it answers every confirm itself, once a majority
    /// of its group has the message on disk.
    replicated: bool,
    /// A replicated queue's group on this node, once started (for its members' status).
    replica: std::sync::OnceLock<Arc<warren_cluster::group::Group>>,
    /// A replicated queue's counts on this member, read without a round through its inbox
    /// (which publishers may keep full while the group commits).
    counts: std::sync::OnceLock<Box<dyn Fn() -> QueueStats + Send + Sync>>,
    /// Its counts sampled every `collect_statistics_interval`, for their rates.
    pub rates: crate::stats::RateSampler<QueueStats>,
    /// A replicated queue's member: how it is told the members wanted of its group.
    membership: Option<MemberControl>,
    /// A stream (`x-queue-type: stream`): it keeps every message in its own log, so it answers
    /// every confirm itself, and routers never store messages in the store for it.
    stream: bool,
    /// A stream's log, once opened (for its figures).
    stream_log: std::sync::OnceLock<warren_storage::stream::StreamReader>,
}

/// The next message of `channel`; never, if it is not made (a channel made only when needed).
pub(crate) async fn recv_if_made<T>(channel: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match channel {
        Some(channel) => channel.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; forever if `None` (a timer set only when needed).
pub(crate) async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Where a queue's commands go: its task's inbox, or, for a task that ends while its queue is
/// idle (a quorum queue's member: see `quorum::sleep`), what wakes it and gives its inbox.
pub(crate) enum Inbox {
    Open(mpsc::Sender<QueueCommand>),
    Waking(Arc<dyn WakingInbox>),
}

impl From<mpsc::Sender<QueueCommand>> for Inbox {
    fn from(tx: mpsc::Sender<QueueCommand>) -> Inbox {
        Inbox::Open(tx)
    }
}

/// A queue's task that may be asleep: [`WakingInbox::sender`] wakes it if it is.
pub(crate) trait WakingInbox: Send + Sync {
    /// Its inbox, the task woken if it was asleep; None once the queue is gone.
    fn sender(&self) -> Option<mpsc::Sender<QueueCommand>>;
}

/// How a replicated queue's member on this node is told the members its group should have.
pub(crate) struct MemberControl {
    /// This node's name.
    pub node: Arc<str>,
    pub news: Arc<MemberNews>,
}

/// What the handle of a replicated queue tells its member, which may be asleep (it reads it
/// when woken): the members wanted, and that the cluster dropped it. One small record, where a
/// watch channel per member held most of half a kilobyte of wakers.
pub(crate) struct MemberNews {
    /// The members wanted, by node name, and how many times they were set.
    /// (One copy for every queue with the same list.)
    wanted: Mutex<(u64, Arc<Vec<String>>)>,
    pub wanted_changed: tokio::sync::Notify,
    /// Told when the cluster's metadata has deleted the queue while this member had not applied
    /// its group's delete (its node was down then, its group's others gone since): it stops and
    /// lets go of its log.
    pub dropped: tokio::sync::Notify,
}

impl MemberNews {
    pub fn new(wanted: Vec<String>) -> MemberNews {
        MemberNews {
            wanted: Mutex::new((0, warren_cluster::shared_copies::names(wanted))),
            wanted_changed: tokio::sync::Notify::new(),
            dropped: tokio::sync::Notify::new(),
        }
    }

    /// The members wanted, and which setting of them it is (see [`MemberNews::want`]).
    pub fn wanted(&self) -> (u64, Arc<Vec<String>>) {
        self.wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn want(&self, members: &[String]) {
        {
            let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
            *wanted = (
                wanted.0 + 1,
                warren_cluster::shared_copies::names(members.to_vec()),
            );
        }
        // A permit kept for a member not waiting (busy, or asleep: it waits when woken).
        self.wanted_changed.notify_one();
    }
}

/// A replicated queue's members as the management API shows them (RabbitMQ's `leader`,
/// `members`, `online`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub leader: Option<String>,
    pub members: Vec<String>,
    /// The members this node reaches (itself included).
    pub online: Vec<String>,
}

/// The policies applied to a queue and its arguments with them.
struct QueuePolicies {
    applied: Applied,
    effective: Arc<QueueArgs>,
}

/// `effective`, as `declared` if no policy changed them (one copy of both).
fn shared_args(declared: &Arc<QueueArgs>, effective: QueueArgs) -> Arc<QueueArgs> {
    match effective == **declared {
        true => declared.clone(),
        false => Arc::new(effective),
    }
}

/// How many commands may wait in a queue's inbox before senders (publishers) wait.
pub(crate) const INBOX: usize = 8192;

impl QueueHandle {
    fn new(spec: QueueSpec, tx: impl Into<Inbox>) -> Self {
        let args = Arc::new(spec.args);
        let effective = shared_args(
            &args,
            resolve::queue_args(
                &spec.arguments,
                &args,
                &spec.policies.effective_definition(),
            ),
        );
        QueueHandle {
            name: spec.name.into(),
            storage_id: spec.storage_id,
            durable: spec.durable,
            exclusive_owner: spec.exclusive_owner,
            auto_delete: spec.auto_delete,
            arguments: spec.arguments,
            args,
            may_reject_publish: AtomicBool::new(effective.may_reject_publish()),
            policies: Mutex::new(QueuePolicies {
                applied: spec.policies,
                effective,
            }),
            tx: tx.into(),
            deleted: Default::default(),
            incarnation: spec.incarnation,
            home: spec.home.map(Arc::from),
            members: Mutex::new(spec.members),
            home_up: AtomicBool::new(true),
            forwards: false,
            replicated: false,
            replica: std::sync::OnceLock::new(),
            counts: std::sync::OnceLock::new(),
            rates: crate::stats::RateSampler::default(),
            membership: None,
            stream: false,
            stream_log: std::sync::OnceLock::new(),
        }
    }

    /// A replicated queue's members are now `members`: its member here is told (it leaves its
    /// group if this node is not among them). True if this handle still serves the queue (a
    /// member that stays); false if the vhost must start another in its place (a proxy, or a
    /// member that leaves).
    pub fn set_members(&self, members: &[String]) -> bool {
        *self.members.lock().unwrap_or_else(|e| e.into_inner()) = Some(members.to_vec());
        let Some(control) = &self.membership else {
            return false;
        };
        control.news.want(members);
        self.wake();
        members.iter().any(|m| **m == *control.node)
    }

    /// The cluster's metadata deleted the queue: a member here that has not seen its group's
    /// delete stops and lets go of its log (see [`MemberNews::dropped`]).
    /// Whether it was such a member.
    pub fn drop_member(&self) -> bool {
        match &self.membership {
            Some(control) => {
                control.news.dropped.notify_one();
                self.wake();
                true
            }
            None => false,
        }
    }

    /// A quorum queue's members once changed (None: as chosen at its declare).
    pub fn members(&self) -> Option<Vec<String>> {
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The queue as declared, with `members` as its members.
    pub fn definition(&self, members: Option<Vec<String>>) -> crate::definitions::QueueDefinition {
        crate::definitions::QueueDefinition {
            name: self.name.to_string(),
            storage_id: self.storage_id,
            durable: self.durable,
            exclusive_owner: self.exclusive_owner,
            auto_delete: self.auto_delete,
            arguments: self.arguments.clone(),
            home: self.home.as_deref().map(str::to_owned),
            incarnation: self.incarnation,
            members,
        }
    }

    fn policies(&self) -> std::sync::MutexGuard<'_, QueuePolicies> {
        self.policies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The policies that apply to the queue.
    pub fn applied_policies(&self) -> Applied {
        self.policies().applied.clone()
    }

    /// What the queue acts on: its arguments with its policies applied.
    pub fn effective_args(&self) -> QueueArgs {
        (*self.policies().effective).clone()
    }

    /// Whether it is a proxy of a queue on another node (which logs what it is sent there).
    pub fn forwards(&self) -> bool {
        self.forwards
    }

    /// A replicated queue's members, as this node sees them (None for other queues, and until
    /// its group has started here).
    pub fn replica_status(&self) -> Option<ReplicaStatus> {
        let group = self.replica.get()?;
        let members = group.members();
        Some(ReplicaStatus {
            leader: group.leader(),
            online: members
                .iter()
                .filter(|m| m.reachable)
                .map(|m| m.name.clone())
                .collect(),
            members: members.into_iter().map(|m| m.name).collect(),
        })
    }

    /// Hands a replicated queue's leadership to its member on `node` and waits (at most
    /// `within`) until it leads; false if it did not, or the queue has no member here.
    pub async fn transfer_leadership(&self, node: &str, within: std::time::Duration) -> bool {
        let Some(group) = self.replica.get().cloned() else {
            return false;
        };
        group.transfer_leadership(node, within).await
    }

    /// A replicated queue's members with their logs, each asked of its node (None for other
    /// queues, and until its group has started here), as `rabbitmq-queues quorum_status`.
    pub async fn quorum_status(&self) -> Option<Vec<warren_cluster::group::MemberFigures>> {
        let group = self.replica.get()?.clone();
        Some(
            group
                .member_figures(std::time::Duration::from_secs(5))
                .await,
        )
    }

    /// Whether the queue makes messages durable somewhere other than this node's store (a
    /// proxy's home node, a quorum queue's group), so that it answers every confirm and a
    /// transaction's commit waits for it.
    pub fn answers_confirms(&self) -> bool {
        self.forwards || self.replicated || self.stream
    }

    /// Whether it is a stream (served from its own log; see [`stream`]), here or, for a proxy,
    /// on its home node: clients get a stream's rules on any node.
    pub fn is_stream(&self) -> bool {
        self.stream || (self.forwards && self.args.queue_type == args::QueueType::Stream)
    }

    /// A stream's offsets, segments and bytes on disk (None for other queues, and until its
    /// log is open).
    pub fn stream_figures(&self) -> Option<warren_storage::stream::StreamFigures> {
        self.stream_log.get().map(|r| r.figures())
    }

    /// A stream's log here, to read (None for other queues, and until its log is open).
    pub fn stream_reader(&self) -> Option<warren_storage::stream::StreamReader> {
        self.stream_log.get().cloned()
    }

    /// Whether a persistent message routed to it is written to this node's store for it (a
    /// durable queue's, not a stream's: streams keep messages in their own log).
    pub fn logs_in_store(&self) -> bool {
        self.storage_id.is_some() && !self.stream
    }

    /// Whether a publish may be refused, so that a confirm must wait for the queue's answer.
    pub fn may_reject_publish(&self) -> bool {
        self.answers_confirms() || self.may_reject_publish.load(Ordering::Acquire)
    }

    /// Applies the policies that now match the queue; the queue is told only if they changed.
    pub fn set_policies(&self, applied: Applied) {
        let mut current = self.policies();
        if current.applied == applied {
            return;
        }
        let effective = shared_args(
            &self.args,
            resolve::queue_args(&self.arguments, &self.args, &applied.effective_definition()),
        );
        self.may_reject_publish
            .store(effective.may_reject_publish(), Ordering::Release);
        *current = QueuePolicies { applied, effective };
        drop(current);
        self.send_now(QueueCommand::PoliciesChanged);
    }

    /// RabbitMQ's answer to a use of a queue whose node is down, if this one's is.
    pub fn check_reachable(&self, vhost: &str) -> Result<(), AmqpError> {
        if self.home_up.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(AmqpError::not_found(format!(
            "home node '{}' of durable queue '{}' in vhost '{vhost}' is down or inaccessible",
            self.home.as_deref().unwrap_or_default(),
            self.name
        )))
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Queues a command, waiting for room (back-pressure on publishers). Fails only when the
    /// queue is gone.
    pub async fn send(&self, cmd: QueueCommand) -> Result<(), QueueGone> {
        self.send_or_return(cmd).await.map_err(|_| QueueGone)
    }

    /// Sends a command; gives it back if the queue is gone.
    pub async fn send_or_return(&self, cmd: QueueCommand) -> Result<(), QueueCommand> {
        match &self.tx {
            Inbox::Open(tx) => tx.send(cmd).await.map_err(|e| e.0),
            Inbox::Waking(inbox) => match inbox.sender() {
                Some(tx) => tx.send(cmd).await.map_err(|e| e.0),
                None => Err(cmd),
            },
        }
    }

    /// Calls `send` with the queue's inbox, if it has one (a sleeping task woken).
    fn with_inbox(&self, send: impl FnOnce(&mpsc::Sender<QueueCommand>)) {
        match &self.tx {
            Inbox::Open(tx) => send(tx),
            Inbox::Waking(inbox) => {
                if let Some(tx) = inbox.sender() {
                    send(&tx)
                }
            }
        }
    }

    /// Wakes the queue's task if it sleeps (it has something to look at that came some other
    /// way than its inbox).
    fn wake(&self) {
        if let Inbox::Waking(inbox) = &self.tx {
            drop(inbox.sender());
        }
    }

    /// Hands a routed message to the queue (waiting for room). A confirm for a queue deleted
    /// since it was routed to is answered (ack), as RabbitMQ confirms a publish whose queue is
    /// deleted.
    pub async fn publish(
        &self,
        message: MessageRef,
        logged: Option<Enqueued>,
        confirm: Option<PublishConfirm>,
    ) {
        let sent = self
            .send_or_return(QueueCommand::Publish {
                message,
                logged,
                confirm,
            })
            .await;
        if let Err(QueueCommand::Publish {
            confirm: Some(confirm),
            ..
        }) = sent
        {
            confirm.answer(true);
        }
    }

    /// Queues a command without waiting: for settlements from connections that must not block.
    /// A full inbox falls back to a task that waits.
    pub fn send_now(&self, cmd: QueueCommand) {
        self.with_inbox(|tx| match tx.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        })
    }

    pub fn resume(&self) {
        self.with_inbox(|tx| {
            let _ = tx.try_send(QueueCommand::Resume);
        })
    }

    /// Sends a command and waits for its answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> QueueCommand,
    ) -> Result<T, QueueGone> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| QueueGone)
    }

    /// The queue's counts; `used` as for [`QueueCommand::Stats`]. A replicated queue's member
    /// answers a count that is not a use at once, from its copy.
    pub async fn stats(&self, used: bool) -> Result<QueueStats, QueueGone> {
        match self.counts.get() {
            Some(counts) if !used => {
                if self.is_deleted() {
                    return Err(QueueGone);
                }
                Ok(counts())
            }
            _ => self.ask(|reply| QueueCommand::Stats { used, reply }).await,
        }
    }

    /// Deletes the queue whatever it holds (its vhost or exclusive owner went away).
    pub async fn delete_unconditionally(&self) {
        let _ = self
            .ask(|reply| QueueCommand::Delete {
                if_unused: false,
                if_empty: false,
                reply,
            })
            .await;
    }

    pub fn is_exclusive(&self) -> bool {
        self.exclusive_owner.is_some()
    }

    pub fn is_durable_on_disk(&self) -> bool {
        self.storage_id.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("queue deleted")]
pub struct QueueGone;

/// Everything needed to create a queue.
pub struct QueueSpec {
    pub name: String,
    pub args: QueueArgs,
    pub storage_id: Option<u64>,
    pub durable: bool,
    pub exclusive_owner: Option<ConnectionId>,
    pub auto_delete: bool,
    pub arguments: Arc<FieldTable>,
    /// Body bytes of ready messages a durable queue keeps in memory; persistent messages beyond
    /// it are paged out to the store and read back when they near the head.
    pub memory_limit: u64,
    /// The policies that apply to it.
    pub policies: Applied,
    /// Which declare of its name it is, in a cluster (see `QueueDefinition::incarnation`).
    pub incarnation: u64,
    /// The node it lives on, in a cluster.
    pub home: Option<String>,
    /// A quorum queue's members once changed (see `QueueDefinition::members`).
    pub members: Option<Vec<String>>,
}
