//! Stream queues (`x-queue-type: stream`): an append-only log that every consumer reads from an
//! offset of its choosing, as RabbitMQ's streams serve AMQP 0-9-1 clients. Messages are kept
//! until retention (`x-max-length-bytes`, `x-max-age`) drops the oldest segments, never because
//! they were consumed: an ack only gives the consumer credit.
//!
//! One task per stream (the owner, below) takes publishes in batches, hands each batch to a
//! blocking thread that appends it to the log ([`warren_storage::stream`]) and fsyncs, then
//! confirms it and offers it to consumers. A consumer at the end of the stream is served from
//! the recent messages kept in memory ([`TAIL_BYTES`]); one further back reads ahead from disk,
//! on a blocking thread, a bounded batch at a time, so an old reader never holds up publishers.
//! Each message carries its offset in an `x-stream-offset` header, set once when it is
//! appended.

mod ahead;
pub mod offset;
pub mod replicated;

pub use ahead::read_ahead_bytes;
pub use replicated::read_for_replica;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use warren_amqp::types::FieldTable;
use warren_amqp::{AmqpError, PropertiesView};
use warren_storage::stream::{EntryBatch, StreamError, StreamFigures, StreamLog, StreamReader};
use warren_storage::{MessageParts, Store, StoredMessage};

use super::args::StreamArgs;
use super::dedup::{self, DedupCache};
use super::host::QueueHost;
use super::owner::IdHash;
use super::{ConsumerOutbox, PublishConfirm, QueueCommand, QueueHandle, QueueSpec, QueueStats};
use crate::message::{Message, MessageRef};
pub use offset::StreamStart;

/// Recent messages kept in memory for the consumers that follow the end of the stream.
const TAIL_BYTES: u64 = 8 * 1024 * 1024;
const TAIL_MESSAGES: usize = 16 * 1024;
/// The tails of all streams together keep at most this much (beyond it each stream keeps no
/// more than it just appended): many streams do not add up to a backlog in memory.
const ALL_TAILS_BYTES: u64 = 128 * 1024 * 1024;
static ALL_TAILS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// What one append takes at most (the rest waits for the next).
const APPEND_MESSAGES: usize = 4096;
const APPEND_BYTES: usize = 16 * 1024 * 1024;
/// The most bytes of publishes a stream holds before its append (or, replicated, before its
/// group applies them): beyond it, publishers wait.
const HELD_MAX_BYTES: usize = 32 * 1024 * 1024;
/// How often age-based retention is looked at when nothing is appended.
const RETENTION_EVERY: Duration = Duration::from_secs(1);

/// Creates a stream queue and starts its task; its log is opened (and checked) by the task, so
/// commands wait in its inbox meanwhile.
pub fn spawn(spec: QueueSpec, host: Weak<dyn QueueHost>, store: &Store) -> Arc<QueueHandle> {
    let (tx, rx) = mpsc::channel(super::INBOX);
    let stored = spec.storage_id.map(|id| (store.clone(), id));
    let mut handle = QueueHandle::new(spec, tx);
    handle.stream = true;
    let handle = Arc::new(handle);
    let settings = Settings::of(&handle);
    let task_handle = handle.clone();
    tokio::spawn(async move {
        let Some((log, dedup)) = open_log(&task_handle, &settings, stored, true).await else {
            return;
        };
        let _ = task_handle.stream_log.set(log.reader());
        Owner::new(task_handle, host, settings, log, dedup)
            .run(rx)
            .await;
    });
    handle
}

