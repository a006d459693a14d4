//! Message deduplication (`x-message-deduplication`, on a queue or an exchange): the ids of
//! recent publishes — the `message-id` property, or a header named by `x-deduplication-header` —
//! are remembered for `x-cache-ttl` milliseconds and at most `x-cache-size` ids, and a publish
//! whose id is remembered is dropped. The publisher still gets its confirm.
//!
//! A durable owner's cache is mirrored in the store (see [`DedupCache::take_writes`]) and
//! restored at start-up, so a restart does not forget what was already seen. Times are Unix
//! milliseconds so that they mean the same after a restart.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use warren_amqp::types::AMQPValue;
use warren_amqp::PropertiesView;
use warren_storage::{Op, RememberedId};

use super::args::Dedup;

/// Expiry of an id remembered without a TTL (kept until pushed out by newer ones).
const NEVER: u64 = u64::MAX;

pub struct DedupCache {
    /// Id → when it is forgotten.
    seen: HashMap<Vec<u8>, u64>,
    /// Ids in the order they were remembered, with their expiry, for eviction.
    order: VecDeque<(Vec<u8>, u64)>,
    size: usize,
    ttl_ms: Option<u64>,
    header: Option<String>,
    /// Whether changes are kept for the store (the owner is durable).
    durable: bool,
    remembered: Vec<RememberedId>,
    forgotten: Vec<Vec<u8>>,
}

/// The clock deduplication runs on: Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The store's name for a durable queue's cache.
pub fn queue_owner(storage_id: u64) -> String {
    format!("q:{storage_id}")
}

/// The store's name for a durable exchange's cache.
pub fn exchange_owner(vhost: &str, exchange: &str) -> String {
    format!("e:{vhost}\0{exchange}")
}

/// The id a message is deduplicated by, if it has one.
pub fn key_of(header: Option<&str>, props: &PropertiesView<'_>) -> Option<Vec<u8>> {
    match header {
        None => props.message_id.map(<[u8]>::to_vec),
        Some(name) => {
            let table = warren_amqp::encode::decode_table_entries(props.headers?)?;
            match table.inner().get(name)? {
                AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
                AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
                other => crate::queue::args::integer(other).map(|n| n.to_string().into_bytes()),
            }
        }
    }
}

/// Everything a non-durable cache remembers, to rebuild it elsewhere (a replicated queue's
/// snapshot). A durable cache's changes not yet taken for the store are not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupState {
    pub size: usize,
    pub ttl_ms: Option<u64>,
    pub header: Option<String>,
    /// Each remembered id with when it is forgotten, sorted by id (so that equal caches give
    /// equal states).
    pub seen: Vec<(Vec<u8>, u64)>,
    /// Ids in the order they were remembered, with their expiry; may hold entries an id's later
    /// remembering superseded, which eviction skips.
    pub order: Vec<(Vec<u8>, u64)>,
}

impl DedupCache {
    pub fn new(settings: &Dedup, durable: bool) -> Self {
        DedupCache {
            seen: HashMap::new(),
            order: VecDeque::new(),
            size: settings.cache_size.max(1),
            ttl_ms: settings.ttl_ms,
            header: settings.header.clone(),
            durable,
            remembered: Vec::new(),
            forgotten: Vec::new(),
        }
    }

    /// What the cache remembers, as [`DedupCache::from_state`] takes it back.
    pub fn state(&self) -> DedupState {
        let mut seen: Vec<_> = self.seen.iter().map(|(k, e)| (k.clone(), *e)).collect();
        seen.sort_unstable();
        DedupState {
            size: self.size,
            ttl_ms: self.ttl_ms,
            header: self.header.clone(),
            seen,
            order: self.order.iter().cloned().collect(),
        }
    }

    /// A non-durable cache remembering what `state` says.
    pub fn from_state(state: DedupState) -> Self {
        DedupCache {
            seen: state.seen.into_iter().collect(),
            order: state.order.into(),
            size: state.size.max(1),
            ttl_ms: state.ttl_ms,
            header: state.header,
            durable: false,
            remembered: Vec::new(),
            forgotten: Vec::new(),
        }
    }

    /// The id a message is deduplicated by, if it has one.
    pub fn key_of(&self, props: &PropertiesView<'_>) -> Option<Vec<u8>> {
        key_of(self.header.as_deref(), props)
    }

    /// True when `key` was seen within the window (a duplicate); otherwise remembers it.
    pub fn is_duplicate(&mut self, key: Vec<u8>, now: u64) -> bool {
        self.forget_expired(now);
        if self.seen.get(&key).is_some_and(|expiry| *expiry > now) {
            return true;
        }
        let expiry = self.expiry_of(now);
        self.remember(key, now, expiry);
        false
    }

    /// When an id remembered at `at` is forgotten.
    pub fn expiry_of(&self, at: u64) -> u64 {
        self.ttl_ms.map_or(NEVER, |ttl| at.saturating_add(ttl))
    }

    /// Takes back what the store held: (id, remembered at, expires at), oldest first.
    pub fn restore(&mut self, ids: Vec<RememberedId>, now: u64) {
        for (key, at, expiry) in ids {
            if expiry > now {
                self.remember(key, at, expiry);
            } else if self.durable {
                self.forgotten.push(key);
            }
        }
        // What the store held is already there.
        self.remembered.clear();
    }

    fn remember(&mut self, key: Vec<u8>, at: u64, expiry: u64) {
        if self.durable {
            self.remembered.push((key.clone(), at, expiry));
        }
        self.seen.insert(key.clone(), expiry);
        self.order.push_back((key, expiry));
        while self.seen.len() > self.size {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            self.forget(old, at);
        }
    }

