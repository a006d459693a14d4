//! What stream consumers behind the tail have read ahead from disk and not yet delivered, under
//! one budget for the whole broker: a consumer reads a batch ahead while the budget has room,
//! and only what its credit lets it deliver at once when it has not. Without it, thousands of
//! readers that never ack (each with a batch read ahead) held a batch each: hundreds of MiB for
//! a few thousand sockets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::message::MessageRef;

/// What one read takes at most, while the budget has room.
pub const READ_AHEAD_MESSAGES: usize = 256;
pub const READ_AHEAD_BYTES: usize = 256 * 1024;
/// Bytes read ahead (or being read) by all consumers of all streams, beyond which reads take
/// only what can be delivered at once.
const BUDGET_BYTES: u64 = 64 * 1024 * 1024;
static READ_AHEAD: AtomicU64 = AtomicU64::new(0);

/// Bytes read ahead by all stream consumers, reads under way included.
pub fn read_ahead_bytes() -> u64 {
    READ_AHEAD.load(Ordering::Relaxed)
}

fn cost(message: &MessageRef) -> u64 {
    (message.body().len() + message.properties().len()) as u64
}

/// A consumer's messages read ahead, in offset order; their bytes count against the budget
/// while they are held.
#[derive(Default)]
pub struct ReadAhead {
    messages: VecDeque<(u64, MessageRef)>,
    bytes: u64,
}

impl ReadAhead {
    pub fn front_offset(&self) -> Option<u64> {
        self.messages.front().map(|(offset, _)| *offset)
    }

    pub fn pop_front(&mut self) -> Option<(u64, MessageRef)> {
        let (offset, message) = self.messages.pop_front()?;
        self.release(cost(&message));
        Some((offset, message))
    }

    /// Puts back a message taken but not delivered.
    pub fn push_front(&mut self, offset: u64, message: MessageRef) {
        self.hold(cost(&message));
        self.messages.push_front((offset, message));
    }

    pub fn extend(&mut self, read: Vec<(u64, MessageRef)>) {
        for (offset, message) in read {
            self.hold(cost(&message));
            self.messages.push_back((offset, message));
        }
    }

    pub fn clear(&mut self) {
        self.messages.clear();
        self.release(self.bytes);
    }

    fn hold(&mut self, bytes: u64) {
        self.bytes += bytes;
        READ_AHEAD.fetch_add(bytes, Ordering::Relaxed);
    }

    fn release(&mut self, bytes: u64) {
        self.bytes -= bytes;
        READ_AHEAD.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        READ_AHEAD.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A read under way: its largest size counts against the budget until it is done (reads
/// started together do not each find the budget empty).
pub struct Reading(u64);

impl Drop for Reading {
    fn drop(&mut self) {
        READ_AHEAD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// The next read for a consumer that may take `credit` more deliveries now: a batch ahead (at
/// least `credit`) while the budget has room, else `credit` only; as (messages, bytes at most,
/// what it holds of the budget meanwhile).
pub fn next_read(credit: u32) -> (usize, usize, Reading) {
    let credit = credit.max(1) as usize;
    let batch = READ_AHEAD_MESSAGES.max(credit);
    let reserved = READ_AHEAD_BYTES as u64;
    let before = READ_AHEAD.fetch_add(reserved, Ordering::Relaxed);
    if before + reserved <= BUDGET_BYTES {
        return (batch, READ_AHEAD_BYTES, Reading(reserved));
    }
    // Over the budget: what it can deliver now, delivered as soon as it lands (its bytes move
    // on to the connection, which counts and bounds them), so nothing is held back for it.
    READ_AHEAD.fetch_sub(reserved, Ordering::Relaxed);
    (credit, READ_AHEAD_BYTES, Reading(0))
}
