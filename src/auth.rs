//! Users, permissions and SASL: PLAIN, AMQPLAIN and RabbitMQ's challenge-response demo
//! mechanism, with RabbitMQ's rule that `guest` may only log in from loopback. Passwords are kept
//! as RabbitMQ keeps them (a salted SHA-256 or SHA-512 hash), so users exported from RabbitMQ log
//! in with their passwords; permissions are RabbitMQ's configure / write / read regular
//! expressions per user and vhost.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use base64::Engine as _;
use sha2::Digest as _;
use warren_amqp::types::{AMQPValue, FieldTable};
use warren_storage::{PermissionRecord, UserRecord};

/// RabbitMQ's hashing modules, by the names its definitions use.
pub const SHA256: &str = "rabbit_password_hashing_sha256";
pub const SHA512: &str = "rabbit_password_hashing_sha512";

/// A password hash as RabbitMQ's `rabbit_password:hash/2` computes it: base64 of a 4-byte random
/// salt followed by the digest of (salt ++ UTF-8 password).
pub fn hash_password(password: &str, algorithm: &str) -> String {
    let salt: [u8; 4] = rand::random();
    let mut out = salt.to_vec();
    out.extend(digest(algorithm, &salt, password).unwrap_or_default());
    base64::engine::general_purpose::STANDARD.encode(out)
}

fn digest(algorithm: &str, salt: &[u8], password: &str) -> Option<Vec<u8>> {
    match algorithm {
        SHA256 => Some(
            sha2::Sha256::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
        ),
        SHA512 => Some(
            sha2::Sha512::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
        ),
        _ => None,
    }
}

/// Whether `password` matches a stored hash. A user without a hash (or with one in an algorithm
/// Warren does not know) cannot log in with a password.
pub fn password_matches(hash: &str, algorithm: &str, password: &str) -> bool {
    let Ok(stored) = base64::engine::general_purpose::STANDARD.decode(hash) else {
        return false;
    };
    if stored.len() <= 4 {
        return false;
    }
    let (salt, expected) = stored.split_at(4);
    let Some(actual) = digest(algorithm, salt, password) else {
        return false;
    };
    // Compared in time independent of where they differ.
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What a permission check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Configure,
    Write,
    Read,
}

/// One user's permissions in one vhost, compiled.
struct Permission {
    record: PermissionRecord,
    configure: regex::Regex,
    write: regex::Regex,
    read: regex::Regex,
}

/// A permission regex as RabbitMQ matches it: unanchored, and an empty one matches nothing.
fn compile(pattern: &str) -> Result<regex::Regex, String> {
    let pattern = if pattern.is_empty() { "^$" } else { pattern };
    regex::Regex::new(pattern).map_err(|e| e.to_string())
}

/// Refuses a permission whose regular expressions do not compile.
pub fn validate_permission(record: &PermissionRecord) -> Result<(), String> {
    Permission::new(record.clone()).map(|_| ())
}

impl Permission {
    fn new(record: PermissionRecord) -> Result<Self, String> {
        Ok(Permission {
            configure: compile(&record.configure)?,
            write: compile(&record.write)?,
            read: compile(&record.read)?,
            record,
        })
    }
}

pub struct User {
    pub record: UserRecord,
}

#[derive(Default)]
struct State {
    users: HashMap<String, User>,
    /// (vhost, user) → permissions.
    permissions: BTreeMap<(String, String), Permission>,
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

/// The SASL mechanisms a listener can offer (RabbitMQ's `auth_mechanisms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "AMQPLAIN")]
    Amqplain,
    /// `RABBIT-CR-DEMO`: the login in start-ok, then one challenge ("Please tell me your
    /// password") answered with "My password is PASSWORD". Off by default, as in RabbitMQ.
    #[value(name = "RABBIT-CR-DEMO")]
    RabbitCrDemo,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Amqplain => "AMQPLAIN",
            Mechanism::RabbitCrDemo => "RABBIT-CR-DEMO",
        }
    }

    /// The mechanism a client named in start-ok, if it is one of `offered`.
    pub fn chosen(name: &str, offered: &[Mechanism]) -> Result<Mechanism, AuthError> {
        offered
            .iter()
            .copied()
            .find(|m| m.name() == name)
            .ok_or_else(|| AuthError::UnsupportedMechanism(name.to_owned()))
    }
}

/// What start-ok leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum StartOutcome {
    LoggedIn(String),
    /// Send this challenge in connection.secure; the answer goes to [`Users::answer_challenge`].
    Challenge {
        login: String,
        challenge: &'static str,
    },
}

