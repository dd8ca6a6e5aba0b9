//! Listing and counting visible records, driven by the per-tenant scope indexes, in steps of
//! bounded cost (`crate::scan_steps`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::Serialize;
use strata_auth::TenantScope;
use strata_store::{Reads, ScopeField, StoreError, TenantKey};
use strata_types::{Filter, Record, RecordId, RequestScope};

use crate::scan_steps::{Budget, Stepped};
use crate::visibility::{Principals, Visibility};
use crate::{Engine, EngineError};

/// The largest page a scan returns.
pub const MAX_PAGE: usize = 1000;

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Start after this id (the previous page's `next`).
    pub after: Option<RecordId>,
    pub limit: usize,
}

/// Whether a read returns the records' vectors, or skips them while decoding (`vector: None`):
/// an answer that does not carry vectors need not copy them out of storage (384 floats, 1.5 KB,
/// per record of a MiniLM collection). A skipped vector is still read and checked, so a record
/// that does not decode is an error either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vectors {
    Read,
    Skip,
}

impl Vectors {
    /// Record `id` of tenant `key`, its vector read or skipped.
    pub(crate) fn record(
        self,
        r: &impl Reads,
        key: TenantKey,
        id: &RecordId,
    ) -> Result<Option<Record>, StoreError> {
        match self {
            Vectors::Read => r.record(key, id),
            Vectors::Skip => r.record_without_vector(key, id),
        }
    }
}

/// One page of records in id order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScanPage {
    pub records: Vec<Record>,
    /// Pass as `after` to get the next page; `None` when this page reached the end.
    pub next: Option<RecordId>,
}

impl Engine {
    /// Visible records matching `filter`, in id order, one page at a time, with their vectors.
    pub fn scan(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        filter: Option<&Filter>,
        page: Page,
    ) -> Result<ScanPage, EngineError> {
        self.scan_with(scope, req, filter, page, Vectors::Read)
    }

    /// [`Engine::scan`], the records' vectors read or skipped (`vector: None`). A filter never
    /// reads vectors (`vector` cannot be filtered on), so skipping them changes no page. Runs
    /// every step of [`Engine::begin_page`] in this call; a caller on the shared pool runs
    /// them as separate jobs instead.
    pub fn scan_with(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        filter: Option<&Filter>,
        page: Page,
        vectors: Vectors,
    ) -> Result<ScanPage, EngineError> {
        let mut pending = self.begin_page(scope, req, filter.cloned(), page, vectors)?;
        loop {
            match self.page_step(pending)? {
                Stepped::Done(page) => return Ok(page),
                Stepped::More(p) => pending = *p,
            }
        }
    }

    /// How many visible records match `filter`. Runs every step of [`Engine::begin_count`] in
    /// this call.
    pub fn count(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        filter: Option<&Filter>,
    ) -> Result<u64, EngineError> {
        let mut pending = self.begin_count(scope, req, filter.cloned())?;
        loop {
            match self.count_step(pending)? {
                Stepped::Done(n) => return Ok(n),
                Stepped::More(p) => pending = *p,
            }
        }
    }
}

/// How far a walk over the candidates got.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Every candidate was read.
    Ended,
    /// The visitor asked to stop.
    Stopped,
    /// The step's budget ran out; the walk resumes after this candidate.
    Paused(RecordId),
}

/// Which records a walk hands on, and how it reads them.
pub(crate) struct Selection<'a> {
    pub vis: &'a Visibility,
    pub filter: Option<&'a Filter>,
    /// Each record with its vector or without.
    pub vectors: Vectors,
}

/// Calls `f` with every record visible to `sel.vis` and matching `sel.filter`, in id order,
/// after `after`, until `f` returns `false` or `budget` runs out. Reads only the narrowest
/// scope-index lists that can hold visible records, never the whole tenant. At least one
/// candidate is read, so every walk moves on.
pub(crate) fn walk_visible(
    r: &impl Reads,
    key: TenantKey,
    sel: &Selection<'_>,
    after: Option<&RecordId>,
    budget: &mut Budget,
    mut f: impl FnMut(Record) -> bool,
) -> Result<Walk, EngineError> {
    let Selection {
        vis,
        filter,
        vectors,
    } = sel;
    for id in candidate_ids(r, key, vis, after)? {
        let id = id?;
        match vectors.record(r, key, &id)? {
            Some(record) => {
                if vis.sees(&record) && filter.is_none_or(|f| f.matches(&record)) && !f(record) {
                    return Ok(Walk::Stopped);
                }
            }
            // Hidden by the store: a record of a collection being deleted keeps its scope
            // entries until the delete takes it.
            None if r.stored_record(key, &id)?.is_some() => {}
            None => {
                return Err(
                    StoreError::Corrupt(format!("scope index names missing record {id}")).into(),
                );
            }
        }
        if budget.charge() {
            return Ok(Walk::Paused(id));
        }
    }
    Ok(Walk::Ended)
}

type IdIter<'a> = Box<dyn Iterator<Item = Result<RecordId, StoreError>> + 'a>;

fn candidate_ids<'a>(
    r: &'a impl Reads,
    key: TenantKey,
    vis: &Visibility,
    after: Option<&RecordId>,
) -> Result<IdIter<'a>, StoreError> {
    let d = &vis.domain;
    if let Some(run) = &vis.run_id {
        return r.scope_ids(key, d, ScopeField::RunId, run.as_str(), after);
    }
    if let Some(s) = &vis.memory_scope {
        return r.scope_ids(key, d, ScopeField::MemoryScope, s.as_str(), after);
    }
    match &vis.principals {
        Principals::All => r.scope_ids(key, d, ScopeField::Domain, "", after),
        // Every visible record is shared or carries one of the request's tokens, under both
        // `any` and `all`: the union of those lists holds them all.
        Principals::Set(tokens, _) => {
            let mut lists = vec![r.scope_ids(key, d, ScopeField::Shared, "", after)?];
            for t in tokens {
                lists.push(r.scope_ids(key, d, ScopeField::UserToken, t.as_str(), after)?);
            }
            Ok(if lists.len() == 1 {
                lists.remove(0)
            } else {
                Box::new(merge_sorted(lists))
            })
        }
    }
}

/// Merges id-sorted lists into one sorted list without duplicates.
fn merge_sorted(lists: Vec<IdIter<'_>>) -> impl Iterator<Item = Result<RecordId, StoreError>> + '_ {
    let mut lists = lists;
    let mut heap = BinaryHeap::new();
    let mut pending_error = None;
    for (i, list) in lists.iter_mut().enumerate() {
        match list.next() {
            Some(Ok(id)) => heap.push(Reverse((id, i))),
            Some(Err(e)) => pending_error = Some(e),
            None => {}
        }
    }
    let mut last: Option<RecordId> = None;
    std::iter::from_fn(move || {
        if let Some(e) = pending_error.take() {
            return Some(Err(e));
        }
        while let Some(Reverse((id, i))) = heap.pop() {
            match lists[i].next() {
                Some(Ok(next)) => heap.push(Reverse((next, i))),
                Some(Err(e)) => return Some(Err(e)),
                None => {}
            }
            if last.as_ref() != Some(&id) {
                last = Some(id.clone());
                return Some(Ok(id));
            }
        }
        None
    })
}
