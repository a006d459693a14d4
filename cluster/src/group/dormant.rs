//! Dormant members: a quiet group's member idle for a while stops its Raft instance (openraft's
//! tasks, channels and buffers: most of an idle member's memory) and keeps only its state
//! machine and what it knew (its metrics, frozen), until something uses it again: a proposal of
//! its own, or a request of another member's (the node's endpoint for the group wakes it). Woken,
//! it starts a Raft instance again from its log, with the state machine it kept (nothing is
//! applied again). A member that led leads again at once (openraft restores a leader whose vote
//! was committed; its followers, woken by its appends, take them in the same term), and a
//! follower sends its proposals to the leader it knew, which wakes that one.
//!
//! Only a member with everything applied and a leader goes dormant (a leader only once every
//! follower has everything too: one down keeps it awake), never while a caller uses its
//! instance (callers hold an [`InUse`] while they do; a member going dormant waits for none).
//! A dormant follower whose leader's node goes wakes and elects another (see
//! [`Group::keep_led`]); the application's own watch of nodes (a consumer's node gone) wakes the
//! group by proposing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::entry::RaftEntry;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::vote::RaftLeaderIdExt;
use openraft::RaftMetrics;

use super::{Group, GroupRaft, LogFigures};
use crate::link::{ProposeRefused, RaftReply, RaftRpc};
use crate::log_store::{LogDb, LogStore};
use crate::network::GroupNetwork;
use crate::node::GroupEndpoint;
use crate::state_machine::StateMachine;
use crate::types::{
    node_id, Entry, LogId, Node, NodeId, Proposal, StoredMembership, TypeConfig, Vote,
};
use crate::ClusterError;

/// How long a woken member that led waits to lead again (restored, and acknowledged by a quorum).
const RESTORED_WITHIN: Duration = Duration::from_secs(2);

/// A member's Raft instance, or what it knew when it went dormant.
pub(super) enum Instance {
    Running(GroupRaft),
    Dormant(Box<Known>),
}

/// What a member knows of its group, read from its Raft metrics: all that is read of them (its
/// leader, role, log figures, membership), and all a dormant member keeps (openraft's
/// `RaftMetrics` is 440 bytes, most of them a running leader's; this about a quarter).
pub(crate) struct Known {
    pub(crate) leader: Option<NodeId>,
    pub(crate) state: openraft::ServerState,
    pub(crate) term: u64,
    pub(crate) last: Option<u64>,
    pub(crate) applied: Option<u64>,
    /// What the cluster is known to have committed, or at least what this member has committed
    /// or applied: a leader just elected knows no cluster commit of its own until an entry of
    /// its term is committed, yet everything it applied was committed.
    pub(crate) committed: Option<u64>,
    pub(crate) purged: Option<u64>,
    pub(crate) snapshot: Option<u64>,
    pub(crate) membership: Arc<StoredMembership>,
}

impl Known {
    pub(crate) fn of(metrics: &RaftMetrics<TypeConfig>) -> Known {
        Known {
            leader: metrics.current_leader,
            state: metrics.state,
            term: metrics.current_term,
            last: metrics.last_log_index,
            applied: metrics.last_applied.map(|id| id.index),
            committed: [
                metrics.cluster_committed.map(|id| id.index),
                metrics.local_committed.map(|id| id.index),
                metrics.last_applied.map(|id| id.index),
            ]
            .into_iter()
            .max()
            .flatten(),
            purged: metrics.purged.map(|id| id.index),
            snapshot: metrics.snapshot.map(|id| id.index),
            membership: metrics.membership_config.clone(),
        }
    }
}

