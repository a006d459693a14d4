//! Changing a vhost's definitions: check (RabbitMQ's checks and texts, in `declare.rs` and
//! `bindings.rs`) → build the command, with the cascade it causes (`cascade.rs`) → commit it
//! through the definition log, waiting until it is durable → apply it to the topology → answer.
//! A commit that fails leaves the topology as it was, and the client gets 541.
//!
//! Changes are serialized per vhost: [`Change`] holds the vhost's change lock from the checks
//! to the apply, so two declares of one name cannot both create it and a cascade is planned on
//! the topology it is applied to. The topology's own lock is taken for writing only to apply a
//! committed change (never across the wait), so routing, which reads it, never waits on a disk.
//!
//! Queue-initiated removals keep their own path: a queue that deletes itself (queue.delete, which
//! the queue decides with its if-unused / if-empty checks, auto-delete, x-expires, its exclusive
//! owner gone) has already gone when the vhost hears of it, with its own log deleting its record
//! and messages; [`Vhost::forget_queue`] then applies `DeleteQueue` and its cascade at once and
//! records them in the log without waiting ([`DefinitionLog::record`]). Making those removals
//! commands first would have the queue ask its vhost before deleting itself, a change to the queue
//! engine left for later. Since they are not serialized with changes, a committed change may find
//! at apply time that a queue (or an exchange its going cascaded to) went while the commit was
//! under way; `apply` skips what names it, and the vhost records the corrections.
//!
//! [`DefinitionLog::record`]: crate::definitions::DefinitionLog::record

use std::sync::Arc;

use warren_amqp::AmqpError;

use crate::definitions::{CommitError, Committed, DefinitionCommand, QueueDefinition};
use crate::queue::QueueHandle;

use super::topology::{Applied, Topology};
use super::Vhost;

/// The vhost's change lock, held from a change's checks to its apply.
pub(super) struct Change {
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Vhost {
    pub(super) async fn begin_change(&self) -> Change {
        Change {
            _held: self.changes.clone().lock_owned().await,
        }
    }

    /// Commits one change (`commands`, its cascade included) and applies it; the queues it
    /// started come back. A failed commit is RabbitMQ's 541 and changes nothing.
    pub(super) async fn commit(
        self: &Arc<Self>,
        change: Change,
        commands: Vec<DefinitionCommand>,
    ) -> Result<Vec<Arc<QueueHandle>>, AmqpError> {
        self.commit_and_apply(change, commands)
            .await
            .map_err(|e| match e {
                // The closest reply RabbitMQ has: its metadata store's timeouts close the
                // connection with 541 too; a client reconnects, perhaps to a node of the majority.
                CommitError::NoQuorum => {
                    tracing::warn!(vhost = %self.name, "definition change refused: {e}");
                    AmqpError::internal_error(
                        "timed out waiting for a majority of the cluster's nodes to confirm the change",
                    )
                }
                e => {
                    tracing::error!(vhost = %self.name, "definition commit failed: {e}");
                    AmqpError::internal_error("could not write to disk")
                }
            })
    }

    /// Commits a change that may turn out to be none (an unbind of what is not bound).
    pub(super) async fn commit_unless_empty(
        self: &Arc<Self>,
        change: Change,
        commands: Vec<DefinitionCommand>,
    ) -> Result<(), AmqpError> {
        if !commands.is_empty() {
            self.commit(change, commands).await?;
        }
        Ok(())
    }

    pub(super) async fn commit_and_apply(
        self: &Arc<Self>,
        change: Change,
        commands: Vec<DefinitionCommand>,
    ) -> Result<Vec<Arc<QueueHandle>>, CommitError> {
        // A task of its own, which runs to the end even if the caller goes away (a client that
        // hangs up, a timeout): a committed change is always applied, and the change lock is
        // held until it is.
        let vhost = self.clone();
        let task = tokio::spawn(async move {
            let started = match vhost.log.commit(&vhost.name, &commands).await? {
                Committed::ToApply => vhost.apply_committed(&commands, true),
                Committed::Applied => vhost.declared_queues(&commands),
            };
            drop(change);
            Ok(started)
        });
        match task.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(CommitError::Refused("the runtime is shutting down".into())),
        }
    }

    /// The queues a change applied by the log declared, as they are now.
    fn declared_queues(&self, commands: &[DefinitionCommand]) -> Vec<Arc<QueueHandle>> {
        let topo = self.read();
        commands
            .iter()
            .filter_map(|c| match c {
                DefinitionCommand::DeclareQueue(q) => topo.queues.get(&q.name).cloned(),
                _ => None,
            })
            .collect()
    }

    /// Applies a change the cluster's metadata log committed (on every node, in the log's
    /// order). Only the node that proposed it records the corrections applying it calls for;
    /// the others make the same ones, and meet the proposer's record of them later as no-ops.
    pub fn apply_replicated(self: &Arc<Self>, commands: &[DefinitionCommand], proposed_here: bool) {
        self.apply_committed(commands, proposed_here);
    }

