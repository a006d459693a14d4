//! How the client settles deliveries: basic.ack, basic.reject and basic.nack, basic.recover.

use warren_amqp::protocol::{basic, AMQPClass};
use warren_amqp::AmqpError;

use crate::connection::channel::Settlement;
use crate::connection::Connection;

impl Connection {
    /// basic.ack (buffered until commit in a transaction).
    pub(super) async fn ack(
        &mut self,
        ch: u16,
        delivery_tag: u64,
        multiple: bool,
    ) -> Result<(), AmqpError> {
        let c = self.channel(ch)?;
        let settled = c.take_settled(delivery_tag, multiple)?;
        crate::tracking::bump(&c.info.counts.ack, settled.len() as u64);
        self.counts.acknowledged += settled.len() as u64;
        let c = self.channel(ch)?;
        c.settle_or_buffer(settled, Settlement::Ack).await;
        Ok(())
    }

    /// basic.reject (never `multiple`) and basic.nack.
    pub(super) async fn reject(
        &mut self,
        ch: u16,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), AmqpError> {
        let c = self.channel(ch)?;
        let settled = c.take_settled(delivery_tag, multiple)?;
        if let Some((_, d)) = settled.iter().find(|(_, d)| d.queue.is_stream()) {
            let vhost = self.vhost()?;
            return Err(crate::queue::stream::not_supported(
                "basic.nack and basic.reject",
                &d.queue.name,
                &vhost.name,
            ));
        }
        let c = self.channel(ch)?;
        c.settle_or_buffer(
            settled,
            if requeue {
                Settlement::Requeue
            } else {
                Settlement::Reject
            },
        )
        .await;
        Ok(())
    }

    /// basic.recover (answered with recover-ok) and basic.recover-async (not answered).
    pub(super) async fn recover(
        &mut self,
        ch: u16,
        requeue: bool,
        answer: bool,
    ) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        let c = self.channel(ch)?;
        let all = c.take_settled(0, true)?;
        c.settle(all, Settlement::Requeue).await;
        if answer {
            self.send_method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
            );
        }
        Ok(())
    }
}
