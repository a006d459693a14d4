//! One live copy of each value for all who hold an equal one: a node's thousands of groups (a
//! quorum queue's each) have one of a few memberships (the same voters, initialized by the same
//! node), and its queues one of a few argument tables; each holds the one live copy instead of
//! its own (most of a kilobyte each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::types::StoredMembership;

/// Live copies of `T`s, by their encoding (equal values encode alike). Dead entries are swept
/// each time the map doubles.
pub struct LiveCopies<T> {
    live: Mutex<Option<Live<T>>>,
}

struct Live<T> {
    by_bytes: HashMap<Vec<u8>, Weak<T>>,
    /// The size the map may reach before the next sweep.
    sweep_at: usize,
}

impl<T> LiveCopies<T> {
    pub const fn new() -> LiveCopies<T> {
        LiveCopies {
            live: Mutex::new(None),
        }
    }

    /// The live copy of `value` (whose encoding is `key`), shared with every holder of an equal
    /// one; this one made the live copy if none is.
    pub fn shared(&self, key: Vec<u8>, value: T) -> Arc<T> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let live = live.get_or_insert_with(|| Live {
            by_bytes: HashMap::new(),
            sweep_at: 64,
        });
        if let Some(copy) = live.by_bytes.get(&key).and_then(Weak::upgrade) {
            return copy;
        }
        if live.by_bytes.len() >= live.sweep_at {
            live.by_bytes.retain(|_, copy| copy.strong_count() > 0);
            live.sweep_at = (live.by_bytes.len() * 2).max(64);
        }
        let copy = Arc::new(value);
        live.by_bytes.insert(key, Arc::downgrade(&copy));
        copy
    }
}

impl<T> Default for LiveCopies<T> {
    fn default() -> Self {
        Self::new()
    }
}

static MEMBERSHIPS: LiveCopies<StoredMembership> = LiveCopies::new();

/// The live copy of a group membership (a state machine's, and a dormant member's frozen
/// metrics', see `group::dormant`).
pub(crate) fn membership(membership: StoredMembership) -> Arc<StoredMembership> {
    match postcard::to_stdvec(&membership) {
        Ok(key) => MEMBERSHIPS.shared(key, membership),
        // One that cannot be encoded is simply not shared.
        Err(_) => Arc::new(membership),
    }
}

static NAME_LISTS: LiveCopies<Vec<String>> = LiveCopies::new();

/// The live copy of a list of node names (a group's members as wanted, its order of election):
/// a node's thousands of groups have a few.
pub fn names(names: Vec<String>) -> Arc<Vec<String>> {
    NAME_LISTS.shared(names.join("\n").into_bytes(), names)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::types::Node;

    fn stored(names: &[&str]) -> StoredMembership {
        let nodes: BTreeMap<u64, Node> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let node = Node {
                    name: n.to_string(),
                    addr: format!("127.0.0.1:{}", 7000 + i),
                };
                (i as u64, node)
            })
            .collect();
        let voters: BTreeSet<u64> = nodes.keys().copied().collect();
        StoredMembership::new(
            None,
            openraft::Membership::new(vec![voters], nodes).expect("membership"),
        )
    }

    #[test]
    fn equal_memberships_share_one_copy_and_different_ones_do_not() {
        let a = membership(stored(&["shared-a", "shared-b", "shared-c"]));
        let b = membership(stored(&["shared-a", "shared-b", "shared-c"]));
        let c = membership(stored(&["shared-a", "shared-b", "shared-d"]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*a, stored(&["shared-a", "shared-b", "shared-c"]));
        // Once no holder is left, an equal one makes a new copy.
        drop((a, b));
        let d = membership(stored(&["shared-a", "shared-b", "shared-c"]));
        assert_eq!(Arc::strong_count(&d), 1);
    }
}
