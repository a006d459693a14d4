//! A quorum queue's replicated state machine: the queue core ([`QueueCore`]) applied by every
//! member of the queue's Raft group to the same committed commands, with a context whose every
//! answer comes from the log, so that every member holds the same queue.
//!
//! - Time is the proposer's clock as written in the command, never the applying node's; it only
//!   moves forward (a proposer whose clock is behind another's does not take the queue back in
//!   time), so TTLs and `x-expires` expire at the same entry everywhere.
//! - A consumer always has room as far as the state machine is concerned: what limits its
//!   deliveries is its credit, counted in the state (its prefetch; 2000 without one or without
//!   acks, see [`credited`]). Connection back-pressure is the consumer's node's business: it
//!   settles a no-ack consumer's deliveries once its connection has room for more.
//! - A consumer is known by the index of the entry that registered it (unique in the group,
//!   the same on every member), with the node and the node-local consumer id it stands for.
//! - A proposal is applied once: a node resends what may have been lost at a leader change, in
//!   order, and the state skips a proposal number it has applied already from that node.
//! - An enqueue is applied once and in order however often it is proposed: each member numbers
//!   its enqueues ([`QuorumCommand::EnqueueNumbered`], as RabbitMQ's `rabbit_fifo_client`
//!   numbers its enqueuer's), proposes again any whose fate it does not know (a timeout, a
//!   leader lost), and the state applies the next number only: an earlier one again is a
//!   duplicate (answered as done), a later one waits for the gap to be proposed again.
//!
//! [`QueueMachine::apply`] returns what the entry did ([`Applied`]: the proposer's answer and
//! the effects); what each member then carries out (its own consumers' deliveries, its own
//! proposers' answers; dead-letters on the leader only) is the quorum queue host's business.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use warren_cluster::NodeId;

use crate::queue::core::{
    Command, Context, CoreSpec, Effect, Outcome, QueueCore, ReplicaState, ReplicaStateError, Taken,
};
use crate::queue::log::{NoLog, QueueLog};
use crate::queue::remote::wire::{ConsumeTerms, Settle, WireMessage};
use crate::queue::QueueArgs;

/// One command of a quorum queue's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QuorumCommand {
    /// Messages published through the proposing node, in order.
    Enqueue {
        at_ms: u64,
        messages: Vec<WireMessage>,
    },
    /// A consumer on the proposing node (`consumer` is its id there; `process` the node's
    /// process, so that a restarted node's old consumers can be told apart).
    Consume {
        at_ms: u64,
        process: u64,
        consumer: u64,
        terms: ConsumeTerms,
    },
    /// The proposing node's consumer `consumer` (its id there) is cancelled.
    Cancel {
        at_ms: u64,
        consumer: u64,
    },
    /// `basic.get` on the proposing node (`process` as for consumers: a manual-ack get's
    /// delivery goes back to the queue if that node goes).
    Get {
        at_ms: u64,
        process: u64,
        no_ack: bool,
    },
    /// Deliveries settled by the node whose channel holds them.
    Settle {
        at_ms: u64,
        how: Settle,
        deliveries: Vec<u64>,
    },
    Purge {
        at_ms: u64,
    },
    Delete {
        at_ms: u64,
        if_unused: bool,
        if_empty: bool,
    },
    /// Time passed: expire, dispatch.
    Tick {
        at_ms: u64,
    },
    /// `node`'s consumers from processes started before `process` are gone (the node went down
    /// or restarted): their unsettled deliveries go back to the queue.
    ConsumersGone {
        node: NodeId,
        process: u64,
    },
    /// The arguments in effect changed (a policy was set or cleared): every member proposes its
    /// latest, so the last one applied is the latest whichever member's it is.
    Configure {
        at_ms: u64,
        args: QueueArgs,
    },
    /// Held dead-letters (at-least-once) that every queue they were routed to has confirmed:
    /// the queue lets go of them.
    DeadLettered {
        ids: Vec<u64>,
    },
    /// Messages published through the proposing node, in order: its enqueuer's (one per member
    /// started, see [`EnqueuerId`]) enqueue `seq`, applied only after `seq - 1` and only once.
    EnqueueNumbered {
        at_ms: u64,
        enqueuer: u64,
        seq: u64,
        messages: Vec<WireMessage>,
    },
}

