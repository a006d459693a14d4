//! The node's one Raft database: every group's log, vote, commit and purge points and snapshot in
//! one redb file, written by one writer.
//!
//! Why one file for all groups: a node may hold thousands of groups (a quorum queue is one), and
//! their appends arrive together. One writer drains what every group queued into one transaction
//! and one fsync (group commit across groups, as RabbitMQ's Ra WAL does), instead of a file, a
//! page cache and an fsync per group.
//!
//! A group is known by a number the database gives its name on first use (the `groups` table), so
//! its keys stay short and ordered: `(group, index)` for entries, `(group, key)` for the values
//! beside the log.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{GroupLog, Op, Step};
use crate::error::ClusterError;
use crate::link::GroupId;

/// Log entries by (group, index).
pub(super) const LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("log");
/// The few values beside a group's log, by (group, one of the keys below).
pub(super) const META: TableDefinition<(u64, u8), &[u8]> = TableDefinition::new("meta");
pub(super) const VOTE: u8 = 0;
pub(super) const COMMITTED: u8 = 1;
pub(super) const LAST_PURGED: u8 = 2;
/// A group's snapshot (its metadata and the applier's bytes), by group.
pub(super) const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
/// Group names and the numbers their keys carry.
const GROUPS: TableDefinition<&str, u64> = TableDefinition::new("groups");

/// redb's page cache. Its default (1 GiB) assumes the process is mostly a database; the entries
/// read most (the recent ones) are served from memory before they are even written.
const CACHE_BYTES: usize = 32 << 20;

/// The node's Raft database. Cloning gives another handle on it; the file stays open until every
/// handle (and every group's log opened from it) is dropped.
#[derive(Clone)]
pub struct LogDb {
    pub(super) shared: Arc<Db>,
}

pub(super) struct Db {
    pub(super) db: Database,
    pub(super) path: PathBuf,
    /// `append` returns only once its entries are durable, as openraft 0.9's storage must: for
    /// measuring what 0.10's pipelining gains (`benches/raft-pipelining`), never set otherwise.
    appends_wait_for_flush: std::sync::atomic::AtomicBool,
    /// The first failed write (see [`LogDb::failed`]).
    failed: tokio::sync::watch::Sender<Option<String>>,
    writer: Mutex<Writer>,
    /// Tests hold the writer before its commits while this is set (a disk that stalls).
    #[cfg(test)]
    stalled: (Mutex<bool>, std::sync::Condvar),
    groups: Mutex<Groups>,
}

#[derive(Default)]
struct Groups {
    numbers: HashMap<GroupId, u64>,
    next: u64,
    /// Names given a number that the file does not hold yet: the next write transaction
    /// stores them, so a name is in the file no later than anything stored under its number
    /// (a number given to a group that wrote nothing before a crash is simply given again).
    unwritten_names: Vec<(GroupId, u64)>,
    /// The groups whose log is open now: a group is opened once at a time (a second handle
    /// would keep a second view of what is unwritten).
    open: HashMap<u64, Weak<GroupLog>>,
}

/// What the writer has to do, across groups, in call order.
#[derive(Default)]
struct Writer {
    queue: Vec<(Arc<GroupLog>, Op)>,
    /// A writer task is running (and will take what is queued).
    writing: bool,
    /// A writer run is on its way for commit points queued alone (see [`WRITE_LONE_AFTER`]).
    lone_scheduled: bool,
    /// Groups whose file may still hold entries below their purge point, by group: up to which
    /// index. A purge moves the purge point at once and deletes the entries below it a slice per
    /// write ([`DELETED_PER_WRITE`]): a snapshot's purge of thousands of entries in one
    /// transaction held every group's appends behind it for milliseconds, on every member at
    /// once (they snapshot at the same index).
    stale: BTreeMap<u64, u64>,
}

impl Writer {
    /// Group `group`'s file may hold entries up to `upto` below its purge point.
    fn note_stale(&mut self, group: u64, upto: u64) {
        let at = self.stale.entry(group).or_insert(upto);
        *at = (*at).max(upto);
    }
}

/// How many purged entries a write deletes at most beside what it was started for (or twice
/// the entries it adds, if more).
const DELETED_PER_WRITE: u64 = 128;

