//! RabbitMQ 3.10's definitions file (`GET /api/definitions`, `rabbitmqctl export_definitions`,
//! `load_definitions`) as read on import: the sections and the fields RabbitMQ reads, each with
//! its defaults. Unknown keys are ignored, as RabbitMQ ignores them (its own exports carry
//! `rabbit_version` and the like). The sections this branch does not import yet stay JSON
//! values, for `sections.rs`.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A whole definitions file (or, for one vhost's import, the sections that apply to it).
#[derive(Debug, Default, Deserialize)]
pub struct Definitions {
    #[serde(default)]
    pub users: Vec<UserDef>,
    #[serde(default)]
    pub vhosts: Vec<VhostDef>,
    #[serde(default)]
    pub permissions: Vec<PermissionDef>,
    #[serde(default)]
    pub topic_permissions: Vec<Value>,
    #[serde(default)]
    pub parameters: Vec<Value>,
    #[serde(default)]
    pub global_parameters: Vec<GlobalParameterDef>,
    #[serde(default)]
    pub policies: Vec<Value>,
    #[serde(default)]
    pub queues: Vec<QueueDef>,
    #[serde(default)]
    pub exchanges: Vec<ExchangeDef>,
    #[serde(default)]
    pub bindings: Vec<BindingDef>,
}

/// Tags as RabbitMQ takes them: a list, or one comma-separated string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tags(pub Vec<String>);

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<String>),
            Nothing(()),
        }
        Ok(Tags(match Raw::deserialize(d)? {
            Raw::Text(s) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            Raw::List(list) => list,
            Raw::Nothing(()) => Vec::new(),
        }))
    }
}

#[derive(Debug, Deserialize)]
pub struct UserDef {
    pub name: String,
    /// base64 of (salt ++ digest); empty for a user without a password.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// A clear-text password, which RabbitMQ also takes (hashed on import).
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub hashing_algorithm: Option<String>,
    #[serde(default)]
    pub tags: Tags,
    /// Per-user limits (`max-connections`, `max-channels`).
    #[serde(default)]
    pub limits: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct VhostDef {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Option<Tags>,
    /// Where RabbitMQ 3.11+ puts the description and tags.
    #[serde(default)]
    pub metadata: Option<VhostMetadata>,
}

#[derive(Debug, Default, Deserialize)]
pub struct VhostMetadata {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Option<Tags>,
}

impl VhostDef {
    /// The description and tags, from the fields or from `metadata`; None when neither says.
    pub fn metadata(&self) -> (Option<String>, Option<Vec<String>>) {
        let meta = self.metadata.as_ref();
        let description = self
            .description
            .clone()
            .or_else(|| meta.and_then(|m| m.description.clone()));
        let tags = self
            .tags
            .clone()
            .or_else(|| meta.and_then(|m| m.tags.clone()))
            .map(|t| t.0);
        (description, tags)
    }
}

#[derive(Debug, Deserialize)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Deserialize)]
pub struct GlobalParameterDef {
    pub name: String,
    #[serde(default)]
    pub value: Value,
}

#[derive(Debug, Deserialize)]
pub struct QueueDef {
    pub name: String,
    /// Absent in a per-vhost file.
    #[serde(default)]
    pub vhost: Option<String>,
    #[serde(default)]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: Value,
}

#[derive(Debug, Deserialize)]
pub struct ExchangeDef {
    pub name: String,
    #[serde(default)]
    pub vhost: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub arguments: Value,
}

#[derive(Debug, Deserialize)]
pub struct BindingDef {
    pub source: String,
    #[serde(default)]
    pub vhost: Option<String>,
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: String,
    #[serde(default)]
    pub routing_key: String,
    #[serde(default)]
    pub arguments: Value,
}
