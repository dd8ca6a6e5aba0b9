//! Links between a tenant's memories: create, remove, list. Both ends must be records the
//! request can see, in the caller's tenant; a link to anything else fails exactly like a link
//! to a missing id (`NotFound`), so links can never cross tenants nor reveal what the caller
//! cannot see. Links are charged against `max_storage_bytes` and removed with either record.

use strata_auth::{Permission, TenantScope};
use strata_store::{LinkReads, Reads, TenantKey, Writer};
use strata_types::{Link, LinkRef, NewLink, Record, RecordId, RequestScope, now_millis};

use crate::lifecycle;
use crate::visibility::Visibility;
use crate::{Engine, EngineError};

/// The most links one record may have going out, and coming in, among those whose other end
/// the request can see: recall reads every link of a node it expands, both ways, so an
/// unbounded fan-out would make one record as expensive as a scan. Counted over what the
/// request sees, as every channel counts: links from another principal's private records
/// neither show in the count nor use up a tenant-shared record's room for everyone else.
pub const MAX_LINKS_PER_RECORD: usize = 1000;

/// The most links one record may hold each way, whoever can see their other ends: the bound
/// on recall's reads of one node when many principals each link to one shared record.
pub const MAX_STORED_LINKS_PER_RECORD: usize = 20 * MAX_LINKS_PER_RECORD;

/// Bytes a link is charged against `max_storage_bytes`: its two entries (by source and by
/// target), each the two ids, the relation, the 13-byte value and key overhead.
pub(crate) fn link_bytes(l: &Link) -> u64 {
    let ids = l.source.as_str().len() + l.target.as_str().len() + l.relation.as_str().len();
    2 * (ids + 13 + 16) as u64
}

/// A record's links, both ways, as `GET /v1/memories/{id}/links` answers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct RecordLinks {
    /// Links from this record, to records the request can see.
    pub outgoing: Vec<Link>,
    /// Links to this record, from records the request can see.
    pub incoming: Vec<Link>,
}

impl Engine {
    /// Links two records the request can see (`write`), at least one of which it may write
    /// (see `check_link_ends`), or replaces the weight of the same link. Either end missing,
    /// foreign or invisible is [`EngineError::NotFound`].
    pub fn link(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        new: NewLink,
    ) -> Result<Link, EngineError> {
        let mut links = self.link_batch(scope, req, vec![new])?;
        links.pop().ok_or(EngineError::NotFound)
    }

    /// Creates many links in one transaction: all or none, each checked like [`Engine::link`].
    pub fn link_batch(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        batch: Vec<NewLink>,
    ) -> Result<Vec<Link>, EngineError> {
        let vis = Visibility::resolve(scope, req, Permission::Write, now_millis())?;
        if batch.len() > self.config.limits.max_batch {
            return Err(EngineError::BadRequest(format!(
                "links: at most {} in one request",
                self.config.limits.max_batch
            )));
        }
        for new in &batch {
            new.validate().map_err(|e| EngineError::BadRequest(e.0))?;
        }
        // Links change no record: the audit row's detail names them (the first hundred).
        self.write_tenant_state(scope, "link.put", |w| {
            let key = scope.key();
            let (mut added, mut created) = (0i64, 0usize);
            let mut out = Vec::with_capacity(batch.len());
            let mut counts = LinkCounts::default();
            for new in batch {
                check_link_ends(w, key, &vis, &new.source, &new.target)?;
                let link = Link {
                    source: new.source,
                    target: new.target,
                    relation: new.relation,
                    weight: new.weight,
                    created_at: vis.now,
                };
                if w.put_link(key, &link)?.is_none() {
                    // Both ways: recall and deletes walk a record's incoming links too.
                    for (end, incoming) in [(&link.source, false), (&link.target, true)] {
                        if let Some((limit, used)) = counts.add(w, key, &vis, end, incoming)? {
                            return Err(EngineError::QuotaExceeded {
                                resource: "links_per_record",
                                limit: limit as u64,
                                used: Some(used as u64),
                            });
                        }
                    }
                    added += link_bytes(&link) as i64;
                    created += 1;
                }
                out.push(link);
            }
            if added > 0 {
                charge(w, scope, added)?;
            }
            let named: Vec<serde_json::Value> = out.iter().take(100).map(link_detail).collect();
            let detail = serde_json::json!({
                "added": created, "replaced": out.len() - created, "links": named,
            });
            Ok((out, detail))
        })
    }

