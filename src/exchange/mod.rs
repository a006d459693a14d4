//! Exchanges and their bindings: which destinations (queues, or exchanges for exchange-to-exchange
//! bindings) a routing key and headers reach. Direct exchanges index bindings by key, topic
//! exchanges by a trie over words, so routing cost does not grow with the number of bindings.
//!
//! Layout:
//! - `mod.rs`: the exchange kinds, destinations and bindings, and `Exchange` itself: binding,
//!   unbinding and the common routing entry, which dispatches on the kind. Direct (a map from
//!   key to destinations) and fanout (every binding) are a few lines each and live here.
//! - `topic.rs`: the topic trie with its memoised walk, and `topic_matches`, the reference.
//! - `headers.rs`: headers matching (`x-match`), RabbitMQ's value equality, `LazyHeaders`.
//! - `stats.rs`: what passed through an exchange, and a connection's tally of it.

mod headers;
pub mod stats;
mod topic;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use warren_amqp::types::{AMQPValue, FieldTable};
use warren_amqp::AmqpError;

use crate::policy::{resolve, Applied as AppliedPolicies};
use crate::queue::dedup::DedupCache;
use crate::queue::QueueHandle;

use headers::validate_x_match;
pub use headers::{headers_match, same_value, LazyHeaders};
pub use topic::topic_matches;
use topic::{words, TopicNode};

/// Serialized by its AMQP name (`"direct"`), as definitions carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// The policies that apply to the exchange, and the alternate exchange they give it (which
    /// the argument's overrides).
    policies: AppliedPolicies,
    policy_alternate: Option<Box<str>>,
    /// `x-message-deduplication`: publishes to this exchange whose id it remembers are dropped.
    pub dedup: Option<Mutex<DedupCache>>,
    bindings: Vec<Binding>,
    direct: HashMap<String, Vec<Destination>>,
    topic: TopicNode,
    /// What was published into it and routed out of it.
    pub stats: std::sync::Arc<stats::ExchangeStats>,
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
            policies: AppliedPolicies::default(),
            policy_alternate: None,
            dedup: None,
            bindings: Vec::new(),
            direct: HashMap::new(),
            topic: TopicNode::default(),
            stats: Default::default(),
        }
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Where messages this exchange cannot route go: its `alternate-exchange` argument, else its
    /// policy's.
    pub fn alternate(&self) -> Option<&str> {
        self.alternate
            .as_deref()
            .or(self.policy_alternate.as_deref())
    }

    /// The policies that apply to the exchange.
    pub fn policies(&self) -> &AppliedPolicies {
        &self.policies
    }

    pub fn set_policies(&mut self, policies: AppliedPolicies) {
        self.policy_alternate =
            resolve::alternate_exchange(None, &policies.effective_definition()).map(Into::into);
        self.policies = policies;
    }

    /// Whether a binding with these arguments may be added (a headers exchange's `x-match` must
    /// be one it knows), with RabbitMQ's error otherwise.
    pub fn check_binding(&self, arguments: &FieldTable) -> Result<(), AmqpError> {
        check_binding_arguments(self.kind, arguments)
    }

    /// Adds a binding; binding the same (destination, key, arguments) twice is a no-op.
    pub fn bind(
        &mut self,
        destination: Destination,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), AmqpError> {
        self.check_binding(&arguments)?;
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
    /// Moves every binding to `from` to `to` (a queue started again in another form).
    pub fn repoint(&mut self, from: &Destination, to: &Destination) {
        let moved: Vec<(String, FieldTable)> = self
            .bindings
            .iter()
            .filter(|b| &b.destination == from)
            .map(|b| (b.routing_key.clone(), b.arguments.clone()))
            .collect();
        if moved.is_empty() {
            return;
        }
        self.unbind_destination(from);
        for (key, arguments) in moved {
            if let Err(e) = self.bind(to.clone(), &key, arguments) {
                tracing::error!(exchange = %self.name, "binding not moved: {e}");
            }
        }
    }

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

/// Whether an exchange of this type takes a binding with these arguments (a headers exchange's
/// `x-match` must be one it knows), with RabbitMQ's error otherwise; for checks made before the
/// exchange exists (a definitions import).
pub fn check_binding_arguments(
    kind: ExchangeKind,
    arguments: &FieldTable,
) -> Result<(), AmqpError> {
    if kind == ExchangeKind::Headers {
        validate_x_match(arguments)?;
    }
    Ok(())
}
