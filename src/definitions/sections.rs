//! The sections of a definitions file beyond users, vhosts, permissions and the topology:
//! policies, topic permissions, runtime parameters (of which Warren has the `vhost-limits`
//! component), global parameters and user limits. Each is checked whole before anything of an
//! import is applied ([`Sections::check`]), applied after users, vhosts and permissions and
//! before queues, exchanges and bindings (RabbitMQ's order, so that policies meet the queues as
//! they are declared), and exported in RabbitMQ's shape. Parameters of plugins Warren does not
//! have (shovels, federation) and global parameters other than RabbitMQ's cluster id are
//! refused (400, naming the section), never imported with that part left out.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use warren_storage::TopicPermissionRecord;

use super::format::{Definitions, GlobalParameterDef};
use super::import::{ImportError, Scope};
use crate::broker::Broker;
use crate::limits::{check_limit, USER_LIMITS, VHOST_LIMITS};
use crate::policy::{policy_from_json, PolicyDefinition, PolicyKind};

/// The global parameter RabbitMQ exports from every node: its cluster's id. It names the
/// cluster the file came from, which Warren has no use for, so importing it changes nothing.
const CLUSTER_ID: &str = "internal_cluster_id";

/// The runtime parameter component of vhost limits.
const VHOST_LIMITS_COMPONENT: &str = "vhost-limits";

/// Those sections of an import, checked, in the form they are applied.
#[derive(Default)]
pub struct Sections {
    policies: Vec<(String, PolicyDefinition)>,
    topic_permissions: Vec<TopicPermissionRecord>,
    vhost_limits: Vec<(String, Map<String, Value>)>,
}

/// A string field of an entry.
fn text(entry: &Map<String, Value>, key: &str, what: &str) -> Result<String, ImportError> {
    entry
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ImportError::Shape(format!("{what} has no {key}")))
}

fn object<'v>(entry: &'v Value, what: &str) -> Result<&'v Map<String, Value>, ImportError> {
    entry
        .as_object()
        .ok_or_else(|| ImportError::Shape(format!("{what} is not an object")))
}

/// The vhost an entry belongs to: its own `vhost` field, or the one a per-vhost import is for.
fn vhost_of(
    entry: &Map<String, Value>,
    scope: Scope<'_>,
    what: &str,
) -> Result<String, ImportError> {
    match scope {
        Scope::Vhost(v) => Ok(v.to_owned()),
        Scope::All => text(entry, "vhost", what),
    }
}

impl Sections {
    /// Checks every entry; `has_vhost` / `has_user` say whether one exists or the import
    /// creates it.
    pub fn check(
        defs: &Definitions,
        scope: Scope<'_>,
        has_vhost: impl Fn(&str) -> bool,
        has_user: impl Fn(&str) -> bool,
    ) -> Result<Sections, ImportError> {
        let mut sections = Sections::default();
        for entry in &defs.policies {
            let entry = object(entry, "a policy")?;
            let vhost = vhost_of(entry, scope, "a policy")?;
            let name = text(entry, "name", "a policy")?;
            if !has_vhost(&vhost) {
                return Err(ImportError::NoSuchVhost(vhost));
            }
            // RabbitMQ's text, with the policy named as its import names it.
            let policy = policy_from_json(PolicyKind::User, &name, entry)
                .map_err(|e| ImportError::Invalid(format!("{e} ({vhost}/{name})")))?;
            sections.policies.push((vhost, policy));
        }
        if matches!(scope, Scope::All) {
            for entry in &defs.topic_permissions {
                let entry = object(entry, "a topic permission")?;
                let what = "a topic permission";
                let record = TopicPermissionRecord {
                    user: text(entry, "user", what)?,
                    vhost: text(entry, "vhost", what)?,
                    exchange: text(entry, "exchange", what)?,
                    write: text(entry, "write", what)?,
                    read: text(entry, "read", what)?,
                };
                if !has_vhost(&record.vhost) {
                    return Err(ImportError::NoSuchVhost(record.vhost));
                }
                if !has_user(&record.user) {
                    return Err(ImportError::NoSuchUser(record.user));
                }
                crate::auth::validate_topic_permission(&record).map_err(|reason| {
                    ImportError::InvalidRegexp {
                        user: record.user.clone(),
                        vhost: record.vhost.clone(),
                        reason,
                    }
                })?;
                sections.topic_permissions.push(record);
            }
            check_global_parameters(&defs.global_parameters)?;
        }
        let refused = |component: &str| ImportError::NotSupported {
            section: "parameters",
            entries: defs
                .parameters
                .iter()
                .filter(|p| p.get("component").and_then(Value::as_str) == Some(component))
                .count(),
        };
        for entry in &defs.parameters {
            let entry = object(entry, "a parameter")?;
            let component = text(entry, "component", "a parameter")?;
            if component != VHOST_LIMITS_COMPONENT {
                return Err(refused(&component));
            }
            let vhost = vhost_of(entry, scope, "a parameter")?;
            if !has_vhost(&vhost) {
                return Err(ImportError::NoSuchVhost(vhost));
            }
            let limits = entry
                .get("value")
                .and_then(Value::as_object)
                .ok_or_else(|| ImportError::Shape("vhost-limits without a value".into()))?;
            for (name, value) in limits {
                check_limit(&VHOST_LIMITS, "limits", name, value)
                    .map_err(|e| ImportError::Invalid(format!("{e} (vhost '{vhost}')")))?;
            }
            sections.vhost_limits.push((vhost, limits.clone()));
        }
        Ok(sections)
    }

