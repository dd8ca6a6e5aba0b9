//! `recall`: a search whose hits seed spreading activation over links
//! (`docs/memory-intelligence.md` has the rule and its defaults).

use serde::{Deserialize, Serialize};

use crate::{HitExplain, Record, RecordId, Relation, SearchMode};

/// The deepest any recall may spread, whatever a tenant's `max_spreading_depth` says.
pub const MAX_RECALL_DEPTH: u32 = 10;
/// The depth cap of a tenant whose `max_spreading_depth` is not set.
pub const DEFAULT_MAX_SPREADING_DEPTH: u32 = 3;

/// The spreading part of a recall body (the rest of it is a search).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RecallParams {
    /// Hops to spread, 0 to 10; the tenant's `max_spreading_depth` (3 unless the operator
    /// set it) when absent, and never more than it.
    #[schema(minimum = 0, maximum = 10)]
    pub depth: Option<u32>,
    /// How many search hits seed the spreading, 1 to `k`; half of `k` (rounded up) when
    /// absent, so that activated records have room among the `k` answers.
    #[schema(minimum = 1)]
    pub seeds: Option<usize>,
    /// The share of activation that survives one hop, in (0, 1].
    #[schema(default = 0.7, exclusive_minimum = 0.0, maximum = 1.0)]
    pub decay: f32,
    /// Records reached with less activation are neither returned nor expanded, in [0, 1).
    #[schema(default = 0.05, minimum = 0.0, exclusive_maximum = 1.0)]
    pub threshold: f32,
    /// At most this many links, the heaviest, are followed out of each record, 1 to 100.
    #[schema(default = 16, minimum = 1, maximum = 100)]
    pub max_fanout: usize,
    /// Follow only links with these relations; every relation when absent. An empty list
    /// is refused: it would follow nothing (ask for `depth: 0` to recall the seeds alone).
    /// At most 64 (each link read is compared with them).
    #[schema(min_items = 1, max_items = 64)]
    pub relations: Option<Vec<Relation>>,
}

impl Default for RecallParams {
    fn default() -> Self {
        RecallParams {
            depth: None,
            seeds: None,
            decay: 0.7,
            threshold: 0.05,
            max_fanout: 16,
            relations: None,
        }
    }
}

/// The keys of a recall body that are [`RecallParams`] rather than search fields.
pub const RECALL_KEYS: &[&str] = &[
    "depth",
    "seeds",
    "decay",
    "threshold",
    "max_fanout",
    "relations",
];

/// The most relations a recall may name.
pub const MAX_RECALL_RELATIONS: usize = 64;

impl RecallParams {
    /// Checks the ranges; the message names the field.
    pub fn validate(&self, k: usize) -> Result<(), String> {
        if let Some(d) = self.depth
            && d > MAX_RECALL_DEPTH
        {
            return Err(format!("depth: must be 0 to {MAX_RECALL_DEPTH}"));
        }
        if let Some(s) = self.seeds
            && (s == 0 || s > k)
        {
            return Err(format!("seeds: must be 1 to k ({k})"));
        }
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return Err("decay: must be in (0, 1]".into());
        }
        if !(0.0..1.0).contains(&self.threshold) {
            return Err("threshold: must be in [0, 1)".into());
        }
        if self.max_fanout == 0 || self.max_fanout > 100 {
            return Err("max_fanout: must be 1 to 100".into());
        }
        if let Some(rels) = &self.relations
            && rels.len() > MAX_RECALL_RELATIONS
        {
            return Err(format!(
                "relations: at most {MAX_RECALL_RELATIONS} (each link spreading reads is \
                 compared with them)"
            ));
        }
        if self.relations.as_ref().is_some_and(Vec::is_empty) {
            return Err(
                "relations: name at least one relation, or leave it out to follow every one \
                 (depth: 0 recalls the seeds alone)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The number of seeds for a recall of `k` hits.
    pub fn seeds_for(&self, k: usize) -> usize {
        self.seeds.unwrap_or(k.div_ceil(2)).clamp(1, k.max(1))
    }
}

/// One hop of the path that reached a record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PathStep {
    pub from: RecordId,
    pub relation: Relation,
    pub to: RecordId,
    /// `true` when the link was followed from its target to its source.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reverse: bool,
}

/// Seeds are marked `"seed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeedMark {
    Seed,
}

/// How a record was reached: `"seed"` (a search hit) or the path of links from a seed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Via {
    Seed(SeedMark),
    Path(Vec<PathStep>),
}

/// One record a recall returns.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecallHit {
    pub record: Record,
    /// What ranks recall hits: a seed's normalised search score, or what spread to it.
    pub activation: f32,
    /// A seed's search score (absent for records reached through links).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<HitExplain>,
    pub via: Via,
}

/// The answer of a recall: hits by activation, best first.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecallResponse {
    pub hits: Vec<RecallHit>,
    /// The seed search's mode and whether it was exact.
    pub mode: SearchMode,
    pub exact: bool,
    /// The depth spread: the request's, capped by the tenant's `max_spreading_depth`.
    pub depth: u32,
    /// Whether the request asked for more depth than the tenant allows.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub depth_capped: bool,
    /// Whether spreading stopped early at the most records one recall looks at (100,000 the
    /// request may see, 400,000 it may not): the hits are the best of what it reached by then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub spread_capped: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_defaults_and_ranges() {
        let p = RecallParams::default();
        assert!(p.validate(10).is_ok());
        assert_eq!(p.seeds_for(10), 5);
        assert_eq!(p.seeds_for(1), 1);
        let bad = |p: RecallParams, field: &str| {
            let e = p.validate(10).unwrap_err();
            assert!(e.starts_with(field), "{e}");
        };
        bad(
            RecallParams {
                depth: Some(11),
                ..p.clone()
            },
            "depth:",
        );
        bad(
            RecallParams {
                relations: Some(Vec::new()),
                ..p.clone()
            },
            "relations:",
        );
        let many: Vec<Relation> = (0..=MAX_RECALL_RELATIONS)
            .map(|i| Relation::parse(format!("r{i}")).unwrap())
            .collect();
        bad(
            RecallParams {
                relations: Some(many.clone()),
                ..p.clone()
            },
            "relations:",
        );
        assert!(
            RecallParams {
                relations: Some(many[..MAX_RECALL_RELATIONS].to_vec()),
                ..p.clone()
            }
            .validate(10)
            .is_ok()
        );
        bad(
            RecallParams {
                seeds: Some(0),
                ..p.clone()
            },
            "seeds:",
        );
        bad(
            RecallParams {
                seeds: Some(11),
                ..p.clone()
            },
            "seeds:",
        );
        bad(
            RecallParams {
                decay: 0.0,
                ..p.clone()
            },
            "decay:",
        );
        bad(
            RecallParams {
                threshold: 1.0,
                ..p.clone()
            },
            "threshold:",
        );
        bad(
            RecallParams {
                max_fanout: 0,
                ..p.clone()
            },
            "max_fanout:",
        );
        assert_eq!(
            serde_json::to_value(Via::Seed(SeedMark::Seed)).unwrap(),
            serde_json::json!("seed")
        );
    }
}
