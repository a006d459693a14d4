//! Warren's AMQP 0-9-1 wire layer: frames in and out, method decoding (with hand-written fast
//! paths for the hot methods, cross-checked against `amq-protocol`), content assembly and the
//! reply-code table.
//!
//! This crate knows nothing about queues or exchanges: it turns bytes into [`Frame`]s, frames into
//! complete commands, and commands back into bytes.

pub mod content;
pub mod encode;
pub mod error;
pub mod frame;
pub mod method;
pub mod properties;

pub use amq_protocol::protocol;
pub use amq_protocol::types;
pub use content::{Content, ContentAssembler};
pub use error::{AmqpError, ReplyCode};
pub use frame::{Frame, FrameDecoder, FrameError, FrameKind};
pub use method::{decode_method, Method, MethodError, Publish};
pub use properties::PropertiesView;

/// The 8 octets a client sends first: `AMQP` 0 0 9 1.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// Class id of `basic`, the only content class Warren accepts.
pub const BASIC_CLASS: u16 = 60;