impl QuorumCommand {
    fn at_ms(&self) -> Option<u64> {
        match self {
            QuorumCommand::Enqueue { at_ms, .. }
            | QuorumCommand::EnqueueNumbered { at_ms, .. }
            | QuorumCommand::Consume { at_ms, .. }
            | QuorumCommand::Cancel { at_ms, .. }
            | QuorumCommand::Get { at_ms, .. }
            | QuorumCommand::Settle { at_ms, .. }
            | QuorumCommand::Purge { at_ms }
            | QuorumCommand::Delete { at_ms, .. }
            | QuorumCommand::Tick { at_ms }
            | QuorumCommand::Configure { at_ms, .. } => Some(*at_ms),
            QuorumCommand::ConsumersGone { .. } | QuorumCommand::DeadLettered { .. } => None,
        }
    }
}

/// The credit of a consumer without a prefetch limit, as RabbitMQ gives one on a quorum queue:
/// the state assigns it at most this many unsettled deliveries.
pub const UNLIMITED_PREFETCH: u32 = 2000;

/// A consumer's terms as the state holds them: every consumer has a credit (its prefetch, or
/// [`UNLIMITED_PREFETCH`]), and a no-ack consumer's deliveries stay unsettled in the state until
/// its node has handed them to a connection with room (its node settles them then), so that a
/// client that stops reading holds a bounded part of the queue, not all of it.
fn credited(terms: ConsumeTerms) -> ConsumeTerms {
    let prefetch = match terms.prefetch {
        _ if terms.no_ack => UNLIMITED_PREFETCH,
        0 => UNLIMITED_PREFETCH,
        n => n,
    };
    ConsumeTerms {
        no_ack: false,
        prefetch,
        ..terms
    }
}

/// Who a consumer of the state machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerHome {
    pub node: NodeId,
    pub process: u64,
    /// Its id on its node.
    pub local: u64,
}

/// What applying one entry did.
#[derive(Debug)]
pub struct Applied {
    /// The answer for the proposer (`None` for a proposal applied before, skipped).
    pub answer: Option<Answer>,
    /// The effects, consumers named by their home.
    pub effects: Vec<ReplicaEffect>,
}

/// The answer to a proposal.
#[derive(Debug)]
pub enum Answer {
    /// What became of each message of an enqueue, in order.
    Enqueued(Vec<Taken>),
    /// A numbered enqueue applied before (its first proposal was committed after all).
    Duplicate,
    /// A numbered enqueue that came before the one its enqueuer numbered before it: not
    /// applied; proposed again after that one.
    OutOfSequence,
    /// The core's answer to anything else.
    Core(Outcome),
}

/// An effect of the state machine, with the consumer it concerns resolved to its home.
#[derive(Debug)]
pub enum ReplicaEffect {
    Deliver {
        consumer: ConsumerHome,
        delivery: u64,
        redelivered: bool,
        no_ack: bool,
        message: crate::message::MessageRef,
    },
    ConsumerCancelled {
        consumer: ConsumerHome,
    },
    DeadLetter(crate::queue::core::DeadLetter),
    /// A dead-letter the queue holds until its targets confirm it (`x-dead-letter-strategy`
    /// at-least-once): the leader routes it ([`QueueMachine::held_dead_letter`]).
    DeadLetterHeld {
        id: u64,
    },
    Deleted,
}

/// A dead-lettered message the queue keeps until the queues it is routed to have confirmed it
/// (RabbitMQ's at-least-once dead-lettering), as the state holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldDeadLetter {
    pub exchange: String,
    pub routing_keys: Vec<String>,
    #[serde(with = "serde_bytes")]
    pub properties: Vec<u8>,
    pub reason: crate::queue::dead_letter::Reason,
    pub message: WireMessage,
}

