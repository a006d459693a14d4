//! What passed through an exchange (RabbitMQ's exchange `message_stats`): messages published
//! into it, and those it routed to at least one queue. A connection tallies the exchange it
//! publishes to and adds its tally here when it moves to another exchange or once a second, so
//! that publishers sharing an exchange do not share a counter's cache line per message.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::stats::RateSampler;

#[derive(Default)]
pub struct ExchangeStats {
    publish_in: AtomicU64,
    publish_out: AtomicU64,
    /// (publish_in, publish_out) sampled every `collect_statistics_interval`.
    pub rates: RateSampler<(u64, u64)>,
}

impl ExchangeStats {
    pub fn add(&self, published: u64, routed: u64) {
        self.publish_in.fetch_add(published, Ordering::Relaxed);
        self.publish_out.fetch_add(routed, Ordering::Relaxed);
    }

    /// (publish_in, publish_out) so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.publish_in.load(Ordering::Relaxed),
            self.publish_out.load(Ordering::Relaxed),
        )
    }
}

/// A connection's count of its publishes to one exchange, not yet added to the exchange's.
#[derive(Default)]
pub struct ExchangeTally {
    exchange: Vec<u8>,
    published: u64,
    routed: u64,
}

impl ExchangeTally {
    /// One publish to `exchange`, routed to a queue or not. The tally of another exchange is
    /// handed to `flush` first.
    pub fn count(&mut self, exchange: &[u8], routed: bool, flush: impl FnOnce(&str, u64, u64)) {
        if self.exchange != exchange {
            self.flush(flush);
            self.exchange.clear();
            self.exchange.extend_from_slice(exchange);
        }
        self.published += 1;
        self.routed += u64::from(routed);
    }

    /// Hands what was counted to `flush` (exchange name, published, routed) and starts over.
    pub fn flush(&mut self, flush: impl FnOnce(&str, u64, u64)) {
        if self.published > 0 {
            flush(
                &String::from_utf8_lossy(&self.exchange),
                self.published,
                self.routed,
            );
        }
        self.published = 0;
        self.routed = 0;
    }
}