/// How long commit points queued alone wait for the next write before the writer takes them on
/// their own (an idle node's last ones). Nobody waits for a commit point (one lost in a crash
/// only means re-applying less at start-up), and a writer run of its own after each commit (a
/// thread woken, a transaction, an fsync) cost every member of a group as much again as the
/// append before it.
const WRITE_LONE_AFTER: Duration = Duration::from_millis(100);

impl LogDb {
    /// Opens (creating if absent) the database at `path`. Blocking.
    pub fn open(path: impl AsRef<Path>) -> Result<LogDb, ClusterError> {
        let path = path.as_ref();
        // Handles dropped a moment ago may still be closing the file on another thread (the
        // writer's last drop): give it a little while.
        let mut attempts = 0;
        let db = loop {
            match Database::builder().set_cache_size(CACHE_BYTES).create(path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if attempts < 200 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other?,
            }
        };
        // A read transaction cannot open a table that was never created.
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.open_table(SNAPSHOTS)?;
        txn.open_table(GROUPS)?;
        txn.commit()?;

        let mut groups = Groups {
            next: 1,
            ..Groups::default()
        };
        let txn = db.begin_read()?;
        for item in txn.open_table(GROUPS)?.iter()? {
            let (name, number) = item?;
            groups.next = groups.next.max(number.value() + 1);
            groups.numbers.insert(name.value().into(), number.value());
        }
        drop(txn);
        Ok(LogDb {
            shared: Arc::new(Db {
                db,
                path: path.to_owned(),
                appends_wait_for_flush: Default::default(),
                failed: tokio::sync::watch::Sender::new(None),
                writer: Mutex::default(),
                #[cfg(test)]
                stalled: Default::default(),
                groups: Mutex::new(groups),
            }),
        })
    }

    /// The first write that failed (a full disk, an I/O error), once one has. The file takes no
    /// more writes after it (redb must be opened again), so every group here stops: the node
    /// cannot go on as a member, and whoever runs it decides what to do (Warren stops the
    /// process, to be started again once the disk is fixed).
    pub fn failed(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.shared.failed.subscribe()
    }

    /// Makes `append` wait until its entries are durable, as openraft 0.9 requires of a log
    /// store, instead of returning once they are readable (0.10's pipelining): a measurement
    /// knob, off unless set.
    pub fn set_appends_wait_for_flush(&self, wait: bool) {
        self.shared
            .appends_wait_for_flush
            .store(wait, std::sync::atomic::Ordering::Relaxed);
    }

    /// The names of the groups the database holds.
    pub fn group_names(&self) -> Vec<String> {
        let groups = self.shared.groups();
        let mut names: Vec<String> = groups.numbers.keys().map(|n| n.to_string()).collect();
        names.sort();
        names
    }

    /// How many groups the database holds (a log each, until removed).
    pub fn group_count(&self) -> usize {
        self.shared.groups().numbers.len()
    }

    /// The number of group `name`, given on first use: stored with the first write that stores
    /// anything of the group (see [`Groups::unwritten_names`]), not in a transaction of its own.
    pub(super) fn number(&self, name: &GroupId) -> u64 {
        let mut groups = self.shared.groups();
        if let Some(&number) = groups.numbers.get(name) {
            return number;
        }
        let number = groups.next;
        groups.next += 1;
        groups.numbers.insert(name.clone(), number);
        groups.unwritten_names.push((name.clone(), number));
        number
    }

