//! The record model: collections, records, writes and patches.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    CollectionName, Domain, Kind, MemoryScope, Millis, RecordId, RecordLimits, RunId, UserToken,
    check_vector_values,
};

/// Distance metric of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Cosine,
    Dot,
    L2,
}

/// How a collection's text becomes BM25 terms. Fixed when the collection is created.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TextAnalyzer {
    /// Lowercased words, no stop words, no stemming (collections from before analyzers).
    #[default]
    Standard,
    /// Lowercased words, English stop words dropped, Snowball stemming.
    English,
    /// Whitespace-separated tokens exactly as written.
    None,
}

impl TextAnalyzer {
    fn is_standard(&self) -> bool {
        *self == TextAnalyzer::Standard
    }
}

/// A vector space with a fixed dimension and metric, owned by one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Collection {
    pub name: CollectionName,
    pub dim: u32,
    pub metric: Metric,
    /// Milliseconds since the Unix epoch.
    #[schema(value_type = i64)]
    pub created_at: Millis,
    /// The model that embeds this collection's text, when it has one. Absent in collections
    /// stored before embedders existed, which decode as having none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<EmbedderRef>,
    /// How its text is analysed for BM25; collections stored before analyzers existed decode
    /// as `standard`, which scores exactly as they did.
    #[serde(default, skip_serializing_if = "TextAnalyzer::is_standard")]
    pub analyzer: TextAnalyzer,
    /// Confidence and recency defaults; absent in collections stored before they existed,
    /// which decode with none set (initial confidence 0.5, no recency decay).
    #[serde(flatten)]
    pub memory: MemoryDefaults,
}

/// A collection's defaults for memory intelligence (`docs/memory-intelligence.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct MemoryDefaults {
    /// The confidence of a new record that gives none, 0 to 1; 0.5 when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub initial_confidence: Option<f64>,
    /// The recency half-life of searches that name none, in seconds; absent: no recency
    /// decay unless a search asks for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0)]
    pub recency_half_life_secs: Option<f64>,
    /// `true`: each new record written to a `run_id` of this collection is linked from the
    /// run's previous record (relation `next`, weight 1), so recall can follow a session turn
    /// by turn. Absent: no automatic links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_runs: Option<bool>,
}

impl MemoryDefaults {
    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<(), RecordError> {
        if let Some(v) = self.initial_confidence {
            crate::confidence::check_confidence("initial_confidence", v)
                .map_err(|e| RecordError::BadConfidence(e.0))?;
        }
        if let Some(h) = self.recency_half_life_secs
            && !(h.is_finite() && h > 0.0)
        {
            return Err(RecordError::BadConfidence(format!(
                "recency_half_life_secs: {h} is not a positive number of seconds"
            )));
        }
        Ok(())
    }

    /// The confidence a new record of this collection starts with.
    pub fn initial(&self) -> Confidence {
        self.initial_confidence
            .map_or_else(Confidence::default, Confidence::initial)
    }
}

/// The identity of an embedding model: vectors are comparable only when both fields match,
/// so a collection never holds vectors of two models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedderRef {
    pub model_id: String,
    /// sha256 of the model's weights, hex.
    pub weights_hash: String,
}

/// Popoto-style confidence in a memory, updated by evidence. Given in a request, `value` is
/// required (a record that gives none starts at its collection's `initial_confidence`: an
/// object without one would quietly have meant 0.5) and the counters default to 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Confidence {
    /// 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub value: f64,
    // Counters up to 2^32 - 1: `int64` in the schema, so that a client generated from it
    // holds every value the server may send (its `int32` stops at half of that).
    #[serde(default)]
    #[schema(format = Int64, minimum = 0, maximum = 4294967295_u64)]
    pub evidence_count: u32,
    #[serde(default)]
    #[schema(format = Int64, minimum = 0, maximum = 4294967295_u64)]
    pub corroborations: u32,
    #[serde(default)]
    #[schema(format = Int64, minimum = 0, maximum = 4294967295_u64)]
    pub contradictions: u32,
}