    /// Applies them (their checks passed).
    pub async fn apply(self, broker: &Broker) -> Result<(), ImportError> {
        let stored = |e: &dyn std::fmt::Display| ImportError::Storage(e.to_string());
        for (vhost, limits) in self.vhost_limits {
            for (name, value) in &limits {
                broker
                    .set_vhost_limit(&vhost, name, value)
                    .await
                    .map_err(|e| stored(&e))?;
            }
        }
        for (vhost, policy) in self.policies {
            let v = broker
                .vhost(&vhost)
                .ok_or_else(|| ImportError::NoSuchVhost(vhost.clone()))?;
            v.set_policy(policy).await.map_err(|e| stored(&e))?;
        }
        for record in self.topic_permissions {
            match broker.set_topic_permission(record).await {
                Ok(Ok(_)) => {}
                Ok(Err(reason)) => return Err(ImportError::Storage(reason)),
                Err(e) => return Err(stored(&e)),
            }
        }
        Ok(())
    }
}

/// Global parameters: RabbitMQ's cluster id is taken (and has no effect); others are refused.
fn check_global_parameters(entries: &[GlobalParameterDef]) -> Result<(), ImportError> {
    match entries.iter().filter(|p| p.name != CLUSTER_ID).count() {
        0 => Ok(()),
        n => Err(ImportError::NotSupported {
            section: "global_parameters",
            entries: n,
        }),
    }
}

/// A user's `limits` in a file: an object of `max-connections` / `max-channels` (RabbitMQ also
/// writes an empty list for none).
pub fn user_limits(
    user: &str,
    limits: Option<&Value>,
) -> Result<BTreeMap<String, i64>, ImportError> {
    let mut out = BTreeMap::new();
    match limits {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(Value::Object(m)) => {
            for (name, value) in m {
                let value = check_limit(&USER_LIMITS, "user-limits", name, value)
                    .map_err(|e| ImportError::Invalid(format!("{e} (user '{user}')")))?;
                out.insert(name.clone(), value);
            }
        }
        Some(_) => {
            return Err(ImportError::Shape(format!(
                "the limits of user '{user}' are not an object"
            )))
        }
    }
    Ok(out)
}

/// The policies of one vhost or of all, in RabbitMQ's export shape (operator policies are not
/// exported, as in RabbitMQ 3.10).
pub fn export_policies(broker: &Broker, vhost: Option<&str>) -> Vec<Value> {
    let mut vhosts = broker.vhosts();
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    vhosts
        .iter()
        .filter(|v| vhost.is_none_or(|name| v.name == name))
        .flat_map(|v| {
            let mut entry_of = |p: &PolicyDefinition| {
                let mut entry = p.to_json(&v.name);
                if vhost.is_some() {
                    if let Some(map) = entry.as_object_mut() {
                        map.remove("vhost");
                    }
                }
                entry
            };
            v.policies(PolicyKind::User)
                .iter()
                .map(&mut entry_of)
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn export_topic_permissions(broker: &Broker) -> Vec<Value> {
    broker
        .users
        .topic_permissions()
        .iter()
        .map(|p| {
            json!({
                "user": p.user,
                "vhost": p.vhost,
                "exchange": p.exchange,
                "write": p.write,
                "read": p.read,
            })
        })
        .collect()
}

/// Runtime parameters: each vhost's limits, as RabbitMQ's `vhost-limits` component.
pub fn export_parameters(broker: &Broker, vhost: Option<&str>) -> Vec<Value> {
    let mut vhosts = broker.vhosts();
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    vhosts
        .iter()
        .filter(|v| vhost.is_none_or(|name| v.name == name))
        .filter_map(|v| {
            let limits = v.record().limits.filter(|l| !l.is_empty())?;
            let mut entry = json!({
                "value": limits,
                "vhost": v.name,
                "component": VHOST_LIMITS_COMPONENT,
                "name": "limits",
            });
            if vhost.is_some() {
                entry.as_object_mut()?.remove("vhost");
            }
            Some(entry)
        })
        .collect()
}

pub fn export_global_parameters(_broker: &Broker) -> Vec<Value> {
    Vec::new()
}

/// A user's `limits` in an export.
pub fn export_user_limits(broker: &Broker, user: &str) -> Value {
    let limits = broker
        .users
        .user(user)
        .map(|u| u.limits)
        .unwrap_or_default();
    json!(limits)
}
