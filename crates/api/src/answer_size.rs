//! What a fetched record or hit will take once encoded as JSON, measured before it is encoded:
//! the answer budget (`answer_budget`) counts a page's or a search's records as they are
//! fetched, so a page stops at its reservation and a search is refused before it is encoded.
//!
//! The measure is an upper bound of the compact JSON the answer's serialisation writes for
//! what `include` names, not a guess: text counts its bytes plus 5 for each byte JSON must
//! escape (`\u00XX` is 6 for 1), a number 24 (`-2.2250738585072014e-308`), a vector component
//! 16 (`-1.1754944e-38,`), the names their bytes, and the record's fixed fields (keys, times,
//! confidence, punctuation) [`RECORD_FIELDS`]. It walks the record once without allocating, so
//! it costs a fraction of the encoding. What it does not measure is the record's memory before
//! encoding: a vector there is 4 bytes a component (less than its JSON), text the same, and a
//! metadata tree of many small values more (each `Value` node is 32 bytes and its map entry
//! more), which is bounded by `limits.max_metadata_bytes` per record.

use serde_json::{Map, Value};
use strata_types::{Include, Record, SearchHit, SearchRequest};

/// A record's JSON besides its id, names, text, metadata and vector: field names, three
/// timestamps, the confidence object, the kind, punctuation (about 330 bytes at most).
pub(crate) const RECORD_FIELDS: u64 = 512;
/// A hit's JSON besides its record's fields: id and score keys, a score, punctuation, and the
/// key of each field carried; the id, `explain`, `source` and a recall's `via` are measured.
const HIT_FIELDS: u64 = 128;
/// One number of JSON at most (`-2.2250738585072014e-308` is 24 characters).
const NUMBER: u64 = 24;
/// One vector component of JSON at most, with its comma (`-1.1754944e-38,` is 15).
pub(crate) const PER_DIM: u64 = 16;

/// What an answer's records carry, as `include` names it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Carried {
    pub content: bool,
    pub metadata: bool,
    pub vector: bool,
    /// Every field but the vector.
    pub whole: bool,
}

impl Carried {
    /// What a search's (or recall's) hits carry.
    pub(crate) fn of_search(search: &SearchRequest) -> Carried {
        Carried {
            content: search.includes(Include::Content),
            metadata: search.includes(Include::Metadata),
            vector: search.includes(Include::Vector),
            whole: search.includes(Include::Record),
        }
    }

    /// A record as a list page answers it (`RecordBody::project`): its id and what is carried.
    pub(crate) fn record(self, r: &Record) -> u64 {
        let mut bytes = 16 + text(r.id.as_str());
        if self.whole {
            bytes += RECORD_FIELDS + text(r.modality.as_str()) + text(r.memory_domain.as_str());
            bytes += r.kind.as_ref().map_or(0, |k| text(k.as_str()));
            bytes += r.run_id.as_ref().map_or(0, |n| text(n.as_str()));
            bytes += r.memory_scope.as_ref().map_or(0, |n| text(n.as_str()));
            bytes += r
                .user_tokens
                .iter()
                .map(|t| text(t.as_str()) + 1)
                .sum::<u64>();
        }
        if self.whole || self.content {
            bytes += 16 + r.content.as_deref().map_or(0, text);
        }
        if self.whole || self.metadata {
            bytes += 16 + object(&r.metadata);
        }
        if self.vector {
            bytes += 16 + vector(r.vector.as_deref());
        }
        bytes
    }

    /// A search hit as `SearchAnswer::project` answers it: with `record` included, the whole
    /// record is carried and each of content, metadata and vector that `include` also names
    /// is carried a second time beside it.
    pub(crate) fn hit(self, hit: &SearchHit) -> u64 {
        let mut bytes = HIT_FIELDS + text(hit.id.as_str());
        bytes += hit.explain.as_deref().map_or(0, json_len);
        bytes += hit.source.as_deref().map_or(0, json_len);
        if let Some(record) = hit.record.as_deref() {
            bytes += self.beside(record);
        }
        bytes
    }

    /// A recall hit: a search hit's fields, its activation, search score and path.
    pub(crate) fn recall_hit(self, hit: &strata_types::RecallHit) -> u64 {
        HIT_FIELDS
            + 2 * NUMBER
            + text(hit.record.id.as_str())
            + hit.explain.as_ref().map_or(0, json_len)
            + json_len(&hit.via)
            + self.beside(&hit.record)
    }

    /// A hit's record fields: the whole record when carried, and each part named beside it.
    fn beside(self, record: &Record) -> u64 {
        let parts = Carried {
            whole: false,
            ..self
        };
        let mut bytes = parts.record(record);
        if self.whole {
            bytes += Carried {
                whole: true,
                ..Carried::default()
            }
            .record(record);
        }
        bytes
    }
}

