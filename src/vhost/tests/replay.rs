//! Applying commands to a topology: random sequences of commands, each planned with its cascade
//! as the vhost plans a change, then applied. The log of what was applied replays onto a fresh
//! topology to the same one (the policies that apply to each queue and exchange included); no
//! binding outlives either end; an auto-delete exchange goes with its last binding.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use warren_amqp::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::definitions::{
    BindingDefinition, DefinitionCommand, DestinationKind, ExchangeDefinition, QueueDefinition,
};
use crate::exchange::ExchangeKind;
use crate::policy::{ApplyTo, PolicyDefinition, PolicyKind};

use super::super::topology::{StartQueue, Topology};
use super::{listing, plain_queue, Fixture};

fn name(prefix: &'static str) -> impl Strategy<Value = String> {
    (0..4u8).prop_map(move |i| format!("{prefix}{i}"))
}

fn arguments() -> impl Strategy<Value = FieldTable> {
    prop_oneof![
        3 => Just(FieldTable::default()),
        1 => Just({
            let mut t = FieldTable::default();
            t.insert(
                ShortString::from("x-match"),
                AMQPValue::LongString(LongString::from("any")),
            );
            t
        }),
    ]
}

fn binding() -> impl Strategy<Value = BindingDefinition> {
    let source = prop_oneof![4 => name("x"), 1 => Just("amq.direct".to_owned())];
    let destination = prop_oneof![
        (name("q"), Just(DestinationKind::Queue)),
        (name("x"), Just(DestinationKind::Exchange)),
    ];
    let key = prop::sample::select(vec!["a", "b", "#"]);
    (source, destination, key, arguments()).prop_map(
        |(source, (destination, destination_kind), key, arguments)| BindingDefinition {
            source,
            destination,
            destination_kind,
            routing_key: key.to_owned(),
            arguments,
        },
    )
}

/// Policies of both kinds, over some of the queues and exchanges the commands name.
fn policy_command() -> impl Strategy<Value = DefinitionCommand> {
    let kind = prop_oneof![Just(PolicyKind::User), Just(PolicyKind::Operator)];
    let apply_to = prop::sample::select(vec![ApplyTo::Queues, ApplyTo::Exchanges, ApplyTo::All]);
    let pattern = prop::sample::select(vec!["^q", "^x", "[02]$", ""]);
    prop_oneof![
        2 => (name("p"), kind.clone(), pattern, apply_to, -1i64..2).prop_map(
            |(name, kind, pattern, apply_to, priority)| {
                let definition = serde_json::json!({"max-length": 3});
                DefinitionCommand::SetPolicy(PolicyDefinition {
                    name,
                    kind,
                    pattern: pattern.to_owned(),
                    apply_to,
                    priority: priority.into(),
                    definition: definition.as_object().cloned().unwrap_or_default(),
                })
            }
        ),
        1 => (name("p"), kind).prop_map(|(name, kind)| DefinitionCommand::ClearPolicy { kind, name }),
    ]
}

fn command() -> impl Strategy<Value = DefinitionCommand> {
    let kind = prop::sample::select(vec![
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ]);
    prop_oneof![
        2 => (name("q"), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(name, durable, exclusive, auto_delete)| {
                DefinitionCommand::DeclareQueue(QueueDefinition {
                    storage_id: (durable && !exclusive).then_some(7),
                    durable,
                    exclusive_owner: exclusive.then_some(1),
                    auto_delete,
                    ..plain_queue(&name)
                })
            }
        ),
        1 => name("q").prop_map(|name| DefinitionCommand::DeleteQueue { name, storage_id: None, incarnation: 0 }),
        2 => (name("x"), kind, any::<bool>(), any::<bool>(), arguments()).prop_map(
            |(name, kind, durable, auto_delete, arguments)| {
                DefinitionCommand::DeclareExchange(ExchangeDefinition {
                    name,
                    kind,
                    durable,
                    auto_delete,
                    internal: false,
                    arguments,
                })
            }
        ),
        1 => (name("x"), any::<bool>())
            .prop_map(|(name, durable)| DefinitionCommand::DeleteExchange { name, durable }),
        4 => (binding(), any::<bool>())
            .prop_map(|(binding, durable)| DefinitionCommand::Bind { binding, durable }),
        3 => (binding(), any::<bool>())
            .prop_map(|(binding, durable)| DefinitionCommand::Unbind { binding, durable }),
        2 => policy_command(),
    ]
}

