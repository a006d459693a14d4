//! The basic class: its methods handed to the files that handle them, and basic.qos.

use warren_amqp::protocol::{basic, AMQPClass};
use warren_amqp::AmqpError;

use super::unimplemented_method;
use crate::connection::Connection;

impl Connection {
    pub(super) async fn basic_method(
        &mut self,
        ch: u16,
        m: basic::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match m {
            basic::AMQPMethod::Consume(c) => self.consume(ch, c).await,
            basic::AMQPMethod::Cancel(c) => self.cancel(ch, c).await,
            basic::AMQPMethod::Get(g) => self.get(ch, g).await,
            basic::AMQPMethod::Reject(r) => self.reject(ch, r.delivery_tag, false, r.requeue).await,
            basic::AMQPMethod::Nack(n) => {
                self.reject(ch, n.delivery_tag, n.multiple, n.requeue).await
            }
            basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue }) => {
                self.recover(ch, requeue, false).await
            }
            basic::AMQPMethod::Recover(basic::Recover { requeue }) => {
                self.recover(ch, requeue, true).await
            }
            _ => Err(unimplemented_method()),
        }
    }

    /// basic.qos: the prefetch of the channel (global) or of its next consumers.
    pub(super) fn qos(
        &mut self,
        ch: u16,
        prefetch_size: u32,
        prefetch_count: u16,
        global: bool,
    ) -> Result<(), AmqpError> {
        if prefetch_size != 0 {
            return Err(AmqpError::not_implemented(format!(
                "prefetch_size!=0 ({prefetch_size})"
            )));
        }
        let c = self.channel(ch)?;
        c.info.set_prefetch(prefetch_count, global);
        if global {
            c.flow.global_prefetch.store(
                u32::from(prefetch_count),
                std::sync::atomic::Ordering::Relaxed,
            );
            for q in c.consumers().values() {
                q.queue.resume();
            }
        } else {
            c.consumer_prefetch = prefetch_count;
        }
        self.send_method(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        );
        Ok(())
    }
}
