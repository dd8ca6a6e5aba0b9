//! The search planner: candidate sets as bitmaps, then an exact scan or a graph search with a
//! continuation that keeps the "never fewer than k" contract.
//!
//! Candidate bitmaps are supersets: scope bitmaps (domain, run, memory scope, principals) and
//! field-index bitmaps narrow the set, and the final word on every slot is the same code the
//! rest of the engine uses, `Visibility::sees` and `Filter::matches`, applied before top-k.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::Bound;

use serde_json::Value;
use strata_index::{Hit, RoaringBitmap, exact_top_k_prepared};
use strata_types::{FieldRef, Filter, UserMatch};

use crate::EngineError;
use crate::collection_index::{CollectionIndex, builtin_path, metadata_path};
use crate::visibility::{Principals, Visibility};

/// Exact scans are chosen while `candidates × dim` stays under this many multiply-adds
/// (about 16k candidates at 128 dimensions, 5k at 384): below it a SIMD scan beats the graph
/// and is exact.
pub(crate) const EXACT_BUDGET: u64 = 2_000_000;
/// The graph search widens its beam up to this before falling back to an exact scan.
const MAX_EF: usize = 4096;
/// Vectors copied out of a graph per step of an exact scan.
const EXACT_CHUNK: usize = 1024;

/// The slots a search considers before any record is looked at: a superset of the visible
/// ones. Computed without copying a bitmap when nothing narrows (the common case).
pub(crate) enum Candidates<'a> {
    /// Every live slot of the collection: the request's domain, run, memory scope and
    /// principals leave every record in (one domain, no run or scope asked, and every record
    /// tenant-shared or `*` principals). A search then needs no candidate bitmap at all.
    All,
    /// These slots; borrowed from the index when a single bitmap narrows.
    Some(Cow<'a, RoaringBitmap>),
}

impl Candidates<'_> {
    /// The candidate slots as a bitmap (`live` for [`Candidates::All`]).
    pub fn bitmap<'b>(&'b self, ci: &'b CollectionIndex) -> &'b RoaringBitmap {
        match self {
            Candidates::All => &ci.live,
            Candidates::Some(c) => c,
        }
    }
}

/// Slots that may be visible to `vis`; a superset of the visible ones.
///
/// Every scope bitmap is a subset of `live` (`CollectionIndex::place_scope` and `remove` keep
/// them together), so one holding as many slots as `live` is `live` and narrows nothing: it is
/// skipped by a length comparison instead of an intersection, so an unnarrowed search does no
/// work proportional to the collection's size here. What narrows is intersected into one owned
/// bitmap, starting from the smallest; a single narrowing bitmap is borrowed.
pub(crate) fn scope_candidates<'a>(ci: &'a CollectionIndex, vis: &Visibility) -> Candidates<'a> {
    let none = || Candidates::Some(Cow::Owned(RoaringBitmap::new()));
    let live = ci.live.len();
    // At most four terms: domain, run, memory scope, principals.
    let mut terms: Vec<Cow<'a, RoaringBitmap>> = Vec::new();
    let mut narrow = |b: Cow<'a, RoaringBitmap>| {
        if b.len() != live {
            terms.push(b);
        }
    };
    // The request's names are resolved to ids once; a name the collection's tables lack is
    // carried by none of its records.
    let names = &ci.names;
    let Some(domain) = names
        .domains
        .id(&vis.domain)
        .and_then(|d| ci.by_domain.get(d))
    else {
        return none();
    };
    narrow(Cow::Borrowed(domain));
    if let Some(run) = &vis.run_id {
        match names.runs.id(run).and_then(|r| ci.by_run.get(r)) {
            Some(b) => narrow(Cow::Borrowed(b)),
            None => return none(),
        }
    }
    if let Some(s) = &vis.memory_scope {
        match names.scopes.id(s).and_then(|s| ci.by_scope.get(s)) {
            Some(b) => narrow(Cow::Borrowed(b)),
            None => return none(),
        }
    }
    // Tenant-shared records are visible to every principal set, so when all records are
    // shared the principals narrow nothing (under `any` and `all` alike).
    if let Principals::Set(tokens, _) = &vis.principals
        && ci.shared.len() != live
    {
        let bound: Vec<&RoaringBitmap> = tokens
            .iter()
            .filter_map(|t| names.tokens.id(t).and_then(|t| ci.by_token.get(t)))
            .collect();
        if bound.is_empty() {
            narrow(Cow::Borrowed(&ci.shared));
        } else {
            let mut allowed = ci.shared.clone();
            for b in bound {
                allowed |= b;
            }
            narrow(Cow::Owned(allowed));
        }
    }
    terms.sort_by_key(|b| b.len());
    let mut terms = terms.into_iter();
    let Some(first) = terms.next() else {
        return Candidates::All;
    };
    let mut acc = match terms.next() {
        None => return Candidates::Some(first),
        Some(second) => first.as_ref() & second.as_ref(),
    };
    for b in terms {
        acc &= b.as_ref();
    }
    Candidates::Some(Cow::Owned(acc))
}

