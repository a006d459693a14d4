//! A durable queue's messages read back at start-up, in order: in memory up to the queue's
//! memory limit, paged out (only their index kept) beyond it, with the deduplication ids the
//! queue remembered. The owner task starts from it ([`super::owner::spawn`]).

use warren_amqp::PropertiesView;
use warren_storage::{MessageParts, RememberedId};

use super::args::Dedup;
use super::dead_letter::Reason;
use super::dedup;
use super::ready::Slot;
use crate::message::{self, Message};

/// A message a durable queue held on disk at start-up.
pub(super) struct RecoveredMessage {
    pub(super) slot: Slot,
    pub(super) expiration_ms: Option<u32>,
    pub(super) redelivered: bool,
    /// Held as a dead-letter its targets had not confirmed, and why it was dead-lettered.
    pub(super) dead_lettered: Option<Reason>,
}

/// Gathers a durable queue's stored messages at start-up: in memory up to the queue's memory
/// limit, paged out (only their index kept) beyond it.
pub struct Recovery {
    memory_limit: u64,
    loaded_bytes: u64,
    pub(super) messages: Vec<RecoveredMessage>,
    /// With deduplication: the header ids are read from (None: `message-id`), the ids the store
    /// remembered, and those of the messages still in the queue.
    pub(super) dedup: Option<(Option<String>, Vec<RememberedId>)>,
    pub(super) dedup_keys: Vec<Vec<u8>>,
}

impl Recovery {
    pub fn new(memory_limit: u64) -> Self {
        Recovery {
            memory_limit,
            loaded_bytes: 0,
            messages: Vec::new(),
            dedup: None,
            dedup_keys: Vec::new(),
        }
    }

    /// For a deduplicating queue: the ids it remembered (see `DedupCache::restore`).
    pub fn with_dedup(mut self, settings: &Dedup, remembered: Vec<RememberedId>) -> Self {
        self.dedup = Some((settings.header.clone(), remembered));
        self
    }

    pub fn push(
        &mut self,
        storage_id: u64,
        redelivered: bool,
        dead_lettered: Option<Reason>,
        parts: MessageParts<'_>,
    ) {
        if let Some((header, _)) = &self.dedup {
            let view = PropertiesView::parse(parts.properties).unwrap_or_default();
            self.dedup_keys
                .extend(dedup::key_of(header.as_deref(), &view));
        }
        let len = parts.body.len() as u64;
        let (slot, expiration_ms) = if self.loaded_bytes + len <= self.memory_limit {
            self.loaded_bytes += len;
            let m = Message::from_stored(parts, Some(storage_id));
            let expiration = m.expiration_ms();
            (Slot::Loaded(m), expiration)
        } else {
            let view = PropertiesView::parse(parts.properties).unwrap_or_default();
            let slot = Slot::Paged {
                storage_id,
                body_len: len as u32,
                priority: view.priority.unwrap_or(0),
                transient: false,
            };
            (slot, message::expiration_ms(&view))
        };
        self.messages.push(RecoveredMessage {
            slot,
            expiration_ms,
            redelivered,
            dead_lettered,
        });
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}
