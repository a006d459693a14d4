//! Reads: a durable queue's messages (at recovery, and paged-out ones read back by id), the ids
//! deduplication remembers, and the definitions recovered at start-up. Each is one read
//! transaction, beside the writer's.

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::records::{MessageParts, StoredMessage, TopicPermissionRecord};
use crate::{
    crypto, Recovered, StorageError, Store, BINDINGS, DEDUP, DELIVERED, EXCHANGES, HELD, MESSAGES,
    META, OPERATOR_POLICIES, PERMISSIONS, POLICIES, QUEUES, QUEUE_INDEX, TOPIC_PERMISSIONS, USERS,
    VHOSTS,
};

/// An id a deduplicating queue or exchange remembers: (id, remembered at, forgotten at), in
/// Unix milliseconds (`u64::MAX`: until pushed out by newer ids).
pub type RememberedId = (Vec<u8>, u64, u64);

impl Store {
    /// A stored message record as plain bytes (opened, when messages are encrypted).
    fn plain<'a>(
        &self,
        message_id: u64,
        stored: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, StorageError> {
        crypto::plain(self.inner.cipher.as_deref(), message_id, stored)
    }

    /// Calls `each` with a durable queue's messages in order: (message id, redelivered, the reason
    /// code it is held as a dead-letter with if it is ([`crate::Op::Hold`]), message parts
    /// borrowed from the database page). Returns how many there were.
    pub fn for_each_queue_message(
        &self,
        queue_id: u64,
        mut each: impl FnMut(u64, bool, Option<u8>, MessageParts<'_>),
    ) -> Result<usize, StorageError> {
        let r = self.db()?.begin_read()?;
        let held: std::collections::HashMap<u64, u8> = held_in(&r, queue_id)?.into_iter().collect();
        let index = r.open_table(QUEUE_INDEX)?;
        let messages = r.open_table(MESSAGES)?;
        let delivered_through = r
            .open_table(DELIVERED)?
            .get(queue_id)?
            .map(|v| v.value())
            .unwrap_or(0);
        let mut n = 0;
        for entry in index.range((queue_id, 0)..=(queue_id, u64::MAX))? {
            let (key, inline) = entry?;
            let (_, message_id) = key.value();
            let redelivered = message_id <= delivered_through;
            let held = held.get(&message_id).copied();
            if inline.value().is_empty() {
                let Some(shared) = messages.get(message_id)? else {
                    tracing::warn!(
                        queue_id,
                        message_id,
                        "index entry without a message; skipped"
                    );
                    continue;
                };
                let plain = self.plain(message_id, shared.value())?;
                each(message_id, redelivered, held, MessageParts::decode(&plain)?);
            } else {
                let plain = self.plain(message_id, inline.value())?;
                each(message_id, redelivered, held, MessageParts::decode(&plain)?);
            }
            n += 1;
        }
        Ok(n)
    }

    /// Reads back some of a durable queue's messages (paged out of memory), in one read
    /// transaction: `each(message id, parts)` for each one found; ids it does not hold are skipped.
    pub fn read_queue_messages(
        &self,
        queue_id: u64,
        ids: &[u64],
        mut each: impl FnMut(u64, MessageParts<'_>),
    ) -> Result<(), StorageError> {
        let r = self.db()?.begin_read()?;
        let index = r.open_table(QUEUE_INDEX)?;
        let messages = r.open_table(MESSAGES)?;
        for &message_id in ids {
            let Some(inline) = index.get((queue_id, message_id))? else {
                continue;
            };
            if inline.value().is_empty() {
                if let Some(shared) = messages.get(message_id)? {
                    let plain = self.plain(message_id, shared.value())?;
                    each(message_id, MessageParts::decode(&plain)?);
                }
            } else {
                let plain = self.plain(message_id, inline.value())?;
                each(message_id, MessageParts::decode(&plain)?);
            }
        }
        Ok(())
    }

    /// The ids a deduplicating queue or exchange remembered: (id, remembered at, expires at), in
    /// the order they were remembered.
    pub fn dedup_ids(&self, owner: &str) -> Result<Vec<RememberedId>, StorageError> {
        let r = self.db()?.begin_read()?;
        let table = r.open_table(DEDUP)?;
        let mut out = Vec::new();
        for entry in table.range((owner, &[][..])..)? {
            let (k, v) = entry?;
            let (o, id) = k.value();
            if o != owner {
                break;
            }
            let (at, expires) = v.value();
            out.push((id.to_vec(), at, expires));
        }
        out.sort_by_key(|(_, at, _)| *at);
        Ok(out)
    }

    /// A durable queue's messages in order: (message id, redelivered, message).
    pub fn queue_messages(
        &self,
        queue_id: u64,
    ) -> Result<Vec<(u64, bool, StoredMessage)>, StorageError> {
        let mut out = Vec::new();
        self.for_each_queue_message(queue_id, |id, redelivered, _, parts| {
            out.push((id, redelivered, parts.to_owned()))
        })?;
        Ok(out)
    }

    /// The dead-letters a durable queue holds (see [`crate::Op::Hold`]): (message id, reason code).
    pub fn held_dead_letters(&self, queue_id: u64) -> Result<Vec<(u64, u8)>, StorageError> {
        held_in(&self.db()?.begin_read()?, queue_id)
    }
}

/// A queue's held dead-letters as `r` sees them: (message id, reason code).
fn held_in(r: &redb::ReadTransaction, queue_id: u64) -> Result<Vec<(u64, u8)>, StorageError> {
    let held = r.open_table(HELD)?;
    let mut out = Vec::new();
    for entry in held.range((queue_id, 0)..=(queue_id, u64::MAX))? {
        let (key, reason) = entry?;
        out.push((key.value().1, reason.value()));
    }
    Ok(out)
}

pub(crate) fn read_definitions(db: &Database) -> Result<Recovered, StorageError> {
    let r = db.begin_read()?;
    let mut rec = Recovered::default();
    fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
        serde_json::from_slice(bytes).map_err(StorageError::CorruptDefinition)
    }
    for entry in r.open_table(EXCHANGES)?.iter()? {
        let (_, v) = entry?;
        rec.exchanges.push(decode(v.value())?);
    }
    for entry in r.open_table(QUEUES)?.iter()? {
        let (_, v) = entry?;
        rec.queues.push(decode(v.value())?);
    }
    for entry in r.open_table(BINDINGS)?.iter()? {
        let (k, _) = entry?;
        rec.bindings.push(decode(k.value())?);
    }
    for entry in r.open_table(USERS)?.iter()? {
        rec.users.push(decode(entry?.1.value())?);
    }
    for entry in r.open_table(VHOSTS)?.iter()? {
        rec.vhosts.push(decode(entry?.1.value())?);
    }
    for entry in r.open_table(PERMISSIONS)?.iter()? {
        rec.permissions.push(decode(entry?.1.value())?);
    }
    for entry in r.open_table(TOPIC_PERMISSIONS)?.iter()? {
        let list: Vec<TopicPermissionRecord> = decode(entry?.1.value())?;
        rec.topic_permissions.extend(list);
    }
    for table in [POLICIES, OPERATOR_POLICIES] {
        for entry in r.open_table(table)?.iter()? {
            rec.policies.push(decode(entry?.1.value())?);
        }
    }
    rec.needs_seed = r.open_table(META)?.get("seeded")?.is_none();
    Ok(rec)
}
