//! The metadata group's state on this node: what every node of the cluster agrees on, changed
//! only by commands the group has committed, applied in the group's order on every node.
//!
//! It holds the cluster's name and every vhost's definitions (exchanges, queues, bindings,
//! policies: `crate::definitions`' commands, applied to each node's vhosts as they commit). Users,
//! vhosts themselves and permissions are still each node's own.
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

/// What the metadata holds (the snapshot is this, serialized).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataState {
    pub cluster_name: Option<String>,
}

impl MetadataState {
    fn apply(&mut self, command: MetadataCommand) {
        match command {
            MetadataCommand::SetClusterName(name) => self.cluster_name = Some(name),
            // Applied to the broker, not kept here.
            MetadataCommand::Definitions { .. } | MetadataCommand::Access(_) => {}
        }
    }
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
}

impl MetadataApplier {
    pub fn new(me: NodeId) -> Self {
        MetadataApplier {
            me,
            state: RwLock::default(),
            waiting: Mutex::default(),
            broker: OnceLock::new(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            recorder: OnceLock::new(),
            unrecorded: Mutex::default(),
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
        let before_restart = proposed_here && proposal.number < self.started;
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
        let mut stale = Vec::new();
        for command in &mut commands {
            if let DefinitionCommand::DeclareQueue(q) = command {
                q.incarnation = index;
                if q.storage_id.is_some() {
                    q.storage_id = Some(CLUSTER_QUEUE_IDS | index);
                } else if before_restart {
                    // A transient or exclusive queue of this node's from before it restarted:
                    // gone with that process, as RabbitMQ's are; the other nodes forget it too.
                    stale.push(DefinitionCommand::DeleteQueue {
                        name: q.name.clone(),
                        storage_id: None,
                        incarnation: index,
                    });
                }
            }
        }
        if !stale.is_empty() {
            commands.retain(|c| match c {
                DefinitionCommand::DeclareQueue(q) => q.storage_id.is_some(),
                _ => true,
            });
            self.record(MetadataCommand::Definitions {
                vhost: vhost.name.clone(),
                commands: stale,
                applied_at_origin: true,
            });
        }
        vhost.apply_replicated(&commands, proposed_here);
    }
}

impl Applier for MetadataApplier {
    fn apply(&self, index: u64, proposal: &Proposal) {
        match serde_json::from_slice::<MetadataCommand>(&proposal.payload) {
            Ok(MetadataCommand::Definitions {
                vhost,
                commands,
                applied_at_origin,
            }) => self.apply_definitions(index, proposal, &vhost, commands, applied_at_origin),
            Ok(MetadataCommand::Access(change)) => {
                if let Some(broker) = self.broker.get().and_then(Weak::upgrade) {
                    broker.apply_replicated_access(&change);
                }
            }
            Ok(command) => self
                .state
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .apply(command),
            // Every node has the same bytes and skips them alike: the state stays the same
            // everywhere (a node of a newer version proposed what this one does not know).
            Err(e) => tracing::error!("metadata entry {index} skipped: {e}"),
        }
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(proposal.origin, proposal.number));
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        serde_json::to_vec(&*state).unwrap_or_default()
    }

    fn install(&self, snapshot: &[u8]) {
        let state = if snapshot.is_empty() {
            MetadataState::default()
        } else {
            match serde_json::from_slice(snapshot) {
                Ok(state) => state,
                Err(e) => {
                    tracing::error!("metadata snapshot unreadable, starting empty: {e}");
                    MetadataState::default()
                }
            }
        };
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
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

impl Metadata {
    pub fn new(group: Arc<Group>, applier: Arc<MetadataApplier>, timeout: Duration) -> Self {
        let (records, mut recorded) = tokio::sync::mpsc::unbounded_channel::<MetadataCommand>();
        let recorder = group.clone();
        tokio::spawn(async move {
            while let Some(command) = recorded.recv().await {
                let Ok(payload) = serde_json::to_vec(&command) else {
                    continue;
                };
                let proposal = recorder.proposal(payload);
                if let Err(e) = recorder.propose(proposal, timeout).await {
                    tracing::warn!(
                        "a change this node made could not be recorded in the cluster: {e}"
                    );
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

    pub fn state(&self) -> MetadataState {
        self.applier
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
