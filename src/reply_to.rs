//! Direct reply-to (`amq.rabbitmq.reply-to`): RPC replies delivered straight to the requesting
//! channel without a queue. A channel that consumes the pseudo-queue (in no-ack mode) is given a
//! name, `amq.rabbitmq.reply-to.<key>`; requests it publishes carry that name as `reply_to`, and
//! replies published to it on the default exchange go directly to its consumer.

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
}

impl ReplyRegistry {
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
