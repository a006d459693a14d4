//! A quorum queue's member asleep: once its group is dormant (see
//! `warren_cluster::group::dormant`) and the member has nothing in hand (no consumer or delivery
//! in the state, no timer, no proposal, nothing held), its task ends and its inbox and
//! applied-entry channels go; what it keeps waits in its [`Bed`]. Whatever needs it wakes it: a
//! command sent to the queue (its handle asks the bed for an inbox), an entry its group applies
//! (a leader's append woke the group), a change of its members or the cluster dropping it (its
//! handle wakes it). Woken, a new task runs it with new channels; nothing it knew is lost, as it
//! had nothing in hand.
//!
//! A task and its channels are most of what an idle member costs (several kilobytes each); a
//! node holding thousands of idle queues keeps only their state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};
use warren_cluster::NodeId;

use super::applier::{AppliedEntry, AppliedSink};
use super::host::{self, Kept, Member};
use crate::queue::{QueueCommand, WakingInbox, INBOX};

/// How many members of this process sleep now.
static ASLEEP: AtomicU64 = AtomicU64::new(0);

/// How many quorum queue members of this node sleep now (for the node's metrics).
pub fn members_asleep() -> u64 {
    ASLEEP.load(Ordering::Relaxed)
}

/// Where a member is: running (its channels' sending ends), asleep, or gone for good.
pub(crate) struct Bed(Mutex<State>);

enum State {
    Awake {
        inbox: mpsc::Sender<QueueCommand>,
        applied: mpsc::UnboundedSender<Box<AppliedEntry>>,
    },
    Asleep(Box<Kept>),
    Gone,
}

/// What a running member reads: its inbox, the entries applied, and news of nodes gone
/// (subscribed when it first runs, as its node's watchers start with the first member).
pub(super) struct Wake {
    pub inbox: mpsc::Receiver<QueueCommand>,
    pub applied: mpsc::UnboundedReceiver<Box<AppliedEntry>>,
    pub down: Option<broadcast::Receiver<NodeId>>,
}

impl Bed {
    /// A bed for a member about to run, and what it reads.
    pub(super) fn new() -> (Arc<Bed>, Wake) {
        let (state, wake) = awake(None);
        (Arc::new(Bed(Mutex::new(state))), wake)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `member` to sleep unless something reached it since it looked (a command in its
    /// inbox or on its way there, an entry applied): then it is given back to run on.
    pub(super) fn try_sleep(
        self: &Arc<Self>,
        member: Box<Member>,
        wake: Wake,
    ) -> Option<(Box<Member>, Wake)> {
        let mut state = self.state();
        let State::Awake { inbox, .. } = &*state else {
            return Some((member, wake));
        };
        // Every other sender of the inbox is a caller about to send: it must find it awake.
        let untouched = inbox.strong_count() == 1
            && wake.inbox.is_empty()
            && wake.applied.is_empty()
            && wake.down.as_ref().is_none_or(|down| down.is_empty());
        if !untouched {
            return Some((member, wake));
        }
        let member = member.sleeping();
        tracing::trace!(queue = %member.queue_name(), "quorum queue member asleep");
        *state = State::Asleep(Box::new(member));
        ASLEEP.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The member has ended: its queue is gone here, commands sent from now on fail.
    pub(super) fn gone(&self) {
        *self.state() = State::Gone;
    }
}

/// A running member's sending ends and what it reads, `down` carried over.
fn awake(down: Option<broadcast::Receiver<NodeId>>) -> (State, Wake) {
    let (inbox_tx, inbox) = mpsc::channel(INBOX);
    let (applied_tx, applied) = mpsc::unbounded_channel();
    let state = State::Awake {
        inbox: inbox_tx,
        applied: applied_tx,
    };
    (
        state,
        Wake {
            inbox,
            applied,
            down,
        },
    )
}

/// Runs a sleeping member again, on new channels.
fn wake_up(state: &mut State) {
    if !matches!(state, State::Asleep(_)) {
        return;
    }
    let (running, wake) = awake(None);
    let State::Asleep(member) = std::mem::replace(state, running) else {
        return;
    };
    ASLEEP.fetch_sub(1, Ordering::Relaxed);
    tracing::trace!(queue = %member.queue_name(), "quorum queue member woken");
    tokio::spawn(host::live(Member::woken(*member), wake, false));
}

impl WakingInbox for Bed {
    /// The member's inbox, the member woken first if it sleeps; None once it is gone.
    fn sender(&self) -> Option<mpsc::Sender<QueueCommand>> {
        let mut state = self.state();
        wake_up(&mut state);
        match &*state {
            State::Awake { inbox, .. } => Some(inbox.clone()),
            _ => None,
        }
    }
}

impl AppliedSink for Bed {
    fn applied(&self, entry: Box<AppliedEntry>) {
        let mut state = self.state();
        wake_up(&mut state);
        if let State::Awake { applied, .. } = &*state {
            let _ = applied.send(entry);
        }
    }
}
