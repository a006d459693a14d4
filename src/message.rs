//! A published message as queues hold it: the routing information and the publisher's property
//! bytes (copied into one small buffer) and the body (a zero-copy slice of what was read, shared
//! by every queue the message was routed to).

use bytes::{BufMut, Bytes, BytesMut};
use warren_amqp::{Content, PropertiesView};

#[derive(Clone, Debug)]
pub struct Message {
    /// exchange | routing key | properties.
    head: Bytes,
    exchange_len: u8,
    routing_key_len: u8,
    pub body: Bytes,
    pub persistent: bool,
}

impl Message {
    pub fn from_content(content: Content) -> Self {
        let ex = &content.publish.exchange[..content.publish.exchange.len().min(255)];
        let rk = &content.publish.routing_key[..content.publish.routing_key.len().min(255)];
        let persistent = PropertiesView::parse(&content.properties)
            .map(|p| p.persistent())
            .unwrap_or(false);
        let mut head = BytesMut::with_capacity(ex.len() + rk.len() + content.properties.len());
        head.put_slice(ex);
        head.put_slice(rk);
        head.put_slice(&content.properties);
        Message {
            head: head.freeze(),
            exchange_len: ex.len() as u8,
            routing_key_len: rk.len() as u8,
            body: content.body,
            persistent,
        }
    }

    pub fn exchange(&self) -> &[u8] {
        &self.head[..self.exchange_len as usize]
    }

    pub fn routing_key(&self) -> &[u8] {
        let start = self.exchange_len as usize;
        &self.head[start..start + self.routing_key_len as usize]
    }

    /// Property flags and values as the publisher sent them.
    pub fn properties(&self) -> &[u8] {
        &self.head[self.exchange_len as usize + self.routing_key_len as usize..]
    }

    pub fn properties_view(&self) -> PropertiesView<'_> {
        PropertiesView::parse(self.properties()).unwrap_or_default()
    }

    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}
