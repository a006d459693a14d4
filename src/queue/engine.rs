//! The queue owner task: ready messages in order (by priority level when the queue has
//! priorities), deliveries awaiting settlement, consumers served by priority and round-robin
//! within their prefetch (or one at a time with single active consumer), and everything that
//! removes messages on its own: TTL, length limits, delivery limits, dead-lettering. It also owns
//! the queue's lifetime (auto-delete, `x-expires`, delete). It drains its inbox in batches and
//! dispatches once per batch.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use warren_amqp::{AmqpError, PropertiesView};
use warren_storage::{MessageParts, RememberedId};
use warren_storage::{Op, Store};

use super::args::Dedup;
use super::dead_letter::{self, Reason};
use super::dedup::{self, DedupCache};
use super::ready::{Entry, Ready, Slot};
use super::{
    ConnEvent, Consumer, Delivery, GetReply, Overflow, PublishConfirm, QueueArgs, QueueCommand,
    QueueHandle, QueueSpec, QueueStats,
};
use crate::exchange::LazyHeaders;
use crate::message::{self, Message, MessageRef};
use crate::vhost::Vhost;

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
    store: Store,
    /// The queue's id in the store, for durable queues.
    storage_id: Option<u64>,
    /// Storage ids settled during the current batch, written once per batch.
    removed: Vec<u64>,
    /// Transient messages' paged-out copies no longer needed, removed once per batch.
    removed_shadow: Vec<u64>,
    /// The highest storage id handed to a consumer, and the highest already recorded.
    delivered_through: u64,
    delivered_recorded: u64,
    ready: Ready,
    outstanding: HashMap<u64, Outstanding>,
    /// In registration order (the first is the single active consumer when that is on).
    consumers: Vec<ActiveConsumer>,
    next_consumer: usize,
    next_id: u64,
    had_consumer: bool,
    /// The queue's clock for TTLs: milliseconds since `epoch` (re-based before it overflows).
    epoch: Instant,
    /// Last use (consume, get, declare) for `x-expires`.
    last_used: Instant,
    /// `x-message-deduplication`.
    dedup: Option<DedupCache>,
    /// Body bytes of ready messages kept in memory (durable queues; `u64::MAX` otherwise).
    memory_limit: u64,
    /// Entries to page out once the store has their message, oldest first.
    page_out: VecDeque<PageOut>,
    /// When reading paged-out messages failed: try again then.
    retry_at: Option<Instant>,
}

/// How many entries near the head are read back together when the head is paged out.
const PAGE_IN_WINDOW: usize = 256;

/// Messages waiting to be paged out beyond which the queue waits for the disk.
const PAGE_OUT_BACKLOG: usize = 2048;

/// While messages wait to be paged out, the queue looks at the store's progress this often even
/// when idle.
const PAGE_OUT_POLL: Duration = Duration::from_millis(20);

/// An entry to page out once the commit that stores its message is through.
struct PageOut {
    /// Writes queued when it was published.
    queued: u64,
    entry: u64,
    level: usize,
    /// The id of a transient message's copy.
    copy: Option<u64>,
}

/// A message a durable queue held on disk at start-up.
pub struct RecoveredMessage {
    slot: Slot,
    expiration_ms: Option<u32>,
    redelivered: bool,
}

/// Gathers a durable queue's stored messages at start-up: in memory up to the queue's memory
/// limit, paged out (only their index kept) beyond it.
pub struct Recovery {
    memory_limit: u64,
    loaded_bytes: u64,
    messages: Vec<RecoveredMessage>,
    /// With deduplication: the header ids are read from (None: `message-id`), the ids the store
    /// remembered, and those of the messages still in the queue.
    dedup: Option<(Option<String>, Vec<RememberedId>)>,
    dedup_keys: Vec<Vec<u8>>,
}

impl Recovery {
    pub fn new(memory_limit: u64) -> Self {
        Recovery {
            memory_limit,
            loaded_bytes: 0,
            messages: Vec::new(),
            dedup: None,
            dedup_keys: Vec::new(),
        }
    }

    /// For a deduplicating queue: the ids it remembered (see `DedupCache::restore`).
    pub fn with_dedup(mut self, settings: &Dedup, remembered: Vec<RememberedId>) -> Self {
        self.dedup = Some((settings.header.clone(), remembered));
        self
    }

