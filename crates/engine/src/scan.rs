//! Listing and counting visible records, driven by the per-tenant scope indexes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::Serialize;
use strata_auth::{Permission, TenantScope};
use strata_store::{Reads, ScopeField, StoreError, TenantKey};
use strata_types::{Filter, Record, RecordId, RequestScope, now_millis};

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
    /// reads vectors (`vector` cannot be filtered on), so skipping them changes no page.
    pub fn scan_with(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        filter: Option<&Filter>,
        page: Page,
        vectors: Vectors,
    ) -> Result<ScanPage, EngineError> {
        if page.limit == 0 || page.limit > MAX_PAGE {
            return Err(EngineError::BadRequest(format!(
                "limit: must be 1 to {MAX_PAGE}"
            )));
        }
        let vis = Visibility::resolve(scope, req, Permission::Read, now_millis())?;
        let mut records = Vec::with_capacity(page.limit.min(64));
        let mut more = false;
        self.read_tenant(scope, Permission::Read, |r| {
            let after = page.after.as_ref();
            for_each_visible(r, scope.key(), &vis, filter, after, vectors, |rec| {
                if records.len() == page.limit {
                    more = true;
                    return false;
                }
                records.push(rec);
                true
            })
        })?;
        let next = if more {
            records.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(ScanPage { records, next })
    }

    /// How many visible records match `filter`.
    pub fn count(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        filter: Option<&Filter>,
    ) -> Result<u64, EngineError> {
        let vis = Visibility::resolve(scope, req, Permission::Read, now_millis())?;
        let mut n = 0;
        self.read_tenant(scope, Permission::Read, |r| {
            // Counting reads no vector.
            for_each_visible(r, scope.key(), &vis, filter, None, Vectors::Skip, |_| {
                n += 1;
                true
            })
        })?;
        Ok(n)
    }
}

/// Calls `f` with every record visible to `vis` and matching `filter`, in id order, after
/// `after`, until `f` returns `false`, each with its vector or without (`vectors`). Reads only
/// the narrowest scope-index lists that can hold visible records, never the whole tenant.
pub(crate) fn for_each_visible(
    r: &impl Reads,
    key: TenantKey,
    vis: &Visibility,
    filter: Option<&Filter>,
    after: Option<&RecordId>,
    vectors: Vectors,
    mut f: impl FnMut(Record) -> bool,
) -> Result<(), EngineError> {
    for id in candidate_ids(r, key, vis, after)? {
        let id = id?;
        let Some(record) = vectors.record(r, key, &id)? else {
            return Err(
                StoreError::Corrupt(format!("scope index names missing record {id}")).into(),
            );
        };
        if vis.sees(&record) && filter.is_none_or(|f| f.matches(&record)) && !f(record) {
            break;
        }
    }
    Ok(())
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
