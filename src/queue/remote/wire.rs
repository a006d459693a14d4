//! What nodes say to each other about a queue that lives on one of them: the requests a node with
//! a remote queue's proxy sends to the queue's home node, and what the home node sends back to
//! that node's consumers. Encoded with postcard inside the cluster link's application requests.

use serde::{Deserialize, Serialize};
use warren_amqp::{AmqpError, ReplyCode};

use crate::message::{Message, MessageRef};
use crate::queue::core::ConsumerSpec;
use crate::queue::QueueStats;

/// A request to a queue's home node, or from it.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forward {
    /// Messages for the queue, in order; answered with one [`Taken`] each, once the queue has
    /// taken them (and, for a persistent message on a durable queue, its log has them on disk).
    Publish {
        queue: QueueRef,
        messages: Vec<WireMessage>,
    },
    Get {
        queue: QueueRef,
        no_ack: bool,
    },
    /// Deliveries settled by the node whose channel has them.
    Settle {
        queue: QueueRef,
        how: Settle,
        ids: Vec<u64>,
    },
    Purge {
        queue: QueueRef,
    },
    Delete {
        queue: QueueRef,
        if_unused: bool,
        if_empty: bool,
    },
    Stats {
        queue: QueueRef,
        used: bool,
    },
    /// A consumer on the proxy's node: `consumer` is its id there.
    Consume {
        queue: QueueRef,
        consumer: u64,
        terms: ConsumeTerms,
    },
    Cancel {
        queue: QueueRef,
        consumer: u64,
    },
    /// Sync: answered once everything sent before is in the queue's log.
    Sync {
        queue: QueueRef,
    },
    /// From the home node: deliveries for consumers on the receiving node.
    Deliver {
        deliveries: Vec<WireDelivery>,
    },
    /// From the home node: the queue cancelled this consumer (it was deleted).
    Cancelled {
        consumer: u64,
    },
    /// The receiving node's memory, disk and alarms (for `/api/nodes` on another node), as JSON.
    NodeFigures,
    /// A direct reply for a channel of the receiving node (`amq.rabbitmq.reply-to.<key>`).
    DirectReply {
        routing_key: String,
        message: WireMessage,
    },
    /// A consumer of a stream on the proxy's node, starting at `start` (appended after the
    /// others, so that nodes of the version before read the ones they know).
    ConsumeStream {
        queue: QueueRef,
        consumer: u64,
        terms: ConsumeTerms,
        start: crate::queue::stream::StreamStart,
    },
    /// [`Forward::Stats`] with the queue's message counts and its last two samples (for the
    /// management API's `message_stats` and rates on another node); appended, so that nodes of
    /// the versions before read the ones they know.
    Figures {
        queue: QueueRef,
        used: bool,
    },
    /// A replicated stream's member asks another for the entries of its log from `from` on (at
    /// most `max_bytes` of them, near enough), to fill what it missed (appended).
    ReadStream {
        queue: QueueRef,
        from: u64,
        max_bytes: u32,
    },
}

/// A queue by vhost and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueRef {
    pub vhost: String,
    pub name: String,
}

/// What a consumer asked for, as the queue's state machine takes it ([`ConsumerSpec`] without
/// the id, which is the queue's to give).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumeTerms {
    pub no_ack: bool,
    pub exclusive: bool,
    pub prefetch: u32,
    pub priority: i32,
}

impl ConsumeTerms {
    pub fn of(spec: &ConsumerSpec) -> ConsumeTerms {
        ConsumeTerms {
            no_ack: spec.no_ack,
            exclusive: spec.exclusive,
            prefetch: spec.prefetch,
            priority: spec.priority,
        }
    }

