//! Users, permissions and SASL: PLAIN, AMQPLAIN and RabbitMQ's challenge-response demo
//! mechanism, with RabbitMQ's rule that `guest` may only log in from loopback. Passwords are kept
//! as RabbitMQ keeps them (a salted SHA-256 or SHA-512 hash), so users exported from RabbitMQ log
//! in with their passwords; permissions are RabbitMQ's configure / write / read regular
//! expressions per user and vhost.
//!
//! Layout:
//! - `mod.rs`: the users (`Users`, its state and lock, user records) and the default user.
//! - `password.rs`: RabbitMQ's salted password hashes.
//! - `permissions.rs`: configure / write / read permissions and their checks.
//! - `topic.rs`: topic permissions (routing-key patterns per topic exchange) and their checks.
//! - `sasl.rs`: the SASL mechanisms and the login checks (with the loopback rule).

mod password;
mod permissions;
mod sasl;
mod topic;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use warren_storage::{PermissionRecord, TopicPermissionRecord, UserRecord};

pub use password::{hash_password, password_matches, SHA256, SHA512};
use permissions::Permission;
pub use permissions::{validate_permission, Access};
pub use sasl::{AuthError, Mechanism, StartOutcome, CR_DEMO_CHALLENGE};
pub use topic::validate_topic_permission;

pub struct User {
    pub record: UserRecord,
}

#[derive(Default)]
struct State {
    users: HashMap<String, User>,
    /// (vhost, user) → permissions.
    permissions: BTreeMap<(String, String), Permission>,
    /// (vhost, user) → topic permissions by exchange.
    topic_permissions: BTreeMap<(String, String), topic::TopicPermissions>,
}

/// The users and their permissions. Changes apply to connections at once (permission checks
/// read the current state); [`Users::generation`] tells caches when to forget.
pub struct Users {
    state: RwLock<State>,
    /// Users held to loopback (`--loopback-users`), whatever their record says.
    loopback_users: Vec<String>,
    generation: AtomicU64,
}

impl Default for Users {
    fn default() -> Self {
        Users::with_default("guest", "guest", &["guest".to_owned()])
    }
}

impl Users {
    /// One user, as RabbitMQ creates at first start from `default_user` / `default_pass`, held to
    /// loopback if `loopback_users` names it (RabbitMQ's default is `guest`), with every
    /// permission on `/`.
    pub fn with_default(name: &str, password: &str, loopback_users: &[String]) -> Self {
        let (user, permission) = default_records(name, password);
        Users::from_records(vec![user], vec![permission], Vec::new(), loopback_users)
    }

    /// The users and permissions the store held (a permission whose regex no longer compiles is
    /// skipped with a warning).
    pub fn from_records(
        users: Vec<UserRecord>,
        permissions: Vec<PermissionRecord>,
        topic_permissions: Vec<TopicPermissionRecord>,
        loopback_users: &[String],
    ) -> Self {
        let mut state = State::default();
        for record in users {
            state.users.insert(record.name.clone(), User { record });
        }
        for record in permissions {
            let key = (record.vhost.clone(), record.user.clone());
            match Permission::new(record) {
                Ok(p) => {
                    state.permissions.insert(key, p);
                }
                Err(e) => {
                    tracing::warn!(vhost = %key.0, user = %key.1, "stored permission skipped: {e}")
                }
            }
        }
        Users::load_topic_permissions(&mut state, topic_permissions);
        Users {
            state: RwLock::new(state),
            loopback_users: loopback_users.to_vec(),
            generation: AtomicU64::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes whenever a user or permission does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Creates or replaces a user; true when it was created.
    pub fn put_user(&self, record: UserRecord) -> bool {
        self.write()
            .users
            .insert(record.name.clone(), User { record })
            .is_none()
    }

    /// Deletes a user and its permissions; false when there was none.
    pub fn delete_user(&self, name: &str) -> bool {
        let mut state = self.write();
        state.permissions.retain(|(_, u), _| u != name);
        state.topic_permissions.retain(|(_, u), _| u != name);
        state.users.remove(name).is_some()
    }

    pub fn user(&self, name: &str) -> Option<UserRecord> {
        self.read().users.get(name).map(|u| u.record.clone())
    }

    /// Every user, sorted by name.
    pub fn users(&self) -> Vec<UserRecord> {
        let mut all: Vec<UserRecord> = self
            .read()
            .users
            .values()
            .map(|u| u.record.clone())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// A user's limit (`max-connections`, `max-channels`), when it has one: a negative value
    /// is none, as in RabbitMQ.
    pub fn limit(&self, name: &str, limit: &str) -> Option<u64> {
        let state = self.read();
        let value = *state.users.get(name)?.record.limits.get(limit)?;
        u64::try_from(value).ok()
    }

    /// A user's tags.
    pub fn tags(&self, name: &str) -> Vec<String> {
        self.read()
            .users
            .get(name)
            .map(|u| u.record.tags.clone())
            .unwrap_or_default()
    }
}

/// The user and permission RabbitMQ creates on a fresh node from `default_user` and
/// `default_pass`: an administrator with every permission on `/`.
pub fn default_records(name: &str, password: &str) -> (UserRecord, PermissionRecord) {
    (
        UserRecord {
            name: name.to_owned(),
            password_hash: hash_password(password, SHA256),
            hashing_algorithm: SHA256.to_owned(),
            tags: vec!["administrator".to_owned()],
            ..UserRecord::default()
        },
        PermissionRecord {
            user: name.to_owned(),
            vhost: "/".to_owned(),
            configure: ".*".to_owned(),
            write: ".*".to_owned(),
            read: ".*".to_owned(),
        },
    )
}
