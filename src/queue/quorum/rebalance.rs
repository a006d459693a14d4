//! Leaders spread over the nodes again (`rabbitmq-queues rebalance quorum`): which quorum
//! queues hand their leadership to which member, so that every node that is up leads about as
//! many queues as the others. A plan only: the moves are made by the caller (each queue's group
//! hands its leadership over), so the rule can be tested on its own.

use std::collections::BTreeMap;

/// A queue whose leader may move: where it is led now and where its members are.
#[derive(Debug, Clone)]
pub struct Led<K> {
    pub queue: K,
    pub leader: String,
    pub members: Vec<String>,
}

/// The moves (queue, its new leader) that leave no queue whose leader's node leads two or more
/// queues more than one of its other members' nodes: the busiest node gives a queue to its
/// least busy member first, until no move evens things out further. Only `nodes` (those up)
/// count and take leaders; a queue led elsewhere (its leader's node down) is left alone.
pub fn plan<K: Clone>(queues: &[Led<K>], nodes: &[String]) -> Vec<(K, String)> {
    let mut counts: BTreeMap<&str, usize> = nodes.iter().map(|n| (n.as_str(), 0)).collect();
    // Where each queue is led as the plan goes, by its index in `queues`.
    let mut leaders: Vec<Option<&str>> = queues
        .iter()
        .map(|q| Some(q.leader.as_str()).filter(|l| counts.contains_key(l)))
        .collect();
    for leader in leaders.iter().flatten() {
        if let Some(c) = counts.get_mut(leader) {
            *c += 1;
        }
    }
    let mut moves = Vec::new();
    loop {
        // The move that takes from the busiest node to the least busy member node there is.
        let mut best: Option<(usize, &str, usize)> = None;
        for (i, q) in queues.iter().enumerate() {
            let Some(from) = leaders[i] else { continue };
            let from_count = counts[from];
            for to in &q.members {
                let Some(&to_count) = counts.get(to.as_str()) else {
                    continue;
                };
                if to_count + 2 > from_count {
                    continue;
                }
                let gain = from_count - to_count;
                if best.is_none_or(|(_, _, g)| gain > g) {
                    best = Some((i, to.as_str(), gain));
                }
            }
        }
        let Some((i, to, _)) = best else {
            return moves;
        };
        if let Some(from) = leaders[i] {
            if let Some(c) = counts.get_mut(from) {
                *c -= 1;
            }
        }
        if let Some(c) = counts.get_mut(to) {
            *c += 1;
        }
        leaders[i] = Some(to);
        moves.push((queues[i].queue.clone(), to.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn led(queue: usize, leader: &str, members: &[&str]) -> Led<usize> {
        Led {
            queue,
            leader: leader.into(),
            members: names(members),
        }
    }

    /// Leaders per node once `moves` are made.
    fn after(queues: &[Led<usize>], moves: &[(usize, String)]) -> BTreeMap<String, usize> {
        let mut leaders: Vec<String> = queues.iter().map(|q| q.leader.clone()).collect();
        for (q, to) in moves {
            leaders[*q] = to.clone();
        }
        let mut counts = BTreeMap::new();
        for l in leaders {
            *counts.entry(l).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn queues_declared_on_one_node_are_spread_over_three() {
        let all = ["n1", "n2", "n3"];
        let queues: Vec<_> = (0..7).map(|i| led(i, "n1", &all)).collect();
        let moves = plan(&queues, &names(&all));
        let counts = after(&queues, &moves);
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [3, 2, 2]);
        assert_eq!(moves.len(), 4, "no queue moves twice or for nothing");
    }

    #[test]
    fn a_balanced_cluster_stays_as_it_is() {
        let all = ["n1", "n2", "n3"];
        let queues = [led(0, "n1", &all), led(1, "n2", &all), led(2, "n3", &all)];
        assert!(plan(&queues, &names(&all)).is_empty());
    }

    #[test]
    fn leaders_move_only_to_members_that_are_up() {
        // n3 is down: it takes nothing, and its queue is left alone; q2 can only go to n2.
        let queues = [
            led(0, "n1", &["n1", "n2"]),
            led(1, "n1", &["n1", "n2"]),
            led(2, "n1", &["n1", "n3"]),
            led(3, "n3", &["n1", "n3"]),
        ];
        let moves = plan(&queues, &names(&["n1", "n2"]));
        assert_eq!(moves, [(0, "n2".to_owned())]);
        // A queue whose only other member is down keeps its leader.
        let queues = [led(0, "n1", &["n1", "n3"]), led(1, "n1", &["n1", "n3"])];
        assert!(plan(&queues, &names(&["n1", "n2"])).is_empty());
    }

    proptest! {
        /// Every move goes to a member that is up, and after the plan no queue's leader could
        /// move to another member and even the counts out (two or more apart).
        #[test]
        fn no_move_is_left_that_evens_things_out(
            shape in prop::collection::vec((0usize..4, prop::collection::btree_set(0usize..4, 1..4)), 0..40),
            up in prop::collection::btree_set(0usize..4, 1..5),
        ) {
            let node = |i: usize| format!("n{i}");
            let nodes: Vec<String> = up.iter().map(|&i| node(i)).collect();
            let queues: Vec<Led<usize>> = shape
                .iter()
                .enumerate()
                .map(|(i, (leader, members))| {
                    let mut members: Vec<String> = members.iter().map(|&m| node(m)).collect();
                    if !members.contains(&node(*leader)) {
                        members.push(node(*leader));
                    }
                    Led { queue: i, leader: node(*leader), members }
                })
                .collect();
            let moves = plan(&queues, &nodes);
            let mut leaders: Vec<String> = queues.iter().map(|q| q.leader.clone()).collect();
            for (q, to) in &moves {
                prop_assert!(queues[*q].members.contains(to));
                prop_assert!(nodes.contains(to));
                prop_assert!(nodes.contains(&leaders[*q]), "a queue led by a node down moved");
                leaders[*q] = to.clone();
            }
            let count = |n: &String| leaders.iter().filter(|l| *l == n).count();
            for (q, leader) in queues.iter().zip(&leaders) {
                if !nodes.contains(leader) {
                    continue;
                }
                for m in q.members.iter().filter(|m| nodes.contains(m)) {
                    prop_assert!(count(m) + 2 > count(leader), "{q:?} could still move to {m}");
                }
            }
        }
    }
}
