//! A stream in a cluster: a Raft group of its own on its members, as a quorum queue is. The
//! group's log carries appends (messages, numbered per member that proposes them); every member
//! applies them in the same order, so each gives every message the same offset, and writes
//! them to its own copy of the stream's log, from which its node's consumers read.
//!
//! - A publish is proposed by the member of the publisher's node and confirmed once its append
//!   is applied there (a majority has it on disk: RabbitMQ confirms a stream's publishes once
//!   a majority of its replicas have them). A proposal that fails or times out is proposed
//!   again (the same number: one already applied is a duplicate, skipped) until it is applied,
//!   so a leader change neither loses nor doubles a publish, with or without confirms.
//! - A member writes what is applied after what its copy holds (an entry it has already, a
//!   restart's re-applied entries, is skipped). The group's snapshots hold no messages, only
//!   the next offset, the proposers' last numbers and a deduplicating stream's ids, and are
//!   taken once the member's copy is on disk up to them; a member that needs entries the group's log no longer has (it was
//!   away while the log was truncated) is sent the snapshot and fetches what it misses from
//!   another member's copy ([`Forward::ReadStream`]), starting where the others' copies start
//!   if retention dropped the rest.
//! - Deduplication (`x-message-deduplication`) happens where appends are applied, by each
//!   append's own time: every member drops the same repeats, whichever node they came through.
//! - Retention drops each copy's oldest segments on its own, by the same rules.
//! - Bounded: publishes not yet applied (32 MiB, then publishers wait) and applied entries not
//!   yet written to the copy (64 MiB, then they are fetched later from another member's copy).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use warren_amqp::{AmqpError, PropertiesView};
use warren_cluster::group::Group;
use warren_cluster::link::{Request, Response};
use warren_cluster::{node_id, Applier, Node, NodeId, Proposal};
use warren_storage::stream::{EntryBatch, StreamError, StreamLog, StreamReader};
use warren_storage::Store;

use super::{Done, Owner, Settings};
use crate::queue::dedup::{DedupCache, DedupState};
use crate::queue::host::QueueHost;
use crate::queue::quorum::host::{self as quorum_host, Replication, ToSend};
use crate::queue::remote::wire::{self, Forward, QueueRef, Reply, StreamEntry, WireMessage};
use crate::queue::{MemberControl, MemberNews, PublishConfirm, QueueHandle, QueueSpec, QueueStats};

/// The most bytes of messages one append proposal carries (a bigger message goes alone).
const PROPOSAL_MAX_BYTES: usize = 1024 * 1024;
/// How many proposals a member has in its group's hands at once; what comes meanwhile waits
/// and goes out together.
const PROPOSALS_IN_FLIGHT: usize = 8;
/// How long after a failed proposal the member proposes again what is not applied.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How much a member asks another's copy for at once when it fills a gap.
const FETCH_BYTES: u32 = 4 * 1024 * 1024;
/// See [`Replica::to_write_bytes`].
const TO_WRITE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// How long a snapshot waits for this member's copy to be on disk up to it.
const SNAPSHOT_WAITS_AT_MOST: Duration = Duration::from_secs(10);

/// What the stream's group log carries.
#[derive(Debug, Serialize, Deserialize)]
pub enum StreamCommand {
    /// Messages appended in this order; `seq` numbers the appends of one proposing member
    /// (`enqueuer`) from 1, and only its next one is applied.
    Append {
        enqueuer: u64,
        seq: u64,
        at_ms: u64,
        messages: Vec<WireMessage>,
    },
    /// The stream is deleted (every member drops its copy).
    Delete,
}

/// What an append came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAnswer {
    Appended,
    /// Applied before (proposed again after a failure that was not one).
    Duplicate,
    /// One of its proposer's earlier appends is not applied yet: proposed again after it.
    OutOfSequence,
}

/// What the group applied, handed to this node's member in log order.
#[derive(Debug)]
pub enum StreamApplied {
    /// The applied state starts again from a snapshot: the next append gets `next_offset`.
    Installed { next_offset: u64 },
    Append {
        origin: NodeId,
        enqueuer: u64,
        seq: u64,
        answer: AppendAnswer,
        /// The offset of the first message (if it was appended).
        first: u64,
        at_ms: u64,
        messages: Vec<WireMessage>,
    },
    Deleted {
        index: u64,
        origin: NodeId,
        number: u64,
    },
}

/// The applied state: what the snapshot holds.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Appended {
    next_offset: u64,
    /// Each proposer's last applied number, by (node, enqueuer).
    last: BTreeMap<(NodeId, u64), u64>,
}

impl Appended {
    /// What an append numbered `seq` by `enqueuer` of `node` comes to.
    fn check(&self, node: NodeId, enqueuer: u64, seq: u64) -> AppendAnswer {
        let last = self.last.get(&(node, enqueuer)).copied().unwrap_or(0);
        if seq <= last {
            AppendAnswer::Duplicate
        } else if seq != last + 1 {
            AppendAnswer::OutOfSequence
        } else {
            AppendAnswer::Appended
        }
    }

