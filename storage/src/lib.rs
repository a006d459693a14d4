//! Warren's durable store. Definitions (exchanges, queues, bindings) and persistent messages live
//! in one redb database. Every write goes through one writer thread that gathers whatever is
//! pending — from all queues and channels — into a single transaction, commits it with an fsync,
//! and only then reports each write done: group commit. Under load batches grow by themselves;
//! when idle a lone write is committed at once.
//!
//! Each durable queue holds an index entry `(queue id, message id)` per message. A message on one
//! queue (the usual case) is stored inside that entry, so storing and acking it are one insert and
//! one delete. A message routed to several durable queues is stored once, in a shared table with
//! a reference count, and goes when its last entry does. A message acked before the batch that
//! stores it is committed never touches the disk at all.
//!
//! Instead of a mark per delivery, each queue records the highest message id it has handed to a
//! consumer: after a restart, messages up to that mark come back `redelivered`.
//!
//! Streams keep their messages elsewhere: segment files beside the database, see [`stream`].

mod crypto;
mod db;
mod error;
mod reads;
mod records;
pub mod stream;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};

pub use crypto::EncryptionKey;
pub use error::StorageError;
pub use reads::RememberedId;
pub use records::{
    BindingRecord, ExchangeRecord, MessageParts, PermissionRecord, PolicyRecord, QueueRecord,
    SealedMessage, StoredMessage, TopicPermissionRecord, UserRecord, VhostRecord,
};
pub use writer::{Callback, CommitListener, Enqueued, Op};

use crypto::Cipher;
use db::{open_database, DbSlot};
use reads::read_definitions;

/// Message id → encoded message (see [`StoredMessage`]), for messages on several queues.
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// Message id → number of queues still holding a shared message.
const MESSAGE_REFS: TableDefinition<u64, u32> = TableDefinition::new("message_refs");
/// (queue id, message id) → the encoded message, or nothing when it is shared (in MESSAGES).
const QUEUE_INDEX: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("queue_index");
/// Queue id → highest message id handed to a consumer.
const DELIVERED: TableDefinition<u64, u64> = TableDefinition::new("delivered");
/// (queue id, message id) → why: messages a queue has dead-lettered and holds until their targets
/// confirm them (a quorum queue's at-least-once dead-lettering), the reason as the queue coded it.
const HELD: TableDefinition<(u64, u64), u8> = TableDefinition::new("held_dead_letters");
/// (vhost, name) → JSON queue record.
const QUEUES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("queues");
/// (vhost, name) → JSON exchange record.
const EXCHANGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("exchanges");
/// JSON binding record → nothing.
const BINDINGS: TableDefinition<&[u8], ()> = TableDefinition::new("bindings");
/// User name → JSON user record.
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// Vhost name → JSON vhost record.
const VHOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("vhosts");
/// (vhost, user) → JSON permission record.
const PERMISSIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("permissions");
/// (vhost, user) → JSON list of that user's topic permission records in that vhost.
const TOPIC_PERMISSIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("topic_permissions");
/// (vhost, name) → JSON policy record: the user policies, and the operator policies apart (the
/// two kinds have separate namespaces, as in RabbitMQ).
const POLICIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("policies");
const OPERATOR_POLICIES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("operator_policies");
/// (owner, message id) → (when remembered, when forgotten; both Unix ms, `u64::MAX` = never):
/// the ids a deduplicating queue or exchange remembers. The owner is `q:<queue id>` or
/// `e:<vhost>\0<exchange>`.
const DEDUP: TableDefinition<(&str, &[u8]), (u64, u64)> = TableDefinition::new("dedup");
/// "key_check": a fixed text sealed under the encryption key, when messages are encrypted.
const CRYPTO: TableDefinition<&str, &[u8]> = TableDefinition::new("crypto");
/// Counters (the next queue id and message id), the schema version, and `seeded` once the
/// default user and vhost were created (a fresh data directory gets them once, as in RabbitMQ).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Marks a queue id as the "shadow" of a durable queue: where it pages out transient messages.
/// Shadow entries use the same index and operations as persistent ones but are never
/// recovered: they are all deleted at start-up.
const SHADOW_BIT: u64 = 1 << 63;

/// The key under which a durable queue keeps transient messages it paged out.
pub fn shadow_queue(queue_id: u64) -> u64 {
    queue_id | SHADOW_BIT
}

/// The layout of the tables above; a database written with another one is refused.
const SCHEMA_VERSION: u64 = 2;

