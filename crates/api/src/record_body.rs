//! Records as the record routes answer them (`GET /v1/memories/{id}`, both lists, a patch and
//! evidence): each carries its id and what the request's `include` names, by default the
//! whole record without its vector. Exports are not answered here: they stay complete.

use serde::Serialize;
use serde_json::{Map, Value};
use strata_engine::{ScanPage, Vectors};
use strata_types::{
    CollectionName, Confidence, Domain, Include, Kind, MemoryScope, Millis, Record, RecordId,
    RunId, UserToken,
};
use utoipa::ToSchema;

use crate::ApiError;

/// What a record answer carries when the request names no `include`: every field of the record
/// but its vector. A vector is hundreds of floats (384 for MiniLM, about 5 KB of JSON) that a
/// client reading memories seldom wants; `include=record,vector` brings it back.
pub const DEFAULT_RECORD_INCLUDE: &[Include] = &[Include::Record];

/// How the OpenAPI document describes `include` in a query string.
pub const INCLUDE_DOC: &str = "What each record carries besides its `id`, comma-separated: \
    `content`, `metadata`, `vector`, `record` (every field but the vector). Absent: `record`, \
    the whole record without its vector; `record,vector` for all of it; empty (`include=`) for \
    ids only. An unknown name is `400`.";

/// Which fields a record answer carries besides its id, decided once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordFields {
    content: bool,
    metadata: bool,
    vector: bool,
    /// Every field but the vector (`include` names `record`).
    whole: bool,
}

impl RecordFields {
    /// The fields `include` names; [`DEFAULT_RECORD_INCLUDE`]'s when it is absent.
    pub fn named(include: Option<&[Include]>) -> RecordFields {
        let include = include.unwrap_or(DEFAULT_RECORD_INCLUDE);
        let has = |f| include.contains(&f);
        RecordFields {
            content: has(Include::Content),
            metadata: has(Include::Metadata),
            vector: has(Include::Vector),
            whole: has(Include::Record),
        }
    }

    /// `include` as a query string gives it, comma-separated and given once
    /// (`include=record,vector`): absent is the default, `include=` is none (ids only). An
    /// unknown name is `400`, naming the known ones.
    pub fn from_query(value: Option<&str>) -> Result<RecordFields, ApiError> {
        let Some(value) = value else {
            return Ok(RecordFields::named(None));
        };
        if value.is_empty() {
            return Ok(RecordFields::named(Some(&[])));
        }
        // An empty name between commas (`include=,` or `include=content,`) is a mistake, as
        // an empty token in `user_tokens` is: refused rather than read as "ids only".
        if value.split(',').any(str::is_empty) {
            return Err(ApiError::BadRequest(
                "include: an empty name in the comma-separated list (name each field, or send \
                 include= alone for ids only)"
                    .into(),
            ));
        }
        let include = value
            .split(',')
            .map(|name| name.parse::<Include>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::BadRequest(format!("include: {e}")))?;
        Ok(RecordFields::named(Some(include.as_slice())))
    }

    /// What the answer's records carry, for the estimate of its size (`answer_budget`).
    pub(crate) fn shape(self) -> crate::answer_budget::Shape {
        use crate::answer_budget::Shape;
        if self.vector {
            Shape::Vectors
        } else if self.content || self.metadata || self.whole {
            Shape::Records
        } else {
            Shape::Ids
        }
    }

    /// Empties the fields of `record` that its answer does not carry, so a fetched page holds
    /// no more than it will encode; [`RecordBody::project`] answers the same either way.
    pub(crate) fn strip(self, record: &mut Record) {
        if !(self.whole || self.content) {
            record.content = None;
        }
        if !(self.whole || self.metadata) {
            record.metadata = Map::new();
        }
        if !self.vector {
            record.vector = None;
        }
        if !self.whole {
            record.user_tokens = Vec::new();
        }
    }

    /// An upper bound of `record`'s JSON in a page, for the answer budget (`answer_size`).
    pub(crate) fn measure(self, record: &Record) -> u64 {
        crate::answer_size::Carried {
            content: self.content,
            metadata: self.metadata,
            vector: self.vector,
            whole: self.whole,
        }
        .record(record)
    }