/// Exactly the slots among `within` that `vis` sees, given `scope = scope_candidates(ci, vis)`:
/// the records the caller may see, which BM25 statistics are computed over (docs/isolation.md,
/// rule 4). A filter does not narrow this set: filters choose among visible records, they do
/// not re-weight them.
///
/// The scope bitmaps decide domain, run, memory scope and `any` principal matching exactly.
/// What they leave open is settled without reading every record:
/// - expired records are subtracted through the field index, which holds every record's
///   `expires_at`: those at or before `vis.now` are exactly the ones `Record::is_expired`
///   rejects. (Expired records are never purged; subtracting their bitmaps costs far less than
///   reading each of them with `Visibility::sees`, which doubled the widest scope's median
///   latency in `docs/benchmarks.md`.)
/// - for `user_match: "all"`, a record with tokens is visible only when the request holds every
///   one of them, so records carrying any other token are subtracted through that token's
///   bitmap, or, when the collection has more distinct tokens than there are records to
///   decide, by `Visibility::sees` record by record.
pub(crate) fn visible_slots(
    ci: &CollectionIndex,
    vis: &Visibility,
    scope: &RoaringBitmap,
    within: &RoaringBitmap,
) -> RoaringBitmap {
    let mut visible = scope & within;
    visible -= ci.fields.range(
        &builtin_path("expires_at"),
        Bound::Unbounded,
        Bound::Included(strata_index::Num::Int(vis.now)),
    );
    if let Principals::Set(tokens, UserMatch::All) = &vis.principals {
        let with_tokens = &visible - &ci.shared;
        if (ci.by_token.len() as u64) < with_tokens.len() {
            // The request's tokens by id, resolved once (one it holds that no record carries
            // excuses nothing).
            let mut held: Vec<_> = tokens
                .iter()
                .filter_map(|t| ci.names.tokens.id(t))
                .collect();
            held.sort_unstable();
            for (token, slots) in ci.by_token.iter() {
                if held.binary_search(&token).is_err() {
                    visible -= slots;
                }
            }
        } else {
            let slots = vis.for_slots(&ci.names);
            for slot in &with_tokens {
                let seen = ci
                    .docs
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|d| slots.sees_slot(d));
                if !seen {
                    visible.remove(slot);
                }
            }
        }
    }
    visible
}

/// Slots the field index finds for a filter: a superset of the matches, or exactly the
/// matches when `exact` (then no record needs `Filter::matches` at search time).
pub(crate) struct Narrowed {
    pub slots: RoaringBitmap,
    pub exact: bool,
}

