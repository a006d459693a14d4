//! Policies and operator policies (RabbitMQ 3.10): per vhost, a name, a regular expression matched
//! against queue and exchange names, what they apply to, a priority and a definition of keys
//! (`message-ttl`, `max-length`, `dead-letter-exchange`, `alternate-exchange`, ...). At most one
//! policy and one operator policy apply to an object: the matching one of highest priority of each
//! kind. What they mean for a queue or an exchange, together with its own arguments, is worked out
//! by the pure functions of [`resolve`].
//!
//! Layout, one concept a file:
//! - `mod.rs`: the policy types, a vhost's set of them and the ones applied to one object.
//! - `validate.rs`: a policy as the management API (and a definitions file) gives it, checked
//!   with RabbitMQ's rules and error texts.
//! - `erlang.rs`: JSON values printed as Erlang terms, as RabbitMQ's error texts show them.
//! - `resolve.rs`: which policy applies, and the effective settings of a queue or exchange.
//!
//! A vhost keeps its policies next to its topology and changes them through its definition log
//! like any other definition (`src/vhost/policies.rs`); the HTTP API is `src/http/policies.rs`.

mod erlang;
pub mod resolve;
mod validate;

pub use validate::parse_age;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use warren_storage::PolicyRecord;

pub use validate::{parse_policy, policy_from_json, PolicyError};

/// The keys of a policy's definition and their values (validated).
pub type Definition = Map<String, Value>;

/// A user policy (`/api/policies`, the `policymaker` tag) or an operator policy
/// (`/api/operator-policies`, administrators only, a few numeric keys that cap what users set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyKind {
    User,
    Operator,
}

/// What a policy applies to (3.10 has no classic/quorum split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyTo {
    Queues,
    Exchanges,
    All,
}

impl ApplyTo {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queues" => Some(ApplyTo::Queues),
            "exchanges" => Some(ApplyTo::Exchanges),
            "all" => Some(ApplyTo::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
        }
    }

    pub fn covers(self, object: ObjectKind) -> bool {
        matches!(
            (self, object),
            (ApplyTo::All, _)
                | (ApplyTo::Queues, ObjectKind::Queue)
                | (ApplyTo::Exchanges, ObjectKind::Exchange)
        )
    }
}

/// What a policy is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Queue,
    Exchange,
}

/// A policy as defined: what the definition log carries and the store keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDefinition {
    pub name: String,
    pub kind: PolicyKind,
    pub pattern: String,
    pub apply_to: ApplyTo,
    /// Any JSON number, as RabbitMQ takes it (compared as numbers).
    pub priority: Number,
    pub definition: Definition,
}

impl PolicyDefinition {
    pub fn record(&self, vhost: &str) -> PolicyRecord {
        PolicyRecord {
            vhost: vhost.to_owned(),
            name: self.name.clone(),
            operator: self.kind == PolicyKind::Operator,
            pattern: self.pattern.clone(),
            apply_to: self.apply_to.as_str().to_owned(),
            priority: self.priority.clone(),
            definition: self.definition.clone(),
        }
    }

    /// A stored policy; none when its `apply-to` is not one this broker knows.
    pub fn from_record(record: &PolicyRecord) -> Option<Self> {
        Some(PolicyDefinition {
            name: record.name.clone(),
            kind: if record.operator {
                PolicyKind::Operator
            } else {
                PolicyKind::User
            },
            pattern: record.pattern.clone(),
            apply_to: ApplyTo::parse(&record.apply_to)?,
            priority: record.priority.clone(),
            definition: record.definition.clone(),
        })
    }

    /// The policy as the management API shows it (and a definitions file holds it).
    pub fn to_json(&self, vhost: &str) -> Value {
        serde_json::json!({
            "vhost": vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to.as_str(),
            "definition": self.definition,
            "priority": self.priority,
        })
    }

    /// The priority as a number to compare (RabbitMQ compares integers and floats as numbers).
    pub fn priority_value(&self) -> f64 {
        self.priority.as_f64().unwrap_or(0.0)
    }
}

