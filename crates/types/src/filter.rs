//! The Mongo-style filter language of search and scans, and its reference evaluator.
//!
//! `{"topic": "a", "n": {"$gte": 2}, "$or": [{"kind": "episodic"}, {"confidence": {"$gt": 0.8}}]}`
//!
//! Paths whose first segment names a built-in field (`created_at`, `confidence`, `run_id`, …)
//! address that field; any other path addresses `metadata` (metadata keys may not shadow
//! built-in names, which is what makes this unambiguous). `metadata.x` is accepted too.
//! Index-accelerated evaluation lives with the indexes; this evaluator defines the meaning.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::Record;

mod value_set;
pub use value_set::ValueSet;

/// Filters nest at most this deep, so a hostile filter cannot exhaust the stack.
const MAX_DEPTH: usize = 32;
/// And at most this many clauses in all.
const MAX_CLAUSES: usize = 1024;
/// And at most this many values compared in all: each comparison operand one, each value of
/// an `$in` or `$nin` one. A record is matched against every one of them in the worst case, so
/// this bounds a filter's cost per record (400 clauses of 1000 `$in` values each held a worker
/// for seconds over a few thousand records).
pub const MAX_FILTER_VALUES: usize = 1024;

/// A filter that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter: {0}")]
pub struct FilterError(pub String);

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Eq(FieldRef, Value),
    Ne(FieldRef, Value),
    In(FieldRef, ValueSet),
    Nin(FieldRef, ValueSet),
    Range(FieldRef, Ordering, bool, Value),
    Exists(FieldRef, bool),
}

/// What a path addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldRef {
    Id,
    Modality,
    Kind,
    Content,
    UserTokens,
    MemoryDomain,
    RunId,
    MemoryScope,
    CreatedAt,
    UpdatedAt,
    ExpiresAt,
    /// `confidence` or `confidence.value`.
    Confidence,
    /// A path inside `metadata`.
    Metadata(Vec<String>),
}

impl FieldRef {
    fn parse(path: &str) -> Result<FieldRef, FilterError> {
        let segments: Vec<&str> = path.split('.').collect();
        if segments.iter().any(|s| s.is_empty() || s.starts_with('$')) {
            return Err(FilterError(format!("bad field path {path:?}")));
        }
        let builtin = match segments.as_slice() {
            ["id"] => FieldRef::Id,
            ["modality"] => FieldRef::Modality,
            ["kind"] => FieldRef::Kind,
            ["content"] => FieldRef::Content,
            ["user_tokens"] => FieldRef::UserTokens,
            ["memory_domain"] => FieldRef::MemoryDomain,
            ["run_id"] => FieldRef::RunId,
            ["memory_scope"] => FieldRef::MemoryScope,
            ["created_at"] => FieldRef::CreatedAt,
            ["updated_at"] => FieldRef::UpdatedAt,
            ["expires_at"] => FieldRef::ExpiresAt,
            ["confidence"] | ["confidence", "value"] => FieldRef::Confidence,
            ["metadata", rest @ ..] if !rest.is_empty() => {
                FieldRef::Metadata(rest.iter().map(|s| s.to_string()).collect())
            }
            [first, ..] if crate::RESERVED_FIELDS.contains(first) => {
                return Err(FilterError(format!("field {path:?} cannot be filtered on")));
            }
            _ => FieldRef::Metadata(segments.iter().map(|s| s.to_string()).collect()),
        };
        Ok(builtin)
    }

    /// A built-in field a record may lack: GET shows it as `null`, and a filter's `null`
    /// matches a record without it.
    pub fn is_optional_builtin(&self) -> bool {
        matches!(
            self,
            FieldRef::Kind
                | FieldRef::Content
                | FieldRef::RunId
                | FieldRef::MemoryScope
                | FieldRef::ExpiresAt
        )
    }

    /// What a built-in field holds, which a filter must compare it with; `None` for metadata,
    /// which holds any JSON.
    fn holds(&self) -> Option<Holds> {
        Some(match self {
            FieldRef::CreatedAt | FieldRef::UpdatedAt | FieldRef::ExpiresAt => Holds::Millis,
            FieldRef::Confidence => Holds::Number,
            FieldRef::UserTokens => Holds::Tokens,
            FieldRef::Metadata(_) => return None,
            _ => Holds::Text,
        })
    }

    /// The value this field has on `record`, or `None` when absent.
    pub fn resolve<'r>(&self, record: &'r Record) -> Option<Resolved<'r>> {
        use Resolved::*;
        let owned = |v: Value| Some(Owned(v));
        match self {
            FieldRef::Id => owned(Value::String(record.id.to_string())),
            FieldRef::Modality => owned(Value::String(record.modality.to_string())),
            FieldRef::Kind => record
                .kind
                .as_ref()
                .and_then(|k| owned(k.to_string().into())),
            FieldRef::Content => record
                .content
                .as_ref()
                .and_then(|c| owned(c.clone().into())),
            FieldRef::UserTokens => owned(Value::Array(
                record
                    .user_tokens
                    .iter()
                    .map(|t| Value::String(t.to_string()))
                    .collect(),
            )),
            FieldRef::MemoryDomain => owned(record.memory_domain.to_string().into()),
            FieldRef::RunId => record
                .run_id
                .as_ref()
                .and_then(|r| owned(r.to_string().into())),
            FieldRef::MemoryScope => record
                .memory_scope
                .as_ref()
                .and_then(|s| owned(s.to_string().into())),
            FieldRef::CreatedAt => owned(record.created_at.into()),
            FieldRef::UpdatedAt => owned(record.updated_at.into()),
            FieldRef::ExpiresAt => record.expires_at.and_then(|t| owned(t.into())),
            FieldRef::Confidence => owned(record.confidence.value.into()),
            FieldRef::Metadata(path) => lookup(&record.metadata, path),
        }
    }
}

