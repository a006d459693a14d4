//! RabbitMQ's query parameters on the management API's lists (queues, exchanges, connections,
//! channels), as its plugin (3.10) takes them:
//!
//! - `page` and `page_size` (1 to 500, 100 when not given): one page of the list, answered as
//!   `{"filtered_count","item_count","items","page","page_count","page_size","total_count"}`;
//! - `name` and `use_regex` (paged lists only, as in RabbitMQ): the items whose name contains the
//!   text, or matches the regular expression, ignoring case;
//! - `sort` (any field, dotted for a nested one: `message_stats.publish_details.rate`) and
//!   `sort_reverse`: ties, and a field no item has, keep the list's own order;
//! - `columns`: only these fields (dotted as well) of each item.
//!
//! Without `page` a list is the plain array it always was, sorted and cut to `columns` when
//! asked. Other parameters (RabbitMQ's UI sends `pagination=true`) are ignored.

use std::cmp::Ordering;
use std::ops::Range;

use axum::http::Uri;
use serde_json::{json, Map, Value};

use super::api::ApiError;

/// RabbitMQ's largest page.
pub const MAX_PAGE_SIZE: u64 = 500;
/// RabbitMQ's page size when a page is asked for without `page_size`.
pub const DEFAULT_PAGE_SIZE: u64 = 100;
/// A bound on the compiled size of a `use_regex` filter, so that a request cannot make the
/// broker build an enormous automaton (matching itself is linear in the name).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What a request asked of a list.
pub struct ListQuery {
    page: Option<PageRequest>,
    name: Option<NameFilter>,
    sort: Option<Vec<String>>,
    sort_reverse: bool,
    columns: Option<Vec<Vec<String>>>,
}

#[derive(Clone, Copy)]
struct PageRequest {
    number: u64,
    size: u64,
}

enum NameFilter {
    /// Lowercased.
    Contains(String),
    Matches(regex::Regex),
}

/// RabbitMQ's answer to parameters that are not numbers, or a regular expression that does not
/// compile.
fn unparsable() -> ApiError {
    ApiError::BadRequest(json!("Pagination parameters are invalid"))
}

