//! A Raft group on this node: its log and state machine in a directory of its own, its network
//! over the node's link, and proposing to it from any member (a follower sends the proposal to the
//! leader over the link).
//!
//! Every member of a group starts it with the same seed members; a member whose log is empty
//! initializes the group with them (openraft allows every member to do so with the same
//! membership), so nodes may start in any order and the group forms once a majority is up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use thiserror::Error;

use crate::link::{GroupId, LinkError, ProposeRefused, Request, Response};
use crate::log_store::{LogDb, LogStore};
use crate::network::GroupNetwork;
use crate::node::ClusterNode;
use crate::state_machine::{Applier, StateMachine};
use crate::types::{node_id, Node, NodeId, Proposal, TypeConfig};
use crate::ClusterError;

pub type GroupRaft = openraft::Raft<TypeConfig, StateMachine>;

/// At most this many entries a snapshot covers are kept in the log (openraft's default).
const MAX_KEPT_BEHIND_SNAPSHOT: u64 = 1000;

/// A quiet group's checks without its log growing before its ticker stops (see [`Group::wake`]).
const IDLE_CHECKS: u32 = 5;

/// For an idle member checked every `check`: at which idle check its ticker goes off, and at
/// which it goes dormant (if it may). Dormant at the first check `dormant_after` reaches, but
/// never at the check that turns the ticker off: a heartbeat still in flight when the instance
/// stops has its answer refused by the stopped core (openraft logs that as an error), and a
/// check is longer than a heartbeat's timeout.
fn idle_schedule(check: Duration, dormant_after: Option<Duration>) -> (u32, Option<u32>) {
    let dormant_at = dormant_after.map(|after| {
        let checks = after.as_millis().div_ceil(check.as_millis().max(1));
        u32::try_from(checks).unwrap_or(u32::MAX).max(2)
    });
    let tick_off_at = dormant_at.map_or(IDLE_CHECKS, |at| IDLE_CHECKS.min(at - 1));
    (tick_off_at, dormant_at)
}

/// The configurations groups share: one copy for all those of the same timing (a dormant member
/// keeps it, and a thousand idle queues held a thousand equal copies).
static CONFIGS: crate::shared_copies::LiveCopies<openraft::Config> =
    crate::shared_copies::LiveCopies::new();

fn shared_config(config: openraft::Config) -> Arc<openraft::Config> {
    CONFIGS.shared(format!("{config:?}").into_bytes(), config)
}

/// What an instance of group `id` starts with: the shared `config` named after the group (its
/// logs say which group), with openraft's leader restore on or off (off: it becomes a follower
/// even if its vote says it led; see [`Group::start`]'s use of it).
fn instance_config(
    config: &Arc<openraft::Config>,
    id: &GroupId,
    restore: bool,
) -> Arc<openraft::Config> {
    Arc::new(openraft::Config {
        cluster_name: id.to_string(),
        enable_leader_restore: Some(restore),
        ..(**config).clone()
    })
}

/// A group's timing, and when it takes snapshots.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// A snapshot (and a purge of the log before it) after this many entries; None: never, for
    /// an applier whose snapshot does not hold everything its entries did (the log is then
    /// replayed whole at every start).
    pub snapshot_every: Option<u64>,
    /// Quiet: no timer of the group's own (no heartbeats while idle, no election timeouts), so
    /// that an idle group costs nothing; elections come from [`Group::keep_led`], which watches
    /// the nodes' links instead (one failure detector for all of a node's groups).
    pub quiet: bool,
    /// At most this many entries a snapshot covers stay in the log, for members a little behind
    /// (fewer for groups whose entries are big).
    pub kept_behind_snapshot: u64,
    /// A quiet group's member idle this long (nothing appended, everything applied) stops its
    /// Raft instance and keeps only its state machine, until it is used again (see
    /// [`dormant`]); None: never.
    pub dormant_after: Option<Duration>,
    /// A quiet group that may go dormant is born so: a new group's members write what its
    /// first member's `initialize` would and start no Raft instance; the first use wakes them,
    /// and the first member stands for election then (see [`dormant`]). A thousand groups
    /// declared at once then never run a thousand Raft instances at once.
    pub born_dormant: bool,
    /// A quiet group that may go dormant, opened on a log that says the group was settled
    /// (see [`dormant`]'s `restarted`), starts dormant: a node restarted with a thousand idle
    /// groups runs no thousand Raft instances, and wakes none of their groups.
    pub dormant_if_settled: bool,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
            snapshot_every: Some(5000),
            quiet: false,
            kept_behind_snapshot: MAX_KEPT_BEHIND_SNAPSHOT,
            dormant_after: None,
            born_dormant: false,
            dormant_if_settled: false,
        }
    }
}