impl Default for Confidence {
    /// A new memory is neither corroborated nor contradicted: even odds.
    fn default() -> Self {
        Confidence {
            value: 0.5,
            evidence_count: 0,
            corroborations: 0,
            contradictions: 0,
        }
    }
}

/// A stored memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record {
    pub id: RecordId,
    /// The collection the record lives in.
    pub modality: CollectionName,
    pub kind: Option<Kind>,
    pub content: Option<String>,
    pub vector: Option<Vec<f32>>,
    /// Principals who may read the record; empty means every principal of the tenant.
    /// Kept sorted and free of duplicates.
    pub user_tokens: Vec<UserToken>,
    pub memory_domain: Domain,
    pub run_id: Option<RunId>,
    pub memory_scope: Option<MemoryScope>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    #[schema(value_type = i64)]
    pub created_at: Millis,
    #[schema(value_type = i64)]
    pub updated_at: Millis,
    /// When the memory expires (TTL), in milliseconds since the Unix epoch.
    #[schema(value_type = Option<i64>)]
    pub expires_at: Option<Millis>,
    pub confidence: Confidence,
}

impl Record {
    /// Whether the record's TTL has passed at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// One record of a write. The domain comes from the request scope; `run_id`, `memory_scope`
/// and `user_tokens` fall back to the request scope when absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NewRecord {
    /// The client's own id, for idempotent upsert. Absent: the server assigns a UUIDv7. Not
    /// one of [`RESERVED_RECORD_IDS`].
    #[serde(deserialize_with = "writable_id")]
    pub id: Option<RecordId>,
    /// Collection name; `text` when absent.
    pub modality: Option<CollectionName>,
    pub kind: Option<Kind>,
    /// The record's text: not empty or whitespace only, control characters and invisible ones
    /// (zero-width, soft hyphen and the like) counted as whitespace (leave it out for a record
    /// without text).
    #[serde(deserialize_with = "crate::text::content")]
    pub content: Option<String>,
    pub vector: Option<Vec<f32>>,
    /// The model `vector` came from, e.g. `sentence-transformers/all-MiniLM-L6-v2`. Optional;
    /// when given, a collection that declares a different embedder refuses the record.
    pub vector_model: Option<String>,
    pub user_tokens: Option<Vec<UserToken>>,
    pub run_id: Option<RunId>,
    pub memory_scope: Option<MemoryScope>,
    /// Free-form JSON object. Top-level keys may not shadow record or scope fields; no key at
    /// any depth may be empty, start with `$` or contain `.` (filters use dotted paths).
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// When the record expires, in milliseconds since the Unix epoch: after the request's
    /// arrival (a past one, or one in seconds, is `400`) and at most 2^53.
    #[schema(value_type = Option<i64>, maximum = 9007199254740992.0)]
    pub expires_at: Option<Millis>,
    pub confidence: Option<Confidence>,
}

/// Changes to a record. Absent fields stay as they are; `kind`, `run_id`, `memory_scope` and
/// `expires_at` given as `null` are cleared; `metadata` is merged as an RFC 7396 JSON merge
/// patch (a `null` value removes the key; `"metadata": null` clears it to `{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
// Defaults field by field, not for the container: a container default would put each field's
// `null` default in the OpenAPI schema, which is not a value of the non-nullable fields.
#[serde(deny_unknown_fields)]
pub struct RecordPatch {
    /// `null` clears it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Kind>, nullable)]
    pub kind: Option<Option<Kind>>,
    /// The new text: not empty or whitespace only (control characters and invisible ones such as
    /// zero-width spaces count as whitespace).
    #[serde(default, deserialize_with = "crate::text::patch_content")]
    #[schema(nullable = false)]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    pub vector: Option<Vec<f32>>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    pub user_tokens: Option<Vec<UserToken>>,
    /// `null` clears it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<RunId>, nullable)]
    pub run_id: Option<Option<RunId>>,
    /// `null` clears it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<MemoryScope>, nullable)]
    pub memory_scope: Option<Option<MemoryScope>>,
    /// Moves the record to another memory domain of the tenant (the credential must be allowed
    /// to write there). The record keeps its id, metadata, confidence, links and timestamps;
    /// what adaptive reranking learned about it in the old domain is dropped.
    #[serde(
        default,
        deserialize_with = "target_domain",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(nullable = false)]
    pub move_to_domain: Option<Domain>,
    /// An RFC 7396 merge patch of the metadata: a `null` value removes the key, and
    /// `"metadata": null` removes them all (the metadata becomes `{}`).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Object>, nullable)]
    pub metadata: Option<Option<Map<String, Value>>>,
    /// In milliseconds since the Unix epoch, after the request's arrival (a past one is
    /// `400`) and at most 2^53; `null` clears it (the record no longer expires).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>, nullable, maximum = 9007199254740992.0)]
    pub expires_at: Option<Option<Millis>>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    pub confidence: Option<Confidence>,
}