/// A policy with its pattern compiled.
#[derive(Debug)]
pub struct Policy {
    pub definition: PolicyDefinition,
    pattern: regex::Regex,
}

impl Policy {
    /// Compiles the pattern (checked before the policy was accepted, so this fails only for a
    /// stored one that no longer compiles).
    pub fn new(definition: PolicyDefinition) -> Result<Self, regex::Error> {
        Ok(Policy {
            pattern: regex::Regex::new(&definition.pattern)?,
            definition,
        })
    }

    /// Whether the policy applies to this object (RabbitMQ's pattern match is unanchored: `^` and
    /// `$` are the pattern's own business).
    pub fn matches(&self, object: ObjectKind, name: &str) -> bool {
        self.definition.apply_to.covers(object) && self.pattern.is_match(name)
    }
}

/// A vhost's policies of both kinds, by name (user and operator policies have separate
/// namespaces).
#[derive(Default)]
pub struct Policies {
    by_kind: BTreeMap<PolicyKind, BTreeMap<String, Arc<Policy>>>,
}

impl Policies {
    /// Sets (adds or replaces) a policy; false when its pattern does not compile.
    pub fn set(&mut self, definition: PolicyDefinition) -> bool {
        let (kind, name) = (definition.kind, definition.name.clone());
        match Policy::new(definition) {
            Ok(policy) => {
                self.by_kind
                    .entry(kind)
                    .or_default()
                    .insert(name, Arc::new(policy));
                true
            }
            Err(e) => {
                tracing::warn!(policy = %name, "policy skipped, its pattern does not compile: {e}");
                false
            }
        }
    }

    /// Removes a policy; false when there was none.
    pub fn clear(&mut self, kind: PolicyKind, name: &str) -> bool {
        self.by_kind
            .get_mut(&kind)
            .is_some_and(|m| m.remove(name).is_some())
    }

    pub fn get(&self, kind: PolicyKind, name: &str) -> Option<&PolicyDefinition> {
        self.by_kind.get(&kind)?.get(name).map(|p| &p.definition)
    }

    /// The policies of one kind, by name.
    pub fn of_kind(&self, kind: PolicyKind) -> impl Iterator<Item = &Arc<Policy>> {
        self.by_kind.get(&kind).into_iter().flat_map(|m| m.values())
    }

    /// Every policy of both kinds, user policies first, each kind by name.
    pub fn all(&self) -> impl Iterator<Item = &PolicyDefinition> {
        self.by_kind
            .values()
            .flat_map(|m| m.values())
            .map(|p| &p.definition)
    }

    /// The policies that apply to one queue or exchange.
    pub fn for_object(&self, object: ObjectKind, name: &str) -> Applied {
        let pick = |kind| resolve::select(self.of_kind(kind), object, name).cloned();
        Applied {
            policy: pick(PolicyKind::User),
            operator: pick(PolicyKind::Operator),
        }
    }
}

/// The policies applied to one queue or exchange: at most one of each kind.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub policy: Option<Arc<Policy>>,
    pub operator: Option<Arc<Policy>>,
}

impl PartialEq for Applied {
    /// The same policies, as defined (RabbitMQ re-applies only when they differ).
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &Option<Arc<Policy>>, b: &Option<Arc<Policy>>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.definition == b.definition,
            _ => false,
        };
        same(&self.policy, &other.policy) && same(&self.operator, &other.operator)
    }
}

impl Applied {
    pub fn policy_name(&self) -> Option<&str> {
        self.policy.as_ref().map(|p| p.definition.name.as_str())
    }

    pub fn operator_policy_name(&self) -> Option<&str> {
        self.operator.as_ref().map(|p| p.definition.name.as_str())
    }

    /// The two definitions merged (`effective_policy_definition` in the management API).
    pub fn effective_definition(&self) -> Definition {
        resolve::merge_definitions(
            self.policy.as_ref().map(|p| &p.definition.definition),
            self.operator.as_ref().map(|p| &p.definition.definition),
        )
    }
}