/// A JSON string's bytes at most: its own, its quotes, and 5 more for each byte JSON escapes.
fn text(s: &str) -> u64 {
    let escaped = s
        .bytes()
        .filter(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .count();
    (s.len() + 2 + 5 * escaped) as u64
}

fn vector(v: Option<&[f32]>) -> u64 {
    v.map_or(4, |v| 2 + v.len() as u64 * PER_DIM)
}

fn object(map: &Map<String, Value>) -> u64 {
    2 + map.iter().map(|(k, v)| text(k) + 2 + value(v)).sum::<u64>()
}

fn value(v: &Value) -> u64 {
    match v {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => NUMBER,
        Value::String(s) => text(s),
        Value::Array(items) => 2 + items.iter().map(|v| value(v) + 1).sum::<u64>(),
        Value::Object(map) => object(map),
    }
}

/// The exact compact JSON length of a small part (an `explain`, a `source`, a path).
fn json_len(part: &impl serde::Serialize) -> u64 {
    // A value JSON cannot hold counts as nothing.
    strata_types::json_len(part).unwrap_or(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_body::{RecordBody, RecordFields};
    use serde_json::json;
    use strata_types::{CollectionName, Confidence, Domain, Kind, RecordId, RunId, UserToken};

    fn record(content: &str, metadata: Value, vector: Option<Vec<f32>>) -> Record {
        Record {
            id: RecordId::parse("0190a4c2-7d3e-7b21-9f00-5a1c2b3d4e5f").unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: Some(Kind::parse("note").unwrap()),
            content: Some(content.into()),
            vector,
            user_tokens: vec![UserToken::parse("alice").unwrap()],
            memory_domain: Domain::default_domain(),
            run_id: Some(RunId::parse("run-1").unwrap()),
            memory_scope: None,
            metadata: metadata.as_object().unwrap().clone(),
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_001,
            expires_at: Some(1_800_000_000_000),
            confidence: Confidence {
                value: 0.123_456_789_012_345_67,
                evidence_count: u32::MAX,
                corroborations: u32::MAX,
                contradictions: u32::MAX,
            },
        }
    }

    fn encoded(r: &Record, include: &[Include]) -> u64 {
        let body = RecordBody::project(r.clone(), RecordFields::named(Some(include)));
        serde_json::to_vec(&body).unwrap().len() as u64
    }

    /// For every `include`, the measure bounds the record's JSON from above and stays close
    /// to it (within a fixed overhead and a third for vectors of typical components).
    #[test]
    fn the_measure_bounds_a_records_json_and_stays_close_to_it() {
        let escapes = "line\n\"quoted\" \\ tab\t \u{1} ünïcödé ".repeat(200);
        let meta =
            json!({"n": [1, -2.5, 1e300, null, true], "s": {"deep": "x\u{0}y"}, "t": escapes});
        let vector: Vec<f32> = (0..384).map(|i| (i as f32 - 190.0) * 0.001_234_5).collect();
        let extremes = vec![
            -1.175_494_4e-38_f32,
            f32::MIN,
            f32::MAX,
            -0.000_001_234_567_8,
        ];
        let records = [
            record(&escapes, meta, Some(vector)),
            record("tea", json!({}), Some(extremes)),
            record(
                &"plain text ".repeat(300),
                json!({"n": [1, -2.5, 1e300], "s": {"deep": "x y"}, "t": "plain ".repeat(100)}),
                None,
            ),
        ];
        let includes: [&[Include]; 6] = [
            &[],
            &[Include::Content],
            &[Include::Metadata],
            &[Include::Record],
            &[Include::Record, Include::Vector],
            &[Include::Vector],
        ];
        for (i, r) in records.iter().enumerate() {
            for include in includes {
                let measured = RecordFields::named(Some(include)).measure(r);
                let real = encoded(r, include);
                assert!(measured >= real, "{i} {include:?}: {measured} < {real}");
                // Text of many escapes (the first record's) is counted at 6 bytes each, more
                // than `\n` takes: an upper bound, not close.
                let slack = RECORD_FIELDS + 200 + real / 3;
                assert!(
                    i == 0 || measured <= real + slack,
                    "{i} {include:?}: {measured} vs {real}"
                );
            }
        }
    }

    /// A hit carries its record whole and each named part beside it: the measure counts both.
    #[test]
    fn a_hits_measure_bounds_its_json() {
        let r = record("some text", json!({"k": "v"}), Some(vec![0.5; 64]));
        for include in [
            vec![],
            vec![Include::Content],
            vec![Include::Record],
            vec![Include::Record, Include::Content, Include::Vector],
        ] {
            let search: SearchRequest = serde_json::from_value(json!({
                "modality": "text", "query": "q", "k": 1, "include": include,
            }))
            .unwrap();
            let hit = SearchHit {
                id: r.id.clone(),
                record: search.needs_records().then(|| Box::new(r.clone())),
                score: -1.234_567_8e-20,
                explain: None,
                source: None,
            };
            let measured = Carried::of_search(&search).hit(&hit);
            let encode = |hits| {
                let answer = crate::bodies::SearchAnswer::project(
                    strata_types::SearchResponse {
                        hits,
                        mode: strata_types::SearchMode::Text,
                        exact: true,
                    },
                    &search,
                );
                serde_json::to_vec(&answer).unwrap().len() as u64
            };
            let real = encode(vec![hit]) - encode(vec![]);
            assert!(measured >= real, "{include:?}: {measured} < {real}");
            assert!(
                measured <= real + 2 * RECORD_FIELDS + 400,
                "{include:?}: {measured} vs {real}"
            );
        }
    }
}
