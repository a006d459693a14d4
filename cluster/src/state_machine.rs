//! openraft's [`RaftStateMachine`] around an [`Applier`] the application supplies: what a committed
//! entry does is the application's business, the bookkeeping Raft needs (last applied log id, last
//! membership, the snapshot) is done here.
//!
//! The applied state is volatile: only snapshots are persisted (beside the group's log, in the
//! node's Raft database, replaced whole in one transaction). On open the last snapshot is installed into the applier and reported as applied;
//! openraft then re-applies the committed log after it (the log store keeps the commit point).

use std::fmt;
use std::io::{self, Cursor};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use crate::error::ClusterError;
use crate::log_store::{LogStore, SnapshotSlot};
use crate::shared_copies;
use crate::types::{Entry, LogId, Proposal, SnapshotMeta, StoredMembership, TypeConfig};

/// What a group's committed entries do: the application's side of the state machine. Its state is
/// volatile: on start the group installs the last snapshot, then re-applies the committed log after it.
pub trait Applier: Send + Sync + 'static {
    /// Applies one committed entry, in log order, on every member. Must be deterministic.
    fn apply(&self, index: u64, proposal: &Proposal);
    /// Everything applied so far, as bytes a fresh member can install.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces everything applied with a snapshot's contents.
    fn install(&self, snapshot: &[u8]);
}

/// A snapshot as openraft hands it around: metadata, and the applier's bytes to read.
type SnapshotOf = openraft::type_config::alias::SnapshotOf<TypeConfig, Cursor<Vec<u8>>>;

/// A group's state machine. Cloning gives another handle on the same one (openraft's snapshot
/// builder is one).
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

struct Shared {
    applier: Arc<dyn Applier>,
    /// Held while entries are applied and while the applier's snapshot is taken, so a snapshot's
    /// bytes and its last log id agree. An async lock: `apply` holds it across the entry stream.
    applied: Arc<tokio::sync::Mutex<Applied>>,
    /// The current snapshot, as persisted; its own lock so reading it does not wait for apply.
    /// Held only to read or replace it, never across file I/O (async callers take it).
    /// Boxed: most groups (idle queues) never take one, and their state machine is kept while
    /// they sleep.
    current: Mutex<Option<Box<Stored>>>,
    /// Serializes snapshot writes (a build and an install may race); taken on blocking threads
    /// only.
    persisting: Mutex<()>,
    slot: SnapshotSlot,
}

struct Applied {
    last_applied: Option<LogId>,
    /// Shared with a dormant member's frozen metrics (see `group::dormant`): one copy.
    last_membership: Arc<StoredMembership>,
}

impl Default for Applied {
    fn default() -> Self {
        Applied {
            last_applied: None,
            // Nothing applied yet (a group born dormant): the one empty membership.
            last_membership: shared_copies::membership(StoredMembership::default()),
        }
    }
}

#[derive(Clone)]
struct Stored {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl StateMachine {
    /// The membership as of the last entry applied.
    pub(crate) async fn membership(&self) -> Arc<StoredMembership> {
        self.shared.applied.lock().await.last_membership.clone()
    }

    /// Opens the state machine of the group whose log is `log` (its snapshot is kept beside the
    /// log). A persisted snapshot is installed into `applier`, and its last log id and membership
    /// are reported as applied. Blocking (reads the database, runs `Applier::install`).
    pub fn open(log: &LogStore, applier: Arc<dyn Applier>) -> Result<StateMachine, ClusterError> {
        let slot = log.snapshot_slot();
        let current = slot
            .load()?
            .map(|(meta, data)| Box::new(Stored { meta, data }));
        let mut applied = Applied::default();
        if let Some(stored) = &current {
            applier.install(&stored.data);
            applied.last_applied = stored.meta.last_log_id;
            applied.last_membership =
                shared_copies::membership(stored.meta.last_membership.clone());
        }
        Ok(StateMachine {
            shared: Arc::new(Shared {
                applier,
                applied: Arc::new(tokio::sync::Mutex::new(applied)),
                current: Mutex::new(current),
                persisting: Mutex::new(()),
                slot,
            }),
        })
    }