    fn forget_expired(&mut self, now: u64) {
        while self.order.front().is_some_and(|(_, at)| *at <= now) {
            if let Some((key, at)) = self.order.pop_front() {
                self.forget(key, at);
            }
        }
    }

    /// Forgets `key` if `expiry` is still its current entry (it may have been remembered anew).
    fn forget(&mut self, key: Vec<u8>, expiry: u64) {
        if self.seen.get(&key) == Some(&expiry) {
            self.seen.remove(&key);
            if self.durable {
                self.forgotten.push(key);
            }
        }
    }

    /// What changed since the last call, for the copy on disk: ids now remembered (with when
    /// and until when) and ids forgotten. Only the final state counts: an id remembered then
    /// forgotten since the last call is simply not remembered; one forgotten then remembered
    /// again is.
    pub fn take_changes(&mut self) -> (Vec<RememberedId>, Vec<Vec<u8>>) {
        if self.remembered.is_empty() && self.forgotten.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let seen = &self.seen;
        let ids: Vec<_> = self
            .remembered
            .drain(..)
            .filter(|(key, _, expiry)| seen.get(key) == Some(expiry))
            .collect();
        let gone: Vec<_> = self
            .forgotten
            .drain(..)
            .filter(|key| !seen.contains_key(key))
            .collect();
        (ids, gone)
    }

    /// The store writes that bring its copy up to date with this cache, if any.
    pub fn take_writes(&mut self, owner: &str) -> Vec<Op> {
        let (ids, gone) = self.take_changes();
        let mut ops = Vec::new();
        if !ids.is_empty() {
            ops.push(Op::RememberIds {
                owner: owner.to_owned(),
                ids,
            });
        }
        if !gone.is_empty() {
            ops.push(Op::ForgetIds {
                owner: owner.to_owned(),
                ids: gone,
            });
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(size: usize, ttl_ms: Option<u64>, durable: bool) -> DedupCache {
        DedupCache::new(
            &Dedup {
                cache_size: size,
                ttl_ms,
                header: None,
            },
            durable,
        )
    }

    #[test]
    fn remembers_within_ttl_and_size() {
        let mut c = cache(2, Some(1000), false);
        let t0 = 1_000_000;
        assert!(!c.is_duplicate(b"a".to_vec(), t0));
        assert!(c.is_duplicate(b"a".to_vec(), t0 + 10));
        assert!(!c.is_duplicate(b"a".to_vec(), t0 + 1500), "expired");
        assert!(!c.is_duplicate(b"b".to_vec(), t0 + 1500));
        assert!(!c.is_duplicate(b"c".to_vec(), t0 + 1500));
        assert!(
            !c.is_duplicate(b"a".to_vec(), t0 + 1501),
            "pushed out by b and c"
        );
        assert!(c.take_writes("q:1").is_empty(), "not durable");
    }

    fn apply(store: &mut HashMap<Vec<u8>, (u64, u64)>, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::RememberIds { ids, .. } => {
                    for (k, at, exp) in ids {
                        store.insert(k, (at, exp));
                    }
                }
                Op::ForgetIds { ids, .. } => {
                    for k in ids {
                        store.remove(&k);
                    }
                }
                _ => panic!("unexpected op"),
            }
        }
    }

    #[test]
    fn the_stored_copy_follows_the_cache_and_restores_it() {
        let mut store = HashMap::new();
        let mut c = cache(2, Some(1000), true);
        let t0 = 1_000_000;
        c.is_duplicate(b"a".to_vec(), t0);
        c.is_duplicate(b"b".to_vec(), t0 + 1);
        apply(&mut store, c.take_writes("q:1"));
        assert_eq!(store.len(), 2);
        // c pushes a out; a comes back after expiring... within one batch of writes.
        c.is_duplicate(b"c".to_vec(), t0 + 2);
        c.is_duplicate(b"a".to_vec(), t0 + 3);
        apply(&mut store, c.take_writes("q:1"));
        let mut keys: Vec<_> = store.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);

        // A new cache restored from the store knows a and c, not b.
        let mut ids: Vec<_> = store
            .iter()
            .map(|(k, (at, e))| (k.clone(), *at, *e))
            .collect();
        ids.sort_by_key(|(_, at, _)| *at);
        let mut d = cache(2, Some(1000), true);
        d.restore(ids, t0 + 10);
        assert!(d.take_writes("q:1").is_empty(), "nothing new to write");
        assert!(d.is_duplicate(b"a".to_vec(), t0 + 11));
        assert!(d.is_duplicate(b"c".to_vec(), t0 + 11));
        assert!(!d.is_duplicate(b"b".to_vec(), t0 + 11));

        // Restored entries that expired while the broker was down are dropped from the store.
        store.insert(b"gone".to_vec(), (t0, t0 + 1000));
        let mut e = cache(10, Some(1000), true);
        e.restore(vec![(b"gone".to_vec(), t0, t0 + 1000)], t0 + 5000);
        assert!(!e.is_duplicate(b"gone".to_vec(), t0 + 5001), "expired");
        apply(&mut store, e.take_writes("q:1"));
        assert_eq!(store.get(&b"gone"[..]), Some(&(t0 + 5001, t0 + 6001)));
        let mut f = cache(10, Some(1000), true);
        f.restore(vec![(b"gone".to_vec(), t0, t0 + 1000)], t0 + 9000);
        apply(&mut store, f.take_writes("q:1"));
        assert!(!store.contains_key(&b"gone"[..]));
    }
}
