//! Ready messages of one queue, in order: one FIFO per priority level (one level unless the
//! queue has `x-max-priority`), with the count and body bytes that length limits look at.
//! Expiry is only ever checked at the head of each level, so it costs O(1) per message.
//!
//! An entry holds its message in memory or, for a durable queue over its memory limit, only the
//! message's storage id ("paged out"): the body is read back from the store when the entry nears
//! the head. Paging happens here in place, so the order of the queue never changes.

use std::collections::{HashMap, VecDeque};

use crate::message::MessageRef;

/// Where an entry's message is.
pub enum Slot {
    Loaded(MessageRef),
    /// On disk only; what the queue needs to know about it without reading it. A transient
    /// message is written only to be paged out, under the queue's shadow key.
    Paged {
        storage_id: u64,
        body_len: u32,
        priority: u8,
        transient: bool,
    },
}

/// A message in a queue.
pub struct Entry {
    /// Position in the queue (increasing); requeued messages go back to their position.
    pub id: u64,
    pub slot: Slot,
    /// When it expires, in milliseconds of the queue's clock; 0 = never.
    pub expires_at: u32,
    /// How many times it was handed back (requeued) so far.
    pub returns: u16,
    pub redelivered: bool,
}

impl Entry {
    /// The message, when it is in memory.
    pub fn message(&self) -> Option<&MessageRef> {
        match &self.slot {
            Slot::Loaded(m) => Some(m),
            Slot::Paged { .. } => None,
        }
    }

    pub fn is_paged(&self) -> bool {
        matches!(self.slot, Slot::Paged { .. })
    }

    /// The message's id in the store, if it is stored, and whether it is a transient message's
    /// paged-out copy (under the queue's shadow key).
    pub fn stored_as(&self) -> Option<(u64, bool)> {
        match &self.slot {
            Slot::Loaded(m) => m.storage_id().map(|id| (id, false)),
            Slot::Paged {
                storage_id,
                transient,
                ..
            } => Some((*storage_id, *transient)),
        }
    }

    pub fn body_len(&self) -> u64 {
        match &self.slot {
            Slot::Loaded(m) => m.body().len() as u64,
            Slot::Paged { body_len, .. } => u64::from(*body_len),
        }
    }

    fn priority(&self) -> u8 {
        match &self.slot {
            Slot::Loaded(m) => m.priority,
            Slot::Paged { priority, .. } => *priority,
        }
    }
}

pub struct Ready {
    levels: Vec<VecDeque<Entry>>,
    len: usize,
    bytes: u64,
    /// Body bytes of the entries whose message is in memory.
    loaded_bytes: u64,
}

impl Ready {
    pub fn new(max_priority: Option<u8>) -> Self {
        let levels = max_priority.map_or(1, |p| usize::from(p) + 1);
        Ready {
            levels: (0..levels).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
            loaded_bytes: 0,
        }
    }

