//! `recall`: a search whose best hits seed spreading activation over the tenant's links.
//!
//! The rule (also in `docs/memory-intelligence.md`):
//! - the `seeds` best search hits are seeds; their activation is their search score min-max
//!   normalised over the seeds into [0.5, 1] (1 for all when the scores tie);
//! - hop by hop, up to `depth` (capped by the tenant's `max_spreading_depth`), each record
//!   reached at the previous hop passes activation along at most `max_fanout` of its links
//!   (both directions, heaviest first, only `relations` if given) to records the request can
//!   see: `a_v += a_u · decay · w_uv / √max(1, Σ w)`, the sum over the links it follows
//!   (fan-out normalisation: a hub spreads thinner);
//! - a record keeps what reaches it at the hop it is first reached (activation arriving later,
//!   or at a seed, is ignored, so activation never echoes back), and is kept and expanded
//!   only when that is at least `threshold`;
//! - the answer is the `k` records with the highest activation, each with the path that
//!   brought it the largest share.
//!
//! Visibility is checked on every record before it takes part: a record the request cannot see
//! (another principal's, domain's or run's, expired, or failing the filter) is not returned,
//! not expanded, and not even counted in a neighbour's fan-out, so it cannot move a score.
//! Links exist only inside one tenant's key range, so spreading never leaves the tenant.
//!
//! What one recall costs is bounded whatever the tenant's graph: it looks at no more than
//! [`MAX_RECALL_LOOKS`] records the request may see, and passes over no more than
//! [`HIDDEN_LOOKS_PER_LOOK`] times as many it may not (another principal's, domain's or run's,
//! told apart by their scope fields alone), then stops spreading and says so
//! (`spread_capped`). Hidden records have a budget of their own so that they cannot use up the
//! request's: another principal's links around a shared record would otherwise cut the
//! caller's recall short, and its answer would depend on records it cannot see. And it holds
//! no record while it spreads, only each reached one's
//! activation and the last step that brought it, reading the `k` answered records at the end.
//! (It once kept every record it met, whole: a recall with wide fan-out over a densely linked
//! tenant could hold hundreds of megabytes.)

use std::collections::HashMap;

/// The most records one recall looks at. Recall's defaults (k 10, five seeds, fan-out 16,
/// depth 3) reach at most 5 + 80 + 1,280 + 20,480 records, within it; the widest requests
/// (1,000 seeds, fan-out 100, depth 10) would reach the tenant's whole linked graph.
pub const MAX_RECALL_LOOKS: usize = 100_000;

/// Records the request may not see that one recall passes over, per record it may look at
/// (see the module docs): each costs a read of its scope fields.
pub const HIDDEN_LOOKS_PER_LOOK: usize = 4;

use strata_auth::{Permission, TenantScope};
use strata_store::{LinkReads, Reads, TenantKey};
use strata_types::{
    DEFAULT_MAX_SPREADING_DEPTH, Filter, Include, MAX_RECALL_DEPTH, PathStep, RecallHit,
    RecallParams, RecallResponse, Record, RecordId, RequestScope, SearchRequest, SeedMark, Via,
    now_millis,
};

use crate::visibility::Visibility;
use crate::{Engine, EngineError};

impl Engine {
    /// Searches (any mode, exactly like [`Engine::search`]), then spreads activation from the
    /// best hits over links. See the module docs for the rule.
    pub fn recall(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        s: &SearchRequest,
        p: &RecallParams,
    ) -> Result<RecallResponse, EngineError> {
        self.recall_looking_at_most(scope, req, s, p, MAX_RECALL_LOOKS)
    }