/// The type of a built-in field's values.
#[derive(Clone, Copy)]
enum Holds {
    Millis,
    Number,
    Text,
    /// `user_tokens`: a string matches a record holding it, an array the exact list.
    Tokens,
}

impl Holds {
    fn accepts(self, v: &Value) -> bool {
        match (self, v) {
            (Holds::Millis | Holds::Number, Value::Number(_)) => true,
            (Holds::Text | Holds::Tokens, Value::String(_)) => true,
            (Holds::Tokens, Value::Array(items)) => items.iter().all(Value::is_string),
            _ => false,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Holds::Millis => "a number (milliseconds since the Unix epoch)",
            Holds::Number => "a number",
            Holds::Text => "a string",
            Holds::Tokens => "a string (a user token)",
        }
    }
}

/// Refuses an operand that a built-in field's values can never equal or order with: such a
/// filter would match nothing, silently (`{"created_at": {"$gte": "2026-01-01"}}`). `null`
/// is an operand of equality on a field a record may lack.
fn check_operand(
    field: &FieldRef,
    path: &str,
    op: &str,
    v: &Value,
    equality: bool,
) -> Result<(), FilterError> {
    let Some(holds) = field.holds() else {
        return Ok(());
    };
    if holds.accepts(v) || (equality && v.is_null() && field.is_optional_builtin()) {
        return Ok(());
    }
    let null = if equality && field.is_optional_builtin() {
        " or null (a record without it)"
    } else {
        ""
    };
    Err(FilterError(format!(
        "{path}: {op} takes {}{null}, not {v}",
        holds.describe()
    )))
}

/// A resolved field's values: borrowed from metadata or computed from a built-in field. A
/// metadata path through an array of objects has a value in each object that holds it.
pub enum Resolved<'r> {
    Borrowed(&'r Value),
    Owned(Value),
    /// The values of a path that passed through an array: at least one.
    Many(Vec<&'r Value>),
}

impl Resolved<'_> {
    /// Whether `pred` holds for one of the values.
    fn any(&self, pred: impl Fn(&Value) -> bool) -> bool {
        match self {
            Resolved::Borrowed(v) => pred(v),
            Resolved::Owned(v) => pred(v),
            Resolved::Many(values) => values.iter().any(|v| pred(v)),
        }
    }
}

/// The values at `path` in `map`. A step into an array looks into each of its objects, as in
/// MongoDB: `files.name` on `{"files": [{"name": "a"}, {"name": "b"}]}` is `"a"` and `"b"`.
/// Elements that are not objects (scalars, nested arrays) hold no key and are passed over.
/// Without an array on the way (the common case) nothing is allocated.
fn lookup<'m>(map: &'m Map<String, Value>, path: &[String]) -> Option<Resolved<'m>> {
    let (first, rest) = path.split_first()?;
    let value = map.get(first)?;
    if rest.is_empty() {
        return Some(Resolved::Borrowed(value));
    }
    match value {
        Value::Object(inner) => lookup(inner, rest),
        Value::Array(items) => {
            let mut found = Vec::new();
            for item in items {
                lookup_each(item, rest, &mut found);
            }
            (!found.is_empty()).then_some(Resolved::Many(found))
        }
        _ => None,
    }
}

/// [`lookup`] of `path` under `value` (an array's element), adding what it finds to `found`.
fn lookup_each<'m>(value: &'m Value, path: &[String], found: &mut Vec<&'m Value>) {
    let Value::Object(map) = value else {
        return;
    };
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(value) = map.get(first) else {
        return;
    };
    match value {
        _ if rest.is_empty() => found.push(value),
        Value::Object(_) => lookup_each(value, rest, found),
        Value::Array(items) => {
            for item in items {
                lookup_each(item, rest, found);
            }
        }
        _ => {}
    }
}

impl Filter {
    /// Parses a filter from its JSON form.
    pub fn parse(value: &Value) -> Result<Filter, FilterError> {
        let mut count = Count::default();
        parse_object(value, 0, &mut count).map(Filter::simplified)
    }

