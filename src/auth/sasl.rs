//! SASL: PLAIN, AMQPLAIN and RabbitMQ's challenge-response demo mechanism, parsing what the
//! client sends and checking the login, with RabbitMQ's rule that loopback users (`guest` by
//! default) may only log in from loopback. Apart from the user store as the wire-facing part.

use std::net::IpAddr;

use warren_amqp::types::{AMQPValue, FieldTable};

use super::{password_matches, Users};

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
    fn loopback_users_none_lets_guest_connect_remotely() {
        let remote: IpAddr = [10, 1, 2, 3].into();
        let open = Users::with_default("guest", "guest", &["none".to_owned()]);
        assert_eq!(
            open.authenticate("PLAIN", b"\0guest\0guest", remote),
            Ok("guest".into())
        );
    }
}