/// Record ids a write may not give: no URL path could name the record afterwards. `.` and `..`
/// are dot segments, which HTTP clients resolve before sending; the others are the literal
/// segments of routes at `/v1/memories/{id}` (`GET /v1/memories/list` is the listing). The API
/// keeps this list equal to its router's. A record stored with one (before the check) stays
/// readable where it can be (a search, a listing, an export), and an import of its export keeps
/// it: imports are not requests, and an export must import.
pub const RESERVED_RECORD_IDS: &[&str] = &[".", "..", "count", "delete", "list"];

/// A write's `id`, refusing the [`RESERVED_RECORD_IDS`]. `null` reads as absent.
fn writable_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RecordId>, D::Error> {
    let id = Option::<RecordId>::deserialize(d)?;
    match &id {
        Some(id) if RESERVED_RECORD_IDS.contains(&id.as_str()) => {
            Err(serde::de::Error::custom(format!(
                "{:?} is reserved: no URL path could name a record of that id (give another id, \
                 or none for a server-assigned one)",
                id.as_str()
            )))
        }
        _ => Ok(id),
    }
}

/// `move_to_domain`, validated as a domain but named as itself in the error; `null` is
/// refused like the other fields a patch cannot clear.
fn target_domain<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Domain>, D::Error> {
    let s = Option::<String>::deserialize(d)?.ok_or_else(null_clears_nothing)?;
    Domain::parse_field("move_to_domain", s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A patch field that `null` cannot clear: given as `null`, it is refused rather than read as
/// absent, so a client that meant to clear it learns that nothing was changed. (An absent
/// field never reaches this: `#[serde(default)]` keeps it `None`.)
fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)?
        .map(Some)
        .ok_or_else(null_clears_nothing)
}

/// The refusal of a `null` for a patch field that cannot be cleared; the body's parser puts
/// the field's path before it.
pub(crate) fn null_clears_nothing<E: serde::de::Error>() -> E {
    E::custom(
        "null cannot clear this field; leave it out to keep its value (only kind, run_id, \
         memory_scope, expires_at and metadata can be cleared)",
    )
}

/// Tells a field given as `null` (`Some(None)`: clear it) from an absent one (`None`, through
/// `#[serde(default)]`: keep it).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Field names that metadata keys may not shadow: the record's own fields and the scope.
pub const RESERVED_FIELDS: &[&str] = &[
    "id",
    "tenant",
    "tenant_id",
    "modality",
    "collection",
    "kind",
    "content",
    "vector",
    "user_tokens",
    "user_match",
    "memory_domain",
    "domain",
    "run_id",
    "memory_scope",
    "metadata",
    "created_at",
    "updated_at",
    "expires_at",
    "confidence",
    "score",
];

