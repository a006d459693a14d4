//! Topic routing: a trie over the words of the binding patterns, `*` and `#` as their own edges,
//! walked with memoisation so no pattern makes a publish slow; and `topic_matches`, RabbitMQ's
//! semantics written plainly, the reference the trie is tested against. Apart from `Exchange`
//! because it is the one intricate index.

use std::collections::{HashMap, HashSet};

use super::Destination;

/// A routing key or pattern as words; the empty key has none (as in RabbitMQ).
pub(super) fn words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// The topic trie: one node per pattern word, `*` and `#` as their own edges.
#[derive(Default)]
pub(super) struct TopicNode {
    words: HashMap<Box<str>, TopicNode>,
    star: Option<Box<TopicNode>>,
    hash: Option<Box<TopicNode>>,
    destinations: Vec<Destination>,
}

impl TopicNode {
    fn is_empty(&self) -> bool {
        self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.destinations.is_empty()
    }

    pub(super) fn insert(&mut self, pattern: &[&str], destination: Destination) {
        let Some((first, rest)) = pattern.split_first() else {
            self.destinations.push(destination);
            return;
        };
        let child = match *first {
            "*" => self.star.get_or_insert_with(Default::default).as_mut(),
            "#" => self.hash.get_or_insert_with(Default::default).as_mut(),
            word => self.words.entry(word.into()).or_default(),
        };
        child.insert(rest, destination);
    }

    /// Removes one occurrence; prunes nodes left empty.
    pub(super) fn remove(&mut self, pattern: &[&str], destination: &Destination) {
        let Some((first, rest)) = pattern.split_first() else {
            if let Some(i) = self.destinations.iter().position(|d| d == destination) {
                self.destinations.remove(i);
            }
            return;
        };
        match *first {
            "*" => {
                if let Some(child) = self.star.as_mut() {
                    child.remove(rest, destination);
                    if child.is_empty() {
                        self.star = None;
                    }
                }
            }
            "#" => {
                if let Some(child) = self.hash.as_mut() {
                    child.remove(rest, destination);
                    if child.is_empty() {
                        self.hash = None;
                    }
                }
            }
            word => {
                if let Some(child) = self.words.get_mut(word) {
                    child.remove(rest, destination);
                    if child.is_empty() {
                        self.words.remove(word);
                    }
                }
            }
        }
    }

    /// Emits the destinations of every pattern that matches `key`. Each (node, position) pair
    /// is visited at most once, so the work is linear in (trie nodes × key words) however many
    /// `#` a pattern holds: `#.#.#.#` against a 100-word key must not explode.
    /// Returns how many nodes it visited.
    pub(super) fn walk(&self, key: &[&str], emit: &mut dyn FnMut(&Destination)) -> usize {
        // Only `#` edges can reach a node at the same position twice; the set stays empty (and
        // unallocated) for patterns without them.
        let mut seen = HashSet::new();
        self.walk_at(key, 0, &mut seen, emit)
    }

    fn walk_at(
        &self,
        key: &[&str],
        at: usize,
        seen: &mut HashSet<(*const TopicNode, usize)>,
        emit: &mut dyn FnMut(&Destination),
    ) -> usize {
        let mut visits = 1;
        if let Some(hash) = &self.hash {
            // `#` takes zero or more words: its node is entered at every later position.
            for next in at..=key.len() {
                if !seen.insert((&**hash as *const TopicNode, next)) {
                    // Entered there (and so at every position after it) already.
                    break;
                }
                visits += hash.walk_at(key, next, seen, emit);
            }
        }
        if at == key.len() {
            self.destinations.iter().for_each(&mut *emit);
            return visits;
        }
        if let Some(child) = self.words.get(key[at]) {
            visits += child.walk_at(key, at + 1, seen, emit);
        }
        if let Some(star) = &self.star {
            visits += star.walk_at(key, at + 1, seen, emit);
        }
        visits
    }
}

