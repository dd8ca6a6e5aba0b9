//! Tenant-scoped recall: vector, text (BM25) and hybrid search over one collection.
//!
//! Nothing the caller cannot see feeds a score. Vector scores depend on the query and the
//! record alone. BM25 statistics (document count, document frequencies, average length) are
//! computed over exactly the records the request may see (`plan::visible_slots`). Fusion
//! (`crate::fusion`) scales each channel by a fixed rule or over its own hits, which are all
//! visible records.
//!
//! A first try ranks exactly k (the graph's beam is `max(ef, k)`); only a try that lost hits
//! after the graph is run again with spare candidates (the beam policy, `crate::hits`).

use std::borrow::Cow;
use std::sync::Arc;

use strata_auth::{Permission, TenantScope};
use strata_index::exact::sort_hits;
use strata_index::{Hit, RoaringBitmap};
use strata_store::Reads;
use strata_types::{
    Collection, CollectionName, Fusion, HitExplain, Include, MAX_K, RecordError, RequestScope,
    Rerank, SearchHit, SearchMode, SearchRequest, SearchResponse, check_vector_values, now_millis,
};

use crate::collection_index::CollectionIndex;
use crate::embedding::{embed, embeds, text_collection};
use crate::fusion::Completion;
use crate::hits::{HitChecks, StoredRecords, answers_from_index};
use crate::integrity::{IntegrityState, STRESS_MAX_EF, STRESS_MAX_K};
use crate::plan::{Candidates, filter_candidates, scope_candidates, vector_top, visible_slots};
use crate::registry::TenantSlot;
use crate::visibility::Visibility;
use crate::{Engine, EngineError};

/// Longest text query accepted, in bytes.
const MAX_QUERY_BYTES: usize = 4096;
/// Hybrid search fuses this many candidates per channel (at least `k`).
const HYBRID_DEPTH: usize = 50;
/// Each channel's best candidates (none for a channel the search does not use), and whether
/// the vector channel ranked exactly.
type ChannelHits = (Option<Vec<Hit>>, Option<Vec<Hit>>, bool);

/// The deepest a weighted fusion's lists go to prove that no record outside them outscores
/// its hits (`crate::fusion::unseen_bound`).
const MAX_FUSION_DEPTH: usize = 4096;

impl Engine {
    /// Searches one collection of the caller's tenant. Scope and filter are applied to every
    /// channel before top-k; when at least `k` visible records match, `k` are returned. Hits'
    /// records carry their stored vectors only when the request includes `vector`.
    pub fn search(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        s: &SearchRequest,
    ) -> Result<SearchResponse, EngineError> {
        check_fields(s)?;
        // Before the search: a tenant whose own policy is unreadable is refused, not
        // searched unmeasured.
        let policy = self.integrity_policy(scope)?;
        let started = std::time::Instant::now();
        let (response, tenant) = self.search_unmeasured(scope, req, s)?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.indexes
            .integrity_sample(&tenant, &policy.policy, Some(ms));
        Ok(response)
    }

