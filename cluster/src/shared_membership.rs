//! Group memberships shared between groups: a node's thousands of groups (a quorum queue's each)
//! have one of a few memberships (the same voters, initialized by the same node), so each state
//! machine (and a dormant member's frozen metrics, see `group::dormant`) holds the one live copy
//! of its membership instead of its own (the nodes' map, their names and addresses, the voter
//! set: most of a kilobyte each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::types::StoredMembership;

/// Live memberships by their encoding. Dead entries are swept each time the map doubles.
static LIVE: Mutex<Option<Live>> = Mutex::new(None);

struct Live {
    by_bytes: HashMap<Vec<u8>, Weak<StoredMembership>>,
    /// The size the map may reach before the next sweep.
    sweep_at: usize,
}

/// The live copy of `membership`, shared with every holder of an equal one (this one made the
/// live copy if none is).
pub(crate) fn shared(membership: StoredMembership) -> Arc<StoredMembership> {
    // Equal memberships encode alike (a map and a set, ordered); one that cannot be encoded is
    // simply not shared.
    let Ok(key) = postcard::to_stdvec(&membership) else {
        return Arc::new(membership);
    };
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
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
    let copy = Arc::new(membership);
    live.by_bytes.insert(key, Arc::downgrade(&copy));
    copy
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::types::Node;

    fn membership(names: &[&str]) -> StoredMembership {
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
        let a = shared(membership(&["shared-a", "shared-b", "shared-c"]));
        let b = shared(membership(&["shared-a", "shared-b", "shared-c"]));
        let c = shared(membership(&["shared-a", "shared-b", "shared-d"]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*a, membership(&["shared-a", "shared-b", "shared-c"]));
        // Once no holder is left, an equal one makes a new copy.
        drop((a, b));
        let d = shared(membership(&["shared-a", "shared-b", "shared-c"]));
        assert_eq!(Arc::strong_count(&d), 1);
    }
}
