//! Message deduplication (`x-message-deduplication`): a queue remembers the ids of recent
//! publishes — the `message-id` property, or a header named by `x-deduplication-header` — for
//! `x-cache-ttl` milliseconds and at most `x-cache-size` ids, and drops a publish whose id it
//! remembers. The publisher still gets its confirm.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use warren_amqp::types::AMQPValue;

use super::args::Dedup;
use crate::message::Message;

pub struct DedupCache {
    seen: HashMap<Vec<u8>, Instant>,
    /// Ids in the order they were remembered, with their expiry, for eviction.
    order: VecDeque<(Vec<u8>, Instant)>,
    size: usize,
    ttl: Option<Duration>,
    header: Option<String>,
}

impl DedupCache {
    pub fn new(settings: &Dedup) -> Self {
        DedupCache {
            seen: HashMap::new(),
            order: VecDeque::new(),
            size: settings.cache_size.max(1),
            ttl: settings.ttl_ms.map(Duration::from_millis),
            header: settings.header.clone(),
        }
    }

    /// The id a message is deduplicated by, if it has one.
    pub fn key_of(&self, message: &Message) -> Option<Vec<u8>> {
        let props = message.properties_view();
        match &self.header {
            None => props.message_id.map(<[u8]>::to_vec),
            Some(name) => {
                let table = warren_amqp::encode::decode_table_entries(props.headers?)?;
                match table.inner().get(name.as_str())? {
                    AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
                    AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
                    other => crate::queue::args::integer(other).map(|n| n.to_string().into_bytes()),
                }
            }
        }
    }

    /// True when `key` was seen within the window (a duplicate); otherwise remembers it.
    pub fn is_duplicate(&mut self, key: Vec<u8>, now: Instant) -> bool {
        self.forget_expired(now);
        if self.seen.get(&key).is_some_and(|expiry| *expiry > now) {
            return true;
        }
        // Without a TTL an id is remembered until pushed out by newer ones.
        let expiry = self
            .ttl
            .map_or(now + Duration::from_secs(100 * 365 * 86_400), |ttl| {
                now + ttl
            });
        self.seen.insert(key.clone(), expiry);
        self.order.push_back((key, expiry));
        while self.seen.len() > self.size {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            if self.seen.get(&old) == Some(&at) {
                self.seen.remove(&old);
            }
        }
        false
    }

    fn forget_expired(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front() {
            if *at > now {
                break;
            }
            if self.seen.get(key) == Some(at) {
                self.seen.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_ttl_and_size() {
        let mut c = DedupCache::new(&Dedup {
            cache_size: 2,
            ttl_ms: Some(1000),
            header: None,
        });
        let t0 = Instant::now();
        assert!(!c.is_duplicate(b"a".to_vec(), t0));
        assert!(c.is_duplicate(b"a".to_vec(), t0 + Duration::from_millis(10)));
        assert!(
            !c.is_duplicate(b"a".to_vec(), t0 + Duration::from_millis(1500)),
            "expired"
        );
        assert!(!c.is_duplicate(b"b".to_vec(), t0 + Duration::from_millis(1500)));
        assert!(!c.is_duplicate(b"c".to_vec(), t0 + Duration::from_millis(1500)));
        assert!(
            !c.is_duplicate(b"a".to_vec(), t0 + Duration::from_millis(1501)),
            "pushed out by b and c"
        );
    }
}
