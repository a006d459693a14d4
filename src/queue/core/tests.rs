//! The queue state machine against a recording context: behaviours one by one, a reference model
//! fed random command sequences, and a replay check (two copies fed the same commands and the
//! same answers end equal and do the same things).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use proptest::prelude::*;
use warren_amqp::encode::encode_properties;
use warren_amqp::protocol::basic::AMQPProperties;

use super::*;
use crate::message::Message;
use crate::queue::{Overflow, QueueArgs};

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
    deliveries: Vec<(u64, String, bool)>,
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
        }
        self.effects.push(describe(&effect));
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
    let raw = encode_properties(&props).expect("encodable properties");
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

fn publish(q: &mut QueueCore, ctx: &mut TestCtx, body: &str) -> bool {
    matches!(
        q.apply(Command::Publish(message(body, None, None)), ctx),
        Outcome::Published(true)
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
        q.apply(Command::Publish(message("late", None, None)), &mut ctx),
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
        q.apply(Command::Publish(m), &mut ctx);
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

// ---- the reference model ----

#[derive(Debug, Clone)]
enum Step {
    Publish { ttl: Option<u8> },
    Consume { consumer: u8, prefetch: u8 },
    Cancel { consumer: u8 },
    Ack { pick: u8 },
    Reject { pick: u8 },
    Requeue { pick: u8 },
    Get { no_ack: bool },
    Purge,
    Advance { ms: u8 },
    Full { consumer: u8, full: bool },
    Tick,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::option::of(0u8..4).prop_map(|ttl| Step::Publish { ttl }),
        1 => (0u8..3, 0u8..3).prop_map(|(consumer, prefetch)| Step::Consume { consumer, prefetch }),
        1 => (0u8..3).prop_map(|consumer| Step::Cancel { consumer }),
        2 => any::<u8>().prop_map(|pick| Step::Ack { pick }),
        1 => any::<u8>().prop_map(|pick| Step::Reject { pick }),
        1 => any::<u8>().prop_map(|pick| Step::Requeue { pick }),
        1 => any::<bool>().prop_map(|no_ack| Step::Get { no_ack }),
        1 => Just(Step::Purge),
        1 => (0u8..4).prop_map(|ms| Step::Advance { ms }),
        1 => (0u8..3, any::<bool>()).prop_map(|(consumer, full)| Step::Full { consumer, full }),
        3 => Just(Step::Tick),
    ]
}

/// A queue written as plainly as possible: a list of ready messages, a map of deliveries.
#[derive(Default)]
struct Model {
    now: u64,
    next_id: u64,
    /// (entry id, body, redelivered, expires at on the queue clock; 0 = never)
    ready: Vec<(u64, String, bool, u64)>,
    outstanding: Vec<(u64, String, u64, Option<u64>)>,
    /// (id, prefetch, unacked)
    consumers: Vec<(u64, u32, u32)>,
    next_consumer: usize,
    full: HashSet<u64>,
    deliveries: Vec<(u64, String, bool)>,
    published: u64,
    settled: u64,
}

impl Model {
    fn clock(&self) -> u64 {
        self.now.max(1)
    }

    fn expire(&mut self) {
        while self
            .ready
            .first()
            .is_some_and(|e| e.3 != 0 && e.3 <= self.clock())
        {
            self.ready.remove(0);
            self.settled += 1;
        }
    }

    /// The head, once expired heads (strictly before now) have left.
    fn has_head(&mut self) -> bool {
        while self
            .ready
            .first()
            .is_some_and(|e| e.3 != 0 && e.3 < self.clock())
        {
            self.ready.remove(0);
            self.settled += 1;
        }
        !self.ready.is_empty()
    }

    fn dispatch(&mut self) {
        while self.has_head() {
            let n = self.consumers.len();
            let pick = (0..n).map(|k| (self.next_consumer + k) % n).find(|&i| {
                let (id, prefetch, unacked) = self.consumers[i];
                (prefetch == 0 || unacked < prefetch) && !self.full.contains(&id)
            });
            let Some(i) = pick else { break };
            self.next_consumer = (i + 1) % n;
            let (id, body, redelivered, expires) = self.ready.remove(0);
            self.consumers[i].2 += 1;
            let consumer = self.consumers[i].0;
            self.deliveries.push((consumer, body.clone(), redelivered));
            self.outstanding.push((id, body, expires, Some(consumer)));
        }
    }

    fn take(&mut self, pick: u8) -> Option<(u64, String, u64, Option<u64>)> {
        if self.outstanding.is_empty() {
            return None;
        }
        self.outstanding.sort_by_key(|o| o.0);
        let o = self
            .outstanding
            .remove(usize::from(pick) % self.outstanding.len());
        if let Some(c) = self.consumers.iter_mut().find(|c| Some(c.0) == o.3) {
            c.2 = c.2.saturating_sub(1);
        }
        Some(o)
    }
}

fn run_model_and_queue(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut m = Model::default();
    let (mut q, mut ctx) = (queue(QueueArgs::default()), TestCtx::default());
    for s in steps {
        match s.clone() {
            Step::Publish { ttl } => {
                let body = format!("m{}", m.next_id);
                let expires = ttl.map_or(0, |t| m.clock() + u64::from(t));
                m.ready.push((m.next_id, body.clone(), false, expires));
                m.next_id += 1;
                m.published += 1;
                if ttl == Some(0) {
                    m.dispatch();
                }
                q.apply(
                    Command::Publish(message(&body, ttl.map(u64::from), None)),
                    &mut ctx,
                );
            }
            Step::Consume { consumer, prefetch } => {
                let id = u64::from(consumer);
                let fresh = !m.consumers.iter().any(|c| c.0 == id);
                if fresh {
                    m.dispatch();
                    m.consumers.push((id, u32::from(prefetch), 0));
                    q.apply(
                        Command::Consume(self::consumer(id, u32::from(prefetch))),
                        &mut ctx,
                    );
                }
            }
            Step::Cancel { consumer } => {
                let id = u64::from(consumer);
                m.dispatch();
                m.consumers.retain(|c| c.0 != id);
                q.apply(Command::Cancel { consumer: id }, &mut ctx);
            }
            Step::Ack { pick } => {
                if let Some(o) = m.take(pick) {
                    m.settled += 1;
                    q.apply(Command::Ack(vec![o.0]), &mut ctx);
                }
            }
            Step::Reject { pick } => {
                if let Some(o) = m.take(pick) {
                    m.settled += 1;
                    q.apply(Command::Reject(vec![o.0]), &mut ctx);
                }
            }
            Step::Requeue { pick } => {
                if let Some((id, body, expires, _)) = m.take(pick) {
                    let at = m.ready.partition_point(|e| e.0 < id);
                    m.ready.insert(at, (id, body, true, expires));
                    q.apply(Command::Requeue(vec![id]), &mut ctx);
                }
            }
            Step::Get { no_ack } => {
                m.dispatch();
                m.expire();
                let expected = if m.has_head() {
                    let (id, body, redelivered, expires) = m.ready.remove(0);
                    m.expire();
                    if no_ack {
                        m.settled += 1;
                    } else {
                        m.outstanding.push((id, body.clone(), expires, None));
                    }
                    Some((body, redelivered, m.ready.len() as u32))
                } else {
                    None
                };
                let actual = got(q.apply(Command::Get { no_ack }, &mut ctx));
                prop_assert_eq!(actual, expected);
            }
            Step::Purge => {
                m.dispatch();
                let n = m.ready.len() as u32;
                m.settled += u64::from(n);
                m.ready.clear();
                let Outcome::Purged(purged) = q.apply(Command::Purge, &mut ctx) else {
                    return Err(TestCaseError::fail("purge answered something else"));
                };
                prop_assert_eq!(purged, n);
            }
            Step::Advance { ms } => {
                m.now += u64::from(ms);
                ctx.now = m.now;
            }
            Step::Full { consumer, full } => {
                let id = u64::from(consumer);
                if full {
                    m.full.insert(id);
                    ctx.full.insert(id);
                } else {
                    m.full.remove(&id);
                    ctx.full.remove(&id);
                }
            }
            Step::Tick => {
                m.expire();
                m.dispatch();
                q.apply(Command::Tick, &mut ctx);
            }
        }
        prop_assert_eq!(&ctx.deliveries, &m.deliveries);
        let ready: Vec<_> = m.ready.iter().map(|e| (e.0, e.2)).collect();
        let snapshot = q.snapshot();
        let actual: Vec<_> = snapshot.ready.iter().map(|e| (e.0, e.1)).collect();
        prop_assert_eq!(actual, ready);
        let mut outstanding: Vec<_> = m.outstanding.iter().map(|o| (o.0, o.3)).collect();
        outstanding.sort_unstable();
        prop_assert_eq!(&snapshot.outstanding, &outstanding);
        // Every message is accounted for: settled (acked, rejected, expired, purged, taken
        // without ack), ready, or delivered and unsettled.
        prop_assert_eq!(
            m.published,
            m.settled + snapshot.ready.len() as u64 + snapshot.outstanding.len() as u64
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_queue_behaves_as_the_reference_model(steps in proptest::collection::vec(step(), 1..80)) {
        run_model_and_queue(&steps)?;
    }

    #[test]
    fn two_copies_fed_the_same_commands_end_equal(steps in proptest::collection::vec(step(), 1..80)) {
        let args = QueueArgs {
            max_length: Some(4),
            dead_letter_exchange: Some("dlx".into()),
            delivery_limit: Some(2),
            ..Default::default()
        };
        let mut copies = [(queue(args.clone()), TestCtx::default()), (queue(args), TestCtx::default())];
        for (q, ctx) in copies.iter_mut() {
            let mut next = 0u64;
            for s in &steps {
                let command = match s.clone() {
                    Step::Publish { ttl } => {
                        next += 1;
                        Command::Publish(message(&format!("m{next}"), ttl.map(u64::from), None))
                    }
                    Step::Consume { consumer, prefetch } => {
                        Command::Consume(self::consumer(u64::from(consumer), u32::from(prefetch)))
                    }
                    Step::Cancel { consumer } => Command::Cancel { consumer: u64::from(consumer) },
                    Step::Ack { pick } => Command::Ack(vec![u64::from(pick % 16)]),
                    Step::Reject { pick } => Command::Reject(vec![u64::from(pick % 16)]),
                    Step::Requeue { pick } => Command::Requeue(vec![u64::from(pick % 16)]),
                    Step::Get { no_ack } => Command::Get { no_ack },
                    Step::Purge => Command::Purge,
                    Step::Advance { ms } => {
                        ctx.now += u64::from(ms);
                        continue;
                    }
                    Step::Full { consumer, full } => {
                        if full { ctx.full.insert(u64::from(consumer)); } else { ctx.full.remove(&u64::from(consumer)); }
                        continue;
                    }
                    Step::Tick => Command::Tick,
                };
                q.apply(command, ctx);
            }
        }
        let [(a, actx), (b, bctx)] = copies;
        prop_assert_eq!(a.snapshot(), b.snapshot());
        prop_assert_eq!(&actx.effects, &bctx.effects);
        prop_assert_eq!(&actx.log.records, &bctx.log.records);
    }
}
