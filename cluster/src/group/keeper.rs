//! One leadership keeper per node (and check interval) for all its groups: every `check` it
//! looks at each group's member at once, without waiting (is its leader reachable, is it idle
//! enough to go dormant, did the leader it knew as a dormant member go), and starts a task only
//! for a member that has something to do (an election, going dormant, waking up). A task and a
//! timer per member cost each idle member several kilobytes; a thousand quiet queues need none.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::Group;

/// How many rounds in a row a dormant member finds its leader's node unreachable before it
/// wakes to elect another: a link that blinks (a reconnection, a node just started whose links
/// are not all up) woke every dormant follower of that leader, thousands of queues at once.
const LEADER_GONE_ROUNDS: u8 = 2;

/// The groups kept, by check interval (each interval has its own loop).
#[derive(Default)]
pub(crate) struct Keepers(Mutex<HashMap<Duration, Arc<Mutex<Vec<Kept>>>>>);

/// A group kept led: its member (held weakly: a dropped group is forgotten) and the order in
/// which members stand for election.
struct Kept {
    group: Weak<Group>,
    /// One copy for every group of the same order (see [`crate::shared_copies::names`]).
    preference: Arc<Vec<String>>,
    /// Its first round comes a whole `check` after it was registered (a new group's first
    /// member is still electing itself before that: the others must not stand yet).
    since: tokio::time::Instant,
}

/// What a member does this round, found without waiting.
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) enum Step {
    Nothing,
    /// Dormant, its leader's node gone ([`LEADER_GONE_ROUNDS`] in a row): it wakes to elect
    /// another.
    WakeToElect,
    /// Idle long enough: it goes dormant (or, if it cannot, keeps its leader as below).
    GoDormant,
    /// Its leader is unreachable: it stands for election in its turn.
    Elect,
    /// Stopped for good: forgotten.
    Forget,
}

impl Keepers {
    /// Keeps `group` led from now on, checked every `check` with the others of that interval.
    pub(crate) fn keep(&self, group: &Arc<Group>, check: Duration, preference: Vec<String>) {
        let mut keepers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let kept = Kept {
            group: Arc::downgrade(group),
            preference: crate::shared_copies::names(preference),
            since: tokio::time::Instant::now(),
        };
        if let Some(list) = keepers.get(&check) {
            list.lock().unwrap_or_else(|e| e.into_inner()).push(kept);
            return;
        }
        let list = Arc::new(Mutex::new(vec![kept]));
        keepers.insert(check, list.clone());
        tokio::spawn(keep_all(Arc::downgrade(&list), check));
    }
}

/// The loop of one check interval: ends when its list is dropped (with the node).
async fn keep_all(list: Weak<Mutex<Vec<Kept>>>, check: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + check, check);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(kept) = list.upgrade() else {
            return;
        };
        let groups: Vec<(Arc<Group>, Arc<Vec<String>>)> = {
            let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.retain(|k| k.group.strong_count() > 0);
            kept.iter()
                .filter(|k| k.since.elapsed() >= check)
                .filter_map(|k| Some((k.group.upgrade()?, k.preference.clone())))
                .collect()
        };
        let mut forgotten = Vec::new();
        for (group, preference) in groups {
            // A member whose last round has not ended skips this one, as its own loop did.
            if group.keeping.swap(true, Ordering::AcqRel) {
                continue;
            }
            match group.next_step(check) {
                Step::Nothing => group.keeping.store(false, Ordering::Release),
                Step::Forget => forgotten.push(Arc::as_ptr(&group)),
                step => {
                    tokio::spawn(async move {
                        group.take_step(step, check, &preference).await;
                        group.keeping.store(false, Ordering::Release);
                    });
                }
            }
        }
        if !forgotten.is_empty() {
            kept.lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|k| !forgotten.contains(&k.group.as_ptr()));
        }
    }
}

impl Group {
    /// This round's step for its member, decided without waiting.
    pub(super) fn next_step(&self, check: Duration) -> Step {
        // Rounds in a row: a round that finds the member awake, or its leader reachable, ends
        // the count.
        let gone_before = self.leader_gone_rounds.swap(0, Ordering::Relaxed);
        if self.is_dormant() {
            if self.restart.stopped() {
                return Step::Forget;
            }
            if !self.leader_gone() {
                return Step::Nothing;
            }
            let rounds = gone_before.saturating_add(1);
            if rounds < LEADER_GONE_ROUNDS {
                self.leader_gone_rounds.store(rounds, Ordering::Relaxed);
                return Step::Nothing;
            }
            return Step::WakeToElect;
        }
        if self.restart.stopped() {
            return Step::Forget;
        }
        if self.quiet_down_when_idle(check) {
            return Step::GoDormant;
        }
        match self.leader_reachable(self.node.name()) {
            true => Step::Nothing,
            false => Step::Elect,
        }
    }

    /// Takes a step [`Group::next_step`] chose.
    async fn take_step(&self, step: Step, check: Duration, preference: &[String]) {
        match step {
            Step::WakeToElect => {
                // Woken to elect another among those left, as RabbitMQ's followers do when
                // their leader's node goes, idle or not.
                if self.running().await.is_err() {
                    return;
                }
            }
            Step::GoDormant => {
                if self.go_dormant().await {
                    return;
                }
            }
            Step::Elect => {}
            Step::Nothing | Step::Forget => return,
        }
        self.lead_or_elect(check, preference).await;
    }
}