    /// Removes a link between two records the request can see (`write`), at least one of which
    /// it may write. A missing link, or an end the request cannot see, is
    /// [`EngineError::NotFound`].
    pub fn unlink(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        which: &LinkRef,
    ) -> Result<Link, EngineError> {
        let vis = Visibility::resolve(scope, req, Permission::Write, now_millis())?;
        self.write_tenant_state(scope, "link.delete", |w| {
            let key = scope.key();
            check_link_ends(w, key, &vis, &which.source, &which.target)?;
            let gone = w
                .delete_link(key, &which.source, &which.target, &which.relation)?
                .ok_or(EngineError::NotFound)?;
            charge(w, scope, -(link_bytes(&gone) as i64))?;
            let detail = link_detail(&gone);
            Ok((gone, detail))
        })
    }

    /// The links of a record the request can see, leaving out every link whose other end it
    /// cannot see (which would otherwise reveal that record's id).
    pub fn record_links(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        id: &RecordId,
    ) -> Result<RecordLinks, EngineError> {
        let vis = Visibility::resolve(scope, req, Permission::Read, now_millis())?;
        self.read_tenant(scope, Permission::Read, |r| {
            let key = scope.key();
            visible_record(r, key, &vis, id)?;
            // The other ends by their scope fields alone: a record many principals link to
            // has mostly ends this request cannot see.
            let mut memo = strata_store::HiddenMemo::default();
            let mut sees = |other: &RecordId| -> Result<bool, EngineError> {
                Ok(r.record_scope(key, other, &mut memo)?
                    .is_some_and(|rec| vis.sees_scope(&rec)))
            };
            let mut outgoing = Vec::new();
            for l in r.links_of(key, id, false)? {
                if sees(&l.target)? {
                    outgoing.push(l);
                }
            }
            let mut incoming = Vec::new();
            for l in r.links_of(key, id, true)? {
                if sees(&l.source)? {
                    incoming.push(l);
                }
            }
            Ok(RecordLinks { outgoing, incoming })
        })
    }
}

fn visible_record(
    r: &impl Reads,
    key: TenantKey,
    vis: &Visibility,
    id: &RecordId,
) -> Result<Record, EngineError> {
    match r.record(key, id)? {
        Some(rec) if vis.sees(&rec) => Ok(rec),
        _ => Err(EngineError::NotFound),
    }
}

/// The ends of a link a request creates or removes: both must be visible (else `NotFound`),
/// and at least one writable by the request (`Visibility::check_writable`). A link between two
/// records the request may only read is shared structure — recall walks it for everyone who
/// sees both ends — which a credential bound to user tokens may not change
/// (`ScopeForbidden`); a link from one of its principals' own records it may.
fn check_link_ends(
    r: &impl Reads,
    key: TenantKey,
    vis: &Visibility,
    source: &RecordId,
    target: &RecordId,
) -> Result<(), EngineError> {
    let source = visible_record(r, key, vis, source)?;
    let target = visible_record(r, key, vis, target)?;
    if vis.may_write(&target) {
        return Ok(());
    }
    vis.check_writable(&source)
}

/// A link as an audit row names it.
fn link_detail(l: &Link) -> serde_json::Value {
    serde_json::json!({"source": l.source, "target": l.target, "relation": l.relation})
}

/// How many links each end of a batch's new links has one way, all of them and (past
/// [`MAX_LINKS_PER_RECORD`]) a bound on those whose other end the request sees, counted at
/// most twice per end and batch (see [`LinkCounts::add`]) and then kept up to date as the
/// batch adds links: a batch of many links to one heavily linked record reads its links
/// twice at most, not once per link.
#[derive(Default)]
struct LinkCounts {
    known: std::collections::HashMap<(RecordId, bool), EndCount>,
}