/// A member's log, by index, and its place in the group (see [`Group::log_figures`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LogFigures {
    pub purged: Option<u64>,
    pub last: Option<u64>,
    pub snapshot: Option<u64>,
    /// The last index it knows committed, and the last it has applied.
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub term: u64,
    /// `leader`, `follower`, `candidate` or `learner` (as RabbitMQ's `quorum_status` says).
    pub role: String,
    /// The voters of the membership it has (the new ones while a change is under way), by name.
    pub voters: Vec<String>,
    /// A membership change is under way (old and new voters both count).
    pub joint: bool,
    /// The member is dormant (see [`dormant`]): the rest is what it knew when it went so.
    pub dormant: bool,
}

/// One member of a group and its figures, as [`Group::member_figures`] gathers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFigures {
    pub name: String,
    /// `None`: its node did not answer (down, cut off) or does not have the group.
    pub figures: Option<LogFigures>,
}

/// What became of a proposal handed to [`Group::submit_as_leader`].
#[derive(Debug)]
pub enum Pipelined {
    /// Committed at this index.
    Committed(u64),
    /// The leader lost its leadership before appending it: never in the log.
    NotAppended(Proposal),
    /// Not committed, or not known to be.
    Failed(String),
}

/// What [`Group::change_members`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipStep {
    /// The group's voters are the members wanted.
    Done,
    /// This member does not lead: the leader makes the change.
    NotLeader,
    /// This member led but is not wanted: it handed the leadership to a wanted one.
    HandedOver,
}

#[derive(Debug, Error)]
pub enum ProposeError {
    /// No leader with a majority answered in time: this node may be on the minority side of a
    /// partition, or too few members are up. The change may still be made, if a leader had it.
    #[error("no majority of the cluster confirmed the change in time ({0:?})")]
    Timeout(Duration),
    #[error("the cluster refused the change: {0}")]
    Failed(String),
}

/// A member's view of one other member (or itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub name: String,
    pub addr: String,
    /// This node itself, or a peer whose link is up.
    pub reachable: bool,
    pub leader: bool,
}

mod dormant;
pub(crate) mod keeper;
#[cfg(test)]
mod tests;

pub(crate) use dormant::Known;
use dormant::{Instance, Restart};

pub struct Group {
    id: GroupId,
    me: NodeId,
    /// Its Raft instance, or what it was when it went dormant.
    instance: std::sync::RwLock<Instance>,
    node: Arc<ClusterNode>,
    numbers: AtomicU64,
    /// The log is closed once openraft's tasks have let go of it.
    log_closed: std::sync::Mutex<crate::log_store::Closed>,
    /// What starting its Raft instance again takes (see [`dormant`]).
    restart: Restart,
    /// A quiet group's ticker runs only while it is in use (see [`Group::wake`]).
    quiet: bool,
    /// [`Group::keep_led`]'s checks since the log last grew, and its last index then.
    idle_checks: std::sync::atomic::AtomicU32,
    last_index_seen: AtomicU64,
    /// A round of [`Group::keep_led`] is under way for it.
    keeping: std::sync::atomic::AtomicBool,
    /// Rounds in a row that found the leader a dormant member knew on a node whose link is
    /// down (see `keeper::LEADER_GONE_ROUNDS`).
    leader_gone_rounds: std::sync::atomic::AtomicU8,
    /// The last entry its log knew committed when this process opened it (see
    /// [`Group::recovered_index`]).
    recovered: u64,
    /// Born dormant in this process (see [`Group::is_newborn`]).
    newborn: bool,
}

impl Group {
    /// Starts this node's member of group `id`, its log and snapshot in `db`; `members` are the
    /// group's seed members (this node among them).
    pub async fn start(
        node: Arc<ClusterNode>,
        id: impl Into<GroupId>,
        db: &LogDb,
        applier: Arc<dyn Applier>,
        members: &[Node],
        timing: Timing,
    ) -> Result<Arc<Group>, ClusterError> {
        Self::open(node, id.into(), db, applier, members, timing, true).await
    }

    /// Starts this node's member of group `id`, which exists already: it never initializes the
    /// group (its log may be empty), but waits for the leader to add it ([`Group::change_members`]
    /// on the leader's node). `members`: the group's members as wanted, this node among them.
    pub async fn join(
        node: Arc<ClusterNode>,
        id: impl Into<GroupId>,
        db: &LogDb,
        applier: Arc<dyn Applier>,
        members: &[Node],
        timing: Timing,
    ) -> Result<Arc<Group>, ClusterError> {
        Self::open(node, id.into(), db, applier, members, timing, false).await
    }

