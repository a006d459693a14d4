//! Replica state: a queue restored from another's state (through postcard, as a snapshot travels)
//! behaves as the original from then on, over random command sequences; and each part of the
//! state, one by one.

use proptest::prelude::*;
use warren_amqp::protocol::basic::AMQPProperties;

use super::model::{step, Step};
use super::{consumer, got, message_of, queue, queue_with, state_of, TestCtx};
use crate::message::{MessageRef, INLINE_BODY_MAX};
use crate::queue::args::{Dedup, QueueType};
use crate::queue::core::{
    Command, ConsumerSpec, CoreSpec, Outcome, QueueCore, ReplicaState, ReplicaStateError, Taken,
};
use crate::queue::{Overflow, QueueArgs};

/// A message as the tests publish it: `priority` and `message_id` as properties, `ttl` as its
/// expiration, `storage_id` when it is stored for another (durable) queue it reached.
fn message_with(
    body: &str,
    priority: u8,
    message_id: Option<&str>,
    ttl: Option<u8>,
    storage_id: Option<u64>,
) -> MessageRef {
    let mut props = AMQPProperties::default().with_priority(priority);
    if let Some(id) = message_id {
        props = props.with_message_id(id.into());
    }
    if let Some(ms) = ttl {
        props = props.with_expiration(ms.to_string().into());
    }
    message_of(&props, body, storage_id)
}

fn publish(q: &mut QueueCore, ctx: &mut TestCtx, message: MessageRef) -> Outcome {
    q.apply(
        Command::Publish {
            message,
            logged: None,
        },
        ctx,
    )
}

fn spec(args: QueueArgs) -> CoreSpec {
    CoreSpec {
        name: "q".into(),
        vhost: "/".into(),
        args,
        auto_delete: false,
        logged: false,
        memory_limit: u64::MAX,
    }
}

/// The state through postcard, as a snapshot travels.
fn through_the_wire(state: &ReplicaState) -> ReplicaState {
    let bytes = postcard::to_allocvec(state).expect("a replica state serializes");
    postcard::from_bytes(&bytes).expect("a replica state deserializes")
}

/// A copy of `q` made from its state (`declared`: the arguments the queue was declared with).
fn restored(q: &QueueCore, declared: QueueArgs) -> QueueCore {
    let state = state_of(q);
    let copy = QueueCore::from_replica_state(spec(declared), through_the_wire(&state))
        .expect("a taken state restores");
    assert_eq!(state_of(&copy), state, "the copy's state is the original's");
    copy
}

/// A context that answers as `ctx` would, with nothing recorded yet.
fn same_answers(ctx: &TestCtx) -> TestCtx {
    TestCtx {
        now: ctx.now,
        full: ctx.full.clone(),
        channel_credit: ctx.channel_credit.clone(),
        ..TestCtx::default()
    }
}

fn with_priorities() -> QueueArgs {
    QueueArgs {
        max_priority: Some(3),
        ..QueueArgs::default()
    }
}

#[test]
fn ready_entries_keep_their_levels_order_and_message_bytes() {
    let (mut q, mut ctx) = (queue(with_priorities()), TestCtx::default());
    let large = "L".repeat(INLINE_BODY_MAX + 1);
    publish(&mut q, &mut ctx, message_with("low", 0, None, None, None));
    publish(
        &mut q,
        &mut ctx,
        message_with(&large, 3, None, None, Some(7)),
    );
    publish(
        &mut q,
        &mut ctx,
        message_with("high", 3, None, Some(50), None),
    );
    publish(
        &mut q,
        &mut ctx,
        message_with("above-max", 9, None, None, None),
    );
    let state = state_of(&q);
    let levels: Vec<Vec<u64>> = state
        .ready
        .iter()
        .map(|level| level.iter().map(|e| e.id).collect())
        .collect();
    assert_eq!(levels, [vec![0], vec![], vec![], vec![1, 2, 3]]);
    assert_eq!(state.ready[3][0].message.storage_id, Some(7));
    assert_eq!(state.ready[3][1].expires_at, 51);

    let mut copy = restored(&q, with_priorities());
    let mut ctx = TestCtx::default();
    let mut order = Vec::new();
    while let Outcome::Got(Some(g)) = copy.apply(Command::Get { no_ack: true }, &mut ctx) {
        let m = &g.message;
        assert_eq!((m.exchange(), m.routing_key()), (&b""[..], &b"q"[..]));
        order.push((m.body().len(), m.priority, m.storage_id()));
    }
    assert_eq!(
        order,
        [
            (large.len(), 3, Some(7)),
            (4, 3, None),
            (9, 9, None),
            (3, 0, None)
        ]
    );
}

