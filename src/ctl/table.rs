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
    /// A process id in rabbitmqctl's shape, `<NODE.PEER.LOCAL>` (a channel's: `.NUMBER`
    /// appended), made from the node's name and the connection's or channel's name at these
    /// paths; see [`pid`].
    Pid {
        node: &'static [&'static str],
        name: &'static [&'static str],
    },
}

/// How a column's values print in a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Strings bare, lists of scalars as `[a, b]`, objects as JSON (see [`cell`]).
    Plain,
    /// An AMQP table as rabbitmqctl prints one, `[{"key",value},...]` (see [`erlang_term`]):
    /// tools such as the Java client's tests pick `"connection_name","..."` out of it.
    Table,
}

#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub field: Field,
    pub style: Style,
}

/// A column whose value is the API field of the same name.
pub const fn same(name: &'static str) -> Column {
    at(name, &[])
}

/// A column read from another path of the API's JSON.
pub const fn at(name: &'static str, path: &'static [&'static str]) -> Column {
    Column {
        name,
        field: Field::Path(path),
        style: Style::Plain,
    }
}

/// A column holding an AMQP table (arguments, client properties), the API field of its name.
pub const fn amqp_table(name: &'static str) -> Column {
    Column {
        name,
        field: Field::Path(&[]),
        style: Style::Table,
    }
}

/// A column of pids: see [`Field::Pid`].
pub const fn pid_at(
    name: &'static str,
    node: &'static [&'static str],
    of: &'static [&'static str],
) -> Column {
    Column {
        name,
        field: Field::Pid { node, name: of },
        style: Style::Plain,
    }
}

/// The pid `warren ctl` shows for the connection or channel `name` (`PEER -> LOCAL`, a channel's
/// with ` (NUMBER)` after it) on `node`: `<NODE.PEER.LOCAL>` or `<NODE.PEER.LOCAL.NUMBER>`.
/// Like an Erlang pid it has no spaces, so that scripts can split rows on whitespace, and it
/// names one connection (its two socket addresses do), so that `close_connection` takes it back.
pub fn pid(node: &str, name: &str) -> String {
    let (connection, channel) = match name.strip_suffix(')').and_then(|n| n.rsplit_once(" (")) {
        Some((connection, number)) => (connection, Some(number)),
        None => (name, None),
    };
    let mut pid = format!("<{node}.{}", connection.replace(" -> ", "."));
    if let Some(number) = channel {
        pid.push('.');
        pid.push_str(number);
    }
    pid.push('>');
    pid
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
    let at = |path: &[&str]| path.iter().try_fold(item, |v, key| v.get(key));
    match column.field {
        Field::Const(v) => Value::String(v.to_owned()),
        Field::Path([]) => item.get(column.name).cloned().unwrap_or(Value::Null),
        Field::Path(path) => at(path).cloned().unwrap_or(Value::Null),
        Field::Pid { node, name } => match (
            at(node).and_then(Value::as_str),
            at(name).and_then(Value::as_str),
        ) {
            (Some(node), Some(name)) => Value::String(pid(node, name)),
            _ => Value::Null,
        },
    }
}

/// The rows of these items: one value per column.
pub fn rows(items: &[Value], columns: &[Column]) -> Vec<Vec<Value>> {
    items
        .iter()
        .map(|item| columns.iter().map(|c| value(item, c)).collect())
        .collect()
}

/// A JSON value as rabbitmqctl prints the Erlang term behind it: objects (AMQP tables) as
/// `[{"key",value},...]` sorted by key, lists as `[a,b]`, strings quoted, no spaces.
pub fn erlang_term(v: &Value) -> String {
    match v {
        Value::Null => "undefined".into(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(erlang_term).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(fields) => {
            let mut fields: Vec<(&String, &Value)> = fields.iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(k, v)| format!("{{{k:?},{}}}", erlang_term(v)))
                .collect();
            format!("[{}]", fields.join(","))
        }
        other => other.to_string(),
    }
}

