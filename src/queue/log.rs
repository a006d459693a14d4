//! A queue's durable log: the one path by which a queue's own changes reach the disk. The store
//! implements it today ([`StoreLog`]); a replicated log can implement it tomorrow.
//!
//! Positions are the log's own count of appended records: a record is durable once
//! [`QueueLog::durable`] has reached the position [`QueueLog::appended`] gave after it.

use std::collections::{HashMap, HashSet};

use warren_storage::{Enqueued, Op, RememberedId, StorageError, Store};

use super::dead_letter::Reason;
use crate::message::{Message, MessageRef};

/// What a queue writes to its log.
#[derive(Debug)]
pub enum LogRecord {
    /// Persistent messages the queue took, in order.
    Enqueued(Vec<Enqueued>),
    /// Every message with an id up to `through` has been delivered once (redelivered after a
    /// restart).
    Delivered { through: u64 },
    /// Messages settled or dropped for good.
    Removed(Vec<u64>),
    /// Messages dead-lettered and held until their targets confirm them, and why.
    Held(Vec<(u64, Reason)>),
    /// Held dead-letters their targets confirmed.
    Released(Vec<u64>),
    /// Copies of transient messages (written only to page them out) no longer needed.
    CopiesRemoved(Vec<u64>),
    /// A transient message's copy, so that it can leave memory.
    Copy { id: u64, message: MessageRef },
    /// Deduplication ids now remembered (id, remembered at, expires at).
    RememberIds(Vec<RememberedId>),
    /// Deduplication ids no longer remembered.
    ForgetIds(Vec<Vec<u8>>),
    /// The queue is gone, with everything it held and (`remembered_ids`: it deduplicated) the
    /// ids it remembered.
    Deleted { remembered_ids: bool },
}

pub trait QueueLog {
    /// Queues a record behind those before it; never waits.
    fn append(&mut self, record: LogRecord);
    /// The position after the last record appended (by anyone sharing the log's writer).
    fn appended(&self) -> u64;
    /// The position through which records are durable.
    fn durable(&self) -> u64;
    /// Whether the write of message `id` failed (its commit was refused).
    fn write_failed(&self, id: u64) -> bool;
    /// Calls `done` once every record appended so far has been through the log, with whether the
    /// log's last write succeeded and a way to ask whether a message (by id) made it: what
    /// releases publisher confirms and transactions' commits.
    fn when_durable(&mut self, done: WhenDurable);
    /// A fresh message id.
    fn next_message_id(&mut self) -> u64;
    /// Reads messages back: (id, transient copy) pairs. Ids the log does not have are missing
    /// from the answer.
    fn read(&mut self, ids: &[(u64, bool)]) -> Result<HashMap<u64, MessageRef>, StorageError>;
}

/// A persistent message's durable form for the logs of its `queues` durable queues: made once,
/// stored once for all of them when they are several.
pub fn durable_form(
    store: &Store,
    message: &Message,
    id: u64,
    queues: usize,
) -> Result<Enqueued, StorageError> {
    Ok(Enqueued {
        id,
        data: store.seal(id, message.to_stored())?,
        shared: queues > 1,
    })
}

/// What waits for a queue's log: given whether the write it waited for succeeded, and a way to
/// ask whether a message (by id) is durable.
pub type WhenDurable = Box<dyn FnOnce(bool, &dyn Fn(u64) -> bool) + Send>;

/// A queue's log in the node's store: the queue's rows of the shared message table (a message
/// routed to several queues is stored once), and a shadow key for transient messages' copies.
pub struct StoreLog {
    store: Store,
    /// The queue's id in the store.
    queue: u64,
    vhost: String,
    name: String,
    /// Copies that could not be sealed, so were never written.
    unsealed: HashSet<u64>,
}

impl StoreLog {
    pub fn new(store: Store, queue: u64, vhost: String, name: String) -> Self {
        StoreLog {
            store,
            queue,
            vhost,
            name,
            unsealed: HashSet::new(),
        }
    }

    /// Deduplication ids are kept under the queue's own owner key.
    fn dedup_owner(&self) -> String {
        super::dedup::queue_owner(self.queue)
    }
}

