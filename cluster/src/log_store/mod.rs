//! A group's Raft log, vote, commit point and purge point, kept in the node's Raft database
//! ([`LogDb`], `db.rs`): openraft's [`RaftLogStorage`].
//!
//! Why it is shaped as it is:
//!
//! - openraft's core awaits `append()` and wants it back as soon as the entries are *readable*;
//!   durability is reported later through the [`IOFlushed`] callback, so the next batch can be
//!   replicated and written while this one is being flushed (0.10's pipelining). redb makes a
//!   commit readable and durable in the same step (and holds its single writer through the fsync),
//!   so the entries an append hands over are kept in memory ("unwritten") until their commit, and
//!   readers see them from there.
//! - redb is synchronous: every write runs on tokio's blocking pool, one writer task per database
//!   draining a FIFO queue, so a group's writes reach the file in the order openraft issued them.
//!   Whatever every group queued while the previous commit was being flushed goes into one
//!   transaction and one fsync (group commit).
//! - The in-memory view (last log id, purge point, unwritten entries) changes when openraft calls,
//!   the file follows; a reader takes its bounds from memory and its redb snapshot under the same
//!   lock, so it never sees a hole: an entry leaves memory only once its commit is readable.
//! - Values are postcard-encoded, keys are (group, log index) (redb keeps them in numeric order).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::{Bound, RangeBounds, RangeInclusive};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{LogIdOptionExt, OptionalSend, RaftLogReader};
use redb::{ReadTransaction, ReadableDatabase};
use tokio::sync::oneshot;

use crate::error::ClusterError;
use crate::link::GroupId;
use crate::types::{Entry, LogId, SnapshotMeta, TypeConfig, Vote};

mod db;
pub use db::LogDb;
use db::{get_meta, Db, COMMITTED, LAST_PURGED, LOG, META, SNAPSHOTS, VOTE};

/// How much `limited_get_log_entries` reads at once (at least one entry): replication to a far
/// behind follower goes in slices instead of loading the whole backlog.
const READ_SLICE_BYTES: usize = 4 << 20;

/// A group's log storage. Cloning gives another handle on the same store (openraft's log reader is
/// one); the group is open until every handle is dropped (it is opened once at a time).
/// The trait methods run on a tokio runtime: writes and reads of the file go to its blocking pool.
#[derive(Clone)]
pub struct LogStore {
    log: Arc<GroupLog>,
}

/// Tells when every handle on a group's log is gone (so that it can be opened again).
pub struct Closed(std::sync::Weak<GroupLog>);

impl Closed {
    pub fn is_closed(&self) -> bool {
        self.0.strong_count() == 0
    }

    /// Writes now what the group's log has queued for the next write (its commit points), which
    /// holds the log open until then.
    pub fn write_queued(&self) {
        if let Some(log) = self.0.upgrade() {
            log.db.write_now();
        }
    }
}

struct GroupLog {
    db: Arc<Db>,
    /// The group's number in the database's keys.
    number: u64,
    name: GroupId,
    /// Boxed: the log's `Closed` and the database's table of open logs hold it weakly, which
    /// keeps the allocation of an `Arc`'s contents after the last handle went (a dormant member
    /// has none): a few words, not the state.
    state: Box<Mutex<State>>,
}

/// The log as openraft sees it, ahead of the file by the writes still queued.
#[derive(Default)]
struct State {
    /// The vote last made durable (openraft reads back only what it saved).
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    /// The id of the last entry; may be at or below `last_purged` when everything was purged.
    last_log: Option<LogId>,
    /// Entries appended but not yet committed to the file, by index: a contiguous run ending at
    /// `last_log`.
    unwritten: BTreeMap<u64, Unwritten>,
    next_batch: u64,
    /// The first write error: later writes are refused.
    failure: Option<String>,
}

struct Unwritten {
    /// The append that brought it: a truncation and a new append may put another entry at the
    /// same index before the first one's commit, which must then not drop it from memory.
    batch: u64,
    entry: Arc<Entry>,
}

type Done = oneshot::Sender<Result<(), String>>;