/// Opens a stream's log (`stored`: the store and the queue's id in it), and (`remember`) the
/// cache of its deduplication if it has one, from its recent entries (on a blocking thread).
/// None if it cannot: the queue is marked deleted.
async fn open_log(
    handle: &QueueHandle,
    settings: &Settings,
    stored: Option<(Store, u64)>,
    remember: bool,
) -> Option<(StreamLog, Option<DedupCache>)> {
    let Some((store, id)) = stored else {
        tracing::error!(queue = %handle.name, "a stream needs a durable queue id");
        handle.mark_deleted();
        return None;
    };
    let max_segment = settings.max_segment_bytes;
    let dedup = handle.effective_args().deduplication.filter(|_| remember);
    let opened = tokio::task::spawn_blocking(move || {
        let log = store.open_stream(id, max_segment)?;
        let ids = dedup
            .map(|d| remembered_ids(&log.reader(), &d, dedup::now_ms()))
            .transpose()?;
        Ok::<_, StreamError>((log, ids))
    })
    .await;
    let error = match opened {
        Ok(Ok(opened)) => return Some(opened),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!(queue = %handle.name, "cannot open the stream's log: {error}");
    handle.mark_deleted();
    None
}

/// How many entries back from the end a deduplicating stream looks at start-up for the ids it
/// remembers, per id its cache holds: the cache keeps the last `x-cache-size` ids, and the
/// entries without one between them take no room in it.
const REMEMBERED_SPAN: u64 = 4;

/// The cache of a deduplicating stream that starts (the broker restarted): the ids of its
/// recent entries, each remembered from the time its chunk was appended, so that a publisher
/// that sends again what it published before the restart is deduplicated as before it. Only
/// what is durable in the stream counts (a publish that was lost may be sent again).
fn remembered_ids(
    reader: &StreamReader,
    settings: &super::args::Dedup,
    now: u64,
) -> Result<DedupCache, StreamError> {
    let mut cache = DedupCache::new(settings, false);
    let figures = reader.figures();
    let by_count = figures
        .end_offset
        .saturating_sub((settings.cache_size as u64).saturating_mul(REMEMBERED_SPAN));
    let by_age = match settings.ttl_ms {
        Some(ttl) => reader.offset_at(i64::try_from(now.saturating_sub(ttl)).unwrap_or(0))?,
        None => 0,
    };
    let mut from = by_count.max(by_age).max(figures.first_offset);
    while from < figures.end_offset {
        let mut ids = Vec::new();
        let end = reader.read_stamped(from, APPEND_MESSAGES, APPEND_BYTES, |_, at, entry| {
            let Ok(parts) = MessageParts::decode(entry) else {
                return;
            };
            let view = PropertiesView::parse(parts.properties).unwrap_or_default();
            if let Some(key) = cache.key_of(&view) {
                let at = u64::try_from(at).unwrap_or(0);
                ids.push((key, at, cache.expiry_of(at)));
            }
        })?;
        cache.restore(ids, now);
        if end.next <= from {
            break;
        }
        from = end.next;
    }
    Ok(cache)
}

/// What the stream acts on: its arguments with its policies applied.
#[derive(Debug, Clone, Copy)]
struct Settings {
    max_bytes: Option<u64>,
    max_age_ms: Option<u64>,
    max_segment_bytes: u64,
}

impl Settings {
    /// Its arguments with its policies: where both set one, the smaller wins (RabbitMQ's rule
    /// for `max-length-bytes`, `max-age` and `stream-max-segment-size-bytes`).
    fn of(handle: &QueueHandle) -> Settings {
        let own = StreamArgs::of(&handle.arguments);
        let policy = handle.applied_policies().effective_definition();
        let smaller = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let policy_age = policy
            .get("max-age")
            .and_then(|v| v.as_str())
            .and_then(super::args::parse_age);
        let policy_segment = policy
            .get("stream-max-segment-size-bytes")
            .and_then(|v| v.as_u64());
        Settings {
            max_bytes: handle.effective_args().max_length_bytes,
            max_age_ms: smaller(own.max_age_ms, policy_age),
            max_segment_bytes: smaller(own.max_segment_bytes, policy_segment)
                .unwrap_or(warren_storage::stream::DEFAULT_MAX_SEGMENT_BYTES),
        }
    }
}

/// A message of the tail: as published, and with its `x-stream-offset` header once a consumer
/// needed it (made once, whatever the number of consumers).
struct TailEntry {
    message: MessageRef,
    stamped: Option<MessageRef>,
}

impl TailEntry {
    fn stamped(&mut self, offset: u64) -> MessageRef {
        self.stamped
            .get_or_insert_with(|| with_offset(&self.message, offset))
            .clone()
    }
}

/// A publish waiting for its append.
struct Pending {
    message: MessageRef,
    confirm: Option<PublishConfirm>,
}

/// What the blocking threads report back.
enum Done {
    Appended {
        log: StreamLog,
        batch: EntryBatch,
        result: Result<(), StreamError>,
        first: u64,
        messages: Vec<MessageRef>,
        confirms: Vec<PublishConfirm>,
        syncs: Vec<oneshot::Sender<bool>>,
    },
    Read {
        /// The consumer's key.
        key: u64,
        result: Result<Vec<(u64, MessageRef)>, StreamError>,
        /// Its share of the read-ahead budget, given back once what it read is held (or
        /// dropped) here.
        reading: ahead::Reading,
    },
    Located {
        key: u64,
        offset: u64,
    },
    /// A replicated stream's fetch from another member's copy (see [`replicated`]).
    Fetched {
        from: u64,
        fetched: replicated::Fetched,
    },
    /// What was fetched is written (or not).
    Filled {
        log: StreamLog,
        ok: bool,
    },
}

/// Where a consumer is.
enum Position {
    /// Waiting for the offset of a timestamp to be looked up.
    Locating,
    /// The next offset it gets.
    At(u64),
}

struct StreamConsumer {
    /// Its id in the broker.
    id: u64,
    /// Deliveries made so far (the low 32 bits of their ids).
    delivered: u64,
    outbox: ConsumerOutbox,
    prefetch: u32,
    outstanding: u32,
    position: Position,
    /// Read ahead from disk, in order, not yet delivered.
    ahead: ahead::ReadAhead,
    reading: bool,
}

struct Owner {
    handle: Arc<QueueHandle>,
    host: Weak<dyn QueueHost>,
    settings: Settings,
    /// The log, unless a blocking thread is appending to it.
    log: Option<StreamLog>,
    /// What an append writes (reused; with the log while it appends).
    batch: EntryBatch,
    reader: StreamReader,
    /// The offset the next publish gets.
    next_offset: u64,
    figures: StreamFigures,
    /// Messages appended, delivered and acked so far, for the management API's rates.
    counts: super::QueueCounts,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    syncs: Vec<oneshot::Sender<bool>>,
    /// The newest durable messages: `tail[i]` is offset `tail_first + i`.
    tail: VecDeque<TailEntry>,
    tail_first: u64,
    tail_bytes: u64,
    /// By a key of the stream's own (a counter): a delivery's id is its consumer's key in the
    /// high 32 bits, so that settling finds the consumer without a map of deliveries.
    consumers: HashMap<u64, StreamConsumer, IdHash>,
    /// Consumer id (the broker's) → key.
    keys: HashMap<u64, u64, IdHash>,
    next_key: u64,
    /// Reused by each dispatch.
    serving: Vec<u64>,
    dedup: Option<DedupCache>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    deleted: bool,
    /// In a cluster: its group and what this member proposed (publishes are appended once the
    /// group applies them).
    replica: Option<replicated::Replica>,
}

impl Owner {
    fn new(
        handle: Arc<QueueHandle>,
        host: Weak<dyn QueueHost>,
        settings: Settings,
        log: StreamLog,
        dedup: Option<DedupCache>,
    ) -> Owner {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let figures = log.figures();
        Owner {
            reader: log.reader(),
            next_offset: log.next_offset(),
            tail_first: figures.end_offset,
            figures,
            counts: super::QueueCounts::default(),
            log: Some(log),
            batch: EntryBatch::default(),
            handle,
            host,
            settings,
            pending: VecDeque::new(),
            pending_bytes: 0,
            syncs: Vec::new(),
            tail: VecDeque::new(),
            tail_bytes: 0,
            consumers: HashMap::default(),
            keys: HashMap::default(),
            next_key: 1,
            serving: Vec::new(),
            dedup,
            done_tx,
            done_rx,
            deleted: false,
            replica: None,
        }
    }

    /// Whether the publishes taken so far are all appended (replicated: applied).
    fn settled(&self) -> bool {
        self.pending.is_empty()
            && match &self.replica {
                Some(replica) => replica.all_applied(),
                None => self.log.is_some(),
            }
    }

    /// Whether it takes more from its inbox.
    fn has_room(&self) -> bool {
        let sent = self.replica.as_ref().map_or(0, |r| r.sent_bytes);
        self.pending_bytes + sent < HELD_MAX_BYTES
    }

    async fn run(mut self, mut rx: mpsc::Receiver<QueueCommand>) {
        let mut batch = Vec::with_capacity(256);
        let mut retention = tokio::time::interval(RETENTION_EVERY);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.deleted && !self.handle.is_deleted() {
            tokio::select! {
                received = rx.recv_many(&mut batch, 256), if self.has_room() => {
                    if received == 0 {
                        break;
                    }
                    for cmd in batch.drain(..) {
                        self.handle(cmd);
                    }
                }
                Some(done) = self.done_rx.recv() => self.finished(done),
                _ = retention.tick(), if self.settings.max_age_ms.is_some() => self.retain(),
                event = replicated::next_event(&mut self.replica) => self.on_replica_event(event),
            }
            self.append();
            self.dispatch();
            if let Some(replica) = &self.replica {
                *replica.counts.lock().unwrap_or_else(|e| e.into_inner()) = self.stats();
            }
        }
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            self.handle(cmd);
        }
        if self.replica.is_some() {
            return self.stop_replica().await;
        }
        if !self.deleted {
            // Stopping (the broker shuts down): what was taken is written and answered first,
            // and the log stays.
            loop {
                if self.log.is_none() {
                    match self.done_rx.recv().await {
                        Some(done) => self.finished(done),
                        None => break,
                    }
                } else if self.pending.is_empty() {
                    break;
                } else {
                    self.append();
                }
            }
            self.handle.mark_deleted();
            while self.drop_oldest_of_tail() {}
            tracing::debug!(queue = %self.handle.name, "stream task stopped");
            return;
        }
        // Deleted: what is still asked is answered as a deleted classic queue answers it.
        self.answer_waiting(true);
        self.handle.mark_deleted();
        while self.drop_oldest_of_tail() {}
        if let Some(log) = self.take_log_back(true).await {
            self.remove_log(log).await;
        }
        tracing::debug!(queue = %self.handle.name, "stream task stopped");
    }

    /// The stream stops: the publishes not appended (replicated: not applied) and the syncs
    /// waiting for them are answered `ok`.
    fn answer_waiting(&mut self, ok: bool) {
        for p in self.pending.drain(..) {
            if let Some(confirm) = p.confirm {
                confirm.answer(ok);
            }
        }
        if let Some(replica) = self.replica.as_mut() {
            for confirm in replica.take_unapplied() {
                confirm.answer(ok);
            }
        }
        for sync in self.syncs.drain(..) {
            let _ = sync.send(ok);
        }
    }

    /// The log, handed back by a write under way if there is one (its confirms answered `ok`).
    async fn take_log_back(&mut self, ok: bool) -> Option<StreamLog> {
        if let Some(log) = self.log.take() {
            return Some(log);
        }
        loop {
            match self.done_rx.recv().await {
                Some(Done::Appended { log, confirms, .. }) => {
                    for c in confirms {
                        c.answer(ok);
                    }
                    return Some(log);
                }
                Some(Done::Filled { log, .. }) => return Some(log),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Removes the stream's log (it was deleted).
    async fn remove_log(&self, log: StreamLog) {
        let name = self.handle.name.clone();
        let removed = tokio::task::spawn_blocking(move || log.remove()).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(queue = %name, "cannot remove the stream's log: {e}");
        }
    }

    fn handle(&mut self, cmd: QueueCommand) {
        if self.deleted {
            cmd.answer_as_deleted();
            return;
        }
        match cmd {
            QueueCommand::Publish {
                message, confirm, ..
            } => self.publish(message, confirm),
            QueueCommand::Sync(reply) => {
                if self.settled() {
                    let _ = reply.send(true);
                } else {
                    self.syncs.push(reply);
                }
            }
            QueueCommand::Consume(consumer, reply) => {
                let key = self.next_key;
                self.next_key += 1;
                let start = consumer.stream_start.unwrap_or(StreamStart::Next);
                let position = match start {
                    StreamStart::First => Position::At(self.figures.first_offset),
                    StreamStart::Last => Position::At(self.figures.last_chunk),
                    StreamStart::Next => Position::At(self.figures.end_offset),
                    StreamStart::Offset(n) => Position::At(n.max(self.figures.first_offset)),
                    StreamStart::Timestamp(ms) => {
                        let reader = self.reader.clone();
                        let done = self.done_tx.clone();
                        tokio::task::spawn_blocking(move || {
                            let offset = reader.offset_at(ms).unwrap_or_else(|e| {
                                tracing::warn!("stream: cannot look a timestamp up: {e}");
                                reader.figures().end_offset
                            });
                            let _ = done.send(Done::Located { key, offset });
                        });
                        Position::Locating
                    }
                };
                self.keys.insert(consumer.spec.id, key);
                self.consumers.insert(
                    key,
                    StreamConsumer {
                        id: consumer.spec.id,
                        delivered: 0,
                        outbox: consumer.outbox,
                        prefetch: consumer.spec.prefetch.max(1),
                        outstanding: 0,
                        position,
                        ahead: ahead::ReadAhead::default(),
                        reading: false,
                    },
                );
                let _ = reply.send(Ok(()));
            }
            QueueCommand::Cancel { consumer_id, done } => {
                if let Some(key) = self.keys.get(&consumer_id).copied() {
                    self.forget_consumer(key);
                }
                let _ = done.send(());
            }
            // Refused by the channel before it gets here (RabbitMQ: 540): nothing to get.
            QueueCommand::Get { reply, .. } => {
                let _ = reply.send(None);
            }
            // Settling gives the consumer its credit back; nothing leaves the stream.
            QueueCommand::Ack(ids) | QueueCommand::Reject(ids) | QueueCommand::Requeue(ids) => {
                for id in ids {
                    // A consumer since cancelled is not found: nothing to give back.
                    if let Some(c) = self.consumers.get_mut(&(id >> 32)) {
                        c.outstanding = c.outstanding.saturating_sub(1);
                        self.counts.acked += 1;
                    }
                }
            }
            QueueCommand::Purge(reply) => {
                let _ = reply.send(0);
            }
            // RabbitMQ deletes a stream whatever if-unused and if-empty say.
            QueueCommand::Delete { reply, .. } if self.replica.is_some() => {
                self.propose_delete(reply)
            }
            QueueCommand::Delete { reply, .. } => {
                self.delete_here(true);
                let _ = reply.send(Ok(0));
            }
            QueueCommand::Stats { reply, .. } => {
                let _ = reply.send(self.stats());
            }
            QueueCommand::Resume => {}
            QueueCommand::PoliciesChanged => {
                self.settings = Settings::of(&self.handle);
                if let Some(log) = self.log.as_mut() {
                    log.set_max_segment_bytes(self.settings.max_segment_bytes);
                }
                self.retain();
            }
        }
    }

    /// The stream is deleted: its consumers are cancelled; `tell_host`: the vhost is told (the
    /// node where it was deleted tells it; the cluster tells the others).
    fn delete_here(&mut self, tell_host: bool) {
        self.deleted = true;
        for (_, c) in self.consumers.drain() {
            let _ = c.outbox.events.send(super::ConnEvent::ConsumerCancelled {
                channel: c.outbox.channel,
                consumer_id: c.id,
            });
        }
        self.keys.clear();
        self.handle.mark_deleted();
        if tell_host {
            if let Some(host) = self.host.upgrade() {
                host.forget_queue(&self.handle);
            }
        }
    }

    /// RabbitMQ counts a stream's messages (its committed offset less the first) as ready.
    fn stats(&self) -> QueueStats {
        QueueStats {
            ready: u32::try_from(self.figures.end_offset - self.figures.first_offset)
                .unwrap_or(u32::MAX),
            unacked: 0,
            consumers: self.consumers.len() as u32,
            counts: self.counts,
            ..QueueStats::default()
        }
    }

    fn publish(&mut self, message: MessageRef, confirm: Option<PublishConfirm>) {
        if let Some(cache) = self.dedup.as_mut() {
            let view = PropertiesView::parse(message.properties()).unwrap_or_default();
            if let Some(key) = cache.key_of(&view) {
                if cache.is_duplicate(key, dedup::now_ms()) {
                    if let Some(confirm) = confirm {
                        confirm.answer(true);
                    }
                    return;
                }
            }
        }
        self.pending_bytes += message.body().len();
        self.pending.push_back(Pending { message, confirm });
    }

    /// Starts an append of what is pending, unless one is under way (replicated: proposes what
    /// is pending, and writes what the group applied).
    fn append(&mut self) {
        if self.replica.is_some() {
            self.propose_pending();
            self.write_applied();
            if self.settled() {
                for sync in self.syncs.drain(..) {
                    let _ = sync.send(true);
                }
            }
            return;
        }
        if self.pending.is_empty() {
            if self.log.is_some() {
                for sync in self.syncs.drain(..) {
                    let _ = sync.send(true);
                }
            }
            return;
        }
        let Some(log) = self.log.take() else {
            return;
        };
        let first = self.next_offset;
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        let mut messages = Vec::new();
        let mut confirms = Vec::new();
        while messages.is_empty()
            || (messages.len() < APPEND_MESSAGES && batch.bytes() < APPEND_BYTES)
        {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes = self.pending_bytes.saturating_sub(p.message.body().len());
            let offset = first + messages.len() as u64;
            batch.push_with(|out| encode_entry(&p.message, offset, out));
            messages.push(p.message);
            confirms.extend(p.confirm);
        }
        self.next_offset = first + messages.len() as u64;
        // A sync asked for now is answered once this append is durable.
        let syncs = if self.pending.is_empty() {
            std::mem::take(&mut self.syncs)
        } else {
            Vec::new()
        };
        self.write(log, batch, None, first, messages, confirms, syncs);
    }

    /// Appends `batch` (its entries from offset `first`, the log's end) on a blocking thread,
    /// its chunks stamped `stamp` (now if `None`), then applies retention; reported back as
    /// [`Done::Appended`] with what waits for it.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        mut log: StreamLog,
        batch: EntryBatch,
        stamp: Option<i64>,
        first: u64,
        messages: Vec<MessageRef>,
        confirms: Vec<PublishConfirm>,
        syncs: Vec<oneshot::Sender<bool>>,
    ) {
        let settings = self.settings;
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let result = log.append(&batch, stamp.unwrap_or(now));
            if result.is_ok() {
                if let Err(e) = log.retain(settings.max_bytes, settings.max_age_ms, now) {
                    tracing::warn!("stream retention: {e}");
                }
            }
            let _ = done.send(Done::Appended {
                log,
                batch,
                result,
                first,
                messages,
                confirms,
                syncs,
            });
        });
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Appended {
                log,
                batch,
                result,
                first,
                messages,
                confirms,
                syncs,
            } => {
                let ok = result.is_ok();
                if let Err(e) = result {
                    tracing::error!(queue = %self.handle.name, "cannot append to the stream: {e}");
                    // Not kept (publishers get nacks): the offsets are given again.
                    self.next_offset = log.next_offset();
                }
                self.log = Some(log);
                self.batch = batch;
                self.figures = self.reader.figures();
                if ok {
                    self.counts.published += messages.len() as u64;
                    self.keep_in_tail(first, messages);
                    self.made_durable();
                }
                for c in confirms {
                    c.answer(ok);
                }
                for s in syncs {
                    let _ = s.send(ok);
                }
            }
            Done::Read {
                key,
                result,
                reading: _reading,
            } => {
                let Some(c) = self.consumers.get_mut(&key) else {
                    return;
                };
                c.reading = false;
                match result {
                    // Delivered from its position on (which the read started at, or later
                    // when retention dropped what was before).
                    Ok(read) => {
                        if let (Some((first, _)), Position::At(at)) =
                            (read.first(), &mut c.position)
                        {
                            *at = (*at).max(*first);
                        }
                        c.ahead.extend(read);
                    }
                    Err(e) => {
                        tracing::error!(queue = %self.handle.name, "cannot read the stream: {e}");
                        // Cancelled, as RabbitMQ cancels a consumer whose reader failed.
                        self.cancel_consumer(key);
                    }
                }
            }
            Done::Located { key, offset } => {
                if let Some(c) = self.consumers.get_mut(&key) {
                    c.position = Position::At(offset);
                }
            }
            Done::Fetched { from, fetched } => self.on_fetched(from, fetched),
            Done::Filled { log, ok } => {
                self.log = Some(log);
                self.figures = self.reader.figures();
                // What the tail held may be gone (the copy started again further on).
                while self.drop_oldest_of_tail() {}
                self.tail_first = self.figures.end_offset;
                if ok {
                    self.made_durable();
                } else if let Some(replica) = self.replica.as_mut() {
                    replica.fetch_later();
                }
            }
        }
    }

    fn keep_in_tail(&mut self, first: u64, messages: Vec<MessageRef>) {
        if first != self.tail_first + self.tail.len() as u64 {
            while self.drop_oldest_of_tail() {}
            self.tail_first = first;
        }
        let appended = messages.len();
        for message in messages {
            self.tail_bytes += message.body().len() as u64;
            ALL_TAILS.fetch_add(message.body().len() as u64, Ordering::Relaxed);
            self.tail.push_back(TailEntry {
                message,
                stamped: None,
            });
        }
        while self.tail.len() > TAIL_MESSAGES
            || self.tail_bytes > TAIL_BYTES
            || (self.tail.len() > appended && ALL_TAILS.load(Ordering::Relaxed) > ALL_TAILS_BYTES)
        {
            if !self.drop_oldest_of_tail() {
                break;
            }
        }
    }

    /// False when the tail is empty.
    fn drop_oldest_of_tail(&mut self) -> bool {
        let Some(e) = self.tail.pop_front() else {
            return false;
        };
        let bytes = e.message.body().len() as u64;
        self.tail_bytes -= bytes;
        ALL_TAILS.fetch_sub(bytes, Ordering::Relaxed);
        self.tail_first += 1;
        true
    }

    fn retain(&mut self) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        match log.retain(self.settings.max_bytes, self.settings.max_age_ms, now_ms()) {
            Ok(0) => {}
            Ok(_) => self.figures = self.reader.figures(),
            Err(e) => tracing::warn!(queue = %self.handle.name, "stream retention: {e}"),
        }
    }

    fn cancel_consumer(&mut self, key: u64) {
        if let Some(c) = self.consumers.get(&key) {
            let _ = c.outbox.events.send(super::ConnEvent::ConsumerCancelled {
                channel: c.outbox.channel,
                consumer_id: c.id,
            });
        }
        self.forget_consumer(key);
    }

    /// Forgets the consumer of key `key`.
    fn forget_consumer(&mut self, key: u64) {
        if let Some(c) = self.consumers.remove(&key) {
            self.keys.remove(&c.id);
        }
    }

    /// Hands each consumer what its credit allows: from what it read ahead, from the tail, or
    /// by starting a read from disk.
    fn dispatch(&mut self) {
        let mut keys = std::mem::take(&mut self.serving);
        keys.clear();
        keys.extend(self.consumers.keys().copied());
        for &key in &keys {
            if !self.serve(key) {
                self.forget_consumer(key);
            }
        }
        self.serving = keys;
    }

    /// False if the consumer's connection is gone.
    fn serve(&mut self, key: u64) -> bool {
        let first = self.figures.first_offset;
        let end = self.figures.end_offset;
        loop {
            let Some(c) = self.consumers.get_mut(&key) else {
                return true;
            };
            if c.outbox.events.is_closed() {
                return false;
            }
            let Position::At(at) = c.position else {
                return true;
            };
            if c.outstanding >= c.prefetch {
                return true;
            }
            if !c.outbox.connection_flow.has_room() {
                c.outbox.connection_flow.wait(&self.handle);
                return true;
            }
            // The next message: read ahead, in the tail, or to be read.
            let next = match c.ahead.front_offset() {
                Some(offset) if offset == at.max(first) => c.ahead.pop_front(),
                _ => {
                    c.ahead.clear();
                    let at = at.max(first);
                    if at >= end {
                        c.position = Position::At(at);
                        return true;
                    }
                    if at >= self.tail_first {
                        let i = (at - self.tail_first) as usize;
                        self.tail.get_mut(i).map(|e| (at, e.stamped(at)))
                    } else {
                        if !c.reading {
                            c.reading = true;
                            c.position = Position::At(at);
                            let (want, bytes, reading) =
                                ahead::next_read(c.prefetch - c.outstanding);
                            let reader = self.reader.clone();
                            let done = self.done_tx.clone();
                            tokio::task::spawn_blocking(move || {
                                let mut read = Vec::new();
                                let result = reader
                                    .read(at, want, bytes, |offset, entry| {
                                        if let Ok(m) = stored_message(entry) {
                                            read.push((offset, m));
                                        }
                                    })
                                    .map(|_| read);
                                let _ = done.send(Done::Read {
                                    key,
                                    result,
                                    reading,
                                });
                            });
                        }
                        return true;
                    }
                }
            };
            let Some((offset, message)) = next else {
                return true;
            };
            if !c.outbox.channel_flow.try_take() {
                c.ahead.push_front(offset, message);
                return true;
            }
            c.delivered += 1;
            let delivery = key << 32 | (c.delivered & 0xFFFF_FFFF);
            if !c
                .outbox
                .deliver(&self.handle, c.id, delivery, false, false, message)
            {
                c.outbox.channel_flow.give_back(1);
                return false;
            }
            c.outstanding += 1;
            c.position = Position::At(offset + 1);
            self.counts.delivered += 1;
        }
    }
}

