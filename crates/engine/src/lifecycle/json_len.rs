//! The length of a value's JSON text without building the text.
//!
//! Every put measures its record's size for the byte quota, and the metadata's share of that
//! size is defined as the length of its compact JSON. Building the string only to take its
//! length allocated and copied on the write path; counting what the serializer writes gives the
//! same number (the same serializer, the same bytes) without keeping them.

use std::io;

use serde::Serialize;

/// Bytes `serde_json::to_vec(value)` would produce, or `None` where it would fail.
pub(crate) fn json_len(value: &impl Serialize) -> Option<usize> {
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

    /// `record_bytes` as it was, building the metadata's text.
    fn old_record_bytes(r: &strata_types::Record) -> u64 {
        let metadata = serde_json::to_vec(&r.metadata).map_or(0, |v| v.len());
        let tokens: usize = r.user_tokens.iter().map(|t| t.as_str().len()).sum();
        (r.id.as_str().len()
            + r.content.as_ref().map_or(0, String::len)
            + r.vector.as_ref().map_or(0, |v| v.len() * 4)
            + metadata
            + tokens
            + 64) as u64
    }

    #[test]
    fn a_record_is_charged_what_it_was_charged_before() {
        use strata_types::{CollectionName, Confidence, Domain, Record, RecordId, UserToken};
        let record = |metadata: Value| Record {
            id: RecordId::parse("r1").unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: None,
            content: Some("green tea in the morning".into()),
            vector: Some(vec![0.5; 8]),
            user_tokens: vec![UserToken::parse("u:a").unwrap()],
            memory_domain: Domain::default_domain(),
            run_id: None,
            memory_scope: None,
            metadata: metadata.as_object().cloned().unwrap(),
            created_at: 1,
            updated_at: 1,
            expires_at: None,
            confidence: Confidence::initial(0.5),
        };
        for metadata in [
            json!({}),
            json!({"topic": "tea", "n": 3, "tags": ["a", "b"], "x": {"y": null}}),
            json!({"naïve \"quoted\"": "line\nbreak ✓", "f": 0.1}),
        ] {
            let r = record(metadata);
            assert_eq!(super::super::record_bytes(&r), old_record_bytes(&r));
        }
        // Pinned: id 2 + content 24 + vector 32 + `{}` 2 + token 3 + 64.
        assert_eq!(super::super::record_bytes(&record(json!({}))), 127);
    }

    proptest! {
        #[test]
        fn matches_the_built_text(entries in prop::collection::vec((any::<String>(), any_value()), 0..8)) {
            let map: Map<String, Value> = entries.into_iter().collect();
            prop_assert_eq!(json_len(&map), old_len(&map));
        }
    }
}
