//! The group-commit writer: one thread, one redb write transaction per batch of requests.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use redb::{ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::records::{
    BindingRecord, ExchangeRecord, PermissionRecord, PolicyRecord, QueueRecord, SealedMessage,
    TopicPermissionRecord, UserRecord, VhostRecord,
};
use crate::{
    DbSlot, StorageError, BINDINGS, DEDUP, DELIVERED, EXCHANGES, HELD, MESSAGES, MESSAGE_REFS,
    META, OPERATOR_POLICIES, PERMISSIONS, POLICIES, QUEUES, QUEUE_INDEX, TOPIC_PERMISSIONS, USERS,
    VHOSTS,
};
use redb::TableDefinition;

/// Hears when writes it asked about are on disk.
pub trait CommitListener: Send + Sync {
    /// `ok` is false when the commit failed: the write is not on disk.
    fn committed(&self, token: u64, ok: bool);
}

/// One write.
#[derive(Debug)]
pub enum Op {
    /// Nothing to write: completes once everything before it is on disk.
    Nothing,
    /// Messages a queue now holds, in the order it took them. A message held by one queue is
    /// stored inside that queue's index entry; one held by several (`shared`) is stored once in
    /// the shared table and counted once per queue that enqueues it, so whichever queue lets go
    /// of it last removes it (and a queue enqueueing it after the others let go writes it again).
    Enqueue {
        queue: u64,
        messages: Vec<Enqueued>,
    },
    /// A queue no longer holds a message (acked, dropped, expired, purged).
    Remove {
        queue: u64,
        messages: Vec<u64>,
    },
    /// A queue has handed messages up to this id to consumers: after a restart they come back
    /// redelivered.
    MarkDelivered {
        queue: u64,
        through: u64,
    },
    /// A queue has dead-lettered these messages (with a reason code of its own) and holds them
    /// until their targets confirm them: after a restart they are dead-lettered again.
    Hold {
        queue: u64,
        messages: Vec<(u64, u8)>,
    },
    /// Held dead-letters their targets confirmed (their messages are removed apart).
    Release {
        queue: u64,
        messages: Vec<u64>,
    },
    PutQueue(QueueRecord),
    /// Deletes a queue's record and every message it held.
    DeleteQueue {
        vhost: String,
        name: String,
        id: u64,
    },
    PutExchange(ExchangeRecord),
    DeleteExchange {
        vhost: String,
        name: String,
    },
    PutBinding(BindingRecord),
    DeleteBinding(BindingRecord),
    /// Deletes every binding to a queue or exchange (it is gone).
    DeleteBindingsTo {
        vhost: String,
        name: String,
        is_queue: bool,
    },
    /// Deletes every binding from an exchange (it is gone).
    DeleteBindingsFrom {
        vhost: String,
        exchange: String,
    },
    /// Ids a deduplicating queue or exchange now remembers.
    RememberIds {
        owner: String,
        ids: Vec<crate::RememberedId>,
    },
    /// Ids it no longer remembers (expired, or pushed out by newer ones).
    ForgetIds {
        owner: String,
        ids: Vec<Vec<u8>>,
    },
    /// Everything it remembered (it is gone).
    ForgetAllIds {
        owner: String,
    },
    /// Creates or replaces a user.
    PutUser(UserRecord),
    /// Deletes a user and its permissions.
    DeleteUser {
        name: String,
    },
    /// Creates or replaces a vhost.
    PutVhost(VhostRecord),
    /// Deletes a vhost's record, its permissions and policies and any queue, exchange or binding
    /// record left in it (its queues delete their messages themselves).
    DeleteVhost {
        name: String,
    },
    PutPermission(PermissionRecord),
    DeletePermission {
        vhost: String,
        user: String,
    },
    /// Replaces a user's topic permissions in a vhost (none: removes them).
    SetTopicPermissions {
        vhost: String,
        user: String,
        permissions: Vec<TopicPermissionRecord>,
    },
    /// Creates or replaces a policy (or an operator policy).
    PutPolicy(PolicyRecord),
    DeletePolicy {
        vhost: String,
        name: String,
        operator: bool,
    },
    /// The default user and vhost exist: a restart does not create them again.
    MarkSeeded,
}

/// A message in an [`Op::Enqueue`].
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub id: u64,
    pub data: SealedMessage,
    /// Routed to several queues: stored once for all of them.
    pub shared: bool,
}

/// Called once a write is through a commit: `true` when it is on disk.
pub type Callback = Box<dyn FnOnce(bool) + Send>;

pub(crate) enum Done {
    Listener(Arc<dyn CommitListener>, u64),
    Callback(Callback),
    Oneshot(oneshot::Sender<Result<(), StorageError>>),
}

