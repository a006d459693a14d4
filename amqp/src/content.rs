//! Content assembly: a `basic.publish` method, its content header and any number of body frames
//! become one [`Content`]. Each channel owns one [`ContentAssembler`].

use bytes::{Buf, Bytes, BytesMut};

use crate::error::AmqpError;
use crate::method::Publish;
use crate::properties::PropertiesView;
use crate::BASIC_CLASS;

/// A complete published message as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    pub publish: Publish,
    /// Property flags and values, verbatim from the content header.
    pub properties: Bytes,
    pub body: Bytes,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    AwaitingHeader(Publish),
    AwaitingBody {
        publish: Publish,
        properties: Bytes,
        body_size: u64,
        parts: BodyParts,
    },
    /// The header was refused (a message over the size limit): its body frames are skipped,
    /// not buffered, until `remaining` octets have gone by.
    Discarding {
        remaining: u64,
    },
    /// A body ran past the size its header declared. As RabbitMQ, further body frames are
    /// swallowed and any other frame is an error.
    Overrun,
}

#[derive(Debug)]
enum BodyParts {
    None,
    /// A body in one frame stays a slice of the read buffer.
    One(Bytes),
    Many(BytesMut),
}

impl BodyParts {
    fn len(&self) -> usize {
        match self {
            BodyParts::None => 0,
            BodyParts::One(b) => b.len(),
            BodyParts::Many(b) => b.len(),
        }
    }
}

/// Per-channel state machine for method + header + body frames.
#[derive(Debug, Default)]
pub struct ContentAssembler {
    state: State,
}

impl ContentAssembler {
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// The error for a method frame arriving in the middle of a message (blamed on the publish,
    /// as RabbitMQ does).
    pub fn interrupted(&self) -> AmqpError {
        let e = match self.state {
            State::AwaitingBody { .. } | State::Discarding { .. } | State::Overrun => {
                AmqpError::unexpected_frame(
                    "expected content body, got non content body frame instead",
                )
            }
            _ => AmqpError::unexpected_frame(
                "expected content header for class 60, got non content header frame instead",
            ),
        };
        e.on_method(60, 40)
    }

    /// Forgets a half-assembled message (the channel is closing). The body frames of a refused
    /// message are still skipped: the client sends them whatever the broker answered.
    pub fn reset(&mut self) {
        if !matches!(self.state, State::Discarding { .. }) {
            self.state = State::Idle;
        }
    }

