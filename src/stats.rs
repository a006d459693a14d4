//! Message counters for the whole broker (what RabbitMQ's `rabbitmq_global_messages_*_total`
//! metrics and the overview's `message_stats` report). Connections count into a plain local
//! [`Counts`] while they work and add it to the shared [`Counters`] once per batch, so the hot
//! path pays no atomic operation per message.

use std::sync::atomic::{AtomicU64, Ordering};

/// Totals since the broker started.
#[derive(Default)]
pub struct Counters {
    received: AtomicU64,
    routed: AtomicU64,
    unroutable_dropped: AtomicU64,
    unroutable_returned: AtomicU64,
    delivered: AtomicU64,
    acknowledged: AtomicU64,
    confirmed: AtomicU64,
}

/// One connection's counts not yet added to the totals.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Publishes received from clients.
    pub received: u64,
    /// Publishes routed to at least one queue.
    pub routed: u64,
    /// Publishes that matched no queue, without `mandatory`: dropped.
    pub unroutable_dropped: u64,
    /// Publishes that matched no queue, with `mandatory`: returned to the publisher.
    pub unroutable_returned: u64,
    /// Messages delivered to consumers or fetched with basic.get.
    pub delivered: u64,
    /// Deliveries acknowledged by clients.
    pub acknowledged: u64,
    /// Publishes confirmed to publishers (basic.ack in confirm mode).
    pub confirmed: u64,
}

impl Counters {
    /// Adds `local` to the totals and zeroes it.
    pub fn flush(&self, local: &mut Counts) {
        if *local == Counts::default() {
            return;
        }
        let add = |total: &AtomicU64, n: u64| {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.received, local.received);
        add(&self.routed, local.routed);
        add(&self.unroutable_dropped, local.unroutable_dropped);
        add(&self.unroutable_returned, local.unroutable_returned);
        add(&self.delivered, local.delivered);
        add(&self.acknowledged, local.acknowledged);
        add(&self.confirmed, local.confirmed);
        *local = Counts::default();
    }

    pub fn totals(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            received: get(&self.received),
            routed: get(&self.routed),
            unroutable_dropped: get(&self.unroutable_dropped),
            unroutable_returned: get(&self.unroutable_returned),
            delivered: get(&self.delivered),
            acknowledged: get(&self.acknowledged),
            confirmed: get(&self.confirmed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushing_adds_and_zeroes() {
        let counters = Counters::default();
        let mut local = Counts {
            received: 3,
            delivered: 2,
            ..Counts::default()
        };
        counters.flush(&mut local);
        assert_eq!(local, Counts::default());
        local.received = 1;
        counters.flush(&mut local);
        let totals = counters.totals();
        assert_eq!((totals.received, totals.delivered), (4, 2));
    }
}