    /// The same filter without the parts that constrain nothing: an `$and`'s parts that match
    /// everything are dropped (`{"$and": [{}, {"a": 1}]}` is `{"a": 1}`), an `$or` with such
    /// a part matches everything. Besides being shorter, what is left is what the field index
    /// answers: an always-true part it cannot answer made the whole `$and` inexact, so a
    /// search re-checked every candidate's stored record.
    fn simplified(self) -> Filter {
        match self {
            Filter::And(parts) => {
                let mut kept: Vec<Filter> = parts
                    .into_iter()
                    .map(Filter::simplified)
                    .flat_map(|p| match p {
                        Filter::And(inner) => inner,
                        other => vec![other],
                    })
                    .collect();
                if kept.len() == 1 {
                    kept.remove(0)
                } else {
                    Filter::And(kept)
                }
            }
            Filter::Or(parts) => {
                let parts: Vec<Filter> = parts.into_iter().map(Filter::simplified).collect();
                if parts.iter().any(Filter::matches_everything) {
                    Filter::all()
                } else if parts.len() == 1 {
                    parts.into_iter().next().unwrap_or_else(Filter::all)
                } else {
                    Filter::Or(parts)
                }
            }
            leaf => leaf,
        }
    }

    /// Whether `record` matches.
    pub fn matches(&self, record: &Record) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|f| f.matches(record)),
            Filter::Or(any) => any.iter().any(|f| f.matches(record)),
            Filter::Eq(field, v) => equals_any(field, record, std::slice::from_ref(v)),
            Filter::Ne(field, v) => !equals_any(field, record, std::slice::from_ref(v)),
            Filter::In(field, vs) => in_set(field, record, vs),
            Filter::Nin(field, vs) => !in_set(field, record, vs),
            Filter::Range(field, ord, or_equal, bound) => field.resolve(record).is_some_and(|r| {
                r.any(|v| {
                    any_element(v, |x| {
                        compare(x, bound)
                            .is_some_and(|o| o == *ord || (*or_equal && o == Ordering::Equal))
                    })
                })
            }),
            Filter::Exists(field, want) => field.resolve(record).is_some() == *want,
        }
    }

    /// A filter that matches every record.
    pub fn all() -> Filter {
        Filter::And(Vec::new())
    }

    /// Whether the filter matches every record by its shape alone, as `{}`, `{"$and": [{}]}`
    /// or `{"$or": [{}, ...]}` do: a delete by such a filter means "everything" and must say so.
    pub fn matches_everything(&self) -> bool {
        match self {
            Filter::And(all) => all.iter().all(Filter::matches_everything),
            Filter::Or(any) => any.iter().any(Filter::matches_everything),
            _ => false,
        }
    }
}

/// What a filter being parsed has used of its bounds so far.
#[derive(Default)]
struct Count {
    clauses: usize,
    values: usize,
}

impl Count {
    fn clause(&mut self) -> Result<(), FilterError> {
        self.clauses += 1;
        if self.clauses > MAX_CLAUSES {
            return Err(FilterError(format!("more than {MAX_CLAUSES} clauses")));
        }
        Ok(())
    }

    fn values(&mut self, n: usize) -> Result<(), FilterError> {
        self.values += n;
        if self.values > MAX_FILTER_VALUES {
            return Err(FilterError(format!(
                "more than {MAX_FILTER_VALUES} values in all (each comparison counts one, each \
                 value of an $in or $nin one)"
            )));
        }
        Ok(())
    }
}

fn parse_object(value: &Value, depth: usize, count: &mut Count) -> Result<Filter, FilterError> {
    if depth > MAX_DEPTH {
        return Err(FilterError(format!(
            "nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let Value::Object(map) = value else {
        return Err(FilterError("a filter must be a JSON object".into()));
    };
    let mut parts = Vec::with_capacity(map.len());
    for (key, operand) in map {
        count.clause()?;
        match key.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = operand else {
                    return Err(FilterError(format!("{key} takes an array of filters")));
                };
                // An `$or` of no alternatives matches no record: almost always a list built
                // from nothing on the client (every record of "any of these tags", none
                // given). Refused, as MongoDB does, rather than silently answering nothing.
                // An empty `$and` is no constraint, as `{}` is.
                if items.is_empty() && key == "$or" {
                    return Err(FilterError(
                        "$or takes at least one filter (an $or of none would match no record)"
                            .into(),
                    ));
                }
                let subs = items
                    .iter()
                    .map(|v| parse_object(v, depth + 1, count))
                    .collect::<Result<Vec<_>, _>>()?;
                parts.push(if key == "$and" {
                    Filter::And(subs)
                } else {
                    Filter::Or(merge_equalities(subs))
                });
            }
            k if k.starts_with('$') => {
                return Err(FilterError(format!("unknown top-level operator {k}")));
            }
            path => parts.extend(parse_field(path, FieldRef::parse(path)?, operand, count)?),
        }
    }
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Filter::And(parts)
    })
}