    async fn open(
        node: Arc<ClusterNode>,
        id: GroupId,
        db: &LogDb,
        applier: Arc<dyn Applier>,
        members: &[Node],
        timing: Timing,
        may_initialize: bool,
    ) -> Result<Arc<Group>, ClusterError> {
        let me = node_id(node.name());
        for m in members {
            node.link().add_peer(&m.name, &m.addr);
        }
        let (log, state_machine) = {
            let (db, id) = (db.clone(), id.clone());
            tokio::task::spawn_blocking(move || -> Result<_, ClusterError> {
                let log = LogStore::open(&db, id.clone())?;
                let state_machine = StateMachine::open(&log, applier)?;
                Ok((log, state_machine))
            })
            .await??
        };
        let recovered = log.committed_index().unwrap_or(0);
        let log_closed = log.closed();
        let restart_sm = state_machine.clone();
        let config = openraft::Config {
            // Named when an instance starts (see `instance_config`): the rest is shared.
            cluster_name: String::new(),
            heartbeat_interval: timing.heartbeat.as_millis() as u64,
            election_timeout_min: timing.election_min.as_millis() as u64,
            election_timeout_max: timing.election_max.as_millis() as u64,
            // A node cut off and back does not depose a healthy leader.
            enable_pre_vote: Some(true),
            enable_tick: !timing.quiet,
            snapshot_policy: match timing.snapshot_every {
                Some(n) => openraft::SnapshotPolicy::LogsSinceLast(n),
                None => openraft::SnapshotPolicy::Never,
            },
            // Latency per stage of each entry's life, kept only for openraft's `runtime-stats`
            // feature (not built) but allocated all the same: 6 rings of 1,024 by default, a
            // good part of an idle member's memory.
            log_stage_capacity: Some(1),
            // Entries a snapshot covers are kept for members a little behind (sent entries
            // rather than the snapshot): as many as come between two snapshots, at most
            // openraft's default, so the log stays within twice the interval.
            max_in_snapshot_log_to_keep: timing
                .snapshot_every
                .map_or(timing.kept_behind_snapshot, |n| {
                    n.min(timing.kept_behind_snapshot)
                }),
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let config = shared_config(config);
        let may_be_born =
            may_initialize && timing.born_dormant && timing.quiet && timing.dormant_after.is_some();
        let born = match may_be_born {
            true => dormant::born(&log, me, members).await?,
            false => None,
        };
        let newborn = born.is_some();
        let may_start_dormant =
            timing.dormant_if_settled && timing.quiet && timing.dormant_after.is_some();
        let restarted = if born.is_none() && may_start_dormant {
            dormant::restarted(&log, &restart_sm, me, members).await?
        } else {
            None
        };
        let (as_born, restarted) = match restarted {
            Some(dormant::Restarted::AsBorn(known)) => (true, Some(known)),
            Some(dormant::Restarted::Settled(known)) => (false, Some(known)),
            None => (false, None),
        };
        let restarted_leader = restarted.as_ref().and_then(|known| known.leader);
        let (instance, raft) = match born.or(restarted) {
            Some(known) => {
                drop(log);
                (Instance::Dormant(Box::new(known)), None)
            }
            None => {
                // A member started by this process never leads at once on what its log says
                // it led before (openraft's default): the others may have elected another
                // since, and until it heard of it, it would do a leader's work
                // (dead-lettering, as it replays its log) on a stale state. It waits for an
                // election, as a Ra server does. A dormant member woken (see `dormant`) does
                // lead again at once: its log is as current as its leadership.
                let network = GroupNetwork::new(node.link().clone(), id.clone());
                let raft = openraft::Raft::new(
                    me,
                    instance_config(&config, &id, false),
                    network,
                    log,
                    state_machine,
                )
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
                if timing.quiet {
                    // A quiet group's elections come from `keep_led` alone, even while its
                    // ticker runs (see `Group::wake`).
                    raft.runtime_config().elect(false);
                }
                (Instance::Running(raft.clone()), Some(raft))
            }
        };
        // Numbers from the clock, so that a restarted node never reuses one an entry of its
        // previous life still carries.
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let restart = Restart::new(db.clone(), restart_sm, config, timing.dormant_after);
        let group = Arc::new(Group {
            id: id.clone(),
            me,
            instance: std::sync::RwLock::new(instance),
            node: node.clone(),
            numbers: AtomicU64::new(start),
            log_closed: std::sync::Mutex::new(log_closed),
            restart,
            quiet: timing.quiet,
            idle_checks: std::sync::atomic::AtomicU32::new(0),
            last_index_seen: AtomicU64::new(0),
            keeping: std::sync::atomic::AtomicBool::new(false),
            leader_gone_rounds: std::sync::atomic::AtomicU8::new(0),
            recovered,
            newborn,
        });
        if newborn || as_born {
            // Before any request can reach it: woken, it must know how it was born.
            group.restart.born(me, members);
        } else if let Some(leader) = restarted_leader {
            group.restart.restarted(leader);
        }
        node.add_group(id.clone(), dormant::endpoint(&group));
        let Some(raft) = raft else {
            return Ok(group);
        };
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if !initialized && may_initialize {
            let seeds: BTreeMap<NodeId, Node> = members
                .iter()
                .map(|m| (node_id(&m.name), m.clone()))
                .collect();
            // openraft's initialize makes this member a candidate at once, without a pre-vote:
            // a member that did so after the group had elected its leader deposed it (its vote
            // outranks the leader's in the same term) and the group had no leader for an
            // election timeout or more. So the first seed initializes the group at once, and
            // the others only if no leader has reached them within an election timeout (the
            // first is down, or its first election found too few members up).
            let first = members.first().is_none_or(|m| node_id(&m.name) == me);
            let wait = match first {
                true => Duration::ZERO,
                false => timing.election_min,
            };
            let (raft, id) = (raft.clone(), id.clone());
            let initialize = async move {
                tokio::time::sleep(wait).await;
                if raft.is_initialized().await.unwrap_or(true) {
                    return;
                }
                // Another member may have initialized it and reached this one first: fine.
                if let Err(e) = raft.initialize(seeds).await {
                    tracing::debug!("group {id}: initialize: {e}");
                }
            };
            match first {
                true => initialize.await,
                false => {
                    tokio::spawn(initialize);
                }
            }
        }
        Ok(group)
    }

    /// Entries up to this index were committed, and applied, in this member's previous life
    /// (before this process opened its log): applied again as the log is replayed, their effects
    /// outside the group (a dead-letter routed) happened then and are not to be repeated.
    pub fn recovered_index(&self) -> u64 {
        self.recovered
    }

    /// Whether this process gave the member its log, born dormant (see [`Timing::born_dormant`]):
    /// no earlier process of this node took part in the group through it (a member is used only
    /// once its log is durable).
    pub fn is_newborn(&self) -> bool {
        self.newborn
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A proposal of this node's, numbered: the applier knows it by (origin, number).
    pub fn proposal(&self, payload: Vec<u8>) -> Proposal {
        Proposal {
            origin: self.me,
            number: self.numbers.fetch_add(1, Ordering::Relaxed),
            payload,
        }
    }

    /// Proposes `proposal` and waits until the group has committed it (the leader has applied
    /// it; this node applies it in its turn). Retried only where it cannot have been appended (a
    /// node that is not the leader refused it, or it could not be sent), so it is never committed
    /// twice.
    pub async fn propose(
        &self,
        proposal: Proposal,
        timeout: Duration,
    ) -> Result<u64, ProposeError> {
        let (_in_use, raft) = self
            .running()
            .await
            .map_err(|e| ProposeError::Failed(e.to_string()))?;
        self.wake();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut metrics = raft.metrics();
        loop {
            // Just woken, a member knows no leader until one speaks: the one it knew before
            // (woken by the proposal, it stands for election at once).
            let leader = metrics
                .borrow_watched()
                .current_leader
                .or_else(|| self.restart.leader_before());
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ProposeError::Timeout(timeout));
            }
            match leader {
                Some(leader) if leader == self.me => {
                    let outcome =
                        tokio::time::timeout(remaining, raft.client_write(proposal.clone())).await;
                    match outcome {
                        Err(_) => return Err(ProposeError::Timeout(timeout)),
                        // No heartbeat to tell the followers: openraft's replication
                        // streams send them each commit as it advances (see
                        // `Group::submit_as_leader`).
                        Ok(Ok(written)) => return Ok(written.log_id.index),
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                            // Lost the leadership before appending: ask the next leader.
                        }
                        Ok(Err(e)) => return Err(ProposeError::Failed(e.to_string())),
                    }
                }
                // A leader this member has heard of before learning the membership (its log
                // still empty): wait until it knows where to send.
                Some(leader) => match self.member_name(leader) {
                    None => {}
                    Some(name) => {
                        let request = Request::Propose {
                            group: self.id.clone(),
                            proposal: proposal.clone(),
                        };
                        match self.node.link().request(&name, request, remaining).await {
                            Ok(Response::Propose(Ok(index))) => return Ok(index),
                            Ok(Response::Propose(Err(ProposeRefused::NotLeader { .. }))) => {}
                            Ok(Response::Propose(Err(ProposeRefused::Failed(e)))) => {
                                return Err(ProposeError::Failed(e))
                            }
                            Ok(other) => {
                                return Err(ProposeError::Failed(format!(
                                    "unexpected answer {other:?}"
                                )))
                            }
                            Err(LinkError::Timeout(_)) => {
                                return Err(ProposeError::Timeout(timeout))
                            }
                            // Never sent: safe to try again once the leader may have changed.
                            Err(LinkError::NotConnected(_)) | Err(LinkError::UnknownPeer(_)) => {}
                            Err(e) => return Err(ProposeError::Failed(e.to_string())),
                        }
                    }
                },
                None => {}
            }
            // Wait for a (new) leader, or a moment if the same one refused.
            let _ =
                tokio::time::timeout(remaining.min(Duration::from_millis(100)), metrics.changed())
                    .await;
        }
    }

    /// Hands `proposal` to the group's log at once if this member leads, without waiting for
    /// its commit: proposals handed over one after the other are appended in that order, and
    /// the future answers when this one is committed (its index), as [`Group::propose`] does.
    /// A member that does not lead gives the proposal back (propose it with
    /// [`Group::propose`]). A leader that lost its leadership before appending it answers
    /// [`Pipelined::NotAppended`]: the proposal can be proposed again.
    pub async fn submit_as_leader(
        &self,
        proposal: Proposal,
    ) -> Result<impl std::future::Future<Output = Pipelined> + Send + 'static, Proposal> {
        let Ok((_in_use, raft)) = self.running().await else {
            return Err(proposal);
        };
        self.wake();
        if raft.metrics().borrow_watched().current_leader != Some(self.me) {
            return Err(proposal);
        }
        let (responder, answer) = openraft::impls::ProgressResponder::complete_only();
        if raft
            .client_write_ff(proposal.clone(), Some(responder))
            .await
            .is_err()
        {
            return Err(proposal);
        }
        Ok(async move {
            match answer.await {
                // No heartbeat to tell the followers: the leader's replication streams carry
                // each commit to them (the next append, or one of its own when none follows:
                // openraft's `ReplicateCommitted`), and a heartbeat per commit doubled the
                // messages of a busy queue (local-5k p99 median 21 against 12 ms without, 4 runs
                // each).
                Ok(Ok(written)) => Pipelined::Committed(written.log_id.index),
                Ok(Err(ClientWriteError::ForwardToLeader(_))) => Pipelined::NotAppended(proposal),
                Ok(Err(e)) => Pipelined::Failed(e.to_string()),
                Err(_) => Pipelined::Failed("the group stopped".into()),
            }
        })
    }

    /// As [`Group::propose`], from the leader only: a member that is not the leader refuses it
    /// at once, never forwards it. For a proposal that states what this member observes (a
    /// node unreachable), true only while it leads with a majority: a stale leader's entry is
    /// replaced by the next leader's log, where a forwarded one would be committed whenever it
    /// arrived (after a partition's heal, say).
    pub async fn propose_as_leader(
        &self,
        proposal: Proposal,
        timeout: Duration,
    ) -> Result<u64, ProposeError> {
        let (_in_use, raft) = self
            .running()
            .await
            .map_err(|e| ProposeError::Failed(e.to_string()))?;
        self.wake();
        if raft.metrics().borrow_watched().current_leader != Some(self.me) {
            return Err(ProposeError::Failed("this member is not the leader".into()));
        }
        match tokio::time::timeout(timeout, raft.client_write(proposal)).await {
            Err(_) => Err(ProposeError::Timeout(timeout)),
            Ok(Ok(written)) => Ok(written.log_id.index),
            Ok(Err(e)) => Err(ProposeError::Failed(e.to_string())),
        }
    }

    /// Before a member leaves for good (its group's last entry applied, as a queue's delete):
    /// the leader tells the others once more that `index` is committed (its replication streams
    /// sent the commit as it advanced, but a follower whose link dropped meanwhile would wait for
    /// a next message that a leader about to stop never sends), and every member waits (at most
    /// `within`) until the others it reaches have applied it, so that none is left behind with
    /// the entry uncommitted.
    pub async fn leave_after(&self, index: u64, within: Duration) {
        if let Some(raft) = self.live().filter(|_| self.is_leader()) {
            let _ = raft.trigger().heartbeat().await;
        }
        self.wait_applied_everywhere(index, within).await;
    }

    /// Waits (at most `within`) until every member this node reaches has applied up to `index`:
    /// a change answered after this is seen by every node that is up, as RabbitMQ's metadata
    /// changes are (a declare on one node, then a bind on another, finds the queue there).
    pub async fn wait_applied_everywhere(&self, index: u64, within: Duration) {
        let members: Vec<String> = self
            .members()
            .into_iter()
            .filter(|m| m.name != self.node.name() && m.reachable)
            .map(|m| m.name)
            .collect();
        let asks = members.iter().map(|name| {
            let request = Request::WaitApplied {
                group: self.id.clone(),
                index,
                within_ms: within.as_millis() as u64,
            };
            self.node
                .link()
                .request(name, request, within + Duration::from_millis(100))
        });
        futures::future::join_all(asks).await;
    }

    fn member_name(&self, id: NodeId) -> Option<String> {
        self.with_known(|known| {
            known
                .membership
                .membership()
                .get_node(&id)
                .map(|n| n.name.clone())
        })
    }

    /// The group's members as this node sees them.
    pub fn members(&self) -> Vec<MemberStatus> {
        let link = self.node.link();
        let mut members: Vec<MemberStatus> = self.with_known(|known| {
            known
                .membership
                .membership()
                .nodes()
                .map(|(id, n)| MemberStatus {
                    name: n.name.clone(),
                    addr: n.addr.clone(),
                    reachable: *id == self.me || link.is_connected(&n.name),
                    leader: known.leader == Some(*id),
                })
                .collect()
        });
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members
    }

    /// This member's log: the last index purged (into a snapshot), the last index, and the last
    /// index its snapshot holds.
    pub fn log_figures(&self) -> LogFigures {
        LogFigures {
            dormant: self.is_dormant(),
            ..self.with_known(figures_of)
        }
    }

    /// Asks for a snapshot now (and the purge of the log it covers), whatever the entry count.
    pub async fn snapshot_now(&self) {
        if let Some(raft) = self.live() {
            let _ = raft.trigger().snapshot().await;
        }
    }

    /// Every member's figures, asked of its node over the link (within `within`), this one's
    /// from here; by member name.
    pub async fn member_figures(&self, within: Duration) -> Vec<MemberFigures> {
        let asks = self.members().into_iter().map(|member| async move {
            let figures = if member.name == self.node.name() {
                Some(self.log_figures())
            } else {
                let request = Request::Figures {
                    group: self.id.clone(),
                };
                match self
                    .node
                    .link()
                    .request(&member.name, request, within)
                    .await
                {
                    Ok(Response::Figures(figures)) => figures,
                    _ => None,
                }
            };
            MemberFigures {
                name: member.name,
                figures,
            }
        });
        futures::future::join_all(asks).await
    }

    /// One step towards a group whose voters are `wanted` (this node's member never leaves
    /// the group by itself: the leader removes it). Only the leader acts: it adds the wanted
    /// members that are not in the group as learners and waits (at most `within`) until they
    /// have caught up, then makes them the voters. A leader that is not wanted first makes the
    /// wanted members voters beside it, then hands its leadership to one of them, which makes
    /// the rest of the change (openraft keeps a leader that removed itself leading). Called
    /// again until it answers [`MembershipStep::Done`]: a step cut short (a leader change, a
    /// member not up) is taken again from where the group is.
    pub async fn change_members(
        &self,
        wanted: &[Node],
        within: Duration,
    ) -> Result<MembershipStep, ClusterError> {
        let wanted_ids: BTreeSet<NodeId> = wanted.iter().map(|n| node_id(&n.name)).collect();
        if wanted_ids.is_empty() {
            return Err(ClusterError::Raft(
                "a group keeps at least one member".into(),
            ));
        }
        let (_in_use, raft) = self.running().await?;
        let (leader, configs, known) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow_watched();
            let membership = metrics.membership_config.membership();
            let known: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
            (
                metrics.current_leader,
                membership.get_joint_config().clone(),
                known,
            )
        };
        if leader != Some(self.me) {
            return Ok(MembershipStep::NotLeader);
        }
        if configs.len() == 1 && configs[0] == wanted_ids {
            return Ok(MembershipStep::Done);
        }
        let failed = |e: String| ClusterError::Raft(format!("group {}: {e}", self.id));
        self.wake();
        for node in wanted {
            let id = node_id(&node.name);
            let voter = configs.iter().any(|c| c.contains(&id));
            if known.contains(&id) && voter {
                continue;
            }
            self.node.link().add_peer(&node.name, &node.addr);
            match tokio::time::timeout(within, raft.add_learner(id, node.clone(), true)).await {
                Err(_) => return Err(failed(format!("{} did not catch up in time", node.name))),
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Ok(Ok(_)) => {}
            }
        }
        let mut voters = wanted_ids.clone();
        let stays = wanted_ids.contains(&self.me);
        if !stays {
            voters.insert(self.me);
        }
        let current = configs.last().cloned().unwrap_or_default();
        if configs.len() > 1 || current != voters {
            match tokio::time::timeout(within, raft.change_membership(voters, false)).await {
                Err(_) => return Err(failed("the membership change timed out".into())),
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Ok(Ok(_)) => {}
            }
            let _ = raft.trigger().heartbeat().await;
        }
        if stays {
            return Ok(MembershipStep::Done);
        }
        // Handed to a wanted member its link reaches (a voter now, caught up as a learner).
        let to = wanted
            .iter()
            .find(|n| self.node.link().is_connected(&n.name))
            .ok_or_else(|| failed("no wanted member is reachable to lead".into()))?;
        raft.trigger()
            .transfer_leader(node_id(&to.name))
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(MembershipStep::HandedOver)
    }

    /// Hands the group's leadership to its member on node `to` (a voter), and waits (at most
    /// `within`) until this member knows it leads: the leader is asked over the link when it is
    /// another node. True once `to` leads.
    pub async fn transfer_leadership(&self, to: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let target = node_id(to);
        let Ok((_in_use, raft)) = self.running().await else {
            return false;
        };
        let mut metrics = raft.metrics();
        loop {
            let leader = metrics.borrow_watched().current_leader;
            if leader == Some(target) {
                return true;
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return false;
            }
            match leader.and_then(|id| self.member_name(id)) {
                Some(name) if name == self.node.name() => {
                    let _ = raft.trigger().transfer_leader(target).await;
                }
                Some(name) => {
                    let request = Request::TransferLeader {
                        group: self.id.clone(),
                        to: to.to_owned(),
                    };
                    let _ = self.node.link().request(&name, request, remaining).await;
                }
                None => {}
            }
            // The new leader's election, or the next attempt.
            let wait = remaining.min(Duration::from_millis(500));
            let _ = tokio::time::timeout(wait, async {
                while metrics.changed().await.is_ok() {
                    if metrics.borrow_watched().current_leader == Some(target) {
                        return;
                    }
                }
            })
            .await;
        }
    }

    /// The voters of the membership this member has (the new ones while a change is under way),
    /// by name.
    pub fn voters(&self) -> Vec<String> {
        self.log_figures().voters
    }

    /// Whether the group's voters are exactly the nodes `names` (no change under way), as this
    /// member knows them; without allocating (checked as often as the member's loop turns).
    pub fn has_voters(&self, names: &[String]) -> bool {
        self.with_known(|known| voters_are(known, names))
    }

    /// Whether this member leads the group (as it knows).
    pub fn is_leader(&self) -> bool {
        self.with_known(|k| k.leader == Some(self.me))
    }

    /// The leader's name, if one is known.
    pub fn leader(&self) -> Option<String> {
        let leader = self.with_known(|k| k.leader)?;
        self.member_name(leader)
    }
}