    /// Body octets held for the message being assembled.
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::AwaitingBody { parts, .. } => parts.len(),
            _ => 0,
        }
    }

    /// A content-bearing method arrived. Any other frame in the middle of a message is an error
    /// (the caller checks `is_idle` before a method).
    pub fn start(&mut self, publish: Publish) {
        self.state = State::AwaitingHeader(publish);
    }

    /// A content header frame arrived; `max_body` bounds the size claim before anything is
    /// allocated for the body.
    pub fn header(&mut self, payload: Bytes, max_body: u64) -> Result<Option<Content>, AmqpError> {
        let in_progress = !self.is_idle();
        self.header_inner(payload, max_body).map_err(|e| {
            if in_progress {
                e.on_method(60, 40)
            } else {
                e
            }
        })
    }

    fn header_inner(
        &mut self,
        mut payload: Bytes,
        max_body: u64,
    ) -> Result<Option<Content>, AmqpError> {
        let State::AwaitingHeader(publish) = std::mem::take(&mut self.state) else {
            return Err(AmqpError::unexpected_frame(
                "expected method frame, got non method frame instead",
            ));
        };
        if payload.len() < 14 {
            return Err(AmqpError::frame_error("content header too short"));
        }
        let class_id = payload.get_u16();
        let _weight = payload.get_u16();
        let body_size = payload.get_u64();
        if class_id != BASIC_CLASS {
            return Err(AmqpError::unexpected_frame(format!(
                "expected content header for class {BASIC_CLASS}, got one for class {class_id} instead"
            )));
        }
        if PropertiesView::parse(&payload).is_err() {
            return Err(AmqpError::frame_error(
                "cannot decode content header properties",
            ));
        }
        if body_size > max_body {
            // Only the channel is closed: the body frames that follow are skipped.
            self.state = State::Discarding {
                remaining: body_size,
            };
            return Err(AmqpError::precondition_failed(format!(
                "message size {body_size} is larger than configured max size {max_body}"
            )));
        }
        if body_size == 0 {
            return Ok(Some(Content {
                publish,
                properties: payload,
                body: Bytes::new(),
            }));
        }
        self.state = State::AwaitingBody {
            publish,
            properties: payload,
            body_size,
            parts: BodyParts::None,
        };
        Ok(None)
    }

    /// A body frame arrived. Errors name the publish (60/40) when a message was in progress, and
    /// no method otherwise (a stray frame), as RabbitMQ does.
    pub fn body(&mut self, payload: Bytes) -> Result<Option<Content>, AmqpError> {
        let in_progress = !self.is_idle();
        self.body_inner(payload)
            .map_err(|e| if in_progress { e.on_method(60, 40) } else { e })
    }

    fn body_inner(&mut self, payload: Bytes) -> Result<Option<Content>, AmqpError> {
        match &mut self.state {
            State::Discarding { remaining } => {
                let len = payload.len() as u64;
                if len > *remaining {
                    self.state = State::Overrun;
                } else {
                    *remaining -= len;
                    if *remaining == 0 {
                        self.state = State::Idle;
                    }
                }
                return Ok(None);
            }
            State::Overrun => return Ok(None),
            _ => {}
        }
        let State::AwaitingBody {
            body_size, parts, ..
        } = &mut self.state
        else {
            return Err(AmqpError::unexpected_frame(
                "expected method frame, got non method frame instead",
            ));
        };
        let total = parts.len() as u64 + payload.len() as u64;
        if total > *body_size {
            // RabbitMQ keeps waiting for a body that can never complete; the next frame of
            // another kind closes the connection (505).
            self.state = State::Overrun;
            return Ok(None);
        }
        *parts = match std::mem::replace(parts, BodyParts::None) {
            BodyParts::None => BodyParts::One(payload),
            BodyParts::One(first) => {
                let mut buf = BytesMut::with_capacity((*body_size).min(1 << 20) as usize);
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&payload);
                BodyParts::Many(buf)
            }
            BodyParts::Many(mut buf) => {
                buf.extend_from_slice(&payload);
                BodyParts::Many(buf)
            }
        };
        if total < *body_size {
            return Ok(None);
        }
        let State::AwaitingBody {
            publish,
            properties,
            parts,
            ..
        } = std::mem::take(&mut self.state)
        else {
            unreachable!("state checked above");
        };
        let body = match parts {
            BodyParts::None => Bytes::new(),
            BodyParts::One(b) => b,
            BodyParts::Many(b) => b.freeze(),
        };
        Ok(Some(Content {
            publish,
            properties,
            body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish() -> Publish {
        Publish {
            exchange: Bytes::new(),
            routing_key: Bytes::from_static(b"q"),
            mandatory: false,
            immediate: false,
        }
    }

    fn header(size: u64) -> Bytes {
        let mut v = vec![0, 60, 0, 0];
        v.extend_from_slice(&size.to_be_bytes());
        v.extend_from_slice(&[0x10, 0, 2]); // delivery-mode 2
        Bytes::from(v)
    }

    #[test]
    fn assembles_any_number_of_body_frames() {
        let mut a = ContentAssembler::default();
        a.start(publish());
        assert_eq!(a.header(header(6), 100).unwrap(), None);
        assert_eq!(a.body(Bytes::from_static(b"ab")).unwrap(), None);
        assert_eq!(a.body(Bytes::from_static(b"cd")).unwrap(), None);
        let c = a.body(Bytes::from_static(b"ef")).unwrap().unwrap();
        assert_eq!(&c.body[..], b"abcdef");
        assert_eq!(&c.properties[..], &[0x10, 0, 2]);
        assert!(a.is_idle());
    }

    #[test]
    fn empty_body_completes_at_header() {
        let mut a = ContentAssembler::default();
        a.start(publish());
        assert_eq!(a.header(header(0), 100).unwrap().unwrap().body.len(), 0);
    }

    #[test]
    fn rejects_overlong_body_oversize_claim_and_stray_frames() {
        let mut a = ContentAssembler::default();
        assert!(a.header(header(1), 100).is_err());
        assert!(a.body(Bytes::from_static(b"x")).is_err());
        a.start(publish());
        assert_eq!(
            a.header(header(1 << 40), 1 << 20).unwrap_err().code,
            crate::ReplyCode::PreconditionFailed
        );
        a.start(publish());
        a.header(header(2), 100).unwrap();
        // An overlong body is swallowed; the next method frame is the error (505, as RabbitMQ).
        assert_eq!(a.body(Bytes::from_static(b"xyz")).unwrap(), None);
        assert_eq!(a.body(Bytes::from_static(b"more")).unwrap(), None);
        assert!(!a.is_idle());
        assert_eq!(a.interrupted().code, crate::ReplyCode::UnexpectedFrame);
    }

    #[test]
    fn refused_oversize_message_skips_its_body_frames() {
        let mut a = ContentAssembler::default();
        a.start(publish());
        assert_eq!(
            a.header(header(10), 5).unwrap_err().code,
            crate::ReplyCode::PreconditionFailed
        );
        // The channel closes (reset), but the body frames still in flight are skipped.
        a.reset();
        assert_eq!(a.buffered(), 0);
        assert_eq!(a.body(Bytes::from_static(b"abcdef")).unwrap(), None);
        assert!(!a.is_idle());
        assert_eq!(a.body(Bytes::from_static(b"ghij")).unwrap(), None);
        assert!(a.is_idle());
        // And the next message is assembled as usual.
        a.start(publish());
        a.header(header(2), 5).unwrap();
        assert_eq!(a.buffered(), 0);
        assert_eq!(a.body(Bytes::from_static(b"k")).unwrap(), None);
        assert_eq!(a.buffered(), 1);
        assert_eq!(
            &a.body(Bytes::from_static(b"l")).unwrap().unwrap().body[..],
            b"kl"
        );
    }
}
