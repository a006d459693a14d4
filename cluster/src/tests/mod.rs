//! Tests of the group storage: openraft's own storage suite against [`LogStore`] and
//! [`StateMachine`], then what the suite does not cover (restarts, snapshots and replay, appends
//! read before they are flushed).

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderIdExt;
use openraft::RaftTypeConfig;

use crate::types::{Entry, LogId};
use crate::{Applier, LogDb, LogStore, Proposal, StateMachine, TypeConfig};

mod groups;
mod restart;
mod suite;
mod unflushed;

/// An applier that remembers what it applied; its snapshot is the postcard encoding of that.
#[derive(Default)]
pub(crate) struct Recorder {
    applied: Mutex<Vec<(u64, Proposal)>>,
}

impl Recorder {
    pub(crate) fn applied(&self) -> Vec<(u64, Proposal)> {
        self.applied.lock().unwrap().clone()
    }

    pub(crate) fn indexes(&self) -> Vec<u64> {
        self.applied().into_iter().map(|(i, _)| i).collect()
    }
}

impl Applier for Recorder {
    fn apply(&self, index: u64, proposal: &Proposal) {
        self.applied.lock().unwrap().push((index, proposal.clone()));
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_stdvec(&*self.applied.lock().unwrap()).unwrap()
    }

    fn install(&self, snapshot: &[u8]) {
        *self.applied.lock().unwrap() = postcard::from_bytes(snapshot).unwrap();
    }
}

/// Group "g" of the Raft database in `dir`, as a node opens it (the database closes when the
/// returned handles are dropped).
pub(crate) fn open(dir: &Path, applier: Arc<dyn Applier>) -> (LogStore, StateMachine) {
    let db = LogDb::open(dir.join("raft.redb")).unwrap();
    open_group(&db, "g", applier)
}

pub(crate) fn open_group(
    db: &LogDb,
    name: &str,
    applier: Arc<dyn Applier>,
) -> (LogStore, StateMachine) {
    let log = LogStore::open(db, name).unwrap();
    let sm = StateMachine::open(&log, applier).unwrap();
    (log, sm)
}

pub(crate) fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        <TypeConfig as RaftTypeConfig>::LeaderId::new_committed(term, 1),
        index,
    )
}

pub(crate) fn blank(term: u64, index: u64) -> Entry {
    Entry::new_blank(log_id(term, index))
}

pub(crate) fn proposal(index: u64) -> Proposal {
    Proposal {
        origin: 7,
        number: index * 10,
        payload: format!("entry {index}").into_bytes(),
    }
}

pub(crate) fn normal(term: u64, index: u64) -> Entry {
    Entry::new_normal(log_id(term, index), proposal(index))
}

/// Appends without waiting for the flush; the receiver says when it is durable.
pub(crate) async fn append_unflushed(
    log: &mut LogStore,
    entries: Vec<Entry>,
) -> impl std::future::Future<Output = io::Result<()>> {
    use openraft::storage::RaftLogStorage;
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.unwrap();
    async move { rx.await.map_err(|_| io::Error::other("callback dropped"))? }
}

/// Appends and waits until durable.
pub(crate) async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    append_unflushed(log, entries).await.await.unwrap();
}

/// Entries as (term, index), to compare logs briefly.
pub(crate) fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}
