//! The queue state machine against a recording context, behaviour by behaviour; `tests/model.rs`
//! holds the reference model and the replay check over random command sequences.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use warren_amqp::encode::encode_properties;
use warren_amqp::protocol::basic::AMQPProperties;

use super::*;
use crate::message::Message;
use crate::queue::args::QueueType;
use crate::queue::{Overflow, QueueArgs};

mod model;
mod replica;

/// A log in memory: what was appended, and the messages it could give back.
#[derive(Default)]
struct MemLog {
    records: Vec<String>,
    durable: u64,
    next_id: u64,
    messages: HashMap<u64, MessageRef>,
}

impl QueueLog for MemLog {
    fn append(&mut self, record: LogRecord) {
        if let LogRecord::Copy { id, message } = &record {
            self.messages.insert(*id, message.clone());
        }
        self.records.push(format!("{record:?}"));
    }
    fn appended(&self) -> u64 {
        self.records.len() as u64
    }
    fn durable(&self) -> u64 {
        self.durable
    }
    fn write_failed(&self, _id: u64) -> bool {
        false
    }
    fn when_durable(&mut self, done: crate::queue::log::WhenDurable) {
        done(true, &|_| true)
    }
    fn next_message_id(&mut self) -> u64 {
        self.next_id += 1;
        1_000_000 + self.next_id
    }
    fn read(
        &mut self,
        ids: &[(u64, bool)],
    ) -> Result<HashMap<u64, MessageRef>, warren_storage::StorageError> {
        Ok(ids
            .iter()
            .filter_map(|(id, _)| Some((*id, self.messages.get(id)?.clone())))
            .collect())
    }
}

use crate::queue::log::LogRecord;

#[derive(Default)]
struct TestCtx {
    now: u64,
    /// Consumers whose connection has no room.
    full: HashSet<u64>,
    /// Channel-wide credit left per consumer (absent: unlimited).
    channel_credit: HashMap<u64, u32>,
    effects: Vec<String>,
    /// Every effect in full (`Debug`: message bytes, dead-letter properties included).
    effects_in_full: Vec<String>,
    deliveries: Vec<(u64, String, bool)>,
    /// The `x-delivery-count` of each delivery.
    delivery_counts: Vec<Option<i64>>,
    log: MemLog,
}

impl Context for TestCtx {
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn wall_clock_ms(&self) -> u64 {
        1_700_000_000_000 + self.now
    }
    fn consumer_has_room(&mut self, consumer: u64) -> bool {
        !self.full.contains(&consumer) && self.channel_credit.get(&consumer) != Some(&0)
    }
    fn take_channel_credit(&mut self, consumer: u64) -> bool {
        match self.channel_credit.get_mut(&consumer) {
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
            None => true,
        }
    }
    fn emit(&mut self, effect: Effect) {
        if let Effect::Deliver {
            consumer,
            message,
            redelivered,
            ..
        } = &effect
        {
            self.deliveries
                .push((*consumer, body_of(message), *redelivered));
            self.delivery_counts.push(delivery_count(message));
        }
        self.effects.push(describe(&effect));
        self.effects_in_full.push(format!("{effect:?}"));
    }
    fn log(&mut self) -> &mut dyn QueueLog {
        &mut self.log
    }
}

fn describe(effect: &Effect) -> String {
    match effect {
        Effect::Deliver {
            consumer,
            delivery,
            redelivered,
            no_ack,
            message,
        } => format!(
            "deliver {consumer} {delivery} {redelivered} {no_ack} {}",
            body_of(message)
        ),
        Effect::ConsumerCancelled { consumer } => format!("cancelled {consumer}"),
        Effect::DeadLetter(d) => format!(
            "dead-letter {} {:?} {:?} {}",
            d.exchange,
            d.routing_keys,
            d.reason,
            body_of(&d.message)
        ),
        Effect::Deleted => "deleted".into(),
    }
}

