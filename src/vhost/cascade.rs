//! The auto-delete cascade: an auto-delete exchange goes when it loses its last binding, whether
//! to an unbind or because the queue or exchange a binding led to went; its going may empty
//! others in turn.
//!
//! The cascade is planned before a change is committed, as further commands (`DeleteExchange`)
//! that follow the change's own in the same log entry, rather than derived inside `apply`:
//! - the store log writes records from commands alone, with no copy of the topology, so it must
//!   be told which exchanges go to write their deletion;
//! - the change and the deletions it causes are durable together or not at all (one commit),
//!   and a client hears back only once both are;
//! - `apply` stays a plain function of each command, and replaying a log replays the deletions
//!   as they were decided.
//!
//! Removing the bindings from and to a deleted queue or exchange is not part of the cascade:
//! deleting one means "with its bindings", which `apply` does and the store log writes by name.

use std::collections::{HashMap, HashSet};

use crate::definitions::DefinitionCommand;
use crate::exchange::{Destination, Exchange};

use super::topology::Topology;

impl Topology {
    /// `command`, followed by the deletions of the auto-delete exchanges it would leave without
    /// bindings (in name order at each step, so that planning is deterministic).
    pub(super) fn with_cascade(&self, command: DefinitionCommand) -> Vec<DefinitionCommand> {
        // The bindings each exchange would lose (by position), the exchanges that go, and the
        // queues and exchanges gone whose incoming bindings are still to count.
        let mut lost: HashMap<&str, HashSet<usize>> = HashMap::new();
        let mut deleted: HashSet<&str> = HashSet::new();
        let mut gone: Vec<Destination> = Vec::new();
        match &command {
            DefinitionCommand::Unbind { binding, .. } => {
                let source = self.exchanges.get_key_value(&binding.source);
                if let (Some((name, ex)), Some(destination)) = (source, self.destination(binding)) {
                    let at = ex.bindings().iter().position(|b| {
                        b.destination == destination
                            && b.routing_key == binding.routing_key
                            && b.arguments == binding.arguments
                    });
                    if let Some(at) = at {
                        lost.entry(name.as_str()).or_default().insert(at);
                    }
                }
            }
            DefinitionCommand::DeleteExchange { name, .. } => {
                if let Some((name, _)) = self.exchanges.get_key_value(name) {
                    deleted.insert(name.as_str());
                    gone.push(Destination::Exchange(name.as_str().into()));
                }
            }
            DefinitionCommand::DeleteQueue { name, .. } => {
                if let Some(q) = self.queues.get(name) {
                    gone.push(Destination::Queue(q.clone()));
                }
            }
            _ => {}
        }
        let mut commands = vec![command];
        loop {
            for destination in gone.drain(..) {
                for ex in self.exchanges.values() {
                    if deleted.contains(ex.name.as_str()) {
                        continue;
                    }
                    for (at, b) in ex.bindings().iter().enumerate() {
                        if b.destination == destination {
                            lost.entry(ex.name.as_str()).or_default().insert(at);
                        }
                    }
                }
            }
            let mut emptied: Vec<&Exchange> = lost
                .iter()
                .filter(|(name, _)| !deleted.contains(*name))
                .filter_map(|(name, positions)| {
                    let ex = self.exchanges.get(*name)?;
                    (ex.auto_delete && positions.len() == ex.bindings().len()).then_some(ex)
                })
                .collect();
            if emptied.is_empty() {
                return commands;
            }
            emptied.sort_by(|a, b| a.name.cmp(&b.name));
            for ex in emptied {
                deleted.insert(ex.name.as_str());
                gone.push(Destination::Exchange(ex.name.as_str().into()));
                commands.push(DefinitionCommand::DeleteExchange {
                    name: ex.name.clone(),
                    durable: ex.durable,
                });
            }
        }
    }

    /// The auto-delete exchanges that hold bindings now: those a change leaves without any must
    /// have gone with it.
    pub(super) fn bound_auto_delete(&self) -> Vec<String> {
        self.exchanges
            .values()
            .filter(|e| e.auto_delete && !e.bindings().is_empty())
            .map(|e| e.name.clone())
            .collect()
    }

    /// Of `names`, the exchanges still here without a binding left (sorted by name).
    pub(super) fn emptied(&self, names: Vec<String>) -> Vec<String> {
        let mut emptied: Vec<String> = names
            .into_iter()
            .filter(|n| {
                self.exchanges
                    .get(n)
                    .is_some_and(|e| e.bindings().is_empty())
            })
            .collect();
        emptied.sort();
        emptied
    }
}
