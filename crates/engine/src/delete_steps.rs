//! A delete by filter in steps. Finding what a filter matches reads every candidate record of
//! the request's scope; inside the write transaction that held the tenant's write lock (and,
//! for a shared tenant, every shared tenant's writes) for as long as the scan. Instead:
//! 1. the matching ids are found by a read scan in steps (`crate::scan_steps`, one storage
//!    snapshot), outside any transaction;
//! 2. they are deleted in transactions of at most [`DELETE_CHUNK`] records (fewer when their
//!    links reach [`DELETE_CHUNK_LINKS`]), each its own step, and each record is checked
//!    again in the transaction that deletes it: it still exists, the request still sees it
//!    and may write it, it still matches the filter, and it was not written again after the
//!    request began. A record changed meanwhile so that it no longer matches is left, and so
//!    is one written again since (replaced by a put with its id, or patched): its writer did
//!    not know of this delete.
//!
//! So the write lock is held for time proportional to the matches, a chunk at a time, never
//! to the tenant. What it means for a caller: records written after the scan began are not
//! deleted by it; a failure part-way (a full disk, a suspended tenant, or a caller that stops
//! running the steps, as the API does when its client hangs up) leaves the chunks before it
//! deleted and the rest in place, and answers with the error alone (how many were deleted
//! is then unknown to the caller); a retry of the same request deletes the rest (what was
//! deleted no longer matches anything) and counts only those.

use strata_auth::{Permission, TenantScope};
use strata_store::{StoreError, TenantKey, Writer};
use strata_types::{Filter, Millis, Record, RecordId, RequestScope, now_millis};

use crate::records::delete_record_and_links;
use crate::scan::Vectors;
use crate::scan_steps::{Cursor, Stepped};
use crate::visibility::Visibility;
use crate::{Engine, EngineError};

/// Records deleted per transaction: as many as the largest write batch (the default
/// `max_batch`), so a delete by filter holds the write lock about as long as a write may.
pub(crate) const DELETE_CHUNK: usize = 1000;

/// Each record deleted takes its stored links with it (up to 20,000 of them), so a chunk also
/// ends once its records' links reach this many rows: a chunk of heavily linked records would
/// otherwise remove millions of rows under the write lock. Twenty records at the link limit;
/// a thousand with twenty links each.
pub(crate) const DELETE_CHUNK_LINKS: usize = 20_000;

/// A delete by filter under way (see [`Engine::begin_delete_where`]).
pub struct PendingDelete {
    scope: TenantScope,
    /// Checked again against each record in the transaction that deletes it.
    filter: Filter,
    /// When the request began: a record last written in a later millisecond is not deleted.
    /// One written in the same millisecond is: a write acknowledged before the request was
    /// sent may carry it, and deleting a concurrent one orders it before the delete.
    pub(crate) started: Millis,
    phase: Phase,
    pub(crate) chunk: usize,
    /// Link rows after which a chunk ends ([`DELETE_CHUNK_LINKS`]; tests lower it).
    pub(crate) chunk_links: usize,
    deleted: u64,
}

enum Phase {
    /// Finding the visible, writable records that match.
    Scanning {
        cursor: Box<Cursor>,
        doomed: Vec<RecordId>,
    },
    /// Deleting the records found, a chunk a step.
    Deleting {
        vis: Visibility,
        chunks: DeleteChunks,
    },
}

impl PendingDelete {
    /// Whether the next step writes (deletes a chunk) rather than reads: it needs a worker
    /// that may take the write lock.
    pub fn writes_next(&self) -> bool {
        matches!(self.phase, Phase::Deleting { .. })
    }

    #[cfg(test)]
    pub(crate) fn cursor_mut(&mut self) -> Option<&mut Cursor> {
        match &mut self.phase {
            Phase::Scanning { cursor, .. } => Some(&mut **cursor),
            Phase::Deleting { .. } => None,
        }
    }
}

impl Engine {
    /// Checks a delete by filter (credential, tenant) and takes the snapshot its scan reads.
    /// Deletes nothing: [`Engine::delete_where_step`] does. A record the request sees but may
    /// not write (a tenant-shared one, for a credential bound to user tokens) is left alone
    /// like one it cannot see: the scope of a delete narrows what it deletes.
    pub fn begin_delete_where(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        filter: Filter,
    ) -> Result<PendingDelete, EngineError> {
        let started = now_millis();
        // Records past their `expires_at` are deleted too: forgetting an end user must not
        // leave the records that merely expired, and not yet swept, on disk.
        let vis = Visibility::resolve(scope, req, Permission::Write, started)?.with_expired();
        // Only ids and scope fields are read: no vector is copied.
        let cursor = Cursor::open(
            self,
            scope,
            Permission::Write,
            vis,
            Some(filter.clone()),
            None,
            Vectors::Skip,
        )?;
        Ok(PendingDelete {
            scope: scope.clone(),
            filter,
            started,
            phase: Phase::Scanning {
                cursor: Box::new(cursor),
                doomed: Vec::new(),
            },
            chunk: DELETE_CHUNK,
            chunk_links: DELETE_CHUNK_LINKS,
            deleted: 0,
        })
    }