struct EndCount {
    /// Every link of the end, that way.
    all: usize,
    /// At least as many as the links whose other end the request sees, once counted, and
    /// whether exactly as many.
    visible: Option<(usize, Exactness)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Exactness {
    Exact,
    AtMost,
}

/// What counting an end's visible links found.
enum Visible {
    /// More than [`MAX_LINKS_PER_RECORD`]: the count stopped at the first past it.
    OverCap,
    /// This many, or (`AtMost`) no more: the count stopped once the links left could not
    /// pass the cap.
    Counted(usize, Exactness),
}

impl LinkCounts {
    /// Counts the link just added at `id` (one way) and returns the cap it now exceeds, if
    /// any, with the links counted against that cap before this one: more than
    /// [`MAX_LINKS_PER_RECORD`] whose other ends `vis` sees, or more than
    /// [`MAX_STORED_LINKS_PER_RECORD`] in all. The other ends are read only past the first
    /// cap, so a record with few links pays nothing for the visibility count.
    fn add(
        &mut self,
        w: &Writer<'_>,
        key: TenantKey,
        vis: &Visibility,
        id: &RecordId,
        incoming: bool,
    ) -> Result<Option<(usize, usize)>, EngineError> {
        let entry = match self.known.entry((id.clone(), incoming)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let counts = e.into_mut();
                // The link just added, which the counts do not hold yet: the request sees both
                // of its ends.
                counts.all += 1;
                counts.visible = counts.visible.map(|(seen, how)| (seen + 1, how));
                counts
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                // The first look at this end in the batch counts its links, the new one
                // included.
                let all = w.link_count(key, id, incoming)?;
                e.insert(EndCount { all, visible: None })
            }
        };
        if entry.all <= MAX_LINKS_PER_RECORD {
            return Ok(None);
        }
        if entry.all > MAX_STORED_LINKS_PER_RECORD {
            return Ok(Some((MAX_STORED_LINKS_PER_RECORD, entry.all - 1)));
        }
        match entry.visible {
            Some((seen, _)) if seen <= MAX_LINKS_PER_RECORD => return Ok(None),
            Some((seen, Exactness::Exact)) => {
                return Ok(Some((MAX_LINKS_PER_RECORD, seen - 1)));
            }
            _ => {}
        }
        // The first count may stop early under the cap; a bound that then passes the cap
        // (the batch added links) is counted again, exactly, so that the batch's later links
        // add to an exact figure: at most two counts per end and batch, however many links
        // the batch adds to it.
        let exact = entry.visible.is_some();
        match count_visible(w, key, vis, id, incoming, exact)? {
            Visible::OverCap => Ok(Some((MAX_LINKS_PER_RECORD, MAX_LINKS_PER_RECORD))),
            Visible::Counted(seen, how) => {
                entry.visible = Some((seen, how));
                Ok(None)
            }
        }
    }
}

/// Counts the links of `id` (one way) whose other end `vis` sees, as far as deciding the cap
/// needs: it stops at the first visible link past [`MAX_LINKS_PER_RECORD`], or (unless
/// `exact`) as soon as the links left could not reach it. Each other end is read by its scope
/// fields alone: on a record many principals link to, most of the ends are records the
/// request cannot see.
fn count_visible(
    w: &Writer<'_>,
    key: TenantKey,
    vis: &Visibility,
    id: &RecordId,
    incoming: bool,
    exact: bool,
) -> Result<Visible, EngineError> {
    #[cfg(test)]
    tests::COUNTS.with(|c| c.set(c.get() + 1));
    let links = w.links_of(key, id, incoming)?;
    let mut memo = strata_store::HiddenMemo::default();
    let mut seen = 0;
    for (i, l) in links.iter().enumerate() {
        let left = links.len() - i;
        if !exact && seen + left <= MAX_LINKS_PER_RECORD {
            return Ok(Visible::Counted(seen + left, Exactness::AtMost));
        }
        let other = if incoming { &l.source } else { &l.target };
        if w.record_scope(key, other, &mut memo)?
            .is_some_and(|r| vis.sees_scope(&r))
        {
            seen += 1;
            if seen > MAX_LINKS_PER_RECORD {
                return Ok(Visible::OverCap);
            }
        }
    }
    Ok(Visible::Counted(seen, Exactness::Exact))
}

/// Links a new record of a run from the run's previous record of the same principals
/// (relation `next`), when the collection asks for it (`link_runs`), and makes it their run's
/// last: each principal set's turns of a run chain on their own. A previous record that was
/// deleted, moved, or already has the most outgoing links, gets no link; neither fails the
/// write.
/// Links are tenant structure: whether a request may see either end is decided when it reads
/// them, as for every link.
pub(crate) fn link_to_run(
    w: &mut Writer<'_>,
    scope: &TenantScope,
    record: &strata_types::Record,
    now: strata_types::Millis,
) -> Result<(), EngineError> {
    let Some(run) = &record.run_id else {
        return Ok(());
    };
    let key = scope.key();
    let domain = &record.memory_domain;
    let tokens = &record.user_tokens;
    // The previous turn of the same principals: a turn of another principal set is not one of
    // this chain (linking it would tie one principal's private records to another's, and break
    // each one's chain), nor is a record since moved to another domain, run or principals,
    // nor one expired (nobody sees it: the new turn starts a fresh chain).
    if let Some(prev) = w.run_tail(key, domain, run.as_str(), tokens)?
        && prev != record.id
        && w.record_scope(key, &prev, &mut strata_store::HiddenMemo::default())?
            .is_some_and(|p| {
                p.memory_domain == *domain
                    && p.run_id.as_ref() == Some(run)
                    && p.user_tokens == *tokens
                    && p.expires_at.is_none_or(|at| at > now)
            })
        && w.link_count(key, &prev, false)? < MAX_LINKS_PER_RECORD
    {
        let link = Link {
            source: prev,
            target: record.id.clone(),
            relation: strata_types::Relation::parse("next")
                .expect("invariant: literal relation is valid"),
            weight: 1.0,
            created_at: now,
        };
        if w.put_link(key, &link)?.is_none() {
            charge(w, scope, link_bytes(&link) as i64)?;
        }
    }
    w.put_run_tail(key, domain, run.as_str(), tokens, &record.id)?;
    Ok(())
}

