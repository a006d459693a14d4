//! The broker: vhosts, users, settings and the count of live connections, shared by every
//! connection task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{watch, Notify};

use warren_storage::{StorageError, Store};

use crate::alarm::Alarms;
use crate::auth::Users;
use crate::config::Config;
use crate::reply_to::ReplyRegistry;
use crate::vhost::Vhost;

pub struct Broker {
    pub config: Config,
    pub store: Store,
    pub users: Users,
    /// Message counts since start, for metrics and the overview.
    pub counters: crate::stats::Counters,
    /// The memory high watermark in bytes, worked out once at start (None: total memory unknown).
    pub memory_limit: Option<u64>,
    pub replies: ReplyRegistry,
    vhosts: RwLock<HashMap<String, Arc<Vhost>>>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    connections_gone: Notify,
    shutdown: watch::Sender<bool>,
    alarms: watch::Sender<Alarms>,
}

impl Broker {
    /// Opens the store under `config.data_dir` and rebuilds what it holds. Needs a Tokio runtime
    /// (recovered queues start their tasks).
    pub fn open(config: Config) -> Result<Arc<Self>, StorageError> {
        let started = std::time::Instant::now();
        let key = config.encryption_key()?;
        let (store, recovered) = Store::open_with(&config.data_dir, key.as_ref())?;
        let default_vhost = Vhost::new("/", store.clone(), config.queue_memory_limit);
        default_vhost.restore(&recovered)?;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "storage recovered"
        );
        let mut vhosts = HashMap::new();
        vhosts.insert("/".to_owned(), default_vhost);
        let users = Users::with_default(
            &config.default_user,
            &config.default_pass,
            &config.loopback_users,
        );
        let memory_limit = crate::alarm::memory_high_watermark(
            config.vm_memory_high_watermark,
            config.vm_memory_high_watermark_absolute,
        );
        Ok(Arc::new(Broker {
            config,
            store,
            users,
            counters: crate::stats::Counters::default(),
            memory_limit,
            replies: ReplyRegistry::default(),
            vhosts: RwLock::new(vhosts),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            connections_gone: Notify::new(),
            shutdown: watch::channel(false).0,
            alarms: watch::channel(Alarms::default()).0,
        }))
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<Vhost>> {
        self.vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every vhost, sorted by name.
    pub fn vhosts(&self) -> Vec<Arc<Vhost>> {
        let mut all: Vec<Arc<Vhost>> = self
            .vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// A broker-wide unique id (connections, consumers).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Tells every connection to close (`connection.close` 320), then waits for them to go.
    pub async fn shut_down(&self, grace: std::time::Duration) {
        let _ = self.shutdown.send(true);
        let wait = async {
            loop {
                let gone = self.connections_gone.notified();
                if self.connections.load(Ordering::Acquire) == 0 {
                    return;
                }
                gone.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
    }

    /// Sets or clears the disk alarm; true when that changed it.
    pub fn set_disk_alarm(&self, on: bool) -> bool {
        self.alarms
            .send_if_modified(|a| std::mem::replace(&mut a.disk, on) != on)
    }

    /// Sets or clears the memory alarm; true when that changed it.
    pub fn set_memory_alarm(&self, on: bool) -> bool {
        self.alarms
            .send_if_modified(|a| std::mem::replace(&mut a.memory, on) != on)
    }

    /// The resource alarms, watched by every connection.
    pub fn alarms(&self) -> watch::Receiver<Alarms> {
        self.alarms.subscribe()
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard(self.clone())
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }
}

/// Counts a live connection until dropped.
pub struct ConnectionGuard(Arc<Broker>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.connections_gone.notify_waiters();
        }
    }
}