/// What starting a member's Raft instance again takes, and the bookkeeping of dormancy.
pub(super) struct Restart {
    db: LogDb,
    /// Kept across instances: its applied state is the group's, so a woken member applies
    /// nothing twice.
    state_machine: StateMachine,
    config: Arc<openraft::Config>,
    dormant_after: Option<Duration>,
    /// Callers using the instance now.
    in_use: AtomicUsize,
    /// Held while the member goes dormant, wakes, or stops.
    waking: tokio::sync::Mutex<()>,
    /// The leader it knew when it went dormant, if another member.
    leader_before: Mutex<Option<NodeId>>,
    /// This member led when it went dormant.
    led: AtomicBool,
    stopped: AtomicBool,
    /// Born dormant as its group's first member (see [`born`]): nobody has led the group yet,
    /// and this member stands for election when it is first woken.
    stands_when_woken: AtomicBool,
    /// How many times it went dormant or woke, and a wake-up for those waiting for the next
    /// time (see [`Group::dormancy_changed`]): the application lets go of what it keeps for a
    /// running member. (A watch channel, most of half a kilobyte of wakers, per member before.)
    dormancy_changes: AtomicU64,
    dormancy_changed: tokio::sync::Notify,
}

impl Restart {
    pub(super) fn new(
        db: LogDb,
        state_machine: StateMachine,
        config: Arc<openraft::Config>,
        dormant_after: Option<Duration>,
    ) -> Restart {
        Restart {
            db,
            state_machine,
            config,
            dormant_after,
            in_use: AtomicUsize::new(0),
            waking: tokio::sync::Mutex::new(()),
            leader_before: Mutex::new(None),
            led: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            stands_when_woken: AtomicBool::new(false),
            dormancy_changes: AtomicU64::new(0),
            dormancy_changed: tokio::sync::Notify::new(),
        }
    }

    pub(super) fn dormant_after(&self) -> Option<Duration> {
        self.dormant_after
    }

