//! AMQP field tables to and from JSON, as RabbitMQ's management API and definitions files write
//! and read them (`rabbit_misc:amqp_table/1` and `to_amqp_table/1`): one mapping shared by the
//! HTTP listings, the HTTP writes and definitions import/export, so that what is exported reads
//! back as the same table.

use serde_json::{json, Map, Value};
use thiserror::Error;
use warren_amqp::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

/// Why a JSON value cannot be an AMQP table (RabbitMQ's reasons where it has them).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TableError {
    /// RabbitMQ's `null_not_allowed`: JSON null has no AMQP type.
    #[error("null_not_allowed")]
    Null,
    #[error("arguments must be a JSON object")]
    NotObject,
    /// AMQP table keys are short strings.
    #[error("table key longer than 255 octets")]
    KeyTooLong,
    /// An integer beyond the signed 64-bit range of AMQP's `long` (`l`).
    #[error("integer out of range: {0}")]
    OutOfRange(String),
}

/// A JSON object as RabbitMQ types it: integers are signed 64-bit `long`s, other numbers
/// doubles, strings long strings, objects tables, arrays arrays. `null` (and an empty array, as
/// RabbitMQ takes `"arguments": []`) is the empty table.
pub fn table_from_json(value: &Value) -> Result<FieldTable, TableError> {
    match value {
        Value::Null => Ok(FieldTable::default()),
        Value::Array(a) if a.is_empty() => Ok(FieldTable::default()),
        Value::Object(map) => table_from_map(map),
        _ => Err(TableError::NotObject),
    }
}

fn table_from_map(map: &Map<String, Value>) -> Result<FieldTable, TableError> {
    let mut table = FieldTable::default();
    for (k, v) in map {
        if k.len() > 255 {
            return Err(TableError::KeyTooLong);
        }
        table.insert(ShortString::from(k.clone()), value_from_json(v)?);
    }
    Ok(table)
}

fn value_from_json(v: &Value) -> Result<AMQPValue, TableError> {
    Ok(match v {
        Value::Null => return Err(TableError::Null),
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                AMQPValue::LongLongInt(i)
            } else if n.is_u64() {
                return Err(TableError::OutOfRange(n.to_string()));
            } else {
                AMQPValue::Double(n.as_f64().unwrap_or_default())
            }
        }
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(value_from_json)
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(map) => AMQPValue::FieldTable(table_from_map(map)?),
    })
}

/// An AMQP field value as RabbitMQ's management API renders it in JSON.
pub fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => json!(d.value),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::Void => Value::Null,
    }
}

/// A table as a JSON object (keys sorted, as serde_json's map keeps them).
pub fn table_to_json(table: &FieldTable) -> Value {
    let map: Map<String, Value> = table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), value_to_json(v)))
        .collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_reads_back_as_the_table_rabbitmq_would_make() {
        let v = json!({"i": 5, "f": 1.5, "s": "x", "b": true, "a": [1, "y"], "t": {"k": -1}});
        let table = table_from_json(&v).unwrap();
        assert_eq!(
            table.inner().get("i"),
            Some(&AMQPValue::LongLongInt(5)),
            "integers are longs"
        );
        assert_eq!(table.inner().get("f"), Some(&AMQPValue::Double(1.5)));
        assert_eq!(table_to_json(&table), v);
        assert_eq!(table_from_json(&json!({"n": null})), Err(TableError::Null));
        assert_eq!(table_from_json(&json!("x")), Err(TableError::NotObject));
        assert_eq!(
            table_from_json(&json!({"big": u64::MAX})),
            Err(TableError::OutOfRange(u64::MAX.to_string()))
        );
        assert!(table_from_json(&json!([])).unwrap().inner().is_empty());
        let long_key = "k".repeat(256);
        assert_eq!(
            table_from_json(&json!({ long_key: 1 })),
            Err(TableError::KeyTooLong)
        );
    }
}