/// The state of a queue without a log (which every test queue of this kind has).
fn state_of(q: &QueueCore) -> ReplicaState {
    q.replica_state()
        .expect("a queue without a log has a replica state")
}

/// Ready entries in the order they would be delivered: highest priority level first.
fn ready_in_delivery_order(state: &ReplicaState) -> impl Iterator<Item = &ReplicaEntry> {
    state.ready.iter().rev().flatten()
}

fn body_of(m: &MessageRef) -> String {
    String::from_utf8_lossy(m.body()).into_owned()
}

fn message(body: &str, expiration: Option<u64>, storage_id: Option<u64>) -> MessageRef {
    let mut props = AMQPProperties::default();
    if let Some(ms) = expiration {
        props = props.with_expiration(ms.to_string().into());
    }
    if storage_id.is_some() {
        props = props.with_delivery_mode(2);
    }
    message_of(&props, body, storage_id)
}

/// A message published with `props` through the default exchange to queue `q`.
fn message_of(props: &AMQPProperties, body: &str, storage_id: Option<u64>) -> MessageRef {
    let raw = encode_properties(props).expect("encodable properties");
    Message::from_parts(
        b"",
        b"q",
        &raw,
        Bytes::copy_from_slice(body.as_bytes()),
        storage_id,
    )
}

fn queue(args: QueueArgs) -> QueueCore {
    queue_with(args, false, u64::MAX)
}

fn queue_with(args: QueueArgs, logged: bool, memory_limit: u64) -> QueueCore {
    let spec = CoreSpec {
        name: "q".into(),
        vhost: "/".into(),
        args,
        auto_delete: false,
        logged,
        memory_limit,
    };
    QueueCore::new(spec, 0)
}

fn consumer(id: u64, prefetch: u32) -> ConsumerSpec {
    ConsumerSpec {
        id,
        no_ack: false,
        exclusive: false,
        prefetch,
        priority: 0,
    }
}

/// A publish as a router makes it: a message with a storage id comes with its durable form.
fn publish_command(message: MessageRef) -> Command {
    let logged = message.storage_id().map(|id| warren_storage::Enqueued {
        id,
        data: warren_storage::SealedMessage::unsealed(message.to_stored()),
        shared: false,
    });
    Command::Publish { message, logged }
}

fn publish(q: &mut QueueCore, ctx: &mut TestCtx, body: &str) -> bool {
    matches!(
        q.apply(publish_command(message(body, None, None)), ctx),
        Outcome::Published(Taken::Taken)
    )
}

fn got(outcome: Outcome) -> Option<(String, bool, u32)> {
    match outcome {
        Outcome::Got(g) => g.map(|g| (body_of(&g.message), g.redelivered, g.remaining)),
        other => panic!("expected a get answer, got {other:?}"),
    }
}

#[test]
fn deliveries_go_round_robin_within_prefetch_and_resume_on_ack() {
    let (mut q, mut ctx) = (queue(QueueArgs::default()), TestCtx::default());
    q.apply(Command::Consume(consumer(1, 1)), &mut ctx);
    q.apply(Command::Consume(consumer(2, 1)), &mut ctx);
    for body in ["a", "b", "c"] {
        publish(&mut q, &mut ctx, body);
    }
    q.apply(Command::Tick, &mut ctx);
    assert_eq!(
        ctx.deliveries,
        vec![(1, "a".into(), false), (2, "b".into(), false)]
    );
    assert_eq!(q.stats().ready, 1);
    q.apply(Command::Ack(vec![0]), &mut ctx);
    q.apply(Command::Tick, &mut ctx);
    assert_eq!(ctx.deliveries[2], (1, "c".into(), false));
}

#[test]
fn requeued_message_goes_back_to_its_place_marked_redelivered() {
    let (mut q, mut ctx) = (queue(QueueArgs::default()), TestCtx::default());
    for body in ["a", "b"] {
        publish(&mut q, &mut ctx, body);
    }
    assert_eq!(
        got(q.apply(Command::Get { no_ack: false }, &mut ctx)),
        Some(("a".into(), false, 1))
    );
    q.apply(Command::Requeue(vec![0]), &mut ctx);
    assert_eq!(
        got(q.apply(Command::Get { no_ack: true }, &mut ctx)),
        Some(("a".into(), true, 1))
    );
}

