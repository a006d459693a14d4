//! The reply-code table: every error Warren reports, with its AMQP code, whether it closes the
//! channel (soft) or the connection (hard), and RabbitMQ's `CODE_NAME - text` wording.

use std::fmt;
use thiserror::Error;

/// AMQP 0-9-1 reply codes, named as RabbitMQ names them in reply texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    ContentTooLarge,
    NoRoute,
    NoConsumers,
    ConnectionForced,
    InvalidPath,
    AccessRefused,
    NotFound,
    ResourceLocked,
    PreconditionFailed,
    FrameError,
    SyntaxError,
    CommandInvalid,
    ChannelError,
    UnexpectedFrame,
    ResourceError,
    NotAllowed,
    NotImplemented,
    InternalError,
}

impl ReplyCode {
    /// Every code, for turning a number back into one.
    pub const ALL: [ReplyCode; 18] = [
        ReplyCode::ContentTooLarge,
        ReplyCode::NoRoute,
        ReplyCode::NoConsumers,
        ReplyCode::ConnectionForced,
        ReplyCode::InvalidPath,
        ReplyCode::AccessRefused,
        ReplyCode::NotFound,
        ReplyCode::ResourceLocked,
        ReplyCode::PreconditionFailed,
        ReplyCode::FrameError,
        ReplyCode::SyntaxError,
        ReplyCode::CommandInvalid,
        ReplyCode::ChannelError,
        ReplyCode::UnexpectedFrame,
        ReplyCode::ResourceError,
        ReplyCode::NotAllowed,
        ReplyCode::NotImplemented,
        ReplyCode::InternalError,
    ];

    /// The code with this number (as another node sent it).
    pub fn from_code(code: u16) -> Option<ReplyCode> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    pub const fn code(self) -> u16 {
        match self {
            ReplyCode::ContentTooLarge => 311,
            ReplyCode::NoRoute => 312,
            ReplyCode::NoConsumers => 313,
            ReplyCode::ConnectionForced => 320,
            ReplyCode::InvalidPath => 402,
            ReplyCode::AccessRefused => 403,
            ReplyCode::NotFound => 404,
            ReplyCode::ResourceLocked => 405,
            ReplyCode::PreconditionFailed => 406,
            ReplyCode::FrameError => 501,
            ReplyCode::SyntaxError => 502,
            ReplyCode::CommandInvalid => 503,
            ReplyCode::ChannelError => 504,
            ReplyCode::UnexpectedFrame => 505,
            ReplyCode::ResourceError => 506,
            ReplyCode::NotAllowed => 530,
            ReplyCode::NotImplemented => 540,
            ReplyCode::InternalError => 541,
        }
    }

    /// The name RabbitMQ puts in front of reply texts.
    pub const fn name(self) -> &'static str {
        match self {
            ReplyCode::ContentTooLarge => "CONTENT_TOO_LARGE",
            ReplyCode::NoRoute => "NO_ROUTE",
            ReplyCode::NoConsumers => "NO_CONSUMERS",
            ReplyCode::ConnectionForced => "CONNECTION_FORCED",
            ReplyCode::InvalidPath => "INVALID_PATH",
            ReplyCode::AccessRefused => "ACCESS_REFUSED",
            ReplyCode::NotFound => "NOT_FOUND",
            ReplyCode::ResourceLocked => "RESOURCE_LOCKED",
            ReplyCode::PreconditionFailed => "PRECONDITION_FAILED",
            ReplyCode::FrameError => "FRAME_ERROR",
            ReplyCode::SyntaxError => "SYNTAX_ERROR",
            ReplyCode::CommandInvalid => "COMMAND_INVALID",
            ReplyCode::ChannelError => "CHANNEL_ERROR",
            ReplyCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ReplyCode::ResourceError => "RESOURCE_ERROR",
            ReplyCode::NotAllowed => "NOT_ALLOWED",
            ReplyCode::NotImplemented => "NOT_IMPLEMENTED",
            ReplyCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// Hard errors close the connection; soft ones close only the channel. RabbitMQ raises the
    /// soft codes as connection errors when they happen on channel 0.
    pub const fn is_hard(self) -> bool {
        self.code() >= 500 || self.code() == 320 || self.code() == 402
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

/// An error to report to the client with `channel.close` or `connection.close`.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{code}: {text}")]
pub struct AmqpError {
    pub code: ReplyCode,
    pub text: String,
    /// Class and method of the command that failed (0 when no command is to blame).
    pub class_id: u16,
    pub method_id: u16,
    /// Forces a connection close even for a soft code (errors on channel 0, for instance).
    pub connection_level: bool,
}

impl AmqpError {
    pub fn new(code: ReplyCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
            connection_level: false,
        }
    }

    /// Names the method that caused the error, unless one is already named.
    pub fn on_method(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 && self.method_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    pub fn closes_connection(&self) -> bool {
        self.connection_level || self.code.is_hard()
    }

    /// As it goes on the wire: `NOT_FOUND - no queue 'q' in vhost '/'`, cut to a short string.
    pub fn reply_text(&self) -> String {
        let mut text = format!("{} - {}", self.code.name(), self.text);
        if text.len() > 255 {
            let mut cut = 255;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        text
    }
}

macro_rules! constructors {
    ($($fn_name:ident => $code:ident),* $(,)?) => {
        impl AmqpError {
            $(pub fn $fn_name(text: impl Into<String>) -> Self { Self::new(ReplyCode::$code, text) })*
        }
    };
}

constructors! {
    access_refused => AccessRefused,
    not_found => NotFound,
    resource_locked => ResourceLocked,
    precondition_failed => PreconditionFailed,
    frame_error => FrameError,
    syntax_error => SyntaxError,
    command_invalid => CommandInvalid,
    channel_error => ChannelError,
    unexpected_frame => UnexpectedFrame,
    not_allowed => NotAllowed,
    not_implemented => NotImplemented,
    internal_error => InternalError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_and_soft_codes_match_the_spec() {
        for c in [
            ReplyCode::AccessRefused,
            ReplyCode::NotFound,
            ReplyCode::ResourceLocked,
            ReplyCode::PreconditionFailed,
        ] {
            assert!(!c.is_hard(), "{c}");
        }
        for c in [
            ReplyCode::ConnectionForced,
            ReplyCode::FrameError,
            ReplyCode::SyntaxError,
            ReplyCode::CommandInvalid,
            ReplyCode::ChannelError,
            ReplyCode::UnexpectedFrame,
            ReplyCode::NotAllowed,
            ReplyCode::NotImplemented,
            ReplyCode::InternalError,
        ] {
            assert!(c.is_hard(), "{c}");
        }
    }

    #[test]
    fn reply_text_is_prefixed_and_bounded() {
        let e = AmqpError::not_found("no queue 'q' in vhost '/'");
        assert_eq!(e.reply_text(), "NOT_FOUND - no queue 'q' in vhost '/'");
        let long = AmqpError::not_found("é".repeat(300));
        assert!(long.reply_text().len() <= 255);
    }
}