#[test]
fn outstanding_deliveries_settle_on_the_restored_copy() {
    let args = QueueArgs {
        queue_type: QueueType::Quorum,
        ..QueueArgs::default()
    };
    let (mut q, mut ctx) = (queue(args.clone()), TestCtx::default());
    for body in ["a", "b", "c"] {
        publish(&mut q, &mut ctx, message_with(body, 0, None, None, None));
    }
    q.apply(Command::Consume(consumer(1, 1)), &mut ctx);
    q.apply(Command::Tick, &mut ctx);
    // "a" to consumer 1 (its prefetch is used up), "b" to a get.
    assert_eq!(
        got(q.apply(Command::Get { no_ack: false }, &mut ctx)),
        Some(("b".into(), false, 1))
    );
    let state = state_of(&q);
    let held: Vec<_> = state
        .outstanding
        .iter()
        .map(|d| (d.entry.id, d.consumer))
        .collect();
    assert_eq!(held, [(0, Some(1)), (1, None)]);
    assert_eq!(state.consumers[0].unacked, 1);

    let mut copy = restored(&q, args);
    let mut ctx = TestCtx::default();
    // The get's delivery comes back behind "c", counted; the consumer's ack frees its prefetch.
    copy.apply(Command::Requeue(vec![1]), &mut ctx);
    copy.apply(Command::Ack(vec![0]), &mut ctx);
    copy.apply(Command::Tick, &mut ctx);
    copy.apply(Command::Ack(vec![2]), &mut ctx);
    copy.apply(Command::Tick, &mut ctx);
    assert_eq!(
        ctx.deliveries,
        [(1, "c".into(), false), (1, "b".into(), true)]
    );
    assert_eq!(ctx.delivery_counts, [None, Some(1)]);
}

#[test]
fn consumers_resume_the_round_robin_where_it_was() {
    let (mut q, mut ctx) = (queue(QueueArgs::default()), TestCtx::default());
    for id in 1..=3 {
        q.apply(Command::Consume(consumer(id, 0)), &mut ctx);
    }
    publish(&mut q, &mut ctx, message_with("a", 0, None, None, None));
    q.apply(Command::Tick, &mut ctx);
    let state = state_of(&q);
    let registered: Vec<_> = state.consumers.iter().map(|c| c.spec.id).collect();
    assert_eq!((registered, state.next_consumer), (vec![1, 2, 3], 1));

    let mut copy = restored(&q, QueueArgs::default());
    let mut ctx = TestCtx::default();
    for body in ["b", "c", "d"] {
        publish(&mut copy, &mut ctx, message_with(body, 0, None, None, None));
    }
    copy.apply(Command::Tick, &mut ctx);
    let to: Vec<_> = ctx.deliveries.iter().map(|d| d.0).collect();
    assert_eq!(to, [2, 3, 1]);
}

#[test]
fn single_active_consumer_stays_the_first_registered() {
    let args = QueueArgs {
        single_active_consumer: true,
        ..QueueArgs::default()
    };
    let (mut q, mut ctx) = (queue(args.clone()), TestCtx::default());
    let mut high = consumer(8, 0);
    high.priority = 5;
    q.apply(Command::Consume(consumer(9, 0)), &mut ctx);
    q.apply(Command::Consume(high.clone()), &mut ctx);
    let mut copy = restored(&q, args);
    let state = state_of(&copy);
    let specs: Vec<&ConsumerSpec> = state.consumers.iter().map(|c| &c.spec).collect();
    assert_eq!(specs, [&consumer(9, 0), &high]);
    let mut ctx = TestCtx::default();
    publish(&mut copy, &mut ctx, message_with("a", 0, None, None, None));
    copy.apply(Command::Tick, &mut ctx);
    assert_eq!(ctx.deliveries, [(9, "a".into(), false)]);
}