/// A value as a table cell in its column's style.
pub fn styled_cell(v: &Value, style: Style) -> String {
    match (style, v) {
        (Style::Table, Value::Object(_) | Value::Array(_)) => erlang_term(v),
        // A missing table is an empty one.
        (Style::Table, Value::Null) => "[]".into(),
        _ => cell(v),
    }
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

/// rabbitmqctl's table: a header row of the column names (unless `headers` is false), then one
/// row per item, cells separated by tabs; no rows print nothing at all, as rabbitmqctl's
/// listings do.
pub fn render_table(header: &[&str], rows: &[Vec<String>], headers: bool) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    if headers {
        out.push_str(&header.join("\t"));
        out.push('\n');
    }
    for row in rows {
        out.push_str(&row.join("\t"));
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
    format: Format,
) -> Result<String, UnknownColumn> {
    let columns = listing.select(asked)?;
    let header: Vec<&str> = columns.iter().map(|c| c.name).collect();
    let rows = rows(items, &columns);
    Ok(match format {
        Format::Json => render_json(&header, &rows),
        Format::Table { headers } => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    row.iter()
                        .zip(&columns)
                        .map(|(v, c)| styled_cell(v, c.style))
                        .collect()
                })
                .collect();
            render_table(&header, &cells, headers)
        }
    })
}

/// How a listing prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    /// Tab-separated rows, with or without the header row.
    Table {
        headers: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TABLE: Format = Format::Table { headers: true };

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
                style: Style::Plain,
            },
            amqp_table("arguments"),
        ],
        defaults: &["name", "messages"],
    };

    fn items() -> Vec<Value> {
        vec![
            json!({"name": "orders", "messages": 12, "consumers": 1, "vhost": "/",
                "arguments": {"x-queue-type": "classic", "x-max-length": 5}}),
            json!({"name": "q", "messages": 0, "vhost": "/"}),
        ]
    }

    #[test]
    fn defaults_when_no_column_is_asked_for() {
        let out = render(&QUEUES, &[], &items(), TABLE).expect("render");
        assert_eq!(out, "name\tmessages\norders\t12\nq\t0\n");
    }

    #[test]
    fn asked_columns_in_their_order() {
        let asked = ["consumers".to_owned(), "name".to_owned(), "kind".to_owned()];
        let out = render(&QUEUES, &asked, &items(), TABLE).expect("render");
        assert_eq!(out, "consumers\tname\tkind\n1\torders\tqueue\n\tq\tqueue\n");
        let without_headers = Format::Table { headers: false };
        let out = render(&QUEUES, &asked, &items(), without_headers).expect("render");
        assert_eq!(out, "1\torders\tqueue\n\tq\tqueue\n");
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
            "unknown column 'nope' for queues; valid columns: name, messages, consumers, queue_vhost, kind, arguments"
        );
    }

    #[test]
    fn json_keeps_types() {
        let out = render(&QUEUES, &[], &items(), Format::Json).expect("render");
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
    fn an_empty_listing_prints_nothing() {
        assert_eq!(render(&QUEUES, &[], &[], TABLE).expect("render"), "");
        assert_eq!(
            render(&QUEUES, &[], &[], Format::Json).expect("render"),
            "[]\n"
        );
    }

    #[test]
    fn tables_print_as_erlang_terms() {
        let asked = ["name".to_owned(), "arguments".to_owned()];
        let out = render(&QUEUES, &asked, &items(), TABLE).expect("render");
        assert_eq!(
            out,
            "name\targuments\norders\t[{\"x-max-length\",5},{\"x-queue-type\",\"classic\"}]\nq\t[]\n"
        );
        let nested = json!({"capabilities": {"basic.nack": true}, "connection_name": "c 1"});
        assert_eq!(
            erlang_term(&nested),
            r#"[{"capabilities",[{"basic.nack",true}]},{"connection_name","c 1"}]"#
        );
    }

    #[test]
    fn pids_name_one_connection_or_channel_without_spaces() {
        let connection = "127.0.0.1:40520 -> 127.0.0.1:5672";
        assert_eq!(
            pid("warren@vm", connection),
            "<warren@vm.127.0.0.1:40520.127.0.0.1:5672>"
        );
        assert_eq!(
            pid("warren@vm", &format!("{connection} (3)")),
            "<warren@vm.127.0.0.1:40520.127.0.0.1:5672.3>"
        );
        let column = pid_at("pid", &["node"], &["name"]);
        let item = json!({"node": "warren@vm", "name": "[::1]:1 -> [::1]:5672"});
        assert_eq!(
            value(&item, &column),
            json!("<warren@vm.[::1]:1.[::1]:5672>")
        );
        assert_eq!(value(&json!({}), &column), Value::Null);
    }
}
