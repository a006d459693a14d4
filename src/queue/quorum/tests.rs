//! The quorum queue's state machine: its answers come from the log alone (time, consumers,
//! duplicates), and replicas fed the same log end equal with the same effects.

use proptest::prelude::*;
use warren_amqp::encode::encode_properties;
use warren_amqp::protocol::basic::AMQPProperties;

use super::machine::{
    Answer, Applied, ConsumerHome, MachineState, QueueMachine, QuorumCommand, ReplicaEffect,
};
use crate::queue::args::QueueType;
use crate::queue::core::{CoreSpec, Outcome, Taken};
use crate::queue::remote::wire::{ConsumeTerms, Settle, WireMessage};
use crate::queue::QueueArgs;

fn machine(args: QueueArgs) -> QueueMachine {
    QueueMachine::new(spec(args), 1_000)
}

pub(super) fn spec(args: QueueArgs) -> CoreSpec {
    CoreSpec {
        name: "q".into(),
        vhost: "/".into(),
        args: QueueArgs {
            queue_type: QueueType::Quorum,
            ..args
        },
        auto_delete: false,
        logged: false,
        memory_limit: u64::MAX,
    }
}

pub(super) fn wire(body: &str, expiration_ms: Option<u64>) -> WireMessage {
    let mut props = AMQPProperties::default();
    if let Some(ms) = expiration_ms {
        props = props.with_expiration(ms.to_string().into());
    }
    WireMessage {
        exchange: Vec::new(),
        routing_key: b"q".to_vec(),
        properties: encode_properties(&props).expect("encodable"),
        body: body.as_bytes().to_vec(),
    }
}

pub(super) fn describe(effect: &ReplicaEffect) -> String {
    match effect {
        ReplicaEffect::Deliver {
            consumer,
            delivery,
            redelivered,
            message,
            ..
        } => format!(
            "deliver {}/{} {delivery} {redelivered} {}",
            consumer.node,
            consumer.local,
            String::from_utf8_lossy(message.body())
        ),
        ReplicaEffect::ConsumerCancelled { consumer } => {
            format!("cancelled {}/{}", consumer.node, consumer.local)
        }
        ReplicaEffect::DeadLetter(d) => format!(
            "dead-letter {:?} {}",
            d.reason,
            String::from_utf8_lossy(d.message.body())
        ),
        ReplicaEffect::DeadLetterHeld { id } => format!("held {id}"),
        ReplicaEffect::Deleted => "deleted".into(),
    }
}

/// Applies commands in log order (index from 1), each proposed by `origin` with increasing
/// numbers; the effects described.
struct Log {
    index: u64,
    numbers: [u64; 4],
}

impl Log {
    fn new() -> Log {
        Log {
            index: 0,
            numbers: [0; 4],
        }
    }

    fn apply(&mut self, m: &mut QueueMachine, origin: u64, command: QuorumCommand) -> Applied {
        self.index += 1;
        self.numbers[origin as usize] += 1;
        m.apply(self.index, origin, self.numbers[origin as usize], command)
    }
}

fn bodies(applied: &Applied) -> Vec<String> {
    applied.effects.iter().map(describe).collect()
}

fn enqueue(at_ms: u64, bodies: &[&str]) -> QuorumCommand {
    QuorumCommand::Enqueue {
        at_ms,
        messages: bodies.iter().map(|b| wire(b, None)).collect(),
    }
}

fn numbered(enqueuer: u64, seq: u64, bodies: &[&str]) -> QuorumCommand {
    QuorumCommand::EnqueueNumbered {
        at_ms: 1,
        enqueuer,
        seq,
        messages: bodies.iter().map(|b| wire(b, None)).collect(),
    }
}

fn consume(at_ms: u64, consumer: u64, prefetch: u32) -> QuorumCommand {
    QuorumCommand::Consume {
        at_ms,
        process: 1,
        consumer,
        terms: terms(prefetch),
    }
}

pub(super) fn terms(prefetch: u32) -> ConsumeTerms {
    ConsumeTerms {
        no_ack: false,
        exclusive: false,
        prefetch,
        priority: 0,
    }
}

#[test]
fn time_is_the_logs_and_never_goes_back() {
    let mut m = machine(QueueArgs::default());
    let mut log = Log::new();
    let ttl = QuorumCommand::Enqueue {
        at_ms: 10_000,
        messages: vec![wire("short", Some(100)), wire("long", Some(60_000))],
    };
    log.apply(&mut m, 1, ttl);
    // A proposer whose clock is behind does not take the queue back in time...
    log.apply(&mut m, 2, QuorumCommand::Tick { at_ms: 5_000 });
    assert_eq!(m.core().stats().ready, 2);
    // ...and the message expires at the entry that carries its expiry, whatever the clock of
    // the node applying it.
    log.apply(&mut m, 2, QuorumCommand::Tick { at_ms: 10_101 });
    assert_eq!(m.core().stats().ready, 1);
}

