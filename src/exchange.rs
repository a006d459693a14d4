//! Exchanges and their bindings: which queues a routing key (and headers) reaches.

use std::collections::HashMap;
use std::sync::Arc;

use warren_amqp::types::{AMQPValue, FieldTable};

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

pub struct Binding {
    pub queue: Arc<QueueHandle>,
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
    bindings: Vec<Binding>,
    /// Direct exchanges: routing key → queues bound with it.
    by_key: HashMap<String, Vec<Arc<QueueHandle>>>,
}

impl Exchange {
    pub fn new(name: impl Into<String>, kind: ExchangeKind, durable: bool, auto_delete: bool, internal: bool, arguments: FieldTable) -> Self {
        Exchange {
            name: name.into(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: Vec::new(),
            by_key: HashMap::new(),
        }
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Adds a binding; binding the same (queue, key, arguments) twice is a no-op.
    pub fn bind(&mut self, queue: Arc<QueueHandle>, routing_key: &str, arguments: FieldTable) {
        let exists = self.bindings.iter().any(|b| {
            Arc::ptr_eq(&b.queue, &queue) && b.routing_key == routing_key && b.arguments == arguments
        });
        if exists {
            return;
        }
        self.bindings.push(Binding {
            queue,
            routing_key: routing_key.to_owned(),
            arguments,
        });
        self.reindex();
    }

    /// Removes a binding; true if there was one.
    pub fn unbind(&mut self, queue: &Arc<QueueHandle>, routing_key: &str, arguments: &FieldTable) -> bool {
        let before = self.bindings.len();
        self.bindings.retain(|b| {
            !(Arc::ptr_eq(&b.queue, queue) && b.routing_key == routing_key && &b.arguments == arguments)
        });
        let removed = self.bindings.len() != before;
        if removed {
            self.reindex();
        }
        removed
    }

    /// Removes every binding to `queue`; true if there were any.
    pub fn unbind_queue(&mut self, queue: &Arc<QueueHandle>) -> bool {
        let before = self.bindings.len();
        self.bindings.retain(|b| !Arc::ptr_eq(&b.queue, queue));
        let removed = self.bindings.len() != before;
        if removed {
            self.reindex();
        }
        removed
    }

    fn reindex(&mut self) {
        self.by_key.clear();
        if self.kind == ExchangeKind::Direct {
            for b in &self.bindings {
                let queues = self.by_key.entry(b.routing_key.clone()).or_default();
                if !queues.iter().any(|q| Arc::ptr_eq(q, &b.queue)) {
                    queues.push(b.queue.clone());
                }
            }
        }
    }

    /// Appends the queues this exchange routes a message to (each at most once).
    pub fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Arc<QueueHandle>>) {
        let mut push = |q: &Arc<QueueHandle>| {
            if !out.iter().any(|o| Arc::ptr_eq(o, q)) {
                out.push(q.clone());
            }
        };
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(queues) = self.by_key.get(routing_key) {
                    queues.iter().for_each(push);
                }
            }
            ExchangeKind::Fanout => self.bindings.iter().for_each(|b| push(&b.queue)),
            ExchangeKind::Topic => self
                .bindings
                .iter()
                .filter(|b| topic_matches(&b.routing_key, routing_key))
                .for_each(|b| push(&b.queue)),
            ExchangeKind::Headers => {
                let empty = FieldTable::default();
                let headers = headers.unwrap_or(&empty);
                self.bindings
                    .iter()
                    .filter(|b| headers_match(&b.arguments, headers))
                    .for_each(|b| push(&b.queue))
            }
        }
    }
}

/// RabbitMQ's topic matching: `*` is exactly one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&w, rest)) => match k.split_first() {
                Some((kw, krest)) => (w == "*" || w == *kw) && go(rest, krest),
                None => false,
            },
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

/// Headers exchange matching: `x-match` all (default) or any; `x-` keys are not matched; a void
/// binding value matches the header's presence.
pub fn headers_match(binding: &FieldTable, headers: &FieldTable) -> bool {
    let mode = match binding.inner().get("x-match") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => "all".to_owned(),
    };
    let any = mode.starts_with("any");
    let with_x = mode.ends_with("-with-x");
    let mut tests = binding
        .inner()
        .iter()
        .filter(|(k, _)| with_x || !k.as_str().starts_with("x-"))
        .filter(|(k, _)| k.as_str() != "x-match")
        .map(|(k, v)| match (headers.inner().get(k.as_str()), v) {
            (Some(_), AMQPValue::Void) => true,
            (Some(h), v) => h == v,
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
    use super::topic_matches;

    #[test]
    fn topic_basics() {
        assert!(topic_matches("a.*.c", "a.b.c"));
        assert!(!topic_matches("a.*.c", "a.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("a.#.c", "a.b.b.c"));
        assert!(!topic_matches("a.b", "a.b.c"));
    }
}