/// Whether the voters of `known`'s membership are exactly the nodes `names`.
fn voters_are(known: &Known, names: &[String]) -> bool {
    let membership = known.membership.membership();
    let configs = membership.get_joint_config();
    let [voters] = configs.as_slice() else {
        return false;
    };
    voters.len() == names.len()
        && voters.iter().all(|id| {
            membership
                .get_node(id)
                .is_some_and(|n| names.contains(&n.name))
        })
}

impl Group {
    /// For a quiet group (see [`Timing::quiet`]): from now until the member stops, makes sure
    /// the group has a leader (one loop for all the node's groups: [`keeper`]). Every `check` it
    /// looks, locally, whether the leader it knows is this
    /// node or a node whose link is up; if not (none known, or its node unreachable), the
    /// reachable members try an election in turn, in the order of `preference` (member names;
    /// the others after them by name), the first at once and each next one a `check` later, so
    /// that they do not split the vote. A member idle for [`Timing::dormant_after`] goes
    /// dormant (see [`dormant`]); a dormant one only looks whether the node of the leader it
    /// knew is still reachable (if not, it wakes and elects another). It holds the group
    /// weakly, and forgets it once the group is dropped or shut down.
    pub fn keep_led(self: &Arc<Self>, check: Duration, preference: Vec<String>) {
        self.node.keepers.keep(self, check, preference);
    }

