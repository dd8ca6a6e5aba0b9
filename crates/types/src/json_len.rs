//! The length of a value's JSON text without building the text.
//!
//! Sizes defined as a value's compact JSON length (a record's metadata against its limit and
//! the byte quota, an answer's size) are measured on hot paths; building the string only to
//! take its length allocates and copies. Counting what the serializer writes gives the same
//! number (the same serializer, the same bytes) without keeping them.

use std::io;

use serde::Serialize;

/// Bytes `serde_json::to_vec(value)` would produce, or `None` where it would fail.
pub fn json_len(value: &impl Serialize) -> Option<usize> {
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.0)
}

/// A writer that keeps only how many bytes went through it.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    /// The computation this replaces.
    fn old_len(v: &impl Serialize) -> Option<usize> {
        serde_json::to_vec(v).ok().map(|v| v.len())
    }

    #[test]
    fn matches_the_built_text_on_examples() {
        let cases = [
            json!({}),
            json!({"a": 1}),
            json!({"quote\"d": "back\\slash \n tab\t ctrl\u{1}", "é": "日本語 🎉"}),
            json!({"n": [1, -2, 3.5, 1e300, -0.0, u64::MAX, i64::MIN], "b": [true, false, null]}),
            json!({"deep": {"er": {"est": [{"x": []}, {}]}}}),
        ];
        for case in cases {
            let Value::Object(map) = case else {
                unreachable!()
            };
            assert_eq!(json_len(&map), old_len(&map), "{map:?}");
            assert!(json_len(&map).is_some());
        }
    }

    #[test]
    fn a_value_that_does_not_serialize_is_none_as_before() {
        // A map with non-string keys cannot be JSON; both ways must say so.
        let mut bad = std::collections::BTreeMap::new();
        bad.insert(vec![1u8], 1);
        assert_eq!(json_len(&bad), None);
        assert_eq!(old_len(&bad), None);
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn matches_the_built_text(entries in prop::collection::vec((any::<String>(), any_value()), 0..8)) {
            let map: Map<String, Value> = entries.into_iter().collect();
            prop_assert_eq!(json_len(&map), old_len(&map));
        }
    }
}