    pub fn push(&mut self, storage_id: u64, redelivered: bool, parts: MessageParts<'_>) {
        if let Some((header, _)) = &self.dedup {
            let view = PropertiesView::parse(parts.properties).unwrap_or_default();
            self.dedup_keys
                .extend(dedup::key_of(header.as_deref(), &view));
        }
        let len = parts.body.len() as u64;
        let (slot, expiration_ms) = if self.loaded_bytes + len <= self.memory_limit {
            self.loaded_bytes += len;
            let m = Message::from_stored(parts, Some(storage_id));
            let expiration = m.expiration_ms();
            (Slot::Loaded(m), expiration)
        } else {
            let view = PropertiesView::parse(parts.properties).unwrap_or_default();
            let slot = Slot::Paged {
                storage_id,
                body_len: len as u32,
                priority: view.priority.unwrap_or(0),
                transient: false,
            };
            (slot, message::expiration_ms(&view))
        };
        self.messages.push(RecoveredMessage {
            slot,
            expiration_ms,
            redelivered,
        });
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// Creates a queue and starts its owner task. `recovered` holds the messages a durable queue had
/// on disk, in order.
pub fn spawn(
    spec: QueueSpec,
    vhost: Weak<Vhost>,
    store: &Store,
    recovered: Option<Recovery>,
) -> Arc<QueueHandle> {
    let (tx, rx) = mpsc::channel(super::INBOX);
    let storage_id = spec.storage_id;
    let max_priority = spec.args.max_priority;
    let handle = Arc::new(QueueHandle {
        name: spec.name.into(),
        storage_id,
        durable: spec.durable,
        exclusive_owner: spec.exclusive_owner,
        auto_delete: spec.auto_delete,
        arguments: spec.arguments,
        args: spec.args,
        tx,
        deleted: Default::default(),
    });
    let now = Instant::now();
    let mut state = QueueState {
        handle: handle.clone(),
        vhost,
        store: store.clone(),
        storage_id,
        removed: Vec::new(),
        removed_shadow: Vec::new(),
        delivered_through: 0,
        delivered_recorded: 0,
        ready: Ready::new(max_priority),
        outstanding: HashMap::new(),
        consumers: Vec::new(),
        next_consumer: 0,
        next_id: 0,
        had_consumer: false,
        epoch: now,
        last_used: now,
        dedup: handle
            .args
            .deduplication
            .as_ref()
            .map(|d| DedupCache::new(d, storage_id.is_some())),
        memory_limit: if storage_id.is_some() {
            spec.memory_limit
        } else {
            u64::MAX
        },
        page_out: VecDeque::new(),
        retry_at: None,
    };
    let recovered = recovered.unwrap_or_else(|| Recovery::new(0));
    if let (Some(cache), Some((_, remembered))) = (state.dedup.as_mut(), recovered.dedup) {
        // What the queue remembered, and the ids of the messages still in it (in case the
        // broker stopped before it wrote down what it remembered).
        let now = dedup::now_ms();
        cache.restore(remembered, now);
        for key in recovered.dedup_keys {
            cache.is_duplicate(key, now);
        }
    }
    for m in recovered.messages {
        // Recovered messages start their TTL afresh, as RabbitMQ's do.
        let entry = state.new_entry(m.slot, m.expiration_ms, m.redelivered);
        state.ready.push_back(entry);
    }
    tokio::spawn(state.run(rx));
    handle
}

enum Flow {
    Continue,
    Stop,
}

/// Re-base the TTL clock when it passes this many milliseconds (about 24 days).
const CLOCK_REBASE_AT: u32 = 1 << 31;

impl QueueState {
    fn args(&self) -> &QueueArgs {
        &self.handle.args
    }

    async fn run(mut self, mut rx: mpsc::Receiver<QueueCommand>) {
        let mut batch = Vec::with_capacity(256);
        loop {
            let wake = self.next_wakeup();
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
                    let mut stop = false;
                    for cmd in batch.drain(..) {
                        if let Flow::Stop = self.handle_command(cmd) {
                            stop = true;
                            break;
                        }
                    }
                    if stop {
                        break;
                    }
                }
                _ = timer => {}
            }
            if self.unused_too_long() {
                tracing::debug!(queue = %self.handle.name, "queue expired (x-expires)");
                self.delete();
                break;
            }
            self.expire();
            self.dispatch();
            self.write_to_store();
            self.page_out_committed();
            if self.page_out.len() >= PAGE_OUT_BACKLOG {
                // Publishing faster than the disk takes the copies would only move the backlog
                // into the writer's queue: wait for the disk (publishers wait on this queue).
                let _ = self.store.sync().await;
                self.page_out_committed();
            }
            if self.handle.is_deleted() {
                break;
            }
        }
        self.write_to_store();
        self.handle.mark_deleted();
        tracing::debug!(queue = %self.handle.name, "queue task stopped");
    }

