//! The quorum queue's machine as its Raft group's [`Applier`]: entries decoded and applied in log
//! order, what each did handed to the queue's host on this node (in the same order), snapshots
//! of the machine's whole state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use warren_cluster::{Applier, NodeId, Proposal};

use super::machine::{
    Applied, Enqueuers, HeldDeadLetters, MachineState, QueueMachine, QuorumCommand,
};
use crate::queue::core::CoreSpec;
use crate::queue::QueueStats;

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
    /// The queue (its spec, what a snapshot is installed with, kept there only), packed while
    /// its member sleeps with nothing in it (see [`Slot`]).
    machine: Mutex<Slot>,
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

/// A member's machine, live or packed. An idle queue's machine is mostly empty collections
/// (about 900 bytes on every member of every queue); its snapshot is a few dozen bytes. So a
/// member that goes to sleep with nothing in its queue packs the machine into a snapshot's bytes
/// ([`QuorumApplier::pack`]); whatever changes the machine (an entry applied, the member woken)
/// unpacks it, and a read while packed decodes a copy.
enum Slot {
    Live(Box<QueueMachine>),
    Packed(Packed),
}

struct Packed {
    /// The spec's parts a snapshot does not carry (its arguments it does).
    name: Arc<str>,
    vhost: Arc<str>,
    /// The machine's snapshot ([`encode`]), then its core's counts (which a snapshot does not
    /// carry: they are this node's).
    bytes: Box<[u8]>,
    snapshot_len: usize,
    _counted: CountedPacked,
}

/// How many machines of this process are packed now.
static PACKED: AtomicU64 = AtomicU64::new(0);

/// How many quorum queue machines of this node are packed now (for the node's metrics).
pub fn machines_packed() -> u64 {
    PACKED.load(Ordering::Relaxed)
}

/// Counts a [`Packed`] in [`PACKED`] for as long as it lives, however it goes (unpacked,
/// replaced by a snapshot, or dropped with its queue).
struct CountedPacked;

impl CountedPacked {
    fn new() -> CountedPacked {
        PACKED.fetch_add(1, Ordering::Relaxed);
        CountedPacked
    }
}

