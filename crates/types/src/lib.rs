//! Strata's vocabulary: validated names, the request scope, the record model and the filter
//! language.
//!
//! Every value that crosses the edge of the server is parsed into one of these types exactly
//! once; code behind the edge can then trust it. This crate does no I/O.

mod adaptive;
mod confidence;
mod expiry;
mod filter;
mod json_len;
mod limits;
mod link;
mod name;
mod number;
mod recall;
mod record;
mod schema;
mod scope;
mod search;
mod shared;
mod text;
mod vector;

pub use adaptive::{
    AdaptiveExplain, AdaptiveNamespaceStats, FeedbackAnswer, FeedbackRequest, Rerank, RerankWeights,
};
pub use confidence::{Evidence, EvidenceError, EvidenceRequest, PRIOR_STRENGTH, check_confidence};
pub use expiry::{MAX_RECORD_TIME, check_expiry};
pub use filter::{FieldRef, Filter, FilterError, MAX_FILTER_VALUES, ValueSet};
pub use json_len::json_len;
pub use limits::RecordLimits;
pub use link::{Link, LinkError, LinkRef, NewLink, related};
pub use name::{
    BackupName, CollectionName, Domain, InvalidName, Kind, MemoryScope, RecordId, Relation, RunId,
    TenantId, UserToken,
};
pub use number::Num;
pub use recall::{
    DEFAULT_MAX_SPREADING_DEPTH, MAX_RECALL_DEPTH, PathStep, RECALL_KEYS, RecallHit, RecallParams,
    RecallResponse, SeedMark, Via,
};
pub use record::{
    Collection, Confidence, EmbedderRef, MemoryDefaults, Metric, NewRecord, RESERVED_FIELDS,
    RESERVED_RECORD_IDS, Record, RecordError, RecordPatch, TextAnalyzer, check_vector, merge_patch,
    validate_metadata,
};
pub use scope::{RequestScope, TokenSelector, UserMatch};
pub use search::{
    DEFAULT_INCLUDE, Fusion, HitExplain, Include, MAX_K, SearchHit, SearchMode, SearchRequest,
    SearchResponse, UnknownInclude,
};
pub use shared::{HitSource, MAX_SHARED_SELECTORS, SharedRef, SharedSelector};
pub use text::forges_text;
pub use vector::{MAX_VECTOR_NORM, check_vector_values, squared_norm};

/// Milliseconds since the Unix epoch, the one time unit of the data model.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
