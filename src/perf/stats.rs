//! Counters and latency histograms shared by the producer and consumer tasks, and the report
//! they add up to: one line a second while running, totals and a JSON summary at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, up to an hour, to 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One consumer connection's latency samples since the reporter last took them.
pub type SharedHistogram = Arc<Mutex<Histogram<u64>>>;

/// Process-wide counters; tasks add to them once per batch, not per message.
#[derive(Debug, Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub returned: AtomicU64,
    pub consumed: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub published: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub returned: u64,
    pub consumed: u64,
}

impl Snapshot {
    /// What was counted between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            published: self.published - earlier.published,
            confirmed: self.confirmed - earlier.confirmed,
            nacked: self.nacked - earlier.nacked,
            returned: self.returned - earlier.returned,
            consumed: self.consumed - earlier.consumed,
        }
    }
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            published: self.published.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            nacked: self.nacked.load(Ordering::Relaxed),
            returned: self.returned.load(Ordering::Relaxed),
            consumed: self.consumed.load(Ordering::Relaxed),
        }
    }
}

/// The latency histograms of all consumer connections.
#[derive(Debug, Default)]
pub struct Latencies {
    sources: Mutex<Vec<SharedHistogram>>,
}

impl Latencies {
    /// A histogram for one more consumer connection.
    pub fn register(&self) -> SharedHistogram {
        let h = Arc::new(Mutex::new(new_histogram()));
        self.sources
            .lock()
            .expect("latency sources")
            .push(h.clone());
        h
    }

    /// Moves every sample recorded since the last call into `into`.
    pub fn drain_into(&self, into: &mut Histogram<u64>) {
        for source in self.sources.lock().expect("latency sources").iter() {
            let mut h = source.lock().expect("latency histogram");
            if !h.is_empty() {
                // Same bounds everywhere, so adding cannot fail.
                let _ = into.add(&*h);
                h.reset();
            }
        }
    }
}

/// p50/p95/p99/p99.9/max of a histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Percentiles {
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }

    pub fn json(p: Option<Self>) -> serde_json::Value {
        match p {
            Some(p) => serde_json::json!({
                "p50": p.p50, "p95": p.p95, "p99": p.p99, "p999": p.p999, "max": p.max,
            }),
            None => serde_json::Value::Null,
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "latency µs p50 {} p95 {} p99 {} p99.9 {} max {}",
            self.p50, self.p95, self.p99, self.p999, self.max
        )
    }
}

fn per_s(n: u64, over: Duration) -> f64 {
    let s = over.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// One line of the once-a-second report.
pub fn interval_line(
    elapsed: Duration,
    delta: Snapshot,
    over: Duration,
    latency: Option<Percentiles>,
) -> String {
    let mut line = format!(
        "time {:>6.1}s  published {:>9.0} msg/s  confirmed {:>9.0} msg/s  consumed {:>9.0} msg/s",
        elapsed.as_secs_f64(),
        per_s(delta.published, over),
        per_s(delta.confirmed, over),
        per_s(delta.consumed, over),
    );
    if delta.nacked > 0 {
        line.push_str(&format!("  nacked {}", delta.nacked));
    }
    if delta.returned > 0 {
        line.push_str(&format!("  returned {}", delta.returned));
    }
    if let Some(p) = latency {
        line.push_str(&format!("  {p}"));
    }
    line
}

/// What a run adds up to.
#[derive(Debug)]
pub struct Summary {
    /// Length of the measured phase (start to the stop signal).
    pub duration: Duration,
    /// Counters when the measured phase ended: the rates are these over `duration`.
    pub at_stop: Snapshot,
    /// Counters after the drain (late confirms and deliveries included).
    pub total: Snapshot,
    /// Ready messages left in the run's queues at the end, if they could be counted.
    pub left_over: Option<u64>,
    pub latency: Option<Percentiles>,
    pub errors: usize,
}

impl Summary {
    pub fn lines(&self) -> Vec<String> {
        let d = self.duration;
        let mut lines = vec![
            format!(
                "summary: {:.1}s  published {:.0} msg/s  confirmed {:.0} msg/s  consumed {:.0} msg/s",
                d.as_secs_f64(),
                per_s(self.at_stop.published, d),
                per_s(self.at_stop.confirmed, d),
                per_s(self.at_stop.consumed, d),
            ),
            format!(
                "totals: published {}  confirmed {}  nacked {}  returned {}  consumed {}  left over {}",
                self.total.published,
                self.total.confirmed,
                self.total.nacked,
                self.total.returned,
                self.total.consumed,
                self.left_over.map_or_else(|| "unknown".to_string(), |n| n.to_string()),
            ),
        ];
        match self.latency {
            Some(p) => lines.push(format!("end-to-end {p}")),
            None => lines.push("end-to-end latency: no samples".to_string()),
        }
        if self.errors > 0 {
            lines.push(format!("{} connection(s) failed; see stderr", self.errors));
        }
        lines
    }

    pub fn json(&self) -> serde_json::Value {
        let d = self.duration;
        serde_json::json!({
            "duration_s": d.as_secs_f64(),
            "published_per_s": per_s(self.at_stop.published, d),
            "confirmed_per_s": per_s(self.at_stop.confirmed, d),
            "consumed_per_s": per_s(self.at_stop.consumed, d),
            "published": self.total.published,
            "confirmed": self.total.confirmed,
            "nacked": self.total.nacked,
            "returned": self.total.returned,
            "consumed": self.total.consumed,
            "left_over": self.left_over,
            "latency_us": Percentiles::json(self.latency),
            "errors": self.errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_moves_samples_and_resets_sources() {
        let lat = Latencies::default();
        let a = lat.register();
        let b = lat.register();
        a.lock().unwrap().record(100).unwrap();
        b.lock().unwrap().record(300).unwrap();
        let mut into = new_histogram();
        lat.drain_into(&mut into);
        assert_eq!(into.len(), 2);
        assert!(a.lock().unwrap().is_empty());
        let p = Percentiles::of(&into).unwrap();
        assert!(p.p50 >= 100 && p.max >= 300);
        assert_eq!(Percentiles::of(&new_histogram()), None);
    }

    #[test]
    fn summary_json_has_the_documented_keys() {
        let s = Summary {
            duration: Duration::from_secs(2),
            at_stop: Snapshot {
                published: 10,
                confirmed: 8,
                consumed: 6,
                ..Default::default()
            },
            total: Snapshot {
                published: 10,
                confirmed: 10,
                consumed: 10,
                ..Default::default()
            },
            left_over: Some(0),
            latency: Some(Percentiles {
                p50: 1,
                p95: 2,
                p99: 3,
                p999: 4,
                max: 5,
            }),
            errors: 0,
        };
        let j = s.json();
        assert_eq!(j["published_per_s"], 5.0);
        assert_eq!(j["confirmed_per_s"], 4.0);
        assert_eq!(j["consumed_per_s"], 3.0);
        assert_eq!(j["consumed"], 10);
        assert_eq!(j["latency_us"]["p999"], 4);
    }
}