/// RabbitMQ's answer (540, closing the connection) to what streams do not do: `basic.get`,
/// `queue.purge`, `basic.nack`/`basic.reject`, automatic acknowledgement.
pub fn not_supported(what: &str, queue: &str, vhost: &str) -> AmqpError {
    AmqpError::not_implemented(format!(
        "{what} not supported by stream queues queue '{queue}' in vhost '{vhost}'"
    ))
}

/// RabbitMQ's checks of a basic.consume of a stream, in its order; where the consumer starts.
pub fn check_consume(
    arguments: &FieldTable,
    prefetch: u16,
    no_ack: bool,
    queue: &str,
    vhost: &str,
) -> Result<StreamStart, AmqpError> {
    if arguments.inner().contains_key("x-priority") {
        return Err(AmqpError::precondition_failed(format!(
            "invalid arg 'x-priority' for queue '{queue}' in vhost '{vhost}' of queue type rabbit_stream_queue"
        )));
    }
    if prefetch == 0 {
        return Err(AmqpError::precondition_failed(format!(
            "consumer prefetch count is not set for 'queue '{queue}' in vhost '{vhost}''"
        )));
    }
    if no_ack {
        return Err(not_supported("automatic acknowledgement", queue, vhost));
    }
    StreamStart::of(arguments, queue, vhost, now_ms())
}