    /// Whether storage reads must return vectors: only when the answer carries them.
    pub fn vectors(self) -> Vectors {
        if self.vector {
            Vectors::Read
        } else {
            Vectors::Skip
        }
    }
}

/// A record as the record routes answer it: always its id; `vector` only when `include`
/// names `vector` (then `null` for a record without one); `content` and `metadata` when it
/// names them or `record`; every other field when it names `record`. Without `include` it is
/// the whole record without its vector.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordBody {
    pub id: RecordId,
    /// The collection the record lives in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modality: Option<CollectionName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Kind>)]
    pub kind: Option<Option<Kind>>,
    /// The record's text, `null` when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub content: Option<Option<String>>,
    /// Only with `include` naming `vector`: the vector as stored, `null` when the record has
    /// none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<f32>>)]
    pub vector: Option<Option<Vec<f32>>>,
    /// Principals who may read the record; empty means every principal of the tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_tokens: Option<Vec<UserToken>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_domain: Option<Domain>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RunId>)]
    pub run_id: Option<Option<RunId>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<MemoryScope>)]
    pub memory_scope: Option<Option<MemoryScope>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub created_at: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub updated_at: Option<Millis>,
    /// When the memory expires (TTL), in milliseconds since the Unix epoch; `null` for never.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub expires_at: Option<Option<Millis>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
}

impl RecordBody {
    /// Keeps of `record` what `fields` names; the rest is never serialised.
    pub fn project(record: Record, fields: RecordFields) -> RecordBody {
        // Destructured whole, so a field added to `Record` must be decided on here.
        let Record {
            id,
            modality,
            kind,
            content,
            vector,
            user_tokens,
            memory_domain,
            run_id,
            memory_scope,
            metadata,
            created_at,
            updated_at,
            expires_at,
            confidence,
        } = record;
        let whole = fields.whole;
        RecordBody {
            id,
            modality: whole.then_some(modality),
            kind: whole.then_some(kind),
            content: (whole || fields.content).then_some(content),
            vector: fields.vector.then_some(vector),
            user_tokens: whole.then_some(user_tokens),
            memory_domain: whole.then_some(memory_domain),
            run_id: whole.then_some(run_id),
            memory_scope: whole.then_some(memory_scope),
            metadata: (whole || fields.metadata).then_some(metadata),
            created_at: whole.then_some(created_at),
            updated_at: whole.then_some(updated_at),
            expires_at: whole.then_some(expires_at),
            confidence: whole.then_some(confidence),
        }
    }
}

/// One page of a listing, in id order, each record with what `include` names.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordPage {
    pub records: Vec<RecordBody>,
    /// Pass as `after` to get the next page; `null` when this page reached the end.
    pub next: Option<RecordId>,
}

