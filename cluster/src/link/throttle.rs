//! Logging what a stranger can make happen at will (sockets opened and dropped on the cluster
//! port) without letting it fill the log.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Says which occurrences of one kind of event to log: the first, then at most one per period,
/// with the number passed over since the last one logged.
pub(crate) struct LogThrottle {
    every: Duration,
    state: Mutex<ThrottleState>,
}

struct ThrottleState {
    last_logged: Option<Instant>,
    passed_over: u64,
}

impl LogThrottle {
    pub(crate) fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            state: Mutex::new(ThrottleState {
                last_logged: None,
                passed_over: 0,
            }),
        }
    }

    /// One occurrence: `Some(passed over since the last logged)` when this one is to be logged.
    pub(crate) fn tick(&self) -> Option<u64> {
        let mut state = super::lock(&self.state);
        let now = Instant::now();
        if state
            .last_logged
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            state.passed_over += 1;
            return None;
        }
        state.last_logged = Some(now);
        Some(std::mem::take(&mut state.passed_over))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn logs_the_first_then_one_per_period_with_the_count_passed_over() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(throttle.tick(), Some(0));
        for _ in 0..99 {
            assert_eq!(throttle.tick(), None);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(throttle.tick(), Some(99));
        assert_eq!(throttle.tick(), None);
    }
}
