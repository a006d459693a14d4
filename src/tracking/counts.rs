//! A channel's message counts (RabbitMQ's channel and connection `message_stats`). Only the
//! channel's own connection task writes them, so a bump is a load and a store, not a locked
//! read-modify-write: nothing measurable on the publish and delivery paths. Readers (the
//! management API, the rate sampler) see a value at most a bump behind.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! message_counts {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// Counts written by one task, read by any.
        #[derive(Default, Debug)]
        pub struct MessageCounts {
            $($(#[$doc])* pub $field: AtomicU64,)*
        }

        /// The counts at one moment.
        #[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
        pub struct MessageTotals {
            $($(#[$doc])* pub $field: u64,)*
        }

        impl MessageCounts {
            pub fn totals(&self) -> MessageTotals {
                MessageTotals {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                }
            }

            /// Adds `t` (a closed channel's totals to its connection's); by the one writer.
            pub fn add_totals(&self, t: &MessageTotals) {
                $(bump(&self.$field, t.$field);)*
            }
        }

        impl std::ops::Add for MessageTotals {
            type Output = MessageTotals;
            fn add(self, o: MessageTotals) -> MessageTotals {
                MessageTotals {
                    $($field: self.$field + o.$field,)*
                }
            }
        }

        impl MessageTotals {
            /// Each count by RabbitMQ's name, with how to read it from a sample.
            pub const NAMED: &'static [(&'static str, fn(&MessageTotals) -> u64)] = &[
                $((stringify!($field), |t| t.$field),)*
            ];
        }
    };
}

message_counts!(
    /// Messages published on the channel.
    publish,
    /// Publishes confirmed (basic.ack in confirm mode).
    confirm,
    /// Mandatory publishes that matched no queue, returned.
    return_unroutable,
    /// Other publishes that matched no queue, dropped.
    drop_unroutable,
    /// Deliveries to consumers that ack, and to those that do not.
    deliver,
    deliver_no_ack,
    /// Messages fetched with basic.get, with and without acks.
    get,
    get_no_ack,
    /// Deliveries and gets flagged redelivered.
    redeliver,
    /// Deliveries acknowledged.
    ack,
);

/// Adds `n` to a counter that only the calling task writes.
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}
