//! What a connection shows of one channel: its prefetch, modes and unacknowledged count
//! (atomics, stored by the connection as they change), and its consumers (changed at consume
//! and cancel only).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use warren_amqp::types::FieldTable;

/// A consumer as the management API lists it.
#[derive(Clone, Debug)]
pub struct ConsumerInfo {
    pub tag: Arc<str>,
    pub queue: Arc<str>,
    pub ack_required: bool,
    pub exclusive: bool,
    /// The channel's consumer prefetch when it was created.
    pub prefetch_count: u16,
    pub arguments: FieldTable,
}

#[derive(Default)]
pub struct ChannelInfo {
    prefetch_count: AtomicU32,
    global_prefetch_count: AtomicU32,
    confirm: AtomicBool,
    transactional: AtomicBool,
    unacked: AtomicU32,
    consumers: Mutex<Vec<ConsumerInfo>>,
    /// Messages published, delivered, acked... on it (its connection bumps them).
    pub counts: super::MessageCounts,
    /// Its counts sampled every `collect_statistics_interval`, for their rates.
    pub rates: crate::stats::RateSampler<super::MessageTotals>,
}

/// A channel's state at one moment.
#[derive(Clone, Debug)]
pub struct ChannelView {
    pub prefetch_count: u32,
    pub global_prefetch_count: u32,
    pub confirm: bool,
    pub transactional: bool,
    pub unacked: u32,
    pub consumers: Vec<ConsumerInfo>,
}

impl ChannelInfo {
    /// basic.qos: the prefetch of the channel's next consumers, or of the whole channel.
    pub fn set_prefetch(&self, count: u16, global: bool) {
        let target = if global {
            &self.global_prefetch_count
        } else {
            &self.prefetch_count
        };
        target.store(u32::from(count), Ordering::Relaxed);
    }

    pub fn set_confirm(&self) {
        self.confirm.store(true, Ordering::Relaxed);
    }

    pub fn set_transactional(&self) {
        self.transactional.store(true, Ordering::Relaxed);
    }

    /// The deliveries the channel holds unsettled now.
    pub fn set_unacked(&self, n: usize) {
        self.unacked
            .store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    pub fn add_consumer(&self, consumer: ConsumerInfo) {
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(consumer);
    }

    pub fn remove_consumer(&self, tag: &str) {
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| &*c.tag != tag);
    }

    pub fn clear_consumers(&self) {
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn view(&self) -> ChannelView {
        ChannelView {
            prefetch_count: self.prefetch_count.load(Ordering::Relaxed),
            global_prefetch_count: self.global_prefetch_count.load(Ordering::Relaxed),
            confirm: self.confirm.load(Ordering::Relaxed),
            transactional: self.transactional.load(Ordering::Relaxed),
            unacked: self.unacked.load(Ordering::Relaxed),
            consumers: self
                .consumers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