/// A record (or patch) that cannot be stored as given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("metadata key {key:?} shadows the built-in field of the same name")]
    ShadowedField { key: String },
    /// `at`: the path of the object holding the key (`metadata`, `metadata.files`,
    /// `metadata.items[2]`), so that a key deep inside a document can be found.
    #[error(
        "metadata key {key:?} in {at} is not allowed: keys may not be empty, start with '$' or \
         contain '.' (filters name nested keys by dotted paths)"
    )]
    BadMetadataKey { key: String, at: String },
    #[error("metadata is {size} bytes as JSON; the limit is {max}")]
    MetadataTooLarge { size: usize, max: usize },
    #[error("metadata nests deeper than {max} levels")]
    MetadataTooDeep { max: usize },
    #[error("content is {size} bytes; the limit is {max}")]
    ContentTooLarge { size: usize, max: usize },
    /// Content with no text in it, checked here too for records that were not parsed from a
    /// request body (an import's lines): a body's parser refuses it first, with the same words.
    #[error(
        "is empty or whitespace only (control characters and invisible ones such as zero-width \
         spaces count as whitespace); leave content out for a record without text"
    )]
    BlankContent,
    #[error("{count} user tokens; the limit is {max}")]
    TooManyTokens { count: usize, max: usize },
    #[error("vector[{position}]: not a finite number")]
    NonFiniteVector { position: usize },
    /// One component alone is beyond [`crate::MAX_VECTOR_NORM`] (see `vector.rs` for why).
    #[error(
        "vector[{position}]: {value:e} is out of range; every component and the L2 norm of a \
         vector must be at most {max:e} in magnitude",
        max = crate::MAX_VECTOR_NORM
    )]
    VectorComponentTooLarge { position: usize, value: f32 },
    /// The euclidean norm is beyond [`crate::MAX_VECTOR_NORM`] (see `vector.rs` for why).
    #[error(
        "vector: its L2 norm {norm:e} is above {max:e}, the largest accepted, so that scores \
         stay finite",
        max = crate::MAX_VECTOR_NORM
    )]
    VectorNormTooLarge { norm: f64 },
    #[error("vector has {got} dimensions; collection {collection} has {expected}")]
    DimensionMismatch {
        collection: CollectionName,
        expected: u32,
        got: usize,
    },
    #[error("a zero vector has no direction; collection {collection} uses cosine")]
    ZeroVector { collection: CollectionName },
    #[error("a record needs a vector, content, or both")]
    Empty,
    #[error("vector_model is given without a vector")]
    VectorModelWithoutVector,
    #[error(
        "vector_model {got:?}: collection {collection} holds vectors of {expected:?} only; \
         send content without a vector to have the server embed it"
    )]
    VectorModelMismatch {
        collection: CollectionName,
        expected: String,
        got: String,
    },
    #[error("batch of {count} records; the limit is {max}")]
    BatchTooLarge { count: usize, max: usize },
    /// A batch of no records: nothing would be written, which is almost always a caller's
    /// mistake, and an answer of no results would read as success.
    #[error("records: the batch is empty; send 1 to {max} records")]
    EmptyBatch { max: usize },
    /// Two records of one batch with the same id: the later one would silently replace the
    /// earlier within the same write.
    #[error("{id} is also the id of records[{first}]; a batch writes each id once")]
    DuplicateId { id: RecordId, first: usize },
    /// A confidence (or another memory-intelligence setting) out of its range; the message
    /// names the field.
    #[error("{0}")]
    BadConfidence(String),
    /// A write's `expires_at` at or before the request's arrival: the record would be gone
    /// at once (`crate::expiry`).
    #[error("{}", crate::expiry::not_ahead_message(*at, *now))]
    ExpiryNotAhead { at: Millis, now: Millis },
    /// A write's `expires_at` past [`crate::expiry::MAX_RECORD_TIME`], which an import of the
    /// tenant's export would refuse.
    #[error("{}", crate::expiry::too_late_message(*at))]
    ExpiryTooLate { at: Millis },
}

/// Where a [`RecordError`]'s message names its field.
enum Field {
    Named(&'static str),
    /// The message begins with its own field path.
    InMessage,
    /// The error is about the record (or batch) as a whole.
    Whole,
}

impl RecordError {
    /// The message as one record's of a batch: it starts with the record's path and the field
    /// at fault (`records[5].metadata: ...`, `records[5].vector[7]: ...`), as a body's parse
    /// errors do.
    pub fn at_record(&self, index: usize) -> String {
        match self.field() {
            Field::Named(field) => format!("records[{index}].{field}: {self}"),
            Field::InMessage => format!("records[{index}].{self}"),
            Field::Whole => format!("records[{index}]: {self}"),
        }
    }

