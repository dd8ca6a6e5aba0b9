//! The JSON bodies of the API that are not engine or vocabulary types: response envelopes the
//! handlers return, and the scope fields a body may carry. Every type here derives its OpenAPI
//! schema, and the handlers serialise exactly these types, so the published document and the
//! answers cannot drift apart.

use std::collections::BTreeMap;

use serde::Serialize;
use strata_auth::KeyInfo;
use strata_engine::{
    AuditRow, IntegrityState, PutOutcome, TenantInfo, TenantLimits, TenantResidency, TenantStatus,
    TenantUsage,
};
use strata_types::{
    Collection, CollectionName, Domain, EmbedderRef, HitExplain, Include, MemoryDefaults,
    MemoryScope, Metric, Millis, RecordId, RunId, SearchMode, SearchRequest, SearchResponse,
    TenantId, TextAnalyzer, TokenSelector, UserMatch,
};
use utoipa::ToSchema;

/// Scope fields a body may carry (they may also come from the query string, and the domain
/// from `X-Strata-Domain`; sources that disagree are `400`). They only ever narrow what the
/// credential grants.
#[derive(ToSchema)]
#[allow(dead_code)] // Documents what `ScopeParts` reads; never built.
pub struct ScopeFields {
    /// Checked only: a tenant other than the credential's is `403 TENANT_MISMATCH`.
    tenant_id: Option<TenantId>,
    /// The domain; `default` when absent.
    memory_domain: Option<Domain>,
    /// Who is asking. Absent: the credential's bound principals, or none (then only records
    /// without tokens are visible).
    user_tokens: Option<TokenSelector>,
    /// `any` (default): a record is visible when it shares a token with the request; `all`:
    /// when the request holds every token of the record.
    user_match: Option<UserMatch>,
    run_id: Option<RunId>,
    memory_scope: Option<MemoryScope>,
}

/// The scope fields of a single-record write or a patch: there `user_tokens`, `run_id` and
/// `memory_scope` are the record's own fields (put them in the query string to scope the
/// request itself).
#[derive(ToSchema)]
#[allow(dead_code)] // Documents what `ScopeParts` reads; never built.
pub struct RecordScopeFields {
    /// Checked only: a tenant other than the credential's is `403 TENANT_MISMATCH`.
    tenant_id: Option<TenantId>,
    memory_domain: Option<Domain>,
    user_match: Option<UserMatch>,
}

/// The answer to a batch write: one outcome per record, in order.
#[derive(Serialize, ToSchema)]
pub struct BatchOutcome {
    pub results: Vec<PutOutcome>,
}

/// The answer to a write: one outcome for a single record, `{results}` for a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum WriteResponse {
    One(PutOutcome),
    Batch(BatchOutcome),
}

/// How many records a delete removed.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: u64,
}