pub(crate) struct Request {
    pub op: Op,
    pub done: Option<Done>,
    /// Id counters to persist with this write (next message id, next queue id).
    pub counters: Option<(u64, u64)>,
}

/// The most requests one transaction takes; a bound on commit latency under heavy load.
const MAX_BATCH: usize = 16_384;

/// What the writer tells the rest of the store.
pub(crate) struct Progress {
    /// Requests through a commit (successful or not), in submission order.
    pub committed: Arc<AtomicU64>,
    pub failing: Arc<AtomicBool>,
    pub failing_changed: Arc<tokio::sync::Notify>,
    /// Failed commits so far.
    pub failures: Arc<AtomicU64>,
    /// Messages whose write was in a failed commit.
    pub failed_puts: Arc<std::sync::Mutex<HashSet<u64>>>,
}

pub(crate) fn run(slot: Arc<DbSlot>, mut rx: mpsc::UnboundedReceiver<Request>, progress: Progress) {
    let mut batch = Vec::with_capacity(1024);
    // Batches failed in a row; after a failure the database is reopened before the next commit.
    let mut failed_batches = 0u64;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let result = if failed_batches > 0 {
            slot.reopen().and_then(|()| commit(&slot, &batch))
        } else {
            commit(&slot, &batch)
        }
        .map_err(Arc::new);
        if progress.failing.swap(result.is_err(), Ordering::AcqRel) != result.is_err() {
            progress.failing_changed.notify_waiters();
        }
        match &result {
            Err(e) => {
                failed_batches += 1;
                let mut failed = progress
                    .failed_puts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                for r in &batch {
                    if let Op::Enqueue { messages, .. } = &r.op {
                        failed.extend(messages.iter().map(|m| m.id));
                    }
                }
                drop(failed);
                progress.failures.fetch_add(1, Ordering::AcqRel);
                // Once, then now and then: a full disk fails every batch.
                if failed_batches.is_power_of_two() {
                    tracing::error!(
                        failed_batches,
                        "storage commit of {} writes failed: {e}",
                        batch.len()
                    );
                }
            }
            Ok(()) if failed_batches > 0 => {
                tracing::info!(failed_batches, "storage commits succeed again");
                failed_batches = 0;
            }
            Ok(()) => {}
        }
        // Batches are prefixes of the submission order, so a count tells how far commits got.
        progress
            .committed
            .fetch_add(batch.len() as u64, Ordering::AcqRel);
        for request in batch.drain(..) {
            match request.done {
                Some(Done::Listener(listener, token)) => listener.committed(token, result.is_ok()),
                Some(Done::Callback(callback)) => callback(result.is_ok()),
                Some(Done::Oneshot(tx)) => {
                    let _ = tx.send(result.clone().map_err(StorageError::Batch));
                }
                None => {}
            }
        }
    }
}

/// Queue entries both enqueued and removed within one batch: neither write needs to happen.
fn elided(batch: &[Request]) -> HashSet<(u64, u64)> {
    let mut put: HashSet<(u64, u64)> = HashSet::new();
    for r in batch {
        if let Op::Enqueue { queue, messages } = &r.op {
            put.extend(messages.iter().map(|m| (*queue, m.id)));
        }
    }
    if put.is_empty() {
        return put;
    }
    let mut elided = HashSet::new();
    for r in batch {
        if let Op::Remove { queue, messages } = &r.op {
            elided.extend(
                messages
                    .iter()
                    .map(|m| (*queue, *m))
                    .filter(|entry| put.contains(entry)),
            );
        }
    }
    elided
}

