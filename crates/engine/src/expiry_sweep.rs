//! The expiry sweep: removes the records past their `expires_at`, which every read already
//! hides, so that they stop holding their tenant's quota and leave the disk.
//!
//! The server runs it every `server.expiry_sweep_interval_secs` (`Engine::sweep_expired`). It
//! reads only the records due: the store's expiry index (`crates/store/src/expiry.rs`) orders
//! each tenant's records with a TTL by their expiry, so a tenant with nothing due costs one key
//! look-up, never a scan of its records. A record due is deleted as a delete by filter deletes
//! (`crate::delete_steps::DeleteChunks`): in transactions of at most a thousand records, each
//! audited as `memory.expire` with its chunk number, each checking the record again (still
//! stored, still expired: one written again since with a later `expires_at`, or none, stays),
//! and taking with it what a delete takes (links, pheromones, index entries, usage and quota,
//! a change log entry). Each chunk is one transaction, so a crash leaves every record either
//! swept with all of that or not at all, and the next sweep goes on.
//!
//! Which tenants: active ones, shared, partition or dedicated alike, among those a pass visits
//! (`crate::expiry_plan`: all of them in the first pass after a start and at least hourly,
//! otherwise only those known to hold records due). A suspended tenant is
//! skipped (its data is frozen: every write of it is refused), and so is a soft-deleted one
//! (its purge erases everything); their expired records are swept once they are active again.
//!
//! Records stored before the index existed have no entry: the first sweep of each tenant
//! enters them (its records read a page at a time, each page's entries written in a short
//! transaction) and marks its index complete; a tenant is read whole once, never again.

use strata_auth::OperatorScope;
use strata_store::{ExpiryReads, Reads, TenantMeta};
use strata_types::{Millis, RecordId, now_millis};

use crate::delete_steps::{DELETE_CHUNK, DELETE_CHUNK_LINKS, DeleteChunks};
use crate::expiry_plan::Visit;
use crate::lifecycle::{TenantProfile, TenantStatus};
use crate::{Engine, EngineError};

/// Records due that one pass takes from one tenant; a tenant with more is taken up again by
/// the next pass, which the server runs at once (`ExpirySweep::more`), so one tenant's backlog
/// neither delays the other tenants' sweep nor holds a shutdown for long.
pub(crate) const SWEEP_PER_PASS: usize = 10 * DELETE_CHUNK;

/// What one pass of the expiry sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpirySweep {
    /// Records removed.
    pub records: u64,
    /// Tenants that had records removed.
    pub tenants: u64,
    /// Tenants whose records due this pass looked for: every active one in a full pass, only
    /// those planned with entries due otherwise (`crate::expiry_plan`).
    pub visited: u64,
    /// Tenants whose sweep failed this pass (logged; tried again by the next pass).
    pub failed: u64,
    /// Whether a tenant had more records due than one pass takes: run another pass now.
    pub more: bool,
}

impl Engine {
    /// One pass of the expiry sweep over every active tenant (module docs). A tenant whose
    /// sweep fails (a full disk, a tenant in the critical integrity state) is logged and
    /// counted, and the pass goes on with the next. `stop` is asked before each tenant: a
    /// server shutting down ends the pass there rather than after every tenant (the tenants
    /// left wait for the next start's pass).
    ///
    /// Which tenants it visits is planned (`crate::expiry_plan`): every registered tenant in
    /// the first pass after a start and at least hourly, otherwise only those whose expiry
    /// index the plan knows to hold entries due by now.
    pub fn sweep_expired(
        &self,
        op: &OperatorScope,
        stop: impl Fn() -> bool,
    ) -> Result<ExpirySweep, EngineError> {
        let now = now_millis();
        let plan = &self.indexes.expiring;
        let (visit, _) = plan.begin(now);
        let mut total = ExpirySweep::default();
        match visit {
            Visit::Every => {
                // Until it has visited every tenant, the plan does not know them all: a pass
                // stopped or failed part-way leaves the next one full again.
                let pass = crate::expiry_plan::FullPass::new(plan);
                // Read, then let go of: a snapshot held through the pass's deletes would keep
                // redb from reusing pages, and a vacuum's old file on disk, until its end.
                let tenants = self.store.read()?.tenants()?;
                for meta in tenants {
                    if stop() {
                        return Ok(total);
                    }
                    self.visit(op, &meta, now, &mut total);
                }
                pass.done();
            }
            Visit::Due(due) => {
                for (key, id) in due {
                    if stop() {
                        break;
                    }
                    let seq = plan.seq();
                    let meta = self.store.read()?.tenant(&id)?;
                    match meta {
                        Some(meta) if meta.key == key => self.visit(op, &meta, now, &mut total),
                        // Purged, or its id taken by a new tenant (planned by its own writes).
                        _ => plan.forget(key, seq),
                    }
                }
            }
        }
        Ok(total)
    }

