//! Recovery at start-up: the durable exchanges (with their deduplication memory), queues (with
//! their messages) and bindings of this vhost, rebuilt from what the store held.

use std::sync::{Arc, Mutex};

use warren_amqp::encode::decode_table;
use warren_storage::{Recovered, StorageError};

use crate::exchange::{Destination, Exchange, ExchangeKind};
use crate::queue::args::Dedup;
use crate::queue::dedup::{self, DedupCache};
use crate::queue::recovery::Recovery;
use crate::queue::{QueueArgs, QueueSpec};

use super::Vhost;

impl Vhost {
    /// Rebuilds the durable topology and queues of this vhost from what the store held.
    pub fn restore(self: &Arc<Self>, recovered: &Recovered) -> Result<(), StorageError> {
        let mut topo = self.write();
        for e in recovered.exchanges.iter().filter(|e| e.vhost == self.name) {
            let Some(kind) = ExchangeKind::parse(&e.kind) else {
                tracing::warn!(exchange = %e.name, kind = %e.kind, "stored exchange of unknown type skipped");
                continue;
            };
            let arguments = decode_table(&e.arguments).unwrap_or_default();
            let mut ex = Exchange::new(
                e.name.clone(),
                kind,
                true,
                e.auto_delete,
                e.internal,
                arguments,
            );
            if let Ok(Some(settings)) = Dedup::parse(&self.exchange_args(&ex.arguments, &e.name)) {
                let mut cache = DedupCache::new(&settings, true);
                let remembered = self
                    .store
                    .dedup_ids(&dedup::exchange_owner(&self.name, &e.name))?;
                cache.restore(remembered, dedup::now_ms());
                ex.dedup = Some(Mutex::new(cache));
            }
            topo.exchanges.insert(e.name.clone(), ex);
        }
        let mut messages = 0usize;
        for q in recovered.queues.iter().filter(|q| q.vhost == self.name) {
            let arguments = decode_table(&q.arguments).unwrap_or_default();
            let args = QueueArgs::parse(&arguments, &q.name, &self.name).unwrap_or_default();
            let mut recovery = Recovery::new(self.queue_memory_limit);
            if let Some(settings) = &args.deduplication {
                let remembered = self.store.dedup_ids(&dedup::queue_owner(q.id))?;
                recovery = recovery.with_dedup(settings, remembered);
            }
            self.store
                .for_each_queue_message(q.id, |id, redelivered, parts| {
                    recovery.push(id, redelivered, parts)
                })?;
            messages += recovery.len();
            let spec = QueueSpec {
                name: q.name.clone(),
                args,
                storage_id: Some(q.id),
                durable: true,
                exclusive_owner: None,
                auto_delete: q.auto_delete,
                arguments,
                memory_limit: self.queue_memory_limit,
            };
            let handle = self.spawn_queue(spec, Some(recovery));
            topo.queues.insert(q.name.clone(), handle);
        }
        for b in recovered.bindings.iter().filter(|b| b.vhost == self.name) {
            let destination = if b.destination_is_queue {
                topo.queues
                    .get(&b.destination)
                    .cloned()
                    .map(Destination::Queue)
            } else {
                topo.exchanges
                    .contains_key(&b.destination)
                    .then(|| Destination::Exchange(b.destination.as_str().into()))
            };
            let arguments = decode_table(&b.arguments).unwrap_or_default();
            match (destination, topo.exchanges.get_mut(&b.source)) {
                (Some(d), Some(ex)) => {
                    let _ = ex.bind(d, &b.routing_key, arguments);
                }
                _ => {
                    tracing::warn!(source = %b.source, destination = %b.destination, "stored binding with a missing end skipped")
                }
            }
        }
        tracing::info!(
            vhost = %self.name,
            exchanges = topo.exchanges.len(),
            queues = topo.queues.len(),
            messages,
            "recovered"
        );
        Ok(())
    }
}