fn parse_field(
    path: &str,
    field: FieldRef,
    operand: &Value,
    count: &mut Count,
) -> Result<Vec<Filter>, FilterError> {
    let ops = match operand {
        Value::Object(m) if m.keys().any(|k| k.starts_with('$')) => m,
        literal => {
            check_operand(&field, path, "$eq", literal, true)?;
            count.values(1)?;
            let literal = as_stored(&field, literal);
            return Ok(vec![Filter::Eq(field, literal)]);
        }
    };
    let mut out = Vec::with_capacity(ops.len());
    for (op, v) in ops {
        count.clause()?;
        if !matches!(op.as_str(), "$in" | "$nin") {
            count.values(1)?;
        }
        let mut list = |v: &Value| match v {
            Value::Array(items) if items.len() <= MAX_CLAUSES => {
                count.values(items.len())?;
                Ok(ValueSet::from(items.clone()))
            }
            _ => Err(FilterError(format!(
                "{path}: {op} takes an array of at most {MAX_CLAUSES} values, not {}",
                kind_of(v)
            ))),
        };
        let scalar = |v: &Value| match v {
            Value::Number(_) | Value::String(_) => Ok(v.clone()),
            // Nothing orders with null: say so, and what finds a record without the field.
            Value::Null => Err(FilterError(format!(
                "{path}: {op} takes a number or a string, not null (nothing is ordered against \
                 null; {{\"{path}\": {{\"$exists\": false}}}} finds records without it)"
            ))),
            _ => Err(FilterError(format!(
                "{path}: {op} takes a number or a string, not {}",
                kind_of(v)
            ))),
        };
        let f = field.clone();
        let typed = |v: &Value, equality: bool| check_operand(&field, path, op, v, equality);
        let v = &as_stored(&field, v);
        match (op.as_str(), v) {
            ("$eq" | "$ne", v) => typed(v, true)?,
            ("$in" | "$nin", Value::Array(items)) => {
                items.iter().try_for_each(|v| typed(v, true))?
            }
            ("$gt" | "$gte" | "$lt" | "$lte", v @ (Value::Number(_) | Value::String(_))) => {
                typed(v, false)?
            }
            _ => {}
        }
        out.push(match op.as_str() {
            "$eq" => Filter::Eq(f, v.clone()),
            "$ne" => Filter::Ne(f, v.clone()),
            "$in" => Filter::In(f, list(v)?),
            "$nin" => Filter::Nin(f, list(v)?),
            "$gt" => Filter::Range(f, Ordering::Greater, false, scalar(v)?),
            "$gte" => Filter::Range(f, Ordering::Greater, true, scalar(v)?),
            "$lt" => Filter::Range(f, Ordering::Less, false, scalar(v)?),
            "$lte" => Filter::Range(f, Ordering::Less, true, scalar(v)?),
            "$exists" => match v {
                Value::Bool(b) => Filter::Exists(f, *b),
                _ => {
                    return Err(FilterError(format!(
                        "{path}: $exists takes true or false, not {}",
                        kind_of(v)
                    )));
                }
            },
            other => return Err(FilterError(format!("{path}: unknown operator {other}"))),
        });
    }
    Ok(out)
}