    /// [`Engine::recall`] that looks at no more than `looks` records.
    pub(crate) fn recall_looking_at_most(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        s: &SearchRequest,
        p: &RecallParams,
        looks: usize,
    ) -> Result<RecallResponse, EngineError> {
        // The credential is checked before the input, as everywhere.
        let vis = Visibility::resolve(scope, req, Permission::Read, now_millis())?;
        if s.k == 0 || s.k > strata_types::MAX_K {
            return Err(EngineError::BadRequest(format!(
                "k: must be 1 to {}",
                strata_types::MAX_K
            )));
        }
        p.validate(s.k).map_err(EngineError::BadRequest)?;
        if s.include_shared.is_some() {
            // Spreading follows this tenant's own links between its own records; a shared hit
            // is another tenant's record, so it can be neither a seed nor a bridge.
            return Err(EngineError::BadRequest(
                "include_shared: recall spreads over the tenant's own records only; search \
                 shared domains with /v1/search"
                    .into(),
            ));
        }
        let with_vector = s.includes(Include::Vector);
        // Spreading reads the seeds' whole records (their links, rules and the hits it
        // returns), so the seed search reads them from storage whatever `include` says.
        let seed_search = SearchRequest {
            k: p.seeds_for(s.k),
            include: Some(if with_vector {
                vec![Include::Record, Include::Vector]
            } else {
                vec![Include::Record]
            }),
            ..s.clone()
        };
        let found = self.search(scope, req, &seed_search)?;
        self.read_tenant(scope, Permission::Read, |r| {
            let profile = crate::tenants::check_live(r, scope)?;
            let cap = profile
                .limits
                .max_spreading_depth
                .unwrap_or(DEFAULT_MAX_SPREADING_DEPTH)
                .min(MAX_RECALL_DEPTH);
            let asked = p.depth.unwrap_or(cap);
            let depth = asked.min(cap);
            let mut spread = Spread {
                r,
                key: scope.key(),
                vis: &vis,
                filter: s.filter.as_ref(),
                seen: HashMap::new(),
                hidden: Default::default(),
                looks_left: looks,
                hidden_left: looks.saturating_mul(HIDDEN_LOOKS_PER_LOOK),
                seen_cap: looks.saturating_mul(2),
                capped: false,
            };
            // The seed search includes the whole record, so every seed carries it; one
            // without is a broken search, answered as an error rather than spread from less.
            let seeds = found
                .hits
                .into_iter()
                .map(|h| match h.record {
                    Some(record) => Ok((*record, h.score, h.explain.map(|e| *e))),
                    None => Err(EngineError::Index(format!(
                        "recall: the seed search answered {} without its record",
                        h.id
                    ))),
                })
                .collect::<Result<Vec<(Record, f32, Option<strata_types::HitExplain>)>, _>>()?;
            let mut hits = spread.run(seeds, p, depth, s.k)?;
            if !with_vector {
                for h in &mut hits {
                    h.record.vector = None;
                }
            }
            Ok(RecallResponse {
                hits,
                mode: found.mode,
                exact: found.exact,
                depth,
                depth_capped: asked > cap,
                spread_capped: spread.capped,
            })
        })
    }
}

/// One spreading pass over one consistent snapshot.
struct Spread<'a, R: Reads> {
    r: &'a R,
    key: TenantKey,
    vis: &'a Visibility,
    filter: Option<&'a Filter>,
    /// Records looked at so far, and whether the request may see each.
    seen: HashMap<RecordId, bool>,
    /// The collections being deleted met so far (their records are hidden).
    hidden: strata_store::HiddenMemo,
    /// Records this recall may still look at (see [`MAX_RECALL_LOOKS`]).
    looks_left: usize,
    /// Records outside the request's scope it may still pass over (see
    /// [`HIDDEN_LOOKS_PER_LOOK`]).
    hidden_left: usize,
    /// How many entries `seen` may hold: hidden records are remembered (so one met again is
    /// not read again) only while it holds fewer, which bounds its memory by the looks.
    seen_cap: usize,
    /// Whether it ran out: spreading then stops after the hop under way.
    capped: bool,
}

/// A record spreading reached: what it holds until the answer is made.
struct Reached {
    activation: f32,
    /// A seed's search score and explanation.
    seed: Option<(f32, Option<strata_types::HitExplain>)>,
    /// The last step of the path that brought it the largest share (none for a seed); the
    /// step's `from` is reached already, so the whole path is found by walking back.
    step: Option<PathStep>,
}

/// A link as spreading follows it out of one record.
struct Edge {
    other: RecordId,
    step: PathStep,
    weight: f32,
}