impl ListQuery {
    pub fn parse(uri: &Uri) -> Result<Self, ApiError> {
        let mut page = None;
        let mut page_size = None;
        let mut name = String::new();
        let mut use_regex = false;
        let mut sort = None;
        let mut sort_reverse = false;
        let mut columns = None;
        let query = uri.query().unwrap_or_default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "page" => page = Some(value.parse::<i64>().map_err(|_| unparsable())?),
                "page_size" => {
                    page_size = Some(value.parse::<i64>().map_err(|_| unparsable())?);
                }
                "name" => name = value.into_owned(),
                // RabbitMQ takes only `true`.
                "use_regex" => use_regex = value == "true",
                "sort" if !value.is_empty() => {
                    sort = Some(value.split('.').map(str::to_owned).collect());
                }
                "sort_reverse" => sort_reverse = value == "true",
                "columns" => {
                    columns = Some(
                        value
                            .split(',')
                            .filter(|c| !c.is_empty())
                            .map(|c| c.split('.').map(str::to_owned).collect())
                            .collect(),
                    );
                }
                _ => {}
            }
        }
        let page = match page {
            None => None,
            Some(number) => {
                let size = page_size.unwrap_or(DEFAULT_PAGE_SIZE as i64);
                let valid =
                    |n: i64, max: u64| u64::try_from(n).is_ok_and(|n| (1..=max).contains(&n));
                if !valid(number, u64::MAX) || !valid(size, MAX_PAGE_SIZE) {
                    let size = page_size.map_or("undefined".to_owned(), |s| s.to_string());
                    return Err(ApiError::Invalid(
                        "invalid_pagination_parameters",
                        format!(
                            "Invalid pagination parameters: page number {number}, page size {size}"
                        ),
                    ));
                }
                Some(PageRequest {
                    number: number.unsigned_abs(),
                    size: size.unsigned_abs(),
                })
            }
        };
        // As RabbitMQ, the name filter applies to pages only.
        let name = match (page, name.is_empty(), use_regex) {
            (None, _, _) | (_, true, _) => None,
            (Some(_), false, false) => Some(NameFilter::Contains(name.to_lowercase())),
            (Some(_), false, true) => Some(NameFilter::Matches(
                regex::RegexBuilder::new(&name)
                    .case_insensitive(true)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|_| unparsable())?,
            )),
        };
        Ok(ListQuery {
            page,
            name,
            sort,
            sort_reverse,
            columns,
        })
    }

    /// Whether a page was asked for.
    pub fn is_paged(&self) -> bool {
        self.page.is_some()
    }

    /// Whether an item of this name stays in the list.
    pub fn keeps(&self, name: &str) -> bool {
        match &self.name {
            None => true,
            Some(NameFilter::Contains(text)) => name.to_lowercase().contains(text.as_str()),
            Some(NameFilter::Matches(re)) => re.is_match(name),
        }
    }

    /// Puts `items` (in the list's own order) in the order asked for: by the field `field_of`
    /// reads from an item at the sort path (stable: ties keep their order), then reversed when
    /// `sort_reverse` is set (the whole list, as RabbitMQ reverses it, sorted or not).
    pub fn order<T>(&self, items: &mut [T], field_of: impl Fn(&T, &[String]) -> Value) {
        if let Some(path) = &self.sort {
            items.sort_by_cached_key(|item| Ordered(field_of(item, path)));
        }
        if self.sort_reverse {
            items.reverse();
        }
    }

    /// The positions of the page asked for among `filtered` items: all of them when no page was
    /// asked for. A page past the end is RabbitMQ's `page_out_of_range` (the first page of an
    /// empty list is not: it is empty).
    pub fn page_range(&self, filtered: usize) -> Result<Range<usize>, ApiError> {
        let Some(PageRequest { number, size }) = self.page else {
            return Ok(0..filtered);
        };
        let len = filtered as u64;
        let start = (number - 1).saturating_mul(size);
        if start > 0 && start >= len {
            return Err(ApiError::Invalid(
                "page_out_of_range",
                format!("Page out of range, page: {number} page size: {size}, len: {len}"),
            ));
        }
        let end = start.saturating_add(size).min(len);
        // Both are at most `len`, a usize.
        Ok(start as usize..end as usize)
    }

    /// The answer: `items` (the page's, in order) cut to the columns asked for, and, for a page,
    /// with the list's figures around them.
    pub fn answer(&self, total: usize, filtered: usize, items: Vec<Value>) -> Value {
        let items: Vec<Value> = match &self.columns {
            None => items,
            Some(columns) => items.iter().map(|i| only_columns(i, columns)).collect(),
        };
        let Some(PageRequest { number, size }) = self.page else {
            return Value::Array(items);
        };
        json!({
            "filtered_count": filtered,
            "item_count": items.len(),
            "items": items,
            "page": number,
            "page_count": (filtered as u64).div_ceil(size),
            "page_size": size,
            "total_count": total,
        })
    }

    /// The whole treatment of a list built in full (in its own order): kept by name, ordered,
    /// paged and cut to columns.
    pub fn apply(&self, mut items: Vec<Value>) -> Result<Value, ApiError> {
        let total = items.len();
        items.retain(|item| self.keeps(item.get("name").and_then(Value::as_str).unwrap_or("")));
        self.order(&mut items, |item, path| field(item, path).clone());
        let range = self.page_range(items.len())?;
        let filtered = items.len();
        let page = items.drain(range).collect();
        Ok(self.answer(total, filtered, page))
    }
}

/// The field at a dotted path in an item (`null` when it has none).
pub fn field<'a>(item: &'a Value, path: &[String]) -> &'a Value {
    path.iter()
        .try_fold(item, |v, key| v.get(key))
        .unwrap_or(&Value::Null)
}

/// The item with only these fields (each a path), nested as they were.
fn only_columns(item: &Value, columns: &[Vec<String>]) -> Value {
    let mut out = Map::new();
    for path in columns {
        if let Some(value) = path.iter().try_fold(item, |v, key| v.get(key)) {
            insert_at(&mut out, path, value.clone());
        }
    }
    Value::Object(out)
}

/// Puts `value` at `path` in `map`, making the objects on the way.
fn insert_at(map: &mut Map<String, Value>, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            map.entry(last.clone()).or_insert(value);
        }
        [first, rest @ ..] => {
            let parent = map
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            // Not an object: an earlier column took the whole parent, this field with it.
            if let Value::Object(inner) = parent {
                insert_at(inner, rest, value);
            }
        }
    }
}

/// A field's value, ordered roughly as RabbitMQ's Erlang terms are: numbers, then booleans
/// (atoms: `false` before `true`), then nothing (`undefined`, which a missing field is too),
/// then objects, lists, and strings (binaries, byte by byte).
struct Ordered(Value);