/// An operand as the field's values are stored: a record's `user_tokens` are kept sorted and
/// without duplicates, so a list compared with them whole (`{"user_tokens": ["u:b", "u:a"]}`)
/// is put in that order too, or it would match no record whatever order it was written in.
/// An `$in` or `$nin` list's lists of tokens likewise.
fn as_stored(field: &FieldRef, v: &Value) -> Value {
    let tokens = |items: &Vec<Value>| {
        let mut set: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
        set.sort_unstable();
        set.dedup();
        Value::Array(set.into_iter().map(Value::from).collect())
    };
    match (field, v) {
        (FieldRef::UserTokens, Value::Array(items)) if items.iter().all(Value::is_string) => {
            tokens(items)
        }
        (FieldRef::UserTokens, Value::Array(items)) => Value::Array(
            items
                .iter()
                .map(|item| match item {
                    Value::Array(inner) if inner.iter().all(Value::is_string) => tokens(inner),
                    other => other.clone(),
                })
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// What kind of JSON value `v` is, for an error about it.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `field` of `record` equals (or, an array, holds) one of `operands`. A record
/// without the field equals `null`, as in MongoDB: a built-in optional field GET shows as
/// `null`, and a metadata key that is absent or stored as `null` alike, so `{"x": null}` finds
/// the records without `x` and `{"x": {"$ne": null}}` those that have one.
fn equals_any(field: &FieldRef, record: &Record, operands: &[Value]) -> bool {
    match field.resolve(record) {
        Some(r) => r.any(|value| operands.iter().any(|v| eq_or_contains(value, v))),
        None => operands.iter().any(Value::is_null),
    }
}

/// Like [`equals_any`], with the operands' hashed set: one look-up of the field's value.
fn in_set(field: &FieldRef, record: &Record, set: &ValueSet) -> bool {
    match field.resolve(record) {
        Some(r) => r.any(|value| set.matches(value)),
        None => set.iter().any(Value::is_null),
    }
}

/// An `$or`'s equalities on one metadata path (`$eq` or `$in`), joined into one `$in` where
/// the field is looked up once and its value hashed once, instead of once per clause: an `$or`
/// of a thousand `$eq` on one field cost a thousand look-ups and comparisons per record. Exact:
/// `$in` is defined as the `$or` of its values' `$eq`. Built-in fields are left as written
/// (their own equality rules are theirs to keep).
fn merge_equalities(parts: Vec<Filter>) -> Vec<Filter> {
    let mergeable = |f: &Filter| match f {
        Filter::Eq(field @ FieldRef::Metadata(_), _)
        | Filter::In(field @ FieldRef::Metadata(_), _) => Some(field.clone()),
        _ => None,
    };
    let mut per_field: std::collections::HashMap<FieldRef, usize> = Default::default();
    for part in &parts {
        if let Some(field) = mergeable(part) {
            *per_field.entry(field).or_default() += 1;
        }
    }
    if per_field.values().all(|&n| n < 2) {
        return parts;
    }
    // Each merged field's values, gathered where its first clause stood.
    let mut out: Vec<Filter> = Vec::with_capacity(parts.len());
    let mut gathered: std::collections::HashMap<FieldRef, (usize, Vec<Value>)> = Default::default();
    let merged = |field: &FieldRef| per_field.get(field).is_some_and(|&n| n > 1);
    for part in parts {
        let (field, values) = match part {
            Filter::Eq(field @ FieldRef::Metadata(_), v) if merged(&field) => (field, vec![v]),
            Filter::In(field @ FieldRef::Metadata(_), set) if merged(&field) => {
                (field, set.into_values())
            }
            other => {
                out.push(other);
                continue;
            }
        };
        match gathered.get_mut(&field) {
            Some((_, all)) => all.extend(values),
            None => {
                gathered.insert(field.clone(), (out.len(), values));
                // A placeholder, replaced by the field's `$in` below.
                out.push(Filter::In(field, ValueSet::default()));
            }
        }
    }
    for (field, (at, values)) in gathered {
        out[at] = Filter::In(field, ValueSet::from(values));
    }
    out
}

/// Mongo's rule: a scalar operand matches an array field when any element equals it.
fn eq_or_contains(field: &Value, operand: &Value) -> bool {
    values_equal(field, operand)
        || matches!(field, Value::Array(items) if items.iter().any(|x| values_equal(x, operand)))
}

fn any_element(field: &Value, pred: impl Fn(&Value) -> bool) -> bool {
    match field {
        Value::Array(items) => items.iter().any(pred),
        v => pred(v),
    }
}

/// Equality in which `1` and `1.0` are the same number, and integers compare exactly
/// ([`crate::Num`]).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => crate::Num::of(x) == crate::Num::of(y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Orders numbers with numbers and strings with strings; anything else is incomparable.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Some(crate::Num::of(x)?.cmp(&crate::Num::of(y)?)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CollectionName, Confidence, Domain, RecordId, UserToken};
    use proptest::prelude::Strategy;
    use proptest::prop_oneof;
    use serde_json::json;

    #[test]
    fn a_filter_that_matches_everything_by_its_shape_says_so() {
        for f in [
            json!({}),
            json!({"$and": [{}]}),
            json!({"$and": [{"$and": []}, {}]}),
            json!({"$or": [{"n": 1}, {}]}),
        ] {
            assert!(Filter::parse(&f).unwrap().matches_everything(), "{f}");
        }
        for f in [
            json!({"n": 1}),
            json!({"$and": [{}, {"n": 1}]}),
            json!({"$or": [{"n": 1}, {"n": 2}]}),
        ] {
            assert!(!Filter::parse(&f).unwrap().matches_everything(), "{f}");
        }
    }

    fn record() -> Record {
        Record {
            id: RecordId::parse("r1").unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: None,
            content: Some("hello".into()),
            vector: None,
            user_tokens: vec![UserToken::parse("u:a").unwrap()],
            memory_domain: Domain::default(),
            run_id: None,
            memory_scope: None,
            metadata: json!({"topic": "rust", "n": 3, "tags": ["x", "y"], "o": {"p": 1.5}})
                .as_object()
                .cloned()
                .unwrap(),
            created_at: 1000,
            updated_at: 1000,
            expires_at: None,
            confidence: Confidence::default(),
        }
    }

    fn check(filter: Value, expect: bool) {
        let f = Filter::parse(&filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert_eq!(f.matches(&record()), expect, "{filter}");
    }

    #[test]
    fn operators() {
        check(json!({}), true);
        check(json!({"topic": "rust"}), true);
        check(json!({"metadata.topic": "rust"}), true);
        check(json!({"topic": "go"}), false);
        check(json!({"n": 3.0}), true);
        check(json!({"n": {"$gt": 2, "$lte": 3}}), true);
        check(json!({"n": {"$lt": 3}}), false);
        check(json!({"n": {"$ne": 3}}), false);
        check(json!({"missing": {"$ne": 3}}), true);
        check(json!({"tags": "x"}), true);
        check(json!({"tags": {"$in": ["q", "y"]}}), true);
        check(json!({"tags": {"$nin": ["x"]}}), false);
        check(json!({"o.p": {"$gte": 1.5}}), true);
        check(json!({"o.p": {"$exists": true}}), true);
        check(json!({"o.q": {"$exists": false}}), true);
        check(json!({"topic": {"$gt": "a"}}), true);
        check(json!({"topic": {"$gt": 1}}), false);
        check(json!({"$or": [{"topic": "go"}, {"n": 3}]}), true);
        check(json!({"$and": [{"topic": "rust"}, {"n": 4}]}), false);
        check(json!({"created_at": {"$gte": 1000}}), true);
        check(json!({"confidence": {"$lt": 0.6}}), true);
        check(json!({"user_tokens": "u:a"}), true);
        check(json!({"id": {"$in": ["r1", "r2"]}}), true);
        check(json!({"expires_at": {"$exists": true}}), false);
    }

    /// A dotted path steps into every object of an array on its way, as in MongoDB: a clause
    /// matches when one of the values it reaches does; `$ne` and `$nin` when none does.
    #[test]
    fn dotted_paths_reach_into_arrays_of_objects() {
        let mut r = record();
        let files = json!([
            {"name": "a.pdf", "size": 5, "tags": ["draft", "x"]},
            {"name": "b.txt", "size": 12, "owner": {"id": 7}},
            "loose",
            [{"name": "nested-array"}],
            {"parts": [{"n": 1}, {"n": [2, 3]}]}
        ]);
        r.metadata.insert("files".into(), files);
        let f = |v: Value| Filter::parse(&v).unwrap().matches(&r);
        assert!(f(json!({"files.name": "b.txt"})));
        assert!(f(json!({"files.name": {"$in": ["zzz", "a.pdf"]}})));
        assert!(!f(json!({"files.name": "c"})));
        assert!(f(json!({"files.size": {"$gt": 10}})));
        assert!(!f(json!({"files.size": {"$gt": 12}})));
        assert!(f(json!({"files.name": {"$ne": "c"}})));
        assert!(!f(json!({"files.name": {"$ne": "a.pdf"}})));
        assert!(!f(json!({"files.name": {"$nin": ["b.txt"]}})));
        // An element's array is matched element by element, or whole.
        assert!(f(json!({"files.tags": "draft"})));
        assert!(f(json!({"files.tags": ["draft", "x"]})));
        // Deeper: objects inside an element, arrays of objects inside an element.
        assert!(f(json!({"files.owner.id": 7})));
        assert!(f(json!({"files.parts.n": 3})));
        assert!(f(json!({"files.parts.n": {"$gte": 2, "$lt": 3}})));
        assert!(f(json!({"files.owner": {"$exists": true}})));
        assert!(f(json!({"files.owner.name": {"$exists": false}})));
        // Elements that are not objects hold no key: a scalar, a nested array.
        assert!(!f(json!({"files.name": "nested-array"})));
        assert!(f(json!({"files": "loose"})));
        // The whole element still matches the array's own path.
        assert!(f(
            json!({"files": {"name": "b.txt", "size": 12, "owner": {"id": 7}}})
        ));
        // An empty array, or one without objects, has nothing under the path.
        r.metadata.insert("files".into(), json!([]));
        let f = |v: Value| Filter::parse(&v).unwrap().matches(&r);
        assert!(f(json!({"files.name": {"$exists": false}})));
        assert!(f(json!({"files.name": {"$ne": "a.pdf"}})));
    }

    /// 64-bit ids (chat platforms' message ids, snowflakes) compare exactly: neighbours past
    /// 2^53, equal as `f64`, do not match each other.
    #[test]
    fn integers_past_2_pow_53_compare_exactly() {
        let mut r = record();
        r.metadata
            .insert("msg".into(), json!(1_234_567_890_123_456_789u64));
        let f = |v: Value| Filter::parse(&v).unwrap().matches(&r);
        assert!(f(json!({"msg": 1_234_567_890_123_456_789u64})));
        assert!(!f(json!({"msg": 1_234_567_890_123_456_788u64})));
        assert!(!f(json!({"msg": 1_234_567_890_123_456_790u64})));
        assert!(!f(
            json!({"msg": {"$in": [1_234_567_890_123_456_788u64, 1]}})
        ));
        assert!(f(json!({"msg": {"$gt": 1_234_567_890_123_456_788u64}})));
        assert!(!f(json!({"msg": {"$gt": 1_234_567_890_123_456_789u64}})));
        assert!(f(json!({"msg": {"$lte": 1_234_567_890_123_456_789u64}})));
        assert!(!f(json!({"msg": {"$lt": 1_234_567_890_123_456_789u64}})));
        assert!(f(json!({"msg": {"$ne": 1_234_567_890_123_456_790u64}})));
    }

    #[test]
    fn bad_filters_are_errors() {
        for bad in [
            json!([]),
            json!({"$nor": []}),
            json!({"a": {"$regex": "x"}}),
            json!({"a": {"$in": 3}}),
            json!({"a": {"$gt": [1]}}),
            json!({"a": {"$exists": 1}}),
            json!({"a..b": 1}),
            json!({"vector": 1}),
            json!({"$and": {}}),
            json!({"$or": []}),
            json!({"$and": [{"n": 1}, {"$or": []}]}),
        ] {
            assert!(Filter::parse(&bad).is_err(), "{bad}");
        }
        // An empty `$and` stays "no constraint".
        check(json!({"$and": []}), true);
    }

    #[test]
    fn a_range_with_a_null_operand_names_its_path_and_operator() {
        for op in ["$gt", "$gte", "$lt", "$lte"] {
            let bad = json!({"$or": [{"a": 1}, {"meta.score": {op: null}}]});
            let e = Filter::parse(&bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "filter: meta.score: {op} takes a number or a string, not null"
                )),
                "{bad}: {e}"
            );
            assert!(e.contains(r#"{"meta.score": {"$exists": false}}"#), "{e}");
        }
        let e = Filter::parse(&json!({"n": {"$lt": [1]}}))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "filter: n: $lt takes a number or a string, not an array");
    }

    #[test]
    fn built_in_fields_refuse_operands_of_another_type() {
        for (bad, names) in [
            (
                json!({"created_at": {"$gte": "2026-01-01"}}),
                "created_at: $gte takes a number",
            ),
            (
                json!({"updated_at": "yesterday"}),
                "updated_at: $eq takes a number",
            ),
            (
                json!({"expires_at": {"$lt": "x"}}),
                "expires_at: $lt takes a number",
            ),
            (
                json!({"expires_at": {"$in": [1, "x"]}}),
                "expires_at: $in takes a number",
            ),
            (
                json!({"confidence": {"$gt": "high"}}),
                "confidence: $gt takes a number",
            ),
            (
                json!({"confidence.value": true}),
                "confidence.value: $eq takes a number",
            ),
            (
                json!({"created_at": null}),
                "created_at: $eq takes a number",
            ),
            (json!({"kind": 3}), "kind: $eq takes a string or null"),
            (json!({"id": {"$in": [1]}}), "id: $in takes a string"),
            (json!({"run_id": {"$gt": 2}}), "run_id: $gt takes a string"),
            (json!({"user_tokens": 1}), "user_tokens: $eq takes a string"),
            (
                json!({"expires_at": {"$gt": null}}),
                "expires_at: $gt takes a number or a string, not null",
            ),
        ] {
            let e = Filter::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(names), "{bad}: {e}");
        }
        // Metadata holds any JSON: any operand is fine.
        check(json!({"topic": {"$gte": 3}}), false);
        check(json!({"user_tokens": ["u:a"]}), true);
    }

    #[test]
    fn null_matches_a_built_in_field_the_record_lacks() {
        check(json!({"expires_at": null}), true);
        check(json!({"expires_at": {"$eq": null}}), true);
        check(json!({"expires_at": {"$ne": null}}), false);
        check(json!({"expires_at": {"$in": [null, 5]}}), true);
        check(json!({"expires_at": {"$nin": [null]}}), false);
        check(json!({"kind": null}), true);
        check(json!({"run_id": null}), true);
        check(json!({"memory_scope": {"$eq": null}}), true);
        check(json!({"content": null}), false);
        let mut expiring = record();
        expiring.expires_at = Some(5000);
        for (filter, want) in [
            (json!({"expires_at": null}), false),
            (json!({"expires_at": {"$ne": null}}), true),
            (json!({"expires_at": {"$in": [null, 5000]}}), true),
        ] {
            assert_eq!(
                Filter::parse(&filter).unwrap().matches(&expiring),
                want,
                "{filter}"
            );
        }
        // As in MongoDB, a metadata key that is absent equals null, as one stored as null
        // does: `$ne: null` finds the records that have the key.
        check(json!({"missing": null}), true);
        check(json!({"missing": {"$in": [null, 1]}}), true);
        check(json!({"missing": {"$ne": null}}), false);
        check(json!({"missing": {"$nin": [null]}}), false);
        let mut nulled = record();
        nulled.metadata.insert("gone".into(), Value::Null);
        for (filter, want) in [
            (json!({"gone": null}), true),
            (json!({"gone": {"$ne": null}}), false),
            (json!({"topic": {"$ne": null}}), true),
        ] {
            assert_eq!(
                Filter::parse(&filter).unwrap().matches(&nulled),
                want,
                "{filter}"
            );
        }
    }

    /// A record's tokens are stored sorted and without duplicates; a list of them in a filter
    /// matches whatever order it is written in.
    #[test]
    fn a_list_of_user_tokens_matches_in_any_order() {
        let mut two = record();
        two.user_tokens = ["u:a", "u:b"].map(|t| UserToken::parse(t).unwrap()).into();
        for (filter, want) in [
            (json!({"user_tokens": ["u:b", "u:a"]}), true),
            (json!({"user_tokens": ["u:b", "u:a", "u:b"]}), true),
            (json!({"user_tokens": {"$eq": ["u:b", "u:a"]}}), true),
            (json!({"user_tokens": {"$ne": ["u:b", "u:a"]}}), false),
            (
                json!({"user_tokens": {"$in": [["u:b", "u:a"], "u:z"]}}),
                true,
            ),
            (json!({"user_tokens": {"$nin": [["u:b", "u:a"]]}}), false),
            (json!({"user_tokens": ["u:b"]}), false),
        ] {
            assert_eq!(
                Filter::parse(&filter).unwrap().matches(&two),
                want,
                "{filter}"
            );
        }
    }

    /// Parts that constrain nothing are dropped, so what is left is what the field index can
    /// answer exactly.
    #[test]
    fn parts_that_constrain_nothing_are_dropped() {
        let parsed = |f: Value| Filter::parse(&f).unwrap();
        let n1 = parsed(json!({"n": 1}));
        assert_eq!(parsed(json!({"$and": [{}, {"n": 1}]})), n1);
        assert_eq!(
            parsed(json!({"$and": [{"$and": []}, {"$and": [{"n": 1}]}]})),
            n1
        );
        assert_eq!(parsed(json!({"$or": [{"n": 1}]})), n1);
        assert_eq!(parsed(json!({"$or": [{"n": 1}, {}]})), Filter::all());
        assert_eq!(
            parsed(json!({"$and": [{"n": 1}, {"$or": [{}, {"n": 2}]}]})),
            n1
        );
        // What is left still means what was written.
        let both = parsed(json!({"$and": [{"n": 3}, {"$and": [{}, {"topic": "rust"}]}]}));
        assert!(
            matches!(&both, Filter::And(parts) if parts.len() == 2),
            "{both:?}"
        );
        assert!(both.matches(&record()));
    }

    #[test]
    fn an_operators_error_names_its_path() {
        for (filter, message) in [
            (json!({"a": {"$in": 3}}), "filter: a: $in takes an array"),
            (
                json!({"a": {"$exists": "yes"}}),
                "filter: a: $exists takes true or false",
            ),
            (
                json!({"a": {"$regex": "x"}}),
                "filter: a: unknown operator $regex",
            ),
        ] {
            let err = Filter::parse(&filter).unwrap_err().to_string();
            assert!(err.starts_with(message), "{filter}: {err}");
        }
    }

    #[test]
    fn the_values_of_a_whole_filter_are_bounded() {
        let list =
            |n: usize, tag: &str| -> Vec<String> { (0..n).map(|i| format!("{tag}{i}")).collect() };
        // One list of the most values, and values spread over clauses up to the bound, pass.
        assert!(Filter::parse(&json!({"s": {"$in": list(1024, "a")}})).is_ok());
        assert!(
            Filter::parse(&json!({"$or": [
                {"s": {"$in": list(1000, "a")}},
                {"t": {"$nin": list(20, "b")}},
                {"n": {"$gte": 1, "$lt": 9}},
                {"u": "x", "v": {"$exists": true}}
            ]}))
            .is_ok()
        );
        // Past it, however they are spread, the filter is refused naming the bound.
        let over = [
            json!({"$or": [{"s": {"$in": list(600, "a")}}, {"s": {"$in": list(600, "b")}}]}),
            json!({"s": {"$in": list(1024, "a")}, "t": 1}),
            json!({"$or": (0..400).map(|i| json!({"s": {"$in": list(1000, &format!("x{i}_"))}})).collect::<Vec<_>>()}),
        ];
        for filter in over {
            let e = Filter::parse(&filter).expect_err("over the bound");
            assert!(e.0.starts_with("more than 1024 values in all"), "{e}");
        }
    }

    #[test]
    fn an_or_of_equalities_on_one_metadata_path_is_one_in() {
        let f = Filter::parse(&json!({"$or": [{"s": "a"}, {"n": 3}, {"s": {"$in": ["b", 1]}}, {"kind": "k"}, {"s": "c"}]}))
            .expect("parse");
        let path = |p: &str| FieldRef::Metadata(vec![p.to_owned()]);
        let expected = Filter::Or(vec![
            Filter::In(
                path("s"),
                ValueSet::from(vec![json!("a"), json!("b"), json!(1), json!("c")]),
            ),
            Filter::Eq(path("n"), json!(3)),
            Filter::Eq(FieldRef::Kind, json!("k")),
        ]);
        assert_eq!(f, expected);
    }

    fn metadata_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            (0i64..4).prop_map(|n| json!(n)),
            (0i64..4).prop_map(|n| json!(n as f64)),
            "[ab]".prop_map(Value::String),
            proptest::collection::vec((0i64..4).prop_map(|n| json!(n)), 0..3)
                .prop_map(Value::Array),
        ]
    }

    proptest::proptest! {
        /// A parsed `$or` (its equalities joined into `$in`s) matches exactly the records the
        /// clauses as written, evaluated one by one, match.
        #[test]
        fn joining_equalities_keeps_the_meaning(
            clauses in proptest::collection::vec((0usize..3, proptest::bool::ANY, proptest::collection::vec(metadata_value(), 1..3)), 1..8),
            fields in proptest::collection::vec(proptest::option::of(metadata_value()), 3),
        ) {
            let paths = ["p", "q", "o.r"];
            let mut written = Vec::new();
            let mut json_clauses = Vec::new();
            for (p, as_in, values) in &clauses {
                let field = FieldRef::parse(paths[*p]).expect("path");
                if *as_in {
                    written.push(Filter::In(field, ValueSet::from(values.clone())));
                    json_clauses.push(json!({ (paths[*p]): {"$in": values} }));
                } else {
                    written.push(Filter::Eq(field, values[0].clone()));
                    json_clauses.push(json!({ (paths[*p]): {"$eq": values[0]} }));
                }
            }
            let parsed = Filter::parse(&json!({"$or": json_clauses})).expect("parse");
            let mut r = record();
            let mut metadata = Map::new();
            let mut nested = Map::new();
            if let Some(v) = &fields[0] { metadata.insert("p".into(), v.clone()); }
            if let Some(v) = &fields[1] { metadata.insert("q".into(), v.clone()); }
            if let Some(v) = &fields[2] { nested.insert("r".into(), v.clone()); }
            metadata.insert("o".into(), Value::Object(nested));
            r.metadata = metadata;
            proptest::prop_assert_eq!(parsed.matches(&r), Filter::Or(written).matches(&r));
        }
    }

    #[test]
    fn deep_filters_are_rejected_not_overflowed() {
        let mut f = json!({"a": 1});
        for _ in 0..200 {
            f = json!({ "$and": [f] });
        }
        assert!(Filter::parse(&f).is_err());
    }
}