/// How many visible records match.
#[derive(Serialize, ToSchema)]
pub struct Counted {
    pub count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Collections {
    pub collections: Vec<CollectionView>,
}

/// A collection as the API answers it. Unlike its stored form, which leaves out a `standard`
/// analyzer (collections stored before analyzers existed have none and analyse as
/// `standard`), it always names the analyzer in effect.
#[derive(Serialize, ToSchema)]
pub struct CollectionView {
    #[schema(value_type = String)]
    pub name: CollectionName,
    pub dim: u32,
    pub metric: Metric,
    /// Milliseconds since the Unix epoch.
    #[schema(value_type = i64)]
    pub created_at: Millis,
    /// The model that embeds this collection's text, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedder: Option<EmbedderRef>,
    /// How its text is analysed for keyword search: `standard`, `english` or `none`.
    pub analyzer: TextAnalyzer,
    #[serde(flatten)]
    pub memory: MemoryDefaults,
}

impl From<Collection> for CollectionView {
    fn from(c: Collection) -> Self {
        // Destructured whole, so a field added to `Collection` must be decided on here.
        let Collection {
            name,
            dim,
            metric,
            created_at,
            embedder,
            analyzer,
            memory,
        } = c;
        CollectionView {
            name,
            dim,
            metric,
            created_at,
            embedder,
            analyzer,
            memory,
        }
    }
}

/// How many records went with a deleted collection.
#[derive(Serialize, ToSchema)]
pub struct CollectionDeleted {
    pub deleted_records: u64,
}

/// A tenant's outgoing shares.
#[derive(Serialize, ToSchema)]
pub struct Shares {
    pub shares: Vec<strata_engine::Share>,
}

/// The live grants a tenant holds, and the shares offered to it by name.
#[derive(Serialize, ToSchema)]
pub struct IncomingShares {
    pub shares: Vec<strata_engine::IncomingShare>,
}

/// Every tenant with its parent and children.
#[derive(Serialize, ToSchema)]
pub struct TenantTree {
    pub tenants: Vec<strata_engine::TenantNode>,
}

#[derive(Serialize, ToSchema)]
pub struct Tenants {
    pub tenants: Vec<TenantInfo>,
}

/// The answer to a hard delete: the tenant is gone.
#[derive(Serialize, ToSchema)]
pub struct HardDeleted {
    pub id: TenantId,
    /// Always `true`: the erasure has committed, no request reads the tenant's data again.
    pub purged: bool,
    /// `done`: the data file was rewritten without the tenant's bytes (a read begun before the
    /// rewrite's swap finishes on the old, unlinked file, which holds them until that read
    /// ends). `pending`: the erasure of its rows or the rewrite failed (a full disk, an I/O
    /// error); it is owed and retried, and the tenant's rows, or their bytes, stay in the file
    /// (unreachable) until it runs (`erasure_pending` in
    /// `GET /v1/admin/stats` and `strata_erasure_pending` in `/metrics` go back to false/0
    /// then).
    pub erasure: strata_engine::Erasure,
}

/// The answer to a tenant delete: the soft-deleted tenant, or `{id, purged: true}`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum TenantDeleted {
    // Boxed: the tenant is far larger than the other answer.
    Soft(Box<TenantInfo>),
    Hard(HardDeleted),
}

/// Tenants a purge erased.
#[derive(Serialize, ToSchema)]
pub struct Purged {
    pub purged: Vec<TenantId>,
}

#[derive(Serialize, ToSchema)]
pub struct Keys {
    pub keys: Vec<KeyInfo>,
}

/// A new key: its info, and the secret, shown in this answer only.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The bearer token (`sk_…`). Only its hash is stored.
    pub key: String,
}

/// A rotated key's successor, with its secret, and the old key as it is now.
#[derive(Serialize, ToSchema)]
pub struct RotatedKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The new bearer token (`sk_…`). Only its hash is stored.
    pub key: String,
    /// The old key, with the expiry (or revocation) the rotation gave it.
    pub replaces: KeyInfo,
}

/// Audit rows, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditRows {
    pub rows: Vec<AuditRow>,
    /// Present when the page is full: pass it as `before` for the next page (older rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A health answer.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: &'static str,
}

/// A latency histogram in brief: count, sum, two quantiles, and the per-bucket counts (not
/// cumulative, the last one `+Inf`; bounds in `ServerStats::bucket_bounds_seconds`), so a
/// client can diff two samples for recent quantiles.
#[derive(Serialize, ToSchema)]
pub struct LatencySummary {
    pub count: u64,
    pub sum_seconds: f64,
    /// Upper bound of the bucket holding the median; absent before any observation.
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    pub buckets: Vec<u64>,
}

