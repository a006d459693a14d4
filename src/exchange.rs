//! Exchanges and their bindings: which destinations (queues, or exchanges for exchange-to-exchange
//! bindings) a routing key and headers reach. Direct exchanges index bindings by key, topic
//! exchanges by a trie over words, so routing cost does not grow with the number of bindings.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use warren_amqp::types::{AMQPValue, FieldTable};
use warren_amqp::AmqpError;

use crate::queue::dedup::DedupCache;
use crate::queue::QueueHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Clone)]
pub enum Destination {
    Queue(Arc<QueueHandle>),
    Exchange(Arc<str>),
}

impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Destination::Queue(a), Destination::Queue(b)) => Arc::ptr_eq(a, b),
            (Destination::Exchange(a), Destination::Exchange(b)) => a == b,
            _ => false,
        }
    }
}

pub struct Binding {
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: FieldTable,
}

pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    alternate: Option<Box<str>>,
    /// `x-message-deduplication`: publishes to this exchange whose id it remembers are dropped.
    pub dedup: Option<Mutex<DedupCache>>,
    bindings: Vec<Binding>,
    direct: HashMap<String, Vec<Destination>>,
    topic: TopicNode,
}

impl Exchange {
    pub fn new(
        name: impl Into<String>,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        let alternate = match arguments.inner().get("alternate-exchange") {
            Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().into()),
            _ => None,
        };
        Exchange {
            name: name.into(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate,
            dedup: None,
            bindings: Vec::new(),
            direct: HashMap::new(),
            topic: TopicNode::default(),
        }
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The `alternate-exchange` argument: where messages this exchange cannot route go.
    pub fn alternate(&self) -> Option<&str> {
        self.alternate.as_deref()
    }

    /// Adds a binding; binding the same (destination, key, arguments) twice is a no-op.
    pub fn bind(
        &mut self,
        destination: Destination,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), AmqpError> {
        if self.kind == ExchangeKind::Headers {
            validate_x_match(&arguments)?;
        }
        let exists = self.bindings.iter().any(|b| {
            b.destination == destination && b.routing_key == routing_key && b.arguments == arguments
        });
        if exists {
            return Ok(());
        }
        match self.kind {
            ExchangeKind::Direct => self
                .direct
                .entry(routing_key.to_owned())
                .or_default()
                .push(destination.clone()),
            ExchangeKind::Topic => self.topic.insert(&words(routing_key), destination.clone()),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        self.bindings.push(Binding {
            destination,
            routing_key: routing_key.to_owned(),
            arguments,
        });
        Ok(())
    }

    /// Whether this exact binding (destination, key, arguments) exists.
    pub fn has_binding(
        &self,
        destination: &Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> bool {
        self.bindings.iter().any(|b| {
            &b.destination == destination
                && b.routing_key == routing_key
                && &b.arguments == arguments
        })
    }

    /// Removes a binding; true if there was one.
    pub fn unbind(
        &mut self,
        destination: &Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> bool {
        let Some(at) = self.bindings.iter().position(|b| {
            &b.destination == destination
                && b.routing_key == routing_key
                && &b.arguments == arguments
        }) else {
            return false;
        };
        self.bindings.remove(at);
        self.unindex(destination, routing_key);
        true
    }

    /// Removes every binding to `destination`; true if there were any.
    pub fn unbind_destination(&mut self, destination: &Destination) -> bool {
        let mut removed = Vec::new();
        self.bindings.retain(|b| {
            let hit = &b.destination == destination;
            if hit {
                removed.push(b.routing_key.clone());
            }
            !hit
        });
        for key in &removed {
            self.unindex(destination, key);
        }
        !removed.is_empty()
    }

    fn unindex(&mut self, destination: &Destination, routing_key: &str) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(dests) = self.direct.get_mut(routing_key) {
                    if let Some(i) = dests.iter().position(|d| d == destination) {
                        dests.remove(i);
                    }
                    if dests.is_empty() {
                        self.direct.remove(routing_key);
                    }
                }
            }
            ExchangeKind::Topic => {
                self.topic.remove(&words(routing_key), destination);
            }
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
    }

    /// Calls `emit` for each destination a message with these routing keys and headers reaches
    /// (possibly more than once; the caller de-duplicates).
    pub fn route(
        &self,
        routing_keys: &[&str],
        headers: &LazyHeaders<'_>,
        emit: &mut dyn FnMut(&Destination),
    ) {
        match self.kind {
            ExchangeKind::Direct => {
                for key in routing_keys {
                    if let Some(dests) = self.direct.get(*key) {
                        dests.iter().for_each(&mut *emit);
                    }
                }
            }
            ExchangeKind::Fanout => self.bindings.iter().for_each(|b| emit(&b.destination)),
            ExchangeKind::Topic => {
                for key in routing_keys {
                    self.topic.walk(&words(key), emit);
                }
            }
            ExchangeKind::Headers => {
                let headers = headers.get();
                self.bindings
                    .iter()
                    .filter(|b| headers_match(&b.arguments, headers))
                    .for_each(|b| emit(&b.destination));
            }
        }
    }
}

/// A message's headers table, decoded only if a headers exchange looks at it.
pub struct LazyHeaders<'a> {
    raw: Option<&'a [u8]>,
    parsed: std::cell::OnceCell<FieldTable>,
}

impl<'a> LazyHeaders<'a> {
    /// `raw` is the table's content as in the content header, without its length prefix.
    pub fn new(raw: Option<&'a [u8]>) -> Self {
        LazyHeaders {
            raw,
            parsed: std::cell::OnceCell::new(),
        }
    }