/// The `x-delivery-count` header a message carries, if any.
fn delivery_count(message: &MessageRef) -> Option<i64> {
    let (_, props) = warren_amqp::protocol::basic::parse_properties(message.properties()).ok()?;
    match props.headers().as_ref()?.inner().get("x-delivery-count")? {
        warren_amqp::types::AMQPValue::LongLongInt(n) => Some(*n),
        other => panic!("x-delivery-count of another type: {other:?}"),
    }
}

fn quorum() -> QueueArgs {
    QueueArgs {
        queue_type: QueueType::Quorum,
        ..Default::default()
    }
}

#[test]
fn a_quorum_queue_returns_to_the_back_and_counts_deliveries() {
    let (mut q, mut ctx) = (queue(quorum()), TestCtx::default());
    for body in ["a", "b", "c"] {
        publish(&mut q, &mut ctx, body);
    }
    let Outcome::Got(Some(first)) = q.apply(Command::Get { no_ack: false }, &mut ctx) else {
        panic!("a get answer");
    };
    // RabbitMQ's basic.get answers carry the count from the first delivery.
    assert_eq!(delivery_count(&first.message), Some(0));
    q.apply(Command::Requeue(vec![first.id]), &mut ctx);
    let mut order = Vec::new();
    let mut ids = Vec::new();
    while let Outcome::Got(Some(g)) = q.apply(Command::Get { no_ack: false }, &mut ctx) {
        order.push((
            body_of(&g.message),
            g.redelivered,
            delivery_count(&g.message),
        ));
        ids.push(g.id);
    }
    assert_eq!(
        order,
        [
            ("b".into(), false, Some(0)),
            ("c".into(), false, Some(0)),
            ("a".into(), true, Some(1)),
        ]
    );
    // Handed back together (basic.recover): behind, in delivery order, counted again.
    q.apply(Command::Requeue(ids), &mut ctx);
    let mut order = Vec::new();
    while let Outcome::Got(Some(g)) = q.apply(Command::Get { no_ack: true }, &mut ctx) {
        order.push((body_of(&g.message), delivery_count(&g.message)));
    }
    assert_eq!(
        order,
        [
            ("b".into(), Some(1)),
            ("c".into(), Some(1)),
            ("a".into(), Some(2)),
        ]
    );
}

#[test]
fn a_quorum_queue_consumer_sees_the_count_on_redeliveries_only() {
    let (mut q, mut ctx) = (queue(quorum()), TestCtx::default());
    publish(&mut q, &mut ctx, "a");
    publish(&mut q, &mut ctx, "b");
    q.apply(Command::Consume(consumer(1, 1)), &mut ctx);
    q.apply(Command::Tick, &mut ctx);
    q.apply(Command::Requeue(vec![0]), &mut ctx);
    q.apply(Command::Tick, &mut ctx);
    q.apply(Command::Ack(vec![1]), &mut ctx);
    q.apply(Command::Tick, &mut ctx);
    assert_eq!(
        ctx.deliveries,
        [
            (1, "a".into(), false),
            (1, "b".into(), false),
            (1, "a".into(), true)
        ],
        "{:?}",
        ctx.effects
    );
    assert_eq!(
        ctx.delivery_counts,
        [None, None, Some(1)],
        "{:?}",
        ctx.effects
    );
}

#[test]
fn zero_ttl_reaches_a_waiting_consumer_and_expires_without_one() {
    let args = QueueArgs {
        message_ttl: Some(0),
        ..Default::default()
    };
    let (mut q, mut ctx) = (queue(args), TestCtx::default());
    q.apply(Command::Consume(consumer(1, 0)), &mut ctx);
    publish(&mut q, &mut ctx, "now");
    assert_eq!(ctx.deliveries, vec![(1, "now".into(), false)]);
    q.apply(Command::Cancel { consumer: 1 }, &mut ctx);
    publish(&mut q, &mut ctx, "never");
    ctx.now += 1;
    q.apply(Command::Tick, &mut ctx);
    assert_eq!(q.stats().ready, 0, "expired");
    assert_eq!(ctx.deliveries.len(), 1);
}