#[test]
fn the_ttl_clock_and_x_expires_carry_over() {
    let args = QueueArgs {
        message_ttl: Some(100),
        expires: Some(1_000),
        dead_letter_exchange: Some("dlx".into()),
        ..QueueArgs::default()
    };
    let (mut q, mut ctx) = (queue(args.clone()), TestCtx::default());
    // Far enough on for the TTL clock to have been re-based: the epoch is no longer 0.
    ctx.now = 3_000_000_000;
    publish(&mut q, &mut ctx, message_with("m", 0, None, None, None));
    q.apply(Command::Stats { used: true }, &mut ctx);
    let state = state_of(&q);
    assert_eq!(state.epoch, 1 << 30);
    assert_eq!(state.last_used, 3_000_000_000);
    let wakeup = q.next_wakeup(|| ctx.now);
    assert_eq!(wakeup, Some(3_000_000_100));

    let mut copy = restored(&q, args);
    assert_eq!(copy.next_wakeup(|| ctx.now), wakeup);
    let mut later = same_answers(&ctx);
    later.now += 100;
    copy.apply(Command::Tick, &mut later);
    assert_eq!(later.effects, [r#"dead-letter dlx ["q"] Expired m"#]);
    later.now += 1_000;
    copy.apply(Command::Tick, &mut later);
    assert!(copy.is_deleted(), "x-expires counts from the last use");
}

#[test]
fn the_deduplication_cache_carries_over_with_its_order() {
    let args = QueueArgs {
        deduplication: Some(Box::new(Dedup {
            cache_size: 2,
            ttl_ms: Some(1_000),
            header: None,
        })),
        ..QueueArgs::default()
    };
    let (mut q, mut ctx) = (queue(args.clone()), TestCtx::default());
    publish(
        &mut q,
        &mut ctx,
        message_with("1", 0, Some("a"), None, None),
    );
    ctx.now = 10;
    publish(
        &mut q,
        &mut ctx,
        message_with("2", 0, Some("b"), None, None),
    );
    let dedup = state_of(&q).dedup.expect("the queue deduplicates");
    let base = 1_700_000_000_000;
    assert_eq!(
        dedup.order,
        [(b"a".to_vec(), base + 1_000), (b"b".to_vec(), base + 1_010)]
    );

    // Not declared with deduplication: the cache comes from the state.
    let mut copy = restored(&q, QueueArgs::default());
    let mut ctx = same_answers(&ctx);
    publish(
        &mut copy,
        &mut ctx,
        message_with("dup", 0, Some("b"), None, None),
    );
    assert_eq!(copy.stats().ready, 2, "b is remembered");
    // c pushes out a, the oldest.
    publish(
        &mut copy,
        &mut ctx,
        message_with("3", 0, Some("c"), None, None),
    );
    publish(
        &mut copy,
        &mut ctx,
        message_with("4", 0, Some("a"), None, None),
    );
    assert_eq!(copy.stats().ready, 4);
}

#[test]
fn configured_arguments_win_over_the_declared_ones() {
    let declared = QueueArgs::default();
    let (mut q, mut ctx) = (queue(declared.clone()), TestCtx::default());
    let configured = QueueArgs {
        max_length: Some(1),
        overflow: Overflow::RejectPublish,
        ..QueueArgs::default()
    };
    q.apply(Command::Configure(configured.clone()), &mut ctx);
    publish(&mut q, &mut ctx, message_with("a", 0, None, None, None));
    let mut copy = restored(&q, declared);
    assert_eq!(state_of(&copy).args, configured);
    let refused = publish(&mut copy, &mut ctx, message_with("b", 0, None, None, None));
    assert!(matches!(refused, Outcome::Published(Taken::Refused)));
}

#[test]
fn a_deleted_queue_stays_deleted() {
    let (mut q, mut ctx) = (queue(QueueArgs::default()), TestCtx::default());
    q.apply(
        Command::Delete {
            if_unused: false,
            if_empty: false,
        },
        &mut ctx,
    );
    let mut copy = restored(&q, QueueArgs::default());
    assert!(copy.is_deleted());
    let mut ctx = TestCtx::default();
    assert!(matches!(
        publish(
            &mut copy,
            &mut ctx,
            message_with("late", 0, None, None, None)
        ),
        Outcome::Done
    ));
    assert!(ctx.effects.is_empty());
}

#[test]
fn a_logged_queue_has_no_replica_state() {
    let q = queue_with(QueueArgs::default(), true, u64::MAX);
    assert_eq!(
        q.replica_state(),
        Err(ReplicaStateError::Logged("q".into()))
    );
    let state = state_of(&queue(QueueArgs::default()));
    let logged = CoreSpec {
        logged: true,
        ..spec(QueueArgs::default())
    };
    assert_eq!(
        QueueCore::from_replica_state(logged, state).err(),
        Some(ReplicaStateError::Logged("q".into()))
    );
}

#[test]
fn malformed_states_are_refused() {
    let (mut q, mut ctx) = (queue(with_priorities()), TestCtx::default());
    publish(&mut q, &mut ctx, message_with("low", 0, None, None, None));
    publish(&mut q, &mut ctx, message_with("low", 0, None, None, None));
    got(q.apply(Command::Get { no_ack: false }, &mut ctx));
    let good = state_of(&q);
    let refused = |change: &dyn Fn(&mut ReplicaState)| {
        let mut state = good.clone();
        change(&mut state);
        QueueCore::from_replica_state(spec(QueueArgs::default()), state).err()
    };
    assert_eq!(
        refused(&|s| s.ready.clear()),
        Some(ReplicaStateError::PriorityLevels(0))
    );
    assert_eq!(
        refused(&|s| s.ready.resize(257, Vec::new())),
        Some(ReplicaStateError::PriorityLevels(257))
    );
    assert_eq!(
        refused(&|s| s.ready.swap(0, 3)),
        Some(ReplicaStateError::MisplacedEntry { id: 1, level: 3 })
    );
    assert_eq!(
        refused(&|s| {
            let e = s.outstanding[0].entry.clone();
            s.ready[0].push(e);
        }),
        Some(ReplicaStateError::OutOfOrder { id: 0, level: 0 })
    );
    assert_eq!(
        refused(&|s| {
            let e = s.ready[0][0].clone();
            s.outstanding[0].entry = e;
        }),
        Some(ReplicaStateError::DuplicateEntry(1))
    );
    assert_eq!(
        refused(&|s| s.next_id = 1),
        Some(ReplicaStateError::IdNotIssued { id: 1, next_id: 1 })
    );
}

/// A command sequence step: the reference model's steps, and what they leave out.
#[derive(Debug, Clone)]
enum Op {
    Model(Step),
    Publish {
        priority: u8,
        message_id: Option<u8>,
        ttl: Option<u8>,
        stored: bool,
        large: bool,
    },
    Consume {
        consumer: u8,
        prefetch: u8,
        priority: i8,
        no_ack: bool,
    },
    Undelivered {
        pick: u8,
    },
    /// A consumer's channel closed: what it holds comes back in one command, newest first.
    RequeueHeldBy {
        consumer: u8,
    },
    Stats {
        used: bool,
    },
    /// A policy change (the queue type, priorities and deduplication stay as declared).
    Configure(QueueArgs),
    Delete {
        if_unused: bool,
        if_empty: bool,
    },
}

fn args() -> impl Strategy<Value = QueueArgs> {
    let limits = (
        proptest::option::of(0u64..6),
        proptest::option::of(1u64..6),
        proptest::option::weighted(0.2, 4u64..40),
        prop_oneof![
            Just(Overflow::DropHead),
            Just(Overflow::RejectPublish),
            Just(Overflow::RejectPublishDlx)
        ],
        proptest::option::of(1u64..3),
        proptest::option::weighted(0.2, 30u64..120),
    );
    let kind = (
        any::<bool>(),
        proptest::option::of(0u8..4),
        any::<bool>(),
        proptest::bool::weighted(0.3),
        proptest::option::of((1usize..5, proptest::option::of(1u64..20))),
    );
    (limits, kind).prop_map(
        |(
            (message_ttl, max_length, max_length_bytes, overflow, delivery_limit, expires),
            (quorum, max_priority, dlx, single_active_consumer, dedup),
        )| QueueArgs {
            queue_type: if quorum {
                QueueType::Quorum
            } else {
                QueueType::Classic
            },
            message_ttl,
            expires,
            max_length,
            max_length_bytes,
            overflow,
            dead_letter_exchange: dlx.then(|| "dlx".into()),
            dead_letter_routing_key: None,
            max_priority,
            single_active_consumer,
            delivery_limit,
            deduplication: dedup.map(|(cache_size, ttl_ms)| {
                Box::new(Dedup {
                    cache_size,
                    ttl_ms,
                    header: None,
                })
            }),
            ..QueueArgs::default()
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        40 => step().prop_map(Op::Model),
        16 => (
            0u8..5,
            proptest::option::of(0u8..6),
            proptest::option::of(0u8..4),
            any::<bool>(),
            proptest::bool::weighted(0.05),
        )
            .prop_map(|(priority, message_id, ttl, stored, large)| Op::Publish {
                priority,
                message_id,
                ttl,
                stored,
                large,
            }),
        4 => (0u8..3, 0u8..3, -1i8..2, proptest::bool::weighted(0.2)).prop_map(
            |(consumer, prefetch, priority, no_ack)| Op::Consume {
                consumer,
                prefetch,
                priority,
                no_ack,
            }
        ),
        4 => any::<u8>().prop_map(|pick| Op::Undelivered { pick }),
        3 => (0u8..3).prop_map(|consumer| Op::RequeueHeldBy { consumer }),
        3 => any::<bool>().prop_map(|used| Op::Stats { used }),
        2 => args().prop_map(Op::Configure),
        1 => (proptest::bool::weighted(0.7), proptest::bool::weighted(0.7))
            .prop_map(|(if_unused, if_empty)| Op::Delete { if_unused, if_empty }),
    ]
}

/// A queue and its context, with every outcome recorded.
struct Copy {
    core: QueueCore,
    ctx: TestCtx,
    outcomes: Vec<String>,
}

/// Applies `op` (the `serial`-th of its sequence) to `copy`. Deliveries are picked from
/// `held`, the state of the copy that leads (every copy's, when they agree).
fn apply_op(op: &Op, serial: usize, declared: &QueueArgs, held: &ReplicaState, copy: &mut Copy) {
    let ctx = &mut copy.ctx;
    let pick = |pick: u8| {
        let n = held.outstanding.len();
        (n > 0).then(|| &held.outstanding[usize::from(pick) % n])
    };
    let body = |large: bool| {
        let mut body = format!("m{serial}");
        if large {
            body.push_str(&"x".repeat(INLINE_BODY_MAX));
        }
        body
    };
    let command = match op.clone() {
        Op::Model(step) => match step {
            Step::Advance { ms } => {
                ctx.now += u64::from(ms);
                return;
            }
            Step::Full { consumer, full } => {
                let id = u64::from(consumer);
                if full {
                    ctx.full.insert(id);
                } else {
                    ctx.full.remove(&id);
                }
                return;
            }
            Step::Publish { ttl } => Command::Publish {
                message: message_with(&body(false), 0, None, ttl, None),
                logged: None,
            },
            Step::Consume { consumer, prefetch } => {
                Command::Consume(self::consumer(u64::from(consumer), u32::from(prefetch)))
            }
            Step::Cancel { consumer } => Command::Cancel {
                consumer: u64::from(consumer),
            },
            Step::Ack { pick: p } => {
                Command::Ack(pick(p).map(|d| d.entry.id).into_iter().collect())
            }
            Step::Reject { pick: p } => {
                Command::Reject(pick(p).map(|d| d.entry.id).into_iter().collect())
            }
            Step::Requeue { pick: p } => {
                Command::Requeue(pick(p).map(|d| d.entry.id).into_iter().collect())
            }
            Step::Get { no_ack } => Command::Get { no_ack },
            Step::Purge => Command::Purge,
            Step::Tick => Command::Tick,
        },
        Op::Publish {
            priority,
            message_id,
            ttl,
            stored,
            large,
        } => Command::Publish {
            message: message_with(
                &body(large),
                priority,
                message_id.map(|id| format!("id{id}")).as_deref(),
                ttl,
                stored.then_some(10_000 + serial as u64),
            ),
            logged: None,
        },
        Op::Consume {
            consumer,
            prefetch,
            priority,
            no_ack,
        } => Command::Consume(ConsumerSpec {
            id: u64::from(consumer),
            no_ack,
            exclusive: false,
            prefetch: u32::from(prefetch),
            priority: i32::from(priority),
        }),
        Op::Undelivered { pick: p } => {
            let Some(d) = pick(p) else { return };
            Command::Undelivered {
                consumer: d.consumer,
                deliveries: vec![d.entry.id],
            }
        }
        Op::RequeueHeldBy { consumer } => Command::Requeue(
            held.outstanding
                .iter()
                .rev()
                .filter(|d| d.consumer == Some(u64::from(consumer)))
                .map(|d| d.entry.id)
                .collect(),
        ),
        Op::Stats { used } => Command::Stats { used },
        Op::Configure(args) => Command::Configure(QueueArgs {
            queue_type: declared.queue_type,
            max_priority: declared.max_priority,
            deduplication: declared.deduplication.clone(),
            ..args
        }),
        Op::Delete {
            if_unused,
            if_empty,
        } => Command::Delete {
            if_unused,
            if_empty,
        },
    };
    let outcome = match copy.core.apply(command, ctx) {
        // The message counts are this copy's own since it started (the management API's
        // rates), not part of the replicated state.
        Outcome::Stats(stats) => Outcome::Stats(crate::queue::QueueStats {
            counts: Default::default(),
            ..stats
        }),
        outcome => outcome,
    };
    copy.outcomes.push(format!("{outcome:?}"));
}

/// Runs `ops[..split]` on one queue, restores a second from its state (through postcard), then
/// runs the rest on both with the same answers: they must do the same and end the same.
fn a_restored_copy_follows(
    declared: QueueArgs,
    ops: &[Op],
    split: usize,
) -> Result<(), TestCaseError> {
    let mut a = Copy {
        core: queue(declared.clone()),
        ctx: TestCtx::default(),
        outcomes: Vec::new(),
    };
    for (serial, op) in ops[..split].iter().enumerate() {
        let held = state_of(&a.core);
        apply_op(op, serial, &declared, &held, &mut a);
    }
    let state = state_of(&a.core);
    let bytes = postcard::to_allocvec(&state).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let decoded: ReplicaState =
        postcard::from_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&decoded, &state);
    let core = QueueCore::from_replica_state(spec(declared.clone()), decoded)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut b = Copy {
        core,
        ctx: same_answers(&a.ctx),
        outcomes: Vec::new(),
    };
    prop_assert_eq!(state_of(&b.core), state);
    let now = a.ctx.now;
    prop_assert_eq!(a.core.next_wakeup(|| now), b.core.next_wakeup(|| now));
    let effects_before = a.ctx.effects_in_full.len();
    let deliveries_before = a.ctx.deliveries.len();
    let outcomes_before = a.outcomes.len();
    for (serial, op) in ops.iter().enumerate().skip(split) {
        let held = state_of(&a.core);
        apply_op(op, serial, &declared, &held, &mut a);
        apply_op(op, serial, &declared, &held, &mut b);
    }
    prop_assert_eq!(&a.outcomes[outcomes_before..], &b.outcomes[..]);
    prop_assert_eq!(&a.ctx.effects[effects_before..], &b.ctx.effects[..]);
    prop_assert_eq!(
        &a.ctx.effects_in_full[effects_before..],
        &b.ctx.effects_in_full[..]
    );
    prop_assert_eq!(
        &a.ctx.deliveries[deliveries_before..],
        &b.ctx.deliveries[..]
    );
    prop_assert_eq!(
        &a.ctx.delivery_counts[deliveries_before..],
        &b.ctx.delivery_counts[..]
    );
    prop_assert_eq!(state_of(&a.core), state_of(&b.core));
    let now = a.ctx.now;
    prop_assert_eq!(a.core.next_wakeup(|| now), b.core.next_wakeup(|| now));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_copy_restored_from_the_state_does_what_the_original_does(
        declared in args(),
        (ops, split) in proptest::collection::vec(op(), 1..120)
            .prop_flat_map(|ops| { let n = ops.len(); (Just(ops), 0..=n) }),
    ) {
        a_restored_copy_follows(declared, &ops, split)?;
    }
}
