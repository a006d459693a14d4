//! Resource alarms. The disk alarm goes off when free space under the data directory falls below
//! the configured limit, or when storage commits fail (a full disk, an I/O error); while it is on,
//! connections that publish are told `connection.blocked` and are no longer read from, as in
//! RabbitMQ. Consumers keep draining queues. It clears by itself when space returns and commits
//! succeed again.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;

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
