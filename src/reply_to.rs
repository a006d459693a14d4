//! Direct reply-to (`amq.rabbitmq.reply-to`): RPC replies delivered straight to the requesting
//! channel without a queue. A channel that consumes the pseudo-queue (in no-ack mode) is given a
//! name, `amq.rabbitmq.reply-to.<key>`; requests it publishes carry that name as `reply_to`, and
//! replies published to it on the default exchange go directly to its consumer.
//!
//! In a cluster a key starts with its node's id (`<16 hex digits>.`), as RabbitMQ's encodes the
//! channel's pid: a reply published on another node is sent to that one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::message::MessageRef;
use crate::queue::ConnEvent;

/// The pseudo-queue clients consume from and name in `reply_to`.
pub const PSEUDO_QUEUE: &str = "amq.rabbitmq.reply-to";
/// What replies are addressed to: the pseudo-queue name, a dot and the channel's key.
pub const PREFIX: &str = "amq.rabbitmq.reply-to.";

struct Target {
    events: mpsc::UnboundedSender<ConnEvent>,
    channel: u16,
    consumer_tag: Arc<str>,
}

/// The channels currently consuming direct replies, by key.
#[derive(Default)]
pub struct ReplyRegistry {
    targets: Mutex<HashMap<String, Target>>,
    /// This node's prefix of keys, in a cluster.
    node: std::sync::OnceLock<String>,
}

/// Where a reply addressed to a key goes.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyRoute {
    /// A channel of this node's (if it still consumes).
    Here,
    /// The node with this id.
    Node(u64),
}

impl ReplyRegistry {
    /// In a cluster: this node's id, which its keys start with.
    pub fn set_node(&self, id: u64) {
        let _ = self.node.set(format!("{id:016x}."));
    }

    /// A key's name for a new reply consumer: `random`, after this node's prefix in a cluster.
    pub fn new_key(&self, random: String) -> String {
        match self.node.get() {
            Some(prefix) => format!("{prefix}{random}"),
            None => random,
        }
    }

    /// Which node a reply address belongs to.
    pub fn route(&self, routing_key: &str) -> ReplyRoute {
        let (Some(prefix), Some(key)) = (self.node.get(), routing_key.strip_prefix(PREFIX)) else {
            return ReplyRoute::Here;
        };
        if key.starts_with(prefix.as_str()) {
            return ReplyRoute::Here;
        }
        match key
            .get(..16)
            .and_then(|id| u64::from_str_radix(id, 16).ok())
        {
            Some(id) if key.as_bytes().get(16) == Some(&b'.') => ReplyRoute::Node(id),
            _ => ReplyRoute::Here,
        }
    }

    pub fn register(
        &self,
        key: String,
        events: mpsc::UnboundedSender<ConnEvent>,
        channel: u16,
        consumer_tag: Arc<str>,
    ) {
        let target = Target {
            events,
            channel,
            consumer_tag,
        };
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, target);
    }

    pub fn unregister(&self, key: &str) {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Whether a channel consumes replies under `key` (the part of a reply-to name after
    /// [`PREFIX`]).
    pub fn contains(&self, key: &str) -> bool {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    /// Delivers a reply addressed to `routing_key`; false when nobody is there (the reply is
    /// unroutable, as in RabbitMQ).
    pub fn deliver(&self, routing_key: &str, message: MessageRef) -> bool {
        let Some(key) = routing_key.strip_prefix(PREFIX) else {
            return false;
        };
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = targets.get(key) else {
            return false;
        };
        t.events
            .send(ConnEvent::DirectReply {
                channel: t.channel,
                consumer_tag: t.consumer_tag.clone(),
                message,
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_node_in_a_cluster() {
        let alone = ReplyRegistry::default();
        assert_eq!(alone.new_key("abc".into()), "abc");
        assert_eq!(alone.route("amq.rabbitmq.reply-to.abc"), ReplyRoute::Here);

        let here = ReplyRegistry::default();
        here.set_node(0x1234);
        let key = here.new_key("abc".into());
        assert_eq!(key, "0000000000001234.abc");
        assert_eq!(here.route(&format!("{PREFIX}{key}")), ReplyRoute::Here);
        let there = format!("{PREFIX}00000000000000ff.xyz");
        assert_eq!(here.route(&there), ReplyRoute::Node(0xff));
        // Not a key of a cluster node's: looked up here (and unroutable).
        assert_eq!(here.route(&format!("{PREFIX}short")), ReplyRoute::Here);
        assert_eq!(
            here.route(&format!("{PREFIX}zzzzzzzzzzzzzzzz.x")),
            ReplyRoute::Here
        );
    }
}