    /// Takes the append numbered `seq` (the next of its proposer's: see [`Appended::check`]) of
    /// `count` messages: its first offset.
    fn take(&mut self, node: NodeId, enqueuer: u64, seq: u64, count: u64) -> u64 {
        if seq == 1 {
            // A member started again on that node: the ones before it there are gone.
            self.last.retain(|(n, e), _| *n != node || *e >= enqueuer);
        }
        self.last.insert((node, enqueuer), seq);
        let first = self.next_offset;
        self.next_offset += count;
        first
    }
}

/// The applier's state: the appends, and a deduplicating stream's ids (applied in log order
/// with each append's time, so every member drops the same duplicates, whichever node they
/// came through).
struct Applied {
    appended: Appended,
    dedup: Option<DedupCache>,
}

/// The stream's state machine as its group's [`Applier`].
pub struct StreamApplier {
    state: Mutex<Applied>,
    applied: mpsc::UnboundedSender<StreamApplied>,
    /// The offset this member's copy is on disk up to.
    durable: watch::Receiver<u64>,
}

impl StreamApplier {
    fn state(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Applier for StreamApplier {
    fn apply(&self, index: u64, proposal: &Proposal) {
        let command: StreamCommand = match postcard::from_bytes(&proposal.payload) {
            Ok(command) => command,
            // Every member has the same bytes and skips them alike.
            Err(e) => {
                tracing::error!("stream entry {index} skipped: {e}");
                return;
            }
        };
        let applied = match command {
            StreamCommand::Append {
                enqueuer,
                seq,
                at_ms,
                mut messages,
            } => {
                let mut state = self.state();
                let origin = proposal.origin;
                let answer = state.appended.check(origin, enqueuer, seq);
                let first = match answer {
                    AppendAnswer::Appended => {
                        if let Some(cache) = state.dedup.as_mut() {
                            messages.retain(|m| !is_duplicate(cache, m, at_ms));
                        }
                        let count = messages.len() as u64;
                        state.appended.take(origin, enqueuer, seq, count)
                    }
                    _ => {
                        messages.clear();
                        state.appended.next_offset
                    }
                };
                StreamApplied::Append {
                    origin,
                    enqueuer,
                    seq,
                    answer,
                    first,
                    at_ms,
                    messages,
                }
            }
            StreamCommand::Delete => StreamApplied::Deleted {
                index,
                origin: proposal.origin,
                number: proposal.number,
            },
        };
        let _ = self.applied.send(applied);
    }

    /// Taken once this member's copy is on disk up to the state's next offset (the snapshot
    /// replaces the log entries that hold those messages); after waiting
    /// [`SNAPSHOT_WAITS_AT_MOST`], taken all the same (a copy left short after a crash then
    /// fills its gap from another member's).
    fn snapshot(&self) -> Vec<u8> {
        let (state, dedup) = {
            let state = self.state();
            (
                state.appended.clone(),
                state.dedup.as_ref().map(DedupCache::state),
            )
        };
        let mut durable = self.durable.clone();
        let deadline = std::time::Instant::now() + SNAPSHOT_WAITS_AT_MOST;
        while *durable.borrow_and_update() < state.next_offset {
            if std::time::Instant::now() >= deadline {
                tracing::warn!(
                    "stream snapshot at offset {} taken before this copy has it on disk",
                    state.next_offset
                );
                break;
            }
            // On a blocking thread (see the trait): a short sleep, not a runtime's wait.
            std::thread::sleep(Duration::from_millis(5));
        }
        postcard::to_stdvec(&(state, dedup)).unwrap_or_default()
    }

    fn install(&self, snapshot: &[u8]) {
        match postcard::from_bytes::<(Appended, Option<DedupState>)>(snapshot) {
            Ok((appended, dedup)) => {
                let next_offset = appended.next_offset;
                let mut state = self.state();
                state.appended = appended;
                // A cache the snapshot has not (deduplication set since) starts empty.
                if let (Some(cache), Some(dedup)) = (state.dedup.as_mut(), dedup) {
                    *cache = DedupCache::from_state(dedup);
                }
                drop(state);
                let _ = self.applied.send(StreamApplied::Installed { next_offset });
            }
            Err(e) => tracing::error!("stream snapshot not installed: {e}"),
        }
    }
}

/// Whether `message` repeats an id the cache remembers at `at_ms` (remembering it if not).
fn is_duplicate(cache: &mut DedupCache, message: &WireMessage, at_ms: u64) -> bool {
    let view = PropertiesView::parse(&message.properties).unwrap_or_default();
    match cache.key_of(&view) {
        Some(key) => cache.is_duplicate(key, at_ms),
        None => false,
    }
}

/// An append proposed and not yet applied.
struct Sent {
    payload: Vec<u8>,
    confirms: Vec<PublishConfirm>,
    bytes: usize,
}

/// A replicated stream's member: what the owner ([`Owner`]) needs besides its own log.
pub(super) struct Replica {
    group: Arc<Group>,
    me: NodeId,
    enqueuer: u64,
    next_seq: u64,
    proposals: mpsc::UnboundedSender<ToSend>,
    in_flight: usize,
    sent: BTreeMap<u64, Sent>,
    pub(super) sent_bytes: usize,
    retry_at: Option<tokio::time::Instant>,
    /// Appends to propose again when the retry timer fires (one failed or came out of order).
    resend: bool,
    /// No fetch before this (the last one brought nothing).
    fetch_not_before: Option<tokio::time::Instant>,
    /// Applied, not yet written to this copy: offset, the append's time, the message.
    to_write: VecDeque<(u64, u64, crate::message::MessageRef)>,
    /// Their bodies' bytes: past [`TO_WRITE_MAX_BYTES`] what is applied is not kept but fetched
    /// from another member's copy later (a copy whose disk falls behind holds a bounded backlog).
    to_write_bytes: usize,
    /// Entries below this offset are missing here and fetched from another member.
    fetch_until: Option<u64>,
    fetching: bool,
    /// Which member to fetch from next (an index into the group's voters).
    fetch_from: usize,
    durable: watch::Sender<u64>,
    /// A delete proposed here: its proposal number, and who waits for it.
    deleting: Option<(u64, oneshot::Sender<Result<u32, AmqpError>>)>,
    /// The index of the delete, once applied.
    pub(super) deleted_at: Option<u64>,
    /// Told when the cluster deleted the stream without this member applying its delete (see
    /// [`MemberNews::dropped`]; a stream's members are not changed, the members wanted unread).
    pub(super) news: Arc<MemberNews>,
    pub(super) was_dropped: bool,
    pub(super) applied: mpsc::UnboundedReceiver<StreamApplied>,
    pub(super) done: mpsc::UnboundedReceiver<(u64, bool)>,
    queue: QueueRef,
    link: warren_cluster::link::Link,
    db: warren_cluster::LogDb,
    /// Its counts as of the owner's last turn, read by the management API without a round
    /// through its inbox (which publishers may keep full while the group commits).
    pub(super) counts: Arc<Mutex<QueueStats>>,
}

/// Starts this node's member of the stream `spec` (its group's members: `members`, this node
/// among them).
pub fn spawn(
    spec: QueueSpec,
    host: Weak<dyn QueueHost>,
    store: &Store,
    replication: Replication,
    members: Vec<Node>,
) -> Arc<QueueHandle> {
    let (tx, rx) = mpsc::channel(crate::queue::INBOX);
    let stored = spec.storage_id.map(|id| (store.clone(), id));
    let news = Arc::new(MemberNews::new(
        members.iter().map(|m| m.name.clone()).collect(),
    ));
    let mut handle = QueueHandle {
        replicated: true,
        membership: Some(MemberControl {
            node: replication.node.name().into(),
            news: news.clone(),
        }),
        ..QueueHandle::new(spec, tx)
    };
    handle.stream = true;
    let handle = Arc::new(handle);
    let settings = Settings::of(&handle);
    let vhost = host
        .upgrade()
        .map(|h| h.vhost_name().to_owned())
        .unwrap_or_default();
    let group_name = group_name(&vhost, &handle.name, handle.incarnation);
    let task_handle = handle.clone();
    tokio::spawn(async move {
        let Some((log, _)) = super::open_log(&task_handle, &settings, stored, false).await else {
            return;
        };
        let (durable_tx, durable) = watch::channel(log.next_offset());
        let (applied_tx, applied) = mpsc::unbounded_channel();
        // Deduplication happens where the group applies appends, not here.
        let applier = Arc::new(StreamApplier {
            state: Mutex::new(Applied {
                appended: Appended::default(),
                dedup: task_handle
                    .effective_args()
                    .deduplication
                    .map(|d| DedupCache::new(&d, false)),
            }),
            applied: applied_tx,
            durable,
        });
        // Born dormant is made for quorum queues' members (their host sleeps while its group
        // does); a stream's start as they did.
        let timing = warren_cluster::group::Timing {
            born_dormant: false,
            ..quorum_host::timing(replication.dormant_after)
        };
        let group = match Group::start(
            replication.node.clone(),
            group_name.clone(),
            &replication.db,
            applier,
            &members,
            timing,
        )
        .await
        {
            Ok(group) => group,
            Err(e) => return failed(&task_handle, &e),
        };
        let _ = task_handle.replica.set(group.clone());
        let preference = members.iter().map(|m| m.name.clone()).collect();
        group.keep_led(quorum_host::LEADER_CHECK, preference);
        let (proposals, done) = quorum_host::proposer(group.clone());
        let _ = task_handle.stream_log.set(log.reader());
        let counts = Arc::new(Mutex::new(QueueStats::default()));
        let read = counts.clone();
        let _ = task_handle.counts.set(Box::new(move || {
            *read.lock().unwrap_or_else(|e| e.into_inner())
        }));
        let replica = Replica {
            counts,
            me: node_id(replication.node.name()),
            enqueuer: replication.process
                + quorum_host::MEMBERS_STARTED.fetch_add(1, Ordering::Relaxed),
            next_seq: 1,
            proposals,
            in_flight: 0,
            sent: BTreeMap::new(),
            sent_bytes: 0,
            retry_at: None,
            resend: false,
            fetch_not_before: None,
            to_write: VecDeque::new(),
            to_write_bytes: 0,
            fetch_until: None,
            fetching: false,
            fetch_from: 0,
            durable: durable_tx,
            deleting: None,
            deleted_at: None,
            news,
            was_dropped: false,
            applied,
            done,
            queue: QueueRef {
                vhost,
                name: task_handle.name.to_string(),
            },
            link: replication.node.link().clone(),
            db: replication.db.clone(),
            group,
        };
        let mut owner = Owner::new(task_handle, host, settings, log, None);
        owner.replica = Some(replica);
        owner.run(rx).await;
    });
    handle
}

fn failed(handle: &QueueHandle, e: &dyn std::fmt::Display) {
    tracing::error!(queue = %handle.name, "replicated stream not started: {e}");
    handle.mark_deleted();
}

/// The stream's group name: its vhost, name and incarnation (another declare of the name after
/// a delete is another group), apart from quorum queues' groups.
pub fn group_name(vhost: &str, queue: &str, incarnation: u64) -> String {
    format!("s/{incarnation}/{vhost}/{queue}")
}

/// What a member's copy answers another member's [`Forward::ReadStream`].
pub fn read_for_replica(
    reader: &StreamReader,
    from: u64,
    max_bytes: u32,
) -> Result<Reply, StreamError> {
    let figures = reader.figures();
    let mut entries = Vec::new();
    reader.read_stamped(
        from,
        super::APPEND_MESSAGES,
        max_bytes as usize,
        |offset, timestamp_ms, entry| {
            entries.push(StreamEntry {
                offset,
                timestamp_ms,
                entry: entry.to_vec(),
            })
        },
    )?;
    Ok(Reply::StreamRead {
        first: figures.first_offset,
        end: figures.end_offset,
        entries,
    })
}

/// What a fetch from another member came to.
pub(super) enum Fetched {
    Entries {
        first: u64,
        entries: Vec<StreamEntry>,
    },
    /// Nothing usable there (not reachable, not a member, or no further than this copy).
    Nothing,
}

impl Replica {
    /// Stops the member's group: after a delete applied, once the other members it reaches have
    /// applied it too, and then its log goes.
    pub(super) async fn stop(&self, deleted: bool) {
        if let Some(index) = self.deleted_at {
            self.group
                .leave_after(index, quorum_host::LEAVE_WITHIN)
                .await;
        }
        self.group.shutdown().await;
        if deleted || self.was_dropped {
            let (db, name) = (self.db.clone(), self.group.id().to_owned());
            let _ = tokio::task::spawn_blocking(move || db.remove_group(&name)).await;
        }
    }
}

impl Owner {
    fn replica(&mut self) -> Option<&mut Replica> {
        self.replica.as_mut()
    }

    /// Proposes what publishers sent, a batch per proposal, while few are in flight.
    pub(super) fn propose_pending(&mut self) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        while !self.pending.is_empty() && replica.in_flight < PROPOSALS_IN_FLIGHT {
            let mut messages = Vec::new();
            let mut confirms = Vec::new();
            let mut bytes = 0;
            while let Some(p) = self.pending.front() {
                let size = p.message.body().len();
                if !messages.is_empty() && bytes + size > PROPOSAL_MAX_BYTES {
                    break;
                }
                let Some(p) = self.pending.pop_front() else {
                    break;
                };
                self.pending_bytes = self.pending_bytes.saturating_sub(size);
                bytes += size;
                messages.push(WireMessage::of(&p.message));
                confirms.extend(p.confirm);
            }
            let seq = replica.next_seq;
            replica.next_seq += 1;
            let command = StreamCommand::Append {
                enqueuer: replica.enqueuer,
                seq,
                at_ms: quorum_host::wall_clock_ms(),
                messages,
            };
            let payload = match postcard::to_stdvec(&command) {
                Ok(payload) => payload,
                Err(e) => {
                    tracing::error!(queue = %self.handle.name, "stream append not encoded: {e}");
                    for c in confirms {
                        c.answer(false);
                    }
                    continue;
                }
            };
            let proposal = replica.group.proposal(payload.clone());
            if replica.proposals.send(Box::new((proposal, false))).is_ok() {
                replica.in_flight += 1;
            }
            replica.sent_bytes += bytes;
            replica.sent.insert(
                seq,
                Sent {
                    payload,
                    confirms,
                    bytes,
                },
            );
        }
    }

    /// A proposal's outcome: a failed append is proposed again later with whatever else is not
    /// applied; a failed delete is refused as RabbitMQ refuses one that times out (the client
    /// may try again).
    pub(super) fn on_proposal_done(&mut self, number: u64, ok: bool) {
        let name = self.handle.name.clone();
        let Some(replica) = self.replica() else {
            return;
        };
        replica.in_flight = replica.in_flight.saturating_sub(1);
        if ok {
            return;
        }
        match replica.deleting.take() {
            Some((n, reply)) if n == number => {
                let vhost = &replica.queue.vhost;
                let _ = reply.send(Err(AmqpError::internal_error(format!(
                    "timed out deleting stream '{name}' in vhost '{vhost}': no majority of its members answered"
                ))));
            }
            other => {
                replica.deleting = other;
                replica.resend_later();
            }
        }
    }

    /// The retry timer fired: appends not known applied are proposed again (in order), if one
    /// failed; a fetch that brought nothing may be tried again.
    pub(super) fn on_retry_timer(&mut self) {
        let Some(replica) = self.replica() else {
            return;
        };
        replica.retry_at = None;
        replica.fetch_not_before = None;
        if !std::mem::take(&mut replica.resend) {
            return;
        }
        for sent in replica.sent.values() {
            let proposal = replica.group.proposal(sent.payload.clone());
            if replica.proposals.send(Box::new((proposal, false))).is_ok() {
                replica.in_flight += 1;
            }
        }
    }

    pub(super) fn on_applied(&mut self, applied: StreamApplied) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        match applied {
            StreamApplied::Installed { next_offset } => {
                replica.to_write.clear();
                replica.to_write_bytes = 0;
                replica.fetch_until = Some(next_offset);
            }
            StreamApplied::Append {
                origin,
                enqueuer,
                seq,
                answer,
                first,
                at_ms,
                messages,
            } => {
                if origin == replica.me && enqueuer == replica.enqueuer {
                    match answer {
                        AppendAnswer::Appended | AppendAnswer::Duplicate => {
                            // Applied in order: those numbered before it were applied before.
                            while let Some(entry) = replica.sent.first_entry() {
                                if *entry.key() > seq {
                                    break;
                                }
                                let sent = entry.remove();
                                replica.sent_bytes = replica.sent_bytes.saturating_sub(sent.bytes);
                                for confirm in sent.confirms {
                                    confirm.answer(true);
                                }
                            }
                        }
                        AppendAnswer::OutOfSequence => replica.resend_later(),
                    }
                }
                for (offset, m) in (first..).zip(messages) {
                    if replica.to_write_bytes + m.body.len() > TO_WRITE_MAX_BYTES {
                        replica.fetch_until =
                            Some(replica.fetch_until.unwrap_or(0).max(offset + 1));
                        continue;
                    }
                    replica.to_write_bytes += m.body.len();
                    replica
                        .to_write
                        .push_back((offset, at_ms, m.into_message()));
                }
            }
            StreamApplied::Deleted {
                index,
                origin,
                number,
            } => {
                replica.deleted_at = Some(index);
                let reply = match replica.deleting.take() {
                    Some((n, reply)) if origin == replica.me && n == number => Some(reply),
                    other => {
                        replica.deleting = other;
                        None
                    }
                };
                let mine = origin == replica.me;
                self.delete_here(mine);
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(0));
                }
            }
        }
    }

    /// `queue.delete` of a replicated stream: proposed, done when applied (on every member).
    pub(super) fn propose_delete(&mut self, reply: oneshot::Sender<Result<u32, AmqpError>>) {
        let Some(replica) = self.replica() else {
            return;
        };
        let payload = match postcard::to_stdvec(&StreamCommand::Delete) {
            Ok(payload) => payload,
            Err(e) => {
                let _ = reply.send(Err(AmqpError::internal_error(e.to_string())));
                return;
            }
        };
        let proposal = replica.group.proposal(payload);
        replica.deleting = Some((proposal.number, reply));
        if replica.proposals.send(Box::new((proposal, false))).is_ok() {
            replica.in_flight += 1;
        }
    }

    /// Writes what was applied after what this copy holds, or fetches what it misses first.
    pub(super) fn write_applied(&mut self) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        let Some(log) = self.log.as_ref() else {
            return;
        };
        let local = log.next_offset();
        while replica.to_write.front().is_some_and(|(o, _, _)| *o < local) {
            replica.pop_to_write();
        }
        if replica.fetch_until.is_some_and(|until| until <= local) {
            replica.fetch_until = None;
        }
        // What comes next here is missing: fetched first (what is held is written first).
        let missing = match replica.to_write.front() {
            Some((front, _, _)) => *front > local,
            None => replica.fetch_until.is_some(),
        };
        if missing {
            if let Some((front, _, _)) = replica.to_write.front() {
                replica.fetch_until = Some(replica.fetch_until.unwrap_or(0).max(*front));
            }
            self.fetch_missing();
            return;
        }
        if replica.to_write.is_empty() {
            return;
        }
        let Some(log) = self.log.take() else {
            return;
        };
        let first = local;
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        let mut messages = Vec::new();
        let mut stamp = 0;
        while messages.is_empty()
            || (messages.len() < super::APPEND_MESSAGES && batch.bytes() < super::APPEND_BYTES)
        {
            // Contiguous only (what was not kept is fetched later).
            if replica
                .to_write
                .front()
                .is_none_or(|(offset, _, _)| *offset != first + messages.len() as u64)
            {
                break;
            }
            let Some((offset, at_ms, message)) = replica.pop_to_write() else {
                break;
            };
            stamp = stamp.max(at_ms);
            batch.push_with(|out| super::encode_entry(&message, offset, out));
            messages.push(message);
        }
        let stamp = i64::try_from(stamp).unwrap_or(i64::MAX);
        self.write(
            log,
            batch,
            Some(stamp),
            first,
            messages,
            Vec::new(),
            Vec::new(),
        );
    }

    /// This copy is on disk up to its log's end (after an append or a fetch).
    pub(super) fn made_durable(&mut self) {
        let end = self.log.as_ref().map(|log| log.next_offset());
        if let (Some(replica), Some(end)) = (self.replica.as_mut(), end) {
            replica.durable.send_replace(end);
        }
    }

    /// Asks another member for the entries this copy misses (one request at a time).
    fn fetch_missing(&mut self) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        if replica.fetching || replica.fetch_not_before.is_some() {
            return;
        }
        let Some(log) = self.log.as_ref() else {
            return;
        };
        let from = log.next_offset();
        let me = self.handle.membership.as_ref().map(|m| m.node.to_string());
        let others: Vec<String> = replica
            .group
            .voters()
            .into_iter()
            .filter(|v| Some(v.as_str()) != me.as_deref())
            .collect();
        if others.is_empty() {
            return;
        }
        let peer = others[replica.fetch_from % others.len()].clone();
        replica.fetching = true;
        let (link, queue, done) = (
            replica.link.clone(),
            replica.queue.clone(),
            self.done_tx.clone(),
        );
        tokio::spawn(async move {
            let fetched = fetch(&link, &peer, queue, from).await;
            let _ = done.send(Done::Fetched { from, fetched });
        });
    }

    /// What a fetch brought: written (after starting this copy again where the other's starts,
    /// if what this one misses is gone there), or, if nothing came, asked of another member a
    /// moment later.
    pub(super) fn on_fetched(&mut self, from: u64, fetched: Fetched) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        replica.fetching = false;
        let until = replica.fetch_until.unwrap_or(0);
        let Some(mut log) = self.log.take() else {
            return;
        };
        if log.next_offset() != from {
            // Moved on meanwhile (a write finished): asked again from where it is.
            self.log = Some(log);
            return;
        }
        let entries = match fetched {
            Fetched::Entries { first, entries } => {
                let usable: Vec<StreamEntry> =
                    entries.into_iter().filter(|e| e.offset < until).collect();
                let restart = match usable.first() {
                    Some(e) => (e.offset > from).then_some(e.offset),
                    // Nothing below `until` there: it keeps nothing this copy misses.
                    None => (first > from).then_some(first.min(until)),
                };
                if usable.is_empty() && restart.is_none() {
                    replica.fetch_later();
                    self.log = Some(log);
                    return;
                }
                (restart, usable)
            }
            Fetched::Nothing => {
                replica.fetch_later();
                self.log = Some(log);
                return;
            }
        };
        let done = self.done_tx.clone();
        let name = self.handle.name.clone();
        tokio::task::spawn_blocking(move || {
            let (restart, entries) = entries;
            let result = restart_and_write(&mut log, restart, &entries);
            if let Err(e) = &result {
                tracing::error!(queue = %name, "stream entries fetched from a member not written: {e}");
            }
            let _ = done.send(Done::Filled {
                log,
                ok: result.is_ok(),
            });
        });
    }
}