pub const CR_DEMO_CHALLENGE: &str = "Please tell me your password";
const CR_DEMO_ANSWER_PREFIX: &[u8] = b"My password is ";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unsupported authentication mechanism '{0}'")]
    UnsupportedMechanism(String),
    #[error(
        "Login was refused using authentication mechanism {0}. For details see the broker logfile."
    )]
    Refused(String),
    #[error("User '{0}' can only connect via localhost")]
    LoopbackOnly(String),
    #[error("malformed {0} response")]
    Malformed(String),
}

impl Users {
    /// One user, as RabbitMQ creates at first start from `default_user` / `default_pass`, held to
    /// loopback if `loopback_users` names it (RabbitMQ's default is `guest`), with every
    /// permission on `/`.
    pub fn with_default(name: &str, password: &str, loopback_users: &[String]) -> Self {
        let (user, permission) = default_records(name, password);
        Users::from_records(vec![user], vec![permission], loopback_users)
    }

    /// The users and permissions the store held (a permission whose regex no longer compiles is
    /// skipped with a warning).
    pub fn from_records(
        users: Vec<UserRecord>,
        permissions: Vec<PermissionRecord>,
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

    /// Sets a user's permissions in a vhost; true when there were none before. An invalid
    /// regular expression is refused, and nothing changes.
    pub fn set_permission(&self, record: PermissionRecord) -> Result<bool, String> {
        let key = (record.vhost.clone(), record.user.clone());
        let permission = Permission::new(record)?;
        Ok(self.write().permissions.insert(key, permission).is_none())
    }

    /// Removes a user's permissions in a vhost; false when it had none.
    pub fn delete_permission(&self, vhost: &str, user: &str) -> bool {
        self.write()
            .permissions
            .remove(&(vhost.to_owned(), user.to_owned()))
            .is_some()
    }

    /// Forgets every permission in a vhost (it is gone).
    pub fn forget_vhost(&self, vhost: &str) {
        self.write().permissions.retain(|(v, _), _| v != vhost);
    }

    pub fn permission(&self, vhost: &str, user: &str) -> Option<PermissionRecord> {
        self.read()
            .permissions
            .get(&(vhost.to_owned(), user.to_owned()))
            .map(|p| p.record.clone())
    }

    /// Every permission, by vhost and then user.
    pub fn permissions(&self) -> Vec<PermissionRecord> {
        self.read()
            .permissions
            .values()
            .map(|p| p.record.clone())
            .collect()
    }

    /// Whether the user may open connections to the vhost (it has permissions there).
    pub fn may_use_vhost(&self, user: &str, vhost: &str) -> bool {
        self.read()
            .permissions
            .contains_key(&(vhost.to_owned(), user.to_owned()))
    }

    /// Whether `user` may `access` the resource `name` in `vhost`, as RabbitMQ's internal
    /// backend decides: the matching regex of its permissions there, unanchored.
    pub fn permitted(&self, user: &str, vhost: &str, access: Access, name: &str) -> bool {
        let state = self.read();
        let Some(p) = state.permissions.get(&(vhost.to_owned(), user.to_owned())) else {
            return false;
        };
        match access {
            Access::Configure => p.configure.is_match(name),
            Access::Write => p.write.is_match(name),
            Access::Read => p.read.is_match(name),
        }
    }

    /// Checks a `connection.start-ok` response under one of the `offered` mechanisms.
    pub fn start(
        &self,
        mechanism: &str,
        offered: &[Mechanism],
        response: &[u8],
        peer: IpAddr,
    ) -> Result<StartOutcome, AuthError> {
        let chosen = Mechanism::chosen(mechanism, offered)?;
        let (login, password) = match chosen {
            Mechanism::Plain => match parse_plain(response) {
                // RabbitMQ's PLAIN takes no authorisation identity (acting as another user): one
                // is refused as a wrong password is, rather than ignored.
                Some((authzid, _, _)) if !authzid.is_empty() => {
                    return Err(AuthError::Refused(mechanism.to_owned()))
                }
                parsed => parsed.map(|(_, login, password)| (login, password)),
            },
            Mechanism::Amqplain => parse_amqplain(response),
            Mechanism::RabbitCrDemo => {
                let login = String::from_utf8(response.to_vec())
                    .map_err(|_| AuthError::Malformed(mechanism.to_owned()))?;
                return Ok(StartOutcome::Challenge {
                    login,
                    challenge: CR_DEMO_CHALLENGE,
                });
            }
        }
        .ok_or_else(|| AuthError::Malformed(mechanism.to_owned()))?;
        self.check(mechanism, &login, &password, peer)
            .map(StartOutcome::LoggedIn)
    }

    /// Checks the answer (`connection.secure-ok`) to a RABBIT-CR-DEMO challenge.
    pub fn answer_challenge(
        &self,
        login: &str,
        response: &[u8],
        peer: IpAddr,
    ) -> Result<String, AuthError> {
        let mechanism = Mechanism::RabbitCrDemo.name();
        let password = response
            .strip_prefix(CR_DEMO_ANSWER_PREFIX)
            .and_then(|p| String::from_utf8(p.to_vec()).ok())
            .ok_or_else(|| AuthError::Malformed(mechanism.to_owned()))?;
        self.check(mechanism, login, &password, peer)
    }

    /// Checks a login and password given outside AMQP (HTTP basic auth); returns the user name.
    pub fn check_password(
        &self,
        login: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<String, AuthError> {
        self.check("PLAIN", login, password, peer)
    }

    /// A user's tags.
    pub fn tags(&self, name: &str) -> Vec<String> {
        self.read()
            .users
            .get(name)
            .map(|u| u.record.tags.clone())
            .unwrap_or_default()
    }

    /// Checks PLAIN or AMQPLAIN credentials; returns the user name.
    #[cfg(test)]
    fn authenticate(
        &self,
        mechanism: &str,
        response: &[u8],
        peer: IpAddr,
    ) -> Result<String, AuthError> {
        match self.start(
            mechanism,
            &[Mechanism::Plain, Mechanism::Amqplain],
            response,
            peer,
        )? {
            StartOutcome::LoggedIn(user) => Ok(user),
            StartOutcome::Challenge { .. } => Err(AuthError::Malformed(mechanism.to_owned())),
        }
    }

    fn check(
        &self,
        mechanism: &str,
        login: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<String, AuthError> {
        let state = self.read();
        let user = state
            .users
            .get(login)
            .filter(|u| {
                password_matches(
                    &u.record.password_hash,
                    &u.record.hashing_algorithm,
                    password,
                )
            })
            .ok_or_else(|| AuthError::Refused(mechanism.to_owned()))?;
        let loopback_only = self.loopback_users.iter().any(|u| u == login);
        if loopback_only && !peer.is_loopback() && !is_mapped_loopback(peer) {
            return Err(AuthError::LoopbackOnly(login.to_owned()));
        }
        Ok(user.record.name.clone())
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

fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}

/// `authzid \0 authcid \0 password` (RFC 4616): the three fields, authzid as sent.
fn parse_plain(response: &[u8]) -> Option<(&[u8], String, String)> {
    let mut parts = response.split(|b| *b == 0);
    let authzid = parts.next()?;
    let login = parts.next()?;
    let password = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((
        authzid,
        String::from_utf8(login.to_vec()).ok()?,
        String::from_utf8(password.to_vec()).ok()?,
    ))
}

/// A field table without its length prefix, holding `LOGIN` and `PASSWORD`.
fn parse_amqplain(response: &[u8]) -> Option<(String, String)> {
    let mut framed = (response.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(response);
    let (_, table): (_, FieldTable) =
        warren_amqp::types::parsing::parse_field_table(&framed[..]).ok()?;
    let text = |key: &str| match table.inner().get(key)? {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_loopback_rule() {
        let users = Users::default();
        let lo: IpAddr = [127, 0, 0, 1].into();
        let remote: IpAddr = [10, 1, 2, 3].into();
        assert_eq!(
            users.authenticate("PLAIN", b"\0guest\0guest", lo),
            Ok("guest".into())
        );
        assert!(matches!(
            users.authenticate("PLAIN", b"\0guest\0nope", lo),
            Err(AuthError::Refused(_))
        ));
        assert!(matches!(
            users.authenticate("PLAIN", b"\0guest\0guest", remote),
            Err(AuthError::LoopbackOnly(_))
        ));
        // An authorisation identity, even the user's own name, is refused like a wrong password.
        for response in [&b"guest\0guest\0guest"[..], b"admin\0guest\0guest"] {
            assert!(matches!(
                users.authenticate("PLAIN", response, lo),
                Err(AuthError::Refused(_))
            ));
        }
        assert!(matches!(
            users.authenticate("EXTERNAL", b"", lo),
            Err(AuthError::UnsupportedMechanism(_))
        ));
    }

    #[test]
    fn rabbit_cr_demo_challenges_for_the_password_and_only_when_offered() {
        let users = Users::with_default("user", "bitnami", &[]);
        let lo: IpAddr = [127, 0, 0, 1].into();
        let all = [Mechanism::Plain, Mechanism::RabbitCrDemo];
        assert_eq!(
            users.start("RABBIT-CR-DEMO", &all, b"user", lo),
            Ok(StartOutcome::Challenge {
                login: "user".into(),
                challenge: CR_DEMO_CHALLENGE
            })
        );
        assert_eq!(
            users.answer_challenge("user", b"My password is bitnami", lo),
            Ok("user".into())
        );
        assert!(matches!(
            users.answer_challenge("user", b"My password is guest", lo),
            Err(AuthError::Refused(_))
        ));
        assert!(matches!(
            users.answer_challenge("user", b"bitnami", lo),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            users.start("RABBIT-CR-DEMO", &[Mechanism::Plain], b"user", lo),
            Err(AuthError::UnsupportedMechanism(_))
        ));
        assert!(matches!(
            users.start("AMQPLAIN", &[Mechanism::Plain], b"", lo),
            Err(AuthError::UnsupportedMechanism(_))
        ));
    }

    #[test]
    fn a_default_user_other_than_guest_replaces_guest_and_may_connect_remotely() {
        let users = Users::with_default("user", "bitnami", &["guest".to_owned()]);
        let remote: IpAddr = [10, 1, 2, 3].into();
        assert_eq!(
            users.authenticate("PLAIN", b"\0user\0bitnami", remote),
            Ok("user".into())
        );
        assert!(matches!(
            users.authenticate("PLAIN", b"\0guest\0guest", [127, 0, 0, 1].into()),
            Err(AuthError::Refused(_))
        ));
    }

    #[test]
    fn hashes_made_by_rabbitmq_check_and_new_ones_are_in_its_format() {
        // `rabbitmqctl add_user u p` on RabbitMQ 3.10.8, from `export_definitions`.
        let theirs = "zC2kn+lAXYtfFjnKorF4QlvLiuJnlTg+K32MFmD/oVmuzGkW";
        assert!(password_matches(theirs, SHA256, "p"));
        assert!(!password_matches(theirs, SHA256, "q"));
        assert!(!password_matches(theirs, SHA512, "p"));
        assert!(
            !password_matches("", SHA256, ""),
            "no hash: no password login"
        );
        assert!(!password_matches(
            theirs,
            "rabbit_password_hashing_md4",
            "p"
        ));
        for algorithm in [SHA256, SHA512] {
            let ours = hash_password("sécret", algorithm);
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&ours)
                .unwrap();
            assert_eq!(raw.len(), 4 + if algorithm == SHA256 { 32 } else { 64 });
            assert!(password_matches(&ours, algorithm, "sécret"));
            assert!(!password_matches(&ours, algorithm, "secret"));
        }
        assert_ne!(
            hash_password("p", SHA256),
            hash_password("p", SHA256),
            "salted"
        );
    }

    #[test]
    fn passwordless_users_cannot_log_in_and_permissions_match_unanchored() {
        let users = Users::default();
        users.put_user(UserRecord {
            name: "nopass".into(),
            password_hash: String::new(),
            hashing_algorithm: SHA256.into(),
            tags: vec![],
        });
        let lo: IpAddr = [127, 0, 0, 1].into();
        assert!(users.check_password("nopass", "", lo).is_err());
        let perm = |c: &str, w: &str, r: &str| PermissionRecord {
            user: "nopass".into(),
            vhost: "/".into(),
            configure: c.into(),
            write: w.into(),
            read: r.into(),
        };
        assert!(users.set_permission(perm("(", ".*", ".*")).is_err());
        assert!(!users.may_use_vhost("nopass", "/"));
        assert_eq!(users.set_permission(perm("q", "^w$", "")), Ok(true));
        assert!(users.may_use_vhost("nopass", "/"));
        assert!(users.permitted("nopass", "/", Access::Configure, "aqa"));
        assert!(!users.permitted("nopass", "/", Access::Write, "ww"));
        assert!(users.permitted("nopass", "/", Access::Write, "w"));
        assert!(
            !users.permitted("nopass", "/", Access::Read, "x"),
            "empty is ^$: matches nothing but ''"
        );
        assert!(!users.permitted("nopass", "/other", Access::Read, "x"));
        assert_eq!(users.set_permission(perm("", "", ".*")), Ok(false));
        assert!(users.permitted("nopass", "/", Access::Read, "x"));
        assert!(users.delete_user("nopass"));
        assert!(!users.may_use_vhost("nopass", "/"));
    }

    #[test]
    fn loopback_users_none_lets_guest_connect_remotely() {
        let remote: IpAddr = [10, 1, 2, 3].into();
        let open = Users::with_default("guest", "guest", &["none".to_owned()]);
        assert_eq!(
            open.authenticate("PLAIN", b"\0guest\0guest", remote),
            Ok("guest".into())
        );
    }
}
