//! Quorum queues (`x-queue-type: quorum`): a queue replicated by a Raft group of its own, whose
//! state machine ([`machine`]) is the queue core, applied by every member to the same log.

pub mod machine;

#[cfg(test)]
mod tests;