impl HeldDeadLetter {
    fn of(d: &crate::queue::core::DeadLetter) -> HeldDeadLetter {
        HeldDeadLetter {
            exchange: d.exchange.clone(),
            routing_keys: d.routing_keys.clone(),
            properties: d.properties.clone(),
            reason: d.reason,
            message: WireMessage::of(&d.message),
        }
    }

    /// As the core hands a dead-letter over, to route it.
    pub fn dead_letter(&self) -> crate::queue::core::DeadLetter {
        crate::queue::core::DeadLetter {
            exchange: self.exchange.clone(),
            routing_keys: self.routing_keys.clone(),
            properties: self.properties.clone(),
            reason: self.reason,
            message: self.message.clone().into_message(),
            // The machine holds it (in the group's state), not the core.
            held: None,
        }
    }
}

/// The held dead-letters, by id, and the next id: kept after [`MachineState`] in a snapshot (a
/// snapshot without them, from before they were, has none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldDeadLetters {
    pub held: BTreeMap<u64, HeldDeadLetter>,
    pub next: u64,
}

/// An enqueuer: the node whose member numbers its enqueues, and the member's own id there (its
/// process's start, plus how many members that process started before it: every member of a
/// later process has a higher one).
pub type EnqueuerId = (NodeId, u64);

/// The last enqueue applied of each enqueuer: kept after [`HeldDeadLetters`] in a snapshot (a
/// snapshot from before it ends before it; its enqueuers start again at their next enqueue).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Enqueuers {
    pub last: BTreeMap<EnqueuerId, u64>,
}

/// A machine's whole state, as a snapshot carries it (a member that restarts or lags installs
/// it, then applies the entries after it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineState {
    core: ReplicaState,
    now_ms: u64,
    consumers: BTreeMap<u64, ConsumerHome>,
    gets: BTreeMap<u64, (NodeId, u64)>,
    applied_numbers: BTreeMap<NodeId, u64>,
}

/// The replicated queue: the core and what the machine adds to it.
pub struct QueueMachine {
    core: QueueCore,
    /// The queue's clock: the latest time a command carried.
    now_ms: u64,
    /// Consumers by their id in the core (the index of the entry that registered them).
    consumers: BTreeMap<u64, ConsumerHome>,
    /// Deliveries of manual-ack gets, by delivery id: the node and process whose channel has
    /// them.
    gets: BTreeMap<u64, (NodeId, u64)>,
    /// The last proposal number applied from each node.
    applied_numbers: HashMap<NodeId, u64>,
    /// Dead-letters held until confirmed (at-least-once), and their body bytes.
    dead_letters: HeldDeadLetters,
    held_bytes: u64,
    enqueuers: Enqueuers,
}

impl QueueMachine {
    /// A new queue (`spec.logged` must be false: the Raft log is the queue's log).
    pub fn new(spec: CoreSpec, now_ms: u64) -> QueueMachine {
        let spec = CoreSpec {
            logged: false,
            memory_limit: u64::MAX,
            ..spec
        };
        QueueMachine {
            core: QueueCore::new(spec, now_ms),
            now_ms,
            consumers: BTreeMap::new(),
            gets: BTreeMap::new(),
            applied_numbers: HashMap::new(),
            dead_letters: HeldDeadLetters::default(),
            held_bytes: 0,
            enqueuers: Enqueuers::default(),
        }
    }

    pub fn core(&self) -> &QueueCore {
        &self.core
    }

    /// The machine's state, for a snapshot.
    pub fn state(&self) -> Result<MachineState, ReplicaStateError> {
        Ok(MachineState {
            core: self.core.replica_state()?,
            now_ms: self.now_ms,
            consumers: self.consumers.clone(),
            gets: self.gets.clone(),
            applied_numbers: self
                .applied_numbers
                .iter()
                .map(|(node, n)| (*node, *n))
                .collect(),
        })
    }

    /// Whether the queue holds nothing: no message ready or delivered, no consumer, no get's
    /// delivery, no dead-letter held (what it keeps is its counters, clock and settings).
    pub fn holds_nothing(&self) -> bool {
        let stats = self.core.stats();
        stats.ready == 0
            && stats.unacked == 0
            && stats.consumers == 0
            && self.consumers.is_empty()
            && self.gets.is_empty()
            && self.dead_letters.held.is_empty()
    }