/// RabbitMQ's topic semantics, word by word, without an index: the reference the trie is checked
/// against.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let (p, k) = (words(pattern), words(key));
    // matched[j]: the pattern words so far match the first j key words.
    let mut matched = vec![false; k.len() + 1];
    matched[0] = true;
    for w in &p {
        let mut next = vec![false; k.len() + 1];
        for j in 0..=k.len() {
            next[j] = match *w {
                // `#` takes zero or more words.
                "#" => matched[j] || (j > 0 && next[j - 1]),
                "*" => j > 0 && matched[j - 1],
                w => j > 0 && matched[j - 1] && k[j - 1] == w,
            };
        }
        matched = next;
    }
    matched[k.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Exchange, ExchangeKind, LazyHeaders};
    use proptest::prelude::*;
    use warren_amqp::types::FieldTable;

    fn dest(name: &str) -> Destination {
        Destination::Exchange(name.into())
    }

    fn trie_matches(pattern: &str, key: &str) -> bool {
        let mut node = TopicNode::default();
        node.insert(&words(pattern), dest("d"));
        let mut hit = false;
        node.walk(&words(key), &mut |_| hit = true);
        hit
    }

    #[test]
    fn many_hashes_against_a_long_key_stay_linear() {
        // One publish with a 100-word key against `#.#.#.#.#.#.nomatch` took ~40 s of routing
        // when every `#` tried every split.
        let mut node = TopicNode::default();
        let pattern = "#.#.#.#.#.#.nomatch";
        node.insert(&words(pattern), dest("d"));
        node.insert(&words("#.#.#.#.#.#.w99"), dest("e"));
        let key: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
        let key = key.join(".");
        let mut hits = Vec::new();
        let visits = node.walk(&words(&key), &mut |d| hits.push(d.clone()));
        assert!(hits == vec![dest("e")]);
        assert!(!topic_matches(pattern, &key));
        assert!(topic_matches("#.#.#.#.#.#.w99", &key));
        // Each node at most once per position: 14 nodes (shared `#` prefix: 8) × 101 positions.
        assert!(visits <= 15 * 101, "{visits} visits");
    }

    /// (pattern, routing key, matches?) as RabbitMQ documents and implements topic routing.
    const TOPIC_CASES: &[(&str, &str, bool)] = &[
        ("a.b.c", "a.b.c", true),
        ("a.b.c", "a.b", false),
        ("a.b", "a.b.c", false),
        ("*.b.c", "a.b.c", true),
        ("*.b.c", "b.c", false),
        ("a.*.c", "a.b.c", true),
        ("a.*.c", "a..c", true),
        ("a.*.c", "a.c", false),
        ("a.*", "a", false),
        ("a.*", "a.", true),
        ("*", "", false),
        ("*", "a", true),
        ("*", "a.b", false),
        ("#", "", true),
        ("#", "a", true),
        ("#", "a.b.c", true),
        ("a.#", "a", true),
        ("a.#", "a.b", true),
        ("a.#", "a.b.c", true),
        ("a.#", "b.a", false),
        ("#.a", "a", true),
        ("#.a", "b.c.a", true),
        ("#.a", "a.b", false),
        ("a.#.b", "a.b", true),
        ("a.#.b", "a.x.y.b", true),
        ("a.#.b", "a.x.y", false),
        ("#.#", "", true),
        ("#.#", "a.b", true),
        ("#.*", "", false),
        ("#.*", "a", true),
        ("*.#", "a.b.c", true),
        ("*.*", "a", false),
        ("*.*", "a.b", true),
        ("a.#.#.b", "a.b", true),
        ("#.b.#", "b", true),
        ("#.b.#", "a.b.c", true),
        ("#.b.#", "a.c", false),
        ("", "", true),
        ("", "a", false),
        ("a", "", false),
        ("stock.usd.*", "stock.usd.nyse", true),
        ("stock.*.nyse", "stock.eur.nyse", true),
        ("*.orange.*", "quick.orange.rabbit", true),
        ("*.*.rabbit", "lazy.orange.elephant", false),
        ("lazy.#", "lazy.orange.male.rabbit", true),
        ("*.orange.*", "quick.orange.male.rabbit", false),
        ("a.b", "A.b", false),
    ];

    #[test]
    fn topic_table_trie_and_reference_agree() {
        for (pattern, key, expected) in TOPIC_CASES {
            assert_eq!(
                topic_matches(pattern, key),
                *expected,
                "reference: {pattern:?} vs {key:?}"
            );
            assert_eq!(
                trie_matches(pattern, key),
                *expected,
                "trie: {pattern:?} vs {key:?}"
            );
        }
    }

    fn pattern_word() -> impl Strategy<Value = String> {
        prop_oneof![Just("*".to_owned()), Just("#".to_owned()), "[ab]{0,1}"]
    }

    proptest! {
        #[test]
        fn trie_agrees_with_reference(p in proptest::collection::vec(pattern_word(), 0..8), k in proptest::collection::vec("[ab]{0,1}", 0..12)) {
            let pattern = p.join(".");
            let key = k.join(".");
            prop_assert_eq!(trie_matches(&pattern, &key), topic_matches(&pattern, &key));
        }

        #[test]
        fn trie_with_many_bindings_emits_exactly_the_matching_ones(
            patterns in proptest::collection::vec(proptest::collection::vec(pattern_word(), 0..4), 1..20),
            k in proptest::collection::vec("[ab]{0,1}", 0..4),
            remove in proptest::collection::vec(any::<bool>(), 20),
        ) {
            let mut ex = Exchange::new("t", ExchangeKind::Topic, false, false, false, FieldTable::default());
            let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
            for (i, p) in patterns.iter().enumerate() {
                ex.bind(dest(&i.to_string()), p, FieldTable::default()).unwrap();
            }
            for (i, p) in patterns.iter().enumerate() {
                if remove[i] {
                    ex.unbind(&dest(&i.to_string()), p, &FieldTable::default());
                }
            }
            let key = k.join(".");
            let mut got = Vec::new();
            ex.route(&[&key], &LazyHeaders::new(None), &mut |d| if let Destination::Exchange(n) = d { got.push(n.to_string()) });
            got.sort();
            got.dedup();
            let mut want: Vec<String> = patterns.iter().enumerate()
                .filter(|(i, p)| !remove[*i] && topic_matches(p, &key))
                .map(|(i, _)| i.to_string()).collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