impl Replica {
    fn retry_later(&mut self) {
        if self.retry_at.is_none() {
            self.retry_at = Some(tokio::time::Instant::now() + RETRY_AFTER);
        }
    }

    fn resend_later(&mut self) {
        self.resend = true;
        self.retry_later();
    }

    fn pop_to_write(&mut self) -> Option<(u64, u64, crate::message::MessageRef)> {
        let next = self.to_write.pop_front()?;
        self.to_write_bytes = self.to_write_bytes.saturating_sub(next.2.body().len());
        Some(next)
    }

    /// The next fetch goes to another member, a moment later.
    pub(super) fn fetch_later(&mut self) {
        self.fetch_from += 1;
        self.fetch_not_before = Some(tokio::time::Instant::now() + RETRY_AFTER);
        self.retry_later();
    }

    /// The confirms of the appends not known applied (the member stops).
    pub(super) fn take_unapplied(&mut self) -> Vec<PublishConfirm> {
        self.sent_bytes = 0;
        std::mem::take(&mut self.sent)
            .into_values()
            .flat_map(|sent| sent.confirms)
            .collect()
    }

    /// Whether every append proposed here is applied.
    pub(super) fn all_applied(&self) -> bool {
        self.sent.is_empty()
    }
}

/// Starts `log` again at `restart` (if given), then appends `entries` (contiguous from the
/// log's end), a chunk per timestamp.
fn restart_and_write(
    log: &mut StreamLog,
    restart: Option<u64>,
    entries: &[StreamEntry],
) -> Result<(), StreamError> {
    if let Some(offset) = restart {
        log.restart_at(offset)?;
    }
    let mut batch = EntryBatch::default();
    let mut i = 0;
    while i < entries.len() {
        let stamp = entries[i].timestamp_ms;
        batch.clear();
        while i < entries.len() && entries[i].timestamp_ms == stamp {
            if entries[i].offset != log.next_offset() + batch.len() as u64 {
                return Ok(());
            }
            batch.push(&entries[i].entry);
            i += 1;
        }
        log.append(&batch, stamp)?;
    }
    Ok(())
}

