//! Permissions: RabbitMQ's configure / write / read regular expressions per user and vhost,
//! compiled once, and the checks the connection and the management API make against them.

use warren_storage::PermissionRecord;

use super::Users;

/// What a permission check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Configure,
    Write,
    Read,
}

/// One user's permissions in one vhost, compiled.
pub(super) struct Permission {
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
    pub(super) fn new(record: PermissionRecord) -> Result<Self, String> {
        Ok(Permission {
            configure: compile(&record.configure)?,
            write: compile(&record.write)?,
            read: compile(&record.read)?,
            record,
        })
    }
}

impl Users {
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
        let mut state = self.write();
        state.permissions.retain(|(v, _), _| v != vhost);
        state.topic_permissions.retain(|(v, _), _| v != vhost);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SHA256;
    use std::net::IpAddr;
    use warren_storage::UserRecord;

    #[test]
    fn passwordless_users_cannot_log_in_and_permissions_match_unanchored() {
        let users = Users::default();
        users.put_user(UserRecord {
            name: "nopass".into(),
            password_hash: String::new(),
            hashing_algorithm: SHA256.into(),
            tags: vec![],
            ..UserRecord::default()
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
}