/// Everything the store held at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    pub exchanges: Vec<ExchangeRecord>,
    pub queues: Vec<QueueRecord>,
    pub bindings: Vec<BindingRecord>,
    pub users: Vec<UserRecord>,
    pub vhosts: Vec<VhostRecord>,
    pub permissions: Vec<PermissionRecord>,
    pub topic_permissions: Vec<TopicPermissionRecord>,
    /// Policies and operator policies, by vhost and name.
    pub policies: Vec<PolicyRecord>,
    /// The default user and vhost have not been created yet (a fresh data directory, or one
    /// written before users and vhosts were stored): the broker creates them and then submits
    /// [`Op::MarkSeeded`].
    pub needs_seed: bool,
}

/// The messages whose writes were in a failed commit.
#[derive(Clone)]
pub struct FailedWrites {
    failures: Arc<AtomicU64>,
    failed_puts: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
}

impl FailedWrites {
    pub fn contains(&self, id: u64) -> bool {
        self.failures.load(Ordering::Acquire) > 0
            && self
                .failed_puts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&id)
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DbSlot>,
    /// Taken on drop, which ends the writer thread after its last batch.
    tx: Option<mpsc::UnboundedSender<writer::Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
    next_message_id: AtomicU64,
    next_queue_id: AtomicU64,
    /// Requests sent to the writer so far, and how many of them are on disk.
    submitted: AtomicU64,
    committed: Arc<AtomicU64>,
    /// Whether the last commit failed (the disk alarm stays on until one succeeds).
    failing: Arc<std::sync::atomic::AtomicBool>,
    /// Woken when `failing` changes.
    failing_changed: Arc<tokio::sync::Notify>,
    /// Failed commits so far.
    failures: Arc<AtomicU64>,
    /// Messages whose write was in a failed commit.
    failed_puts: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
    /// Seals and opens stored messages, when encryption at rest is on.
    cipher: Option<Arc<Cipher>>,
    /// The directory the database is in (streams keep their logs beside it).
    dir: std::path::PathBuf,
}

impl Drop for Inner {
    /// Finishes pending writes and releases the database file, so it can be opened again.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            // Dropped by the writer itself (the last handle was in something it ran): it ends
            // on its own once its batch is done.
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
            }
        }
    }
}

impl Store {
    /// Opens (or creates) `dir/warren.redb` and starts the writer thread. An existing file that is
    /// empty or not a redb database is refused ([`StorageError::EmptyFile`],
    /// [`StorageError::Open`]), never started over.
    pub fn open(dir: &Path) -> Result<(Store, Recovered), StorageError> {
        Self::open_with(dir, None)
    }

