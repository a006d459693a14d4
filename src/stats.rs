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

/// The counters' rates: the last two samples of the totals, taken every
/// `collect_statistics_interval` (the management API's `*_details.rate`, per second).
#[derive(Default)]
pub struct RateSampler {
    samples: std::sync::Mutex<[Option<(std::time::Instant, Counts)>; 2]>,
}

/// Messages per second of each counter, over the last sampling interval.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Rates {
    pub received: f64,
    pub routed: f64,
    pub unroutable_dropped: f64,
    pub unroutable_returned: f64,
    pub delivered: f64,
    pub acknowledged: f64,
    pub confirmed: f64,
}

impl RateSampler {
    pub fn record(&self, at: std::time::Instant, totals: Counts) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples[0] = samples[1].take();
        samples[1] = Some((at, totals));
    }

    /// Zero until two samples were taken.
    pub fn rates(&self) -> Rates {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let (Some((t0, a)), Some((t1, b))) = (samples[0], samples[1]) else {
            return Rates::default();
        };
        let secs = t1.duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return Rates::default();
        }
        let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        Rates {
            received: rate(a.received, b.received),
            routed: rate(a.routed, b.routed),
            unroutable_dropped: rate(a.unroutable_dropped, b.unroutable_dropped),
            unroutable_returned: rate(a.unroutable_returned, b.unroutable_returned),
            delivered: rate(a.delivered, b.delivered),
            acknowledged: rate(a.acknowledged, b.acknowledged),
            confirmed: rate(a.confirmed, b.confirmed),
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

    #[test]
    fn rates_are_the_last_interval_s_differences_per_second() {
        let sampler = RateSampler::default();
        let start = std::time::Instant::now();
        let counts = |received, acknowledged| Counts {
            received,
            acknowledged,
            ..Counts::default()
        };
        sampler.record(start, counts(100, 0));
        assert_eq!(sampler.rates(), Rates::default(), "one sample: no rate yet");
        sampler.record(start + std::time::Duration::from_secs(5), counts(600, 50));
        let r = sampler.rates();
        assert_eq!((r.received, r.acknowledged), (100.0, 10.0));
        sampler.record(start + std::time::Duration::from_secs(7), counts(600, 50));
        assert_eq!(
            sampler.rates().received,
            0.0,
            "only the last interval counts"
        );
    }
}
