//! Resource alarms, as RabbitMQ's. The disk alarm goes off when free space under the data
//! directory falls below the configured limit, or when storage commits fail (a full disk, an I/O
//! error). The memory alarm goes off when the messages the broker holds in memory pass the
//! high watermark, which is what happens when publishers outrun consumers on queues that do not
//! page out. While either is on, connections that publish are told `connection.blocked` and are
//! no longer read from; consumers keep draining queues. Each clears by itself.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;

/// The alarms that are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Alarms {
    pub disk: bool,
    pub memory: bool,
}

impl Alarms {
    pub fn any(self) -> bool {
        self.disk || self.memory
    }

    /// The `connection.blocked` reason RabbitMQ gives: "low on disk", "low on memory", or
    /// "low on disk & memory".
    pub fn reason(self) -> String {
        let mut on = Vec::new();
        if self.disk {
            on.push("disk");
        }
        if self.memory {
            on.push("memory");
        }
        format!("low on {}", on.join(" & "))
    }
}

/// Free bytes available to unprivileged writers on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
}

/// Checks the disk every second, and at once when storage commits start or stop failing, for as
/// long as the broker runs.
pub async fn watch_disk(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => broker.store.retry_if_failing(),
            _ = broker.store.failing_changed() => {}
        }
        let limit = broker.config.disk_free_limit;
        let free = free_bytes(&broker.config.data_dir);
        let low = free.is_some_and(|f| f < limit);
        let failing = broker.store.is_failing();
        let on = low || failing;
        if broker.set_disk_alarm(on) {
            if on {
                tracing::warn!(free_bytes = ?free, limit, commits_failing = failing, "disk alarm set: publishers are blocked");
            } else {
                tracing::info!(free_bytes = ?free, "disk alarm cleared");
            }
        }
    }
}

/// Memory the machine (or the cgroup the broker runs in, when that is smaller) gives us.
pub fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let machine = total_kib.saturating_mul(1024);
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    });
    Some(cgroup.map_or(machine, |limit| limit.min(machine)))
}

/// The memory high watermark in bytes: the absolute setting, else the fraction of total memory.
pub fn memory_high_watermark(relative: f64, absolute: Option<u64>) -> Option<u64> {
    absolute.or_else(|| Some((total_memory()? as f64 * relative) as u64))
}

/// The memory high watermark in bytes, which an operator may change while the broker runs.
#[derive(Debug)]
pub struct MemoryLimit(AtomicU64);

/// [`MemoryLimit`]'s value for "total memory unknown, no limit".
const NO_LIMIT: u64 = u64::MAX;

impl MemoryLimit {
    pub fn new(limit: Option<u64>) -> MemoryLimit {
        MemoryLimit(AtomicU64::new(limit.unwrap_or(NO_LIMIT)))
    }

    /// The limit (None: total memory unknown).
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&limit| limit != NO_LIMIT)
    }

    pub fn set(&self, limit: Option<u64>) {
        self.0.store(limit.unwrap_or(NO_LIMIT), Ordering::Relaxed);
    }
}

/// Compares the bytes held by messages with the high watermark twice a second, for as long as the
/// broker runs (reading the watermark each time: it may be changed).
pub async fn watch_memory(broker: Arc<Broker>) {
    match broker.memory_limit.get() {
        Some(limit) => tracing::info!(limit_bytes = limit, "memory high watermark"),
        None => tracing::warn!("total memory unknown: no memory alarm until a watermark is set"),
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(limit) = broker.memory_limit.get() else {
            continue;
        };
        let held = crate::message::held_bytes();
        let on = held >= limit;
        if broker.set_memory_alarm(on) {
            if on {
                tracing::warn!(
                    held_bytes = held,
                    limit_bytes = limit,
                    "memory alarm set: publishers are blocked"
                );
            } else {
                tracing::info!(held_bytes = held, "memory alarm cleared");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_reasons_read_as_rabbitmq_sends_them() {
        let disk = Alarms {
            disk: true,
            memory: false,
        };
        let memory = Alarms {
            disk: false,
            memory: true,
        };
        let both = Alarms {
            disk: true,
            memory: true,
        };
        assert_eq!(disk.reason(), "low on disk");
        assert_eq!(memory.reason(), "low on memory");
        assert_eq!(both.reason(), "low on disk & memory");
        assert!(!Alarms::default().any());
    }

    #[test]
    fn watermark_is_absolute_or_a_fraction_of_total_memory() {
        assert_eq!(memory_high_watermark(0.4, Some(1000)), Some(1000));
        let total = total_memory().expect("/proc/meminfo");
        let relative = memory_high_watermark(0.5, None).unwrap();
        assert!(relative.abs_diff(total / 2) <= 1, "{relative} vs {total}");
    }
}