    /// The search, and the tenant's registry slot it was answered from (looked up once, after
    /// the permission and liveness checks, for the index and the integrity state and sample).
    fn search_unmeasured(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        s: &SearchRequest,
    ) -> Result<(SearchResponse, Arc<TenantSlot>), EngineError> {
        let now = now_millis();
        let vis = Visibility::resolve(scope, req, Permission::Read, now)?;
        // Borrowed from the request: no hit carries the name (a hit is named by its id, and a
        // stored record carries its own), so the search needs no copy of it.
        let default_name;
        let name = match &s.modality {
            Some(name) => name,
            None => {
                default_name = text_collection();
                &default_name
            }
        };
        // A query the engine may embed needs its collection before the index is held (an
        // embedding is slow and must not hold up the tenant's writes); every other search
        // reads the collection from the snapshot its hits are read from, so it begins one
        // storage snapshot rather than two.
        let embeds = s.vector.is_none() && s.query.is_some() && s.mode != Some(SearchMode::Text);
        let early = if embeds {
            Some(self.read_tenant(scope, Permission::Read, |r| {
                r.collection(scope.key(), name)?
                    .ok_or_else(|| EngineError::CollectionNotFound(name.clone()))
            })?)
        } else {
            self.check_readable(scope, Permission::Read)?;
            None
        };
        let tenant = self.indexes.slot(scope.key(), scope.tenant());
        // After the permission and liveness checks, so that a refusal for those is not
        // masked; before any work. `critical` is a worse state than `stress`, so it sheds at
        // least as much: every state but `normal` caps k and ef.
        let shedding = tenant.integrity_state() != IntegrityState::Normal;
        if shedding && (s.k > STRESS_MAX_K || s.ef.is_some_and(|ef| ef > STRESS_MAX_EF)) {
            // Sampled without a latency, as a refused write is: a tenant whose only searches
            // are shed must still see its latency signal age and its state move back.
            if let Ok(policy) = self.integrity_policy(scope) {
                self.indexes.integrity_sample(&tenant, &policy.policy, None);
            }
            return Err(EngineError::TenantStressed(scope.tenant().clone()));
        }
        // Nor does a search without `ef` walk a wider default beam (a graph calibrated to 512
        // or 1024 on hard data): its most expensive searches are the ones to shed.
        let beam_cap = shedding.then_some(STRESS_MAX_EF);
        let embedded = match &early {
            Some(collection) => self.embed_query(collection, s)?,
            None => None,
        };
        let s = embedded.as_ref().unwrap_or(s);
        let mode = check_mode(s)?;
        // The caller's own (tenant, domain) namespace, and no other; in it, only the narrative
        // of the principal the caller speaks for.
        let narrative_principal = s.rerank.and_then(|_| vis.narrative_principal());
        let ns = match s.rerank {
            Some(Rerank::Adaptive) => {
                Some(self.adaptive_namespace(scope, &vis.domain, Permission::Read)?)
            }
            None => None,
        };
        let adaptive = ns.as_deref().map(|ns| crate::rerank::Adaptive {
            ns,
            principal: narrative_principal.as_ref(),
            config: &self.config.adaptive,
            weights: s.rerank_weights.unwrap_or_default(),
            now,
        });
        // A search that needs nothing stored, with no filter and no shared domains, reads
        // neither the collection nor any record: it begins no storage snapshot (`crate::hits`).
        let lean = early.is_none()
            && s.filter.is_none()
            && s.include_shared.is_none()
            && answers_from_index(s, true);
        let attempt = |extra: usize| {
            self.indexes
                .with_slot_index(&self.store, scope.key(), &tenant, |ti| {
                    // A write between its commit and its apply: storage may already hold a
                    // change this index does not, so the hits are read from storage.
                    let pending = ti.write_pending();
                    // A collection the index does not hold yet (created after the tenant was
                    // loaded, no record written to it since) is answered from storage below.
                    if lean
                        && !pending
                        && let Some(ci) = ti.collections.get(name)
                    {
                        // Named from the index alone: the tenant's liveness and permission
                        // checked again while the index is held (`read_tenant`'s checks, from
                        // memory while the tenant is known live), the collection's defaults
                        // from the definition its index was made from, and no snapshot.
                        self.check_readable(scope, Permission::Read)?;
                        let half_life = s
                            .recency_half_life_secs
                            .or(ci.definition.memory.recency_half_life_secs);
                        let boost = crate::ranking::Boost::of(s, half_life, vis.now);
                        let searched = search_collection(
                            ci,
                            name,
                            &vis,
                            s,
                            mode,
                            adaptive.as_ref(),
                            boost,
                            None,
                            false,
                            extra,
                            beam_cap,
                        )?;
                        return Ok((searched, None));
                    }
                    // The snapshot the hits' records are read from, begun while the index is
                    // held: every write the index reflects is in it (`crate::hits`).
                    self.read_tenant(scope, Permission::Read, |r| {
                        let read;
                        let collection = match &early {
                            Some(c) => c,
                            None => {
                                read = r
                                    .collection(scope.key(), name)?
                                    .ok_or_else(|| EngineError::CollectionNotFound(name.clone()))?;
                                &read
                            }
                        };
                        let Some(ci) = ti.collections.get(name) else {
                            // Created after the tenant's index was loaded, and no record
                            // applied to it since: it holds nothing this index could rank.
                            let searched = empty_collection(collection, s, mode)?;
                            let for_shared = (early.is_none() && s.include_shared.is_some())
                                .then(|| collection.clone());
                            return Ok((searched, for_shared));
                        };
                        let half_life = s
                            .recency_half_life_secs
                            .or(collection.memory.recency_half_life_secs);
                        // Own and shared hits are merged by score, so a search across grants
                        // ranks both by relevance alone (a collection's default recency does
                        // not apply to it).
                        let boost = match s.include_shared {
                            Some(_) => None,
                            None => crate::ranking::Boost::of(s, half_life, vis.now),
                        };
                        let stored = StoredRecords::new(r, scope.key(), name);
                        let searched = search_collection(
                            ci,
                            name,
                            &vis,
                            s,
                            mode,
                            adaptive.as_ref(),
                            boost,
                            Some(&stored),
                            pending,
                            extra,
                            beam_cap,
                        )?;
                        // Shared domains are searched after the index is released, against
                        // this collection's definition.
                        let for_shared = (early.is_none() && s.include_shared.is_some())
                            .then(|| collection.clone());
                        Ok((searched, for_shared))
                    })
                })
        };
        // A write that committed while this search held the index (it is applied to the
        // index just after) can take a hit out of sight; the search then passed it over and
        // may hold fewer than k. It is searched again once the index is released, with spare
        // candidates for every hit lost (`crate::search_retry`).
        let (searched, for_shared) = self.search_until_full(&tenant, attempt)?;
        let mut response = searched.response;
        if let Some(selector) = &s.include_shared
            && let Some(collection) = early.as_ref().or(for_shared.as_ref())
        {
            let (shared, exact) =
                self.search_shared(scope, req, s, mode, collection, selector, beam_cap)?;
            merge_shared(&mut response, shared, exact, s.k);
        }
        Ok((response, tenant))
    }
}

