//! The metadata group's state on this node: what every node of the cluster agrees on, changed
//! only by commands the group has committed, applied in the group's order on every node.
//!
//! Today it holds the cluster's name; vhosts' definitions move here next (their commands already
//! cross the network as serde values, `crate::definitions`).
//!
//! A change is proposed by any node ([`Metadata::commit`]); it is answered once this node has
//! applied it, so the node that made the change reads it back at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use warren_cluster::group::{Group, ProposeError};
use warren_cluster::{Applier, NodeId, Proposal};

/// One change to the metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// RabbitMQ's `cluster_name` (`rabbitmqctl set_cluster_name`, `PUT /api/cluster-name`).
    SetClusterName(String),
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
        }
    }
}

/// The applier the metadata group calls, and the proposers waiting for their changes.
#[derive(Default)]
pub struct MetadataApplier {
    state: RwLock<MetadataState>,
    /// Proposals of this node's, by (origin, number), waiting to be applied here.
    waiting: Mutex<HashMap<(NodeId, u64), oneshot::Sender<()>>>,
}

impl Applier for MetadataApplier {
    fn apply(&self, _index: u64, proposal: &Proposal) {
        match serde_json::from_slice::<MetadataCommand>(&proposal.payload) {
            Ok(command) => self
                .state
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .apply(command),
            // Every node has the same bytes and skips them alike: the state stays the same
            // everywhere (a node of a newer version proposed what this one does not know).
            Err(e) => tracing::error!("metadata entry {_index} skipped: {e}"),
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
}

impl Metadata {
    pub fn new(group: Arc<Group>, applier: Arc<MetadataApplier>, timeout: Duration) -> Self {
        Metadata {
            group,
            applier,
            timeout,
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
        if let Err(e) = self.group.propose(proposal, self.timeout).await {
            forget();
            return Err(e);
        }
        // Committed: this node applies it as soon as it hears the commit (a heartbeat away).
        match tokio::time::timeout(self.timeout, applied).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                forget();
                Err(ProposeError::Timeout(self.timeout))
            }
        }
    }
}