    /// Sweeps tenant `meta` if it is active, and plans its next visit from what its expiry
    /// index holds then (a tenant that is not active keeps its plan, so that it is swept as
    /// soon as it is active again).
    fn visit(&self, op: &OperatorScope, meta: &TenantMeta, now: Millis, total: &mut ExpirySweep) {
        let plan = &self.indexes.expiring;
        let seq = plan.seq();
        let active = TenantProfile::of(meta).map(|p| p.status == TenantStatus::Active);
        let swept = match active {
            Ok(true) => {
                total.visited += 1;
                self.sweep_tenant(op, meta, now)
            }
            // Its records stored before the expiry index existed are entered only once it is
            // active again: until then its index may lack some, so it stays due.
            Ok(false)
                if !self
                    .store
                    .read()
                    .and_then(|r| r.expiry_built(meta.key))
                    .unwrap_or(false) =>
            {
                plan.note(meta.key, &meta.id, now);
                return;
            }
            Ok(false) => Ok((0, false)),
            // A profile that does not decode blocks only its own tenant's sweep.
            Err(e) => {
                total.failed += 1;
                tracing::warn!(tenant = %meta.id, error = %e, "expiry sweep skipped a tenant");
                return;
            }
        };
        match swept {
            Ok((0, _)) => {}
            Ok((n, more)) => {
                total.records += n;
                total.tenants += 1;
                total.more |= more;
            }
            Err(e) => {
                total.failed += 1;
                tracing::warn!(tenant = %meta.id, error = %e, "expiry sweep of a tenant failed");
                // Visited again next pass.
                plan.note(meta.key, &meta.id, now);
                return;
            }
        }
        let earliest = self.store.read().and_then(|r| {
            Ok(r.expired_entries(meta.key, Millis::MAX, 1)?
                .first()
                .map(|(at, _)| *at))
        });
        match earliest {
            Ok(earliest) => plan.settle(meta.key, &meta.id, earliest, seq),
            Err(e) => {
                tracing::warn!(tenant = %meta.id, error = %e, "expiry sweep could not plan a tenant");
                plan.note(meta.key, &meta.id, now);
            }
        }
    }

    /// Removes up to [`SWEEP_PER_PASS`] of `meta`'s records due at `now`: how many, and
    /// whether more may be due.
    fn sweep_tenant(
        &self,
        op: &OperatorScope,
        meta: &TenantMeta,
        now: Millis,
    ) -> Result<(u64, bool), EngineError> {
        let key = meta.key;
        // One snapshot for both looks, the usual case (nothing due) being one key read.
        let due = {
            let r = self.store.read()?;
            if r.expiry_built(key)? {
                r.expired_entries(key, now, SWEEP_PER_PASS)?
            } else {
                drop(r);
                self.enter_older_expiries(meta)?;
                let r = self.store.read()?;
                r.expired_entries(key, now, SWEEP_PER_PASS)?
            }
        };
        if due.is_empty() {
            return Ok((0, false));
        }
        let more = due.len() == SWEEP_PER_PASS;
        let ids: Vec<RecordId> = due.iter().map(|(_, id)| id.clone()).collect();
        let scope = op.acting_in(meta);
        let mut chunks = DeleteChunks::new(ids, DELETE_CHUNK, DELETE_CHUNK_LINKS);
        let mut swept = 0;
        loop {
            let (n, over) = chunks.delete_next(
                self,
                &scope,
                "memory.expire",
                // As stored: a record of a collection being deleted goes now, as that delete
                // would take it.
                |w, key, id| w.stored_record(key, id),
                |r| r.is_expired(now),
            )?;
            swept += n;
            if over {
                break;
            }
        }
        if swept < due.len() as u64 {
            self.drop_stale_expiry_entries(meta, &due)?;
        }
        Ok((swept, more))
    }

