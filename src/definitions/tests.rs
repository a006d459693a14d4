//! The store's definition log: what is durable reaches the disk (and comes back at the next
//! open) once a commit resolves; what is not writes nothing.

use warren_amqp::types::FieldTable;
use warren_storage::{Recovered, Store};

use super::{
    BindingDefinition, DefinitionCommand, DefinitionLog, DestinationKind, ExchangeDefinition,
    QueueDefinition, StoreDefinitionLog,
};
use crate::exchange::ExchangeKind;

fn exchange(name: &str, durable: bool) -> DefinitionCommand {
    DefinitionCommand::DeclareExchange(ExchangeDefinition {
        name: name.to_owned(),
        kind: ExchangeKind::Fanout,
        durable,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
    })
}

fn queue(name: &str, storage_id: Option<u64>) -> DefinitionCommand {
    DefinitionCommand::DeclareQueue(QueueDefinition {
        name: name.to_owned(),
        storage_id,
        durable: storage_id.is_some(),
        exclusive_owner: None,
        auto_delete: false,
        arguments: FieldTable::default().into(),
        home: None,
        incarnation: 0,
        members: None,
    })
}

fn binding(source: &str, queue: &str) -> BindingDefinition {
    BindingDefinition {
        source: source.to_owned(),
        destination: queue.to_owned(),
        destination_kind: DestinationKind::Queue,
        routing_key: String::new(),
        arguments: FieldTable::default(),
    }
}

/// Commits each change in turn, then closes the store and opens it again.
fn commit_and_reopen(dir: &std::path::Path, changes: &[Vec<DefinitionCommand>]) -> Recovered {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (store, _) = Store::open(dir).unwrap();
    let log = StoreDefinitionLog::new(store.clone());
    for change in changes {
        let durable = change.iter().any(DefinitionCommand::is_durable);
        let submitted = store.submitted();
        runtime.block_on(log.commit("/", change)).unwrap();
        // Nothing durable, nothing written (and nothing waited for).
        assert_eq!(store.submitted() > submitted, durable, "{change:?}");
    }
    drop((log, store));
    Store::open(dir).unwrap().1
}

fn names(recovered: &Recovered) -> (Vec<&str>, Vec<&str>, Vec<(&str, &str)>) {
    let mut exchanges: Vec<&str> = recovered
        .exchanges
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    exchanges.sort_unstable();
    let queues = recovered.queues.iter().map(|q| q.name.as_str()).collect();
    let bindings = recovered
        .bindings
        .iter()
        .map(|b| (b.source.as_str(), b.destination.as_str()))
        .collect();
    (exchanges, queues, bindings)
}

#[test]
fn the_store_log_writes_what_is_durable_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let recovered = commit_and_reopen(
        dir.path(),
        &[
            vec![
                exchange("transient", false),
                queue("transient-q", None),
                DefinitionCommand::Bind {
                    binding: binding("transient", "transient-q"),
                    durable: false,
                },
            ],
            vec![
                exchange("d", true),
                exchange("gone", true),
                queue("q", Some(1)),
                DefinitionCommand::Bind {
                    binding: binding("d", "q"),
                    durable: true,
                },
                DefinitionCommand::Bind {
                    binding: binding("gone", "q"),
                    durable: true,
                },
            ],
            // An unbind and the deletion of the exchange it emptied, as one change.
            vec![
                DefinitionCommand::Unbind {
                    binding: binding("gone", "q"),
                    durable: true,
                },
                DefinitionCommand::DeleteExchange {
                    name: "gone".into(),
                    durable: true,
                },
            ],
        ],
    );
    assert_eq!(names(&recovered), (vec!["d"], vec!["q"], vec![("d", "q")]));
    assert_eq!(recovered.queues[0].id, 1);

    let recovered = commit_and_reopen(
        dir.path(),
        &[vec![DefinitionCommand::DeleteQueue {
            name: "q".into(),
            storage_id: Some(1),
            incarnation: 0,
        }]],
    );
    assert_eq!(names(&recovered), (vec!["d"], vec![], vec![]));
}
