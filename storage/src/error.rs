//! What can go wrong in the store. Errors from below keep their source (redb's, the file
//! system's, serde_json's), so `std::error::Error::source` reaches them.

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::SCHEMA_VERSION;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(
        "the database file {0} is empty (truncated?): refusing to start without the data it held; \
         restore it, or remove it to start with an empty broker"
    )]
    EmptyFile(PathBuf),
    #[error("cannot open the database at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A redb operation failed (beginning a transaction, opening a table, reading, committing).
    #[error("storage: {0}")]
    Redb(#[source] redb::Error),
    /// The writer thread could not be started.
    #[error("storage: cannot start the writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
    /// A batch's commit failed: every write in the batch gets this (shared) error.
    #[error(transparent)]
    Batch(Arc<StorageError>),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A stored definition (exchange, queue, binding, user, vhost, permission) does not decode.
    #[error("corrupt record: {0}")]
    CorruptDefinition(#[source] serde_json::Error),
    #[error("the storage writer has stopped")]
    WriterGone,
    #[error("the database is being reopened after a failure")]
    Unavailable,
    #[error("{0}")]
    Key(String),
    #[error("the database at {0} is encrypted: start with its encryption key")]
    KeyRequired(PathBuf),
    #[error("wrong encryption key for the database at {0}")]
    WrongKey(PathBuf),
    #[error("the database at {0} holds unencrypted messages: it cannot be encrypted in place")]
    NotEncrypted(PathBuf),
    #[error("the database has schema version {found}, this Warren reads version {SCHEMA_VERSION}")]
    Schema { found: u64 },
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self { StorageError::Redb(e.into()) }
        }
    )*};
}
redb_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