impl Ordered {
    fn rank(&self) -> u8 {
        match &self.0 {
            Value::Number(_) => 0,
            Value::Bool(_) => 1,
            Value::Null => 2,
            Value::Object(_) => 3,
            Value::Array(_) => 4,
            Value::String(_) => 5,
        }
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            (Value::Number(a), Value::Number(b)) => {
                let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                a.total_cmp(&b)
            }
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::String(a), Value::String(b)) => a.cmp(b),
            (Value::Array(a), Value::Array(b)) => a.len().cmp(&b.len()),
            (Value::Object(a), Value::Object(b)) => a.len().cmp(&b.len()),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ordered {}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> Result<ListQuery, ApiError> {
        let uri: Uri = format!("/api/queues?{q}").parse().expect("uri");
        ListQuery::parse(&uri)
    }

    fn names(v: &Value) -> Vec<&str> {
        let items = v.get("items").unwrap_or(v);
        items
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["name"].as_str()).collect())
            .unwrap_or_default()
    }

    fn items() -> Vec<Value> {
        ["b", "A.x", "c.x", "a"]
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"name": n, "messages": i % 2, "stats": {"rate": i}}))
            .collect()
    }

    #[test]
    fn pages_with_rabbitmq_s_figures() {
        let Ok(q) = query("page=2&page_size=3") else {
            panic!("parse")
        };
        let page = q.apply(items()).ok();
        assert_eq!(
            page,
            Some(json!({
                "filtered_count": 4, "item_count": 1, "page": 2, "page_count": 2,
                "page_size": 3, "total_count": 4,
                "items": [{"name": "a", "messages": 1, "stats": {"rate": 3}}],
            }))
        );
        let past = query("page=3&page_size=3").and_then(|q| q.apply(items()));
        assert!(matches!(
            past,
            Err(ApiError::Invalid("page_out_of_range", _))
        ));
        let empty = query("page=1&name=nothing").and_then(|q| q.apply(items()));
        assert_eq!(empty.ok().map(|v| v["page_count"].clone()), Some(json!(0)));
    }

    #[test]
    fn filters_by_name_ignoring_case_on_pages_only() {
        let page = query("page=1&name=a.").and_then(|q| q.apply(items()));
        assert_eq!(page.as_ref().map(names).ok(), Some(vec!["A.x"]));
        let regex = query("page=1&name=%5Ea&use_regex=true").and_then(|q| q.apply(items()));
        assert_eq!(regex.as_ref().map(names).ok(), Some(vec!["A.x", "a"]));
        let unpaged = query("name=a.").and_then(|q| q.apply(items()));
        assert_eq!(unpaged.map(|v| names(&v).len()).ok(), Some(4));
        assert!(query("page=1&name=%5B&use_regex=true").is_err());
    }

    #[test]
    fn sorts_by_a_nested_field_stably_and_reverses() {
        let by_messages = query("sort=messages").and_then(|q| q.apply(items()));
        assert_eq!(
            by_messages.as_ref().map(names).ok(),
            Some(vec!["b", "c.x", "A.x", "a"])
        );
        let by_rate = query("sort=stats.rate&sort_reverse=true").and_then(|q| q.apply(items()));
        assert_eq!(
            by_rate.as_ref().map(names).ok(),
            Some(vec!["a", "c.x", "A.x", "b"])
        );
        let by_name = query("sort=name").and_then(|q| q.apply(items()));
        assert_eq!(
            by_name.as_ref().map(names).ok(),
            Some(vec!["A.x", "a", "b", "c.x"])
        );
        let unknown = query("sort=nope").and_then(|q| q.apply(items()));
        assert_eq!(
            unknown.as_ref().map(names).ok(),
            Some(vec!["b", "A.x", "c.x", "a"])
        );
    }

    #[test]
    fn keeps_only_the_columns_asked_for() {
        let cut = query("columns=name,stats.rate,nope.x").and_then(|q| q.apply(items()));
        let first = cut.ok().map(|v| v[0].clone());
        assert_eq!(first, Some(json!({"name": "b", "stats": {"rate": 0}})));
    }

    #[test]
    fn refuses_pages_as_rabbitmq_does() {
        for (q, error) in [
            ("page=0", "invalid_pagination_parameters"),
            ("page=1&page_size=501", "invalid_pagination_parameters"),
            ("page=1&page_size=0", "invalid_pagination_parameters"),
        ] {
            match query(q) {
                Err(ApiError::Invalid(e, _)) => assert_eq!(e, error, "{q}"),
                _ => panic!("{q} was taken"),
            }
        }
        assert!(matches!(query("page=x"), Err(ApiError::BadRequest(_))));
        assert!(query("page=1&page_size=500").is_ok());
    }
}
