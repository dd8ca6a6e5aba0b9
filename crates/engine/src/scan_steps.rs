//! Counting and listing in steps of bounded cost. A count with a heavy filter over a tenant of
//! 200,000 records takes seconds of one core; done in one call it would hold a worker of the
//! shared pool all that time, and the fair queue cannot preempt a running job, so every other
//! tenant's search would wait. Instead the API runs [`Engine::begin_count`] (or
//! [`Engine::begin_page`]) and then [`Engine::count_step`] (or [`Engine::page_step`]) until it
//! is [`Stepped::Done`], each step its own job in the tenant's fair share, so other tenants'
//! jobs run between the steps and a tenant's large scan queues behind its own requests.
//!
//! One storage snapshot serves the steps of a scan (a [`Reader`] owns its read transaction),
//! so a stepped answer is the one-call answer as of the scan's start: records written or
//! deleted meanwhile are not seen, and expiry is judged at the start. The walk resumes after
//! the last candidate id it read; the scope lists are in id order. Each step first checks that
//! the tenant is still live (from memory, `liveness`), so a suspended or deleted tenant's scan
//! stops at its next step.
//!
//! A kept snapshot is not free. It holds back the storage engine's reuse of pages freed after
//! it began, and one begun before a vacuum's swap keeps the replaced main file open (every
//! tenant's bytes, a purged tenant's too, its disk space and a second page cache) until it
//! ends; a vacuum does not wait for it. So a scan takes a fresh snapshot at its next step once
//! the main file was vacuumed since its snapshot began, or once its snapshot is
//! [`MAX_SNAPSHOT_AGE`] old, and goes on after the last candidate it read. Its answer is then
//! no longer as of one instant: a record created or deleted (or changed) after the scan began
//! may or may not be seen; every record that existed throughout is seen once.

use std::time::{Duration, Instant};

use strata_auth::{Permission, TenantScope};
use strata_store::Reader;
use strata_types::{Filter, Record, RecordId, RequestScope, now_millis};

use crate::scan::{MAX_PAGE, Page, ScanPage, Selection, Vectors, Walk, walk_visible};
use crate::visibility::Visibility;
use crate::{Engine, EngineError};

/// Where a stepped operation stands after one step.
#[derive(Debug)]
pub enum Stepped<P, T> {
    /// Not finished: run the next step on this.
    More(Box<P>),
    Done(T),
}

/// What one step of a scan may spend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepSize {
    /// Candidate records read, each weighed by the filter it is checked against (see
    /// [`Budget`]): a step without a filter reads this many.
    pub reads: u64,
    /// Wall time: a step stops at its first candidate past it, whatever its reads. Records
    /// differ in size (metadata up to its limit), which the read count does not see.
    pub time: Duration,
}

/// About 1,024 records read and decoded without their vectors (some microseconds each in a
/// release build), or about 30 checked against a filter of a thousand clauses that cannot be
/// joined into one `$in`: a few milliseconds of one core either way, and at most `time`.
/// Short enough that another tenant's search waits for at most a step of it, long enough that
/// a step's own overhead (a queue round trip, tens of microseconds) stays small.
pub(crate) const STEP_SIZE: StepSize = StepSize {
    reads: 1024,
    time: Duration::from_millis(10),
};

/// How long a scan keeps one storage snapshot: past it, its next step takes a fresh one. Pages
/// freed after the oldest snapshot began are not reused while it lives, so a long scan beside
/// busy writers would grow the file.
pub(crate) const MAX_SNAPSHOT_AGE: Duration = Duration::from_secs(30);

/// Checking this many clauses of a filter costs about as much as reading and decoding one
/// record without its vector (an estimate from the relative costs of a decode and a
/// comparison, not a measured figure; the time bound covers an error in it).
const CLAUSES_PER_READ: u64 = 32;

/// What is left of one step's [`StepSize`].
pub(crate) struct Budget {
    /// In units of one clause check.
    left: u64,
    per_record: u64,
    deadline: Instant,
    /// Candidates read so far in this step.
    pub reads: u64,
}

impl Budget {
    pub(crate) fn new(size: StepSize, filter: Option<&Filter>) -> Budget {
        Budget {
            left: size.reads.saturating_mul(CLAUSES_PER_READ),
            per_record: CLAUSES_PER_READ + filter.map_or(0, weight),
            deadline: Instant::now() + size.time,
            reads: 0,
        }
    }

    /// Charges one candidate read; `true` when the step must stop after it.
    pub(crate) fn charge(&mut self) -> bool {
        self.reads += 1;
        self.left = self.left.saturating_sub(self.per_record);
        self.left == 0 || Instant::now() >= self.deadline
    }
}

/// A filter's cost on one record, in clause checks: every clause and combinator counts one
/// (an `$in` list is hashed, so it counts one too).
fn weight(filter: &Filter) -> u64 {
    match filter {
        Filter::And(all) | Filter::Or(all) => 1 + all.iter().map(weight).sum::<u64>(),
        _ => 1,
    }
}

