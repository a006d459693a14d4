use proptest::prelude::*;
use warren_amqp::types::{AMQPValue, FieldTable};

use super::*;
use crate::exchange::ExchangeKind;
use crate::policy::ApplyTo;

const SOMEONE: Declarer = Declarer { node: 7, number: 1 };

fn queue(name: &str, durable: bool) -> QueueDefinition {
    QueueDefinition {
        name: name.to_owned(),
        storage_id: durable.then_some(1),
        durable,
        exclusive_owner: None,
        auto_delete: false,
        arguments: FieldTable::default().into(),
        home: Some("n1".to_owned()),
        incarnation: 0,
        members: None,
    }
}

fn exchange(name: &str, auto_delete: bool) -> ExchangeDefinition {
    ExchangeDefinition {
        name: name.to_owned(),
        kind: ExchangeKind::Topic,
        durable: true,
        auto_delete,
        internal: false,
        arguments: FieldTable::default(),
    }
}

fn binding(source: &str, queue: &str, key: &str) -> BindingDefinition {
    BindingDefinition {
        source: source.to_owned(),
        destination: queue.to_owned(),
        destination_kind: DestinationKind::Queue,
        routing_key: key.to_owned(),
        arguments: FieldTable::default(),
    }
}

fn policy(name: &str, kind: PolicyKind, pattern: &str) -> PolicyDefinition {
    let mut definition = serde_json::Map::new();
    definition.insert("max-length".to_owned(), serde_json::json!(10));
    PolicyDefinition {
        name: name.to_owned(),
        kind,
        pattern: pattern.to_owned(),
        apply_to: ApplyTo::Queues,
        priority: 0.into(),
        definition,
    }
}

fn definitions(vhost: &str, commands: Vec<DefinitionCommand>) -> MetadataCommand {
    MetadataCommand::Definitions {
        vhost: vhost.to_owned(),
        commands,
        applied_at_origin: false,
    }
}

/// The state after `commands`, each its own entry (indexes from 1).
fn replay(commands: &[MetadataCommand]) -> MetadataState {
    let mut state = MetadataState::default();
    for (at, command) in commands.iter().enumerate() {
        state.apply(at as u64 + 1, SOMEONE, command);
    }
    state
}

/// `from` with the diff to `to` applied.
fn diffed(from: &MetadataState, to: &MetadataState) -> MetadataState {
    let mut state = from.clone();
    for change in diff(from, to) {
        state.apply_change(&change);
    }
    state
}

#[test]
fn a_declare_is_stamped_with_its_index_and_a_storage_id_made_from_it() {
    let state = replay(&[
        definitions("/", vec![DefinitionCommand::DeclareQueue(queue("q", true))]),
        definitions(
            "/",
            vec![DefinitionCommand::DeclareQueue(queue("t", false))],
        ),
    ]);
    let queues = &state.definitions["/"].queues;
    assert_eq!(queues["q"].definition.incarnation, 1);
    assert_eq!(
        queues["q"].definition.storage_id,
        Some(CLUSTER_QUEUE_IDS | 1)
    );
    assert_eq!(queues["q"].declarer, SOMEONE);
    assert_eq!(queues["t"].definition.incarnation, 2);
    assert_eq!(queues["t"].definition.storage_id, None);
}

