//! RabbitMQ's vhost limits (`max-connections`, `max-queues`) and user limits
//! (`max-connections`, `max-channels`): setting and clearing them (validated as RabbitMQ
//! validates its `vhost-limits` parameter and user limits, stored before they take effect), and
//! the counts the connection checks them against. A negative value is no limit; 0 allows none.
//! The queue limit is checked where queues are created (`vhost::declare`).

use std::collections::BTreeMap;

use crate::access_change::AccessChange;
use crate::definitions::CommitError;
use serde_json::Value;
use thiserror::Error;

use crate::broker::Broker;

/// The limits a vhost may have.
pub const VHOST_LIMITS: [&str; 2] = ["max-connections", "max-queues"];
/// The limits a user may have.
pub const USER_LIMITS: [&str; 2] = ["max-connections", "max-channels"];

#[derive(Debug, Error)]
pub enum LimitError {
    /// Not a limit of that kind of object: RabbitMQ's text, its value as Erlang prints it.
    #[error("Unrecognised terms [{{<<\"{name}\">>,{value}}}] in {component}")]
    Unknown {
        name: String,
        value: String,
        component: &'static str,
    },
    #[error("{name} should be a number, actually was {value}")]
    NotANumber { name: String, value: String },
    #[error("no such vhost")]
    NoSuchVhost,
    #[error("no such user")]
    NoSuchUser,
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// A limit's value, checked as RabbitMQ checks it: `name` must be one of `known`, the value an
/// integer.
pub fn check_limit(
    known: &[&str],
    component: &'static str,
    name: &str,
    value: &Value,
) -> Result<i64, LimitError> {
    if !known.contains(&name) {
        return Err(LimitError::Unknown {
            name: name.to_owned(),
            value: erlang_term(value),
            component,
        });
    }
    value.as_i64().ok_or_else(|| LimitError::NotANumber {
        name: name.to_owned(),
        value: erlang_term(value),
    })
}

/// A JSON value as RabbitMQ's error texts print it (an Erlang term): strings as binaries,
/// `null`/`true`/`false` as atoms, objects as maps.
pub fn erlang_term(value: &Value) -> String {
    match value {
        Value::String(s) => format!("<<\"{s}\">>"),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(erlang_term).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("<<\"{k}\">> => {}", erlang_term(v)))
                .collect();
            format!("#{{{}}}", items.join(","))
        }
        other => other.to_string(),
    }
}

impl Broker {
    /// Sets one of a vhost's limits (on disk first).
    pub async fn set_vhost_limit(
        &self,
        vhost: &str,
        name: &str,
        value: &Value,
    ) -> Result<(), LimitError> {
        let value = check_limit(&VHOST_LIMITS, "limits", name, value)?;
        self.change_vhost_limits(vhost, |limits| {
            limits.insert(name.to_owned(), value);
            true
        })
        .await
    }

    /// Clears one of a vhost's limits (clearing one it does not have is fine, as in RabbitMQ).
    pub async fn clear_vhost_limit(&self, vhost: &str, name: &str) -> Result<(), LimitError> {
        self.change_vhost_limits(vhost, |limits| limits.remove(name).is_some())
            .await
    }

    /// Read, change, write back a vhost's limits, one change at a time; `change` says whether
    /// it changed anything (nothing is written otherwise).
    async fn change_vhost_limits(
        &self,
        vhost: &str,
        change: impl FnOnce(&mut BTreeMap<String, i64>) -> bool,
    ) -> Result<(), LimitError> {
        let _one_at_a_time = self.record_updates.lock().await;
        let v = self.vhost(vhost).ok_or(LimitError::NoSuchVhost)?;
        let mut record = v.record();
        if !change(record.limits.get_or_insert_with(Default::default)) {
            return Ok(());
        }
        self.change_access(AccessChange::PutVhost(record)).await?;
        Ok(())
    }

