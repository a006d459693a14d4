//! The whole state of a queue without a durable log, as a value: what a replicated queue's
//! snapshot holds. A member that installs it and then applies the commands after it behaves as
//! the members that applied every command did.
//!
//! Only queues that keep no log (`logged: false`) have one: a logged queue's messages may be
//! paged out to its log, and its pending log writes are part of its state; its log is its
//! snapshot.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ActiveConsumer, ConsumerSpec, CoreSpec, Outstanding, QueueCore};
use crate::message::{Message, MessageRef};
use crate::queue::dedup::{DedupCache, DedupState};
use crate::queue::ready::{Entry, Ready, Slot};
use crate::queue::QueueArgs;

/// Everything a queue's future behaviour depends on beyond its [`CoreSpec`]. Serializable with
/// postcard (no self-describing forms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// The arguments in effect: a [`super::Command::Configure`] may have replaced the declared
    /// ones.
    pub args: QueueArgs,
    /// Ready messages per priority level, lowest level first (one level without
    /// `x-max-priority`), each level in delivery order.
    pub ready: Vec<Vec<ReplicaEntry>>,
    /// Deliveries awaiting settlement, by delivery id (a delivery's id is its entry's id).
    pub outstanding: Vec<ReplicaDelivery>,
    /// In registration order (the first is the single active consumer when that is on).
    pub consumers: Vec<ReplicaConsumer>,
    /// Where the round-robin among consumers resumes.
    pub next_consumer: u64,
    /// The next entry id (a queue position).
    pub next_id: u64,
    /// Whether the queue ever had a consumer (auto-delete waits for the first).
    pub had_consumer: bool,
    /// The context's clock when the queue's TTL clock read 0.
    pub epoch: u64,
    /// Last use for `x-expires`, on the context's clock.
    pub last_used: u64,
    /// The highest log id handed to a consumer (0 in a queue without a log).
    pub delivered_through: u64,
    pub dedup: Option<DedupState>,
    pub deleted: bool,
}

/// A message in the queue and what the queue knows about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEntry {
    /// Its position in the queue.
    pub id: u64,
    pub message: ReplicaMessage,
    /// On the queue's TTL clock; 0 = never.
    pub expires_at: u32,
    /// How many times it was handed back.
    pub returns: u16,
    pub redelivered: bool,
}

/// A message's bytes (its other fields are read from its properties again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaMessage {
    #[serde(with = "serde_bytes")]
    pub exchange: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub routing_key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub properties: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The message's id in the store, when it is stored for another (durable) queue it reached.
    pub storage_id: Option<u64>,
}

/// A delivery awaiting settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDelivery {
    pub entry: ReplicaEntry,
    /// The consumer whose prefetch it counts against (None for a `basic.get`).
    pub consumer: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaConsumer {
    pub spec: ConsumerSpec,
    /// Deliveries it has not settled.
    pub unacked: u32,
}

/// Why a queue's state cannot be taken or restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplicaStateError {
    #[error("queue '{0}' keeps a durable log: its state is in the log, not in a replica state")]
    Logged(String),
    /// A queue without a log never pages out nor waits for log writes; if it does, its state
    /// is not all in memory.
    #[error("queue '{0}' has paged-out messages or pending log writes")]
    Paging(String),
    #[error("{0} priority levels (a queue has 1 to 256)")]
    PriorityLevels(usize),
    #[error("entry {id} is in priority level {level}, its message's priority belongs elsewhere")]
    MisplacedEntry { id: u64, level: usize },
    #[error("entry {id} is out of order in priority level {level}")]
    OutOfOrder { id: u64, level: usize },
    #[error("entry {id} is not below the next id {next_id}")]
    IdNotIssued { id: u64, next_id: u64 },
    #[error("entry {0} appears more than once")]
    DuplicateEntry(u64),
    #[error("next consumer {0} does not fit this machine's word")]
    NextConsumer(u64),
}

