//! The definition log of a cluster member: vhosts' definition changes go through the metadata
//! group, which applies them on every node (this one included) once a majority has them.

use std::sync::{Arc, OnceLock};

use warren_cluster::group::ProposeError;

use super::metadata::{Metadata, MetadataCommand};
use crate::definitions::{Commit, CommitError, Committed, DefinitionCommand, DefinitionLog};

#[derive(Default)]
pub struct ClusterDefinitionLog {
    /// Set once the metadata group has started (before any client is served).
    metadata: OnceLock<Arc<Metadata>>,
}

impl ClusterDefinitionLog {
    pub fn attach(&self, metadata: Arc<Metadata>) {
        let _ = self.metadata.set(metadata);
    }
}

impl DefinitionLog for ClusterDefinitionLog {
    fn commit<'a>(&'a self, vhost: &'a str, commands: &'a [DefinitionCommand]) -> Commit<'a> {
        Box::pin(async move {
            let metadata = self
                .metadata
                .get()
                .ok_or_else(|| CommitError::Refused("the node is starting".into()))?;
            let command = MetadataCommand::Definitions {
                vhost: vhost.to_owned(),
                commands: commands.to_vec(),
                applied_at_origin: false,
            };
            match metadata.commit(&command).await {
                Ok(()) => Ok(Committed::Applied),
                Err(ProposeError::Timeout(_)) => Err(CommitError::NoQuorum),
                Err(ProposeError::Failed(e)) => Err(CommitError::Refused(e)),
            }
        })
    }

    fn record(&self, vhost: &str, commands: &[DefinitionCommand]) {
        if let Some(metadata) = self.metadata.get() {
            metadata.record(&MetadataCommand::Definitions {
                vhost: vhost.to_owned(),
                commands: commands.to_vec(),
                applied_at_origin: true,
            });
        }
    }
}