/// The answer of a collection that exists in storage but has no index yet (see
/// `search_unmeasured`): no hits, after the same check of the query vector's dimension.
fn empty_collection(
    collection: &Collection,
    s: &SearchRequest,
    mode: SearchMode,
) -> Result<Searched, EngineError> {
    if let Some(v) = &s.vector
        && mode != SearchMode::Text
        && v.len() != collection.dim as usize
    {
        return Err(RecordError::DimensionMismatch {
            collection: collection.name.clone(),
            expected: collection.dim,
            got: v.len(),
        }
        .into());
    }
    if let Some(v) = &s.vector
        && mode != SearchMode::Text
    {
        let cosine = collection.metric == strata_types::Metric::Cosine;
        check_query_direction(v, cosine, &collection.name)?;
    }
    Ok(Searched::empty(mode))
}

/// A zero query vector on a cosine collection has no direction, so every score would be 0:
/// refused like a zero stored vector, naming the search's `vector` field.
fn check_query_direction(
    v: &[f32],
    cosine: bool,
    collection: &CollectionName,
) -> Result<(), EngineError> {
    if cosine && v.iter().all(|x| *x == 0.0) {
        let why = RecordError::ZeroVector {
            collection: collection.clone(),
        };
        return Err(EngineError::BadRequest(format!("vector: {why}")));
    }
    Ok(())
}

/// Adds hits from shared domains to the caller's own, best first (own hits first on equal
/// scores), and keeps `k`.
fn merge_shared(response: &mut SearchResponse, shared: Vec<SearchHit>, exact: bool, k: usize) {
    response.exact &= exact;
    if shared.is_empty() {
        return;
    }
    response.hits.extend(shared);
    // A stable sort: equal scores keep own hits ahead of shared ones.
    response.hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    response.hits.truncate(k);
}

impl Engine {
    /// A query without a vector, on a collection the loaded embedder embeds, gets the query's
    /// embedding, and hybrid mode unless the request names one: the text alone is enough to
    /// search by meaning and by words. `None` leaves the request as it is (no embedder, a
    /// client vector, or a text-mode request), so without an embedder a query-only search is
    /// a text search, as before.
    fn embed_query(
        &self,
        collection: &Collection,
        s: &SearchRequest,
    ) -> Result<Option<SearchRequest>, EngineError> {
        let (None, Some(query)) = (&s.vector, &s.query) else {
            return Ok(None);
        };
        if s.mode == Some(SearchMode::Text) {
            return Ok(None);
        }
        let loaded = self.loaded_embedder();
        if !embeds(loaded.as_ref().map(|(_, id)| id), collection)? {
            return Ok(None);
        }
        let Some((embedder, _)) = loaded else {
            return Ok(None);
        };
        let vector = embed(embedder, &[query])?.pop();
        Ok(Some(SearchRequest {
            vector,
            mode: Some(s.mode.unwrap_or(SearchMode::Hybrid)),
            ..s.clone()
        }))
    }
}

