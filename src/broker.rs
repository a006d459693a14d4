//! The broker: vhosts, users, settings, the count of live connections and their tracking,
//! shared by every connection task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{watch, Notify};

use warren_storage::{
    Op, PermissionRecord, StorageError, Store, TopicPermissionRecord, UserRecord, VhostRecord,
};

use crate::access_change::AccessChange;
use crate::alarm::Alarms;
use crate::auth::Users;
use crate::config::Config;
use crate::definitions::{CommitError, DefinitionLog, StoreDefinitionLog};
use crate::queue::factory::Placement;
use crate::reply_to::ReplyRegistry;
use crate::tracking::Tracker;
use crate::vhost::Vhost;

/// A node's memory, disk and alarms (RabbitMQ's `/api/nodes` fields), and what the overview adds
/// up over the cluster.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeFigures {
    pub mem_alarm: bool,
    pub disk_free_alarm: bool,
    pub mem_used: u64,
    pub mem_limit: Option<u64>,
    pub disk_free: Option<u64>,
    pub disk_free_limit: u64,
    /// Not a `/api/nodes` field: the overview's (a node of an earlier version sends none).
    #[serde(default)]
    pub activity: NodeActivity,
}

/// A node's listeners and open connections and channels, as `/api/overview` sums them over the
/// cluster.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeActivity {
    /// (protocol as RabbitMQ names it, port).
    pub listeners: Vec<(String, u16)>,
    pub connections: usize,
    pub channels: usize,
}

pub struct Broker {
    pub config: Config,
    /// This node's name (`Config::node_name`), worked out once.
    node_name: String,
    /// Alone, or a member of a cluster (vhosts made later are placed the same way).
    placement: Placement,
    pub store: Store,
    /// Where vhosts make their definition changes durable before applying them.
    definitions: Arc<dyn DefinitionLog>,
    pub users: Users,
    /// Message counts since start, for metrics and the overview.
    pub counters: crate::stats::Counters,
    /// The counters' rates, sampled every `collect_statistics_interval`.
    pub rates: crate::stats::RateSampler,
    /// The memory high watermark in bytes, worked out at start and changed by an operator
    /// (`warren ctl set_vm_memory_high_watermark`).
    pub memory_limit: crate::alarm::MemoryLimit,
    pub replies: ReplyRegistry,
    /// The live connections, for the management API and for closing a deleted user's.
    pub tracker: Arc<Tracker>,
    vhosts: RwLock<HashMap<String, Arc<Vhost>>>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    connections_gone: Notify,
    shutdown: watch::Sender<bool>,
    alarms: watch::Sender<Alarms>,
    /// Held by the administrative changes that read a record, change it and write it back
    /// (limits, topic permissions), so that two at once cannot lose one's write on disk.
    pub(crate) record_updates: tokio::sync::Mutex<()>,
    /// Management requests over AMQP being answered at once (`crate::management`): a bound on
    /// what publishers of requests make the broker hold, and back-pressure beyond it.
    pub(crate) management_requests: Arc<tokio::sync::Semaphore>,
    /// The listeners, by RabbitMQ's protocol name (`amqp`, `amqp/ssl`, `http`) and bound port,
    /// for the health checks; set once the server has bound them.
    pub listeners: std::sync::OnceLock<Vec<(&'static str, u16)>>,
    /// This node's part in the cluster (alone: a cluster of one); set once the server has
    /// started it.
    pub cluster: std::sync::OnceLock<Arc<crate::clustering::Clustering>>,
}

impl Broker {
    /// Opens the store under `config.data_dir` and rebuilds what it holds. Needs a Tokio runtime
    /// (recovered queues start their tasks).
    pub fn open(config: Config) -> Result<Arc<Self>, StorageError> {
        Self::open_in(config, Placement::Alone, None)
    }