#[test]
fn a_proposal_applied_twice_counts_once() {
    let mut m = machine(QueueArgs::default());
    let first = m.apply(1, 1, 7, enqueue(1, &["a"]));
    assert!(matches!(first.answer, Some(Answer::Enqueued(ref t)) if t == &[Taken::Taken]));
    // Resent after a leader change, and appended again.
    let again = m.apply(2, 1, 7, enqueue(1, &["a"]));
    assert!(again.answer.is_none());
    assert_eq!(m.core().stats().ready, 1);
    // Another node's proposal of the same number is its own.
    m.apply(3, 2, 7, enqueue(1, &["b"]));
    assert_eq!(m.core().stats().ready, 2);
}

/// A consumer without a prefetch limit, and one without acks, are given 2000 deliveries at a
/// time (RabbitMQ's credit for them on a quorum queue), not the whole queue: the rest waits for
/// their node to settle some (a no-ack consumer's node settles them as its connection takes
/// them).
#[test]
fn consumers_without_a_limit_or_acks_are_given_a_bounded_credit() {
    use super::machine::UNLIMITED_PREFETCH;
    let n = 2 * UNLIMITED_PREFETCH as usize + 500;
    let mut m = machine(QueueArgs::default());
    let mut log = Log::new();
    let many: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    log.apply(&mut m, 1, enqueue(1, &many));
    let unlimited = log.apply(&mut m, 2, consume(2, 40, 0));
    assert_eq!(unlimited.effects.len(), UNLIMITED_PREFETCH as usize);
    let no_ack = QuorumCommand::Consume {
        at_ms: 3,
        process: 1,
        consumer: 41,
        terms: ConsumeTerms {
            no_ack: true,
            // A no-ack consumer's prefetch is not its credit (RabbitMQ ignores it too).
            prefetch: 1,
            ..terms(0)
        },
    };
    let no_ack = log.apply(&mut m, 3, no_ack);
    assert_eq!(no_ack.effects.len(), UNLIMITED_PREFETCH as usize);
    assert_eq!(m.core().stats().ready, 500);
    assert_eq!(m.core().stats().unacked, 2 * UNLIMITED_PREFETCH);
    // Its node settles 100 of the no-ack consumer's: it is given 100 more.
    let settled: Vec<u64> = no_ack
        .effects
        .iter()
        .take(100)
        .map(|e| match e {
            ReplicaEffect::Deliver { delivery, .. } => *delivery,
            other => panic!("a delivery, not {}", describe(other)),
        })
        .collect();
    let more = log.apply(
        &mut m,
        3,
        QuorumCommand::Settle {
            at_ms: 5,
            how: Settle::Ack,
            deliveries: settled,
        },
    );
    assert_eq!(more.effects.len(), 100);
    assert_eq!(m.core().stats().ready, 400);
}

#[test]
fn deliveries_name_the_consumers_home() {
    let mut m = machine(QueueArgs::default());
    let mut log = Log::new();
    log.apply(&mut m, 1, enqueue(1, &["a", "b"]));
    let on_2 = log.apply(&mut m, 2, consume(2, 40, 1));
    assert_eq!(bodies(&on_2), ["deliver 2/40 0 false a"]);
    let on_3 = log.apply(&mut m, 3, consume(3, 40, 1));
    assert_eq!(bodies(&on_3), ["deliver 3/40 1 false b"]);
    let Some(ReplicaEffect::Deliver { consumer, .. }) = on_3.effects.first() else {
        panic!("a delivery");
    };
    assert_eq!(
        *consumer,
        ConsumerHome {
            node: 3,
            process: 1,
            local: 40
        }
    );
}