enum Op {
    /// Entries `indexes` of append `batch` (those still unwritten when the writer takes it);
    /// `None` for an empty append, which has only its callback to answer, in turn.
    Append {
        batch: u64,
        indexes: Option<RangeInclusive<u64>>,
        flushed: IOFlushed<TypeConfig>,
        /// Told too when the append is durable, if `append` waits for that (a measurement).
        durable: Option<Done>,
    },
    Vote {
        vote: Vote,
        done: Done,
    },
    /// Not waited for: a commit point lost in a crash only means re-applying less at start-up.
    Committed(Option<LogId>),
    Truncate {
        from: u64,
        done: Done,
    },
    Purge {
        upto: LogId,
        done: Done,
    },
    /// A new member's vote and first entry, in one transaction (see [`LogStore::seed`]).
    Seed {
        vote: Vote,
        batch: u64,
        index: u64,
        done: Done,
    },
}

/// What one transaction does for a group, in order.
enum Step {
    Put(u64, Arc<Entry>),
    Vote(Vote),
    Committed(Option<LogId>),
    Truncate(u64),
    Purge(LogId),
}

impl LogStore {
    /// Opens (creating if absent) the log of group `name` in `db`. Blocking: call it where
    /// blocking is fine (start-up, or `spawn_blocking`).
    pub fn open(db: &LogDb, name: impl Into<GroupId>) -> Result<LogStore, ClusterError> {
        let name = name.into();
        let number = db.number(&name);
        let txn = db.shared.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let vote = get_meta::<Vote>(&meta, number, VOTE)?;
        let committed = get_meta::<LogId>(&meta, number, COMMITTED)?;
        let last_purged = get_meta::<LogId>(&meta, number, LAST_PURGED)?;
        let log = txn.open_table(LOG)?;
        // Entries a crash left below the purge point (deleted after it, a slice per write).
        if let Some(purged) = last_purged {
            if let Some(first) = log.range((number, 0)..=(number, purged.index))?.next() {
                first?;
                db.shared.stale_upto(number, purged.index);
            }
        }
        let last_log = match log.range((number, 0)..=(number, u64::MAX))?.next_back() {
            None => None,
            Some(item) => {
                let ((_, index), bytes) = {
                    let (key, value) = item?;
                    (key.value(), value)
                };
                Some(decode_entry(index, bytes.value())?.log_id)
            }
        };
        drop((meta, log, txn));

        let log = Arc::new(GroupLog {
            db: db.shared.clone(),
            number,
            name,
            state: Box::new(Mutex::new(State {
                vote,
                committed,
                last_purged,
                last_log,
                ..State::default()
            })),
        });
        db.claim(number, &log)?;
        Ok(LogStore { log })
    }

    /// The index of the last entry known committed, as last saved (entries up to it were
    /// applied in this log's previous life, unless a snapshot covers them).
    pub(crate) fn committed_index(&self) -> Option<u64> {
        self.log.state().committed.map(|id| id.index)
    }

    /// Watches for the store's handles to be dropped.
    pub fn closed(&self) -> Closed {
        Closed(Arc::downgrade(&self.log))
    }

    /// Where the group's snapshot is kept: beside its log, in the same database.
    pub(crate) fn snapshot_slot(&self) -> SnapshotSlot {
        SnapshotSlot {
            db: self.log.db.clone(),
            number: self.log.number,
            name: self.log.name.clone(),
        }
    }

    /// Queues a write and waits until it is durable.
    ///
    /// `op` changes the in-memory view (under the lock) and says what the file must do.
    async fn write(&self, op: impl FnOnce(&mut State, Done) -> Op) -> Result<(), ClusterError> {
        let (done, rx) = oneshot::channel();
        {
            let mut st = self.log.state();
            st.check()?;
            let op = op(&mut st, done);
            self.log.db.enqueue(&self.log, op);
        }
        durable(rx).await
    }

    /// Gives a member whose log is empty, and which has never voted, `vote` and `entry` (its
    /// first), both durable in one transaction when it returns: the state openraft's
    /// `initialize` leaves on the member that makes it, or that a member reached by that one's
    /// first append has. False, writing nothing, if the log holds anything or a vote.
    pub async fn seed(&self, vote: Vote, entry: Entry) -> Result<bool, ClusterError> {
        let (done, rx) = oneshot::channel();
        {
            let mut st = self.log.state();
            st.check()?;
            if st.vote.is_some() || st.last_log.is_some() || st.last_purged.is_some() {
                return Ok(false);
            }
            let (batch, index) = (st.next_batch, entry.log_id.index);
            st.next_batch += 1;
            st.last_log = Some(entry.log_id);
            let entry = Arc::new(entry);
            st.unwritten.insert(index, Unwritten { batch, entry });
            let op = Op::Seed {
                vote,
                batch,
                index,
                done,
            };
            self.log.db.enqueue(&self.log, op);
        }
        durable(rx).await.map(|()| true)
    }