    /// The level a message of this priority goes to (above the maximum counts as the maximum).
    pub fn level_of(&self, priority: u8) -> usize {
        usize::from(priority).min(self.levels.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Body bytes of ready messages (what `x-max-length-bytes` limits).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Body bytes of ready messages held in memory.
    pub fn loaded_bytes(&self) -> u64 {
        self.loaded_bytes
    }

    fn added(&mut self, e: &Entry) {
        let n = e.body_len();
        self.len += 1;
        self.bytes += n;
        if !e.is_paged() {
            self.loaded_bytes += n;
        }
    }

    fn took(&mut self, e: &Entry) {
        let n = e.body_len();
        self.len -= 1;
        self.bytes -= n;
        if !e.is_paged() {
            self.loaded_bytes -= n;
        }
    }

    pub fn push_back(&mut self, e: Entry) {
        self.added(&e);
        let level = self.level_of(e.priority());
        self.levels[level].push_back(e);
    }

    /// Puts a message back at its original position in its level.
    pub fn insert_sorted(&mut self, e: Entry) {
        self.added(&e);
        let level = self.level_of(e.priority());
        let q = &mut self.levels[level];
        let at = q.partition_point(|x| x.id < e.id);
        q.insert(at, e);
    }

    /// The next message to deliver: the oldest of the highest priority.
    pub fn head(&self) -> Option<&Entry> {
        self.levels.iter().rev().find_map(|q| q.front())
    }

    /// Takes the next message to deliver (see [`Ready::head`]), in memory or not.
    pub fn pop_front(&mut self) -> Option<Entry> {
        let e = self.levels.iter_mut().rev().find_map(|q| q.pop_front())?;
        self.took(&e);
        Some(e)
    }

    /// The earliest expiry among the heads of the levels.
    pub fn next_expiry(&self) -> Option<u32> {
        self.levels
            .iter()
            .filter_map(|q| q.front().map(|e| e.expires_at))
            .filter(|t| *t != 0)
            .min()
    }

    /// Takes one expired message from the head of a level, if there is one.
    pub fn pop_expired(&mut self, now: u32) -> Option<Entry> {
        let level = self.levels.iter().position(|q| {
            q.front()
                .is_some_and(|e| e.expires_at != 0 && e.expires_at <= now)
        })?;
        let e = self.levels[level].pop_front()?;
        self.took(&e);
        Some(e)
    }

    /// The priority levels, lowest first, each in delivery order.
    pub fn levels(&self) -> &[VecDeque<Entry>] {
        &self.levels
    }

    pub fn drain(&mut self) -> Vec<Entry> {
        self.len = 0;
        self.bytes = 0;
        self.loaded_bytes = 0;
        self.levels.iter_mut().flat_map(|q| q.drain(..)).collect()
    }

    /// Moves every expiry `by` milliseconds earlier (the queue's clock is re-based).
    pub fn rebase(&mut self, by: u32) {
        for e in self.levels.iter_mut().flat_map(|q| q.iter_mut()) {
            if e.expires_at != 0 {
                e.expires_at = e.expires_at.saturating_sub(by).max(1);
            }
        }
    }

    /// Drops the in-memory copy of entry `id` of `level`: its message must be on disk, as a
    /// persistent message or (`transient_copy`) as a transient one's copy. False when the entry
    /// is no longer ready or is already paged out.
    pub fn page_out(&mut self, level: usize, id: u64, transient_copy: Option<u64>) -> bool {
        let Some(q) = self.levels.get_mut(level) else {
            return false;
        };
        let at = q.partition_point(|x| x.id < id);
        let Some(e) = q.get_mut(at).filter(|e| e.id == id) else {
            return false;
        };
        let Slot::Loaded(m) = &e.slot else {
            return false;
        };
        let Some(storage_id) = transient_copy.or(m.storage_id()) else {
            return false;
        };
        let body_len = m.body().len() as u32;
        e.slot = Slot::Paged {
            storage_id,
            body_len,
            priority: m.priority,
            transient: transient_copy.is_some(),
        };
        self.loaded_bytes -= u64::from(body_len);
        true
    }

    /// The storage id of ready entry `id` of `level`'s message, if it is stored.
    pub fn stored_id(&self, level: usize, id: u64) -> Option<u64> {
        let q = self.levels.get(level)?;
        let at = q.partition_point(|x| x.id < id);
        q.get(at)
            .filter(|e| e.id == id)?
            .stored_as()
            .map(|(s, _)| s)
    }

    /// The level the next delivery comes from, when its head is paged out: that level and the
    /// storage ids of the paged entries among its first `window` entries (to read back at once).
    pub fn paged_head(&self, window: usize) -> Option<(usize, Vec<(u64, bool)>)> {
        let level = self.levels.iter().rposition(|q| !q.is_empty())?;
        let q = &self.levels[level];
        if !q.front()?.is_paged() {
            return None;
        }
        let ids = q
            .iter()
            .take(window)
            .filter_map(|e| match e.slot {
                Slot::Paged {
                    storage_id,
                    transient,
                    ..
                } => Some((storage_id, transient)),
                Slot::Loaded(_) => None,
            })
            .collect();
        Some((level, ids))
    }

    /// Puts messages read back from the store into the paged entries among the first `window`
    /// of `level`. Paged entries whose message the store did not have are removed and returned.
    pub fn page_in(
        &mut self,
        level: usize,
        window: usize,
        mut read: HashMap<u64, MessageRef>,
    ) -> Vec<Entry> {
        let mut lost_at = Vec::new();
        let mut loaded = 0;
        if let Some(q) = self.levels.get_mut(level) {
            for (i, e) in q.iter_mut().take(window).enumerate() {
                let Slot::Paged { storage_id, .. } = e.slot else {
                    continue;
                };
                match read.remove(&storage_id) {
                    Some(m) => {
                        loaded += m.body().len() as u64;
                        e.slot = Slot::Loaded(m);
                    }
                    None => lost_at.push(i),
                }
            }
        }
        self.loaded_bytes += loaded;
        let mut lost = Vec::with_capacity(lost_at.len());
        for i in lost_at.into_iter().rev() {
            if let Some(e) = self.levels[level].remove(i) {
                self.took(&e);
                lost.push(e);
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;

    fn entry(id: u64, storage_id: Option<u64>, priority: u8, body: &'static [u8]) -> Entry {
        // Property flags with only `priority` (0x0800), then its value.
        let properties = [0x08, 0x00, priority];
        Entry {
            id,
            slot: Slot::Loaded(Message::from_parts(
                b"",
                b"q",
                &properties,
                Bytes::from_static(body),
                storage_id,
            )),
            expires_at: 0,
            returns: 0,
            redelivered: false,
        }
    }

    #[test]
    fn an_entry_stays_small() {
        // A backlog pays this per message, paged out or not.
        assert!(std::mem::size_of::<Entry>() <= 32);
    }

    #[test]
    fn paging_out_and_in_keeps_order_and_counts() {
        let mut r = Ready::new(None);
        for id in 0..10 {
            r.push_back(entry(id, Some(100 + id), 0, b"four"));
        }
        assert_eq!((r.len(), r.bytes(), r.loaded_bytes()), (10, 40, 40));
        for id in 2..10 {
            assert!(r.page_out(0, id, None));
        }
        assert!(!r.page_out(0, 5, None), "already paged");
        assert!(!r.page_out(0, 42, None), "no such entry");
        assert_eq!((r.len(), r.bytes(), r.loaded_bytes()), (10, 40, 8));
        assert!(r.paged_head(4).is_none(), "the head is in memory");
        r.pop_front();
        r.pop_front();
        let (level, ids) = r.paged_head(3).unwrap();
        assert_eq!(
            (level, ids.clone()),
            (0, vec![(102, false), (103, false), (104, false)])
        );
        // The store had 102 and 104 but not 103.
        let read: HashMap<u64, MessageRef> = [102, 104]
            .into_iter()
            .map(|sid| {
                let e = entry(0, Some(sid), 0, b"four");
                (sid, e.message().unwrap().clone())
            })
            .collect();
        let lost = r.page_in(level, 3, read);
        assert_eq!(lost.iter().map(|e| e.id).collect::<Vec<_>>(), vec![3]);
        assert_eq!((r.len(), r.bytes(), r.loaded_bytes()), (7, 28, 8));
        let order: Vec<(u64, bool)> = std::iter::from_fn(|| r.pop_front())
            .map(|e| (e.id, e.is_paged()))
            .collect();
        assert_eq!(
            order,
            vec![
                (2, false),
                (4, false),
                (5, true),
                (6, true),
                (7, true),
                (8, true),
                (9, true)
            ]
        );
        assert_eq!((r.len(), r.bytes(), r.loaded_bytes()), (0, 0, 0));
    }

    #[test]
    fn transient_messages_are_paged_out_only_with_a_copy() {
        let mut r = Ready::new(None);
        r.push_back(entry(0, None, 0, b"x"));
        assert!(!r.page_out(0, 0, None), "no copy on disk");
        assert_eq!(r.loaded_bytes(), 1);
        assert!(r.page_out(0, 0, Some(77)), "a transient copy");
        assert_eq!(r.loaded_bytes(), 0);
        assert_eq!(r.head().and_then(Entry::stored_as), Some((77, true)));
    }

    #[test]
    fn a_paged_entry_keeps_its_priority_level() {
        let mut r = Ready::new(Some(3));
        r.push_back(entry(0, Some(1), 1, b"low"));
        r.push_back(entry(1, Some(2), 3, b"high"));
        assert!(r.page_out(3, 1, None));
        let (level, ids) = r.paged_head(10).unwrap();
        assert_eq!((level, ids), (3, vec![(2, false)]));
        assert_eq!(r.pop_front().map(|e| e.id), Some(1));
        assert_eq!(r.pop_front().map(|e| e.id), Some(0));
    }
}