    /// The consumer as the queue knows it, under `id`.
    pub fn spec(self, id: u64) -> ConsumerSpec {
        ConsumerSpec {
            id,
            no_ack: self.no_ack,
            exclusive: self.exclusive,
            prefetch: self.prefetch,
            priority: self.priority,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settle {
    Ack,
    Reject,
    Requeue,
}

/// A message as the store writes it: exchange, routing key, properties, body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    #[serde(with = "serde_bytes")]
    pub exchange: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub routing_key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub properties: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl WireMessage {
    pub fn of(m: &Message) -> WireMessage {
        WireMessage {
            exchange: m.exchange().to_vec(),
            routing_key: m.routing_key().to_vec(),
            properties: m.properties().to_vec(),
            body: m.body().to_vec(),
        }
    }

    /// Its size in bytes (what it takes in a frame, near enough).
    pub fn size(&self) -> usize {
        self.exchange.len() + self.routing_key.len() + self.properties.len() + self.body.len()
    }

    /// The message, for this node (not stored here).
    pub fn into_message(self) -> MessageRef {
        Message::from_parts(
            &self.exchange,
            &self.routing_key,
            &self.properties,
            self.body.into(),
            None,
        )
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireDelivery {
    pub consumer: u64,
    pub id: u64,
    pub redelivered: bool,
    pub message: WireMessage,
}

/// What became of one forwarded publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Taken {
    /// Taken (and on disk where it had to be).
    Yes,
    /// Refused (`x-overflow` reject-publish, a failed write): a confirm is a nack.
    No,
}

/// An answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Done,
    Published(Vec<Taken>),
    Got(Option<WireGot>),
    Purged(u32),
    Deleted(u32),
    Stats {
        ready: u32,
        unacked: u32,
        consumers: u32,
    },
    Synced(bool),
    /// JSON (a node's figures).
    Json(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The queue refused (a consume on an exclusive-consumer queue, a conditional delete).
    Refused(WireError),
    /// The queue is not there (any more).
    Gone,
    /// [`Forward::Deliver`]'s answer, once the connections that took the deliveries have room
    /// for more: the ids of those not taken (their consumer or its connection had gone), for
    /// the home node to requeue.
    Relayed {
        not_taken: Vec<u64>,
    },
    /// [`Forward::Figures`]' answer: the queue's counts now, and its last two samples with the
    /// microseconds between them.
    Figures {
        now: QueueStats,
        sampled: Option<(u64, QueueStats, QueueStats)>,
    },
    /// [`Forward::ReadStream`]'s answer: the first offset the member's log keeps, the offset
    /// after its last, and entries from the one asked for (or from its first, if that one is
    /// gone), in order, each with its chunk's timestamp, as its log stores them.
    StreamRead {
        first: u64,
        end: u64,
        entries: Vec<StreamEntry>,
    },
}

/// An entry of a stream's log, as [`Reply::StreamRead`] carries it.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamEntry {
    pub offset: u64,
    pub timestamp_ms: i64,
    #[serde(with = "serde_bytes")]
    pub entry: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireGot {
    pub id: u64,
    pub redelivered: bool,
    pub remaining: u32,
    pub message: WireMessage,
}

/// An AMQP error, by number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl From<&AmqpError> for WireError {
    fn from(e: &AmqpError) -> Self {
        WireError {
            code: e.code.code(),
            text: e.text.clone(),
            class_id: e.class_id,
            method_id: e.method_id,
        }
    }
}

impl WireError {
    pub fn into_error(self) -> AmqpError {
        let code = ReplyCode::from_code(self.code).unwrap_or(ReplyCode::InternalError);
        let mut e = AmqpError::new(code, self.text);
        e.class_id = self.class_id;
        e.method_id = self.method_id;
        e
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(value).map_err(|e| e.to_string())
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message's fields as they were encoded before they were marked as bytes.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct ByteByByte {
        exchange: Vec<u8>,
        routing_key: Vec<u8>,
        properties: Vec<u8>,
        body: Vec<u8>,
    }

    /// Marking the fields as bytes makes their encoding fast without changing it: logs,
    /// snapshots and link frames written before read the same.
    #[test]
    fn a_message_encodes_as_it_did_byte_by_byte() {
        let message = WireMessage {
            exchange: b"amq.direct".to_vec(),
            routing_key: b"key".to_vec(),
            properties: vec![0, 1, 2, 255],
            body: (0..=255u8).cycle().take(5000).collect(),
        };
        let before = ByteByByte {
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
            properties: message.properties.clone(),
            body: message.body.clone(),
        };
        let (now, then) = (
            postcard::to_stdvec(&message).unwrap(),
            postcard::to_stdvec(&before).unwrap(),
        );
        assert_eq!(now, then);
        assert_eq!(postcard::from_bytes::<WireMessage>(&then).unwrap(), message);
    }
}
