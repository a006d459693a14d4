//! Quorum queues (`x-queue-type: quorum`): a queue replicated by a Raft group of its own, whose
//! state machine ([`machine`]) is the queue core, applied by every member to the same log;
//! [`applier`] runs it as the group's applier; [`host`] is the queue on one of its members, which sleeps while idle ([`sleep`]);
//! [`rebalance`] spreads leaders over the nodes.

pub mod applier;
pub mod host;
pub mod machine;
pub mod rebalance;
mod sleep;

pub use applier::machines_packed;
pub use sleep::members_asleep;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_group;