    /// A quiet group's ticker on (heartbeats, lease renewals), for as long as it is in use: an
    /// idle quiet group's leader lease runs out, and without ticks nothing renews it, so the
    /// leader refused every write after a few idle seconds. Each member turns its own on when
    /// it proposes or is asked to ([`crate::node`]'s proposals on a leader), and off again after
    /// [`IDLE_CHECKS`] checks of [`Group::keep_led`] without the log growing.
    pub fn wake(&self) {
        if self.quiet {
            self.idle_checks.store(0, Ordering::Relaxed);
            if let Some(raft) = self.live() {
                raft.runtime_config().tick(true);
            }
        }
    }

    /// Counts a check of [`Group::keep_led`]: a quiet group's ticker goes off after
    /// [`IDLE_CHECKS`] without the log growing (or a check before it goes dormant); true once
    /// the member has been idle for [`Timing::dormant_after`] (checks `check` apart) and may go
    /// dormant.
    fn quiet_down_when_idle(&self, check: Duration) -> bool {
        if !self.quiet {
            return false;
        }
        let last = self.log_figures().last.unwrap_or(0);
        if self.last_index_seen.swap(last, Ordering::Relaxed) != last {
            self.idle_checks.store(0, Ordering::Relaxed);
            return false;
        }
        let idle = self.idle_checks.fetch_add(1, Ordering::Relaxed) + 1;
        let (tick_off_at, dormant_at) = idle_schedule(check, self.restart.dormant_after());
        if idle == tick_off_at {
            if let Some(raft) = self.live() {
                raft.runtime_config().tick(false);
            }
        }
        dormant_at.is_some_and(|at| idle >= at)
    }