/// Inside a record write's transaction, for a record `old` removed or replaced by `new`: when
/// it was the last turn of its run and is no longer a turn of that run (deleted, expired and
/// swept, or moved to another domain, run or principals), the run's tail row goes, so that
/// one row per run does not outlive its records for ever (a service with a run per session
/// would grow them without bound, and a user's rows would name them after the user's records
/// were deleted). The run's next turn then starts a fresh chain, as it would after an expired
/// turn.
pub(crate) fn forget_run_tail(
    w: &mut Writer<'_>,
    key: strata_store::TenantKey,
    old: &strata_types::Record,
    new: Option<&strata_types::Record>,
) -> Result<(), EngineError> {
    let Some(run) = &old.run_id else {
        return Ok(());
    };
    let same_run = new.is_some_and(|n| {
        n.memory_domain == old.memory_domain
            && n.run_id.as_ref() == Some(run)
            && n.user_tokens == old.user_tokens
    });
    if !same_run
        && w.run_tail(key, &old.memory_domain, run.as_str(), &old.user_tokens)?
            .as_ref()
            == Some(&old.id)
    {
        w.delete_run_tail(key, &old.memory_domain, run.as_str(), &old.user_tokens)?;
    }
    Ok(())
}

/// Adds `delta` bytes to the tenant's usage, refusing a growth past `max_storage_bytes`.
fn charge(w: &mut Writer<'_>, scope: &TenantScope, delta: i64) -> Result<(), EngineError> {
    let profile = crate::tenants::check_live(w, scope)?;
    lifecycle::charge_bytes(w, scope.key(), &profile.limits, delta)
}

/// Removes the links of record `id`, just moved to `domain`, whose other end lies in another
/// domain, and gives their bytes back; how many. A link joins two records of one domain (both
/// ends must be visible to the request that makes it, and a request sees one domain): one
/// left across domains by a move could be neither seen nor deleted by any request.
pub(crate) fn remove_links_leaving(
    w: &mut Writer<'_>,
    scope: &TenantScope,
    id: &RecordId,
    domain: &strata_types::Domain,
) -> Result<usize, EngineError> {
    let key = scope.key();
    let mut memo = strata_store::HiddenMemo::default();
    let (mut bytes, mut removed) = (0u64, 0usize);
    for incoming in [false, true] {
        for l in w.links_of(key, id, incoming)? {
            let other = if incoming { &l.source } else { &l.target };
            let stays = w
                .record_scope(key, other, &mut memo)?
                .is_some_and(|r| r.memory_domain == *domain);
            if !stays && let Some(gone) = w.delete_link(key, &l.source, &l.target, &l.relation)? {
                bytes += link_bytes(&gone);
                removed += 1;
            }
        }
    }
    if bytes > 0 {
        charge(w, scope, -(bytes as i64))?;
    }
    Ok(removed)
}

