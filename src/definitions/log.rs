//! The definition log: where a change to a vhost's definitions is made durable before the vhost
//! applies it. One trait, so that the store (single node) and, later, a replicated metadata log
//! (committed once a quorum has it) are interchangeable behind `Arc<dyn DefinitionLog>`.

use std::future::Future;
use std::pin::Pin;

use thiserror::Error;
use warren_storage::StorageError;

use super::command::DefinitionCommand;

/// A commit under way: resolves once the change is durable, or could not be made so.
pub type Commit<'a> = Pin<Box<dyn Future<Output = Result<Committed, CommitError>> + Send + 'a>>;

/// What a committed change still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The caller applies it now (the node's own store).
    ToApply,
    /// The log has applied it: a replicated log applies every committed change on every node in
    /// the log's order, the proposing node's included, so that all apply the same sequence.
    Applied,
}

#[derive(Debug, Error)]
pub enum CommitError {
    /// The store's commit of the change failed (a full disk, an I/O error; the writer logs
    /// which): nothing of it may be assumed on disk.
    #[error("the definition change could not be written to disk")]
    NotWritten,
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The log refused the change (a replicated log without a quorum; a test's log).
    #[error("the definition change was refused: {0}")]
    Refused(String),
    /// No majority of the cluster confirmed the change in time: this node may be cut off from
    /// the others. The change may still be made, if a leader had it.
    #[error("no majority of the cluster's nodes confirmed the change in time")]
    NoQuorum,
}

pub trait DefinitionLog: Send + Sync {
    /// Makes one change to `vhost` durable: `commands` in order, as one entry after every entry
    /// appended before this call. The caller applies the commands once this resolves
    /// `Ok(Committed::ToApply)`, and not at all otherwise.
    fn commit<'a>(&'a self, vhost: &'a str, commands: &'a [DefinitionCommand]) -> Commit<'a>;

    /// Appends a change the vhost has already applied (a queue that deleted itself, and what
    /// that cascaded), after every entry appended before this call, without waiting for it to be
    /// durable.
    fn record(&self, vhost: &str, commands: &[DefinitionCommand]);
}
