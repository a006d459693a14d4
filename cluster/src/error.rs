//! The crate's error type.
//!
//! openraft's storage traits speak `io::Error`; the crate's own functions (opening a group's
//! storage) return [`ClusterError`], which says which layer failed, and converts into `io::Error`
//! where it crosses into openraft.

use std::io;

/// What went wrong in a group's storage.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// redb failed: opening the file, a transaction, a table, a commit.
    #[error("raft storage: {0}")]
    Storage(#[from] redb::Error),
    /// A value could not be encoded (postcard).
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        source: postcard::Error,
    },
    /// A stored value could not be decoded: the file is damaged or from another format.
    #[error("decoding {what}: {source}")]
    Decode {
        what: &'static str,
        source: postcard::Error,
    },
    /// Stored data contradicts itself (an entry under another index, a hole in the log).
    #[error("raft storage is corrupt: {0}")]
    Corrupt(String),
    /// An earlier write failed: the store refuses further writes rather than build on a state it
    /// does not know (openraft stops the group on the first storage error anyway).
    #[error("raft storage failed earlier: {0}")]
    Failed(String),
    /// A blocking storage task ended without an answer (panicked, or the runtime shut down).
    #[error("raft storage task ended: {0}")]
    TaskEnded(String),
    /// openraft refused to start or initialize a group (a bad configuration, a fatal error).
    #[error("raft: {0}")]
    Raft(String),
}

impl ClusterError {
    pub(crate) fn encode(what: &'static str) -> impl FnOnce(postcard::Error) -> ClusterError {
        move |source| ClusterError::Encode { what, source }
    }

    pub(crate) fn decode(what: &'static str) -> impl FnOnce(postcard::Error) -> ClusterError {
        move |source| ClusterError::Decode { what, source }
    }
}

// redb has one error type per operation; each converts into `redb::Error`, which keeps the detail.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for ClusterError {
            fn from(e: $t) -> Self {
                ClusterError::Storage(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<tokio::task::JoinError> for ClusterError {
    fn from(e: tokio::task::JoinError) -> Self {
        ClusterError::TaskEnded(e.to_string())
    }
}

/// openraft's storage traits return `io::Error`: decoding failures and corruption become
/// `InvalidData` (the data, not the device, is at fault), the rest are `Other`.
impl From<ClusterError> for io::Error {
    fn from(e: ClusterError) -> Self {
        let kind = match &e {
            ClusterError::Decode { .. } | ClusterError::Corrupt(_) => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