/// What a replicated stream's member acts on besides its inbox and its log's work.
pub(super) enum ReplicaEvent {
    Applied(StreamApplied),
    /// A proposal's outcome: its number, whether it was committed.
    Proposed(u64, bool),
    RetryTimer,
    /// The cluster dropped the stream while this member had not applied its delete.
    Dropped,
}

/// The member's next event (never, for a stream alone).
pub(super) async fn next_event(replica: &mut Option<Replica>) -> ReplicaEvent {
    let Some(r) = replica else {
        return std::future::pending().await;
    };
    let retry_at = r.retry_at;
    tokio::select! {
        Some(applied) = r.applied.recv() => ReplicaEvent::Applied(applied),
        Some((number, ok)) = r.done.recv() => ReplicaEvent::Proposed(number, ok),
        _ = crate::queue::sleep_until_some(retry_at) => ReplicaEvent::RetryTimer,
        _ = r.news.dropped.notified() => ReplicaEvent::Dropped,
    }
}

impl Owner {
    pub(super) fn on_replica_event(&mut self, event: ReplicaEvent) {
        match event {
            ReplicaEvent::Applied(applied) => self.on_applied(applied),
            ReplicaEvent::Proposed(number, ok) => self.on_proposal_done(number, ok),
            ReplicaEvent::RetryTimer => self.on_retry_timer(),
            ReplicaEvent::Dropped => {
                if let Some(replica) = self.replica.as_mut() {
                    replica.was_dropped = true;
                }
                self.delete_here(false);
            }
        }
    }
}

