//! A quorum queue on one of its members: the queue's handle takes the same commands as any
//! queue's; here they become proposals to the queue's Raft group, and what the group applies
//! comes back in log order ([`AppliedEntry`]) to answer this node's callers (a publish's confirm
//! once a majority has it on disk and it is applied) and to carry out the effects that are this
//! node's: deliveries to its own consumers, their cancellations. The leader alone carries out
//! the rest: dead-letters, expiry ticks.
//!
//! Proposals leave in order, a few at a time on the leader (its log appends the next while the
//! earlier ones replicate), one at a time elsewhere (the next waits for the previous one's
//! commit): publishes that pile up meanwhile go out together, one entry for all of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use warren_amqp::AmqpError;
use warren_cluster::group::{Group, Timing};
use warren_cluster::node::ClusterNode;
use warren_cluster::{node_id, LogDb, Node, NodeId};
use warren_storage::Store;

use super::applier::{AppliedEntry, QuorumApplier};
use super::machine::{Answer, QuorumCommand, ReplicaEffect};
use super::sleep::{Bed, Wake};
use crate::queue::core::{CoreSpec, Outcome, Taken};
use crate::queue::host::QueueHost;
use crate::queue::owner::{route_dead_letter, DeadLetterConfirms};
use crate::queue::recv_if_made;
use crate::queue::remote::wire::{ConsumeTerms, Settle, WireMessage};
use crate::queue::{
    ConnEvent, ConnectionFlow, Consumer, ConsumerOutbox, GetReply, Inbox, MemberControl,
    MemberNews, PublishConfirm, QueueCommand, QueueHandle, QueueSpec, QueueStats,
};

/// The most bytes of messages one enqueue carries (a message bigger than that goes alone):
/// entries stay well within what the cluster link carries in one frame.
const ENQUEUE_MAX_BYTES: usize = 1024 * 1024;

/// The most bytes of messages a member holds waiting for earlier proposals' commits before it
/// stops taking more from its inbox: publishers then wait (as for a classic queue that cannot
/// keep up), rather than the member holding whatever they send.
const QUEUED_MAX_BYTES: usize = 16 * 1024 * 1024;

/// How long a proposal may wait for a majority before its callers are told it failed.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a quorum queue's members need of the cluster.
#[derive(Clone)]
pub struct Replication {
    pub node: Arc<ClusterNode>,
    pub db: LogDb,
    /// This process's start (ns since the epoch): a consumer of an earlier process of this node
    /// is gone.
    pub process: u64,
    /// The cluster's nodes, as every node has them (the seed list): shared by every member.
    pub nodes: Arc<[Node]>,
    /// This node's members that leave their group, by group: a member of the same group
    /// started again here (the node added back) tells the one leaving to stop now.
    pub leaving: LeavingMembers,
    /// How long a member stays idle before its Raft instance stops until it is used again (see
    /// `warren_cluster::group::Timing::dormant_after`).
    pub dormant_after: Option<Duration>,
    /// The other nodes taken for gone, told to every member here.
    pub gone: NodesGone,
}

/// The other nodes of the cluster each time their link goes down and stays down
/// [`GONE_AFTER`], told to every member of this node that listens: one watcher per peer for the
/// node, started with the first member (the link knows its peers by then), not one per member.
#[derive(Clone, Default)]
pub struct NodesGone {
    told: Arc<std::sync::OnceLock<tokio::sync::broadcast::Sender<NodeId>>>,
}

/// How many node-gone news a member may leave unread before it misses some (it then looks at
/// every link itself: see [`Member::missed_nodes_gone`]).
const NODES_GONE_KEPT: usize = 64;

impl NodesGone {
    /// News of the other nodes of `nodes` gone, from now on (the watchers started on the first
    /// call, on `node`'s link).
    pub fn subscribe(
        &self,
        node: &Arc<ClusterNode>,
        nodes: &[Node],
    ) -> tokio::sync::broadcast::Receiver<NodeId> {
        self.told
            .get_or_init(|| {
                let (tx, _) = tokio::sync::broadcast::channel(NODES_GONE_KEPT);
                watch_nodes_gone(node, nodes, &tx);
                tx
            })
            .subscribe()
    }
}

/// See [`Replication::leaving`].
pub type LeavingMembers = Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Notify>>>>;

impl Replication {
    /// The members of a quorum queue declared on `home`: `size` nodes (at most the cluster's;
    /// three by default, as RabbitMQ's `x-quorum-initial-group-size`), the declaring node
    /// first, then the nodes after it in name order. The same on every node.
    pub fn group_members(&self, home: &str, size: Option<u32>) -> Vec<Node> {
        let mut nodes = self.nodes.to_vec();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let start = nodes.iter().position(|n| n.name == home).unwrap_or(0);
        nodes.rotate_left(start);
        let size = size.map_or(3, |s| s as usize).clamp(1, nodes.len().max(1));
        nodes.truncate(size);
        nodes
    }

    /// The home (first member, and so first leader) of a quorum queue `queue` declared here with
    /// `x-queue-leader-locator: balanced`, as RabbitMQ places one: the running node that leads
    /// the fewest quorum queues (ties: the first by name), or, once there are 1000 queues or
    /// more, one picked by the queue's name (counting would cost each declare too much).
    pub fn balanced_home(&self, queue: &str) -> String {
        let me = self.node.name();
        let mut running: Vec<&str> = self
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .filter(|name| *name == me || self.node.link().is_connected(name))
            .collect();
        running.sort_unstable();
        if running.is_empty() {
            return me.to_owned();
        }
        let (led, groups) = self.node.leaders(|group| group.starts_with(GROUP_PREFIX));
        if groups >= BALANCED_COUNT_UP_TO {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            queue.hash(&mut hasher);
            return running[(hasher.finish() % running.len() as u64) as usize].to_owned();
        }
        running
            .iter()
            .min_by_key(|name| led.get(&node_id(name)).copied().unwrap_or(0))
            .map_or_else(|| me.to_owned(), |name| (*name).to_owned())
    }

    /// The members of a quorum queue declared on `home` with `initial_group_size`: as its
    /// members were last `changed`, else as chosen at its declare
    /// ([`Replication::group_members`]).
    pub fn members_of(
        &self,
        home: &str,
        initial_group_size: Option<u32>,
        changed: Option<&[String]>,
    ) -> Vec<Node> {
        match changed {
            Some(names) => self.nodes_named(names),
            None => self.group_members(home, initial_group_size),
        }
    }