/// Plans `command` with its cascade and applies it, as the vhost makes a change; checks the
/// cascade rules on the way and returns what the log would hold.
fn change(
    topo: &mut Topology,
    command: DefinitionCommand,
    start: &mut StartQueue<'_>,
) -> Result<Vec<DefinitionCommand>, TestCaseError> {
    let bound = topo.bound_auto_delete();
    let planned = topo.with_cascade(command);
    for c in &planned {
        topo.apply(c, start);
    }
    // Every auto-delete exchange the change left without bindings went with it.
    let emptied = topo.emptied(bound);
    prop_assert!(emptied.is_empty(), "left empty: {emptied:?} by {planned:?}");
    // Every binding leads to something that exists.
    for b in topo.bindings_info() {
        let exists = if b.destination_is_queue {
            topo.queues.contains_key(&b.destination)
        } else {
            topo.exchanges.contains_key(&b.destination)
        };
        prop_assert!(exists, "binding to a missing end: {b:?}");
    }
    Ok(planned)
}

#[test]
fn replaying_the_applied_commands_gives_the_same_topology_and_the_cascade_rules_hold() {
    let fixture = Fixture::new();
    let _runtime = fixture.runtime.enter();
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(command(), 0..60), |commands| {
            let mut live = Topology::new("/");
            let mut start =
                |q: &QueueDefinition, policies| Some(fixture.vhost.start_queue(q, policies, None));
            let mut log = Vec::new();
            for command in commands {
                log.extend(change(&mut live, command, &mut start)?);
            }
            let replayed = fixture.replay(&log);
            prop_assert_eq!(listing(&live), listing(&replayed));
            // And a second replay, to the same again: applying is deterministic.
            prop_assert_eq!(listing(&replayed), listing(&fixture.replay(&log)));
            Ok(())
        })
        .unwrap();
}

/// The cascade on a known case: deleting a queue empties an auto-delete exchange, whose going
/// empties another bound to it, but not one that keeps a binding or was never bound.
#[test]
fn the_cascade_follows_emptied_auto_delete_exchanges_through_exchange_bindings() {
    let fixture = Fixture::new();
    let exchange = |name: &str, auto_delete| {
        DefinitionCommand::DeclareExchange(ExchangeDefinition {
            name: name.to_owned(),
            kind: ExchangeKind::Fanout,
            durable: true,
            auto_delete,
            internal: false,
            arguments: FieldTable::default(),
        })
    };
    let bind = |source: &str, destination: &str, destination_kind| DefinitionCommand::Bind {
        binding: BindingDefinition {
            source: source.to_owned(),
            destination: destination.to_owned(),
            destination_kind,
            routing_key: String::new(),
            arguments: FieldTable::default(),
        },
        durable: false,
    };
    let mut topo = fixture.replay(&[
        DefinitionCommand::DeclareQueue(plain_queue("q")),
        DefinitionCommand::DeclareQueue(plain_queue("other")),
        exchange("inner", true),
        exchange("outer", true),
        exchange("kept", true),
        exchange("unbound", true),
        bind("inner", "q", DestinationKind::Queue),
        bind("outer", "inner", DestinationKind::Exchange),
        bind("kept", "inner", DestinationKind::Exchange),
        bind("kept", "other", DestinationKind::Queue),
    ]);
    let planned = topo.with_cascade(DefinitionCommand::DeleteQueue {
        name: "q".into(),
        storage_id: None,
        incarnation: 0,
    });
    let deleted: Vec<&str> = planned
        .iter()
        .filter_map(|c| match c {
            DefinitionCommand::DeleteExchange { name, durable } => {
                assert!(durable);
                Some(name.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(deleted, ["inner", "outer"]);
    let _runtime = fixture.runtime.enter();
    for c in &planned {
        topo.apply(c, &mut |_, _| None);
    }
    let left: HashSet<&str> = topo.exchanges.keys().map(String::as_str).collect();
    assert!(left.contains("kept") && left.contains("unbound"));
    assert!(!left.contains("inner") && !left.contains("outer"));
    assert_eq!(topo.exchanges["kept"].bindings().len(), 1);
}

#[test]
fn commands_survive_a_round_trip_through_json() {
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(10));
    arguments.insert("x-ratio".into(), AMQPValue::Double(0.5));
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("dlx".into()),
    );
    let commands = vec![
        DefinitionCommand::DeclareQueue(QueueDefinition {
            storage_id: Some(3),
            durable: true,
            arguments: arguments.clone().into(),
            ..plain_queue("q")
        }),
        DefinitionCommand::DeclareExchange(ExchangeDefinition {
            name: "x".into(),
            kind: ExchangeKind::Headers,
            durable: true,
            auto_delete: false,
            internal: true,
            arguments,
        }),
        DefinitionCommand::Unbind {
            binding: BindingDefinition {
                source: "x".into(),
                destination: "y".into(),
                destination_kind: DestinationKind::Exchange,
                routing_key: "k".into(),
                arguments: FieldTable::default(),
            },
            durable: true,
        },
    ];
    let json = serde_json::to_string(&commands).unwrap();
    let back: Vec<DefinitionCommand> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, commands);
}