    /// One round of [`Group::keep_led`]; false once the member has stopped.
    async fn lead_or_elect(&self, check: Duration, preference: &[String]) -> bool {
        let me = self.node.name().to_owned();
        if self.leader_reachable(&me) {
            return true;
        }
        let mut candidates: Vec<String> = self
            .members()
            .into_iter()
            .filter(|m| m.reachable)
            .map(|m| m.name)
            .collect();
        candidates.sort_by_key(|name| {
            let preferred = preference.iter().position(|p| p == name);
            (preferred.unwrap_or(usize::MAX), name.clone())
        });
        let rank = candidates.iter().position(|name| *name == me).unwrap_or(0);
        tokio::time::sleep(check * rank as u32).await;
        if self.leader_reachable(&me) {
            return true;
        }
        // Pre-vote: a member that still hears from a leader refuses, so a leader that is only
        // slow to be seen is not deposed.
        match self.live() {
            Some(raft) => raft.trigger().elect(true).await.is_ok(),
            None => true,
        }
    }

    /// Whether the other member that led when this one went dormant is on a node whose link is
    /// down.
    fn leader_gone(&self) -> bool {
        self.restart
            .leader_before()
            .and_then(|id| self.member_name(id))
            .is_some_and(|name| !self.node.link().is_connected(&name))
    }

