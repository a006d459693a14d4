//! openraft's [`RaftStateMachine`] around an [`Applier`] the application supplies: what a committed
//! entry does is the application's business, the bookkeeping Raft needs (last applied log id, last
//! membership, the snapshot) is done here.
//!
//! The applied state is volatile: only snapshots are persisted (one file per group, replaced
//! atomically). On open the last snapshot is installed into the applier and reported as applied;
//! openraft then re-applies the committed log after it (the log store keeps the commit point).

use std::fmt;
use std::fs;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use crate::error::ClusterError;
use crate::types::{LogId, Proposal, SnapshotMeta, StoredMembership, TypeConfig};

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

/// The snapshot file starts with this (the format's version is its last byte), then the metadata's
/// length (u64, little endian), the postcard-encoded metadata, and the applier's bytes to the end:
/// the bytes are written as they are, not copied into an encoding.
const SNAPSHOT_MAGIC: &[u8; 8] = b"WRNSNAP1";

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
    current: Mutex<Option<Stored>>,
    /// Serializes snapshot writes (a build and an install may race); taken on blocking threads
    /// only.
    persisting: Mutex<()>,
    file: SnapshotFile,
}

#[derive(Default)]
struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

#[derive(Clone)]
struct Stored {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

struct SnapshotFile {
    path: PathBuf,
    /// Written then renamed over `path`: a crash leaves the old snapshot or the new one, whole.
    tmp: PathBuf,
}

impl StateMachine {
    /// Opens a group's state machine: `path` is its snapshot file (created on the first snapshot).
    /// A persisted snapshot is installed into `applier`, and its last log id and membership are
    /// reported as applied. Blocking (reads the file, runs `Applier::install`).
    pub fn open(
        path: impl AsRef<Path>,
        applier: Arc<dyn Applier>,
    ) -> Result<StateMachine, ClusterError> {
        let file = SnapshotFile::new(path.as_ref());
        let current = file.load()?;
        let mut applied = Applied::default();
        if let Some(stored) = &current {
            applier.install(&stored.data);
            applied.last_applied = stored.meta.last_log_id;
            applied.last_membership = stored.meta.last_membership.clone();
        }
        Ok(StateMachine {
            shared: Arc::new(Shared {
                applier,
                applied: Arc::new(tokio::sync::Mutex::new(applied)),
                current: Mutex::new(current),
                persisting: Mutex::new(()),
                file,
            }),
        })
    }
}

impl Shared {
    fn current(&self) -> MutexGuard<'_, Option<Stored>> {
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
        self.file.save(stored)?;
        *self.current() = Some(stored.clone());
        Ok(())
    }
}

impl SnapshotFile {
    fn new(path: &Path) -> SnapshotFile {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        SnapshotFile {
            path: path.to_owned(),
            tmp: PathBuf::from(tmp),
        }
    }

    fn load(&self) -> Result<Option<Stored>, ClusterError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ClusterError::file(&self.path)(e)),
        };
        let corrupt =
            |what: &str| ClusterError::Corrupt(format!("snapshot {}: {what}", self.path.display()));
        let rest = bytes
            .strip_prefix(SNAPSHOT_MAGIC.as_slice())
            .ok_or_else(|| corrupt("not a snapshot file of this format"))?;
        let (len, rest) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt("truncated"))?;
        let len = usize::try_from(u64::from_le_bytes(*len))
            .ok()
            .filter(|&len| len <= rest.len())
            .ok_or_else(|| corrupt("truncated"))?;
        let meta: SnapshotMeta = postcard::from_bytes(&rest[..len])
            .map_err(ClusterError::decode("snapshot metadata"))?;
        let data = rest[len..].to_vec();
        Ok(Some(Stored { meta, data }))
    }

    /// Writes the snapshot to the side, flushes it, renames it over the current one and flushes
    /// the directory (the rename is durable only then).
    fn save(&self, stored: &Stored) -> Result<(), ClusterError> {
        let meta =
            postcard::to_stdvec(&stored.meta).map_err(ClusterError::encode("snapshot metadata"))?;
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&self.tmp)?;
            file.write_all(SNAPSHOT_MAGIC)?;
            file.write_all(&(meta.len() as u64).to_le_bytes())?;
            file.write_all(&meta)?;
            file.write_all(&stored.data)?;
            file.sync_all()
        };
        write().map_err(ClusterError::file(&self.tmp))?;
        fs::rename(&self.tmp, &self.path).map_err(ClusterError::file(&self.path))?;
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(ClusterError::file(dir))?;
        Ok(())
    }
}

impl fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachine")
            .field("snapshot", &self.shared.file.path)
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
                    last_membership: applied.last_membership.clone(),
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
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut applied = self.shared.applied.lock().await;
        while let Some((entry, responder)) = entries.try_next().await? {
            match &entry.payload {
                // A new leader's first entry: nothing for the application.
                EntryPayload::Blank => {}
                EntryPayload::Normal(proposal) => {
                    self.shared.applier.apply(entry.log_id.index, proposal)
                }
                EntryPayload::Membership(membership) => {
                    applied.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                }
            }
            applied.last_applied = Some(entry.log_id);
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
            applied.last_membership = stored.meta.last_membership;
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
