//! Resource alarms (memory, disk) and a connection: one that publishes is blocked (not read
//! from, and told with connection.blocked when it understands it) while an alarm is on.

use warren_amqp::protocol::{connection as conn_methods, AMQPClass};

use super::{Connection, Phase};
use crate::tracking::ConnectionState;

impl Connection {
    /// A publisher that just took the broker past its memory watermark is blocked at once,
    /// not at the watcher's next look (a fast client can send a lot in half a second).
    pub(super) fn check_memory(&mut self) {
        let Some(limit) = self.broker.memory_limit.get() else {
            return;
        };
        if crate::message::held_bytes() >= limit && self.broker.set_memory_alarm(true) {
            tracing::warn!(
                limit_bytes = limit,
                "memory alarm set: publishers are blocked"
            );
        }
        self.update_blocked();
    }

    /// Blocks a publishing connection while an alarm is on (telling a client that understands
    /// `connection.blocked`), and unblocks it when the alarm clears.
    pub(super) fn update_blocked(&mut self) {
        let alarms = *self.alarms.borrow();
        let block = alarms.any() && self.published && self.phase == Phase::Open;
        if block == self.blocked {
            return;
        }
        self.blocked = block;
        // (A closing connection that an alarm no longer blocks is still closing.)
        if self.phase == Phase::Open {
            self.info.set_state(if block {
                ConnectionState::Blocked
            } else {
                ConnectionState::Running
            });
        }
        if self.caps.connection_blocked {
            let method = if block {
                conn_methods::AMQPMethod::Blocked(conn_methods::Blocked {
                    reason: alarms.reason().into(),
                })
            } else {
                conn_methods::AMQPMethod::Unblocked(conn_methods::Unblocked {})
            };
            self.send_method(0, AMQPClass::Connection(method));
        }
    }
}