    /// Registers `log` as group `number`'s open log, waiting a little for a previous one to close
    /// (a group stopped a moment ago whose last handle is being dropped).
    pub(super) fn claim(&self, number: u64, log: &Arc<GroupLog>) -> Result<(), ClusterError> {
        for _ in 0..200 {
            {
                let mut groups = self.shared.groups();
                let taken = groups
                    .open
                    .get(&number)
                    .is_some_and(|open| open.strong_count() > 0);
                if !taken {
                    groups.open.insert(number, Arc::downgrade(log));
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(ClusterError::Failed(format!(
            "group {} is open already",
            log.name
        )))
    }

    /// Removes group `name` and everything it stored (a deleted quorum queue's group). Its log
    /// must be closed. Blocking.
    pub fn remove_group(&self, name: &str) -> Result<(), ClusterError> {
        let mut groups = self.shared.groups();
        let Some(&number) = groups.numbers.get(name) else {
            return Ok(());
        };
        if groups
            .open
            .get(&number)
            .is_some_and(|open| open.strong_count() > 0)
        {
            return Err(ClusterError::Failed(format!("group {name} is still open")));
        }
        let mut txn = self.shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(LOG)?
            .retain_in((number, 0)..=(number, u64::MAX), |_, _| false)?;
        txn.open_table(META)?
            .retain_in((number, 0)..=(number, u8::MAX), |_, _| false)?;
        txn.open_table(SNAPSHOTS)?.remove(number)?;
        txn.open_table(GROUPS)?.remove(name)?;
        txn.commit()?;
        self.shared.writer().stale.remove(&number);
        groups.numbers.remove(name);
        groups.open.remove(&number);
        groups.unwritten_names.retain(|(_, n)| *n != number);
        Ok(())
    }
}

#[cfg(test)]
impl LogDb {
    /// Holds every write before its commit while `on` (a disk that stalls), or lets them go.
    pub(crate) fn set_stalled(&self, on: bool) {
        let (stalled, changed) = &self.shared.stalled;
        *stalled.lock().unwrap() = on;
        changed.notify_all();
    }

    /// The indexes of the entries group `name` has in the file (below its purge point too).
    pub(crate) fn stored_indexes(&self, name: &str) -> Vec<u64> {
        let number = self.shared.groups().numbers[name];
        let txn = self.shared.db.begin_read().unwrap();
        let log = txn.open_table(LOG).unwrap();
        log.range((number, 0)..=(number, u64::MAX))
            .unwrap()
            .map(|item| item.unwrap().0.value().1)
            .collect()
    }
}

impl Db {
    #[cfg(test)]
    fn wait_while_stalled(&self) {
        let (stalled, changed) = &self.stalled;
        let mut on = stalled.lock().unwrap_or_else(|p| p.into_inner());
        while *on {
            on = changed.wait(on).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(super) fn appends_wait_for_flush(&self) -> bool {
        self.appends_wait_for_flush
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn groups(&self) -> MutexGuard<'_, Groups> {
        // Nothing under the lock panics by design; carry on with what it holds.
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores in `txn` the names given a number since the last write (see
    /// [`Groups::unwritten_names`]): their numbers, to pass to [`Db::names_written`] once `txn`
    /// is committed. Called with anything a group stores, after its ops were taken (a group's
    /// name is given before it queues any).
    pub(super) fn put_unwritten_names(
        &self,
        txn: &redb::WriteTransaction,
    ) -> Result<Vec<u64>, ClusterError> {
        let names = self.groups().unwritten_names.clone();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut table = txn.open_table(GROUPS)?;
        for (name, number) in &names {
            table.insert(&**name, *number)?;
        }
        Ok(names.into_iter().map(|(_, number)| number).collect())
    }

    /// The names [`Db::put_unwritten_names`] stored are in the file.
    pub(super) fn names_written(&self, numbers: &[u64]) {
        if !numbers.is_empty() {
            self.groups()
                .unwritten_names
                .retain(|(_, n)| !numbers.contains(n));
        }
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `op` of group `log` (called under the group's lock, so a group's ops queue in the
    /// order it made them), starting the writer if none is running.
    pub(super) fn enqueue(self: &Arc<Self>, log: &Arc<GroupLog>, op: Op) {
        let mut writer = self.writer();
        let waited_for = !matches!(op, Op::Committed(_));
        writer.queue.push((log.clone(), op));
        if writer.writing {
            return;
        }
        // A commit point goes with the next write, or on its own WRITE_LONE_AFTER from now.
        if !waited_for && self.schedule_lone(&mut writer) {
            return;
        }
        self.start_writer(&mut writer);
    }

    /// Schedules a writer run [`WRITE_LONE_AFTER`] from now for what is queued then, unless one
    /// is scheduled: whether one is (not without a runtime to wait on).
    fn schedule_lone(self: &Arc<Self>, writer: &mut Writer) -> bool {
        if !writer.lone_scheduled {
            writer.lone_scheduled = write_lone_after(self);
        }
        writer.lone_scheduled
    }

    /// Starts the writer on what is queued, unless it is running.
    fn start_writer(self: &Arc<Self>, writer: &mut Writer) {
        if !writer.writing {
            writer.writing = true;
            let db = self.clone();
            tokio::task::spawn_blocking(move || write_queued(db));
        }
    }

    /// Notes that group `number`'s file may hold entries up to `upto` below its purge point
    /// (found at start-up: a purge whose deletion a crash interrupted).
    pub(super) fn stale_upto(self: &Arc<Self>, number: u64, upto: u64) {
        let mut writer = self.writer();
        writer.note_stale(number, upto);
        // Without a runtime to wait on, the next write starts on them.
        if !writer.writing {
            self.schedule_lone(&mut writer);
        }
    }

    /// Writes at once what waits for the next write (commit points): a group that closes does
    /// not keep its log open until then.
    pub(super) fn write_now(self: &Arc<Self>) {
        let mut writer = self.writer();
        if !writer.queue.is_empty() {
            self.start_writer(&mut writer);
        }
    }

    /// One transaction for the steps of every group the writer took, and a slice of the purged
    /// entries still in the file (`stale`), durable before it returns: the groups whose purged
    /// entries are all gone, with the index they were purged to.
    fn commit(
        &self,
        plans: &[(u64, Vec<Step>)],
        stale: &BTreeMap<u64, u64>,
    ) -> Result<Vec<(u64, u64)>, ClusterError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let names = self.put_unwritten_names(&txn)?;
        let mut cleaned = Vec::new();
        {
            let mut log = txn.open_table(LOG)?;
            let mut meta = txn.open_table(META)?;
            for (group, steps) in plans {
                let group = *group;
                for step in steps {
                    match step {
                        Step::Put(index, entry) => {
                            let bytes = postcard::to_stdvec(&**entry)
                                .map_err(ClusterError::encode("log entry"))?;
                            log.insert((group, *index), bytes.as_slice())?;
                        }
                        Step::Vote(vote) => put_meta(&mut meta, group, VOTE, vote)?,
                        Step::Committed(Some(committed)) => {
                            put_meta(&mut meta, group, COMMITTED, committed)?
                        }
                        Step::Committed(None) => {
                            meta.remove((group, COMMITTED))?;
                        }
                        Step::Truncate(from) => {
                            log.retain_in((group, *from)..=(group, u64::MAX), |_, _| false)?
                        }
                        // The entries below it are deleted later (`stale`); nothing reads
                        // below a purge point, and start-up finds those a crash left.
                        Step::Purge(upto) => put_meta(&mut meta, group, LAST_PURGED, upto)?,
                    }
                }
            }
            // At least twice what this write adds, so that deleting keeps up with any load.
            let added = plans
                .iter()
                .flat_map(|(_, steps)| steps)
                .filter(|step| matches!(step, Step::Put(..)))
                .count() as u64;
            let mut budget = DELETED_PER_WRITE.max(2 * added);
            for (&group, &upto) in stale {
                if budget == 0 {
                    break;
                }
                // Entries run without a hole from the first one stored.
                let first = match log.range((group, 0)..=(group, upto))?.next() {
                    None => None,
                    Some(item) => Some(item?.0.value().1),
                };
                let Some(first) = first else {
                    cleaned.push((group, upto));
                    continue;
                };
                let last = upto.min(first.saturating_add(budget - 1));
                log.retain_in((group, first)..=(group, last), |_, _| false)?;
                budget -= last - first + 1;
                if last == upto {
                    cleaned.push((group, upto));
                }
            }
        }
        txn.commit()?;
        self.names_written(&names);
        Ok(cleaned)
    }
}

/// The writer: takes what every group queued, commits it in one transaction, tells the waiters,
/// until nothing is queued. Runs on the blocking pool; one at a time per database
/// (`Writer::writing`).
fn write_queued(db: Arc<Db>) {
    loop {
        let taken = {
            let mut writer = db.writer();
            let taken = std::mem::take(&mut writer.queue);
            if taken.is_empty() && writer.stale.is_empty() {
                writer.writing = false;
                return;
            }
            taken
        };

        // Each group's ops, in its order; groups in the order they first queued.
        let mut batches: Vec<(Arc<GroupLog>, Vec<Op>)> = Vec::new();
        let mut position: HashMap<u64, usize> = HashMap::new();
        for (log, op) in taken {
            let at = *position.entry(log.number).or_insert_with(|| {
                batches.push((log.clone(), Vec::new()));
                batches.len() - 1
            });
            batches[at].1.push(op);
        }

        // A group that failed before writes nothing more; its ops are answered with that failure.
        let mut plans = Vec::new();
        let mut refused = Vec::new();
        for (log, ops) in &batches {
            let st = log.state();
            match st.check() {
                Ok(()) => plans.push((log.number, st.steps(ops))),
                Err(e) => refused.push((log.number, e.to_string())),
            }
        }

        // What purges this write makes join the purged entries still to delete.
        let stale = {
            let mut writer = db.writer();
            for (group, steps) in &plans {
                for step in steps {
                    if let Step::Purge(upto) = step {
                        writer.note_stale(*group, upto.index);
                    }
                }
            }
            writer.stale.clone()
        };

        // A panic in redb must not leave `writing` set with nobody writing: every later write
        // would wait forever. It fails the groups instead, as an error would.
        #[cfg(test)]
        db.wait_while_stalled();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| db.commit(&plans, &stale)))
            .unwrap_or_else(|_| Err(ClusterError::Failed("the raft log writer panicked".into())));
        let result = result.map(|cleaned| {
            let mut writer = db.writer();
            for (group, upto) in cleaned {
                // Unless a purge since moved it further.
                if writer.stale.get(&group) == Some(&upto) {
                    writer.stale.remove(&group);
                }
            }
        });
        if let Err(e) = &result {
            tracing::error!(path = %db.path.display(), error = %e, "raft log write failed");
            // The file takes no more writes.
            db.writer().stale.clear();
            db.failed.send_if_modified(|failed| {
                let first = failed.is_none();
                if first {
                    *failed = Some(e.to_string());
                }
                first
            });
        }
        let result = result.map_err(|e| e.to_string());

        let mut answers = Vec::with_capacity(batches.len());
        for (log, ops) in batches {
            let outcome = match refused.iter().find(|(number, _)| *number == log.number) {
                Some((_, failure)) => Err(failure.clone()),
                None => {
                    let mut st = log.state();
                    match &result {
                        Ok(()) => st.written(&ops),
                        Err(e) => {
                            if st.failure.is_none() {
                                st.failure = Some(e.clone());
                            }
                        }
                    }
                    result.clone()
                }
            };
            // The group's handle goes before the answer: whoever waits for the last write may
            // then drop its own handles and open the group (or the file) again.
            drop(log);
            answers.push((ops, outcome));
        }

        let idle = {
            let mut writer = db.writer();
            // Commit points queued alone meanwhile wait, as in `enqueue`, and so do purged
            // entries left to delete.
            let waited_for = writer
                .queue
                .iter()
                .any(|(_, op)| !matches!(op, Op::Committed(_)));
            let left = !writer.queue.is_empty() || (result.is_ok() && !writer.stale.is_empty());
            writer.writing = waited_for || (left && !db.schedule_lone(&mut writer));
            !writer.writing
        };
        if idle {
            drop(db);
            for (ops, outcome) in answers {
                super::answer(ops, &outcome);
            }
            return;
        }
        for (ops, outcome) in answers {
            super::answer(ops, &outcome);
        }
    }
}

/// Starts the writer [`WRITE_LONE_AFTER`] from now on what is queued then, if it is not running
/// (and the database is still open): whether that is scheduled.
fn write_lone_after(db: &Arc<Db>) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    let db = Arc::downgrade(db);
    runtime.spawn(async move {
        tokio::time::sleep(WRITE_LONE_AFTER).await;
        let Some(db) = db.upgrade() else {
            return;
        };
        let mut writer = db.writer();
        writer.lone_scheduled = false;
        if !writer.queue.is_empty() || !writer.stale.is_empty() {
            db.start_writer(&mut writer);
        }
    });
    true
}

pub(super) fn put_meta<T: serde::Serialize>(
    meta: &mut redb::Table<(u64, u8), &'static [u8]>,
    group: u64,
    key: u8,
    value: &T,
) -> Result<(), ClusterError> {
    let bytes = postcard::to_stdvec(value).map_err(ClusterError::encode(meta_name(key)))?;
    meta.insert((group, key), bytes.as_slice())?;
    Ok(())
}

pub(super) fn get_meta<T: serde::de::DeserializeOwned>(
    meta: &impl ReadableTable<(u64, u8), &'static [u8]>,
    group: u64,
    key: u8,
) -> Result<Option<T>, ClusterError> {
    match meta.get((group, key))? {
        None => Ok(None),
        Some(bytes) => postcard::from_bytes(bytes.value())
            .map(Some)
            .map_err(ClusterError::decode(meta_name(key))),
    }
}

fn meta_name(key: u8) -> &'static str {
    match key {
        VOTE => "vote",
        COMMITTED => "commit point",
        LAST_PURGED => "purge point",
        _ => "log value",
    }
}

impl std::fmt::Debug for LogDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogDb")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}
