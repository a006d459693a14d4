//! Ready messages of one queue, in order: one FIFO per priority level (one level unless the
//! queue has `x-max-priority`), with the count and body bytes that length limits look at.
//! Expiry is only ever checked at the head of each level, so it costs O(1) per message.

use std::collections::VecDeque;

use crate::message::MessageRef;

/// A message in a queue.
pub struct Entry {
    /// Position in the queue (increasing); requeued messages go back to their position.
    pub id: u64,
    pub message: MessageRef,
    /// When it expires, in milliseconds of the queue's clock; 0 = never.
    pub expires_at: u32,
    /// How many times it was handed back (requeued) so far.
    pub returns: u16,
    pub redelivered: bool,
}

pub struct Ready {
    levels: Vec<VecDeque<Entry>>,
    len: usize,
    bytes: u64,
}

impl Ready {
    pub fn new(max_priority: Option<u8>) -> Self {
        let levels = max_priority.map_or(1, |p| usize::from(p) + 1);
        Ready {
            levels: (0..levels).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
        }
    }

    fn level(&self, e: &Entry) -> usize {
        usize::from(e.message.priority).min(self.levels.len() - 1)
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

    pub fn push_back(&mut self, e: Entry) {
        self.len += 1;
        self.bytes += e.message.body().len() as u64;
        let level = self.level(&e);
        self.levels[level].push_back(e);
    }

    /// Puts a message back at its original position in its level.
    pub fn insert_sorted(&mut self, e: Entry) {
        self.len += 1;
        self.bytes += e.message.body().len() as u64;
        let level = self.level(&e);
        let q = &mut self.levels[level];
        let at = q.partition_point(|x| x.id < e.id);
        q.insert(at, e);
    }

    /// The next message to deliver: the oldest of the highest priority.
    pub fn pop_front(&mut self) -> Option<Entry> {
        let e = self.levels.iter_mut().rev().find_map(|q| q.pop_front())?;
        self.took(&e);
        Some(e)
    }

    fn took(&mut self, e: &Entry) {
        self.len -= 1;
        self.bytes -= e.message.body().len() as u64;
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

    pub fn drain(&mut self) -> Vec<Entry> {
        self.len = 0;
        self.bytes = 0;
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
}