impl RecordPage {
    pub fn project(page: ScanPage, fields: RecordFields) -> RecordPage {
        let ScanPage { records, next } = page;
        RecordPage {
            records: records
                .into_iter()
                .map(|r| RecordBody::project(r, fields))
                .collect(),
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(vector: Option<Vec<f32>>) -> Record {
        Record {
            id: RecordId::parse("r1").unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: None,
            content: Some("tea".into()),
            vector,
            user_tokens: Vec::new(),
            memory_domain: Domain::default_domain(),
            run_id: None,
            memory_scope: None,
            metadata: json!({"n": 1}).as_object().unwrap().clone(),
            created_at: 1,
            updated_at: 2,
            expires_at: None,
            confidence: Confidence::initial(0.5),
        }
    }

    /// A fetched record is stripped of what its answer does not carry before it joins a
    /// page: its answer is the same, and an ids-only page holds no text or metadata.
    #[test]
    fn stripping_what_is_not_carried_changes_no_answer() {
        let mut full = stored(Some(vec![1.0, 2.0]));
        full.user_tokens = vec![UserToken::parse("alice").unwrap()];
        for include in [
            None,
            Some(""),
            Some("content"),
            Some("metadata"),
            Some("vector"),
            Some("record,vector"),
            Some("content,vector"),
        ] {
            let fields = RecordFields::from_query(include).unwrap();
            let mut stripped = full.clone();
            fields.strip(&mut stripped);
            assert_eq!(
                answer(stripped, include),
                answer(full.clone(), include),
                "{include:?}"
            );
        }
        let mut ids = full.clone();
        RecordFields::from_query(Some("")).unwrap().strip(&mut ids);
        assert_eq!(
            (
                ids.content,
                ids.metadata.len(),
                ids.vector,
                ids.user_tokens.len()
            ),
            (None, 0, None, 0)
        );
    }

    fn answer(record: Record, include: Option<&str>) -> Value {
        let fields = RecordFields::from_query(include).unwrap();
        serde_json::to_value(RecordBody::project(record, fields)).unwrap()
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        k
    }

    #[test]
    fn by_default_an_answer_is_the_whole_record_without_its_vector() {
        let record = stored(Some(vec![1.0, 2.0]));
        let mut whole = serde_json::to_value(&record).unwrap();
        whole.as_object_mut().unwrap().remove("vector");
        assert_eq!(answer(record.clone(), None), whole);
        assert_eq!(answer(record, Some("record")), whole);
        assert_eq!(RecordFields::named(None).vectors(), Vectors::Skip);
    }

    #[test]
    fn naming_the_vector_brings_it_back_null_when_there_is_none() {
        let record = stored(Some(vec![1.0, 2.0]));
        let full = serde_json::to_value(&record).unwrap();
        assert_eq!(answer(record.clone(), Some("record,vector")), full);
        assert_eq!(
            answer(record, Some("vector")),
            json!({"id": "r1", "vector": [1.0, 2.0]})
        );
        assert_eq!(
            answer(stored(None), Some("vector")),
            json!({"id": "r1", "vector": null})
        );
        let fields = RecordFields::from_query(Some("vector")).unwrap();
        assert_eq!(fields.vectors(), Vectors::Read);
    }

    #[test]
    fn an_answer_carries_what_include_names() {
        let record = stored(None);
        assert_eq!(answer(record.clone(), Some("")), json!({"id": "r1"}));
        assert_eq!(
            answer(record.clone(), Some("content")),
            json!({"id": "r1", "content": "tea"})
        );
        assert_eq!(
            keys(&answer(record.clone(), Some("metadata,content"))),
            ["content", "id", "metadata"]
        );
        // Included but absent is `null`, not missing.
        let none = Record {
            content: None,
            ..record
        };
        assert_eq!(
            answer(none, Some("content")),
            json!({"id": "r1", "content": null})
        );
    }

    #[test]
    fn an_unknown_name_is_refused_naming_the_known_ones() {
        for bad in ["vectors", "content,Vector", "record, vector", "*"] {
            let Err(ApiError::BadRequest(m)) = RecordFields::from_query(Some(bad)) else {
                panic!("{bad} was accepted");
            };
            assert!(m.starts_with("include: unknown field `"), "{m}");
            assert!(
                m.ends_with("expected content, metadata, vector or record"),
                "{m}"
            );
        }
    }

    #[test]
    fn an_empty_name_between_commas_is_refused_and_an_empty_list_is_ids_only() {
        for bad in [",", "content,", ",vector", "content,,metadata"] {
            let Err(ApiError::BadRequest(m)) = RecordFields::from_query(Some(bad)) else {
                panic!("{bad} was accepted");
            };
            assert!(m.starts_with("include: an empty name"), "{m}");
        }
        let ids = RecordFields::from_query(Some("")).unwrap();
        assert_eq!(ids.shape(), crate::answer_budget::Shape::Ids);
    }

    #[test]
    fn a_page_keeps_its_next_and_projects_every_record() {
        let page = ScanPage {
            records: vec![stored(Some(vec![1.0])), stored(None)],
            next: Some(RecordId::parse("r1").unwrap()),
        };
        let v = serde_json::to_value(RecordPage::project(
            page,
            RecordFields::named(Some(&[][..])),
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"records": [{"id": "r1"}, {"id": "r1"}], "next": "r1"})
        );
    }
}
