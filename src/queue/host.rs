//! What a queue needs from the virtual host it lives in, as a trait the vhost implements: the
//! queue module stays below the router and never names it.

use std::sync::Arc;

use warren_amqp::AmqpError;

use super::QueueHandle;

pub trait QueueHost: Send + Sync {
    /// The vhost's name (for error texts).
    fn vhost_name(&self) -> &str;

    /// The queues a dead-lettered message published to `exchange` reaches, as a publish would
    /// (`headers`: the message's headers table as in its content header, for headers exchanges).
    fn route(
        &self,
        exchange: &str,
        routing_keys: &[&str],
        headers: Option<&[u8]>,
        out: &mut Vec<Arc<QueueHandle>>,
    ) -> Result<(), AmqpError>;

    /// The queue deleted itself: drop it from the topology.
    fn forget_queue(&self, queue: &Arc<QueueHandle>);
}
