//! The load generator's connection setup: TCP connect, the AMQP handshake (PLAIN), and the
//! synchronous commands run before the measured phase (channel.open, declare, bind, qos,
//! confirm.select, queue.delete). Each is one request and its reply; once set up, the socket and
//! any bytes already read are handed to the producer or consumer loops in [`super::producer`] and
//! [`super::consumer`].

use std::time::Duration;

use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use amq_protocol::uri::AMQPUri;
use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_amqp::{decode_method, encode, FrameDecoder, FrameKind, Method, PROTOCOL_HEADER};

/// Frame size proposed when the server sets no limit.
const DEFAULT_FRAME_MAX: u32 = 131_072;
/// How long any single setup step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// An open AMQP connection in its synchronous (request/reply) phase.
pub struct Conn {
    pub stream: TcpStream,
    pub rbuf: BytesMut,
    pub decoder: FrameDecoder,
    pub frame_max: u32,
    wbuf: BytesMut,
}

fn client_properties(name: &str) -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "exchange_exchange_bindings",
        "authentication_failure_close",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert(
        "product".into(),
        AMQPValue::LongString("warren perf".into()),
    );
    props.insert(
        "version".into(),
        AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()),
    );
    props.insert("connection_name".into(), AMQPValue::LongString(name.into()));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props
}

fn server_close_error(class: &AMQPClass) -> Option<anyhow::Error> {
    match class {
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => Some(anyhow!(
            "server closed the connection: {} {} (on method {}/{})",
            c.reply_code,
            c.reply_text,
            c.class_id,
            c.method_id
        )),
        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => Some(anyhow!(
            "server closed the channel: {} {} (on method {}/{})",
            c.reply_code,
            c.reply_text,
            c.class_id,
            c.method_id
        )),
        _ => None,
    }
}

impl Conn {
    /// Connects and runs the handshake up to `connection.open-ok`. Heartbeats are turned off
    /// (the client's tune-ok may lower the server's proposal to 0).
    pub async fn open(uri: &AMQPUri, name: &str) -> anyhow::Result<Conn> {
        let addr = (uri.authority.host.as_str(), uri.authority.port);
        let stream = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {}:{} timed out", addr.0, addr.1))?
            .with_context(|| format!("connecting to {}:{}", addr.0, addr.1))?;
        Conn::open_over(stream, uri, name).await
    }