/// Checks everything but the mode, which may depend on the query's embedding.
fn check_fields(s: &SearchRequest) -> Result<(), EngineError> {
    if s.k == 0 || s.k > MAX_K {
        return Err(EngineError::BadRequest(format!("k: must be 1 to {MAX_K}")));
    }
    if s.include_shared.is_some()
        && (s.rerank.is_some()
            || s.confidence_weight.is_some_and(|w| w > 0.0)
            || s.recency_half_life_secs.is_some())
    {
        // Each would rescale one tenant's pool on its own, and the merged scores would no
        // longer compare.
        return Err(EngineError::BadRequest(
            "include_shared: cannot be combined with rerank, confidence_weight or \
             recency_half_life_secs"
                .into(),
        ));
    }
    if let Some(q) = &s.query
        && q.len() > MAX_QUERY_BYTES
    {
        return Err(EngineError::BadRequest(format!(
            "query: at most {MAX_QUERY_BYTES} bytes"
        )));
    }
    if let Some(v) = &s.vector {
        // The same bound as stored vectors: then every score between the two is finite.
        check_vector_values(v)?;
    }
    if let Some(m) = s.min_score
        && !m.is_finite()
    {
        return Err(EngineError::BadRequest(
            "min_score: must be a finite number".into(),
        ));
    }
    if let Some(ef) = s.ef
        && (ef == 0 || ef > 4096)
    {
        return Err(EngineError::BadRequest("ef: must be 1 to 4096".into()));
    }
    crate::ranking::check(s)?;
    if let Fusion::Weighted { alpha } = s.fusion
        && !(0.0..=1.0).contains(&alpha)
    {
        return Err(EngineError::BadRequest(
            "fusion.alpha: must be 0 to 1".into(),
        ));
    }
    if let Some(w) = &s.rerank_weights {
        if s.rerank.is_none() {
            return Err(EngineError::BadRequest(
                "rerank_weights: only with rerank \"adaptive\"".into(),
            ));
        }
        w.check().map_err(EngineError::BadRequest)?;
    }
    Ok(())
}

/// The mode a request runs in, and whether it has what that mode needs.
fn check_mode(s: &SearchRequest) -> Result<SearchMode, EngineError> {
    let mode = match (s.mode, &s.vector, &s.query) {
        (Some(m), _, _) => m,
        (None, Some(_), Some(_)) => SearchMode::Hybrid,
        (None, Some(_), None) => SearchMode::Vector,
        (None, None, Some(_)) => SearchMode::Text,
        (None, None, None) => {
            return Err(EngineError::BadRequest(
                "search needs a vector, a query, or both".into(),
            ));
        }
    };
    let needs_vector = matches!(mode, SearchMode::Vector | SearchMode::Hybrid);
    let needs_query = matches!(mode, SearchMode::Text | SearchMode::Hybrid);
    if needs_vector && s.vector.is_none() {
        return Err(EngineError::BadRequest(
            "vector: required by this mode".into(),
        ));
    }
    if needs_query && s.query.is_none() {
        return Err(EngineError::BadRequest(
            "query: required by this mode".into(),
        ));
    }
    Ok(mode)
}

