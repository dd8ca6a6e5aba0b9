//! The values of an `$in` or `$nin`, with their scalars hashed: a record's field is matched
//! against the whole list with one look-up per element instead of one comparison per value.

use std::collections::HashSet;

use serde_json::Value;

use super::values_equal;

/// A scalar as the filter compares it: numbers by value (`1` and `1.0` are one key), strings,
/// booleans and `null` by themselves. Two scalars are `values_equal` exactly when their keys
/// are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ScalarKey {
    Null,
    Bool(bool),
    /// The number exactly, in [`crate::Num`]'s canonical form (`1` and `1.0`, `-0.0` and `0`
    /// are one key; integers past 2^53 stay apart).
    Number(crate::Num),
    String(String),
}

impl ScalarKey {
    fn of(v: &Value) -> Option<ScalarKey> {
        Some(match v {
            Value::Null => ScalarKey::Null,
            Value::Bool(b) => ScalarKey::Bool(*b),
            Value::Number(n) => ScalarKey::Number(crate::Num::of(n)?),
            Value::String(s) => ScalarKey::String(s.clone()),
            Value::Array(_) | Value::Object(_) => return None,
        })
    }
}

/// The operand list of `$in` / `$nin`: the values as given (what the field index and the
/// filter's equality see) and, for matching, the scalars in a hash set and the arrays and
/// objects (compared one by one, as they can only equal an array or object).
#[derive(Debug, Clone, Default)]
pub struct ValueSet {
    values: Vec<Value>,
    scalars: HashSet<ScalarKey>,
    compound: Vec<Value>,
}

impl ValueSet {
    /// The values as given, in order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The values as given, in order, taken out.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// Whether `field` equals one of the values, or is an array one of whose elements does
    /// (Mongo's rule, as `$eq`): exactly `values().iter().any(|v| eq_or_contains(field, v))`.
    pub fn matches(&self, field: &Value) -> bool {
        self.has(field) || matches!(field, Value::Array(items) if items.iter().any(|x| self.has(x)))
    }

    /// Whether `x` equals one of the values.
    fn has(&self, x: &Value) -> bool {
        match ScalarKey::of(x) {
            Some(key) => self.scalars.contains(&key),
            None => self.compound.iter().any(|v| values_equal(x, v)),
        }
    }
}

impl From<Vec<Value>> for ValueSet {
    fn from(values: Vec<Value>) -> Self {
        let mut scalars = HashSet::with_capacity(values.len());
        let mut compound = Vec::new();
        for v in &values {
            match ScalarKey::of(v) {
                Some(key) => {
                    scalars.insert(key);
                }
                None => compound.push(v.clone()),
            }
        }
        ValueSet {
            values,
            scalars,
            compound,
        }
    }
}

impl FromIterator<Value> for ValueSet {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Self {
        ValueSet::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl std::ops::Deref for ValueSet {
    type Target = [Value];

    fn deref(&self) -> &[Value] {
        &self.values
    }
}

/// Two sets are the same operand when their values are, in order (as the filter was written).
impl PartialEq for ValueSet {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

#[cfg(test)]
mod tests {
    use super::super::eq_or_contains;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Small JSON values that collide often: equal numbers written as integers and floats, the
    /// two zeros, short strings, and arrays and objects of them.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..3).prop_map(|n| json!(n)),
            (-3i64..3).prop_map(|n| json!(n as f64)),
            Just(json!(-0.0)),
            Just(json!(0.5)),
            Just(json!(u64::MAX)),
            Just(json!(u64::MAX as f64)),
            // Neighbours past 2^53, equal as f64, different as integers.
            Just(json!(9_007_199_254_740_992u64)),
            Just(json!(9_007_199_254_740_993u64)),
            Just(json!(9_007_199_254_740_992.0)),
            "[ab]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[ab]", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The hashed membership answers exactly as the linear scan it replaced.
        #[test]
        fn hashed_membership_is_the_linear_scan(
            values in proptest::collection::vec(value(), 0..8),
            field in value(),
        ) {
            let linear = values.iter().any(|v| eq_or_contains(&field, v));
            let set = ValueSet::from(values.clone());
            prop_assert_eq!(set.matches(&field), linear, "{:?} in {:?}", field, values);
            prop_assert_eq!(set.values(), values.as_slice());
        }
    }

    #[test]
    fn numbers_match_by_value_and_compounds_by_structure() {
        let set = ValueSet::from(vec![json!(1), json!("a"), json!([1, 2]), json!({"k": 0})]);
        for hit in [
            json!(1.0),
            json!("a"),
            json!([1.0, 2]),
            json!({"k": -0.0}),
            json!([3, 1]),
        ] {
            assert!(set.matches(&hit), "{hit}");
        }
        for miss in [
            json!(2),
            json!("b"),
            json!([2, 3]),
            json!([2, [1]]),
            json!(null),
        ] {
            assert!(!set.matches(&miss), "{miss}");
        }
        let zeros = ValueSet::from(vec![json!(-0.0)]);
        assert!(zeros.matches(&json!(0)));
    }
}
