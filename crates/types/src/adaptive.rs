//! Adaptive reranking vocabulary: the `rerank` option of a search, its weights, its `explain`
//! detail, and the feedback that trains it (`POST /v1/feedback`).

use serde::{Deserialize, Serialize};

use crate::{CollectionName, RecordId};

/// How a search re-ranks its candidates after retrieval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Rerank {
    /// Re-score a pool of visible candidates with the (tenant, domain)'s pheromones and the
    /// narrative vector of the caller's own principal there (`docs/adaptive-reranking.md`).
    Adaptive,
}

/// The weights of adaptive reranking: `score = base · b + narrative · n + pheromone · p`, each
/// channel in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RerankWeights {
    /// The retrieval score, min-max normalised over the candidate pool.
    #[schema(default = 1.0, minimum = 0.0, maximum = 10.0)]
    pub base: f32,
    /// Cosine similarity (clamped to [0, 1]) of the record's vector to the narrative vector.
    #[schema(default = 0.15, minimum = 0.0, maximum = 10.0)]
    pub narrative: f32,
    /// The record's pheromone strength `s`, as `s / (1 + s)`.
    #[schema(default = 0.3, minimum = 0.0, maximum = 10.0)]
    pub pheromone: f32,
}

impl Default for RerankWeights {
    fn default() -> Self {
        RerankWeights {
            base: 1.0,
            narrative: 0.15,
            pheromone: 0.3,
        }
    }
}

impl RerankWeights {
    /// Each weight must be finite and within [0, 10]; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        for (name, w) in [
            ("base", self.base),
            ("narrative", self.narrative),
            ("pheromone", self.pheromone),
        ] {
            if !w.is_finite() || !(0.0..=10.0).contains(&w) {
                return Err(format!("rerank_weights.{name}: must be 0 to 10"));
            }
        }
        // Every hit would score 0 and the order would say nothing.
        if self.base == 0.0 && self.narrative == 0.0 && self.pheromone == 0.0 {
            return Err("rerank_weights: at least one weight must be above 0".into());
        }
        Ok(())
    }
}

/// Per-channel detail of adaptive reranking for one hit, under `explain`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AdaptiveExplain {
    /// The hit's score before reranking, and its rank (1-based) in the candidate pool.
    pub base_score: f32,
    pub base_rank: usize,
    /// Weighted contributions; the hit's `score` is their sum.
    pub base: f32,
    pub narrative: f32,
    pub pheromone: f32,
}

/// Feedback from an agent: which records it used, and which it was shown.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackRequest {
    /// Records the agent used: their pheromones are reinforced (at most 1,000).
    #[schema(max_items = 1000)]
    pub ids: Vec<RecordId>,
    /// Records the agent was shown; those not in `ids` lose a little pheromone (exposure)
    /// (at most 1,000).
    #[schema(max_items = 1000)]
    pub shown: Vec<RecordId>,
    /// The context the feedback was given in, moving the collection's narrative vector of the
    /// caller's principal (its user tokens after binding), which only that principal's searches
    /// read: a vector, or a query that the server embeds (when it runs an embedder for the
    /// collection).
    pub vector: Option<Vec<f32>>,
    /// Not empty or whitespace only (a blank context would move the narrative towards the
    /// vector every blank text gets), at most 4096 bytes of UTF-8.
    #[serde(deserialize_with = "crate::text::feedback_query")]
    #[schema(max_length = 4096)]
    pub query: Option<String>,
    /// The collection whose narrative the context moves; `text` when absent.
    pub modality: Option<CollectionName>,
}

/// The answer to feedback. It says nothing about which ids exist: ids the caller cannot see
/// are ignored exactly like missing ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedbackAnswer {
    /// The namespace the feedback went to.
    pub memory_domain: crate::Domain,
    /// Whether the feedback carried a context that moved the narrative vector.
    pub narrative_updated: bool,
}

/// Adaptive state held for one (tenant, domain) namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdaptiveNamespaceStats {
    pub memory_domain: crate::Domain,
    /// Narrative vectors (one per principal and collection), and records with a pheromone.
    pub narratives: u64,
    pub pheromones: u64,
    /// Estimated bytes the namespace takes in memory when loaded.
    pub bytes: u64,
    /// Whether it is loaded now (it is reloaded from storage on next use otherwise).
    pub loaded: bool,
}