#[test]
fn a_gone_nodes_consumers_and_gets_give_back_what_they_held() {
    let mut m = machine(QueueArgs::default());
    let mut log = Log::new();
    log.apply(&mut m, 1, enqueue(1, &["a", "b", "c", "d"]));
    log.apply(&mut m, 2, consume(2, 40, 1)); // a, to node 2
    log.apply(&mut m, 3, consume(3, 41, 1)); // b, to node 3
    let got = log.apply(
        &mut m,
        2,
        QuorumCommand::Get {
            at_ms: 4,
            process: 1,
            no_ack: false,
        },
    ); // c, to a channel of node 2
    assert!(matches!(
        got.answer,
        Some(Answer::Core(Outcome::Got(Some(_))))
    ));
    // Node 2 restarted (process 5): a and c go back, behind d, counted; b stays with node 3.
    let gone = log.apply(
        &mut m,
        1,
        QuorumCommand::ConsumersGone {
            node: 2,
            process: 5,
        },
    );
    assert_eq!(bodies(&gone), ["cancelled 2/40"]);
    assert_eq!(m.core().stats().ready, 3);
    assert_eq!(m.core().stats().unacked, 1);
    assert_eq!(m.core().stats().consumers, 1);
    // Node 3's consumer acks b and gets the rest in order: d, then a and c redelivered.
    let mut seen = Vec::new();
    let mut next = 1;
    for _ in 0..3 {
        let settled = log.apply(
            &mut m,
            3,
            QuorumCommand::Settle {
                at_ms: 5,
                how: Settle::Ack,
                deliveries: vec![next],
            },
        );
        for effect in &settled.effects {
            if let ReplicaEffect::Deliver { delivery, .. } = effect {
                next = *delivery;
            }
        }
        seen.extend(bodies(&settled));
    }
    assert_eq!(
        seen,
        [
            "deliver 3/41 3 false d",
            "deliver 3/41 4 true a",
            "deliver 3/41 5 true c"
        ]
    );
}

#[derive(Debug, Clone)]
enum Step {
    Enqueue {
        origin: u64,
        n: u8,
        ttl: Option<u8>,
    },
    Consume {
        origin: u64,
        local: u8,
        prefetch: u8,
    },
    Cancel {
        origin: u64,
        local: u8,
    },
    Get {
        origin: u64,
        no_ack: bool,
    },
    Settle {
        origin: u64,
        how: u8,
        pick: u8,
    },
    Purge,
    Tick {
        ms: u8,
    },
    Gone {
        node: u64,
    },
    Resend,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u64..4, 1u8..4, proptest::option::of(0u8..20))
            .prop_map(|(origin, n, ttl)| Step::Enqueue { origin, n, ttl }),
        2 => (1u64..4, 0u8..3, 0u8..3)
            .prop_map(|(origin, local, prefetch)| Step::Consume { origin, local, prefetch }),
        1 => (1u64..4, 0u8..3).prop_map(|(origin, local)| Step::Cancel { origin, local }),
        1 => (1u64..4, any::<bool>()).prop_map(|(origin, no_ack)| Step::Get { origin, no_ack }),
        3 => (1u64..4, 0u8..3, any::<u8>())
            .prop_map(|(origin, how, pick)| Step::Settle { origin, how, pick }),
        1 => Just(Step::Purge),
        2 => (0u8..30).prop_map(|ms| Step::Tick { ms }),
        1 => (1u64..4).prop_map(|node| Step::Gone { node }),
        1 => Just(Step::Resend),
    ]
}

