//! Search requests and responses. Scope fields travel separately, in a
//! [`crate::RequestScope`].

use serde::{Deserialize, Serialize};

use crate::{CollectionName, Filter, HitSource, Record, RecordId, SharedSelector};

/// Which channels a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Vector,
    Text,
    Hybrid,
}

/// How hybrid search fuses the vector and text rankings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(
    tag = "method",
    rename_all = "snake_case",
    deny_unknown_fields,
    try_from = "FusionWire"
)]
pub enum Fusion {
    /// Reciprocal rank fusion: `Σ 1 / (k + rank)`.
    Rrf {
        #[serde(default = "default_rrf_k")]
        k: u32,
    },
    /// `alpha · vector + (1 − alpha) · text`, each channel in [0, 1] first. On a `cosine`
    /// collection the scale is absolute: the vector part is the cosine similarity clamped to
    /// [0, 1] and the text part BM25 saturated as `bm25 / (bm25 + 4)`, so a score says how well
    /// a record matches and `min_score` can drop weak matches. On `dot` and `l2` collections,
    /// whose vector scores have no scale, each channel is min-max normalised over its
    /// candidates: the scores rank one search's hits and do not compare across searches.
    Weighted {
        #[serde(default = "default_alpha")]
        #[schema(default = 0.7)]
        alpha: f32,
    },
}

fn default_rrf_k() -> u32 {
    60
}

/// A [`Fusion`] as it arrives: a plain object, so that an error in one of its fields names
/// that field (`fusion.k: -1 is negative …`). An internally tagged enum reads its fields
/// through a buffer that loses their names, and the error said only `fusion`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FusionWire {
    method: FusionMethod,
    k: Option<u32>,
    alpha: Option<f32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum FusionMethod {
    Rrf,
    Weighted,
}

impl TryFrom<FusionWire> for Fusion {
    type Error = &'static str;

    fn try_from(w: FusionWire) -> Result<Self, Self::Error> {
        match (w.method, w.k, w.alpha) {
            (FusionMethod::Rrf, k, None) => Ok(Fusion::Rrf {
                k: k.unwrap_or_else(default_rrf_k),
            }),
            (FusionMethod::Weighted, None, alpha) => Ok(Fusion::Weighted {
                alpha: alpha.unwrap_or_else(default_alpha),
            }),
            (FusionMethod::Rrf, _, Some(_)) => {
                Err("`alpha` is for method \"weighted\"; method \"rrf\" takes `k`")
            }
            (FusionMethod::Weighted, Some(_), _) => {
                Err("`k` is for method \"rrf\"; method \"weighted\" takes `alpha`")
            }
        }
    }
}

/// The vector channel's weight: on the conversational-memory recall set
/// (`bench/text/recall_set.json`, figures in `docs/benchmarks.md`) recall@5 rises with alpha up
/// to 0.7 and is flat beyond it, so 0.7 keeps the most keyword weight that costs nothing there.
fn default_alpha() -> f32 {
    0.7
}

/// Weighted normalised fusion at alpha 0.7: on the recall set it beat RRF (k = 60) by 0.07–0.20
/// recall@5, and was within 0.02 of it at recall@10 (`docs/benchmarks.md`).
impl Default for Fusion {
    fn default() -> Self {
        Fusion::Weighted {
            alpha: default_alpha(),
        }
    }
}

/// What a search hit carries besides its id and score, which it always carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Include {
    /// The record's text (`null` when it has none).
    Content,
    /// The record's metadata object.
    Metadata,
    /// The stored vector (`null` when the record has none).
    Vector,
    /// The whole record: scope fields, timestamps, confidence and the rest (its `vector` only
    /// when `vector` is included too).
    Record,
}

impl Include {
    /// Whether a hit carrying this field needs its stored record. Every field does today; a
    /// new one (say, a resident field) must decide here.
    fn is_stored(self) -> bool {
        match self {
            Include::Content | Include::Metadata | Include::Vector | Include::Record => true,
        }
    }

    const ALL: [(&'static str, Include); 4] = [
        ("content", Include::Content),
        ("metadata", Include::Metadata),
        ("vector", Include::Vector),
        ("record", Include::Record),
    ];
}

/// A name that is none of [`Include`]'s; its message names the ones there are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown field `{0}`; expected content, metadata, vector or record")]
pub struct UnknownInclude(pub String);

impl std::str::FromStr for Include {
    type Err = UnknownInclude;

