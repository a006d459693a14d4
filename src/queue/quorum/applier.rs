//! The quorum queue's machine as its Raft group's [`Applier`]: entries decoded and applied in log
//! order, what each did handed to the queue's host on this node (in the same order), snapshots
//! of the machine's whole state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;
use warren_cluster::{Applier, NodeId, Proposal};

use super::machine::{
    Applied, Enqueuers, HeldDeadLetters, MachineState, QueueMachine, QuorumCommand,
};
use crate::queue::core::CoreSpec;

/// One applied entry, for the host: who proposed it and what it did.
#[derive(Debug)]
pub struct AppliedEntry {
    pub index: u64,
    pub origin: NodeId,
    pub number: u64,
    pub applied: Applied,
}

/// Where a member's applied entries go: its host on this node (which may be asleep: see
/// [`super::sleep`]).
pub trait AppliedSink: Send + Sync {
    fn applied(&self, entry: Box<AppliedEntry>);
}

impl AppliedSink for mpsc::UnboundedSender<Box<AppliedEntry>> {
    fn applied(&self, entry: Box<AppliedEntry>) {
        // Gone with its host: nothing to tell.
        let _ = self.send(entry);
    }
}

impl<T: AppliedSink + ?Sized> AppliedSink for std::sync::Arc<T> {
    fn applied(&self, entry: Box<AppliedEntry>) {
        (**self).applied(entry)
    }
}

pub struct QuorumApplier {
    /// The queue (its spec, what a snapshot is installed with, kept there only).
    machine: Mutex<QueueMachine>,
    /// To this node's host of the queue. Entries are boxed: a channel allocates its first block
    /// of slots when it is made.
    applied: Box<dyn AppliedSink>,
    /// Bytes of entries applied since the last snapshot, and that snapshot's size: the host asks
    /// for a snapshot once the log holds much more than one would (see [`Self::wants_snapshot`]).
    logged_since_snapshot: AtomicU64,
    last_snapshot: AtomicU64,
    /// How many dead-letters the machine holds (at-least-once), as of the last entry applied:
    /// read on the host's every turn, without the machine's lock.
    held_dead_letters: AtomicU64,
}

/// The log's bytes since the last snapshot past which a member takes one, whatever the entry
/// count (entries carry batches of messages: a count alone would let the log hold gigabytes).
const SNAPSHOT_AFTER_BYTES: u64 = 64 * 1024 * 1024;

impl QuorumApplier {
    pub fn new(spec: CoreSpec, now_ms: u64, applied: impl AppliedSink + 'static) -> QuorumApplier {
        QuorumApplier {
            machine: Mutex::new(QueueMachine::new(spec, now_ms)),
            applied: Box::new(applied),
            logged_since_snapshot: AtomicU64::new(0),
            last_snapshot: AtomicU64::new(0),
            held_dead_letters: AtomicU64::new(0),
        }
    }

    /// Whether the log since the last snapshot is big enough to be worth replacing by one: over
    /// [`SNAPSHOT_AFTER_BYTES`] and over twice the last snapshot (a queue holding a large
    /// backlog writes its state at most every so often, not at every 64 MiB).
    pub fn wants_snapshot(&self) -> bool {
        let logged = self.logged_since_snapshot.load(Ordering::Relaxed);
        logged > SNAPSHOT_AFTER_BYTES.max(2 * self.last_snapshot.load(Ordering::Relaxed))
    }

    fn machine(&self) -> std::sync::MutexGuard<'_, QueueMachine> {
        // Nothing panics while holding it by design; a poisoned lock still holds a whole machine.
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the machine holds dead-letters until their targets confirm them.
    pub fn holds_dead_letters(&self) -> bool {
        self.held_dead_letters.load(Ordering::Relaxed) > 0
    }

    fn count_held(&self, machine: &QueueMachine) {
        self.held_dead_letters.store(
            machine.held_dead_letters().held.len() as u64,
            Ordering::Relaxed,
        );
    }

    /// Reads the machine (counts, for the management API).
    pub fn with_machine<T>(&self, read: impl FnOnce(&QueueMachine) -> T) -> T {
        read(&self.machine())
    }
}

impl Applier for QuorumApplier {
    fn apply(&self, index: u64, proposal: &Proposal) {
        let command: QuorumCommand = match postcard::from_bytes(&proposal.payload) {
            Ok(command) => command,
            // Every member has the same bytes and skips them alike (a newer version's command).
            Err(e) => {
                tracing::error!("quorum queue entry {index} skipped: {e}");
                return;
            }
        };
        self.logged_since_snapshot
            .fetch_add(proposal.payload.len() as u64, Ordering::Relaxed);
        let applied = {
            let mut machine = self.machine();
            let applied = machine.apply(index, proposal.origin, proposal.number, command);
            self.count_held(&machine);
            applied
        };
        self.applied.applied(Box::new(AppliedEntry {
            index,
            origin: proposal.origin,
            number: proposal.number,
            applied,
        }));
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = match self.machine().state() {
            Ok(state) => state,
            Err(e) => {
                tracing::error!("quorum queue state not taken for a snapshot: {e}");
                return Vec::new();
            }
        };
        // The held dead-letters after the state, then the enqueuers: a snapshot from before
        // they were ends before them.
        let machine = self.machine();
        let snapshot = postcard::to_stdvec(&state)
            .and_then(|mut bytes| {
                bytes.extend(postcard::to_stdvec(machine.held_dead_letters())?);
                bytes.extend(postcard::to_stdvec(machine.enqueuers())?);
                Ok(bytes)
            })
            .unwrap_or_default();
        drop(machine);
        self.logged_since_snapshot.store(0, Ordering::Relaxed);
        self.last_snapshot
            .store(snapshot.len() as u64, Ordering::Relaxed);
        snapshot
    }

    fn install(&self, snapshot: &[u8]) {
        // The snapshot's state carries its own arguments (a policy's); the rest is the queue's.
        let spec = self.machine().core().spec();
        let restored = postcard::take_from_bytes::<MachineState>(snapshot)
            .and_then(|(state, rest)| {
                let (held, rest) = match rest.is_empty() {
                    true => (HeldDeadLetters::default(), rest),
                    false => postcard::take_from_bytes(rest)?,
                };
                let enqueuers: Enqueuers = match rest.is_empty() {
                    true => Enqueuers::default(),
                    false => postcard::from_bytes(rest)?,
                };
                Ok((state, held, enqueuers))
            })
            .map_err(|e| e.to_string())
            .and_then(|(state, held, enqueuers)| {
                QueueMachine::from_snapshot(spec, state, held, enqueuers).map_err(|e| e.to_string())
            });
        match restored {
            Ok(machine) => {
                self.count_held(&machine);
                *self.machine() = machine;
            }
            Err(e) => tracing::error!("quorum queue snapshot not installed: {e}"),
        }
    }
}
