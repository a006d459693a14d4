//! A published message as queues hold it. Routing information, the publisher's property bytes
//! and (for bodies up to [`INLINE_BODY_MAX`]) the body share one small allocation, so a backlog of
//! small messages costs little beyond its bodies and does not pin the read buffers they arrived
//! in. Larger bodies stay zero-copy slices of what was read. Queues and deliveries share one
//! `Arc<Message>`, however many queues a publish reached. Every message alive in the process is
//! counted in [`held_bytes`], which the memory alarm watches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use warren_amqp::{Content, PropertiesView};
use warren_storage::{MessageParts, StoredMessage};

/// Bodies up to this size are copied next to the routing information.
pub const INLINE_BODY_MAX: usize = 4096;

#[derive(Debug)]
pub struct Message {
    /// exchange | routing key | properties [| body, when inline].
    data: Bytes,
    exchange_len: u8,
    routing_key_len: u8,
    properties_len: u32,
    /// A large body, kept as received.
    external_body: Option<Box<Bytes>>,
    pub persistent: bool,
    /// The `priority` property (0 when absent).
    pub priority: u8,
    /// The `expiration` property in milliseconds, when it is a valid number.
    expiration_ms: u32,
    /// Set when the message is stored on disk for its durable queues.
    storage_id: u64,
}

pub type MessageRef = Arc<Message>;

/// `expiration_ms` when the message has none (kept in 4 octets: a backlog pays per message).
const NO_EXPIRATION: u32 = u32::MAX;

/// What a message costs beyond its bytes: the struct, the `Arc` and buffer headers, and a queue's
/// index entry.
const MESSAGE_OVERHEAD: u64 = std::mem::size_of::<Message>() as u64 + 96;

/// Bytes held by the messages alive in this process (their routing information, properties and
/// bodies, plus [`MESSAGE_OVERHEAD`] each). One counter for the process: embedding several
/// brokers in one process shares it.
static HELD_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes held by the messages alive in this process.
pub fn held_bytes() -> u64 {
    HELD_BYTES.load(Ordering::Relaxed)
}

/// `message` with header `name` set to `value` (an earlier value replaced): its properties
/// decoded and encoded again. Properties that cannot be parsed are left as they are.
pub fn with_header(
    message: &MessageRef,
    name: &str,
    value: warren_amqp::types::AMQPValue,
) -> MessageRef {
    use warren_amqp::protocol::basic::parse_properties;
    let Ok((_, properties)) = parse_properties(message.properties()) else {
        return message.clone();
    };
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(name.into(), value);
    match warren_amqp::encode::encode_properties(&properties.with_headers(headers)) {
        Ok(bytes) => message.with_properties(&bytes),
        Err(_) => message.clone(),
    }
}

/// Bytes the broker holds for a client outside any message, counted in [`held_bytes`] with the
/// messages while it lives: a partly received body, an uncommitted transaction's publishes.
#[derive(Debug, Default)]
pub struct HeldCharge(u64);

impl HeldCharge {
    pub fn new(bytes: u64) -> Self {
        HELD_BYTES.fetch_add(bytes, Ordering::Relaxed);
        HeldCharge(bytes)
    }

    /// Now holding `bytes` instead.
    pub fn set(&mut self, bytes: u64) {
        if bytes > self.0 {
            HELD_BYTES.fetch_add(bytes - self.0, Ordering::Relaxed);
        } else if bytes < self.0 {
            HELD_BYTES.fetch_sub(self.0 - bytes, Ordering::Relaxed);
        }
        self.0 = bytes;
    }
}