    /// One name as JSON bodies and query strings spell it (`content`, `metadata`, `vector`,
    /// `record`).
    fn from_str(name: &str) -> Result<Include, UnknownInclude> {
        Include::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, i)| *i)
            .ok_or_else(|| UnknownInclude(name.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Include {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `include`, with errors that name it.
fn include_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Include>>, D::Error> {
    Option::<Vec<Include>>::deserialize(d)
        .map_err(|e| serde::de::Error::custom(format!("include: {e}")))
}

/// What hits carry when a search names no `include`: the text and metadata an agent puts into
/// its prompt, without the vector and the bookkeeping fields of the whole record.
pub const DEFAULT_INCLUDE: &[Include] = &[Include::Content, Include::Metadata];

/// The largest `k` a search may ask for.
pub const MAX_K: usize = 1000;

/// `k` as a request gives it, refused out of range where it is parsed: the server reserves an
/// answer's memory by `k` before it searches, so a `k` it would refuse must not first be
/// counted against the tenant's budget (and answered `429` to a client that then retries it).
fn k_in_range<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let k = u64::deserialize(d)?;
    match usize::try_from(k) {
        Ok(k) if (1..=MAX_K).contains(&k) => Ok(k),
        _ => Err(serde::de::Error::custom(format!("must be 1 to {MAX_K}"))),
    }
}

/// A search's `filter`, `None` when it narrows nothing (see [`Filter::matches_everything`]).
fn narrowing_filter<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Filter>, D::Error> {
    Ok(Option::<Filter>::deserialize(d)?.filter(|f| !f.matches_everything()))
}

/// A search. At least one of `vector` and `query` must be given.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SearchRequest {
    pub vector: Option<Vec<f32>>,
    /// Words to search for: not empty or whitespace only, at most 4096 bytes of UTF-8.
    #[serde(deserialize_with = "crate::text::query")]
    #[schema(max_length = 4096)]
    pub query: Option<String>,
    /// How many hits, 1 to 1000; 10 when absent.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "k_in_range")]
    pub k: usize,
    /// The collection to search; `text` when absent.
    pub modality: Option<CollectionName>,
    /// Read as absent when it matches every record by its shape alone (`{}`,
    /// `{"$and": []}`): such a filter narrows nothing, and a search without one takes the
    /// paths that read nothing stored.
    #[schema(default = json!(null))]
    #[serde(deserialize_with = "narrowing_filter")]
    pub filter: Option<Filter>,
    /// Hits scoring below this are dropped (before confidence and recency apply). The score is
    /// the channel's own in `vector` (cosine, dot product, negative distance) and `text` (BM25)
    /// mode; in `hybrid` mode with weighted fusion on a `cosine` collection it is absolute, in
    /// [0, 1], so a threshold can tell a weak best match from a relevant one; with `rrf`, or on
    /// a `dot` or `l2` collection, hybrid scores are relative to the search (see `fusion`).
    pub min_score: Option<f32>,
    /// Absent: `hybrid` when both `vector` and `query` are given, otherwise the one given.
    pub mode: Option<SearchMode>,
    /// How `hybrid` fuses its channels; weighted fusion with alpha 0.7 when absent. Its scores
    /// are absolute on `cosine` collections (the scale is in `Fusion::Weighted`); `rrf` scores
    /// are sums of `1 / (k + rank)`, ranks only.
    #[schema(default = json!({"method": "weighted", "alpha": 0.7}))]
    pub fusion: Fusion,
    /// Return per-channel scores with each hit.
    pub explain: bool,
    /// HNSW beam width for this search, 1 to 4096; larger is slower and more exact. Without
    /// it, the graph's default beam (calibrated per graph, 64 to 1024). While the tenant is in
    /// integrity `stress` or `critical`, an `ef` above 256 is refused and the default beam is
    /// capped at 256.
    #[schema(minimum = 1, maximum = 4096)]
    pub ef: Option<usize>,
    /// What each hit carries besides `id` and `score`; `["content", "metadata"]` when absent,
    /// `[]` for ids and scores only (the cheapest: no record is read from storage unless the
    /// filter needs it).
    #[schema(default = json!(["content", "metadata"]))]
    #[serde(deserialize_with = "include_list")]
    pub include: Option<Vec<Include>>,
    /// Weight of the records' confidence in the ranking, 0 to 1 (`docs/memory-intelligence.md`):
    /// `score = ((1 − w) · normalised relevance + w · confidence) · recency`.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub confidence_weight: Option<f32>,
    /// Recency decay: a record's score is multiplied by `0.5^(age / half-life)`, its age
    /// counted from `created_at`, in seconds. Absent: the collection's default, if any.
    #[schema(exclusive_minimum = 0.0)]
    pub recency_half_life_secs: Option<f64>,
    /// Re-rank the candidates with the (tenant, domain)'s adaptive state (its pheromones, and
    /// the narrative of the caller's own principal there); none when absent.
    pub rerank: Option<crate::Rerank>,
    /// Weights of `rerank: "adaptive"`; `{"base": 1, "narrative": 0.15, "pheromone": 0.3}`
    /// when absent.
    pub rerank_weights: Option<crate::RerankWeights>,
    /// Granted shared domains of other tenants to search too: `"all"`, or a list of share ids
    /// and `"owner/domain"` strings. Absent: the caller's own records only.
    #[schema(schema_with = crate::shared::include_shared_schema)]
    pub include_shared: Option<SharedSelector>,
}

impl SearchRequest {
    /// Whether hits carry `field`.
    pub fn includes(&self, field: Include) -> bool {
        self.include
            .as_deref()
            .unwrap_or(DEFAULT_INCLUDE)
            .contains(&field)
    }

    /// Whether hits carry their stored records: `include` names any of `content`,
    /// `metadata`, `vector` and `record`. Without them a hit is its id and score
    /// ([`SearchHit::record`] is `None`).
    pub fn needs_records(&self) -> bool {
        self.include
            .as_deref()
            .unwrap_or(DEFAULT_INCLUDE)
            .iter()
            .any(|f| f.is_stored())
    }
}

impl Default for SearchRequest {
    fn default() -> Self {
        SearchRequest {
            vector: None,
            query: None,
            k: 10,
            modality: None,
            filter: None,
            min_score: None,
            confidence_weight: None,
            recency_half_life_secs: None,
            mode: None,
            fusion: Fusion::default(),
            explain: false,
            ef: None,
            include: None,
            rerank: None,
            rerank_weights: None,
            include_shared: None,
        }
    }
}

/// Per-channel detail of one hit, returned with `explain`. The channel scores are the
/// channels' own (cosine, dot product or negative distance; BM25), before fusion: a hybrid
/// hit's score follows from them and its ranks by the rules of its `fusion`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HitExplain {
    /// With `confidence_weight` or recency: the score before them (the channel's or the
    /// fused one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_score: Option<f32>,
    /// With `confidence_weight`: the record's confidence as it entered the score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// With recency: `0.5^(age / half-life)` (never below 2^-126), the factor the score was
    /// multiplied by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recency_factor: Option<f32>,
    /// The vector channel's own score (cosine, dot product or negative distance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_score: Option<f32>,
    /// The rank among the vector channel's candidates; absent with a score when the record
    /// was only the text channel's candidate and its vector was scored for the fusion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<usize>,
    /// The text channel's BM25 score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_score: Option<f32>,
    /// The rank among the text channel's candidates; absent with a score when the record was
    /// only the vector channel's candidate and its text was scored for the fusion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_rank: Option<usize>,
    /// With `rerank: "adaptive"`: base, narrative and pheromone contributions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<crate::AdaptiveExplain>,
}

/// One result: its id and score always; the stored record only when the search's `include`
/// names one of `content`, `metadata`, `vector` or `record`.
///
/// A search with `include: []` answers ids and scores, as the bare index does, so its hits
/// carry no record: naming each hit's scope fields and writing a whole `Record` (416 bytes)
/// per hit was about 5 % of a 128-d `ef = 8` search's CPU (docs/benchmarks.md, issue 15).
/// The record, the explanation and the source are boxed, so that a hit without them is small
/// to move (48 bytes, against 416 with a record inline).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    /// The record's id (the same as `record.id` when the record is there).
    #[schema(value_type = String)]
    pub id: RecordId,
    /// The stored record, read from the search's storage snapshot and checked on itself once
    /// more, when the search's `include` names any of `content`, `metadata`, `vector` and
    /// `record` ([`SearchRequest::needs_records`]); its vector only when `vector` is named.
    /// `None` exactly when it names none of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<Box<Record>>,
    /// Higher is better: cosine similarity, dot product, negative L2 distance, BM25, or the
    /// fused score in hybrid mode.
    pub score: f32,
    /// With `explain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<HitExplain>)]
    pub explain: Option<Box<HitExplain>>,
    /// Set on hits from a granted shared domain of another tenant; own hits carry none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<HitSource>)]
    pub source: Option<Box<HitSource>>,
}