#[test]
fn the_topology_rules_hold_a_name_taken_a_missing_end_and_another_incarnation() {
    let state = replay(&[
        definitions(
            "/",
            vec![
                DefinitionCommand::DeclareQueue(queue("q", true)),
                DefinitionCommand::DeclareQueue(queue("q", false)),
                DefinitionCommand::DeclareExchange(exchange("amq.topic", true)),
                DefinitionCommand::Bind {
                    binding: binding("amq.topic", "q", "a"),
                    durable: true,
                },
                DefinitionCommand::Bind {
                    binding: binding("amq.topic", "missing", "a"),
                    durable: true,
                },
                DefinitionCommand::Bind {
                    binding: binding("missing", "q", "a"),
                    durable: true,
                },
            ],
        ),
        // Meant for an incarnation since gone: skipped.
        definitions(
            "/",
            vec![DefinitionCommand::DeleteQueue {
                name: "q".to_owned(),
                storage_id: None,
                incarnation: 99,
            }],
        ),
        // For a vhost that is not there: skipped.
        definitions(
            "nowhere",
            vec![DefinitionCommand::DeclareQueue(queue("x", true))],
        ),
    ]);
    let slash = &state.definitions["/"];
    assert!(
        slash.queues["q"].definition.durable,
        "the first declare won"
    );
    assert!(
        !slash.exchanges["amq.topic"].auto_delete,
        "predeclared kept"
    );
    assert_eq!(
        slash.bindings.iter().cloned().collect::<Vec<_>>(),
        vec![binding("amq.topic", "q", "a")]
    );
    assert!(!state.definitions.contains_key("nowhere"));
    let state = replay(&[
        definitions(
            "/",
            vec![
                DefinitionCommand::DeclareQueue(queue("q", true)),
                DefinitionCommand::DeclareExchange(exchange("e", false)),
                DefinitionCommand::Bind {
                    binding: binding("e", "q", "a"),
                    durable: true,
                },
                DefinitionCommand::Bind {
                    binding: binding("amq.direct", "q", "b"),
                    durable: true,
                },
            ],
        ),
        definitions(
            "/",
            vec![
                DefinitionCommand::DeleteExchange {
                    name: "e".to_owned(),
                    durable: true,
                },
                DefinitionCommand::DeleteQueue {
                    name: "q".to_owned(),
                    storage_id: Some(CLUSTER_QUEUE_IDS | 1),
                    incarnation: 1,
                },
            ],
        ),
    ]);
    assert!(state.definitions["/"].bindings.is_empty());
    assert!(state.definitions["/"].queues.is_empty());
}

#[test]
fn access_changes_keep_records_and_remember_deletions() {
    let user = |name: &str| UserRecord {
        name: name.to_owned(),
        ..UserRecord::default()
    };
    let permission = |vhost: &str, user: &str| PermissionRecord {
        user: user.to_owned(),
        vhost: vhost.to_owned(),
        configure: ".*".to_owned(),
        write: ".*".to_owned(),
        read: ".*".to_owned(),
    };
    let state = replay(&[
        MetadataCommand::Access(AccessChange::PutUser(user("alice"))),
        MetadataCommand::Access(AccessChange::PutVhost(VhostRecord {
            name: "shop".to_owned(),
            ..VhostRecord::default()
        })),
        MetadataCommand::Access(AccessChange::PutPermission(permission("shop", "alice"))),
        MetadataCommand::Access(AccessChange::DeleteUser("guest".to_owned())),
        MetadataCommand::Access(AccessChange::DeletePermission {
            vhost: "/".to_owned(),
            user: "bob".to_owned(),
        }),
    ]);
    assert_eq!(state.access.users.len(), 1);
    assert!(
        state.definitions.contains_key("shop"),
        "a put vhost has definitions"
    );
    assert_eq!(state.access.deleted_users["guest"], 4);
    assert_eq!(state.access.deleted_permissions["/"]["bob"], 5);
    assert_eq!(
        state.access.permissions["shop"]["alice"],
        permission("shop", "alice")
    );
    // From nothing, the diff deletes what was deleted, for the node's own seeded records.
    let changes = diff(&MetadataState::default(), &state);
    assert!(changes.contains(&Change::Access {
        change: AccessChange::DeleteUser("guest".to_owned()),
        index: 4
    }));
    // The vhost goes with its permissions and definitions; a user with hers.
    let state = replay(&[
        MetadataCommand::Access(AccessChange::PutPermission(permission("/", "alice"))),
        MetadataCommand::Access(AccessChange::DeleteVhost("/".to_owned())),
    ]);
    assert!(state.access.permissions.is_empty());
    assert!(state.definitions.is_empty());
    assert_eq!(
        diff(&MetadataState::default(), &state),
        vec![Change::Access {
            change: AccessChange::DeleteVhost("/".to_owned()),
            index: 2
        }]
    );
}

