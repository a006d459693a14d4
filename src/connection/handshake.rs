//! The connection's opening: the protocol header, connection.start/start-ok, SASL (secure and
//! secure-ok for challenge-response mechanisms), tune/tune-ok and open; and the connection
//! class's other methods on channel 0 (close, update-secret).

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use warren_amqp::protocol::{connection as conn_methods, AMQPClass};
use warren_amqp::types::{AMQPValue, FieldTable, LongString};
use warren_amqp::{AmqpError, Method, PROTOCOL_HEADER};

use super::{Connection, ConnectionError, Phase, HANDSHAKE_TIMEOUT};
use crate::auth::{AuthError, StartOutcome};
use crate::tracking::ConnectionState;

/// Before tune-ok, frames are limited to the server's maximum.
pub(super) const FRAME_MIN_SIZE: u32 = 4096;

/// RabbitMQ's rule for a value the client answers in tune-ok: at least `min` unless 0, and when
/// the server set a limit (not 0), neither 0 ("no limit") nor above it.
fn negotiated_ok(server: u32, client: u32, min: u32) -> bool {
    let below_min = client != 0 && client < min;
    let over_limit = server != 0 && (client == 0 || client > server);
    !below_min && !over_limit
}

/// What the client said it supports in `client_properties.capabilities`.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ClientCaps {
    pub consumer_cancel_notify: bool,
    pub authentication_failure_close: bool,
    pub connection_blocked: bool,
}

/// Reads the protocol header (within [`HANDSHAKE_TIMEOUT`]) into `rbuf` and takes it off; false
/// when the connection is to end here (answered with our header when it is not one we speak).
pub(super) async fn read_protocol_header<R, W>(
    rd: &mut R,
    wr: &mut W,
    rbuf: &mut BytesMut,
    peer: SocketAddr,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let header = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        while rbuf.len() < PROTOCOL_HEADER.len() {
            match rd.read_buf(rbuf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        true
    })
    .await;
    if !matches!(header, Ok(true)) {
        return false;
    }
    // RabbitMQ also takes the older "AMQP 1 1 0 9" header as 0-9-1.
    if rbuf[..8] != PROTOCOL_HEADER[..] && rbuf[..8] != b"AMQP\x01\x01\x00\x09"[..] {
        // RabbitMQ answers an unsupported protocol header with the one it speaks, then closes.
        tracing::debug!(%peer, header = ?&rbuf[..8], "bad protocol header");
        let _ = wr.write_all(PROTOCOL_HEADER).await;
        let _ = wr.shutdown().await;
        return false;
    }
    let _ = rbuf.split_to(8);
    true
}

impl Connection {
    fn server_properties() -> FieldTable {
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "consumer_priorities",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        let mut props = FieldTable::default();
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        props.insert("product".into(), text("Warren"));
        props.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
        props.insert("platform".into(), text("Rust"));
        props.insert("cluster_name".into(), text("warren"));
        props.insert("copyright".into(), text("Warren contributors"));
        props.insert(
            "information".into(),
            text("Licensed under the Apache License 2.0"),
        );
        props
    }