    /// The last entry applied.
    pub(crate) async fn last_applied(&self) -> Option<LogId> {
        self.shared.applied.lock().await.last_applied
    }

    /// Applies committed `entries`, which follow the last applied, as openraft applies the
    /// committed log when its instance starts: for a member started dormant (see
    /// `group::dormant::restarted`), which runs no instance.
    pub(crate) async fn replay(&self, entries: &[Entry]) {
        let mut applied = self.shared.applied.lock().await;
        for entry in entries {
            self.shared.apply_one(&mut applied, entry);
        }
    }

    /// The index of the last snapshot taken or installed.
    pub(crate) fn snapshot_index(&self) -> Option<u64> {
        self.shared
            .current()
            .as_ref()
            .and_then(|stored| stored.meta.last_log_id.map(|id| id.index))
    }
}

impl Shared {
    fn apply_one(&self, applied: &mut Applied, entry: &Entry) {
        match &entry.payload {
            // A new leader's first entry: nothing for the application.
            EntryPayload::Blank => {}
            EntryPayload::Normal(proposal) => self.applier.apply(entry.log_id.index, proposal),
            EntryPayload::Membership(membership) => {
                applied.last_membership = shared_copies::membership(StoredMembership::new(
                    Some(entry.log_id),
                    membership.clone(),
                ));
            }
        }
        applied.last_applied = Some(entry.log_id);
    }

    fn current(&self) -> MutexGuard<'_, Option<Box<Stored>>> {
        // Nothing panics while holding it; a poisoned lock still holds a whole snapshot.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persists `stored` and makes it the current snapshot, unless the current one is newer (a
    /// build that raced an install): a snapshot never moves back. Blocking.
    fn keep(&self, stored: &Stored) -> Result<(), ClusterError> {
        let _persisting = self.persisting.lock().unwrap_or_else(|p| p.into_inner());
        let newer = self
            .current()
            .as_ref()
            .is_some_and(|c| c.meta.last_log_id > stored.meta.last_log_id);
        if newer {
            return Ok(());
        }
        self.slot.save(&stored.meta, &stored.data)?;
        *self.current() = Some(Box::new(stored.clone()));
        Ok(())
    }
}

impl fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachine")
            .field("group", &self.shared.slot.name())
            .finish_non_exhaustive()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf, io::Error> {
        // openraft builds snapshots on a task of their own, beside apply: the lock makes the
        // applier's bytes and the last applied id one moment. Taking the bytes and writing them
        // are blocking work; only taking them holds apply back.
        let applied = self.shared.applied.clone().lock_owned().await;
        let shared = self.shared.clone();
        let stored = tokio::task::spawn_blocking(move || -> Result<Stored, ClusterError> {
            let stored = Stored {
                meta: SnapshotMeta {
                    last_log_id: applied.last_applied,
                    last_membership: (*applied.last_membership).clone(),
                },
                data: shared.applier.snapshot(),
            };
            drop(applied);
            shared.keep(&stored)?;
            Ok(stored)
        })
        .await
        .map_err(ClusterError::from)??;
        Ok(SnapshotOf {
            meta: stored.meta,
            snapshot: Cursor::new(stored.data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.shared.applied.lock().await;
        Ok((applied.last_applied, (*applied.last_membership).clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut applied = self.shared.applied.lock().await;
        while let Some((entry, responder)) = entries.try_next().await? {
            self.shared.apply_one(&mut applied, &entry);
            // Only the proposer's own node has a responder: `client_write` returns on it.
            if let Some(responder) = responder {
                responder.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let stored = Stored {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        let mut applied = self.shared.applied.clone().lock_owned().await;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ClusterError> {
            // Persisted first: if that fails, nothing has changed.
            shared.keep(&stored)?;
            shared.applier.install(&stored.data);
            applied.last_applied = stored.meta.last_log_id;
            applied.last_membership = shared_copies::membership(stored.meta.last_membership);
            Ok(())
        })
        .await
        .map_err(ClusterError::from)??;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf>, io::Error> {
        Ok(self.shared.current().as_ref().map(|stored| SnapshotOf {
            meta: stored.meta.clone(),
            snapshot: Cursor::new(stored.data.clone()),
        }))
    }
}