impl QueueLog for StoreLog {
    fn append(&mut self, record: LogRecord) {
        let queue = self.queue;
        let op = match record {
            LogRecord::Enqueued(messages) => Op::Enqueue { queue, messages },
            LogRecord::Delivered { through } => Op::MarkDelivered { queue, through },
            LogRecord::Removed(messages) => Op::Remove { queue, messages },
            LogRecord::Held(messages) => Op::Hold {
                queue,
                messages: messages
                    .into_iter()
                    .map(|(id, reason)| (id, reason.code()))
                    .collect(),
            },
            LogRecord::Released(messages) => Op::Release { queue, messages },
            LogRecord::CopiesRemoved(messages) => Op::Remove {
                queue: warren_storage::shadow_queue(queue),
                messages,
            },
            LogRecord::Copy { id, message } => match durable_form(&self.store, &message, id, 1) {
                Ok(copy) => Op::Enqueue {
                    queue: warren_storage::shadow_queue(queue),
                    messages: vec![copy],
                },
                Err(e) => {
                    tracing::error!(queue = %self.name, "cannot seal a message to page it out: {e}");
                    self.unsealed.insert(id);
                    return;
                }
            },
            LogRecord::RememberIds(ids) => Op::RememberIds {
                owner: self.dedup_owner(),
                ids,
            },
            LogRecord::ForgetIds(ids) => Op::ForgetIds {
                owner: self.dedup_owner(),
                ids,
            },
            LogRecord::Deleted { remembered_ids } => {
                if remembered_ids {
                    self.store.submit(
                        Op::ForgetAllIds {
                            owner: self.dedup_owner(),
                        },
                        None,
                    );
                }
                Op::DeleteQueue {
                    vhost: self.vhost.clone(),
                    name: self.name.clone(),
                    id: queue,
                }
            }
        };
        self.store.submit(op, None);
    }

    fn appended(&self) -> u64 {
        self.store.submitted()
    }

    fn durable(&self) -> u64 {
        self.store.committed()
    }

    fn write_failed(&self, id: u64) -> bool {
        self.store.write_failed(id) || self.unsealed.contains(&id)
    }

    fn when_durable(&mut self, done: WhenDurable) {
        let failed = self.store.failed_writes();
        self.store.submit_then(
            Op::Nothing,
            Box::new(move |ok| done(ok, &|id| ok && !failed.contains(id))),
        );
    }

    fn next_message_id(&mut self) -> u64 {
        self.store.next_message_id()
    }

    fn read(&mut self, ids: &[(u64, bool)]) -> Result<HashMap<u64, MessageRef>, StorageError> {
        let mut read = HashMap::with_capacity(ids.len());
        let persistent: Vec<u64> = ids.iter().filter(|(_, t)| !t).map(|(id, _)| *id).collect();
        let transient: Vec<u64> = ids.iter().filter(|(_, t)| *t).map(|(id, _)| *id).collect();
        if !persistent.is_empty() {
            self.store
                .read_queue_messages(self.queue, &persistent, |id, parts| {
                    read.insert(id, Message::from_stored(parts, Some(id)));
                })?;
        }
        if !transient.is_empty() {
            let shadow = warren_storage::shadow_queue(self.queue);
            self.store
                .read_queue_messages(shadow, &transient, |id, parts| {
                    read.insert(id, Message::from_stored(parts, None));
                })?;
        }
        Ok(read)
    }
}

/// The log of a queue that keeps nothing on disk.
pub struct NoLog;

impl QueueLog for NoLog {
    fn append(&mut self, _record: LogRecord) {}

    fn appended(&self) -> u64 {
        0
    }

    fn durable(&self) -> u64 {
        0
    }

    fn write_failed(&self, _id: u64) -> bool {
        false
    }

    fn when_durable(&mut self, done: WhenDurable) {
        done(true, &|_| true)
    }

    fn next_message_id(&mut self) -> u64 {
        0
    }

    fn read(&mut self, _ids: &[(u64, bool)]) -> Result<HashMap<u64, MessageRef>, StorageError> {
        Ok(HashMap::new())
    }
}