impl Drop for CountedPacked {
    fn drop(&mut self) {
        PACKED.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Packed {
    /// `machine` packed, once checked to unpack into the same machine.
    fn of(machine: &QueueMachine) -> Result<Packed, String> {
        let mut bytes = encode(machine)?;
        let snapshot_len = bytes.len();
        let counts = machine.core().stats().counts;
        bytes.extend(postcard::to_stdvec(&counts).map_err(|e| e.to_string())?);
        let spec = machine.core().spec();
        let packed = Packed {
            name: spec.name,
            vhost: spec.vhost,
            bytes: bytes.into_boxed_slice(),
            snapshot_len,
            _counted: CountedPacked::new(),
        };
        let unpacked = packed.unpack()?;
        let same = unpacked.state().map_err(|e| e.to_string())?
            == machine.state().map_err(|e| e.to_string())?
            && unpacked.held_dead_letters() == machine.held_dead_letters()
            && unpacked.enqueuers() == machine.enqueuers()
            && unpacked.core().stats() == machine.core().stats()
            && packed.stats() == machine.core().stats();
        match same {
            true => Ok(packed),
            false => Err("the machine unpacked differs".into()),
        }
    }

    /// The spec the machine was made with, as a quorum queue's always is (see
    /// [`QueueMachine::new`]), but for its arguments: a snapshot's own replace them.
    fn spec(&self) -> CoreSpec {
        CoreSpec {
            name: self.name.clone(),
            vhost: self.vhost.clone(),
            args: Default::default(),
            auto_delete: false,
            logged: false,
            memory_limit: u64::MAX,
        }
    }

    fn unpack(&self) -> Result<QueueMachine, String> {
        let (snapshot, counts) = self.bytes.split_at(self.snapshot_len);
        let mut machine = decode(self.spec(), snapshot)?;
        let counts = postcard::from_bytes(counts).map_err(|e| e.to_string())?;
        machine.restore_counts(counts);
        Ok(machine)
    }

    /// The queue's figures without unpacking it (read every sampling interval for every queue):
    /// its counts, and nothing in it (what it holds is nothing, or it would not be packed).
    fn stats(&self) -> QueueStats {
        QueueStats {
            counts: postcard::from_bytes(&self.bytes[self.snapshot_len..]).unwrap_or_default(),
            ..QueueStats::default()
        }
    }

    /// The machine again. Never empty-handed: [`Packed::of`] checked that these bytes unpack.
    fn unpack_or_new(&self) -> QueueMachine {
        self.unpack().unwrap_or_else(|e| {
            tracing::error!(queue = %self.name, "quorum queue machine not unpacked: {e}");
            QueueMachine::new(self.spec(), 0)
        })
    }
}

impl Slot {
    fn live(&mut self) -> &mut QueueMachine {
        if let Slot::Packed(packed) = self {
            *self = Slot::Live(Box::new(packed.unpack_or_new()));
        }
        match self {
            Slot::Live(machine) => machine,
            Slot::Packed(_) => unreachable!("unpacked just above"),
        }
    }
}

/// A machine's snapshot: its state, then its held dead-letters, then its enqueuers (a snapshot
/// from before they were ends before them).
fn encode(machine: &QueueMachine) -> Result<Vec<u8>, String> {
    let state = machine.state().map_err(|e| e.to_string())?;
    let mut bytes = postcard::to_stdvec(&state).map_err(|e| e.to_string())?;
    bytes.extend(postcard::to_stdvec(machine.held_dead_letters()).map_err(|e| e.to_string())?);
    bytes.extend(postcard::to_stdvec(machine.enqueuers()).map_err(|e| e.to_string())?);
    Ok(bytes)
}

/// The machine a snapshot holds (the snapshot's state carries its own arguments; the rest of
/// `spec` is the queue's).
fn decode(spec: CoreSpec, snapshot: &[u8]) -> Result<QueueMachine, String> {
    let (state, rest) =
        postcard::take_from_bytes::<MachineState>(snapshot).map_err(|e| e.to_string())?;
    let (held, rest) = match rest.is_empty() {
        true => (HeldDeadLetters::default(), rest),
        false => postcard::take_from_bytes(rest).map_err(|e| e.to_string())?,
    };
    let enqueuers: Enqueuers = match rest.is_empty() {
        true => Enqueuers::default(),
        false => postcard::from_bytes(rest).map_err(|e| e.to_string())?,
    };
    QueueMachine::from_snapshot(spec, state, held, enqueuers).map_err(|e| e.to_string())
}

/// The log's bytes since the last snapshot past which a member takes one, whatever the entry
/// count (entries carry batches of messages: a count alone would let the log hold gigabytes).
const SNAPSHOT_AFTER_BYTES: u64 = 64 * 1024 * 1024;

impl QuorumApplier {
    pub fn new(spec: CoreSpec, now_ms: u64, applied: impl AppliedSink + 'static) -> QuorumApplier {
        QuorumApplier {
            machine: Mutex::new(Slot::Live(Box::new(QueueMachine::new(spec, now_ms)))),
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

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
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

    /// Reads the machine (counts, for the management API): a copy, if it is packed.
    pub fn with_machine<T>(&self, read: impl FnOnce(&QueueMachine) -> T) -> T {
        match &*self.slot() {
            Slot::Live(machine) => read(machine),
            Slot::Packed(packed) => read(&packed.unpack_or_new()),
        }
    }

    /// The queue's figures on this member (packed, without unpacking it).
    pub fn stats(&self) -> QueueStats {
        match &*self.slot() {
            Slot::Live(machine) => machine.core().stats(),
            Slot::Packed(packed) => packed.stats(),
        }
    }

    /// Packs the machine if its queue holds nothing (see [`QueueMachine::holds_nothing`]): its
    /// member goes to sleep. Whether it is packed now.
    pub fn pack(&self) -> bool {
        let mut slot = self.slot();
        let Slot::Live(machine) = &*slot else {
            return true;
        };
        if !machine.holds_nothing() {
            return false;
        }
        match Packed::of(machine) {
            Ok(packed) => {
                *slot = Slot::Packed(packed);
                true
            }
            Err(e) => {
                tracing::warn!(queue = %machine.core().spec().name, "quorum queue machine not packed: {e}");
                false
            }
        }
    }

    /// Unpacks the machine (its member woke).
    pub fn unpack(&self) {
        self.slot().live();
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
            let mut slot = self.slot();
            let machine = slot.live();
            let applied = machine.apply(index, proposal.origin, proposal.number, command);
            self.count_held(machine);
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
        let snapshot = match &*self.slot() {
            Slot::Live(machine) => encode(machine),
            Slot::Packed(packed) => Ok(packed.bytes[..packed.snapshot_len].to_vec()),
        };
        let snapshot = snapshot.unwrap_or_else(|e| {
            tracing::error!("quorum queue state not taken for a snapshot: {e}");
            Vec::new()
        });
        self.logged_since_snapshot.store(0, Ordering::Relaxed);
        self.last_snapshot
            .store(snapshot.len() as u64, Ordering::Relaxed);
        snapshot
    }

    fn install(&self, snapshot: &[u8]) {
        let mut slot = self.slot();
        // A packed machine's spec is at hand: no need to unpack what is about to be replaced.
        let spec = match &*slot {
            Slot::Live(machine) => machine.core().spec(),
            Slot::Packed(packed) => packed.spec(),
        };
        match decode(spec, snapshot) {
            Ok(machine) => {
                self.count_held(&machine);
                *slot = Slot::Live(Box::new(machine));
            }
            Err(e) => tracing::error!("quorum queue snapshot not installed: {e}"),
        }
    }
}