    /// The message as a single record's (or a patch's): it starts with the field at fault
    /// (`vector: ...`, `metadata: ...`), as a body's parse errors and a batch's do.
    pub fn in_body(&self) -> String {
        match self.field() {
            Field::Named(field) => format!("{field}: {self}"),
            Field::InMessage | Field::Whole => self.to_string(),
        }
    }

    fn field(&self) -> Field {
        use RecordError::*;
        match self {
            // These messages begin with their own field path already.
            NonFiniteVector { .. }
            | VectorComponentTooLarge { .. }
            | VectorNormTooLarge { .. }
            | BadConfidence(_)
            | ExpiryNotAhead { .. }
            | ExpiryTooLate { .. } => Field::InMessage,
            ShadowedField { .. }
            | BadMetadataKey { .. }
            | MetadataTooLarge { .. }
            | MetadataTooDeep { .. } => Field::Named("metadata"),
            ContentTooLarge { .. } | BlankContent => Field::Named("content"),
            TooManyTokens { .. } => Field::Named("user_tokens"),
            DimensionMismatch { .. } | ZeroVector { .. } => Field::Named("vector"),
            VectorModelWithoutVector | VectorModelMismatch { .. } => Field::Named("vector_model"),
            DuplicateId { .. } => Field::Named("id"),
            Empty | BatchTooLarge { .. } | EmptyBatch { .. } => Field::Whole,
        }
    }
}

impl NewRecord {
    /// Checks everything that does not depend on the collection (see [`check_vector`]).
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        if self.vector.is_none() && self.content.is_none() {
            return Err(RecordError::Empty);
        }
        if self.vector.is_none() && self.vector_model.is_some() {
            return Err(RecordError::VectorModelWithoutVector);
        }
        check_record_confidence(self.confidence.as_ref())?;
        check_common(
            self.content.as_deref(),
            self.vector.as_deref(),
            self.user_tokens.as_deref(),
            Some(&self.metadata),
            limits,
        )
    }
}

impl RecordPatch {
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        check_record_confidence(self.confidence.as_ref())?;
        check_common(
            self.content.as_deref(),
            self.vector.as_deref(),
            self.user_tokens.as_deref(),
            self.metadata.as_ref().and_then(Option::as_ref),
            limits,
        )
    }
}

/// A confidence given by the client must be a value in [0, 1], like every computed one, with
/// counters that can add up: every corroboration and contradiction is a piece of evidence
/// (a signal is one that is neither), so together they are at most `evidence_count`.
fn check_record_confidence(c: Option<&Confidence>) -> Result<(), RecordError> {
    let Some(c) = c else {
        return Ok(());
    };
    crate::confidence::check_confidence("confidence.value", c.value)
        .map_err(|e| RecordError::BadConfidence(e.0))?;
    if u64::from(c.corroborations) + u64::from(c.contradictions) > u64::from(c.evidence_count) {
        return Err(RecordError::BadConfidence(format!(
            "confidence: corroborations ({}) and contradictions ({}) exceed evidence_count ({}); \
             each is a piece of evidence",
            c.corroborations, c.contradictions, c.evidence_count
        )));
    }
    Ok(())
}

fn check_common(
    content: Option<&str>,
    vector: Option<&[f32]>,
    tokens: Option<&[UserToken]>,
    metadata: Option<&Map<String, Value>>,
    limits: &RecordLimits,
) -> Result<(), RecordError> {
    if content.is_some_and(crate::text::is_blank) {
        return Err(RecordError::BlankContent);
    }
    if let Some(c) = content
        && c.len() > limits.max_content_bytes
    {
        return Err(RecordError::ContentTooLarge {
            size: c.len(),
            max: limits.max_content_bytes,
        });
    }
    if let Some(v) = vector {
        check_vector_values(v)?;
    }
    if let Some(t) = tokens
        && t.len() > limits.max_user_tokens
    {
        return Err(RecordError::TooManyTokens {
            count: t.len(),
            max: limits.max_user_tokens,
        });
    }
    if let Some(m) = metadata {
        validate_metadata(m, limits)?;
    }
    Ok(())
}