    /// Whether the leader this member knows is itself or a node whose link is up.
    fn leader_reachable(&self, me: &str) -> bool {
        match self.leader() {
            None => false,
            Some(leader) if leader == me => true,
            Some(leader) => self.node.link().is_connected(&leader),
        }
    }

    /// Stops the member and waits (a few seconds at most) until its log is closed, so that it
    /// can be started again (or removed) at once.
    pub async fn shutdown(&self) {
        self.node.remove_group(&self.id);
        if let Some(raft) = self.stop_for_good().await {
            let _ = raft.shutdown().await;
        }
        self.wait_log_closed().await;
    }

    /// Waits (a few seconds at most) until the log of the last Raft instance is closed.
    async fn wait_log_closed(&self) {
        let log_closed = || self.log_closed.lock().unwrap_or_else(|e| e.into_inner());
        log_closed().write_queued();
        let closed = || log_closed().is_closed();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !closed() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What a member's metrics say of its log and its role.
pub(crate) fn figures_of(known: &Known) -> LogFigures {
    let membership = known.membership.membership();
    let configs = membership.get_joint_config();
    let role = match known.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    };
    LogFigures {
        purged: known.purged,
        last: known.last,
        snapshot: known.snapshot,
        committed: known.committed,
        applied: known.applied,
        term: known.term,
        role: role.to_owned(),
        voters: voter_names(membership, configs.last()),
        joint: configs.len() > 1,
        dormant: false,
    }
}

/// The names of `ids` in `membership`, sorted.
fn voter_names(
    membership: &openraft::Membership<NodeId, Node>,
    ids: Option<&BTreeSet<NodeId>>,
) -> Vec<String> {
    let mut names: Vec<String> = ids
        .into_iter()
        .flatten()
        .filter_map(|id| membership.get_node(id).map(|n| n.name.clone()))
        .collect();
    names.sort();
    names
}