    /// Makes `entries` readable and queues their write; the receiver says when they are durable
    /// if `append` is to wait for that.
    fn queue_append(
        &self,
        entries: Vec<Entry>,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<Option<oneshot::Receiver<Result<(), String>>>, io::Error> {
        let mut st = self.log.state();
        st.check()?;

        // The log must stay without holes: each entry follows the last one.
        let mut expected = st.next_index();
        for entry in &entries {
            let index = entry.log_id.index;
            let follows = match expected {
                Some(next) => index == next,
                None => index >= st.last_purged.next_index(),
            };
            if !follows {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "append of log entry {} would leave a hole (last: {:?}, purged: {:?})",
                        entry.log_id, st.last_log, st.last_purged
                    ),
                ));
            }
            expected = Some(index + 1);
        }

        let batch = st.next_batch;
        st.next_batch += 1;
        // An empty append writes nothing, but its callback still waits for the writes queued
        // before it.
        let indexes = match (entries.first(), entries.last()) {
            (Some(first), Some(last)) => Some(first.log_id.index..=last.log_id.index),
            _ => None,
        };
        if let Some(last) = entries.last() {
            st.last_log = Some(last.log_id);
        }
        for entry in entries {
            let index = entry.log_id.index;
            let entry = Arc::new(entry);
            st.unwritten.insert(index, Unwritten { batch, entry });
        }
        let (durable, flushed_here) = match self.log.db.appends_wait_for_flush() {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        self.log.db.enqueue(
            &self.log,
            Op::Append {
                batch,
                indexes,
                flushed: callback,
                durable,
            },
        );
        Ok(flushed_here)
    }

    /// Entries `start..end` that the log holds: from redb up to the first unwritten entry, from
    /// memory after it. `budget` stops the redb part once that many encoded bytes are read.
    async fn read(
        &self,
        start: u64,
        end: u64,
        budget: Option<usize>,
    ) -> Result<Vec<Entry>, ClusterError> {
        let (lo, stored_end, tail, txn) = {
            let st = self.log.state();
            let lo = start.max(st.last_purged.next_index());
            let hi = end.min(st.last_log.next_index());
            if lo >= hi {
                return Ok(Vec::new());
            }
            let first_unwritten = st.unwritten.keys().next().copied().unwrap_or(hi);
            let stored_end = first_unwritten.clamp(lo, hi);
            let tail: Vec<Arc<Entry>> = st
                .unwritten
                .range(stored_end..hi)
                .map(|(_, u)| u.entry.clone())
                .collect();
            // Under the lock: the snapshot then holds every entry memory no longer does.
            let txn = if lo < stored_end {
                Some(self.log.db.db.begin_read()?)
            } else {
                None
            };
            (lo, stored_end, tail, txn)
        };

        let number = self.log.number;
        let (mut entries, complete) = match txn {
            None => (Vec::new(), true),
            Some(txn) => {
                tokio::task::spawn_blocking(move || {
                    read_stored(&txn, number, lo, stored_end, budget)
                })
                .await??
            }
        };
        // A budget that stopped the stored part early: the tail would leave a hole.
        if complete {
            for entry in tail {
                let follows = entries
                    .last()
                    .is_none_or(|last: &Entry| last.log_id.index + 1 == entry.log_id.index);
                if !follows {
                    return Err(ClusterError::Corrupt(format!(
                        "log entry {} is not followed by {}",
                        entries.last().map_or(0, |e| e.log_id.index),
                        entry.log_id
                    )));
                }
                entries.push((*entry).clone());
            }
        }
        Ok(entries)
    }
}

/// Waits for the writer's answer to a write.
async fn durable(answer: oneshot::Receiver<Result<(), String>>) -> Result<(), ClusterError> {
    match answer.await {
        Ok(result) => result.map_err(ClusterError::Failed),
        Err(_) => Err(ClusterError::TaskEnded(
            "the writer dropped a write without an answer".into(),
        )),
    }
}

