//! basic.get: one message from a queue, or get-empty.

use warren_amqp::protocol::{basic, AMQPClass};
use warren_amqp::{encode, AmqpError};

use super::gone;
use crate::auth::Access;
use crate::connection::Connection;
use crate::queue::QueueCommand;
use crate::tracking::bump;

impl Connection {
    /// basic.get: the delivery is tracked like a consumer's, but outside the prefetch.
    pub(super) async fn get(&mut self, ch: u16, g: basic::Get) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        let name = self.queue_name(ch, g.queue.as_str())?;
        self.check_access(Access::Read, "queue", &name)?;
        let q = vhost.queue(&name, self.id)?;
        if q.is_stream() {
            return Err(crate::queue::stream::not_supported(
                "basic.get",
                &name,
                &vhost.name,
            ));
        }
        let no_ack = g.no_ack;
        let got = q
            .ask(|reply| QueueCommand::Get { no_ack, reply })
            .await
            .map_err(|_| gone(&vhost, &name))?;
        match got {
            Some(r) => {
                self.counts.delivered += 1;
                let channel = self.channel(ch)?;
                let counts = &channel.info.counts;
                bump(
                    if no_ack {
                        &counts.get_no_ack
                    } else {
                        &counts.get
                    },
                    1,
                );
                if r.redelivered {
                    bump(&counts.redeliver, 1);
                }
                let tag = channel.next_tag(q.clone(), r.id, !no_ack, false);
                let m = &r.message;
                encode::write_get_ok(
                    &mut self.out,
                    ch,
                    tag,
                    r.redelivered,
                    m.exchange(),
                    m.routing_key(),
                    r.remaining,
                );
                encode::write_content(&mut self.out, ch, m.properties(), m.body(), self.frame_max);
            }
            None => self.send_method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
            ),
        }
        Ok(())
    }
}