impl Owner {
    /// The member stops (the broker shuts down, or the stream was deleted): what waits for an
    /// append not applied is answered (nacks; acks if the stream is gone, as a deleted queue
    /// answers), the log comes back from a write under way (and goes, if deleted), the group
    /// stops.
    pub(super) async fn stop_replica(mut self) {
        let deleted = self.deleted;
        self.answer_waiting(deleted);
        self.handle.mark_deleted();
        while self.drop_oldest_of_tail() {}
        if let (Some(log), true) = (self.take_log_back(deleted).await, deleted) {
            self.remove_log(log).await;
        }
        if let Some(replica) = self.replica.take() {
            replica.stop(deleted).await;
        }
        tracing::debug!(queue = %self.handle.name, "replicated stream member stopped");
    }
}

/// Asks `peer`'s copy of the stream for its entries from `from` on.
async fn fetch(
    link: &warren_cluster::link::Link,
    peer: &str,
    queue: QueueRef,
    from: u64,
) -> Fetched {
    let Ok(request) = wire::encode(&Forward::ReadStream {
        queue,
        from,
        max_bytes: FETCH_BYTES,
    }) else {
        return Fetched::Nothing;
    };
    let Ok(call) = link.call(peer, Request::App(request)).await else {
        return Fetched::Nothing;
    };
    match call.answer(Duration::from_secs(30)).await {
        Ok(Response::App(Ok(bytes))) => match wire::decode::<Reply>(&bytes) {
            Ok(Reply::StreamRead {
                first,
                end,
                entries,
            }) if end > from || first > from => Fetched::Entries { first, entries },
            _ => Fetched::Nothing,
        },
        _ => Fetched::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn applier() -> (StreamApplier, mpsc::UnboundedReceiver<StreamApplied>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (_, durable) = watch::channel(u64::MAX);
        let applier = StreamApplier {
            state: Mutex::new(Applied {
                appended: Appended::default(),
                dedup: None,
            }),
            applied: tx,
            durable,
        };
        (applier, rx)
    }

    fn append(node: NodeId, enqueuer: u64, seq: u64, count: usize) -> Proposal {
        let messages = (0..count)
            .map(|i| WireMessage {
                exchange: Vec::new(),
                routing_key: b"s".to_vec(),
                properties: Vec::new(),
                body: format!("{enqueuer}.{seq}.{i}").into_bytes(),
            })
            .collect();
        let command = StreamCommand::Append {
            enqueuer,
            seq,
            at_ms: 1,
            messages,
        };
        Proposal {
            origin: node,
            number: seq,
            payload: postcard::to_stdvec(&command).unwrap(),
        }
    }

    /// What each applied append came to: (answer, first offset, messages appended).
    fn outcomes(
        rx: &mut mpsc::UnboundedReceiver<StreamApplied>,
    ) -> Vec<(AppendAnswer, u64, usize)> {
        let mut out = Vec::new();
        while let Ok(applied) = rx.try_recv() {
            if let StreamApplied::Append {
                answer,
                first,
                messages,
                ..
            } = applied
            {
                out.push((answer, first, messages.len()));
            }
        }
        out
    }

    #[test]
    fn appends_are_applied_once_in_their_proposers_order() {
        let (applier, mut rx) = applier();
        let steps = [
            append(1, 10, 1, 2),
            append(1, 10, 1, 2),
            append(1, 10, 3, 1),
            append(2, 7, 1, 1),
            append(1, 10, 2, 3),
            append(1, 10, 3, 1),
            // A member started again on node 1: the one before is forgotten there.
            append(1, 11, 1, 1),
            append(1, 10, 4, 1),
        ];
        for (i, p) in steps.iter().enumerate() {
            applier.apply(i as u64 + 1, p);
        }
        use AppendAnswer::*;
        assert_eq!(
            outcomes(&mut rx),
            vec![
                (Appended, 0, 2),
                (Duplicate, 2, 0),
                (OutOfSequence, 2, 0),
                (Appended, 2, 1),
                (Appended, 3, 3),
                (Appended, 6, 1),
                (Appended, 7, 1),
                (OutOfSequence, 8, 0),
            ]
        );
        let state = applier.state().appended.clone();
        assert_eq!(state.next_offset, 8);
        assert_eq!(
            state.last.into_iter().collect::<Vec<_>>(),
            vec![((1, 11), 1), ((2, 7), 1)]
        );
    }

    /// An append of messages with these ids (`message-id`).
    fn append_ids(node: NodeId, enqueuer: u64, seq: u64, at_ms: u64, ids: &[&str]) -> Proposal {
        use warren_amqp::protocol::BasicProperties;
        let messages = ids
            .iter()
            .map(|id| WireMessage {
                exchange: Vec::new(),
                routing_key: b"s".to_vec(),
                properties: warren_amqp::encode::encode_properties(
                    &BasicProperties::default().with_message_id((*id).into()),
                )
                .unwrap(),
                body: id.as_bytes().to_vec(),
            })
            .collect();
        let command = StreamCommand::Append {
            enqueuer,
            seq,
            at_ms,
            messages,
        };
        Proposal {
            origin: node,
            number: seq,
            payload: postcard::to_stdvec(&command).unwrap(),
        }
    }

    /// The bodies each applied append carries.
    fn bodies(rx: &mut mpsc::UnboundedReceiver<StreamApplied>) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        while let Ok(applied) = rx.try_recv() {
            if let StreamApplied::Append { messages, .. } = applied {
                out.push(
                    messages
                        .iter()
                        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
                        .collect(),
                );
            }
        }
        out
    }

    #[test]
    fn a_deduplicating_streams_members_drop_the_same_ids_whichever_node_sent_them() {
        let settings = crate::queue::args::Dedup {
            cache_size: 10,
            ttl_ms: Some(1_000),
            header: None,
        };
        let deduplicating = || {
            let (applier, rx) = applier();
            applier.state().dedup = Some(DedupCache::new(&settings, false));
            (applier, rx)
        };
        let (whole, mut whole_rx) = deduplicating();
        let (later, mut later_rx) = deduplicating();
        let steps = [
            append_ids(1, 10, 1, 100, &["a", "b"]),
            // Through another node, the same ids: dropped.
            append_ids(2, 20, 1, 200, &["b", "c", "a"]),
        ];
        for (i, p) in steps.iter().enumerate() {
            whole.apply(i as u64 + 1, p);
        }
        later.install(&whole.snapshot());
        let _ = bodies(&mut later_rx);
        // Past the TTL of "a" (remembered at 100), within that of "c" (at 200).
        let next = append_ids(1, 10, 2, 1_150, &["a", "c", "d"]);
        whole.apply(3, &next);
        later.apply(3, &next);
        assert_eq!(
            bodies(&mut whole_rx),
            vec![vec!["a", "b"], vec!["c"], vec!["a", "d"]]
        );
        assert_eq!(bodies(&mut later_rx), vec![vec!["a", "d"]]);
        assert_eq!(whole.state().appended, later.state().appended);
        assert_eq!(whole.state().appended.next_offset, 5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever order proposals (resent, duplicated, out of order) reach the log in: each
        /// proposer's appends are applied once each, in its order, at offsets that follow each
        /// other; and a member that installs a snapshot taken midway, then applies the rest,
        /// comes to the same answers and state as one that applied everything.
        #[test]
        fn random_proposal_orders_apply_each_append_once(
            steps in proptest::collection::vec((0u64..2, 0u64..2, 1u64..6, 1usize..4), 1..60),
            cut in 0usize..60,
        ) {
            let (whole, mut whole_rx) = applier();
            let (later, mut later_rx) = applier();
            let cut = cut.min(steps.len());
            let mut applied_seqs: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
            for (i, (node, enqueuer, seq, count)) in steps.iter().enumerate() {
                let p = append(*node, *enqueuer, *seq, *count);
                whole.apply(i as u64 + 1, &p);
                if i + 1 == cut {
                    later.install(&whole.snapshot());
                    let _ = outcomes(&mut whole_rx);
                    let _ = outcomes(&mut later_rx);
                }
                if i + 1 > cut {
                    later.apply(i as u64 + 1, &p);
                }
            }
            let whole_out = outcomes(&mut whole_rx);
            let later_out = outcomes(&mut later_rx);
            prop_assert_eq!(&whole_out, &later_out);
            prop_assert_eq!(whole.state().appended.clone(), later.state().appended.clone());

            // Everything again from scratch: numbers applied per proposer run 1, 2, 3…
            let (fresh, mut fresh_rx) = applier();
            let mut next = 0;
            for (i, (node, enqueuer, seq, count)) in steps.iter().enumerate() {
                fresh.apply(i as u64 + 1, &append(*node, *enqueuer, *seq, *count));
                for (answer, first, n) in outcomes(&mut fresh_rx) {
                    if answer == AppendAnswer::Appended {
                        prop_assert_eq!(first, next);
                        prop_assert_eq!(n, *count);
                        next += n as u64;
                        applied_seqs.entry((*node, *enqueuer)).or_default().push(*seq);
                    }
                }
            }
            prop_assert_eq!(fresh.state().appended.next_offset, next);
            for ((node, enqueuer), seqs) in &applied_seqs {
                // A proposer restarted (a new enqueuer at 1) resets what an older one of its
                // node counts; apart from that each runs 1, 2, 3… without repeats.
                let mut expected = 1;
                for seq in seqs {
                    prop_assert!(*seq == expected || *seq == 1, "{node}/{enqueuer}: {seqs:?}");
                    expected = seq + 1;
                }
            }
        }
    }
}