    /// The next step of `pending`: a step of its scan, or one transaction deleting the next
    /// chunk of what the scan found. Done with how many records were deleted.
    pub fn delete_where_step(
        &self,
        pending: PendingDelete,
    ) -> Result<Stepped<PendingDelete, u64>, EngineError> {
        let PendingDelete {
            scope,
            filter,
            started,
            phase,
            chunk,
            chunk_links,
            mut deleted,
        } = pending;
        let phase = match phase {
            Phase::Scanning {
                mut cursor,
                mut doomed,
            } => {
                let vis = cursor.vis.clone();
                let over = cursor.step(self, |r| {
                    if vis.may_write(&r) {
                        doomed.push(r.id);
                    }
                    true
                })?;
                if !over {
                    Phase::Scanning { cursor, doomed }
                } else {
                    // The scan's snapshot is let go here, before any transaction. A delete
                    // that matched nothing still runs one (empty) transaction: every
                    // acknowledged write leaves its audit row, and a paused tenant refuses it.
                    Phase::Deleting {
                        vis,
                        chunks: DeleteChunks::new(doomed, chunk, chunk_links),
                    }
                }
            }
            Phase::Deleting { vis, mut chunks } => {
                let doomed = Doomed {
                    vis: &vis,
                    filter: &filter,
                    started,
                };
                let (n, over) = chunks.delete_next(
                    self,
                    &scope,
                    "memory.delete_where",
                    |w, key, id| Vectors::Skip.record(w, key, id),
                    |r| doomed.still(r),
                )?;
                deleted += n;
                if over {
                    return Ok(Stepped::Done(deleted));
                }
                Phase::Deleting { vis, chunks }
            }
        };
        Ok(Stepped::More(Box::new(PendingDelete {
            scope,
            filter,
            started,
            phase,
            chunk,
            chunk_links,
            deleted,
        })))
    }
}

/// Records found to delete, deleted a chunk at a time, each chunk one transaction of at most
/// `chunk` records, ending early once its records' links reach `chunk_links` rows. Shared by
/// the delete by filter and the delete of a collection (`crate::collection_delete`).
pub(crate) struct DeleteChunks {
    doomed: Vec<RecordId>,
    /// The first not yet tried.
    next: usize,
    /// Chunks are numbered from 0, so each chunk's audit row says where it stands.
    index: usize,
    chunk: usize,
    chunk_links: usize,
}

impl DeleteChunks {
    pub(crate) fn new(doomed: Vec<RecordId>, chunk: usize, chunk_links: usize) -> DeleteChunks {
        DeleteChunks {
            doomed,
            next: 0,
            index: 0,
            chunk,
            chunk_links,
        }
    }

    /// In one transaction audited as `action`, deletes those of the next chunk's ids that
    /// `fetch` still finds and `still` still accepts, with their links (their usage goes back
    /// with each `Change::Remove`). How many were deleted, and whether every id is now tried.
    /// With no ids left it still runs one (empty) transaction: every acknowledged write leaves
    /// its audit row, and a paused tenant refuses it.
    pub(crate) fn delete_next(
        &mut self,
        engine: &Engine,
        scope: &TenantScope,
        action: &str,
        fetch: impl Fn(&Writer<'_>, TenantKey, &RecordId) -> Result<Option<Record>, StoreError>,
        still: impl Fn(&Record) -> bool,
    ) -> Result<(u64, bool), EngineError> {
        let always = |_: &Writer<'_>, _: TenantKey| Ok(true);
        // With a guard that always holds, the chunk is never refused.
        Ok(self
            .delete_next_while(engine, scope, action, always, fetch, still)?
            .unwrap_or((0, true)))
    }

    /// [`DeleteChunks::delete_next`], first asking `guard` in the chunk's own transaction
    /// whether the delete still stands: when it does not, the transaction is rolled back, so
    /// nothing is written (not even an audit row), and the answer is `None`.
    pub(crate) fn delete_next_while(
        &mut self,
        engine: &Engine,
        scope: &TenantScope,
        action: &str,
        guard: impl Fn(&Writer<'_>, TenantKey) -> Result<bool, EngineError>,
        fetch: impl Fn(&Writer<'_>, TenantKey, &RecordId) -> Result<Option<Record>, StoreError>,
        still: impl Fn(&Record) -> bool,
    ) -> Result<Option<(u64, bool)>, EngineError> {
        let end = self.doomed.len().min(self.next + self.chunk.max(1));
        let ids = &self.doomed[self.next..end];
        let (chunk_links, index, key) = (self.chunk_links, self.index, scope.key());
        let refused = std::cell::Cell::new(false);
        let done = engine.write_tenant_inner(scope, action, true, |w, changes| {
            if !guard(w, key)? {
                // An error rolls the transaction back; `refused` tells it from a real one.
                refused.set(true);
                return Err(EngineError::NotFound);
            }
            let (mut n, mut links, mut tried) = (0, 0, 0);
            for id in ids {
                tried += 1;
                let Some(record) = fetch(w, key, id)? else {
                    continue;
                };
                if still(&record) {
                    links += delete_record_and_links(w, changes, scope, id)?;
                    n += 1;
                    if links >= chunk_links {
                        break;
                    }
                }
            }
            // The usual summary (records removed, their first ids), and which chunk it was.
            let mut detail = crate::change_summary(changes);
            detail["chunk"] = index.into();
            Ok(((n, tried), Some(detail)))
        });
        let (n, tried) = match done {
            Err(_) if refused.get() => return Ok(None),
            done => done?,
        };
        self.next += tried;
        self.index += 1;
        Ok(Some((n, self.next == self.doomed.len())))
    }
}

/// What a record must still be, in the transaction that deletes it, to be deleted.
#[derive(Clone, Copy)]
struct Doomed<'a> {
    vis: &'a Visibility,
    filter: &'a Filter,
    started: Millis,
}

impl Doomed<'_> {
    /// Visible to and writable by the request, matching its filter, and not written since the
    /// request began.
    fn still(&self, record: &Record) -> bool {
        record.updated_at <= self.started
            && self.vis.sees(record)
            && self.vis.may_write(record)
            && self.filter.matches(record)
    }
}