    /// The other member that led when this one went dormant (until it knows a leader again).
    pub(super) fn leader_before(&self) -> Option<NodeId> {
        *self.leader_before.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dormancy_changed(&self) {
        self.dormancy_changes.fetch_add(1, Ordering::SeqCst);
        self.dormancy_changed.notify_waiters();
    }

    /// The member was born dormant (see [`born`]): the first of `members` stands for election
    /// when it is first woken; the others take it for their leader until they hear of one.
    /// Being born dormant counts as going dormant (see [`Group::dormancy_changes`]).
    pub(super) fn born(&self, me: NodeId, members: &[Node]) {
        let first = members.first().map(|m| node_id(&m.name));
        match first == Some(me) {
            true => self.stands_when_woken.store(true, Ordering::Relaxed),
            false => *self.leader_before.lock().unwrap_or_else(|e| e.into_inner()) = first,
        }
        self.dormancy_changed();
    }

    /// The member was started dormant by this process (see [`restarted`]), `leader` leading
    /// as far as it knows. Counts as going dormant.
    pub(super) fn restarted(&self, leader: NodeId) {
        *self.leader_before.lock().unwrap_or_else(|e| e.into_inner()) = Some(leader);
        self.dormancy_changed();
    }

    /// The member has stopped for good: it is never woken again.
    pub(super) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// Gives a new group's member, its log empty and its vote never cast, what the first of
/// `members` has after openraft's `initialize` (its vote for itself in term 0, and the first
/// entry, the membership, in that term) and what the others have once that first entry reached
/// them: nothing to elect, nothing to replicate, no Raft instance to run until the group is
/// used. What it knows then, or None if its log holds anything (the group formed before).
///
/// Nothing is taken for granted that an election would decide: woken, the first member stands
/// for election (term 1) as `initialize` would have had it do at once, and the others, woken by
/// its vote requests, answer them as they would have.
pub(super) async fn born(
    log: &LogStore,
    me: NodeId,
    members: &[Node],
) -> Result<Option<Known>, ClusterError> {
    let Some(seed) = Seed::of(me, members) else {
        return Ok(None);
    };
    if !log.seed(seed.vote, seed.entry).await? {
        return Ok(None);
    }
    Ok(Some(seed.known))
}

/// What a new group's member is born with (see [`born`]), and what it knows then.
struct Seed {
    vote: Vote,
    entry: Entry,
    known: Known,
}

impl Seed {
    /// None if `me` is not one of `members`.
    fn of(me: NodeId, members: &[Node]) -> Option<Seed> {
        let first = members.first().map(|m| node_id(&m.name))?;
        if !members.iter().any(|m| node_id(&m.name) == me) {
            return None;
        }
        let seeds: BTreeMap<NodeId, Node> = members
            .iter()
            .map(|m| (node_id(&m.name), m.clone()))
            .collect();
        let membership = openraft::Membership::from(seeds);
        let log_id = LogId::new(
            <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(0, first),
            0,
        );
        let known = Known {
            leader: Some(first),
            state: match first == me {
                true => openraft::ServerState::Leader,
                false => openraft::ServerState::Follower,
            },
            term: 0,
            last: Some(0),
            applied: None,
            committed: None,
            purged: None,
            snapshot: None,
            // One copy for every group born with these members (the same first among them).
            membership: crate::shared_copies::membership(StoredMembership::new(
                Some(log_id),
                membership.clone(),
            )),
        };
        Some(Seed {
            vote: Vote::new_committed(0, first),
            entry: Entry::new_membership(log_id, membership),
            known,
        })
    }
}

/// How a member opened by this process starts dormant (see [`restarted`]).
pub(super) enum Restarted {
    /// Its log is still what it was born with (see [`born`]): as if born now.
    AsBorn(Known),
    /// Its group was settled, this other member leading.
    Settled(Known),
}

/// A member opened by this process, whose log says the group was settled when its last
/// process stopped, starts dormant instead of running a Raft instance (a node restarted with a
/// thousand idle queues then starts no thousand instances, and no election wakes their groups):
/// its vote committed to another member's leadership, and every entry of its log known committed
/// (nothing appended after the last commit it saved). It applies the committed log after its
/// snapshot itself, as openraft would on start, and takes that member for its leader until it
/// hears otherwise: what it knows then, or None if its log is not so settled. A member that led
/// itself starts its instance and waits for an election, as before: another may lead by now.
///
/// Behind the others (the group went on while its node was down), it is brought up to date as
/// any follower: the leader, awake while a follower lags, sends what it lacks, which wakes it.
pub(super) async fn restarted(
    log: &LogStore,
    state_machine: &StateMachine,
    me: NodeId,
    members: &[Node],
) -> Result<Option<Restarted>, ClusterError> {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    use openraft::vote::RaftLeaderId;
    let mut reader = log.clone();
    let failed = |e: std::io::Error| ClusterError::Raft(e.to_string());
    let Some(vote) = reader.read_vote().await.map_err(failed)? else {
        return Ok(None);
    };
    let state = reader.get_log_state().await.map_err(failed)?;
    let committed = reader.read_committed().await.map_err(failed)?;
    let Some(last) = state.last_log_id else {
        return Ok(None);
    };
    let applied = state_machine.last_applied().await;
    // Born dormant and never used through this member: nothing happened that it knows of.
    // (The others may have used the group since: their leader sends what it missed.) The seed
    // is made only for a log of one entry: not for every used group a node starts.
    let one_entry = last.index == 0 && state.last_purged_log_id.is_none() && applied.is_none();
    if let Some(seed) = one_entry.then(|| Seed::of(me, members)).flatten() {
        let as_born =
            vote == seed.vote && last == seed.entry.log_id && committed.is_none_or(|c| c == last);
        if as_born {
            let first = reader.try_get_log_entries(0..=0).await.map_err(failed)?;
            if first.first() == Some(&seed.entry) {
                return Ok(Some(Restarted::AsBorn(seed.known)));
            }
        }
    }
    let leader = *vote.leader_id().node_id();
    if !vote.is_committed() || leader == me {
        return Ok(None);
    }
    if committed != Some(last) {
        return Ok(None);
    }
    if applied.map(|id| id.index) > Some(last.index) {
        return Ok(None);
    }
    // In slices, as replication reads them: a queue's backlog read whole would be in memory
    // twice. (Stopped half-way, the instance started instead applies the rest.)
    let mut next = applied.map_or(0, |id| id.index + 1);
    while next <= last.index {
        let slice = reader
            .limited_get_log_entries(next, last.index + 1)
            .await
            .map_err(failed)?;
        let (Some(first), Some(end)) = (slice.first(), slice.last()) else {
            return Ok(None);
        };
        let (first, end) = (first.log_id.index, end.log_id.index);
        if first != next || end + 1 - next != slice.len() as u64 {
            return Ok(None);
        }
        state_machine.replay(&slice).await;
        next = end + 1;
    }
    let membership = state_machine.membership().await;
    if !membership.membership().voter_ids().any(|id| id == leader) {
        return Ok(None);
    }
    Ok(Some(Restarted::Settled(Known {
        leader: Some(leader),
        state: openraft::ServerState::Follower,
        term: vote.leader_id().term(),
        last: Some(last.index),
        applied: Some(last.index),
        committed: Some(last.index),
        purged: state.last_purged_log_id.map(|id| id.index),
        snapshot: state_machine.snapshot_index(),
        membership,
    })))
}

/// What a dormant member keeps of its metrics: what it knew ([`Known`]), with the membership
/// once: the state machine's, if it is the same.
fn frozen(metrics: &RaftMetrics<TypeConfig>, applied: Arc<StoredMembership>) -> Known {
    let mut known = Known::of(metrics);
    if known.membership == applied {
        known.membership = applied;
    }
    known
}

/// A caller using a member's Raft instance: the member does not go dormant meanwhile.
pub(super) struct InUse<'a>(&'a Restart);

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Group {
    /// Its Raft instance, unless it is dormant.
    pub(super) fn live(&self) -> Option<GroupRaft> {
        match &*self.instance.read().unwrap_or_else(|e| e.into_inner()) {
            Instance::Running(raft) => Some(raft.clone()),
            Instance::Dormant(_) => None,
        }
    }

    /// How many times it went dormant (born so included) or woke so far (see
    /// [`Group::dormancy_changed`]).
    pub fn dormancy_changes(&self) -> u64 {
        self.restart.dormancy_changes.load(Ordering::SeqCst)
    }

    /// Waits until it has gone dormant or woken more times than `seen` (at once if it has):
    /// the count then ([`Group::is_dormant`] says which it is now).
    pub async fn dormancy_changed(&self, seen: u64) -> u64 {
        loop {
            // Registered before the count is read: a change between the two still wakes it.
            let notified = self.restart.dormancy_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.dormancy_changes();
            if now != seen {
                return now;
            }
            notified.await;
        }
    }

    /// Whether its Raft instance is stopped until it is used again.
    pub fn is_dormant(&self) -> bool {
        matches!(
            &*self.instance.read().unwrap_or_else(|e| e.into_inner()),
            Instance::Dormant(_)
        )
    }

    /// Reads what it knows: from the instance's metrics, or what it knew when it went dormant.
    pub(super) fn with_known<T>(&self, read: impl FnOnce(&Known) -> T) -> T {
        match &*self.instance.read().unwrap_or_else(|e| e.into_inner()) {
            Instance::Running(raft) => read(&Known::of(&raft.metrics().borrow_watched())),
            Instance::Dormant(known) => read(known),
        }
    }

    /// Its Raft instance, woken if dormant, and a hold that keeps it from going dormant while the
    /// caller uses it.
    pub(super) async fn running(&self) -> Result<(InUse<'_>, GroupRaft), ClusterError> {
        // Counted before looking: a member going dormant either sees this caller or is seen
        // dormant by it (it checks the count under the instance's write lock).
        self.restart.in_use.fetch_add(1, Ordering::SeqCst);
        let in_use = InUse(&self.restart);
        if let Some(raft) = self.live() {
            return Ok((in_use, raft));
        }
        self.wake_up().await?;
        let raft = self
            .live()
            .ok_or_else(|| ClusterError::Raft(format!("group {} has stopped", self.id)))?;
        Ok((in_use, raft))
    }

    /// Stops its Raft instance, if nothing uses it, everything is applied and it knows a leader:
    /// whether it did.
    pub(super) async fn go_dormant(&self) -> bool {
        let _waking = self.restart.waking.lock().await;
        let applied_membership = self.restart.state_machine.membership().await;
        let raft = {
            let mut instance = self.instance.write().unwrap_or_else(|e| e.into_inner());
            let Instance::Running(raft) = &*instance else {
                return false;
            };
            if self.restart.in_use.load(Ordering::SeqCst) > 0 || self.restart.stopped() {
                return false;
            }
            let metrics = raft.metrics().borrow_watched().clone();
            let applied = metrics.last_applied.map(|id| id.index);
            let Some(leader) = metrics.current_leader else {
                return false;
            };
            // Woken alone while its group is as it was born (its leader-to-be's link blinked,
            // say), a follower holds one entry, the membership, that nothing commits until the
            // group is used: it goes back to sleep as born. (It stayed awake for good.)
            let as_born = metrics.current_term == 0 && metrics.last_log_index == Some(0);
            if applied != metrics.last_log_index && !(as_born && leader != self.me) {
                return false;
            }
            // A leader whose follower lags (back from a cut, say) replicates to it first:
            // dormant, it would leave it behind until the queue is used again.
            let caught_up = |replication: &std::collections::BTreeMap<NodeId, Option<LogId>>| {
                replication
                    .values()
                    .all(|matched| matched.map(|id| id.index) == metrics.last_log_index)
            };
            if leader == self.me && !metrics.replication.as_ref().is_some_and(caught_up) {
                return false;
            }
            self.restart.led.store(leader == self.me, Ordering::Relaxed);
            *self
                .restart
                .leader_before
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = (leader != self.me).then_some(leader);
            let raft = raft.clone();
            *instance = Instance::Dormant(Box::new(frozen(&metrics, applied_membership)));
            raft
        };
        let _ = raft.shutdown().await;
        self.restart.dormancy_changed();
        tracing::debug!(group = %self.id, "dormant");
        true
    }

    /// Starts its Raft instance again (if it is dormant) from its log and kept state machine.
    async fn wake_up(&self) -> Result<(), ClusterError> {
        let _waking = self.restart.waking.lock().await;
        if self.live().is_some() {
            return Ok(());
        }
        if self.restart.stopped() {
            return Err(ClusterError::Raft(format!("group {} has stopped", self.id)));
        }
        // The last instance's tasks let go of the log after its shutdown returned.
        self.wait_log_closed().await;
        let (db, id) = (self.restart.db.clone(), self.id.clone());
        let log = tokio::task::spawn_blocking(move || LogStore::open(&db, id)).await??;
        *self.log_closed.lock().unwrap_or_else(|e| e.into_inner()) = log.closed();
        let network = GroupNetwork::new(self.node.link().clone(), self.id.clone());
        let stands = self.restart.stands_when_woken.load(Ordering::Relaxed);
        // Born first, its vote for itself in term 0 says it leads: it does once elected.
        let config = super::instance_config(&self.restart.config, &self.id, !stands);
        let raft = openraft::Raft::new(
            self.me,
            config,
            network,
            log,
            self.restart.state_machine.clone(),
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if self.quiet {
            raft.runtime_config().elect(false);
            raft.runtime_config().tick(true);
        }
        self.idle_checks.store(0, Ordering::Relaxed);
        if stands {
            // Once: the others wake at its (pre-)vote requests. Not waited for: a member woken
            // by the appends of a leader elected without it (it was down) only fails its
            // pre-vote, and a proposal waits for the leader in any case.
            let _ = raft.trigger().elect(true).await;
            self.restart
                .stands_when_woken
                .store(false, Ordering::Relaxed);
        } else if self.restart.led.load(Ordering::Relaxed) {
            // Restored as leader by the instance's start (its metrics show it a moment later),
            // it takes writes once a quorum has acknowledged it again (its lease): what woke it
            // may be a proposal only the leader makes. Its heartbeat wakes the followers.
            let restored = async {
                let _ = raft
                    .wait(None)
                    .state(openraft::ServerState::Leader, "leader restored")
                    .await;
                let _ = raft.trigger().heartbeat().await;
                let _ = raft
                    .wait(None)
                    .metrics(
                        |m| m.last_quorum_acked.is_some(),
                        "acknowledged by a quorum",
                    )
                    .await;
            };
            let _ = tokio::time::timeout(RESTORED_WITHIN, restored).await;
        }
        *self.instance.write().unwrap_or_else(|e| e.into_inner()) = Instance::Running(raft.clone());
        self.restart.dormancy_changed();
        tracing::debug!(group = %self.id, "woken");
        Ok(())
    }

    /// Marks the member stopped for good (never woken again): its instance, if running, for the
    /// caller to shut down.
    pub(super) async fn stop_for_good(&self) -> Option<GroupRaft> {
        let _waking = self.restart.waking.lock().await;
        self.restart.stopped.store(true, Ordering::Relaxed);
        self.live()
    }
}

/// The node's endpoint for a group's member: requests of other members wake it.
pub(super) fn endpoint(group: &Arc<Group>) -> Arc<dyn GroupEndpoint> {
    Arc::new(Endpoint(Arc::downgrade(group)))
}

struct Endpoint(Weak<Group>);

fn gone() -> String {
    "the group's member has stopped".into()
}

impl GroupEndpoint for Endpoint {
    fn raft(&self, rpc: RaftRpc) -> BoxFuture<'static, Result<RaftReply, String>> {
        let group = self.0.clone();
        Box::pin(async move {
            let group = group.upgrade().ok_or_else(gone)?;
            let (_in_use, raft) = group.running().await.map_err(|e| e.to_string())?;
            GroupEndpoint::raft(&raft, rpc).await
        })
    }

    fn propose(&self, proposal: Proposal) -> BoxFuture<'static, Result<u64, ProposeRefused>> {
        let group = self.0.clone();
        Box::pin(async move {
            let group = group
                .upgrade()
                .ok_or_else(|| ProposeRefused::Failed(gone()))?;
            let (_in_use, raft) = group
                .running()
                .await
                .map_err(|e| ProposeRefused::Failed(e.to_string()))?;
            GroupEndpoint::propose(&raft, proposal).await
        })
    }

    fn wait_applied(&self, index: u64, within: Duration) -> BoxFuture<'static, bool> {
        let group = self.0.clone();
        Box::pin(async move {
            let Some(group) = group.upgrade() else {
                return false;
            };
            // A dormant member has applied everything it has.
            if group.log_figures().applied >= Some(index) {
                return true;
            }
            let applied = match group.running().await {
                Ok((_in_use, raft)) => GroupEndpoint::wait_applied(&raft, index, within).await,
                Err(_) => false,
            };
            applied
        })
    }

    fn figures(&self) -> LogFigures {
        self.0
            .upgrade()
            .map(|g| g.log_figures())
            .unwrap_or_default()
    }

    fn transfer_leader(&self, to: NodeId) -> BoxFuture<'static, Result<(), String>> {
        let group = self.0.clone();
        Box::pin(async move {
            let group = group.upgrade().ok_or_else(gone)?;
            let (_in_use, raft) = group.running().await.map_err(|e| e.to_string())?;
            GroupEndpoint::transfer_leader(&raft, to).await
        })
    }

    fn leader(&self) -> Option<NodeId> {
        self.0.upgrade()?.with_known(|k| k.leader)
    }
}
