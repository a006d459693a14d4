//! The definition log in the node's store: a command is written as the storage `Op`s it implies
//! (the records of what is durable), and a commit resolves once every one of them is through an
//! fsync. Commands about what the store does not keep (a transient exchange, a queue that is not
//! durable or is exclusive, a binding with a transient end) write nothing and resolve at once.

use std::sync::Arc;

use tokio::sync::mpsc;
use warren_storage::{CommitListener, Op, StorageError, Store};

use super::command::DefinitionCommand;
use super::log::{Commit, CommitError, Committed, DefinitionLog};
use crate::policy::PolicyKind;
use crate::queue::dedup;

pub struct StoreDefinitionLog {
    store: Store,
}

impl StoreDefinitionLog {
    pub fn new(store: Store) -> Self {
        StoreDefinitionLog { store }
    }

    fn ops(vhost: &str, commands: &[DefinitionCommand]) -> Vec<Op> {
        let mut ops = Vec::new();
        for command in commands.iter().filter(|c| c.is_durable()) {
            write_ops(vhost, command, &mut ops);
        }
        ops
    }
}

/// The storage writes of one durable command.
fn write_ops(vhost: &str, command: &DefinitionCommand, ops: &mut Vec<Op>) {
    let vhost_owned = || vhost.to_owned();
    match command {
        DefinitionCommand::DeclareQueue(q) => ops.extend(q.record(vhost).map(Op::PutQueue)),
        DefinitionCommand::DeleteQueue {
            name, storage_id, ..
        } => {
            // A queue that deletes itself has its own log write this first (with its messages
            // and deduplication memory, which the queue owns); written here too, so that the
            // command is complete on its own (a replica replaying it). Deleting twice is harmless.
            if let Some(id) = storage_id {
                ops.push(Op::DeleteQueue {
                    vhost: vhost_owned(),
                    name: name.clone(),
                    id: *id,
                });
            }
            ops.push(Op::DeleteBindingsTo {
                vhost: vhost_owned(),
                name: name.clone(),
                is_queue: true,
            });
        }
        DefinitionCommand::DeclareExchange(e) => ops.push(Op::PutExchange(e.record(vhost))),
        DefinitionCommand::DeleteExchange { name, .. } => {
            // The ids a deduplicating exchange remembered go with it (nothing for another).
            ops.push(Op::ForgetAllIds {
                owner: dedup::exchange_owner(vhost, name),
            });
            ops.push(Op::DeleteExchange {
                vhost: vhost_owned(),
                name: name.clone(),
            });
            ops.push(Op::DeleteBindingsFrom {
                vhost: vhost_owned(),
                exchange: name.clone(),
            });
            ops.push(Op::DeleteBindingsTo {
                vhost: vhost_owned(),
                name: name.clone(),
                is_queue: false,
            });
        }
        DefinitionCommand::Bind { binding, .. } => ops.push(Op::PutBinding(binding.record(vhost))),
        DefinitionCommand::Unbind { binding, .. } => {
            ops.push(Op::DeleteBinding(binding.record(vhost)))
        }
        DefinitionCommand::SetPolicy(p) => ops.push(Op::PutPolicy(p.record(vhost))),
        DefinitionCommand::ClearPolicy { kind, name } => ops.push(Op::DeletePolicy {
            vhost: vhost_owned(),
            name: name.clone(),
            operator: *kind == PolicyKind::Operator,
        }),
        // Not durable here (see `DefinitionCommand::is_durable`).
        DefinitionCommand::SetQueueMembers { .. } => {}
    }
}

/// Hears each write of one commit: whether it is on disk.
struct Acks(mpsc::UnboundedSender<bool>);

impl CommitListener for Acks {
    fn committed(&self, _token: u64, ok: bool) {
        let _ = self.0.send(ok);
    }
}

impl DefinitionLog for StoreDefinitionLog {
    fn commit<'a>(&'a self, vhost: &'a str, commands: &'a [DefinitionCommand]) -> Commit<'a> {
        let ops = Self::ops(vhost, commands);
        let writes = ops.len();
        if writes == 0 {
            return Box::pin(std::future::ready(Ok(Committed::ToApply)));
        }
        // Submitted now, in order, so the entry follows everything appended before this call;
        // each write reports on its own (they may fall into different batches, and a batch can
        // fail while a later one succeeds).
        let (tx, mut rx) = mpsc::unbounded_channel();
        let acks: Arc<dyn CommitListener> = Arc::new(Acks(tx));
        for (token, op) in (0u64..).zip(ops) {
            self.store.submit(op, Some((acks.clone(), token)));
        }
        drop(acks);
        Box::pin(async move {
            for _ in 0..writes {
                match rx.recv().await {
                    Some(true) => {}
                    Some(false) => return Err(CommitError::NotWritten),
                    // Every listener dropped unheard: the writer is gone.
                    None => return Err(StorageError::WriterGone.into()),
                }
            }
            Ok(Committed::ToApply)
        })
    }

    fn record(&self, vhost: &str, commands: &[DefinitionCommand]) {
        for op in Self::ops(vhost, commands) {
            self.store.submit(op, None);
        }
    }
}
