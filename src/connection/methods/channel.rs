//! The channel class (open, close, flow), and what closes a channel: a channel error, or a
//! delivery left unacknowledged past the consumer timeout.

use warren_amqp::protocol::{channel as chan, AMQPClass};
use warren_amqp::AmqpError;

use super::unimplemented_method;
use crate::connection::Connection;

impl Connection {
    /// Closes channels whose oldest unacknowledged delivery is older than the consumer timeout.
    pub(in crate::connection) async fn check_consumer_timeouts(&mut self, now: std::time::Instant) {
        let timeout_ms = self.broker.config.consumer_timeout;
        if timeout_ms == 0 {
            return;
        }
        let timeout = std::time::Duration::from_millis(timeout_ms);
        let late: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, c)| {
                !c.closing && c.oldest_unacked_age(now).is_some_and(|age| age > timeout)
            })
            .map(|(ch, _)| *ch)
            .collect();
        for ch in late {
            let e = AmqpError::precondition_failed(format!(
                "delivery acknowledgement on channel {ch} timed out. Timeout value used: {timeout_ms} ms. This timeout value can be configured, see consumers doc guide to learn more"
            ));
            self.channel_error(ch, e).await;
        }
    }

    /// A soft error: close just this channel.
    pub(super) async fn channel_error(&mut self, ch: u16, e: AmqpError) {
        tracing::debug!(channel = ch, "channel error: {}", e.reply_text());
        self.flush_confirms();
        self.drop_reply_consumer(ch);
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        c.closing = true;
        c.release().await;
        self.requeue_dead_pending();
        self.send_method(
            ch,
            AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
                reply_code: e.code.code(),
                reply_text: e.reply_text().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }

    pub(super) async fn channel_class(
        &mut self,
        ch: u16,
        m: chan::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match m {
            chan::AMQPMethod::Open(_) => {
                Err(AmqpError::channel_error("second 'channel.open' seen"))
            }
            chan::AMQPMethod::Close(_) => {
                self.drop_reply_consumer(ch);
                if let Some(mut c) = self.remove_channel(ch) {
                    self.confirms_due.retain(|due| *due != ch);
                    c.release().await;
                    self.requeue_dead_pending();
                }
                self.send_method(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                );
                Ok(())
            }
            chan::AMQPMethod::CloseOk(_) => Err(unimplemented_method()),
            chan::AMQPMethod::Flow(flow) => {
                if !flow.active {
                    return Err(AmqpError::not_implemented("active=false"));
                }
                self.send_method(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk { active: true })),
                );
                Ok(())
            }
            _ => Err(unimplemented_method()),
        }
    }
}