fn commit(slot: &DbSlot, batch: &[Request]) -> Result<(), StorageError> {
    let elided = elided(batch);
    let db = slot.get()?;
    let w = db.begin_write()?;
    for request in batch {
        apply(&w, &request.op, &elided)?;
        if let Some((next_message_id, next_queue_id)) = request.counters {
            let mut meta = w.open_table(META)?;
            meta.insert("next_message_id", next_message_id)?;
            meta.insert("next_queue_id", next_queue_id)?;
        }
    }
    w.commit()?;
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn apply(w: &WriteTransaction, op: &Op, elided: &HashSet<(u64, u64)>) -> Result<(), StorageError> {
    match op {
        Op::Nothing => {}
        Op::Enqueue { queue, messages } => {
            let mut index = w.open_table(QUEUE_INDEX)?;
            for m in messages {
                if elided.contains(&(*queue, m.id)) {
                    continue;
                }
                if !m.shared {
                    index.insert((*queue, m.id), m.data.as_bytes())?;
                    continue;
                }
                // An entry already there (the same enqueue replayed) holds its reference.
                if index.insert((*queue, m.id), &[][..])?.is_some() {
                    continue;
                }
                let mut refs = w.open_table(MESSAGE_REFS)?;
                let count = refs.get(m.id)?.map(|c| c.value()).unwrap_or(0);
                if count == 0 {
                    w.open_table(MESSAGES)?.insert(m.id, m.data.as_bytes())?;
                }
                refs.insert(m.id, count + 1)?;
            }
        }
        Op::Remove { queue, messages } => {
            for m in messages {
                if !elided.contains(&(*queue, *m)) {
                    remove_entry(w, *queue, *m)?;
                }
            }
        }
        Op::MarkDelivered { queue, through } => {
            let mut delivered = w.open_table(DELIVERED)?;
            let before = delivered.get(*queue)?.map(|v| v.value()).unwrap_or(0);
            if *through > before {
                delivered.insert(*queue, *through)?;
            }
        }
        Op::Hold { queue, messages } => {
            let mut held = w.open_table(HELD)?;
            for (m, reason) in messages {
                held.insert((*queue, *m), *reason)?;
            }
        }
        Op::Release { queue, messages } => {
            let mut held = w.open_table(HELD)?;
            for m in messages {
                held.remove((*queue, *m))?;
            }
        }
        Op::PutQueue(q) => {
            w.open_table(QUEUES)?
                .insert((q.vhost.as_str(), q.name.as_str()), &json(q)[..])?;
        }
        Op::DeleteQueue { vhost, name, id } => {
            w.open_table(QUEUES)?
                .remove((vhost.as_str(), name.as_str()))?;
            for queue in [*id, crate::shadow_queue(*id)] {
                let ids: Vec<u64> = {
                    let index = w.open_table(QUEUE_INDEX)?;
                    let mut ids = Vec::new();
                    for entry in index.range((queue, 0)..=(queue, u64::MAX))? {
                        ids.push(entry?.0.value().1);
                    }
                    ids
                };
                for m in ids {
                    remove_entry(w, queue, m)?;
                }
            }
            w.open_table(DELIVERED)?.remove(*id)?;
            w.open_table(HELD)?
                .retain_in((*id, 0)..=(*id, u64::MAX), |_, _| false)?;
        }
        Op::PutExchange(e) => {
            w.open_table(EXCHANGES)?
                .insert((e.vhost.as_str(), e.name.as_str()), &json(e)[..])?;
        }
        Op::DeleteExchange { vhost, name } => {
            w.open_table(EXCHANGES)?
                .remove((vhost.as_str(), name.as_str()))?;
        }
        Op::PutBinding(b) => {
            w.open_table(BINDINGS)?.insert(&json(b)[..], ())?;
        }
        Op::DeleteBinding(b) => {
            w.open_table(BINDINGS)?.remove(&json(b)[..])?;
        }
        Op::DeleteBindingsTo {
            vhost,
            name,
            is_queue,
        } => {
            delete_bindings(w, |b| {
                &b.vhost == vhost && &b.destination == name && b.destination_is_queue == *is_queue
            })?;
        }
        Op::DeleteBindingsFrom { vhost, exchange } => {
            delete_bindings(w, |b| &b.vhost == vhost && &b.source == exchange)?;
        }
        Op::PutUser(u) => {
            w.open_table(USERS)?.insert(u.name.as_str(), &json(u)[..])?;
        }
        Op::DeleteUser { name } => {
            w.open_table(USERS)?.remove(name.as_str())?;
            for definition in [PERMISSIONS, TOPIC_PERMISSIONS] {
                let mut table = w.open_table(definition)?;
                let keys = string_pairs(&table, |_, user| user == name)?;
                for (v, u) in keys {
                    table.remove((v.as_str(), u.as_str()))?;
                }
            }
        }
        Op::PutVhost(v) => {
            w.open_table(VHOSTS)?
                .insert(v.name.as_str(), &json(v)[..])?;
        }
        Op::DeleteVhost { name } => {
            w.open_table(VHOSTS)?.remove(name.as_str())?;
            let in_vhost = |v: &str, _: &str| v == name;
            for definition in [PERMISSIONS, TOPIC_PERMISSIONS] {
                let mut table = w.open_table(definition)?;
                for (v, u) in string_pairs(&table, in_vhost)? {
                    table.remove((v.as_str(), u.as_str()))?;
                }
            }
            let mut table = w.open_table(EXCHANGES)?;
            for (v, x) in string_pairs(&table, in_vhost)? {
                table.remove((v.as_str(), x.as_str()))?;
            }
            let mut table = w.open_table(QUEUES)?;
            for (v, q) in string_pairs(&table, in_vhost)? {
                table.remove((v.as_str(), q.as_str()))?;
            }
            delete_bindings(w, |b| &b.vhost == name)?;
            for policies in [POLICIES, OPERATOR_POLICIES] {
                let mut table = w.open_table(policies)?;
                for (v, p) in string_pairs(&table, in_vhost)? {
                    table.remove((v.as_str(), p.as_str()))?;
                }
            }
        }
        Op::PutPolicy(p) => {
            w.open_table(policy_table(p.operator))?
                .insert((p.vhost.as_str(), p.name.as_str()), &json(p)[..])?;
        }
        Op::DeletePolicy {
            vhost,
            name,
            operator,
        } => {
            w.open_table(policy_table(*operator))?
                .remove((vhost.as_str(), name.as_str()))?;
        }
        Op::PutPermission(p) => {
            w.open_table(PERMISSIONS)?
                .insert((p.vhost.as_str(), p.user.as_str()), &json(p)[..])?;
        }
        Op::DeletePermission { vhost, user } => {
            w.open_table(PERMISSIONS)?
                .remove((vhost.as_str(), user.as_str()))?;
        }
        Op::SetTopicPermissions {
            vhost,
            user,
            permissions,
        } => {
            let mut table = w.open_table(TOPIC_PERMISSIONS)?;
            if permissions.is_empty() {
                table.remove((vhost.as_str(), user.as_str()))?;
            } else {
                table.insert((vhost.as_str(), user.as_str()), &json(permissions)[..])?;
            }
        }
        Op::MarkSeeded => {
            w.open_table(META)?.insert("seeded", 1)?;
        }
        Op::RememberIds { owner, ids } => {
            let mut table = w.open_table(DEDUP)?;
            for (id, at, expires) in ids {
                table.insert((owner.as_str(), &id[..]), (*at, *expires))?;
            }
        }
        Op::ForgetIds { owner, ids } => {
            let mut table = w.open_table(DEDUP)?;
            for id in ids {
                table.remove((owner.as_str(), &id[..]))?;
            }
        }
        Op::ForgetAllIds { owner } => {
            let mut table = w.open_table(DEDUP)?;
            let ids: Vec<Vec<u8>> = {
                let mut ids = Vec::new();
                for entry in table.range((owner.as_str(), &[][..])..)? {
                    let (k, _) = entry?;
                    let (o, id) = k.value();
                    if o != owner {
                        break;
                    }
                    ids.push(id.to_vec());
                }
                ids
            };
            for id in ids {
                table.remove((owner.as_str(), &id[..]))?;
            }
        }
    }
    Ok(())
}

/// Deletes the binding records that match (a scan: bindings are few and this is rare).
/// The (vhost, name) keys of a definitions table that `matches` picks.
/// Where policies of one kind are kept.
fn policy_table(
    operator: bool,
) -> TableDefinition<'static, (&'static str, &'static str), &'static [u8]> {
    if operator {
        OPERATOR_POLICIES
    } else {
        POLICIES
    }
}

fn string_pairs(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    matches: impl Fn(&str, &str) -> bool,
) -> Result<Vec<(String, String)>, StorageError> {
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, _) = entry?;
        let (a, b) = k.value();
        if matches(a, b) {
            out.push((a.to_owned(), b.to_owned()));
        }
    }
    Ok(out)
}

