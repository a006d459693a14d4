//! Importing a definitions file in RabbitMQ's format (`POST /api/definitions`, per vhost, and
//! `--load-definitions` at start), as RabbitMQ's `rabbit_definitions:apply_defs` does, in its
//! order: users (created or replaced), vhosts, permissions, then queues, exchanges and bindings.
//! As in RabbitMQ, a queue or exchange that exists already is left as it is (no equivalence
//! check), and `amq.*` queues and exchanges and the default exchange are skipped.
//!
//! Unlike RabbitMQ, which applies entries until one fails and leaves what came before, every entry
//! is checked first (vhosts and users named exist or come with the file, regular expressions
//! compile, hashes decode, arguments and types are ones a declare accepts, bindings' ends exist
//! or come with the file): a file with any bad entry changes nothing. What can still fail while
//! applying is the disk, or a client declaring the same name differently meanwhile.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use thiserror::Error;
use warren_amqp::types::FieldTable;
use warren_amqp::AmqpError;
use warren_storage::{PermissionRecord, UserRecord};

use super::format::{Definitions, UserDef};
use super::json::{table_from_json, TableError};
use super::sections::{self, Sections};
use crate::auth::{hash_password, SHA256, SHA512};
use crate::broker::Broker;
use crate::exchange::{check_binding_arguments, ExchangeKind};
use crate::vhost::{
    check_new_exchange, check_new_queue, DeclareExchange, DeclareQueue, PREDECLARED,
};

/// What an import covers: a whole file, or one vhost's queues, exchanges and bindings (the
/// `vhost` fields of its entries are ignored then, as RabbitMQ ignores them).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    All,
    Vhost(&'a str),
}

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("the definitions are not a JSON object: {0}")]
    NotJson(String),
    #[error("the definitions do not have RabbitMQ's format: {0}")]
    Shape(String),
    #[error("vhost '{0}' does not exist and the definitions do not create it")]
    NoSuchVhost(String),
    #[error("user '{0}' does not exist and the definitions do not create it")]
    NoSuchUser(String),
    #[error("user '{user}': the password hash is not base64")]
    NotBase64 { user: String, hash: String },
    #[error("user '{user}': unknown hashing algorithm '{algorithm}'")]
    UnknownHashing { user: String, algorithm: String },
    #[error(
        "permissions of user '{user}' in vhost '{vhost}': invalid regular expression: {reason}"
    )]
    InvalidRegexp {
        user: String,
        vhost: String,
        reason: String,
    },
    #[error("{kind} '{name}' in vhost '{vhost}': invalid arguments: {reason}")]
    Arguments {
        kind: &'static str,
        name: String,
        vhost: String,
        reason: TableError,
    },
    /// A declare or bind the broker would refuse (the AMQP error it would close a channel with).
    #[error("{}", .0.reply_text())]
    Amqp(AmqpError),
    /// An entry its own check refused (a policy, a limit), with RabbitMQ's text.
    #[error("{0}")]
    Invalid(String),
    #[error("{section}: {entries} entries, which this version of Warren cannot import yet")]
    NotSupported {
        section: &'static str,
        entries: usize,
    },
    #[error("the definitions could not be stored: {0}")]
    Storage(String),
}

impl ImportError {
    /// The `reason` of the 400 answer, shaped as RabbitMQ's where it has one.
    pub fn reason(&self) -> Value {
        match self {
            ImportError::NotJson(_) => json!("failed_to_parse_json"),
            ImportError::NoSuchVhost(v) => json!(["no_such_vhost", v]),
            ImportError::NoSuchUser(u) => json!(["no_such_user", u]),
            ImportError::NotBase64 { hash, .. } => json!(["not_base64", hash]),
            ImportError::Amqp(e) => json!([
                "amqp_error",
                e.code.name().to_ascii_lowercase(),
                e.text,
                "none"
            ]),
            other => json!(other.to_string()),
        }
    }

    /// Whether the broker, not the file, is at fault (a failed write).
    pub fn is_internal(&self) -> bool {
        matches!(self, ImportError::Storage(_))
    }
}

/// A definitions file read from JSON, or why it cannot be one.
pub fn parse(bytes: &[u8]) -> Result<Definitions, ImportError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ImportError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ImportError::NotJson("not an object".into()));
    }
    serde_json::from_value(value).map_err(|e| ImportError::Shape(e.to_string()))
}

/// Checks every entry of `defs`, then applies them; nothing is applied when a check fails.
pub async fn import(
    broker: &Broker,
    defs: &Definitions,
    scope: Scope<'_>,
) -> Result<(), ImportError> {
    let plan = Plan::check(broker, defs, scope)?;
    plan.apply(broker).await
}

struct NewQueue {
    vhost: String,
    name: String,
    durable: bool,
    auto_delete: bool,
    arguments: FieldTable,
}