/// Checks a metadata object: no shadowed or unaddressable keys, bounded size and depth.
pub fn validate_metadata(
    metadata: &Map<String, Value>,
    limits: &RecordLimits,
) -> Result<(), RecordError> {
    if let Some(key) = metadata
        .keys()
        .find(|k| RESERVED_FIELDS.contains(&k.as_str()))
    {
        return Err(RecordError::ShadowedField { key: key.clone() });
    }
    check_keys(metadata, "metadata", 1, limits.max_metadata_depth)?;
    let size = crate::json_len(metadata).unwrap_or(usize::MAX);
    if size > limits.max_metadata_bytes {
        return Err(RecordError::MetadataTooLarge {
            size,
            max: limits.max_metadata_bytes,
        });
    }
    Ok(())
}

fn check_keys(
    map: &Map<String, Value>,
    at: &str,
    depth: usize,
    max: usize,
) -> Result<(), RecordError> {
    if depth > max {
        return Err(RecordError::MetadataTooDeep { max });
    }
    for (key, value) in map {
        if key.is_empty() || key.starts_with('$') || key.contains('.') {
            return Err(RecordError::BadMetadataKey {
                key: key.clone(),
                at: at.to_owned(),
            });
        }
        if matches!(value, Value::Object(_) | Value::Array(_)) {
            check_value(value, &format!("{at}.{key}"), depth, max)?;
        }
    }
    Ok(())
}

fn check_value(value: &Value, at: &str, depth: usize, max: usize) -> Result<(), RecordError> {
    match value {
        Value::Object(m) => check_keys(m, at, depth + 1, max),
        Value::Array(items) => {
            if depth + 1 > max {
                return Err(RecordError::MetadataTooDeep { max });
            }
            items
                .iter()
                .enumerate()
                .filter(|(_, v)| matches!(v, Value::Object(_) | Value::Array(_)))
                .try_for_each(|(i, v)| check_value(v, &format!("{at}[{i}]"), depth + 1, max))
        }
        _ => Ok(()),
    }
}

/// Checks a vector against its collection.
pub fn check_vector(vector: &[f32], collection: &Collection) -> Result<(), RecordError> {
    if vector.len() != collection.dim as usize {
        return Err(RecordError::DimensionMismatch {
            collection: collection.name.clone(),
            expected: collection.dim,
            got: vector.len(),
        });
    }
    if collection.metric == Metric::Cosine && vector.iter().all(|x| *x == 0.0) {
        return Err(RecordError::ZeroVector {
            collection: collection.name.clone(),
        });
    }
    Ok(())
}