/// The log a leader makes of `steps`: (origin, number, command), a resend repeating the entry
/// before it.
fn log_of(steps: Vec<Step>) -> Vec<(u64, u64, QuorumCommand)> {
    let mut entries: Vec<(u64, u64, QuorumCommand)> = Vec::new();
    let mut numbers = [0u64; 4];
    let mut now = 1_000u64;
    let mut body = 0u32;
    for s in steps {
        let (origin, command) = match s {
            Step::Enqueue { origin, n, ttl } => {
                let messages = (0..n)
                    .map(|_| {
                        body += 1;
                        wire(&format!("m{body}"), ttl.map(u64::from))
                    })
                    .collect();
                (
                    origin,
                    QuorumCommand::Enqueue {
                        at_ms: now,
                        messages,
                    },
                )
            }
            Step::Consume {
                origin,
                local,
                prefetch,
            } => (
                origin,
                QuorumCommand::Consume {
                    at_ms: now,
                    process: 1,
                    consumer: u64::from(local),
                    terms: terms(u32::from(prefetch)),
                },
            ),
            Step::Cancel { origin, local } => (
                origin,
                QuorumCommand::Cancel {
                    at_ms: now,
                    consumer: u64::from(local),
                },
            ),
            Step::Get { origin, no_ack } => (
                origin,
                QuorumCommand::Get {
                    at_ms: now,
                    process: 1,
                    no_ack,
                },
            ),
            Step::Settle { origin, how, pick } => {
                let how = [Settle::Ack, Settle::Reject, Settle::Requeue][usize::from(how)];
                (
                    origin,
                    QuorumCommand::Settle {
                        at_ms: now,
                        how,
                        deliveries: vec![u64::from(pick % 24)],
                    },
                )
            }
            Step::Purge => (1, QuorumCommand::Purge { at_ms: now }),
            Step::Tick { ms } => {
                now += u64::from(ms);
                (1, QuorumCommand::Tick { at_ms: now })
            }
            Step::Gone { node } => (1, QuorumCommand::ConsumersGone { node, process: 2 }),
            Step::Resend => match entries.last().cloned() {
                // The last proposal again, as a node resends after a leader change.
                Some(last) => {
                    entries.push(last);
                    continue;
                }
                None => continue,
            },
        };
        numbers[origin as usize] += 1;
        entries.push((origin, numbers[origin as usize], command));
    }
    entries
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Three replicas (a fourth that joins from the same log later would be the same) applying
    /// one log: every entry's answer and effects are the same on each, and so are the queues.
    #[test]
    fn replicas_fed_one_log_agree(steps in proptest::collection::vec(step(), 1..120)) {
        let args = QueueArgs {
            max_length: Some(6),
            dead_letter_exchange: Some("dlx".into()),
            delivery_limit: Some(2),
            ..Default::default()
        };
        let entries = log_of(steps);
        let mut replicas: Vec<QueueMachine> = (0..3).map(|_| machine(args.clone())).collect();
        for (index, (origin, number, command)) in entries.into_iter().enumerate() {
            let applied: Vec<(String, Vec<String>)> = replicas
                .iter_mut()
                .map(|m| {
                    let a = m.apply(index as u64 + 1, origin, number, command.clone());
                    (format!("{:?}", a.answer), a.effects.iter().map(describe).collect())
                })
                .collect();
            prop_assert_eq!(&applied[0], &applied[1]);
            prop_assert_eq!(&applied[0], &applied[2]);
        }
        let stats: Vec<_> = replicas.iter().map(|m| m.core().stats()).collect();
        prop_assert_eq!(stats[0], stats[1]);
        prop_assert_eq!(stats[0], stats[2]);
        let states: Vec<_> = replicas.iter().map(|m| m.state().expect("a state")).collect();
        prop_assert_eq!(&states[0], &states[1]);
        prop_assert_eq!(&states[0], &states[2]);
    }

    /// A member that installs a snapshot taken after any entry, then applies the rest of the log,
    /// answers and acts as one that applied the whole log.
    #[test]
    fn a_member_from_a_snapshot_agrees_with_one_from_the_log(
        steps in proptest::collection::vec(step(), 1..100),
        cut in any::<proptest::sample::Index>(),
    ) {
        let entries = log_of(steps);
        let cut = cut.index(entries.len() + 1);
        let args = QueueArgs { delivery_limit: Some(2), ..Default::default() };
        let mut whole = machine(args.clone());
        let mut applied_whole = Vec::new();
        for (index, (origin, number, command)) in entries.iter().cloned().enumerate() {
            let a = whole.apply(index as u64 + 1, origin, number, command);
            applied_whole.push((format!("{:?}", a.answer), a.effects.iter().map(describe).collect::<Vec<_>>()));
        }
        let mut first = machine(args.clone());
        for (index, (origin, number, command)) in entries[..cut].iter().cloned().enumerate() {
            first.apply(index as u64 + 1, origin, number, command);
        }
        let bytes = postcard::to_stdvec(&first.state().expect("a state")).expect("encodes");
        let state: MachineState = postcard::from_bytes(&bytes).expect("decodes");
        let mut restored = QueueMachine::from_state(spec(args), state).expect("restores");
        for (index, (origin, number, command)) in entries[cut..].iter().cloned().enumerate() {
            let at = cut + index;
            let a = restored.apply(at as u64 + 1, origin, number, command);
            let applied = (format!("{:?}", a.answer), a.effects.iter().map(describe).collect::<Vec<_>>());
            prop_assert_eq!(&applied, &applied_whole[at]);
        }
        prop_assert_eq!(restored.state().expect("a state"), whole.state().expect("a state"));
    }
}

/// An applier fed a log (its entries' answers and effects as its host receives them).
struct Fed {
    applier: super::applier::QuorumApplier,
    applied: tokio::sync::mpsc::UnboundedReceiver<Box<super::applier::AppliedEntry>>,
}

impl Fed {
    fn new(args: QueueArgs) -> Fed {
        let (tx, applied) = tokio::sync::mpsc::unbounded_channel();
        Fed {
            applier: super::applier::QuorumApplier::new(spec(args), 1_000, tx),
            applied,
        }
    }