/// A tenant's own figures: usage against its limits, and its traffic since the server started.
#[derive(Serialize, ToSchema)]
pub struct TenantStats {
    pub tenant: TenantId,
    pub status: TenantStatus,
    /// Its isolation level (`shared`, `partition`, `dedicated`).
    pub isolation: strata_engine::IsolationLevel,
    pub limits: TenantLimits,
    pub usage: Option<TenantUsage>,
    /// Requests since the server started.
    pub requests: u64,
    /// Responses by status class (`2xx`, `4xx`, …).
    pub responses: BTreeMap<String, u64>,
    /// Refusals by error code (`RATE_LIMITED`, `CONCURRENCY_LIMITED`, `QUOTA_EXCEEDED`,
    /// `OVERLOADED`, `ANSWER_MEMORY_LIMITED`).
    pub refusals: BTreeMap<String, u64>,
    /// Bytes its answers hold now, until its clients read them (against
    /// `server.max_answer_bytes_per_tenant`).
    pub answer_bytes_held: u64,
    pub latency: LatencySummary,
    /// Time its jobs waited for a worker of the shared pool.
    pub queue_wait: LatencySummary,
    /// Its jobs waiting for a worker now.
    pub queue_depth: i64,
    /// CPU time the pool spent on its jobs.
    pub cpu_seconds: f64,
    /// Whether its indexes are in memory, what they cost, loads and evictions since start.
    pub residency: TenantResidency,
    /// Its integrity state (`normal`, `stress`, `critical`); the signals and transitions
    /// behind it are at `GET /v1/admin/tenants/{id}/integrity`.
    pub integrity: IntegrityState,
    /// Its adaptive reranking state per domain (`GET /v1/stats` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<Vec<strata_types::AdaptiveNamespaceStats>>,
}

/// The server's figures and every tenant's, for the operator dashboard.
#[derive(Serialize, ToSchema)]
pub struct ServerStats {
    pub uptime_seconds: f64,
    /// Upper bounds of the latency buckets; `LatencySummary::buckets` has one more (`+Inf`).
    pub bucket_bounds_seconds: Vec<f64>,
    pub pool_workers: usize,
    pub pool_busy_workers: i64,
    pub pool_busy_seconds: f64,
    pub open_connections: i64,
    pub resident_bytes: Option<u64>,
    /// Durable commits of the store, fsync included.
    pub commits: LatencySummary,
    /// Vacuums (rewrites of the main data file after erasures) since the server started, and
    /// whether one is owed: while `erasure_pending`, a purged tenant's rows, or their bytes,
    /// are still in the data file (no request reaches them).
    pub vacuums: strata_engine::VacuumFigures,
    /// The memory budget for loaded tenant indexes (0: none), and their estimated bytes now.
    pub residency_budget_bytes: u64,
    pub residency_resident_bytes: u64,
    /// Adaptive reranking namespaces loaded in memory, and their estimated bytes.
    pub adaptive_namespaces: u64,
    pub adaptive_bytes: u64,
    /// Registered tenants by integrity state (`normal`, `stress`, `critical`), every tenant
    /// counted, not only this page's.
    pub tenants_by_integrity: BTreeMap<String, u64>,
    /// This page's tenants left out because their stored profile does not decode, by their
    /// stored id.
    pub unreadable_tenants: Vec<String>,
    /// Registered tenants, every page together.
    pub tenant_count: u64,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<TenantId>,
    /// This page's tenants, in id order.
    pub tenants: Vec<TenantStats>,
}

/// The answer to a search: hits best first, each with what the search's `include` asked for.
#[derive(Serialize, ToSchema)]
pub struct SearchAnswer {
    pub hits: Vec<HitBody>,
    pub mode: SearchMode,
    /// `true` when every channel was answered by an exact scan rather than the graph.
    pub exact: bool,
}

