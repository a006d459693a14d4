//! The queue state machine against a plain reference model, over random command sequences, and
//! the replay check: two copies fed the same commands and the same answers end equal.

use std::collections::HashSet;

use proptest::prelude::*;

use super::{
    consumer, got, message, publish_command, queue, ready_in_delivery_order, state_of, TestCtx,
};
use crate::queue::args::QueueType;
use crate::queue::core::{Command, Outcome};
use crate::queue::QueueArgs;

#[derive(Debug, Clone)]
pub(super) enum Step {
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

pub(super) fn step() -> impl Strategy<Value = Step> {
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

/// `quorum`: the queue has quorum queues' rules, and the model sends a requeued message to the
/// back (under a new position) instead of back to its place.
fn run_model_and_queue(steps: &[Step], quorum: bool) -> Result<(), TestCaseError> {
    let mut m = Model::default();
    let args = QueueArgs {
        queue_type: if quorum {
            QueueType::Quorum
        } else {
            QueueType::Classic
        },
        ..QueueArgs::default()
    };
    let (mut q, mut ctx) = (queue(args), TestCtx::default());
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
                    publish_command(message(&body, ttl.map(u64::from), None)),
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
                    if quorum {
                        m.ready.push((m.next_id, body, true, expires));
                        m.next_id += 1;
                    } else {
                        let at = m.ready.partition_point(|e| e.0 < id);
                        m.ready.insert(at, (id, body, true, expires));
                    }
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
        let state = state_of(&q);
        let actual: Vec<_> = ready_in_delivery_order(&state)
            .map(|e| (e.id, e.redelivered))
            .collect();
        prop_assert_eq!(&actual, &ready);
        let mut outstanding: Vec<_> = m.outstanding.iter().map(|o| (o.0, o.3)).collect();
        outstanding.sort_unstable();
        let actual: Vec<_> = state
            .outstanding
            .iter()
            .map(|d| (d.entry.id, d.consumer))
            .collect();
        prop_assert_eq!(&actual, &outstanding);
        // Every message is accounted for: settled (acked, rejected, expired, purged, taken
        // without ack), ready, or delivered and unsettled.
        prop_assert_eq!(
            m.published,
            m.settled + ready.len() as u64 + outstanding.len() as u64
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_queue_behaves_as_the_reference_model(steps in proptest::collection::vec(step(), 1..80)) {
        run_model_and_queue(&steps, false)?;
    }

    #[test]
    fn a_quorum_queue_behaves_as_the_reference_model(steps in proptest::collection::vec(step(), 1..80)) {
        run_model_and_queue(&steps, true)?;
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
                        publish_command(message(&format!("m{next}"), ttl.map(u64::from), None))
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
        prop_assert_eq!(state_of(&a), state_of(&b));
        prop_assert_eq!(&actx.effects, &bctx.effects);
        prop_assert_eq!(&actx.log.records, &bctx.log.records);
    }
}