    /// Whether a consumer or a get's delivery of `node` is in the state (of any of its
    /// processes).
    pub fn holds_anything_of(&self, node: NodeId) -> bool {
        self.consumers.values().any(|home| home.node == node)
            || self.gets.values().any(|(n, _)| *n == node)
    }

    /// Takes the counts of the copy of this machine it was made from (see
    /// [`QueueCore::restore_counts`]).
    pub fn restore_counts(&mut self, counts: crate::queue::QueueCounts) {
        self.core.restore_counts(counts);
    }

    /// The dead-letters it holds, for a snapshot.
    pub fn held_dead_letters(&self) -> &HeldDeadLetters {
        &self.dead_letters
    }

    /// The last enqueue applied of each enqueuer, for a snapshot.
    pub fn enqueuers(&self) -> &Enqueuers {
        &self.enqueuers
    }

    /// A held dead-letter, to route it.
    pub fn held_dead_letter(&self, id: u64) -> Option<&HeldDeadLetter> {
        self.dead_letters.held.get(&id)
    }

    /// A machine restored from a snapshot's state, held dead-letters and enqueuers (`spec` as
    /// for [`QueueMachine::new`]).
    pub fn from_snapshot(
        spec: CoreSpec,
        state: MachineState,
        dead_letters: HeldDeadLetters,
        enqueuers: Enqueuers,
    ) -> Result<Self, ReplicaStateError> {
        let mut machine = Self::from_state(spec, state)?;
        machine.enqueuers = enqueuers;
        machine.held_bytes = dead_letters
            .held
            .values()
            .map(|d| d.message.body.len() as u64)
            .sum();
        machine.dead_letters = dead_letters;
        machine.count_held_dead_letters();
        Ok(machine)
    }

    /// Tells the core what the held dead-letters amount to: they count against its length
    /// limits (RabbitMQ's `is_over_limit` adds them to the ready messages).
    fn count_held_dead_letters(&mut self) {
        let count = self.dead_letters.held.len() as u64;
        self.core.set_held_dead_letters(count, self.held_bytes);
    }

    /// Whether a dead-letter is held until confirmed: RabbitMQ's at-least-once strategy, which
    /// takes `x-overflow` reject-publish (with drop-head it is at-most-once).
    fn holds_dead_letters(&self) -> bool {
        let args = self.core.args();
        args.dead_letter_strategy == crate::queue::args::DeadLetterStrategy::AtLeastOnce
            && args.overflow == crate::queue::args::Overflow::RejectPublish
    }

    /// A machine restored from a snapshot's state (`spec` as for [`QueueMachine::new`]).
    pub fn from_state(spec: CoreSpec, state: MachineState) -> Result<Self, ReplicaStateError> {
        let spec = CoreSpec {
            logged: false,
            memory_limit: u64::MAX,
            ..spec
        };
        Ok(QueueMachine {
            core: QueueCore::from_replica_state(spec, state.core)?,
            now_ms: state.now_ms,
            consumers: state.consumers,
            gets: state.gets,
            applied_numbers: state.applied_numbers.into_iter().collect(),
            dead_letters: HeldDeadLetters::default(),
            held_bytes: 0,
            enqueuers: Enqueuers::default(),
        })
    }

