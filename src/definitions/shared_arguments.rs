//! Queue arguments shared between queues: thousands of queues declared alike (`x-queue-type:
//! quorum`, the same length limit) hold one copy of their argument table (a B-tree leaf of most
//! of a kilobyte) instead of one each. Argument tables are never changed once declared.

use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use warren_amqp::types::FieldTable;
use warren_cluster::shared_copies::LiveCopies;

static TABLES: LiveCopies<FieldTable> = LiveCopies::new();

/// The live copy of `table`, shared with every queue whose arguments are equal (this one made
/// the live copy if none is).
pub fn shared(table: FieldTable) -> Arc<FieldTable> {
    // Equal tables encode alike (their keys ordered).
    TABLES.shared(warren_amqp::encode::encode_table(&table), table)
}

/// Reads a table as serde would, and shares it (`#[serde(deserialize_with)]`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<FieldTable>, D::Error> {
    FieldTable::deserialize(d).map(shared)
}

#[cfg(test)]
mod tests {
    use warren_amqp::types::AMQPValue;

    use super::*;

    fn table(kind: &str) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        t.insert("x-shared-arguments-test".into(), AMQPValue::LongInt(7));
        t
    }

    #[test]
    fn equal_tables_share_one_copy_and_different_ones_do_not() {
        let a = shared(table("quorum"));
        let b = shared(table("quorum"));
        let c = shared(table("stream"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*a, table("quorum"));
        drop((a, b));
        assert_eq!(Arc::strong_count(&shared(table("quorum"))), 1);
    }
}