/// Searches `ci`, reading whole records from `stored` (the same snapshot for every record of
/// this search) for the hits and for a filter the field index cannot answer exactly. Hits
/// carry their stored vectors only when the request includes `vector`. `write_pending`: a
/// write of the tenant may have committed a change `ci` does not hold yet
/// (`TenantIndex::write_pending`), so the hits are read from `stored` even when the request
/// needs nothing stored. `extra`: candidates to rank beyond k, for a search run again because
/// an earlier try lost hits after the graph ([`Searched::short`], `crate::search_retry`); 0
/// on a first try. `beam_cap`: the widest default graph beam a search without `ef` walks
/// (`plan::vector_top`), set while the searching tenant sheds load.
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_collection(
    ci: &CollectionIndex,
    name: &CollectionName,
    vis: &Visibility,
    s: &SearchRequest,
    mode: SearchMode,
    adaptive: Option<&crate::rerank::Adaptive<'_>>,
    boost: Option<crate::ranking::Boost>,
    stored: Option<&StoredRecords<'_>>,
    write_pending: bool,
    extra: usize,
    beam_cap: Option<usize>,
) -> Result<Searched, EngineError> {
    let scope = scope_candidates(ci, vis);
    // The scope's candidates unless a filter narrows them: then the field index's slots,
    // intersected in place with the scope's. A search without a filter copies no bitmap here.
    let mut narrowed_by_filter = None;
    let mut filter_exact = s.filter.is_none();
    if let Some(f) = &s.filter
        && let Some(mut narrowed) = filter_candidates(f, ci)
    {
        if let Candidates::Some(scope) = &scope {
            narrowed.slots &= scope.as_ref();
        }
        filter_exact = narrowed.exact;
        narrowed_by_filter = Some(narrowed.slots);
    }
    let candidates = match narrowed_by_filter {
        Some(slots) => Candidates::Some(Cow::Owned(slots)),
        None => match &scope {
            Candidates::All => Candidates::All,
            Candidates::Some(c) => Candidates::Some(Cow::Borrowed(c.as_ref())),
        },
    };
    // Hits named from the index alone when the request needs nothing stored (`crate::hits`).
    let from_index = answers_from_index(s, filter_exact) && !write_pending;
    // The beam policy (module docs of `crate::hits`): reranking draws from a larger pool of
    // candidates than it returns; otherwise a search ranks exactly k, so the graph's beam is
    // max(ef, k) as the bare index's. Only a search whose first try lost hits after the graph
    // (a concurrent write took a hit's stored record out of sight, or the re-check below
    // dropped one) runs again with `extra` candidates beyond k (the hits lost so far and
    // `SPARE_HITS` more), so the next ones replace what vanishes. `include: []` and an include that reads records follow the same
    // policy, so they rank the same top k with the same `exact` flag.
    let want = match adaptive {
        Some(_) => crate::rerank::pool_size(s.k),
        None => s.k,
    };
    let want = want.max(s.k + extra);
    // The candidates already satisfy the domain, run, memory scope and (for `any`) principals,
    // and the filter when it was answered exactly by the field index. The resident part of a
    // record is looked at only for what bitmaps cannot say: its TTL or `all` principal
    // matching, by the same rules every channel uses (`SlotVisibility::sees_slot`); the stored
    // record is read only for the rest of a filter (`crate::hits`).
    let checks = HitChecks::new(ci, vis, s.filter.as_ref(), filter_exact, stored);
    let match_all = vis.matches_all_tokens();
    let needs_doc =
        |slot: u32| ci.with_expiry.contains(slot) || (match_all && !ci.shared.contains(slot));
    let passes = |slot: u32| (!needs_doc(slot) || checks.sees(slot)) && checks.filter_passes(slot);
    // Confidence and recency re-rank, and fusion merges, a wider pool than they return, so a
    // record just below the top k can rise, whatever k is.
    let depth = if mode == SearchMode::Hybrid || boost.is_some() {
        want.max(HYBRID_DEPTH).max(s.k + SPARE_HITS)
    } else {
        want
    };

    // Statistics over exactly the records this request may see, so that no invisible record
    // moves a score; the filter only narrows which of them are ranked.
    let visible_docs = match (&s.query, mode) {
        (Some(_), SearchMode::Text | SearchMode::Hybrid) => Some(visible_slots(
            ci,
            vis,
            scope.bitmap(ci),
            ci.bm25.doc_slots(),
        )),
        _ => None,
    };
    let text_query = s
        .query
        .as_deref()
        .zip(visible_docs.as_ref())
        .map(|(q, visible)| ci.bm25.query(q, visible));
    // Both channels' best `depth` candidates; whether the vector channel ranked exactly.
    let channels = |depth: usize| -> Result<ChannelHits, EngineError> {
        let mut exact = true;
        let vector_hits = match (&s.vector, mode) {
            (Some(v), SearchMode::Vector | SearchMode::Hybrid) => {
                if v.len() != ci.dim {
                    return Err(RecordError::DimensionMismatch {
                        collection: name.clone(),
                        expected: ci.dim as u32,
                        got: v.len(),
                    }
                    .into());
                }
                check_query_direction(v, ci.metric == strata_index::Metric::Cosine, name)?;
                // Every vector is a candidate when nothing narrows: `with_vector` is then borrowed
                // and whether records must be read is decided without touching it.
                let with_vector: Cow<'_, RoaringBitmap> = match &candidates {
                    Candidates::All => Cow::Borrowed(&ci.with_vector),
                    Candidates::Some(c) => Cow::Owned(c.as_ref() & &ci.with_vector),
                };
                let unrestricted = with_vector.len() == ci.with_vector.len()
                    && filter_exact
                    && (ci.with_expiry.is_empty() || with_vector.is_disjoint(&ci.with_expiry))
                    && (!match_all
                        || ci.shared.len() == ci.live.len()
                        || with_vector.is_subset(&ci.shared));
                let (hits, was_exact) = vector_top(
                    ci,
                    &with_vector,
                    unrestricted,
                    v,
                    depth,
                    s.k,
                    s.ef,
                    beam_cap,
                    &passes,
                )?;
                exact = was_exact;
                // The re-check and the naming below read each hit's resident part: its load
                // starts here and overlaps the ranking in between (`touch_resident`).
                for h in &hits {
                    if let Some(doc) = ci.docs.get(h.slot as usize) {
                        strata_index::kernels::prefetch(doc);
                    }
                }
                Some(hits)
            }
            _ => None,
        };
        let text_hits = text_query.as_ref().map(|query| {
            let candidates = candidates.bitmap(ci);
            query.search(depth, |slot| candidates.contains(slot) && passes(slot))
        });
        Ok((
            vector_hits.map(finite_hits),
            text_hits.map(finite_hits),
            exact,
        ))
    };
    let mut depth = depth;
    let (mut vector_hits, mut text_hits, mut exact) = channels(depth)?;
    let mut ranked = loop {
        let ranked = match (&vector_hits, &text_hits) {
            (Some(v), Some(t)) => {
                let mut completion = Completion::default();
                if let (Some(query_vector), Some(query)) = (&s.vector, &text_query)
                    && completion.applies(s.fusion, ci.metric)
                {
                    // Both lists' candidates passed the scope and the filter in their channel.
                    completion = Completion::compute(
                        v,
                        t,
                        |slots| exact_scores(ci, query_vector, slots),
                        |slot| query.score_of(slot).map(finite),
                    )?;
                }
                crate::fusion::fuse(v, t, &completion, s.fusion, ci.metric)
            }
            (Some(v), None) => single(v, true),
            (None, Some(t)) => single(t, false),
            (None, None) => Vec::new(),
        };
        // A weighted fusion on the absolute scale ranks exactly what its lists hold (each
        // listed record's other score is completed); a record in neither list could still
        // outscore the want-th hit when both lists stop at the same depth just above it. The
        // lists go deeper until no such record can (Fagin's threshold algorithm), so the
        // answer does not depend on `k`.
        if let (Some(v), Some(t)) = (&vector_hits, &text_hits)
            && depth < MAX_FUSION_DEPTH
            && let Some(bound) = crate::fusion::unseen_bound(v, t, depth, s.fusion, ci.metric)
            && ranked.get(want - 1).is_none_or(|r| r.score < bound)
        {
            depth = (depth * 4).min(MAX_FUSION_DEPTH);
            (vector_hits, text_hits, exact) = channels(depth)?;
            continue;
        }
        break ranked;
    };
    // Defence in depth: every candidate passes the full rules once more, before any
    // reranking, so the pool it reorders (and normalises over) holds only what the caller may
    // see. `min_score` applies to the relevance score, before confidence and recency.
    ranked.retain(|r| s.min_score.is_none_or(|m| r.score >= m));
    touch_resident(ci, &ranked[..want.min(ranked.len())]);
    let before_check = ranked.len();
    ranked.retain(|r| checks.sees(r.slot) && checks.filter_passes(r.slot));
    // The candidates already passed these rules inside the channels, so this drops nothing
    // unless a rule disagrees with its bitmap; if it does, the search is short of what it
    // ranked and widens like one that lost hits to a write, and the drop is counted.
    let recheck_drops = before_check - ranked.len();
    let mut lost = recheck_drops;
    if let Some(boost) = boost {
        rerank(&mut ranked, ci, &boost);
    }
    ranked.truncate(want);
    if let Some(a) = adaptive {
        crate::rerank::rerank(&mut ranked, want, ci, name, a);
    }
    // The hits' whole records, from storage, each checked once more on the record itself; one
    // a concurrent write took out of sight is passed over for the next candidate. Or, when
    // the request needs nothing stored, the hits' ids as the index holds them, which the
    // caller was just found to see (`ranked.retain` above) under the same read lock. A hit
    // carries its record only when the request includes something of it: an `include: []`
    // hit is its id and score, whichever way it was found.
    let with_vector = s.includes(Include::Vector);
    let keep_records = s.needs_records();
    let mut hits = Vec::with_capacity(s.k.min(ranked.len()));
    for r in ranked {
        if hits.len() == s.k {
            break;
        }
        let found = if from_index {
            checks.resident_id(r.slot).map(|id| (id, None))
        } else {
            checks.record(r.slot, with_vector)?.map(|record| {
                let id = record.id.clone();
                (id, keep_records.then(|| Box::new(record)))
            })
        };
        let Some((id, record)) = found else {
            lost += 1;
            continue;
        };
        hits.push(SearchHit {
            id,
            record,
            score: r.score,
            explain: s.explain.then(|| Box::new(r.explain)),
            source: None,
        });
    }
    checks.finish()?;
    Ok(Searched {
        short: lost > 0 && hits.len() < s.k,
        lost,
        recheck_drops,
        response: SearchResponse { hits, mode, exact },
    })
}