#[test]
fn a_diff_leaves_what_is_equal_alone() {
    let before = replay(&[definitions(
        "/",
        vec![
            DefinitionCommand::SetPolicy(policy("p", PolicyKind::User, "^q")),
            DefinitionCommand::DeclareQueue(queue("q", true)),
            DefinitionCommand::Bind {
                binding: binding("amq.topic", "q", "a"),
                durable: true,
            },
        ],
    )]);
    assert!(diff(&before, &before).is_empty());
    let mut after = before.clone();
    after.apply(
        2,
        SOMEONE,
        &definitions(
            "/",
            vec![DefinitionCommand::DeclareQueue(queue("r", false))],
        ),
    );
    let changes = diff(&before, &after);
    assert_eq!(changes.len(), 1, "{changes:?}");
    let Change::DeclareQueues { vhost, queues } = &changes[0] else {
        panic!("{changes:?}");
    };
    assert_eq!(vhost, "/");
    assert_eq!(queues, &vec![after.definitions["/"].queues["r"].clone()]);
}

#[test]
fn a_queue_declared_again_under_its_name_gets_its_bindings_back() {
    let declare = definitions(
        "/",
        vec![
            DefinitionCommand::DeclareQueue(queue("q", true)),
            DefinitionCommand::Bind {
                binding: binding("amq.topic", "q", "a"),
                durable: true,
            },
        ],
    );
    let before = replay(std::slice::from_ref(&declare));
    let after = replay(&[
        declare.clone(),
        definitions(
            "/",
            vec![DefinitionCommand::DeleteQueue {
                name: "q".to_owned(),
                storage_id: None,
                incarnation: 0,
            }],
        ),
        declare,
    ]);
    let changes = diff(&before, &after);
    assert_eq!(diffed(&before, &after), after);
    // Deleted (naming the old incarnation), declared, bound again.
    assert!(matches!(
        &changes[0],
        Change::Definitions { commands, .. }
            if commands == &vec![DefinitionCommand::DeleteQueue {
                name: "q".to_owned(),
                storage_id: Some(CLUSTER_QUEUE_IDS | 1),
                incarnation: 1,
            }]
    ));
    assert!(matches!(&changes[1], Change::DeclareQueues { .. }));
    assert!(matches!(&changes[2], Change::Definitions { commands, .. }
        if matches!(&commands[..], [DefinitionCommand::Bind { .. }])));
}

#[test]
fn the_state_round_trips_through_json_with_every_kind_of_argument() {
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(10));
    arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(-1));
    arguments.insert("x-flag".into(), AMQPValue::Boolean(true));
    arguments.insert("x-ratio".into(), AMQPValue::Double(0.25));
    arguments.insert(
        "x-name".into(),
        AMQPValue::LongString("dead letters".into()),
    );
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::ShortShortUInt(3));
    arguments.insert("x-table".into(), AMQPValue::FieldTable(nested));
    let mut q = queue("q", true);
    q.arguments = arguments.clone().into();
    q.exclusive_owner = Some(42);
    let mut b = binding("amq.headers", "q", "");
    b.arguments = arguments;
    let state = replay(&[
        MetadataCommand::SetClusterName("orchard".to_owned()),
        definitions(
            "/",
            vec![
                DefinitionCommand::SetPolicy(policy("p", PolicyKind::Operator, ".*")),
                DefinitionCommand::DeclareQueue(q),
                DefinitionCommand::Bind {
                    binding: b,
                    durable: true,
                },
            ],
        ),
    ]);
    let bytes = serde_json::to_vec(&state).expect("serialized");
    let back: MetadataState = serde_json::from_slice(&bytes).expect("read back");
    assert_eq!(back, state);
    // A snapshot of an older version (the name alone) reads as that and the seeded vhost.
    let old: MetadataState = serde_json::from_slice(br#"{"cluster_name":"x"}"#).expect("old");
    assert_eq!(old.cluster_name.as_deref(), Some("x"));
    assert!(old.definitions.contains_key("/"));
}

