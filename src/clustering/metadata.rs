//! The metadata group's state on this node: what every node of the cluster agrees on, changed
//! only by commands the group has committed, applied in the group's order on every node.
//!
//! It holds the cluster's name, users, vhosts and permissions (`crate::access_change`) and every
//! vhost's definitions (exchanges, queues, bindings, policies: `crate::definitions`' commands),
//! applied to this node's broker as they commit and kept as one pure value besides
//! (`super::state`), which is the group's snapshot: installing one brings the broker in line with
//! it by a diff (at start-up, or when a node that lagged is sent the leader's).
//!
//! A queue declared through the log gets, on every node alike, the log index of its declare as
//! its incarnation, and (when durable) a storage id made from it: unique in the cluster, so that
//! the home node's store keeps its messages under an id no node reuses.
//!
//! A change is proposed by any node ([`Metadata::commit`]); it is answered once this node has
//! applied it, so the node that made the change reads it back at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use warren_cluster::group::{Group, ProposeError};
use warren_cluster::{Applier, NodeId, Proposal};

use super::state::{self, Change, Declarer, MetadataState};
use crate::broker::Broker;
use crate::definitions::DefinitionCommand;

/// Storage ids the metadata log gives durable queues: the declare's log index with this bit,
/// apart from the ids a node alone counts up from 1 (and from the store's shadow bit, 1 << 63).
pub const CLUSTER_QUEUE_IDS: u64 = 1 << 62;

/// How long a change waits for the other nodes that are up to apply it, at most.
const SPREAD: Duration = Duration::from_secs(2);

/// One change to the metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// RabbitMQ's `cluster_name` (`rabbitmqctl set_cluster_name`, `PUT /api/cluster-name`).
    SetClusterName(String),
    /// A change to a vhost's definitions. `applied_at_origin`: the proposing node applied it
    /// already (a queue that deleted itself, and what that cascaded) and skips it.
    Definitions {
        vhost: String,
        commands: Vec<DefinitionCommand>,
        applied_at_origin: bool,
    },
    /// A change to users, vhosts or permissions.
    Access(crate::access_change::AccessChange),
}

/// The applier the metadata group calls, and the proposers waiting for their changes.
pub struct MetadataApplier {
    /// This node's id in the group.
    me: NodeId,
    state: RwLock<MetadataState>,
    /// Proposals of this node's, by (origin, number), waiting to be applied here.
    waiting: Mutex<HashMap<(NodeId, u64), oneshot::Sender<()>>>,
    /// Whose vhosts definitions apply to (set once the broker is open).
    broker: OnceLock<Weak<Broker>>,
    /// When this process started, as the group numbers proposals: this node's proposals with a
    /// lower number are from before a restart.
    started: u64,
    /// Where removals this applier decides are proposed (set once the group runs), and those
    /// decided before.
    recorder: OnceLock<Weak<Metadata>>,
    unrecorded: Mutex<Vec<MetadataCommand>>,
    /// The latest proposals applied, by (origin, number): one committed twice (proposed again
    /// after a timeout that hid its commit) is applied once.
    applied: Mutex<RecentProposals>,
}

/// The last [`RecentProposals::KEPT`] proposals applied, by (origin, number).
#[derive(Default)]
struct RecentProposals {
    order: std::collections::VecDeque<(NodeId, u64)>,
    seen: std::collections::HashSet<(NodeId, u64)>,
}

impl RecentProposals {
    const KEPT: usize = 4096;

    /// Whether `key` is new; remembered if so.
    fn first_time(&mut self, key: (NodeId, u64)) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > Self::KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        true
    }
}

impl MetadataApplier {
    /// The applier of node `me`, whose process started at `started` (ns since the epoch).
    pub fn new(me: NodeId, started: u64) -> Self {
        MetadataApplier {
            me,
            state: RwLock::default(),
            waiting: Mutex::default(),
            broker: OnceLock::new(),
            started,
            recorder: OnceLock::new(),
            unrecorded: Mutex::default(),
            applied: Mutex::default(),
        }
    }

    /// Where this applier's own removals are proposed from now on; proposes those decided so far.
    pub fn set_recorder(&self, metadata: &Arc<Metadata>) {
        let _ = self.recorder.set(Arc::downgrade(metadata));
        let pending =
            std::mem::take(&mut *self.unrecorded.lock().unwrap_or_else(|e| e.into_inner()));
        for command in pending {
            metadata.record(&command);
        }
    }