fn delete_bindings(
    w: &WriteTransaction,
    matches: impl Fn(&BindingRecord) -> bool,
) -> Result<(), StorageError> {
    let mut table = w.open_table(BINDINGS)?;
    let mut doomed = Vec::new();
    for entry in table.iter()? {
        let (k, _) = entry?;
        let key = k.value().to_vec();
        if serde_json::from_slice::<BindingRecord>(&key).is_ok_and(|b| matches(&b)) {
            doomed.push(key);
        }
    }
    for key in doomed {
        table.remove(&key[..])?;
    }
    Ok(())
}

/// Removes a queue's index entry; a shared message goes with its last entry.
pub(crate) fn remove_entry(
    w: &WriteTransaction,
    queue: u64,
    message: u64,
) -> Result<(), StorageError> {
    let shared = match w.open_table(QUEUE_INDEX)?.remove((queue, message))? {
        None => return Ok(()),
        Some(inline) => inline.value().is_empty(),
    };
    if !shared {
        return Ok(());
    }
    let mut refs = w.open_table(MESSAGE_REFS)?;
    let count = refs.get(message)?.map(|c| c.value()).unwrap_or(1);
    if count > 1 {
        refs.insert(message, count - 1)?;
    } else {
        refs.remove(message)?;
        w.open_table(MESSAGES)?.remove(message)?;
    }
    Ok(())
}