    /// Applies the committed entry `index`, proposed by `origin` as its proposal `number`.
    pub fn apply(
        &mut self,
        index: u64,
        origin: NodeId,
        number: u64,
        command: QuorumCommand,
    ) -> Applied {
        let last = self.applied_numbers.entry(origin).or_insert(0);
        if number <= *last {
            return Applied {
                answer: None,
                effects: Vec::new(),
            };
        }
        *last = number;
        if let Some(at) = command.at_ms() {
            self.now_ms = self.now_ms.max(at);
        }
        let mut ctx = ReplicaContext {
            now_ms: self.now_ms,
            effects: Vec::new(),
            log: NoLog,
        };
        let answer = match command {
            QuorumCommand::Enqueue { messages, .. } => self.enqueue(messages, &mut ctx),
            QuorumCommand::EnqueueNumbered {
                enqueuer,
                seq,
                messages,
                ..
            } => {
                let last = self.enqueuers.last.entry((origin, enqueuer)).or_insert(0);
                match seq.cmp(&(*last + 1)) {
                    std::cmp::Ordering::Less => Answer::Duplicate,
                    std::cmp::Ordering::Greater => Answer::OutOfSequence,
                    std::cmp::Ordering::Equal => {
                        *last = seq;
                        self.enqueue(messages, &mut ctx)
                    }
                }
            }
            QuorumCommand::Consume {
                process,
                consumer,
                terms,
                ..
            } => {
                let spec = credited(terms).spec(index);
                let outcome = self.core.apply(Command::Consume(spec), &mut ctx);
                if matches!(outcome, Outcome::Consumed(Ok(()))) {
                    self.consumers.insert(
                        index,
                        ConsumerHome {
                            node: origin,
                            process,
                            local: consumer,
                        },
                    );
                }
                self.core.apply(Command::Tick, &mut ctx);
                Answer::Core(outcome)
            }
            QuorumCommand::Cancel { consumer, .. } => {
                let found = self
                    .consumers
                    .iter()
                    .find(|(_, home)| home.node == origin && home.local == consumer)
                    .map(|(id, _)| *id);
                if let Some(id) = found {
                    self.core.apply(Command::Cancel { consumer: id }, &mut ctx);
                    self.consumers.remove(&id);
                }
                Answer::Core(Outcome::Done)
            }
            QuorumCommand::Get {
                no_ack, process, ..
            } => {
                let outcome = self.core.apply(Command::Get { no_ack }, &mut ctx);
                if let (false, Outcome::Got(Some(got))) = (no_ack, &outcome) {
                    self.gets.insert(got.id, (origin, process));
                }
                Answer::Core(outcome)
            }
            QuorumCommand::Settle {
                how, deliveries, ..
            } => {
                for id in &deliveries {
                    self.gets.remove(id);
                }
                let command = match how {
                    Settle::Ack => Command::Ack(deliveries),
                    Settle::Reject => Command::Reject(deliveries),
                    Settle::Requeue => Command::Requeue(deliveries),
                };
                self.core.apply(command, &mut ctx);
                Answer::Core(self.core.apply(Command::Tick, &mut ctx))
            }
            QuorumCommand::Purge { .. } => Answer::Core(self.core.apply(Command::Purge, &mut ctx)),
            QuorumCommand::Delete {
                if_unused,
                if_empty,
                ..
            } => Answer::Core(self.core.apply(
                Command::Delete {
                    if_unused,
                    if_empty,
                },
                &mut ctx,
            )),
            QuorumCommand::Tick { .. } => Answer::Core(self.core.apply(Command::Tick, &mut ctx)),
            QuorumCommand::ConsumersGone { node, process } => {
                self.consumers_gone(node, process, &mut ctx);
                // A node that restarted numbers its enqueues afresh. A node only suspected gone
                // (`u64::MAX`) may be alive and propose again what it numbered: kept.
                if process != u64::MAX {
                    self.enqueuers
                        .last
                        .retain(|(n, enqueuer), _| *n != node || *enqueuer >= process);
                }
                Answer::Core(self.core.apply(Command::Tick, &mut ctx))
            }
            QuorumCommand::Configure { args, .. } => {
                self.core.apply(Command::Configure(args), &mut ctx);
                Answer::Core(self.core.apply(Command::Tick, &mut ctx))
            }
            QuorumCommand::DeadLettered { ids } => {
                for id in ids {
                    if let Some(d) = self.dead_letters.held.remove(&id) {
                        self.held_bytes =
                            self.held_bytes.saturating_sub(d.message.body.len() as u64);
                    }
                }
                self.count_held_dead_letters();
                Answer::Core(Outcome::Done)
            }
        };
        let held = self.dead_letters.held.len();
        let effects = ctx
            .effects
            .into_iter()
            .filter_map(|effect| self.resolve(effect))
            .collect();
        if self.dead_letters.held.len() != held {
            self.count_held_dead_letters();
        }
        Applied {
            answer: Some(answer),
            effects,
        }
    }