    /// Milliseconds on the queue's TTL clock (never 0, which means "no expiry").
    fn now_ms(&mut self) -> u32 {
        let mut ms = self.epoch.elapsed().as_millis();
        if ms >= u128::from(CLOCK_REBASE_AT) {
            let by = CLOCK_REBASE_AT / 2;
            self.epoch += Duration::from_millis(u64::from(by));
            self.ready.rebase(by);
            for o in self.outstanding.values_mut() {
                o.entry.expires_at = o.entry.expires_at.saturating_sub(by).max(1);
            }
            ms = self.epoch.elapsed().as_millis();
        }
        (ms as u32).max(1)
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let expiry = self
            .ready
            .next_expiry()
            .map(|ms| self.epoch + Duration::from_millis(u64::from(ms)));
        let unused = self.expires_at();
        let paging = (!self.page_out.is_empty()).then(|| Instant::now() + PAGE_OUT_POLL);
        [expiry, unused, paging, self.retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// When `x-expires` deletes the queue, if it stays unused.
    fn expires_at(&self) -> Option<Instant> {
        let ms = self.args().expires?;
        self.consumers
            .is_empty()
            .then(|| self.last_used + Duration::from_millis(ms))
    }

    fn unused_too_long(&self) -> bool {
        self.expires_at().is_some_and(|at| Instant::now() >= at)
    }

    fn new_entry(&mut self, slot: Slot, expiration_ms: Option<u32>, redelivered: bool) -> Entry {
        let ttl = match (self.args().message_ttl, expiration_ms) {
            (Some(q), Some(m)) => Some(q.min(u64::from(m))),
            (q, m) => q.or(m.map(u64::from)),
        };
        let expires_at = match ttl {
            // TTL 0 expires at once unless a consumer can take it right away (see `publish`).
            Some(ttl) => self
                .now_ms()
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

    /// The storage id of a message if this queue keeps it on disk.
    fn on_disk(&self, message: &MessageRef) -> Option<u64> {
        self.storage_id.and(message.storage_id())
    }

    /// The storage id of an entry's message if this queue keeps it on disk as persistent.
    fn entry_on_disk(&self, entry: &Entry) -> Option<u64> {
        let (id, transient) = entry.stored_as()?;
        self.storage_id.and((!transient).then_some(id))
    }

    /// An entry leaves the queue for good: its copy on disk (if any) goes at the next write.
    fn forget_disk_copy(&mut self, entry: &Entry) {
        if self.storage_id.is_none() {
            return;
        }
        match entry.stored_as() {
            Some((id, false)) => self.removed.push(id),
            Some((id, true)) => self.removed_shadow.push(id),
            None => {}
        }
    }

    /// Pages out the entries whose messages the store now has, while the queue is over its
    /// memory limit. An entry whose write may have been in a failed commit stays in memory.
    fn page_out_committed(&mut self) {
        if self.page_out.is_empty() {
            return;
        }
        let committed = self.store.committed();
        while let Some(p) = self.page_out.front() {
            if p.queued > committed {
                break;
            }
            let Some(p) = self.page_out.pop_front() else {
                break;
            };
            let stored_as = p.copy.or_else(|| self.ready.stored_id(p.level, p.entry));
            let written = stored_as.is_some_and(|id| !self.store.write_failed(id));
            if !(written && self.ready.page_out(p.level, p.entry, p.copy)) {
                // Kept in memory (or delivered, or gone): a transient message's copy is not needed.
                self.removed_shadow.extend(p.copy);
            }
        }
    }

    /// Reads paged-out messages back from the store: (storage id, transient) pairs.
    fn read_paged(&self, ids: &[(u64, bool)]) -> Option<HashMap<u64, MessageRef>> {
        let queue = self.storage_id?;
        let mut read = HashMap::with_capacity(ids.len());
        let (transient, persistent): (Vec<_>, Vec<_>) = ids.iter().partition(|(_, t)| *t);
        let persistent: Vec<u64> = persistent.into_iter().map(|(id, _)| id).collect();
        let transient: Vec<u64> = transient.into_iter().map(|(id, _)| id).collect();
        let mut result = self
            .store
            .read_queue_messages(queue, &persistent, |sid, parts| {
                read.insert(sid, Message::from_stored(parts, Some(sid)));
            });
        if result.is_ok() && !transient.is_empty() {
            let shadow = warren_storage::shadow_queue(queue);
            result = self
                .store
                .read_queue_messages(shadow, &transient, |sid, parts| {
                    read.insert(sid, Message::from_stored(parts, None));
                });
        }
        match result {
            Ok(()) => Some(read),
            Err(e) => {
                tracing::warn!(queue = %self.handle.name, "cannot read paged-out messages, will retry: {e}");
                None
            }
        }
    }

    /// Makes the head of the queue deliverable: expired heads leave (dead-lettered), a paged-out
    /// head is read back with the entries behind it. False when nothing is ready, or when the
    /// store cannot be read right now (retried shortly).
    fn prepare_head(&mut self) -> bool {
        loop {
            let Some(head) = self.ready.head() else {
                return false;
            };
            let (expires_at, paged) = (head.expires_at, head.is_paged());
            // Still deliverable in the millisecond it expires: a TTL of 0 means "now or never",
            // and a consumer that can take it now gets it (the batch's `expire` drops it
            // otherwise).
            if expires_at != 0 && expires_at < self.now_ms() {
                if let Some(entry) = self.ready.pop_front() {
                    self.dead_letter(entry, Reason::Expired);
                }
                continue;
            }
            if !paged {
                self.retry_at = None;
                return true;
            }
            let Some((level, ids)) = self.ready.paged_head(PAGE_IN_WINDOW) else {
                return true;
            };
            let Some(read) = self.read_paged(&ids) else {
                self.retry_at = Some(Instant::now() + Duration::from_millis(500));
                return false;
            };
            // Transient messages back in memory need their copies no more.
            for (sid, _) in ids.iter().filter(|(sid, t)| *t && read.contains_key(sid)) {
                self.removed_shadow.push(*sid);
            }
            for lost in self.ready.page_in(level, PAGE_IN_WINDOW, read) {
                // Only a message whose commit failed (and was nacked) can be missing.
                tracing::warn!(queue = %self.handle.name, "paged-out message missing from the store; dropped");
                self.forget_disk_copy(&lost);
            }
        }
    }

    /// An entry's message, read back from the store if it is paged out.
    fn load(&self, entry: &Entry) -> Option<MessageRef> {
        match &entry.slot {
            Slot::Loaded(m) => Some(m.clone()),
            Slot::Paged {
                storage_id,
                transient,
                ..
            } => self
                .read_paged(&[(*storage_id, *transient)])?
                .remove(storage_id),
        }
    }

    /// Writes what this batch settled and delivered (no waiting: acks need no fsync of their own).
    fn write_to_store(&mut self) {
        let Some(queue) = self.storage_id else { return };
        if self.delivered_through > self.delivered_recorded {
            self.delivered_recorded = self.delivered_through;
            self.store.submit(
                Op::MarkDelivered {
                    queue,
                    through: self.delivered_through,
                },
                None,
            );
        }
        if !self.removed.is_empty() {
            let messages = std::mem::take(&mut self.removed);
            self.store.submit(Op::Remove { queue, messages }, None);
        }
        if !self.removed_shadow.is_empty() {
            let messages = std::mem::take(&mut self.removed_shadow);
            let queue = warren_storage::shadow_queue(queue);
            self.store.submit(Op::Remove { queue, messages }, None);
        }
        if let Some(cache) = self.dedup.as_mut() {
            for op in cache.take_writes(&dedup::queue_owner(queue)) {
                self.store.submit(op, None);
            }
        }
    }

    fn handle_command(&mut self, cmd: QueueCommand) -> Flow {
        // A channel's methods take effect in the order they were sent: messages published before
        // a get, a cancel, a consume or a count reach the consumers that could take them first,
        // as they would have in RabbitMQ (the batch's own dispatch comes only at its end).
        if !matches!(
            cmd,
            QueueCommand::Publish { .. }
                | QueueCommand::Ack(_)
                | QueueCommand::Reject(_)
                | QueueCommand::Requeue(_)
                | QueueCommand::Resume
        ) {
            self.dispatch();
        }
        match cmd {
            QueueCommand::Publish { message, confirm } => self.publish(message, confirm),
            QueueCommand::Consume(consumer, reply) => {
                self.last_used = Instant::now();
                let _ = reply.send(self.add_consumer(consumer));
            }
            QueueCommand::Cancel { consumer_id, done } => {
                let flow = self.remove_consumer(consumer_id);
                let _ = done.send(());
                return flow;
            }
            QueueCommand::Get { no_ack, reply } => {
                self.last_used = Instant::now();
                self.expire();
                let mut got = None;
                if self.prepare_head() {
                    if let Some(entry) = self.ready.pop_front() {
                        // Messages behind it that expired leave now, so the count is what remains.
                        self.expire();
                        if let Some(message) = entry.message().cloned() {
                            got = Some(GetReply {
                                id: entry.id,
                                message,
                                redelivered: entry.redelivered,
                                remaining: self.ready.len() as u32,
                            });
                            self.handed_out(entry, no_ack, None);
                        }
                    }
                }
                let _ = reply.send(got);
            }
            QueueCommand::Ack(ids) => {
                for id in ids {
                    if let Some(o) = self.outstanding.remove(&id) {
                        self.settled(o.consumer);
                        self.forget_disk_copy(&o.entry);
                    }
                }
            }
            QueueCommand::Reject(ids) => {
                for id in ids {
                    if let Some(o) = self.outstanding.remove(&id) {
                        self.settled(o.consumer);
                        self.dead_letter(o.entry, Reason::Rejected);
                    }
                }
            }
            QueueCommand::Requeue(ids) => self.requeue(ids),
            QueueCommand::Purge(reply) => {
                let n = self.ready.len() as u32;
                for entry in self.ready.drain() {
                    self.forget_disk_copy(&entry);
                }
                for p in self.page_out.drain(..) {
                    self.removed_shadow.extend(p.copy);
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
            QueueCommand::Stats { used, reply } => {
                if used {
                    self.last_used = Instant::now();
                    self.expire();
                }
                let _ = reply.send(QueueStats {
                    ready: self.ready.len() as u32,
                    unacked: self.outstanding.len() as u32,
                    consumers: self.consumers.len() as u32,
                });
            }
            QueueCommand::Resume => {}
        }
        Flow::Continue
    }

    fn publish(&mut self, message: MessageRef, confirm: Option<PublishConfirm>) {
        if let Some(cache) = self.dedup.as_mut() {
            if let Some(key) = cache.key_of(&message.properties_view()) {
                if cache.is_duplicate(key, dedup::now_ms()) {
                    // Dropped, but confirmed: the publisher's message is (already) here.
                    answer(confirm, true);
                    if let Some(sid) = self.on_disk(&message) {
                        self.removed.push(sid);
                    }
                    return;
                }
            }
        }
        let args = self.args();
        let over_length = args
            .max_length
            .is_some_and(|max| self.ready.len() as u64 >= max);
        let over_bytes = args
            .max_length_bytes
            .is_some_and(|max| self.ready.bytes() + message.body().len() as u64 > max);
        let overflow = args.overflow;
        let ttl_zero = args.message_ttl == Some(0) || message.expiration_ms() == Some(0);
        if (over_length || over_bytes) && overflow != Overflow::DropHead {
            // Refused: nacked to a confirming publisher, dead-lettered with reject-publish-dlx.
            answer(confirm, false);
            if overflow == Overflow::RejectPublishDlx {
                let expiration = message.expiration_ms();
                let entry = self.new_entry(Slot::Loaded(message), expiration, false);
                self.dead_letter(entry, Reason::MaxLen);
            } else if let Some(sid) = self.on_disk(&message) {
                self.removed.push(sid);
            }
            return;
        }
        answer(confirm, true);
        // Over the memory limit, a message is paged out as soon as the store has it: a
        // persistent one is stored already, a transient one gets a copy under the shadow key.
        let page_out = self.storage_id.is_some()
            && self.ready.loaded_bytes() + message.body().len() as u64 > self.memory_limit;
        let copy = match self.storage_id {
            Some(queue) if page_out && self.on_disk(&message).is_none() => {
                let id = self.store.next_message_id();
                let op = Op::PutMessage {
                    id,
                    data: message.to_stored(),
                    queues: vec![warren_storage::shadow_queue(queue)],
                };
                self.store.submit(op, None);
                Some(id)
            }
            _ => None,
        };
        let level = self.ready.level_of(message.priority);
        let expiration = message.expiration_ms();
        let entry = self.new_entry(Slot::Loaded(message), expiration, false);
        if page_out {
            self.page_out.push_back(PageOut {
                queued: self.store.submitted(),
                entry: entry.id,
                level,
                copy,
            });
        }
        self.ready.push_back(entry);
        self.enforce_limits();
        if ttl_zero {
            // A zero TTL means "deliver now or never": hand it out before it expires.
            self.dispatch();
        }
    }

    /// Drops (dead-letters) messages from the head until the queue is within its limits.
    fn enforce_limits(&mut self) {
        loop {
            let args = self.args();
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
            self.dead_letter(head, Reason::MaxLen);
        }
    }

    /// Removes expired messages from the heads of the queue.
    fn expire(&mut self) {
        if self.ready.next_expiry().is_none() {
            return;
        }
        let now = self.now_ms();
        while let Some(entry) = self.ready.pop_expired(now) {
            self.dead_letter(entry, Reason::Expired);
        }
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
        if self.consumers.len() < before {
            self.last_used = Instant::now();
            if self.consumers.is_empty() && self.handle.auto_delete && self.had_consumer {
                tracing::debug!(queue = %self.handle.name, "auto-deleting queue after its last consumer");
                self.delete();
                return Flow::Stop;
            }
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
        let limit = self.args().delivery_limit;
        for id in ids.into_iter().rev() {
            if let Some(o) = self.outstanding.remove(&id) {
                self.settled(o.consumer);
                let mut entry = o.entry;
                entry.redelivered = true;
                entry.returns = entry.returns.saturating_add(1);
                if limit.is_some_and(|limit| u64::from(entry.returns) > limit) {
                    self.dead_letter(entry, Reason::DeliveryLimit);
                    continue;
                }
                // Back to its original position.
                self.ready.insert_sorted(entry);
            }
        }
        // Requeued messages count towards the length limits too: with drop-head, RabbitMQ drops
        // from the head (a queue that refuses publishes keeps what comes back).
        if self.args().overflow == Overflow::DropHead {
            self.enforce_limits();
        }
    }

    /// A message leaves the queue for good (rejected, expired, over a limit): it goes to the
    /// dead-letter exchange if the queue has one, and is dropped otherwise.
    fn dead_letter(&mut self, entry: Entry, reason: Reason) {
        self.forget_disk_copy(&entry);
        let Some(dlx) = self.args().dead_letter_exchange.clone() else {
            return;
        };
        let Some(vhost) = self.vhost.upgrade() else {
            return;
        };
        let Some(message) = self.load(&entry) else {
            tracing::warn!(queue = %self.handle.name, "cannot read a paged-out message to dead-letter it; dropped");
            return;
        };
        let m = &message;
        let original_key = String::from_utf8_lossy(m.routing_key()).into_owned();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let exchange = String::from_utf8_lossy(m.exchange()).into_owned();
        let Some(dead) = dead_letter::dead_letter(
            m.properties(),
            reason,
            &self.handle.name,
            &exchange,
            &original_key,
            self.args().dead_letter_routing_key.as_deref(),
            now,
        ) else {
            tracing::warn!(queue = %self.handle.name, "cannot decode the properties of a dead-lettered message; dropped");
            return;
        };
        let properties = dead.properties;
        let view = PropertiesView::parse(&properties).unwrap_or_default();
        let headers = LazyHeaders::new(view.headers);
        let keys: Vec<&str> = dead.routing_keys.iter().map(String::as_str).collect();
        let mut targets = Vec::new();
        if let Err(e) = vhost.route(&dlx, &keys, &headers, &mut targets) {
            tracing::debug!(queue = %self.handle.name, "dead-letter exchange unusable, message dropped: {}", e.reply_text());
            return;
        }
        targets.retain(|q| !dead_letter::is_cycle(Some(headers.get()), reason, &q.name));
        if targets.is_empty() {
            return;
        }
        let durable: Vec<u64> = if m.persistent {
            targets.iter().filter_map(|q| q.storage_id).collect()
        } else {
            Vec::new()
        };
        let storage_id = (!durable.is_empty()).then(|| self.store.next_message_id());
        // Delivered with the dead-letter routing key if the queue has one, else its own.
        let routing_key = keys.first().copied().unwrap_or(original_key.as_str());
        let message = Message::from_parts(
            dlx.as_bytes(),
            routing_key.as_bytes(),
            &properties,
            m.body_bytes(),
            storage_id,
        );
        if let Some(id) = storage_id {
            self.store.submit(
                Op::PutMessage {
                    id,
                    data: message.to_stored(),
                    queues: durable,
                },
                None,
            );
        }
        for q in targets {
            q.send_now(QueueCommand::Publish {
                message: message.clone(),
                confirm: None,
            });
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
        self.ready.drain();
        self.outstanding.clear();
        self.removed.clear();
        self.page_out.clear();
        if let Some(id) = self.storage_id {
            let op = Op::DeleteQueue {
                vhost: self.vhost_name(),
                name: self.handle.name.to_string(),
                id,
            };
            self.store.submit(op, None);
            if let Some(cache) = self.dedup.as_mut() {
                cache.take_writes("");
                let owner = dedup::queue_owner(id);
                self.store.submit(Op::ForgetAllIds { owner }, None);
            }
        }
        if let Some(vhost) = self.vhost.upgrade() {
            vhost.forget_queue(&self.handle);
        }
    }

    /// A message leaves the ready list for a client: forgotten at once with no-ack, otherwise
    /// held until settled.
    fn handed_out(&mut self, entry: Entry, no_ack: bool, consumer: Option<u64>) {
        let on_disk = self.entry_on_disk(&entry);
        if no_ack {
            self.removed.extend(on_disk);
        } else {
            self.delivered_through = self.delivered_through.max(on_disk.unwrap_or(0));
            self.outstanding
                .insert(entry.id, Outstanding { entry, consumer });
        }
    }

    /// Hands ready messages to consumers as far as their credit allows: highest consumer
    /// priority first, round-robin among equals; only the first consumer with single active
    /// consumer.
    fn dispatch(&mut self) {
        while self.prepare_head() {
            let Some(i) = self.pick_consumer() else { break };
            let Some(entry) = self.ready.pop_front() else {
                break;
            };
            // `prepare_head` made the head an unexpired message in memory.
            let Some(message) = entry.message().cloned() else {
                self.ready.insert_sorted(entry);
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
                message,
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
                self.ready.insert_sorted(entry);
                if let Flow::Stop = self.remove_consumer(cid) {
                    return;
                }
                continue;
            }
            let consumer = (!no_ack).then_some(c.spec.id);
            if !no_ack {
                c.unacked += 1;
            }
            self.handed_out(entry, no_ack, consumer);
        }
    }

    /// The consumer to deliver the next message to, with one unit of its channel's credit taken.
    fn pick_consumer(&mut self) -> Option<usize> {
        let n = self.consumers.len();
        let candidates = if self.args().single_active_consumer {
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
                if !self.has_credit(i) {
                    continue;
                }
                if best.is_none_or(|b| {
                    self.consumers[i].spec.priority > self.consumers[b].spec.priority
                }) {
                    best = Some(i);
                }
            }
            let i = best?;
            let c = &self.consumers[i];
            // Channel-wide credit is shared with other queues: taking it can still fail.
            if c.spec.no_ack || c.spec.channel_flow.try_take() {
                self.next_consumer = (i + 1) % n;
                return Some(i);
            }
        }
    }

    fn has_credit(&self, i: usize) -> bool {
        let c = &self.consumers[i];
        if !c.spec.connection_flow.has_room() {
            c.spec.connection_flow.wait(&self.handle);
            return false;
        }
        // A no-ack consumer takes no credit, but a channel whose channel-wide limit is used up
        // (basic.qos global) sends nothing, to it either (RabbitMQ's limiter blocks the channel).
        if c.spec.no_ack {
            return c.spec.channel_flow.has_room();
        }
        if c.spec.prefetch != 0 && c.unacked >= c.spec.prefetch {
            return false;
        }
        c.spec.channel_flow.has_room()
    }
}

/// Tells a confirming publisher whether the queue took its message.
fn answer(confirm: Option<PublishConfirm>, ok: bool) {
    if let Some(c) = confirm {
        let _ = c.events.send(ConnEvent::Settled {
            channel: c.channel,
            seq: c.seq,
            ok,
        });
    }
}