/// What the field index can say about `filter`; `None` when the filter has no indexable part.
pub(crate) fn filter_candidates(filter: &Filter, ci: &CollectionIndex) -> Option<Narrowed> {
    let exact = |slots| Some(Narrowed { slots, exact: true });
    match filter {
        Filter::And(parts) => {
            let narrowed: Vec<Narrowed> = parts
                .iter()
                .filter_map(|p| filter_candidates(p, ci))
                .collect();
            let all_exact = narrowed.len() == parts.len() && narrowed.iter().all(|n| n.exact);
            let slots = narrowed.into_iter().map(|n| n.slots).reduce(|a, b| a & b)?;
            Some(Narrowed {
                slots,
                exact: all_exact,
            })
        }
        Filter::Or(parts) => {
            let narrowed = parts
                .iter()
                .map(|p| filter_candidates(p, ci))
                .collect::<Option<Vec<_>>>()?;
            let all_exact = narrowed.iter().all(|n| n.exact);
            let slots = narrowed.into_iter().map(|n| n.slots).reduce(|a, b| a | b)?;
            Some(Narrowed {
                slots,
                exact: all_exact,
            })
        }
        Filter::Eq(field, v) => exact(equal_slots(ci, field, std::slice::from_ref(v))?),
        Filter::In(field, vs) => exact(equal_slots(ci, field, vs)?),
        // The complements of the two above, as the filter defines them (`!Eq`, `!In`): a
        // record without the field matches, so do records whose value is not a scalar.
        Filter::Ne(field, v) => exact(&ci.live - &equal_slots(ci, field, std::slice::from_ref(v))?),
        Filter::Nin(field, vs) => exact(&ci.live - &equal_slots(ci, field, vs)?),
        Filter::Range(field, ord, or_equal, bound) => {
            let path = field_path(field)?;
            if ci.fields.distinct_values(&path) > range_values_budget(ci) {
                // A range unions one bitmap per value within it: on a path holding far more
                // values than records (long arrays, arrays of objects), matching the
                // candidates' records is the cheaper plan, and a filter of many such ranges
                // would otherwise scan the values once per clause (seconds).
                return None;
            }
            match bound {
                Value::Number(n) => {
                    let (lo, hi) = bounds(*ord, *or_equal, strata_index::Num::of(n)?);
                    exact(ci.fields.range(&path, lo, hi))
                }
                Value::String(s) => {
                    let (lo, hi) = bounds(*ord, *or_equal, s.as_str());
                    exact(ci.fields.range_str(&path, lo, hi))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The most distinct values a path may hold for a range over it to be answered from the field
/// index: a few per live record.
fn range_values_budget(ci: &CollectionIndex) -> usize {
    ci.live.len() as usize * 4 + 4096
}

/// The slots whose `field` equals one of `values`, as `Filter::matches` decides it: one
/// lookup for the whole list (a column path is scanned once, not once per value), and `null`,
/// on a built-in field a record may lack, is every live slot without it. `None` when the
/// index cannot say (an operand that is not a scalar, `null` on metadata).
fn equal_slots(ci: &CollectionIndex, field: &FieldRef, values: &[Value]) -> Option<RoaringBitmap> {
    let path = field_path(field)?;
    let (nulls, scalars): (Vec<&Value>, Vec<&Value>) = values.iter().partition(|v| v.is_null());
    if !scalars.iter().all(|v| is_scalar(v)) || (!nulls.is_empty() && !field.is_optional_builtin())
    {
        return None;
    }
    let mut slots = if nulls.len() == values.len() {
        RoaringBitmap::new()
    } else if nulls.is_empty() {
        ci.fields.eq_many(&path, values)
    } else {
        let scalars: Vec<Value> = scalars.into_iter().cloned().collect();
        ci.fields.eq_many(&path, &scalars)
    };
    if !nulls.is_empty() {
        slots |= &ci.live - &ci.fields.exists(&path);
    }
    Some(slots)
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn bounds<T>(ord: Ordering, or_equal: bool, b: T) -> (Bound<T>, Bound<T>) {
    let edge = if or_equal {
        Bound::Included(b)
    } else {
        Bound::Excluded(b)
    };
    match ord {
        Ordering::Greater => (edge, Bound::Unbounded),
        _ => (Bound::Unbounded, edge),
    }
}

/// The field-index path of a filterable field, if the field is indexed.
fn field_path(field: &FieldRef) -> Option<String> {
    Some(match field {
        FieldRef::Kind => builtin_path("kind"),
        FieldRef::CreatedAt => builtin_path("created_at"),
        FieldRef::UpdatedAt => builtin_path("updated_at"),
        FieldRef::ExpiresAt => builtin_path("expires_at"),
        FieldRef::Confidence => builtin_path("confidence"),
        FieldRef::Metadata(path) => metadata_path(path),
        _ => return None,
    })
}

/// Vector top-`n` among `candidates` (slots with vectors) that pass `passes`. Returns the hits
/// and whether they are exact. Fewer than `need` hits (`need` ≤ `n`: the k a search answers)
/// means fewer than `need` candidates pass; the graph's beam is widened, up to an exact scan,
/// only while fewer than `need` are found, so between `need` and `n` hits the graph's answer
/// stands.
/// `unrestricted` says that the candidates are every vector of the collection and all pass,
/// so the graph can be searched without a per-node predicate. `beam_cap` caps the graph's
/// default beam for a search that names no `ef` (a tenant in integrity `stress` or
/// `critical` sheds a calibrated 512 or 1024, `crate::integrity::STRESS_MAX_EF`); the budget
/// and the first walk use the capped beam, and the widening that keeps "never fewer than
/// `need`" is not capped.
#[allow(clippy::too_many_arguments)]
pub(crate) fn vector_top(
    ci: &CollectionIndex,
    candidates: &RoaringBitmap,
    unrestricted: bool,
    query: &[f32],
    n: usize,
    need: usize,
    ef: Option<usize>,
    beam_cap: Option<usize>,
    passes: &dyn Fn(u32) -> bool,
) -> Result<(Vec<Hit>, bool), EngineError> {
    debug_assert!(
        !unrestricted || candidates.len() == ci.with_vector.len(),
        "an unrestricted search's candidates are every vector"
    );
    let exact = |_: ()| -> Result<(Vec<Hit>, bool), EngineError> {
        // The engine's vectors, its copy's and the graph's alike, are prepared for the metric
        // (unit length for cosine), so each is scored by one dot product.
        //
        // Every vector a candidate and every candidate passing: the copy is read straight
        // through, without a bitmap walk and a predicate per slot (a third of a 1,000-vector
        // tenant's search, docs/benchmarks.md, "Small tenants' exact scans read straight").
        if unrestricted && let Some(flat) = ci.dense_vectors() {
            let iter = (0u32..).zip(flat.chunks_exact(ci.dim));
            return Ok((exact_top_k_prepared(ci.metric, query, iter, n), true));
        }
        let passing = candidates.iter().filter(|s| passes(*s));
        if ci.has_vector_copy() {
            let iter = passing.filter_map(|s| Some((s, ci.vector_copy(s)?)));
            return Ok((exact_top_k_prepared(ci.metric, query, iter, n), true));
        }
        // The vectors live in the graph only: copied out a chunk at a time, so a wide exact
        // scan never holds more than one chunk of copies.
        let slots: Vec<u32> = passing.collect();
        let mut hits = Vec::new();
        for chunk in slots.chunks(EXACT_CHUNK) {
            let flat = ci.gather_vectors(chunk)?;
            let iter = chunk.iter().copied().zip(flat.chunks_exact(ci.dim));
            hits.extend(exact_top_k_prepared(ci.metric, query, iter, n));
        }
        strata_index::exact::sort_hits(&mut hits);
        hits.truncate(n);
        Ok((hits, true))
    };
    let default_ef = |g: &strata_index::HnswIndex| {
        let ef = g.default_ef();
        beam_cap.map_or(ef, |cap| ef.min(cap))
    };
    let graph = match &ci.graph {
        Some(g) if graph_pays(candidates.len(), ci.dim, ef, default_ef(g)) => g,
        _ => return exact(()),
    };
    let mut ef = ef.unwrap_or_else(|| default_ef(graph)).max(n);
    loop {
        #[cfg(test)]
        BEAMS.with(|b| b.borrow_mut().push(ef));
        let hits = if unrestricted {
            graph.search(query, n, Some(ef))
        } else {
            graph.search_filtered(query, n, Some(ef), |s| candidates.contains(s) && passes(s))
        }
        .map_err(|e| EngineError::Index(e.to_string()))?;
        // Widened only while fewer than `need` pass: candidates beyond it (a retry's
        // spares, a reranked or fused pool) are not worth a wider walk or an exact scan.
        if hits.len() >= n.min(need) {
            return Ok((hits, false));
        }
        if ef >= MAX_EF {
            // The graph could not find n passing neighbours: settle it exactly.
            return exact(());
        }
        ef = (ef * 4).min(MAX_EF);
    }
}

#[cfg(test)]
thread_local! {
    /// The beams of this thread's graph walks in `vector_top`, in order (what tests check the
    /// effective `ef` by).
    pub(crate) static BEAMS: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The `ef` at which [`EXACT_BUDGET`] was tuned.
const BUDGET_EF: usize = 64;

/// Whether a graph search is chosen over an exact scan of `candidates` vectors of `dim`.
/// A graph search's work grows about linearly with its beam, and [`EXACT_BUDGET`] is where the
/// graph beats the scan at `ef` 64. A graph calibrated to a wider default beam (256–1024 on
/// hard data) does 4–16 times that work, so without a request `ef` the budget grows with the
/// default beam: below it the exact scan (recall 1.0) is also the cheaper one. A request that
/// names its `ef` chose its trade-off, and keeps the budget tuned at 64.
pub(crate) fn graph_pays(
    candidates: u64,
    dim: usize,
    ef: Option<usize>,
    default_ef: usize,
) -> bool {
    let scale = match ef {
        Some(_) => 1,
        None => (default_ef / BUDGET_EF).max(1) as u64,
    };
    candidates * dim as u64 > EXACT_BUDGET.saturating_mul(scale)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
