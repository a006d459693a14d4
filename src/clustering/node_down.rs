//! A node gone for good, as far as its transient queues are concerned: RabbitMQ deletes a down
//! node's non-durable queues (they went with its process), and so does Warren once a node has
//! been unreachable for [`GRACE`]. Only the metadata leader acts (one deletion for the cluster,
//! committed like any other); a node that comes back after a restart drops those queues itself,
//! and one that was only cut off applies the deletions when it hears them, its consumers of them
//! cancelled.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use warren_cluster::link::PeerLink;

use super::metadata::Metadata;
use crate::broker::Broker;

/// How long a node must stay unreachable before its transient queues are deleted: beyond a
/// restart and a brief network blip, in the order of RabbitMQ's own detection of a down node.
pub const GRACE: Duration = Duration::from_secs(10);

/// Watches `peer` for as long as the broker runs, deleting its transient queues each time it has
/// been unreachable for [`GRACE`] while this node leads the metadata group.
pub async fn watch(
    peer: String,
    me: String,
    mut link: watch::Receiver<PeerLink>,
    metadata: Arc<Metadata>,
    broker: Weak<Broker>,
) {
    loop {
        // Until the peer is down...
        if link.wait_for(|l| !l.up).await.is_err() {
            return;
        }
        // ...and stays down for the grace period (checked again while it stays down, in case
        // this node becomes the leader later).
        loop {
            match tokio::time::timeout(GRACE, link.wait_for(|l| l.up)).await {
                Ok(Ok(_)) => break,
                Ok(Err(_)) => return,
                Err(_) => {}
            }
            if metadata.group().leader().as_deref() != Some(me.as_str()) {
                continue;
            }
            let Some(broker) = broker.upgrade() else {
                return;
            };
            for (vhost, name, incarnation) in metadata.transient_queues_of(&peer) {
                let Some(vhost) = broker.vhost(&vhost) else {
                    continue;
                };
                match vhost.forget_queue_of_gone_node(&name, incarnation).await {
                    Ok(true) => tracing::info!(
                        node = %peer, queue = %name, vhost = %vhost.name,
                        "transient queue of an unreachable node deleted"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        node = %peer, queue = %name,
                        "could not delete a transient queue of an unreachable node: {e}"
                    ),
                }
            }
        }
    }
}
