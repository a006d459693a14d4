//! Publisher confirms: confirm.select puts a channel in confirm mode. (The answers come from the
//! queues, as `ConnEvent::Settled`, once their logs have the messages.)

use warren_amqp::protocol::{confirm, AMQPClass};
use warren_amqp::AmqpError;

use super::unimplemented_method;
use crate::connection::Connection;

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
        c.info.set_confirm();
        if !sel.nowait {
            self.send_method(
                ch,
                AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
            );
        }
        Ok(())
    }
}
