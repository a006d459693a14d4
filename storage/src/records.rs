//! What is stored: definition records (as JSON, small and rarely written) and messages (a compact
//! binary layout, written once per persistent publish).

use bytes::{Buf, BufMut, Bytes, BytesMut};
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
        let ex = &exchange[..exchange.len().min(255)];
        let rk = &routing_key[..routing_key.len().min(255)];
        let mut b =
            BytesMut::with_capacity(6 + ex.len() + rk.len() + properties.len() + body.len());
        b.put_u8(ex.len() as u8);
        b.put_slice(ex);
        b.put_u8(rk.len() as u8);
        b.put_slice(rk);
        b.put_u32(properties.len() as u32);
        b.put_slice(properties);
        b.put_slice(body);
        b.freeze()
    }

    pub fn decode(mut data: Bytes) -> Result<Self, StorageError> {
        let corrupt = || StorageError::Corrupt("truncated message".into());
        let take = |data: &mut Bytes, n: usize| {
            if data.len() < n {
                Err(corrupt())
            } else {
                Ok(data.split_to(n))
            }
        };
        let n = take(&mut data, 1)?[0] as usize;
        let exchange = take(&mut data, n)?;
        let n = take(&mut data, 1)?[0] as usize;
        let routing_key = take(&mut data, n)?;
        let n = take(&mut data, 4)?.get_u32() as usize;
        let properties = take(&mut data, n)?;
        Ok(StoredMessage {
            exchange,
            routing_key,
            properties,
            body: data,
        })
    }
}
