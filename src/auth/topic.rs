//! Topic permissions: RabbitMQ's per-exchange write / read regular expressions on routing keys,
//! checked when the exchange is a topic exchange: a publish's routing key against `write`, a
//! binding key (queue.bind / exchange.bind with it as source) against `read`. A user without a
//! topic permission on an exchange is not restricted there. `{username}` and `{vhost}` in a
//! pattern stand for the user's name and the vhost's, as RabbitMQ expands them (literally, not
//! escaped).

use std::collections::BTreeMap;

use warren_storage::TopicPermissionRecord;

use super::{Access, Users};

/// One user's topic permission on one exchange, with its patterns compiled (variables expanded).
pub(super) struct TopicPermission {
    record: TopicPermissionRecord,
    write: regex::Regex,
    read: regex::Regex,
}

impl TopicPermission {
    fn new(record: TopicPermissionRecord) -> Result<Self, String> {
        let compile = |pattern: &str| {
            // Empty matches nothing but an empty key, as RabbitMQ reads it (`^$`).
            let pattern = if pattern.is_empty() {
                "^$".to_owned()
            } else {
                pattern
                    .replace("{username}", &record.user)
                    .replace("{vhost}", &record.vhost)
            };
            regex::Regex::new(&pattern).map_err(|e| e.to_string())
        };
        Ok(TopicPermission {
            write: compile(&record.write)?,
            read: compile(&record.read)?,
            record,
        })
    }
}

/// A user's topic permissions in one vhost, by exchange.
pub(super) type TopicPermissions = BTreeMap<String, TopicPermission>;

/// Refuses a topic permission whose patterns do not compile.
pub fn validate_topic_permission(record: &TopicPermissionRecord) -> Result<(), String> {
    TopicPermission::new(record.clone()).map(|_| ())
}

impl Users {
    /// Sets a user's topic permission on one exchange of a vhost; true when the user had no
    /// topic permission in that vhost before (RabbitMQ's API answers 201 then).
    pub fn set_topic_permission(&self, record: TopicPermissionRecord) -> Result<bool, String> {
        let key = (record.vhost.clone(), record.user.clone());
        let exchange = record.exchange.clone();
        let permission = TopicPermission::new(record)?;
        let mut state = self.write();
        let list = state.topic_permissions.entry(key).or_default();
        let first = list.is_empty();
        list.insert(exchange, permission);
        Ok(first)
    }

    /// Removes a user's topic permission on `exchange` in a vhost, or all of them there
    /// (`None`); false when there was nothing to remove.
    pub fn delete_topic_permissions(
        &self,
        vhost: &str,
        user: &str,
        exchange: Option<&str>,
    ) -> bool {
        let mut state = self.write();
        let key = (vhost.to_owned(), user.to_owned());
        let Some(list) = state.topic_permissions.get_mut(&key) else {
            return false;
        };
        let removed = match exchange {
            Some(x) => list.remove(x).is_some(),
            None => {
                list.clear();
                true
            }
        };
        if list.is_empty() {
            state.topic_permissions.remove(&key);
        }
        removed
    }

    /// Every topic permission, by vhost, user and exchange.
    pub fn topic_permissions(&self) -> Vec<TopicPermissionRecord> {
        self.read()
            .topic_permissions
            .values()
            .flat_map(|list| list.values().map(|p| p.record.clone()))
            .collect()
    }

    /// Whether the user has a topic permission on this exchange of the vhost (only then does a
    /// publish to it need [`Users::topic_permitted`]).
    pub fn has_topic_permission(&self, user: &str, vhost: &str, exchange: &str) -> bool {
        self.read()
            .topic_permissions
            .get(&(vhost.to_owned(), user.to_owned()))
            .is_some_and(|list| list.contains_key(exchange))
    }

    /// Whether `routing_key` passes the user's topic permission on a topic exchange (`Write`:
    /// publishing with it, `Read`: binding with it); true when the user has none there.
    pub fn topic_permitted(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        access: Access,
        routing_key: &str,
    ) -> bool {
        let state = self.read();
        let Some(p) = state
            .topic_permissions
            .get(&(vhost.to_owned(), user.to_owned()))
            .and_then(|list| list.get(exchange))
        else {
            return true;
        };
        match access {
            Access::Write => p.write.is_match(routing_key),
            Access::Read => p.read.is_match(routing_key),
            Access::Configure => true,
        }
    }

    pub(super) fn load_topic_permissions(
        state: &mut super::State,
        records: Vec<TopicPermissionRecord>,
    ) {
        for record in records {
            let key = (record.vhost.clone(), record.user.clone());
            let exchange = record.exchange.clone();
            match TopicPermission::new(record) {
                Ok(p) => {
                    state
                        .topic_permissions
                        .entry(key)
                        .or_default()
                        .insert(exchange, p);
                }
                Err(e) => tracing::warn!(
                    vhost = %key.0, user = %key.1, %exchange,
                    "stored topic permission skipped: {e}"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(exchange: &str, write: &str, read: &str) -> TopicPermissionRecord {
        TopicPermissionRecord {
            user: "alice".into(),
            vhost: "v1".into(),
            exchange: exchange.into(),
            write: write.into(),
            read: read.into(),
        }
    }

    #[test]
    fn patterns_expand_variables_and_restrict_only_their_exchange() {
        let users = Users::default();
        assert!(users
            .set_topic_permission(record("t", "^{username}\\.{vhost}\\.", "("))
            .is_err());
        assert!(users.topic_permissions().is_empty(), "nothing half-applied");
        let first = users.set_topic_permission(record("t", "^{username}\\.{vhost}\\.", ""));
        assert_eq!(first, Ok(true));
        let first = users.set_topic_permission(record("u", ".*", ".*"));
        assert_eq!(first, Ok(false), "the user already had one in the vhost");
        assert_eq!(users.topic_permissions().len(), 2);
        let ok = |x: &str, a: Access, key: &str| users.topic_permitted("alice", "v1", x, a, key);
        assert!(ok("t", Access::Write, "alice.v1.x"));
        assert!(!ok("t", Access::Write, "bob.v1.x"));
        assert!(
            !ok("t", Access::Write, "x.alice.v1.x"),
            "anchored by the pattern"
        );
        assert!(!ok("t", Access::Read, "a"), "empty read matches nothing...");
        assert!(ok("t", Access::Read, ""), "...but an empty key");
        assert!(
            ok("other", Access::Write, "anything"),
            "no permission there"
        );
        assert!(users.topic_permitted("bob", "v1", "t", Access::Write, "x"));
        assert!(users.topic_permitted("alice", "/", "t", Access::Write, "x"));
        assert!(users.has_topic_permission("alice", "v1", "u"));
        assert!(users.delete_topic_permissions("v1", "alice", Some("u")));
        assert_eq!(
            users.topic_permissions(),
            [record("t", "^{username}\\.{vhost}\\.", "")]
        );
        assert!(!users.delete_topic_permissions("v1", "alice", Some("u")));
        assert!(users.delete_topic_permissions("v1", "alice", None));
        assert!(ok("t", Access::Write, "bob.v1.x"), "gone: unrestricted");
    }
}