/// A few names, so that random commands meet each other's.
fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned)
}

fn vhost_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["/", "v"]).prop_map(str::to_owned)
}

fn arguments() -> impl Strategy<Value = FieldTable> {
    prop::option::of(0i32..2).prop_map(|n| {
        let mut table = FieldTable::default();
        if let Some(n) = n {
            table.insert("x-match".into(), AMQPValue::LongInt(n));
        }
        table
    })
}

fn a_binding() -> impl Strategy<Value = BindingDefinition> {
    (
        prop::sample::select(vec!["a", "b", "amq.topic"]),
        name(),
        any::<bool>(),
        prop::sample::select(vec!["", "k"]),
        arguments(),
    )
        .prop_map(
            |(source, destination, to_exchange, key, arguments)| BindingDefinition {
                source: source.to_owned(),
                destination,
                destination_kind: match to_exchange {
                    true => DestinationKind::Exchange,
                    false => DestinationKind::Queue,
                },
                routing_key: key.to_owned(),
                arguments,
            },
        )
}

fn definition_command() -> impl Strategy<Value = DefinitionCommand> {
    prop_oneof![
        3 => (name(), any::<bool>(), any::<bool>()).prop_map(|(n, durable, exclusive)| {
            let mut q = queue(&n, durable && !exclusive);
            q.exclusive_owner = exclusive.then_some(5);
            DefinitionCommand::DeclareQueue(q)
        }),
        1 => (name(), 0u64..6).prop_map(|(name, incarnation)| DefinitionCommand::DeleteQueue {
            name,
            storage_id: None,
            incarnation,
        }),
        2 => (name(), any::<bool>())
            .prop_map(|(n, auto_delete)| DefinitionCommand::DeclareExchange(exchange(&n, auto_delete))),
        1 => name().prop_map(|name| DefinitionCommand::DeleteExchange { name, durable: true }),
        3 => a_binding().prop_map(|binding| DefinitionCommand::Bind { binding, durable: true }),
        1 => a_binding().prop_map(|binding| DefinitionCommand::Unbind { binding, durable: true }),
        1 => (name(), any::<bool>(), prop::sample::select(vec!["^a", ".*"])).prop_map(
            |(n, operator, pattern)| {
                let kind = match operator {
                    true => PolicyKind::Operator,
                    false => PolicyKind::User,
                };
                DefinitionCommand::SetPolicy(policy(&n, kind, pattern))
            }
        ),
        1 => name().prop_map(|name| DefinitionCommand::ClearPolicy { kind: PolicyKind::User, name }),
        1 => (name(), 0u64..6, prop::sample::subsequence(vec!["n1", "n2", "n3"], 1..=3)).prop_map(
            |(name, incarnation, members)| DefinitionCommand::SetQueueMembers {
                name,
                incarnation,
                members: members.into_iter().map(str::to_owned).collect(),
            }
        ),
    ]
}

fn access_change() -> impl Strategy<Value = AccessChange> {
    let user = prop::sample::select(vec!["guest", "alice"]).prop_map(str::to_owned);
    prop_oneof![
        (user.clone(), any::<bool>()).prop_map(|(name, admin)| AccessChange::PutUser(UserRecord {
            name,
            tags: admin
                .then(|| "administrator".to_owned())
                .into_iter()
                .collect(),
            ..UserRecord::default()
        })),
        user.clone().prop_map(AccessChange::DeleteUser),
        (vhost_name(), "[a-z]{0,2}").prop_map(|(name, description)| AccessChange::PutVhost(
            VhostRecord {
                name,
                description,
                ..VhostRecord::default()
            }
        )),
        vhost_name().prop_map(AccessChange::DeleteVhost),
        (
            vhost_name(),
            user.clone(),
            prop::sample::select(vec![".*", ""])
        )
            .prop_map(|(vhost, user, read)| AccessChange::PutPermission(
                PermissionRecord {
                    user,
                    vhost,
                    configure: ".*".to_owned(),
                    write: ".*".to_owned(),
                    read: read.to_owned(),
                }
            )),
        (vhost_name(), user.clone())
            .prop_map(|(vhost, user)| AccessChange::DeletePermission { vhost, user }),
        (vhost_name(), user, 0usize..3).prop_map(|(vhost, user, n)| {
            let permissions = (0..n)
                .map(|i| TopicPermissionRecord {
                    user: user.clone(),
                    vhost: vhost.clone(),
                    exchange: format!("x{i}"),
                    write: ".*".to_owned(),
                    read: ".*".to_owned(),
                })
                .collect();
            AccessChange::SetTopicPermissions {
                vhost,
                user,
                permissions,
            }
        }),
    ]
}