struct NewExchange {
    vhost: String,
    name: String,
    kind: String,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: FieldTable,
}

struct NewBinding {
    vhost: String,
    source: String,
    destination: String,
    to_queue: bool,
    routing_key: String,
    arguments: FieldTable,
}

/// Every entry of an import, checked, in the form it is applied.
#[derive(Default)]
struct Plan {
    users: Vec<UserRecord>,
    /// Name, and the description and tags when the file gives them.
    vhosts: Vec<(String, Option<String>, Option<Vec<String>>)>,
    permissions: Vec<PermissionRecord>,
    queues: Vec<NewQueue>,
    exchanges: Vec<NewExchange>,
    bindings: Vec<NewBinding>,
    /// Policies, topic permissions, vhost limits.
    sections: Sections,
}

/// The vhost an entry belongs to.
fn entry_vhost(
    scope: Scope<'_>,
    field: &Option<String>,
    what: &str,
) -> Result<String, ImportError> {
    match (scope, field) {
        (Scope::Vhost(v), _) => Ok(v.to_owned()),
        (Scope::All, Some(v)) => Ok(v.clone()),
        (Scope::All, None) => Err(ImportError::Shape(format!("{what} has no vhost"))),
    }
}

fn user_record(u: &UserDef) -> Result<UserRecord, ImportError> {
    if u.name.is_empty() {
        return Err(ImportError::Shape("a user has an empty name".into()));
    }
    let algorithm = u.hashing_algorithm.as_deref().unwrap_or(SHA256);
    if algorithm != SHA256 && algorithm != SHA512 {
        return Err(ImportError::UnknownHashing {
            user: u.name.clone(),
            algorithm: algorithm.to_owned(),
        });
    }
    let password_hash = match (&u.password, &u.password_hash) {
        (Some(password), _) => hash_password(password, algorithm),
        (None, Some(hash)) => {
            use base64::Engine as _;
            if base64::engine::general_purpose::STANDARD
                .decode(hash)
                .is_err()
            {
                return Err(ImportError::NotBase64 {
                    user: u.name.clone(),
                    hash: hash.clone(),
                });
            }
            hash.clone()
        }
        (None, None) => String::new(),
    };
    // A hash of the wrong length for its algorithm would never match: refused rather than kept
    // as a user who cannot log in.
    if !password_hash.is_empty() && !hash_has_shape(&password_hash, algorithm) {
        return Err(ImportError::NotBase64 {
            user: u.name.clone(),
            hash: password_hash,
        });
    }
    Ok(UserRecord {
        name: u.name.clone(),
        password_hash,
        hashing_algorithm: algorithm.to_owned(),
        tags: u.tags.0.clone(),
        limits: sections::user_limits(&u.name, u.limits.as_ref())?,
    })
}

/// Whether a hash decodes to a 4-octet salt and a digest of the algorithm's length.
fn hash_has_shape(hash: &str, algorithm: &str) -> bool {
    use base64::Engine as _;
    let digest = if algorithm == SHA512 { 64 } else { 32 };
    base64::engine::general_purpose::STANDARD
        .decode(hash)
        .is_ok_and(|raw| raw.len() == 4 + digest)
}

/// The exchanges and queues there will be once an import is applied, by (vhost, name): what a
/// binding's ends are checked against.
#[derive(Default)]
struct Known {
    exchanges: HashMap<(String, String), ExchangeKind>,
    queues: HashSet<(String, String)>,
    loaded: HashSet<String>,
}

impl Known {
    /// Adds what a vhost has now (RabbitMQ's predeclared exchanges, for one the import creates).
    fn load(&mut self, broker: &Broker, vhost: &str) {
        if !self.loaded.insert(vhost.to_owned()) {
            return;
        }
        match broker.vhost(vhost) {
            Some(v) => {
                for e in v.exchanges_info() {
                    if let Some(kind) = ExchangeKind::parse(e.kind) {
                        self.exchanges.insert((vhost.to_owned(), e.name), kind);
                    }
                }
                for q in v.queues() {
                    self.queues.insert((vhost.to_owned(), q.name.to_string()));
                }
            }
            None => {
                for (name, kind, _) in PREDECLARED {
                    self.exchanges
                        .insert((vhost.to_owned(), (*name).to_owned()), *kind);
                }
            }
        }
    }
}

impl Plan {
    fn check(broker: &Broker, defs: &Definitions, scope: Scope<'_>) -> Result<Plan, ImportError> {
        let mut plan = Plan::default();
        match scope {
            Scope::All => plan.check_access(broker, defs)?,
            Scope::Vhost(v) => {
                if broker.vhost(v).is_none() {
                    return Err(ImportError::NoSuchVhost(v.to_owned()));
                }
            }
        }
        plan.sections = Sections::check(
            defs,
            scope,
            |v| plan.has_vhost(broker, v),
            |u| broker.users.user(u).is_some() || plan.users.iter().any(|n| n.name == u),
        )?;
        plan.check_topology(broker, defs, scope)?;
        Ok(plan)
    }