    /// Waits (at most `within`) until group `group`'s voters are `members`, as every member
    /// that answers says (a majority of them at least), no change under way; whether they are.
    pub async fn wait_for_members(
        &self,
        group: &str,
        members: &[String],
        within: Duration,
    ) -> bool {
        let mut wanted = members.to_vec();
        wanted.sort();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let asks = members
                .iter()
                .map(|peer| self.node.group_figures(peer, group, LEADER_CHECK));
            let answers: Vec<_> = futures::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
                .collect();
            let agree = answers.iter().all(|f| !f.joint && f.voters == wanted);
            if agree && answers.len() > members.len() / 2 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The cluster's nodes of those names, in that order (a name of no node is left out).
    pub fn nodes_named(&self, names: &[String]) -> Vec<Node> {
        nodes_named(&self.nodes, names)
    }
}

/// A quorum queue's group timing: quiet (no ticker while idle, so an idle queue costs nothing;
/// its leader ticks, heartbeats and renews its lease while proposals come, see `Group::wake`;
/// elections when the leader's node is unreachable, see [`Group::keep_led`]), a leader's lease of
/// a few seconds (a member that heard from it that recently refuses another's election), a
/// snapshot every few thousand entries.
pub(crate) fn timing(dormant_after: Option<Duration>) -> Timing {
    Timing {
        heartbeat: Duration::from_millis(500),
        election_min: Duration::from_millis(2_000),
        election_max: Duration::from_millis(4_000),
        snapshot_every: Some(4_096),
        quiet: true,
        // Entries carry up to a MiB of messages each.
        kept_behind_snapshot: 64,
        dormant_after,
        // Declaring a thousand queues runs no Raft instance until each is used.
        born_dormant: true,
        // Nor does restarting a node that holds a thousand idle ones.
        dormant_if_settled: true,
    }
}

/// How long a member's node must stay unreachable before its consumers are taken for gone.
const GONE_AFTER: Duration = Duration::from_secs(3);

/// How long a deleted queue's member waits for the other members to apply the delete.
pub(crate) const LEAVE_WITHIN: Duration = Duration::from_secs(5);

/// How often a member looks whether its queue's leader is reachable (a local check).
pub(crate) const LEADER_CHECK: Duration = Duration::from_secs(1);

/// How long a leader's step of a membership change may take (a member added catches up within
/// it, a snapshot and the entries after it).
const MEMBERSHIP_STEP_WITHIN: Duration = Duration::from_secs(30);

/// How long a member no longer wanted waits for the leader to remove it from its group before
/// it stops all the same (keeping its log: the group may still count it).
const LEAVE_AT_MOST: Duration = Duration::from_secs(60);

/// The group's name: the queue's vhost, name and incarnation (a queue declared again after a
/// delete is another group).
pub fn group_name(vhost: &str, queue: &str, incarnation: u64) -> String {
    format!("{GROUP_PREFIX}{incarnation}/{vhost}/{queue}")
}

/// What every quorum queue's group name starts with.
const GROUP_PREFIX: &str = "q/";

/// With this many quorum queues or more, `balanced` no longer counts leaders (as RabbitMQ).
const BALANCED_COUNT_UP_TO: usize = 1000;

/// Starts this node's member of the quorum queue `spec` (its group's members: `members`);
/// `joins`: the group exists already (its members were changed since its declare), so this
/// member never initializes it (see [`Group::join`]).
pub fn spawn(
    mut spec: QueueSpec,
    host: Weak<dyn QueueHost>,
    store: Store,
    replication: Replication,
    members: Vec<Node>,
    joins: bool,
) -> Arc<QueueHandle> {
    // The group's log holds its messages: nothing of it goes to this node's store.
    spec.storage_id = None;
    let (bed, wake) = Bed::new();
    let news = Arc::new(MemberNews::new(
        members.iter().map(|m| m.name.clone()).collect(),
    ));
    let handle = Arc::new(QueueHandle {
        replicated: true,
        membership: Some(MemberControl {
            node: replication.node.name().into(),
            news: news.clone(),
        }),
        ..QueueHandle::new(spec, Inbox::Waking(bed.clone()))
    });
    let vhost = host
        .upgrade()
        .map(|h| h.vhost_name().to_owned())
        .unwrap_or_default();
    let core = CoreSpec {
        name: handle.name.clone(),
        vhost: vhost.as_str().into(),
        args: handle.effective_args(),
        auto_delete: false,
        logged: false,
        memory_limit: u64::MAX,
    };
    let group = group_name(&vhost, &handle.name, handle.incarnation);
    let started = handle.clone();
    tokio::spawn(async move {
        let applier = Arc::new(QuorumApplier::new(core, wall_clock_ms(), bed.clone()));
        let name = replication.node.name().to_owned();
        let me = node_id(&name);
        // A member of this group that is leaving this node (removed, then added again at
        // once) stops now, keeping its log for this one; one that left lets go of its log.
        let leaving = replication
            .leaving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&group)
            .cloned();
        let handed_over = leaving.is_some();
        if let Some(leaving) = leaving {
            leaving.notify_one();
        }
        let deadline = tokio::time::Instant::now() + LEAVE_AT_MOST + LEAVE_WITHIN;
        while replication.node.has_group(&group) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (node, db) = (replication.node.clone(), &replication.db);
        // A member handed the log of one leaving (removed and added again at once) starts its
        // Raft instance: its group is changing its members.
        let timing = Timing {
            dormant_if_settled: !handed_over,
            ..timing(replication.dormant_after)
        };
        let opened = match joins {
            true => Group::join(node, group.clone(), db, applier.clone(), &members, timing).await,
            false => Group::start(node, group.clone(), db, applier.clone(), &members, timing).await,
        };
        let group = match opened {
            Ok(group) => group,
            Err(e) => {
                tracing::error!(queue = %started.name, group, "quorum queue group not started: {e}");
                return;
            }
        };
        let _ = started.replica.set(group.clone());
        let copy = applier.clone();
        let _ = started.counts.set(Box::new(move || copy.stats()));
        // The declaring node leads when it can (clients declaring on every node spread the
        // leaders), then the members in the order they were chosen.
        let preference = members.iter().map(|m| m.name.clone()).collect();
        group.keep_led(LEADER_CHECK, preference);
        // None seen yet: a group born dormant counts its birth as a change, so the member's
        // first turn looks whether it may sleep.
        let dormancy_seen = 0;
        let member = Member::woken(Kept {
            handle: started,
            host,
            store,
            applier,
            group,
            name,
            me,
            process: replication.process,
            dormancy_seen,
            snapshot_asked: false,
            consumers_gone_pending: false,
            db: replication.db,
            nodes: replication.nodes,
            cluster: replication.node,
            leaving_members: replication.leaving,
            news,
            wanted_seen: 0,
            enqueuer: replication.process + MEMBERS_STARTED.fetch_add(1, Ordering::Relaxed),
            next_seq: 1,
            bed,
            gone: replication.gone,
        });
        live(member, wake, true).await;
    });
    handle
}

/// How many members this process has started: a member's enqueuer id is the process's start
/// plus this (see [`super::machine::EnqueuerId`]).
pub(crate) static MEMBERS_STARTED: AtomicU64 = AtomicU64::new(0);

/// Sends the id of each other node of `nodes` into `told` each time its link goes down and stays
/// down [`GONE_AFTER`] (whether a member listens or not).
fn watch_nodes_gone(
    node: &Arc<ClusterNode>,
    nodes: &[Node],
    told: &tokio::sync::broadcast::Sender<NodeId>,
) {
    let me = node.name().to_owned();
    for m in nodes.iter().filter(|m| m.name != me) {
        let Some(mut link) = node.link().watch_peer(&m.name) else {
            continue;
        };
        let (told, id) = (told.clone(), node_id(&m.name));
        tokio::spawn(async move {
            loop {
                if link.wait_for(|l| l.up).await.is_err() {
                    return;
                }
                if link.wait_for(|l| !l.up).await.is_err() {
                    return;
                }
                // Gone only if it stays gone: a link that drops and comes straight back (this
                // node frozen a moment, its peers having dropped it meanwhile) leaves that
                // node's consumers alone.
                tokio::time::sleep(GONE_AFTER).await;
                if link.borrow().up {
                    continue;
                }
                // No member listening is no reason to stop watching.
                let _ = told.send(id);
            }
        });
    }
}

/// What came of a membership step's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MembershipNews {
    StepDone,
    /// The group no longer counts this (leaving) member.
    Removed,
}

/// The nodes of those names, in that order.
fn nodes_named(nodes: &[Node], names: &[String]) -> Vec<Node> {
    names
        .iter()
        .filter_map(|name| nodes.iter().find(|n| n.name == *name).cloned())
        .collect()
}

/// A proposal to send, and whether only as the leader ([`Group::propose_as_leader`]).
/// Boxed: a channel allocates its first block of slots when it is made, and a dormant member
/// keeps it.
pub(crate) type ToSend = Box<(warren_cluster::Proposal, bool)>;

/// How many proposals a leading member may have in its group's hands at once.
const PIPELINE: usize = 4;