#[test]
fn ttl_expiry_dead_letters_with_the_queue_dead_letter_exchange() {
    let args = QueueArgs {
        message_ttl: Some(10),
        dead_letter_exchange: Some("dlx".into()),
        ..Default::default()
    };
    let (mut q, mut ctx) = (queue(args), TestCtx::default());
    publish(&mut q, &mut ctx, "m");
    assert_eq!(q.next_wakeup(|| ctx.now), Some(11));
    ctx.now = 10;
    q.apply(Command::Tick, &mut ctx);
    assert_eq!(q.stats().ready, 1, "not expired yet");
    ctx.now = 11;
    q.apply(Command::Tick, &mut ctx);
    assert_eq!(q.stats().ready, 0);
    assert_eq!(ctx.effects, vec![r#"dead-letter dlx ["q"] Expired m"#]);
}

#[test]
fn requeue_over_max_length_drops_from_the_head() {
    let args = QueueArgs {
        max_length: Some(1),
        dead_letter_exchange: Some("dlx".into()),
        ..Default::default()
    };
    let (mut q, mut ctx) = (queue(args), TestCtx::default());
    publish(&mut q, &mut ctx, "first");
    got(q.apply(Command::Get { no_ack: false }, &mut ctx));
    publish(&mut q, &mut ctx, "second");
    q.apply(Command::Requeue(vec![0]), &mut ctx);
    assert_eq!(q.stats().ready, 1);
    assert_eq!(ctx.effects, vec![r#"dead-letter dlx ["q"] MaxLen first"#]);
}

#[test]
fn reject_publish_refuses_over_the_limit() {
    let args = QueueArgs {
        max_length: Some(1),
        overflow: Overflow::RejectPublish,
        ..Default::default()
    };
    let (mut q, mut ctx) = (queue(args), TestCtx::default());
    assert!(publish(&mut q, &mut ctx, "a"));
    assert!(!publish(&mut q, &mut ctx, "b"));
    assert_eq!(q.stats().ready, 1);
}

#[test]
fn exclusive_consumer_excludes_others() {
    let (mut q, mut ctx) = (queue(QueueArgs::default()), TestCtx::default());
    let mut first = consumer(1, 0);
    first.exclusive = true;
    assert!(matches!(
        q.apply(Command::Consume(first), &mut ctx),
        Outcome::Consumed(Ok(()))
    ));
    let Outcome::Consumed(Err(e)) = q.apply(Command::Consume(consumer(2, 0)), &mut ctx) else {
        panic!("second consumer accepted");
    };
    assert_eq!(
        e.reply_text(),
        "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
    );
}

#[test]
fn delete_if_unused_refuses_while_consumed_and_deletion_cancels_consumers() {
    let (mut q, mut ctx) = (queue(QueueArgs::default()), TestCtx::default());
    q.apply(Command::Consume(consumer(7, 0)), &mut ctx);
    let refused = q.apply(
        Command::Delete {
            if_unused: true,
            if_empty: false,
        },
        &mut ctx,
    );
    assert!(matches!(refused, Outcome::Deleted(Err(_))));
    publish(&mut q, &mut ctx, "a");
    ctx.full.insert(7);
    q.apply(Command::Tick, &mut ctx);
    let deleted = q.apply(
        Command::Delete {
            if_unused: false,
            if_empty: false,
        },
        &mut ctx,
    );
    assert!(matches!(deleted, Outcome::Deleted(Ok(1))));
    assert_eq!(ctx.effects, vec!["cancelled 7", "deleted"]);
    assert!(q.is_deleted());
    assert!(matches!(
        q.apply(publish_command(message("late", None, None)), &mut ctx),
        Outcome::Done
    ));
}

#[test]
fn unused_queue_expires_and_auto_delete_follows_the_last_consumer() {
    let args = QueueArgs {
        expires: Some(100),
        ..Default::default()
    };
    let (mut q, mut ctx) = (queue(args), TestCtx::default());
    assert_eq!(q.next_wakeup(|| 0), Some(100));
    ctx.now = 99;
    q.apply(Command::Tick, &mut ctx);
    assert!(!q.is_deleted());
    ctx.now = 100;
    q.apply(Command::Tick, &mut ctx);
    assert!(q.is_deleted());

    let spec = CoreSpec {
        name: "auto".into(),
        vhost: "/".into(),
        args: QueueArgs::default(),
        auto_delete: true,
        logged: false,
        memory_limit: u64::MAX,
    };
    let (mut q, mut ctx) = (QueueCore::new(spec, 0), TestCtx::default());
    q.apply(Command::Consume(consumer(1, 0)), &mut ctx);
    q.apply(Command::Cancel { consumer: 1 }, &mut ctx);
    assert!(q.is_deleted());
    assert_eq!(ctx.effects, vec!["deleted"]);
}

#[test]
fn channel_wide_credit_and_full_connections_hold_deliveries_back() {
    let (mut q, mut ctx) = (queue(QueueArgs::default()), TestCtx::default());
    ctx.channel_credit.insert(1, 1);
    q.apply(Command::Consume(consumer(1, 0)), &mut ctx);
    let mut no_ack = consumer(2, 0);
    no_ack.no_ack = true;
    ctx.channel_credit.insert(2, 0);
    q.apply(Command::Consume(no_ack), &mut ctx);
    for body in ["a", "b"] {
        publish(&mut q, &mut ctx, body);
    }
    q.apply(Command::Tick, &mut ctx);
    assert_eq!(ctx.deliveries, vec![(1, "a".into(), false)]);
    ctx.channel_credit.insert(2, 5);
    ctx.full.insert(2);
    q.apply(Command::Tick, &mut ctx);
    assert_eq!(ctx.deliveries.len(), 1);
    ctx.full.clear();
    q.apply(Command::Tick, &mut ctx);
    assert_eq!(ctx.deliveries[1], (2, "b".into(), false));
}

#[test]
fn undelivered_messages_return_unmarked_and_the_consumer_goes() {
    let (mut q, mut ctx) = (queue(QueueArgs::default()), TestCtx::default());
    q.apply(Command::Consume(consumer(1, 0)), &mut ctx);
    publish(&mut q, &mut ctx, "a");
    q.apply(Command::Tick, &mut ctx);
    q.apply(
        Command::Undelivered {
            consumer: Some(1),
            deliveries: vec![0],
        },
        &mut ctx,
    );
    assert_eq!(q.stats().consumers, 0);
    assert_eq!(
        got(q.apply(Command::Get { no_ack: true }, &mut ctx)),
        Some(("a".into(), false, 0))
    );
}

#[test]
fn over_the_memory_limit_messages_page_out_once_durable_and_come_back() {
    let (mut q, mut ctx) = (
        queue_with(QueueArgs::default(), true, 2),
        TestCtx::default(),
    );
    for (i, body) in ["p1", "t2", "p3"].into_iter().enumerate() {
        let id = (i % 2 == 0).then_some(i as u64 + 1);
        let m = message(body, None, id);
        if let Some(id) = id {
            ctx.log.messages.insert(id, m.clone());
        }
        q.apply(publish_command(m), &mut ctx);
    }
    assert_eq!(
        q.page_out_backlog(),
        2,
        "p1 fits in memory, t2 and p3 do not"
    );
    assert!(
        ctx.log.records[0].starts_with("Copy"),
        "{:?}",
        ctx.log.records
    );
    q.apply(Command::Tick, &mut ctx);
    assert!(
        ctx.log.records[1].starts_with("Enqueued([Enqueued { id: 1,")
            && ctx.log.records[1].contains("Enqueued { id: 3,"),
        "the persistent messages are logged together at the batch's end: {:?}",
        ctx.log.records
    );
    assert_eq!(q.page_out_backlog(), 2, "not durable yet");
    ctx.log.durable = ctx.log.appended();
    q.apply(Command::Tick, &mut ctx);
    assert_eq!(q.page_out_backlog(), 0);
    let bodies: Vec<_> = (0..3)
        .filter_map(|_| got(q.apply(Command::Get { no_ack: true }, &mut ctx)))
        .map(|(b, _, _)| b)
        .collect();
    assert_eq!(bodies, ["p1", "t2", "p3"]);
    q.apply(Command::Tick, &mut ctx);
    let last = ctx.log.records.join("\n");
    assert!(last.contains("Removed([1, 3])"), "{last}");
    assert!(last.contains("CopiesRemoved([1000001])"), "{last}");
}

#[test]
fn persistent_messages_are_logged_once_per_batch_before_their_removal() {
    let args = QueueArgs {
        max_length: Some(1),
        overflow: Overflow::RejectPublish,
        ..Default::default()
    };
    let (mut q, mut ctx) = (queue_with(args, true, 1 << 20), TestCtx::default());
    let taken = |o: Outcome| match o {
        Outcome::Published(t) => t,
        other => panic!("expected a publish answer, got {other:?}"),
    };
    let first = taken(q.apply(publish_command(message("a", None, Some(1))), &mut ctx));
    let refused = taken(q.apply(publish_command(message("b", None, Some(2))), &mut ctx));
    assert_eq!((first, refused), (Taken::Logged, Taken::Refused));
    assert!(
        ctx.log.records.is_empty(),
        "nothing written before the batch ends"
    );
    assert_eq!(
        got(q.apply(Command::Get { no_ack: true }, &mut ctx)),
        Some(("a".into(), false, 0))
    );
    q.apply(Command::Tick, &mut ctx);
    let records = ctx.log.records.join("\n");
    let enqueued = records.find("Enqueued([Enqueued { id: 1,").expect(&records);
    let removed = records.find("Removed([1])").expect(&records);
    assert!(enqueued < removed, "enqueue before removal: {records}");
    assert!(
        !records.contains("id: 2"),
        "a refused message is not logged: {records}"
    );
}

#[test]
fn a_queue_deleted_before_its_batch_ends_logs_only_its_deletion() {
    let (mut q, mut ctx) = (
        queue_with(QueueArgs::default(), true, 1 << 20),
        TestCtx::default(),
    );
    q.apply(publish_command(message("a", None, Some(1))), &mut ctx);
    q.apply(
        Command::Delete {
            if_unused: false,
            if_empty: false,
        },
        &mut ctx,
    );
    q.apply(Command::Tick, &mut ctx);
    assert_eq!(ctx.log.records, ["Deleted { remembered_ids: false }"]);
}

/// A logged quorum queue with at-least-once dead-lettering (and reject-publish) keeps a
/// dead-letter's message in its log until it is released, and counts it against its length
/// limit meanwhile; at-most-once (or a replicated machine's core, unlogged) removes it at once.
#[test]
fn an_at_least_once_dead_letter_stays_in_the_log_until_released() {
    use crate::queue::args::DeadLetterStrategy;
    let args = |strategy| QueueArgs {
        dead_letter_exchange: Some("dlx".into()),
        dead_letter_strategy: strategy,
        overflow: Overflow::RejectPublish,
        max_length: Some(2),
        ..quorum()
    };
    let held_of = |effects: &[String]| effects.iter().filter(|e| e.contains("held: Some")).count();
    for (strategy, logged, holds) in [
        (DeadLetterStrategy::AtLeastOnce, true, true),
        (DeadLetterStrategy::AtMostOnce, true, false),
        (DeadLetterStrategy::AtLeastOnce, false, false),
    ] {
        let mut q = queue_with(args(strategy), logged, 1 << 20);
        let mut ctx = TestCtx::default();
        for (body, id) in [("a", 1), ("b", 2)] {
            q.apply(publish_command(message(body, None, Some(id))), &mut ctx);
        }
        let Outcome::Got(Some(got)) = q.apply(Command::Get { no_ack: false }, &mut ctx) else {
            panic!("a message");
        };
        q.apply(Command::Reject(vec![got.id]), &mut ctx);
        q.apply(Command::Tick, &mut ctx);
        let what = format!("{strategy:?}, logged {logged}");
        assert_eq!(held_of(&ctx.effects_in_full), usize::from(holds), "{what}");
        let records = ctx.log.records.join("\n");
        // Removed from the log at once unless held (an unlogged queue logs nothing).
        assert_eq!(
            records.contains("Removed([1])"),
            logged && !holds,
            "{what}: {records}"
        );
        // Held, the log says so (a restart dead-letters it again) and why.
        assert_eq!(
            records.contains("Held([(1, Rejected)])"),
            logged && holds,
            "{what}: {records}"
        );
        // Held, it still counts against the limit: the queue (one ready, one held) is full.
        let refused = matches!(
            q.apply(publish_command(message("c", None, Some(3))), &mut ctx),
            Outcome::Published(Taken::Refused)
        );
        assert_eq!(refused, holds, "{what}");
        if holds {
            assert_eq!(q.stats().held_dead_letters, 1);
            q.apply(Command::DeadLettersReleased(vec![0]), &mut ctx);
            q.apply(Command::Tick, &mut ctx);
            let records = ctx.log.records.join("\n");
            assert!(records.contains("Released([1])"), "{records}");
            assert!(records.contains("Removed([1])"), "{records}");
            assert_eq!(q.stats().held_dead_letters, 0);
            let taken = q.apply(publish_command(message("d", None, Some(4))), &mut ctx);
            assert!(matches!(taken, Outcome::Published(Taken::Logged)), "{what}");
        }
    }
}

/// A dead-letter a logged at-least-once queue held unconfirmed before a restart is dead-lettered
/// again when the queue comes back (held until confirmed, as before), not put back among the
/// ready messages; one the queue no longer holds dead-letters for goes back among them.
#[test]
fn a_held_dead_letter_recovered_is_dead_lettered_again() {
    use crate::queue::args::DeadLetterStrategy;
    use crate::queue::dead_letter::Reason;
    for (strategy, held_again) in [
        (DeadLetterStrategy::AtLeastOnce, true),
        (DeadLetterStrategy::AtMostOnce, false),
    ] {
        let args = QueueArgs {
            dead_letter_exchange: Some("dlx".into()),
            dead_letter_strategy: strategy,
            overflow: Overflow::RejectPublish,
            ..quorum()
        };
        let mut q = queue_with(args, true, 1 << 20);
        let mut ctx = TestCtx::default();
        for (body, id, dead_lettered) in [("a", 1, Some(Reason::Expired)), ("b", 2, None)] {
            let entry = RecoveredEntry {
                slot: Slot::Loaded(message(body, None, Some(id))),
                expiration_ms: None,
                redelivered: false,
                dead_lettered,
            };
            q.recover(entry, &mut ctx);
        }
        q.apply(Command::Tick, &mut ctx);
        let what = format!("{strategy:?}");
        let dead: Vec<&String> = ctx
            .effects_in_full
            .iter()
            .filter(|e| e.starts_with("DeadLetter"))
            .collect();
        assert_eq!(dead.len(), usize::from(held_again), "{what}: {dead:?}");
        if held_again {
            assert!(dead[0].contains("held: Some"), "{what}: {dead:?}");
            assert!(dead[0].contains("Expired"), "{what}: {dead:?}");
            assert_eq!(q.stats().held_dead_letters, 1, "{what}");
        }
        assert_eq!(q.stats().ready, 2 - u32::from(held_again), "{what}");
    }
}