    /// Users, vhosts and permissions.
    fn check_access(&mut self, broker: &Broker, defs: &Definitions) -> Result<(), ImportError> {
        for u in &defs.users {
            self.users.push(user_record(u)?);
        }
        for v in &defs.vhosts {
            if v.name.is_empty() {
                return Err(ImportError::Shape("a vhost has an empty name".into()));
            }
            let (description, tags) = v.metadata();
            self.vhosts.push((v.name.clone(), description, tags));
        }
        for p in &defs.permissions {
            if !self.has_vhost(broker, &p.vhost) {
                return Err(ImportError::NoSuchVhost(p.vhost.clone()));
            }
            let known_user =
                broker.users.user(&p.user).is_some() || self.users.iter().any(|u| u.name == p.user);
            if !known_user {
                return Err(ImportError::NoSuchUser(p.user.clone()));
            }
            let record = PermissionRecord {
                user: p.user.clone(),
                vhost: p.vhost.clone(),
                configure: p.configure.clone(),
                write: p.write.clone(),
                read: p.read.clone(),
            };
            crate::auth::validate_permission(&record).map_err(|reason| {
                ImportError::InvalidRegexp {
                    user: p.user.clone(),
                    vhost: p.vhost.clone(),
                    reason,
                }
            })?;
            self.permissions.push(record);
        }
        Ok(())
    }

    fn has_vhost(&self, broker: &Broker, name: &str) -> bool {
        broker.vhost(name).is_some() || self.vhosts.iter().any(|(v, _, _)| v == name)
    }

    /// Queues, exchanges and bindings.
    fn check_topology(
        &mut self,
        broker: &Broker,
        defs: &Definitions,
        scope: Scope<'_>,
    ) -> Result<(), ImportError> {
        let arguments = |kind, name: &str, vhost: &str, v: &Value| {
            table_from_json(v).map_err(|reason| ImportError::Arguments {
                kind,
                name: name.to_owned(),
                vhost: vhost.to_owned(),
                reason,
            })
        };
        let mut known = Known::default();
        let in_vhost = |vhost: &str, plan: &Plan, known: &mut Known| {
            if !plan.has_vhost(broker, vhost) {
                return Err(ImportError::NoSuchVhost(vhost.to_owned()));
            }
            known.load(broker, vhost);
            Ok(())
        };
        for q in &defs.queues {
            let vhost = entry_vhost(scope, &q.vhost, &format!("queue '{}'", q.name))?;
            in_vhost(&vhost, self, &mut known)?;
            // As RabbitMQ: `amq.*` queues are skipped, existing ones kept as they are.
            let key = (vhost.clone(), q.name.clone());
            if q.name.starts_with("amq.") || known.queues.contains(&key) {
                continue;
            }
            let args = arguments("queue", &q.name, &vhost, &q.arguments)?;
            check_new_queue(
                &vhost,
                &queue_declare(&q.name, q.durable, q.auto_delete, &args),
            )
            .map_err(ImportError::Amqp)?;
            known.queues.insert(key);
            self.queues.push(NewQueue {
                vhost,
                name: q.name.clone(),
                durable: q.durable,
                auto_delete: q.auto_delete,
                arguments: args,
            });
        }
        for x in &defs.exchanges {
            let vhost = entry_vhost(scope, &x.vhost, &format!("exchange '{}'", x.name))?;
            in_vhost(&vhost, self, &mut known)?;
            let key = (vhost.clone(), x.name.clone());
            if x.name.is_empty() || x.name.starts_with("amq.") || known.exchanges.contains_key(&key)
            {
                continue;
            }
            let args = arguments("exchange", &x.name, &vhost, &x.arguments)?;
            let kind = check_new_exchange(
                &vhost,
                &exchange_declare(
                    &x.name,
                    &x.kind,
                    x.durable,
                    x.auto_delete,
                    x.internal,
                    &args,
                ),
            )
            .map_err(ImportError::Amqp)?;
            known.exchanges.insert(key, kind);
            self.exchanges.push(NewExchange {
                vhost,
                name: x.name.clone(),
                kind: x.kind.clone(),
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: args,
            });
        }
        for b in &defs.bindings {
            let vhost = entry_vhost(scope, &b.vhost, "a binding")?;
            in_vhost(&vhost, self, &mut known)?;
            let to_queue = match b.destination_type.as_str() {
                "queue" => true,
                "exchange" => false,
                other => {
                    return Err(ImportError::Shape(format!(
                        "binding destination_type '{other}' (queue or exchange)"
                    )))
                }
            };
            let args = arguments("binding", &b.source, &vhost, &b.arguments)?;
            let no_exchange = |name: &str| {
                ImportError::Amqp(AmqpError::not_found(format!(
                    "no exchange '{name}' in vhost '{vhost}'"
                )))
            };
            if b.source.is_empty() || (!to_queue && b.destination.is_empty()) {
                return Err(ImportError::Amqp(AmqpError::access_refused(
                    "operation not permitted on the default exchange",
                )));
            }
            let kind = known
                .exchanges
                .get(&(vhost.clone(), b.source.clone()))
                .copied()
                .ok_or_else(|| no_exchange(&b.source))?;
            let destination_exists = if to_queue {
                known
                    .queues
                    .contains(&(vhost.clone(), b.destination.clone()))
            } else {
                known
                    .exchanges
                    .contains_key(&(vhost.clone(), b.destination.clone()))
            };
            if !destination_exists {
                return Err(if to_queue {
                    ImportError::Amqp(AmqpError::not_found(format!(
                        "no queue '{}' in vhost '{vhost}'",
                        b.destination
                    )))
                } else {
                    no_exchange(&b.destination)
                });
            }
            check_binding_arguments(kind, &args).map_err(ImportError::Amqp)?;
            if b.routing_key.len() > 255 {
                return Err(ImportError::Shape(format!(
                    "binding routing key longer than 255 octets in vhost '{vhost}'"
                )));
            }
            self.bindings.push(NewBinding {
                vhost,
                source: b.source.clone(),
                destination: b.destination.clone(),
                to_queue,
                routing_key: b.routing_key.clone(),
                arguments: args,
            });
        }
        Ok(())
    }