/// `message` as the stream keeps it: with its offset in an `x-stream-offset` header.
fn with_offset(message: &MessageRef, offset: u64) -> MessageRef {
    let value = i64::try_from(offset).unwrap_or(i64::MAX);
    match warren_amqp::properties::with_long_long_header(
        message.properties(),
        offset::ARGUMENT,
        value,
    ) {
        Some(properties) => message.with_properties(&properties),
        None => crate::message::with_header(
            message,
            offset::ARGUMENT,
            warren_amqp::types::AMQPValue::LongLongInt(value),
        ),
    }
}

/// Writes `message` as the log keeps it (the store's message encoding, its properties with the
/// `x-stream-offset` header) at the end of `out`.
fn encode_entry(message: &MessageRef, offset: u64, out: &mut Vec<u8>) {
    let value = i64::try_from(offset).unwrap_or(i64::MAX);
    StoredMessage::encode_into(
        out,
        message.exchange(),
        message.routing_key(),
        |out| {
            let raw = message.properties();
            if !warren_amqp::properties::write_with_long_long_header(
                raw,
                offset::ARGUMENT,
                value,
                out,
            ) {
                // The slow way: properties that have the header already (a message from
                // another stream).
                let stamped = crate::message::with_header(
                    message,
                    offset::ARGUMENT,
                    warren_amqp::types::AMQPValue::LongLongInt(value),
                );
                out.extend_from_slice(stamped.properties());
            }
        },
        message.body(),
    );
}

fn stored_message(entry: &[u8]) -> Result<MessageRef, warren_storage::StorageError> {
    Ok(Message::from_stored(MessageParts::decode(entry)?, None))
}

fn now_ms() -> i64 {
    i64::try_from(dedup::now_ms()).unwrap_or(i64::MAX)
}
