//! Recovery at start-up: the policies, the durable exchanges (with their deduplication memory), queues (with
//! their messages) and bindings of this vhost, rebuilt from what the store held. The records are
//! read back as definition commands and applied directly: they are durable already, so nothing
//! is committed again.

use std::sync::Arc;

use warren_storage::{Recovered, StorageError};

use crate::definitions::{
    BindingDefinition, DefinitionCommand, ExchangeDefinition, QueueDefinition,
};
use crate::policy::PolicyDefinition;
use crate::queue::dead_letter::Reason;
use crate::queue::dedup;
use crate::queue::recovery::Recovery;
use crate::queue::QueueArgs;

use super::topology::Applied;
use super::Vhost;

impl Vhost {
    /// A durable queue's messages (and deduplication memory) as the store holds them.
    pub(super) fn recover_queue(
        &self,
        storage_id: u64,
        args: &QueueArgs,
    ) -> Result<Recovery, StorageError> {
        let mut recovery = Recovery::new(self.queue_memory_limit);
        if let Some(settings) = &args.deduplication {
            let remembered = self.store.dedup_ids(&dedup::queue_owner(storage_id))?;
            recovery = recovery.with_dedup(settings, remembered);
        }
        self.store
            .for_each_queue_message(storage_id, |id, redelivered, held, parts| {
                recovery.push(id, redelivered, held.and_then(Reason::from_code), parts)
            })?;
        Ok(recovery)
    }

    /// Rebuilds the durable topology and queues of this vhost from what the store held.
    pub fn restore(self: &Arc<Self>, recovered: &Recovered) -> Result<(), StorageError> {
        let mut topo = self.write();
        let mut no_queue = |_: &QueueDefinition, _| None;
        // Policies first: the exchanges and queues recovered next start under them.
        for p in recovered.policies.iter().filter(|p| p.vhost == self.name) {
            let Some(definition) = PolicyDefinition::from_record(p) else {
                tracing::warn!(policy = %p.name, apply_to = %p.apply_to, "stored policy skipped");
                continue;
            };
            topo.apply(&DefinitionCommand::SetPolicy(definition), &mut no_queue);
        }
        for e in recovered.exchanges.iter().filter(|e| e.vhost == self.name) {
            let Some(definition) = ExchangeDefinition::from_record(e) else {
                tracing::warn!(exchange = %e.name, kind = %e.kind, "stored exchange of unknown type skipped");
                continue;
            };
            topo.apply(
                &DefinitionCommand::DeclareExchange(definition),
                &mut no_queue,
            );
            if let Some(cache) = topo.exchanges.get(&e.name).and_then(|ex| ex.dedup.as_ref()) {
                let remembered = self
                    .store
                    .dedup_ids(&dedup::exchange_owner(&self.name, &e.name))?;
                cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .restore(remembered, dedup::now_ms());
            }
        }
        let mut messages = 0usize;
        for q in recovered.queues.iter().filter(|q| q.vhost == self.name) {
            let definition = QueueDefinition::from_record(q);
            let args =
                QueueArgs::parse(&definition.arguments, &q.name, &self.name).unwrap_or_default();
            let recovery = self.recover_queue(q.id, &args)?;
            messages += recovery.len();
            let mut recovery = Some(recovery);
            topo.apply(
                &DefinitionCommand::DeclareQueue(definition),
                &mut |definition, policies| {
                    Some(self.start_queue(definition, policies, recovery.take()))
                },
            );
        }
        for b in recovered.bindings.iter().filter(|b| b.vhost == self.name) {
            let bind = DefinitionCommand::Bind {
                binding: BindingDefinition::from_record(b),
                durable: true,
            };
            if topo.apply(&bind, &mut no_queue) == Applied::Skipped {
                tracing::warn!(source = %b.source, destination = %b.destination, "stored binding with a missing end skipped");
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