/// Candidates a search run again ranks beyond its k, so that a hit whose stored record a
/// concurrent write changed out of sight is replaced by the next one instead of leaving the
/// answer short. A first try ranks k alone: nothing vanishes after the graph unless a write
/// races the search, and spares on every search cost the graph a wider beam than asked.
pub(crate) const SPARE_HITS: usize = 8;

/// One collection's answer to a search.
pub(crate) struct Searched {
    pub response: SearchResponse,
    /// A hit was passed over because its stored record changed out of sight after the index
    /// was searched (or the re-check of the ranked candidates dropped one), and fewer than k
    /// remain: searching again, with spares, may find the k.
    pub short: bool,
    /// Candidates this try lost after the graph: passed over on their stored records, or
    /// dropped by the re-check.
    pub lost: usize,
    /// Of `lost`, those the re-check dropped on resident state: the channels had passed
    /// them, so only an index disagreement drops one (`IndexRegistry::note_recheck_drops`).
    pub recheck_drops: usize,
}

/// Loads the resident part and the id of each of `ranked` into the cache, all at once: each
/// lies at its own place in memory, and the re-check and the hits' ids below would otherwise
/// wait for one cache miss after another (the id's copy was 10.5–11.7 % of a 128-d
/// `include: []` search's CPU in a profile, 4.6 % with this pass; docs/benchmarks.md,
/// issue 15). The loads here are independent of each other, so the CPU overlaps them; the sum
/// only keeps them from being optimised away.
///
/// Every field the re-check reads is loaded, not only the id, so that its reads of expiry,
/// scope and times hit the cache too whatever `SlotDoc`'s layout (docs/benchmarks.md,
/// issue 15, 1 Dec).
fn touch_resident(ci: &CollectionIndex, ranked: &[Ranked]) {
    let mut sum = 0u64;
    for r in ranked {
        if let Some(Some(doc)) = ci.docs.get(r.slot as usize) {
            sum ^= u64::from(doc.id.as_str().as_bytes().first().copied().unwrap_or(0));
            sum ^= u64::from(doc.scope.domain.get()) ^ u64::from(doc.scope.tokens);
            sum ^= doc.created_at as u64 ^ doc.expires_at().unwrap_or(0) as u64;
            sum ^= doc.confidence.to_bits() ^ u64::from(doc.index_bytes);
        }
    }
    std::hint::black_box(sum);
}