/// One search hit: always its id and score; `content`, `metadata`, `vector` and `record`
/// only when `include` names them.
#[derive(Serialize, ToSchema)]
pub struct HitBody {
    pub id: RecordId,
    /// Higher is better: cosine similarity, dot product, negative L2 distance, BM25, or the
    /// fused score in hybrid mode.
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<HitExplain>,
    /// With `include: ["content"]`: the record's text, `null` when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub content: Option<Option<String>>,
    /// With `include: ["metadata"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// With `include: ["vector"]`: the vector as stored, `null` when the record has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<f32>>)]
    pub vector: Option<Option<Vec<f32>>>,
    /// With `include: ["record"]`: the whole record (its `vector` only if `vector` is
    /// included too: otherwise the key is absent, as in a `GET`, never a `null` that would
    /// say the record has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<crate::record_body::RecordBody>,
    /// On hits from another tenant's shared domain (`include_shared`): where it came from.
    /// Own hits carry none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<strata_types::HitSource>,
}

impl SearchAnswer {
    /// Keeps of each hit what `search` asked for; the rest is never serialised.
    pub fn project(response: SearchResponse, search: &SearchRequest) -> SearchAnswer {
        let [content, metadata, vector, whole] = [
            Include::Content,
            Include::Metadata,
            Include::Vector,
            Include::Record,
        ]
        .map(|f| search.includes(f));
        let hits = response
            .hits
            .into_iter()
            .map(|hit| {
                // The engine's hits carry their records exactly when `include` names a field of
                // them (`SearchRequest::needs_records`); without one there is nothing to
                // project beyond the id and score.
                let (c, m, v, record) = match hit.record {
                    Some(record) => {
                        let mut record = *record;
                        let (c, m, v) = if whole {
                            (
                                content.then(|| record.content.clone()),
                                metadata.then(|| record.metadata.clone()),
                                vector.then(|| record.vector.clone()),
                            )
                        } else {
                            (
                                content.then(|| record.content.take()),
                                metadata.then(|| std::mem::take(&mut record.metadata)),
                                vector.then(|| record.vector.take()),
                            )
                        };
                        let fields = crate::record_body::RecordFields::named(Some(if vector {
                            &[Include::Record, Include::Vector]
                        } else {
                            &[Include::Record]
                        }));
                        let record =
                            whole.then(|| crate::record_body::RecordBody::project(record, fields));
                        (c, m, v, record)
                    }
                    None => (None, None, None, None),
                };
                HitBody {
                    id: hit.id,
                    score: hit.score,
                    explain: hit.explain.map(|e| *e),
                    content: c,
                    metadata: m,
                    vector: v,
                    record,
                    source: hit.source.map(|s| *s),
                }
            })
            .collect();
        SearchAnswer {
            hits,
            mode: response.mode,
            exact: response.exact,
        }
    }
}

/// The answer to a recall: hits by activation, best first.
#[derive(Serialize, ToSchema)]
pub struct RecallAnswer {
    pub hits: Vec<RecallHitBody>,
    /// The seed search's mode, and whether it was exact.
    pub mode: SearchMode,
    pub exact: bool,
    /// The depth spread: the request's, capped by the tenant's `max_spreading_depth`.
    pub depth: u32,
    /// `true` when the request asked for more depth than the tenant allows.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub depth_capped: bool,
    /// `true` when spreading stopped early at the most records one recall looks at (100,000
    /// the request may see, 400,000 it may not): the hits are the best of what it reached.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub spread_capped: bool,
}

/// One recall hit: a search hit's fields (`score` is the activation), how it was reached, and
/// for seeds their search score.
#[derive(Serialize, ToSchema)]
pub struct RecallHitBody {
    #[serde(flatten)]
    pub hit: HitBody,
    pub activation: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_score: Option<f32>,
    /// `"seed"`, or the links followed from a seed to this record.
    pub via: strata_types::Via,
}

