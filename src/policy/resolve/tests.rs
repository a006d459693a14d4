use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Number};
use warren_amqp::types::{AMQPValue, FieldTable};

use super::*;
use crate::policy::{ApplyTo, Policies, PolicyDefinition, PolicyKind};

fn policy(
    name: &str,
    kind: PolicyKind,
    pattern: &str,
    apply_to: ApplyTo,
    priority: i64,
    definition: serde_json::Value,
) -> PolicyDefinition {
    PolicyDefinition {
        name: name.into(),
        kind,
        pattern: pattern.into(),
        apply_to,
        priority: Number::from(priority),
        definition: definition.as_object().cloned().unwrap_or_default(),
    }
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// A queue's effective arguments under the policies of a vhost, as a declare would get them.
fn effective(policies: &Policies, name: &str, arguments: &FieldTable) -> QueueArgs {
    let declared = QueueArgs::parse(arguments, name, "/").unwrap();
    let applied = policies.for_object(ObjectKind::Queue, name);
    queue_args(arguments, &declared, &applied.effective_definition())
}

#[test]
fn the_highest_priority_matching_policy_applies_and_only_it() {
    let mut ps = Policies::default();
    ps.set(policy(
        "low",
        PolicyKind::User,
        "^q",
        ApplyTo::All,
        1,
        json!({"max-length": 10, "message-ttl": 5}),
    ));
    ps.set(policy(
        "high",
        PolicyKind::User,
        "^q\\.",
        ApplyTo::Queues,
        5,
        json!({"max-length": 3}),
    ));
    ps.set(policy(
        "exchanges",
        PolicyKind::User,
        "^q",
        ApplyTo::Exchanges,
        9,
        json!({"alternate-exchange": "ae"}),
    ));
    let applied = ps.for_object(ObjectKind::Queue, "q.a");
    assert_eq!(applied.policy_name(), Some("high"));
    // Only one policy: the lower one's message-ttl does not come along.
    assert_eq!(
        Value::Object(applied.effective_definition()),
        json!({"max-length": 3})
    );
    assert_eq!(
        ps.for_object(ObjectKind::Queue, "qa").policy_name(),
        Some("low")
    );
    assert_eq!(
        ps.for_object(ObjectKind::Exchange, "q.a").policy_name(),
        Some("exchanges")
    );
    assert_eq!(
        ps.for_object(ObjectKind::Queue, "other").policy_name(),
        None
    );
    // Unanchored, as RabbitMQ matches.
    ps.set(policy(
        "mid",
        PolicyKind::User,
        "mid",
        ApplyTo::All,
        0,
        json!({"expires": 5}),
    ));
    assert_eq!(
        ps.for_object(ObjectKind::Queue, "a-mid-b").policy_name(),
        Some("mid")
    );
    // Equal priorities: the first by name.
    ps.set(policy(
        "a-tie",
        PolicyKind::User,
        "^q\\.",
        ApplyTo::All,
        5,
        json!({"max-length": 4}),
    ));
    assert_eq!(
        ps.for_object(ObjectKind::Queue, "q.a").policy_name(),
        Some("a-tie")
    );
    assert!(ps.clear(PolicyKind::User, "a-tie"));
    assert!(!ps.clear(PolicyKind::User, "a-tie"));
    assert_eq!(
        ps.for_object(ObjectKind::Queue, "q.a").policy_name(),
        Some("high")
    );
}

#[test]
fn arguments_policies_and_operator_policies_combine_as_rabbitmq_does() {
    let mut ps = Policies::default();
    ps.set(policy(
        "p",
        PolicyKind::User,
        "^q",
        ApplyTo::Queues,
        0,
        json!({"max-length": 5, "message-ttl": 60000, "expires": 100000, "dead-letter-exchange": "pdlx",
               "dead-letter-routing-key": "prk", "overflow": "reject-publish", "delivery-limit": 9,
               "max-length-bytes": 1000}),
    ));
    ps.set(policy(
        "op",
        PolicyKind::Operator,
        "^q",
        ApplyTo::All,
        0,
        json!({"max-length": 7, "message-ttl": 1000, "delivery-limit": 2}),
    ));
    // No arguments: the merged policies (the operator's smaller values win).
    let a = effective(&ps, "q1", &FieldTable::default());
    assert_eq!(a.max_length, Some(5));
    assert_eq!(a.message_ttl, Some(1000));
    assert_eq!(a.delivery_limit, Some(2));
    assert_eq!(a.expires, Some(100000));
    assert_eq!(a.max_length_bytes, Some(1000));
    assert_eq!(a.dead_letter_exchange.as_deref(), Some("pdlx"));
    assert_eq!(a.dead_letter_routing_key.as_deref(), Some("prk"));
    assert_eq!(a.overflow, Overflow::RejectPublish);
    // Arguments: the smaller value for limits and TTLs, the argument for the rest.
    let args = table(&[
        ("x-max-length", AMQPValue::LongInt(2)),
        ("x-message-ttl", AMQPValue::LongInt(5000)),
        ("x-expires", AMQPValue::LongInt(50)),
        ("x-max-length-bytes", AMQPValue::LongInt(5000)),
        (
            "x-dead-letter-exchange",
            AMQPValue::LongString("adlx".into()),
        ),
        ("x-overflow", AMQPValue::LongString("drop-head".into())),
    ]);
    let a = effective(&ps, "q2", &args);
    assert_eq!(a.max_length, Some(2));
    assert_eq!(a.message_ttl, Some(1000));
    assert_eq!(a.expires, Some(50));
    assert_eq!(a.max_length_bytes, Some(1000));
    assert_eq!(a.dead_letter_exchange.as_deref(), Some("adlx"));
    // Looked up key by key: the policy's routing key still applies with the argument's exchange.
    assert_eq!(a.dead_letter_routing_key.as_deref(), Some("prk"));
    assert_eq!(a.overflow, Overflow::DropHead);
    // What the policies do not touch stays as declared.
    let args = table(&[("x-max-priority", AMQPValue::LongInt(4))]);
    assert_eq!(effective(&ps, "q3", &args).max_priority, Some(4));
    // No policy: the arguments as declared.
    let args = table(&[("x-max-length", AMQPValue::LongInt(2))]);
    assert_eq!(
        effective(&ps, "other", &args),
        QueueArgs::parse(&args, "other", "/").unwrap()
    );
}

#[test]
fn an_exchanges_alternate_exchange_argument_wins_over_its_policy() {
    let def = json!({"alternate-exchange": "pae"});
    let def = def.as_object().unwrap();
    assert_eq!(alternate_exchange(Some("arg"), def).as_deref(), Some("arg"));
    assert_eq!(alternate_exchange(None, def).as_deref(), Some("pae"));
    assert_eq!(alternate_exchange(None, &Definition::new()), None);
}

#[test]
fn only_operator_keys_merge_by_the_smaller_value() {
    let p = json!({"max-length": 5, "message-ttl": 10, "dead-letter-exchange": "d"});
    let op = json!({"max-length": 9, "message-ttl": 3, "expires": 7});
    let merged = merge_definitions(p.as_object(), op.as_object());
    assert_eq!(
        Value::Object(merged),
        json!({"max-length": 5, "message-ttl": 3, "dead-letter-exchange": "d", "expires": 7})
    );
    assert_eq!(merge_definitions(None, None), Definition::new());
    assert_eq!(Value::Object(merge_definitions(None, op.as_object())), op);
}

const PATTERNS: [&str; 6] = ["", "^a", "b$", "a.b", "^(a|b)+$", "c"];
const NUMERIC: [(&str, &str); 5] = [
    ("x-message-ttl", "message-ttl"),
    ("x-expires", "expires"),
    ("x-max-length", "max-length"),
    ("x-max-length-bytes", "max-length-bytes"),
    ("x-delivery-limit", "delivery-limit"),
];

fn apply_to() -> impl Strategy<Value = ApplyTo> {
    prop_oneof![
        Just(ApplyTo::Queues),
        Just(ApplyTo::Exchanges),
        Just(ApplyTo::All)
    ]
}

fn object() -> impl Strategy<Value = ObjectKind> {
    prop_oneof![Just(ObjectKind::Queue), Just(ObjectKind::Exchange)]
}

fn field(declared: &QueueArgs, key: &str) -> Option<u64> {
    match key {
        "message-ttl" => declared.message_ttl,
        "expires" => declared.expires,
        "max-length" => declared.max_length,
        "max-length-bytes" => declared.max_length_bytes,
        _ => declared.delivery_limit,
    }
}

proptest! {
    /// Selection against a model: of the policies whose apply-to covers the object and whose
    /// pattern matches, the highest priority, the first name among equals.
    #[test]
    fn selection_follows_the_model(
        specs in prop::collection::vec(("[a-e]", 0..PATTERNS.len(), apply_to(), -2i64..3), 0..8),
        object in object(),
        name in "[abc]{0,4}",
    ) {
        let mut by_name = BTreeMap::new();
        for (n, pattern, apply_to, priority) in specs {
            let def = policy(&n, PolicyKind::User, PATTERNS[pattern], apply_to, priority, json!({"max-length": 1}));
            by_name.insert(n, Arc::new(Policy::new(def).unwrap()));
        }
        let chosen = select(by_name.values(), object, &name).map(|p| p.definition.name.clone());
        let candidates: Vec<&PolicyDefinition> = by_name.values().map(|p| &p.definition)
            .filter(|d| d.apply_to.covers(object) && regex::Regex::new(&d.pattern).unwrap().is_match(&name))
            .collect();
        let top = candidates.iter().map(|d| d.priority.as_i64().unwrap()).max();
        let expected = top.and_then(|top| candidates.iter()
            .filter(|d| d.priority.as_i64() == Some(top))
            .map(|d| d.name.clone())
            .min());
        prop_assert_eq!(chosen, expected);
    }

    /// Numeric settings: the smallest of argument, policy and operator policy that are set; the
    /// rest: the argument if given, else the policy's.
    #[test]
    fn resolution_takes_the_strictest_limit_and_the_argument_otherwise(
        args in prop::collection::vec(prop::option::of(0u64..1000), NUMERIC.len()),
        user in prop::collection::vec(prop::option::of(1u64..1000), NUMERIC.len()),
        op in prop::collection::vec(prop::option::of(1u64..1000), NUMERIC.len()),
        arg_dlx in prop::option::of("[a-c]"),
        policy_dlx in prop::option::of("[d-f]"),
        arg_overflow in prop::option::of(prop::sample::select(vec!["drop-head", "reject-publish", "reject-publish-dlx"])),
        policy_overflow in prop::option::of(prop::sample::select(vec!["drop-head", "reject-publish", "reject-publish-dlx"])),
    ) {
        let mut arguments = FieldTable::default();
        let mut user_def = Definition::new();
        let mut op_def = Definition::new();
        for (i, (arg, key)) in NUMERIC.iter().enumerate() {
            // x-expires must be positive.
            if let Some(v) = args[i].map(|v| if *arg == "x-expires" { v.max(1) } else { v }) {
                arguments.insert((*arg).into(), AMQPValue::LongLongInt(v as i64));
            }
            if let Some(v) = user[i] { user_def.insert((*key).into(), json!(v)); }
            if let Some(v) = op[i] { op_def.insert((*key).into(), json!(v)); }
        }
        if let Some(d) = &arg_dlx {
            arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(d.as_str().into()));
        }
        if let Some(d) = &policy_dlx { user_def.insert("dead-letter-exchange".into(), json!(d)); }
        if let Some(o) = arg_overflow {
            arguments.insert("x-overflow".into(), AMQPValue::LongString(o.into()));
        }
        if let Some(o) = policy_overflow { user_def.insert("overflow".into(), json!(o)); }
        let declared = QueueArgs::parse(&arguments, "q", "/").unwrap();
        let merged = merge_definitions(Some(&user_def), Some(&op_def));
        let out = queue_args(&arguments, &declared, &merged);
        for (i, (_, key)) in NUMERIC.iter().enumerate() {
            let arg = field(&declared, key);
            let expected = [arg, user[i], op[i]].into_iter().flatten().min();
            prop_assert_eq!(field(&out, key), expected, "{}", key);
        }
        prop_assert_eq!(out.dead_letter_exchange, arg_dlx.or(policy_dlx));
        let overflow = |s: &str| match s {
            "reject-publish" => Overflow::RejectPublish,
            "reject-publish-dlx" => Overflow::RejectPublishDlx,
            _ => Overflow::DropHead,
        };
        prop_assert_eq!(out.overflow, arg_overflow.or(policy_overflow).map(overflow).unwrap_or_default());
    }
}