    /// Removes the entries of `due` whose record is gone or expires at another time. Writes
    /// keep the index in step, so only a damaged file leaves such an entry; without this, the
    /// sweep would read it again on every pass.
    fn drop_stale_expiry_entries(
        &self,
        meta: &TenantMeta,
        due: &[(Millis, RecordId)],
    ) -> Result<(), EngineError> {
        let key = meta.key;
        self.store.write(|w| {
            if !still_registered(w, meta)? {
                return Ok(());
            }
            for (at, id) in due {
                let stored = w.stored_record(key, id)?;
                if stored.is_none_or(|r| r.expires_at != Some(*at)) {
                    w.remove_expiry_entry(key, *at, id)?;
                }
            }
            Ok::<_, EngineError>(())
        })
    }

    /// Enters `meta`'s records stored before the expiry index existed, then marks its index
    /// complete. How many were entered. See [`Engine::enter_older_expiries_by`].
    pub(crate) fn enter_older_expiries(&self, meta: &TenantMeta) -> Result<u64, EngineError> {
        self.enter_older_expiries_by(meta, DELETE_CHUNK)
    }

    /// [`Engine::enter_older_expiries`] in pages of `page` records, in id order: each page is
    /// read on a snapshot of its own, outside any transaction, and its records with an expiry
    /// entered in one short transaction that checks each as it is then (one deleted or
    /// rewritten since gets no entry, or its own from its write); the last page's transaction
    /// writes the mark. Memory and each transaction stay bounded by the page, whatever the
    /// tenant's size. A crash before the mark leaves entries that are right, and the next sweep
    /// enters the records again. A record written meanwhile behind the page gets its entry
    /// from its own write.
    pub(crate) fn enter_older_expiries_by(
        &self,
        meta: &TenantMeta,
        page: usize,
    ) -> Result<u64, EngineError> {
        let (key, page) = (meta.key, page.max(1));
        let (mut after, mut entered): (Option<RecordId>, u64) = (None, 0);
        loop {
            let (ids, read, last) = {
                let r = self.store.read()?;
                let (mut ids, mut read, mut last) = (Vec::new(), 0, None);
                for record in r
                    .stored_records_without_vector(key, after.as_ref())?
                    .take(page)
                {
                    let record = record?;
                    read += 1;
                    if record.expires_at.is_some() {
                        ids.push(record.id.clone());
                    }
                    last = Some(record.id);
                }
                (ids, read, last)
            };
            // A page shorter than asked is the last one.
            let done = read < page;
            if !ids.is_empty() || done {
                let n = self.store.write(|w| {
                    // A tenant purged since the read (and maybe created again under a new
                    // key) gets no rows: nothing may be written into a range being erased.
                    if !still_registered(w, meta)? {
                        return Ok(None);
                    }
                    let mut n = 0;
                    for id in &ids {
                        n += u64::from(w.enter_expiry(key, id)?);
                    }
                    if done {
                        w.mark_expiry_built(key)?;
                    }
                    Ok::<_, EngineError>(Some(n))
                })?;
                match n {
                    Some(n) => entered += n,
                    None => return Ok(entered),
                }
            }
            if done {
                return Ok(entered);
            }
            after = last;
        }
    }
}

/// Whether tenant `meta` is still registered under its storage key.
fn still_registered(r: &impl Reads, meta: &TenantMeta) -> Result<bool, EngineError> {
    Ok(r.tenant(&meta.id)?.is_some_and(|m| m.key == meta.key))
}

#[cfg(test)]
#[path = "expiry_sweep_tests.rs"]
mod tests;