    /// As [`Store::open`], with messages encrypted at rest under `key`. A database created with
    /// a key cannot be opened without it or with another one.
    pub fn open_with(
        dir: &Path,
        key: Option<&EncryptionKey>,
    ) -> Result<(Store, Recovered), StorageError> {
        let path = dir.join("warren.redb");
        let cipher = key.map(|k| Arc::new(Cipher::new(k)));
        let db = Arc::new(open_database(&path)?);
        let (next_message_id, next_queue_id) = {
            let w = db.begin_write()?;
            {
                // Create every table so that reads never meet a missing one.
                w.open_table(MESSAGES)?;
                w.open_table(MESSAGE_REFS)?;
                w.open_table(QUEUE_INDEX)?;
                w.open_table(DELIVERED)?;
                w.open_table(HELD)?;
                w.open_table(DEDUP)?;
                let mut meta = w.open_table(META)?;
                let found = meta.get("schema_version")?.map(|v| v.value());
                match found {
                    None => {
                        meta.insert("schema_version", SCHEMA_VERSION)?;
                    }
                    Some(SCHEMA_VERSION) => {}
                    Some(found) => return Err(StorageError::Schema { found }),
                }
                w.open_table(QUEUES)?;
                w.open_table(EXCHANGES)?;
                w.open_table(BINDINGS)?;
                w.open_table(USERS)?;
                w.open_table(VHOSTS)?;
                w.open_table(PERMISSIONS)?;
                w.open_table(TOPIC_PERMISSIONS)?;
                w.open_table(POLICIES)?;
                w.open_table(OPERATOR_POLICIES)?;
                // Transient messages paged out before a restart are gone with it.
                let shadow: Vec<(u64, u64)> = {
                    let index = w.open_table(QUEUE_INDEX)?;
                    let mut keys = Vec::new();
                    for entry in index.range((SHADOW_BIT, 0)..)? {
                        keys.push(entry?.0.value());
                    }
                    keys
                };
                for (queue, message) in shadow {
                    writer::remove_entry(&w, queue, message)?;
                }
                let holds_messages = !w.open_table(QUEUE_INDEX)?.is_empty()?;
                let mut crypto = w.open_table(CRYPTO)?;
                let check = crypto.get("key_check")?.map(|v| v.value().to_vec());
                match (&cipher, check) {
                    (None, None) => {}
                    (None, Some(_)) => return Err(StorageError::KeyRequired(path)),
                    (Some(c), Some(check)) if !c.verify(&check) => {
                        return Err(StorageError::WrongKey(path))
                    }
                    (Some(_), Some(_)) => {}
                    (Some(_), None) if holds_messages => {
                        return Err(StorageError::NotEncrypted(path))
                    }
                    (Some(c), None) => {
                        crypto.insert("key_check", &c.key_check()?[..])?;
                    }
                }
            }
            w.commit()?;
            let r = db.begin_read()?;
            let meta = r.open_table(META)?;
            let get = |k: &str| -> Result<u64, StorageError> {
                Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(1))
            };
            // Message ids also restart above the highest stored one, in case a counter write was lost.
            let mut highest = r
                .open_table(MESSAGES)?
                .last()?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(1);
            for entry in r.open_table(QUEUE_INDEX)?.iter()? {
                highest = highest.max(entry?.0.value().1 + 1);
            }
            (get("next_message_id")?.max(highest), get("next_queue_id")?)
        };
        let recovered = read_definitions(&db)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let db = Arc::new(DbSlot::new(path, db));
        let writer_db = db.clone();
        let committed = Arc::new(AtomicU64::new(0));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failing_changed = Arc::new(tokio::sync::Notify::new());
        let failures = Arc::new(AtomicU64::new(0));
        let failed_puts = Arc::default();
        let progress = writer::Progress {
            committed: committed.clone(),
            failing: failing.clone(),
            failing_changed: failing_changed.clone(),
            failures: failures.clone(),
            failed_puts: Arc::clone(&failed_puts),
        };
        let writer = std::thread::Builder::new()
            .name("warren-storage".into())
            .spawn(move || writer::run(writer_db, rx, progress))
            .map_err(StorageError::WriterThread)?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                tx: Some(tx),
                writer: Some(writer),
                next_message_id: AtomicU64::new(next_message_id),
                next_queue_id: AtomicU64::new(next_queue_id),
                submitted: AtomicU64::new(0),
                committed,
                failing,
                failing_changed,
                failures,
                failed_puts,
                cipher,
                dir: dir.to_owned(),
            }),
        };
        Ok((store, recovered))
    }

    /// The database, unless it is being reopened after a failure.
    fn db(&self) -> Result<Arc<Database>, StorageError> {
        self.inner.db.get()
    }

    /// Where the stream queue `queue_id` keeps its log ([`stream::StreamLog`]).
    pub fn stream_dir(&self, queue_id: u64) -> std::path::PathBuf {
        self.inner.dir.join("streams").join(queue_id.to_string())
    }

    /// Opens (or creates) the log of stream queue `queue_id` (see [`stream::StreamLog::open`]),
    /// its chunks sealed under the store's key if it has one (encryption at rest).
    pub fn open_stream(
        &self,
        queue_id: u64,
        max_segment_bytes: u64,
    ) -> Result<stream::StreamLog, stream::StreamError> {
        stream::StreamLog::open_sealed(
            &self.stream_dir(queue_id),
            max_segment_bytes,
            self.inner.cipher.clone(),
        )
    }

    /// Removes the stream logs of queues `known` does not know (see
    /// [`stream::remove_unknown`]): the ids removed.
    pub fn remove_unknown_streams(
        &self,
        known: impl Fn(u64) -> bool,
    ) -> Result<Vec<u64>, stream::StreamError> {
        stream::remove_unknown(&self.inner.dir.join("streams"), known)
    }

    pub fn next_message_id(&self) -> u64 {
        self.inner.next_message_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A new queue id, persisted with the next commit.
    pub fn next_queue_id(&self) -> u64 {
        self.inner.next_queue_id.fetch_add(1, Ordering::Relaxed)
    }

    fn counters(&self) -> (u64, u64) {
        (
            self.inner.next_message_id.load(Ordering::Relaxed),
            self.inner.next_queue_id.load(Ordering::Relaxed),
        )
    }

    /// A message's stored form (see [`StoredMessage::encode`]) made ready to be written under
    /// `id`: sealed when messages are encrypted at rest. Done by the caller, once per message
    /// however many queues hold it, so that encryption scales with connections.
    pub fn seal(&self, id: u64, stored: Bytes) -> Result<SealedMessage, StorageError> {
        match &self.inner.cipher {
            Some(c) => Ok(SealedMessage(c.seal(id, &stored)?)),
            None => Ok(SealedMessage(stored)),
        }
    }

    /// Hands a write to the writer thread; gives back what was to hear of it if the writer is
    /// gone.
    fn send(&self, op: Op, done: Option<writer::Done>) -> Result<(), Option<writer::Done>> {
        let counters = matches!(op, Op::PutQueue(_)).then(|| self.counters());
        let request = writer::Request { op, done, counters };
        let Some(tx) = self.inner.tx.as_ref() else {
            return Err(request.done);
        };
        self.inner.submitted.fetch_add(1, Ordering::AcqRel);
        tx.send(request).map_err(|e| {
            self.inner.submitted.fetch_sub(1, Ordering::AcqRel);
            e.0.done
        })
    }

    /// Queues a write; `listener` hears about it (with `token`) once it is on disk, or failed.
    pub fn submit(&self, op: Op, listener: Option<(Arc<dyn CommitListener>, u64)>) {
        let done = listener.map(|(l, token)| writer::Done::Listener(l, token));
        if let Err(done) = self.send(op, done) {
            tracing::error!("storage write dropped: the writer is gone");
            if let Some(writer::Done::Listener(l, token)) = done {
                l.committed(token, false);
            }
        }
    }

    /// Queues a write; `callback` is called once it is through a commit, with whether it is on
    /// disk (at once with `false` if the writer is gone).
    pub fn submit_then(&self, op: Op, callback: writer::Callback) {
        if let Err(done) = self.send(op, Some(writer::Done::Callback(callback))) {
            tracing::error!("storage write dropped: the writer is gone");
            if let Some(writer::Done::Callback(callback)) = done {
                callback(false);
            }
        }
    }

    /// Queues a write and waits until it is on disk.
    pub async fn write(&self, op: Op) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.send(op, Some(writer::Done::Oneshot(tx)))
            .map_err(|_| StorageError::WriterGone)?;
        rx.await.map_err(|_| StorageError::WriterGone)?
    }

    /// Waits until everything this caller queued so far is on disk; free when it already is.
    /// (Commits follow submission order, so once as many requests are committed as had been
    /// submitted when this was called, the caller's own are among them.)
    pub async fn sync(&self) -> Result<(), StorageError> {
        let submitted = self.inner.submitted.load(Ordering::Acquire);
        if self.inner.committed.load(Ordering::Acquire) >= submitted {
            return Ok(());
        }
        self.write(Op::Nothing).await
    }

    /// How many writes were queued so far (see [`Store::committed`]).
    pub fn submitted(&self) -> u64 {
        self.inner.submitted.load(Ordering::Acquire)
    }

    /// How many of the queued writes have been through a commit, successful or not: a write
    /// queued before [`Store::submitted`] returned `n` is through once this reaches `n`.
    pub fn committed(&self) -> u64 {
        self.inner.committed.load(Ordering::Acquire)
    }

    /// True while commits fail (a full disk, an I/O error): writes are being refused.
    pub fn is_failing(&self) -> bool {
        self.inner.failing.load(Ordering::Acquire)
    }

    /// Whether message `id` was in a commit that failed (so it is not on disk). Only meaningful
    /// once [`Store::committed`] has passed the write.
    pub fn write_failed(&self, id: u64) -> bool {
        self.failed_writes().contains(id)
    }

    /// The messages whose writes failed, to ask about later without holding the store (a commit
    /// callback runs on the writer thread, which must not hold the last handle to the store).
    pub fn failed_writes(&self) -> FailedWrites {
        FailedWrites {
            failures: self.inner.failures.clone(),
            failed_puts: self.inner.failed_puts.clone(),
        }
    }

    /// Resolves when commits start or stop failing.
    pub async fn failing_changed(&self) {
        self.inner.failing_changed.notified().await
    }

    /// While commits fail, makes the writer try again (reopening the database) even if nothing
    /// else is being written, so that it notices when the disk has room again.
    pub fn retry_if_failing(&self) {
        if self.is_failing() {
            self.submit(Op::Nothing, None);
        }
    }

    /// Size of the database file in bytes.
    pub fn file_size(&self, dir: &Path) -> u64 {
        std::fs::metadata(dir.join("warren.redb"))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