/// The results of a search, best first.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    pub mode: SearchMode,
    /// `true` when every channel was answered by an exact scan rather than the graph.
    pub exact: bool,
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Filter::parse(&v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_include(include: Option<Vec<Include>>) -> SearchRequest {
        SearchRequest {
            include,
            ..SearchRequest::default()
        }
    }

    #[test]
    fn a_filter_that_narrows_nothing_reads_as_none() {
        let read = |f: serde_json::Value| {
            serde_json::from_value::<SearchRequest>(serde_json::json!({"query": "x", "filter": f}))
                .unwrap()
                .filter
        };
        for f in [
            serde_json::json!({}),
            serde_json::json!({"$and": []}),
            serde_json::json!(null),
        ] {
            assert_eq!(read(f.clone()), None, "{f}");
        }
        assert!(read(serde_json::json!({"kind": "note"})).is_some());
        assert!(read(serde_json::json!({"$and": [{}, {"kind": "note"}]})).is_some());
    }

    #[test]
    fn k_out_of_range_is_refused_as_it_is_parsed() {
        let read = |v: serde_json::Value| serde_json::from_value::<SearchRequest>(v);
        assert_eq!(read(serde_json::json!({"query": "x"})).unwrap().k, 10);
        for k in [1, 1000] {
            assert_eq!(
                read(serde_json::json!({"query": "x", "k": k})).unwrap().k,
                k
            );
        }
        for k in [
            serde_json::json!(0),
            serde_json::json!(1001),
            serde_json::json!(100_000_000_000u64),
        ] {
            let e = read(serde_json::json!({"query": "x", "k": k})).unwrap_err();
            assert!(e.to_string().contains("must be 1 to 1000"), "{e}");
        }
        assert!(read(serde_json::json!({"query": "x", "k": -1})).is_err());
    }

    #[test]
    fn a_fusion_reads_as_it_is_written_with_defaults_for_what_is_left_out() {
        let read = |v: serde_json::Value| serde_json::from_value::<Fusion>(v);
        for f in [Fusion::Rrf { k: 7 }, Fusion::Weighted { alpha: 0.25 }] {
            assert_eq!(read(serde_json::to_value(f).unwrap()).unwrap(), f);
        }
        let rrf = serde_json::json!({"method": "rrf"});
        assert_eq!(read(rrf).unwrap(), Fusion::Rrf { k: 60 });
        let weighted = serde_json::json!({"method": "weighted"});
        assert_eq!(read(weighted).unwrap(), Fusion::default());
        for wrong in [
            serde_json::json!({"method": "rrf", "alpha": 0.5}),
            serde_json::json!({"method": "weighted", "k": 3}),
            serde_json::json!({"k": 3}),
            serde_json::json!({"method": "rrf", "extra": 1}),
        ] {
            assert!(read(wrong.clone()).is_err(), "{wrong}");
        }
    }

    #[test]
    fn hits_carry_records_unless_include_is_empty() {
        assert!(with_include(None).needs_records(), "the default include");
        assert!(!with_include(Some(vec![])).needs_records());
        for field in [
            Include::Content,
            Include::Metadata,
            Include::Vector,
            Include::Record,
        ] {
            assert!(with_include(Some(vec![field])).needs_records(), "{field:?}");
        }
    }

    #[test]
    fn include_names_parse_and_an_unknown_one_names_the_known_ones() {
        for (name, field) in Include::ALL {
            assert_eq!(name.parse::<Include>(), Ok(field));
        }
        let e = "vectors".parse::<Include>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown field `vectors`; expected content, metadata, vector or record"
        );
        // Names are exact: no case folding, no blanks trimmed.
        assert!("Vector".parse::<Include>().is_err());
        assert!(" vector".parse::<Include>().is_err());
    }

    #[test]
    fn a_blank_query_is_refused() {
        for blank in ["", "  ", "\n", "\u{feff}\u{200b}"] {
            let e = serde_json::from_value::<SearchRequest>(serde_json::json!({ "query": blank }))
                .unwrap_err();
            assert!(e.to_string().starts_with("query: is empty"), "{e}");
        }
        let s: SearchRequest =
            serde_json::from_value(serde_json::json!({"query": "tea", "k": 3})).unwrap();
        assert_eq!(s.query.as_deref(), Some("tea"));
        let s: SearchRequest =
            serde_json::from_value(serde_json::json!({"vector": [1.0]})).unwrap();
        assert_eq!(s.query, None);
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_hit_without_a_record_is_small() {
        // Moved into the response once per hit; the record inline made it 416 bytes.
        assert_eq!(std::mem::size_of::<SearchHit>(), 48);
    }

    #[test]
    fn a_hit_without_a_record_serialises_as_its_id_and_score() {
        let hit = SearchHit {
            id: RecordId::parse("r1").unwrap(),
            record: None,
            score: 0.5,
            explain: None,
            source: None,
        };
        assert_eq!(
            serde_json::to_value(&hit).unwrap(),
            serde_json::json!({"id": "r1", "score": 0.5})
        );
    }
}