/// One storage snapshot kept across the steps of an operation, renewed at a step once the main
/// file was vacuumed since it began or once it is [`MAX_SNAPSHOT_AGE`] old (module docs). Each
/// step first checks the tenant and the credential's grant again.
pub(crate) struct KeptSnapshot {
    scope: TenantScope,
    /// What the operation needs of the credential; checked again at every step.
    permission: Permission,
    reader: Reader,
    /// The store's vacuum count read before `reader` began: once it changed, `reader` reads a
    /// replaced file.
    vacuums: u64,
    /// When `reader` began.
    taken: Instant,
    /// How long a snapshot is kept ([`MAX_SNAPSHOT_AGE`]; tests shorten it).
    pub(crate) max_age: Duration,
    /// Fresh snapshots taken after the first (tests check a vacuum or age causes one).
    pub(crate) renewed: u64,
}

impl KeptSnapshot {
    pub(crate) fn take(
        engine: &Engine,
        scope: &TenantScope,
        permission: Permission,
    ) -> Result<KeptSnapshot, EngineError> {
        // Read before the snapshot begins: a vacuum between the two renews it needlessly,
        // never leaves a replaced file unnoticed.
        let vacuums = engine.store.vacuums();
        Ok(KeptSnapshot {
            reader: engine.tenant_snapshot(scope, permission)?,
            vacuums,
            taken: Instant::now(),
            max_age: MAX_SNAPSHOT_AGE,
            renewed: 0,
            scope: scope.clone(),
            permission,
        })
    }

    pub(crate) fn scope(&self) -> &TenantScope {
        &self.scope
    }

    /// The snapshot a step reads: a fresh one when this one is due for renewal, after the
    /// tenant and the credential are checked again either way.
    pub(crate) fn for_step(&mut self, engine: &Engine) -> Result<&Reader, EngineError> {
        let vacuums = engine.store.vacuums();
        if vacuums != self.vacuums || self.taken.elapsed() >= self.max_age {
            // Checks the tenant and the credential's grant as `check_readable` does.
            self.reader = engine.tenant_snapshot(&self.scope, self.permission)?;
            self.vacuums = vacuums;
            self.taken = Instant::now();
            self.renewed += 1;
        } else {
            // From memory while no registry row changed (`liveness`): a few atomic reads.
            engine.check_readable(&self.scope, self.permission)?;
        }
        Ok(&self.reader)
    }
}

/// A walk over a tenant's visible candidates in id order, one step at a time, on one storage
/// snapshot kept across the steps.
pub(crate) struct Cursor {
    pub(crate) kept: KeptSnapshot,
    pub(crate) vis: Visibility,
    pub(crate) filter: Option<Filter>,
    /// The last candidate read; `None` before the first step.
    after: Option<RecordId>,
    vectors: Vectors,
    pub(crate) size: StepSize,
    /// Candidates the last step read (tests bound a step's cost with it).
    pub(crate) last_reads: u64,
}

impl Cursor {
    pub(crate) fn open(
        engine: &Engine,
        scope: &TenantScope,
        permission: Permission,
        vis: Visibility,
        filter: Option<Filter>,
        after: Option<RecordId>,
        vectors: Vectors,
    ) -> Result<Cursor, EngineError> {
        Ok(Cursor {
            kept: KeptSnapshot::take(engine, scope, permission)?,
            vis,
            filter,
            after,
            vectors,
            size: STEP_SIZE,
            last_reads: 0,
        })
    }

    /// Calls `f` with the next visible matching records until it returns `false` or the step's
    /// budget runs out. `Ok(true)` when the walk is over: every candidate read, or `f` asked
    /// to stop.
    pub(crate) fn step(
        &mut self,
        engine: &Engine,
        f: impl FnMut(Record) -> bool,
    ) -> Result<bool, EngineError> {
        let key = self.kept.scope().key();
        let snapshot = self.kept.for_step(engine)?;
        let mut budget = Budget::new(self.size, self.filter.as_ref());
        let selection = Selection {
            vis: &self.vis,
            filter: self.filter.as_ref(),
            vectors: self.vectors,
        };
        let walk = walk_visible(
            snapshot,
            key,
            &selection,
            self.after.as_ref(),
            &mut budget,
            f,
        );
        self.last_reads = budget.reads;
        match walk? {
            Walk::Paused(id) => {
                self.after = Some(id);
                Ok(false)
            }
            Walk::Ended | Walk::Stopped => Ok(true),
        }
    }
}

/// A count under way (see [`Engine::begin_count`]).
pub struct PendingCount {
    pub(crate) cursor: Cursor,
    counted: u64,
}