impl<R: Reads> Spread<'_, R> {
    /// Whether the request may see record `id` (and it passes the filter). A record not looked
    /// at before, once the recall may look at no more, counts as not seen: spreading is then
    /// being cut short.
    fn visible(&mut self, id: &RecordId) -> Result<bool, EngineError> {
        if let Some(&sees) = self.seen.get(id) {
            return Ok(sees);
        }
        if self.looks_left == 0 || self.hidden_left == 0 {
            self.capped = true;
            return Ok(false);
        }
        // The scope fields first: on a record many principals link to, most neighbours are
        // records the request cannot see, and those are not decoded whole.
        let in_scope = self
            .r
            .record_scope(self.key, id, &mut self.hidden)?
            .is_some_and(|s| self.vis.sees_scope(&s));
        if !in_scope {
            self.hidden_left -= 1;
            if self.seen.len() < self.seen_cap {
                self.seen.insert(id.clone(), false);
            }
            return Ok(false);
        }
        self.looks_left -= 1;
        let sees = self
            .r
            .record(self.key, id)?
            .is_some_and(|rec| self.vis.sees(&rec) && self.filter.is_none_or(|f| f.matches(&rec)));
        self.seen.insert(id.clone(), sees);
        Ok(sees)
    }

    /// The visible neighbours of `id` that spreading follows: heaviest first, at most
    /// `max_fanout`, only the asked relations.
    fn edges(&mut self, id: &RecordId, p: &RecallParams) -> Result<Vec<Edge>, EngineError> {
        let mut edges = Vec::new();
        for incoming in [false, true] {
            for l in self.r.links_of(self.key, id, incoming)? {
                if p.relations
                    .as_ref()
                    .is_some_and(|rels| !rels.contains(&l.relation))
                {
                    continue;
                }
                let other = if incoming { l.source } else { l.target };
                edges.push(Edge {
                    step: PathStep {
                        from: id.clone(),
                        relation: l.relation,
                        to: other.clone(),
                        reverse: incoming,
                    },
                    other,
                    weight: l.weight,
                });
            }
        }
        // Invisible neighbours are dropped before the fan-out is cut and normalised, so they
        // change nothing.
        let mut kept = Vec::with_capacity(edges.len());
        for e in edges {
            if self.visible(&e.other)? {
                kept.push(e);
            }
        }
        kept.sort_by(|a, b| {
            b.weight
                .total_cmp(&a.weight)
                .then_with(|| a.other.cmp(&b.other))
                .then_with(|| a.step.relation.cmp(&b.step.relation))
        });
        kept.truncate(p.max_fanout);
        Ok(kept)
    }

    /// Spreads from `seeds`; the `k` records with the highest activation, whole.
    fn run(
        &mut self,
        seeds: Vec<(Record, f32, Option<strata_types::HitExplain>)>,
        p: &RecallParams,
        depth: u32,
        k: usize,
    ) -> Result<Vec<RecallHit>, EngineError> {
        let (min, max) = seeds
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), s| {
                (lo.min(s.1), hi.max(s.1))
            });
        let mut reached: HashMap<RecordId, Reached> = HashMap::new();
        // The seeds' records came with the search (at most k of them).
        let mut seed_records: HashMap<RecordId, Record> = HashMap::new();
        let mut frontier = Vec::new();
        for (record, score, explain) in seeds {
            let activation = if max > min {
                0.5 + 0.5 * ((score - min) / (max - min))
            } else {
                1.0
            };
            frontier.push(record.id.clone());
            self.seen.insert(record.id.clone(), true);
            reached.insert(
                record.id.clone(),
                Reached {
                    activation,
                    seed: Some((score, explain)),
                    step: None,
                },
            );
            seed_records.insert(record.id.clone(), record);
        }
        for _ in 0..depth {
            // Target → (total activation, best single contribution and its step).
            let mut arriving: HashMap<RecordId, (f32, f32, Option<PathStep>)> = HashMap::new();
            for u in &frontier {
                let Some(a_u) = reached.get(u).map(|h| h.activation) else {
                    continue;
                };
                let edges = self.edges(u, p)?;
                let total: f32 = edges.iter().map(|e| e.weight).sum();
                let norm = total.max(1.0).sqrt();
                for e in edges {
                    if reached.contains_key(&e.other) {
                        continue;
                    }
                    let contribution = a_u * p.decay * e.weight / norm;
                    let entry =
                        arriving
                            .entry(e.other.clone())
                            .or_insert((0.0, f32::NEG_INFINITY, None));
                    entry.0 += contribution;
                    if contribution > entry.1 {
                        entry.1 = contribution;
                        entry.2 = Some(e.step);
                    }
                }
            }
            let mut next: Vec<RecordId> = arriving
                .iter()
                .filter(|(_, (total, _, _))| *total >= p.threshold)
                .map(|(id, _)| id.clone())
                .collect();
            next.sort();
            for id in &next {
                let Some((activation, _, step)) = arriving.remove(id) else {
                    continue;
                };
                // Every record in `arriving` came through `edges`, which kept only visible ones.
                reached.insert(
                    id.clone(),
                    Reached {
                        activation,
                        seed: None,
                        step,
                    },
                );
            }
            if next.is_empty() || self.capped {
                break;
            }
            frontier = next;
        }
        let mut best: Vec<(&RecordId, &Reached)> = reached.iter().collect();
        best.sort_by(|a, b| {
            b.1.activation
                .total_cmp(&a.1.activation)
                .then_with(|| a.0.cmp(b.0))
        });
        best.truncate(k);
        let mut hits = Vec::with_capacity(best.len());
        for (id, h) in best {
            let record = match seed_records.remove(id) {
                Some(record) => record,
                // Seen in this snapshot a moment ago: the same record.
                None => self.r.record(self.key, id)?.ok_or_else(|| {
                    EngineError::Index(format!("recall: record {id} reached but not found"))
                })?,
            };
            let (search_score, explain, via) = match &h.seed {
                Some((score, explain)) => {
                    (Some(*score), explain.clone(), Via::Seed(SeedMark::Seed))
                }
                None => (None, None, Via::Path(path_to(&reached, id))),
            };
            hits.push(RecallHit {
                record,
                activation: h.activation,
                search_score,
                explain,
                via,
            });
        }
        Ok(hits)
    }
}

/// The path that brought `id` its activation, from its seed: each record's best step, walked
/// back until a seed (every step's `from` was reached at the hop before).
fn path_to(reached: &HashMap<RecordId, Reached>, id: &RecordId) -> Vec<PathStep> {
    let mut path = Vec::new();
    let mut at = id;
    while let Some(step) = reached.get(at).and_then(|h| h.step.as_ref()) {
        path.push(step.clone());
        at = &step.from;
    }
    path.reverse();
    path
}