    fn enqueue(&mut self, messages: Vec<WireMessage>, ctx: &mut ReplicaContext) -> Answer {
        let taken = messages
            .into_iter()
            .map(|m| {
                let message = m.into_message();
                match self.core.apply(
                    Command::Publish {
                        message,
                        logged: None,
                    },
                    ctx,
                ) {
                    Outcome::Published(taken) => taken,
                    _ => Taken::Refused,
                }
            })
            .collect();
        self.core.apply(Command::Tick, ctx);
        Answer::Enqueued(taken)
    }

    /// `node`'s consumers and gets from processes before `process` are gone: what they held
    /// goes back to the queue (redelivered, counted as a delivery), in delivery order, and the
    /// consumers are cancelled.
    fn consumers_gone(&mut self, node: NodeId, process: u64, ctx: &mut ReplicaContext) {
        let from_gone = |(n, p): (NodeId, u64)| n == node && p < process;
        let consumers: Vec<u64> = self
            .consumers
            .iter()
            .filter(|(_, home)| from_gone((home.node, home.process)))
            .map(|(id, _)| *id)
            .collect();
        let mut held: Vec<u64> = self
            .gets
            .iter()
            .filter(|(_, owner)| from_gone(**owner))
            .map(|(id, _)| *id)
            .collect();
        for id in &held {
            self.gets.remove(id);
        }
        for id in consumers {
            held.extend(self.core.unsettled_of(Some(id)));
            self.core.apply(Command::Cancel { consumer: id }, ctx);
            // Told to its node, in case only its link went (a node that restarted no longer
            // has it): the client gets `basic.cancel` rather than waiting for nothing. The
            // effect's resolution forgets it.
            ctx.emit(Effect::ConsumerCancelled { consumer: id });
        }
        held.sort_unstable();
        if !held.is_empty() {
            self.core.apply(Command::Requeue(held), ctx);
        }
    }

    /// An effect with its consumer resolved (one no longer registered is dropped: its
    /// cancellation was the state's own).
    fn resolve(&mut self, effect: Effect) -> Option<ReplicaEffect> {
        Some(match effect {
            Effect::Deliver {
                consumer,
                delivery,
                redelivered,
                no_ack,
                message,
            } => ReplicaEffect::Deliver {
                consumer: *self.consumers.get(&consumer)?,
                delivery,
                redelivered,
                no_ack,
                message,
            },
            Effect::ConsumerCancelled { consumer } => ReplicaEffect::ConsumerCancelled {
                consumer: self.consumers.remove(&consumer)?,
            },
            Effect::DeadLetter(d) if self.holds_dead_letters() => {
                let id = self.dead_letters.next;
                self.dead_letters.next += 1;
                self.held_bytes += d.message.body().len() as u64;
                self.dead_letters.held.insert(id, HeldDeadLetter::of(&d));
                ReplicaEffect::DeadLetterHeld { id }
            }
            Effect::DeadLetter(d) => ReplicaEffect::DeadLetter(d),
            Effect::Deleted => ReplicaEffect::Deleted,
        })
    }
}

/// The context every member gives the core: answers from the log only.
struct ReplicaContext {
    now_ms: u64,
    effects: Vec<Effect>,
    log: NoLog,
}

impl Context for ReplicaContext {
    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn wall_clock_ms(&self) -> u64 {
        self.now_ms
    }

    fn consumer_has_room(&mut self, _consumer: u64) -> bool {
        true
    }

    fn take_channel_credit(&mut self, _consumer: u64) -> bool {
        // Quorum queues have no channel-wide prefetch (as RabbitMQ's: `basic.qos` global is
        // not applied to them).
        true
    }

    fn emit(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    fn log(&mut self) -> &mut dyn QueueLog {
        &mut self.log
    }
}
