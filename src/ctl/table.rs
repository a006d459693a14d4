//! Listings: which columns a listing has (rabbitmqctl's info items, each read from a field of
//! the management API's JSON), choosing them as `rabbitmqctl list_queues name messages` does,
//! and printing the rows as an aligned table or as JSON.

use serde_json::{Map, Value};

/// Where a column's value comes from in an item of the API's listing.
#[derive(Clone, Copy, Debug)]
pub enum Field {
    /// A field, or a field of a nested object (`["queue", "name"]`).
    Path(&'static [&'static str]),
    /// The same value on every row (rabbitmqctl's `source_kind` is always `exchange`).
    Const(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub field: Field,
}

/// A column whose value is the API field of the same name.
pub const fn same(name: &'static str) -> Column {
    Column {
        name,
        field: Field::Path(&[]),
    }
}

/// A column read from another path of the API's JSON.
pub const fn at(name: &'static str, path: &'static [&'static str]) -> Column {
    Column {
        name,
        field: Field::Path(path),
    }
}

/// The columns a listing offers and those it shows when none are asked for.
#[derive(Debug)]
pub struct Listing {
    /// The noun in messages ("queues").
    pub what: &'static str,
    pub columns: &'static [Column],
    pub defaults: &'static [&'static str],
}

#[derive(Debug, thiserror::Error)]
#[error("unknown column '{column}' for {what}; valid columns: {valid}")]
pub struct UnknownColumn {
    pub column: String,
    pub what: &'static str,
    pub valid: String,
}

impl Listing {
    /// The columns asked for, in their order (the defaults if none).
    pub fn select(&self, asked: &[String]) -> Result<Vec<Column>, UnknownColumn> {
        let names: Vec<&str> = if asked.is_empty() {
            self.defaults.to_vec()
        } else {
            asked.iter().map(String::as_str).collect()
        };
        names
            .into_iter()
            .map(|name| {
                self.columns
                    .iter()
                    .find(|c| c.name == name)
                    .copied()
                    .ok_or_else(|| UnknownColumn {
                        column: name.to_owned(),
                        what: self.what,
                        valid: self
                            .columns
                            .iter()
                            .map(|c| c.name)
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            })
            .collect()
    }
}

/// One item's value for a column (`Null` when the API does not give it).
pub fn value(item: &Value, column: &Column) -> Value {
    match column.field {
        Field::Const(v) => Value::String(v.to_owned()),
        Field::Path([]) => item.get(column.name).cloned().unwrap_or(Value::Null),
        Field::Path(path) => path
            .iter()
            .try_fold(item, |v, key| v.get(key))
            .cloned()
            .unwrap_or(Value::Null),
    }
}

/// The rows of these items: one value per column.
pub fn rows(items: &[Value], columns: &[Column]) -> Vec<Vec<Value>> {
    items
        .iter()
        .map(|item| columns.iter().map(|c| value(item, c)).collect())
        .collect()
}

/// A value as a table cell: strings bare, lists of scalars as `[a, b]`, objects as JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            let items: Vec<String> = items.iter().map(cell).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// A header line of the column names, then the rows, each column padded to its widest cell
/// (the last one is not padded) and separated by two spaces.
pub fn render_table(header: &[&str], rows: &[Vec<Value>]) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(rows.iter().map(|r| r.iter().map(cell).collect()))
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                line.push_str(c);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The rows as a JSON array of objects keyed by column name (rabbitmqctl's `--formatter json`).
pub fn render_json(header: &[&str], rows: &[Vec<Value>]) -> String {
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            Value::Object(
                header
                    .iter()
                    .zip(r)
                    .map(|(h, v)| (h.to_string(), v.clone()))
                    .collect::<Map<_, _>>(),
            )
        })
        .collect();
    format!("{}\n", Value::Array(items))
}

/// The listing of `items` with the columns asked for, as a table or JSON.
pub fn render(
    listing: &Listing,
    asked: &[String],
    items: &[Value],
    json: bool,
) -> Result<String, UnknownColumn> {
    let columns = listing.select(asked)?;
    let header: Vec<&str> = columns.iter().map(|c| c.name).collect();
    let rows = rows(items, &columns);
    Ok(if json {
        render_json(&header, &rows)
    } else {
        render_table(&header, &rows)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const QUEUES: Listing = Listing {
        what: "queues",
        columns: &[
            same("name"),
            same("messages"),
            same("consumers"),
            at("queue_vhost", &["vhost"]),
            Column {
                name: "kind",
                field: Field::Const("queue"),
            },
        ],
        defaults: &["name", "messages"],
    };

    fn items() -> Vec<Value> {
        vec![
            json!({"name": "orders", "messages": 12, "consumers": 1, "vhost": "/"}),
            json!({"name": "q", "messages": 0, "vhost": "/"}),
        ]
    }

    #[test]
    fn defaults_when_no_column_is_asked_for() {
        let out = render(&QUEUES, &[], &items(), false).expect("render");
        assert_eq!(out, "name    messages\norders  12\nq       0\n");
    }

    #[test]
    fn asked_columns_in_their_order() {
        let asked = ["consumers".to_owned(), "name".to_owned(), "kind".to_owned()];
        let out = render(&QUEUES, &asked, &items(), false).expect("render");
        assert_eq!(
            out,
            "consumers  name    kind\n1          orders  queue\n           q       queue\n"
        );
    }

    #[test]
    fn nested_and_renamed_fields() {
        let consumers = [json!({"queue": {"name": "a"}})];
        let column = at("queue_name", &["queue", "name"]);
        assert_eq!(value(&consumers[0], &column), json!("a"));
        assert_eq!(value(&items()[0], &QUEUES.columns[3]), json!("/"));
    }

    #[test]
    fn unknown_column_lists_the_valid_ones() {
        let err = QUEUES
            .select(&["nope".to_owned()])
            .expect_err("unknown column");
        assert_eq!(
            err.to_string(),
            "unknown column 'nope' for queues; valid columns: name, messages, consumers, queue_vhost, kind"
        );
    }

    #[test]
    fn json_keeps_types() {
        let out = render(&QUEUES, &[], &items(), true).expect("render");
        let v: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(
            v,
            json!([{"name": "orders", "messages": 12}, {"name": "q", "messages": 0}])
        );
    }

    #[test]
    fn cells() {
        assert_eq!(
            cell(&json!(["administrator", "management"])),
            "[administrator, management]"
        );
        assert_eq!(cell(&json!({"x-max-length": 5})), r#"{"x-max-length":5}"#);
        assert_eq!(cell(&Value::Null), "");
        assert_eq!(cell(&json!(true)), "true");
    }

    #[test]
    fn empty_listing_is_the_header() {
        assert_eq!(
            render(&QUEUES, &[], &[], false).expect("render"),
            "name  messages\n"
        );
        assert_eq!(render(&QUEUES, &[], &[], true).expect("render"), "[]\n");
    }
}