/// Removes every link of a record being deleted and gives their bytes back; how many links.
/// Every path that deletes a record calls this in the same transaction.
pub(crate) fn remove_links_of(
    w: &mut Writer<'_>,
    scope: &TenantScope,
    id: &RecordId,
) -> Result<usize, EngineError> {
    let gone = w.delete_links_of(scope.key(), id)?;
    if gone.is_empty() {
        return Ok(0);
    }
    let bytes: u64 = gone.iter().map(link_bytes).sum();
    charge(w, scope, -(bytes as i64))?;
    Ok(gone.len())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde_json::json;
    use strata_types::{NewLink, NewRecord, RequestScope};

    use super::*;
    use crate::test_support::engine_with_tenant;

    thread_local! {
        /// Visible-link counts run on this thread.
        pub(super) static COUNTS: Cell<usize> = const { Cell::new(0) };
    }

    fn as_(who: &str) -> RequestScope {
        serde_json::from_value(json!({ "user_tokens": [who] })).unwrap()
    }

    /// `n` private records of `who` linked to `hub`, in one batch each way.
    fn linked(engine: &Engine, scope: &TenantScope, who: &str, n: usize) -> Vec<NewLink> {
        let records: Vec<NewRecord> = (0..n)
            .map(|i| {
                serde_json::from_value(json!({"id": format!("{}-{i}", &who[2..]),
                    "content": "a note", "user_tokens": [who]}))
                .unwrap()
            })
            .collect();
        let ids = engine.put(scope, &as_(who), records).unwrap();
        ids.iter()
            .map(|o| serde_json::from_value(json!({"source": o.id, "target": "hub"})).unwrap())
            .collect()
    }

    /// A run's tail row goes with its last turn: deleted, or patched out of the run; a patch
    /// that keeps the turn in its run keeps it.
    #[test]
    fn a_runs_tail_row_goes_with_its_last_turn() {
        let (_dir, engine, scope) = engine_with_tenant("acme");
        let turns = strata_types::CollectionName::parse("turns").unwrap();
        let spec = crate::CollectionSpec {
            dim: 2,
            metric: strata_types::Metric::Cosine,
            analyzer: Default::default(),
            memory: strata_types::MemoryDefaults {
                link_runs: Some(true),
                ..Default::default()
            },
            embed: false,
        };
        engine.create_collection_full(&scope, &turns, spec).unwrap();
        let req = RequestScope::default();
        let write = |rid: &str, run: &str| {
            let r: NewRecord = serde_json::from_value(json!({"id": rid, "modality": "turns",
                "run_id": run, "vector": [1.0, 0.5]}))
            .unwrap();
            engine.put(&scope, &req, vec![r]).unwrap();
        };
        let tail = |run: &str| {
            let domain = strata_types::Domain::default_domain();
            engine
                .store
                .write(|w| Ok::<_, EngineError>(w.run_tail(scope.key(), &domain, run, &[])?))
                .unwrap()
                .map(|id| id.to_string())
        };
        write("a1", "ra");
        write("a2", "ra");
        assert_eq!(tail("ra").as_deref(), Some("a2"));
        // Kept in its run by a patch: still the tail.
        let patch: strata_types::RecordPatch =
            serde_json::from_value(json!({"metadata": {"x": 1}})).unwrap();
        engine
            .patch(&scope, &req, &RecordId::parse("a2").unwrap(), patch)
            .unwrap();
        assert_eq!(tail("ra").as_deref(), Some("a2"));
        // Deleted: the row goes (an earlier turn's deletion leaves it).
        engine
            .delete(&scope, &req, &RecordId::parse("a1").unwrap())
            .unwrap();
        assert_eq!(tail("ra").as_deref(), Some("a2"));
        engine
            .delete(&scope, &req, &RecordId::parse("a2").unwrap())
            .unwrap();
        assert_eq!(tail("ra"), None);
        // Patched into another run: the old run's row goes.
        write("b1", "rb");
        let patch: strata_types::RecordPatch =
            serde_json::from_value(json!({"run_id": "elsewhere"})).unwrap();
        engine
            .patch(&scope, &req, &RecordId::parse("b1").unwrap(), patch)
            .unwrap();
        assert_eq!(tail("rb"), None);
    }

    /// A batch of many links into a record past the first cap counts the visible links of
    /// that record at most twice (an early-stopped bound, then one exact count once the batch
    /// pushes the bound past the cap), not once per link.
    #[test]
    fn a_batch_counts_a_heavily_linked_records_links_at_most_twice() {
        let (_dir, engine, scope) = engine_with_tenant("acme");
        let hub: NewRecord =
            serde_json::from_value(json!({"id": "hub", "content": "the policy"})).unwrap();
        engine
            .put(&scope, &RequestScope::default(), vec![hub])
            .unwrap();
        for who in ["u:carol", "u:dave"] {
            let links = linked(&engine, &scope, who, 700);
            engine.link_batch(&scope, &as_(who), links).unwrap();
        }
        let bobs = linked(&engine, &scope, "u:bob", 900);
        COUNTS.with(|c| c.set(0));
        engine.link_batch(&scope, &as_("u:bob"), bobs).unwrap();
        let counts = COUNTS.with(Cell::get);
        assert!((1..=2).contains(&counts), "{counts} counts for one batch");
    }
}
