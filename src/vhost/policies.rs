//! A vhost's policies: set and cleared as definition commands (committed through the definition
//! log, then applied: the topology matches every queue and exchange again), and listed.

use std::sync::Arc;

use crate::definitions::{CommitError, DefinitionCommand};
use crate::policy::{PolicyDefinition, PolicyKind};

use super::Vhost;

impl Vhost {
    /// Adds or replaces a policy (validated by the caller: `crate::policy::parse_policy`); it
    /// applies to what it matches before this returns. True when it was added.
    pub async fn set_policy(
        self: &Arc<Self>,
        policy: PolicyDefinition,
    ) -> Result<bool, CommitError> {
        let change = self.begin_change().await;
        let added = self
            .read()
            .policies
            .get(policy.kind, &policy.name)
            .is_none();
        self.commit_and_apply(change, vec![DefinitionCommand::SetPolicy(policy)])
            .await?;
        Ok(added)
    }

    /// Removes a policy; what it matched falls back on the next matching one. False when there
    /// was none.
    pub async fn clear_policy(
        self: &Arc<Self>,
        kind: PolicyKind,
        name: &str,
    ) -> Result<bool, CommitError> {
        let change = self.begin_change().await;
        if self.read().policies.get(kind, name).is_none() {
            return Ok(false);
        }
        let clear = DefinitionCommand::ClearPolicy {
            kind,
            name: name.to_owned(),
        };
        self.commit_and_apply(change, vec![clear]).await?;
        Ok(true)
    }

    pub fn policy(&self, kind: PolicyKind, name: &str) -> Option<PolicyDefinition> {
        self.read().policies.get(kind, name).cloned()
    }

    /// The policies of one kind, by name.
    pub fn policies(&self, kind: PolicyKind) -> Vec<PolicyDefinition> {
        self.read()
            .policies
            .of_kind(kind)
            .map(|p| p.definition.clone())
            .collect()
    }
}