    async fn apply(self, broker: &Broker) -> Result<(), ImportError> {
        let stored = |e: &dyn std::fmt::Display| ImportError::Storage(e.to_string());
        for user in self.users {
            broker.put_user(user).await.map_err(|e| stored(&e))?;
        }
        for (name, description, tags) in self.vhosts {
            let existing = broker.vhost(&name).map(|v| v.metadata());
            let (old_description, old_tags) = existing.clone().unwrap_or_default();
            let description = description.unwrap_or(old_description);
            let tags = tags.unwrap_or(old_tags);
            if existing != Some((description.clone(), tags.clone())) {
                broker
                    .put_vhost(&name, description, tags, None)
                    .await
                    .map_err(|e| stored(&e))?;
            }
        }
        for permission in self.permissions {
            match broker.set_permission(permission).await {
                Ok(Ok(_)) => {}
                Ok(Err(reason)) => return Err(ImportError::Storage(reason)),
                Err(e) => return Err(stored(&e)),
            }
        }
        self.sections.apply(broker).await?;
        let vhost = |name: &str| {
            broker
                .vhost(name)
                .ok_or_else(|| ImportError::NoSuchVhost(name.to_owned()))
        };
        for q in self.queues {
            vhost(&q.vhost)?
                .declare_queue(DeclareQueue {
                    connection: broker.next_id(),
                    ..queue_declare(&q.name, q.durable, q.auto_delete, &q.arguments)
                })
                .await
                .map_err(ImportError::Amqp)?;
        }
        for x in self.exchanges {
            vhost(&x.vhost)?
                .declare_exchange(exchange_declare(
                    &x.name,
                    &x.kind,
                    x.durable,
                    x.auto_delete,
                    x.internal,
                    &x.arguments,
                ))
                .await
                .map_err(ImportError::Amqp)?;
        }
        for b in self.bindings {
            let v = vhost(&b.vhost)?;
            let bound = if b.to_queue {
                v.bind_queue(
                    &b.destination,
                    broker.next_id(),
                    &b.source,
                    &b.routing_key,
                    &b.arguments,
                )
                .await
            } else {
                v.bind_exchange(&b.destination, &b.source, &b.routing_key, &b.arguments)
                    .await
            };
            bound.map_err(ImportError::Amqp)?;
        }
        Ok(())
    }
}

fn queue_declare<'a>(
    name: &'a str,
    durable: bool,
    auto_delete: bool,
    arguments: &'a FieldTable,
) -> DeclareQueue<'a> {
    DeclareQueue {
        name,
        passive: false,
        durable,
        exclusive: false,
        auto_delete,
        arguments,
        connection: 0,
        server_named: false,
    }
}

fn exchange_declare<'a>(
    name: &'a str,
    kind: &'a str,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: &'a FieldTable,
) -> DeclareExchange<'a> {
    DeclareExchange {
        name,
        kind,
        passive: false,
        durable,
        auto_delete,
        internal,
        arguments,
    }
}