/// Sends the proposals it is given, in order; each one's number comes back once it is committed
/// (true) or has failed (false). On the leader, up to [`PIPELINE`] are appended before the first
/// is committed ([`Group::submit_as_leader`]); elsewhere each waits for the one before.
pub(crate) fn proposer(
    group: Arc<Group>,
) -> (
    mpsc::UnboundedSender<ToSend>,
    mpsc::UnboundedReceiver<(u64, bool)>,
) {
    use futures::stream::{FuturesOrdered, StreamExt};
    use warren_cluster::group::Pipelined;
    type Pending = futures::future::BoxFuture<'static, (u64, Pipelined)>;

    /// Proposes one and waits for its commit.
    async fn propose_now(
        group: &Group,
        proposal: warren_cluster::Proposal,
        leader_only: bool,
    ) -> bool {
        let proposed = match leader_only {
            true => group.propose_as_leader(proposal, COMMIT_TIMEOUT).await,
            false => group.propose(proposal, COMMIT_TIMEOUT).await,
        };
        match proposed {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(group = group.id(), "replicated queue proposal failed: {e}");
                false
            }
        }
    }

    /// The outcome of a pipelined proposal: one the leader lost before appending it is
    /// proposed again, now.
    async fn settle(group: &Group, outcome: Pipelined) -> bool {
        match outcome {
            Pipelined::Committed(_) => true,
            Pipelined::NotAppended(proposal) => propose_now(group, proposal, false).await,
            Pipelined::Failed(e) => {
                tracing::warn!(group = group.id(), "replicated queue proposal failed: {e}");
                false
            }
        }
    }

    let (proposals, mut to_send) = mpsc::unbounded_channel::<ToSend>();
    let (done_tx, done) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
        loop {
            tokio::select! {
                biased;
                Some((number, outcome)) = pending.next(), if !pending.is_empty() => {
                    let ok = settle(&group, outcome).await;
                    if done_tx.send((number, ok)).is_err() {
                        return;
                    }
                }
                received = to_send.recv(), if pending.len() < PIPELINE => {
                    let Some(received) = received else {
                        return;
                    };
                    let (proposal, leader_only) = *received;
                    let number = proposal.number;
                    let proposal = match leader_only {
                        true => proposal,
                        false => match group.submit_as_leader(proposal).await {
                            Ok(committed) => {
                                pending.push_back(Box::pin(async move {
                                    let outcome = tokio::time::timeout(COMMIT_TIMEOUT, committed)
                                        .await
                                        .unwrap_or_else(|_| {
                                            Pipelined::Failed(format!(
                                                "not committed within {COMMIT_TIMEOUT:?}"
                                            ))
                                        });
                                    (number, outcome)
                                }));
                                continue;
                            }
                            Err(proposal) => proposal,
                        },
                    };
                    // Not pipelined: those before it first, in order.
                    while let Some((earlier, outcome)) = pending.next().await {
                        let ok = settle(&group, outcome).await;
                        if done_tx.send((earlier, ok)).is_err() {
                            return;
                        }
                    }
                    let ok = propose_now(&group, proposal, leader_only).await;
                    if done_tx.send((number, ok)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (proposals, done)
}

/// A consumer of this node's.
struct LocalConsumer {
    outbox: ConsumerOutbox,
    /// Its client acks nothing (the state holds its deliveries unsettled all the same, until
    /// its connection has room: see [`Member::deliver`]).
    no_ack: bool,
}

/// A command waiting to be proposed, with the bytes of the messages it carries.
struct Queued {
    command: QuorumCommand,
    waiter: Option<Waiter>,
    bytes: usize,
    /// Proposed only as the leader (see [`Group::propose_as_leader`]).
    leader_only: bool,
    /// An enqueue that publishes may join: never proposed yet (one proposed again keeps what it
    /// carried, as its number may have been applied).
    open: bool,
}

impl Queued {
    fn of(command: QuorumCommand, waiter: Option<Waiter>) -> Queued {
        Queued {
            command,
            waiter,
            bytes: 0,
            leader_only: false,
            open: false,
        }
    }
}

/// A numbered enqueue proposed and not yet applied.
struct SentEnqueue {
    command: QuorumCommand,
    waiter: Option<Waiter>,
    bytes: usize,
    /// The numbers of the proposals it went in (a late commit of an earlier one counts).
    proposals: Vec<u64>,
    /// Its fate is unknown (its proposal failed) or it came out of sequence: proposed again at
    /// the next retry.
    again: bool,
}

/// A no-ack delivery handed to a connection that had no room for more.
struct HeldNoAck {
    consumer: u64,
    flow: Arc<ConnectionFlow>,
    delivery: u64,
}

/// Who waits for a proposal of this node's to be applied.
enum Waiter {
    Confirms(Vec<Option<PublishConfirm>>),
    Consume {
        consumer: u64,
        reply: oneshot::Sender<Result<(), AmqpError>>,
    },
    Cancel {
        consumer: u64,
        done: oneshot::Sender<()>,
    },
    Get {
        no_ack: bool,
        reply: oneshot::Sender<Option<GetReply>>,
    },
    Purge(oneshot::Sender<u32>),
    Delete(oneshot::Sender<Result<u32, AmqpError>>),
    Sync(oneshot::Sender<bool>),
}

pub(super) struct Member {
    /// What it keeps asleep too.
    kept: Kept,
    /// This node's consumers, by their id here.
    consumers: HashMap<u64, LocalConsumer>,
    /// Deliveries to no-ack consumers, by delivery id, that the state holds unsettled until
    /// their connection has room (see [`Member::deliver`]): settled once it has, in one
    /// proposal per batch.
    no_ack_held: Vec<HeldNoAck>,
    /// By proposal number.
    waiting: HashMap<u64, Waiter>,
    /// Its proposer's channels (see [`proposer`]): made with the first proposal, dropped (the
    /// proposer's task ends) when the group goes dormant with nothing in flight.
    proposals: Option<mpsc::UnboundedSender<ToSend>>,
    done: Option<mpsc::UnboundedReceiver<(u64, bool)>>,
    /// The nodes of other members whose link has stayed down [`GONE_AFTER`], until this member
    /// leads and proposes their consumers gone (or their link is back).
    suspects: std::collections::BTreeSet<NodeId>,
    /// Consumers of this node's that the state may hold but this member no longer serves (a
    /// consume that timed out and may be committed later): cancelled once each.
    orphans: std::collections::HashSet<u64>,
    /// Commands waiting for the one in flight to be committed, in order; a publish joins the
    /// enqueue at their end, if that is what ends them (the queue's own group commit: the
    /// slower the commits, the bigger the batches).
    queued: std::collections::VecDeque<Queued>,
    /// The bytes of the messages in `queued`.
    queued_bytes: usize,
    /// Proposals sent and not yet committed (or failed).
    in_flight: usize,
    /// A step of a membership change is under way (this member leads), or a leaving member
    /// asks whether the group has removed it.
    changing: bool,
    /// This node is not wanted any more: since when it leaves (its consumers cancelled, it
    /// waits until the group has removed it).
    leaving: Option<tokio::time::Instant>,
    /// The held dead-letters (at-least-once) this member, as the leader, has routed: where
    /// their confirms stand.
    dead_letters: HashMap<u64, HeldRouting>,
    /// Where the queues a held dead-letter was routed to answer its confirms.
    dead_letter_confirms: DeadLetterConfirms,
    /// The proposals in flight that must reach the log however long it takes, by proposal
    /// number: settlements and cancels. An ack in flight to a leader that was cut off or
    /// killed fails; dropped, it would leave its message unacked for as long as its consumer
    /// lives (its channel, having sent the ack, does not give it back when it closes).
    must_apply: HashMap<u64, QuorumCommand>,
    /// Those that failed, with their waiters: proposed again at `retry_at`.
    retry: Vec<(QuorumCommand, Option<Waiter>)>,
    retry_at: Option<tokio::time::Instant>,
    /// The nodes whose consumers this member, leading, proposed gone, by proposal number: a
    /// suspect again if the proposal fails (a leader that lost its leadership meanwhile).
    gone_proposed: HashMap<u64, NodeId>,
    /// Numbered enqueues proposed and not yet applied, by their number: proposed again until
    /// the state has applied them (a publish without confirms is not lost at a leader change,
    /// nor one with confirms nacked; the state applies each once), their bytes counted in
    /// `sent_bytes`, which with `queued_bytes` stops the inbox when the group stalls.
    sent_enqueues: BTreeMap<u64, SentEnqueue>,
    sent_bytes: usize,
}

/// What a member keeps whether it runs or sleeps (see [`super::sleep`]): a sleeping member keeps
/// only this (its collections, empty then, are made again when it wakes), a third of a running
/// member's size, for a node holding thousands of idle queues.
pub(super) struct Kept {
    handle: Arc<QueueHandle>,
    host: Weak<dyn QueueHost>,
    store: Store,
    applier: Arc<QuorumApplier>,
    group: Arc<Group>,
    db: LogDb,
    /// This node, by name and id.
    name: String,
    me: NodeId,
    process: u64,
    /// Its group's going dormant and waking as far as it has seen them (see
    /// [`Group::dormancy_changed`]).
    dormancy_seen: u64,
    /// A snapshot was asked for and the log has not been cut since.
    snapshot_asked: bool,
    /// Started by this process with its group dormant and nothing of an earlier process of
    /// this node in the state but, perhaps, its enqueuers: their `ConsumersGone` waits for the
    /// first command the member takes or the first entry it applies that its last process did
    /// not (see [`Member::run`]), rather than waking the group at start.
    consumers_gone_pending: bool,
    /// The cluster's nodes.
    nodes: Arc<[Node]>,
    cluster: Arc<ClusterNode>,
    /// The members the group should have, by node name (changed by `add_member`,
    /// `delete_member`, `grow`, `shrink`; the leader makes the group's voters these), and the
    /// cluster dropping the member (see [`MemberNews`]).
    news: Arc<MemberNews>,
    /// Which setting of the members wanted it last acted on.
    wanted_seen: u64,
    /// Where it says that it is leaving (see [`Replication::leaving`]).
    leaving_members: LeavingMembers,
    /// This member's enqueuer id in the state (see [`super::machine::EnqueuerId`]) and the
    /// number of its next enqueue.
    enqueuer: u64,
    next_seq: u64,
    /// Where it sleeps while idle (see [`super::sleep`]).
    bed: Arc<Bed>,
    /// News of other nodes gone, subscribed to each time it runs.
    gone: NodesGone,
}

impl Kept {
    pub(super) fn queue_name(&self) -> &str {
        &self.handle.name
    }
}

/// Why [`Member::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// The member has stopped for good (its queue deleted here, or its member removed).
    Ended,
    /// Idle with its group dormant: it may sleep.
    Idle,
}

/// Runs a member until it stops, asleep whenever it may (see [`super::sleep`]); `fresh`: this
/// process's first run of it (not woken).
pub(super) async fn live(mut member: Box<Member>, mut wake: Wake, mut fresh: bool) {
    loop {
        if member.run(&mut wake, fresh).await == Ran::Ended {
            member.kept.bed.gone();
            return;
        }
        fresh = false;
        let bed = member.kept.bed.clone();
        match bed.try_sleep(member, wake) {
            None => return,
            Some((awake, unread)) => (member, wake) = (awake, unread),
        }
    }
}

/// How long a settlement or a cancel that failed waits before it is proposed again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// A held dead-letter routed by this member.
enum HeldRouting {
    /// Confirms still to come, and whether those that came were all acks.
    Confirming { remaining: usize, all_ok: bool },
    /// Confirmed by every queue it reached: its release is proposed (since when).
    Releasing(tokio::time::Instant),
}

/// How long a held dead-letter's release may take to be applied before it is routed again.
const RELEASE_WITHIN: Duration = Duration::from_secs(30);

/// How often the leader routes again the held dead-letters that could not be routed or were
/// refused (no queue bound, a target that nacked).
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

impl Member {
    /// Proposes that this node's consumers, gets and enqueuers of earlier processes are gone.
    fn propose_consumers_gone(&mut self) {
        self.propose(
            QuorumCommand::ConsumersGone {
                node: self.kept.me,
                process: self.kept.process,
            },
            None,
        );
    }

    /// Proposes the `ConsumersGone` a member started dormant left pending (see
    /// [`Kept::consumers_gone_pending`]), if it did.
    fn propose_pending_consumers_gone(&mut self) {
        if std::mem::take(&mut self.kept.consumers_gone_pending) {
            self.propose_consumers_gone();
        }
    }

    /// Runs the member until it stops for good, or until it is idle with its group dormant.
    async fn run(&mut self, wake: &mut Wake, fresh: bool) -> Ran {
        // This node's consumers of an earlier process are gone: what they held goes back. (A
        // member born in this process had none: it is not woken for nothing. Nor is one started
        // dormant whose state holds no consumer or get of this node: the enqueuers an earlier
        // process left are forgotten with its first command.)
        if fresh && !self.kept.group.is_newborn() {
            let me = self.kept.me;
            let held_here = self.kept.applier.with_machine(|m| m.holds_anything_of(me));
            match held_here || !self.kept.group.is_dormant() {
                true => self.propose_consumers_gone(),
                false => self.kept.consumers_gone_pending = true,
            }
        }
        // Every other node of the cluster: a member may be added on any of them later.
        let Wake {
            inbox: rx,
            applied,
            down,
        } = wake;
        let down = down.get_or_insert_with(|| {
            self.kept
                .gone
                .subscribe(&self.kept.cluster, &self.kept.nodes)
        });
        // Grown by what arrives: an idle queue holds no room for a burst.
        let mut batch = Vec::new();
        let mut suspects_check = tokio::time::interval(LEADER_CHECK);
        suspects_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deleted = false;
        let mut down_closed = false;
        let mut last_applied = 0;
        let (membership_tx, mut membership) = mpsc::unbounded_channel();
        let mut membership_check = tokio::time::interval(LEADER_CHECK);
        membership_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut removed = false;
        let mut dropped = false;
        let news = self.kept.news.clone();
        let handed_over = Arc::new(tokio::sync::Notify::new());
        let mut dead_letter_retry = tokio::time::interval(DEAD_LETTER_RETRY);
        dead_letter_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !deleted && !removed {
            let wake = self.next_tick();
            let timer = async {
                match wake {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            let room = self.queued_bytes + self.sent_bytes < QUEUED_MAX_BYTES;
            tokio::select! {
                received = rx.recv_many(&mut batch, 256), if room => {
                    if received == 0 {
                        break;
                    }
                    for cmd in batch.drain(..) {
                        // With the first command that uses the group (not a read of counts).
                        let reads_only = matches!(
                            cmd,
                            QueueCommand::Stats { .. } | QueueCommand::Sync(_) | QueueCommand::Resume
                        );
                        if !reads_only {
                            self.propose_pending_consumers_gone();
                        }
                        self.handle(cmd);
                    }
                    self.send_next();
                }
                Some(entry) = applied.recv() => {
                    last_applied = entry.index;
                    // An entry its last process never had (the leader sends what it missed
                    // while down) may be a consume or a get of that process: gone too.
                    let new = entry.index > self.kept.group.recovered_index();
                    deleted = self.on_applied(*entry);
                    if new && !deleted {
                        self.propose_pending_consumers_gone();
                    }
                    let wants = self.kept.applier.wants_snapshot();
                    if wants && !self.kept.snapshot_asked {
                        let group = self.kept.group.clone();
                        tokio::spawn(async move { group.snapshot_now().await });
                    }
                    self.kept.snapshot_asked = wants;
                }
                Some((number, ok)) = recv_if_made(&mut self.done) => self.on_done(number, ok),
                seen = self.kept.group.dormancy_changed(self.kept.dormancy_seen) => {
                    self.kept.dormancy_seen = seen;
                    self.on_dormancy();
                }
                // A member's node is gone (killed, or cut off): its consumers' deliveries go
                // back to the queue for the others, as RabbitMQ returns a lost consumer's. The
                // leader proposes it; every member keeps it in mind, as the gone node may have
                // been the leader (the next one proposes it).
                news = down.recv(), if !down_closed => {
                    use tokio::sync::broadcast::error::RecvError;
                    match news {
                        Ok(node) => {
                            self.suspects.insert(node);
                        }
                        Err(RecvError::Lagged(_)) => self.missed_nodes_gone(),
                        Err(RecvError::Closed) => down_closed = true,
                    }
                    self.propose_suspects();
                }
                _ = suspects_check.tick(), if !self.suspects.is_empty() => self.propose_suspects(),
                _ = news.wanted_changed.notified() => {
                    let (setting, _) = self.kept.news.wanted();
                    if setting != self.kept.wanted_seen {
                        self.kept.wanted_seen = setting;
                        self.step_membership(&membership_tx, &handed_over);
                    }
                }
                _ = membership_check.tick(), if self.membership_unsettled() => {
                    if self.leaving.is_some_and(|since| since.elapsed() > LEAVE_AT_MOST) {
                        tracing::warn!(
                            queue = %self.kept.handle.name,
                            "quorum queue member not wanted here stops, its group not having removed it"
                        );
                        break;
                    }
                    self.step_membership(&membership_tx, &handed_over);
                }
                Some(event) = self.dead_letter_confirms.next() => {
                    self.on_dead_letter_confirm(event)
                }
                _ = crate::queue::sleep_until_some(self.retry_at) => self.propose_again(),
                _ = dead_letter_retry.tick(), if self.has_held_dead_letters() => {
                    self.route_held_dead_letters();
                }
                // Added back meanwhile: the member started in its place takes over its log.
                _ = handed_over.notified(), if self.leaving.is_some() => break,
                _ = news.dropped.notified() => {
                    dropped = true;
                    break;
                }
                Some(news) = membership.recv() => {
                    self.changing = false;
                    removed = news == MembershipNews::Removed;
                }
                _ = timer => {
                    if self.is_leader() {
                        self.propose(QuorumCommand::Tick { at_ms: wall_clock_ms() }, None);
                    }
                }
            }
            // A connection's drain may have come while the inbox was full (its resume lost).
            if !self.no_ack_held.is_empty() {
                self.settle_no_ack_with_room(wall_clock_ms());
            }
            // Looked at after something happened (its group going dormant is an event too), so a
            // member woken by a command handles it before it sleeps again.
            if !deleted && !removed && rx.is_empty() && applied.is_empty() && self.may_sleep() {
                return Ran::Idle;
            }
        }
        if self.leaving.is_some() {
            self.kept
                .leaving_members
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(self.kept.group.id());
        }
        self.kept.handle.mark_deleted();
        for (_, waiter) in self.waiting.drain() {
            waiter.fail();
        }
        for waiter in self.retry.drain(..).filter_map(|(_, waiter)| waiter) {
            waiter.fail();
        }
        let unapplied = std::mem::take(&mut self.sent_enqueues).into_values();
        let queued = std::mem::take(&mut self.queued);
        for waiter in unapplied
            .filter_map(|sent| sent.waiter)
            .chain(queued.into_iter().filter_map(|q| q.waiter))
        {
            waiter.fail();
        }
        if deleted {
            // The others apply the delete too (their queue goes, the proposer's node tells the
            // cluster) before this member's group stops answering them.
            self.kept
                .group
                .leave_after(last_applied, LEAVE_WITHIN)
                .await;
        }
        if dropped {
            // As a delete applied here would have cancelled them.
            for (id, LocalConsumer { outbox, .. }) in self.consumers.drain() {
                let _ = outbox.events.send(ConnEvent::ConsumerCancelled {
                    channel: outbox.channel,
                    consumer_id: id,
                });
            }
        }
        self.kept.group.shutdown().await;
        if deleted || removed || dropped {
            let (db, name) = (self.kept.db.clone(), self.kept.group.id().to_owned());
            let _ = tokio::task::spawn_blocking(move || db.remove_group(&name)).await;
        }
        Ran::Ended
    }

    /// Whether it may sleep: its group is dormant, and it has nothing in hand that a timer, a
    /// node's news or its leadership would need it for (no consumer or unsettled delivery in
    /// the state, no timer due in it, nothing held to dead-letter, nothing proposed or queued,
    /// its group's voters those wanted).
    fn may_sleep(&self) -> bool {
        self.kept.group.is_dormant()
            && self.in_flight == 0
            && self.queued.is_empty()
            && self.sent_enqueues.is_empty()
            && self.waiting.is_empty()
            && self.retry.is_empty()
            && self.must_apply.is_empty()
            && self.consumers.is_empty()
            && self.no_ack_held.is_empty()
            && self.suspects.is_empty()
            && self.orphans.is_empty()
            && self.dead_letters.is_empty()
            && self.gone_proposed.is_empty()
            && !self.changing
            && self.leaving.is_none()
            && !self.kept.applier.holds_dead_letters()
            && self.group_has_wanted()
            && self.kept.applier.with_machine(|m| {
                let stats = m.core().stats();
                stats.consumers == 0
                    && stats.unacked == 0
                    && m.core().next_wakeup(wall_clock_ms).is_none()
            })
    }

    /// What it keeps while it sleeps: all but its collections and counts, which are empty then
    /// (see [`Member::may_sleep`]) and made again, empty, when it wakes ([`Member::woken`]).
    pub(super) fn sleeping(self: Box<Self>) -> Kept {
        // Packed, if the queue holds nothing: most of an idle member's bytes.
        self.kept.applier.pack();
        self.kept
    }

    /// A member made from what it kept asleep (or was started with), with nothing in hand.
    pub(super) fn woken(kept: Kept) -> Box<Member> {
        kept.applier.unpack();
        Box::new(Member {
            kept,
            consumers: HashMap::new(),
            no_ack_held: Vec::new(),
            waiting: HashMap::new(),
            proposals: None,
            done: None,
            suspects: Default::default(),
            orphans: Default::default(),
            queued: Default::default(),
            queued_bytes: 0,
            in_flight: 0,
            changing: false,
            leaving: None,
            dead_letters: HashMap::new(),
            dead_letter_confirms: DeadLetterConfirms::default(),
            must_apply: HashMap::new(),
            retry: Vec::new(),
            retry_at: None,
            gone_proposed: HashMap::new(),
            sent_enqueues: BTreeMap::new(),
            sent_bytes: 0,
        })
    }

    fn is_leader(&self) -> bool {
        self.kept.group.is_leader()
    }

    /// Node-gone news were missed (this member left too many unread): every other node whose
    /// link is down now is suspected instead.
    fn missed_nodes_gone(&mut self) {
        for node in self.kept.nodes.iter() {
            if node.name != self.kept.name && !self.kept.cluster.link().is_connected(&node.name) {
                self.suspects.insert(node_id(&node.name));
            }
        }
    }

    /// Whether the group's voters are the members wanted.
    fn group_has_wanted(&self) -> bool {
        self.kept.group.has_voters(&self.kept.news.wanted().1)
    }

    /// Whether a membership change has a step left that this member takes: it leads a group
    /// whose voters are not the members wanted, or it is leaving.
    fn membership_unsettled(&self) -> bool {
        self.leaving.is_some() || (self.is_leader() && !self.group_has_wanted())
    }

    /// The members wanted changed, or a check came: a member not wanted any more leaves (its
    /// consumers cancelled); the leader takes the next step towards the wanted voters (a task of
    /// its own: a member added catches up meanwhile); a leaving member asks the wanted ones
    /// whether the group has removed it.
    fn step_membership(
        &mut self,
        news: &mpsc::UnboundedSender<MembershipNews>,
        handed_over: &Arc<tokio::sync::Notify>,
    ) {
        let (_, wanted_names) = self.kept.news.wanted();
        if self.leaving.is_none() && !wanted_names.contains(&self.kept.name) {
            self.leave(handed_over);
        }
        if self.changing {
            return;
        }
        let news = news.clone();
        if self.is_leader() && !self.group_has_wanted() {
            self.changing = true;
            let wanted = nodes_named(&self.kept.nodes, &wanted_names);
            let group = self.kept.group.clone();
            tokio::spawn(async move {
                if let Err(e) = group.change_members(&wanted, MEMBERSHIP_STEP_WITHIN).await {
                    tracing::warn!(group = group.id(), "quorum queue membership change: {e}");
                }
                let _ = news.send(MembershipNews::StepDone);
            });
        } else if self.leaving.is_some() {
            self.changing = true;
            let (cluster, group, me) = (
                self.kept.cluster.clone(),
                self.kept.group.id().to_owned(),
                self.kept.name.clone(),
            );
            tokio::spawn(async move {
                let asks = wanted_names
                    .iter()
                    .map(|peer| cluster.group_figures(peer, &group, LEADER_CHECK));
                let removed = futures::future::join_all(asks)
                    .await
                    .into_iter()
                    .flatten()
                    .any(|f| !f.joint && !f.voters.is_empty() && !f.voters.contains(&me));
                let _ = news.send(match removed {
                    true => MembershipNews::Removed,
                    false => MembershipNews::StepDone,
                });
            });
        }
    }

    /// This node is no longer wanted among the members: its consumers are cancelled (their
    /// clients told, what they held back to the queue for the members' consumers), and the
    /// member keeps its part in the group until the leader has removed it.
    fn leave(&mut self, handed_over: &Arc<tokio::sync::Notify>) {
        self.leaving = Some(tokio::time::Instant::now());
        self.kept
            .leaving_members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.kept.group.id().to_owned(), handed_over.clone());
        let consumers: Vec<u64> = self.consumers.keys().copied().collect();
        for consumer in consumers {
            if let Some(LocalConsumer { outbox, .. }) = self.forget_consumer(consumer) {
                let _ = outbox.events.send(ConnEvent::ConsumerCancelled {
                    channel: outbox.channel,
                    consumer_id: consumer,
                });
            }
        }
        self.propose(
            QuorumCommand::ConsumersGone {
                node: self.kept.me,
                process: u64::MAX,
            },
            None,
        );
    }

    /// How long until the queue's next timer (an expiry, `x-expires`), if it has one: only
    /// then does the leader propose a tick (an idle queue writes nothing).
    fn next_tick(&self) -> Option<Duration> {
        let now = wall_clock_ms();
        let wake = self
            .kept
            .applier
            .with_machine(|m| m.core().next_wakeup(|| now))?;
        Some(Duration::from_millis(wake.saturating_sub(now).max(5)))
    }

    /// Queues a command for the group; it leaves once those before it are committed.
    fn propose(&mut self, command: QuorumCommand, waiter: Option<Waiter>) {
        self.queued.push_back(Queued::of(command, waiter));
        self.send_next();
    }

    /// Proposes, while this member leads, that the consumers of the suspects' nodes still
    /// unreachable are gone; forgets the suspects that are back. A follower keeps its suspects
    /// until it leads or they come back: what it saw from its side of a partition is not
    /// proposed to a leader that may see them well.
    fn propose_suspects(&mut self) {
        if self.suspects.is_empty() {
            return;
        }
        let members = self.kept.group.members();
        let reachable = |id: &NodeId| {
            members
                .iter()
                .any(|m| node_id(&m.name) == *id && m.reachable)
        };
        // Back: nothing to propose, and no check left running for it on a follower.
        self.suspects.retain(|id| !reachable(id));
        if self.suspects.is_empty() || !self.is_leader() {
            return;
        }
        let gone = std::mem::take(&mut self.suspects);
        for node in gone {
            self.queued.push_back(Queued {
                leader_only: true,
                ..Queued::of(
                    QuorumCommand::ConsumersGone {
                        node,
                        process: u64::MAX,
                    },
                    None,
                )
            });
        }
        self.send_next();
    }

    /// Sends the queued commands while fewer than the member may have are in flight: a leader
    /// up to [`PIPELINE`] (its log appends the next while earlier ones replicate), a follower
    /// one (its proposals go to the leader one at a time; those queued meanwhile go together).
    fn send_next(&mut self) {
        let limit = match self.is_leader() {
            true => PIPELINE,
            false => 1,
        };
        while self.in_flight < limit && !self.queued.is_empty() {
            self.send_one();
        }
    }

    fn send_one(&mut self) {
        let Some(Queued {
            command,
            waiter,
            bytes,
            leader_only,
            ..
        }) = self.queued.pop_front()
        else {
            return;
        };
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        let payload = match postcard::to_stdvec(&command) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(queue = %self.kept.handle.name, "quorum command not encoded: {e}");
                if let Some(w) = waiter {
                    w.fail();
                }
                return;
            }
        };
        let proposal = self.kept.group.proposal(payload);
        if let QuorumCommand::EnqueueNumbered { seq, .. } = command {
            let sent = self.sent_enqueues.entry(seq).or_insert(SentEnqueue {
                command,
                waiter: None,
                bytes,
                proposals: Vec::new(),
                again: false,
            });
            sent.waiter = sent.waiter.take().or(waiter);
            sent.proposals.push(proposal.number);
            sent.again = false;
            self.sent_bytes += bytes;
            self.submit(proposal, leader_only);
            return;
        }
        if let Some(waiter) = waiter {
            self.waiting.insert(proposal.number, waiter);
        }
        match command {
            QuorumCommand::Settle { .. } | QuorumCommand::Cancel { .. } => {
                self.must_apply.insert(proposal.number, command);
            }
            QuorumCommand::ConsumersGone {
                node,
                process: u64::MAX,
            } if leader_only => {
                self.gone_proposed.insert(proposal.number, node);
            }
            _ => {}
        }
        self.submit(proposal, leader_only);
    }

    /// Hands `proposal` to the proposer (started if it is not running).
    fn submit(&mut self, proposal: warren_cluster::Proposal, leader_only: bool) {
        if self.proposals.is_none() {
            let (proposals, done) = proposer(self.kept.group.clone());
            self.proposals = Some(proposals);
            self.done = Some(done);
        }
        let sent = self
            .proposals
            .as_ref()
            .is_some_and(|p| p.send(Box::new((proposal, leader_only))).is_ok());
        if sent {
            self.in_flight += 1;
        }
    }

    /// The group went dormant (or woke): with nothing in flight, the proposer's task and
    /// channels go (a dormant member keeps as little as it can); the next proposal starts them.
    fn on_dormancy(&mut self) {
        if self.kept.group.is_dormant() && self.in_flight == 0 && self.queued.is_empty() {
            self.proposals = None;
            self.done = None;
        }
    }

    /// The proposal in flight is committed (or failed: its waiter is told); the next goes.
    fn on_done(&mut self, number: u64, ok: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let gone = self.gone_proposed.remove(&number);
        if let (false, Some(node)) = (ok, gone) {
            // Proposed again at the next check, by whichever member leads then.
            self.suspects.insert(node);
        }
        if !ok {
            if let Some(seq) = self.sent_enqueue_of(number) {
                // Perhaps committed after all: proposed again, the state applies it once.
                tracing::debug!(queue = %self.kept.handle.name, seq, "enqueue proposed again later");
                self.enqueue_again(seq);
                self.send_next();
                return;
            }
        }
        let must_apply = self.must_apply.remove(&number);
        if let (false, Some(command)) = (ok, must_apply) {
            // Perhaps committed after all: applied twice, it changes nothing the second time
            // (a settled delivery's id is not handed out again; a cancelled consumer is not
            // found).
            tracing::debug!(queue = %self.kept.handle.name, "proposed again later: {command:?}");
            let waiter = self.waiting.remove(&number);
            self.retry.push((command, waiter));
            self.retry_later();
        } else if !ok {
            if let Some(waiter) = self.waiting.remove(&number) {
                if let Waiter::Consume { consumer, .. } = &waiter {
                    // Refused to its client, but perhaps committed later: cancelled after it.
                    let consumer = *consumer;
                    self.forget_consumer(consumer);
                    self.cancel_orphan(consumer);
                }
                let vhost = self
                    .kept
                    .host
                    .upgrade()
                    .map(|h| h.vhost_name().to_owned())
                    .unwrap_or_default();
                waiter.time_out(&self.kept.handle.name, &vhost);
            }
        }
        self.send_next();
    }

    /// Proposes again the settlements and cancels that failed, and the enqueues whose fate is
    /// unknown or that came out of sequence, these first and in their order (before the
    /// enqueues queued since, numbered after them).
    fn propose_again(&mut self) {
        self.retry_at = None;
        // Up to the first still in flight: those after it would come out of sequence again.
        let again: Vec<u64> = self
            .sent_enqueues
            .iter()
            .take_while(|(_, sent)| sent.again)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in again.into_iter().rev() {
            let Some(sent) = self.sent_enqueues.remove(&seq) else {
                continue;
            };
            self.sent_bytes -= sent.bytes;
            self.queued_bytes += sent.bytes;
            self.queued.push_front(Queued {
                bytes: sent.bytes,
                ..Queued::of(sent.command, sent.waiter)
            });
        }
        for (command, waiter) in std::mem::take(&mut self.retry) {
            self.propose(command, waiter);
        }
        self.send_next();
    }

    /// The number of the sent enqueue that went in proposal `number`.
    fn sent_enqueue_of(&self, number: u64) -> Option<u64> {
        self.sent_enqueues
            .iter()
            .find(|(_, sent)| sent.proposals.contains(&number))
            .map(|(seq, _)| *seq)
    }

    /// What failed is proposed again [`RETRY_AFTER`] from now, unless a retry is due already.
    fn retry_later(&mut self) {
        self.retry_at
            .get_or_insert_with(|| tokio::time::Instant::now() + RETRY_AFTER);
    }

    /// Enqueue `seq` is to be proposed again at the next retry.
    fn enqueue_again(&mut self, seq: u64) {
        if let Some(sent) = self.sent_enqueues.get_mut(&seq) {
            sent.again = true;
            self.retry_later();
        }
    }

    /// What the state did with a numbered enqueue of this member's (proposal `number`; `None`:
    /// skipped as a proposal applied before, which an earlier one proposed again after it
    /// can be).
    fn on_enqueue_applied(&mut self, number: u64, answer: Option<Answer>) {
        // Not found: already answered (a late commit of a proposal that was proposed again).
        let Some(seq) = self.sent_enqueue_of(number) else {
            return;
        };
        let taken = match answer {
            Some(Answer::Enqueued(taken)) => Some(taken),
            Some(Answer::Duplicate) => None,
            _ => {
                self.enqueue_again(seq);
                return;
            }
        };
        let Some(sent) = self.sent_enqueues.remove(&seq) else {
            return;
        };
        self.sent_bytes -= sent.bytes;
        if self.sent_enqueues.values().any(|sent| sent.again) {
            // Those after it that waited for it to be applied.
            self.retry_later();
        }
        match (sent.waiter, taken) {
            (Some(waiter), Some(taken)) => self.answer(waiter, Answer::Enqueued(taken)),
            // A duplicate's first application was not seen here: it was applied.
            (Some(Waiter::Confirms(confirms)), None) => {
                for confirm in confirms.into_iter().flatten() {
                    confirm.answer(true);
                }
            }
            _ => {}
        }
    }

    /// Queues a publish: into the enqueue that ends the queued commands, or as a new one. Sent
    /// at the end of the batch of commands read.
    fn enqueue(&mut self, message: WireMessage, confirm: Option<PublishConfirm>, at_ms: u64) {
        let len = message.size();
        self.queued_bytes += len;
        if let Some(Queued {
            command: QuorumCommand::EnqueueNumbered { messages, .. },
            waiter: Some(Waiter::Confirms(confirms)),
            bytes,
            open: true,
            ..
        }) = self.queued.back_mut()
        {
            if *bytes + len <= ENQUEUE_MAX_BYTES {
                messages.push(message);
                confirms.push(confirm);
                *bytes += len;
                return;
            }
        }
        let command = QuorumCommand::EnqueueNumbered {
            at_ms,
            enqueuer: self.kept.enqueuer,
            seq: self.kept.next_seq,
            messages: vec![message],
        };
        self.kept.next_seq += 1;
        self.queued.push_back(Queued {
            bytes: len,
            open: true,
            ..Queued::of(command, Some(Waiter::Confirms(vec![confirm])))
        });
    }

    fn handle(&mut self, cmd: QueueCommand) {
        let at_ms = wall_clock_ms();
        match cmd {
            QueueCommand::Publish {
                message, confirm, ..
            } => self.enqueue(WireMessage::of(&message), confirm, at_ms),
            other => self.handle_other(other, at_ms),
        }
    }

    fn handle_other(&mut self, cmd: QueueCommand, at_ms: u64) {
        match cmd {
            QueueCommand::Publish { .. } => {}
            QueueCommand::Sync(reply) => {
                self.propose(QuorumCommand::Tick { at_ms }, Some(Waiter::Sync(reply)))
            }
            // Reached the member that leaves before the vhost started the queue's new handle.
            QueueCommand::Consume(_, reply) if self.leaving.is_some() => {
                let _ = reply.send(Err(AmqpError::internal_error(format!(
                    "quorum queue '{}' has no member on this node any more: consume again",
                    self.kept.handle.name
                ))));
            }
            QueueCommand::Consume(Consumer { spec, outbox, .. }, reply) => {
                let consumer = spec.id;
                let no_ack = spec.no_ack;
                self.consumers
                    .insert(consumer, LocalConsumer { outbox, no_ack });
                self.propose(
                    QuorumCommand::Consume {
                        at_ms,
                        process: self.kept.process,
                        consumer,
                        terms: ConsumeTerms::of(&spec),
                    },
                    Some(Waiter::Consume { consumer, reply }),
                );
            }
            // The consumer keeps its outbox until the cancel is applied: what the queue gave
            // it before reaches it, as RabbitMQ delivers what precedes cancel-ok.
            QueueCommand::Cancel { consumer_id, done } => self.propose(
                QuorumCommand::Cancel {
                    at_ms,
                    consumer: consumer_id,
                },
                Some(Waiter::Cancel {
                    consumer: consumer_id,
                    done,
                }),
            ),
            QueueCommand::Get { no_ack, reply } => self.propose(
                QuorumCommand::Get {
                    at_ms,
                    process: self.kept.process,
                    no_ack,
                },
                Some(Waiter::Get { no_ack, reply }),
            ),
            QueueCommand::Ack(ids) => self.settle(Settle::Ack, ids, at_ms),
            QueueCommand::Reject(ids) => self.settle(Settle::Reject, ids, at_ms),
            QueueCommand::Requeue(ids) => self.settle(Settle::Requeue, ids, at_ms),
            QueueCommand::Purge(reply) => {
                self.propose(QuorumCommand::Purge { at_ms }, Some(Waiter::Purge(reply)))
            }
            QueueCommand::Delete {
                if_unused,
                if_empty,
                reply,
            } => self.propose(
                QuorumCommand::Delete {
                    at_ms,
                    if_unused,
                    if_empty,
                },
                Some(Waiter::Delete(reply)),
            ),
            // Counted on this member's copy: no round through the group.
            QueueCommand::Stats { reply, .. } => {
                let stats: QueueStats = self.kept.applier.stats();
                let _ = reply.send(stats);
            }
            // A connection that had no room has drained: the no-ack deliveries held for it are
            // settled, so the state gives their consumers more.
            QueueCommand::Resume => self.settle_no_ack_with_room(at_ms),
            // A policy change is a command of the group's log, so every member applies it at
            // the same entry.
            QueueCommand::PoliciesChanged => self.propose(
                QuorumCommand::Configure {
                    at_ms,
                    args: self.kept.handle.effective_args(),
                },
                None,
            ),
        }
    }

    fn settle(&mut self, how: Settle, deliveries: Vec<u64>, at_ms: u64) {
        if !deliveries.is_empty() {
            self.propose(
                QuorumCommand::Settle {
                    at_ms,
                    how,
                    deliveries,
                },
                None,
            );
        }
    }

    /// Answers this node's waiter of an applied entry and carries out the effects that are this
    /// node's; true once the queue is deleted.
    fn on_applied(&mut self, mut entry: AppliedEntry) -> bool {
        // An entry this member applied in its previous life (replayed as the process starts)
        // had its effects then, or lost them with that process: its proposer's answer, its
        // dead-letters (an at-most-once one the process died before routing is lost, as
        // at-most-once allows; those held are the state's, routed by the leader of now).
        let replayed = entry.index <= self.kept.group.recovered_index();
        let mine = entry.origin == self.kept.me && !replayed;
        if mine && !self.sent_enqueues.is_empty() && !self.waiting.contains_key(&entry.number) {
            let answer = entry.applied.answer.take();
            match answer {
                Some(core @ Answer::Core(_)) => entry.applied.answer = Some(core),
                enqueue => self.on_enqueue_applied(entry.number, enqueue),
            }
        }
        let waiter = mine.then(|| self.waiting.remove(&entry.number)).flatten();
        match (waiter, entry.applied.answer) {
            (Some(waiter), Some(answer)) => self.answer(waiter, answer),
            // A proposal of this node's that nobody waits for any more (it timed out, and was
            // committed after all): a manual-ack get's message is handed back.
            (None, Some(Answer::Core(Outcome::Got(Some(got))))) if mine => {
                self.settle(Settle::Requeue, vec![got.id], wall_clock_ms());
            }
            (Some(waiter), None) => waiter.fail(),
            _ => {}
        }
        let leader = self.is_leader() && !replayed;
        let mut deleted = false;
        let mut no_ack_sent = Vec::new();
        for effect in entry.applied.effects {
            match effect {
                ReplicaEffect::Deliver {
                    consumer,
                    delivery,
                    redelivered,
                    message,
                    ..
                } if consumer.node == self.kept.me && consumer.process == self.kept.process => {
                    self.deliver(
                        consumer.local,
                        delivery,
                        redelivered,
                        message,
                        &mut no_ack_sent,
                    );
                }
                ReplicaEffect::Deliver { .. } => {}
                ReplicaEffect::ConsumerCancelled { consumer }
                    if consumer.node == self.kept.me && consumer.process == self.kept.process =>
                {
                    if let Some(LocalConsumer { outbox, .. }) = self.forget_consumer(consumer.local)
                    {
                        let _ = outbox.events.send(ConnEvent::ConsumerCancelled {
                            channel: outbox.channel,
                            consumer_id: consumer.local,
                        });
                    }
                }
                ReplicaEffect::ConsumerCancelled { .. } => {}
                ReplicaEffect::DeadLetter(d) if leader => {
                    route_dead_letter(&self.kept.handle, &self.kept.host, &self.kept.store, d)
                }
                ReplicaEffect::DeadLetter(_) => {}
                ReplicaEffect::DeadLetterHeld { id } if leader => self.route_held_dead_letter(id),
                ReplicaEffect::DeadLetterHeld { .. } => {}
                ReplicaEffect::Deleted => {
                    deleted = true;
                    self.kept.handle.mark_deleted();
                    // The member whose proposal deleted it tells the cluster (again, if this is
                    // its log replayed: the process may have gone before it told it).
                    if entry.origin == self.kept.me {
                        if let Some(host) = self.kept.host.upgrade() {
                            host.forget_queue(&self.kept.handle);
                        }
                    }
                }
            }
        }
        self.settle(Settle::Ack, no_ack_sent, wall_clock_ms());
        deleted
    }

    /// Whether this member leads and the state holds dead-letters (at-least-once).
    fn has_held_dead_letters(&self) -> bool {
        self.kept.applier.holds_dead_letters() && self.is_leader()
    }

    /// The leader routes the held dead-letters it has not routed (a new leader: all of them)
    /// or whose routing failed, and forgets those the state no longer holds.
    fn route_held_dead_letters(&mut self) {
        let held: Vec<u64> = self
            .kept
            .applier
            .with_machine(|m| m.held_dead_letters().held.keys().copied().collect());
        self.dead_letters.retain(|id, routing| {
            let stuck = matches!(routing, HeldRouting::Releasing(since) if since.elapsed() > RELEASE_WITHIN);
            held.binary_search(id).is_ok() && !stuck
        });
        for id in held {
            self.route_held_dead_letter(id);
        }
    }

    /// Routes held dead-letter `id` with confirms, unless it is under way; one that reached no
    /// queue is routed again at the next retry.
    fn route_held_dead_letter(&mut self, id: u64) {
        if self.dead_letters.contains_key(&id) {
            return;
        }
        let Some(dead) = self
            .kept
            .applier
            .with_machine(|m| m.held_dead_letter(id).map(|h| h.dead_letter()))
        else {
            return;
        };
        let reached = self.dead_letter_confirms.route(
            &self.kept.handle,
            &self.kept.host,
            &self.kept.store,
            dead,
            id,
        );
        if reached > 0 {
            self.dead_letters.insert(
                id,
                HeldRouting::Confirming {
                    remaining: reached,
                    all_ok: true,
                },
            );
        }
    }

    /// A queue a held dead-letter was routed to answered: once all have, and all took it, the
    /// queue lets go of it (one release proposed for those confirmed together); a refusal has
    /// it routed again at the next retry.
    fn on_dead_letter_confirm(&mut self, event: ConnEvent) {
        let ConnEvent::Settled { seq: id, ok, .. } = event else {
            return;
        };
        let Some(HeldRouting::Confirming { remaining, all_ok }) = self.dead_letters.get_mut(&id)
        else {
            return;
        };
        *remaining = remaining.saturating_sub(1);
        *all_ok &= ok;
        if *remaining > 0 {
            return;
        }
        if !*all_ok {
            self.dead_letters.remove(&id);
            return;
        }
        self.dead_letters
            .insert(id, HeldRouting::Releasing(tokio::time::Instant::now()));
        if let Some(Queued {
            command: QuorumCommand::DeadLettered { ids },
            waiter: None,
            ..
        }) = self.queued.back_mut()
        {
            ids.push(id);
            return;
        }
        self.propose(QuorumCommand::DeadLettered { ids: vec![id] }, None);
    }

    /// Hands a delivery the state assigned to one of this node's consumers to its connection.
    /// Every delivery is unsettled in the state (see `machine::credited`): a no-ack consumer's
    /// is settled here once its connection has room for more (`no_ack_sent` gathers those of
    /// the entry being applied, settled together), or held until the connection drains; one
    /// whose consumer or connection has gone goes back to the queue.
    fn deliver(
        &mut self,
        consumer: u64,
        delivery: u64,
        redelivered: bool,
        message: crate::message::MessageRef,
        no_ack_sent: &mut Vec<u64>,
    ) {
        let sent = self.consumers.get(&consumer).and_then(|local| {
            local
                .outbox
                .deliver(
                    &self.kept.handle,
                    consumer,
                    delivery,
                    redelivered,
                    local.no_ack,
                    message,
                )
                .then_some(local)
        });
        match sent {
            None => {
                self.forget_consumer(consumer);
                self.settle(Settle::Requeue, vec![delivery], wall_clock_ms());
                // Else the state would give it the next message again, and again.
                self.cancel_orphan(consumer);
            }
            Some(local) if local.no_ack => {
                let flow = &local.outbox.connection_flow;
                if flow.has_room() {
                    no_ack_sent.push(delivery);
                } else {
                    flow.wait(&self.kept.handle);
                    self.no_ack_held.push(HeldNoAck {
                        consumer,
                        flow: flow.clone(),
                        delivery,
                    });
                }
            }
            Some(_) => {}
        }
    }

    /// Settles the held no-ack deliveries whose connection has room again.
    fn settle_no_ack_with_room(&mut self, at_ms: u64) {
        self.settle_held(|held| held.flow.has_room(), at_ms);
    }

    /// Settles the held no-ack deliveries `which` picks.
    fn settle_held(&mut self, mut which: impl FnMut(&HeldNoAck) -> bool, at_ms: u64) {
        let mut settled = Vec::new();
        self.no_ack_held.retain(|held| {
            let picked = which(held);
            if picked {
                settled.push(held.delivery);
            }
            !picked
        });
        self.settle(Settle::Ack, settled, at_ms);
    }

    /// A consumer of this node's leaves (cancelled, or its connection gone): what it was handed
    /// without acks is settled, as delivered (its client asked for no more than at most once).
    /// Proposes the cancel of a consumer of this node's that nobody here serves, once.
    fn cancel_orphan(&mut self, consumer: u64) {
        if self.orphans.insert(consumer) {
            self.propose(
                QuorumCommand::Cancel {
                    at_ms: wall_clock_ms(),
                    consumer,
                },
                None,
            );
        }
    }

    fn forget_consumer(&mut self, consumer: u64) -> Option<LocalConsumer> {
        let local = self.consumers.remove(&consumer)?;
        if local.no_ack {
            self.settle_held(|held| held.consumer == consumer, wall_clock_ms());
        }
        Some(local)
    }

    fn answer(&mut self, waiter: Waiter, answer: Answer) {
        match (waiter, answer) {
            (Waiter::Confirms(confirms), Answer::Enqueued(taken)) => {
                for (confirm, taken) in confirms.into_iter().zip(taken) {
                    if let Some(confirm) = confirm {
                        confirm.answer(taken != Taken::Refused);
                    }
                }
            }
            (Waiter::Consume { consumer, reply }, Answer::Core(Outcome::Consumed(result))) => {
                if result.is_err() {
                    self.forget_consumer(consumer);
                }
                let _ = reply.send(result);
            }
            (Waiter::Cancel { consumer, done }, _) => {
                self.forget_consumer(consumer);
                let _ = done.send(());
            }
            (Waiter::Get { no_ack, reply }, Answer::Core(Outcome::Got(got))) => {
                if let Err(Some(got)) = reply.send(got) {
                    // The channel stopped waiting: the message goes back.
                    if !no_ack {
                        self.settle(Settle::Requeue, vec![got.id], wall_clock_ms());
                    }
                }
            }
            (Waiter::Purge(reply), Answer::Core(Outcome::Purged(n))) => {
                let _ = reply.send(n);
            }
            (Waiter::Delete(reply), Answer::Core(Outcome::Deleted(result))) => {
                let _ = reply.send(result);
            }
            (Waiter::Sync(reply), _) => {
                let _ = reply.send(true);
            }
            (waiter, _) => waiter.fail(),
        }
    }
}

impl Waiter {
    /// The proposal was not committed in time (no majority of the members answered): a consume
    /// or a delete is refused as RabbitMQ refuses one that times out on a quorum queue (541,
    /// the channel's client may try again, perhaps through another node), not as if the queue
    /// did not exist; the others as [`Waiter::fail`].
    fn time_out(self, queue: &str, vhost: &str) {
        let timed_out = |what: &str| {
            AmqpError::internal_error(format!(
                "timed out {what} quorum queue '{queue}' in vhost '{vhost}': no majority of its members answered"
            ))
        };
        match self {
            Waiter::Consume { reply, .. } => {
                let _ = reply.send(Err(timed_out("consuming from")));
            }
            Waiter::Delete(reply) => {
                let _ = reply.send(Err(timed_out("deleting")));
            }
            other => other.fail(),
        }
    }

    /// The proposal was not applied (the queue is gone, or it was not committed in time):
    /// confirms are nacks, the others' answers are dropped (the caller sees the queue gone).
    fn fail(self) {
        match self {
            Waiter::Confirms(confirms) => {
                for confirm in confirms.into_iter().flatten() {
                    confirm.answer(false);
                }
            }
            Waiter::Sync(reply) => {
                let _ = reply.send(false);
            }
            Waiter::Consume { .. }
            | Waiter::Cancel { .. }
            | Waiter::Get { .. }
            | Waiter::Purge(_)
            | Waiter::Delete(_) => {}
        }
    }
}

pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