    pub fn get(&self) -> &FieldTable {
        self.parsed.get_or_init(|| {
            self.raw
                .and_then(warren_amqp::encode::decode_table_entries)
                .unwrap_or_default()
        })
    }
}

/// A routing key or pattern as words; the empty key has none (as in RabbitMQ).
fn words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// The topic trie: one node per pattern word, `*` and `#` as their own edges.
#[derive(Default)]
struct TopicNode {
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

    fn insert(&mut self, pattern: &[&str], destination: Destination) {
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
    fn remove(&mut self, pattern: &[&str], destination: &Destination) {
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
    fn walk(&self, key: &[&str], emit: &mut dyn FnMut(&Destination)) -> usize {
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

fn x_match(binding: &FieldTable) -> Option<String> {
    match binding.inner().get("x-match")? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => Some(String::new()),
    }
}

fn validate_x_match(arguments: &FieldTable) -> Result<(), AmqpError> {
    match x_match(arguments).as_deref() {
        None | Some("all" | "any" | "all-with-x" | "any-with-x") => Ok(()),
        Some(other) => Err(AmqpError::precondition_failed(format!(
            "Invalid x-match field value <<\"{other}\">>; expected all, any, all-with-x, or any-with-x"
        ))),
    }
}

/// Values compare as RabbitMQ (Erlang `==`) compares them: numbers by value whatever their
/// width or kind (5 equals 5.0), strings and byte arrays by their octets; other types exactly.
pub fn same_value(a: &AMQPValue, b: &AMQPValue) -> bool {
    fn int(v: &AMQPValue) -> Option<i128> {
        crate::queue::args::integer(v).map(i128::from)
    }
    fn number(v: &AMQPValue) -> Option<f64> {
        match v {
            AMQPValue::Float(f) => Some(f64::from(*f)),
            AMQPValue::Double(d) => Some(*d),
            other => int(other).map(|n| n as f64),
        }
    }
    fn text(v: &AMQPValue) -> Option<&[u8]> {
        match v {
            AMQPValue::LongString(s) => Some(s.as_bytes()),
            AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
            AMQPValue::ByteArray(b) => Some(b.as_slice()),
            _ => None,
        }
    }
    if let (Some(x), Some(y)) = (int(a), int(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (text(a), text(b)) {
        return x == y;
    }
    a == b
}

/// Headers exchange matching: `x-match` all (default), any, all-with-x or any-with-x; `x-` keys
/// take part only in the `-with-x` modes; a void binding value matches the header's presence.
pub fn headers_match(binding: &FieldTable, headers: &FieldTable) -> bool {
    let mode = x_match(binding).unwrap_or_else(|| "all".to_owned());
    let any = mode.starts_with("any");
    let with_x = mode.ends_with("-with-x");
    let mut tests = binding
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")))
        .map(|(k, v)| match (headers.inner().get(k.as_str()), v) {
            (Some(_), AMQPValue::Void) => true,
            (Some(h), v) => same_value(h, v),
            (None, _) => false,
        });
    if any {
        tests.any(|t| t)
    } else {
        tests.all(|t| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(v.into())
    }

    #[test]
    fn headers_table() {
        use AMQPValue::{Boolean, Double, Float, LongInt, LongLongInt, ShortShortInt, Void};
        let cases: Vec<(FieldTable, FieldTable, bool)> = vec![
            (table(&[("a", s("1"))]), table(&[("a", s("1"))]), true),
            (table(&[("a", s("1"))]), table(&[("a", s("2"))]), false),
            (table(&[("a", s("1"))]), table(&[]), false),
            (
                table(&[("x-match", s("all")), ("a", s("1")), ("b", s("2"))]),
                table(&[("a", s("1")), ("b", s("2"))]),
                true,
            ),
            (
                table(&[("x-match", s("all")), ("a", s("1")), ("b", s("2"))]),
                table(&[("a", s("1"))]),
                false,
            ),
            (
                table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]),
                table(&[("a", s("1"))]),
                true,
            ),
            (
                table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]),
                table(&[("c", s("1"))]),
                false,
            ),
            (
                table(&[("x-match", s("any"))]),
                table(&[("a", s("1"))]),
                false,
            ),
            (
                table(&[("x-match", s("all"))]),
                table(&[("a", s("1"))]),
                true,
            ),
            (table(&[]), table(&[]), true),
            (table(&[("a", Void)]), table(&[("a", s("anything"))]), true),
            (table(&[("a", Void)]), table(&[("b", s("x"))]), false),
            (
                table(&[("a", LongInt(5))]),
                table(&[("a", ShortShortInt(5))]),
                true,
            ),
            (
                table(&[("a", LongInt(5))]),
                table(&[("a", LongLongInt(5))]),
                true,
            ),
            (
                table(&[("a", LongInt(5))]),
                table(&[("a", LongInt(6))]),
                false,
            ),
            (table(&[("a", LongInt(5))]), table(&[("a", s("5"))]), false),
            (
                table(&[("a", LongInt(5))]),
                table(&[("a", Double(5.0))]),
                true,
            ),
            (
                table(&[("a", Double(1.5))]),
                table(&[("a", Float(1.5))]),
                true,
            ),
            (
                table(&[("a", Boolean(true))]),
                table(&[("a", Boolean(true))]),
                true,
            ),
            (
                table(&[("a", Boolean(true))]),
                table(&[("a", Boolean(false))]),
                false,
            ),
            (
                table(&[("x-match", s("all")), ("x-k", s("1"))]),
                table(&[("x-k", s("2"))]),
                true,
            ),
            (
                table(&[("x-match", s("all-with-x")), ("x-k", s("1"))]),
                table(&[("x-k", s("2"))]),
                false,
            ),
            (
                table(&[("x-match", s("all-with-x")), ("x-k", s("1"))]),
                table(&[("x-k", s("1"))]),
                true,
            ),
            (
                table(&[("x-match", s("any-with-x")), ("x-k", s("1")), ("a", s("z"))]),
                table(&[("x-k", s("1"))]),
                true,
            ),
            (
                table(&[("x-match", s("any")), ("x-k", s("1"))]),
                table(&[("x-k", s("1"))]),
                false,
            ),
        ];
        for (i, (binding, headers, expected)) in cases.iter().enumerate() {
            assert_eq!(headers_match(binding, headers), *expected, "case {i}");
        }
    }

    #[test]
    fn invalid_x_match_is_refused() {
        let mut ex = Exchange::new(
            "h",
            ExchangeKind::Headers,
            false,
            false,
            false,
            FieldTable::default(),
        );
        let err = ex
            .bind(dest("d"), "", table(&[("x-match", s("some"))]))
            .unwrap_err();
        assert_eq!(err.code, warren_amqp::ReplyCode::PreconditionFailed);
    }
}
