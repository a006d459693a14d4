//! What a queue sends to the connection of one of its consumers (or of a publisher waiting for a
//! confirm): the queue's side of the boundary, so that queues never depend on connections.

use std::sync::Arc;

use crate::message::MessageRef;

use super::QueueHandle;

/// What queues send to a connection.
pub enum ConnEvent {
    Deliver(Delivery),
    /// A direct reply-to message for the channel's reply consumer.
    DirectReply {
        channel: u16,
        consumer_tag: Arc<str>,
        message: MessageRef,
    },
    /// The queue went away (deleted): the consumer is cancelled by the broker.
    ConsumerCancelled {
        channel: u16,
        consumer_id: u64,
    },
    /// The connection's own marker, sent to itself once a queue has taken a consumer's
    /// basic.cancel: behind it are the deliveries the queue sent before, which go out first;
    /// then basic.cancel-ok (unless `nowait`).
    Cancelled {
        channel: u16,
        consumer_id: u64,
        consumer_tag: Arc<str>,
        nowait: bool,
    },
    /// One of the things a confirm-mode publish waits for happened: the disk has it (or failed
    /// to), or a queue that may refuse publishes took (or refused) it.
    Settled {
        channel: u16,
        seq: u64,
        ok: bool,
    },
}

pub struct Delivery {
    pub channel: u16,
    pub consumer_id: u64,
    pub consumer_tag: Arc<str>,
    pub queue: Arc<QueueHandle>,
    pub id: u64,
    pub redelivered: bool,
    pub no_ack: bool,
    pub message: MessageRef,
}
