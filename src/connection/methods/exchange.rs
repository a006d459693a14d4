//! The exchange class: declare, delete, bind and unbind (exchange-to-exchange bindings).

use warren_amqp::protocol::{exchange, AMQPClass};
use warren_amqp::{AmqpError, ReplyCode};

use super::{strip_cr_lf, unimplemented_method};
use crate::auth::Access;
use crate::connection::Connection;
use crate::vhost::DeclareExchange;

impl Connection {
    pub(super) async fn exchange_method(
        &mut self,
        ch: u16,
        m: exchange::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        match m {
            exchange::AMQPMethod::Declare(d) => {
                let name = strip_cr_lf(d.exchange.as_str());
                if !d.passive && !name.is_empty() {
                    self.check_access(Access::Configure, "exchange", &name)?;
                }
                vhost
                    .declare_exchange(DeclareExchange {
                        name: &strip_cr_lf(d.exchange.as_str()),
                        kind: d.kind.as_str(),
                        passive: d.passive,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        arguments: &d.arguments,
                    })
                    .await?;
                let ok =
                    AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}));
                self.reply(ch, d.nowait, ok);
                Ok(())
            }
            exchange::AMQPMethod::Delete(d) => {
                let name = strip_cr_lf(d.exchange.as_str());
                if !name.is_empty() {
                    self.check_access(Access::Configure, "exchange", &name)?;
                }
                match vhost.delete_exchange(&name, d.if_unused).await {
                    // Deleting a missing exchange succeeds, as in RabbitMQ.
                    Err(e) if e.code == ReplyCode::NotFound => {}
                    other => other?,
                }
                self.reply(
                    ch,
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                );
                Ok(())
            }
            exchange::AMQPMethod::Bind(b) => {
                self.check_access(
                    Access::Write,
                    "exchange",
                    &strip_cr_lf(b.destination.as_str()),
                )?;
                self.check_access(Access::Read, "exchange", &strip_cr_lf(b.source.as_str()))?;
                self.check_topic_access(
                    Access::Read,
                    &strip_cr_lf(b.source.as_str()),
                    b.routing_key.as_str(),
                )?;
                vhost
                    .bind_exchange(
                        &strip_cr_lf(b.destination.as_str()),
                        &strip_cr_lf(b.source.as_str()),
                        b.routing_key.as_str(),
                        &b.arguments,
                    )
                    .await?;
                self.reply(
                    ch,
                    b.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                );
                Ok(())
            }
            exchange::AMQPMethod::Unbind(u) => {
                self.check_access(
                    Access::Write,
                    "exchange",
                    &strip_cr_lf(u.destination.as_str()),
                )?;
                self.check_access(Access::Read, "exchange", &strip_cr_lf(u.source.as_str()))?;
                self.check_topic_access(
                    Access::Read,
                    &strip_cr_lf(u.source.as_str()),
                    u.routing_key.as_str(),
                )?;
                vhost
                    .unbind_exchange(
                        &strip_cr_lf(u.destination.as_str()),
                        &strip_cr_lf(u.source.as_str()),
                        u.routing_key.as_str(),
                        &u.arguments,
                    )
                    .await?;
                self.reply(
                    ch,
                    u.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                );
                Ok(())
            }
            _ => Err(unimplemented_method()),
        }
    }
}
