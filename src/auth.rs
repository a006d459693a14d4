//! Users and SASL: PLAIN and AMQPLAIN, with RabbitMQ's rule that `guest` may only log in from
//! loopback.

use std::collections::HashMap;
use std::net::IpAddr;

use warren_amqp::types::{AMQPValue, FieldTable};

pub struct User {
    pub name: String,
    password: String,
    /// May only connect from a loopback address.
    pub loopback_only: bool,
}

pub struct Users {
    users: HashMap<String, User>,
}

impl Default for Users {
    fn default() -> Self {
        let mut users = HashMap::new();
        users.insert(
            "guest".to_owned(),
            User {
                name: "guest".to_owned(),
                password: "guest".to_owned(),
                loopback_only: true,
            },
        );
        Users { users }
    }
}

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
    /// Checks a `connection.start-ok` response; returns the user name.
    pub fn authenticate(
        &self,
        mechanism: &str,
        response: &[u8],
        peer: IpAddr,
    ) -> Result<String, AuthError> {
        let (login, password) = match mechanism {
            "PLAIN" => parse_plain(response),
            "AMQPLAIN" => parse_amqplain(response),
            other => return Err(AuthError::UnsupportedMechanism(other.to_owned())),
        }
        .ok_or_else(|| AuthError::Malformed(mechanism.to_owned()))?;
        let user = self
            .users
            .get(&login)
            .filter(|u| u.password == password)
            .ok_or_else(|| AuthError::Refused(mechanism.to_owned()))?;
        if user.loopback_only && !peer.is_loopback() && !is_mapped_loopback(peer) {
            return Err(AuthError::LoopbackOnly(login));
        }
        Ok(user.name.clone())
    }
}

fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}

/// `authzid \0 authcid \0 password`.
fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let login = parts.next()?;
    let password = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((
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
        assert!(matches!(
            users.authenticate("EXTERNAL", b"", lo),
            Err(AuthError::UnsupportedMechanism(_))
        ));
    }
}
