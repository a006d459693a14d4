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

/// Counters' rates: the last two samples of them, taken every `collect_statistics_interval`
/// (the management API's `*_details.rate`, per second). `T` is what is sampled: the broker's
/// [`Counts`], or a queue's counts and depths.
pub struct RateSampler<T = Counts> {
    samples: std::sync::Mutex<Held<T>>,
}

/// What a sampler holds: the last two samples, the earlier first; or, while every sample taken
/// was all zeros (all they say is zero rates), when the last was taken. Most queues of a broker
/// that holds thousands may never be used, and the two samples are 200 bytes for each.
enum Held<T> {
    Zeros(Option<std::time::Instant>),
    Samples(Box<[Option<(std::time::Instant, T)>; 2]>),
}

impl<T> Default for RateSampler<T> {
    fn default() -> Self {
        RateSampler {
            samples: std::sync::Mutex::new(Held::Zeros(None)),
        }
    }
}

impl<T: Copy + Default + PartialEq> RateSampler<T> {
    fn held(&self) -> std::sync::MutexGuard<'_, Held<T>> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, at: std::time::Instant, sample: T) {
        let mut held = self.held();
        match &mut *held {
            Held::Zeros(last) if sample == T::default() => *last = Some(at),
            // The first that is not: counted from the last zeros, as if they had been kept.
            Held::Zeros(last) => {
                let earlier = last.map(|then| (then, T::default()));
                *held = Held::Samples(Box::new([earlier, Some((at, sample))]));
            }
            Held::Samples(samples) => {
                samples[0] = samples[1].take();
                samples[1] = Some((at, sample));
            }
        }
    }

    /// The last two samples, the earlier first, with the time between them (none until two
    /// were taken, nor while all were zeros): what another node needs to show the same rates.
    pub fn pair(&self) -> Option<(std::time::Duration, T, T)> {
        let held = self.held();
        let Held::Samples(samples) = &*held else {
            return None;
        };
        let [Some((t0, a)), Some((t1, b))] = &**samples else {
            return None;
        };
        Some((t1.duration_since(*t0), *a, *b))
    }

    /// Takes another sampler's last two samples (see [`RateSampler::pair`]), the later as of now.
    pub fn set_pair(&self, between: std::time::Duration, earlier: T, later: T) {
        let now = std::time::Instant::now();
        let then = now.checked_sub(between).unwrap_or(now);
        *self.held() = Held::Samples(Box::new([Some((then, earlier)), Some((now, later))]));
    }

    /// The last sample taken, if any: figures at most one interval old, for what must not ask
    /// every queue for its own (ordering a page of 10,000 queues by depth).
    pub fn latest(&self) -> Option<T> {
        match &*self.held() {
            Held::Zeros(last) => last.map(|_| T::default()),
            Held::Samples(samples) => samples[1].as_ref().map(|(_, sample)| *sample),
        }
    }

    /// The change per second of what `of` reads from a sample, over the last interval: zero
    /// until two samples were taken, and for a counter that went down (a depth that fell has a
    /// negative rate: use [`RateSampler::signed_rate`]).
    pub fn rate(&self, of: impl Fn(&T) -> u64) -> f64 {
        self.signed_rate(|t| of(t) as f64).max(0.0)
    }

    /// As [`RateSampler::rate`], for a figure that goes up and down (a queue's depth).
    pub fn signed_rate(&self, of: impl Fn(&T) -> f64) -> f64 {
        let Some((between, a, b)) = self.pair() else {
            return 0.0;
        };
        let secs = between.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        (of(&b) - of(&a)) / secs
    }
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

impl RateSampler<Counts> {
    /// Zero until two samples were taken.
    pub fn rates(&self) -> Rates {
        Rates {
            received: self.rate(|c| c.received),
            routed: self.rate(|c| c.routed),
            unroutable_dropped: self.rate(|c| c.unroutable_dropped),
            unroutable_returned: self.rate(|c| c.unroutable_returned),
            delivered: self.rate(|c| c.delivered),
            acknowledged: self.rate(|c| c.acknowledged),
            confirmed: self.rate(|c| c.confirmed),
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

    /// A sampler that has seen only zeros keeps no samples and reads as one that kept them:
    /// zero rates, no pair to hand another node; its first sample that is not zeros counts from
    /// the last zeros.
    #[test]
    fn a_sampler_of_zeros_keeps_no_samples_and_reads_as_zero() {
        let sampler = RateSampler::default();
        let start = std::time::Instant::now();
        let at = |secs| start + std::time::Duration::from_secs(secs);
        assert_eq!(sampler.latest(), None, "nothing sampled yet");
        for secs in 0..3 {
            sampler.record(at(secs), Counts::default());
        }
        assert!(
            matches!(*sampler.held(), Held::Zeros(Some(_))),
            "no samples kept"
        );
        assert_eq!(sampler.rates(), Rates::default());
        assert_eq!(sampler.latest(), Some(Counts::default()));
        assert_eq!(sampler.pair(), None);
        let received = Counts {
            received: 30,
            ..Counts::default()
        };
        sampler.record(at(4), received);
        assert_eq!(sampler.latest(), Some(received));
        assert_eq!(
            sampler.rates().received,
            15.0,
            "30 over the 2 s since the last zeros"
        );
        sampler.record(at(5), received);
        assert_eq!(sampler.rates(), Rates::default());
        sampler.record(at(6), Counts::default());
        assert_eq!(
            sampler.latest(),
            Some(Counts::default()),
            "zeros again are kept"
        );
        assert_eq!(sampler.signed_rate(|c| c.received as f64), -30.0);
    }
}