    pub(super) fn send_start(&mut self) {
        let mechanisms = self
            .broker
            .config
            .auth_mechanisms
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(" ");
        self.send_method(
            0,
            AMQPClass::Connection(conn_methods::AMQPMethod::Start(conn_methods::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: Self::server_properties(),
                mechanisms: mechanisms.into(),
                locales: "en_US".into(),
            })),
        );
    }

    /// Methods on channel 0: the handshake and connection-level commands.
    pub(super) async fn connection_method(
        &mut self,
        method: Method,
    ) -> Result<(), ConnectionError> {
        let (class_id, method_id) = method.ids();
        let Method::Other(AMQPClass::Connection(m)) = method else {
            if self.phase != Phase::Open {
                return Err(ConnectionError::SilentClose);
            }
            return Err(
                AmqpError::channel_error("unexpected method in connection state running")
                    .on_method(class_id, method_id)
                    .into(),
            );
        };
        use conn_methods::AMQPMethod as M;
        match (self.phase, m) {
            (Phase::AwaitStartOk, M::StartOk(ok)) => Ok(self.start_ok(ok)?),
            (Phase::AwaitSecureOk, M::SecureOk(ok)) => {
                let login = self.pending_login.take().unwrap_or_default();
                let outcome = self.broker.users.answer_challenge(
                    &login,
                    ok.response.as_bytes(),
                    self.peer.ip(),
                );
                Ok(self.logged_in(outcome.map(StartOutcome::LoggedIn))?)
            }
            (Phase::AwaitTuneOk, M::TuneOk(ok)) => {
                let c = &self.broker.config;
                // RabbitMQ drops the connection (no close frame) when the client asks for more
                // than it offered, for "no limit" when it offered one, or for a frame_max below
                // the 4096 minimum.
                if !negotiated_ok(c.channel_max.into(), ok.channel_max.into(), 1)
                    || !negotiated_ok(c.frame_max, ok.frame_max, FRAME_MIN_SIZE)
                {
                    tracing::info!(peer = %self.peer, frame_max = ok.frame_max, channel_max = ok.channel_max, "refusing tune-ok");
                    return Err(ConnectionError::SilentClose);
                }
                self.channel_max = match ok.channel_max {
                    0 => u16::MAX,
                    n => n,
                };
                self.frame_max = ok.frame_max;
                self.decoder.set_frame_max(self.frame_max);
                self.heartbeat = ok.heartbeat;
                let channel_max = self.channel_max;
                self.info.update_handshake(|s| {
                    s.frame_max = ok.frame_max;
                    s.channel_max = channel_max;
                    s.heartbeat = ok.heartbeat;
                });
                self.phase = Phase::AwaitOpen;
                Ok(())
            }
            (Phase::AwaitOpen, M::Open(open)) => {
                let name = open.virtual_host.as_str();
                let Some(vhost) = self.broker.vhost(name) else {
                    return Err(AmqpError::not_allowed(format!("vhost {name} not found"))
                        .on_method(10, 40)
                        .into());
                };
                // Limits before permissions, as RabbitMQ checks them.
                if let Some(limit) = self.broker.vhost_connection_limit_reached(name) {
                    return Err(AmqpError::not_allowed(format!(
                        "access to vhost '{name}' refused for user '{}': connection limit ({limit}) is reached",
                        self.user
                    ))
                    .on_method(10, 40)
                    .into());
                }
                if let Some(limit) = self.broker.user_connection_limit_reached(&self.user) {
                    return Err(AmqpError::not_allowed(format!(
                        "connection refused for user '{}': user connection limit ({limit}) is reached",
                        self.user
                    ))
                    .on_method(10, 40)
                    .into());
                }
                // Tracked (listed, and found by a user's deletion) before the permission check:
                // a user deleted meanwhile either finds this connection or fails that check.
                self.info.opened(name);
                self.info.set_state(ConnectionState::Running);
                if !self.broker.users.may_use_vhost(&self.user, name) {
                    return Err(AmqpError::not_allowed(format!(
                        "access to vhost '{name}' refused for user '{}'",
                        self.user
                    ))
                    .on_method(10, 40)
                    .into());
                }
                self.vhost = Some(vhost);
                self.phase = Phase::Open;
                self.send_method(0, AMQPClass::Connection(M::OpenOk(conn_methods::OpenOk {})));
                Ok(())
            }
            (_, M::Close(_)) => {
                self.close_handshake_done = true;
                self.sent_close_ok = true;
                self.send_method(
                    0,
                    AMQPClass::Connection(M::CloseOk(conn_methods::CloseOk {})),
                );
                self.phase = Phase::Done;
                Ok(())
            }
            (Phase::Open, M::UpdateSecret(_)) => {
                self.send_method(
                    0,
                    AMQPClass::Connection(M::UpdateSecretOk(conn_methods::UpdateSecretOk {})),
                );
                Ok(())
            }
            (Phase::Open, m) => {
                let method_id = AMQPClass::Connection(m).get_amqp_method_id();
                Err(
                    AmqpError::channel_error("unexpected method in connection state running")
                        .on_method(10, method_id)
                        .into(),
                )
            }
            _ => Err(ConnectionError::SilentClose),
        }
    }

    fn start_ok(&mut self, ok: conn_methods::StartOk) -> Result<(), AmqpError> {
        if let Some(AMQPValue::FieldTable(caps)) = ok.client_properties.inner().get("capabilities")
        {
            let flag = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
            self.caps.consumer_cancel_notify = flag("consumer_cancel_notify");
            self.caps.authentication_failure_close = flag("authentication_failure_close");
            self.caps.connection_blocked = flag("connection.blocked");
        }
        self.info.update_handshake(|s| {
            s.client_properties = ok.client_properties.clone();
            s.auth_mechanism = ok.mechanism.as_str().to_owned();
        });
        let outcome = self.broker.users.start(
            ok.mechanism.as_str(),
            &self.broker.config.auth_mechanisms,
            ok.response.as_bytes(),
            self.peer.ip(),
        );
        self.logged_in(outcome)
    }

    /// Goes on from start-ok or secure-ok: tune once a user is known, a challenge if the
    /// mechanism asks one, or the refusal RabbitMQ gives.
    fn logged_in(&mut self, outcome: Result<StartOutcome, AuthError>) -> Result<(), AmqpError> {
        match outcome {
            Ok(StartOutcome::Challenge { login, challenge }) => {
                self.pending_login = Some(login);
                self.send_method(
                    0,
                    AMQPClass::Connection(conn_methods::AMQPMethod::Secure(conn_methods::Secure {
                        challenge: challenge.into(),
                    })),
                );
                self.phase = Phase::AwaitSecureOk;
                Ok(())
            }
            Ok(StartOutcome::LoggedIn(user)) => {
                self.info.update_handshake(|s| s.user = user.clone());
                self.user = user;
                let c = &self.broker.config;
                let (channel_max, frame_max, heartbeat) = (c.channel_max, c.frame_max, c.heartbeat);
                self.send_method(
                    0,
                    AMQPClass::Connection(conn_methods::AMQPMethod::Tune(conn_methods::Tune {
                        channel_max,
                        frame_max,
                        heartbeat,
                    })),
                );
                self.phase = Phase::AwaitTuneOk;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, "authentication failed: {e}");
                let refusal = matches!(e, AuthError::Refused(_) | AuthError::LoopbackOnly(_));
                if refusal && self.caps.authentication_failure_close {
                    Err(AmqpError::access_refused(e.to_string()))
                } else {
                    // As RabbitMQ: without the capability (or for a mechanism it does not offer,
                    // or a response it cannot read), the socket is just closed.
                    self.phase = Phase::Done;
                    Ok(())
                }
            }
        }
    }
}