impl Searched {
    /// No hits, exactly: a collection with nothing to rank.
    pub(crate) fn empty(mode: SearchMode) -> Self {
        Searched {
            response: SearchResponse {
                hits: Vec::new(),
                mode,
                exact: true,
            },
            short: false,
            lost: 0,
            recheck_drops: 0,
        }
    }
}

/// Applies confidence and recency (`crate::ranking`) to the ranked candidates and sorts them
/// again; ties break by slot.
fn rerank(ranked: &mut [Ranked], ci: &CollectionIndex, boost: &crate::ranking::Boost) {
    let (min, max) = ranked
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), r| {
            (lo.min(r.score), hi.max(r.score))
        });
    for r in ranked.iter_mut() {
        let Some(doc) = ci.docs.get(r.slot as usize).and_then(|d| d.as_ref()) else {
            continue;
        };
        let n = crate::ranking::Boost::normalise(r.score, min, max);
        let out = boost.apply(n, doc.confidence, doc.created_at);
        r.explain.base_score = Some(r.score);
        r.explain.confidence = out.confidence;
        r.explain.recency_factor = out.recency;
        r.score = finite(out.score);
    }
    // Ties (every candidate at the default confidence when relevance weighs nothing) go to the
    // better match before the query-independent slot order.
    let base = |r: &Ranked| r.explain.base_score.unwrap_or(f32::NEG_INFINITY);
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(base(b).total_cmp(&base(a)))
            .then(a.slot.cmp(&b.slot))
    });
}