    /// Opens a broker that is a member of a cluster (`placement`), whose vhosts' definitions go
    /// through `definitions` (the cluster's metadata log). Such a broker rebuilds its exchanges,
    /// queues and bindings from that log as it replays, not from the store, which keeps only
    /// the messages of its own queues (read back as the log declares them again).
    pub fn open_in(
        config: Config,
        placement: Placement,
        definitions: Option<Arc<dyn DefinitionLog>>,
    ) -> Result<Arc<Self>, StorageError> {
        let started = std::time::Instant::now();
        let key = config.encryption_key()?;
        let (store, mut recovered) = Store::open_with(&config.data_dir, key.as_ref())?;
        if recovered.needs_seed {
            // A fresh data directory (or one from before users and vhosts were stored): the
            // default user, administrator with every permission on `/`, as RabbitMQ creates.
            let (user, permission) =
                crate::auth::default_records(&config.default_user, &config.default_pass);
            let vhost = VhostRecord {
                name: "/".to_owned(),
                description: "Default virtual host".to_owned(),
                ..VhostRecord::default()
            };
            store.submit(Op::PutUser(user.clone()), None);
            store.submit(Op::PutVhost(vhost.clone()), None);
            store.submit(Op::PutPermission(permission.clone()), None);
            store.submit(Op::MarkSeeded, None);
            recovered.users.push(user);
            recovered.vhosts.push(vhost);
            recovered.permissions.push(permission);
        }
        let replicated = definitions.is_some();
        let definitions: Arc<dyn DefinitionLog> = match definitions {
            Some(log) => log,
            None => Arc::new(StoreDefinitionLog::new(store.clone())),
        };
        let mut vhosts = HashMap::new();
        for record in &recovered.vhosts {
            let vhost = Vhost::new_in(
                &*record.name,
                store.clone(),
                definitions.clone(),
                config.queue_memory_limit,
                placement.clone(),
            );
            vhost.set_record(record.clone());
            if !replicated {
                vhost.restore(&recovered)?;
            }
            vhosts.insert(record.name.clone(), vhost);
        }
        if !replicated {
            // In a cluster the queues come from the metadata group, later.
            let known: std::collections::HashSet<u64> =
                recovered.queues.iter().map(|q| q.id).collect();
            match store.remove_unknown_streams(|id| known.contains(&id)) {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(?removed, "logs of deleted streams removed")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("logs of deleted streams not removed: {e}"),
            }
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "storage recovered"
        );
        let users = Users::from_records(
            std::mem::take(&mut recovered.users),
            std::mem::take(&mut recovered.permissions),
            std::mem::take(&mut recovered.topic_permissions),
            &config.loopback_users,
        );
        let memory_limit = crate::alarm::MemoryLimit::new(crate::alarm::memory_high_watermark(
            config.vm_memory_high_watermark,
            config.vm_memory_high_watermark_absolute,
        ));
        Ok(Arc::new(Broker {
            placement,
            node_name: config.node_name(),
            config,
            store,
            definitions,
            users,
            counters: crate::stats::Counters::default(),
            rates: crate::stats::RateSampler::default(),
            memory_limit,
            replies: ReplyRegistry::default(),
            tracker: Arc::default(),
            vhosts: RwLock::new(vhosts),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            connections_gone: Notify::new(),
            shutdown: watch::channel(false).0,
            alarms: watch::channel(Alarms::default()).0,
            record_updates: tokio::sync::Mutex::new(()),
            listeners: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            management_requests: Arc::new(tokio::sync::Semaphore::new(
                crate::management::CONCURRENT_REQUESTS,
            )),
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

    /// Creates a vhost, or updates its description and tags; true when it was created. The
    /// default queue type is taken only when the vhost is created, as RabbitMQ takes it.
    pub async fn put_vhost(
        &self,
        name: &str,
        description: String,
        tags: Vec<String>,
        default_queue_type: Option<String>,
    ) -> Result<bool, CommitError> {
        // An existing vhost keeps its limits and default queue type.
        let _one_at_a_time = self.record_updates.lock().await;
        let existing = self.vhost(name).map(|v| v.record());
        let created = existing.is_none();
        let record = match existing {
            Some(old) => VhostRecord {
                description,
                tags,
                ..old
            },
            None => VhostRecord {
                name: name.to_owned(),
                description,
                tags,
                limits: None,
                default_queue_type,
            },
        };
        self.change_access(AccessChange::PutVhost(record)).await?;
        Ok(created)
    }

    /// The vhosts, to change.
    pub(crate) fn vhosts_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Vhost>>> {
        self.vhosts.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A new vhost of this broker (not yet among its vhosts).
    pub(crate) fn new_vhost(&self, name: &str) -> Arc<Vhost> {
        Vhost::new_in(
            name,
            self.store.clone(),
            self.definitions.clone(),
            self.config.queue_memory_limit,
            self.placement.clone(),
        )
    }

    /// Deletes a vhost: its connections are closed (320), its queues (with their messages),
    /// exchanges, bindings and permissions go. False when there was none.
    pub async fn delete_vhost(&self, name: &str) -> Result<bool, CommitError> {
        let Some(vhost) = self.vhost(name) else {
            return Ok(false);
        };
        for q in vhost.delete_contents().await? {
            q.delete_unconditionally().await;
        }
        self.change_access(AccessChange::DeleteVhost(name.to_owned()))
            .await?;
        Ok(true)
    }

    /// Creates or replaces a user (on disk first); true when it was created.
    pub async fn put_user(&self, record: UserRecord) -> Result<bool, CommitError> {
        let created = self.users.user(&record.name).is_none();
        self.change_access(AccessChange::PutUser(record)).await?;
        Ok(created)
    }

    /// Deletes a user and its permissions, and closes its connections (320, RabbitMQ's text);
    /// false when there was none.
    pub async fn delete_user(&self, name: &str) -> Result<bool, CommitError> {
        if self.users.user(name).is_none() {
            return Ok(false);
        }
        self.change_access(AccessChange::DeleteUser(name.to_owned()))
            .await?;
        Ok(true)
    }

    /// Sets a user's permissions in a vhost; `Err(Ok(reason))` for an invalid regex (nothing
    /// changed), true when the user had none there before.
    pub async fn set_permission(
        &self,
        record: PermissionRecord,
    ) -> Result<Result<bool, String>, CommitError> {
        // Compiled first, so that an invalid one is refused before anything is written.
        if let Err(e) = crate::auth::validate_permission(&record) {
            return Ok(Err(e));
        }
        let first = self.users.permission(&record.vhost, &record.user).is_none();
        self.change_access(AccessChange::PutPermission(record))
            .await?;
        Ok(Ok(first))
    }

    /// Removes a user's permissions in a vhost; false when it had none.
    pub async fn delete_permission(&self, vhost: &str, user: &str) -> Result<bool, CommitError> {
        if self.users.permission(vhost, user).is_none() {
            return Ok(false);
        }
        self.change_access(AccessChange::DeletePermission {
            vhost: vhost.to_owned(),
            user: user.to_owned(),
        })
        .await?;
        Ok(true)
    }

    /// Sets a user's topic permission on one exchange of a vhost; `Err(Ok(reason))` for an
    /// invalid regex (nothing changed), true when the user had none in the vhost before.
    pub async fn set_topic_permission(
        &self,
        record: TopicPermissionRecord,
    ) -> Result<Result<bool, String>, CommitError> {
        if let Err(e) = crate::auth::validate_topic_permission(&record) {
            return Ok(Err(e));
        }
        let _one_at_a_time = self.record_updates.lock().await;
        let (vhost, user) = (record.vhost.clone(), record.user.clone());
        let mut list: Vec<TopicPermissionRecord> = self
            .users
            .topic_permissions()
            .into_iter()
            .filter(|p| p.vhost == vhost && p.user == user)
            .collect();
        let first = list.is_empty();
        list.retain(|p| p.exchange != record.exchange);
        list.push(record);
        self.change_access(AccessChange::SetTopicPermissions {
            vhost,
            user,
            permissions: list,
        })
        .await?;
        Ok(Ok(first))
    }

    /// Removes a user's topic permission on one exchange of a vhost, or all of them there;
    /// false when there was none to remove.
    pub async fn delete_topic_permissions(
        &self,
        vhost: &str,
        user: &str,
        exchange: Option<&str>,
    ) -> Result<bool, CommitError> {
        let _one_at_a_time = self.record_updates.lock().await;
        let (removed, remaining): (Vec<TopicPermissionRecord>, Vec<TopicPermissionRecord>) = self
            .users
            .topic_permissions()
            .into_iter()
            .filter(|p| p.vhost == vhost && p.user == user)
            .partition(|p| exchange.is_none_or(|x| x == p.exchange));
        if removed.is_empty() {
            return Ok(false);
        }
        self.change_access(AccessChange::SetTopicPermissions {
            vhost: vhost.to_owned(),
            user: user.to_owned(),
            permissions: remaining,
        })
        .await?;
        Ok(true)
    }

    /// A broker-wide unique id (connections, consumers).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits until every durable queue has logged what it was sent (at a clean shutdown, so
    /// that persistent messages still in a queue's inbox are not lost with the process).
    pub async fn sync_queues(&self) {
        for vhost in self.vhosts() {
            for q in vhost.queues() {
                if q.storage_id.is_some() {
                    let _ = q.ask(crate::queue::QueueCommand::Sync).await;
                }
            }
        }
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
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// This node's memory, disk and alarms, as `/api/nodes` shows them (and other nodes ask).
    pub fn figures(&self) -> NodeFigures {
        let alarms = *self.alarms().borrow();
        NodeFigures {
            mem_alarm: alarms.memory,
            disk_free_alarm: alarms.disk,
            mem_used: crate::message::held_bytes(),
            mem_limit: self.memory_limit.get(),
            disk_free: crate::alarm::free_bytes(&self.config.data_dir),
            disk_free_limit: self.config.disk_free_limit,
            activity: self.activity(),
        }
    }

    fn activity(&self) -> NodeActivity {
        let open = self.tracker.open_connections();
        NodeActivity {
            listeners: self
                .listeners
                .get()
                .into_iter()
                .flatten()
                .map(|(protocol, port)| (protocol.to_string(), *port))
                .collect(),
            // As RabbitMQ counts them: connections past connection.open, and their channels.
            connections: open.len(),
            channels: open.iter().map(|(c, _)| c.channel_count()).sum(),
        }
    }

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
