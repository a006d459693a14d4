//! The tx class: select, commit (the buffered settlements and publishes take effect) and
//! rollback.

use warren_amqp::protocol::{tx, AMQPClass};
use warren_amqp::{AmqpError, PropertiesView};

use super::unimplemented_method;
use crate::connection::Connection;
use crate::queue::QueueCommand;

impl Connection {
    pub(super) async fn tx_method(&mut self, ch: u16, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        let c = self.channel(ch)?;
        match m {
            tx::AMQPMethod::Select(_) => {
                if c.confirm {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                c.tx.get_or_insert_with(Default::default);
                c.info.set_transactional();
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            tx::AMQPMethod::Commit(_) => {
                let Some(buffer) = c.tx.as_mut().map(std::mem::take) else {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                };
                for (settled, how) in buffer.settlements {
                    self.channel(ch)?.settle(settled, how).await;
                }
                let vhost = self.vhost()?;
                self.tx_logged = Some(Vec::new());
                for p in buffer.publishes {
                    let content = p.content;
                    // Parsed again at commit (a view borrows its bytes, so the buffered
                    // publish cannot keep one); routing and the stored message share this one.
                    let raw_properties = content.properties.clone();
                    let props = PropertiesView::parse(&raw_properties).unwrap_or_default();
                    if let Err(e) = self.route_and_deliver(ch, &vhost, content, &props).await {
                        // The exchange went away after the publish: nothing to route to.
                        tracing::debug!(
                            channel = ch,
                            "transactional publish dropped at commit: {}",
                            e.reply_text()
                        );
                    }
                }
                // Commit-ok once the queues' logs have the transaction's messages.
                for q in self.tx_logged.take().unwrap_or_default() {
                    if let Ok(false) = q.ask(QueueCommand::Sync).await {
                        tracing::error!(queue = %q.name, "a transaction's messages could not be stored");
                        return Err(AmqpError::internal_error("could not write to disk"));
                    }
                }
                self.sync_storage().await?;
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            }
            tx::AMQPMethod::Rollback(_) => {
                if c.tx.is_none() {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                }
                c.rollback();
                self.send_method(
                    ch,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
            }
            _ => return Err(unimplemented_method()),
        }
        Ok(())
    }
}
