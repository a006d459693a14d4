//! What is stored: definition records (as JSON, small and rarely written) and messages (a compact
//! binary layout, written once per persistent publish).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::StorageError;

/// A durable queue. `arguments` is the AMQP field table, encoded as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    pub vhost: String,
    pub name: String,
    pub id: u64,
    pub auto_delete: bool,
    pub arguments: Vec<u8>,
}

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    pub vhost: String,
    pub name: String,
    pub kind: String,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: Vec<u8>,
}

/// A binding between durable ends (a queue or, for exchange-to-exchange bindings, an exchange).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRecord {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    pub destination_is_queue: bool,
    pub routing_key: String,
    pub arguments: Vec<u8>,
}

/// A user, as RabbitMQ's definitions hold one: the password hash is base64 of (4-byte salt ++
/// digest), empty for a user without a password; `hashing_algorithm` is RabbitMQ's module name
/// (`rabbit_password_hashing_sha256`, `rabbit_password_hashing_sha512`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    pub hashing_algorithm: String,
    pub tags: Vec<String>,
    /// RabbitMQ's user limits (`max-connections`, `max-channels`); a negative value is no limit.
    #[serde(default)]
    pub limits: BTreeMap<String, i64>,
}

/// A virtual host and its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostRecord {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// RabbitMQ's vhost limits (`max-connections`, `max-queues`; negative: no limit); `None`
    /// or empty when it has none (RabbitMQ's definitions show `limits` only when set).
    #[serde(default)]
    pub limits: Option<BTreeMap<String, i64>>,
    /// The queue type a declare without `x-queue-type` gets, where it fits (RabbitMQ's
    /// `default_queue_type`, set when the vhost is created).
    #[serde(default)]
    pub default_queue_type: Option<String>,
}

/// A user's configure / write / read regular expressions in one vhost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionRecord {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// A user's topic permission on one exchange of a vhost: regular expressions its routing keys
/// (write: publishing; read: binding keys) must match when the exchange is a topic exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPermissionRecord {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// A policy or an operator policy of a vhost, as RabbitMQ's definitions hold one: `definition`
/// is its JSON object of keys (`message-ttl`, `max-length`, ...), validated before it was stored;
/// `priority` is any JSON number, as RabbitMQ accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub vhost: String,
    pub name: String,
    /// An operator policy (`/api/operator-policies`) rather than a user policy.
    pub operator: bool,
    pub pattern: String,
    pub apply_to: String,
    pub priority: serde_json::Number,
    pub definition: serde_json::Map<String, serde_json::Value>,
}

/// A stored message's parts, borrowed from where they lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageParts<'a> {
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
    pub properties: &'a [u8],
    pub body: &'a [u8],
}

impl<'a> MessageParts<'a> {
    pub fn decode(data: &'a [u8]) -> Result<Self, StorageError> {
        let corrupt = || StorageError::Corrupt("truncated message".into());
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&'a [u8], StorageError> {
            let s = data.get(at..at + n).ok_or_else(corrupt)?;
            at += n;
            Ok(s)
        };
        let n = take(1)?[0] as usize;
        let exchange = take(n)?;
        let n = take(1)?[0] as usize;
        let routing_key = take(n)?;
        let len = take(4)?;
        let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let properties = take(n)?;
        let body = data.get(at..).ok_or_else(corrupt)?;
        Ok(MessageParts {
            exchange,
            routing_key,
            properties,
            body,
        })
    }

    pub fn to_owned(self) -> StoredMessage {
        StoredMessage {
            exchange: Bytes::copy_from_slice(self.exchange),
            routing_key: Bytes::copy_from_slice(self.routing_key),
            properties: Bytes::copy_from_slice(self.properties),
            body: Bytes::copy_from_slice(self.body),
        }
    }
}

/// A message's stored form (see [`StoredMessage::encode`]), sealed when messages are encrypted
/// at rest. Only [`crate::Store::seal`] makes one, so nothing reaches the disk unsealed.
#[derive(Debug, Clone)]
pub struct SealedMessage(pub(crate) Bytes);

impl SealedMessage {
    /// Bytes taken as they are, unsealed: for logs other than an encrypting store's (a test's
    /// log in memory).
    pub fn unsealed(data: Bytes) -> Self {
        SealedMessage(data)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A persistent message as published: routing information, property bytes, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub exchange: Bytes,
    pub routing_key: Bytes,
    pub properties: Bytes,
    pub body: Bytes,
}

impl StoredMessage {
    /// `len(exchange) exchange len(key) key len32(properties) properties body`.
    pub fn encode(exchange: &[u8], routing_key: &[u8], properties: &[u8], body: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(
            6 + exchange.len() + routing_key.len() + properties.len() + body.len(),
        );
        Self::encode_into(
            &mut out,
            exchange,
            routing_key,
            |out| out.extend_from_slice(properties),
            body,
        );
        Bytes::from(out)
    }

    /// As [`StoredMessage::encode`], appended to `out`, the properties written by
    /// `write_properties` (a stream adds a header to them on the way).
    pub fn encode_into(
        out: &mut Vec<u8>,
        exchange: &[u8],
        routing_key: &[u8],
        write_properties: impl FnOnce(&mut Vec<u8>),
        body: &[u8],
    ) {
        let ex = &exchange[..exchange.len().min(255)];
        let rk = &routing_key[..routing_key.len().min(255)];
        out.push(ex.len() as u8);
        out.extend_from_slice(ex);
        out.push(rk.len() as u8);
        out.extend_from_slice(rk);
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        write_properties(out);
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body);
    }

    pub fn decode(data: Bytes) -> Result<Self, StorageError> {
        let parts = MessageParts::decode(&data)?;
        let (ex, rk, props) = (
            parts.exchange.len(),
            parts.routing_key.len(),
            parts.properties.len(),
        );
        let body_start = data.len() - parts.body.len();
        Ok(StoredMessage {
            exchange: data.slice(1..1 + ex),
            routing_key: data.slice(2 + ex..2 + ex + rk),
            properties: data.slice(6 + ex + rk..6 + ex + rk + props),
            body: data.slice(body_start..),
        })
    }
}
