//! Tests of the vhost's definitions as commands. Shared here: a vhost on a scratch store with a
//! definition log that records (or refuses) what it is given, and a topology's listing to
//! compare two topologies by.
//!
//! - `tests/replay.rs`: applying commands to the topology (random sequences): replay gives the
//!   same topology, the cascade rules hold.
//! - `tests/commit.rs`: the vhost's changes through a recording or refusing log.
//! - `tests/races.rs`: a queue that deletes itself while a change is being committed.

mod commit;
mod races;
mod replay;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use warren_amqp::types::FieldTable;
use warren_storage::Store;

use crate::definitions::{Commit, CommitError, DefinitionCommand, DefinitionLog, QueueDefinition};
use crate::queue::ConnectionId;

use super::info::{BindingInfo, ExchangeInfo};
use super::topology::Topology;
use super::{DeclareExchange, DeclareQueue, Vhost};

/// A log that keeps every command it is given, in order, or refuses commits when told to, or
/// holds them (appended, not yet durable) until told to let them go.
struct RecordingLog {
    entries: Mutex<Vec<DefinitionCommand>>,
    refusing: AtomicBool,
    holding: tokio::sync::watch::Sender<bool>,
}

impl Default for RecordingLog {
    fn default() -> Self {
        RecordingLog {
            entries: Mutex::default(),
            refusing: AtomicBool::default(),
            holding: tokio::sync::watch::channel(false).0,
        }
    }
}

impl RecordingLog {
    fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    fn hold(&self, holding: bool) {
        self.holding.send_replace(holding);
    }

    fn entries(&self) -> Vec<DefinitionCommand> {
        self.entries.lock().unwrap().clone()
    }
}

impl DefinitionLog for RecordingLog {
    fn commit<'a>(&'a self, vhost: &'a str, commands: &'a [DefinitionCommand]) -> Commit<'a> {
        if self.refusing.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(CommitError::Refused(
                "refused by the test".into(),
            ))));
        }
        self.record(vhost, commands);
        let mut holding = self.holding.subscribe();
        Box::pin(async move {
            let _ = holding.wait_for(|held| !held).await;
            Ok(crate::definitions::Committed::ToApply)
        })
    }

    fn record(&self, _vhost: &str, commands: &[DefinitionCommand]) {
        self.entries.lock().unwrap().extend_from_slice(commands);
    }
}

/// A vhost on a scratch store, its log, and a runtime for its queues' tasks.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    vhost: Arc<Vhost>,
    log: Arc<RecordingLog>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let log = Arc::new(RecordingLog::default());
        let vhost = Vhost::new("/", store, log.clone(), 1 << 20);
        Fixture {
            runtime,
            vhost,
            log,
            _dir: dir,
        }
    }

    /// A fresh topology with the given commands applied, as a replica (or a replay) builds it.
    fn replay(&self, commands: &[DefinitionCommand]) -> Topology {
        let _runtime = self.runtime.enter();
        let mut topo = Topology::new(&self.vhost.name);
        for command in commands {
            topo.apply(command, &mut |q, policies| {
                Some(self.vhost.start_queue(q, policies, None))
            });
        }
        topo
    }
}

/// The connection the tests' declares and binds come from.
const CONNECTION: u64 = 1;

/// queue.declare of a queue neither exclusive nor auto-delete.
fn queue(name: &str, durable: bool) -> DeclareQueue<'_> {
    DeclareQueue {
        name,
        passive: false,
        durable,
        exclusive: false,
        auto_delete: false,
        arguments: empty(),
        connection: CONNECTION,
        server_named: false,
    }
}

/// exchange.declare of a durable exchange.
fn exchange<'a>(name: &'a str, kind: &'a str, auto_delete: bool) -> DeclareExchange<'a> {
    DeclareExchange {
        name,
        kind,
        passive: false,
        durable: true,
        auto_delete,
        internal: false,
        arguments: empty(),
    }
}

/// No arguments.
fn empty() -> &'static FieldTable {
    static EMPTY: std::sync::OnceLock<FieldTable> = std::sync::OnceLock::new();
    EMPTY.get_or_init(FieldTable::default)
}

/// A queue as a listing compares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct QueueInfo {
    name: String,
    storage_id: Option<u64>,
    durable: bool,
    exclusive_owner: Option<ConnectionId>,
    auto_delete: bool,
    /// The policy and operator policy that apply to it.
    policies: (Option<String>, Option<String>),
}

/// Everything a topology holds, in a stable order.
#[derive(Debug, PartialEq)]
struct Listing {
    exchanges: Vec<ExchangeInfo>,
    queues: Vec<QueueInfo>,
    bindings: Vec<BindingInfo>,
}

fn listing(topo: &Topology) -> Listing {
    let mut queues: Vec<QueueInfo> = topo
        .queues
        .values()
        .map(|q| QueueInfo {
            name: q.name.to_string(),
            storage_id: q.storage_id,
            durable: q.durable,
            exclusive_owner: q.exclusive_owner,
            auto_delete: q.auto_delete,
            policies: {
                let applied = q.applied_policies();
                (
                    applied.policy_name().map(str::to_owned),
                    applied.operator_policy_name().map(str::to_owned),
                )
            },
        })
        .collect();
    queues.sort();
    Listing {
        exchanges: topo.exchanges_info(),
        queues,
        bindings: topo.bindings_info(),
    }
}

fn plain_queue(name: &str) -> QueueDefinition {
    QueueDefinition {
        name: name.to_owned(),
        storage_id: None,
        durable: false,
        exclusive_owner: None,
        auto_delete: false,
        arguments: Default::default(),
        home: None,
        incarnation: 0,
        members: None,
    }
}