impl RecallAnswer {
    /// Keeps of each hit what the recall's `include` asked for, like a search.
    pub fn project(r: strata_types::RecallResponse, search: &SearchRequest) -> RecallAnswer {
        let mut rest = Vec::with_capacity(r.hits.len());
        let hits = r
            .hits
            .into_iter()
            .map(|h| {
                rest.push((h.activation, h.search_score, h.via));
                strata_types::SearchHit {
                    id: h.record.id.clone(),
                    record: Some(Box::new(h.record)),
                    score: h.activation,
                    explain: h.explain.map(Box::new),
                    // Recall stays inside the caller's tenant.
                    source: None,
                }
            })
            .collect();
        let projected = SearchAnswer::project(
            SearchResponse {
                hits,
                mode: r.mode,
                exact: r.exact,
            },
            search,
        );
        RecallAnswer {
            hits: projected
                .hits
                .into_iter()
                .zip(rest)
                .map(|(hit, (activation, search_score, via))| RecallHitBody {
                    hit,
                    activation,
                    search_score,
                    via,
                })
                .collect(),
            mode: r.mode,
            exact: r.exact,
            depth: r.depth,
            depth_capped: r.depth_capped,
            spread_capped: r.spread_capped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use strata_types::{CollectionName, Confidence, Record, SearchHit};

    fn stored(id: &str) -> Record {
        Record {
            id: RecordId::parse(id).unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: None,
            content: Some("tea".into()),
            vector: None,
            user_tokens: Vec::new(),
            memory_domain: Domain::default_domain(),
            run_id: None,
            memory_scope: None,
            metadata: serde_json::Map::new(),
            created_at: 1,
            updated_at: 1,
            expires_at: None,
            confidence: Confidence::initial(0.5),
        }
    }

    /// What the engine says of a recall's depth and reach is what the client reads.
    #[test]
    fn a_recall_answer_says_whether_its_spreading_was_capped() {
        let recall = |depth_capped, spread_capped| {
            let r = strata_types::RecallResponse {
                hits: Vec::new(),
                mode: SearchMode::Vector,
                exact: true,
                depth: 2,
                depth_capped,
                spread_capped,
            };
            serde_json::to_value(RecallAnswer::project(r, &SearchRequest::default())).unwrap()
        };
        let capped = recall(true, true);
        assert_eq!(
            (&capped["depth_capped"], &capped["spread_capped"]),
            (&json!(true), &json!(true))
        );
        let whole = recall(false, false);
        assert!(
            whole.get("spread_capped").is_none() && whole.get("depth_capped").is_none(),
            "{whole}"
        );
    }

    fn answer(record: Option<Record>, include: Option<Vec<Include>>) -> serde_json::Value {
        let hit = SearchHit {
            id: RecordId::parse("r1").unwrap(),
            record: record.map(Box::new),
            score: 0.5,
            explain: None,
            source: None,
        };
        let search = SearchRequest {
            include,
            ..SearchRequest::default()
        };
        let response = SearchResponse {
            hits: vec![hit],
            mode: SearchMode::Vector,
            exact: false,
        };
        serde_json::to_value(SearchAnswer::project(response, &search)).unwrap()
    }

    #[test]
    fn a_hit_without_its_record_answers_its_id_and_score() {
        assert_eq!(
            answer(None, Some(vec![])),
            json!({"hits": [{"id": "r1", "score": 0.5}], "mode": "vector", "exact": false})
        );
    }

    #[test]
    fn a_hit_with_its_record_answers_what_include_names() {
        assert_eq!(
            answer(Some(stored("r1")), None)["hits"][0],
            json!({"id": "r1", "score": 0.5, "content": "tea", "metadata": {}})
        );
        let whole = answer(Some(stored("r1")), Some(vec![Include::Record]));
        assert_eq!(whole["hits"][0]["record"]["content"], "tea");
        assert!(whole["hits"][0].get("content").is_none());
        // The vector not asked for is absent, as in a GET: a `null` would say it has none.
        assert!(
            whole["hits"][0]["record"].get("vector").is_none(),
            "{whole}"
        );
        let with_vector = answer(
            Some(stored("r1")),
            Some(vec![Include::Record, Include::Vector]),
        );
        assert!(
            with_vector["hits"][0]["record"].get("vector").is_some(),
            "{with_vector}"
        );
    }
}