    /// The handshake over a socket already connected to the server (for a caller that tells
    /// connection failures apart from refusals).
    pub async fn open_over(stream: TcpStream, uri: &AMQPUri, name: &str) -> anyhow::Result<Conn> {
        let addr = (uri.authority.host.as_str(), uri.authority.port);
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(8 * 1024),
            decoder: FrameDecoder::new(DEFAULT_FRAME_MAX),
            frame_max: DEFAULT_FRAME_MAX,
            wbuf: BytesMut::with_capacity(1024),
        };
        tokio::time::timeout(STEP_TIMEOUT, conn.handshake(uri, name))
            .await
            .map_err(|_| anyhow!("AMQP handshake with {}:{} timed out", addr.0, addr.1))??;
        Ok(conn)
    }

    async fn handshake(&mut self, uri: &AMQPUri, name: &str) -> anyhow::Result<()> {
        self.stream.write_all(PROTOCOL_HEADER).await?;
        match self.recv(0).await.context("waiting for connection.start")? {
            AMQPClass::Connection(connection::AMQPMethod::Start(start)) => {
                let mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
                if !mechanisms.split_whitespace().any(|m| m == "PLAIN") {
                    bail!("server does not offer PLAIN authentication (offers: {mechanisms})");
                }
            }
            other => bail!("expected connection.start, got {other:?}"),
        }
        let user = &uri.authority.userinfo;
        let response = format!("\0{}\0{}", user.username, user.password);
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: client_properties(name),
                mechanism: "PLAIN".into(),
                response: response.into(),
                locale: "en_US".into(),
            })),
        )
        .await?;
        let tune = match self
            .recv(0)
            .await
            .context("waiting for connection.tune (bad credentials?)")?
        {
            AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
            other => bail!("expected connection.tune, got {other:?}"),
        };
        let frame_max = match tune.frame_max {
            0 => DEFAULT_FRAME_MAX,
            n => n.min(DEFAULT_FRAME_MAX),
        };
        self.frame_max = frame_max;
        self.decoder.set_frame_max(frame_max);
        let channel_max = if tune.channel_max == 0 {
            2047
        } else {
            tune.channel_max
        };
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max,
                frame_max,
                heartbeat: 0,
            })),
        )
        .await?;
        self.rpc(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: uri.vhost.as_str().into(),
            })),
        )
        .await
        .with_context(|| format!("opening vhost {:?}", uri.vhost))?;
        Ok(())
    }

    /// Appends a method frame to the output buffer without writing it.
    pub fn queue_method(&mut self, channel: u16, class: &AMQPClass) -> anyhow::Result<()> {
        encode::write_method(&mut self.wbuf, channel, class)
            .map_err(|e| anyhow!("encoding {class:?}: {e}"))
    }

    /// Appends a message's header and body frames to the output buffer without writing them.
    pub fn queue_content(&mut self, channel: u16, properties: &[u8], body: &[u8]) {
        encode::write_content(&mut self.wbuf, channel, properties, body, self.frame_max);
    }

    /// Writes whatever is in the output buffer.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    pub async fn send(&mut self, channel: u16, class: AMQPClass) -> anyhow::Result<()> {
        self.queue_method(channel, &class)?;
        self.flush().await
    }

    /// The next method on `channel`, skipping heartbeats and anything on other channels; a
    /// `connection.close` or `channel.close` from the server is an error.
    pub async fn recv(&mut self, channel: u16) -> anyhow::Result<AMQPClass> {
        loop {
            while let Some(frame) = self.decoder.decode(&mut self.rbuf)? {
                if frame.kind != FrameKind::Method {
                    continue;
                }
                let class = match decode_method(&frame.payload)? {
                    Method::Other(class) => class,
                    _ => continue,
                };
                if let Some(err) = server_close_error(&class) {
                    if let AMQPClass::Connection(_) = class {
                        let _ = self.send_close_ok().await;
                    }
                    return Err(err);
                }
                if frame.channel == channel {
                    return Ok(class);
                }
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                bail!("server closed the socket");
            }
        }
    }

    async fn send_close_ok(&mut self) -> anyhow::Result<()> {
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        )
        .await
    }

    /// Sends a method and returns the server's reply on the same channel.
    pub async fn rpc(&mut self, channel: u16, class: AMQPClass) -> anyhow::Result<AMQPClass> {
        self.send(channel, class).await?;
        tokio::time::timeout(STEP_TIMEOUT, self.recv(channel))
            .await
            .map_err(|_| anyhow!("no reply from the server in {STEP_TIMEOUT:?}"))?
    }

    pub async fn open_channel(&mut self, ch: u16) -> anyhow::Result<()> {
        self.rpc(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await
        .with_context(|| format!("opening channel {ch}"))?;
        Ok(())
    }

    pub async fn confirm_select(&mut self, ch: u16) -> anyhow::Result<()> {
        self.rpc(
            ch,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        )
        .await
        .context("confirm.select")?;
        Ok(())
    }

    pub async fn qos(&mut self, ch: u16, prefetch_count: u16) -> anyhow::Result<()> {
        self.rpc(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count,
                global: false,
            })),
        )
        .await
        .context("basic.qos")?;
        Ok(())
    }

    pub async fn declare_exchange(
        &mut self,
        ch: u16,
        name: &str,
        kind: &str,
        durable: bool,
    ) -> anyhow::Result<()> {
        self.rpc(
            ch,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: name.into(),
                kind: kind.into(),
                durable,
                ..Default::default()
            })),
        )
        .await
        .with_context(|| format!("declaring exchange {name:?} of type {kind}"))?;
        Ok(())
    }

    /// `queue.declare`; returns the ready message count. `passive` only checks that it exists.
    pub async fn declare_queue(
        &mut self,
        ch: u16,
        name: &str,
        durable: bool,
        passive: bool,
        arguments: &FieldTable,
    ) -> anyhow::Result<u32> {
        let reply = self
            .rpc(
                ch,
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: name.into(),
                    passive,
                    durable,
                    arguments: arguments.clone(),
                    ..Default::default()
                })),
            )
            .await
            .with_context(|| format!("declaring queue {name:?}"))?;
        match reply {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => Ok(ok.message_count),
            other => bail!("expected queue.declare-ok, got {other:?}"),
        }
    }

    pub async fn bind_queue(
        &mut self,
        ch: u16,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> anyhow::Result<()> {
        self.rpc(
            ch,
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: queue.into(),
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                ..Default::default()
            })),
        )
        .await
        .with_context(|| {
            format!("binding queue {queue:?} to {exchange:?} with key {routing_key:?}")
        })?;
        Ok(())
    }

    pub async fn delete_queue(&mut self, ch: u16, name: &str) -> anyhow::Result<()> {
        self.rpc(
            ch,
            AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: name.into(),
                ..Default::default()
            })),
        )
        .await
        .with_context(|| format!("deleting queue {name:?}"))?;
        Ok(())
    }

    /// Takes back a connection handed to a producer or consumer loop.
    pub fn resume(stream: TcpStream, rbuf: BytesMut, decoder: FrameDecoder) -> Conn {
        let frame_max = decoder.frame_max();
        Conn {
            stream,
            rbuf,
            decoder,
            frame_max,
            wbuf: BytesMut::new(),
        }
    }

    /// Reads until `connection.close-ok`, dropping everything else.
    pub async fn wait_close_ok(&mut self) -> anyhow::Result<()> {
        loop {
            if let AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) = self.recv(0).await? {
                return Ok(());
            }
        }
    }

    /// `connection.close`, then waits (briefly) for close-ok.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.send(0, close_method()).await?;
        tokio::time::timeout(Duration::from_secs(5), self.wait_close_ok())
            .await
            .unwrap_or(Ok(()))
    }
}

/// Text of a `connection.close` or `channel.close` method payload from the server.
pub fn describe_close(payload: &Bytes) -> String {
    match decode_method(payload) {
        Ok(Method::Other(class)) => match server_close_error(&class) {
            Some(err) => err.to_string(),
            None => format!("unexpected {class:?}"),
        },
        _ => "server closed the connection or a channel".to_string(),
    }
}

/// A normal `connection.close` from the client.
pub fn close_method() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: 200,
        reply_text: "goodbye".into(),
        class_id: 0,
        method_id: 0,
    }))
}

/// `basic.consume` for a consumer tag of our choosing.
pub fn consume_method(
    queue: &str,
    consumer_tag: &str,
    no_ack: bool,
    arguments: &warren_amqp::types::FieldTable,
) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
        queue: queue.into(),
        consumer_tag: consumer_tag.into(),
        no_ack,
        arguments: arguments.clone(),
        ..Default::default()
    }))
}
