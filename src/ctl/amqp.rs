//! `warren ctl --uri amqp://...`: management requests over AMQP (`crate::management`), for an
//! operator who can reach only the AMQP port. Each request is one short connection: open,
//! consume direct reply-to, publish the request to `amq.warren.management`, read the answer,
//! close. The answer is the HTTP API's, so the rest of ctl reads it as an HTTP answer.

use amq_protocol::uri::AMQPUri;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use warren_amqp::encode::encode_properties;
use warren_amqp::protocol::basic::{self, AMQPProperties};
use warren_amqp::protocol::AMQPClass;
use warren_amqp::types::{AMQPValue, ShortString};
use warren_amqp::{decode_method, FrameKind, Method as Decoded, PropertiesView};

use super::client::{ClientError, Credentials, Request};
use crate::exchange::LazyHeaders;
use crate::management::EXCHANGE;
use crate::perf::client::{consume_method, Conn};
use crate::perf::wire::header_body_size;
use crate::reply_to::PSEUDO_QUEUE;

/// The channel requests go on.
const CHANNEL: u16 = 1;

#[derive(Clone, Debug)]
pub struct AmqpTransport {
    uri: AMQPUri,
    /// The URI without its password, for messages.
    shown: String,
}

impl AmqpTransport {
    /// `amqp://[user:pass@]host[:port][/vhost]`; without credentials in it, `credentials`.
    pub fn parse(uri: &str, credentials: &Credentials) -> Result<AmqpTransport, ClientError> {
        let mut parsed: AMQPUri = uri
            .parse()
            .map_err(|e| ClientError::BadUrl(format!("bad AMQP URI {uri:?}: {e}")))?;
        if parsed.scheme != amq_protocol::uri::AMQPScheme::AMQP {
            return Err(ClientError::BadUrl(format!(
                "only amqp:// URIs are supported, not {uri:?}"
            )));
        }
        if !uri.contains('@') {
            parsed.authority.userinfo.username = credentials.username.clone();
            parsed.authority.userinfo.password = credentials.password.clone();
        }
        let shown = format!(
            "amqp://{}@{}:{}/{}",
            parsed.authority.userinfo.username,
            parsed.authority.host,
            parsed.authority.port,
            super::client::segment(&parsed.vhost)
        );
        Ok(AmqpTransport { uri: parsed, shown })
    }

    pub fn url(&self) -> &str {
        &self.shown
    }

    pub fn user(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// Sends one request: the answer's status and body, as the HTTP API would give them.
    pub async fn exchange(&self, request: &Request) -> Result<(u16, Vec<u8>), ClientError> {
        let host = (self.uri.authority.host.as_str(), self.uri.authority.port);
        let stream = TcpStream::connect(host)
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.shown.clone(),
                reason: e.to_string(),
            })?;
        let mut conn = Conn::open_over(stream, &self.uri, "warren ctl")
            .await
            .map_err(|e| {
                // The handshake's error carries the server's close: a refused login is 403
                // ACCESS_REFUSED (RabbitMQ's authentication_failure_close).
                let text = format!("{e:#}");
                if text.contains("ACCESS_REFUSED") {
                    ClientError::CredentialsRefused {
                        user: self.user().to_owned(),
                    }
                } else {
                    ClientError::BadResponse(text)
                }
            })?;
        let answer = ask(&mut conn, request).await;
        let _ = conn.close().await;
        answer
    }
}

fn protocol(e: impl std::fmt::Display) -> ClientError {
    ClientError::BadResponse(e.to_string())
}

/// The request on an open connection: consume direct reply-to, publish, read the answer.
async fn ask(conn: &mut Conn, request: &Request) -> Result<(u16, Vec<u8>), ClientError> {
    conn.open_channel(CHANNEL).await.map_err(protocol)?;
    match conn
        .rpc(
            CHANNEL,
            consume_method(PSEUDO_QUEUE, "ctl", true, &Default::default()),
        )
        .await
        .map_err(protocol)?
    {
        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)) => {}
        other => return Err(protocol(format!("expected consume-ok, got {other:?}"))),
    }
    let body = json!({
        "method": request.method.as_str(),
        "path": request.path,
        "body": request.body,
    });
    let properties = AMQPProperties::default()
        .with_content_type(ShortString::from("application/json".to_owned()))
        .with_reply_to(ShortString::from(PSEUDO_QUEUE.to_owned()))
        .with_correlation_id(ShortString::from("warren-ctl".to_owned()));
    let properties = encode_properties(&properties).map_err(protocol)?;
    conn.queue_method(
        CHANNEL,
        &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: EXCHANGE.into(),
            routing_key: "".into(),
            ..Default::default()
        })),
    )
    .map_err(protocol)?;
    conn.queue_content(CHANNEL, &properties, body.to_string().as_bytes());
    conn.flush().await.map_err(protocol)?;
    read_answer(conn).await
}

/// Reads frames until the answer's delivery is complete: its `status` header and its body.
async fn read_answer(conn: &mut Conn) -> Result<(u16, Vec<u8>), ClientError> {
    let mut status: Option<u16> = None;
    let mut expected: Option<u64> = None;
    let mut body = Vec::new();
    loop {
        while let Some(frame) = conn.decoder.decode(&mut conn.rbuf).map_err(protocol)? {
            match frame.kind {
                FrameKind::Method => {
                    let method = decode_method(&frame.payload).map_err(protocol)?;
                    if let Decoded::Other(class) = method {
                        match class {
                            AMQPClass::Connection(
                                warren_amqp::protocol::connection::AMQPMethod::Close(c),
                            ) => {
                                return Err(protocol(format!(
                                    "the node closed the connection: {} {}",
                                    c.reply_code, c.reply_text
                                )))
                            }
                            AMQPClass::Channel(
                                warren_amqp::protocol::channel::AMQPMethod::Close(c),
                            ) => {
                                return Err(if c.reply_code == 403 {
                                    ClientError::Forbidden {
                                        reason: c.reply_text.to_string(),
                                    }
                                } else {
                                    protocol(format!(
                                        "the node closed the channel: {} {}",
                                        c.reply_code, c.reply_text
                                    ))
                                })
                            }
                            _ => {}
                        }
                    }
                }
                FrameKind::Header if frame.channel == CHANNEL => {
                    // class, weight, body size, then the properties.
                    let size = header_body_size(&frame.payload)
                        .ok_or_else(|| protocol("short content header"))?;
                    let view = PropertiesView::parse(&frame.payload[12..]).map_err(protocol)?;
                    let headers = LazyHeaders::new(view.headers);
                    status = match headers.get().inner().get("status") {
                        Some(AMQPValue::LongInt(n)) => u16::try_from(*n).ok(),
                        _ => None,
                    };
                    expected = Some(size);
                }
                FrameKind::Body if frame.channel == CHANNEL => {
                    body.extend_from_slice(&frame.payload);
                }
                _ => {}
            }
            if let (Some(size), Some(status)) = (expected, status) {
                if body.len() as u64 >= size {
                    return Ok((status, body));
                }
            }
            if expected.is_some() && status.is_none() {
                return Err(protocol("an answer without a status header"));
            }
        }
        if conn
            .stream
            .read_buf(&mut conn.rbuf)
            .await
            .map_err(protocol)?
            == 0
        {
            return Err(protocol("the node closed the connection"));
        }
    }
}