    /// Applies a committed change, then corrects for a queue that deleted itself meanwhile
    /// (recording the corrections in the log if `record`).
    fn apply_committed(
        self: &Arc<Self>,
        commands: &[DefinitionCommand],
        record: bool,
    ) -> Vec<Arc<QueueHandle>> {
        let mut started = Vec::new();
        let mut start = |definition: &QueueDefinition, policies| {
            let q = self.start_queue(definition, policies, None);
            started.push(q.clone());
            Some(q)
        };
        let mut topo = self.write();
        // Only a change that removes bindings can leave an exchange empty.
        let removes_bindings = commands.iter().any(|c| {
            matches!(
                c,
                DefinitionCommand::Unbind { .. }
                    | DefinitionCommand::DeleteExchange { .. }
                    | DefinitionCommand::DeleteQueue { .. }
            )
        });
        let bound = match removes_bindings {
            true => topo.bound_auto_delete(),
            false => Vec::new(),
        };
        let mut corrections = Vec::new();
        for command in commands {
            let applied = topo.apply(command, &mut start);
            if let (Applied::Skipped, DefinitionCommand::Bind { binding, durable }) =
                (applied, command)
            {
                // An end went while the commit was under way: its removal may have been written
                // before this binding, so the binding is unwritten after it.
                corrections.push(DefinitionCommand::Unbind {
                    binding: binding.clone(),
                    durable: *durable,
                });
            }
        }
        // Normally the planned cascade took every exchange this change emptied; one that a queue's
        // own removal (meanwhile) had half emptied is taken now.
        for name in topo.emptied(bound) {
            let cascade = topo.with_cascade(DefinitionCommand::DeleteExchange {
                durable: topo.exchanges.get(&name).is_some_and(|e| e.durable),
                name,
            });
            apply_all(&mut topo, &cascade);
            corrections.extend(cascade);
        }
        if record && !corrections.is_empty() {
            // Under the topology lock, so the log has them in the order they were applied.
            self.log.record(&self.name, &corrections);
        }
        started
    }

    /// Drops a queue that deleted itself from the topology, with the bindings to it and the
    /// auto-delete exchanges that leaves empty, and records that in the definition log (see the
    /// module comment). A no-op if another queue of that name has replaced it.
    pub fn forget_queue(&self, queue: &Arc<QueueHandle>) {
        let mut topo = self.write();
        let same = topo
            .queues
            .get(&*queue.name)
            .is_some_and(|q| Arc::ptr_eq(q, queue));
        if !same {
            // Bindings always name the queue in the topology: nothing leads to this one.
            return;
        }
        let commands = topo.with_cascade(DefinitionCommand::DeleteQueue {
            name: queue.name.to_string(),
            storage_id: queue.storage_id,
            incarnation: queue.incarnation,
        });
        apply_all(&mut topo, &commands);
        self.log.record(&self.name, &commands);
    }

    /// Deletes a queue whose node is gone (a transient queue, which went with its node's
    /// process, as RabbitMQ deletes a down node's transient queues), with its bindings, through
    /// the definition log like any deletion. Nothing if that incarnation is no longer there.
    pub async fn forget_queue_of_gone_node(
        self: &Arc<Self>,
        name: &str,
        incarnation: u64,
    ) -> Result<bool, CommitError> {
        let change = self.begin_change().await;
        let commands = {
            let topo = self.read();
            match topo.queues.get(name) {
                Some(q) if q.incarnation == incarnation => {
                    topo.with_cascade(DefinitionCommand::DeleteQueue {
                        name: name.to_owned(),
                        storage_id: None,
                        incarnation,
                    })
                }
                _ => return Ok(false),
            }
        };
        self.commit_and_apply(change, commands).await?;
        Ok(true)
    }

    /// Marks the vhost deleted and empties it: its connections are told to close, its policies
    /// and exchanges go (through the log, records included); returns its queues, for the caller
    /// to delete (with their messages).
    pub async fn delete_contents(self: &Arc<Self>) -> Result<Vec<Arc<QueueHandle>>, CommitError> {
        let _ = self.deleted.send(true);
        let change = self.begin_change().await;
        let mut names: Vec<(String, bool)> = self
            .read()
            .exchanges
            .values()
            .map(|e| (e.name.clone(), e.durable))
            .collect();
        names.sort();
        // The policies first, so that nothing is matched again as the exchanges go.
        let mut commands: Vec<DefinitionCommand> = self
            .read()
            .policies
            .all()
            .map(|p| DefinitionCommand::ClearPolicy {
                kind: p.kind,
                name: p.name.clone(),
            })
            .collect();
        // Every exchange goes, so there is nothing for a cascade to add.
        commands.extend(
            names
                .into_iter()
                .map(|(name, durable)| DefinitionCommand::DeleteExchange { name, durable }),
        );
        self.commit_and_apply(change, commands).await?;
        Ok(self.read().queues.values().cloned().collect())
    }
}

/// Applies commands that start no queue (deletions).
fn apply_all(topo: &mut Topology, commands: &[DefinitionCommand]) {
    for command in commands {
        topo.apply(command, &mut |_, _| None);
    }
}