    /// Tells this node's proposer, if it waits, that `proposal` is applied.
    fn answer(&self, proposal: &Proposal) {
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(proposal.origin, proposal.number));
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
    }

    fn record(&self, command: MetadataCommand) {
        match self.recorder.get().and_then(Weak::upgrade) {
            Some(metadata) => metadata.record(&command),
            None => self
                .unrecorded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(command),
        }
    }

    pub fn set_broker(&self, broker: Weak<Broker>) {
        let _ = self.broker.set(broker);
    }

    fn apply_definitions(
        &self,
        index: u64,
        proposal: &Proposal,
        vhost: &str,
        mut commands: Vec<DefinitionCommand>,
        applied_at_origin: bool,
    ) {
        let proposed_here = proposal.origin == self.me;
        if applied_at_origin && proposed_here {
            return;
        }
        let Some(broker) = self.broker.get().and_then(Weak::upgrade) else {
            return;
        };
        let Some(vhost) = broker.vhost(vhost) else {
            tracing::warn!(
                vhost,
                "definitions for a vhost this node does not have, skipped"
            );
            return;
        };
        for command in &mut commands {
            if let DefinitionCommand::DeclareQueue(q) = command {
                state::stamp_declare(q, index);
            }
        }
        let declarer = Declarer {
            node: proposal.origin,
            number: proposal.number,
        };
        self.drop_stale(&vhost.name, &mut commands, |_| declarer);
        vhost.apply_replicated(&commands, proposed_here);
    }

    /// Takes out of `commands` the declares of this node's transient and exclusive queues from
    /// before it restarted (`declarer` tells who declared a queue, by name), and records their
    /// deletion: they went with that process, as RabbitMQ's do, and the other nodes forget them
    /// too once the deletion is committed.
    fn drop_stale(
        &self,
        vhost: &str,
        commands: &mut Vec<DefinitionCommand>,
        declarer: impl Fn(&str) -> Declarer,
    ) {
        let mut stale = Vec::new();
        commands.retain(|command| match command {
            DefinitionCommand::DeclareQueue(q) if q.storage_id.is_none() => {
                let declarer = declarer(&q.name);
                let before_restart = declarer.node == self.me && declarer.number < self.started;
                if before_restart {
                    stale.push(DefinitionCommand::DeleteQueue {
                        name: q.name.clone(),
                        storage_id: None,
                        incarnation: q.incarnation,
                    });
                }
                !before_restart
            }
            _ => true,
        });
        if !stale.is_empty() {
            self.record(MetadataCommand::Definitions {
                vhost: vhost.to_owned(),
                commands: stale,
                applied_at_origin: true,
            });
        }
    }

    /// Brings the broker's vhosts and access in line with an installed snapshot: `changes` (from
    /// the state before to the snapshot's) through the paths committed entries take. Corrections
    /// applying them calls for are not recorded: the snapshot's state is the log's, and whatever
    /// this node's broker lacks of it (a queue of its own that deleted itself) it has recorded
    /// already.
    fn install_changes(&self, changes: Vec<Change>) {
        let Some(broker) = self.broker.get().and_then(Weak::upgrade) else {
            return;
        };
        for change in changes {
            match change {
                // The state alone holds it.
                Change::ClusterName(_) => {}
                Change::Access { change, .. } => broker.apply_replicated_access(&change),
                Change::Definitions { vhost, commands } => {
                    if let Some(vhost) = broker.vhost(&vhost) {
                        vhost.apply_replicated(&commands, false);
                    }
                }
                Change::DeclareQueues { vhost, queues } => {
                    let Some(vhost) = broker.vhost(&vhost) else {
                        continue;
                    };
                    let declarers: HashMap<String, Declarer> = queues
                        .iter()
                        .map(|q| (q.definition.name.clone(), q.declarer))
                        .collect();
                    let mut commands: Vec<DefinitionCommand> = queues
                        .into_iter()
                        .map(|q| DefinitionCommand::DeclareQueue(q.definition))
                        .collect();
                    self.drop_stale(&vhost.name, &mut commands, |name| {
                        declarers.get(name).copied().unwrap_or(Declarer::UNKNOWN)
                    });
                    vhost.apply_replicated(&commands, false);
                }
            }
        }
    }
}

impl Applier for MetadataApplier {
    fn apply(&self, index: u64, proposal: &Proposal) {
        let first_time = self
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_time((proposal.origin, proposal.number));
        let parsed = match first_time {
            true => serde_json::from_slice::<MetadataCommand>(&proposal.payload),
            false => {
                tracing::debug!("metadata entry {index}: {proposal} applied already, skipped");
                self.answer(proposal);
                return;
            }
        };
        match parsed {
            Ok(command) => {
                let declarer = Declarer {
                    node: proposal.origin,
                    number: proposal.number,
                };
                self.state
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .apply(index, declarer, &command);
                match command {
                    MetadataCommand::Definitions {
                        vhost,
                        commands,
                        applied_at_origin,
                    } => {
                        self.apply_definitions(index, proposal, &vhost, commands, applied_at_origin)
                    }
                    MetadataCommand::Access(change) => {
                        if let Some(broker) = self.broker.get().and_then(Weak::upgrade) {
                            broker.apply_replicated_access(&change);
                        }
                    }
                    // The state alone holds it.
                    MetadataCommand::SetClusterName(_) => {}
                }
            }
            // Every node has the same bytes and skips them alike: the state stays the same
            // everywhere (a node of a newer version proposed what this one does not know).
            Err(e) => tracing::error!("metadata entry {index} skipped: {e}"),
        }
        self.answer(proposal);
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_vec(&*state).unwrap_or_else(|e| {
            tracing::error!("metadata snapshot could not be serialized: {e}");
            Vec::new()
        })
    }