/// A page of a listing under way (see [`Engine::begin_page`]).
pub struct PendingPage {
    pub(crate) cursor: Cursor,
    limit: usize,
    records: Vec<Record>,
    /// A match past the page's end was found: the page has a `next`.
    more: bool,
}

impl Engine {
    /// Checks a count (credential, tenant) and takes the snapshot it counts in. Reads no
    /// record: [`Engine::count_step`] does.
    pub fn begin_count(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        filter: Option<Filter>,
    ) -> Result<PendingCount, EngineError> {
        let vis = Visibility::resolve(scope, req, Permission::Read, now_millis())?;
        // Counting reads no vector.
        let cursor = Cursor::open(
            self,
            scope,
            Permission::Read,
            vis,
            filter,
            None,
            Vectors::Skip,
        )?;
        Ok(PendingCount { cursor, counted: 0 })
    }

    /// Counts the next candidates of `pending`, a step's worth ([`STEP_SIZE`]); the count once
    /// every candidate is read.
    pub fn count_step(
        &self,
        mut pending: PendingCount,
    ) -> Result<Stepped<PendingCount, u64>, EngineError> {
        let counted = &mut pending.counted;
        let over = pending.cursor.step(self, |_| {
            *counted += 1;
            true
        })?;
        Ok(if over {
            Stepped::Done(pending.counted)
        } else {
            Stepped::More(Box::new(pending))
        })
    }

    /// Checks a listing (page size, credential, tenant) and takes the snapshot it lists from.
    /// Reads no record: [`Engine::page_step`] does.
    pub fn begin_page(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        filter: Option<Filter>,
        page: Page,
        vectors: Vectors,
    ) -> Result<PendingPage, EngineError> {
        if page.limit == 0 || page.limit > MAX_PAGE {
            return Err(EngineError::BadRequest(format!(
                "limit: must be 1 to {MAX_PAGE}"
            )));
        }
        let vis = Visibility::resolve(scope, req, Permission::Read, now_millis())?;
        let cursor = Cursor::open(
            self,
            scope,
            Permission::Read,
            vis,
            filter,
            page.after,
            vectors,
        )?;
        Ok(PendingPage {
            cursor,
            limit: page.limit,
            records: Vec::with_capacity(page.limit.min(64)),
            more: false,
        })
    }

    /// Lists the next candidates of `pending`, a step's worth ([`STEP_SIZE`]); the page once
    /// it is full, or every candidate is read.
    pub fn page_step(
        &self,
        pending: PendingPage,
    ) -> Result<Stepped<PendingPage, ScanPage>, EngineError> {
        self.page_step_admitting(pending, &mut |_, _| true)
    }

    /// [`Engine::page_step`] with a say over each record besides the page's `limit`:
    /// `admit(record, first)` is asked before a record joins the page, and a record it
    /// refuses ends the page before it, with a `next` (so the next page begins with it:
    /// nothing skipped, nothing repeated). The page's first record (`first`: none has joined
    /// yet) joins whatever `admit` answers, so paging always moves on; `admit` is still asked,
    /// to count it. `admit` may empty fields of the record that its answer does not carry,
    /// so a page does not hold them until it is encoded. The API bounds a page's bytes this
    /// way (`answer_budget`): records that its memory budget cannot take make a shorter page,
    /// not a larger one.
    pub fn page_step_admitting(
        &self,
        mut pending: PendingPage,
        admit: &mut dyn FnMut(&mut Record, bool) -> bool,
    ) -> Result<Stepped<PendingPage, ScanPage>, EngineError> {
        let (records, limit, more) = (&mut pending.records, pending.limit, &mut pending.more);
        let over = pending.cursor.step(self, |mut record| {
            if records.len() == limit {
                *more = true;
                return false;
            }
            let first = records.is_empty();
            if !admit(&mut record, first) && !first {
                *more = true;
                return false;
            }
            records.push(record);
            true
        })?;
        if !over {
            return Ok(Stepped::More(Box::new(pending)));
        }
        let next = if pending.more {
            pending.records.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(Stepped::Done(ScanPage {
            records: pending.records,
            next,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_filter_weighs_its_clauses() {
        // On a thousand paths: equalities on one path would be joined into one `$in`.
        let or: Vec<_> = (0..1000).map(|i| json!({format!("k{i}"): "x"})).collect();
        let heavy = Filter::parse(&json!({"$or": or})).unwrap();
        assert_eq!(weight(&heavy), 1001);
        assert_eq!(weight(&Filter::all()), 1);
        let size = StepSize {
            reads: 4096,
            time: Duration::from_secs(3600),
        };
        let mut budget = Budget::new(size, Some(&heavy));
        while !budget.charge() {}
        // A thousand clauses a record: about 120 records a step, not 4,096.
        assert!((100..=130).contains(&budget.reads), "{}", budget.reads);
        let mut budget = Budget::new(size, None);
        while !budget.charge() {}
        assert_eq!(budget.reads, 4096);
    }
}