/// Applies an RFC 7396 merge patch to `target`.
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(p) => {
                let entry = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(t) = entry {
                    merge_patch(t, p);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn check(metadata: Value, expect: Result<(), RecordError>) {
        let r = NewRecord {
            content: Some("x".into()),
            metadata: meta(metadata),
            ..Default::default()
        };
        assert_eq!(r.validate(&RecordLimits::default()), expect);
    }

    #[test]
    fn a_confidences_counters_must_add_up() {
        let rec = |c: serde_json::Value| -> NewRecord {
            serde_json::from_value(json!({"content": "x", "confidence": c})).unwrap()
        };
        let bad = rec(
            json!({"value": 0.3, "evidence_count": 1, "corroborations": 5, "contradictions": 7}),
        );
        let err = bad
            .validate(&RecordLimits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("exceed evidence_count (1)"), "{err}");
        // Signals are evidence that is neither: fewer is fine, as is all of it.
        for ok in [
            json!({"value": 0.3, "evidence_count": 3, "corroborations": 1, "contradictions": 1}),
            json!({"value": 0.3, "evidence_count": 2, "corroborations": 1, "contradictions": 1}),
            json!({"value": 0.5}),
        ] {
            assert!(
                rec(ok.clone()).validate(&RecordLimits::default()).is_ok(),
                "{ok}"
            );
        }
    }

    /// Like every other body object, a confidence refuses a field it does not know, rather
    /// than dropping it unnoticed.
    #[test]
    fn a_confidence_refuses_unknown_fields() {
        let known: Confidence = serde_json::from_value(json!({"value": 0.7})).expect("known");
        assert_eq!(known.value, 0.7);
        let err = serde_json::from_value::<Confidence>(json!({"value": 0.5, "bogus": 1}))
            .expect_err("an unknown field");
        assert!(err.to_string().contains("bogus"), "{err}");
        let patch = serde_json::from_value::<RecordPatch>(json!({"confidence": {"valu": 0.5}}));
        assert!(patch.is_err(), "{patch:?}");
    }

    #[test]
    fn metadata_rules() {
        check(json!({"topic": "a", "n": {"deep": [1, 2]}}), Ok(()));
        check(
            json!({"user_tokens": ["u:x"]}),
            Err(RecordError::ShadowedField {
                key: "user_tokens".into(),
            }),
        );
        check(
            json!({"memory_domain": "x"}),
            Err(RecordError::ShadowedField {
                key: "memory_domain".into(),
            }),
        );
        check(
            json!({"tenant_id": "x"}),
            Err(RecordError::ShadowedField {
                key: "tenant_id".into(),
            }),
        );
        check(
            json!({"a": {"$gt": 1}}),
            Err(RecordError::BadMetadataKey {
                key: "$gt".into(),
                at: "metadata.a".into(),
            }),
        );
        check(
            json!({"a.b": 1}),
            Err(RecordError::BadMetadataKey {
                key: "a.b".into(),
                at: "metadata".into(),
            }),
        );
        check(
            json!({"files": [{"ok": 1}, {"report.pdf": 2}]}),
            Err(RecordError::BadMetadataKey {
                key: "report.pdf".into(),
                at: "metadata.files[1]".into(),
            }),
        );
        check(
            json!({"big": "x".repeat(20_000)}),
            Err(RecordError::MetadataTooLarge {
                size: 20_010,
                max: 16 * 1024,
            }),
        );
    }

    #[test]
    fn metadata_depth_is_bounded() {
        let mut v = json!(1);
        for _ in 0..20 {
            v = json!({ "n": v });
        }
        check(v, Err(RecordError::MetadataTooDeep { max: 16 }));
    }

    #[test]
    fn empty_and_non_finite_records_are_rejected() {
        let limits = RecordLimits::default();
        assert_eq!(
            NewRecord::default().validate(&limits),
            Err(RecordError::Empty)
        );
        let nan = NewRecord {
            vector: Some(vec![0.0, f32::NAN]),
            ..Default::default()
        };
        assert_eq!(
            nan.validate(&limits),
            Err(RecordError::NonFiniteVector { position: 1 })
        );
        let huge = RecordPatch {
            vector: Some(vec![1.0, -3e38]),
            ..Default::default()
        };
        assert_eq!(
            huge.validate(&limits),
            Err(RecordError::VectorComponentTooLarge {
                position: 1,
                value: -3e38
            })
        );
        let big = NewRecord {
            content: Some("x".repeat(70_000)),
            ..Default::default()
        };
        assert!(matches!(
            big.validate(&limits),
            Err(RecordError::ContentTooLarge { .. })
        ));
    }

    #[test]
    fn a_null_metadata_patch_is_told_from_an_absent_one() {
        let p: RecordPatch = serde_json::from_value(json!({"metadata": null})).unwrap();
        assert_eq!(p.metadata, Some(None));
        let p: RecordPatch = serde_json::from_value(json!({"content": "x"})).unwrap();
        assert_eq!(p.metadata, None);
        let p: RecordPatch = serde_json::from_value(json!({"metadata": {"a": null}})).unwrap();
        assert_eq!(
            p.metadata,
            Some(Some(json!({"a": null}).as_object().cloned().unwrap()))
        );
    }

    #[test]
    fn a_patch_refuses_null_for_a_field_it_cannot_clear() {
        for field in [
            "content",
            "vector",
            "user_tokens",
            "confidence",
            "move_to_domain",
        ] {
            let e = serde_json::from_value::<RecordPatch>(json!({ field: null })).unwrap_err();
            assert!(
                e.to_string().starts_with("null cannot clear"),
                "{field}: {e}"
            );
        }
        // The clearable ones still read `null` as "clear", and absence as "keep".
        let p: RecordPatch = serde_json::from_value(json!({"kind": null, "run_id": null})).unwrap();
        assert_eq!(
            (p.kind, p.run_id, p.content),
            (Some(None), Some(None), None)
        );
        let p: RecordPatch =
            serde_json::from_value(json!({"move_to_domain": "d2", "confidence": {"value": 0.5}}))
                .unwrap();
        assert_eq!(p.move_to_domain.map(|d| d.to_string()), Some("d2".into()));
    }

    #[test]
    fn blank_content_is_refused_where_it_is_parsed() {
        for blank in ["", "   ", "\n\t", "\u{200b}\u{200b}\u{200b}"] {
            let body = json!({ "content": blank });
            let e = serde_json::from_value::<NewRecord>(body.clone()).unwrap_err();
            assert!(e.to_string().starts_with("content: is empty"), "{e}");
            let e = serde_json::from_value::<RecordPatch>(body).unwrap_err();
            assert!(e.to_string().starts_with("content: is empty"), "{e}");
            // And by `validate`, which an import runs on every record it did not parse from a
            // request body: an import holds what a write may hold, no more.
            let imported = NewRecord {
                content: Some(blank.into()),
                vector: Some(vec![1.0]),
                ..Default::default()
            };
            let e = imported.validate(&RecordLimits::default()).unwrap_err();
            assert_eq!(e, RecordError::BlankContent);
            assert!(
                e.at_record(3).starts_with("records[3].content: is empty"),
                "{e}"
            );
        }
        // Absent or null content stays allowed: a record of a vector alone.
        let r: NewRecord =
            serde_json::from_value(json!({"content": null, "vector": [1.0]})).unwrap();
        assert_eq!(r.content, None);
        let r: NewRecord = serde_json::from_value(json!({"content": " x "})).unwrap();
        assert_eq!(r.content.as_deref(), Some(" x "));
        // A stored record is not a write: its blank content still decodes.
        let mut stored = serde_json::to_value(Record {
            id: RecordId::parse("r").unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: None,
            content: Some(String::new()),
            vector: None,
            user_tokens: vec![],
            memory_domain: Domain::parse("default").unwrap(),
            run_id: None,
            memory_scope: None,
            metadata: Map::new(),
            created_at: 1,
            updated_at: 1,
            expires_at: None,
            confidence: Confidence::default(),
        })
        .unwrap();
        assert_eq!(stored["content"], "");
        stored["content"] = json!("  ");
        let back: Record = serde_json::from_value(stored).unwrap();
        assert_eq!(back.content.as_deref(), Some("  "));
    }

    #[test]
    fn vector_checks_dimension_and_zero() {
        let c = Collection {
            name: CollectionName::parse("text").unwrap(),
            dim: 3,
            metric: Metric::Cosine,
            created_at: 0,
            embedder: None,
            analyzer: Default::default(),
            memory: Default::default(),
        };
        assert!(check_vector(&[1.0, 0.0, 0.0], &c).is_ok());
        assert!(matches!(
            check_vector(&[1.0, 0.0], &c),
            Err(RecordError::DimensionMismatch {
                expected: 3,
                got: 2,
                ..
            })
        ));
        assert!(matches!(
            check_vector(&[0.0, 0.0, 0.0], &c),
            Err(RecordError::ZeroVector { .. })
        ));
    }

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut t = meta(json!({"a": 1, "b": {"c": 2, "d": 3}}));
        merge_patch(&mut t, &meta(json!({"a": null, "b": {"c": 5}, "e": 6})));
        assert_eq!(Value::Object(t), json!({"b": {"c": 5, "d": 3}, "e": 6}));
    }
}
