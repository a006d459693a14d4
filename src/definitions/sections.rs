//! The sections of a definitions file whose features this branch does not have: policies, topic
//! permissions, runtime parameters (vhost limits, shovels, federation), global parameters and
//! user limits. Each has its check (made before anything of an import is applied), its apply
//! and its export here, so that the branches adding those features replace a function body
//! rather than find where an import drops their data. Until then a file that has any of them is
//! refused whole (400, naming the section), never imported with that part left out; exports
//! carry them as empty lists.

use serde_json::Value;

use super::format::{Definitions, GlobalParameterDef};
use super::import::ImportError;
use crate::broker::Broker;

/// The global parameter RabbitMQ exports from every node: its cluster's id. It names the
/// cluster the file came from, which Warren has no use for, so importing it changes nothing.
const CLUSTER_ID: &str = "internal_cluster_id";

/// Refuses a file with entries in a section Warren cannot import yet.
pub fn check(defs: &Definitions) -> Result<(), ImportError> {
    check_policies(&defs.policies)?;
    check_topic_permissions(&defs.topic_permissions)?;
    check_parameters(&defs.parameters)?;
    check_global_parameters(&defs.global_parameters)?;
    for user in &defs.users {
        check_user_limits(&user.name, user.limits.as_ref())?;
    }
    Ok(())
}

/// Applies those sections, after users, vhosts and permissions and before queues, exchanges and
/// bindings (RabbitMQ's order). Nothing to do while `check` refuses every entry.
pub async fn apply(_broker: &Broker, _defs: &Definitions) -> Result<(), ImportError> {
    Ok(())
}

fn not_yet(section: &'static str, entries: usize) -> ImportError {
    ImportError::NotSupported { section, entries }
}

/// Policies (another branch adds them): refused until then.
pub fn check_policies(policies: &[Value]) -> Result<(), ImportError> {
    match policies.len() {
        0 => Ok(()),
        n => Err(not_yet("policies", n)),
    }
}

/// Topic permissions (being added on main): refused until then.
pub fn check_topic_permissions(entries: &[Value]) -> Result<(), ImportError> {
    match entries.len() {
        0 => Ok(()),
        n => Err(not_yet("topic_permissions", n)),
    }
}

/// Runtime parameters (vhost limits are `vhost-limits` parameters): refused.
pub fn check_parameters(entries: &[Value]) -> Result<(), ImportError> {
    match entries.len() {
        0 => Ok(()),
        n => Err(not_yet("parameters", n)),
    }
}

/// Global parameters: RabbitMQ's cluster id is taken (and has no effect); others are refused.
pub fn check_global_parameters(entries: &[GlobalParameterDef]) -> Result<(), ImportError> {
    match entries.iter().filter(|p| p.name != CLUSTER_ID).count() {
        0 => Ok(()),
        n => Err(not_yet("global_parameters", n)),
    }
}

/// Per-user limits (being added on main): an empty `limits` object is fine, others refused.
pub fn check_user_limits(_user: &str, limits: Option<&Value>) -> Result<(), ImportError> {
    match limits {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(m)) if m.is_empty() => Ok(()),
        Some(Value::Array(a)) if a.is_empty() => Ok(()),
        Some(_) => Err(not_yet("users[].limits", 1)),
    }
}

/// What an export lists for each of those sections: nothing, for now.
pub fn export_policies(_broker: &Broker, _vhost: Option<&str>) -> Vec<Value> {
    Vec::new()
}

pub fn export_topic_permissions(_broker: &Broker) -> Vec<Value> {
    Vec::new()
}

pub fn export_parameters(_broker: &Broker, _vhost: Option<&str>) -> Vec<Value> {
    Vec::new()
}

pub fn export_global_parameters(_broker: &Broker) -> Vec<Value> {
    Vec::new()
}

/// A user's `limits` in an export.
pub fn export_user_limits(_broker: &Broker, _user: &str) -> Value {
    Value::Object(Default::default())
}