    /// Sets one of a user's limits (on disk first).
    pub async fn set_user_limit(
        &self,
        user: &str,
        name: &str,
        value: &Value,
    ) -> Result<(), LimitError> {
        self.change_user_limits(user, |limits| {
            let value = check_limit(&USER_LIMITS, "user-limits", name, value)?;
            limits.insert(name.to_owned(), value);
            Ok(true)
        })
        .await
    }

    /// Clears one of a user's limits (clearing one it does not have is fine).
    pub async fn clear_user_limit(&self, user: &str, name: &str) -> Result<(), LimitError> {
        self.change_user_limits(user, |limits| Ok(limits.remove(name).is_some()))
            .await
    }

    /// Read, change, write back a user's limits, one change at a time (a missing user is
    /// refused before `change` checks anything, as RabbitMQ answers).
    async fn change_user_limits(
        &self,
        user: &str,
        change: impl FnOnce(&mut BTreeMap<String, i64>) -> Result<bool, LimitError>,
    ) -> Result<(), LimitError> {
        let _one_at_a_time = self.record_updates.lock().await;
        let mut record = self.users.user(user).ok_or(LimitError::NoSuchUser)?;
        if !change(&mut record.limits)? {
            return Ok(());
        }
        self.change_access(AccessChange::PutUser(record)).await?;
        Ok(())
    }

    /// The open connections whose session `keep` takes.
    fn open_connections_where(
        &self,
        keep: impl Fn(&crate::tracking::Session) -> bool,
    ) -> Vec<std::sync::Arc<crate::tracking::ConnectionInfo>> {
        self.tracker
            .open_connections()
            .into_iter()
            .filter(|(_, s)| keep(s))
            .map(|(c, _)| c)
            .collect()
    }

    /// The vhost's connection limit, when its open connections have reached it (a new one is
    /// refused). Counted over the tracked (opened) connections, as RabbitMQ counts.
    pub fn vhost_connection_limit_reached(&self, vhost: &str) -> Option<u64> {
        let limit = self.vhost(vhost)?.limit("max-connections")?;
        let open = self.open_connections_where(|s| s.vhost == vhost).len();
        (open as u64 >= limit).then_some(limit)
    }

    /// The user's connection limit, when its open connections have reached it.
    pub fn user_connection_limit_reached(&self, user: &str) -> Option<u64> {
        let limit = self.users.limit(user, "max-connections")?;
        let open = self.open_connections_where(|s| s.user == user).len();
        (open as u64 >= limit).then_some(limit)
    }

    /// The user's channel limit, when its open channels (on all its connections) have reached
    /// it.
    pub fn user_channel_limit_reached(&self, user: &str) -> Option<u64> {
        let limit = self.users.limit(user, "max-channels")?;
        let open: usize = self
            .open_connections_where(|s| s.user == user)
            .iter()
            .map(|c| c.channel_count())
            .sum();
        (open as u64 >= limit).then_some(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_checked_as_rabbitmq_checks_them() {
        let check = |name: &str, v: Value| check_limit(&VHOST_LIMITS, "limits", name, &v);
        assert_eq!(check("max-queues", json!(7)).unwrap(), 7);
        assert_eq!(check("max-queues", json!(-1)).unwrap(), -1);
        assert_eq!(
            check("max-queues", json!("x")).unwrap_err().to_string(),
            "max-queues should be a number, actually was <<\"x\">>"
        );
        assert_eq!(
            check("max-queues", json!(1.5)).unwrap_err().to_string(),
            "max-queues should be a number, actually was 1.5"
        );
        assert_eq!(
            check("max-foo", json!(5)).unwrap_err().to_string(),
            "Unrecognised terms [{<<\"max-foo\">>,5}] in limits"
        );
        assert_eq!(
            erlang_term(&json!({"a": [null, true]})),
            "#{<<\"a\">> => [null,true]}"
        );
    }
}