fn metadata_command() -> impl Strategy<Value = MetadataCommand> {
    prop_oneof![
        1 => "[a-z]{1,3}".prop_map(MetadataCommand::SetClusterName),
        6 => (vhost_name(), prop::collection::vec(definition_command(), 1..4))
            .prop_map(|(vhost, commands)| definitions(&vhost, commands)),
        2 => access_change().prop_map(MetadataCommand::Access),
    ]
}

/// Entries with their proposals: two nodes, numbers counting up.
fn entries() -> impl Strategy<Value = Vec<(Declarer, MetadataCommand)>> {
    prop::collection::vec((0u64..2, metadata_command()), 0..40).prop_map(|list| {
        list.into_iter()
            .enumerate()
            .map(|(at, (node, command))| {
                let declarer = Declarer {
                    node,
                    number: at as u64,
                };
                (declarer, command)
            })
            .collect()
    })
}

fn apply_all(state: &mut MetadataState, first_index: u64, entries: &[(Declarer, MetadataCommand)]) {
    for (at, (declarer, command)) in entries.iter().enumerate() {
        state.apply(first_index + at as u64, *declarer, command);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Applying A then B, or installing the snapshot taken after B on the state after A, gives
    /// the same state; the diff from A's state applied to it gives B's, and so does the diff
    /// from nothing (a node's start).
    #[test]
    fn installing_a_later_snapshot_is_replaying_the_entries(a in entries(), b in entries()) {
        let mut after_a = MetadataState::default();
        apply_all(&mut after_a, 1, &a);
        let mut after_b = after_a.clone();
        apply_all(&mut after_b, a.len() as u64 + 1, &b);

        let snapshot = serde_json::to_vec(&after_b).expect("serialized");
        let installed: MetadataState = serde_json::from_slice(&snapshot).expect("read back");
        prop_assert_eq!(&installed, &after_b);

        prop_assert_eq!(&diffed(&after_a, &installed), &after_b);
        prop_assert_eq!(&diffed(&MetadataState::default(), &installed), &after_b);
        prop_assert!(diff(&after_b, &after_b).is_empty());
    }
}

/// A quorum queue whose members changed is told so by a snapshot's diff, never deleted and
/// declared again (which would delete it on every node).
#[test]
fn a_change_of_members_is_diffed_as_one() {
    let mut before = MetadataState::default();
    let mut q = queue("q", true);
    q.members = None;
    before.apply(
        1,
        Declarer::UNKNOWN,
        &definitions("/", vec![DefinitionCommand::DeclareQueue(q)]),
    );
    let mut after = before.clone();
    let change = DefinitionCommand::SetQueueMembers {
        name: "q".into(),
        incarnation: 1,
        members: vec!["n2".into(), "n3".into()],
    };
    after.apply(
        2,
        Declarer::UNKNOWN,
        &definitions("/", vec![change.clone()]),
    );
    assert_eq!(
        after.definitions["/"].queues["q"].definition.members,
        Some(vec!["n2".to_owned(), "n3".to_owned()])
    );
    assert_eq!(
        diff(&before, &after),
        vec![Change::Definitions {
            vhost: "/".into(),
            commands: vec![change],
        }]
    );
}