    fn install(&self, snapshot: &[u8]) {
        let installed = if snapshot.is_empty() {
            MetadataState::default()
        } else {
            match serde_json::from_slice(snapshot) {
                Ok(state) => state,
                Err(e) => {
                    // Nothing of it is applied, rather than everything undone.
                    tracing::error!("metadata snapshot unreadable, not installed: {e}");
                    return;
                }
            }
        };
        let changes = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let changes = state::diff(&state, &installed);
            *state = installed;
            changes
        };
        tracing::info!(changes = changes.len(), "metadata snapshot installed");
        self.install_changes(changes);
    }
}

/// The metadata as this node has applied it, and changing it.
pub struct Metadata {
    group: Arc<Group>,
    applier: Arc<MetadataApplier>,
    timeout: Duration,
    /// Changes this node made already, proposed one after another in the order they were made.
    records: tokio::sync::mpsc::UnboundedSender<MetadataCommand>,
}

/// How long a change this node made waits before it is proposed again, at first and at most.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(200);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

impl Metadata {
    pub fn new(group: Arc<Group>, applier: Arc<MetadataApplier>, timeout: Duration) -> Self {
        let (records, mut recorded) = tokio::sync::mpsc::unbounded_channel::<MetadataCommand>();
        let recorder = group.clone();
        tokio::spawn(async move {
            while let Some(command) = recorded.recv().await {
                let Ok(payload) = serde_json::to_vec(&command) else {
                    continue;
                };
                // Applied here already: it must reach the others however long that takes (this
                // node cut off, a leader change), or they would keep what it deleted. Proposed
                // again as the same proposal, it is applied once (see `RecentProposals`).
                let proposal = recorder.proposal(payload);
                let mut pause = RECORD_RETRY_FIRST;
                while let Err(e) = recorder.propose(proposal.clone(), timeout).await {
                    tracing::warn!(
                        "a change this node made is not recorded in the cluster yet ({e}); trying again in {pause:?}"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RECORD_RETRY_MAX);
                }
            }
        });
        Metadata {
            group,
            applier,
            timeout,
            records,
        }
    }

    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }

    /// The cluster's name, once one is set.
    pub fn cluster_name(&self) -> Option<String> {
        self.applier
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cluster_name
            .clone()
    }

    /// The non-durable queues homed on `node`, as (vhost, name, incarnation).
    pub fn transient_queues_of(&self, node: &str) -> Vec<(String, String, u64)> {
        let state = self.applier.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .definitions
            .iter()
            .flat_map(|(vhost, definitions)| {
                definitions.queues.values().filter_map(move |q| {
                    let d = &q.definition;
                    (!d.durable && d.home.as_deref() == Some(node))
                        .then(|| (vhost.clone(), d.name.clone(), d.incarnation))
                })
            })
            .collect()
    }

    /// Proposes a change this node has applied already, without waiting for it (after the
    /// ones recorded before it).
    pub fn record(&self, command: &MetadataCommand) {
        let _ = self.records.send(command.clone());
    }

    /// Commits a change through the group and waits until this node has applied it.
    pub async fn commit(&self, command: &MetadataCommand) -> Result<(), ProposeError> {
        let payload =
            serde_json::to_vec(command).map_err(|e| ProposeError::Failed(e.to_string()))?;
        let proposal = self.group.proposal(payload);
        let key = (proposal.origin, proposal.number);
        let (applied_tx, applied) = oneshot::channel();
        self.applier
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, applied_tx);
        let forget = || {
            self.applier
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        };
        let index = match self.group.propose(proposal, self.timeout).await {
            Ok(index) => index,
            Err(e) => {
                forget();
                return Err(e);
            }
        };
        // Committed: this node applies it as soon as it hears the commit.
        if tokio::time::timeout(self.timeout, applied).await.is_err() {
            forget();
            return Err(ProposeError::Timeout(self.timeout));
        }
        // And so does every node that is up before the change is answered, as RabbitMQ's
        // metadata changes are seen everywhere once answered. A node slower than this bound
        // catches up on its own.
        self.group
            .wait_applied_everywhere(index, self.timeout.min(SPREAD))
            .await;
        Ok(())
    }
}