impl QueueCore {
    /// The queue's whole state, for a replica to restore with [`QueueCore::from_replica_state`].
    pub fn replica_state(&self) -> Result<ReplicaState, ReplicaStateError> {
        if self.logged {
            return Err(ReplicaStateError::Logged(self.name.to_string()));
        }
        let paging = !self.page_out.is_empty()
            || self.unstamped != 0
            || !self.enqueued.is_empty()
            || !self.removed.is_empty()
            || !self.removed_copies.is_empty()
            || self.retry_at.is_some();
        if paging {
            return Err(ReplicaStateError::Paging(self.name.to_string()));
        }
        let entry = |e: &Entry| replica_entry(e).ok_or_else(|| self.paging_error());
        let ready = self
            .ready
            .levels()
            .iter()
            .map(|level| level.iter().map(entry).collect())
            .collect::<Result<_, _>>()?;
        // Sorted: the map's order differs between copies.
        let mut ids: Vec<u64> = self.outstanding.keys().copied().collect();
        ids.sort_unstable();
        let outstanding = ids
            .iter()
            .filter_map(|id| self.outstanding.get(id))
            .map(|o| {
                Ok(ReplicaDelivery {
                    entry: entry(&o.entry)?,
                    consumer: o.consumer,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ReplicaState {
            args: self.args.clone(),
            ready,
            outstanding,
            consumers: self
                .consumers
                .iter()
                .map(|c| ReplicaConsumer {
                    spec: c.spec.clone(),
                    unacked: c.unacked,
                })
                .collect(),
            next_consumer: self.next_consumer as u64,
            next_id: self.next_id,
            had_consumer: self.had_consumer,
            epoch: self.epoch,
            last_used: self.last_used,
            delivered_through: self.delivered_through,
            dedup: self.dedup.as_deref().map(DedupCache::state),
            deleted: self.deleted,
        })
    }

    fn paging_error(&self) -> ReplicaStateError {
        ReplicaStateError::Paging(self.name.to_string())
    }

    /// The queue `state` describes. `spec` gives what commands do not change (name, vhost,
    /// auto-delete); its arguments give way to the state's, which are the ones in effect. The
    /// queue must keep no log, as the one the state was taken from.
    pub fn from_replica_state(
        spec: CoreSpec,
        state: ReplicaState,
    ) -> Result<QueueCore, ReplicaStateError> {
        if spec.logged {
            return Err(ReplicaStateError::Logged(spec.name.to_string()));
        }
        let next_id = state.next_id;
        let mut seen = HashSet::new();
        let mut issued = |id: u64| {
            if id >= next_id {
                return Err(ReplicaStateError::IdNotIssued { id, next_id });
            }
            if !seen.insert(id) {
                return Err(ReplicaStateError::DuplicateEntry(id));
            }
            Ok(())
        };
        let ready = restore_ready(state.ready, &mut issued)?;
        let mut outstanding = HashMap::with_capacity(state.outstanding.len());
        for d in state.outstanding {
            issued(d.entry.id)?;
            let entry = restore_entry(d.entry);
            outstanding.insert(
                entry.id,
                Outstanding {
                    entry,
                    consumer: d.consumer,
                },
            );
        }
        let next_consumer = usize::try_from(state.next_consumer)
            .map_err(|_| ReplicaStateError::NextConsumer(state.next_consumer))?;
        let mut core = QueueCore::new(
            CoreSpec {
                args: state.args,
                ..spec
            },
            state.epoch,
        );
        core.ready = ready;
        core.outstanding = outstanding;
        core.consumers = state
            .consumers
            .into_iter()
            .map(|c| ActiveConsumer {
                spec: c.spec,
                unacked: c.unacked,
            })
            .collect();
        core.next_consumer = next_consumer;
        core.next_id = next_id;
        core.had_consumer = state.had_consumer;
        core.last_used = state.last_used;
        // The cache as it was, whatever the arguments in effect say: a cache is made once, when
        // the queue is.
        core.dedup = state.dedup.map(|d| Box::new(DedupCache::from_state(d)));
        core.delivered_through = state.delivered_through;
        // Without a log there is nothing to record.
        core.delivered_recorded = state.delivered_through;
        core.deleted = state.deleted;
        Ok(core)
    }
}

/// The ready entries, level by level, checked to be where the queue would have put them:
/// each in its message's priority level, in increasing position order.
fn restore_ready(
    levels: Vec<Vec<ReplicaEntry>>,
    issued: &mut impl FnMut(u64) -> Result<(), ReplicaStateError>,
) -> Result<Ready, ReplicaStateError> {
    let count = levels.len();
    let max_priority = count
        .checked_sub(1)
        .and_then(|top| u8::try_from(top).ok())
        .ok_or(ReplicaStateError::PriorityLevels(count))?;
    let mut ready = Ready::new(Some(max_priority));
    for (level, entries) in levels.into_iter().enumerate() {
        let mut previous = None;
        for e in entries {
            issued(e.id)?;
            if previous.is_some_and(|p| p >= e.id) {
                return Err(ReplicaStateError::OutOfOrder { id: e.id, level });
            }
            previous = Some(e.id);
            let entry = restore_entry(e);
            let priority = entry.message().map_or(0, |m| m.priority);
            if ready.level_of(priority) != level {
                return Err(ReplicaStateError::MisplacedEntry {
                    id: entry.id,
                    level,
                });
            }
            ready.push_back(entry);
        }
    }
    Ok(ready)
}

/// An entry as the state holds it; None when its message is not in memory.
fn replica_entry(e: &Entry) -> Option<ReplicaEntry> {
    Some(ReplicaEntry {
        id: e.id,
        message: replica_message(e.message()?),
        expires_at: e.expires_at,
        returns: e.returns,
        redelivered: e.redelivered,
    })
}

fn replica_message(m: &MessageRef) -> ReplicaMessage {
    ReplicaMessage {
        exchange: m.exchange().to_vec(),
        routing_key: m.routing_key().to_vec(),
        properties: m.properties().to_vec(),
        body: m.body().to_vec(),
        storage_id: m.storage_id(),
    }
}

fn restore_entry(e: ReplicaEntry) -> Entry {
    let m = e.message;
    Entry {
        id: e.id,
        slot: Slot::Loaded(Message::from_parts(
            &m.exchange,
            &m.routing_key,
            &m.properties,
            Bytes::from(m.body),
            m.storage_id,
        )),
        expires_at: e.expires_at,
        returns: e.returns,
        redelivered: e.redelivered,
    }
}