impl Drop for HeldCharge {
    fn drop(&mut self) {
        HELD_BYTES.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// The properties a message's queues act on, read when the message is made: its property bytes
/// are parsed once on the way in, not again for each of these.
#[derive(Debug, Clone, Copy)]
struct Fields {
    persistent: bool,
    priority: u8,
    expiration_ms: Option<u32>,
}

impl Fields {
    fn of(view: &PropertiesView<'_>) -> Self {
        Fields {
            persistent: view.persistent(),
            priority: view.priority.unwrap_or(0),
            expiration_ms: expiration_ms(view),
        }
    }

    /// Malformed properties read as none, as everywhere the broker looks at them.
    fn parse(properties: &[u8]) -> Self {
        Self::of(&PropertiesView::parse(properties).unwrap_or_default())
    }
}

impl Message {
    pub fn from_content(content: Content, storage_id: Option<u64>) -> MessageRef {
        let fields = Fields::parse(&content.properties);
        Self::from_content_with(content, storage_id, fields)
    }

    /// A published message whose properties the connection has parsed already (`view`), so
    /// they are not parsed again. `view` may be of the bytes as published when the broker has
    /// since rewritten them without the `BCC` header: only the delivery mode, priority and
    /// expiration are read from it, which that leaves as they were.
    pub fn from_published(
        content: Content,
        storage_id: Option<u64>,
        view: &PropertiesView<'_>,
    ) -> MessageRef {
        Self::from_content_with(content, storage_id, Fields::of(view))
    }

    fn from_content_with(content: Content, storage_id: Option<u64>, fields: Fields) -> MessageRef {
        Self::from_parts_with(
            &content.publish.exchange,
            &content.publish.routing_key,
            &content.properties,
            content.body,
            storage_id,
            fields,
        )
    }

    /// A message read back from the store (`storage_id` is None for a transient message that was
    /// only written to be paged out).
    pub fn from_stored(parts: MessageParts<'_>, storage_id: Option<u64>) -> MessageRef {
        // Copied once out of the database page: inline next to the rest, or into its own buffer.
        let external = if parts.body.len() > INLINE_BODY_MAX {
            Bytes::copy_from_slice(parts.body)
        } else {
            Bytes::new()
        };
        Self::build(
            parts.exchange,
            parts.routing_key,
            parts.properties,
            parts.body,
            external,
            storage_id,
            Fields::parse(parts.properties),
        )
    }

    pub fn from_parts(
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        body: Bytes,
        storage_id: Option<u64>,
    ) -> MessageRef {
        let fields = Fields::parse(properties);
        Self::from_parts_with(exchange, routing_key, properties, body, storage_id, fields)
    }

    /// As [`Message::from_parts`], with the properties' fields already read.
    fn from_parts_with(
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        body: Bytes,
        storage_id: Option<u64>,
        fields: Fields,
    ) -> MessageRef {
        let external = if body.len() > INLINE_BODY_MAX {
            body.clone()
        } else {
            Bytes::new()
        };
        Self::build(
            exchange,
            routing_key,
            properties,
            &body,
            external,
            storage_id,
            fields,
        )
    }

    /// `body` is always the body; `external` is the same body as a shared buffer when it is too
    /// large to copy inline (and empty otherwise); `fields` are read from `properties`.
    fn build(
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        body: &[u8],
        external: Bytes,
        storage_id: Option<u64>,
        fields: Fields,
    ) -> MessageRef {
        let ex = &exchange[..exchange.len().min(255)];
        let rk = &routing_key[..routing_key.len().min(255)];
        let Fields {
            persistent,
            priority,
            expiration_ms,
        } = fields;
        let inline = body.len() <= INLINE_BODY_MAX;
        let mut data = BytesMut::with_capacity(
            ex.len() + rk.len() + properties.len() + if inline { body.len() } else { 0 },
        );
        data.put_slice(ex);
        data.put_slice(rk);
        data.put_slice(properties);
        let external_body = if inline {
            data.put_slice(body);
            None
        } else {
            Some(Box::new(external))
        };
        let message = Message {
            data: data.freeze(),
            exchange_len: ex.len() as u8,
            routing_key_len: rk.len() as u8,
            properties_len: properties.len() as u32,
            external_body,
            persistent,
            priority,
            expiration_ms: expiration_ms.unwrap_or(NO_EXPIRATION),
            storage_id: storage_id.unwrap_or(0),
        };
        HELD_BYTES.fetch_add(message.charge(), Ordering::Relaxed);
        Arc::new(message)
    }

    /// What this message counts for in [`held_bytes`].
    fn charge(&self) -> u64 {
        let external = self.external_body.as_ref().map_or(0, |b| b.len());
        (self.data.len() + external) as u64 + MESSAGE_OVERHEAD
    }

    /// The message as the store keeps it.
    pub fn to_stored(&self) -> Bytes {
        StoredMessage::encode(
            self.exchange(),
            self.routing_key(),
            self.properties(),
            self.body(),
        )
    }

    /// The `expiration` property in milliseconds, when it is a valid number.
    pub fn expiration_ms(&self) -> Option<u32> {
        (self.expiration_ms != NO_EXPIRATION).then_some(self.expiration_ms)
    }

    /// Set when the message is stored on disk for its durable queues (ids start at 1).
    pub fn storage_id(&self) -> Option<u64> {
        (self.storage_id != 0).then_some(self.storage_id)
    }

    pub fn exchange(&self) -> &[u8] {
        &self.data[..self.exchange_len as usize]
    }

    pub fn routing_key(&self) -> &[u8] {
        let start = self.exchange_len as usize;
        &self.data[start..start + self.routing_key_len as usize]
    }

    fn properties_start(&self) -> usize {
        self.exchange_len as usize + self.routing_key_len as usize
    }

    /// Property flags and values as the publisher sent them.
    pub fn properties(&self) -> &[u8] {
        let start = self.properties_start();
        &self.data[start..start + self.properties_len as usize]
    }

    pub fn properties_view(&self) -> PropertiesView<'_> {
        PropertiesView::parse(self.properties()).unwrap_or_default()
    }

    /// The body as a shared buffer (no copy).
    pub fn body_bytes(&self) -> Bytes {
        match &self.external_body {
            Some(body) => Bytes::clone(body),
            None => self
                .data
                .slice(self.properties_start() + self.properties_len as usize..),
        }
    }

    /// The same message with other properties (a header a queue adds to a delivery); the body
    /// is shared, not copied.
    pub fn with_properties(&self, properties: &[u8]) -> MessageRef {
        Message::from_parts(
            self.exchange(),
            self.routing_key(),
            properties,
            self.body_bytes(),
            self.storage_id(),
        )
    }

    pub fn body(&self) -> &[u8] {
        match &self.external_body {
            Some(body) => body,
            None => &self.data[self.properties_start() + self.properties_len as usize..],
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        HELD_BYTES.fetch_sub(self.charge(), Ordering::Relaxed);
    }
}

/// The `expiration` property in milliseconds, when it is a valid number (capped far in the future).
pub fn expiration_ms(view: &PropertiesView<'_>) -> Option<u32> {
    view.expiration
        .and_then(|e| std::str::from_utf8(e).ok()?.parse::<u64>().ok())
        .map(|ms| ms.min(u64::from(u32::MAX / 2)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_amqp::Publish;

    fn content(body: Vec<u8>) -> Content {
        Content {
            publish: Publish {
                exchange: Bytes::from_static(b"ex"),
                routing_key: Bytes::from_static(b"key.1"),
                mandatory: false,
                immediate: false,
            },
            properties: Bytes::from_static(&[0x10, 0x00, 2]),
            body: Bytes::from(body),
        }
    }

    #[test]
    fn fields_come_back_for_inline_and_external_bodies() {
        for size in [0, 16, INLINE_BODY_MAX, INLINE_BODY_MAX + 1, 100_000] {
            let body: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let m = Message::from_content(content(body.clone()), None);
            let stored = m.to_stored();
            let back = Message::from_stored(MessageParts::decode(&stored).unwrap(), Some(9));
            assert_eq!(
                StoredMessage::decode(stored.clone()).unwrap().body,
                m.body()
            );
            assert_eq!(
                (
                    back.exchange(),
                    back.routing_key(),
                    back.properties(),
                    back.body()
                ),
                (m.exchange(), m.routing_key(), m.properties(), m.body())
            );
            assert_eq!(back.storage_id(), Some(9));
            assert_eq!(m.exchange(), b"ex");
            assert_eq!(m.routing_key(), b"key.1");
            assert_eq!(m.properties(), &[0x10, 0x00, 2]);
            assert_eq!(m.body(), &body[..]);
            assert!(m.persistent);
        }
    }

    #[test]
    fn a_published_message_keeps_the_fields_of_the_view_it_was_made_with() {
        // delivery_mode 2, priority 5, expiration "1500"
        let properties = Bytes::from_static(&[0x19, 0x00, 2, 5, 4, b'1', b'5', b'0', b'0']);
        let mut c = content(vec![1, 2, 3]);
        c.properties = properties.clone();
        let view = PropertiesView::parse(&properties).unwrap();
        let published = Message::from_published(c, Some(4), &view);
        let parsed = Message::from_parts(
            b"ex",
            b"key.1",
            &properties,
            Bytes::from(vec![1, 2, 3]),
            None,
        );
        for m in [&published, &parsed] {
            assert!(m.persistent);
            assert_eq!(m.priority, 5);
            assert_eq!(m.expiration_ms(), Some(1500));
            assert_eq!(m.properties(), &properties[..]);
        }
        assert_eq!(published.storage_id(), Some(4));
    }
}