pub(crate) struct Ranked {
    pub slot: u32,
    pub score: f32,
    pub explain: HitExplain,
}

/// The vector channel's exact scores of `slots`, leaving out those without a vector: for the
/// candidates only the text channel found (`crate::fusion::Completion`).
fn exact_scores(
    ci: &CollectionIndex,
    query: &[f32],
    slots: &[u32],
) -> Result<Vec<Hit>, EngineError> {
    let slots: Vec<u32> = slots
        .iter()
        .copied()
        .filter(|s| ci.with_vector.contains(*s))
        .collect();
    let flat = ci.gather_vectors(&slots)?;
    // Scored as the vector channel scores them (the engine's vectors are prepared for the
    // metric), so a record's completed score is the one that channel would have given it.
    let query = strata_index::PreparedQuery::new(ci.metric, query);
    Ok(slots
        .iter()
        .zip(flat.chunks_exact(ci.dim))
        .map(|(&slot, v)| Hit {
            slot,
            score: finite(query.score(v)),
        })
        .collect())
}

/// The last guard before ranking and the response: every channel score is a finite number
/// (never `null` in JSON, never a NaN that `total_cmp` would rank first), and a candidate is
/// never dropped for its score, so "never fewer than k" holds. The index already saturates
/// vector scores (`Metric::finite_score`) and BM25 scores are bounded, so this only maps what
/// a future bug might let through; fused scores are then finite by construction.
fn finite_hits(mut hits: Vec<Hit>) -> Vec<Hit> {
    if hits.iter().any(|h| !h.score.is_finite()) {
        for h in &mut hits {
            h.score = finite(h.score);
        }
        sort_hits(&mut hits);
    }
    hits
}

fn finite(score: f32) -> f32 {
    if score.is_nan() {
        f32::MIN
    } else {
        score.clamp(f32::MIN, f32::MAX)
    }
}

fn single(hits: &[Hit], vector: bool) -> Vec<Ranked> {
    hits.iter()
        .enumerate()
        .map(|(i, h)| {
            let mut explain = HitExplain::default();
            if vector {
                (explain.vector_score, explain.vector_rank) = (Some(h.score), Some(i + 1));
            } else {
                (explain.text_score, explain.text_rank) = (Some(h.score), Some(i + 1));
            }
            Ranked {
                slot: h.slot,
                score: h.score,
                explain,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(v: &[(u32, f32)]) -> Vec<Hit> {
        v.iter().map(|&(slot, score)| Hit { slot, score }).collect()
    }

    #[test]
    fn non_finite_scores_rank_last_and_are_kept() {
        let guarded = finite_hits(hits(&[(1, f32::NAN), (2, f32::INFINITY), (3, -0.5)]));
        assert_eq!(guarded, hits(&[(2, f32::MAX), (3, -0.5), (1, f32::MIN)]));
    }

    #[test]
    fn a_zero_query_vector_is_refused_on_cosine_only() {
        let name = CollectionName::parse("img").expect("name");
        let err = check_query_direction(&[0.0, -0.0, 0.0], true, &name).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("vector: a zero vector has no direction"),
            "{message}"
        );
        assert!(matches!(err, EngineError::BadRequest(_)), "{err:?}");
        assert!(check_query_direction(&[0.0, 0.0, 0.0], false, &name).is_ok());
        assert!(check_query_direction(&[0.0, 1e-30, 0.0], true, &name).is_ok());
    }
}