    /// Applies one entry: what it answered and did.
    fn apply(&mut self, index: u64, origin: u64, number: u64, command: &QuorumCommand) -> String {
        use warren_cluster::{Applier, Proposal};
        let payload = postcard::to_stdvec(command).expect("encodable");
        self.applier.apply(
            index,
            &Proposal {
                origin,
                number,
                payload,
            },
        );
        let entry = self.applied.try_recv().expect("applied");
        let effects: Vec<String> = entry.applied.effects.iter().map(describe).collect();
        format!("{:?} {effects:?}", entry.applied.answer)
    }

    /// Its machine's state, counts and numbers, as a reader sees them.
    fn seen(&self) -> String {
        let stats = self.applier.stats();
        assert_eq!(self.applier.with_machine(|m| m.core().stats()), stats);
        self.applier.with_machine(|m| {
            format!(
                "{:?} {:?} {:?} {:?}",
                m.state().expect("a state"),
                m.core().stats(),
                m.enqueuers(),
                m.held_dead_letters()
            )
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A member's machine packed whenever its queue holds nothing (as when the member sleeps)
    /// answers, acts and reads as one never packed, its counts included; and it packs only then.
    #[test]
    fn a_machine_packed_while_its_queue_holds_nothing_acts_as_one_never_packed(
        steps in proptest::collection::vec(step(), 1..120),
        packs in proptest::collection::vec(any::<bool>(), 120),
    ) {
        let args = QueueArgs {
            max_length: Some(6),
            dead_letter_exchange: Some("dlx".into()),
            delivery_limit: Some(2),
            ..Default::default()
        };
        let (mut packed, mut plain) = (Fed::new(args.clone()), Fed::new(args));
        for (index, (origin, number, command)) in log_of(steps).into_iter().enumerate() {
            let index = index as u64 + 1;
            prop_assert_eq!(
                packed.apply(index, origin, number, &command),
                plain.apply(index, origin, number, &command)
            );
            if packs[index as usize % packs.len()] {
                let holds_nothing = plain.applier.with_machine(|m| m.holds_nothing());
                prop_assert_eq!(packed.applier.pack(), holds_nothing);
            }
            prop_assert_eq!(packed.seen(), plain.seen());
        }
        // Packed or not, its snapshot installs the same machine.
        use warren_cluster::Applier;
        let (from_packed, from_plain) = (Fed::new(QueueArgs::default()), Fed::new(QueueArgs::default()));
        from_packed.applier.install(&packed.applier.snapshot());
        from_plain.applier.install(&plain.applier.snapshot());
        let state = |fed: &Fed| fed.applier.with_machine(|m| m.state().expect("a state"));
        prop_assert_eq!(state(&from_packed), state(&from_plain));
    }
}

/// A queue used and emptied packs its machine; a packed machine keeps what was applied to it
/// (enqueuers' numbers, proposal numbers, counts), and the next entry unpacks it.
#[test]
fn a_used_and_emptied_queue_packs_and_forgets_nothing() {
    let mut fed = Fed::new(QueueArgs::default());
    let settle = |deliveries: Vec<u64>| QuorumCommand::Settle {
        at_ms: 1_002,
        how: Settle::Ack,
        deliveries,
    };
    fed.apply(1, 1, 1, &numbered(100, 1, &["a", "b"]));
    assert!(!fed.applier.pack(), "two messages ready: nothing packed");
    fed.apply(
        2,
        2,
        1,
        &QuorumCommand::Get {
            at_ms: 1_001,
            process: 1,
            no_ack: false,
        },
    );
    fed.apply(
        3,
        2,
        2,
        &QuorumCommand::Get {
            at_ms: 1_001,
            process: 1,
            no_ack: true,
        },
    );
    assert!(
        !fed.applier.pack(),
        "a get's delivery unsettled: nothing packed"
    );
    fed.apply(4, 2, 3, &settle(vec![0]));
    let before = fed.seen();
    assert!(fed.applier.pack(), "empty: packed");
    assert_eq!(fed.seen(), before);
    let counts = fed.applier.with_machine(|m| m.core().stats().counts);
    assert_eq!(
        (
            counts.published,
            counts.got,
            counts.got_no_ack,
            counts.acked
        ),
        (2, 1, 1, 1)
    );
    // Packed, it still knows node 1's enqueuer at 1 and node 2's proposal 3.
    assert_eq!(
        fed.apply(5, 1, 2, &numbered(100, 1, &["a"])),
        "Some(Duplicate) []"
    );
    assert!(fed.applier.pack());
    assert_eq!(fed.apply(6, 2, 3, &settle(vec![0])), "None []");
    assert!(fed.applier.pack());
    assert_eq!(
        fed.apply(7, 1, 3, &numbered(100, 2, &["c"])),
        format!("{:?} []", Some(Answer::Enqueued(vec![Taken::Taken])))
    );
    assert!(!fed.applier.pack(), "a message ready again");
    let stats = fed.applier.with_machine(|m| m.core().stats());
    assert_eq!((stats.ready, stats.counts.published), (1, 3));
    // A packed member that installs a snapshot holds what the snapshot holds.
    use warren_cluster::Applier;
    let other = Fed::new(QueueArgs::default());
    assert!(other.applier.pack());
    other.applier.install(&fed.applier.snapshot());
    let state = |fed: &Fed| fed.applier.with_machine(|m| m.state().expect("a state"));
    assert_eq!(state(&other), state(&fed));
    assert_eq!(other.applier.stats().ready, 1);
}

/// A member asks for a snapshot by the bytes its log holds since the last one, not only by the
/// entry count: past 64 MiB, and past twice the last snapshot (a queue with a large backlog
/// writes its state at most every so often).
#[test]
fn a_member_wants_a_snapshot_once_its_log_outweighs_one() {
    use super::applier::QuorumApplier;
    use warren_cluster::{Applier, Proposal};
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let applier = QuorumApplier::new(spec(QueueArgs::default()), 0, tx);
    let body = "x".repeat(1 << 20);
    let entry = |number: u64, body: &str| Proposal {
        origin: 1,
        number,
        payload: postcard::to_stdvec(&enqueue(number, &[body])).expect("encodable"),
    };
    // A backlog of 100 MiB: the log outweighs 64 MiB...
    for n in 1..=100 {
        applier.apply(n, &entry(n, &body));
    }
    assert!(applier.wants_snapshot());
    // ...its snapshot holds the backlog: the next is wanted after twice as much again.
    let snapshot = applier.snapshot();
    assert!(snapshot.len() > 100 << 20);
    assert!(!applier.wants_snapshot());
    for n in 101..=180 {
        applier.apply(n, &entry(n, "small"));
    }
    assert!(!applier.wants_snapshot());
    for n in 181..=400 {
        applier.apply(n, &entry(n, &body));
    }
    assert!(applier.wants_snapshot());
}

/// RabbitMQ's at-least-once dead-lettering (with `x-overflow` reject-publish): a dead-letter is
/// held in the state (and in its snapshot) until released, once its targets have confirmed it;
/// with drop-head it is at-most-once, handed over and forgotten.
#[test]
fn at_least_once_dead_letters_are_held_until_released() {
    use crate::queue::args::{DeadLetterStrategy, Overflow};
    let args = QueueArgs {
        dead_letter_exchange: Some("dlx".into()),
        dead_letter_strategy: DeadLetterStrategy::AtLeastOnce,
        overflow: Overflow::RejectPublish,
        ..Default::default()
    };
    let mut m = machine(args.clone());
    let mut log = Log::new();
    log.apply(&mut m, 1, enqueue(1, &["a", "b"]));
    log.apply(&mut m, 2, consume(2, 40, 2));
    let rejected = log.apply(&mut m, 2, reject(vec![0, 1]));
    assert_eq!(bodies(&rejected), ["held 0", "held 1"]);
    assert_eq!(m.core().stats().ready, 0);
    let held = m.held_dead_letter(0).expect("held").dead_letter();
    assert_eq!(held.message.body(), b"a");
    assert_eq!(held.exchange, "dlx");

    // A member that installs a snapshot holds them too.
    let mut snapshot = postcard::to_stdvec(&m.state().expect("state")).expect("encoded");
    snapshot.extend(postcard::to_stdvec(m.held_dead_letters()).expect("encoded"));
    let (state, rest) = postcard::take_from_bytes::<MachineState>(&snapshot).expect("state");
    let mut restored = QueueMachine::from_snapshot(
        spec(args.clone()),
        state,
        postcard::from_bytes(rest).expect("held"),
        Default::default(),
    )
    .expect("restored");
    assert_eq!(restored.held_dead_letters(), m.held_dead_letters());

    for replica in [&mut m, &mut restored] {
        let mut log = Log {
            index: 3,
            numbers: [0, 1, 2, 0],
        };
        log.apply(replica, 1, QuorumCommand::DeadLettered { ids: vec![1] });
        assert_eq!(
            replica.held_dead_letters().held.keys().collect::<Vec<_>>(),
            [&0]
        );
        log.apply(replica, 1, QuorumCommand::DeadLettered { ids: vec![0] });
        assert!(replica.held_dead_letters().held.is_empty());
    }

    let mut m = machine(QueueArgs {
        overflow: Overflow::DropHead,
        ..args
    });
    let mut log = Log::new();
    log.apply(&mut m, 1, enqueue(1, &["a"]));
    log.apply(&mut m, 2, consume(2, 40, 1));
    let rejected = log.apply(&mut m, 2, reject(vec![0]));
    assert_eq!(bodies(&rejected), ["dead-letter Rejected a"]);
    assert!(m.held_dead_letters().held.is_empty());
}

/// Held dead-letters count against the source's length limits, as RabbitMQ's `is_over_limit`
/// counts them: with reject-publish, a queue whose dead-letter target is away refuses
/// publishes once ready and held messages reach `x-max-length` (or `x-max-length-bytes`), and
/// takes them again once the held ones are confirmed. A member restored from a snapshot counts
/// them alike.
#[test]
fn held_dead_letters_count_against_the_length_limits() {
    use crate::queue::args::{DeadLetterStrategy, Overflow};
    let refused = |applied: &Applied| matches!(&applied.answer, Some(Answer::Enqueued(t)) if t == &[Taken::Refused]);
    for (max_length, max_length_bytes) in [(Some(3), None), (None, Some(12))] {
        let args = QueueArgs {
            dead_letter_exchange: Some("dlx".into()),
            dead_letter_strategy: DeadLetterStrategy::AtLeastOnce,
            overflow: Overflow::RejectPublish,
            max_length,
            max_length_bytes,
            ..Default::default()
        };
        let mut m = machine(args.clone());
        let mut log = Log::new();
        log.apply(&mut m, 1, enqueue(1, &["aaaa", "bbbb"]));
        log.apply(&mut m, 2, consume(2, 40, 2));
        log.apply(&mut m, 2, reject(vec![0, 1]));
        let stats = m.core().stats();
        assert_eq!((stats.ready, stats.held_dead_letters), (0, 2));
        assert_eq!(stats.held_dead_letter_bytes, 8);
        // The consumer goes, so the next message stays ready: 1 ready + 2 held is the limit.
        log.apply(
            &mut m,
            2,
            QuorumCommand::Cancel {
                at_ms: 2,
                consumer: 40,
            },
        );
        assert!(!refused(&log.apply(&mut m, 1, enqueue(3, &["cccc"]))));
        assert!(refused(&log.apply(&mut m, 1, enqueue(3, &["dddd"]))));

        let mut snapshot = postcard::to_stdvec(&m.state().expect("state")).expect("encoded");
        snapshot.extend(postcard::to_stdvec(m.held_dead_letters()).expect("encoded"));
        let (state, rest) = postcard::take_from_bytes::<MachineState>(&snapshot).expect("state");
        let mut restored = QueueMachine::from_snapshot(
            spec(args),
            state,
            postcard::from_bytes(rest).expect("held"),
            Default::default(),
        )
        .expect("restored");
        let held = |m: &QueueMachine| {
            let s = m.core().stats();
            (s.ready, s.held_dead_letters, s.held_dead_letter_bytes)
        };
        assert_eq!(held(&restored), held(&m));
        for replica in [&mut m, &mut restored] {
            let mut log = Log {
                index: log.index,
                numbers: log.numbers,
            };
            assert!(refused(&log.apply(replica, 1, enqueue(4, &["eeee"]))));
            log.apply(replica, 1, QuorumCommand::DeadLettered { ids: vec![0] });
            assert_eq!(replica.core().stats().held_dead_letter_bytes, 4);
            assert!(!refused(&log.apply(replica, 1, enqueue(5, &["ffff"]))));
            assert!(refused(&log.apply(replica, 1, enqueue(5, &["gggg"]))));
        }
    }
}

fn reject(deliveries: Vec<u64>) -> QuorumCommand {
    QuorumCommand::Settle {
        at_ms: 3,
        how: Settle::Reject,
        deliveries,
    }
}

/// A node cut off had its consumer's deliveries given to a consumer of another node: the
/// redelivery has a delivery id of its own, so the cut-off node's late settles (ack, reject,
/// requeue) of the old one settle nothing; the holder's do.
#[test]
fn a_gone_nodes_late_settles_leave_what_another_node_holds() {
    let mut m = machine(QueueArgs::default());
    let mut log = Log::new();
    log.apply(&mut m, 1, enqueue(1, &["a"]));
    let to_2 = log.apply(&mut m, 2, consume(2, 40, 1));
    assert_eq!(bodies(&to_2), ["deliver 2/40 0 false a"]);
    log.apply(&mut m, 3, consume(3, 41, 1));
    let gone = log.apply(
        &mut m,
        1,
        QuorumCommand::ConsumersGone {
            node: 2,
            process: u64::MAX,
        },
    );
    assert!(
        bodies(&gone).contains(&"deliver 3/41 1 true a".to_owned()),
        "{:?}",
        bodies(&gone)
    );
    for how in [Settle::Ack, Settle::Reject, Settle::Requeue] {
        log.apply(
            &mut m,
            2,
            QuorumCommand::Settle {
                at_ms: 4,
                how,
                deliveries: vec![0],
            },
        );
        assert_eq!((m.core().stats().ready, m.core().stats().unacked), (0, 1));
    }
    log.apply(
        &mut m,
        3,
        QuorumCommand::Settle {
            at_ms: 5,
            how: Settle::Ack,
            deliveries: vec![1],
        },
    );
    assert_eq!((m.core().stats().ready, m.core().stats().unacked), (0, 0));
}

/// A member's numbered enqueues are applied once and in order, however often and in whatever
/// order they are committed: one proposed again after a leader change is a duplicate if its
/// first proposal was committed after all, and one committed before the one numbered before it
/// (that one proposed again later) waits for it. Each enqueuer has its own numbers; a snapshot
/// keeps them; a restarted node's old enqueuers are forgotten, a node only suspected gone keeps
/// its own.
#[test]
fn numbered_enqueues_are_applied_once_and_in_order() {
    use super::applier::QuorumApplier;
    use warren_cluster::{Applier, Proposal};

    use tokio::sync::mpsc;

    struct Replica(
        QuorumApplier,
        mpsc::UnboundedReceiver<Box<super::applier::AppliedEntry>>,
    );
    let replica = || {
        let (tx, applied) = mpsc::unbounded_channel();
        Replica(
            QuorumApplier::new(spec(QueueArgs::default()), 1_000, tx),
            applied,
        )
    };
    let mut index = 0;
    let mut apply = |replica: &mut Replica, origin: u64, command: QuorumCommand| {
        index += 1;
        let payload = postcard::to_stdvec(&command).expect("encoded");
        // Every proposal a number of its own: the enqueue's sequence alone decides.
        replica.0.apply(
            index,
            &Proposal {
                origin,
                number: index,
                payload,
            },
        );
        let answer = replica.1.try_recv().expect("applied").applied.answer;
        format!("{answer:?}")
    };
    let ready = |replica: &Replica| replica.0.with_machine(|m| m.core().stats().ready);
    let enqueued = format!("{:?}", Some(Answer::Enqueued(vec![Taken::Taken])));
    let mut member = replica();
    assert_eq!(apply(&mut member, 1, numbered(100, 1, &["a"])), enqueued);
    // Seq 2 lost with its leader; seq 3 committed first: not applied.
    assert_eq!(
        apply(&mut member, 1, numbered(100, 3, &["c"])),
        "Some(OutOfSequence)"
    );
    // A new enqueuer starts at 1 only.
    assert_eq!(
        apply(&mut member, 2, numbered(100, 2, &["x"])),
        "Some(OutOfSequence)"
    );
    assert_eq!(ready(&member), 1);
    assert_eq!(apply(&mut member, 1, numbered(100, 2, &["b"])), enqueued);
    // Seq 2's first proposal committed after all: a duplicate.
    assert_eq!(
        apply(&mut member, 1, numbered(100, 2, &["b"])),
        "Some(Duplicate)"
    );
    assert_eq!(apply(&mut member, 1, numbered(100, 3, &["c"])), enqueued);
    assert_eq!(apply(&mut member, 2, numbered(100, 1, &["y"])), enqueued);
    assert_eq!(ready(&member), 4);

    // A member that installs a snapshot knows the numbers applied.
    let mut restored = replica();
    restored.0.install(&member.0.snapshot());
    assert_eq!(ready(&restored), 4);
    for replica in [&mut member, &mut restored] {
        assert_eq!(
            apply(replica, 1, numbered(100, 3, &["c"])),
            "Some(Duplicate)"
        );
        // Node 1 only suspected gone: it may be alive and propose seq 4.
        let suspected = QuorumCommand::ConsumersGone {
            node: 1,
            process: u64::MAX,
        };
        apply(replica, 3, suspected);
        assert_eq!(apply(replica, 1, numbered(100, 4, &["d"])), enqueued);
        // Node 1 restarted (its process 200 after enqueuer 100): enqueuer 100 is forgotten,
        // node 2's is not.
        let restarted = QuorumCommand::ConsumersGone {
            node: 1,
            process: 200,
        };
        apply(replica, 1, restarted);
        let enqueuers = replica.0.with_machine(|m| m.enqueuers().last.clone());
        assert_eq!(enqueuers.keys().collect::<Vec<_>>(), [&(2, 100)]);
        assert_eq!(ready(replica), 5);
    }
}