impl GroupLog {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves no half-made change behind (nothing under it
        // panics by design): carry on with the state as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A group's snapshot in the database: its metadata and the applier's bytes, replaced whole.
pub(crate) struct SnapshotSlot {
    db: Arc<Db>,
    number: u64,
    name: GroupId,
}

impl SnapshotSlot {
    /// The stored snapshot: its metadata and the applier's bytes. Blocking.
    pub(crate) fn load(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, ClusterError> {
        let txn = self.db.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let Some(value) = table.get(self.number)? else {
            return Ok(None);
        };
        let bytes = value.value();
        let corrupt =
            || ClusterError::Corrupt(format!("snapshot of group {}: truncated", self.name));
        let (len, rest) = bytes.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let len = usize::try_from(u64::from_le_bytes(*len))
            .ok()
            .filter(|&len| len <= rest.len())
            .ok_or_else(corrupt)?;
        let meta: SnapshotMeta = postcard::from_bytes(&rest[..len])
            .map_err(ClusterError::decode("snapshot metadata"))?;
        Ok(Some((meta, rest[len..].to_vec())))
    }

    /// Replaces the stored snapshot, durably: the metadata's length (u64, little endian), the
    /// postcard-encoded metadata, the applier's bytes to the end. Blocking.
    pub(crate) fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), ClusterError> {
        let meta = postcard::to_stdvec(meta).map_err(ClusterError::encode("snapshot metadata"))?;
        let mut value = Vec::with_capacity(8 + meta.len() + data.len());
        value.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        value.extend_from_slice(&meta);
        value.extend_from_slice(data);
        self.save_raw(&value)
    }

    /// Stores `value` as the group's snapshot, as it is (tests store damaged ones). Blocking.
    pub(crate) fn save_raw(&self, value: &[u8]) -> Result<(), ClusterError> {
        let mut txn = self.db.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        // A member that joins may store a snapshot before any entry.
        let names = self.db.put_unwritten_names(&txn)?;
        txn.open_table(SNAPSHOTS)?.insert(self.number, value)?;
        txn.commit()?;
        self.db.names_written(&names);
        Ok(())
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl State {
    fn check(&self) -> Result<(), ClusterError> {
        match &self.failure {
            Some(failure) => Err(ClusterError::Failed(failure.clone())),
            None => Ok(()),
        }
    }

    /// The index the next append must start at, if the log holds entries (an empty log, or one
    /// purged to its end, takes any index past the purge point: a snapshot may have moved it).
    fn next_index(&self) -> Option<u64> {
        let next = self.last_log.next_index();
        (next > self.last_purged.next_index()).then_some(next)
    }

    /// What the writer does for `ops`: the entries appends brought that are still unwritten
    /// (truncated or purged ones are not written at all), then the other changes, in order.
    fn steps(&self, ops: &[Op]) -> Vec<Step> {
        let mut steps = Vec::new();
        for op in ops {
            match op {
                Op::Append {
                    batch,
                    indexes: Some(indexes),
                    ..
                } => steps.extend(
                    self.unwritten
                        .range(indexes.clone())
                        .filter(|(_, u)| u.batch == *batch)
                        .map(|(index, u)| Step::Put(*index, u.entry.clone())),
                ),
                Op::Append { indexes: None, .. } => {}
                Op::Vote { vote, .. } => steps.push(Step::Vote(*vote)),
                Op::Committed(committed) => steps.push(Step::Committed(*committed)),
                Op::Truncate { from, .. } => steps.push(Step::Truncate(*from)),
                Op::Purge { upto, .. } => steps.push(Step::Purge(*upto)),
                Op::Seed {
                    vote, batch, index, ..
                } => {
                    steps.push(Step::Vote(*vote));
                    if let Some(u) = self.unwritten.get(index).filter(|u| u.batch == *batch) {
                        steps.push(Step::Put(*index, u.entry.clone()));
                    }
                }
            }
        }
        steps
    }

    /// `ops` are durable: their entries are now read from the file, their vote is the one to
    /// read back.
    fn written(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Append {
                    batch,
                    indexes: Some(indexes),
                    ..
                } => {
                    for index in indexes.clone() {
                        if self
                            .unwritten
                            .get(&index)
                            .is_some_and(|u| u.batch == *batch)
                        {
                            self.unwritten.remove(&index);
                        }
                    }
                }
                Op::Append { indexes: None, .. } => {}
                Op::Vote { vote, .. } => self.vote = Some(*vote),
                Op::Seed {
                    vote, batch, index, ..
                } => {
                    self.vote = Some(*vote);
                    if self.unwritten.get(index).is_some_and(|u| u.batch == *batch) {
                        self.unwritten.remove(index);
                    }
                }
                Op::Committed(_) | Op::Truncate { .. } | Op::Purge { .. } => {}
            }
        }
    }
}

fn answer(ops: Vec<Op>, result: &Result<(), String>) {
    for op in ops {
        match op {
            Op::Append {
                flushed, durable, ..
            } => {
                flushed.io_completed(result.clone().map_err(io::Error::other));
                if let Some(durable) = durable {
                    let _ = durable.send(result.clone());
                }
            }
            Op::Vote { done, .. }
            | Op::Truncate { done, .. }
            | Op::Purge { done, .. }
            | Op::Seed { done, .. } => {
                // The waiter may have gone (its future dropped): nothing to tell.
                let _ = done.send(result.clone());
            }
            Op::Committed(_) => {}
        }
    }
}

/// Entries `lo..end` from the file, checked to be the ones asked for, with no hole, and whether
/// they reach `end` (false when `budget` stopped the read).
///
/// The run may start after `lo`: a log need not start right after its purge point (openraft's
/// suite appends at index 1 on an empty log), and openraft tolerates entries missing at the
/// start of a range. Inside the run and at its end nothing may be missing.
fn read_stored(
    txn: &ReadTransaction,
    group: u64,
    lo: u64,
    end: u64,
    budget: Option<usize>,
) -> Result<(Vec<Entry>, bool), ClusterError> {
    let log = txn.open_table(LOG)?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut bytes_read = 0;
    for item in log.range((group, lo)..(group, end))? {
        let (key, bytes) = item?;
        let (_, index) = key.value();
        if let Some(last) = entries.last() {
            if index != last.log_id.index + 1 {
                return Err(ClusterError::Corrupt(format!(
                    "log entries {}..{index} are missing",
                    last.log_id.index + 1
                )));
            }
        }
        entries.push(decode_entry(index, bytes.value())?);
        bytes_read += bytes.value().len();
        if budget.is_some_and(|budget| bytes_read >= budget) {
            let complete = index + 1 == end;
            return Ok((entries, complete));
        }
    }
    if let Some(last) = entries.last() {
        if last.log_id.index + 1 != end {
            return Err(ClusterError::Corrupt(format!(
                "log entries {}..{end} are missing",
                last.log_id.index + 1
            )));
        }
    }
    Ok((entries, true))
}

fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, ClusterError> {
    let entry: Entry = postcard::from_bytes(bytes).map_err(ClusterError::decode("log entry"))?;
    if entry.log_id.index != index {
        return Err(ClusterError::Corrupt(format!(
            "log entry {} stored under index {index}",
            entry.log_id
        )));
    }
    Ok(entry)
}

/// `range` as `start..end`, `end` exclusive.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("group", &self.log.name)
            .finish_non_exhaustive()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        Ok(self.read(start, end, None).await?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.log.state().vote)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.read(start, end, Some(READ_SLICE_BYTES)).await?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let st = self.log.state();
        let last_log_id = if st.last_log.next_index() > st.last_purged.next_index() {
            st.last_log
        } else {
            st.last_purged
        };
        Ok(LogState {
            last_purged_log_id: st.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        Ok(self.write(|_, done| Op::Vote { vote, done }).await?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let mut st = self.log.state();
        st.check()?;
        st.committed = committed;
        self.log.db.enqueue(&self.log, Op::Committed(committed));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.log.state().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let flushed_here = self.queue_append(entries.into_iter().collect(), callback)?;
        if let Some(flushed) = flushed_here {
            match flushed.await {
                Ok(result) => result.map_err(io::Error::other)?,
                Err(_) => return Err(io::Error::other("the writer dropped an append")),
            }
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.next_index();
        Ok(self
            .write(|st, done| {
                st.unwritten.split_off(&from);
                if st.last_log.next_index() > from {
                    st.last_log = last_log_id;
                }
                Op::Truncate { from, done }
            })
            .await?)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        Ok(self
            .write(|st, done| {
                let upto = if st.last_purged.next_index() > log_id.index {
                    // Never moves back: purging less than before is a no-op.
                    st.last_purged.unwrap_or(log_id)
                } else {
                    log_id
                };
                st.unwritten = st.unwritten.split_off(&upto.index.saturating_add(1));
                st.last_purged = Some(upto);
                Op::Purge { upto, done }
            })
            .await?)
    }
}
