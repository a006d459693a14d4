//! Definitions to and from the store's records: the store log writes records, recovery reads
//! them back as the definitions it declares again. Arguments are kept as the AMQP field table
//! encoded as on the wire.

use warren_amqp::encode::{decode_table, encode_table};
use warren_storage::{BindingRecord, ExchangeRecord, QueueRecord};

use super::command::{BindingDefinition, DestinationKind, ExchangeDefinition, QueueDefinition};
use crate::exchange::ExchangeKind;

impl QueueDefinition {
    /// The record of a queue kept on disk; none for the others.
    pub fn record(&self, vhost: &str) -> Option<QueueRecord> {
        Some(QueueRecord {
            vhost: vhost.to_owned(),
            name: self.name.clone(),
            id: self.storage_id?,
            auto_delete: self.auto_delete,
            arguments: encode_table(&self.arguments),
        })
    }

    /// A stored queue (durable, not exclusive); arguments that do not decode read as none.
    pub fn from_record(record: &QueueRecord) -> Self {
        QueueDefinition {
            name: record.name.clone(),
            storage_id: Some(record.id),
            durable: true,
            exclusive_owner: None,
            auto_delete: record.auto_delete,
            arguments: super::shared_arguments::shared(
                decode_table(&record.arguments).unwrap_or_default(),
            ),
            home: None,
            incarnation: 0,
            members: None,
        }
    }
}

impl ExchangeDefinition {
    pub fn record(&self, vhost: &str) -> ExchangeRecord {
        ExchangeRecord {
            vhost: vhost.to_owned(),
            name: self.name.clone(),
            kind: self.kind.as_str().to_owned(),
            auto_delete: self.auto_delete,
            internal: self.internal,
            arguments: encode_table(&self.arguments),
        }
    }

    /// A stored (so durable) exchange; none when its type is not one this broker knows.
    pub fn from_record(record: &ExchangeRecord) -> Option<Self> {
        Some(ExchangeDefinition {
            name: record.name.clone(),
            kind: ExchangeKind::parse(&record.kind)?,
            durable: true,
            auto_delete: record.auto_delete,
            internal: record.internal,
            arguments: decode_table(&record.arguments).unwrap_or_default(),
        })
    }
}

impl BindingDefinition {
    pub fn record(&self, vhost: &str) -> BindingRecord {
        BindingRecord {
            vhost: vhost.to_owned(),
            source: self.source.clone(),
            destination: self.destination.clone(),
            destination_is_queue: self.destination_kind == DestinationKind::Queue,
            routing_key: self.routing_key.clone(),
            arguments: encode_table(&self.arguments),
        }
    }

    pub fn from_record(record: &BindingRecord) -> Self {
        BindingDefinition {
            source: record.source.clone(),
            destination: record.destination.clone(),
            destination_kind: if record.destination_is_queue {
                DestinationKind::Queue
            } else {
                DestinationKind::Exchange
            },
            routing_key: record.routing_key.clone(),
            arguments: decode_table(&record.arguments).unwrap_or_default(),
        }
    }
}
