//! Publisher confirms: confirm.select puts a channel in confirm mode, and a relay turns the
//! storage commits of confirmed persistent publishes into events for the connection.

use tokio::sync::mpsc;
use warren_amqp::protocol::{confirm, AMQPClass};
use warren_amqp::AmqpError;
use warren_storage::CommitListener;

use super::unimplemented_method;
use crate::connection::Connection;
use crate::queue::ConnEvent;

/// Relays storage commits of a connection's confirmed publishes back to it as events. The token
/// carries the channel in its top 16 bits and the publish sequence number below.
pub(in crate::connection) struct ConfirmRelay(pub mpsc::UnboundedSender<ConnEvent>);

impl CommitListener for ConfirmRelay {
    fn committed(&self, token: u64, ok: bool) {
        let _ = self.0.send(ConnEvent::Settled {
            channel: (token >> 48) as u16,
            seq: token & ((1 << 48) - 1),
            ok,
        });
    }
}

pub(super) fn confirm_token(channel: u16, seq: u64) -> u64 {
    (u64::from(channel) << 48) | (seq & ((1 << 48) - 1))
}

impl Connection {
    /// confirm.select (a channel in tx mode cannot switch); select-ok is the only other method
    /// of the class, and only the server sends it.
    pub(super) fn confirm_method(
        &mut self,
        ch: u16,
        m: confirm::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let confirm::AMQPMethod::Select(sel) = m else {
            return Err(unimplemented_method());
        };
        let c = self.channel(ch)?;
        if c.tx.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from tx to confirm mode",
            ));
        }
        c.confirm = true;
        if !sel.nowait {
            self.send_method(
                ch,
                AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
            );
        }
        Ok(())
    }
}
